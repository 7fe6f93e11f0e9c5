//! `loadtest --nodes N`: the main job on a local cluster. Starts redis-server on a free port
//! ([`redis_server`](crate::tools::loadtest::host::redis_server)) and N server nodes on loopback with `--cluster`, spreads the subscribers
//! over the nodes (node k holds an equal block of the ids 1..=conns, or with `--cluster-mode
//! affine` the ids whose bucket it owns), publishes through every node (node k's generators
//! send an equal share of the messages, to ids drawn from all of 1..=conns, so with N nodes
//! (N-1)/N of the deliveries cross Redis), checks every chunk, and reports lost messages,
//! latency split into local deliveries (published on the subscriber's node) and remote ones
//! (published on another node) with the added p99, and each node's inbound records from
//! Redis against its share (sent / N).
//!
//! Phases of [`run`]:
//! 1. **Cluster**: redis-server, then N nodes; each must say `cluster_up` in its `/stats`.
//! 2. **Connect**: node k holds ids `share(conns, N, k) + 1` (`--cluster-mode broadcast`)
//!    or the ids whose bucket it owns (`affine`; [`placement`]), one subscriber loop per node.
//! 3. **Publish**: node k's generators send `share(total, N, k)` messages with their own
//!    sequence numbers.
//! 4. **Drain**: wait (bounded) for every message answered `200` to arrive.
//! 5. **End**: each node's CPU and `/stats`, redis-server's CPU; the subscribers stopped.
//! 6. **Report** ([`ClusterReport`]), merged over the nodes; fail if anything was lost.
//!
//! Threads: one flood and one msggen per node, this one orchestrating.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

mod placement;
mod start;

use super::halves::{check_fd_limit, check_positive};
use crate::cluster::affine::ClusterMode;
use crate::tools::loadtest::cli::MainArgs;
use crate::tools::loadtest::client::flood::{self, FloodConfig, FloodResult, FloodShared};
use crate::tools::loadtest::client::msggen::{self, MsggenConfig, MsggenShared};
use crate::tools::loadtest::host::child::ServerGuard;
use crate::tools::loadtest::host::proc::cpu_seconds;
use crate::tools::loadtest::report::cluster::ClusterReport;
use crate::tools::loadtest::report::Latency;
use crate::tools::loadtest::wire::answer;
use crate::tools::loadtest::wire::check::Bitmap;
use crate::tools::loadtest::wire::framing::Framing;
use crate::tools::loadtest::wire::resume::Transport;
use crate::tools::loadtest::wire::url::UrlTemplate;
use placement::{share, Placement};
use start::start_cluster;

/// The `/stats` keys read from each node after the run.
const NODE_STATS: [&str; 12] = [
    "cluster_subscribed_buckets",
    "connections",
    "messages_sent",
    "messages_delivered",
    "rss_bytes",
    "cluster_forwarded",
    "cluster_received",
    "cluster_echoes_dropped",
    "cluster_forward_dropped",
    "cluster_batches",
    "cluster_inbound",
    "cluster_unwanted",
];

/// How long after the last scheduled publish to wait for its answer.
const PUBLISH_TAIL: Duration = Duration::from_secs(2);

fn say(msg: &str) {
    eprintln!("loadtest: {msg}");
}

/// Runs `loadtest --nodes N` (N >= 2); fails if anything was lost or arrived wrong.
pub(crate) fn run(a: MainArgs) -> Result<()> {
    let n = validate(&a)?;
    // 1. Cluster.
    let places = Placement::new(a.cluster_mode, a.connect.conns, n, &a.server.server_args)?;
    let (redis, mut servers) = start_cluster(&a, n)?;
    let cpu0: Vec<f64> = servers
        .iter()
        .map(|s| cpu_seconds(s.pid).unwrap_or(0.0))
        .collect();
    let redis_cpu0 = redis.cpu_seconds();
    let spublish0 = redis.spublish_calls();
    let total = (a.rate * a.duration).round() as u64;
    // 2. Connect.
    let floods = start_floods(&a, &servers, &places, total)?;
    let (floods, connect_s) = wait_connected(&a, floods, &mut servers)?;
    let mut rep = ClusterReport {
        nodes: n,
        mode: match a.cluster_mode {
            ClusterMode::Broadcast => "broadcast",
            ClusterMode::Affine => "affine",
        },
        conns: a.connect.conns,
        connect_s,
        ..ClusterReport::default()
    };
    // 3. Publish.
    let ok_seqs = publish(&a, &servers, total, &mut rep)?;
    // 4. Drain.
    let d0 = Instant::now();
    while received(&floods) < rep.sent && d0.elapsed() < Duration::from_millis(a.drain_ms) {
        std::thread::sleep(Duration::from_millis(5));
    }
    rep.drain_ms = d0.elapsed().as_millis() as u64;
    // 5. End.
    for (k, s) in servers.iter_mut().enumerate() {
        if !s.alive() {
            rep.notes.push(format!("node {k} exited during the run"));
        }
        rep.node_cpu_s
            .push(cpu_seconds(s.pid).unwrap_or(0.0) - cpu0[k]);
        rep.node_stats
            .push(answer::fetch_stats_keys(s.pub_addr, &NODE_STATS).unwrap_or_default());
    }
    let cpu = redis.cpu_seconds();
    rep.redis_cpu_s = cpu.iter().sum::<f64>() - redis_cpu0.iter().sum::<f64>();
    if cpu.len() > 1 {
        let calls = redis.spublish_calls();
        rep.shards = (cpu
            .iter()
            .zip(&redis_cpu0)
            .zip(calls.iter().zip(&spublish0)))
        .map(|((c, c0), (n, n0))| (c - c0, n - n0))
        .collect();
    }
    let results = stop_floods(floods)?;
    // 6. Report.
    merge_subscribers(&results, &ok_seqs, &mut rep);
    drop(servers);
    drop(redis);
    finish(&rep, a.json)
}

