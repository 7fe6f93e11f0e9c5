//! Eviction from one shard's history: the oldest message first (TTL, memory cap), stale
//! FIFO entries skipped and compacted, empty streams dropped with a new generation, and an
//! emptied history's tables given back.

use std::collections::VecDeque;

use hashbrown::HashTable;

use super::{History, MSG_OVERHEAD, STREAM_OVERHEAD};
use crate::id::Id;

const GEN_MASK: usize = super::GEN_BUCKETS - 1;

impl History {
    /// Removes the shard's oldest held message if `force` or it is past the TTL; returns
    /// whether one went. Stale FIFO entries at the front are skipped on the way.
    pub(super) fn evict_front(&mut self, now_ms: u64, force: bool) -> bool {
        while let Some(&s) = self.fifo.front() {
            let st = &mut self.streams[s as usize];
            if st.stale > 0 {
                st.stale -= 1;
                st.queued -= 1;
                self.fifo.pop_front();
                self.free_if_drained(s);
                continue;
            }
            let Some(front) = st.msgs.front() else {
                // Unreachable: a live entry always names a held message.
                self.fifo.pop_front();
                continue;
            };
            // The clock wraps after 49 days; the TTL is capped at 24 (see `new`).
            let age = (now_ms as u32).wrapping_sub(front.at_ms());
            if !force && u64::from(age) < self.cfg.ttl_ms {
                return false;
            }
            let len = front.payload().len();
            st.msgs.pop_front();
            st.queued -= 1;
            let empty = st.msgs.is_empty();
            self.fifo.pop_front();
            self.held -= 1;
            self.bytes -= len + MSG_OVERHEAD;
            if force {
                self.evicted += 1;
            }
            if empty {
                self.retire(s);
            }
            return true;
        }
        false
    }

    /// Stream `s` has no message left: it keeps its epoch and last offset (a subscriber's
    /// cursor on it stays valid, an older one is `expired`) until [`History::settle`] finds
    /// nobody subscribed to it.
    fn retire(&mut self, s: u32) {
        self.live -= 1;
        self.bytes -= STREAM_OVERHEAD;
        self.retired.push(s);
    }

    /// Looks at up to `budget` retired streams (round robin): one that got a message again is
    /// forgotten here, one whose id nobody is `subscribed` to any more is dropped.
    pub fn settle(&mut self, budget: usize, subscribed: impl Fn(&Id) -> bool) {
        for _ in 0..budget.min(self.retired.len()) {
            if self.settle_at >= self.retired.len() {
                self.settle_at = 0;
            }
            let s = self.retired[self.settle_at];
            let st = &self.streams[s as usize];
            if st.live && st.msgs.is_empty() && subscribed(&st.id) {
                self.settle_at += 1;
                continue;
            }
            self.retired.swap_remove(self.settle_at);
            if st.live && st.msgs.is_empty() {
                self.drop_stream(s);
            }
        }
    }

    /// A retired stream nobody is subscribed to keeps nothing: unindexed, its bucket's
    /// generation bumped (so a recreated stream gets a new epoch).
    fn drop_stream(&mut self, s: u32) {
        let hash = self.hasher.hash_one(&self.streams[s as usize].id);
        if let Ok(entry) = self.index.find_entry(hash, |&t| t == s) {
            entry.remove();
        }
        // Wraps below u32::MAX, so a pin (generation + 1) is never 0.
        let g = &mut self.gens[hash as usize & (GEN_MASK)];
        *g = if *g >= u32::MAX - 1 { 0 } else { *g + 1 };
        let st = &mut self.streams[s as usize];
        st.live = false;
        st.id = Id::Num(0);
        st.msgs = VecDeque::new();
        self.free_if_drained(s);
    }

    fn free_if_drained(&mut self, s: u32) {
        let st = &self.streams[s as usize];
        if !st.live && st.queued == 0 {
            self.free.push(s);
        }
    }

    /// Once the history holds nothing (no stream, message, FIFO entry or retired stream
    /// left), drops its tables, which keep the capacity of the last burst otherwise (the
    /// stream records alone 600 KB after 15,000 ids with a short `--history-ttl`); the
    /// generations stay. Returns whether it did. Not on any per-message path: the shard
    /// calls it from its periodic sweep.
    pub fn release_if_empty(&mut self) -> bool {
        if self.live > 0 || self.held > 0 || !self.fifo.is_empty() || !self.retired.is_empty() {
            return false;
        }
        if self.streams.capacity() == 0 && self.index.capacity() == 0 && self.fifo.capacity() == 0 {
            return false;
        }
        self.streams = Vec::new();
        self.free = Vec::new();
        self.index = HashTable::new();
        self.fifo = VecDeque::new();
        self.retired = Vec::new();
        self.settle_at = 0;
        true
    }

    /// Rebuilds the FIFO without its stale entries once they outnumber the held messages
    /// (one pass; amortized over at least as many appends).
    pub(super) fn compact_if_stale(&mut self) {
        if self.fifo.len() <= 2 * self.held + 4096 {
            return;
        }
        let mut fifo = std::mem::take(&mut self.fifo);
        let mut drained = Vec::new();
        // A stream's stale entries are its oldest ones: drop the first `stale` of each.
        fifo.retain(|&s| {
            let st = &mut self.streams[s as usize];
            if st.stale == 0 {
                return true;
            }
            st.stale -= 1;
            st.queued -= 1;
            if !st.live && st.queued == 0 {
                drained.push(s);
            }
            false
        });
        self.fifo = fifo;
        self.free.extend(drained);
    }
}
