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
//!    from `/stats`); the logins will connect with `GET /test/<user>`, one connection each,
//!    and the publishers send `POST /publish/<seed>` at `--rate` for `--duration`, each body
//!    `<seed>:<seq>:<send time us>`.
//! 5. The logins connect: one subscriber loop per `--client-threads`.
//! 6. `--parallel` publishers send the planned events; then a bounded drain.
//! 7. Every chunk is checked ([`friends_subs`](crate::tools::loadtest::client::friends_subs)); at the end each event
//!    answered 200 must have reached each logged-in friend exactly once. Exit non-zero
//!    otherwise. The report is a [`FriendsReport`].
//!
//! Here: the flags, [`run`], the server and the report; [`plan`]: phases 2 and 3;
//! [`clients`]: phases 5 and 6.

mod clients;
mod plan;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use super::halves::{check_fd_limit, check_positive};
use crate::tools::duration;
use crate::tools::gen_friends::{self, DegreeStats, GenArgs, GraphShape};
use crate::tools::loadtest::cli::ServerFlags;
use crate::tools::loadtest::client::friends_subs::{ClientIo, SubsResult, FANOUT_BUCKETS};
use crate::tools::loadtest::client::msggen::MsggenResult;
use crate::tools::loadtest::host::child::ServerGuard;
use crate::tools::loadtest::report::friends::FriendsReport;
use crate::tools::loadtest::report::Latency;
use crate::tools::loadtest::wire::answer;
use clients::{log_in, publish, Published};
use plan::{plan_events, EventPlan};

