//! Idle release of the history (`--history` on): once every held message has expired and
//! nobody subscribes to the ids any more, the history's tables go back to the allocator
//! on the shard's next idle tick, and the caller trims malloc. Without this the tables
//! keep the capacity of the last burst (7,500 stream records a shard, 600 KB, after
//! 15,000 ids with `--history-ttl 2s`), and what the expired messages left in the arena
//! stays resident until the next sweep's trim (`--head-timeout`, 10 s), so the leak
//! guard's RSS after close (`loadtest --rounds N --transport sse`) depended on where in
//! that cycle it was read.

use super::Shard;
use crate::driver::Driver;

/// Retired streams looked at per idle tick (the per-turn budget is `SETTLE_PER_TICK`,
/// 1,024 every 100 ms, which an idle shard, turning about once a second, would take
/// seconds to get through after a burst).
const SETTLE_PER_IDLE: usize = 65_536;

impl<D: Driver> Shard<D> {
    /// Called from `on_idle`: drops retired streams nobody subscribes to, then the
    /// history's tables if it holds nothing (messages expire in the turns, which an idle
    /// shard runs about once a second). Returns whether the tables went (the caller trims
    /// malloc).
    pub(super) fn release_history_if_empty(&mut self) -> bool {
        if !self.resume.store.enabled() {
            return false;
        }
        let router = &self.router;
        self.resume.store.settle(SETTLE_PER_IDLE, |id| {
            router.lookup(id).is_some_and(|s| router.holders(s) != 0)
        });
        self.resume.store.release_if_empty()
    }
}
