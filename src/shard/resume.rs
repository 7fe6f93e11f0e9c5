//! Stage 14, history and resume (`--history`): the owner keeps each id's last messages
//! ([`crate::history::History`]) and numbers them; a stream that carries cursors starts with
//! its verdict, the messages it missed and then live ones, each with the connection's cursor;
//! long-polls (`/poll/`) answer at once or are held like idle subscribers until a message or
//! `--poll-timeout`.
//!
//! A connection whose ids this shard owns is opened in one step: verdict, replay and login
//! happen in the same turn, and every later publish to its ids passes this owner after that,
//! so nothing published during the replay is missed or sent twice. With history on, a
//! subscriber under one id always lives on its owner (whatever `--placement` says). A
//! subscriber under ids that other shards own asks their owners (`shard/replay.rs`) and
//! waits, its head held, as it waits for `JoinAck`s.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::Shard;
use crate::conn::{Flags, State};
use crate::driver::Driver;
use crate::history::cursor::write_cursor;
use crate::history::{History, Pos, Reason, Resume};
use crate::http::request::SubRequest;
use crate::http::resume::{self, Lost};
use crate::http::stream::{self, Proto, CURSORS};
use crate::http::{response, ws};
use crate::id::Id;
use crate::stats::ShardStats;

/// Retired history streams looked at every 100 ms (see `History::settle`): a million
/// take under two minutes.
const SETTLE_PER_TICK: usize = 1024;

/// The history, the CORS lines of dynamic heads, held polls, and the resumes waiting for
/// other shards (`shard/replay.rs`).
pub(super) struct Resumes {
    pub(super) store: History,
    /// `Access-Control-Allow-Origin` lines for heads built per connection.
    pub(super) cors: Box<[u8]>,
    /// Held polls (`shard/poll.rs`).
    pub(super) polls: super::poll::Polls,
    /// When retired streams are looked at next.
    next_settle: Instant,
    /// Holder side: see `shard/replay.rs`.
    pub(super) remote: super::replay::Remote,
    /// The last cursor written for a delivery, and the position it is of (`None`: a whole
    /// cursor of a connection under several ids).
    cursor: Vec<u8>,
    cursor_of: Option<Pos>,
}

impl Resumes {
    /// The stage for settings `cfg`.
    pub(super) fn new(cfg: &crate::config::ServerConfig) -> Resumes {
        Resumes {
            store: History::new(cfg.shard_history()),
            cors: response::cors_lines(&cfg.cors_origin).into_boxed_slice(),
            polls: super::poll::Polls::new(cfg.poll_timeout_ms),
            next_settle: Instant::now(),
            remote: Default::default(),
            cursor: Vec::new(),
            cursor_of: None,
        }
    }

    /// Takes back the cursor [`Shard::cursor_context`] lent.
    pub(super) fn put_cursor(&mut self, cursor: Vec<u8>) {
        if cursor.capacity() > 0 {
            self.cursor = cursor;
        }
    }
}

/// What a resumable stream starts with, once every id's verdict is known.
pub(super) struct Plan {
    /// The request (its ids, protocol, HTTP version, WebSocket key, cursor).
    pub(super) req: SubRequest,
    /// Per id, the position before the first message the stream sends.
    pub(super) starts: Vec<Pos>,
    /// The ids whose position was lost (index in `req.ids`, reason).
    pub(super) lost: Vec<(usize, Reason)>,
    /// The messages to send first: (id index, offset, body); sorted and deduplicated by
    /// [`Shard::emit`].
    pub(super) msgs: Vec<(usize, u64, Bytes)>,
}

impl Plan {
    /// Calls `f` with each message to send first and the connection's cursor after it, in
    /// order; returns the cursor after the last one (the starts if there is none).
    fn walk(&self, mut f: impl FnMut(&[u8], &[u8])) -> Vec<u8> {
        let mut pos = self.starts.clone();
        let mut cursor = Vec::new();
        write_cursor(&mut cursor, &pos);
        for (k, o, m) in &self.msgs {
            pos[*k].offset = *o;
            cursor.clear();
            write_cursor(&mut cursor, &pos);
            f(&cursor, m);
        }
        cursor
    }

    /// A plan for `req` with nothing decided yet.
    pub(super) fn new(req: SubRequest) -> Plan {
        let n = req.ids.len();
        Plan {
            req,
            starts: vec![Pos::default(); n],
            lost: Vec::new(),
            msgs: Vec::new(),
        }
    }
}

impl<D: Driver> Shard<D> {
    /// Whether subscriber request `req` gets a stream that can resume: history on (or a
    /// cursor given, to be told `no-history`), on `/sub/` or `/poll/`, not HEAD.
    pub(super) fn resumable(&self, req: &SubRequest) -> bool {
        let on = self.resume.store.enabled() || req.resume != Resume::Fresh;
        on && req.proto != Proto::Seed && !req.head_only && !req.preflight
    }

