//! `uring-comet loadtest million`: one server process holding a million subscribers.
//!
//! 1. Start the server as a child (`serve --listen 127.0.0.1:0 --publish-listen 127.0.0.1:0
//!    --max-conns <conns + 5 % + 1000> --heartbeat 0`), read its idle RSS once stable.
//! 2. Connect: RLIMIT_NOFILE is 20,000 per process here and cannot be raised, so the
//!    subscribers are spread over worker processes ([`million_worker`](crate::tools::loadtest::client::million_worker),
//!    at most `--per-worker` each), worker `k` connecting from 127.0.0.(2+k) with
//!    IP_BIND_ADDRESS_NO_PORT (the 4-tuple picks the port: no source address needs more than
//!    its ~28,000 ephemeral ports), at `--connect-rate / workers` per second each with at most
//!    `--max-connecting` in flight each. Progress bar (connected / failed / rate) on stderr.
//! 3. With every stream open: server RSS once stable, the workers' RSS and PSS, kernel memory.
//! 4. Deliver: pipelined keep-alive publishers `POST /send/<id>` for every id exactly once,
//!    sequence number = id; each worker checks that each of its connections gets exactly
//!    `Recvd msg #1: '<id>:<id>:<t>'<br/>\n`.
//!    With `--drain-after`, then the hand-over ([`drain`]): a `--takeover` server, SIGTERM
//!    to the first, the clients' closes and reconnects per second.
//! 5. Close: the workers check every connection, close all with SO_LINGER 0 (resets: no
//!    million TIME_WAIT sockets) and report; the server is killed; kernel memory once more.
//!
//! Here: the flags and [`run`]; [`connect`]: phase 2; [`deliver`]: phase 4; [`fleet`]: the
//! worker processes and the machine's memory; [`progress`]: the progress bar.
//!
//! Every phase is bounded in time; every child (workers, server) is ended by pid on every
//! exit path (Drop guards, PR_SET_PDEATHSIG). Exit status is non-zero on any loss.

mod connect;
mod deliver;
mod drain;
pub(crate) mod fleet;
mod progress;
mod split;

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;

use super::halves::check_fd_limit;
use crate::tools::loadtest::cli::{ConnectFlags, ServerFlags};
use crate::tools::loadtest::client::million_worker::{LAT_BUCKETS, RECORD_BYTES};
use crate::tools::loadtest::host::child::ServerGuard;
use crate::tools::loadtest::host::proc::{
    cpu_seconds, cpu_seconds_sum, loadavg, nofile_short_of, rss_bytes, wait_rss_stable,
};
use crate::tools::loadtest::report::million::{MillionReport, ServerDeath};
use connect::{connect_phase, plans};
use deliver::{after_delivery, deliver};
pub(crate) use drain::DrainFlags;
use fleet::{source_addr, Fleet, MemInfo, PeakSampler};

/// `--max-connecting`'s help in `million`.
const MAX_CONNECTING_HELP: &str = "Most connects in flight (sent, no `200` head yet), all workers together; each worker gets an equal share (at least 16). Connects are latency-bound on a loaded box: this, not the rate, usually sets the pace. Keep it below the server's accept queues (2 listeners x min(65,535, net.core.somaxconn))";

