//! Cluster mode over Redis (`serve --cluster redis://HOST:PORT[/DB]`, or a Redis Cluster with
//! `redis-cluster://HOST:PORT[,...]`: `conn`, [`backlog`], [`slots`]): nodes share one id
//! space through Redis pub/sub.
//!
//! # Who sends what to whom
//! - A publish accepted by a node is delivered to that node's own connections at once, as
//!   without a cluster (local deliveries never wait for Redis), and is also queued for the
//!   node's [`agent`] ([`Cluster::forward`]).
//! - The agent, a task on shard 0's runtime, drains the queue whenever it is woken and sends
//!   everything queued as one pipelined batch on one multiplexed Redis connection: one
//!   `PUBLISH uc:<B>:<b> <payload>` per bucket channel `b` present in the batch, the payload
//!   holding every record for that bucket ([`wire`]). So remote traffic is batched by
//!   itself: the more arrives while a batch is in flight, the larger the next one.
//! - Ids map to `B` bucket channels (`--cluster-buckets`, default 1024; every node must use
//!   the same B, which is part of the channel name, as is the URL's `/DB`, since Redis
//!   pub/sub ignores databases): `b = bucket(id)`, a fixed hash. A node
//!   subscribes (on its second Redis connection, the pub/sub one) to the bucket of every id a
//!   subscriber logs in under, and keeps the subscription until Redis reconnects, when only
//!   the buckets wanted since start are subscribed again. A node thus holds at most B
//!   subscriptions, and gets every message published to a bucket it holds, wanted or not
//!   (the waste; DESIGN.md measures it).
//! - The agent decodes what arrives, drops its own echoes (the payload names the publishing
//!   node), and pushes each record to the owner shard of its id as [`crate::mesh::Msg::Remote`]:
//!   the owner delivers it to its own connections and forwards it to the other shards holding
//!   the id, as for a local publish, with no reply expected. Each node delivers a message to
//!   its own connections exactly once: locally if it was published there, from Redis if not.
//! - Friends events (`POST /publish/<user>`, issue 7) are one record each (kind 2: the
//!   publishing user and the message) on one more channel, `uc:<B>:friends`, which a node
//!   with a friends graph subscribes to ([`Cluster::want_friends`]); every node fans the
//!   event out to its own connections from its own copy of the graph: the agent hands it to
//!   the owner of the user as [`crate::mesh::Msg::RemoteFriends`].
//!
//! # No gap between subscribe and delivery
//! While Redis is up, a new subscriber's response head is held until its buckets are
//! subscribed (the agent confirms with [`crate::mesh::Msg::ClusterReady`] to every shard),
//! so once a client has its headers, every later send to its id from any node reaches it.
//! While Redis is down, heads are not held: local traffic goes on.
//!
//! # Redis down
//! The agent marks the node down, releases every held head, logs one line per episode,
//! and reconnects with backoff (50 ms doubling to 1 s), then subscribes again. Meanwhile
//! publishes are still delivered locally; their forwards are dropped and counted
//! (`cluster_forward_dropped` in /stats), as are forwards over the queue bound
//! ([`QUEUE_LIMIT`] bytes): nothing is buffered without bound.
//!
//! # Files
//! - this file: the node's shared state ([`Cluster`]): buckets, the forward queue, stats.
//! - `config`: the validated `--cluster` settings ([`ClusterConfig`]).
//! - [`agent`]: the task that talks to Redis (publish batches, subscriptions, reconnects).
//! - [`wire`]: the payload format of a batch of records; [`control`]: kicks and presence
//!   counts across nodes; [`presence`]: cluster-wide presence events.

pub mod affine;
pub mod affine_lease;
pub mod agent;
pub mod backlog;
mod config;
mod conn;
pub mod control;
pub mod history;
mod inbound;
pub mod presence;
mod presence_agent;
mod receive;
mod sequencer;
pub mod slots;
mod stats;
pub mod wire;

pub use config::{redact, ClusterConfig, DEFAULT_BUCKETS};
pub use stats::ClusterStats;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_queue::SegQueue;
use tokio::sync::Notify;

use crate::id::Id;
use crate::mesh::{Mesh, Msg};

