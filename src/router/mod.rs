//! One router shard (sans-IO): which local connections are logged in under each id, and,
//! for the ids this shard owns, which shards hold connections under them (the directory).
//!
//! This is the seed's router API split across shards: `login(id, conn)` and `logout(conn)`
//! are [`Router::login`] and [`Router::logout`]; `send(id, msg)` is [`Router::route`] on the
//! owner plus [`Router::subscribers`] on each holder. Cross-core effects go to the
//! [`Outbox`] each call is given, pushed as batches; the protocol is in [`crate::mesh`].
//!
//! # Memory layout
//! Ids live once, in a slab of 32-byte `Slot`s; a `hashbrown::HashTable<u32>` indexes the
//! slab (4 bytes a bucket plus a control byte). The common cases cost no allocation of
//! their own: a slot with one local connection stores it inline, and a connection under one
//! id stores the slot index as its handle. Only an id with several local connections, or a
//! connection under several ids, gets a small side list.

use bytes::Bytes;
use hashbrown::HashTable;

use crate::history::Pos;
use crate::id::Id;
use crate::mesh::{Msg, Outbox, ReplyTo};

/// No connection / no slot.
const NONE: u32 = u32::MAX;
/// Tag bit: the value indexes a side list rather than naming a connection or slot.
const LIST: u32 = 1 << 31;

/// One id known to this shard: a local subscriber set, a directory entry, or both.
struct Slot {
    id: Id,
    /// Local connections: NONE, one connection index, or LIST | index into `sub_lists`.
    subs: u32,
    /// Holder of an id another shard owns: sequence number of this shard's unacknowledged
    /// `Join`, 0 once acknowledged. Owner: the id's history pin (`pin.rs`), 0 until set.
    join_seq: u32,
    /// Directory entry (owner only): bit s set while shard s holds connections under `id`.
    holders: u64,
}

/// One shard's router. See the module doc.
pub struct Router {
    me: usize,
    shards: usize,
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    index: HashTable<u32>,
    hasher: ahash::RandomState,
    sub_lists: Vec<Vec<u32>>,
    free_sub_lists: Vec<u32>,
    conn_lists: Vec<Box<[u32]>>,
    free_conn_lists: Vec<u32>,
    next_seq: u32,
    owned_live: usize,
    /// Presence: online/offline edges and their debounce (`presence.rs`).
    presence: presence::Presence,
}

impl Router {
    /// The router of shard `me` among `shards`, with room reserved for `cap` ids.
    ///
    /// The reservation is address space only: a large Vec is its own mmap, and its pages
    /// become resident as slots are first written, so growing to `cap` never copies the
    /// slab or leaves the old copy resident.
    pub fn new(me: usize, shards: usize, cap: usize) -> Router {
        Router {
            me,
            shards,
            slots: Vec::with_capacity(cap),
            free_slots: Vec::new(),
            index: HashTable::new(),
            hasher: ahash::RandomState::new(),
            sub_lists: Vec::new(),
            free_sub_lists: Vec::new(),
            conn_lists: Vec::new(),
            free_conn_lists: Vec::new(),
            next_seq: 0,
            owned_live: 0,
            presence: presence::Presence::default(),
        }
    }

    /// If this shard knows no id at all, drops every table and gives their pages back to the
    /// kernel; returns whether it did.
    pub fn release_if_empty(&mut self) -> bool {
        if !self.index.is_empty() || self.slots.is_empty() {
            return false;
        }
        crate::conn::release_pages(&mut self.slots);
        self.free_slots = Vec::new();
        self.index = HashTable::new();
        self.sub_lists = Vec::new();
        self.free_sub_lists = Vec::new();
        self.conn_lists = Vec::new();
        self.free_conn_lists = Vec::new();
        true
    }

    fn hash(&self, id: &Id) -> u64 {
        self.hasher.hash_one(id)
    }

