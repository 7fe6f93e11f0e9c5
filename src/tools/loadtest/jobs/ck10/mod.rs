//! The main job, the seed's CK10 test (see `loadtest/README.md` for each figure), in phases:
//!
//! 1. **Server**: start it as a child; its CPU, idle RSS and open fds as the baseline; the
//!    memory log, if asked for.
//! 2. **Connect**: open `conns` subscribers at a steady rate (bounded: twice the planned time
//!    plus 10 s); wait for the server's RSS to settle.
//! 3. **Slow readers** (`--slow-readers`): open them and start their publisher.
//! 4. **Publish** `rate` messages/s for `duration` s.
//! 5. **Drain**: wait (bounded) for every message answered `200` to arrive.
//! 6. **End**: the server's last readings; the subscribers stopped; with a resuming
//!    transport the slow readers read to the end (coming back after a cut); every client
//!    gone, the server back to baseline (it must come back to where it started).
//! 7. **Report** (text or JSON); fail if anything was lost or arrived wrong.
//!
//! Here: [`run`] and the report; [`server`]: the server's readings (phases 1 and 6);
//! [`clients`]: subscribers, slow readers, publishers (phases 2 to 5); [`rounds`]: the
//! same server through `--rounds N` rounds of connect, publish, close (the leak guard).
//!
//! Threads: this one orchestrates and reads /proc; the subscriber loop and the publisher
//! loop each run on their own thread; the memory log, if asked for, on a fourth.

mod clients;
pub(crate) mod rounds;
mod server;
mod tokens;

use std::time::Duration;

use anyhow::{bail, Result};

use super::halves::{check_fd_limit, check_positive};
use crate::tools::loadtest::cli::MainArgs;
use crate::tools::loadtest::client::churn::{self, AfterLeave, ChurnFigures};
use crate::tools::loadtest::client::flood::FloodResult;
use crate::tools::loadtest::client::msggen::MsggenResult;
use crate::tools::loadtest::client::slow::{ComebackFigures, SlowFigures};
use crate::tools::loadtest::host::child::ServerGuard;
use crate::tools::loadtest::host::proc::{cpu_seconds, wait_rss_stable};
use crate::tools::loadtest::report::main_job::Report;
use crate::tools::loadtest::report::Latency;
use clients::{connect, drain, publish, SlowLoad};
use server::{Baseline, End, MemLog};

/// Longest wait for the server's RSS to settle, before connecting and before publishing.
const RSS_SETTLE: Duration = Duration::from_secs(5);

/// How long after the last scheduled publish to wait for its answer.
const PUBLISH_TAIL: Duration = Duration::from_secs(2);

/// Longest wait, once every subscriber has left, for the server to be back to baseline.
const LEAVE_SETTLE: Duration = Duration::from_secs(10);

/// Progress for people, on stderr so that stdout holds only Stats lines and the report.
fn say(msg: &str) {
    eprintln!("loadtest: {msg}");
}

/// Runs the main job; fails if anything was lost or arrived wrong (after printing the report).
pub(crate) fn run(a: MainArgs) -> Result<()> {
    validate(&a)?;
    // 1. Server.
    let mut server = start_server(&a)?;
    let base = Baseline::read(server.pid)?;
    let mem_log = MemLog::start(&a, &server)?;
    // 2. Connect.
    let total = (a.rate * a.duration).round() as u64;
    let subs = connect(&a, &mut server, total)?;
    let (rss_loaded, rss_stable) = wait_rss_stable(server.pid, RSS_SETTLE)?;
    // 3. Slow readers.
    let mut slow = SlowLoad::start(&a, &server)?;
    let cpu_publish_start = cpu_seconds(server.pid)?;
    // 4. Publish.
    let published = publish(&a, &server, total);
    let slow_fig = slow.stop_publisher();
    let published = match published {
        Ok(p) => p,
        Err(e) => {
            let _ = subs.stop();
            return Err(e);
        }
    };
    // 5. Drain.
    let drain_ms = drain(&subs.shared, published.ok, a.drain_ms);
    // 6. End.
    let end = End::read(&mut server, cpu_publish_start);
    let connect_s = subs.connect_s;
    let fres = subs.stop()?;
    let slow_back = slow.come_back(slow_fig.as_ref().and_then(|r| r.as_ref().ok()));
    drop(slow.readers);
    mem_log.stop();
    let after_leave = (!end.server_exited).then(|| {
        AfterLeave::wait(
            server.pid,
            server.sub_addr,
            server.pub_addr,
            base.fds,
            LEAVE_SETTLE,
        )
    });
    drop(server); // kills the server by pid and reaps it
                  // 7. Report.
    let figures = Figures {
        base,
        connect_s,
        rss_loaded,
        rss_stable,
        cpu_publish_start,
        drain_ms,
        end,
        after_leave,
    };
    let report = report(&a, figures, published, fres, slow_fig, slow_back);
    finish(&report, a.json)
}

/// Rejects flags the job cannot run with.
fn validate(a: &MainArgs) -> Result<()> {
    check_positive(&[
        ("--connect-rate", a.connect.connect_rate),
        ("--rate", a.rate),
        ("--duration", a.duration),
    ])?;
    if a.connect.conns == 0 || a.parallel == 0 {
        bail!("--conns and --parallel must be at least 1");
    }
    check_fd_limit(a.connect.conns + a.slow_readers + a.parallel as u64 + 1)?;
    if !(0.0..=6000.0).contains(&a.churn) {
        bail!("--churn is a percent of the subscribers per minute, 0 to 6000");
    }
    Ok(())
}