/// Flags of `uring-comet loadtest million`.
#[derive(Args, Debug)]
#[command(
    mut_arg("conns", |a| a.default_value("1000000").help("Subscribers, ids 1..=conns")),
    mut_arg("connect_rate", |a| a.default_value("30000")
        .help("Subscriber connects started per second, all workers together")),
    mut_arg("max_connecting", |a| a.default_value("3000").help(MAX_CONNECTING_HELP)),
    mut_arg("server_args", |a| a.help("Any other flag for the server, repeatable")),
)]
pub struct MillionArgs {
    /// Subscribers connecting, from all workers together.
    #[command(flatten)]
    pub connect: ConnectFlags,
    /// Most subscribers per worker process (RLIMIT_NOFILE is 20,000 per process).
    #[arg(long, default_value_t = 19_500)]
    pub per_worker: u64,
    /// First worker's first source address; worker k uses the `--sources-per-worker`
    /// addresses from this + k x sources-per-worker on.
    #[arg(long, default_value = "127.0.0.2")]
    pub first_source: Ipv4Addr,
    /// Source addresses per worker. connect() looks for a free port among the even ports of
    /// the range first and only then the odd ones, so once one (source, destination) pair
    /// holds half of the range (14,116 of 32768-60999) every further connect scans the whole
    /// even half: measured here, connects fell from ~9,000/s to ~300/s at 14,200 per source.
    /// Two sources keep each pair below 10,000.
    #[arg(long, default_value_t = 2)]
    pub sources_per_worker: u32,
    /// Pipelined publisher connections.
    #[arg(long, default_value_t = 8)]
    pub publishers: usize,
    /// Publish requests in flight per publisher connection.
    #[arg(long, default_value_t = 64)]
    pub depth: usize,
    /// The server's `--heartbeat` (seconds, 0 = off). Off by default: at a million streams a
    /// 30 s heartbeat is 33,000 chunks/s, a good share of this 2-core box, mixed into the
    /// connect and delivery figures.
    #[arg(long, default_value_t = 0, value_parser = crate::tools::duration::parse_whole_secs)]
    pub heartbeat: u64,
    /// The server under test.
    #[command(flatten)]
    pub server: ServerFlags,
    /// The hand-over drain after the delivery (`--drain-after`).
    #[command(flatten)]
    pub drain: DrainFlags,
    /// Print the report as one JSON object on stdout (progress stays on stderr).
    #[arg(long)]
    pub json: bool,
    /// Subscriber tokens: the server requires an HS256 token (a fresh secret), and each
    /// worker signs one per connection (`sub` its id) as it connects.
    #[arg(long)]
    pub sub_token: bool,
    /// `--hold-peer` and `--split`: the generator's own memory.
    #[command(flatten)]
    pub split: split::SplitFlags,
}

/// Longest wait for the server's RSS to settle.
const SETTLE: Duration = Duration::from_secs(10);
/// The connect phase stops if no connection is made or fails for this long.
const STALL: Duration = Duration::from_secs(20);

/// Progress for people, on stderr.
fn say(msg: &str) {
    eprintln!("million: {msg}");
}

/// Runs `loadtest million`; fails (non-zero exit) on any loss, after printing the report.
pub(crate) fn run(a: MillionArgs) -> Result<()> {
    let baseline = split::baseline(&a, run_once)?;
    let mut r = run_once(&a, a.split.hold_peer)?;
    split::apply(&mut r, baseline);
    finish(&a, &r)
}

/// One run: subscribers held by the server, or with `hold` by the hold peer (no delivery).
fn run_once(a: &MillionArgs, hold: bool) -> Result<MillionReport> {
    let (workers, per) = validate(a)?;
    let mut r = new_report(a, workers, per);
    r.hold_peer = hold;
    let peak = PeakSampler::start()?;
    // 1. The server.
    let bin = std::env::current_exe()?;
    let (mut server, cpu_start) = start_server(a, &mut r, workers, per, hold)?;
    let spid = server.pid;
    // 2. Connect, once the host's memory is still (the breakdown's first reading).
    let (waited, settled) = split::settle_host();
    say(&format!(
        "host memory {} after {waited:.0} s",
        if settled { "settled" } else { "still moving" }
    ));
    if !settled {
        r.notes.push(format!(
            "host memory still moving after {waited:.0} s: the breakdown's residual carries it"
        ));
    }
    let snap0 = split::snapshot(&mut r, 0);
    let me = std::process::id();
    let client_cpu0 = cpu_seconds(me)?;
    let mut fleet = connect(a, &bin, &mut server, workers, per, &mut r)?;
    let worker_pids = fleet.pids();
    // 3. Everything connected: memory.
    // A server that died has no RSS left to read: the report says how it ended.
    r.server_rss_loaded = wait_rss_stable(spid, SETTLE).map_or(0, |(rss, _)| rss);
    let snap1 = split::snapshot(&mut r, 1);
    split::connected_memory(&mut r, &worker_pids, [&snap0, &snap1]);
    let cpu_connected = cpu_seconds(spid).unwrap_or(cpu_start);
    let client_cpu1 = cpu_seconds(me)? + cpu_seconds_sum(&worker_pids);
    r.server_cpu[0] = cpu_connected - cpu_start;
    r.client_cpu[0] = client_cpu1 - client_cpu0;
    // 4. One message to every id.
    if r.connected > 0 && server.alive() && !hold {
        // Even when the connect phase stopped short: what did arrive on the streams held?
        deliver(a, &fleet, &mut server, &mut r)?;
    }
    (!hold).then(|| after_delivery(&server, &mut r));
    let cpu_delivered = cpu_seconds(spid).unwrap_or(cpu_connected);
    let client_cpu2 = cpu_seconds(me)? + cpu_seconds_sum(&worker_pids);
    r.server_cpu[1] = cpu_delivered - cpu_connected;
    r.client_cpu[1] = client_cpu2 - client_cpu1;
    r.server_cpu[2] = cpu_delivered - cpu_start;
    r.parent_rss = rss_bytes(me).unwrap_or(0);
    r.server_exited = !server.alive();
    r.death = server
        .status()
        .map(|st| ServerDeath::from_status(spid, st, r.connected));
    // 4b. With --drain-after: the hand-over to a --takeover server.
    let takeover = match a.drain.drain_after {
        Some(hold_s) if !r.server_exited && !hold => {
            let head = server_head(a);
            Some(drain::drain_phase(
                a,
                hold_s,
                &fleet,
                &mut server,
                head,
                &mut r,
            )?)
        }
        _ => None,
    };
    // 5. Close: verdicts, resets, then the server.
    let worker_cpu_total = close(a, &mut fleet, &mut r);
    r.client_cpu[2] = cpu_seconds(me)? - client_cpu0 + worker_cpu_total;
    drop(fleet);
    drop(server);
    drop(takeover);
    std::thread::sleep(Duration::from_secs(1));
    r.mem[3] = MemInfo::read();
    r.machine_peak = peak.used.load(Relaxed);
    r.tcp_mem_peak = peak.tcp_mem.load(Relaxed);
    drop(peak);
    r.loadavg[1] = loadavg();
    Ok(r)
}