    /// The slot of `id`, if this shard knows it.
    pub fn lookup(&self, id: &Id) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(self.hash(id), |&s| slots[s as usize].id == *id)
            .copied()
    }

    fn slot_for(&mut self, id: Id) -> u32 {
        if let Some(s) = self.lookup(&id) {
            return s;
        }
        let hash = self.hash(&id);
        let slot = Slot {
            id,
            subs: NONE,
            join_seq: 0,
            holders: 0,
        };
        let s = match self.free_slots.pop() {
            Some(s) => {
                self.slots[s as usize] = slot;
                s
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index
            .insert_unique(hash, s, |&t| hasher.hash_one(&slots[t as usize].id));
        s
    }

    fn maybe_free(&mut self, s: u32) {
        let slot = &self.slots[s as usize];
        if slot.subs != NONE || slot.holders != 0 || self.presence.keeps(s) {
            return;
        }
        let hash = self.hash(&slot.id);
        if let Ok(entry) = self.index.find_entry(hash, |&t| t == s) {
            entry.remove();
        }
        // Drop the id's heap string now; the slot itself is reused.
        self.slots[s as usize].id = Id::Num(0);
        self.free_slots.push(s);
    }

    /// Logs connection `conn` in under `ids` (1 to 64, no duplicates); a `Join` for each id
    /// another shard owns and this one did not hold yet goes into `out`.
    ///
    /// Returns the handle to keep in the connection record (give it back to
    /// [`Router::logout`]) and how many of the ids still wait for their owner's `JoinAck`:
    /// the connection's response head must not go out before that count is back to 0
    /// (see [`Router::join_acked`]).
    pub fn login(&mut self, out: &mut Outbox, conn: u32, ids: Vec<Id>) -> (u32, u8) {
        let mut waits = 0u8;
        let mut slots = Vec::with_capacity(ids.len());
        for id in ids {
            let owner = id.owner(self.shards);
            let s = self.slot_for(id);
            slots.push(s);
            let first = self.slots[s as usize].subs == NONE;
            self.add_sub(s, conn);
            if owner == self.me {
                self.hold(s, self.me);
            } else if first {
                self.next_seq = self.next_seq.wrapping_add(1).max(1);
                let slot = &mut self.slots[s as usize];
                slot.join_seq = self.next_seq;
                out.push(
                    owner,
                    Msg::Join {
                        id: slot.id.clone(),
                        from: self.me as u16,
                        seq: slot.join_seq,
                    },
                );
            }
            if owner != self.me && self.slots[s as usize].join_seq != 0 {
                waits += 1;
            }
        }
        let handle = if slots.len() == 1 {
            slots[0]
        } else {
            let list = slots.into_boxed_slice();
            match self.free_conn_lists.pop() {
                Some(l) => {
                    self.conn_lists[l as usize] = list;
                    LIST | l
                }
                None => {
                    self.conn_lists.push(list);
                    LIST | (self.conn_lists.len() - 1) as u32
                }
            }
        };
        (handle, waits)
    }

    /// Logs connection `conn` out of every id it was logged in under; a `Leave` for each id
    /// another shard owns that this one no longer holds goes into `out`.
    pub fn logout(&mut self, out: &mut Outbox, conn: u32, handle: u32) {
        if handle & LIST == 0 {
            self.leave_slot(out, handle, conn);
            return;
        }
        let l = (handle & !LIST) as usize;
        let list = std::mem::take(&mut self.conn_lists[l]);
        for &s in list.iter() {
            self.leave_slot(out, s, conn);
        }
        self.free_conn_lists.push(l as u32);
    }

    fn leave_slot(&mut self, out: &mut Outbox, s: u32, conn: u32) {
        self.remove_sub(s, conn);
        let slot = &mut self.slots[s as usize];
        if slot.subs == NONE {
            let owner = slot.id.owner(self.shards);
            if owner == self.me {
                self.unhold(s, self.me);
            } else {
                slot.join_seq = 0;
                out.push(
                    owner,
                    Msg::Leave {
                        id: slot.id.clone(),
                        from: self.me as u16,
                    },
                );
            }
            self.maybe_free(s);
        }
    }

    fn add_sub(&mut self, s: u32, conn: u32) {
        let subs = self.slots[s as usize].subs;
        if subs == NONE {
            self.slots[s as usize].subs = conn;
        } else if subs & LIST != 0 {
            self.sub_lists[(subs & !LIST) as usize].push(conn);
        } else {
            let list = vec![subs, conn];
            let l = match self.free_sub_lists.pop() {
                Some(l) => {
                    self.sub_lists[l as usize] = list;
                    l
                }
                None => {
                    self.sub_lists.push(list);
                    (self.sub_lists.len() - 1) as u32
                }
            };
            self.slots[s as usize].subs = LIST | l;
        }
    }

    fn remove_sub(&mut self, s: u32, conn: u32) {
        let subs = self.slots[s as usize].subs;
        if subs & LIST == 0 {
            if subs == conn {
                self.slots[s as usize].subs = NONE;
            }
            return;
        }
        let l = (subs & !LIST) as usize;
        let list = &mut self.sub_lists[l];
        if let Some(i) = list.iter().position(|&c| c == conn) {
            list.swap_remove(i);
        }
        if list.len() == 1 {
            self.slots[s as usize].subs = list[0];
            self.sub_lists[l] = Vec::new();
            self.free_sub_lists.push(l as u32);
        }
    }

    /// The local connections logged in under the id in slot `s`.
    pub fn subscribers(&self, s: u32) -> &[u32] {
        let subs = &self.slots[s as usize].subs;
        if *subs == NONE {
            &[]
        } else if subs & LIST != 0 {
            &self.sub_lists[(subs & !LIST) as usize]
        } else {
            std::slice::from_ref(subs)
        }
    }

    /// The slots of the ids under router handle `handle`, in the order the connection gave.
    pub fn slots_of<'a>(&'a self, handle: &'a u32) -> &'a [u32] {
        if handle & LIST == 0 {
            std::slice::from_ref(handle)
        } else {
            &self.conn_lists[(handle & !LIST) as usize]
        }
    }

    /// The id in slot `s`.
    pub fn id_of(&self, s: u32) -> &Id {
        &self.slots[s as usize].id
    }

    /// Holder side of `JoinAck`: if it acknowledges the current join of `id`, returns the
    /// slot, whose every subscriber now has one wait fewer.
    pub fn join_acked(&mut self, id: &Id, seq: u32) -> Option<u32> {
        let s = self.lookup(id)?;
        let slot = &mut self.slots[s as usize];
        if slot.join_seq != seq || seq == 0 {
            return None;
        }
        slot.join_seq = 0;
        Some(s)
    }

    /// Owner side of `send(id, msg)` at `pos`, published at `at` (ms, the turn clock):
    /// forwards `Deliver` to every other holder (into `out`); returns the local slot to
    /// deliver to (if this shard holds connections under `id`) and the shards forwarded to.
    pub fn route(
        &mut self,
        out: &mut Outbox,
        id: &Id,
        msg: &Bytes,
        pos: Pos,
        reply: ReplyTo,
        at: u32,
    ) -> (Option<u32>, u16) {
        let Some(s) = self.lookup(id) else {
            return (None, 0);
        };
        let holders = self.slots[s as usize].holders;
        let mut forwarded = 0;
        for h in 0..self.shards {
            if h != self.me && holders & (1 << h) != 0 {
                out.push(
                    h,
                    Msg::Deliver {
                        id: id.clone(),
                        msg: msg.clone(),
                        pos,
                        reply,
                        at,
                    },
                );
                forwarded += 1;
            }
        }
        let local = (holders & (1 << self.me) != 0).then_some(s);
        (local, forwarded)
    }
}
mod directory;
mod pin;
mod presence;
#[cfg(test)]
mod tests;