/// Most bytes of messages queued for Redis at once; beyond, forwards are dropped and counted.
pub const QUEUE_LIMIT: usize = 16 * 1024 * 1024;

/// One message waiting for the agent.
#[derive(Debug)]
pub struct Forward {
    /// Bucket channel of `key`.
    pub bucket: u32,
    /// What the receivers do with it.
    pub kind: wire::Kind,
    /// The id (send) or publishing user (friends event).
    pub key: Id,
    /// The message.
    pub msg: Bytes,
    /// History on: where the publish's reply goes once Redis has numbered it.
    pub reply: crate::mesh::ReplyTo,
}

/// A node's cluster state, shared by its shards and its agent.
pub struct Cluster {
    /// This node's random id, in every payload it publishes.
    pub node: u64,
    cfg: ClusterConfig,
    mesh: Arc<Mesh>,
    /// Buckets of ids logged in on this node since start (never cleared).
    wanted: Box<[AtomicBool]>,
    /// Buckets whose SUBSCRIBE Redis has confirmed on the current connection.
    subscribed: Box<[AtomicBool]>,
    /// Redis Cluster: per bucket, the number of the last payload delivered ([`backlog`];
    /// the agent's alone, atomics only to live in this shared struct).
    seqs: Box<[AtomicU64]>,
    /// Redis Cluster: buckets to fill from their backlog (subscribed again, or moved).
    refill: SegQueue<u32>,
    /// Connected and subscribed: forwards are queued and new heads wait for subscriptions.
    up: AtomicBool,
    queue: SegQueue<Forward>,
    queued_bytes: AtomicUsize,
    /// Set when the agent has been woken and not yet drained the queue.
    woken: AtomicBool,
    wake: Notify,
    /// History on: resume reads waiting for the agent.
    fetches: SegQueue<history::Fetch>,
    /// Control requests and answers between the shards and the agent ([`control`]).
    ctl: control::CtlQueues,
    /// Cluster-wide presence events ([`presence`]).
    presence: presence::PresenceQueues,
    /// `uc:<B>`, or `uc<DB>:<B>` for a URL with a database other than 0: the start of every
    /// channel and key name (computed once).
    prefix: Box<str>,
    /// Redis Cluster: the SHA1 of the session's [`backlog::PUB_LUA`] (empty: none).
    pub_sha: std::sync::Mutex<String>,
    /// Totals for /stats.
    pub stats: ClusterStats,
}

impl Cluster {
    /// The cluster state of a node whose shards share `mesh`.
    pub fn new(cfg: ClusterConfig, mesh: Arc<Mesh>) -> Cluster {
        // One flag more than buckets: the last stands for the friends channel.
        let b = cfg.buckets as usize + 1;
        Cluster {
            node: config::random_node_id(),
            mesh,
            wanted: (0..b).map(|_| AtomicBool::new(false)).collect(),
            subscribed: (0..b).map(|_| AtomicBool::new(false)).collect(),
            seqs: (0..b).map(|_| AtomicU64::new(0)).collect(),
            refill: SegQueue::new(),
            up: AtomicBool::new(false),
            queue: SegQueue::new(),
            queued_bytes: AtomicUsize::new(0),
            woken: AtomicBool::new(false),
            wake: Notify::new(),
            fetches: SegQueue::new(),
            ctl: control::CtlQueues::default(),
            presence: presence::PresenceQueues::default(),
            stats: ClusterStats::default(),
            pub_sha: std::sync::Mutex::new(String::new()),
            prefix: match cfg.db {
                0 => format!("uc:{}", cfg.buckets),
                db => format!("uc{db}:{}", cfg.buckets),
            }
            .into(),
            cfg,
        }
    }

    /// The settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    /// The bucket of `id` ([`affine::bucket_of`] with `--cluster-buckets`).
    pub fn bucket(&self, id: &Id) -> u32 {
        affine::bucket_of(id, self.cfg.buckets)
    }

    /// The Redis channel of bucket `b`: `uc:<B>:<b>`, or `uc<DB>:<B>:<b>` for a URL with a
    /// database other than 0; bucket [`Cluster::friends_bucket`] is `uc:<B>:friends`. On
    /// Redis Cluster the bucket is a hash tag, `uc:<B>:{<b>}`: its history keys
    /// (`Cluster::bucket_prefix`) are in the same slot, as the history script needs.
    pub fn channel(&self, b: u32) -> String {
        self.bucket_prefix(b)
    }

