//! Stage 13, cluster, id-affine mode ([`crate::cluster::affine`]): a subscriber whose ids
//! belong to another node is answered `307` to that node (or `409` if they span nodes)
//! before anything is subscribed.

use super::Shard;
use crate::cluster::affine;
use crate::conn::{Flags, Marks, State};
use crate::driver::Driver;
use crate::http::request::SubRequest;

impl<D: Driver> Shard<D> {
    /// In affine mode, answers subscriber `i` (its parsed `req`; `head`, the last bytes read of its head)
    /// with a redirect or a conflict if this node does not own its ids; returns whether it
    /// did (the connection then closes once that is sent). Costs nothing in broadcast mode
    /// beyond one branch.
    pub(super) fn affine_redirect(&mut self, i: u32, req: &SubRequest, head: &[u8]) -> bool {
        let Some(c) = self.cluster_node() else {
            return false;
        };
        if c.config().affine.is_none() {
            return false;
        }
        let verdict = c.redirect_for(&req.ids);
        let url = match verdict {
            Ok(None) => return false,
            Ok(Some(url)) => Some(url),
            Err(()) => None,
        };
        let a = self.ensure_aux(i);
        let sending = self.conns[i].flags.contains(Flags::SENDING);
        let aux = &mut self.aux[a];
        // A head read in several pieces is whole in `inbuf`; one read at once is `head`.
        let whole = if aux.inbuf.is_empty() {
            head
        } else {
            &aux.inbuf[..]
        };
        let target = affine::target_of(whole).map(<[u8]>::to_vec);
        aux.inbuf.clear();
        let out = aux.queue(sending);
        let start = out.len();
        match (url, target) {
            (Some(url), Some(target)) => affine::redirect(out, url, &target),
            _ => affine::span_conflict(out),
        }
        // A cross-origin EventSource follows a 307 only if it carries CORS (Fetch standard,
        // "HTTP-redirect fetch"), and reads a 409 only with it.
        crate::http::response::insert_lines(out, start, &self.resume.cors);
        if req.head_only {
            crate::http::response::drop_body(out, start);
        }
        self.conns[i].state = State::Finishing;
        self.conns[i].marks.insert(Marks::DISCARD);
        self.try_send(i);
        true
    }
}
