//! Stage 13, cluster: a shard's side of cluster mode ([`crate::cluster`]): forwarding its
//! publishes to the node's agent, delivering messages from other nodes, and holding a new
//! subscriber's head until the buckets of its ids are subscribed on Redis.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;

use super::friends::FULL_CREDIT;
use super::output::Ev;
use super::Shard;
use crate::cluster::history::Fetch;
use crate::cluster::{wire::Kind, Cluster};
use crate::conn::State;
use crate::driver::Driver;
use crate::history::{Pos, Reason, Start};
use crate::http::response::{self, Forward};
use crate::http::stream::CURSORS;
use crate::http::Status;
use crate::id::Id;
use crate::mesh::{Msg, ReplyTo};
use crate::stats;

/// The node's cluster state and what this shard waits for from it.
#[derive(Default)]
pub(super) struct ClusterState {
    /// The node's cluster state (`--cluster`), if any.
    node: Option<Arc<Cluster>>,
    /// Subscribers whose head waits for a bucket subscription, as (connection, bucket).
    waiting: Vec<(u32, u32)>,
    /// Per pending publish token: whether its forward to the other nodes was dropped.
    dropped: Vec<bool>,
}

impl<D: Driver> Shard<D> {
    /// Puts the shard in cluster mode (`None`: no cluster).
    pub fn with_cluster(mut self, cluster: Option<Arc<Cluster>>) -> Self {
        self.cluster.node = cluster;
        self
    }

    /// The node's cluster state, in cluster mode.
    pub(super) fn cluster_node(&self) -> Option<Arc<Cluster>> {
        self.cluster.node.clone()
    }

    /// Subscriber `i` is about to be logged in under `ids`: wants their buckets subscribed
    /// and returns how many of them its head must wait for (each released by
    /// `ClusterReady`).
    pub(super) fn cluster_hold(&mut self, i: u32, ids: &[Id]) -> u8 {
        let Some(c) = &self.cluster.node else {
            return 0;
        };
        let mut waits = 0;
        for id in ids {
            let b = c.bucket(id);
            if c.want(b) {
                self.cluster.waiting.push((i, b));
                waits += 1;
            }
        }
        waits
    }

    /// `ClusterReady`: releases the heads whose bucket is now subscribed (or all of them if
    /// Redis went down).
    pub(super) fn on_cluster_ready(&mut self) {
        let Some(c) = self.cluster.node.clone() else {
            return;
        };
        let mut waiting = std::mem::take(&mut self.cluster.waiting);
        waiting.retain(|&(i, b)| {
            if !c.ready(b) {
                return true;
            }
            self.release_wait(i);
            false
        });
        self.cluster.waiting = waiting;
    }

    /// Connection `i` is closing: it waits for nothing any more.
    pub(super) fn cluster_forget(&mut self, i: u32) {
        if !self.cluster.waiting.is_empty() {
            self.cluster.waiting.retain(|&(c, _)| c != i);
        }
    }

    /// Queues publish `t` for the other nodes (if in cluster mode) and notes whether it was
    /// dropped (Redis down or queue full; counted).
    pub(super) fn cluster_forward(&mut self, t: u32, id: &Id, msg: &Bytes) {
        self.cluster_forward_kind(t, Kind::Send, id, msg);
    }

    /// Queues friends event `t` (from user `id`) for the other nodes, as
    /// [`Shard::cluster_forward`] does a send.
    pub(super) fn cluster_forward_friends(&mut self, t: u32, id: &Id, msg: &Bytes) {
        self.cluster_forward_kind(t, Kind::Friends, id, msg);
    }

    fn cluster_forward_kind(&mut self, t: u32, kind: Kind, id: &Id, msg: &Bytes) {
        let Some(c) = &self.cluster.node else { return };
        let dropped = !c.forward(kind, id, msg);
        self.cluster_forward_flag(t, dropped);
    }

    fn cluster_forward_flag(&mut self, t: u32, dropped: bool) {
        let t = t as usize;
        if self.cluster.dropped.len() <= t {
            self.cluster.dropped.resize(t + 1, false);
        }
        self.cluster.dropped[t] = dropped;
    }

    /// For the reply to publish `t`: whether its forward to the other nodes was queued
    /// ([`Forward::Off`] without a cluster).
    pub(super) fn cluster_reply(&mut self, t: u32) -> Forward {
        if self.cluster.node.is_none() {
            return Forward::Off;
        }
        let dropped = self.cluster.dropped.get_mut(t as usize).map(std::mem::take);
        if dropped.unwrap_or(false) {
            Forward::Dropped
        } else {
            Forward::Queued
        }
    }

    /// `Remote`: a message another node published to `id` (this shard owns `id`): delivered
    /// here and on the other shards holding `id`, no reply.
    pub(super) fn on_remote(&mut self, id: Id, msg: Bytes) {
        let pos = self.keep(&id, &msg);
        // Another node's message: its latency here counts from its arrival.
        let at = self.lp.now_ms();
        let (local, forwarded) =
            (self.router).route(&mut self.outbox, &id, &msg, pos, ReplyTo::NOBODY, at);
        if let Some(s) = local {
            let ev = Ev::Plain { msg: &msg, pos, at };
            self.deliver_slot(s, ev);
        }
        self.count_unwanted(local, forwarded, ReplyTo::NOBODY);
    }

