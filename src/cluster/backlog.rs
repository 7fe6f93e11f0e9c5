//! Redis Cluster: no message lost when a bucket's slot moves between shards.
//!
//! Sharded pub/sub keeps nothing: when a slot migrates (`CLUSTER SETSLOT <slot> NODE`), the
//! old owner drops its subscribers' channels of that slot (a `sunsubscribe` push) and
//! publishers are sent to the new owner (`MOVED`), and whatever reaches the new owner before
//! a node has subscribed there is gone. Measured with tests/redis_cluster.rs: three messages
//! of four hundred (one every 2 ms) lost per move. So on Redis Cluster every bucket
//! channel's payload goes out through [`UC_PUB`], which, atomically with the `SPUBLISH`:
//! - numbers it: `INCR uc:<B>:{<b>}:s` (the bucket's sequence, never expiring), the number
//!   prefixed to the payload (8 bytes, big-endian);
//! - keeps it: `RPUSH uc:<B>:{<b>}:b`, trimmed to [`BACKLOG_LEN`] entries, expiring
//!   [`BACKLOG_TTL_MS`] after the last (the TTL refreshed every 16th number: `PEXPIRE` on
//!   each was a third of the script's cost).
//!
//! Cost, measured with `redis-benchmark` on this box (one subscriber, 200-byte payloads):
//! Redis CPU per payload 1.1 us for a bare `SPUBLISH`, 5.9-8.0 us through the script, about
//! 3 us of it the script call itself. A payload carries every record of its bucket in the
//! agent's batch, so under load the cost per record falls; memory is at most
//! [`BACKLOG_LEN`] payloads per bucket, gone [`BACKLOG_TTL_MS`] after the bucket's last.
//!
//! Both keys carry the bucket's hash tag, so they live in the channel's slot and move with it
//! (`MIGRATE` before `SETSLOT NODE`). The agent remembers the last number delivered per
//! bucket (read with `GET` before each `SSUBSCRIBE`, so the start is known too): a payload
//! numbered at most that is a duplicate (dropped); one past it is delivered; a gap, or a
//! channel subscribed again after a move, is filled from the backlog (`LRANGE`) in order
//! before anything later. What the backlog no longer holds is counted
//! (`cluster_backlog_missed`) and logged. Numbers restart with each agent session (a
//! session ends when a node connection drops, as in a failover), since a promoted replica may
//! lack the last increments (asynchronous replication).

use std::sync::atomic::Ordering::Relaxed;

use super::conn::Conn;
use super::Cluster;

/// Entries kept per bucket: batches, each up to 512 KiB of records (a move's gap is a few ms).
pub const BACKLOG_LEN: usize = 256;
/// How long a bucket's backlog outlives its last entry, ms.
pub const BACKLOG_TTL_MS: u64 = 10_000;
/// Bytes of the number before each payload.
pub const SEQ_LEN: usize = 8;

/// The Lua function the cluster variants of the publishing scripts call instead of
/// `PUBLISH` (`Cluster::script`): numbers, keeps and `SPUBLISH`es one payload.
pub const UC_PUB: &str = r"
local function uc_pub(ch, p)
  local s = redis.call('INCR', ch .. ':s')
  local r = struct.pack('>I4I4', math.floor(s / 4294967296), s % 4294967296) .. p
  local b = ch .. ':b'
  local n = redis.call('RPUSH', b, r)
  if n > 256 then
    redis.call('LTRIM', b, -256, -1)
  end
  if n == 1 or s % 16 == 0 then
    redis.call('PEXPIRE', b, 10000)
  end
  return redis.call('SPUBLISH', ch, r)
end
";

/// The publish of a plain batch (history off) on Redis Cluster. KEYS: the sequence key (for
/// routing). ARGV: channel, payload. Returns what `SPUBLISH` does.
pub const PUB_LUA: &str = "return redis.call('PUBLISH', ARGV[1], ARGV[2])\n";

/// Loads [`PUB_LUA`] (its cluster variant) on every Redis node; returns its SHA1.
pub(super) async fn load(c: &Cluster, publ: &mut Conn) -> Result<String, String> {
    redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(c.script(PUB_LUA).as_ref())
        .query_async(publ)
        .await
        .map_err(|e| format!("SCRIPT LOAD (backlog): {e}"))
}

