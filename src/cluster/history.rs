//! History in cluster mode (`--cluster` with `--history N > 0`): Redis numbers and keeps each
//! id's messages, so a cursor means the same on every node and outlives a node's restart.
//!
//! # Keys, per id (`<P>` is the channel prefix, `uc:<B>` or `uc<DB>:<B>`)
//! - `<P>:e:<id>`, a string: the stream's epoch (8 bytes, big-endian) then the last offset in
//!   decimal. It is the authority: offsets under one epoch only grow.
//! - `<P>:l:<id>`, a Redis List of the last `--history` messages, oldest first, each the
//!   Redis `TIME` of its append (ms, 8 bytes big-endian) then the message. Its last element
//!   is the epoch key's offset, so element `i` of `len` is offset `last - len + 1 + i`.
//!   (A Redis Stream per id was measured first: Redis 7 preallocates 4 KiB per stream
//!   node, 4.5 KB per id holding one message; DESIGN.md has both.)
//!
//! Both expire `--history-ttl` after the id's last message (`PX`, refreshed per message). A
//! missing epoch key means a new stream: the next publish (or position read) sets a fresh
//! random epoch and deletes any list left behind, so an offset is never reused under an
//! epoch. An epoch key whose list was evicted (Redis `maxmemory`) keeps numbering on, and a
//! resume into the hole is told `expired`.
//!
//! # Publish (one `EVALSHA` of [`PUBLISH_LUA`] per bucket channel per batch)
//! For each record, atomically: read or create the epoch, take the next offset, `RPUSH` (and
//! `LTRIM` past `--history`), refresh both TTLs; then one `PUBLISH` of every record with its position (wire
//! kind 3, [`super::wire`]), and the positions returned. Every node that holds the bucket,
//! the publishing one too, delivers on that `PUBLISH`, so each id's messages reach every
//! node in offset order (one channel per bucket, executed in order by Redis). The
//! publishing node, if it did not hold the bucket when it sent the script, delivers (to
//! connections still starting, if any) and answers from the returned positions instead.
//!
//! # Resume ([`READ_LUA`], one per id of a resuming or cursor-carrying connection)
//! Atomically: the epoch and last offset (created, with offset 0, if absent: a fresh
//! connection gets a cursor that stays valid), Redis' clock, and the entries after the
//! cursor (`LRANGE`). The verdict is [`verdict`]'s, the same rules as a node's own history.
//! The read runs after the node's `SUBSCRIBE` to the id's bucket is confirmed and after the
//! connection is logged in: anything published later arrives live, and the connection keeps
//! live messages by offset while it waits, so nothing is missed or sent twice.

use bytes::Bytes;

use crate::history::{Pos, Reason, Start};
use crate::mesh::{ReplyTo, Verdict};

/// The publish script. KEYS: per record, its epoch key then its list key. ARGV: channel,
/// MAXLEN, TTL (ms), the payload header (magic and node), then per record: id, message,
/// candidate epoch (8 bytes), tag (8 bytes). Returns each record's position (16 bytes: epoch
/// and offset, big-endian).
pub const PUBLISH_LUA: &str = r"
local n = (#ARGV - 4) / 4
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local stamp = struct.pack('>I4I4', math.floor(now / 4294967296), now % 4294967296)
local out = {ARGV[4]}
local pos = {}
for i = 1, n do
  local ek, lk = KEYS[2 * i - 1], KEYS[2 * i]
  local a = 4 + 4 * (i - 1)
  local key, msg, e, tag = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local v = redis.call('GET', ek)
  local off = 1
  if v then
    e = string.sub(v, 1, 8)
    off = tonumber(string.sub(v, 9)) + 1
  else
    redis.call('DEL', lk)
  end
  redis.call('SET', ek, e .. string.format('%d', off), 'PX', ARGV[3])
  if redis.call('RPUSH', lk, stamp .. msg) > tonumber(ARGV[2]) then
    redis.call('LTRIM', lk, -tonumber(ARGV[2]), -1)
  end
  redis.call('PEXPIRE', lk, ARGV[3])
  local p = e .. struct.pack('>I4I4', math.floor(off / 4294967296), off % 4294967296)
  pos[i] = p
  out[#out + 1] = struct.pack('>BB', 3, #key) .. key .. p .. tag .. struct.pack('>I4', #msg) .. msg
end
redis.call('PUBLISH', ARGV[1], table.concat(out))
return pos
";

/// The read script. KEYS: epoch key, list key. ARGV: the offset to read after (`-1`: none,
/// `0` or more: every held message after it), candidate epoch (8 bytes), TTL (ms). Returns
/// `{epoch and last offset, now ms, offset of the first entry returned, entries}`.
pub const READ_LUA: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then
  v = ARGV[2] .. '0'
  redis.call('SET', KEYS[1], v, 'PX', ARGV[3])
  redis.call('DEL', KEYS[2])
end
local t = redis.call('TIME')
local now = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000))
local last = tonumber(string.sub(v, 9))
local first = last - redis.call('LLEN', KEYS[2]) + 1
local after = tonumber(ARGV[1])
local entries = {}
if after >= 0 then
  local from = math.max(after + 1, first)
  entries = redis.call('LRANGE', KEYS[2], from - first, -1)
  first = from
