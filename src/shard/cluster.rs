//! A shard's side of cluster mode ([`crate::cluster`]): forwarding its publishes to the
//! node's agent, delivering messages from other nodes, and holding a new subscriber's head
//! until the buckets of its ids are subscribed on Redis.

use super::*;
use crate::cluster::{wire::Kind, Cluster};
use crate::http::response::Forward;

impl<D: Driver> Shard<D> {
    /// Puts the shard in cluster mode (`None`: no cluster).
    pub fn with_cluster(mut self, cluster: Option<Arc<Cluster>>) -> Self {
        self.cluster = cluster;
        self
    }

    /// Subscriber `i` is about to be logged in under `ids`: wants their buckets subscribed
    /// and returns how many of them its head must wait for (each released by
    /// `ClusterReady`).
    pub(super) fn cluster_hold(&mut self, i: u32, ids: &[Id]) -> u8 {
        let Some(c) = &self.cluster else { return 0 };
        let mut waits = 0;
        for id in ids {
            let b = c.bucket(id);
            if c.want(b) {
                self.cluster_waiting.push((i, b));
                waits += 1;
            }
        }
        waits
    }

    /// `ClusterReady`: releases the heads whose bucket is now subscribed (or all of them if
    /// Redis went down).
    pub(super) fn on_cluster_ready(&mut self) {
        let Some(c) = self.cluster.clone() else {
            return;
        };
        let mut waiting = std::mem::take(&mut self.cluster_waiting);
        waiting.retain(|&(i, b)| {
            if !c.ready(b) {
                return true;
            }
            let conn = &mut self.conns[i];
            conn.waits = conn.waits.saturating_sub(1);
            if conn.waits == 0 && conn.state == State::SubJoining {
                conn.state = State::SubStream;
                self.try_send(i);
            }
            false
        });
        self.cluster_waiting = waiting;
    }

    /// Connection `i` is closing: it waits for nothing any more.
    pub(super) fn cluster_forget(&mut self, i: u32) {
        if !self.cluster_waiting.is_empty() {
            self.cluster_waiting.retain(|&(c, _)| c != i);
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
        let Some(c) = &self.cluster else { return };
        let dropped = !c.forward(kind, id, msg);
        let t = t as usize;
        if self.cluster_dropped.len() <= t {
            self.cluster_dropped.resize(t + 1, false);
        }
        self.cluster_dropped[t] = dropped;
    }

    /// For the reply to publish `t`: whether its forward to the other nodes was queued
    /// ([`Forward::Off`] without a cluster).
    pub(super) fn cluster_reply(&mut self, t: u32) -> Forward {
        if self.cluster.is_none() {
            return Forward::Off;
        }
        let dropped = self.cluster_dropped.get_mut(t as usize).map(std::mem::take);
        if dropped.unwrap_or(false) {
            Forward::Dropped
        } else {
            Forward::Queued
        }
    }

    /// `Remote`: a message another node published to `id` (this shard owns `id`): delivered
    /// here and on the other shards holding `id`, no reply.
    pub(super) fn on_remote(&mut self, id: Id, msg: Bytes) {
        let (local, _) = self
            .router
            .route(&mut self.outbox, &id, &msg, ReplyTo::NOBODY);
        if let Some(s) = local {
            self.deliver_slot(s, Ev::Plain(&msg));
        }
    }

    /// `RemoteFriends`: a friends event another node accepted from `user` (this shard owns
    /// `user`): fanned out to this node's followers like a local one, no reply.
    pub(super) fn on_remote_friends(&mut self, user: u32, msg: Bytes) {
        self.fanout_owner(user, msg, ReplyTo::NOBODY, super::friends::FULL_CREDIT);
    }

    /// The `GET /stats` body, with the cluster's keys in cluster mode.
    pub(super) fn stats_body(&self) -> String {
        let mut body = stats::json(&self.stats);
        if let Some(c) = &self.cluster {
            body.pop(); // the closing brace
            c.stats_json(&mut body);
            body.push('}');
        }
        body
    }
}
