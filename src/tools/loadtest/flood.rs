//! The subscriber side (the seed's floodtest): opens one `GET` stream per id at a steady rate
//! and checks every chunk, all on one thread with one mio (epoll) loop.
//!
//! Lean by design, for a million connections: each connection is a ~32-byte [`Sub`] in one
//! slab indexed by token; reads go to one shared buffer; a per-connection buffer exists only
//! while a head or chunk is split across reads. Connects are non-blocking and at most
//! `max_connecting` are in flight (connect sent, `200` head not yet read), so the server's
//! listen queue cannot overflow.

use std::io::{self, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use mio::{Events, Poll};

use super::check::Checker;
use super::framing::Framing;
use super::url::UrlTemplate;
use conn::Sub;
pub(super) use conn::{connect_from, watch_connect};

/// Connections per source address before the source is spread over 127.0.0.0/8. The
/// ephemeral range holds about 28,000 ports, but connect() tries the even half first, and
/// once one (source, destination) pair holds ~14,000 every further connect scans it (seen
/// as connects falling from thousands to hundreds a second); so well under that.
const CONNS_PER_SOURCE: u64 = 12_000;

/// What a flood run does.
pub struct FloodConfig {
    /// Where and what to `GET`.
    pub url: UrlTemplate,
    /// First subscriber id; connection `i` subscribes to `first_id + i`.
    pub first_id: u64,
    /// Number of connections (ids).
    pub count: u64,
    /// Connects started per second.
    pub connect_rate: f64,
    /// Most connections between connect and `200` head at once.
    pub max_connecting: u64,
    /// Stop after this long; `None`: run until [`FloodShared::stop`] is set.
    pub duration: Option<Duration>,
    /// Print the per-second `Stats:` line to stderr instead of stdout.
    pub stats_to_stderr: bool,
    /// Chunks not in the test format are errors (see [`Checker::new`]).
    pub strict: bool,
    /// Sequence numbers at or above this are garbled.
    pub seq_limit: u64,
    /// Source addresses to spread over (127.0.0.1, .2, ...); 0: one per 12,000 connections
    /// when the target is IPv4 loopback, else the kernel's choice.
    pub source_addrs: u32,
    /// How the streams carry messages (uring-comet's chunks, or another server's framing).
    pub framing: Framing,
    /// Only messages with a sequence number at least this are in the latency histogram.
    pub latency_from_seq: u64,
    /// `loadtest --nodes`: the seqs published through this flood's own node (latency is
    /// split into local and remote); `None` elsewhere.
    pub local_seqs: Option<std::ops::Range<u64>>,
    /// Subscriber churn, percent of `count` per minute (0: none). Once every connection is
    /// up, that many a minute (spread evenly, picked at random) leave, alternately with a
    /// FIN and a RST, and connect again under the same id at once; each absence is a
    /// [`Gap`] in the result.
    pub churn_per_min: f64,
}

/// One absence of a churned subscriber, CLOCK_MONOTONIC microseconds (as
/// [`now_us`](super::proc::now_us)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The subscriber's id.
    pub id: u64,
    /// When the client closed the old connection.
    pub from_us: u64,
    /// When the new connection's `200` head arrived; `u64::MAX` if it never did.
    pub to_us: u64,
}

/// Counters the loop publishes for other threads, and the stop flag it obeys.
#[derive(Debug, Default)]
pub struct FloodShared {
    /// Streams that got their `200` head (the Stats line's "connected").
    pub connected: AtomicU64,
    /// Connections that ended or failed (the Stats line's "closed").
    pub closed: AtomicU64,
    /// Chunks received (the Stats line's "chunks").
    pub chunks: AtomicU64,
    /// Distinct test messages received.
    pub received: AtomicU64,
    /// Churned subscribers connected again (their new `200` head read).
    pub reconnected: AtomicU64,
    /// Set by another thread to end the loop.
    pub stop: AtomicBool,
}

/// What a flood run saw.
pub struct FloodResult {
    /// Every chunk's checks, the received set and latency.
    pub checker: Checker,
    /// Streams that got their `200` head.
    pub connected: u64,
    /// Connections that ended or failed.
    pub closed: u64,
    /// Of those, connections that never got a `200` head.
    pub connect_failed: u64,
    /// Streams ended by a bad head or broken chunk framing.
    pub broken: u64,
    /// The first few reasons a connection ended.
    pub notes: Vec<String>,
    /// Churn: every absence, in the order they began.
    pub gaps: Vec<Gap>,
    /// Churn: subscribers closed on purpose.
    pub churned: u64,
    /// Churn: of those, connected again.
    pub reconnected: u64,
}

/// Most end reasons kept.
const MAX_NOTES: usize = 5;

