//! Stage 14 (holder side), resume for ids another shard owns: the holder asks each owner
//! (`Replay`, after its `Join`, so the owner already forwards every new message) and holds
//! the connection's head; the owner answers with the verdict and the missed messages
//! (`Replayed`). Meanwhile the connection takes nothing live from the ids still asked for
//! (their answer covers it) and keeps what arrives for the others, by offset; once every
//! owner has answered (and every `JoinAck` is in) the stream starts exactly as a local one
//! would ([`Shard::emit`]). Also the last position heard of each id owned elsewhere, which a
//! live connection under several ids writes into its cursor.

use bytes::Bytes;
use hashbrown::HashMap;

use super::output::Ev;
use super::resume::Plan;
use super::Shard;
use crate::conn::State;
use crate::driver::Driver;
use crate::history::{Pin, Pos, Start};
use crate::http::request::SubRequest;
use crate::id::Id;
use crate::mesh::{Msg, Verdict};

/// A connection waiting for its owners' `Replayed`.
struct Pending {
    /// Matches the answers to this connection (slots are reused).
    token: u32,
    /// Bit k: id k's owner has not answered yet.
    waiting: u64,
    /// What the stream will start with.
    plan: Plan,
}

/// The holder side's state.
#[derive(Default)]
pub(super) struct Remote {
    /// By connection.
    pending: HashMap<u32, Pending>,
    next_token: u32,
    /// By router slot: the last position heard of an id owned elsewhere (`Deliver`,
    /// `Replayed`), with the id (a slot may be reused for another id).
    positions: HashMap<u32, (Id, Pos)>,
    /// Cluster mode, by connection: per router slot, the last position its start sent
    /// (Redis' answer and its pub/sub messages come on different connections, so a message
    /// the replay had may still arrive live: it is skipped). Dropped at the first later
    /// message of the id.
    floors: HashMap<u32, Vec<(u32, Pos)>>,
}

impl Remote {
    /// The last position heard of `id` in router slot `s` (zero if none).
    pub(super) fn position(&self, s: u32, id: &Id) -> Pos {
        match self.positions.get(&s) {
            Some((known, pos)) if known == id => *pos,
            _ => Pos::default(),
        }
    }

    /// Records `pos` as the last position of `id` in router slot `s`.
    pub(super) fn track(&mut self, s: u32, id: &Id, pos: Pos) {
        match self.positions.get_mut(&s) {
            Some((known, p)) if known == id => *p = pos,
            _ => {
                self.positions.insert(s, (id.clone(), pos));
            }
        }
    }

    /// Records `pos` as the last position of `id` in router slot `s` unless it is behind the
    /// one recorded (same epoch): in cluster mode, answers and pub/sub messages from Redis
    /// may cross. Returns the position recorded before.
    pub(super) fn track_forward(&mut self, s: u32, id: &Id, pos: Pos) -> Pos {
        let prev = self.position(s, id);
        if prev.epoch != pos.epoch || pos.offset > prev.offset {
            self.track(s, id, pos);
        }
        prev
    }

    /// Whether any connection has a floor (cluster mode, just resumed).
    #[inline]
    pub(super) fn has_floors(&self) -> bool {
        !self.floors.is_empty()
    }

    /// Sets connection `i`'s floors: per router slot, the last position its start sent.
    pub(super) fn set_floors(&mut self, i: u32, floors: Vec<(u32, Pos)>) {
        self.floors.insert(i, floors);
    }

    /// Whether the message at `pos` of router slot `s` is one connection `i`'s start sent
    /// already; a later one drops the slot's floor.
    pub(super) fn below_floor(&mut self, i: u32, s: u32, pos: Pos) -> bool {
        let Some(f) = self.floors.get_mut(&i) else {
            return false;
        };
        let Some(k) = f.iter().position(|&(slot, _)| slot == s) else {
            return false;
        };
        let floor = f[k].1;
        if floor.epoch == pos.epoch && pos.offset <= floor.offset {
            return true;
        }
        f.swap_remove(k);
        if f.is_empty() {
            self.floors.remove(&i);
        }
        false
    }

    /// Whether any connection waits for an owner.
    #[inline]
    pub(super) fn waiting(&self) -> bool {
        !self.pending.is_empty()
    }
}

impl<D: Driver> Shard<D> {
    /// The history pin of owned id `id` (see [`crate::history::Pin`]): set in its router
    /// slot the first time while anyone is subscribed, so its implicit epoch stays put.
    pub(super) fn pin(&mut self, id: &Id) -> Pin {
        let store = &self.resume.store;
        self.router.pin_or(id, || store.pin_now(id))
    }

    /// Pins every id of the connection logged in as `handle` (see [`Shard::pin`]): a local
    /// verdict was decided just before the login, from the bucket's current generation,
    /// which cannot have moved within the turn.
    pub(super) fn pin_logged_in(&mut self, handle: u32) {
        for k in 0..self.router.slots_of(&handle).len() {
            let s = self.router.slots_of(&handle)[k];
            let id = self.router.id_of(s).clone();
            self.pin(&id);
        }
    }

