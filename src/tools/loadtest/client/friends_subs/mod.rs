//! The logged-in users of `loadtest friends`: one `GET /test/<user>` stream per user, all on
//! one thread on the one subscriber loop ([`subscriber`](super::subscriber)), every friends
//! event checked. The streams are read after their heads by mio or, with `--client-io uring`,
//! by multishot receives on an io_uring ring ([`uring_recv`](super::uring_recv)).
//!
//! A chunk must be exactly `Recvd msg #N from <from>: '<from>:<seq>:<t_us>'<br/>\n`: N the
//! previous N + 1 on its connection, the body's publisher the chunk's `from`, `from` a user
//! whose events this user receives (its follower list, from the loadtest's own copy of the
//! graph), and no (seq, connection) pair twice. Publish-to-receive latency is taken per
//! delivery from the send time in the body.
//!
//! - `role`: the logins' half of the loop: the per-event checks, counts and latency.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use anyhow::Result;
use hdrhistogram::Histogram;

use super::subscriber::{self, LoopConfig};
use super::uring_recv::{RecvConfig, RecvRing};
use crate::tools::loadtest::wire::chunk::Expect;
use crate::tools::loadtest::wire::url::UrlTemplate;
use role::FriendsRole;

mod role;

/// How a subscriber thread reads its streams once they have their head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientIo {
    /// `uring` if this kernel has it (ring with DEFER_TASKRUN and IORING_FEAT_MIN_TIMEOUT),
    /// else `epoll`.
    Auto,
    /// One multishot receive per stream on an io_uring ring, woken per batch.
    Uring,
    /// mio (epoll, edge-triggered), woken per delivery.
    Epoll,
}

/// Lower bounds of the event sizes (logged-in recipients of the publisher) the latency is
/// also broken down by: 1-49, 50-199, 200-499, 500 and more.
pub(crate) const FANOUT_BUCKETS: [usize; 4] = [1, 50, 200, 500];

/// End reasons kept.
const MAX_NOTES: usize = 5;

/// What the subscriber loop does.
pub(crate) struct SubsConfig {
    /// The subscriber listener.
    pub(crate) addr: SocketAddr,
    /// All the users logged in by the load test, one connection each.
    pub(crate) users: Arc<Vec<u32>>,
    /// The indices into `users` this loop connects (several loops share the work).
    pub(crate) mine: Vec<usize>,
    /// Connects started per second.
    pub(crate) connect_rate: f64,
    /// Most connects in flight at once.
    pub(crate) max_connecting: usize,
    /// Publisher -> the logged-in users that receive its events (sorted).
    pub(crate) recipients: Arc<HashMap<u32, Vec<u32>>>,
    /// How streams are read after their head.
    pub(crate) io: ClientIo,
    /// With [`ClientIo::Uring`]: see [`RecvConfig::min_wait_us`].
    pub(crate) min_wait_us: u32,
    /// Deliveries this loop expects (sizes its set of seen deliveries).
    pub(crate) expected: usize,
}

/// Counters for other threads and the stop flag.
#[derive(Debug, Default)]
pub(crate) struct SubsShared {
    /// Streams with their `200` head.
    pub(crate) connected: AtomicU64,
    /// Connections that ended.
    pub(crate) closed: AtomicU64,
    /// Distinct deliveries received.
    pub(crate) received: AtomicU64,
    /// Set to end the loop.
    pub(crate) stop: AtomicBool,
}

/// What the loop saw.
pub(crate) struct SubsResult {
    /// Streams that got their head.
    pub(crate) connected: u64,
    /// Connections that ended.
    pub(crate) closed: u64,
    /// Distinct (event, connection) deliveries: `seq << 24 | connection`.
    pub(crate) got: ahash::AHashSet<u64>,
    /// Deliveries received twice.
    pub(crate) duplicates: u64,
    /// Chunks whose N was not the previous N + 1.
    pub(crate) out_of_order: u64,
    /// Events from a user this connection's user does not receive.
    pub(crate) unexpected: u64,
    /// Chunks that were not friends events in the test format, or broken streams.
    pub(crate) garbled: u64,
    /// Heartbeat chunks.
    pub(crate) heartbeats: u64,
    /// Publish-to-receive latency per delivery, us.
    pub(crate) latency_us: Histogram<u64>,
    /// The same, per event size ([`FANOUT_BUCKETS`]).
    pub(crate) by_fanout: Vec<Histogram<u64>>,
    /// The first few problems.
    pub(crate) notes: Vec<String>,
    /// How the streams were read after their heads (`uring` or `epoll`).
    pub(crate) io_used: Option<&'static str>,
    /// Multishot receives re-armed because provided buffers ran out (uring only).
    pub(crate) rearmed: u64,
}

