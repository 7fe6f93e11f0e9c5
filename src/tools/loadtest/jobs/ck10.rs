//! The main job, the seed's CK10 test (see `loadtest/README.md` for each figure), in phases:
//!
//! 1. **Server**: start it as a child; its CPU, idle RSS and open fds as the baseline; the
//!    memory log, if asked for.
//! 2. **Connect**: open `conns` subscribers at a steady rate (bounded: twice the planned time
//!    plus 10 s); wait for the server's RSS to settle.
//! 3. **Slow readers** (`--slow-readers`): open them and start their publisher.
//! 4. **Publish** `rate` messages/s for `duration` s.
//! 5. **Drain**: wait (bounded) for every message answered `200` to arrive.
//! 6. **End**: the server's last readings, every client stopped, the server back to baseline
//!    (every subscriber has gone: it must come back to where it started).
//! 7. **Report** (text or JSON); fail if anything was lost or arrived wrong.
//!
//! Threads: this one orchestrates and reads /proc; the subscriber loop and the publisher
//! loop each run on their own thread; the memory log, if asked for, on a fourth.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::net::TcpStream;

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
use crate::tools::loadtest::msggen::{self, MsggenConfig, MsggenResult, MsggenShared};
use crate::tools::loadtest::report::main_job::Report;
use crate::tools::loadtest::report::Latency;
use crate::tools::loadtest::slow::{self, BlastConfig, SlowFigures};
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
    drop(slow.socks);
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
    let report = report(&a, figures, published, fres, slow_fig);
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
    let (bin, args) = a.server.command(Vec::new(), a.backend)?;
    let server = ServerGuard::start(&bin, &args, a.server.server_log.as_ref())?;
    say(&format!(
        "server pid {}: subscribers on {}, publish on {}",
        server.pid, server.sub_addr, server.pub_addr
    ));
    Ok(server)
}

/// The server before any subscriber: CPU seconds, settled RSS (bytes), open fds.
struct Baseline {
    cpu_s: f64,
    rss_idle: u64,
    fds: u64,
}

impl Baseline {
    fn read(pid: u32) -> Result<Baseline> {
        let cpu_s = cpu_seconds(pid)?;
        let (rss_idle, _) = wait_rss_stable(pid, RSS_SETTLE)?;
        Ok(Baseline {
            cpu_s,
            rss_idle,
            fds: churn::fd_count(pid),
        })
    }
}

/// The memory log's thread, when `--mem-log` is given.
struct MemLog {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MemLog {
    fn start(a: &MainArgs, server: &ServerGuard) -> Result<MemLog> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = match &a.mem_log {
            Some(path) => {
                let every = Duration::from_secs(a.mem_interval.unwrap_or(1).max(1));
                let conns = memlog::ConnCount::Stats(server.pub_addr, server.sub_addr.port());
                Some(memlog::spawn(
                    path,
                    every,
                    Some(server.pid),
                    conns,
                    stop.clone(),
                )?)
            }
            None => None,
        };
        Ok(MemLog { stop, thread })
    }

    fn stop(self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.thread {
            let _ = h.join();
        }
    }
}

/// The subscriber loop on its thread, once every stream is open.
struct Subscribers {
    shared: Arc<FloodShared>,
    thread: JoinHandle<Result<FloodResult>>,
    connect_s: f64,
}

impl Subscribers {
    /// Stops the subscriber loop and returns what it saw.
    fn stop(self) -> Result<FloodResult> {
        stop_flood(&self.shared, self.thread)
    }
}

