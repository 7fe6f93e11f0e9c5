//! One pipelined publisher: a [`PubConn`] keeping `depth` requests in flight, answers read
//! in order, and on a close whatever the server never read sent again.

use std::collections::VecDeque;
use std::io;
use std::time::Instant;

use mio::{Poll, Token};

use super::Pipe;
use crate::tools::loadtest::client::publish::PubConn;
use crate::tools::loadtest::proc::now_us;
use crate::tools::loadtest::wire::answer::parse_answer;

/// Consecutive connections without a single answer before a publisher gives up.
const MAX_FAILED_CONNECTS: u32 = 20;

/// One publisher connection and the requests it has in flight.
#[derive(Default)]
pub(super) struct Publisher {
    pub(super) conn: PubConn,
    connecting: bool,
    /// (seq, id) of the requests written and not yet answered, oldest first.
    pub(super) in_flight: VecDeque<(u64, u64)>,
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
        *c = Publisher {
            failures: c.failures,
            ..Publisher::default()
        };
        let r = c.conn.connect(poll.registry(), self.cfg.url.addr, Token(i));
        r.inspect_err(|_| c.failures += 1)?;
        c.connecting = true;
        Ok(())
    }

    /// Handles readiness of publisher `i`: connect completion, answers, then more requests.
    pub(super) fn on_event(&mut self, c: &mut Publisher, i: usize, writable: bool, readable: bool) {
        if !c.conn.is_open() {
            return;
        }
        if c.connecting {
            if !writable {
                return;
            }
            match c.conn.connect_done() {
                Ok(true) => c.connecting = false,
                Ok(false) => return,
                Err(e) => return self.drop_conn(c, format!("publisher {i}: connect: {e}")),
            }
        }
        if readable {
            self.read_answers(c, i);
        }
        if c.conn.is_open() {
            self.fill(c);
            if let Err(e) = c.conn.flush() {
                self.drop_conn(c, format!("publisher {i}: write: {e}"));
            }
        }
    }

    /// Queues requests until `depth` are in flight (or nothing is left to send).
    fn fill(&mut self, c: &mut Publisher) {
        c.conn.clear_written();
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
            c.conn
                .queue_post(&self.cfg.url, id, seq, now_us(), &mut self.req);
            c.in_flight.push_back((seq, id));
            self.last_send = Some(now);
        }
    }

    /// Reads publisher `i` until it would block and settles every complete answer.
    fn read_answers(&mut self, c: &mut Publisher, i: usize) {
        let mut piece = [0u8; 16 * 1024];
        let eof = match c.conn.read_in(&mut piece) {
            Ok(eof) => eof,
            Err(e) => return self.drop_conn(c, format!("publisher {i}: read: {e}")),
        };
        let mut off = 0;
        while off < c.conn.inbuf.len() {
            let answer = match parse_answer(&c.conn.inbuf[off..]) {
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
        c.conn.inbuf.drain(..off);
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
        c.conn.close();
        c.connecting = false;
    }
}
