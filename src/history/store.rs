//! One shard's history (sans-IO): the last messages of each id the shard owns, numbered,
//! with an epoch per stream, bounded by count per id, age and bytes per shard.
//!
//! # Layout
//! A stream (one id with history) is a record in a slab, found through a
//! `hashbrown::HashTable<u32>` (as the router's), holding its id, epoch, last offset and a
//! `VecDeque` of its held messages (each one allocation: its payload, with its arrival
//! time beside it). Every message appended also puts its stream's index on one shard-wide
//! FIFO (4 bytes), so the front of that FIFO is always the shard's oldest held message: the
//! TTL and the memory cap both evict from there, oldest first, across ids. A message that
//! left its stream another way (the count bound) leaves a stale FIFO entry behind, counted
//! in its stream and skipped when it reaches the front; the FIFO is compacted when stale
//! entries outnumber live ones. A stream whose last message goes is retired: it keeps its
//! epoch and last offset while anyone is subscribed to its id ([`History::settle`] asks the
//! router), then is dropped (it keeps
//! nothing), and its slab slot is reused only once no FIFO entry names it.
//!
//! Eviction (TTL, memory cap, compaction, dropping a stream) is in `store/evict.rs`.
//!
//! # Epochs
//! An id without a stream still has a position: offset 0 of its *implicit* epoch, a keyed
//! hash (random key per process) of the id and a generation counter of the id's hash
//! bucket (65,536 buckets). A new stream takes the implicit epoch, so a cursor handed out
//! before the first message stays valid; dropping a stream bumps its bucket's generation,
//! so a recreated stream (and every other id of that bucket without a stream) has a new
//! epoch, and an old cursor is answered `unknown-epoch` rather than confused with the new
//! stream's numbers. A restart draws a new key: every epoch changes.
//!
//! A generation is shared by every id of its bucket, so dropping one id's stream would also
//! change the implicit epoch of a *subscribed* id of the same bucket: its subscribers would
//! see the epoch change mid-stream and a resume from the position they were given would be
//! answered `unknown-epoch` although nothing was lost. So an id with subscribers is pinned
//! ([`Pin`]): the owner's router keeps the generation its position was first computed from
//! in the id's slot, for as long as anyone is subscribed (no byte more per id: the slot's
//! join sequence field, unused on the owner), and every implicit epoch of the id is computed
//! from that generation. A pin never names a generation an earlier stream of the id used:
//! that stream's drop bumped the generation past it, and a stream is dropped only once
//! nobody is subscribed (so no pin is held across a drop of the id's own stream).

use std::collections::VecDeque;

use hashbrown::HashTable;

use super::cursor::{Pin, Pos, Start};
use crate::id::Id;

/// Generation buckets (a power of two).
const GEN_BUCKETS: usize = 1 << 16;
/// Bytes counted per held message besides its payload (its slot, allocation and FIFO entry).
pub const MSG_OVERHEAD: usize = 48;
/// Bytes counted per stream (its record and index entry).
pub const STREAM_OVERHEAD: usize = 128;

/// History settings of one shard.
#[derive(Debug, Clone, Copy)]
pub struct HistoryConfig {
    /// `--history`: messages kept per id (0: history off).
    pub max_msgs: usize,
    /// `--history-ttl`, ms: no message older than this is kept.
    pub ttl_ms: u64,
    /// This shard's share of `--history-memory`, bytes.
    pub memory: usize,
}

/// Why a position cannot be resumed from (the reset verdict's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Messages after the position are gone (count bound, TTL, memory cap).
    Expired,
    /// The epoch is not the stream's (restart, stream recreated).
    UnknownEpoch,
    /// The offset is beyond the stream's last message.
    UnknownOffset,
    /// The server keeps no history (`--history 0`).
    NoHistory,
    /// Cluster mode: Redis, which keeps the history, cannot be reached; the connection is
    /// refused with `503` rather than started without a position.
    Unavailable,
}

impl Reason {
    /// The reason as sent in a reset verdict.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Expired => "expired",
            Reason::UnknownEpoch => "unknown-epoch",
            Reason::UnknownOffset => "unknown-offset",
            Reason::NoHistory => "no-history",
            Reason::Unavailable => "unavailable",
        }
    }
}

/// One held message: one allocation, its arrival (ms on the history's clock, wrapping, 4
/// bytes little-endian) then the payload as published. A thin record keeps a held message
/// at its payload plus about 40 bytes (slot, allocation, FIFO entry).
struct Held(Box<[u8]>);

impl Held {
    fn new(at_ms: u32, payload: &[u8]) -> Held {
        let mut v = Vec::with_capacity(4 + payload.len());
        v.extend_from_slice(&at_ms.to_le_bytes());
        v.extend_from_slice(payload);
        Held(v.into_boxed_slice())
    }

