//! Stage 6, output: the buffers of connections doing I/O (`Aux`, pooled), the one send in
//! flight per connection, coalescing (output queued behind a send goes to `next` and out in
//! one send when it completes), backpressure on subscribers that stop reading, message
//! delivery in each stream's protocol, and the heartbeat sweep.

use std::time::{Duration, Instant};

use super::completion::{token, OP_SEND};
use super::frames::Frames;
use super::resume::write_message;
use super::Shard;
use crate::conn::{Aux, Flags, Marks, Slab, State, NONE};
use crate::driver::Driver;
use crate::friends::FriendEvent;
use crate::history::Pos;
use crate::http::stream::{self, Proto, CURSORS};
use crate::stats::ShardStats;

/// How long a send may stay in flight before the output queued behind it counts against
/// `--max-pending-bytes`, ms: longer than a zero-window probe's first retry (200 ms), so a
/// reader whose window looked shut for a moment is not taken for a stalled one.
const STALL_GRACE_MS: u32 = 500;

/// Backlog, in multiples of `--max-pending-bytes`, that drops a subscriber at once, stalled
/// or not: the hard bound on what one subscriber's output may hold.
const HARD_FACTOR: usize = 64;

/// Most pooled `Aux` buffers kept per shard.
const AUX_POOL: usize = 64;
/// Buffers larger than this are freed rather than pooled, bytes.
const POOL_KEEP: usize = 2 * 1024;

/// The `Aux` table (indexed by a record's `aux`), its pool, and the heartbeat timer.
pub(super) struct Output {
    /// Buffers attached to connections doing I/O.
    aux: Slab<Aux>,
    /// Cleared buffers kept for reuse.
    pool: Vec<Aux>,
    /// Scratch copy of one id's connection list during a fan-out.
    fanout: Vec<u32>,
    /// When the next heartbeat sweep is due (None: heartbeats off).
    next_beat: Option<Instant>,
    /// `--heartbeat`, seconds.
    beat_s: u64,
}

impl Output {
    /// An empty table; heartbeats every `beat_s` seconds (0: off).
    pub(super) fn new(beat_s: u64) -> Output {
        Output {
            aux: Slab::with_capacity(1024),
            pool: Vec::new(),
            fanout: Vec::new(),
            next_beat: (beat_s > 0).then(|| Instant::now() + Duration::from_secs(beat_s)),
            beat_s,
        }
    }

    /// A buffer from the pool (or a new one), attached under the returned index.
    pub(super) fn take(&mut self) -> u32 {
        let aux = self.pool.pop().unwrap_or_default();
        self.aux.insert(aux)
    }

    /// Detaches buffer `a` and pools it (cleared; large buffers freed) if the pool has room.
    fn release(&mut self, a: u32) {
        let mut aux = std::mem::take(&mut self.aux[a]);
        self.aux.remove(a);
        if self.pool.len() < AUX_POOL {
            for v in [&mut aux.inbuf, &mut aux.out, &mut aux.next] {
                v.clear();
                if v.capacity() > POOL_KEEP {
                    *v = Vec::new();
                }
            }
            aux.sent = 0;
            aux.replies.clear();
            aux.lat = Default::default();
            aux.chunked = Default::default();
            aux.ws = Default::default();
            self.pool.push(aux);
        }
    }

    /// Once no buffer is in use: the table grows to the peak of connections doing I/O at
    /// once (a burst of WebSocket handshakes, each answer held until sent); let it and the
    /// pool go, so a burst leaves nothing resident behind it. Returns whether it did.
    pub(super) fn shrink_if_idle(&mut self) -> bool {
        if self.aux.is_empty() && self.aux.slots() > AUX_POOL {
            self.aux = Slab::with_capacity(AUX_POOL);
            return true;
        }
        false
    }

    /// Empties the pool (before `malloc_trim`).
    pub(super) fn clear_pool(&mut self) {
        self.pool.clear();
    }
}

impl std::ops::Index<u32> for Output {
    type Output = Aux;
    #[inline]
    fn index(&self, a: u32) -> &Aux {
        &self.aux[a]
    }
}

impl std::ops::IndexMut<u32> for Output {
    #[inline]
    fn index_mut(&mut self, a: u32) -> &mut Aux {
        &mut self.aux[a]
    }
}

/// A message to queue on a subscriber stream.
#[derive(Clone, Copy)]
pub(super) enum Ev<'a> {
    /// `POST /send/<id>`: the body as published and its position in the id's history
    /// (zero with history off); a stream that carries cursors writes it as one.
    Plain {
        /// The body.
        msg: &'a [u8],
        /// `<epoch>-<offset>` of this message.
        pos: Pos,
        /// When its publish was parsed (ms, the process-wide turn clock: `Shard::now_ms`),
        /// for `uring_comet_publish_to_send_seconds`.
        at: u32,
    },
    /// `POST /publish/<user>`: an event from a friend.
    Friend(&'a FriendEvent),
}