impl SubsResult {
    /// Nothing seen yet, latencies going into `latency_us`.
    fn empty(latency_us: Histogram<u64>, capacity: usize) -> SubsResult {
        SubsResult {
            connected: 0,
            closed: 0,
            got: ahash::AHashSet::with_capacity(capacity),
            duplicates: 0,
            out_of_order: 0,
            unexpected: 0,
            garbled: 0,
            heartbeats: 0,
            by_fanout: vec![latency_us.clone(); FANOUT_BUCKETS.len()],
            latency_us,
            notes: Vec::new(),
            io_used: None,
            rearmed: 0,
        }
    }

    /// The results of two loops over disjoint connections, together.
    pub(crate) fn merge(mut self, o: SubsResult) -> Result<SubsResult> {
        self.connected += o.connected;
        self.closed += o.closed;
        self.got.extend(o.got);
        self.duplicates += o.duplicates;
        self.out_of_order += o.out_of_order;
        self.unexpected += o.unexpected;
        self.garbled += o.garbled;
        self.heartbeats += o.heartbeats;
        self.latency_us.add(&o.latency_us)?;
        for (h, oh) in self.by_fanout.iter_mut().zip(&o.by_fanout) {
            h.add(oh)?;
        }
        self.notes.extend(o.notes);
        self.rearmed += o.rearmed;
        self.io_used = match (self.io_used, o.io_used) {
            (Some(a), Some(b)) if a != b => Some("mixed"),
            (a, b) => a.or(b),
        };
        self.notes.truncate(MAX_NOTES);
        Ok(self)
    }
}

/// Runs until `shared.stop` is set (or every connection ended). Connects, requests and heads
/// go through mio; the streams are then read by mio too, or handed to a [`RecvRing`].
/// Errors: the poll or the ring failed, or `--client-io uring` without a usable ring.
pub(crate) fn run(cfg: SubsConfig, shared: Arc<SubsShared>) -> Result<SubsResult> {
    let ring = make_ring(&cfg)?;
    let lcfg = LoopConfig {
        url: UrlTemplate::local(cfg.addr, "/test/{id}")?,
        headers: "",
        expect: Expect::Chunked,
        count: cfg.mine.len(),
        connect_rate: cfg.connect_rate,
        max_connecting: cfg.max_connecting as u64,
        until: None,
        stop_when_all_ended: true,
        eager_request: false,
        short_read_drains: true,
        reset_on_end: false,
        // The load tester closes first: a reset (SO_LINGER 0) leaves no TIME_WAIT per login
        // on the client side, as the other load tests do.
        reset_at_finish: true,
    };
    // Sized up front: growing a set of a million entries mid-run stalls this loop for tens
    // of ms, which would show up as delivery latency.
    let res = SubsResult::empty(Histogram::new_with_bounds(1, 60_000_000, 3)?, cfg.expected);
    let stop = shared.clone();
    let role = FriendsRole::new(cfg, res, shared);
    let end = subscriber::run(lcfg, role, ring, &stop.stop)?;
    let mut res = end.role.into_result();
    res.io_used = Some(end.io_used);
    res.rearmed = end.rearmed;
    Ok(res)
}

/// The receive ring `cfg.io` asks for, if any (`auto`: if this kernel has one, said once).
fn make_ring(cfg: &SubsConfig) -> Result<Option<RecvRing>> {
    let rcfg = RecvConfig {
        min_wait_us: cfg.min_wait_us,
        ..RecvConfig::default()
    };
    let n = cfg.mine.len();
    Ok(match cfg.io {
        ClientIo::Epoll => None,
        ClientIo::Uring => Some(RecvRing::new(n, rcfg)?),
        ClientIo::Auto => match RecvRing::new(n, rcfg) {
            Ok(r) => {
                if cfg.mine.first() == Some(&0) {
                    eprintln!(
                        "loadtest friends: reading the streams with io_uring (--client-io auto)"
                    );
                }
                Some(r)
            }
            Err(e) => {
                eprintln!(
                    "loadtest friends: io_uring client unavailable ({e}); reading with epoll"
                );
                None
            }
        },
    })
}
