//! Operations endpoints: `GET /metrics` (Prometheus text exposition format, version 0.0.4,
//! through prometheus-client), `GET /healthz` and `GET /readyz`, served on the publish
//! listener and, with `--metrics-listen ADDR`, on a listener of their own.
//!
//! Every metric is named `uring_comet_*` and labelled by `shard` (and `transport` for
//! `uring_comet_connections`) at most, never by id, so the page has a fixed size for a given
//! shard count. The counters are the per-shard [`ShardStats`] that `GET /stats` reads: each
//! written by its own shard only, read here at scrape time; the scrape is the only code
//! added off the data path. The histogram `uring_comet_publish_to_send_seconds` is
//! [`Latency`]: fixed buckets of per-shard atomics, no allocation per message.
//!
//! # Files
//! - `latency`: the histogram, and what it times (its module doc).
//! - `collect`: one scrape: every counter read once, then encoded.
//! - `listen`: the `--metrics-listen` thread.

mod collect;
mod latency;
pub mod listen;

use std::io::Write;

pub use latency::{Latency, Snapshot, Stamps, BOUNDS_MS};

use crate::cluster::Cluster;
use crate::http::request::Probe;
use crate::mesh::Mesh;
use crate::stats::ShardStats;

/// `Content-Type` of `/metrics`: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// What the endpoints read: every shard's counters, the cluster state and the mesh (its
/// shutdown and draining flags).
#[derive(Clone, Copy)]
pub struct View<'a> {
    /// Every shard's counters.
    pub shards: &'a [ShardStats],
    /// Cluster mode's state, if on.
    pub cluster: Option<&'a Cluster>,
    /// The mesh: `is_draining`, `is_shutdown`.
    pub mesh: &'a Mesh,
}

impl View<'_> {
    /// The `/metrics` body.
    pub fn metrics(&self) -> String {
        collect::Sample::read(self.shards, self.cluster).encode()
    }

    /// Readiness: `Ok` when the server is not draining or stopping, every shard's accepts
    /// are armed and the server is below `--max-conns` (all shards together), and in cluster mode Redis is connected
    /// and subscribed; else the reason.
    pub fn ready(&self) -> Result<(), String> {
        if self.mesh.is_draining() || self.mesh.is_shutdown() {
            return Err("draining".into());
        }
        let idle = self
            .shards
            .iter()
            .position(|s| s.accepting.load(std::sync::atomic::Ordering::Relaxed) == 0);
        if let Some(i) = idle {
            let why = "paused after an accept error, or the server is at --max-conns";
            return Err(format!("shard {i} is not accepting ({why})"));
        }
        if self.cluster.is_some_and(|c| !c.is_up()) {
            return Err("cluster: not connected to Redis or not subscribed".into());
        }
        Ok(())
    }

    /// The complete reply to `probe` (`HEAD`: without its body); `close` adds
    /// `Connection: close`.
    ///
    /// `/metrics`: 200 with [`CONTENT_TYPE`]. `/healthz`: 200 `ok` while the process runs
    /// (whoever answers is running). `/readyz`: 200 `ready`, or 503 `not ready: REASON`
    /// (see [`View::ready`]).
    pub fn reply(&self, probe: Probe, head: bool, close: bool) -> Vec<u8> {
        let (status, ctype, body) = match probe {
            Probe::Metrics => ("200 OK", CONTENT_TYPE, self.metrics()),
            Probe::Healthz => ("200 OK", TEXT, "ok\n".to_string()),
            Probe::Readyz => match self.ready() {
                Ok(()) => ("200 OK", TEXT, "ready\n".to_string()),
                Err(why) => (
                    "503 Service Unavailable",
                    TEXT,
                    format!("not ready: {why}\n"),
                ),
            },
        };
        let mut out = Vec::with_capacity(body.len() + 160);
        let _ = write!(
            out,
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{}\r\n",
            body.len(),
            if close { "Connection: close\r\n" } else { "" },
        );
        if !head {
            out.extend_from_slice(body.as_bytes());
        }
        out
    }
}

/// `Content-Type` of the probes' bodies.
const TEXT: &str = "text/plain; charset=utf-8";
