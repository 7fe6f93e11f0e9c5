//! Presence in the router: how many local connections an id has, and the owner's
//! online/offline edges with their debounce.
//!
//! Counts cost nothing extra: a shard's connections under an id are its subscriber list.
//! Edges come from the directory (`directory.rs`): an owned id goes online when its first
//! holder shard joins and offline when its last one leaves. With events on
//! ([`Router::enable_presence`]), an online edge is reported at once and an offline edge only
//! once the id has stayed offline for the debounce (Pusher's `member_removed` delay), so a
//! client that reconnects within it (a flap) produces no event at all. While an offline edge
//! waits, the id's slot is kept (one entry in a map and a queue, 8 bytes each); with events
//! off nothing here is touched.

use std::collections::VecDeque;

use hashbrown::HashMap;

use super::Router;
use crate::id::Id;

/// The presence state of one router shard. See the module doc.
#[derive(Default)]
pub(super) struct Presence {
    /// Events on (`--presence-events`).
    events: bool,
    /// The debounce of an offline edge (ms).
    debounce_ms: u32,
    /// The turn's time (ms, the shard's wrapping clock).
    now_ms: u32,
    /// Owned slots whose offline edge waits: slot -> deadline (ms).
    pending: HashMap<u32, u32>,
    /// The same, in deadline order; an entry whose deadline no longer matches `pending` is
    /// stale (the id came back, and maybe went again).
    queue: VecDeque<(u32, u32)>,
    /// Edges decided and not yet taken: (id, online).
    changes: Vec<(Id, bool)>,
}

impl Presence {
    /// Whether slot `s` is kept for a pending offline edge.
    #[inline]
    pub(super) fn keeps(&self, s: u32) -> bool {
        !self.pending.is_empty() && self.pending.contains_key(&s)
    }
}

impl Router {
    /// Turns online/offline edges on, with an offline debounce of `debounce_ms` (0: offline
    /// at once).
    pub fn enable_presence(&mut self, debounce_ms: u32) {
        self.presence.events = true;
        self.presence.debounce_ms = debounce_ms;
    }

    /// The connections logged in under `id` on this shard.
    pub fn local_count(&self, id: &Id) -> u32 {
        self.lookup(id)
            .map_or(0, |s| self.subscribers(s).len() as u32)
    }

    /// Sets the clock the debounce reads (ms, the shard's wrapping turn clock); called once a
    /// turn with events on.
    pub fn set_presence_clock(&mut self, now_ms: u32) {
        self.presence.now_ms = now_ms;
    }

    /// Whether an offline edge waits for its debounce (the loop must wake for it).
    pub fn presence_waiting(&self) -> bool {
        !self.presence.queue.is_empty()
    }

    /// Moves the edges decided so far into `into` (in order), after deciding the offline
    /// edges whose debounce has passed.
    pub fn take_presence(&mut self, into: &mut Vec<(Id, bool)>) {
        let now = self.presence.now_ms;
        while let Some(&(s, due)) = self.presence.queue.front() {
            if (now.wrapping_sub(due) as i32) < 0 {
                break;
            }
            self.presence.queue.pop_front();
            if self.presence.pending.get(&s) != Some(&due) {
                continue; // stale: it came back meanwhile
            }
            self.presence.pending.remove(&s);
            let id = self.slots[s as usize].id.clone();
            self.presence.changes.push((id, false));
            self.maybe_free(s);
        }
        if self.presence.pending.is_empty() && self.presence.pending.capacity() > 64 {
            // A burst of closes is over: give its tables back.
            self.presence.pending = HashMap::new();
            self.presence.queue = VecDeque::new();
        }
        into.append(&mut self.presence.changes);
    }

    /// The owned id in slot `s` got its first holder.
    pub(super) fn online_edge(&mut self, s: u32) {
        if !self.presence.events {
            return;
        }
        if self.presence.pending.remove(&s).is_some() {
            return; // back within the debounce: no event either way
        }
        let id = self.slots[s as usize].id.clone();
        self.presence.changes.push((id, true));
    }

    /// The owned id in slot `s` lost its last holder.
    pub(super) fn offline_edge(&mut self, s: u32) {
        if !self.presence.events {
            return;
        }
        if self.presence.debounce_ms == 0 {
            let id = self.slots[s as usize].id.clone();
            self.presence.changes.push((id, false));
            return;
        }
        let due = self.presence.now_ms.wrapping_add(self.presence.debounce_ms);
        self.presence.pending.insert(s, due);
        self.presence.queue.push_back((s, due));
    }
}
