//! Phase 4b of `loadtest million --drain-after`: a hand-over under load, as an operator does
//! it (README: Restarts). After the hold, a second server starts with `--takeover` on the
//! same ports, the first gets SIGTERM and drains into it over its `--drain-period`; the
//! workers (started with `--reconnect`) connect again as soon as a stream ends. Every second
//! the job reads the workers' cumulative counts: stream ends are the closes per second the
//! clients saw, new `200` heads the reconnects. It ends once the old server has exited and
//! every stream open at the SIGTERM has ended (or after the period + 30 s).
//!
//! The streams are `/test/` streams, which do not resume (no cursor): the verdict still
//! wants each id's one message exactly once, so a reconnection must bring no duplicate.

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;

use super::fleet::Fleet;
use super::{say, MillionArgs};
use crate::tools::loadtest::host::child::ServerGuard;
use crate::tools::loadtest::report::million::{DrainFigures, MillionReport};

/// How long the drain phase waits past `--drain-period` before it gives up.
const SLACK: Duration = Duration::from_secs(30);

/// The drain flags of `loadtest million`.
#[derive(Args, Debug, Clone)]
pub struct DrainFlags {
    /// After the delivery, hold the streams this long (`0s`, `30s`), then hand over: start a
    /// `--takeover` server on the same ports, send the first one SIGTERM, and report the
    /// closes per second the clients see and their reconnects (they connect again at once).
    /// Off by default.
    #[arg(long, value_parser = crate::tools::duration::parse_duration)]
    pub drain_after: Option<Duration>,
    /// The servers' `--drain-period` with `--drain-after`.
    #[arg(long, default_value = "10s", value_parser = crate::tools::duration::parse_duration)]
    pub drain_period: Duration,
}

impl DrainFlags {
    /// The server flags these add (`--drain-period`), for both servers.
    pub(super) fn server_args(&self) -> Vec<String> {
        match self.drain_after {
            Some(_) => vec![
                "--drain-period".into(),
                format!("{}ms", self.drain_period.as_millis()),
            ],
            None => Vec::new(),
        }
    }
}

/// Runs the hand-over after `hold`; the figures go into `r.drain`. Returns the new server
/// (the close phase runs against it). Errors: the `--takeover` server did not start.
pub(super) fn drain_phase(
    a: &MillionArgs,
    hold: Duration,
    fleet: &Fleet,
    old: &mut ServerGuard,
    head: Vec<String>,
    r: &mut MillionReport,
) -> Result<ServerGuard> {
    say(&format!(
        "holding {:.0} s before the drain",
        hold.as_secs_f64()
    ));
    std::thread::sleep(hold);
    let (bin, args) = a.server.command(head, None)?;
    let log = a
        .server
        .server_log
        .as_ref()
        .map(|p| p.with_extension("takeover.log"));
    let new = old.takeover(&bin, &args, log.as_ref())?;
    say(&format!(
        "takeover server pid {} up; SIGTERM to pid {}",
        new.pid, old.pid
    ));
    let p0 = fleet.progress();
    let open = p0.connected - p0.closed;
    let mut d = DrainFigures {
        period_s: a.drain.drain_period.as_secs_f64(),
        open,
        ..DrainFigures::default()
    };
    let t0 = Instant::now();
    old.terminate();
    let mut last = p0;
    let mut tick = t0;
    loop {
        tick += Duration::from_secs(1);
        std::thread::sleep(tick.saturating_duration_since(Instant::now()));
        let p = fleet.progress();
        d.closes_per_s.push(p.closed - last.closed);
        d.reconnects_per_s.push(p.connected - last.connected);
        d.reconnect_failed = p.failed - p0.failed;
        last = p;
        if d.exit_code.is_none() {
            d.exit_code = old.exit_code().flatten();
        }
        let exited = !old.alive();
        if (exited && d.closes() >= open) || t0.elapsed() > a.drain.drain_period + SLACK {
            break;
        }
    }
    say(&format!(
        "drain: {} closes, {} reconnects in {:.0} s",
        d.closes(),
        d.reconnects(),
        t0.elapsed().as_secs_f64()
    ));
    r.drain = Some(d);
    Ok(new)
}
