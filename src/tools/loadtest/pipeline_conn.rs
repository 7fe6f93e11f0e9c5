//! One pipelined publisher connection: connect, keep `depth` requests in flight, read answers
//! in order, and on a close send again whatever the server never read.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Poll, Token};

use super::super::answer::parse_answer;
use super::super::check::format_body;
use super::super::proc::now_us;
use super::Pipe;

/// Consecutive connections without a single answer before a publisher gives up.
const MAX_FAILED_CONNECTS: u32 = 20;

/// One publisher connection and the requests it has in flight.
#[derive(Default)]
pub(super) struct Publisher {
    pub(super) stream: Option<TcpStream>,
    connecting: bool,
    /// (seq, id) of the requests written and not yet answered, oldest first.
    pub(super) in_flight: VecDeque<(u64, u64)>,
    /// Requests not yet fully written, from `out_off` on.
    out: Vec<u8>,
    out_off: usize,
    /// Answer bytes not yet parsed.
    inbuf: Vec<u8>,
    /// The server said `Connection: close`: write nothing more on this connection.
    closing: bool,
    /// Answers on the current connection.
    answered: u64,
    /// Consecutive connections that ended without an answer.
    failures: u32,
}

impl Publisher {
    /// False once connections keep failing (a dead server must not make us spin).
    pub(super) fn may_connect(&self) -> bool {
        self.failures < MAX_FAILED_CONNECTS
    }
}

impl Pipe {
    /// Starts publisher `i`'s non-blocking connect.
    pub(super) fn connect(&mut self, poll: &Poll, c: &mut Publisher, i: usize) -> io::Result<()> {
        self.res.connects += 1;
        let mut s = TcpStream::connect(self.cfg.url.addr).inspect_err(|_| c.failures += 1)?;
        s.set_nodelay(true)?;
        poll.registry()
            .register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)?;
        *c = Publisher {
            stream: Some(s),
            connecting: true,
            failures: c.failures,
            ..Publisher::default()
        };
        Ok(())
    }

    /// Handles readiness of publisher `i`: connect completion, answers, then more requests.
    pub(super) fn on_event(&mut self, c: &mut Publisher, i: usize, writable: bool, readable: bool) {
        let Some(stream) = c.stream.as_mut() else {
            return;
        };
        if c.connecting {
            if !writable {
                return;
            }
            match (stream.take_error(), stream.peer_addr()) {
                (Ok(None), Ok(_)) => c.connecting = false,
                (Ok(None), Err(e)) if e.kind() == io::ErrorKind::NotConnected => return,
                (Ok(Some(e)) | Err(e), _) | (_, Err(e)) => {
                    return self.drop_conn(c, format!("publisher {i}: connect: {e}"));
                }
            }
        }
        if readable {
            self.read_answers(c, i);
        }
        if c.stream.is_some() {
            self.fill(c);
            if let Err(e) = flush(c) {
                self.drop_conn(c, format!("publisher {i}: write: {e}"));
            }
        }
    }

    /// Queues requests until `depth` are in flight (or nothing is left to send).
    fn fill(&mut self, c: &mut Publisher) {
        if c.out_off == c.out.len() {
            c.out.clear();
            c.out_off = 0;
        }
        let now = Instant::now();
        while !c.closing && c.in_flight.len() < self.cfg.depth && now < self.cfg.send_until {
            let from_retry = !self.retry.is_empty();
            let Some((seq, id)) = self.next_message() else {
                break;
            };
            if from_retry {
                self.res.resent += 1;
            } else {
                self.res.attempted += 1;
            }
            self.req.clear();
            format_body(&mut self.req, id, seq, now_us());
            self.cfg.url.write_request_start(&mut c.out, "POST", id);
            let len = format!("Content-Length: {}\r\n\r\n", self.req.len());
            c.out.extend_from_slice(len.as_bytes());
            c.out.extend_from_slice(&self.req);
            c.in_flight.push_back((seq, id));
            self.last_send = Some(now);
        }
    }

    /// Reads publisher `i` until it would block and settles every complete answer.
    fn read_answers(&mut self, c: &mut Publisher, i: usize) {
        let mut piece = [0u8; 16 * 1024];
        let eof = loop {
            let Some(stream) = c.stream.as_mut() else {
                return;
            };
            match stream.read(&mut piece) {
                Ok(0) => break true,
                Ok(n) => c.inbuf.extend_from_slice(&piece[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.drop_conn(c, format!("publisher {i}: read: {e}")),
            }
        };
        let mut off = 0;
        while off < c.inbuf.len() {
            let answer = match parse_answer(&c.inbuf[off..]) {
                Ok(Some(a)) => a,
                Ok(None) => break,
                Err(e) => return self.drop_conn(c, format!("publisher {i}: {e}")),
            };
            off += answer.len;
            let Some((seq, _)) = c.in_flight.pop_front() else {
                return self.drop_conn(c, format!("publisher {i}: answer without a request"));
            };
            c.answered += 1;
            let accepted = if self.cfg.any_2xx {
                (200..300).contains(&answer.status)
            } else {
                answer.status == 200 && answer.delivered.is_some()
            };
            if accepted {
                self.res.ok += 1;
                self.res.ok_seqs.insert(seq);
                self.res.delivered_sum += answer.delivered.unwrap_or(0);
            } else {
                self.res.failed += 1;
                let why = format!("publisher {i}: answer {} for seq {seq}", answer.status);
                self.note(why);
            }
            if answer.close {
                c.closing = true;
            }
        }
        c.inbuf.drain(..off);
        if eof || (c.closing && c.in_flight.is_empty()) {
            let why = format!("publisher {i}: connection closed with requests unanswered");
            self.drop_conn(c, why);
        }
    }

    /// Ends publisher `c`'s connection. Requests in flight are sent again if the server had
    /// announced the close (it never read them), else they count as failed.
    fn drop_conn(&mut self, c: &mut Publisher, why: String) {
        if c.closing {
            self.retry.extend(c.in_flight.drain(..));
        } else if !c.in_flight.is_empty() {
            self.res.failed += c.in_flight.len() as u64;
            c.in_flight.clear();
            self.note(why);
        }
        c.failures = if c.answered > 0 { 0 } else { c.failures + 1 };
        c.stream = None;
        c.connecting = false;
    }
}

/// Writes what is queued on `c` until the socket would block.
fn flush(c: &mut Publisher) -> io::Result<()> {
    let Some(stream) = c.stream.as_mut() else {
        return Ok(());
    };
    while c.out_off < c.out.len() {
        match stream.write(&c.out[c.out_off..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => c.out_off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