end
return {v, now, string.format('%d', first), entries}
";

/// A resume read a shard asks of the agent: id `k` of connection `conn` on shard `from`.
#[derive(Debug)]
pub struct Fetch {
    /// The id.
    pub id: crate::id::Id,
    /// Where the connection starts.
    pub start: Start,
    /// The holder shard, connection, resume token and id index (answered as
    /// [`crate::mesh::Msg::Replayed`]).
    pub from: u16,
    /// The connection on the holder.
    pub conn: u32,
    /// Its resume token.
    pub token: u32,
    /// Which of its ids.
    pub k: u8,
}

/// A publish waiting for its own record to come back from Redis, by tag.
pub type Outstanding = hashbrown::HashMap<u64, ReplyTo>;

/// One stream entry as read: offset, Redis time of the append (ms), message.
pub type Entry = (u64, u64, Bytes);

/// The epoch key's value: 8 bytes of epoch, then the last offset in decimal. `None` if
/// malformed.
pub fn parse_epoch_value(v: &[u8]) -> Option<Pos> {
    let (e, o) = (v.get(..8)?, v.get(8..)?);
    let epoch = u64::from_be_bytes(e.try_into().ok()?);
    let offset = std::str::from_utf8(o).ok()?.parse().ok()?;
    (epoch != 0).then_some(Pos { epoch, offset })
}

/// The read script's `after` argument for `start`: `-1` reads nothing, else the offset
/// to read after (`earliest`: 0, everything held).
pub fn read_after(start: Start) -> i64 {
    match start {
        Start::Now => -1,
        Start::Earliest => 0,
        Start::At(p) => i64::try_from(p.offset).unwrap_or(i64::MAX),
    }
}

/// One list element: the append time (ms, 8 bytes big-endian) then the message; `None` if
/// shorter than 8 bytes.
pub fn parse_element(offset: u64, e: Vec<u8>) -> Option<Entry> {
    let t = u64::from_be_bytes(e.get(..8)?.try_into().ok()?);
    let mut m = Bytes::from(e);
    let msg = m.split_off(8);
    Some((offset, t, msg))
}

/// The verdict for a connection that asks for `start`, from a read: the stream's position
/// `cur`, Redis' clock `now_ms`, `--history-ttl` (ms) and the entries read (oldest first).
/// The same rules as [`crate::history::History::start`]: never a partial replay.
pub fn verdict(start: Start, cur: Pos, now_ms: u64, ttl_ms: u64, entries: Vec<Entry>) -> Verdict {
    let live = |e: &Entry| e.1.saturating_add(ttl_ms) >= now_ms && e.0 <= cur.offset;
    let at = match start {
        Start::Now => return Ok((cur, Vec::new())),
        Start::Earliest => {
            let held: Vec<(u64, Bytes)> = entries
                .into_iter()
                .skip_while(|e| !live(e))
                .map(|(o, _, m)| (o, m))
                .collect();
            let first = held.first().map_or(cur.offset + 1, |m| m.0);
            let start = Pos {
                offset: first - 1,
                ..cur
            };
            return Ok((start, held));
        }
        Start::At(p) => p,
    };
    if at.epoch != cur.epoch {
        return Err((Reason::UnknownEpoch, cur));
    }
    if at.offset > cur.offset {
        return Err((Reason::UnknownOffset, cur));
    }
    let want = cur.offset - at.offset;
    let contiguous = entries
        .iter()
        .enumerate()
        .all(|(n, e)| e.0 == at.offset + 1 + n as u64);
    if entries.len() as u64 != want || !contiguous || !entries.iter().all(live) {
        return Err((Reason::Expired, cur));
    }
    Ok((at, entries.into_iter().map(|(o, _, m)| (o, m)).collect()))
}

impl super::Cluster {
    /// Whether Redis numbers and keeps the messages (history on in cluster mode).
    pub fn sequenced(&self) -> bool {
        self.cfg.history_max > 0
    }

    /// History on: queues a send for Redis to number, keep and publish; every node (this
    /// one too) delivers it when it comes back. `reply` gets the local deliveries then.
    /// Returns false (and counts a drop) if Redis is down or the queue is full: the publish
    /// is refused, delivered nowhere.
    pub fn forward_positioned(&self, key: &crate::id::Id, msg: &Bytes, reply: ReplyTo) -> bool {
        self.push_forward(super::wire::Kind::Positioned, key, msg, reply)
    }