impl<D: Driver> Shard<D> {
    /// Connection `i`'s buffers, attached now if it has none.
    pub(super) fn ensure_aux(&mut self, i: u32) -> u32 {
        if self.conns[i].aux == NONE {
            let a = self.aux.take();
            // A send already in flight (a head, or output sent without an Aux) is dated now.
            self.aux[a].batch_ms = self.lp.now_ms();
            self.conns[i].aux = a;
        }
        self.conns[i].aux
    }

    /// Detaches connection `i`'s buffers, if any (no op may be using them).
    pub(super) fn release_aux(&mut self, i: u32) {
        let a = std::mem::replace(&mut self.conns[i].aux, NONE);
        if a != NONE {
            self.frame_done(a); // a frame left by a send cancelled at close
            self.aux.release(a);
        }
    }

    /// Sends what is queued if nothing is in flight and the connection may write: first
    /// the static response head, then `Aux::out`.
    pub(super) fn try_send(&mut self, i: u32) {
        let c = self.conns[i];
        if c.flags.contains(Flags::SENDING) || c.state == State::SubJoining {
            return;
        }
        if c.flags.contains(Flags::HEAD_PENDING) {
            let head = self.heads.head_of(&c);
            // SAFETY: the head table lives, unchanged, as long as the shard.
            unsafe {
                self.driver
                    .send(c.fd, head.as_ptr(), head.len() as u32, token(OP_SEND, i))
            };
            let c = &mut self.conns[i];
            c.flags.insert(Flags::SENDING);
            c.ops += 1;
            return;
        }
        if c.aux == NONE {
            return self.send_idle(i);
        }
        let aux = &mut self.aux[c.aux];
        if aux.sent == aux.out.len() {
            aux.out.clear();
            aux.sent = 0;
            std::mem::swap(&mut aux.out, &mut aux.next);
        }
        if aux.out.is_empty() {
            return self.send_idle(i);
        }
        if aux.sent == 0 {
            aux.batch_ms = self.lp.now_ms();
        }
        let rest = &aux.out[aux.sent..];
        // SAFETY: `out` is neither touched nor freed while SENDING is set (new output goes
        // to `next`, and the Aux is released only when idle).
        unsafe {
            self.driver.send(
                c.fd,
                rest.as_ptr(),
                rest.len().min(u32::MAX as usize) as u32,
                token(OP_SEND, i),
            )
        };
        let c = &mut self.conns[i];
        c.flags.insert(Flags::SENDING);
        c.ops += 1;
    }

    /// Nothing left to send.
    fn send_idle(&mut self, i: u32) {
        let c = self.conns[i];
        match c.state {
            State::Finishing => self.end_final(i),
            // Idle again: give the buffers back unless a WebSocket frame is half read.
            State::SubStream
                if !c.flags.contains(Flags::RECVING)
                    && (c.aux == NONE
                        || (self.aux[c.aux].inbuf.is_empty()
                            && !self.aux[c.aux].ws.in_message())) =>
            {
                self.release_aux(i)
            }
            State::Pub
                if c.flags.contains(Flags::CLOSE_AFTER) && self.aux[c.aux].replies.is_empty() =>
            {
                self.close(i)
            }
            _ => {}
        }
    }

    /// A send of connection `i` completed: `res` bytes taken, or `-errno`.
    pub(super) fn on_send(&mut self, i: u32, res: i32) {
        self.conns[i].flags.remove(Flags::SENDING);
        if res < 0 {
            return self.close_on_error(i, res);
        }
        self.count_sent(i, res as usize);
        let c = self.conns[i];
        if c.flags.contains(Flags::HEAD_PENDING) {
            self.conns[i].flags.remove(Flags::HEAD_PENDING);
            if (res as usize) < self.heads.head_of(&c).len() {
                // Short send of the head: what is left goes in front of any queued output.
                let mut out = self.heads.head_of(&c)[res as usize..].to_vec();
                let a = self.ensure_aux(i);
                let aux = &mut self.aux[a];
                out.extend_from_slice(&aux.out[aux.sent..]);
                out.extend_from_slice(&aux.next);
                aux.next.clear();
                aux.out = out;
                aux.sent = 0;
            }
            self.free_ws_head(i);
            return self.try_send(i);
        }
        self.aux[c.aux].sent += res as usize;
        self.try_send(i);
        if self.conns[i].state == State::Pub {
            self.read_more(i);
        }
    }