    /// A record from Redis that reached no subscriber on this node (no local slot, no other
    /// shard holding the id: `route`'s answer) and was not this node's own publish (`reply`
    /// is nobody): counted in `cluster_unwanted`.
    fn count_unwanted(&self, local: Option<u32>, forwarded: u16, reply: ReplyTo) {
        if local.is_none() && forwarded == 0 && reply == ReplyTo::NOBODY {
            if let Some(c) = &self.cluster.node {
                c.stats.unwanted.fetch_add(1, Relaxed);
            }
        }
    }

    /// Whether Redis numbers and keeps the messages (cluster mode with history on).
    pub(super) fn sequenced(&self) -> bool {
        self.cluster.node.as_ref().is_some_and(|c| c.sequenced())
    }

    /// History on in cluster mode: publish `t` goes to Redis to be numbered and comes back
    /// to every node (this one too) as `RemoteAt`; refused with `503` if Redis is down or
    /// the queue is full. Returns false (nothing done) when not sequenced.
    pub(super) fn publish_sequenced(&mut self, t: u32, id: &Id, msg: &Bytes) -> bool {
        let reply = ReplyTo {
            shard: self.me as u16,
            token: t,
        };
        let queued = match &self.cluster.node {
            Some(c) if c.sequenced() => c.forward_positioned(id, msg, reply),
            _ => return false,
        };
        self.cluster_forward_flag(t, false);
        if !queued {
            self.publish_failed(t, false);
        }
        true
    }

    /// `PublishFailed`: publish `t` is answered `503` and its connection closes (Redis lost
    /// before it came back numbered; `sent`: after it was sent, so it may have been kept).
    pub(super) fn publish_failed(&mut self, t: u32, sent: bool) {
        let mut raw = Vec::new();
        let why = if sent {
            "cluster unavailable: Redis was lost while it numbered the message; it may have been delivered"
        } else {
            "cluster unavailable: Redis, which numbers and keeps the messages, cannot be reached; the message was not delivered"
        };
        response::error_text(&mut raw, Status::Unavailable, why);
        self.fail_publish(t, raw);
    }

    /// `RemoteAt`: a message Redis numbered `pos` for `id` (owned here): delivered here and
    /// on the other shards holding `id`; `reply` gets the count if this node published it.
    pub(super) fn on_remote_at(&mut self, id: Id, msg: Bytes, pos: Pos, reply: ReplyTo) {
        let at = self.lp.now_ms();
        let (local, forwarded) = (self.router).route(&mut self.outbox, &id, &msg, pos, reply, at);
        let mut n = 0;
        if let Some(s) = local {
            self.sequenced_seen(s, &id, pos);
            n = self.deliver_slot(s, Ev::Plain { msg: &msg, pos, at });
        }
        self.count_unwanted(local, forwarded, reply);
        self.reply(reply, n, Some(forwarded));
    }

    /// Cluster mode: the message at `pos` of `id` (router slot `s`) is about to be delivered
    /// here. If it comes more than one offset after the last one this shard saw (the node's
    /// pub/sub connection to Redis dropped meanwhile, and came back), the slot's live streams
    /// that carry cursors end cleanly now, before it: each resumes from its cursor and gets
    /// the messages in between from Redis, rather than skipping them unaware.
    pub(super) fn sequenced_seen(&mut self, s: u32, id: &Id, pos: Pos) {
        let prev = self.resume.remote.track_forward(s, id, pos);
        if prev.epoch != pos.epoch || prev.offset == 0 || pos.offset <= prev.offset + 1 {
            return;
        }
        let cut: Vec<u32> = (self.router.subscribers(s).iter().copied())
            .filter(|&c| {
                let c = &self.conns[c];
                c.proto & CURSORS != 0 && c.state == State::SubStream
            })
            .collect();
        tracing::debug!(shard = self.me, %id, from = prev.offset, to = pos.offset, streams = cut.len(), "cluster: gap in an id's messages; its cursor streams end to resume");
        for c in cut {
            // After what it has queued (all before the hole); WebSocket 1013, try again later.
            self.end_stream_as(c, 1013, false);
        }
    }

    /// Asks Redis (through the agent) where id `k` of connection `conn` on shard `from`
    /// starts; the answer comes as `Replayed`. Redis down: answered `unavailable` at once.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn fetch(&mut self, id: Id, start: Start, from: u16, conn: u32, token: u32, k: u8) {
        let f = Fetch {
            id,
            start,
            from,
            conn,
            token,
            k,
        };
        if self.cluster.node.as_ref().is_some_and(|c| c.fetch(f)) {
            return;
        }
        let verdict = Err((Reason::Unavailable, Pos::default()));
        let m = Msg::Replayed {
            conn,
            token,
            k,
            verdict,
        };
        self.outbox.push(usize::from(from), m);
    }

    /// `RemoteFriends`: a friends event another node accepted from `user` (this shard owns
    /// `user`): fanned out to this node's followers like a local one, no reply.
    pub(super) fn on_remote_friends(&mut self, user: u32, msg: Bytes) {
        self.fanout_owner(user, msg, ReplyTo::NOBODY, FULL_CREDIT);
    }

    /// The `GET /stats` body, with the cluster's keys in cluster mode.
    pub(super) fn stats_body(&self) -> String {
        let mut body = stats::json(&self.stats);
        if let Some(c) = &self.cluster.node {
            body.pop(); // the closing brace
            c.stats_json(&mut body);
            body.push('}');
        }
        body
    }
}
