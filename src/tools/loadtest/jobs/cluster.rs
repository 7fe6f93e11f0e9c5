//! `loadtest --nodes N`: the main job on a local cluster. Starts redis-server on a free port
//! ([`super::redis_server`]) and N server nodes on loopback with `--cluster`, spreads the subscribers
//! over the nodes (node k holds an equal block of the ids 1..=conns), publishes through every
//! node (node k's generators send an equal share of the messages, to ids drawn from all of
//! 1..=conns, so with N nodes (N-1)/N of the deliveries cross Redis), checks every chunk,
//! and reports lost messages and latency split into local deliveries (published on the
//! subscriber's node) and remote ones (published on another node), with the added p99.
//!
//! Threads: one flood and one msggen per node, this one orchestrating.

use std::fmt::Write as _;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use super::halves::{check_fd_limit, check_positive};
use crate::tools::loadtest::answer;
use crate::tools::loadtest::check::{Bitmap, CheckCounts};
use crate::tools::loadtest::cli::MainArgs;
use crate::tools::loadtest::flood::{self, FloodConfig, FloodResult, FloodShared};
use crate::tools::loadtest::framing::Framing;
use crate::tools::loadtest::host::child::ServerGuard;
use crate::tools::loadtest::host::proc::cpu_seconds;
use crate::tools::loadtest::host::redis_server::RedisGuard;
use crate::tools::loadtest::msggen::{self, MsggenConfig, MsggenShared};
use crate::tools::loadtest::report::{json_str, Latency};
use crate::tools::loadtest::url::UrlTemplate;

/// The `/stats` keys read from each node after the run.
const NODE_STATS: [&str; 10] = [
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
];

/// How long after the last scheduled publish to wait for its answer.
const PUBLISH_TAIL: Duration = Duration::from_secs(2);

fn say(msg: &str) {
    eprintln!("loadtest: {msg}");
}

/// What one run measured.
#[derive(Debug, Default)]
struct ClusterReport {
    nodes: usize,
    conns: u64,
    closed: u64,
    connect_s: f64,
    attempted: u64,
    sent: u64,
    publish_failed: u64,
    delivered: u64,
    lost: u64,
    counts: CheckCounts,
    drain_ms: u64,
    publish_s: f64,
    all: Latency,
    local: Latency,
    remote: Latency,
    /// Per node: (cpu seconds over the run, /stats after the run).
    node_cpu_s: Vec<f64>,
    node_stats: Vec<Vec<(String, u64)>>,
    redis_cpu_s: f64,
    notes: Vec<String>,
}

impl ClusterReport {
    fn passed(&self) -> bool {
        self.lost == 0 && self.publish_failed == 0 && self.closed == 0 && self.counts.errors() == 0
    }

