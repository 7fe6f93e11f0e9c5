//! Stage 7b, kick (`DELETE /subscribers/<id>` on the publish listener): every connection
//! logged in under the id, on every shard, ends with its transport's proper end, and the
//! publisher gets `{"closed":N}`.
//!
//! The publisher's shard sends `Kick` to every other shard (kicks are rare: no directory
//! lookup, and a connection under several ids is found wherever it lives), ends its own
//! connections under the id, and waits for one `Replied` from each of the others, as a
//! publish waits for its holders ([`super::replies`]). Each shard looks the id up in its own
//! router and ends each local connection under it:
//! - SSE: an `event: kicked` whose `data:` is the id, then the last chunk (no `retry:`: the
//!   client is not invited back soon; an EventSource reconnects all the same, so the
//!   application should also refuse it, e.g. with subscriber tokens);
//! - WebSocket: a close frame 1008 (policy violation, RFC 6455 section 7.4.1) with the
//!   reason `kicked`;
//! - `/test/` and raw: the last chunk (HTTP/1.0: the close itself);
//! - a held poll: its empty answer (`{"messages":[]...}` with its cursor).
//!
//! Each is written after the messages already queued to it, then the connection closes. A
//! connection whose head still waits for its owners' acknowledgement (`SubJoining`) has had
//! no byte of its stream yet: it is closed at once. One already ending (`Finishing`: cut,
//! drained, kicked) is not counted again. Counted per shard in `kicked` (`/stats`,
//! `/metrics`).

use super::replies::{Pending, ReplyKind};
use super::Shard;
use crate::cluster::control::CtlKind;
use crate::conn::{Flags, State};
use crate::driver::Driver;
use crate::http::stream::{self, Proto};
use crate::id::Id;
use crate::mesh::{Msg, ReplyTo};
use crate::stats::ShardStats;

/// The WebSocket close frame a kicked stream gets: FIN + close opcode, unmasked (a server's
/// frame), payload 8 bytes: status 1008 (0x03f0) and the reason `kicked` (RFC 6455 sections
/// 5.5.1 and 7.4.1).
const WS_KICKED: &[u8] = b"\x88\x08\x03\xf0kicked";

impl<D: Driver> Shard<D> {
    /// `DELETE /subscribers/<id>` read on publisher `i`: asks every other shard, ends the
    /// local connections, and waits for the others' counts.
    pub(super) fn kick(&mut self, i: u32, id: Id, close: bool) {
        let t = self.push_reply(i, Pending::awaiting(i, ReplyKind::Kick, close));
        let reply = ReplyTo {
            shard: self.me as u16,
            token: t,
        };
        let shards = self.mesh.shards();
        for s in (0..shards).filter(|&s| s != self.me) {
            let id = id.clone();
            self.outbox.push(s, Msg::Kick { id, reply });
        }
        let n = self.kick_local(&id);
        // Cluster mode: the other nodes' sum comes as one more answer.
        let ids: std::sync::Arc<[Id]> = std::sync::Arc::from([id]);
        let more = shards - 1 + usize::from(self.ctl_send(CtlKind::Kick, ids, t));
        self.on_replied(t, n, Some(more as u16));
    }

    /// Another shard's `Kick`: ends the local connections under `id` and answers.
    pub(super) fn on_kick(&mut self, id: &Id, reply: ReplyTo) {
        let n = self.kick_local(id);
        self.reply(reply, n, None);
    }

    /// Ends every local connection logged in under `id`; returns how many.
    pub(super) fn kick_local(&mut self, id: &Id) -> u32 {
        let Some(s) = self.router.lookup(id) else {
            return 0;
        };
        // Copied: closing a connection logs it out of the list being walked.
        let conns = self.router.subscribers(s).to_vec();
        let mut n = 0;
        for i in conns {
            match self.conns[i].state {
                State::SubStream => self.end_kicked(i, id),
                State::SubJoining => self.close(i),
                _ => continue,
            }
            n += 1;
        }
        if n > 0 {
            ShardStats::add(&self.st().kicked, u64::from(n));
            tracing::info!(shard = self.me, %id, closed = n, "kicked");
        }
        n
    }

    /// Ends stream `i` (under `id`) with its transport's proper end, after what is queued.
    fn end_kicked(&mut self, i: u32, id: &Id) {
        let c = self.conns[i];
        let proto = Proto::from_u8(c.proto);
        if proto == Proto::Poll {
            return self.answer_poll_timeout(i);
        }
        let a = self.ensure_aux(i);
        let chunked = c.flags.contains(Flags::CHUNKED);
        let buf = self.aux[a].queue(c.flags.contains(Flags::SENDING));
        match proto {
            Proto::Ws => buf.extend_from_slice(WS_KICKED),
            Proto::Sse => {
                let event = format!("event: kicked\ndata: {id}\n\n");
                stream::chunk(buf, event.as_bytes(), chunked);
                stream::end(buf, proto, chunked, 1008);
            }
            _ => stream::end(buf, proto, chunked, 1008),
        }
        self.conns[i].state = State::Finishing;
        self.try_send(i);
    }
}
