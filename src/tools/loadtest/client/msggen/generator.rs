//! One generator of msggen: its schedule and keep-alive connection ([`PubConn`]), sending one
//! message and settling its one answer at a time.

use std::io;
use std::time::Instant;

use mio::{Poll, Token};

use super::{MsggenResult, SendRecord};
use crate::tools::loadtest::client::publish::PubConn;
use crate::tools::loadtest::host::proc::now_us;
use crate::tools::loadtest::wire::answer::parse_answer;
use crate::tools::loadtest::wire::url::UrlTemplate;

/// Where a generator stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GenState {
    /// No connection (not yet made, or lost): connect when a message is due.
    Down,
    Connecting,
    Idle,
    /// A request written (or being written); waiting for its answer.
    Busy,
}

/// One generator: a keep-alive connection and its schedule.
pub(super) struct Gen {
    conn: PubConn,
    pub(super) state: GenState,
    pub(super) next_due: Instant,
    pub(super) left: u64,
    /// Sequence number of the request in flight.
    seq: u64,
    /// Its target id and when it was written (CLOCK_MONOTONIC us).
    id: u64,
    sent_us: u64,
    /// Connects made; bounded so a dead server cannot make us spin.
    pub(super) connects: u32,
}

/// Most connects per generator over a run.
pub(super) const MAX_CONNECTS: u32 = 20;

impl Gen {
    /// A generator with `left` messages to send, the first at `first_due`.
    pub(super) fn new(first_due: Instant, left: u64) -> Gen {
        Gen {
            conn: PubConn::with_capacity(256),
            state: GenState::Down,
            next_due: first_due,
            left,
            seq: 0,
            id: 0,
            sent_us: 0,
            connects: 0,
        }
    }

    /// Closes the connection (messages never sent are neither sent nor failed).
    pub(super) fn close(&mut self) {
        self.conn.close();
    }
}

/// Sends message `seq` to `id` on idle generator `i`, timestamped now, its body padded to
/// `pad_to` bytes (0: not padded).
pub(super) fn send(
    res: &mut MsggenResult,
    g: &mut Gen,
    i: usize,
    url: &UrlTemplate,
    (id, seq): (u64, u64),
    pad_to: usize,
) {
    g.seq = seq;
    g.id = id;
    g.sent_us = now_us();
    g.left -= 1;
    res.attempted += 1;
    let mut body = Vec::with_capacity(48.max(pad_to));
    g.conn.clear_written();
    g.conn
        .queue_post_padded(url, (id, seq, g.sent_us), pad_to, &mut body);
    g.state = GenState::Busy;
    if let Err(e) = g.conn.flush() {
        fail(res, g, format!("publisher {i}: write: {e}"));
    }
}

/// Starts generator `i`'s non-blocking connect to `addr`.
pub(super) fn connect(
    poll: &Poll,
    addr: std::net::SocketAddr,
    g: &mut Gen,
    i: usize,
) -> io::Result<()> {
    g.conn.connect(poll.registry(), addr, Token(i))?;
    g.state = GenState::Connecting;
    Ok(())
}

/// Handles readiness of generator `i`.
pub(super) fn on_event(
    res: &mut MsggenResult,
    g: &mut Gen,
    i: usize,
    writable: bool,
    readable: bool,
) {
    if !g.conn.is_open() {
        return;
    }
    if g.state == GenState::Connecting {
        if !writable {
            return;
        }
        match g.conn.connect_done() {
            Ok(true) => g.state = GenState::Idle,
            Ok(false) => return,
            Err(e) => {
                note(res, format!("publisher {i}: connect: {e}"));
                return down(g);
            }
        }
    }
    if g.state == GenState::Busy && writable {
        if let Err(e) = g.conn.flush() {
            return fail(res, g, format!("publisher {i}: write: {e}"));
        }
    }
    if readable {
        read_answers(res, g, i);
    }
}

/// Reads generator `i` until it would block and settles a complete answer.
fn read_answers(res: &mut MsggenResult, g: &mut Gen, i: usize) {
    let mut piece = [0u8; 4096];
    match g.conn.read_in(&mut piece) {
        Ok(true) if g.state == GenState::Busy => {
            let why = format!("publisher {i}: connection closed before the answer");
            return fail(res, g, why);
        }
        // An idle keep-alive connection closed by the server: reconnect when next needed.
        Ok(true) => return down(g),
        Ok(false) => {}
        Err(e) => return fail(res, g, format!("publisher {i}: read: {e}")),
    }
    if g.conn.inbuf.is_empty() {
        return;
    }
    if g.state != GenState::Busy {
        return fail(res, g, format!("publisher {i}: answer without a request"));
    }
    let answer = match parse_answer(&g.conn.inbuf) {
        Ok(Some(a)) => a,
        Ok(None) => return,
        Err(e) => return fail(res, g, format!("publisher {i}: {e}")),
    };
    if answer.len != g.conn.inbuf.len() {
        return fail(res, g, format!("publisher {i}: bytes after the answer"));
    }
    g.conn.inbuf.clear();
    if answer.status != 200 {
        return fail(res, g, format!("publisher {i}: status {}", answer.status));
    }
    res.ok += 1;
    res.ok_seqs.insert(g.seq);
    if res.record_sends {
        res.sends.push(SendRecord {
            seq: g.seq,
            id: g.id,
            sent_us: g.sent_us,
            answered_us: now_us(),
        });
    }
    match answer.delivered {
        Some(d) => res.delivered_sum += d,
        None => {
            res.bad_answers += 1;
            let why = format!("publisher {i}: 200 answer without a delivered number");
            note(res, why);
        }
    }
    g.state = GenState::Idle;
    if answer.close {
        down(g);
    }
}

/// Counts the request in flight as failed and drops the connection (reconnect comes later).
pub(super) fn fail(res: &mut MsggenResult, g: &mut Gen, why: String) {
    if g.state == GenState::Busy {
        res.failed += 1;
    }
    note(res, why);
    down(g);
}

/// Drops generator `g`'s connection.
fn down(g: &mut Gen) {
    g.conn.close();
    g.state = GenState::Down;
}

/// Keeps one of the first few errors.
pub(super) fn note(res: &mut MsggenResult, why: String) {
    if res.notes.len() < 5 {
        res.notes.push(why);
    }
}
