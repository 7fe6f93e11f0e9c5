//! Stage 8, replies: each publish (or stats, page, edit, error) read from a publisher is a
//! [`Pending`] reply, numbered by a token; the shards that handle it answer over the mesh,
//! in any order (`Replied`, `FriendsReplied`), and the replies are written in request order
//! once each is complete. The bodies are made in [`crate::http::response`].

use super::friends::FULL_CREDIT;
use super::Shard;
use crate::conn::{Flags, Marks, Slab, State, NONE};
use crate::driver::Driver;
use crate::http::response;
use crate::mesh::{Msg, ReplyTo};

/// A publish waiting for its reply.
pub(super) struct Pending {
    /// Publisher connection, or NONE if it closed meanwhile.
    conn: u32,
    /// Holder replies still to come (may go below 0 while the owner's is outstanding).
    remaining: i32,
    /// The owner's reply has arrived (it says how many holder replies to expect).
    routed: bool,
    /// Connections queued so far.
    count: u64,
    /// Close the connection after this reply.
    close: bool,
    /// A ready-made reply (stats, error) instead of `{"delivered":N}`.
    raw: Option<Vec<u8>>,
    /// What the reply says: `{"delivered":N}`, `{"friends":F,"delivered":N}` or an edit's.
    kind: ReplyKind,
    /// Friends paths: credit still out (see [`crate::mesh`]); 0 for `/send`.
    credit: u64,
    /// Friends publish: followers of the publishing user.
    friends: u64,
    /// Friends edit: the journal write failed.
    failed: bool,
}

/// The shape of a publish-listener reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReplyKind {
    /// `POST /send/<id>`: `{"delivered":N}`.
    Send,
    /// `POST /publish/<user>`: `{"friends":F,"delivered":N}`.
    Friends,
    /// `PUT|DELETE /friends/<a>/<b>`: `{"changed":true|false}`.
    Edit,
    /// `DELETE /subscribers/<id>`: `{"closed":N}` (`shard::kick`).
    Kick,
}

impl Pending {
    /// A reply that is ready now (stats, page, error) on connection `conn`.
    pub(super) fn ready(conn: u32, raw: Vec<u8>, close: bool) -> Pending {
        Pending {
            conn,
            remaining: 0,
            routed: true,
            count: 0,
            close,
            raw: Some(raw),
            kind: ReplyKind::Send,
            credit: 0,
            friends: 0,
            failed: false,
        }
    }

    /// A publish of `kind` on connection `conn` awaiting its replies.
    pub(super) fn awaiting(conn: u32, kind: ReplyKind, close: bool) -> Pending {
        let friends = matches!(kind, ReplyKind::Friends | ReplyKind::Edit);
        Pending {
            conn,
            remaining: 0,
            routed: friends,
            count: 0,
            close,
            raw: None,
            kind,
            credit: if friends { FULL_CREDIT } else { 0 },
            friends: 0,
            failed: false,
        }
    }

    /// The publish failed: answered with `raw` (an error reply) once its turn comes, and the
    /// connection closes after it.
    fn fail(&mut self, raw: Vec<u8>) {
        self.raw = Some(raw);
        self.close = true;
        self.routed = true;
        self.remaining = 0;
        self.credit = 0;
    }

    fn done(&self) -> bool {
        self.routed && self.remaining == 0 && self.credit == 0
    }
}

/// The replies this shard's publishers are owed, by token.
pub(super) struct Replies {
    pending: Slab<Pending>,
}

impl Replies {
    /// No reply owed.
    pub(super) fn new() -> Replies {
        Replies {
            pending: Slab::with_capacity(1024),
        }
    }

    /// Whether no reply is owed.
    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The publisher of reply `t` is gone: forgets it now if it is complete, else when it
    /// completes.
    pub(super) fn abandon(&mut self, t: u32) {
        if self.pending[t].done() {
            self.pending.remove(t);
        } else {
            self.pending[t].conn = NONE;
        }
    }
}

impl<D: Driver> Shard<D> {
    /// Numbers reply `p` of publisher `i` and queues it behind the ones it owes; returns
    /// its token.
    pub(super) fn push_reply(&mut self, i: u32, p: Pending) -> u32 {
        self.conns[i].msgs = self.conns[i].msgs.saturating_add(1);
        if p.close {
            self.conns[i].flags.insert(Flags::CLOSE_AFTER);
        }
        let t = self.replies.pending.insert(p);
        let a = self.conns[i].aux;
        self.aux[a].replies.push_back(t);
        t
    }

    /// Sends (or, on the publisher's shard, applies) one shard's part of a publish reply:
    /// `count` connections queued; `more`, from the owner, the holders forwarded to.
    pub(super) fn reply(&mut self, to: ReplyTo, count: u32, more: Option<u16>) {
        if to == ReplyTo::NOBODY {
            return; // a message from another cluster node
        }
        if to.shard as usize == self.me {
            self.on_replied(to.token, count, more);
        } else {
            let (token, shard) = (to.token, to.shard as usize);
            self.outbox.push(shard, Msg::Replied { token, count, more });
        }
    }