/// The social graph `loadtest friends` serves: a file, or one generated as by `gen-friends`.
#[derive(Args, Debug)]
#[command(
    mut_arg("users", |a| a.help("Users of the generated graph")),
    mut_arg("avg_friends", |a| a.help("Mean friends per user of the generated graph")),
    mut_arg("seed", |a| a
        .help("Seed of the generated graph, and of the choice of logins and publishers")),
)]
pub struct GraphFlags {
    /// Edge file (SNAP format) to serve; default: generate one with the three flags below,
    /// kept as `<temp dir>/uring-comet-friends-<users>-<avg>-<seed>.tsv` and reused.
    #[arg(long = "graph", value_name = "GRAPH")]
    pub file: Option<PathBuf>,
    /// The generated graph's users, mean friends and seed (the seed also draws the logins
    /// and publishers).
    #[command(flatten)]
    pub shape: GraphShape,
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
    /// IORING_FEAT_MIN_TIMEOUT; see `src/tools/loadtest/client/uring_recv.rs`), `epoll` (mio, woken per
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

/// The generated graph of `shape` (users, avg friends, seed) in `dir`:
/// `<dir>/uring-comet-friends-<users>-<avg>-<seed>.tsv`, reused if it exists, else made as
/// by `gen-friends`. Only a complete file can exist under that name ([`gen_friends::write`] writes
/// a temporary one and renames it into place when done), so a generation interrupted by
/// Ctrl-C is never reused. Returns the path and, when generated here, its degree
/// statistics and the seconds generating took. Errors: those of [`gen_friends::write`].
fn generated_graph(dir: &Path, shape: GraphShape) -> Result<(PathBuf, Option<(DegreeStats, f64)>)> {
    let GraphShape {
        users,
        avg_friends: avg,
        seed,
    } = shape;
    let p = dir.join(format!("uring-comet-friends-{users}-{avg}-{seed}.tsv"));
    if p.exists() {
        say(&format!("reusing {}", p.display()));
        return Ok((p, None));
    }
    say(&format!("generating {} (gen-friends)", p.display()));
    let g = GenArgs {
        shape,
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
pub(crate) fn run(a: FriendsArgs) -> Result<()> {
    validate(&a)?;
    // 1. The graph.
    let (path, generated) = match &a.graph.file {
        Some(p) => (p.clone(), None),
        None => generated_graph(&std::env::temp_dir(), a.graph.shape)?,
    };
    // 2-3. Our own copy of the graph; logins by neighbourhood, publishers are the seeds.
    let total = (a.rate * a.duration).round() as u64;
    let plan = plan_events(&a, &path, total)?;
    // 4. The server.
    let (mut server, graph_stats) = start_server(&a, &path)?;
    // 5. Logins.
    let logins = log_in(&a, &mut server, &plan)?;
    say(&format!(
        "{} logged in in {:.1} s; publishing {total} events at {}/s",
        plan.p.logins.len(),
        logins.connect_s,
        a.rate
    ));
    // 6. Publish, drain.
    let pubd = match publish(&a, &mut server, &plan, &logins) {
        Ok(p) => p,
        Err(e) => {
            logins.stop_all();
            return Err(e);
        }
    };
    let connect_s = logins.connect_s;
    let res = logins.stop()?;
    drop(server);
    // 7. Exactly once.
    let served = Served {
        path,
        generated,
        stats: graph_stats,
    };
    let report = report(&a, served, &plan, connect_s, pubd, res);
    if a.json {
        println!("{}", report.json());
    } else {
        println!("{}", report.text());
    }
    match report.failure() {
        Some(why) => bail!(why),
        None => Ok(()),
    }
}

/// Rejects flags the job cannot run with.
fn validate(a: &FriendsArgs) -> Result<()> {
    check_positive(&[
        ("--rate", a.rate),
        ("--duration", a.duration),
        ("--connect-rate", a.connect_rate),
    ])?;
    if a.logins == 0 || a.parallel == 0 {
        bail!("--logins and --parallel must be at least 1");
    }
    check_fd_limit((a.logins + a.parallel) as u64)
}

/// The server's `/stats` keys about the graph it loaded.
const GRAPH_KEYS: [&str; 6] = [
    "graph_users",
    "graph_entries",
    "graph_heap_bytes",
    "graph_rss_bytes",
    "graph_load_us",
    "rss_bytes",
];

/// Phase 4: the server with `--friends FILE` (up to 120 s to load it) and its graph figures.
fn start_server(a: &FriendsArgs, path: &Path) -> Result<(ServerGuard, Vec<(String, u64)>)> {
    let mut head = vec!["--friends".to_string(), path.display().to_string()];
    if a.graph.directed {
        head.push("--directed".into());
    }
    let (bin, args) = a.server.command(head, a.backend)?;
    let server = ServerGuard::start_waiting(
        &bin,
        &args,
        a.server.server_log.as_ref(),
        Duration::from_secs(120),
    )?;
    let stats = answer::fetch_stats_keys(server.pub_addr, &GRAPH_KEYS)?;
    let gv = |k: &str| {
        stats
            .iter()
            .find(|(key, _)| key == k)
            .map_or(0, |(_, v)| *v)
    };
    say(&format!(
        "server pid {}: graph loaded in {:.2} s, {} entries, {:.2} B RSS per entry",
        server.pid,
        gv("graph_load_us") as f64 / 1e6,
        gv("graph_entries"),
        gv("graph_rss_bytes") as f64 / gv("graph_entries").max(1) as f64
    ));
    Ok((server, stats))
}

/// Events answered `200` that a logged-in friend did not get.
fn count_lost(plan: &EventPlan, published: &MsggenResult, res: &SubsResult) -> u64 {
    let conn_of: HashMap<u32, usize> = plan
        .p
        .logins
        .iter()
        .enumerate()
        .map(|(i, &u)| (u, i))
        .collect();
    let mut lost = 0u64;
    for seq in 0..plan.events.len() as u64 {
        if !published.ok_seqs.contains(seq) {
            continue;
        }
        for u in &plan.recipients[&(plan.events[seq as usize] as u32)] {
            if !res.got.contains(&(seq << 24 | conn_of[u] as u64)) {
                lost += 1;
            }
        }
    }
    lost
}

/// The graph the server served: its file, how it was generated (if by this run) and the
/// server's `graph_*` figures.
struct Served {
    path: PathBuf,
    generated: Option<(DegreeStats, f64)>,
    stats: Vec<(String, u64)>,
}

/// Phase 7: the report, exactly-once counts included.
fn report(
    a: &FriendsArgs,
    served: Served,
    plan: &EventPlan,
    connect_s: f64,
    pubd: Published,
    res: SubsResult,
) -> FriendsReport {
    let lost = count_lost(plan, &pubd.result, &res);
    let published = pubd.result;
    let by_fanout = res
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
    FriendsReport {
        graph: served.path.display().to_string(),
        generated: served.generated,
        graph_stats: served.stats,
        logins: plan.p.logins.len(),
        connected: res.connected,
        closed: res.closed,
        connect_s,
        publishers: plan.p.publishers.len(),
        fan_median: plan.p.fan_median,
        fan_max: plan.p.fan_max,
        events_attempted: published.attempted,
        events_ok: published.ok,
        events_failed: published.failed + published.bad_answers,
        deliveries_expected: pubd.expected,
        deliveries_server_reported: published.delivered_sum,
        deliveries_received: res.got.len() as u64,
        lost,
        duplicates: res.duplicates,
        unexpected: res.unexpected,
        out_of_order: res.out_of_order,
        garbled: res.garbled,
        publish_s: published.elapsed.as_secs_f64().max(1e-9),
        latency: Latency::from_histogram(&res.latency_us),
        by_fanout,
        client_io: res.io_used.unwrap_or("none"),
        client_min_wait_us: (res.io_used == Some("uring")).then_some(a.client_min_wait_us),
        client_rearmed: res.rearmed,
        server_cpu_publish_s: pubd.server_cpu_s,
        client_cpu_publish_s: pubd.client_cpu_s,
        server_exited: pubd.server_exited,
        notes: published.notes.into_iter().chain(res.notes).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::{generated_graph, GraphShape};
    use crate::friends::load::{self, LoadOptions};
    use crate::tools::gen_friends;

    /// A generation cut short (its temporary file left behind, as by a kill) is not taken
    /// for the graph: the graph is generated whole, and reused from then on.
    const SHAPE: GraphShape = GraphShape {
        users: 2000,
        avg_friends: 6.0,
        seed: 5,
    };

    #[test]
    fn cut_off_generation_is_not_reused() {
        let dir = std::env::temp_dir().join(format!("uc-lt-graph-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let name = "uring-comet-friends-2000-6-5.tsv";
        let left = gen_friends::temp_name(&dir.join(name), 4_000_000_000);
        std::fs::write(&left, "# Undirected graph\n1\t2\n3\t").unwrap();
        let (p, made) = generated_graph(&dir, SHAPE).unwrap();
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
        let (_, made) = generated_graph(&dir, SHAPE).unwrap();
        assert!(made.is_none(), "a complete graph is reused");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