/// Rejects flags `--nodes` cannot run with; the number of nodes.
fn validate(a: &MainArgs) -> Result<usize> {
    check_positive(&[
        ("--connect-rate", a.connect.connect_rate),
        ("--rate", a.rate),
        ("--duration", a.duration),
    ])?;
    let n = usize::from(a.nodes);
    if a.connect.conns < n as u64 || a.parallel < n {
        bail!("--conns and --parallel must be at least --nodes ({n})");
    }
    if a.churn > 0.0 || a.slow_readers > 0 {
        bail!("--churn and --slow-readers are not supported with --nodes yet");
    }
    check_fd_limit(a.connect.conns + a.parallel as u64)?;
    Ok(n)
}

/// One subscriber loop per node, on its thread.
type Floods = Vec<(Arc<FloodShared>, JoinHandle<Result<FloodResult>>)>;

/// Phase 2, first half: node k's subscriber loop for its ids (`places`), told
/// which sequence numbers are published on its own node (local deliveries).
fn start_floods(
    a: &MainArgs,
    servers: &[ServerGuard],
    places: &Placement,
    total: u64,
) -> Result<Floods> {
    let n = servers.len();
    let mut floods: Floods = Vec::new();
    for (k, s) in servers.iter().enumerate() {
        let (first_id, count, ids) = places.node(k);
        let (seq0, seqs) = share(total, n as u64, k as u64);
        let part = count as f64 / a.connect.conns as f64;
        let cfg = FloodConfig {
            ids,
            url: UrlTemplate::local(s.sub_addr, "/test/{id}")?,
            first_id,
            count,
            connect_rate: a.connect.connect_rate * part,
            max_connecting: ((a.connect.max_connecting as f64 * part) as u64).max(1),
            duration: None,
            stats_to_stderr: true,
            strict: true,
            seq_limit: total,
            source_addrs: a.source_addrs,
            framing: Framing::Seed,
            transport: Transport::Test,
            latency_from_seq: 0,
            local_seqs: Some(seq0..seq0 + seqs),
            churn_per_min: 0.0,
            tokens: None,
        };
        let shared = Arc::new(FloodShared::default());
        let sh = shared.clone();
        let h = std::thread::Builder::new()
            .name(format!("flood-{k}"))
            .spawn(move || flood::run(cfg, sh))?;
        floods.push((shared, h));
    }
    Ok(floods)
}

