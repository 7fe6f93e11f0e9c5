//! The owner's directory: which shards hold connections under each id this shard owns
//! (a 64-bit holder mask per slot), kept up by local logins and the holders' `Join` and
//! `Leave`. Its edges (first holder in, last holder out) are the id's online and offline
//! moments, which `presence.rs` turns into events.

use super::Router;
use crate::id::Id;
use crate::mesh::{Msg, Outbox};

impl Router {
    /// Ids owned by this shard that some shard holds connections under.
    pub fn owned_ids(&self) -> usize {
        self.owned_live
    }

    pub(super) fn hold(&mut self, s: u32, shard: usize) {
        let slot = &mut self.slots[s as usize];
        let first = slot.holders == 0;
        slot.holders |= 1 << shard;
        if first {
            self.owned_live += 1;
            self.online_edge(s);
        }
    }

    pub(super) fn unhold(&mut self, s: u32, shard: usize) {
        let slot = &mut self.slots[s as usize];
        let had = slot.holders != 0;
        slot.holders &= !(1 << shard);
        if had && slot.holders == 0 {
            // Nobody is subscribed any more: the history pin goes too (a slot kept for the
            // presence debounce must not carry it into the id's next subscription).
            slot.join_seq = 0;
            self.owned_live -= 1;
            self.offline_edge(s);
        }
    }

    /// The directory entry of the id in slot `s` (owner only): bit s set while shard s
    /// holds connections under it.
    pub fn holders(&self, s: u32) -> u64 {
        self.slots[s as usize].holders
    }

    /// Owner side of `Join`: records shard `from` as a holder of `id` and acknowledges
    /// (`JoinAck` into `out`).
    pub fn on_join(&mut self, out: &mut Outbox, id: Id, from: usize, seq: u32) {
        let s = self.slot_for(id);
        self.hold(s, from);
        let id = self.slots[s as usize].id.clone();
        out.push(from, Msg::JoinAck { id, seq });
    }

    /// Owner side of `Leave`: shard `from` holds no connection under `id` any more.
    pub fn on_leave(&mut self, id: &Id, from: usize) {
        if let Some(s) = self.lookup(id) {
            self.unhold(s, from);
            self.maybe_free(s);
        }
    }
}