/// Runs the subscriber loop on this thread until the duration ends, `shared.stop` is set, or
/// every connection has ended.
pub fn run(cfg: FloodConfig, shared: Arc<FloodShared>) -> Result<FloodResult> {
    let poll = Poll::new()?;
    let subs = (0..cfg.count).map(|_| Sub::new()).collect();
    let sources = match (cfg.source_addrs, cfg.url.addr.ip()) {
        (0, IpAddr::V4(ip)) if ip.is_loopback() => cfg.count.div_ceil(CONNS_PER_SOURCE) as u32,
        (0, _) => 1,
        (n, _) => n,
    };
    let mut checker = Checker::new(cfg.strict, cfg.seq_limit);
    checker.latency_from_seq = cfg.latency_from_seq;
    checker.local_seqs = cfg.local_seqs.clone();
    let mut f = Flood {
        checker,
        cfg,
        poll,
        subs,
        buf: vec![0; 64 * 1024],
        req: Vec::with_capacity(256),
        sources,
        launched: 0,
        in_flight: 0,
        res: Counts::default(),
        notes: Vec::new(),
        shared,
        churn: Churn::default(),
    };
    f.event_loop()?;
    Ok(FloodResult {
        checker: f.checker,
        connected: f.res.connected,
        closed: f.res.closed,
        connect_failed: f.res.connect_failed,
        broken: f.res.broken,
        notes: f.notes,
        gaps: f.churn.gaps,
        churned: f.churn.churned,
        reconnected: f.churn.reconnected,
    })
}

/// Churn state: when it started, what it did, and the open absences.
#[derive(Default)]
struct Churn {
    started: Option<Instant>,
    churned: u64,
    reconnected: u64,
    gaps: Vec<Gap>,
    /// Connection index -> its open gap in `gaps`.
    open: std::collections::HashMap<u32, usize>,
    rng: Option<super::msggen::XorShift>,
}

#[derive(Default)]
struct Counts {
    connected: u64,
    closed: u64,
    connect_failed: u64,
    broken: u64,
}

struct Flood {
    cfg: FloodConfig,
    poll: Poll,
    subs: Vec<Sub>,
    /// The one read buffer all connections share.
    buf: Vec<u8>,
    /// Scratch space for a request.
    req: Vec<u8>,
    sources: u32,
    launched: u64,
    in_flight: u64,
    res: Counts,
    checker: Checker,
    notes: Vec<String>,
    shared: Arc<FloodShared>,
    churn: Churn,
}

impl Flood {
    fn event_loop(&mut self) -> Result<()> {
        let mut events = Events::with_capacity(1024);
        let start = Instant::now();
        let mut next_stats = start + Duration::from_secs(1);
        loop {
            let now = Instant::now();
            let ended = self.res.closed == self.cfg.count;
            let timed_out = self.cfg.duration.is_some_and(|d| now >= start + d);
            if ended || timed_out || self.shared.stop.load(Relaxed) {
                return Ok(());
            }
            // Connects due by now at the configured rate, within the in-flight bound.
            let due = (now.duration_since(start).as_secs_f64() * self.cfg.connect_rate) as u64 + 1;
            while self.launched < self.cfg.count.min(due)
                && self.in_flight < self.cfg.max_connecting
            {
                self.launch(self.launched as usize);
                self.launched += 1;
            }
            if self.cfg.churn_per_min > 0.0 {
                self.churn_due(now);
            }
            if now >= next_stats {
                self.print_stats();
                next_stats += Duration::from_secs(1);
            }
            let mut timeout = next_stats
                .saturating_duration_since(now)
                .min(Duration::from_millis(100));
            if self.launched < self.cfg.count && self.in_flight < self.cfg.max_connecting {
                let next = start + Duration::from_secs_f64(due as f64 / self.cfg.connect_rate);
                timeout = timeout.min(next.saturating_duration_since(now));
            }
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            for ev in events.iter() {
                let i = ev.token().0;
                if self.subs.get(i).is_some_and(Sub::is_open) {
                    // Errors and hang-ups are handled by the write or read that reports them.
                    let failed = ev.is_error() || ev.is_read_closed();
                    self.on_event(i, ev.is_writable() || failed, ev.is_readable() || failed);
                }
            }
            self.shared
                .chunks
                .store(self.checker.counts.chunks, Relaxed);
            self.shared
                .received
                .store(self.checker.received.count(), Relaxed);
        }
    }

    /// Closes and reconnects the subscribers whose turn has come (see
    /// [`FloodConfig::churn_per_min`]); starts the clock once every connection is up.
    fn churn_due(&mut self, now: Instant) {
        let start = match self.churn.started {
            Some(s) => s,
            None if self.res.connected == self.cfg.count => *self.churn.started.insert(now),
            None => return,
        };
        let per_s = self.cfg.count as f64 * self.cfg.churn_per_min / 100.0 / 60.0;
        let due = (now.duration_since(start).as_secs_f64() * per_s) as u64;
        let rng = self
            .churn
            .rng
            .get_or_insert_with(|| super::msggen::XorShift::new(0x005e_edc4));
        let mut picks = Vec::new();
        for _ in self.churn.churned..due {
            picks.push((rng.next_u64() % self.cfg.count) as usize);
        }
        for i in picks {
            // One already away (still reconnecting) is not picked twice.
            if self.subs[i].is_streaming() && !self.churn.open.contains_key(&(i as u32)) {
                self.churn_one(i);
            }
            self.churn.churned += 1;
        }
    }

    fn print_stats(&self) {
        let line = format!(
            "Stats: {{{},{},{}}}\n",
            self.res.connected, self.res.closed, self.checker.counts.chunks
        );
        // A closed stdout must not stop the test: ignore write errors.
        let _ = if self.cfg.stats_to_stderr {
            io::stderr().lock().write_all(line.as_bytes())
        } else {
            let mut out = io::stdout().lock();
            out.write_all(line.as_bytes()).and_then(|_| out.flush())
        };
    }
}

#[path = "flood_conn.rs"]
mod conn;
