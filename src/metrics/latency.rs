//! The per-shard histogram behind `uring_comet_publish_to_send_seconds`: fixed buckets of
//! relaxed atomics, written by their shard only (a load and a store each, no locked
//! instruction, no allocation), summed over the shards at scrape time.
//!
//! # What is timed, and with which clock
//! The shard's millisecond clock, read once per turn of its loop before the completions are
//! reaped (`Loop::now_ms`; no clock read is added). A subscriber's `Aux` notes ([`Stamps`])
//! the turn in which the first message of each batch was queued (`out` and `next`) and how
//! many messages the batch holds; when the send carrying `out` completes, its messages are
//! observed at (completion turn - queueing turn). So every message counts once, at the age
//! of the oldest message of its batch (an upper bound for the others), with 1 ms
//! resolution: a value of 0 means under a millisecond. The time from the publisher's parse
//! to the queueing on the subscriber's shard (at most one turn of the owner's and of the
//! holder's loop: the mesh hops) is not included: carrying the parse time in `Route` and
//! `Deliver` would put it in, at 4 bytes a message.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::stats::ShardStats;

/// Upper bounds of the buckets, milliseconds (the `+Inf` bucket follows).
pub const BOUNDS_MS: [u64; 13] = [
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000,
];

/// One shard's histogram: per-bucket counts (not cumulative) and the sum of the values.
#[derive(Default)]
pub struct Latency {
    /// Observations per bucket, `BOUNDS_MS` then `+Inf`.
    buckets: [AtomicU64; BOUNDS_MS.len() + 1],
    /// Sum of the observed values, milliseconds.
    sum_ms: AtomicU64,
}

impl Latency {
    /// Records `n` messages that took `ms` milliseconds. Only the owning shard calls this.
    #[inline]
    pub fn observe(&self, ms: u32, n: u32) {
        let i = BOUNDS_MS.partition_point(|&b| b < u64::from(ms));
        ShardStats::bump(&self.buckets[i], u64::from(n));
        ShardStats::bump(&self.sum_ms, u64::from(ms) * u64::from(n));
    }
}

/// A subscriber's two batches as the histogram sees them (kept in its `Aux`, so only while
/// it has output): for `out` (in flight) and `next` (queued behind it), the turn its first
/// message was queued in and how many messages it holds.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stamps {
    /// `out`: (queueing turn of its first message, ms; messages).
    out: (u32, u32),
    /// `next`: the same.
    next: (u32, u32),
}

impl Stamps {
    /// A message was queued at `now_ms`, behind a send in flight (`sending`: into `next`) or
    /// not (into `out`).
    #[inline]
    pub fn queued(&mut self, sending: bool, now_ms: u32) {
        let b = if sending {
            &mut self.next
        } else {
            &mut self.out
        };
        if b.1 == 0 {
            b.0 = now_ms;
        }
        b.1 += 1;
    }

    /// `out` has been sent whole (its last send completed at `now_ms`) and `next` becomes
    /// `out`: returns (age in ms, messages) of the batch that went, if it held any.
    #[inline]
    pub fn sent(&mut self, now_ms: u32) -> Option<(u32, u32)> {
        let done = std::mem::replace(&mut self.out, std::mem::take(&mut self.next));
        (done.1 > 0).then(|| (now_ms.wrapping_sub(done.0), done.1))
    }

    /// `next` was dropped (a slow consumer's cut): its messages are never sent.
    pub fn drop_next(&mut self) {
        self.next = (0, 0);
    }
}

/// The histogram of every shard added up, as a scrape reads it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Per-bucket counts (not cumulative), `BOUNDS_MS` then `+Inf`.
    pub buckets: [u64; BOUNDS_MS.len() + 1],
    /// Sum of the values, milliseconds.
    pub sum_ms: u64,
}

impl Snapshot {
    /// Adds up the shards' histograms (each bucket read once, relaxed).
    pub fn of(shards: &[ShardStats]) -> Snapshot {
        let mut s = Snapshot::default();
        for st in shards {
            let h = &st.publish_to_send;
            for (acc, b) in s.buckets.iter_mut().zip(&h.buckets) {
                *acc += b.load(Relaxed);
            }
            s.sum_ms += h.sum_ms.load(Relaxed);
        }
        s
    }

    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// `(upper bound in seconds, count)` per bucket, `+Inf` last, as prometheus-client takes.
    pub fn seconds(&self) -> Vec<(f64, u64)> {
        BOUNDS_MS
            .iter()
            .map(|&b| b as f64 / 1000.0)
            .chain([f64::INFINITY])
            .zip(self.buckets)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_take_values_up_to_their_bound() {
        let st = [ShardStats::default(), ShardStats::default()];
        st[0].publish_to_send.observe(0, 3);
        st[0].publish_to_send.observe(1, 1);
        st[1].publish_to_send.observe(2, 2);
        st[1].publish_to_send.observe(60_000, 1);
        let s = Snapshot::of(&st);
        assert_eq!(s.buckets[0], 4); // 0 and 1 ms: le 0.001
        assert_eq!(s.buckets[1], 2); // 2 ms: le 0.002
        assert_eq!(s.buckets[BOUNDS_MS.len()], 1); // +Inf
        assert_eq!(s.count(), 7);
        assert_eq!(s.sum_ms, 1 + 4 + 60_000);
        assert_eq!(s.seconds()[0], (0.001, 4));
    }

    #[test]
    fn a_batch_counts_its_messages_at_its_first_ones_age() {
        let mut st = Stamps::default();
        st.queued(false, 10);
        st.queued(true, 12);
        st.queued(true, 15);
        assert_eq!(st.sent(14), Some((4, 1)));
        assert_eq!(st.sent(20), Some((8, 2))); // next became out: first queued at 12
        assert_eq!(st.sent(30), None);
        st.queued(true, 1);
        st.drop_next();
        st.sent(2);
        assert_eq!(st.sent(3), None);
    }
}
