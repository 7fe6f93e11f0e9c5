//! One publisher of the msggen loop: its record, connect, writing a request, reading answers.

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Poll, Token};

use super::super::answer::parse_answer;
use super::super::check::format_body;
use super::super::proc::now_us;
use super::super::url::UrlTemplate;
use super::{MsggenResult, SendRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GenState {
    Down,
    Connecting,
    Idle,
    /// A request written (or being written); waiting for its answer.
    Busy,
}

/// One generator: a keep-alive connection and its schedule.
pub(super) struct Gen {
    pub(super) stream: Option<TcpStream>,
    pub(super) state: GenState,
    pub(super) next_due: Instant,
    pub(super) left: u64,
    /// The request being written and how much of it is out.
    pub(super) out: Vec<u8>,
    pub(super) out_off: usize,
    /// Answer bytes read so far.
    pub(super) inbuf: Vec<u8>,
    /// Sequence number of the request in flight.
    pub(super) seq: u64,
    /// Its target id and when it was written (CLOCK_MONOTONIC us).
    pub(super) id: u64,
    pub(super) sent_us: u64,
    /// Connects made; bounded so a dead server cannot make us spin.
    pub(super) connects: u32,
}

/// Most connects per generator over a run.
pub(super) const MAX_CONNECTS: u32 = 20;

impl Gen {
    /// A generator with `left` messages to send, the first at `first_due`.
    pub(super) fn new(first_due: Instant, left: u64) -> Gen {
        Gen {
            stream: None,
            state: GenState::Down,
            next_due: first_due,
            left,
            out: Vec::with_capacity(256),
            out_off: 0,
            inbuf: Vec::with_capacity(256),
            seq: 0,
            id: 0,
            sent_us: 0,
            connects: 0,
        }
    }
}

/// Sends message `seq` to `id` on idle generator `i`, timestamped now.
pub(super) fn send(
    res: &mut MsggenResult,
    g: &mut Gen,
    i: usize,
    url: &UrlTemplate,
    id: u64,
    seq: u64,
) {
    g.seq = seq;
    g.id = id;
    g.sent_us = now_us();
    g.left -= 1;
    res.attempted += 1;
    let mut body = Vec::with_capacity(48);
    format_body(&mut body, id, seq, g.sent_us);
    g.out.clear();
    g.out_off = 0;
    url.write_request_start(&mut g.out, "POST", id);
    g.out
        .extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    g.out.extend_from_slice(&body);
    g.state = GenState::Busy;
    if let Err(e) = flush(g) {
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
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    poll.registry()
        .register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)?;
    g.stream = Some(s);
    g.state = GenState::Connecting;
    g.inbuf.clear();
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
    let Some(stream) = g.stream.as_mut() else {
        return;
    };
    if g.state == GenState::Connecting {
        if !writable {
            return;
        }
        match (stream.take_error(), stream.peer_addr()) {
            (Ok(None), Ok(_)) => g.state = GenState::Idle,
            (Ok(None), Err(e)) if e.kind() == io::ErrorKind::NotConnected => return,
            (Ok(Some(e)) | Err(e), _) | (_, Err(e)) => {
                note(res, format!("publisher {i}: connect: {e}"));
                return down(g);
            }
        }
    }
    if g.state == GenState::Busy && writable {
        if let Err(e) = flush(g) {
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
    loop {
        let Some(stream) = g.stream.as_mut() else {
            return;
        };
        match stream.read(&mut piece) {
            Ok(0) if g.state == GenState::Busy => {
                return fail(
                    res,
                    g,
                    format!("publisher {i}: connection closed before the answer"),
                )
            }
            // An idle keep-alive connection closed by the server: reconnect when next needed.
            Ok(0) => return down(g),
            Ok(n) => g.inbuf.extend_from_slice(&piece[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return fail(res, g, format!("publisher {i}: read: {e}")),
        }
    }
    if g.inbuf.is_empty() {
        return;
    }
    if g.state != GenState::Busy {
        return fail(res, g, format!("publisher {i}: answer without a request"));
    }
    let answer = match parse_answer(&g.inbuf) {
        Ok(Some(a)) => a,
        Ok(None) => return,
        Err(e) => return fail(res, g, format!("publisher {i}: {e}")),
    };
    if answer.len != g.inbuf.len() {
        return fail(res, g, format!("publisher {i}: bytes after the answer"));
    }
    g.inbuf.clear();
    if answer.status == 200 {
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
                note(
                    res,
                    format!("publisher {i}: 200 answer without a delivered number"),
                );
            }
        }
        g.state = GenState::Idle;
        if answer.close {
            down(g);
        }
    } else {
        fail(res, g, format!("publisher {i}: status {}", answer.status));
    }
}

/// Writes what is left of generator `g`'s request.
fn flush(g: &mut Gen) -> io::Result<()> {
    let Some(stream) = g.stream.as_mut() else {
        return Err(io::ErrorKind::NotConnected.into());
    };
    while g.out_off < g.out.len() {
        match stream.write(&g.out[g.out_off..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => g.out_off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Counts the request in flight as failed and drops the connection (reconnect comes later).
pub(super) fn fail(res: &mut MsggenResult, g: &mut Gen, why: String) {
    if g.state == GenState::Busy {
        res.failed += 1;
    }
    note(res, why);
    down(g);
}

/// Drops generator `g`'s connection (closing the fd also removes it from epoll).
fn down(g: &mut Gen) {
    g.stream = None;
    g.state = GenState::Down;
    g.inbuf.clear();
}

pub(super) fn note(res: &mut MsggenResult, why: String) {
    if res.notes.len() < 5 {
        res.notes.push(why);
    }
}
