//! The main job, the seed's CK10 test: start the server as a child, open `conns` subscribers
//! at a steady rate, wait for its RSS to settle, publish `rate` messages/s for `duration` s,
//! drain, and report (see `loadtest/README.md` for each figure).
//!
//! Threads: this one orchestrates and reads /proc; the subscriber loop and the publisher
//! loop each run on their own thread; the memory log, if asked for, on a fourth.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use super::halves::{check_fd_limit, check_positive};
use crate::tools::loadtest::answer;
use crate::tools::loadtest::churn::{self, AfterLeave, ChurnFigures};
use crate::tools::loadtest::cli::MainArgs;
use crate::tools::loadtest::flood::{self, FloodConfig, FloodResult, FloodShared};
use crate::tools::loadtest::framing::Framing;
use crate::tools::loadtest::host::child::ServerGuard;
use crate::tools::loadtest::host::memlog;
use crate::tools::loadtest::host::proc::{cpu_seconds, rss_bytes, wait_rss_stable};
use crate::tools::loadtest::msggen::{self, MsggenConfig, MsggenShared};
use crate::tools::loadtest::report::main_job::Report;
use crate::tools::loadtest::report::Latency;
use crate::tools::loadtest::slow::{self, BlastConfig};
use crate::tools::loadtest::url::UrlTemplate;

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
pub fn run(a: MainArgs) -> Result<()> {
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
    let (bin, args) = a.server.command(Vec::new(), a.backend)?;
    let mut server = ServerGuard::start(&bin, &args, a.server.server_log.as_ref())?;
    let pid = server.pid;
    say(&format!(
        "server pid {pid}: subscribers on {}, publish on {}",
        server.sub_addr, server.pub_addr
    ));
    let cpu_start = cpu_seconds(pid)?;
    let (rss_idle, _) = wait_rss_stable(pid, RSS_SETTLE)?;
    let fds_baseline = churn::fd_count(pid);

    let stop_log = Arc::new(AtomicBool::new(false));
    let mem_log = match &a.mem_log {
        Some(path) => {
            let every = Duration::from_secs(a.mem_interval.unwrap_or(1).max(1));
            let conns = memlog::ConnCount::Stats(server.pub_addr, server.sub_addr.port());
            Some(memlog::spawn(
                path,
                every,
                Some(pid),
                conns,
                stop_log.clone(),
            )?)
        }
        None => None,
    };
    let total = (a.rate * a.duration).round() as u64;
    let fshared = Arc::new(FloodShared::default());
    let fcfg = FloodConfig {
        url: UrlTemplate::local(server.sub_addr, "/test/{id}")?,
        first_id: 1,
        count: a.connect.conns,
        connect_rate: a.connect.connect_rate,
        max_connecting: a.connect.max_connecting.max(1),
        duration: None,
        stats_to_stderr: a.json,
        strict: true,
        seq_limit: total,
        source_addrs: a.source_addrs,
        framing: Framing::Seed,
        latency_from_seq: 0,
        local_seqs: None,
        churn_per_min: a.churn,
    };
    let fs = fshared.clone();
    let flood = std::thread::Builder::new()
        .name("flood".into())
        .spawn(move || flood::run(fcfg, fs))?;

    // Connect phase, bounded: twice the planned time plus 10 s.
    say(&format!(
        "opening {} subscriber streams at {}/s",
        a.connect.conns, a.connect.connect_rate
    ));
    let t0 = Instant::now();
    let budget = Duration::from_secs_f64(2.0 * a.connect.conns as f64 / a.connect.connect_rate)
        + Duration::from_secs(10);
    loop {
        let (up, down) = (
            fshared.connected.load(Relaxed),
            fshared.closed.load(Relaxed),
        );
        if up == a.connect.conns {
            break;
        }
        let why = if up + down >= a.connect.conns || flood.is_finished() {
            Some(format!("{down} connections failed"))
        } else if t0.elapsed() > budget {
            Some(format!("not done after {:.0} s", budget.as_secs_f64()))
        } else if !server.alive() {
            Some("the server exited".to_string())
        } else {
            None
        };
        if let Some(why) = why {
            let notes = stop_flood(&fshared, flood)
                .map(|r| r.notes.join("; "))
                .unwrap_or_default();
            bail!(
                "only {up} of {} subscriber streams opened: {why}. {notes}",
                a.connect.conns
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let connect_s = t0.elapsed().as_secs_f64();
    say(&format!(
        "{} streams open in {connect_s:.1} s; waiting for the server's RSS to settle",
        a.connect.conns
    ));
    let (rss_loaded, rss_stable) = wait_rss_stable(pid, RSS_SETTLE)?;
    let slow_socks = if a.slow_readers > 0 {
        say(&format!(
            "opening {} slow readers (ids {}..={}), which will not read",
            a.slow_readers,
            a.connect.conns + 1,
            a.connect.conns + a.slow_readers
        ));
        slow::open(server.sub_addr, a.connect.conns + 1, a.slow_readers)?
    } else {
        Vec::new()
    };
    let cpu_publish_start = cpu_seconds(pid)?;
    let stop_blast = Arc::new(AtomicBool::new(false));
    let blaster = if a.slow_readers > 0 {
        Some(slow::spawn_blaster(
            BlastConfig {
                publish: server.pub_addr,
                first_id: a.connect.conns + 1,
                readers: a.slow_readers,
                msg_bytes: a.slow_msg_bytes,
                rate: a.slow_rate,
                server_pid: pid,
            },
            stop_blast.clone(),
        )?)
    } else {
        None
    };

    // Publish phase, bounded by its own deadline (duration + tail).
    say(&format!(
        "publishing {total} messages at {}/s from {} generators",
        a.rate, a.parallel
    ));
    let mcfg = MsggenConfig {
        url: UrlTemplate::local(server.pub_addr, "/send/{id}")?,
        parallel: a.parallel,
        total,
        interval: Duration::from_secs_f64(a.parallel as f64 / a.rate),
        max_id: a.connect.conns,
        ids_by_seq: None,
        first_seq: 0,
        seed: a.seed,
        tail: PUBLISH_TAIL,
        record_sends: a.churn > 0.0,
    };
    let mshared = Arc::new(MsggenShared::default());
    let ms = mshared.clone();
    let gen = std::thread::Builder::new()
        .name("msggen".into())
        .spawn(move || msggen::run(mcfg, ms))?;
    let published = gen
        .join()
        .map_err(|_| anyhow!("the publisher thread panicked"));
    stop_blast.store(true, Relaxed);
    let slow_fig = blaster.map(|h| {
        h.join()
            .map_err(|_| anyhow!("the slow-reader publisher panicked"))
            .and_then(|r| r)
    });
    let published = match published.and_then(|r| r) {
        Ok(r) => r,
        Err(e) => {
            let _ = stop_flood(&fshared, flood);
            return Err(e);
        }
    };

    // Drain: wait (bounded) until every message answered 200 has been received.
    let d0 = Instant::now();
    while fshared.received.load(Relaxed) < published.ok
        && d0.elapsed() < Duration::from_millis(a.drain_ms)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let drain_ms = d0.elapsed().as_millis() as u64;
    // A server that died mid-run is a failure to report, not a reason to lose the report: its
    // zombie still has /proc/PID/stat (CPU) but no VmRSS.
    let server_exited = !server.alive();
    let cpu_end = cpu_seconds(pid).unwrap_or(cpu_publish_start);
    let rss_end = rss_bytes(pid).unwrap_or(0);
    let server_stats = answer::fetch_stats(server.pub_addr);
    let fres = stop_flood(&fshared, flood)?;
    drop(slow_socks);
    stop_log.store(true, Relaxed);
    if let Some(h) = mem_log {
        let _ = h.join();
    }
    // Every subscriber has gone (the flood loop's sockets closed with it): the server must
    // come back to where it started.
    let after_leave = (!server_exited).then(|| {
        AfterLeave::wait(
            pid,
            server.sub_addr,
            server.pub_addr,
            fds_baseline,
            LEAVE_SETTLE,
        )
    });
    drop(server); // kills the server by pid and reaps it

    let c = &fres.checker.counts;
    let mut notes: Vec<String> = fres.checker.notes.clone();
    if server_exited {
        notes.insert(0, "the server exited during the run".to_string());
    }
    notes.extend(published.notes.iter().cloned());
    notes.extend(fres.notes.iter().cloned());
    let server_stats = server_stats.unwrap_or_else(|e| {
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
    let (lost, churn) = if a.churn > 0.0 {
        let (lost, excused, excused_received) =
            churn::account(&published.sends, &fres.checker.received, &fres.gaps);
        let fig = ChurnFigures {
            per_min: a.churn,
            churned: fres.churned,
            reconnected: fres.reconnected,
            excused,
            excused_received,
        };
        (lost, Some(fig))
    } else {
        (
            published.ok_seqs.count_missing_from(&fres.checker.received),
            None,
        )
    };
    let report = Report {
        conns: fres.connected,
        closed: fres.closed,
        connect_s,
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
        drain_ms,
        latency: Latency::from_histogram(&fres.checker.latency_us),
        server_rss_idle_bytes: rss_idle,
        server_rss_loaded_bytes: rss_loaded,
        rss_stable,
        rss_per_conn_bytes: rss_loaded.saturating_sub(rss_idle) / fres.connected.max(1),
        server_rss_end_bytes: rss_end,
        server_exited,
        server_cpu_s: cpu_end - cpu_start,
        server_cpu_publish_s: cpu_end - cpu_publish_start,
        server_stats,
        notes,
        churn,
        slow,
        after_leave,
    };
    if a.json {
        println!("{}", report.json());
    } else {
        println!("{}", report.text());
    }
    if !report.passed() {
        bail!(
            "load test failed: {} lost, {} publishes failed, {} subscribers closed, {} bad chunks{}",
            report.lost,
            report.publish_failed,
            report.closed,
            report.duplicates + report.out_of_order + report.id_mismatch + report.garbled,
            if server_exited { ", server exited" } else { "" }
        );
    }
    Ok(())
}

/// Stops the subscriber loop and returns what it saw.
fn stop_flood(shared: &FloodShared, h: JoinHandle<Result<FloodResult>>) -> Result<FloodResult> {
    shared.stop.store(true, Relaxed);
    h.join()
        .map_err(|_| anyhow!("the subscriber thread panicked"))?
}