/// Phase 2: opens `conns` subscriber streams, bounded by twice the planned time plus 10 s.
/// Errors: a connection failed, the budget ran out, or the server exited.
fn connect(a: &MainArgs, server: &mut ServerGuard, total: u64) -> Result<Subscribers> {
    let shared = Arc::new(FloodShared::default());
    let cfg = FloodConfig {
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
    let fs = shared.clone();
    let flood = std::thread::Builder::new()
        .name("flood".into())
        .spawn(move || flood::run(cfg, fs))?;
    let conns = a.connect.conns;
    say(&format!(
        "opening {conns} subscriber streams at {}/s",
        a.connect.connect_rate
    ));
    let t0 = Instant::now();
    let budget = Duration::from_secs_f64(2.0 * conns as f64 / a.connect.connect_rate)
        + Duration::from_secs(10);
    loop {
        let (up, down) = (shared.connected.load(Relaxed), shared.closed.load(Relaxed));
        if up == conns {
            break;
        }
        let why = if up + down >= conns || flood.is_finished() {
            Some(format!("{down} connections failed"))
        } else if t0.elapsed() > budget {
            Some(format!("not done after {:.0} s", budget.as_secs_f64()))
        } else if !server.alive() {
            Some("the server exited".to_string())
        } else {
            None
        };
        if let Some(why) = why {
            let notes = stop_flood(&shared, flood)
                .map(|r| r.notes.join("; "))
                .unwrap_or_default();
            bail!("only {up} of {conns} subscriber streams opened: {why}. {notes}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let connect_s = t0.elapsed().as_secs_f64();
    say(&format!(
        "{conns} streams open in {connect_s:.1} s; waiting for the server's RSS to settle"
    ));
    Ok(Subscribers {
        shared,
        thread: flood,
        connect_s,
    })
}

/// The slow readers' sockets and their publisher (none without `--slow-readers`).
struct SlowLoad {
    socks: Vec<TcpStream>,
    stop: Arc<AtomicBool>,
    blaster: Option<JoinHandle<Result<SlowFigures>>>,
}

impl SlowLoad {
    /// Phase 3: opens the slow readers and starts their publisher.
    fn start(a: &MainArgs, server: &ServerGuard) -> Result<SlowLoad> {
        let stop = Arc::new(AtomicBool::new(false));
        if a.slow_readers == 0 {
            return Ok(SlowLoad {
                socks: Vec::new(),
                stop,
                blaster: None,
            });
        }
        let first_id = a.connect.conns + 1;
        say(&format!(
            "opening {} slow readers (ids {first_id}..={}), which will not read",
            a.slow_readers,
            a.connect.conns + a.slow_readers
        ));
        let socks = slow::open(server.sub_addr, first_id, a.slow_readers)?;
        let cfg = BlastConfig {
            publish: server.pub_addr,
            first_id,
            readers: a.slow_readers,
            msg_bytes: a.slow_msg_bytes,
            rate: a.slow_rate,
            server_pid: server.pid,
        };
        let blaster = Some(slow::spawn_blaster(cfg, stop.clone())?);
        Ok(SlowLoad {
            socks,
            stop,
            blaster,
        })
    }

    /// Stops the slow readers' publisher; its figures, if it ran.
    fn stop_publisher(&mut self) -> Option<Result<SlowFigures>> {
        self.stop.store(true, Relaxed);
        self.blaster.take().map(|h| {
            h.join()
                .map_err(|_| anyhow!("the slow-reader publisher panicked"))
                .and_then(|r| r)
        })
    }
}

/// Phase 4: `rate` messages/s for `duration` s from `parallel` generators, bounded by its own
/// deadline (duration + tail). Errors: the publisher's.
fn publish(a: &MainArgs, server: &ServerGuard, total: u64) -> Result<MsggenResult> {
    say(&format!(
        "publishing {total} messages at {}/s from {} generators",
        a.rate, a.parallel
    ));
    let cfg = MsggenConfig {
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
    let shared = Arc::new(MsggenShared::default());
    let gen = std::thread::Builder::new()
        .name("msggen".into())
        .spawn(move || msggen::run(cfg, shared))?;
    gen.join()
        .map_err(|_| anyhow!("the publisher thread panicked"))
        .and_then(|r| r)
}

/// Phase 5: waits (at most `drain_ms`) until `sent` messages have been received; the
/// milliseconds waited.
fn drain(subs: &FloodShared, sent: u64, drain_ms: u64) -> u64 {
    let d0 = Instant::now();
    while subs.received.load(Relaxed) < sent && d0.elapsed() < Duration::from_millis(drain_ms) {
        std::thread::sleep(Duration::from_millis(5));
    }
    d0.elapsed().as_millis() as u64
}

/// The server's last readings, before the clients stop.
struct End {
    server_exited: bool,
    cpu_s: f64,
    rss: u64,
    stats: Result<Vec<(String, u64)>>,
}

impl End {
    /// Phase 6. A server that died mid-run is a failure to report, not a reason to lose the
    /// report: its zombie still has /proc/PID/stat (CPU) but no VmRSS.
    fn read(server: &mut ServerGuard, cpu_publish_start: f64) -> End {
        End {
            server_exited: !server.alive(),
            cpu_s: cpu_seconds(server.pid).unwrap_or(cpu_publish_start),
            rss: rss_bytes(server.pid).unwrap_or(0),
            stats: answer::fetch_stats(server.pub_addr),
        }
    }
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
    let (lost, churn) = lost_and_churn(a.churn, &published, &fres);
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
    }
}

/// Messages lost: with churn, those not excused by a subscriber's absence (and the churn
/// figures); without, every message answered `200` and not received.
fn lost_and_churn(
    per_min: f64,
    published: &MsggenResult,
    fres: &FloodResult,
) -> (u64, Option<ChurnFigures>) {
    if per_min <= 0.0 {
        return (
            published.ok_seqs.count_missing_from(&fres.checker.received),
            None,
        );
    }
    let (lost, excused, excused_received) =
        churn::account(&published.sends, &fres.checker.received, &fres.gaps);
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
            "load test failed: {} lost, {} publishes failed, {} subscribers closed, {} bad chunks{}",
            report.lost,
            report.publish_failed,
            report.closed,
            report.duplicates + report.out_of_order + report.id_mismatch + report.garbled,
            if report.server_exited { ", server exited" } else { "" }
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