    /// The protocol byte of a resumable stream: [`CURSORS`] when its messages carry cursors
    /// (SSE and polls with history on, WebSocket and raw with `cursors=1`).
    pub(super) fn resumable_proto(&self, req: &SubRequest) -> u8 {
        let carries = self.resume.store.enabled()
            && match req.proto {
                Proto::Sse | Proto::Poll => true,
                Proto::Ws | Proto::Raw => req.cursors,
                Proto::Seed => false,
            };
        req.proto as u8 | if carries { CURSORS } else { 0 }
    }

    /// Owner side of a publish with history on: keeps `msg` as `id`'s next message and
    /// returns its position; nothing (position zero) with history off.
    pub(super) fn keep(&mut self, id: &Id, msg: &[u8]) -> Pos {
        if !self.resume.store.enabled() {
            return Pos::default();
        }
        let now = u64::from(self.lp.now_ms());
        let pin = self.pin(id);
        self.resume.store.append(id, msg, now, pin)
    }

    /// Decides id `k` of `plan` (owned here) now: its start, or its reset; the messages it
    /// missed go into the plan.
    pub(super) fn decide_local(&mut self, plan: &mut Plan, k: usize) {
        let id = &plan.req.ids[k];
        let pin = self.pin(id);
        let store = &self.resume.store;
        match store.start(id, plan.req.resume.start(k), pin) {
            Ok((start, after)) => {
                plan.starts[k] = start;
                if let Some(after) = after {
                    let missed = store.messages_after(id, after);
                    plan.msgs
                        .extend(missed.map(|(o, m)| (k, o, Bytes::copy_from_slice(m))));
                }
            }
            Err((reason, cur)) => {
                plan.starts[k] = cur;
                plan.lost.push((k, reason));
            }
        }
    }

    /// Drops messages past the TTL, so no verdict counts on one.
    pub(super) fn expire_now(&mut self) {
        let now = u64::from(self.lp.now_ms());
        self.resume.store.expire(now);
    }

    /// Opens resumable stream `i` whose ids are all owned here: decides every id and
    /// writes head, opening and missed messages in this turn (a poll is answered or held).
    pub(super) fn open_local(&mut self, i: u32, req: &SubRequest) {
        self.expire_now();
        let mut plan = Plan::new(req.clone());
        for k in 0..req.ids.len() {
            self.decide_local(&mut plan, k);
        }
        self.emit(i, plan);
    }

    /// Writes what `plan` says stream `i` starts with: its head (with `Comet-Last-Event-ID`
    /// and, if a cursor was given, `Comet-Recovered`), the opening, the missed messages in
    /// order, each with its cursor; in front of anything already queued. A poll is answered
    /// (messages or a lost position) or held.
    pub(super) fn emit(&mut self, i: u32, mut plan: Plan) {
        if plan.lost.iter().any(|&(_, r)| r == Reason::Unavailable) {
            return self.refuse_unavailable(i);
        }
        plan.msgs.sort_by_key(|&(k, o, _)| (k, o));
        plan.msgs.dedup_by_key(|&mut (k, o, _)| (k, o));
        // Live messages kept while waiting that the start already covers.
        let starts = &plan.starts;
        plan.msgs.retain(|&(k, o, _)| o > starts[k].offset);
        if self.sequenced() {
            self.set_floors(i, &plan);
        }
        plan.lost.sort_by_key(|&(k, _)| k);
        let given = plan.req.resume != Resume::Fresh;
        if given {
            let st = &self.stats[self.me];
            ShardStats::add(
                if plan.lost.is_empty() {
                    &st.recoveries
                } else {
                    &st.recoveries_failed
                },
                1,
            );
        }
        let recovered = given.then_some(plan.lost.is_empty());
        let c = self.conns[i];
        let (proto, chunked) = (Proto::from_u8(c.proto), c.flags.contains(Flags::CHUNKED));
        let carries = c.proto & CURSORS != 0;
        let lost: Vec<Lost<'_>> = plan
            .lost
            .iter()
            .map(|&(k, r)| (&plan.req.ids[k], r))
            .collect();
        let mut cursor = Vec::new();
        write_cursor(&mut cursor, &plan.starts);
        let mut out = Vec::new();
        if proto == Proto::Poll {
            let mut messages = Vec::new();
            let mut first = true;
            cursor = plan.walk(|cursor, m| {
                resume::poll_message(&mut messages, first, cursor, m);
                first = false;
            });
            if plan.msgs.is_empty() && lost.is_empty() {
                return self.hold_poll(i, given);
            }
            resume::poll_answer(
                &mut out,
                &self.resume.cors,
                &cursor,
                recovered,
                &lost,
                &messages,
            );
            self.conns[i].state = State::Finishing;
        } else {
            let mut extra = Vec::new();
            resume::head_lines(&mut extra, &cursor, recovered);
            match plan.req.ws_accept {
                Some(key) if proto == Proto::Ws => ws::handshake(&mut out, &key, &extra),
                _ => {
                    let cors = &self.resume.cors;
                    out = stream::head_with(proto, plan.req.http10, cors, &extra, true);
                }
            }
            if carries || !lost.is_empty() {
                resume::opening(&mut out, proto, chunked, &cursor, &lost);
            }
            plan.walk(|cursor, m| {
                write_message(&mut out, proto, chunked, carries, cursor, m);
            });
        }
        let a = self.ensure_aux(i);
        let aux = &mut self.aux[a];
        // Nothing was sent yet (the head is in `out`): what was queued goes after it.
        out.extend_from_slice(&aux.out);
        aux.out = out;
    }