    /// The channel of bucket `b`, which also begins the names of its ids' history keys.
    pub(crate) fn bucket_prefix(&self, b: u32) -> String {
        let b = if b == self.friends_bucket() {
            "friends".to_string()
        } else {
            b.to_string()
        };
        if self.cfg.is_redis_cluster() {
            return format!("{}:{{{b}}}", self.prefix);
        }
        format!("{}:{b}", self.prefix)
    }

    /// The command that publishes: `PUBLISH`, or `SPUBLISH` on Redis Cluster (sharded pub/sub:
    /// only the shard of the channel's slot carries the message).
    pub(crate) fn publish_cmd(&self) -> &'static str {
        if self.cfg.is_redis_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// The pseudo-bucket of friends events: one channel every node with a friends graph
    /// subscribes to (a friends event goes to the followers of its publisher, whose ids are
    /// in any bucket, so each node gets the event once and fans it out from its own copy
    /// of the graph).
    pub fn friends_bucket(&self) -> u32 {
        self.cfg.buckets
    }

    /// This node takes friends events from the cluster (it has a friends graph): subscribes
    /// the friends channel.
    pub fn want_friends(&self) {
        let _ = self.want(self.friends_bucket());
    }

    /// Whether the node is connected to Redis with its subscriptions in place.
    pub fn is_up(&self) -> bool {
        self.up.load(Relaxed)
    }

    /// A shard logs a subscriber in under an id of bucket `b`: returns whether its head must
    /// wait for the agent's [`Msg::ClusterReady`] (Redis up, bucket not subscribed yet).
    pub fn want(&self, b: u32) -> bool {
        if !self.owns(b) {
            return false;
        }
        let b = b as usize;
        // A load first: once warm, logins only read the shared flag (no cache-line bouncing).
        if !self.wanted[b].load(Relaxed) && !self.wanted[b].swap(true, Relaxed) {
            self.wake_agent();
        }
        self.is_up() && !self.subscribed[b].load(Relaxed)
    }

    /// Whether the agent's subscription of bucket `b` is confirmed.
    pub(crate) fn is_subscribed(&self, b: u32) -> bool {
        self.subscribed[b as usize].load(Relaxed)
    }

    /// Whether a head waiting on bucket `b` may go now.
    pub fn ready(&self, b: u32) -> bool {
        !self.is_up() || self.subscribed[b as usize].load(Relaxed)
    }

    /// Queues a message for the other nodes. Returns false (and counts a drop) if Redis is
    /// down or the queue is over [`QUEUE_LIMIT`].
    pub fn forward(&self, kind: wire::Kind, key: &Id, msg: &Bytes) -> bool {
        self.push_forward(kind, key, msg, crate::mesh::ReplyTo::NOBODY)
    }

    fn push_forward(
        &self,
        kind: wire::Kind,
        key: &Id,
        msg: &Bytes,
        reply: crate::mesh::ReplyTo,
    ) -> bool {
        let len = msg.len() + wire::RECORD_OVERHEAD + 24;
        if !self.is_up() {
            self.stats.dropped.fetch_add(1, Relaxed);
            return false;
        }
        if self.queued_bytes.fetch_add(len, Relaxed) + len > QUEUE_LIMIT {
            self.queued_bytes.fetch_sub(len, Relaxed);
            self.stats.dropped.fetch_add(1, Relaxed);
            return false;
        }
        self.queue.push(Forward {
            bucket: match kind {
                wire::Kind::Friends => self.friends_bucket(),
                _ => self.bucket(key),
            },
            kind,
            key: key.clone(),
            msg: msg.clone(),
            reply,
        });
        self.wake_agent();
        true
    }

    fn wake_agent(&self) {
        if !self.woken.swap(true, Relaxed) {
            self.wake.notify_one();
        }
    }

    /// Takes the next queued forward (agent side).
    fn pop(&self) -> Option<Forward> {
        let f = self.queue.pop()?;
        let len = f.msg.len() + wire::RECORD_OVERHEAD + 24;
        self.queued_bytes.fetch_sub(len, Relaxed);
        Some(f)
    }

