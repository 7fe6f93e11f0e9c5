//! Stage 14 (polls): `GET /poll/<ids>` held like an idle subscriber until its first message
//! answers it (`Shard::deliver`), `--poll-timeout` passes (a sweep every 250 ms while polls
//! are held) or the server stops; then one JSON answer and a close.

use std::time::{Duration, Instant};

use super::Shard;
use crate::conn::{Flags, State};
use crate::driver::Driver;
use crate::http::resume;
use crate::http::stream::Proto;

/// Protocol-byte bit of a held poll whose client gave a cursor (its answer says
/// `Comet-Recovered: true`).
const GAVE_CURSOR: u8 = 0x40;

/// The held polls' count and timer.
pub(super) struct Polls {
    /// Polls held (logged in, not answered yet).
    pub(super) held: usize,
    /// `--poll-timeout`, ms.
    pub(super) timeout_ms: u64,
    /// When the next poll-timeout sweep is due.
    pub(super) next_sweep: Instant,
}

impl Polls {
    /// No poll held; `--poll-timeout` `timeout_ms`.
    pub(super) fn new(timeout_ms: u64) -> Polls {
        Polls {
            held: 0,
            timeout_ms,
            next_sweep: Instant::now(),
        }
    }
}

impl<D: Driver> Shard<D> {
    /// Holds poll `i` (nothing to answer yet) until a message or `--poll-timeout`.
    pub(super) fn hold_poll(&mut self, i: u32, given: bool) {
        let deadline = self
            .lp
            .now_ms()
            .wrapping_add(self.resume.polls.timeout_ms as u32);
        let c = &mut self.conns[i];
        c.msgs = deadline;
        if given {
            c.proto |= GAVE_CURSOR;
        }
        self.resume.polls.held += 1;
    }

    /// A held poll was answered or closed.
    pub(super) fn poll_done(&mut self, i: u32) {
        let c = self.conns[i];
        if Proto::from_u8(c.proto) == Proto::Poll && c.state == State::SubStream {
            self.resume.polls.held = self.resume.polls.held.saturating_sub(1);
        }
    }

    /// Answers the held polls whose `--poll-timeout` has passed (a pass over the slab every
    /// 250 ms, only while polls are held).
    pub(super) fn poll_sweep_if_due(&mut self, now: Instant) {
        let p = &mut self.resume.polls;
        if p.held == 0 || now < p.next_sweep {
            return;
        }
        p.next_sweep = now + Duration::from_millis(250);
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

    /// A held poll's time is up (or the server stops): `{"messages":[]...}` with its ids'
    /// current positions.
    pub(super) fn answer_poll_timeout(&mut self, i: u32) {
        self.poll_done(i);
        let mut cursor = Vec::new();
        self.live_cursor(i, &mut cursor);
        let recovered = (self.conns[i].proto & GAVE_CURSOR != 0).then_some(true);
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
