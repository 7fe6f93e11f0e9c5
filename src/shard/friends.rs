//! Stage 12, friends: fan-out and edits on a shard (`POST /publish/<user>`, `PUT|DELETE
//! /friends/<a>/<b>`); the messages and their credit accounting are in [`crate::mesh`].
//!
//! # Fan-out path
//! 1. The publisher's shard routes the publish to the owner of `<user>` (inline if that is
//!    itself), with the full credit.
//! 2. The owner reads the user's followers from its [`ShardGraph`] (CSR row minus removed
//!    plus added), makes the event's JSON once, groups the followers by *their* owner shard
//!    and sends one `FriendsBatch` per group: one cross-core message per destination shard,
//!    not per friend. Its own group is handled inline.
//! 3. Each group's shard delivers to its local connections under each id (with the default
//!    `--placement owner`, single-id subscribers are all there) and, for ids whose directory
//!    names other holders (multi-id subscribers, `--placement accept`), sends one
//!    `FriendsBatch` per holder shard with the ids that shard holds.
//! 4. Every step replies with its count and credit; the publisher's shard answers
//!    `{"friends":F,"delivered":N}` when all credit is back.
//!
//! A connection logged in under several ids that are friends of the publisher gets the event
//! once per such id, as `/send` to each of them would.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::output::Ev;
use super::replies::{Pending, ReplyKind};
use super::Shard;
use crate::conn::Marks;
use crate::driver::Driver;
use crate::friends::journal::{self, Journal};
use crate::friends::{owner_of, user_of, FriendEvent, ShardGraph};
use crate::http::{response, Status};
use crate::id::Id;
use crate::mesh::{Msg, ReplyTo};
use crate::stats::ShardStats;

/// The credit a friends publish or edit starts with (see [`crate::mesh`]): split at most
/// three times among at most 64 shards, no share reaches 0.
pub(super) const FULL_CREDIT: u64 = 1 << 62;

/// One shard's part of the friends store and what it needs to take edits.
pub struct FriendsShard {
    /// The follower lists of the users this shard owns, and their edits.
    pub graph: ShardGraph,
    /// The journal every edit is written to before its reply (shared by all shards).
    pub journal: Option<Arc<Mutex<Journal>>>,
    /// `--directed`: an edit `a b` has one half only.
    pub directed: bool,
}

/// This shard's part of the friends store, and the fan-out's scratch list.
#[derive(Default)]
pub(super) struct Friends {
    /// The store (`--friends`), if any.
    pub(super) store: Option<FriendsShard>,
    /// Scratch list of follower ids for one fan-out.
    ids: Vec<u32>,
}

impl Friends {
    /// With `store` (None: no `--friends`).
    pub(super) fn with_store(store: Option<FriendsShard>) -> Friends {
        Friends {
            store,
            ids: Vec::new(),
        }
    }
}

/// Takes the shares of `k` further messages out of `credit`; returns one share.
fn split(credit: &mut u64, k: usize) -> u64 {
    if k == 0 {
        return 0;
    }
    let share = *credit / (k as u64 + 1);
    *credit -= share * k as u64;
    share
}

/// Deliveries queued between two submits during one fan-out.
const SUBMIT_EVERY: u32 = 32;

const NO_GRAPH: &str = "no friends graph: start the server with --friends FILE";
const BAD_IDS: &str = "friends ids are two different decimal numbers, 0 to 4294967295";

impl<D: Driver> Shard<D> {
    /// `POST /publish/<user>` read on publisher connection `i`.
    pub(super) fn friends_publish(&mut self, i: u32, id: Id, msg: Bytes, close: bool) {
        if self.friends.store.is_none() {
            let mut raw = Vec::new();
            response::error_text(&mut raw, Status::NotFound, NO_GRAPH);
            self.push_reply(i, Pending::ready(i, raw, true));
            return;
        }
        ShardStats::add(&self.st().sent, 1);
        let t = self.push_reply(i, Pending::awaiting(i, ReplyKind::Friends, close));
        let reply = ReplyTo {
            shard: self.me as u16,
            token: t,
        };
        // Cluster mode: one record per event; every other node fans it out from its own
        // copy of the graph. Local delivery does not wait.
        self.cluster_forward_friends(t, &id, &msg);
        // An id that is not a graph user (not a 32-bit number) has no friends.
        let Some(user) = user_of(&id) else {
            return self.friends_reply(reply, 0, 0, FULL_CREDIT, false);
        };
        let owner = owner_of(user, self.mesh.shards());
        if owner == self.me {
            self.fanout_owner(user, msg, reply, FULL_CREDIT);
        } else {
            self.outbox.push(
                owner,
                Msg::FriendsRoute {
                    user,
                    msg,
                    reply,
                    credit: FULL_CREDIT,
                },
            );
        }
    }