    /// Tells every shard to look at its held heads again.
    fn broadcast_ready(&self) {
        for s in 0..self.mesh.shards() {
            self.mesh.push(s, vec![Msg::ClusterReady]);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::Arc;

    use bytes::Bytes;

    use super::{wire, Cluster, ClusterConfig, QUEUE_LIMIT};
    use crate::id::Id;
    use crate::mesh::Mesh;

    #[test]
    fn buckets_spread_ids() {
        let c = Cluster::new(
            ClusterConfig::new("redis://127.0.0.1:1", 1024).unwrap(),
            Arc::new(Mesh::new(1)),
        );
        // 1,000 ids over 1,024 buckets: 1 - e^(-1000/1024) = 62% of the buckets held if the
        // hash spreads like a random one.
        let mut held = vec![false; 1024];
        for n in 1..=1000 {
            held[c.bucket(&Id::Num(n)) as usize] = true;
        }
        let n = held.iter().filter(|&&h| h).count();
        assert!((580..=690).contains(&n), "{n} buckets held");
        // The next block of 1,000 ids (another node's, in `loadtest --nodes 2`) shares about
        // 62% of them, not all.
        let mut both = 0;
        let mut seen = vec![false; 1024];
        for n in 1001..=2000 {
            let b = c.bucket(&Id::Num(n)) as usize;
            if held[b] && !seen[b] {
                both += 1;
            }
            seen[b] = true;
        }
        assert!(
            (300..=480).contains(&both),
            "{both} buckets held by both blocks"
        );
        let mut held = vec![false; 1024];
        for n in 1..=1000 {
            held[c.bucket(&Id::parse(format!("user-{n}").as_bytes()).unwrap()) as usize] = true;
        }
        let n = held.iter().filter(|&&h| h).count();
        assert!((580..=690).contains(&n), "{n} buckets held (string ids)");
    }

    #[test]
    fn buckets_and_queue_bound() {
        let c = Cluster::new(
            ClusterConfig::new("redis://127.0.0.1:1", 16).unwrap(),
            Arc::new(Mesh::new(1)),
        );
        let b = c.bucket(&Id::Num(42));
        assert!(b < 16);
        assert_eq!(c.channel(b), format!("uc:16:{b}"));
        let c3 = Cluster::new(
            ClusterConfig::new("redis://127.0.0.1:1/3", 16).unwrap(),
            Arc::new(Mesh::new(1)),
        );
        assert_eq!(c3.channel(b), format!("uc3:16:{b}"));
        assert_eq!(c.channel(c.friends_bucket()), "uc:16:friends");
        // Down: a head never waits, a forward is dropped and counted.
        assert!(!c.want(b));
        assert!(c.ready(b));
        assert!(!c.forward(wire::Kind::Send, &Id::Num(42), &Bytes::from_static(b"x")));
        assert_eq!(c.stats.dropped.load(Relaxed), 1);
        // Up: queued until the bound.
        c.up.store(true, Relaxed);
        assert!(c.want(b), "not subscribed yet: the head waits");
        // A friends event goes to the friends channel, a send to its id's bucket.
        assert!(c.forward(wire::Kind::Friends, &Id::Num(42), &Bytes::from_static(b"f")));
        assert!(c.forward(wire::Kind::Send, &Id::Num(42), &Bytes::from_static(b"s")));
        assert_eq!(c.pop().map(|f| f.bucket), Some(c.friends_bucket()));
        assert_eq!(c.pop().map(|f| f.bucket), Some(b));
        let big = Bytes::from(vec![0u8; 60 * 1024]);
        let fits = QUEUE_LIMIT / (big.len() + wire::RECORD_OVERHEAD + 24);
        for _ in 0..fits {
            assert!(c.forward(wire::Kind::Send, &Id::Num(1), &big));
        }
        assert!(!c.forward(wire::Kind::Send, &Id::Num(1), &big));
        assert_eq!(c.stats.dropped.load(Relaxed), 2);
        assert!(c.pop().is_some());
        assert!(c.forward(wire::Kind::Send, &Id::Num(1), &big));
    }
}
