//! Stage 7, publish input: a publisher's pipelined requests, read from its own `inbuf`, one
//! method per kind (`GET /`, `GET /stats`, `POST /send/<id>`, and the friends paths in
//! [`super::friends`]); a publish goes to its id's owner, which delivers it to its local
//! connections and forwards it to the other holders. A publisher that pipelines without
//! reading its replies stops being read (its memory stays bounded).

use bytes::Bytes;

use super::input::BodyRead;
use super::output::Ev;
use super::presence::FEED;
use super::replies::{Pending, ReplyKind};
use super::Shard;
use crate::conn::{Flags, Marks, State, NONE};
use crate::driver::Driver;
use crate::http::request::{parse_publish, Head, PubRequest};
use crate::http::{response, Status};
use crate::id::Id;
use crate::mesh::{Msg, ReplyTo};
use crate::stats::ShardStats;

/// Most publishes one publisher may have awaiting replies before its reads pause.
const MAX_PIPELINE: usize = 1024;
/// Reply bytes a publisher may leave unread before its requests stop being read.
const MAX_PUB_OUTPUT: usize = 256 * 1024;

/// What the publish listener serves besides publishes.
pub(super) struct Publish {
    /// The `GET /` reply: the demo page, with this server's subscriber port filled in.
    page: Box<[u8]>,
}

impl Publish {
    /// The demo page pointing at subscriber port `sub_port`.
    pub(super) fn new(sub_port: u16) -> Publish {
        Publish {
            page: response::demo_page(sub_port).into_boxed_slice(),
        }
    }
}

impl<D: Driver> Shard<D> {
    /// New bytes in publisher `i`'s `inbuf`: handles every complete request, in order.
    pub(super) fn on_publisher_input(&mut self, i: u32) {
        let a = self.conns[i].aux;
        // The input is taken out while its requests are handled; PARSING keeps a reply that
        // completes meanwhile (a publish routed on this very shard) from starting a recv
        // into the empty stand-in.
        let mut inbuf = std::mem::take(&mut self.aux[a].inbuf);
        self.conns[i].marks.insert(Marks::PARSING);
        let mut used = 0;
        // The settings by reference count, not the token copied, for each batch of input.
        let cfg = self.cfg.clone();
        let token = cfg.publish_token.as_deref();
        // A request after an edit waits until the edit is applied (read-your-writes on one
        // connection): the edit and, say, a publish go to different shards.
        while !self.conns[i].flags.contains(Flags::CLOSE_AFTER)
            && !self.conns[i].marks.contains(Marks::EDITING)
            && self.conns[i].proto != FEED
        {
            let rest = &inbuf[used..];
            match parse_publish(rest, token.map(str::as_bytes)) {
                Head::Incomplete => break,
                // The reply closes: the loop ends.
                Head::Refuse(s) => {
                    self.refuse_request(i, rest, s);
                }
                Head::Done(req, n) => match self.on_request(i, req, n, &mut inbuf, used) {
                    Some(n) => used += n,
                    None => break, // its body is not all here yet
                },
            }
        }
        if used > 0 {
            // Progress: what is left is a new request, not the one the sweep saw.
            self.conns[i].marks.remove(Marks::SLOW);
        }
        inbuf.drain(..used);
        if self.conns[i].proto == FEED {
            inbuf.clear(); // a feed takes no request: what it sends is dropped
        }
        self.aux[a].inbuf = inbuf;
        self.conns[i].marks.remove(Marks::PARSING);
        self.flush_replies(i);
        self.read_more(i);
    }

    /// One request whose head (`n` bytes at `inbuf[at..]`) is parsed; returns the bytes it
    /// used, or `None` if its body is not all here yet (or was refused).
    fn on_request(
        &mut self,
        i: u32,
        req: PubRequest,
        n: usize,
        inbuf: &mut Vec<u8>,
        at: usize,
    ) -> Option<usize> {
        match req {
            PubRequest::Page { close, head } => self.page(i, close, head),
            PubRequest::Stats { close, head } => self.stats(i, close, head),
            PubRequest::Probe { probe, close, head } => self.probe(i, probe, close, head),
            PubRequest::Presence(p) => return self.on_presence_request(i, p, n, inbuf, at),
            PubRequest::Kick(k) => self.kick(i, k.id, k.close),
            PubRequest::Edit {
                a,
                b,
                add,
                len,
                chunked,
                close,
            } => {
                // The (ignored) body must be all here first.
                let used = match self.read_body(i, inbuf, at + n, len, chunked) {
                    BodyRead::Here { used, .. } => used,
                    BodyRead::Wait => return None,
                    BodyRead::Refused(s) => return self.refuse_request(i, &inbuf[at..], s),
                };
                self.friends_edit(i, a, b, add, close);
                return Some(n + used);
            }
            PubRequest::Send {
                id,
                len,
                chunked,
                close,
                expect_continue,
                friends,
            } => {
                let (len, used) =
                    self.request_body(i, inbuf, at, n, (len, chunked, expect_continue))?;
                let msg = Bytes::copy_from_slice(&inbuf[at + n..at + n + len]);
                if friends {
                    self.friends_publish(i, id, msg, close);
                } else {
                    self.send(i, id, msg, close);
                }
                return Some(n + used);
            }
        }
        Some(n)
    }