    fn stat(&self, key: &str) -> u64 {
        self.node_stats
            .iter()
            .flat_map(|s| s.iter())
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v)
            .sum()
    }

    /// The added p99 of remote deliveries over local ones, us (negative: remote was faster).
    fn added_p99_us(&self) -> i64 {
        self.remote.p99 as i64 - self.local.p99 as i64
    }

    fn text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "cluster: {} nodes + redis-server", self.nodes);
        let _ = writeln!(
            t,
            "subscribers: {} connected in {:.1} s, {} closed",
            self.conns, self.connect_s, self.closed
        );
        let _ = writeln!(
            t,
            "messages: {} attempted, {} sent (200), {} failed, {} delivered, {} LOST, {} duplicates, {} out of order, {} wrong id, {} garbled",
            self.attempted, self.sent, self.publish_failed, self.delivered, self.lost,
            self.counts.duplicates, self.counts.out_of_order, self.counts.id_mismatch, self.counts.garbled
        );
        let _ = writeln!(
            t,
            "publishing took {:.1} s; drain {} ms",
            self.publish_s, self.drain_ms
        );
        let _ = writeln!(t, "latency, all:    {}", self.all.line());
        let _ = writeln!(t, "latency, local:  {}", self.local.line());
        let _ = writeln!(t, "latency, remote: {}", self.remote.line());
        let _ = writeln!(t, "added p99, remote vs local: {} us", self.added_p99_us());
        let _ = writeln!(
            t,
            "cluster: {} forwarded, {} received, {} echoes dropped, {} forward dropped, {} batches",
            self.stat("cluster_forwarded"),
            self.stat("cluster_received"),
            self.stat("cluster_echoes_dropped"),
            self.stat("cluster_forward_dropped"),
            self.stat("cluster_batches")
        );
        let cpus: Vec<String> = self
            .node_cpu_s
            .iter()
            .map(|c| format!("{c:.2} s"))
            .collect();
        let _ = writeln!(
            t,
            "CPU: nodes {}; redis-server {:.2} s",
            cpus.join(", "),
            self.redis_cpu_s
        );
        for n in &self.notes {
            let _ = writeln!(t, "note: {n}");
        }
        let _ = write!(t, "{}", if self.passed() { "PASS" } else { "FAIL" });
        t
    }

    fn json(&self) -> String {
        let lat = |l: &Latency| {
            format!(
                "{{\"count\":{},\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{}}}",
                l.count, l.p50, l.p90, l.p99, l.p999, l.max
            )
        };
        let cpus: Vec<String> = self.node_cpu_s.iter().map(|c| format!("{c:.3}")).collect();
        let stats: Vec<String> = self
            .node_stats
            .iter()
            .map(|s| {
                let kv: Vec<String> = s
                    .iter()
                    .map(|(k, v)| format!("{}:{v}", json_str(k)))
                    .collect();
                format!("{{{}}}", kv.join(","))
            })
            .collect();
        let notes: Vec<String> = self.notes.iter().map(|n| json_str(n)).collect();
        format!(
            "{{\"nodes\":{},\"conns\":{},\"closed\":{},\"connect_s\":{:.3},\"attempted\":{},\"sent\":{},\"publish_failed\":{},\"delivered\":{},\"lost\":{},\"duplicates\":{},\"out_of_order\":{},\"id_mismatch\":{},\"garbled\":{},\"publish_s\":{:.3},\"drain_ms\":{},\"latency_us\":{},\"latency_local_us\":{},\"latency_remote_us\":{},\"added_p99_us\":{},\"node_cpu_s\":[{}],\"redis_cpu_s\":{:.3},\"node_stats\":[{}],\"notes\":[{}],\"passed\":{}}}",
            self.nodes, self.conns, self.closed, self.connect_s, self.attempted, self.sent,
            self.publish_failed, self.delivered, self.lost, self.counts.duplicates,
            self.counts.out_of_order, self.counts.id_mismatch, self.counts.garbled, self.publish_s,
            self.drain_ms, lat(&self.all), lat(&self.local), lat(&self.remote),
            self.added_p99_us(), cpus.join(","), self.redis_cpu_s, stats.join(","),
            notes.join(","), self.passed()
        )
    }
}

/// The share `k` of `n` parts of `total`: (first, count).
fn share(total: u64, n: u64, k: u64) -> (u64, u64) {
    let (per, extra) = (total / n, total % n);
    (k * per + k.min(extra), per + u64::from(k < extra))
}

