//! Stage 14, history and resume (`--history`): the owner keeps each id's last messages
//! ([`crate::history::History`]) and numbers them; a stream that carries cursors starts with
//! its verdict, the messages it missed and then live ones, each with the connection's cursor;
//! long-polls (`/poll/`) answer at once or are held like idle subscribers until a message or
//! `--poll-timeout`.
//!
//! A connection that resumes is opened in one step on the shard that owns its ids: verdict,
//! replay and login happen in the same turn, and every later publish to its ids passes this
//! owner after that, so nothing published during the replay is missed or sent twice. With
//! history on, a subscriber under one id always lives on its owner (whatever `--placement`
//! says); a subscriber whose ids are owned by several shards is not resumable yet (its
//! stream is as with history off; see the README).

use std::time::{Duration, Instant};

use super::Shard;
use crate::conn::{Flags, State};
use crate::driver::Driver;
use crate::history::cursor::write_cursor;
use crate::history::{History, Pos, Resume};
use crate::http::request::SubRequest;
use crate::http::resume::{self, Lost};
use crate::http::stream::{self, Proto, CURSORS};
use crate::http::{response, ws};
use crate::id::Id;
use crate::stats::ShardStats;

/// Protocol-byte bit of a held poll whose client gave a cursor (its answer says
/// `Comet-Recovered: true`).
const GAVE_CURSOR: u8 = 0x40;

/// The history, the CORS lines of dynamic heads, and the held polls.
pub(super) struct Resumes {
    store: History,
    /// `Access-Control-Allow-Origin` lines for heads built per connection.
    cors: Box<[u8]>,
    /// Start of the history's millisecond clock.
    clock: Instant,
    /// Polls held (logged in, not answered yet).
    polls: usize,
    /// `--poll-timeout`, ms.
    poll_timeout_ms: u64,
    /// When the next poll-timeout sweep is due.
    next_sweep: Instant,
}

impl Resumes {
    /// The stage for settings `cfg`.
    pub(super) fn new(cfg: &crate::config::ServerConfig) -> Resumes {
        Resumes {
            store: History::new(cfg.shard_history()),
            cors: response::cors_lines(&cfg.cors_origin).into_boxed_slice(),
            clock: Instant::now(),
            polls: 0,
            poll_timeout_ms: cfg.poll_timeout_ms,
            next_sweep: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }
}

/// Where each id of a resuming connection starts, and what it lost.
struct Verdicts<'a> {
    /// Per id, the position before the first message the stream sends.
    starts: Vec<Pos>,
    /// Per id, the offset to replay after (`None`: nothing to replay).
    replay: Vec<Option<u64>>,
    /// The ids whose position was lost.
    lost: Vec<Lost<'a>>,
}

