//! Pipelined publishers for `loadtest compare`: `conns` keep-alive connections, each keeping
//! up to `depth` `POST`s in flight, on one thread with one mio loop. Used to send one message
//! to every id (ids in order) and to saturate a server (random ids, as fast as it answers).
//!
//! Answers come back in request order (HTTP/1.1 pipelining), so each connection keeps a FIFO
//! of the (seq, id) pairs it has in flight. A server may close a keep-alive connection after a
//! number of requests (nginx's `keepalive_requests`, 1000 by default), announced by
//! `Connection: close` on the last answer: requests behind it were never read, so they are
//! sent again on a new connection rather than counted as failed. The connection itself is
//! the [`PubConn`](super::publish::PubConn) msggen's generators use.
//!
//! - `conn`: one pipelined publisher: fill to `depth`, read answers in order, resend.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use mio::{Events, Poll};

mod conn;

use super::msggen::XorShift;
use crate::tools::loadtest::wire::check::Bitmap;
use crate::tools::loadtest::wire::url::UrlTemplate;

/// Which id each message goes to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum IdPlan {
    /// Message `first_seq + k` goes to id `first_id + k % count`.
    InOrder {
        /// The first id.
        first_id: u64,
        /// How many ids.
        count: u64,
    },
    /// Uniformly random ids in 1..=max_id (xorshift64*, seeded).
    Random {
        /// The largest id.
        max_id: u64,
        /// PRNG seed.
        seed: u64,
    },
}

/// What a pipelined run does.
#[derive(Debug, Clone)]
pub(crate) struct PipeConfig {
    /// Where to `POST` (`{id}` is the target id).
    pub(crate) url: UrlTemplate,
    /// Publisher connections.
    pub(crate) conns: usize,
    /// Most requests in flight per connection.
    pub(crate) depth: usize,
    /// Target ids.
    pub(crate) ids: IdPlan,
    /// Sequence number of the first message.
    pub(crate) first_seq: u64,
    /// Most messages to send (`None`: until `send_until`).
    pub(crate) total: Option<u64>,
    /// No new request is written after this instant.
    pub(crate) send_until: Instant,
    /// How long after `send_until` (or the last message) to wait for answers.
    pub(crate) tail: Duration,
    /// Accept any 2xx answer (other servers); else only `200` with a `delivered` number.
    pub any_2xx: bool,
}

/// Counters other threads may read, and the stop flag the loop obeys.
#[derive(Debug, Default)]
pub(crate) struct PipeShared {
    /// Set by another thread to end the loop at once.
    pub(crate) stop: AtomicBool,
}

/// What a pipelined run did.
#[derive(Debug, Default)]
pub(crate) struct PipeResult {
    /// Requests written (a request sent again after a close counts once).
    pub(crate) attempted: u64,
    /// Answered as accepted.
    pub(crate) ok: u64,
    /// Not accepted: other status, connection lost, or no answer in time.
    pub(crate) failed: u64,
    /// Sum of `delivered` over the accepted answers that have one.
    pub(crate) delivered_sum: u64,
    /// Sequence numbers accepted.
    pub(crate) ok_seqs: Bitmap,
    /// Requests sent again because the server closed the connection before reading them.
    pub(crate) resent: u64,
    /// Connections made.
    pub(crate) connects: u64,
    /// From the start to the end of the loop.
    pub(crate) elapsed: Duration,
    /// The first few errors, described.
    pub(crate) notes: Vec<String>,
}

/// Runs the publishers on this thread until everything is answered, the deadline passes, or
/// `shared.stop` is set. Requests still unanswered then count as failed.
pub(crate) fn run(cfg: PipeConfig, shared: Arc<PipeShared>) -> Result<PipeResult> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(256);
    let mut p = Pipe {
        rng: XorShift::new(match cfg.ids {
            IdPlan::Random { seed, .. } => seed,
            IdPlan::InOrder { .. } => 1,
        }),
        next_seq: cfg.first_seq,
        retry: VecDeque::new(),
        res: PipeResult::default(),
        req: Vec::with_capacity(256),
        last_send: None,
        cfg,
    };
    let start = Instant::now();
    let mut conns: Vec<conn::Publisher> = (0..p.cfg.conns.max(1))
        .map(|_| conn::Publisher::default())
        .collect();
    loop {
        let now = Instant::now();
        let sending = now < p.cfg.send_until && p.more_to_send();
        let busy = conns.iter().any(|c| !c.in_flight.is_empty());
        let end = p
            .cfg
            .send_until
            .min(p.last_send.unwrap_or(p.cfg.send_until))
            + p.cfg.tail;
        if (!sending && !busy) || now >= end || shared.stop.load(Relaxed) {
            break;
        }
        for (i, c) in conns.iter_mut().enumerate() {
            if sending && !c.conn.is_open() && c.may_connect() {
                if let Err(e) = p.connect(&poll, c, i) {
                    p.note(format!("publisher {i}: connect: {e}"));
                }
            }
        }
        let timeout = end
            .saturating_duration_since(now)
            .min(Duration::from_millis(20));
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let failed = ev.is_error() || ev.is_read_closed();
            let (w, r) = (ev.is_writable() || failed, ev.is_readable() || failed);
            if let Some(c) = conns.get_mut(i) {
                p.on_event(c, i, w, r);
            }
        }
    }
    for c in conns.iter_mut() {
        p.res.failed += c.in_flight.len() as u64;
        c.in_flight.clear();
        c.conn.close();
    }
    p.res.elapsed = start.elapsed();
    Ok(p.res)
}

/// The loop's state apart from the connections.
struct Pipe {
    cfg: PipeConfig,
    rng: XorShift,
    next_seq: u64,
    /// (seq, id) pairs to send again (never read by the server before it closed).
    retry: VecDeque<(u64, u64)>,
    res: PipeResult,
    /// Scratch space for a request.
    req: Vec<u8>,
    last_send: Option<Instant>,
}

impl Pipe {
    /// True while there are messages left to send.
    fn more_to_send(&self) -> bool {
        !self.retry.is_empty()
            || self
                .cfg
                .total
                .is_none_or(|t| self.next_seq - self.cfg.first_seq < t)
    }

    /// The next (seq, id) to send, if any.
    fn next_message(&mut self) -> Option<(u64, u64)> {
        if let Some(m) = self.retry.pop_front() {
            return Some(m);
        }
        if !self.more_to_send() {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let id = match self.cfg.ids {
            IdPlan::InOrder { first_id, count } => {
                first_id + (seq - self.cfg.first_seq) % count.max(1)
            }
            IdPlan::Random { max_id, .. } => 1 + self.rng.next_u64() % max_id.max(1),
        };
        Some((seq, id))
    }

    fn note(&mut self, why: String) {
        if self.res.notes.len() < 5 {
            self.res.notes.push(why);
        }
    }
}