    /// The same allocation holding `payload` (of the same length) arrived at `at_ms`.
    fn refill(mut self, at_ms: u32, payload: &[u8]) -> Held {
        self.0[..4].copy_from_slice(&at_ms.to_le_bytes());
        self.0[4..].copy_from_slice(payload);
        self
    }

    fn at_ms(&self) -> u32 {
        u32::from_le_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
    }

    fn payload(&self) -> &[u8] {
        &self.0[4..]
    }
}

/// One id's stream.
struct Stream {
    id: Id,
    epoch: u64,
    /// Offset of the newest message.
    last: u64,
    msgs: VecDeque<Held>,
    /// FIFO entries naming this stream whose message already left it.
    stale: u32,
    /// FIFO entries naming this stream.
    queued: u32,
    /// Still indexed (false: dropped, waiting for its FIFO entries to drain).
    live: bool,
}

/// One shard's history; see the module doc.
pub struct History {
    cfg: HistoryConfig,
    hasher: ahash::RandomState,
    gens: Vec<u32>,
    streams: Vec<Stream>,
    free: Vec<u32>,
    index: HashTable<u32>,
    fifo: VecDeque<u32>,
    live: usize,
    /// Streams whose last message went (see `evict.rs`), and where `settle` goes on.
    retired: Vec<u32>,
    settle_at: usize,
    held: usize,
    bytes: usize,
    evicted: u64,
}

impl History {
    /// A history with settings `cfg` (nothing is allocated while history is off). A TTL
    /// over 24 days is taken as 24 days (arrival times are 32-bit milliseconds).
    pub fn new(mut cfg: HistoryConfig) -> History {
        cfg.ttl_ms = cfg.ttl_ms.min(u64::from(u32::MAX / 2));
        History {
            cfg,
            hasher: ahash::RandomState::new(),
            // Zeroed: calloc'ed pages, resident only where a generation is bumped.
            gens: if cfg.max_msgs > 0 {
                vec![0; GEN_BUCKETS]
            } else {
                Vec::new()
            },
            streams: Vec::new(),
            free: Vec::new(),
            index: HashTable::new(),
            fifo: VecDeque::new(),
            live: 0,
            retired: Vec::new(),
            settle_at: 0,
            held: 0,
            bytes: 0,
            evicted: 0,
        }
    }

    /// Whether history is on (`--history` > 0).
    #[inline]
    pub fn enabled(&self) -> bool {
        self.cfg.max_msgs > 0
    }

    fn find(&self, id: &Id) -> Option<u32> {
        let streams = &self.streams;
        self.index
            .find(self.hasher.hash_one(id), |&s| streams[s as usize].id == *id)
            .copied()
    }

    fn generation(&self, h: u64) -> u32 {
        self.gens
            .get(h as usize & (GEN_BUCKETS - 1))
            .copied()
            .unwrap_or(0)
    }

    fn implicit_epoch(&self, id: &Id, pin: Pin) -> u64 {
        let h = self.hasher.hash_one(id);
        let g = match pin {
            Pin::NONE => self.generation(h),
            Pin(p) => p - 1,
        };
        self.hasher.hash_one((h, g)).max(1)
    }

    /// The pin that keeps `id`'s implicit epoch what it is now (never [`Pin::NONE`]): the
    /// owner's router stores it when `id`'s position is first handed out to a subscriber.
    pub fn pin_now(&self, id: &Id) -> Pin {
        Pin(self.generation(self.hasher.hash_one(id)) + 1)
    }

    /// The current position of `id` (pinned by `pin`, see [`Pin`]): its last message, or
    /// offset 0 of its implicit epoch.
    pub fn position(&self, id: &Id, pin: Pin) -> Pos {
        match self.find(id) {
            Some(s) => {
                let st = &self.streams[s as usize];
                Pos {
                    epoch: st.epoch,
                    offset: st.last,
                }
            }
            None => Pos {
                epoch: self.implicit_epoch(id, pin),
                offset: 0,
            },
        }
    }