    /// The body of publisher `i`'s request whose `n`-byte head starts at `inbuf[at..]`, framed
    /// as `(len, chunked, expect_continue)`: `Some((len, used))` once it is all here; `None`
    /// while it is not (after a `100 Continue` if the client asked for one) or once it is
    /// refused (its error reply queued), as [`Shard::on_request`] returns for those.
    pub(super) fn request_body(
        &mut self,
        i: u32,
        inbuf: &mut Vec<u8>,
        at: usize,
        n: usize,
        (len, chunked, expect_continue): (usize, bool, bool),
    ) -> Option<(usize, usize)> {
        match self.read_body(i, inbuf, at + n, len, chunked) {
            BodyRead::Here { len, used } => {
                self.conns[i].marks.remove(Marks::CONTINUED);
                Some((len, used))
            }
            BodyRead::Wait => {
                self.continue_if_asked(i, expect_continue);
                None
            }
            BodyRead::Refused(s) => {
                self.refuse_request(i, &inbuf[at..], s);
                None
            }
        }
    }

    /// A refused request (`head` starts with it): its error reply, and the connection closes.
    /// Returns `None`, as [`Shard::on_request`] does for a request that stops the reading.
    pub(super) fn refuse_request(&mut self, i: u32, head: &[u8], s: Status) -> Option<usize> {
        let head = &head[..head.len().min(120)];
        tracing::debug!(shard = self.me, status = ?s, head = %String::from_utf8_lossy(head).escape_debug(), "publish request refused");
        let mut raw = Vec::new();
        response::error(&mut raw, s);
        if response::is_head(head) {
            response::drop_body(&mut raw, 0);
        }
        self.push_reply(i, Pending::ready(i, raw, true));
        self.conns[i].marks.insert(Marks::DISCARD);
        None
    }

    /// `GET /` (or `HEAD /`): the demo page.
    fn page(&mut self, i: u32, close: bool, head: bool) {
        let mut raw = self.publish.page.to_vec();
        if head {
            raw.truncate(raw.len() - response::demo_page_body_len(&raw));
        }
        self.push_reply(i, Pending::ready(i, raw, close));
    }

    /// `GET /stats` (or `HEAD /stats`): every shard's counters as JSON.
    fn stats(&mut self, i: u32, close: bool, head: bool) {
        let body = self.stats_body();
        let mut raw = Vec::new();
        response::json(&mut raw, body.as_bytes(), close);
        if head {
            raw.truncate(raw.len() - body.len());
        }
        self.push_reply(i, Pending::ready(i, raw, close));
    }

    /// A `/send` body is not complete yet: a client that asked for it gets `100 Continue`
    /// now, if no earlier reply is owed (interim responses must not overtake final ones),
    /// once per request.
    pub(super) fn continue_if_asked(&mut self, i: u32, expect_continue: bool) {
        let c = self.conns[i];
        if !expect_continue
            || !self.aux[c.aux].replies.is_empty()
            || c.marks.contains(Marks::CONTINUED)
        {
            return;
        }
        self.conns[i].marks.insert(Marks::CONTINUED);
        let sending = c.flags.contains(Flags::SENDING);
        self.aux[c.aux]
            .queue(sending)
            .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    /// `POST /send/<id>` read on publisher connection `i`: numbered, then published.
    fn send(&mut self, i: u32, id: Id, msg: Bytes, close: bool) {
        let t = self.push_reply(i, Pending::awaiting(i, ReplyKind::Send, close));
        self.publish(id, msg, t);
    }

    /// Reads the publisher's next requests unless it has too many awaiting replies or too
    /// much reply output it has not read yet (backpressure on a publisher that pipelines
    /// without reading: its memory stays bounded).
    pub(super) fn read_more(&mut self, i: u32) {
        let c = self.conns[i];
        if c.state != State::Pub
            || c.flags.intersects(Flags::CLOSE_AFTER | Flags::RECVING)
            || c.marks.intersects(Marks::PARSING | Marks::EDITING)
            || c.aux == NONE
        {
            return;
        }
        let aux = &self.aux[c.aux];
        if aux.replies.len() < MAX_PIPELINE && aux.pending() < MAX_PUB_OUTPUT {
            self.start_recv(i);
        }
    }

    /// `send(id, msg)`: the publish numbered `t` on this shard, to the owner of `id`.
    fn publish(&mut self, id: Id, msg: Bytes, t: u32) {
        ShardStats::add(&self.st().sent, 1);
        // History in cluster mode: Redis numbers it, every node delivers it from there.
        if self.publish_sequenced(t, &id, &msg) {
            return;
        }
        // Cluster mode: the other nodes get it through Redis; local delivery does not wait.
        self.cluster_forward(t, &id, &msg);
        let reply = ReplyTo {
            shard: self.me as u16,
            token: t,
        };
        let owner = id.owner(self.mesh.shards());
        let at = self.lp.now_ms();
        if owner == self.me {
            self.route(id, msg, reply, at);
        } else {
            self.outbox.push(owner, Msg::Route { id, msg, reply, at });
        }
    }

    /// Owner side of a publish (`Route`): local delivery, forwarding, and the first reply.
    pub(super) fn route(&mut self, id: Id, msg: Bytes, reply: ReplyTo, at: u32) {
        let pos = self.keep(&id, &msg);
        let (local, forwarded) = (self.router).route(&mut self.outbox, &id, &msg, pos, reply, at);
        let ev = Ev::Plain { msg: &msg, pos, at };
        let n = local.map_or(0, |s| self.deliver_slot(s, ev));
        self.reply(reply, n, Some(forwarded));
    }
}
