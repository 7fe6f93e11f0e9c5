//! Slow readers in the main job (`loadtest --slow-readers N`): subscribers that read their
//! `200` head and then never read again, and a publisher that keeps sending them large
//! messages while the normal subscribers get the usual test traffic. The server must cut each
//! slow reader once its pending output passes `--max-pending-bytes` (counted in `/stats`
//! `slow_consumers_closed`), keep its own memory bounded, and keep delivering on time to
//! everyone else. With a resuming `--transport` the cut readers come back with their cursor
//! and must get every message sent to them ([`ComebackFigures`]).
//!
//! - `reader`: one slow reader's connection, its decoders and checks.
//! - `comeback`: the watcher that brings cut readers back, and the final reading.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::tools::loadtest::host::proc::rss_bytes;
use crate::tools::loadtest::wire::answer::parse_answer;
use crate::tools::loadtest::wire::resume::Transport;
pub(crate) use reader::SlowReader;

pub(crate) mod comeback;
mod reader;

/// What the slow-reader side did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SlowFigures {
    /// Slow readers opened (ids `first_id..first_id + readers`).
    pub(crate) readers: u64,
    /// Messages to them answered `200`, and their total body bytes.
    pub(crate) sent: u64,
    pub(crate) bytes: u64,
    /// Publishes to them that failed.
    pub(crate) failed: u64,
    /// Server RSS at its highest while they were being sent to (sampled every 100 ms), bytes.
    pub(crate) server_rss_peak_bytes: u64,
    /// Messages answered `200`, by reader (`first_id + k` at `k`).
    pub(crate) per_reader: Vec<u64>,
}

/// What the slow readers that came back got (a resuming `--transport`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ComebackFigures {
    /// Slow readers.
    pub(crate) readers: u64,
    /// Ends of their streams seen before they had every message (the server cut them).
    pub(crate) cut: u64,
    /// Of those, connected again with a cursor.
    pub(crate) resumed: u64,
    /// Of those, answered recovered / with a reset in band.
    pub(crate) recovered: u64,
    pub(crate) reset: u64,
    /// Of those, answered `Comet-Recovered: false` in the head.
    pub(crate) header_false: u64,
    /// Messages answered `200` to them, and of those received in cursor order.
    pub(crate) expected: u64,
    pub(crate) received: u64,
    /// Messages out of cursor order or of the wrong length, and streams that could not be
    /// decoded.
    pub(crate) bad: u64,
    /// The first few problems, described.
    pub(crate) notes: Vec<String>,
}

impl ComebackFigures {
    /// Keeps `what` about reader `id` among the first five notes.
    pub(crate) fn note(&mut self, id: u64, what: &str) {
        if self.notes.len() < 5 {
            self.notes.push(format!("slow reader {id}: {what}"));
        }
    }
}

/// Opens `n` slow readers in `transport` (`GET /test/<id>` for `test`) for ids
/// `first_id..first_id + n`, each with its head read; nobody reads them until the job says.
/// Errors: a connect, write or head that fails or takes over 5 s.
pub(crate) fn open(
    sub: SocketAddr,
    first_id: u64,
    n: u64,
    transport: Transport,
) -> Result<Vec<SlowReader>> {
    (first_id..first_id + n)
        .map(|id| SlowReader::open(sub, id, transport))
        .collect()
}

/// How the slow readers are sent to.
pub(crate) struct BlastConfig {
    /// The publish listener.
    pub(crate) publish: SocketAddr,
    /// The slow readers' ids: `first_id..first_id + readers`, round-robin.
    pub(crate) first_id: u64,
    pub(crate) readers: u64,
    /// Body bytes per message.
    pub(crate) msg_bytes: usize,
    /// Messages per second.
    pub(crate) rate: f64,
    /// The server, for its RSS.
    pub(crate) server_pid: u32,
}

/// Sends to the slow readers at `rate` on one keep-alive connection until `stop` is set.
pub(crate) fn spawn_blaster(
    cfg: BlastConfig,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<Result<SlowFigures>>> {
    std::thread::Builder::new()
        .name("slow-blaster".into())
        .spawn(move || blast(cfg, &stop))
}

fn blast(cfg: BlastConfig, stop: &AtomicBool) -> Result<SlowFigures> {
    let mut fig = SlowFigures {
        readers: cfg.readers,
        per_reader: vec![0; cfg.readers as usize],
        ..SlowFigures::default()
    };
    let mut s = TcpStream::connect(cfg.publish).context("slow blaster: connect")?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let body = vec![b'x'; cfg.msg_bytes];
    let interval = Duration::from_secs_f64(1.0 / cfg.rate.max(0.001));
    let start = Instant::now();
    let mut next_rss = start;
    let mut req = Vec::with_capacity(cfg.msg_bytes + 128);
    let mut buf = Vec::with_capacity(512);
    let mut k: u64 = 0;
    while !stop.load(Relaxed) {
        let now = Instant::now();
        if now >= next_rss {
            fig.server_rss_peak_bytes = fig
                .server_rss_peak_bytes
                .max(rss_bytes(cfg.server_pid).unwrap_or(0));
            next_rss = now + Duration::from_millis(100);
        }
        let due = start + interval.mul_f64(k as f64);
        if due > now {
            std::thread::sleep((due - now).min(Duration::from_millis(50)));
            continue;
        }
        let reader = k % cfg.readers.max(1);
        let id = cfg.first_id + reader;
        k += 1;
        req.clear();
        write!(
            req,
            "POST /send/{id} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n\r\n",
            cfg.publish,
            body.len()
        )?;
        req.extend_from_slice(&body);
        s.write_all(&req).context("slow blaster: write")?;
        buf.clear();
        let answer = loop {
            if let Some(a) = parse_answer(&buf)? {
                break a;
            }
            let mut piece = [0u8; 512];
            match s.read(&mut piece).context("slow blaster: read")? {
                0 => bail!("slow blaster: publish connection closed"),
                n => buf.extend_from_slice(&piece[..n]),
            }
        };
        if answer.status == 200 {
            fig.sent += 1;
            fig.bytes += body.len() as u64;
            fig.per_reader[reader as usize] += 1;
        } else {
            fig.failed += 1;
        }
    }
    Ok(fig)
}

#[cfg(test)]
mod tests;
