//! Cluster-wide presence events (`--presence-events` with `--cluster`): `online` when an id's
//! first connection anywhere in the cluster opens, `offline` when its last one anywhere
//! closes, numbered by Redis so a feed's cursor means the same on every node.
//!
//! # Keys (prefix `p` = `uc:<B>` or `uc<DB>:<B>`, as the bucket channels)
//! - `p:pres:<id>`: a hash, node id (16 hex digits) -> 1, one field per node holding the id.
//! - `p:pids:<node>`: the ids a node holds (a set), for its sweep and its resync.
//! - `p:pnodes`: the nodes that hold any id (a set).
//! - `p:plive:<node>`: the node's lease, refreshed every [`LEASE_REFRESH`], expiring after
//!   [`LEASE`].
//! - `p:pseq`: the last event number; `p:pepoch`: the cluster's presence epoch (a random
//!   number set once, so a Redis that lost its data starts a new epoch).
//! - channel `p:presence`: the events, `UCP1:<seq>:<1|0>:<id>`.
//!
//! # Who does what
//! - A node's own edges come from its router as without a cluster (first local holder in;
//!   last local holder out after `--presence-debounce`). The hub shard hands each to the
//!   agent ([`Cluster::presence_edge`]) instead of numbering it, and keeps the node's set of
//!   held ids (for the resync).
//! - The agent runs `EDGE` for each: the script adds or removes the node in the id's hash
//!   and, only when the hash goes from empty to one node or from one node to empty, takes
//!   the next number and PUBLISHes the event, atomically (so numbers follow channel order).
//! - Every node with presence events subscribes the channel and hands each event to every
//!   shard ([`Msg::PresenceEvent`]): the log and the feeds are as without a cluster.
//! - Node lost: its lease expires; every node runs `SWEEP` every [`SWEEP_EVERY`], which
//!   removes the dead node from the hashes of its ids and publishes the offlines that
//!   result. So a crashed (or stopped) node's ids go offline within about
//!   `LEASE + SWEEP_EVERY` (12 s).
//! - Redis lost (or the node's lease swept while it was paused): the node's edges meanwhile
//!   are not sent; at the next session (or when it finds its lease gone) it resyncs: it adds
//!   itself to the hash of every id it holds and removes itself from every id it no longer
//!   holds, each through `EDGE` (only the changes make events). Feeds on a node that was
//!   cut off have a gap: every shard is told the current number ([`Msg::PresenceFloor`]),
//!   so a feed resuming from before it gets `event: reset` (`unknown-offset`) rather than
//!   silently missing events.
//!
//! Costs: Redis holds about 100 bytes per online (id, node); the hub holds the node's ids
//! (one `Id` each) only in cluster mode with presence events on. One script call per node
//! edge.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use super::Cluster;
use crate::id::Id;
use crate::mesh::Msg;
use crossbeam_queue::SegQueue;

/// A node's lease on its presence entries: a node not heard from for this long is swept.
pub const LEASE: Duration = Duration::from_secs(10);
/// How often a node refreshes its lease.
pub const LEASE_REFRESH: Duration = Duration::from_secs(3);
/// How often every node sweeps the entries of nodes whose lease expired.
pub const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// Payload prefix of an event on the presence channel.
const MAGIC: &[u8] = b"UCP1:";
/// Edges sent per pipeline.
pub(super) const BATCH: usize = 512;

/// Adds (ARGV[3] = 1) or removes node ARGV[2] for id ARGV[4] (prefix ARGV[1]); publishes
/// the cluster-wide edge it causes, numbered. Returns the event number, or 0 for none.
pub(super) const EDGE: &str = r"
local p, node, on, id = ARGV[1], ARGV[2], ARGV[3] == '1', ARGV[4]
local k = p .. ':pres:' .. id
local seq = 0
if on then
  if redis.call('HSET', k, node, 1) == 1 and redis.call('HLEN', k) == 1 then
    seq = redis.call('INCR', p .. ':pseq')
  end
  redis.call('SADD', p .. ':pids:' .. node, id)
  redis.call('SADD', p .. ':pnodes', node)
else
  if redis.call('HDEL', k, node) == 1 and redis.call('HLEN', k) == 0 then
    seq = redis.call('INCR', p .. ':pseq')
  end
  redis.call('SREM', p .. ':pids:' .. node, id)
end
if seq > 0 then
  redis.call('PUBLISH', p .. ':presence', 'UCP1:' .. seq .. ':' .. (on and '1' or '0') .. ':' .. id)
end
return seq
";

