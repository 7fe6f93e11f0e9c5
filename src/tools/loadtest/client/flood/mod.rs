//! The main job's subscribers (the seed's floodtest): one `GET` stream per id, connected at
//! a steady rate and checked chunk by chunk, on the one subscriber loop
//! ([`subscriber`](super::subscriber)), with subscriber churn if asked.
//!
//! - `role`: what the flood does in the loop: check each unit ([`Framing`], [`Checker`]),
//!   count heads and ends, print `Stats:` every second, pick and restart churned subscribers.
//! - `resume`: with a resuming [`Transport`] (the main job's `--transport sse|ws|raw`), each
//!   connection's decoder and cursor, the cursor given back on a reconnect, the order check
//!   by cursor offset, and what the resumes came to ([`ResumeFigures`]).

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;

use super::subscriber::{self, LoopConfig};
use crate::tools::loadtest::wire::check::Checker;
use crate::tools::loadtest::wire::framing::Framing;
use crate::tools::loadtest::wire::resume::Transport;
use crate::tools::loadtest::wire::url::UrlTemplate;
pub(crate) use resume::ResumeFigures;
use role::FloodRole;

mod resume;
mod role;

/// What a flood run does.
pub(crate) struct FloodConfig {
    /// Where and what to `GET`.
    pub(crate) url: UrlTemplate,
    /// First subscriber id; connection `i` subscribes to `first_id + i`.
    pub(crate) first_id: u64,
    /// Number of connections (ids).
    pub(crate) count: u64,
    /// The ids to subscribe instead of `first_id..first_id + count`: connection `i`
    /// subscribes to `ids[i]` (`loadtest --nodes N --cluster-mode affine` places each id on
    /// its owner node); `count` must be `ids.len()`.
    pub(crate) ids: Option<std::sync::Arc<[u64]>>,
    /// Connects started per second.
    pub(crate) connect_rate: f64,
    /// Most connections between connect and `200` head at once.
    pub(crate) max_connecting: u64,
    /// Stop after this long; `None`: run until [`FloodShared::stop`] is set.
    pub(crate) duration: Option<Duration>,
    /// Print the per-second `Stats:` line to stderr instead of stdout.
    pub(crate) stats_to_stderr: bool,
    /// Chunks not in the test format are errors (see [`Checker::new`]).
    pub(crate) strict: bool,
    /// Sequence numbers at or above this are garbled.
    pub(crate) seq_limit: u64,
    /// Source addresses to spread over (127.0.0.1, .2, ...); 0: one per 12,000 connections
    /// when the target is IPv4 loopback, else the kernel's choice.
    pub(crate) source_addrs: u32,
    /// How the streams carry messages (uring-comet's chunks, or another server's framing);
    /// used when `transport` is `test`.
    pub(crate) framing: Framing,
    /// The main job's transport: `test` (the `framing` above, no resume) or a resuming one,
    /// whose requests, heads and decoding it then decides (the URL must be its path).
    pub(crate) transport: Transport,
    /// Only messages with a sequence number at least this are in the latency histogram.
    pub(crate) latency_from_seq: u64,
    /// `loadtest --nodes`: the seqs published through this flood's own node (latency is
    /// split into local and remote); `None` elsewhere.
    pub(crate) local_seqs: Option<std::ops::Range<u64>>,
    /// Subscriber churn, percent of `count` per minute (0: none). Once every connection is
    /// up, that many a minute (spread evenly, picked at random) leave, alternately with a
    /// FIN and a RST, and connect again under the same id at once; each absence is a
    /// [`Gap`] in the result.
    pub(crate) churn_per_min: f64,
    /// Subscriber tokens (`--sub-token`): connection `k`'s token at `k`, sent as
    /// `Authorization: Bearer`.
    pub(crate) tokens: Option<std::sync::Arc<Vec<String>>>,
}

/// One absence of a churned subscriber, CLOCK_MONOTONIC microseconds (as
/// [`now_us`](crate::tools::loadtest::host::proc::now_us)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gap {
    /// The subscriber's id.
    pub(crate) id: u64,
    /// When the client closed the old connection.
    pub(crate) from_us: u64,
    /// When the new connection's `200` head arrived; `u64::MAX` if it never did.
    pub(crate) to_us: u64,
}

/// Counters the loop publishes for other threads, and the stop flag it obeys.
#[derive(Debug, Default)]
pub(crate) struct FloodShared {
    /// Streams that got their `200` head (the Stats line's "connected").
    pub(crate) connected: AtomicU64,
    /// Connections that ended or failed (the Stats line's "closed").
    pub(crate) closed: AtomicU64,
    /// Chunks received (the Stats line's "chunks").
    pub(crate) chunks: AtomicU64,
    /// Distinct test messages received.
    pub(crate) received: AtomicU64,
    /// Churned subscribers connected again (their new `200` head read).
    pub(crate) reconnected: AtomicU64,
    /// Set by another thread to end the loop.
    pub(crate) stop: AtomicBool,
    /// Churned subscribers that left (closed on purpose).
    pub(crate) churned: AtomicU64,
    /// Set by another thread to stop churning (nobody new leaves; those away come back).
    pub(crate) churn_hold: AtomicBool,
}

/// What a flood run saw.
pub(crate) struct FloodResult {
    /// Every chunk's checks, the received set and latency.
    pub(crate) checker: Checker,
    /// Streams that got their `200` head.
    pub(crate) connected: u64,
    /// Connections that ended or failed.
    pub(crate) closed: u64,
    /// Of those, connections that never got a `200` head.
    pub(crate) connect_failed: u64,
    /// Streams ended by a bad head or broken chunk framing.
    pub(crate) broken: u64,
    /// The first few reasons a connection ended.
    pub(crate) notes: Vec<String>,
    /// Churn: every absence, in the order they began.
    pub(crate) gaps: Vec<Gap>,
    /// Churn: subscribers closed on purpose.
    pub(crate) churned: u64,
    /// Churn: of those, connected again.
    pub(crate) reconnected: u64,
    /// With a resuming transport: what the resumes came to.
    pub(crate) resume: Option<ResumeFigures>,
}

/// Runs the subscriber loop on this thread until the duration ends, `shared.stop` is set, or
/// every connection has ended. Errors: the poll failed.
pub(crate) fn run(cfg: FloodConfig, shared: Arc<FloodShared>) -> Result<FloodResult> {
    let lcfg = LoopConfig {
        url: cfg.url.clone(),
        headers: match cfg.transport {
            Transport::Test => cfg.framing.request_headers(),
            t => t.headers(),
        },
        expect: match cfg.transport {
            Transport::Test => cfg.framing.expect(),
            t => t.expect(),
        },
        count: cfg.count as usize,
        connect_rate: cfg.connect_rate,
        max_connecting: cfg.max_connecting,
        until: cfg.duration,
        stop_when_all_ended: true,
        eager_request: false,
        short_read_drains: false,
        reset_on_end: false,
        reset_at_finish: false,
    };
    let stop = shared.clone();
    let f = subscriber::run(lcfg, FloodRole::new(cfg, shared), None, &stop.stop)?.role;
    Ok(f.result())
}
