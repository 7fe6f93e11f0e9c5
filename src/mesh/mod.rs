//! The cross-core protocol: how shards talk. Shards share nothing but this mesh.
//!
//! # Queues and doorbells
//! Every shard has one inbox, a lock-free MPSC queue (`crossbeam_queue::SegQueue`) of
//! batches. A shard never pushes single messages: during one turn of its loop it collects
//! what it has for each other shard in its [`Outbox`] (one `Vec<Msg>` per destination) and
//! pushes each non-empty batch at the end of the turn. Then it rings the destination's
//! doorbell only if that shard has announced that it is going to sleep (`sleeping` flag,
//! swapped to false by the first producer that sees it, so one wake-up per sleep). A shard
//! about to sleep sets its flag, then looks at its inbox and its ring once more before it
//! waits, so a batch pushed in between is never missed. The doorbell is a
//! `tokio::sync::Notify`, which keeps a permit if the shard is not waiting yet.
//!
//! # Who sends what to whom
//! Each id has an owner shard, `id.owner(shards)` (a fixed hash). The owner keeps the
//! directory entry of the id: the set of shards holding at least one connection logged in
//! under it. Connections live on whichever shard accepted them (SO_REUSEPORT decides).
//! - `Join {id, from, seq}`, holder -> owner: shard `from` now holds a connection under `id`.
//!   Sent when the first local connection logs in under an id the holder does not own.
//! - `JoinAck {id, seq}`, owner -> holder: the directory has `from`. Until it arrives, the
//!   holder keeps the response head of every new connection under `id` unsent, so once a
//!   client has its headers, every later send to `id` finds it (no gap between subscribe
//!   and delivery).
//! - `Leave {id, from}`, holder -> owner: the last local connection under `id` closed.
//! - `Route {id, msg, reply}`, publisher's shard -> owner: publish `msg` to `id`.
//! - `Deliver {id, msg, pos, reply}`, owner -> each holder other than itself (`pos`: the
//!   message's position in the id's history).
//! - `Replay {id, from, conn, token, k, start}`, holder -> owner, after the holder's `Join`:
//!   a connection resumes `id` (history); `Replayed {conn, token, k, verdict}`, owner ->
//!   holder: the messages it missed up to now (every later one follows as a `Deliver`), or
//!   the reset reason.
//! - `Remote {id, msg}`, cluster agent -> owner: a message from another node; routed like
//!   `Route` with the reply to [`ReplyTo::NOBODY`]. `RemoteFriends {user, msg}`, agent ->
//!   owner of `user`: a friends event from another node, fanned out like `FriendsRoute`
//!   with the replies to nobody. `ClusterReady`, agent -> every shard: look at the heads
//!   held for a bucket subscription again (see [`crate::cluster`]).
//! - `Replied {token, count, more}`, owner and holders -> publisher's shard: `count`
//!   connections were queued the message. The owner's reply says how many holders it
//!   forwarded to (`more: Some(k)`); a holder's says `None`. They come over different
//!   queues and may arrive in any order; the publish reply is written when the owner's
//!   and k holders' have arrived.
//! - `Kick {id, reply}`, publisher's shard -> every other shard (`DELETE
//!   /subscribers/<id>`, see `shard::kick`): end the local connections under `id`; each
//!   answers `Replied {count, more: None}`, the publisher's shard counts its own as the
//!   owner's reply with `more: Some(shards - 1)`.
//!
//! - Friends fan-out (`POST /publish/<user>`, see `shard::friends`): `FriendsRoute {user,
//!   msg, reply, credit}`, publisher's shard -> owner of `user`, which holds the user's
//!   follower list. The owner groups the followers by their own owner shard and sends one
//!   `FriendsBatch {ev, friends, holders_too: true}` per such shard (its own group is handled
//!   inline). Each delivers to its local connections under those ids and, for the ids whose
//!   directory names other holder shards, sends one `FriendsBatch {holders_too: false}` per
//!   holder shard. Every step answers `FriendsReplied {token, friends, count, credit}` to
//!   the publisher's shard: the owner's carries the follower count.
//! - Friends edits (`PUT|DELETE /friends/<a>/<b>`): `FriendEdit {a, b, add}`, publisher's
//!   shard -> the edge's coordinator (one fixed shard per pair), which journals the edit
//!   (fdatasync), applies its half and sends `FriendEditHalf` to the owner of the other half.
//!   Both answer `FriendsReplied` (count = halves changed).
//!
//! Replies of the friends paths arrive over several hops and in any order, so they are
//! counted with *credit* rather than a count: the publish starts with a fixed credit; each
//! message carries a share, a step that sends k further messages splits its share into
//! k + 1 parts, and every step returns what it kept in its reply. The publish is complete
//! when all of the credit is back (weighted reference counting; with at most 64 shards and
//! three hops no share ever rounds to 0).
//!
//! # Placement
//! A subscriber under a single id (the common case) is handed to the id's owner shard as
//! soon as its request head is parsed (`Adopt {fd, req}`, accepting shard -> owner),
//! unless `--placement accept` is set. It then lives where every publish to its id arrives
//! anyway: no `Join`, no directory entry elsewhere, no `Deliver` hop, and one router slot in
//! the whole process. A subscriber under several ids stays on the shard that accepted it and
//! uses the directory as above. DESIGN.md compares the two placements as measured.
//!
//! # Ordering
//! Every inbox is FIFO per producer, and every message for an id passes through its owner,
//! so messages from one publisher connection to one id reach every subscriber in the order
//! sent, and a `Join`, `Leave`, `Join` sequence from one holder is applied in order (acks
//! carry the join's sequence number so a late ack of an old join is ignored).