    /// Publisher's shard: one shard's part of publish `t`'s reply (`Replied`).
    pub(super) fn on_replied(&mut self, t: u32, count: u32, more: Option<u16>) {
        let p = &mut self.replies.pending[t];
        p.count += u64::from(count);
        match more {
            Some(k) => {
                p.routed = true;
                p.remaining += i32::from(k);
            }
            None => p.remaining -= 1,
        }
        self.settle(t);
    }

    /// Sends (or, on the publisher's shard, applies) one step's part of a friends reply.
    pub(super) fn friends_reply(
        &mut self,
        to: ReplyTo,
        friends: u32,
        count: u32,
        credit: u64,
        failed: bool,
    ) {
        if to == ReplyTo::NOBODY {
            return; // a friends event from another cluster node
        }
        if to.shard as usize == self.me {
            self.on_friends_replied(to.token, friends, count, credit, failed);
        } else {
            let m = Msg::FriendsReplied {
                token: to.token,
                friends,
                count,
                credit,
                failed,
            };
            self.outbox.push(to.shard as usize, m);
        }
    }

    /// Publisher's shard: one step of friends publish or edit `t` has answered
    /// (`FriendsReplied`).
    pub(super) fn on_friends_replied(
        &mut self,
        t: u32,
        friends: u32,
        count: u32,
        credit: u64,
        failed: bool,
    ) {
        let p = &mut self.replies.pending[t];
        p.friends += u64::from(friends);
        p.count += u64::from(count);
        p.credit -= credit.min(p.credit);
        p.failed |= failed;
        self.settle(t);
    }

    /// Pending publish `t` failed (cluster mode): it is answered with `raw`, in its turn, and
    /// its connection closes after it (later pipelined requests are dropped, as after any
    /// error reply).
    pub(super) fn fail_publish(&mut self, t: u32, raw: Vec<u8>) {
        self.replies.pending[t].fail(raw);
        let c = self.replies.pending[t].conn;
        if c != NONE {
            self.conns[c].flags.insert(Flags::CLOSE_AFTER); // nothing more is read
        }
        self.settle(t);
    }

    /// Pending reply `t` is complete with body `raw` (a presence count): written in its turn.
    pub(super) fn finish_reply(&mut self, t: u32, raw: Vec<u8>) {
        let p = &mut self.replies.pending[t];
        p.raw = Some(raw);
        p.routed = true;
        p.remaining = 0;
        self.settle(t);
    }

    /// After part of pending publish `t`'s answer came in: once it is complete, writes the
    /// replies now due on its connection and reads on (or forgets it, if the publisher has
    /// gone).
    fn settle(&mut self, t: u32) {
        let p = &self.replies.pending[t];
        if !p.done() {
            return;
        }
        if p.conn == NONE {
            self.replies.pending.remove(t);
            return;
        }
        let (c, edit) = (p.conn, p.kind == ReplyKind::Edit);
        if edit && self.conns[c].marks.contains(Marks::EDITING) {
            // The edit is applied: the requests read after it may go on (unless they are
            // being parsed right now, on this very stack).
            self.conns[c].marks.remove(Marks::EDITING);
            let a = self.conns[c].aux;
            if !self.conns[c].marks.contains(Marks::PARSING)
                && a != NONE
                && !self.aux[a].inbuf.is_empty()
            {
                return self.on_publisher_input(c);
            }
        }
        self.flush_replies(c);
        self.read_more(c);
    }

    /// Writes the publisher's finished replies, in request order.
    pub(super) fn flush_replies(&mut self, i: u32) {
        let a = self.conns[i].aux;
        while let Some(&t) = self.aux[a].replies.front() {
            if !self.replies.pending[t].done() {
                break;
            }
            let p = std::mem::replace(
                &mut self.replies.pending[t],
                Pending::ready(NONE, Vec::new(), false),
            );
            self.replies.pending.remove(t);
            let forward = self.cluster_reply(t);
            let nodes = match p.kind {
                ReplyKind::Kick => self.ctl_nodes(t),
                _ => None,
            };
            let sending = self.conns[i].flags.contains(Flags::SENDING);
            let aux = &mut self.aux[a];
            aux.replies.pop_front();
            let buf = aux.queue(sending);
            match (p.raw, p.kind) {
                (Some(raw), _) => buf.extend_from_slice(&raw),
                (None, ReplyKind::Send) => response::delivered(buf, p.count, forward, p.close),
                (None, ReplyKind::Friends) => {
                    response::friends_delivered(buf, p.friends, p.count, forward, p.close)
                }
                (None, ReplyKind::Edit) => response::edit(buf, p.count > 0, p.failed, p.close),
                (None, ReplyKind::Kick) => {
                    let cluster = self.cfg.cluster.is_some();
                    response::kicked(buf, p.count, nodes, cluster, p.close)
                }
            }
            if p.close || (p.kind == ReplyKind::Edit && p.failed) {
                // Nothing after a reply that closes: drop later pipelined requests.
                for t in aux.replies.drain(..) {
                    self.replies.abandon(t);
                }
                self.conns[i].state = State::Finishing;
                break;
            }
        }
        self.try_send(i);
    }
}
