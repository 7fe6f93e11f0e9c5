//! `uring-comet loadtest friends`: friends fan-out end to end (issue 7).
//!
//! 1. Graph: `--graph FILE`, or one made by `gen-friends` (`--users`, `--avg-friends`,
//!    `--seed`) under the system temp dir, reused when it is already there (only a complete
//!    one can be: it is renamed into place when written).
//! 2. The load tester loads its own copy (one CSR) to know who must get what.
//! 3. Logins, by neighbourhood: draw a random user (a *seed*) and log in all of its friends,
//!    then the next seed's, until `--logins` users are logged in (the last neighbourhood may
//!    be cut short). Events are published from the seeds, so each one has logged-in friends
//!    (typically all of them); every logged-in friend of a seed is expected to get its
//!    events, whichever seed's neighbourhood logged it in.
//! 4. The server starts with `--friends FILE` (its load time and the RSS it added are read
//!    from `/stats`), the logins connect (`GET /test/<user>`, one connection each), then
//!    `--parallel` keep-alive publishers send `POST /publish/<seed>` at `--rate` for
//!    `--duration`, each body `<seed>:<seq>:<send time us>`.
//! 5. Every chunk is checked ([`friends_subs`](crate::tools::loadtest::friends_subs)); at the end each event
//!    answered 200 must have reached each logged-in friend exactly once. Exit non-zero
//!    otherwise.

mod plan;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use clap::Args;

use super::halves::{check_fd_limit, check_positive};
use crate::friends::journal;
use crate::friends::load::{self, LoadOptions};
use crate::tools::duration;
use crate::tools::gen_friends::{self, DegreeStats, GenArgs, SplitMix};
use crate::tools::loadtest::answer;
use crate::tools::loadtest::cli::ServerFlags;
use crate::tools::loadtest::friends_subs::{
    self, ClientIo, SubsConfig, SubsShared, FANOUT_BUCKETS,
};
use crate::tools::loadtest::host::child::ServerGuard;
use crate::tools::loadtest::host::proc::cpu_seconds;
use crate::tools::loadtest::msggen::{self, MsggenConfig, MsggenShared};
use crate::tools::loadtest::report::Latency;
use crate::tools::loadtest::url::UrlTemplate;
use plan as friends_plan;

/// The social graph `loadtest friends` serves: a file, or one generated as by `gen-friends`.
#[derive(Args, Debug)]
pub struct GraphFlags {
    /// Edge file (SNAP format) to serve; default: generate one with the three flags below,
    /// kept as `<temp dir>/uring-comet-friends-<users>-<avg>-<seed>.tsv` and reused.
    #[arg(long = "graph", value_name = "GRAPH")]
    pub file: Option<PathBuf>,
    /// Users of the generated graph.
    #[arg(long, default_value_t = 1_000_000)]
    pub users: u32,
    /// Mean friends per user of the generated graph.
    #[arg(long, default_value_t = 50.0)]
    pub avg_friends: f64,
    /// Seed of the generated graph, and of the choice of logins and publishers.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The file is directed (`u v`: u follows v); passed on to the server.
    #[arg(long)]
    pub directed: bool,
}

