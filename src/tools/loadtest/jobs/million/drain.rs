//! Phase 4b of `loadtest million --drain-after`: a hand-over under load, as an operator does
//! it (README: Restarts). After the hold, a second server starts with `--takeover` on the
//! same ports, the first gets SIGTERM and drains into it over its `--drain-period`; the
//! workers (started with `--reconnect`) connect again as soon as a stream ends. Every second
//! the job reads the workers' cumulative counts: stream ends are the closes per second the
//! clients saw, new `200` heads the reconnects. It ends once the old server has exited and
//! every stream open at the SIGTERM has ended (or after the period + 30 s). Then it reads the
//! takeover server's `/metrics` (the old one's publish listener is gone by then): its 503s,
//! 408s and failed accepts say where the reconnects that failed were refused.
//!
//! The streams are `/test/` streams, which do not resume (no cursor): the verdict still
//! wants each id's one message exactly once, so a reconnection must bring no duplicate.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use clap::Args;

use super::fleet::Fleet;
use super::{say, MillionArgs};
use crate::tools::loadtest::host::child::ServerGuard;
use crate::tools::loadtest::report::million::{DrainFigures, MillionReport, TakeoverCounts};
use crate::tools::loadtest::wire::answer::parse_answer;

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
    d.takeover = takeover_counts(new.pub_addr)
        .map_err(|e| r.notes.push(format!("takeover server's /metrics: {e}")))
        .ok();
    r.drain = Some(d);
    Ok(new)
}

/// `GET /metrics` of the server at `addr` (the takeover server once the old one has shut its
/// listeners), its 503, 408 and accept-error counters summed over the shards. Errors: no
/// answer within 5 s, or not one with a Content-Length body.
fn takeover_counts(addr: SocketAddr) -> Result<TakeoverCounts> {
    use std::io::{Read, Write};
    let timeout = Duration::from_secs(5);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let ans = parse_answer(&buf)?.ok_or_else(|| anyhow!("incomplete /metrics answer"))?;
    if ans.status != 200 {
        return Err(anyhow!("/metrics answered {}", ans.status));
    }
    let body = String::from_utf8_lossy(&buf[ans.body_start..ans.len]);
    Ok(TakeoverCounts {
        rejected_at_capacity: metric_sum(&body, "uring_comet_rejected_at_capacity_total"),
        head_timeouts: metric_sum(&body, "uring_comet_head_timeouts_total"),
        accept_errors: metric_sum(&body, "uring_comet_accept_errors_total"),
    })
}

/// The sum of every sample of `name` (any labels) in a Prometheus text exposition.
fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn metric_sums_add_every_shard() {
        let text = "# HELP uring_comet_head_timeouts Connections answered 408.\n# TYPE uring_comet_head_timeouts counter\nuring_comet_head_timeouts_total{shard=\"0\"} 3\nuring_comet_head_timeouts_total{shard=\"1\"} 4\nuring_comet_head_timeouts_totalx{shard=\"1\"} 9\n";
        assert_eq!(
            super::metric_sum(text, "uring_comet_head_timeouts_total"),
            7
        );
        assert_eq!(
            super::metric_sum(text, "uring_comet_accept_errors_total"),
            0
        );
    }
}
