//! The cluster's counters for `GET /stats` and `/metrics` (cluster mode only): what went to
//! Redis, what came back, and what of it this node had no use for.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use super::Cluster;

/// Totals of the cluster, read by `GET /stats` (keys in [`Cluster::stats_json`]).
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Messages published to Redis.
    pub forwarded: AtomicU64,
    /// Messages not forwarded: Redis down, a failed PUBLISH, or the queue bound.
    pub dropped: AtomicU64,
    /// Records received from other nodes.
    pub received: AtomicU64,
    /// Own records received back from Redis and dropped.
    pub echoes: AtomicU64,
    /// Payloads or records that could not be decoded, or named an invalid id.
    pub bad: AtomicU64,
    /// Redis connection episodes ended by an error.
    pub outages: AtomicU64,
    /// Redis `PUBLISH` batches sent.
    pub batches: AtomicU64,
    /// Every record that arrived from Redis pub/sub, own echoes and other nodes' records
    /// alike: the node's inbound load (`loadtest --nodes N --cluster-mode`).
    pub inbound: AtomicU64,
    /// Records from other nodes for an id with no subscriber on this node: received only
    /// because another id of the same bucket is held here (broadcast mode's waste).
    pub unwanted: AtomicU64,
    /// Redis Cluster: channels subscribed again after their slot moved to another shard.
    pub resubscribed: AtomicU64,
    /// Redis Cluster: payloads delivered from a bucket's backlog (after a gap or a move).
    pub backlog_filled: AtomicU64,
    /// Redis Cluster: payloads of a gap the backlog no longer held (lost).
    pub backlog_missed: AtomicU64,
    /// Redis Cluster: payloads that arrived live after the backlog had delivered them.
    pub backlog_dups: AtomicU64,
}

impl Cluster {
    /// The cluster's keys for `GET /stats`, each `,"key":N`: `cluster_up` (0 or 1),
    /// `cluster_subscribed_buckets`, `cluster_forwarded`, `cluster_forward_dropped`,
    /// `cluster_received`, `cluster_echoes_dropped`, `cluster_bad_records`,
    /// `cluster_outages`, `cluster_batches`, `cluster_inbound`, `cluster_unwanted`,
    /// `cluster_resubscribed`, `cluster_backlog_filled`, `cluster_backlog_missed`,
    /// `cluster_backlog_dups`.
    pub fn stats_json(&self, out: &mut String) {
        let s = &self.stats;
        let subscribed = self.subscribed.iter().filter(|b| b.load(Relaxed)).count();
        let _ = write!(
            out,
            ",\"cluster_up\":{},\"cluster_subscribed_buckets\":{subscribed},\"cluster_forwarded\":{},\"cluster_forward_dropped\":{},\"cluster_received\":{},\"cluster_echoes_dropped\":{},\"cluster_bad_records\":{},\"cluster_outages\":{},\"cluster_batches\":{},\"cluster_inbound\":{},\"cluster_unwanted\":{},\"cluster_resubscribed\":{},\"cluster_backlog_filled\":{},\"cluster_backlog_missed\":{},\"cluster_backlog_dups\":{}",
            u8::from(self.is_up()),
            s.forwarded.load(Relaxed),
            s.dropped.load(Relaxed),
            s.received.load(Relaxed),
            s.echoes.load(Relaxed),
            s.bad.load(Relaxed),
            s.outages.load(Relaxed),
            s.batches.load(Relaxed),
            s.inbound.load(Relaxed),
            s.unwanted.load(Relaxed),
            s.resubscribed.load(Relaxed),
            s.backlog_filled.load(Relaxed),
            s.backlog_missed.load(Relaxed),
            s.backlog_dups.load(Relaxed),
        );
    }
}