    /// Step 2 of the fan-out, on the owner of `user`.
    pub(super) fn fanout_owner(&mut self, user: u32, msg: Bytes, reply: ReplyTo, credit: u64) {
        self.fanout_event(FriendEvent::new(user, msg), reply, credit);
    }

    /// Step 2 for event `ev` (a publish, or a friend's presence change).
    pub(super) fn fanout_event(&mut self, ev: FriendEvent, reply: ReplyTo, credit: u64) {
        let (user, mut credit) = (ev.from, credit);
        let mut list = std::mem::take(&mut self.friends.ids);
        list.clear();
        if let Some(f) = &self.friends.store {
            f.graph.followers(user, &mut list);
        }
        ShardStats::add(&self.st().friend_events, 1);
        let total = list.len() as u32;
        if list.is_empty() {
            self.friends.ids = list;
            return self.friends_reply(reply, 0, 0, credit, false);
        }
        let shards = self.mesh.shards();
        let mut groups: Vec<Vec<u32>> = vec![Vec::new(); shards];
        for &f in &list {
            groups[owner_of(f, shards)].push(f);
        }
        self.friends.ids = list;
        let mine = std::mem::take(&mut groups[self.me]);
        let k = groups.iter().filter(|g| !g.is_empty()).count();
        let share = split(&mut credit, k);
        for (d, g) in groups.into_iter().enumerate() {
            if !g.is_empty() {
                self.outbox.push(
                    d,
                    Msg::FriendsBatch {
                        ev: ev.clone(),
                        friends: g,
                        holders_too: true,
                        reply,
                        credit: share,
                    },
                );
            }
        }
        // The other shards start on their batches now, in parallel with the local part,
        // rather than at the end of this turn.
        self.flush_outbox();
        let n = self.fanout_local(&mine, &ev, true, reply, &mut credit);
        self.friends_reply(reply, total, n, credit, false);
    }

    /// Steps 3 (with `holders_too`, on the owner of every id in `friends`) and 4 (on a
    /// holder): queues `ev` on the local connections under each id; returns how many. Shares
    /// for the batches forwarded to other holders are taken out of `credit`.
    pub(super) fn fanout_local(
        &mut self,
        friends: &[u32],
        ev: &FriendEvent,
        holders_too: bool,
        reply: ReplyTo,
        credit: &mut u64,
    ) -> u32 {
        let mut n = 0;
        let mut fwd: Vec<Vec<u32>> = Vec::new();
        for &f in friends {
            let Some(s) = self.router.lookup(&Id::Num(u64::from(f))) else {
                continue;
            };
            let before = n;
            n += self.deliver_slot(s, Ev::Friend(ev));
            if n / SUBMIT_EVERY != before / SUBMIT_EVERY {
                // A large fan-out: hand the sends queued so far to the kernel now, so the
                // first friends get the event while the rest are still being queued.
                if let Err(e) = self.driver.submit() {
                    tracing::error!(shard = self.me, "io_uring submit: {e}");
                }
            }
            let others = if holders_too {
                self.router.holders(s) & !(1u64 << self.me)
            } else {
                0
            };
            if others != 0 {
                if fwd.is_empty() {
                    fwd = vec![Vec::new(); self.mesh.shards()];
                }
                for (h, list) in fwd.iter_mut().enumerate() {
                    if others & (1u64 << h) != 0 {
                        list.push(f);
                    }
                }
            }
        }
        let k = fwd.iter().filter(|g| !g.is_empty()).count();
        let share = split(credit, k);
        for (h, g) in fwd.into_iter().enumerate() {
            if !g.is_empty() {
                self.outbox.push(
                    h,
                    Msg::FriendsBatch {
                        ev: ev.clone(),
                        friends: g,
                        holders_too: false,
                        reply,
                        credit: share,
                    },
                );
            }
        }
        n
    }