use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_queue::SegQueue;
use tokio::sync::Notify;

mod msg;

pub use msg::{Msg, ReplyTo, Verdict};

/// What one shard has for the others, collected during one turn of its loop: one batch per
/// destination shard, pushed by [`Outbox::flush`] at the end of the turn (see "Queues and
/// doorbells"). Owned by the shard; the router writes into it when handed it.
pub struct Outbox {
    batches: Vec<Vec<Msg>>,
}

impl Outbox {
    /// An empty outbox for `shards` destinations.
    pub fn new(shards: usize) -> Outbox {
        Outbox {
            batches: (0..shards).map(|_| Vec::new()).collect(),
        }
    }

    /// Queues `m` for shard `to`.
    #[inline]
    pub fn push(&mut self, to: usize, m: Msg) {
        self.batches[to].push(m);
    }

    /// Pushes every non-empty batch to its shard's inbox (ringing its doorbell if it sleeps)
    /// and empties the outbox.
    pub fn flush(&mut self, mesh: &Mesh) {
        for (to, batch) in self.batches.iter_mut().enumerate() {
            if !batch.is_empty() {
                mesh.push(to, std::mem::take(batch));
            }
        }
    }

    /// Takes the last message queued for shard `to` (tests of the router).
    #[cfg(test)]
    pub(crate) fn pop(&mut self, to: usize) -> Option<Msg> {
        self.batches[to].pop()
    }

    /// Whether nothing is queued (tests of the router).
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.batches.iter().all(Vec::is_empty)
    }
}

/// The queues and doorbells of all shards, shared by every shard thread.
pub struct Mesh {
    inbox: Vec<SegQueue<Vec<Msg>>>,
    sleeping: Vec<AtomicBool>,
    doorbell: Vec<Notify>,
    shutdown: AtomicBool,
    /// SIGTERM's drain is under way: listeners closed, streams being ended, `/readyz` 503.
    draining: AtomicBool,
    /// `--max-conns-per-ip`: the subscriber connections of each source address, all shards.
    pub per_ip: crate::admin::per_ip::PerIp,
}

impl Mesh {
    /// A mesh for `shards` shards.
    pub fn new(shards: usize) -> Mesh {
        Mesh {
            inbox: (0..shards).map(|_| SegQueue::new()).collect(),
            sleeping: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            doorbell: (0..shards).map(|_| Notify::new()).collect(),
            shutdown: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            per_ip: crate::admin::per_ip::PerIp::default(),
        }
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.inbox.len()
    }

    /// Pushes one batch to shard `to` and rings its doorbell if it sleeps.
    pub fn push(&self, to: usize, batch: Vec<Msg>) {
        self.inbox[to].push(batch);
        self.ring(to);
    }

    fn ring(&self, to: usize) {
        // SeqCst pairs with `prepare_sleep`: either the sleeper sees our batch on its
        // re-check, or we see its flag and wake it.
        if self.sleeping[to].load(Ordering::SeqCst)
            && self.sleeping[to].swap(false, Ordering::SeqCst)
        {
            self.doorbell[to].notify_one();
        }
    }

    /// Takes the next batch for shard `me`.
    pub fn pop(&self, me: usize) -> Option<Vec<Msg>> {
        self.inbox[me].pop()
    }

    /// Announces that shard `me` is going to sleep; returns false (and cancels the
    /// announcement) if its inbox is not empty or shutdown was asked.
    pub fn prepare_sleep(&self, me: usize) -> bool {
        self.sleeping[me].store(true, Ordering::SeqCst);
        if !self.inbox[me].is_empty() || self.is_shutdown() {
            self.sleeping[me].store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Marks shard `me` awake again after a wait.
    pub fn woke(&self, me: usize) {
        self.sleeping[me].store(false, Ordering::SeqCst);
    }

    /// The doorbell shard `me` waits on.
    pub fn doorbell(&self, me: usize) -> &Notify {
        &self.doorbell[me]
    }

    /// Asks every shard to stop, and wakes them.
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        for d in &self.doorbell {
            d.notify_one();
        }
    }

    /// Whether shutdown was asked.
    pub fn is_shutdown(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// Starts the drain (first SIGTERM): every shard stops accepting and ends its streams
    /// over `--drain-period`; `/readyz` answers 503 from now on. Wakes every shard.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        for d in &self.doorbell {
            d.notify_one();
        }
    }

    /// Whether the drain has started (set once, never cleared).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