/// Phase 2, second half: waits until every stream is open (bounded: twice the planned time
/// plus 10 s); the seconds it took. Errors: a connection failed, the budget ran out or a
/// node exited (the subscriber loops are then stopped).
fn wait_connected(
    a: &MainArgs,
    floods: Floods,
    servers: &mut [ServerGuard],
) -> Result<(Floods, f64)> {
    let conns = a.connect.conns;
    say(&format!(
        "opening {conns} subscriber streams over {} nodes at {}/s",
        servers.len(),
        a.connect.connect_rate
    ));
    let t0 = Instant::now();
    let budget = Duration::from_secs_f64(2.0 * conns as f64 / a.connect.connect_rate)
        + Duration::from_secs(10);
    loop {
        let up: u64 = floods.iter().map(|f| f.0.connected.load(Relaxed)).sum();
        let down: u64 = floods.iter().map(|f| f.0.closed.load(Relaxed)).sum();
        if up == conns {
            break;
        }
        if up + down >= conns || t0.elapsed() > budget || servers.iter_mut().any(|s| !s.alive()) {
            let _ = stop_floods(floods);
            bail!("only {up} of {conns} subscriber streams opened ({down} failed)");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let connect_s = t0.elapsed().as_secs_f64();
    say(&format!("{conns} streams open in {connect_s:.1} s"));
    Ok((floods, connect_s))
}

/// Phase 3: node k's generators send `share(total, n, k)` messages with their own sequence
/// numbers, to ids drawn from all of 1..=conns; their counts go into `rep`. Returns the
/// sequence numbers answered `200`.
fn publish(
    a: &MainArgs,
    servers: &[ServerGuard],
    total: u64,
    rep: &mut ClusterReport,
) -> Result<Bitmap> {
    let n = servers.len() as u64;
    say(&format!(
        "publishing {total} messages at {}/s through {n} nodes from {} generators",
        a.rate, a.parallel
    ));
    let mut gens = Vec::new();
    for (k, s) in servers.iter().enumerate() {
        let (seq0, seqs) = share(total, n, k as u64);
        let (_, parallel) = share(a.parallel as u64, n, k as u64);
        let rate = a.rate * seqs as f64 / total.max(1) as f64;
        let cfg = MsggenConfig {
            url: UrlTemplate::local(s.pub_addr, "/send/{id}")?,
            parallel: parallel as usize,
            total: seqs,
            interval: Duration::from_secs_f64(parallel as f64 / rate.max(1e-9)),
            max_id: a.connect.conns,
            ids_by_seq: None,
            first_seq: seq0,
            seed: a.seed.wrapping_add(k as u64 * 0x9E37_79B9),
            tail: PUBLISH_TAIL,
            record_sends: false,
        };
        let shared = Arc::new(MsggenShared::default());
        gens.push(
            std::thread::Builder::new()
                .name(format!("msggen-{k}"))
                .spawn(move || msggen::run(cfg, shared))?,
        );
    }
    let mut ok_seqs = Bitmap::default();
    let mut publish_s: f64 = 0.0;
    for g in gens {
        let r = g
            .join()
            .map_err(|_| anyhow!("a publisher thread panicked"))??;
        rep.attempted += r.attempted;
        rep.sent += r.ok;
        rep.publish_failed += r.failed + r.bad_answers;
        ok_seqs.union_with(&r.ok_seqs);
        publish_s = publish_s.max(r.elapsed.as_secs_f64());
        rep.notes.extend(r.notes);
    }
    rep.publish_s = publish_s;
    Ok(ok_seqs)
}

/// Messages received so far, all nodes' subscribers together.
fn received(floods: &Floods) -> u64 {
    floods.iter().map(|f| f.0.received.load(Relaxed)).sum()
}

/// Phase 6: the subscriber loops' counts, notes and latencies merged into `rep`; lost is
/// every sequence number answered `200` and received nowhere.
fn merge_subscribers(results: &[FloodResult], ok_seqs: &Bitmap, rep: &mut ClusterReport) {
    let mut received = Bitmap::default();
    let mut hists: Option<[hdrhistogram::Histogram<u64>; 3]> = None;
    for r in results {
        rep.closed += r.closed;
        received.union_with(&r.checker.received);
        let c = &r.checker.counts;
        rep.counts.chunks += c.chunks;
        rep.counts.duplicates += c.duplicates;
        rep.counts.out_of_order += c.out_of_order;
        rep.counts.id_mismatch += c.id_mismatch;
        rep.counts.garbled += c.garbled;
        rep.notes.extend(r.checker.notes.iter().cloned());
        rep.notes.extend(r.notes.iter().cloned());
        let ch = &r.checker;
        match &mut hists {
            None => {
                hists = Some([
                    ch.latency_us.clone(),
                    ch.latency_local_us.clone(),
                    ch.latency_remote_us.clone(),
                ])
            }
            Some([all, local, remote]) => {
                let _ = all.add(&ch.latency_us);
                let _ = local.add(&ch.latency_local_us);
                let _ = remote.add(&ch.latency_remote_us);
            }
        }
    }
    if let Some([all, local, remote]) = &hists {
        rep.all = Latency::from_histogram(all);
        rep.local = Latency::from_histogram(local);
        rep.remote = Latency::from_histogram(remote);
    }
    rep.delivered = received.count();
    rep.lost = ok_seqs.count_missing_from(&received);
}

/// Prints the report (JSON or text); fails if it did not pass.
fn finish(rep: &ClusterReport, json: bool) -> Result<()> {
    if json {
        println!("{}", rep.json());
    } else {
        println!("{}", rep.text());
    }
    if !rep.passed() {
        bail!(
            "cluster load test failed: {} lost, {} publishes failed, {} subscribers closed, {} bad chunks",
            rep.lost,
            rep.publish_failed,
            rep.closed,
            rep.counts.errors()
        );
    }
    Ok(())
}

/// Stops every node's subscriber loop and returns what each saw.
fn stop_floods(
    floods: Vec<(Arc<FloodShared>, JoinHandle<Result<FloodResult>>)>,
) -> Result<Vec<FloodResult>> {
    for f in &floods {
        f.0.stop.store(true, Relaxed);
    }
    floods
        .into_iter()
        .map(|(_, h)| {
            h.join()
                .map_err(|_| anyhow!("a subscriber thread panicked"))?
        })
        .collect()
}
