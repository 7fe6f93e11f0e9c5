//! `loadtest million`'s phase 2: the worker processes' plans and the wait until every
//! subscriber is connected.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use super::fleet::{source_addr, Fleet};
use super::progress::{bar, RateMeter};
use super::{say, MillionArgs, STALL};
use crate::tools::loadtest::client::million_worker::Progress;
use crate::tools::loadtest::host::child::ServerGuard;

/// How one worker is started.
pub(crate) struct WorkerPlan {
    /// First id.
    pub first_id: u64,
    /// Connections.
    pub count: u64,
    /// Source addresses (connection `i` uses the `i % n`-th).
    pub sources: Vec<std::net::Ipv4Addr>,
    /// Connects per second.
    pub rate: f64,
    /// Most connects in flight.
    pub max_connecting: u64,
    /// Streams the server ends connect again (`--reconnect`, for `--drain-after`).
    pub reconnect: bool,
    /// `--sub-token hs256`: the secret file the worker signs tokens with.
    pub token_secret: Option<std::path::PathBuf>,
}

/// The plan of each of `workers` workers, `per` subscribers each (the last one fewer): its
/// ids, its `--sources-per-worker` source addresses, its share of the connect rate and of
/// `--max-connecting` (at least 16).
pub(super) fn plans(a: &MillionArgs, workers: u64, per: u64) -> Vec<WorkerPlan> {
    let spw = a.sources_per_worker.max(1);
    (0..workers)
        .map(|k| {
            let first_id = 1 + k * per;
            WorkerPlan {
                first_id,
                count: per.min(a.connect.conns + 1 - first_id),
                sources: (0..spw)
                    .map(|j| source_addr(a.first_source, k as u32 * spw + j))
                    .collect(),
                rate: a.connect.connect_rate / workers as f64,
                max_connecting: (a.connect.max_connecting / workers).max(16),
                reconnect: a.drain.drain_after.is_some(),
                token_secret: a.sub_token.then(token_secret_path),
            }
        })
        .collect()
}

/// Where `--sub-token` keeps the HS256 secret the server and the workers share.
pub(super) fn token_secret_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("uring-comet-million-{}-secret", std::process::id()))
}

/// Waits until every subscriber is connected; returns the time from `t0` to the last `200`
/// head, or why it stopped (failures, stall, time budget, server or worker gone).
pub(super) fn connect_phase(
    a: &MillionArgs,
    fleet: &mut Fleet,
    server: &mut ServerGuard,
    t0: Instant,
) -> Result<Duration> {
    let n = a.connect.conns;
    let budget = Duration::from_secs_f64(2.0 * n as f64 / a.connect.connect_rate + 30.0);
    let bar = bar(n, "connect");
    let mut last_change = Instant::now();
    let mut last = Progress::default();
    let mut rate = RateMeter::new();
    let mut next_line = Instant::now() + Duration::from_secs(5);
    loop {
        let p = fleet.progress();
        let now = Instant::now();
        if (p.connected, p.failed) != (last.connected, last.failed) {
            last_change = now;
        }
        last = p;
        let r = rate.update(p.connected, now);
        bar.set_position(p.connected);
        bar.set_message(format!("failed {}, {r:.0}/s", p.failed));
        if bar.is_hidden() && now >= next_line {
            say(&format!(
                "connect: {} of {n}, failed {}, {r:.0}/s, {:.0} s",
                p.connected,
                p.failed,
                t0.elapsed().as_secs_f64()
            ));
            next_line += Duration::from_secs(5);
        }
        if p.connected == n {
            bar.finish();
            return Ok(t0.elapsed());
        }
        let why = if p.connected + p.failed >= n {
            Some(format!("{} connects failed", p.failed))
        } else if now.duration_since(last_change) > STALL {
            Some(format!(
                "stalled: no connect completed or failed for {} s at {} connected",
                STALL.as_secs(),
                p.connected
            ))
        } else if t0.elapsed() > budget {
            Some(format!(
                "time budget of {:.0} s spent",
                budget.as_secs_f64()
            ))
        } else if !server.alive() {
            Some("the server exited".into())
        } else if !fleet.dead().is_empty() {
            Some(format!("workers died: {:?}", fleet.dead()))
        } else {
            None
        };
        if let Some(why) = why {
            bar.abandon();
            return Err(anyhow!(why));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