    /// Queues resume read `f` for the agent; false if Redis is down (not queued).
    pub fn fetch(&self, f: Fetch) -> bool {
        if !self.is_up() {
            return false;
        }
        self.fetches.push(f);
        self.wake_agent();
        true
    }

    /// Takes every queued resume read (agent side).
    pub(super) fn take_fetches(&self) -> Vec<Fetch> {
        std::iter::from_fn(|| self.fetches.pop()).collect()
    }

    /// The epoch key and stream key of `id` (module doc).
    /// On Redis Cluster both begin with the id's bucket channel (`uc:<B>:{<b>}`), a hash
    /// tag, so one script's keys and channel share a slot.
    pub(super) fn history_keys(&self, id: &crate::id::Id) -> (Vec<u8>, Vec<u8>) {
        let prefix = if self.cfg.is_redis_cluster() {
            self.bucket_prefix(self.bucket(id))
        } else {
            self.prefix.to_string()
        };
        let id = id.to_string();
        let id = id.as_bytes();
        let key = |k: &str| [prefix.as_bytes(), k.as_bytes(), id].concat();
        (key(":e:"), key(":l:"))
    }
}

/// A fresh random epoch (never 0), as 8 big-endian bytes.
pub(super) fn new_epoch() -> [u8; 8] {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish().max(1).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::{parse_element, parse_epoch_value, read_after, verdict};
    use crate::history::{Pos, Reason, Start};

    const E: u64 = 0x1122_3344_5566_7788;

    fn entries(from: u64, to: u64, t: u64) -> Vec<(u64, u64, Bytes)> {
        (from..=to)
            .map(|o| (o, t, Bytes::from(o.to_string())))
            .collect()
    }

    #[test]
    fn values_parse() {
        let mut v = E.to_be_bytes().to_vec();
        v.extend_from_slice(b"42");
        assert_eq!(
            parse_epoch_value(&v),
            Some(Pos {
                epoch: E,
                offset: 42
            })
        );
        assert_eq!(parse_epoch_value(b"short"), None);
        let mut e = 1234u64.to_be_bytes().to_vec();
        e.extend_from_slice(b"hi");
        assert_eq!(
            parse_element(7, e),
            Some((7, 1234, Bytes::from_static(b"hi")))
        );
        assert_eq!(parse_element(7, b"short".to_vec()), None);
        let at = Start::At(Pos {
            epoch: E,
            offset: 4,
        });
        assert_eq!(read_after(at), 4);
        assert_eq!(read_after(Start::Earliest), 0);
        assert_eq!(read_after(Start::Now), -1);
    }

    #[test]
    fn verdicts_follow_the_node_rules() {
        let cur = Pos {
            epoch: E,
            offset: 5,
        };
        let at = |epoch, offset| Start::At(Pos { epoch, offset });
        // Every message after 3 held and fresh: 4 and 5 replayed.
        let v = verdict(at(E, 3), cur, 1000, 600, entries(4, 5, 900)).unwrap();
        assert_eq!((v.0.offset, v.1.len()), (3, 2));
        // Up to date: nothing to replay.
        assert_eq!(
            verdict(at(E, 5), cur, 1000, 600, vec![]).unwrap().1.len(),
            0
        );
        // Another epoch, an offset past the end, a hole (count bound), a message past the TTL.
        let reason = |v: super::Verdict| v.unwrap_err().0;
        assert_eq!(
            reason(verdict(at(7, 3), cur, 0, 9, vec![])),
            Reason::UnknownEpoch
        );
        assert_eq!(
            reason(verdict(at(E, 6), cur, 0, 9, vec![])),
            Reason::UnknownOffset
        );
        let hole = entries(5, 5, 900);
        assert_eq!(
            reason(verdict(at(E, 3), cur, 1000, 600, hole)),
            Reason::Expired
        );
        let old = entries(4, 5, 100);
        assert_eq!(
            reason(verdict(at(E, 3), cur, 1000, 600, old)),
            Reason::Expired
        );
        // `earliest`: what is held and fresh, from after the last expired one.
        let mut mixed = entries(2, 3, 100);
        mixed.extend(entries(4, 5, 900));
        let v = verdict(Start::Earliest, cur, 1000, 600, mixed).unwrap();
        assert_eq!((v.0.offset, v.1.len(), v.1[0].0), (3, 2, 4));
        let v = verdict(Start::Earliest, cur, 1000, 600, vec![]).unwrap();
        assert_eq!((v.0, v.1.len()), (cur, 0));
    }
}