/// Rejects flags the job cannot run with and raises the fd limit the workers inherit; the
/// number of workers and the subscribers per worker.
fn validate(a: &MillionArgs) -> Result<(u64, u64)> {
    if a.connect.conns == 0 || a.per_worker == 0 || a.publishers == 0 || a.depth == 0 {
        bail!("--conns, --per-worker, --publishers and --depth must be at least 1");
    }
    if !(a.connect.connect_rate.is_finite() && a.connect.connect_rate > 0.0) {
        bail!("--connect-rate must be a positive number");
    }
    check_fd_limit(a.publishers as u64 * 2 + 256)?;
    // The workers inherit this process's (raised) limit; each needs its streams + a few.
    if let Some(limit) = nofile_short_of(a.per_worker + 32) {
        bail!(
            "--per-worker {} needs an fd limit of {} per worker; RLIMIT_NOFILE is {limit}",
            a.per_worker,
            a.per_worker + 32
        );
    }
    let workers = a.connect.conns.div_ceil(a.per_worker);
    Ok((workers, a.connect.conns.div_ceil(workers)))
}

/// The report before anything ran: the run's shape, the load average and the machine's
/// memory in use.
fn new_report(a: &MillionArgs, workers: u64, per: u64) -> MillionReport {
    let mut r = MillionReport {
        conns: a.connect.conns,
        workers: workers as usize,
        per_worker: per,
        shards: a.server.shards,
        heartbeat: a.heartbeat,
        connect_rate_asked: a.connect.connect_rate,
        lat: vec![0; LAT_BUCKETS],
        client_record_bytes: RECORD_BYTES,
        ..MillionReport::default()
    };
    r.loadavg[0] = loadavg();
    say(&format!(
        "uptime before: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    ));
    r.machine_before = MemInfo::read().used();
    r
}

/// Phase 1: the server as a child (`--max-conns` conns + 5 % + 1000, `--heartbeat`), its
/// idle RSS once stable (into `r`); returns it and its CPU seconds at the start.
fn start_server(
    a: &MillionArgs,
    r: &mut MillionReport,
    workers: u64,
    per: u64,
    hold: bool,
) -> Result<(ServerGuard, f64)> {
    let (server_bin, args) = a.server.command(server_head(a), None)?;
    let server = split::start(hold, &server_bin, &args, a.server.server_log.as_ref())?;
    let spid = server.pid;
    let cpu_start = cpu_seconds(spid)?;
    r.server_rss_idle = wait_rss_stable(spid, SETTLE)?.0;
    say(&format!(
        "server pid {spid} on {} / {}, idle RSS {:.1} MiB; {workers} workers x <= {per} from {}..{}",
        server.sub_addr,
        server.pub_addr,
        r.server_rss_idle as f64 / 1048576.0,
        a.first_source,
        source_addr(a.first_source, workers as u32 * a.sources_per_worker.max(1) - 1)
    ));
    Ok((server, cpu_start))
}

/// The job's own server flags: `--max-conns` conns + 5 % + 1000, `--heartbeat`, and with
/// `--drain-after` the `--drain-period`.
fn server_head(a: &MillionArgs) -> Vec<String> {
    let mut head = vec![
        "--max-conns".to_string(),
        (a.connect.conns + a.connect.conns / 20 + 1000).to_string(),
        "--heartbeat".to_string(),
        a.heartbeat.to_string(),
    ];
    head.extend(a.drain.server_args());
    if a.sub_token {
        let path = connect::token_secret_path();
        let secret = crate::auth::sign::Signer::generate("hs256", "");
        if secret.is_ok_and(|s| std::fs::write(&path, &s.server_file).is_ok()) {
            head.extend(["--sub-jwt-secret-file".into(), path.display().to_string()]);
        }
    }
    head
}

/// Phase 2: the worker processes connect every subscriber; how far they got goes into `r`
/// (a connect phase stopped short is a note, not an error).
fn connect(
    a: &MillionArgs,
    bin: &Path,
    server: &mut ServerGuard,
    workers: u64,
    per: u64,
    r: &mut MillionReport,
) -> Result<Fleet> {
    let t0 = Instant::now();
    let mut fleet = Fleet::start(bin, server.sub_addr, &plans(a, workers, per))?;
    let connected = connect_phase(a, &mut fleet, server, t0);
    let p = fleet.progress();
    (r.connected, r.connect_failed, r.closed) = (p.connected, p.failed, p.closed);
    r.connect_s = connected
        .as_ref()
        .map_or(t0.elapsed(), |d| *d)
        .as_secs_f64();
    if let Err(e) = &connected {
        r.connect_stopped = Some(e.to_string());
    }
    say(&format!(
        "{} of {} connected in {:.1} s ({:.0}/s), {} failed",
        r.connected,
        a.connect.conns,
        r.connect_s,
        r.connect_rate(),
        r.connect_failed
    ));
    Ok(fleet)
}

/// Phase 5: every worker checks its connections, closes them with resets and gives its
/// verdict; the verdicts summed into `r`. Returns the workers' CPU seconds.
fn close(a: &MillionArgs, fleet: &mut Fleet, r: &mut MillionReport) -> f64 {
    say("closing every connection (SO_LINGER 0)");
    let verdicts = fleet.close(Duration::from_secs(60));
    let mut worker_cpu_total = 0.0;
    let mut closed = 0;
    (r.exact, r.missing, r.extra, r.bad) = (0, 0, 0, 0);
    for (pid, v) in &verdicts {
        let Some(v) = v else {
            r.notes.push(format!("worker {pid} gave no verdict"));
            continue;
        };
        r.exact += v.exact;
        r.missing += v.missing;
        r.extra += v.extra;
        r.bad += v.bad;
        r.heartbeats += v.heartbeats;
        closed += v.closed;
        r.workers_hwm += v.hwm;
        worker_cpu_total += v.cpu_ms as f64 / 1000.0;
        for (b, n) in v.lat.iter().enumerate() {
            if let Some(slot) = r.lat.get_mut(b) {
                *slot += n;
            }
        }
        for n in &v.notes {
            if r.notes.len() < 12 {
                r.notes.push(format!("worker {pid}: {n}"));
            }
        }
    }
    let gave: u64 = verdicts
        .iter()
        .filter_map(|(_, v)| v.as_ref().map(|v| v.count))
        .sum();
    r.missing += a.connect.conns.saturating_sub(gave);
    r.closed = r.closed.max(closed);
    worker_cpu_total
}

/// Prints the report (with `--json`, the text on stderr and the JSON on stdout); fails on
/// any loss.
fn finish(a: &MillionArgs, r: &MillionReport) -> Result<()> {
    let text = r.text();
    if a.json {
        eprintln!("{text}");
        println!("{}", r.json());
    } else {
        println!("{text}");
    }
    if !r.passed() {
        bail!(
            "loss: {} of {} connected, {} missing, {} extra, {} bad, {} publishes failed",
            r.connected,
            a.connect.conns,
            r.missing,
            r.extra,
            r.bad,
            r.publish_failed
        );
    }
    Ok(())
}