    /// Keeps `data` as the next message of `id` (pinned by `pin`, see [`Pin`]), arrived at
    /// `now_ms`; returns its position.
    /// The oldest message of the id goes past `--history` messages; the shard's oldest go
    /// while its share of `--history-memory` is exceeded (counted as evicted).
    pub fn append(&mut self, id: &Id, data: &[u8], now_ms: u64, pin: Pin) -> Pos {
        let s = match self.find(id) {
            Some(s) => s,
            None => self.create(id, pin),
        };
        let st = &mut self.streams[s as usize];
        if st.msgs.is_empty() && st.last > 0 {
            // A retired stream takes messages again, under its epoch.
            self.live += 1;
            self.bytes += STREAM_OVERHEAD;
        }
        let mut reuse = None;
        if st.msgs.len() >= self.cfg.max_msgs {
            if let Some(old) = st.msgs.pop_front() {
                st.stale += 1;
                self.held -= 1;
                self.bytes -= old.payload().len() + MSG_OVERHEAD;
                reuse = Some(old);
            }
        }
        // At the count bound, the oldest message's allocation takes the new one when the
        // sizes match (a steady stream of one size allocates nothing).
        let held = match reuse {
            Some(old) if old.payload().len() == data.len() => old.refill(now_ms as u32, data),
            _ => Held::new(now_ms as u32, data),
        };
        st.msgs.push_back(held);
        st.last += 1;
        st.queued += 1;
        let pos = Pos {
            epoch: st.epoch,
            offset: st.last,
        };
        self.fifo.push_back(s);
        self.held += 1;
        self.bytes += data.len() + MSG_OVERHEAD;
        while self.bytes > self.cfg.memory && self.evict_front(now_ms, true) {}
        self.compact_if_stale();
        pos
    }

    fn create(&mut self, id: &Id, pin: Pin) -> u32 {
        let st = Stream {
            id: id.clone(),
            epoch: self.implicit_epoch(id, pin),
            last: 0,
            msgs: VecDeque::new(),
            stale: 0,
            queued: 0,
            live: true,
        };
        let s = match self.free.pop() {
            Some(s) => {
                self.streams[s as usize] = st;
                s
            }
            None => {
                self.streams.push(st);
                (self.streams.len() - 1) as u32
            }
        };
        let (streams, hasher) = (&self.streams, &self.hasher);
        self.index.insert_unique(hasher.hash_one(id), s, |&t| {
            hasher.hash_one(&streams[t as usize].id)
        });
        self.live += 1;
        self.bytes += STREAM_OVERHEAD;
        s
    }

    /// Drops messages older than `--history-ttl` at `now_ms`, oldest first.
    pub fn expire(&mut self, now_ms: u64) {
        while self.evict_front(now_ms, false) {}
    }

    /// Where a resume of `id` (pinned by `pin`, see [`Pin`]) from `at` (`None`: `earliest`)
    /// starts: `Ok(after)` when every message after offset `after` is held (replay them, see
    /// [`History::messages_after`]), else the reset reason.
    pub fn resume(&self, id: &Id, at: Option<Pos>, pin: Pin) -> Result<u64, Reason> {
        if !self.enabled() {
            return Err(Reason::NoHistory);
        }
        let s = self.find(id);
        let first = s.map_or(1, |s| {
            let st = &self.streams[s as usize];
            st.last + 1 - st.msgs.len() as u64
        });
        let Some(at) = at else {
            return Ok(first - 1);
        };
        let cur = self.position(id, pin);
        if at.epoch != cur.epoch {
            Err(Reason::UnknownEpoch)
        } else if at.offset > cur.offset {
            Err(Reason::UnknownOffset)
        } else if at.offset + 1 < first {
            Err(Reason::Expired)
        } else {
            Ok(at.offset)
        }
    }

    /// Where `id` (pinned by `pin`, see [`Pin`]) starts for a connection that asks for
    /// `start`: the position before the first message its stream sends and the offset to
    /// replay after (`None`: nothing to replay), or the reset reason and the current position.
    pub fn start(
        &self,
        id: &Id,
        start: Start,
        pin: Pin,
    ) -> Result<(Pos, Option<u64>), (Reason, Pos)> {
        let cur = self.position(id, pin);
        let at = match start {
            Start::Now => return Ok((cur, None)),
            Start::Earliest => None,
            Start::At(p) => Some(p),
        };
        match self.resume(id, at, pin) {
            Ok(after) => Ok((
                Pos {
                    epoch: cur.epoch,
                    offset: after,
                },
                Some(after),
            )),
            Err(r) => Err((r, cur)),
        }
    }

    /// The held messages of `id` after offset `after`, oldest first, with their offsets.
    pub fn messages_after<'a>(
        &'a self,
        id: &Id,
        after: u64,
    ) -> impl Iterator<Item = (u64, &'a [u8])> + 'a {
        let st = self.find(id).map(|s| &self.streams[s as usize]);
        let (first, msgs) = st.map_or((1, None), |st| {
            (st.last + 1 - st.msgs.len() as u64, Some(&st.msgs))
        });
        let skip = after.saturating_add(1).saturating_sub(first) as usize;
        msgs.into_iter()
            .flat_map(move |m| m.iter().skip(skip))
            .zip(first + skip as u64..)
            .map(|(h, o)| (o, h.payload()))
    }

    /// Counters for `/stats`: ids with a stream, messages held, bytes counted, messages
    /// evicted by the memory cap.
    pub fn counts(&self) -> (usize, usize, usize, u64) {
        (self.live, self.held, self.bytes, self.evicted)
    }
}

mod evict;
#[cfg(test)]
mod tests;