/// Phase 1: the server as a child.
fn start_server(a: &MainArgs) -> Result<ServerGuard> {
    let tokens = tokens::prepare(a)?;
    let head = tokens
        .as_ref()
        .map_or(Vec::new(), |t| t.server_args.clone());
    let (bin, args) = a.server.command(head, a.backend)?;
    let mut server = ServerGuard::start(&bin, &args, a.server.server_log.as_ref())?;
    server.tokens = tokens.map(|t| t.tokens);
    say(&format!(
        "server pid {}: subscribers on {}, publish on {}",
        server.pid, server.sub_addr, server.pub_addr
    ));
    Ok(server)
}

/// What the phases measured on the server.
struct Figures {
    base: Baseline,
    connect_s: f64,
    rss_loaded: u64,
    rss_stable: bool,
    cpu_publish_start: f64,
    drain_ms: u64,
    end: End,
    after_leave: Option<AfterLeave>,
}

/// Phase 7: the report from the figures, the publisher's and the subscribers' results.
fn report(
    a: &MainArgs,
    f: Figures,
    published: MsggenResult,
    fres: FloodResult,
    slow_fig: Option<Result<SlowFigures>>,
    slow_back: Option<ComebackFigures>,
) -> Report {
    let c = &fres.checker.counts;
    let mut notes: Vec<String> = fres.checker.notes.clone();
    if f.end.server_exited {
        notes.insert(0, "the server exited during the run".to_string());
    }
    notes.extend(published.notes.iter().cloned());
    notes.extend(fres.notes.iter().cloned());
    let server_stats = f.end.stats.unwrap_or_else(|e| {
        notes.push(format!("GET /stats: {e}"));
        Vec::new()
    });
    let slow = match slow_fig {
        Some(Ok(f)) => Some(f),
        Some(Err(e)) => {
            notes.push(format!("slow readers: {e:#}"));
            None
        }
        None => None,
    };
    let resumes = a.transport.resumes();
    if let Some(b) = &slow_back {
        notes.extend(b.notes.iter().cloned());
    }
    let (lost, churn) = lost_and_churn(a.churn, resumes, &published, &fres);
    Report {
        conns: fres.connected,
        closed: fres.closed,
        connect_s: f.connect_s,
        attempted: published.attempted,
        sent: published.ok,
        publish_failed: published.failed + published.bad_answers,
        server_delivered: published.delivered_sum,
        delivered: fres.checker.received.count(),
        lost,
        chunks: c.chunks,
        heartbeats: c.heartbeats,
        duplicates: c.duplicates,
        out_of_order: c.out_of_order,
        id_mismatch: c.id_mismatch,
        garbled: c.garbled,
        publish_s: published.elapsed.as_secs_f64(),
        drain_ms: f.drain_ms,
        latency: Latency::from_histogram(&fres.checker.latency_us),
        server_rss_idle_bytes: f.base.rss_idle,
        server_rss_loaded_bytes: f.rss_loaded,
        rss_stable: f.rss_stable,
        rss_per_conn_bytes: f.rss_loaded.saturating_sub(f.base.rss_idle) / fres.connected.max(1),
        server_rss_end_bytes: f.end.rss,
        server_exited: f.end.server_exited,
        server_cpu_s: f.end.cpu_s - f.base.cpu_s,
        server_cpu_publish_s: f.end.cpu_s - f.cpu_publish_start,
        server_stats,
        notes,
        churn,
        slow,
        after_leave: f.after_leave,
        resumed: fres.resume.map(|r| (a.transport, r)),
        slow_back,
    }
}

/// Messages lost: with churn and a transport that does not resume, those not excused by a
/// subscriber's absence (and the churn figures); otherwise every message answered `200`
/// and not received (a resume must get what was missed: nothing is excused).
fn lost_and_churn(
    per_min: f64,
    resumes: bool,
    published: &MsggenResult,
    fres: &FloodResult,
) -> (u64, Option<ChurnFigures>) {
    let missing = published.ok_seqs.count_missing_from(&fres.checker.received);
    if per_min <= 0.0 {
        return (missing, None);
    }
    let (unexcused, excused, excused_received) =
        churn::account(&published.sends, &fres.checker.received, &fres.gaps);
    let lost = if resumes { missing } else { unexcused };
    let fig = ChurnFigures {
        per_min,
        churned: fres.churned,
        reconnected: fres.reconnected,
        excused,
        excused_received,
    };
    (lost, Some(fig))
}

/// Prints the report (JSON or text); fails if it did not pass.
fn finish(report: &Report, json: bool) -> Result<()> {
    if json {
        println!("{}", report.json());
    } else {
        println!("{}", report.text());
    }
    if !report.passed() {
        bail!(
            "load test failed: {} lost, {} publishes failed, {} subscribers closed, {} bad chunks{}{}",
            report.lost,
            report.publish_failed,
            report.closed,
            report.duplicates + report.out_of_order + report.id_mismatch + report.garbled,
            if report.server_exited { ", server exited" } else { "" },
            match &report.churn {
                Some(c) if c.reconnected != c.churned => format!(
                    ", {} churned subscribers not back",
                    c.churned.saturating_sub(c.reconnected)
                ),
                _ => String::new(),
            }
        );
    }
    Ok(())
}