    /// `PUT` (`add`) or `DELETE /friends/<a>/<b>` read on publisher connection `i`.
    pub(super) fn friends_edit(&mut self, i: u32, a: Id, b: Id, add: bool, close: bool) {
        let Some(directed) = self.friends.store.as_ref().map(|f| f.directed) else {
            let mut raw = Vec::new();
            response::error_text(&mut raw, Status::NotFound, NO_GRAPH);
            self.push_reply(i, Pending::ready(i, raw, true));
            return;
        };
        let (Some(a), Some(b)) = (user_of(&a), user_of(&b)) else {
            return self.refuse_edit(i);
        };
        if a == b {
            return self.refuse_edit(i);
        }
        let t = self.push_reply(i, Pending::awaiting(i, ReplyKind::Edit, close));
        self.conns[i].marks.insert(Marks::EDITING);
        let reply = ReplyTo {
            shard: self.me as u16,
            token: t,
        };
        let c = journal::coordinator(a, b, directed, self.mesh.shards());
        if c == self.me {
            self.edit_coordinate(a, b, add, reply, FULL_CREDIT);
        } else {
            self.outbox.push(
                c,
                Msg::FriendEdit {
                    a,
                    b,
                    add,
                    reply,
                    credit: FULL_CREDIT,
                },
            );
        }
    }

    fn refuse_edit(&mut self, i: u32) {
        let mut raw = Vec::new();
        response::error_text(&mut raw, Status::BadRequest, BAD_IDS);
        self.push_reply(i, Pending::ready(i, raw, true));
    }

    /// The coordinator of the pair `a b`: journal the edit (fdatasync), apply the halves
    /// this shard owns, send the others to their owners.
    pub(super) fn edit_coordinate(
        &mut self,
        a: u32,
        b: u32,
        add: bool,
        reply: ReplyTo,
        credit: u64,
    ) {
        let mut credit = credit;
        let Some(f) = &self.friends.store else {
            return self.friends_reply(reply, 0, 0, credit, true);
        };
        if let Some(j) = &f.journal {
            // A poisoned lock only means another shard panicked mid-write; the process is
            // exiting then anyway (see server::serve_forever).
            let res = match j.lock() {
                Ok(mut j) => j.append(add, a, b),
                Err(p) => p.into_inner().append(add, a, b),
            };
            if let Err(e) = res {
                tracing::error!(
                    shard = self.me,
                    "friends journal write failed: {e}; edit {a} {b} not applied"
                );
                return self.friends_reply(reply, 0, 0, credit, true);
            }
        }
        let shards = self.mesh.shards();
        let halves = journal::halves(a, b, f.directed);
        let remote: Vec<(u32, u32)> = halves
            .iter()
            .flatten()
            .copied()
            .filter(|&(u, _)| owner_of(u, shards) != self.me)
            .collect();
        let share = split(&mut credit, remote.len());
        for &(user, follower) in &remote {
            self.outbox.push(
                owner_of(user, shards),
                Msg::FriendEditHalf {
                    user,
                    follower,
                    add,
                    reply,
                    credit: share,
                },
            );
        }
        let mut changed = 0;
        for (u, f) in halves.into_iter().flatten() {
            if owner_of(u, shards) == self.me {
                changed += u32::from(self.edit_half(u, f, add));
            }
        }
        self.friends_reply(reply, 0, changed, credit, false);
    }

    /// Applies one half of an edit on the owner of `user`; returns whether it changed.
    pub(super) fn edit_half(&mut self, user: u32, follower: u32, add: bool) -> bool {
        match &mut self.friends.store {
            Some(f) if add => f.graph.add(user, follower),
            Some(f) => f.graph.remove(user, follower),
            None => false,
        }
    }
}