    /// Stream `i` (logged in, its `Join`s queued) resumes ids other shards own: decides its
    /// own ids now, asks the owners of the others; returns how many answers it waits for.
    pub(super) fn start_remote(&mut self, i: u32, req: SubRequest) -> u8 {
        self.expire_now();
        let r = &mut self.resume.remote;
        r.next_token = r.next_token.wrapping_add(1);
        let token = r.next_token;
        let shards = self.mesh.shards();
        let mut plan = Plan::new(req);
        let (mut waiting, mut asked) = (0u64, 0u8);
        let sequenced = self.sequenced();
        for k in 0..plan.req.ids.len() {
            let owner = plan.req.ids[k].owner(shards);
            if owner == self.me && !sequenced {
                self.decide_local(&mut plan, k);
                continue;
            }
            waiting |= 1 << k;
            asked += 1;
            if owner == self.me {
                // Cluster mode: Redis keeps the history; logged in already, so what is
                // published after the read arrives live.
                let (id, start) = (plan.req.ids[k].clone(), plan.req.resume.start(k));
                self.fetch(id, start, self.me as u16, i, token, k as u8);
                continue;
            }
            let replay = Msg::Replay {
                id: plan.req.ids[k].clone(),
                from: self.me as u16,
                conn: i,
                token,
                k: k as u8,
                start: plan.req.resume.start(k),
            };
            self.outbox.push(owner, replay);
        }
        let p = Pending {
            token,
            waiting,
            plan,
        };
        self.resume.remote.pending.insert(i, p);
        asked
    }

    /// Owner side of `Replay`: the verdict for `id` and what the connection missed, up to
    /// now; every later message reaches the holder as a `Deliver`, after this answer.
    pub(super) fn on_replay(
        &mut self,
        id: Id,
        from: u16,
        conn: u32,
        token: u32,
        k: u8,
        start: Start,
    ) {
        if self.sequenced() {
            // Cluster mode: Redis answers; the `Join` before this put the holder in place.
            return self.fetch(id, start, from, conn, token, k);
        }
        self.expire_now();
        let pin = self.pin(&id);
        let store = &self.resume.store;
        let verdict = store.start(&id, start, pin).map(|(pos, after)| {
            let missed = after.map_or(Vec::new(), |after| {
                let held = store.messages_after(&id, after);
                held.map(|(o, m)| (o, Bytes::copy_from_slice(m))).collect()
            });
            (pos, missed)
        });
        let answer = Msg::Replayed {
            conn,
            token,
            k,
            verdict,
        };
        self.outbox.push(usize::from(from), answer);
    }

    /// Holder side of `Replayed`: id `k` of connection `conn` is decided; its head goes out
    /// once nothing else is awaited.
    pub(super) fn on_replayed(&mut self, conn: u32, token: u32, k: u8, verdict: Verdict) {
        let k = usize::from(k);
        let Some(p) = self.resume.remote.pending.get_mut(&conn) else {
            return; // closed meanwhile
        };
        if p.token != token {
            return;
        }
        p.waiting &= !(1 << k);
        let last = match verdict {
            Ok((start, msgs)) => {
                p.plan.starts[k] = start;
                let last = msgs
                    .last()
                    .map_or(start, |&(o, _)| Pos { offset: o, ..start });
                p.plan.msgs.extend(msgs.into_iter().map(|(o, m)| (k, o, m)));
                last
            }
            Err((reason, cur)) => {
                p.plan.starts[k] = cur;
                p.plan.lost.push((k, reason));
                cur
            }
        };
        let id = p.plan.req.ids[k].clone();
        if let Some(s) = self.router.lookup(&id) {
            self.resume.remote.track_forward(s, &id, last);
        }
        self.release_wait(conn);
    }

    /// A message `ev` for router slot `s` and connection `i`, held back by a resume: `None`
    /// to deliver it as usual, else how many connections it was kept for (0 or 1). Kept for a
    /// connection waiting for its answers; skipped (cluster mode) if its start sent it.
    #[inline]
    pub(super) fn resume_filter(&mut self, i: u32, s: u32, ev: Ev<'_>) -> Option<u32> {
        let Ev::Plain { msg, pos, .. } = ev else {
            return None;
        };
        if self.resume.remote.waiting() {
            if let Some(kept) = self.deliver_pending(i, s, msg, pos) {
                return Some(u32::from(kept));
            }
        }
        if self.resume.remote.has_floors() && self.resume.remote.below_floor(i, s, pos) {
            return Some(0);
        }
        None
    }

    /// A message for router slot `s` (at `pos`) and connection `i`: `None` if `i` waits
    /// for no owner (deliver as usual); else whether it was kept for the connection's start
    /// (not: its owner's answer will hold it).
    pub(super) fn deliver_pending(&mut self, i: u32, s: u32, msg: &[u8], pos: Pos) -> Option<bool> {
        let h = self.conns[i].ids;
        let k = self.router.slots_of(&h).iter().position(|&t| t == s);
        let sequenced = self.sequenced();
        let p = self.resume.remote.pending.get_mut(&i)?;
        let Some(k) = k else { return Some(false) };
        // An owner's answer covers what reached the holder before it (one FIFO); Redis'
        // does not (another connection): kept by offset, deduplicated at the start.
        if p.waiting & (1 << k) != 0 && !sequenced {
            return Some(false);
        }
        p.plan
            .msgs
            .push((k, pos.offset, Bytes::copy_from_slice(msg)));
        Some(true)
    }

    /// One less wait for connection `i`'s head; if none is left, it goes out.
    pub(super) fn release_wait(&mut self, i: u32) {
        let conn = &mut self.conns[i];
        conn.waits = conn.waits.saturating_sub(1);
        if conn.waits == 0 && conn.state == State::SubJoining {
            conn.state = State::SubStream;
            self.finish_remote(i);
            self.try_send(i);
        }
    }

    /// Connection `i` waits for nothing more: if it was resuming, its start is written.
    pub(super) fn finish_remote(&mut self, i: u32) {
        if let Some(p) = self.resume.remote.pending.remove(&i) {
            self.emit(i, p.plan);
        }
    }

    /// Connection `i` closes: it waits for no owner any more.
    pub(super) fn forget_remote(&mut self, i: u32) {
        if self.resume.remote.waiting() {
            self.resume.remote.pending.remove(&i);
        }
        if self.resume.remote.has_floors() {
            self.resume.remote.floors.remove(&i);
        }
    }
}