/// Removes every node whose lease (`p:plive:<node>`) expired from the hashes of its ids,
/// publishing each offline it causes; returns how many.
pub(super) const SWEEP: &str = r"
local p, n = ARGV[1], 0
for _, node in ipairs(redis.call('SMEMBERS', p .. ':pnodes')) do
  if redis.call('EXISTS', p .. ':plive:' .. node) == 0 then
    for _, id in ipairs(redis.call('SMEMBERS', p .. ':pids:' .. node)) do
      local k = p .. ':pres:' .. id
      if redis.call('HDEL', k, node) == 1 and redis.call('HLEN', k) == 0 then
        local seq = redis.call('INCR', p .. ':pseq')
        redis.call('PUBLISH', p .. ':presence', 'UCP1:' .. seq .. ':0:' .. id)
        n = n + 1
      end
    end
    redis.call('DEL', p .. ':pids:' .. node)
    redis.call('SREM', p .. ':pnodes', node)
  end
end
return n
";

/// The presence side of a node's cluster state (shared by the hub shard and the agent).
#[derive(Debug, Default)]
pub(super) struct PresenceQueues {
    /// `--presence-events` is on: the agent subscribes the channel and runs the scripts.
    on: AtomicBool,
    /// The ids this node holds (the hub's view of its node-level edges).
    pub(super) held: Mutex<HashSet<Id>>,
    /// Edges not yet sent (only queued while Redis is up; the resync covers the rest).
    pub(super) edges: SegQueue<(Id, bool)>,
    /// The cluster's presence epoch (0 until the agent has read it).
    pub(super) epoch: AtomicU64,
}

impl Cluster {
    /// Turns cluster-wide presence events on (`--presence-events`); before the agent starts.
    pub fn enable_presence_events(&self) {
        self.presence.on.store(true, Relaxed);
    }

    /// Whether presence events are cluster-wide (cluster mode with `--presence-events`).
    pub fn presence_events(&self) -> bool {
        self.presence.on.load(Relaxed)
    }

    /// The cluster's presence epoch, once read from Redis (0 before).
    pub fn presence_epoch(&self) -> u64 {
        self.presence.epoch.load(Relaxed)
    }

    /// Hub shard: this node's edge for `id` (its first local holder in, or its last out
    /// after the debounce). Sent to Redis by the agent; kept in the node's set either way.
    pub fn presence_edge(&self, id: Id, online: bool) {
        {
            let mut held = self.presence.held.lock().unwrap_or_else(|e| e.into_inner());
            if online {
                held.insert(id.clone());
            } else {
                held.remove(&id);
            }
        }
        if self.is_up() {
            self.presence.edges.push((id, online));
            self.wake_agent();
        }
    }

    /// The key and channel prefix, `uc:<B>` or `uc<DB>:<B>`; on Redis Cluster `{uc:<B>}`, a
    /// hash tag: presence is one slot (its scripts touch many of its keys), on one shard.
    pub(super) fn presence_prefix(&self) -> String {
        if self.cfg.is_redis_cluster() {
            return format!("{{{}}}", self.prefix);
        }
        self.prefix.to_string()
    }

    /// The presence channel.
    pub(super) fn presence_channel(&self) -> String {
        format!("{}:presence", self.presence_prefix())
    }
}

/// Whether a pub/sub payload is a presence event.
pub(super) fn is_presence(payload: &[u8]) -> bool {
    payload.starts_with(MAGIC)
}

/// Decodes `UCP1:<seq>:<1|0>:<id>`.
fn decode(payload: &[u8]) -> Option<(u64, bool, Id)> {
    let rest = payload.strip_prefix(MAGIC)?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let seq = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
    let rest = &rest[colon + 1..];
    let online = match rest.get(..2)? {
        b"1:" => true,
        b"0:" => false,
        _ => return None,
    };
    Some((seq, online, Id::parse(&rest[2..]).ok()?))
}

/// An event from the channel: to every shard's log and feeds.
pub(super) fn take(c: &Cluster, payload: &[u8]) {
    let Some((seq, online, id)) = decode(payload) else {
        c.stats.bad.fetch_add(1, Relaxed);
        return;
    };
    for s in 0..c.mesh.shards() {
        let id = id.clone();
        c.mesh.push(s, vec![Msg::PresenceEvent { seq, id, online }]);
    }
}

#[cfg(test)]
mod tests {
    use super::decode;
    use crate::id::Id;

    #[test]
    fn decodes_events() {
        assert_eq!(decode(b"UCP1:7:1:42"), Some((7, true, Id::Num(42))));
        let (seq, online, id) = decode(b"UCP1:12:0:user-a").unwrap();
        assert_eq!(
            (seq, online, id.to_string()),
            (12, false, "user-a".to_string())
        );
        assert_eq!(decode(b"UCP1:x:1:42"), None);
        assert_eq!(decode(b"UCP1:7:2:42"), None);
        assert_eq!(decode(b"UCP1:7:1:"), None);
        assert_eq!(decode(b"UCA1:7:1:42"), None);
    }
}