    /// Cluster mode: connection `i` skips what `plan` sends if it also arrives live.
    fn set_floors(&mut self, i: u32, plan: &Plan) {
        let mut last = plan.starts.clone();
        for &(k, o, _) in &plan.msgs {
            last[k].offset = o;
        }
        let slots = self.router.slots_of(&self.conns[i].ids);
        let floors = slots.iter().copied().zip(last).collect();
        self.resume.remote.set_floors(i, floors);
    }

    /// Stream `i` cannot get a position (cluster mode, Redis unreachable): `503`, closed.
    fn refuse_unavailable(&mut self, i: u32) {
        let mut out = Vec::new();
        let why = "cluster unavailable: Redis, which keeps the history, cannot be reached; retry";
        response::error_text(&mut out, crate::http::Status::Unavailable, why);
        let a = self.ensure_aux(i);
        self.aux[a].out = out;
        self.conns[i].state = State::Finishing;
    }

    /// The cursor of live connection `i`: each of its ids' current position (this shard's
    /// history for the ids it owns, the last heard from their owners for the others).
    pub(super) fn live_cursor(&self, i: u32, out: &mut Vec<u8>) {
        let h = self.conns[i].ids;
        let shards = self.mesh.shards();
        // Written position by position: no list built per delivery.
        for (n, &s) in self.router.slots_of(&h).iter().enumerate() {
            let id = self.router.id_of(s);
            let pos = if id.owner(shards) == self.me && !self.sequenced() {
                self.resume.store.position(id, self.router.pin(id))
            } else {
                self.resume.remote.position(s, id)
            };
            if n > 0 {
                out.push(b'.');
            }
            pos.write(out);
        }
    }

    /// What delivering a message at `pos` to connection `i` (whose stream carries cursors)
    /// needs besides the message: its cursor after it (`pos` written out, once per message
    /// for all its subscribers; a connection under several ids writes its whole cursor) and,
    /// for a held poll, which its first message answers, the CORS lines (a copy: rare). Give
    /// the cursor back with [`Resumes::put_cursor`].
    pub(super) fn cursor_context(&mut self, i: u32, pos: Pos) -> (Vec<u8>, Option<Vec<u8>>) {
        let mut cursor = std::mem::take(&mut self.resume.cursor);
        if self.needs_live_cursor(i) {
            cursor.clear();
            self.live_cursor(i, &mut cursor);
            self.resume.cursor_of = None;
        } else if self.resume.cursor_of != Some(pos) {
            cursor.clear();
            pos.write(&mut cursor);
            self.resume.cursor_of = Some(pos);
        }
        let poll = Proto::from_u8(self.conns[i].proto) == Proto::Poll;
        if poll {
            self.poll_done(i);
        }
        (cursor, poll.then(|| self.resume.cors.to_vec()))
    }

    /// Whether connection `i`'s messages need its whole cursor (several ids) rather than
    /// the message's own position.
    pub(super) fn needs_live_cursor(&self, i: u32) -> bool {
        let c = &self.conns[i];
        c.proto & CURSORS != 0 && self.router.slots_of(&c.ids).len() > 1
    }

    /// Once a turn: drops messages past the TTL, drops retired streams nobody subscribes
    /// to (every 100 ms), publishes the history gauges, and answers polls past
    /// `--poll-timeout`.
    pub(super) fn history_tick(&mut self, now: Instant) {
        if !self.resume.store.enabled() {
            return;
        }
        self.expire_now();
        if now >= self.resume.next_settle {
            // Retired streams nobody subscribes to any more are dropped, a few at a time.
            self.resume.next_settle = now + Duration::from_millis(100);
            let router = &self.router;
            self.resume.store.settle(SETTLE_PER_TICK, |id| {
                router.lookup(id).is_some_and(|s| router.holders(s) != 0)
            });
        }
        let (ids, msgs, bytes, evicted) = self.resume.store.counts();
        let st = &self.stats[self.me];
        use std::sync::atomic::Ordering::Relaxed;
        st.history_ids.store(ids as u64, Relaxed);
        st.history_messages.store(msgs as u64, Relaxed);
        st.history_bytes.store(bytes as u64, Relaxed);
        st.history_evicted.store(evicted, Relaxed);
        self.poll_sweep_if_due(now);
    }
}

/// Appends message `msg` to a stream: with its `cursor` when the stream `carries` cursors
/// (SSE `id:`, the cursor mode of WebSocket and raw), else as on any stream. Returns false
/// if nothing was written (an empty message on a plain raw stream).
pub(super) fn write_message(
    out: &mut Vec<u8>,
    proto: Proto,
    chunked: bool,
    carries: bool,
    cursor: &[u8],
    msg: &[u8],
) -> bool {
    if carries {
        resume::message(out, proto, chunked, cursor, msg);
        true
    } else {
        stream::message(out, proto, chunked, 0, msg)
    }
}