impl Cluster {
    /// `src` (a Lua script publishing on a bucket channel) for this Redis: on Redis Cluster
    /// each `PUBLISH` becomes a call of [`UC_PUB`] (numbered, kept, `SPUBLISH`ed).
    pub(crate) fn script(&self, src: &'static str) -> std::borrow::Cow<'static, str> {
        if self.cfg.is_redis_cluster() {
            let body = src.replace("redis.call('PUBLISH', ", "uc_pub(");
            format!("{}{body}", UC_PUB).into()
        } else {
            src.into()
        }
    }

    /// `src` (a Lua script publishing elsewhere: presence) with its `PUBLISH`es as
    /// [`Cluster::publish_cmd`].
    pub(crate) fn script_plain(&self, src: &'static str) -> std::borrow::Cow<'static, str> {
        if self.cfg.is_redis_cluster() {
            src.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")
                .into()
        } else {
            src.into()
        }
    }

    /// The session's plain publish script on Redis Cluster; `None` on one Redis.
    pub(super) fn pub_sha(&self) -> Option<String> {
        let s = self.pub_sha.lock().unwrap_or_else(|e| e.into_inner());
        (!s.is_empty()).then(|| s.clone())
    }

    /// The buckets queued for a fill from their backlog.
    pub(super) fn take_refills(&self) -> std::collections::BTreeSet<u32> {
        std::iter::from_fn(|| self.refill.pop()).collect()
    }

    pub(super) fn set_pub_sha(&self, sha: String) {
        *self.pub_sha.lock().unwrap_or_else(|e| e.into_inner()) = sha;
    }
}

/// What to do with a numbered payload of a bucket.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Admit {
    /// The next one: deliver.
    Next,
    /// Delivered already (from the backlog): drop.
    Dup,
    /// Some before it are missing: fill from the backlog, which holds this one too.
    Gap,
}

impl Cluster {
    /// The bucket of a channel name on Redis Cluster (`uc:<B>:{<b>}`, `uc:<B>:{friends}`).
    /// `None` on one Redis (its payloads carry no number).
    pub(super) fn bucket_of_channel(&self, ch: &[u8]) -> Option<u32> {
        if !self.cfg.is_redis_cluster() || ch.last() != Some(&b'}') {
            return None;
        }
        let tag = ch
            .strip_prefix(self.prefix.as_bytes())?
            .strip_prefix(b":{")?
            .strip_suffix(b"}")?;
        if tag == b"friends" {
            return Some(self.friends_bucket());
        }
        let b: u32 = std::str::from_utf8(tag).ok()?.parse().ok()?;
        (b < self.cfg.buckets).then_some(b)
    }