impl<D: Driver> Shard<D> {
    /// Whether subscriber request `req` gets a stream that can resume: history on (or a
    /// cursor given, to be told `no-history`), on `/sub/` or `/poll/`, not HEAD, and every
    /// id owned by this shard or a single id (which is then handed to its owner).
    pub(super) fn resumable(&self, req: &SubRequest) -> bool {
        let on = self.resume.store.enabled() || req.resume != Resume::Fresh;
        let shards = self.mesh.shards();
        on && req.proto != Proto::Seed
            && !req.head_only
            && !req.preflight
            && (req.ids.len() == 1 || req.ids.iter().all(|id| id.owner(shards) == self.me))
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
    /// writes its cursor into `cursor`; nothing (and `cursor` empty) with history off.
    pub(super) fn keep(&mut self, id: &Id, msg: &[u8], cursor: &mut Vec<u8>) {
        cursor.clear();
        if self.resume.store.enabled() {
            let now = self.resume.now_ms();
            self.resume.store.append(id, msg, now).write(cursor);
        }
    }

    fn verdicts<'a>(&self, ids: &'a [Id], resume: &Resume) -> Verdicts<'a> {
        let store = &self.resume.store;
        let mut v = Verdicts {
            starts: Vec::with_capacity(ids.len()),
            replay: Vec::with_capacity(ids.len()),
            lost: Vec::new(),
        };
        for (k, id) in ids.iter().enumerate() {
            let cur = store.position(id);
            let at = match resume {
                Resume::Fresh => {
                    v.starts.push(cur);
                    v.replay.push(None);
                    continue;
                }
                Resume::Earliest => None,
                Resume::At(at) => Some(at[k]),
            };
            match store.resume(id, at) {
                Ok(after) => {
                    v.starts.push(Pos {
                        epoch: cur.epoch,
                        offset: after,
                    });
                    v.replay.push(Some(after));
                }
                Err(reason) => {
                    v.starts.push(cur);
                    v.replay.push(None);
                    v.lost.push((id, reason));
                }
            }
        }
        v
    }

    /// Opens resumable stream `i` under `ids` (logged in, every id owned here): its head,
    /// opening and missed messages go into its output in this turn; a poll is answered or
    /// held.
    pub(super) fn open_resumable(&mut self, i: u32, req: &SubRequest) {
        let now = self.resume.now_ms();
        self.resume.store.expire(now);
        let v = self.verdicts(&req.ids, &req.resume);
        let given = req.resume != Resume::Fresh;
        if given {
            let counter = if v.lost.is_empty() {
                &self.st().recoveries
            } else {
                &self.st().recoveries_failed
            };
            ShardStats::add(counter, 1);
        }
        let recovered = given.then_some(v.lost.is_empty());
        let mut cursor = Vec::new();
        write_cursor(&mut cursor, &v.starts);
        let c = self.conns[i];
        let (proto, chunked) = (Proto::from_u8(c.proto), c.flags.contains(Flags::CHUNKED));
        let carries = c.proto & CURSORS != 0;
        let mut out = Vec::new();
        if proto == Proto::Poll {
            return self.open_poll(i, req, v, recovered);
        }
        let mut extra = Vec::new();
        resume::head_lines(&mut extra, &cursor, recovered);
        match req.ws_accept {
            Some(key) if proto == Proto::Ws => ws::handshake(&mut out, &key, &extra),
            _ => out = stream::head_with(proto, req.http10, &self.resume.cors, &extra, true),
        }
        if carries || !v.lost.is_empty() {
            resume::opening(&mut out, proto, chunked, &cursor, &v.lost);
        }
        self.replay(&mut out, &req.ids, v, |out, cursor, msg| {
            write_message(out, proto, chunked, carries, cursor, msg);
        });
        let a = self.ensure_aux(i);
        self.aux[a].out = out;
    }

    /// Calls `frame` with the cursor after each missed message of every recovered id, and
    /// the message, in order.
    fn replay(
        &self,
        out: &mut Vec<u8>,
        ids: &[Id],
        mut v: Verdicts<'_>,
        mut frame: impl FnMut(&mut Vec<u8>, &[u8], &[u8]),
    ) {
        let mut cursor = Vec::new();
        for (k, id) in ids.iter().enumerate() {
            let Some(after) = v.replay[k] else { continue };
            for (o, msg) in self.resume.store.messages_after(id, after) {
                v.starts[k].offset = o;
                cursor.clear();
                write_cursor(&mut cursor, &v.starts);
                frame(out, &cursor, msg);
            }
        }
    }

    /// A poll: answered at once (messages after its cursor, or a lost position), else held
    /// (logged in, no buffer) until a message or `--poll-timeout`.
    fn open_poll(&mut self, i: u32, req: &SubRequest, v: Verdicts<'_>, recovered: Option<bool>) {
        let mut messages = Vec::new();
        let mut last = v.starts.clone();
        let lost: Vec<Lost<'_>> = v.lost.clone();
        let mut any = false;
        self.replay(&mut messages, &req.ids, v, |out, cursor, msg| {
            resume::poll_message(out, !any, cursor, msg);
            any = true;
            last.clear();
        });
        if any || !lost.is_empty() {
            let mut cursor = Vec::new();
            if last.is_empty() {
                // Every recovered id was replayed to its current position.
                let store = &self.resume.store;
                last.extend(req.ids.iter().map(|id| store.position(id)));
            }
            write_cursor(&mut cursor, &last);
            let a = self.ensure_aux(i);
            let out = &mut self.aux[a].out;
            resume::poll_answer(out, &self.resume.cors, &cursor, recovered, &lost, &messages);
            self.conns[i].state = State::Finishing;
            return;
        }
        let deadline = self
            .lp
            .now_ms()
            .wrapping_add(self.resume.poll_timeout_ms as u32);
        let c = &mut self.conns[i];
        c.msgs = deadline;
        if recovered.is_some() {
            c.proto |= GAVE_CURSOR;
        }
        self.resume.polls += 1;
    }

    /// The cursor of live connection `i` (every id owned here): each id's current position.
    pub(super) fn live_cursor(&self, i: u32, out: &mut Vec<u8>) {
        let h = self.conns[i].ids;
        let store = &self.resume.store;
        let positions: Vec<Pos> = self
            .router
            .slots_of(&h)
            .iter()
            .map(|&s| store.position(self.router.id_of(s)))
            .collect();
        write_cursor(out, &positions);
    }

    /// Whether connection `i`'s messages need its whole cursor (several ids) rather than
    /// the message's own position.
    pub(super) fn needs_live_cursor(&self, i: u32) -> bool {
        let c = &self.conns[i];
        c.proto & CURSORS != 0 && self.router.slots_of(&c.ids).len() > 1
    }

    /// A held poll was answered or closed.
    pub(super) fn poll_done(&mut self, i: u32) {
        let c = self.conns[i];
        if Proto::from_u8(c.proto) == Proto::Poll && c.state == State::SubStream {
            self.resume.polls = self.resume.polls.saturating_sub(1);
        }
    }

    /// The CORS lines of heads built per connection.
    pub(super) fn cors_lines(&self) -> &[u8] {
        &self.resume.cors
    }

    /// Whether held poll `i` was opened with a cursor.
    pub(super) fn poll_gave_cursor(&self, i: u32) -> bool {
        self.conns[i].proto & GAVE_CURSOR != 0
    }

    /// Once a turn: drops messages past the TTL, answers polls past `--poll-timeout`
    /// (one pass over the slab a second, only while polls are held), and publishes the
    /// history gauges.
    pub(super) fn history_tick(&mut self, now: Instant) {
        if !self.resume.store.enabled() {
            return;
        }
        let ms = self.resume.now_ms();
        self.resume.store.expire(ms);
        let (ids, msgs, bytes, evicted) = self.resume.store.counts();
        let st = &self.stats[self.me];
        use std::sync::atomic::Ordering::Relaxed;
        st.history_ids.store(ids as u64, Relaxed);
        st.history_messages.store(msgs as u64, Relaxed);
        st.history_bytes.store(bytes as u64, Relaxed);
        st.history_evicted.store(evicted, Relaxed);
        if self.resume.polls == 0 || now < self.resume.next_sweep {
            return;
        }
        self.resume.next_sweep = now + Duration::from_millis(250);
        let now_ms = self.lp.now_ms();
        for i in 0..self.conns.slots() as u32 {
            let c = self.conns[i];
            // The deadline has passed (the millisecond clock wraps).
            let due = now_ms.wrapping_sub(c.msgs) < u32::MAX / 2;
            if Proto::from_u8(c.proto) == Proto::Poll && c.state == State::SubStream && due {
                self.answer_poll_timeout(i);
            }
        }
    }

    /// A held poll's time is up: `{"messages":[]...}` with its ids' current positions.
    fn answer_poll_timeout(&mut self, i: u32) {
        self.poll_done(i);
        let mut cursor = Vec::new();
        self.live_cursor(i, &mut cursor);
        let recovered = self.poll_gave_cursor(i).then_some(true);
        let a = self.ensure_aux(i);
        let sending = self.conns[i].flags.contains(Flags::SENDING);
        let out = self.aux[a].queue(sending);
        resume::poll_answer(out, &self.resume.cors, &cursor, recovered, &[], b"");
        self.conns[i].state = State::Finishing;
        self.try_send(i);
    }
}

/// Appends the answer of a held poll (protocol byte `proto_byte`) to its first message,
/// `msg` at `cursor`.
pub(super) fn answer_poll(
    out: &mut Vec<u8>,
    cors: &[u8],
    cursor: &[u8],
    msg: &[u8],
    proto_byte: u8,
) {
    let mut messages = Vec::new();
    resume::poll_message(&mut messages, true, cursor, msg);
    let recovered = (proto_byte & GAVE_CURSOR != 0).then_some(true);
    resume::poll_answer(out, cors, cursor, recovered, &[], &messages);
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