    /// Queues message `ev` on subscriber `i` in its protocol; returns whether it was
    /// queued (not: the connection is not streaming, is too slow, or its protocol has no
    /// bytes for an empty message).
    pub(super) fn deliver(&mut self, i: u32, ev: Ev<'_>) -> bool {
        let c = self.conns[i];
        if !matches!(c.state, State::SubStream | State::SubJoining) || c.marks.contains(Marks::CUT)
        {
            return false;
        }
        let (cursor, poll) = match ev {
            Ev::Plain { pos, .. } if c.proto & CURSORS != 0 => self.cursor_context(i, pos),
            _ => (Vec::new(), None),
        };
        let a = self.ensure_aux(i);
        let now_ms = self.lp.now_ms();
        let c = &mut self.conns[i];
        let aux = &mut self.aux[a];
        // Backpressure: output queued behind a send in flight is backlog. One message may
        // always wait (however large). A backlog beyond `--max-pending-bytes` drops the
        // subscriber once that send has been stuck for STALL_GRACE_MS (the socket is full:
        // it is not reading), and at once beyond HARD_FACTOR times the bound, so its output
        // never grows without bound nor delays anyone else. A reader that keeps reading is
        // not dropped for a burst: a send completes as soon as the kernel takes it, and a
        // window that looks shut for a moment (a delayed ACK or window update, up to a
        // zero-window probe interval) is not a stalled reader.
        let sending = c.flags.contains(Flags::SENDING);
        let backlog = if sending { aux.next.len() } else { 0 };
        let stalled = now_ms.wrapping_sub(aux.batch_ms) >= STALL_GRACE_MS;
        let buf = aux.queue(sending);
        let (proto, chunked, n) = (
            Proto::from_u8(c.proto),
            c.flags.contains(Flags::CHUNKED),
            c.msgs.wrapping_add(1),
        );
        let queued = match ev {
            Ev::Plain { msg, .. } if c.proto & CURSORS != 0 => {
                if let Some(cors) = &poll {
                    super::poll::answer_poll(buf, cors, &cursor, msg, c.proto);
                    c.state = State::Finishing;
                    true
                } else {
                    write_message(buf, proto, chunked, true, &cursor, msg)
                }
            }
            Ev::Plain { msg, .. } => stream::message(buf, proto, chunked, n, msg),
            Ev::Friend(e) => {
                stream::friend_message(buf, proto, chunked, n, e);
                true
            }
        };
        self.resume.put_cursor(cursor);
        if !queued {
            self.try_send(i); // releases an Aux taken for nothing
            return false;
        }
        let bound = self.cfg.max_pending_bytes;
        if backlog > 0
            && aux.next.len() > bound
            && (stalled || aux.next.len() > bound.saturating_mul(HARD_FACTOR))
        {
            self.cut_clean(i);
            return false;
        }
        let at = if let Ev::Plain { at, .. } = ev {
            at
        } else {
            now_ms
        };
        aux.lat.queued(sending, now_ms, at);
        if !c.marks.contains(Marks::WS_HEAD) {
            c.msgs = c.msgs.wrapping_add(1);
        }
        c.marks.insert(Marks::ACTIVE);
        self.try_send(i);
        true
    }

    /// Queues `ev` on every local connection under the id in router slot `s`; returns how
    /// many.
    pub(super) fn deliver_slot(&mut self, s: u32, ev: Ev<'_>) -> u32 {
        let mut fanout = std::mem::take(&mut self.aux.fanout);
        fanout.clear();
        fanout.extend_from_slice(self.router.subscribers(s));
        let (mut n, mut frames) = (0, Frames::default());
        for &c in &fanout {
            // A connection starting a resume keeps (or skips) it.
            if let Some(kept) = self.resume_filter(c, s, ev) {
                n += kept;
                continue;
            }
            n += u32::from(self.deliver_fan(c, ev, &mut frames));
        }
        self.aux.fanout = fanout;
        ShardStats::add(&self.st().delivered, u64::from(n));
        n
    }

    /// One less wait for every local connection under router slot `s` (an owner's
    /// `JoinAck`); a head waiting for nothing more goes out.
    pub(super) fn release_joined(&mut self, s: u32) {
        let mut fanout = std::mem::take(&mut self.aux.fanout);
        fanout.clear();
        fanout.extend_from_slice(self.router.subscribers(s));
        for &c in &fanout {
            self.release_wait(c);
        }
        self.aux.fanout = fanout;
    }

    /// Runs the heartbeat sweep if it is due at `now`.
    pub(super) fn heartbeat_if_due(&mut self, now: Instant) {
        if let Some(at) = self.aux.next_beat {
            if now >= at {
                self.aux.next_beat = Some(now + Duration::from_secs(self.aux.beat_s));
                self.heartbeat_sweep();
            }
        }
    }

    /// Every `--heartbeat` seconds: a heartbeat on each stream that was quiet since the
    /// last sweep (not counted as a message). One pass over the slab per interval.
    fn heartbeat_sweep(&mut self) {
        for i in 0..self.conns.slots() as u32 {
            let c = self.conns[i];
            self.conns[i].marks.remove(Marks::ACTIVE);
            if c.state != State::SubStream || c.marks.contains(Marks::ACTIVE) {
                continue;
            }
            let a = self.ensure_aux(i);
            let sending = c.flags.contains(Flags::SENDING);
            let buf = self.aux[a].queue(sending);
            stream::heartbeat(
                buf,
                Proto::from_u8(c.proto),
                c.flags.contains(Flags::CHUNKED),
            );
            self.try_send(i);
        }
    }
}