/// Flags of `uring-comet loadtest friends`.
#[derive(Args, Debug)]
pub struct FriendsArgs {
    /// The graph served.
    #[command(flatten)]
    pub graph: GraphFlags,
    /// Users logged in (one subscriber connection each).
    #[arg(long, default_value_t = 15_000)]
    pub logins: usize,
    /// Subscriber connects started per second.
    #[arg(long, default_value_t = 5_000.0)]
    pub connect_rate: f64,
    /// Most subscriber connects in flight at once.
    #[arg(long, default_value_t = 512)]
    pub max_connecting: usize,
    /// Events published per second, all publishers together.
    #[arg(long, default_value_t = 1_000.0)]
    pub rate: f64,
    /// Seconds of publishing; units allowed (`90s`, `10m`).
    #[arg(long, default_value = "30", value_parser = duration::parse_secs)]
    pub duration: f64,
    /// Publishers (keep-alive connections).
    #[arg(long, default_value_t = 50)]
    pub parallel: usize,
    /// Threads reading the logins' streams (1 to 16, each over its share); the kernel's
    /// receive work for 40,000+ deliveries a second is about a core.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub client_threads: u16,
    /// How the subscriber threads read their streams once logged in: `uring` (a multishot
    /// receive per stream on a DEFER_TASKRUN ring, woken per batch; needs Linux 6.12 for
    /// IORING_FEAT_MIN_TIMEOUT; see `src/tools/loadtest/uring_recv.rs`), `epoll` (mio, woken per
    /// delivery), or `auto`: uring where the kernel has it, else epoll (said on stderr and
    /// in the report's `client_io`).
    #[arg(long, value_enum, default_value_t = ClientIo::Auto)]
    pub client_io: ClientIo,
    /// With the uring client: microseconds (0 to 10,000) a subscriber thread may hold a
    /// first completion while waiting for a batch of 64; 0 returns at the first completion.
    /// Each delivery's measured latency includes this wait.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub client_min_wait_us: u32,
    /// Backend for the server (its `--backend`).
    #[arg(long, value_enum)]
    pub backend: Option<crate::config::Backend>,
    /// The server under test.
    #[command(flatten)]
    pub server: ServerFlags,
    /// Most milliseconds to wait after publishing for the last deliveries (units allowed:
    /// `3s`).
    #[arg(long, default_value_t = 3_000, value_parser = duration::parse_millis)]
    pub drain_ms: u64,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

fn say(msg: &str) {
    eprintln!("loadtest friends: {msg}");
}

/// The generated graph of `users`, `avg` friends and `seed` in `dir`:
/// `<dir>/uring-comet-friends-<users>-<avg>-<seed>.tsv`, reused if it exists, else made as
/// by `gen-friends`. Only a complete file can exist under that name ([`gen_friends::write`] writes
/// a temporary one and renames it into place when done), so a generation interrupted by
/// Ctrl-C is never reused. Returns the path and, when generated here, its degree
/// statistics and the seconds generating took. Errors: those of [`gen_friends::write`].
fn generated_graph(
    dir: &Path,
    users: u32,
    avg: f64,
    seed: u64,
) -> Result<(PathBuf, Option<(DegreeStats, f64)>)> {
    let p = dir.join(format!("uring-comet-friends-{users}-{avg}-{seed}.tsv"));
    if p.exists() {
        say(&format!("reusing {}", p.display()));
        return Ok((p, None));
    }
    say(&format!("generating {} (gen-friends)", p.display()));
    let g = GenArgs {
        users,
        avg_friends: avg,
        seed,
        exponent: 2.5,
        max_degree: None,
        local: 0.3,
        community: 256,
        output: p.clone(),
    };
    let (_, stats, secs) = gen_friends::write(&g)?;
    Ok((p, Some((stats, secs))))
}

/// Runs `loadtest friends`; fails if an event was lost, duplicated or misdelivered.
pub fn run(a: FriendsArgs) -> Result<()> {
    check_positive(&[
        ("--rate", a.rate),
        ("--duration", a.duration),
        ("--connect-rate", a.connect_rate),
    ])?;
    if a.logins == 0 || a.parallel == 0 {
        bail!("--logins and --parallel must be at least 1");
    }
    check_fd_limit((a.logins + a.parallel) as u64)?;
    // 1. The graph.
    let (path, generated) = match &a.graph.file {
        Some(p) => (p.clone(), None),
        None => generated_graph(
            &std::env::temp_dir(),
            a.graph.users,
            a.graph.avg_friends,
            a.graph.seed,
        )?,
    };
    // 2. Our own copy of the graph.
    let t0 = Instant::now();
    let opts = LoadOptions {
        shards: 1,
        directed: a.graph.directed,
        strict: false,
    };
    let (mut graphs, rep) = load::load(&path, opts)?;
    // The server replays the journal beside the file; so does our copy (read only).
    journal::replay(&journal::path_for(&path), &mut graphs, a.graph.directed)?;
    let g = graphs.pop().ok_or_else(|| anyhow!("empty load"))?;
    say(&format!(
        "loaded our copy: {} users with friends, {} entries in {:.1} s",
        rep.users,
        rep.entries,
        t0.elapsed().as_secs_f64()
    ));
    // 3. Logins by neighbourhood; publishers are the seeds.
    let mut rng = SplitMix::new(a.graph.seed ^ 0x5eed);
    let p = friends_plan::plan(&g, &g.csr.users, a.logins, &mut rng)?;
    drop(graphs);
    drop(g);
    let total = (a.rate * a.duration).round() as u64;
    let plan = p.events(total, &mut rng);
    let (order, recipients, publishers) = (p.logins, p.recipients, p.publishers);
    if order.len() < a.logins {
        say(&format!(
            "--logins {} is more than the neighbourhoods hold: {} logins",
            a.logins,
            order.len()
        ));
    }
    let (fan_median, fan_max) = (p.fan_median, p.fan_max);
    say(&format!(
        "{} logins in the neighbourhoods of {} seeds (logged-in friends per seed: median {fan_median}, max {fan_max}); {} events planned",
        order.len(),
        publishers.len(),
        total
    ));
    // 4. The server.
    let mut head = vec!["--friends".to_string(), path.display().to_string()];
    if a.graph.directed {
        head.push("--directed".into());
    }
    let (bin, args) = a.server.command(head, a.backend)?;
    let mut server = ServerGuard::start_waiting(
        &bin,
        &args,
        a.server.server_log.as_ref(),
        Duration::from_secs(120),
    )?;
    let pid = server.pid;
    let gkeys = [
        "graph_users",
        "graph_entries",
        "graph_heap_bytes",
        "graph_rss_bytes",
        "graph_load_us",
        "rss_bytes",
    ];
    let gstats: HashMap<String, u64> = answer::fetch_stats_keys(server.pub_addr, &gkeys)?
        .into_iter()
        .collect();
    let gv = |k: &str| gstats.get(k).copied().unwrap_or(0);
    say(&format!(
        "server pid {pid}: graph loaded in {:.2} s, {} entries, {:.2} B RSS per entry",
        gv("graph_load_us") as f64 / 1e6,
        gv("graph_entries"),
        gv("graph_rss_bytes") as f64 / gv("graph_entries").max(1) as f64
    ));
    // 5. Logins.
    let recipients = Arc::new(recipients);
    let conn_of: HashMap<u32, usize> = order.iter().enumerate().map(|(i, &u)| (u, i)).collect();
    let threads = usize::from(a.client_threads);
    let planned: usize = plan.iter().map(|&u| recipients[&(u as u32)].len()).sum();
    let all_users = Arc::new(order.clone());
    let mut shared = Vec::new();
    let mut loops = Vec::new();
    for t in 0..threads {
        let sh = Arc::new(SubsShared::default());
        let scfg = SubsConfig {
            addr: server.sub_addr,
            users: all_users.clone(),
            mine: (t..order.len()).step_by(threads).collect(),
            connect_rate: a.connect_rate / threads as f64,
            max_connecting: (a.max_connecting / threads).max(1),
            recipients: recipients.clone(),
            io: a.client_io,
            min_wait_us: a.client_min_wait_us,
            expected: planned / threads + planned / threads / 8,
        };
        let ss = sh.clone();
        loops.push(
            std::thread::Builder::new()
                .name(format!("friends-subs-{t}"))
                .spawn(move || friends_subs::run(scfg, ss))?,
        );
        shared.push(sh);
    }
    let sum = |f: fn(&SubsShared) -> &std::sync::atomic::AtomicU64| {
        shared.iter().map(|s| f(s).load(Relaxed)).sum::<u64>()
    };
    let stop_all = || shared.iter().for_each(|s| s.stop.store(true, Relaxed));
    let t0 = Instant::now();
    let budget = Duration::from_secs_f64(2.0 * order.len() as f64 / a.connect_rate + 10.0);
    while sum(|s| &s.connected) < order.len() as u64 {
        let failed = sum(|s| &s.closed);
        if failed > 0
            || t0.elapsed() > budget
            || !server.alive()
            || loops.iter().any(|l| l.is_finished())
        {
            stop_all();
            let notes: Vec<String> = loops
                .into_iter()
                .filter_map(|l| l.join().ok().and_then(Result::ok))
                .flat_map(|r| r.notes)
                .collect();
            bail!(
                "only {} of {} logins connected ({failed} failed). {}",
                sum(|s| &s.connected),
                order.len(),
                notes.join("; ")
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let connect_s = t0.elapsed().as_secs_f64();
    say(&format!(
        "{} logged in in {connect_s:.1} s; publishing {total} events at {}/s",
        order.len(),
        a.rate
    ));
    // 6. Publish.
    let cpu0 = cpu_seconds(pid)?;
    let me = std::process::id();
    let client0 = cpu_seconds(me)?;
    let plan = Arc::new(plan);
    let mcfg = MsggenConfig {
        url: UrlTemplate::local(server.pub_addr, "/publish/{id}")?,
        parallel: a.parallel,
        total,
        interval: Duration::from_secs_f64(a.parallel as f64 / a.rate),
        max_id: 1,
        ids_by_seq: Some(plan.clone()),
        first_seq: 0,
        seed: a.graph.seed,
        tail: Duration::from_secs(2),
        record_sends: false,
    };
    let published = msggen::run(mcfg, Arc::new(MsggenShared::default()));
    let published = match published {
        Ok(p) => p,
        Err(e) => {
            stop_all();
            return Err(e);
        }
    };
    let mut expected = 0u64;
    for seq in 0..total {
        if published.ok_seqs.contains(seq) {
            expected += recipients[&(plan[seq as usize] as u32)].len() as u64;
        }
    }
    let d0 = Instant::now();
    while sum(|s| &s.received) < expected && d0.elapsed() < Duration::from_millis(a.drain_ms) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let server_exited = !server.alive();
    let cpu = cpu_seconds(pid).unwrap_or(cpu0) - cpu0;
    let client_cpu = cpu_seconds(me).unwrap_or(client0) - client0;
    stop_all();
    let mut res: Option<friends_subs::SubsResult> = None;
    for l in loops {
        let r = l
            .join()
            .map_err(|_| anyhow!("a subscriber thread panicked"))??;
        res = Some(match res {
            None => r,
            Some(acc) => acc.merge(r)?,
        });
    }
    let res = res.ok_or_else(|| anyhow!("no subscriber thread"))?;
    drop(server);
    // 7. Exactly once.
    let mut lost = 0u64;
    for seq in 0..total {
        if !published.ok_seqs.contains(seq) {
            continue;
        }
        for u in &recipients[&(plan[seq as usize] as u32)] {
            if !res.got.contains(&(seq << 24 | conn_of[u] as u64)) {
                lost += 1;
            }
        }
    }
    let publish_s = published.elapsed.as_secs_f64().max(1e-9);
    let lat = Latency::from_histogram(&res.latency_us);
    let entries = gv("graph_entries");
    let by_fanout: Vec<(String, Latency)> = res
        .by_fanout
        .iter()
        .enumerate()
        .map(|(k, h)| {
            let lo = FANOUT_BUCKETS[k];
            let range = match FANOUT_BUCKETS.get(k + 1) {
                Some(next) => format!("{lo}-{}", next - 1),
                None => format!("{lo}+"),
            };
            (range, Latency::from_histogram(h))
        })
        .collect();
    let report = serde_json::json!({
        "graph": path.display().to_string(),
        "graph_generated_s": generated.map(|(_, s)| s),
        "graph_degree": generated.map(|(d, _)| serde_json::json!({"mean": d.mean, "median": d.median, "p99": d.p99, "max": d.max})),
        "graph_users": gv("graph_users"),
        "graph_entries": entries,
        "graph_load_s": gv("graph_load_us") as f64 / 1e6,
        "graph_rss_bytes": gv("graph_rss_bytes"),
        "graph_rss_per_entry": gv("graph_rss_bytes") as f64 / entries.max(1) as f64,
        "graph_heap_per_entry": gv("graph_heap_bytes") as f64 / entries.max(1) as f64,
        "logins": order.len(),
        "connected": res.connected,
        "closed": res.closed,
        "connect_s": connect_s,
        "publishers": publishers.len(),
        "recipients_per_publisher_median": fan_median,
        "recipients_per_publisher_max": fan_max,
        "events_attempted": published.attempted,
        "events_ok": published.ok,
        "events_failed": published.failed + published.bad_answers,
        "events_per_s": published.ok as f64 / publish_s,
        "deliveries_expected": expected,
        "deliveries_server_reported": published.delivered_sum,
        "deliveries_received": res.got.len(),
        "deliveries_per_s": res.got.len() as f64 / publish_s,
        "lost": lost,
        "duplicates": res.duplicates,
        "unexpected": res.unexpected,
        "out_of_order": res.out_of_order,
        "garbled": res.garbled,
        "publish_s": publish_s,
        "latency_us": {"count": lat.count, "p50": lat.p50, "p90": lat.p90, "p99": lat.p99, "p999": lat.p999, "max": lat.max},
        "latency_us_by_event_size": by_fanout.iter().map(|(range, l)| serde_json::json!({"logged_in_friends": range, "count": l.count, "p50": l.p50, "p99": l.p99, "max": l.max})).collect::<Vec<_>>(),
        "client_io": res.io_used.unwrap_or("none"),
        "client_min_wait_us": (res.io_used == Some("uring")).then_some(a.client_min_wait_us),
        "client_rearmed": res.rearmed,
        "server_cpu_publish_s": cpu,
        "client_cpu_publish_s": client_cpu,
        "server_exited": server_exited,
        "notes": published.notes.iter().chain(res.notes.iter()).collect::<Vec<_>>(),
    });
    if a.json {
        println!("{report}");
    } else {
        println!(
            "graph: {} users with friends, {} entries; server load {:.2} s, {:.2} B RSS per entry ({:.2} B heap)",
            gv("graph_users"),
            entries,
            gv("graph_load_us") as f64 / 1e6,
            report["graph_rss_per_entry"].as_f64().unwrap_or(0.0),
            report["graph_heap_per_entry"].as_f64().unwrap_or(0.0)
        );
        println!(
            "logins: {} connected in {connect_s:.1} s; {} publishers (seeds)",
            res.connected,
            publishers.len()
        );
        println!(
            "events: {} ok of {} ({:.0}/s); deliveries: {} received of {} expected ({:.0}/s), server said {}",
            published.ok,
            published.attempted,
            published.ok as f64 / publish_s,
            res.got.len(),
            expected,
            res.got.len() as f64 / publish_s,
            published.delivered_sum
        );
        println!(
            "lost {lost}, duplicates {}, unexpected {}, out of order {}, garbled {}",
            res.duplicates, res.unexpected, res.out_of_order, res.garbled
        );
        println!("publish-to-receive per delivery: {}", lat.line());
        let parts: Vec<String> = by_fanout
            .iter()
            .filter(|(_, l)| l.count > 0)
            .map(|(range, l)| {
                format!(
                    "{range}: {} deliveries, p50 {} us, p99 {} us",
                    l.count, l.p50, l.p99
                )
            })
            .collect();
        println!("  by event size (logged-in friends): {}", parts.join("; "));
        println!("CPU while publishing: server {cpu:.2} s, load tester {client_cpu:.2} s");
    }
    let bad = lost + res.duplicates + res.unexpected + res.out_of_order + res.garbled;
    if bad > 0 || published.failed + published.bad_answers > 0 || server_exited || res.closed > 0 {
        bail!(
            "friends load test failed: {lost} lost, {} duplicates, {} unexpected, {} out of order, {} garbled, {} publishes failed, {} logins closed{}",
            res.duplicates,
            res.unexpected,
            res.out_of_order,
            res.garbled,
            published.failed + published.bad_answers,
            res.closed,
            if server_exited { ", server exited" } else { "" }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A generation cut short (its temporary file left behind, as by a kill) is not taken
    /// for the graph: the graph is generated whole, and reused from then on.
    #[test]
    fn cut_off_generation_is_not_reused() {
        let dir = std::env::temp_dir().join(format!("uc-lt-graph-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let name = "uring-comet-friends-2000-6-5.tsv";
        let left = gen_friends::temp_name(&dir.join(name), 4_000_000_000);
        std::fs::write(&left, "# Undirected graph\n1\t2\n3\t").unwrap();
        let (p, made) = generated_graph(&dir, 2000, 6.0, 5).unwrap();
        assert_eq!(p, dir.join(name));
        assert!(made.is_some(), "generated, not reused");
        assert!(!left.exists(), "the leftover is removed");
        let opts = LoadOptions {
            shards: 1,
            directed: false,
            strict: false,
        };
        let (_, rep) = load::load(&p, opts).unwrap();
        // Whole: as many edges as its header says (at least users * avg / 2), none bad.
        let text = std::fs::read_to_string(&p).unwrap();
        let said: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("# Nodes: 2000 Edges: "))
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(said >= 6000, "{said}");
        assert_eq!((rep.edges, rep.bad_lines), (said, 0));
        assert!(text.ends_with('\n'));
        let (_, made) = generated_graph(&dir, 2000, 6.0, 5).unwrap();
        assert!(made.is_none(), "a complete graph is reused");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