    /// Payload number `seq` of bucket `b` arrived live.
    pub(super) fn admit(&self, b: u32, seq: u64) -> Admit {
        let last = &self.seqs[b as usize];
        let l = last.load(Relaxed);
        if seq == l + 1 {
            last.store(seq, Relaxed);
            Admit::Next
        } else if seq <= l && l - seq <= BACKLOG_LEN as u64 * 4 {
            tracing::debug!(
                bucket = b,
                seq,
                last = l,
                "cluster: duplicate payload dropped"
            );
            Admit::Dup
        } else if seq <= l {
            // Far behind: the sequence key was lost (deleted, evicted); start again here.
            tracing::warn!(
                bucket = b,
                seq,
                last = l,
                "cluster: a bucket's sequence went back; following it"
            );
            last.store(seq, Relaxed);
            Admit::Next
        } else {
            tracing::debug!(
                bucket = b,
                seq,
                last = l,
                "cluster: gap in a bucket's payloads"
            );
            Admit::Gap
        }
    }
}

/// Reads the numbers of `buckets` from Redis before they are subscribed (`GET` of each
/// sequence key, 0 if absent). A bucket first subscribed starts there. A bucket subscribed
/// again (a new session: a node connection dropped, a failover) whose number moved on is
/// queued for a fill ([`Cluster::take_refills`]): what was published while this node was
/// not subscribed comes from the backlog. One whose number went back (a promoted replica
/// without the last increments) starts again where it is now.
pub(super) async fn read_starts(
    c: &Cluster,
    publ: &mut Conn,
    buckets: &[u32],
) -> Result<(), String> {
    let mut pipe = redis::pipe();
    for &b in buckets {
        pipe.cmd("GET").arg(format!("{}:s", c.channel(b)));
    }
    let got: Vec<Option<u64>> = pipe
        .query_async(publ)
        .await
        .map_err(|e| format!("GET bucket sequences: {e}"))?;
    for (&b, n) in buckets.iter().zip(got) {
        let (n, last) = (n.unwrap_or(0), &c.seqs[b as usize]);
        let l = last.load(Relaxed);
        if l > 0 && n > l {
            c.refill.push(b);
        } else if n != l {
            last.store(n, Relaxed);
        }
    }
    Ok(())
}

/// The backlog of bucket `b` after its last delivered number, in order (`LRANGE`); moves
/// the last number to the newest returned and counts what the backlog no longer held.
pub(super) async fn fill(c: &Cluster, publ: &mut Conn, b: u32) -> Result<Vec<Vec<u8>>, String> {
    let entries: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(format!("{}:b", c.channel(b)))
        .arg(0)
        .arg(-1)
        .query_async(publ)
        .await
        .map_err(|e| format!("LRANGE bucket backlog: {e}"))?;
    let last = &c.seqs[b as usize];
    let mut out = Vec::new();
    for e in entries {
        let Some(seq) = seq_of(&e) else {
            c.stats.bad.fetch_add(1, Relaxed);
            continue;
        };
        let l = last.load(Relaxed);
        if seq <= l {
            continue;
        }
        if seq > l + 1 && l > 0 {
            let missed = seq - l - 1;
            c.stats.backlog_missed.fetch_add(missed, Relaxed);
            tracing::warn!(
                bucket = b,
                missed,
                "cluster: payloads lost to a bucket's gap (older than its backlog)"
            );
        }
        last.store(seq, Relaxed);
        out.push(e[SEQ_LEN..].to_vec());
    }
    c.stats.backlog_filled.fetch_add(out.len() as u64, Relaxed);
    tracing::debug!(
        bucket = b,
        filled = out.len(),
        last = last.load(Relaxed),
        "cluster: filled from the backlog"
    );
    Ok(out)
}

/// The number before a payload.
pub(super) fn seq_of(p: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(p.get(..SEQ_LEN)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{seq_of, Admit};
    use crate::cluster::{Cluster, ClusterConfig};
    use crate::mesh::Mesh;

    #[test]
    fn admits_in_order_drops_dups_sees_gaps() {
        let cfg = ClusterConfig::new("redis-cluster://127.0.0.1:7000", 16).unwrap();
        let c = Cluster::new(cfg, Arc::new(Mesh::new(1)));
        assert_eq!(c.bucket_of_channel(b"uc:16:{3}"), Some(3));
        assert_eq!(c.bucket_of_channel(b"uc:16:{friends}"), Some(16));
        assert_eq!(c.bucket_of_channel(b"uc:16:{16}"), None);
        assert_eq!(c.bucket_of_channel(b"uc:16:ctl"), None);
        assert_eq!(c.bucket_of_channel(b"{uc:16}:presence"), None);
        let one = Cluster::new(
            ClusterConfig::new("redis://127.0.0.1:1", 16).unwrap(),
            Arc::new(Mesh::new(1)),
        );
        assert_eq!(
            one.bucket_of_channel(b"uc:16:{3}"),
            None,
            "one Redis: no numbers"
        );
        assert_eq!(c.admit(3, 1), Admit::Next);
        assert_eq!(c.admit(3, 2), Admit::Next);
        assert_eq!(c.admit(3, 2), Admit::Dup);
        assert_eq!(c.admit(3, 5), Admit::Gap);
        assert_eq!(c.admit(3, 3), Admit::Next);
        assert_eq!(seq_of(&[0, 0, 0, 0, 0, 0, 1, 2, b'x']), Some(258));
        assert_eq!(seq_of(&[1, 2]), None);
    }
}
