//! The history pin of an owned id (see `crate::history::Pin`): kept in the owner's slot
//! while anyone is subscribed to the id, in the field a holder uses for its join sequence
//! (the owner never joins), so pinning costs no byte per id.

use super::Router;
use crate::history::Pin;
use crate::id::Id;

impl Router {
    /// The pin of `id` if this shard owns it and knows it (someone is subscribed), setting
    /// it to `now()` the first time; [`Pin::NONE`] for an id nobody is subscribed to.
    pub fn pin_or(&mut self, id: &Id, now: impl FnOnce() -> Pin) -> Pin {
        let Some(s) = self.lookup(id) else {
            return Pin::NONE;
        };
        let slot = &mut self.slots[s as usize];
        if slot.holders == 0 {
            // Not (or no longer) a directory entry: no subscriber holds a position.
            return Pin::NONE;
        }
        if slot.join_seq == 0 {
            slot.join_seq = now().0;
        }
        Pin(slot.join_seq)
    }

    /// The pin of `id` as set by [`Router::pin_or`], without setting it.
    pub fn pin(&self, id: &Id) -> Pin {
        self.lookup(id).map_or(Pin::NONE, |s| {
            let slot = &self.slots[s as usize];
            if slot.holders == 0 {
                Pin::NONE
            } else {
                Pin(slot.join_seq)
            }
        })
    }
}