/// Runs `loadtest --nodes N` (N >= 2); fails if anything was lost or arrived wrong.
pub fn run(a: MainArgs) -> Result<()> {
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
    let redis = RedisGuard::start()?;
    say(&format!(
        "redis-server pid {} on {}",
        redis.pid,
        redis.url()
    ));
    let (bin, args) = a
        .server
        .command(vec!["--cluster".into(), redis.url()], a.backend)?;
    let mut servers = Vec::with_capacity(n);
    for k in 0..n {
        let log = a.server.server_log.as_ref().map(|p| {
            let mut p = p.clone().into_os_string();
            p.push(format!(".node{k}"));
            std::path::PathBuf::from(p)
        });
        let s = ServerGuard::start(&bin, &args, log.as_ref())?;
        say(&format!(
            "node {k}: pid {}, subscribers on {}, publish on {}",
            s.pid, s.sub_addr, s.pub_addr
        ));
        servers.push(s);
    }
    for (k, s) in servers.iter().enumerate() {
        let up = answer::fetch_stats_keys(s.pub_addr, &["cluster_up"])?
            .iter()
            .any(|(key, v)| key == "cluster_up" && *v == 1);
        if !up {
            bail!("node {k} is not connected to Redis (cluster_up is not 1 in its /stats)");
        }
    }
    let cpu0: Vec<f64> = servers
        .iter()
        .map(|s| cpu_seconds(s.pid).unwrap_or(0.0))
        .collect();
    let redis_cpu0 = cpu_seconds(redis.pid).unwrap_or(0.0);
    let total = (a.rate * a.duration).round() as u64;

    // Subscribers: node k holds ids share(conns, n, k) + 1.
    let mut floods: Vec<(Arc<FloodShared>, JoinHandle<Result<FloodResult>>)> = Vec::new();
    for (k, s) in servers.iter().enumerate() {
        let (first, count) = share(a.connect.conns, n as u64, k as u64);
        let (seq0, seqs) = share(total, n as u64, k as u64);
        let cfg = FloodConfig {
            url: UrlTemplate::local(s.sub_addr, "/test/{id}")?,
            first_id: first + 1,
            count,
            connect_rate: a.connect.connect_rate / n as f64,
            max_connecting: (a.connect.max_connecting / n as u64).max(1),
            duration: None,
            stats_to_stderr: true,
            strict: true,
            seq_limit: total,
            source_addrs: a.source_addrs,
            framing: Framing::Seed,
            latency_from_seq: 0,
            local_seqs: Some(seq0..seq0 + seqs),
            churn_per_min: 0.0,
        };
        let shared = Arc::new(FloodShared::default());
        let sh = shared.clone();
        let h = std::thread::Builder::new()
            .name(format!("flood-{k}"))
            .spawn(move || flood::run(cfg, sh))?;
        floods.push((shared, h));
    }
    say(&format!(
        "opening {} subscriber streams over {n} nodes at {}/s",
        a.connect.conns, a.connect.connect_rate
    ));
    let t0 = Instant::now();
    let budget = Duration::from_secs_f64(2.0 * a.connect.conns as f64 / a.connect.connect_rate)
        + Duration::from_secs(10);
    loop {
        let up: u64 = floods.iter().map(|f| f.0.connected.load(Relaxed)).sum();
        let down: u64 = floods.iter().map(|f| f.0.closed.load(Relaxed)).sum();
        if up == a.connect.conns {
            break;
        }
        if up + down >= a.connect.conns
            || t0.elapsed() > budget
            || servers.iter_mut().any(|s| !s.alive())
        {
            let _ = stop_floods(floods);
            bail!(
                "only {up} of {} subscriber streams opened ({down} failed)",
                a.connect.conns
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let connect_s = t0.elapsed().as_secs_f64();
    say(&format!(
        "{} streams open in {connect_s:.1} s",
        a.connect.conns
    ));

    // Publishers: node k's generators send share(total, n, k) messages with their own seqs.
    say(&format!(
        "publishing {total} messages at {}/s through {n} nodes from {} generators",
        a.rate, a.parallel
    ));
    let mut gens = Vec::new();
    for (k, s) in servers.iter().enumerate() {
        let (seq0, seqs) = share(total, n as u64, k as u64);
        let (_, parallel) = share(a.parallel as u64, n as u64, k as u64);
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
    let mut rep = ClusterReport {
        nodes: n,
        conns: a.connect.conns,
        connect_s,
        ..ClusterReport::default()
    };
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

    // Drain: wait (bounded) until every message answered 200 has been received.
    let d0 = Instant::now();
    while floods
        .iter()
        .map(|f| f.0.received.load(Relaxed))
        .sum::<u64>()
        < rep.sent
        && d0.elapsed() < Duration::from_millis(a.drain_ms)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    rep.drain_ms = d0.elapsed().as_millis() as u64;
    for (k, s) in servers.iter_mut().enumerate() {
        if !s.alive() {
            rep.notes.push(format!("node {k} exited during the run"));
        }
        rep.node_cpu_s
            .push(cpu_seconds(s.pid).unwrap_or(0.0) - cpu0[k]);
        rep.node_stats
            .push(answer::fetch_stats_keys(s.pub_addr, &NODE_STATS).unwrap_or_default());
    }
    rep.redis_cpu_s = cpu_seconds(redis.pid).unwrap_or(0.0) - redis_cpu0;

    let results = stop_floods(floods)?;
    let mut received = Bitmap::default();
    let mut hists: Option<[hdrhistogram::Histogram<u64>; 3]> = None;
    for r in &results {
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
    drop(servers);
    drop(redis);
    if a.json {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_everything_once() {
        for (total, n) in [(10_000u64, 2u64), (30_001, 3), (5, 5), (7, 2)] {
            let mut next = 0;
            for k in 0..n {
                let (first, count) = share(total, n, k);
                assert_eq!(first, next);
                next += count;
            }
            assert_eq!(next, total);
        }
    }
}
