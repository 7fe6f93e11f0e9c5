//! The built-in load tester: its command line and dispatch.
//!
//! `uring-comet loadtest` alone is the main job, the seed's CK10 test ([`ck10`]): start a
//! server, hold 10,000 subscribers, publish 1,000 messages/s for 30 s, check every chunk and
//! report. `loadtest flood` ([`flood`]) and `loadtest msggen` ([`msggen`]) are its two halves,
//! usable on their own against any server with the same URL shapes ([`halves`]).
//!
//! `loadtest compare` ([`compare`]) runs one scenario ([`scenario`]: idle memory, one message
//! each, saturation, close) on each backend, an external server and the host's delivery
//! ceiling ([`ceiling`]), with pipelined publishers ([`pipeline`]), process-set and kernel
//! memory readings ([`procmem`]), and prints one table ([`compare_report`]).
//!
//! `loadtest --nodes N` ([`cluster`]) runs the main job on a local cluster: redis-server
//! ([`redis_server`]) and N nodes.
//!
//! `loadtest soak` ([`soak`]) holds the main job for minutes or hours with the memory log on
//! and charts it (every main job charts its log too).
//!
//! `loadtest friends` ([`friends`], [`friends_plan`], [`friends_subs`]) runs the friends fan-out: a social
//! graph served with `--friends`, users logged in by neighbourhood, events from their friends.
//!
//! The rest: [`chunk`] decodes subscriber streams, [`framing`] says how a server frames
//! messages, [`check`] owns the message format and the per-chunk checks, [`answer`] reads
//! publish answers and `/stats`, [`report`] formats the report, [`memlog`] writes the memory
//! log, [`proc`] runs the server child and reads /proc, [`url`] parses URL templates,
//! [`duration`] parses `10m`-style durations. Scenarios and figures: `loadtest/README.md`.

mod ceiling;
mod ck10;
mod client;
mod cluster;
mod compare;
mod compare_report;
mod duration;
mod friends;
mod friends_plan;
mod halves;
mod memlog;
mod million;
mod million_fleet;
mod million_report;
mod proc;
mod procmem;
mod redis_server;
mod report;
mod scenario;
mod soak;
mod wire;

pub(crate) use client::{churn, flood, friends_subs, million_worker, msggen, pipeline, slow};
pub(crate) use wire::{answer, check, framing, url};

pub use compare::CompareArgs;
pub use duration::parse_duration;
pub use framing::Framing;
pub use friends::FriendsArgs;
pub use million::MillionArgs;
pub use million_worker::WorkerArgs;
pub use soak::SoakArgs;

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// Options of `uring-comet loadtest`: with no subcommand, the main job's flags.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LoadtestArgs {
    /// Run one half on its own instead of the main job.
    #[command(subcommand)]
    pub cmd: Option<LoadtestCmd>,
    /// The main job's flags.
    #[command(flatten)]
    pub main: MainArgs,
}

/// The halves of the main job.
#[derive(Subcommand, Debug)]
pub enum LoadtestCmd {
    /// Hold subscriber streams (GET) for a range of ids, print `Stats: {connected,closed,chunks}`
    /// every second, check every chunk.
    Flood(FloodArgs),
    /// Publish messages (POST) to random ids from parallel keep-alive generators.
    Msggen(MsggenArgs),
    /// Measure memory per connection, saturated throughput and CPU per message on each
    /// backend (and an external server, and the host's delivery ceiling): one table.
    Compare(Box<CompareArgs>),
    /// Hold the main job's load for a long time (`--duration 10m`) with the memory log on,
    /// then chart it (SVG and PNG) and print the RSS growth after warm-up.
    Soak(SoakArgs),
    /// One server holding a million subscribers (`--conns`) from worker processes: connect
    /// rate, memory per connection (server, clients, kernel, machine), one message to every id.
    Million(Box<MillionArgs>),
    /// Friends fan-out: serve a social graph (generated or `--graph`), log in users by
    /// neighbourhood, publish events from their friends, check every delivery exactly once.
    Friends(Box<FriendsArgs>),
    /// One client process of `million` (started by it; line protocol on stdin/stdout).
    #[command(hide = true)]
    MillionWorker(WorkerArgs),
}

/// Flags of the main job (`uring-comet loadtest`).
#[derive(Args, Debug)]
pub struct MainArgs {
    /// Subscriber connections, ids 1..=conns.
    #[arg(long, default_value_t = 10_000)]
    pub conns: u64,
    /// Subscriber connects started per second.
    #[arg(long, default_value_t = 2_000.0)]
    pub connect_rate: f64,
    /// Most subscriber connects in flight (sent, no 200 head yet) at once.
    #[arg(long, default_value_t = 512)]
    pub max_connecting: u64,
    /// Messages per second, all generators together.
    #[arg(long, default_value_t = 1_000.0)]
    pub rate: f64,
    /// Seconds of publishing; units allowed (`90s`, `10m`, `1h`).
    #[arg(long, default_value = "30", value_parser = duration::parse_secs)]
    pub duration: f64,
    /// Publishing generators (keep-alive connections).
    #[arg(long, default_value_t = 100)]
    pub parallel: usize,
    /// Shards for the server (its `--shards`); default: the server's own.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Data-plane backend for the server (its `--backend`); default: the server's own (auto).
    #[arg(long, value_enum)]
    pub backend: Option<crate::config::Backend>,
    /// Any other flag for the server, repeatable, e.g. `--server-arg=--placement=accept`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// Server binary to start (with `serve ...`); default: this executable.
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Write the server's stderr to this file instead of ours.
    #[arg(long)]
    pub server_log: Option<PathBuf>,
    /// Most milliseconds to wait after publishing for every sent message to arrive.
    #[arg(long, default_value_t = 2_000)]
    pub drain_ms: u64,
    /// Print the report as one JSON object on stdout (Stats lines then go to stderr).
    #[arg(long)]
    pub json: bool,
    /// Append `date\tepoch\trss_kib\tconns` lines to this file during the run, and draw it
    /// to the same name with .svg [default: <target>/loadtest/mem.log, started fresh].
    #[arg(long)]
    pub mem_log: Option<PathBuf>,
    /// Seconds between mem-log lines [default: 1].
    #[arg(long)]
    pub mem_interval: Option<u64>,
    /// Source addresses (127.0.0.1, .2, ...) for subscribers; 0: one per 12,000 connections.
    #[arg(long, default_value_t = 0)]
    pub source_addrs: u32,
    /// Seed of the id PRNG.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Server nodes: 2 or more runs a local cluster: redis-server (Debian's package) on a
    /// free port and this many nodes with `--cluster`, subscribers spread over the nodes,
    /// messages published through every node; latency reported for local and remote
    /// deliveries apart.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub nodes: u16,
    /// Subscriber churn: this percent of the subscribers a minute leave (alternately FIN and
    /// RST) and connect again under the same id, once all are up. Messages sent while a
    /// subscriber was away (or answered under 500 ms before it left) are not counted as lost;
    /// all others must arrive. At the end the server must be back to its baseline
    /// (connections, ids, direct-descriptor slots, fds, no CLOSE_WAIT).
    #[arg(long, default_value_t = 0.0, value_name = "PERCENT_PER_MIN")]
    pub churn: f64,
    /// Slow readers: this many more subscribers (ids conns+1..) that read their head and then
    /// never read, sent `--slow-msg-bytes` messages at `--slow-rate` while the test traffic
    /// runs. Everyone else must get every message; the report gives the server's RSS peak and
    /// how many slow readers it cut (`slow_consumers_closed` once their kernel buffers and
    /// `--max-pending-bytes` are full, `send_timeouts` after `--send-timeout`). With the
    /// kernel's send-buffer autotuning a reader absorbs MiBs first: give the server a
    /// `--server-arg=--sndbuf=65536` to see the bound at work within seconds.
    #[arg(long, default_value_t = 0)]
    pub slow_readers: u64,
    /// Body bytes of each message to a slow reader.
    #[arg(long, default_value_t = 8_192)]
    pub slow_msg_bytes: usize,
    /// Messages per second to the slow readers, round-robin.
    #[arg(long, default_value_t = 1_000.0)]
    pub slow_rate: f64,
}

/// Flags of `uring-comet loadtest flood`.
#[derive(Args, Debug)]
pub struct FloodArgs {
    /// Subscriber URL; `{id}` is replaced by each id.
    #[arg(long, default_value = "http://127.0.0.1:8000/test/{id}")]
    pub url_template: String,
    /// Ids to subscribe, `FIRST-LAST` (inclusive) or one id.
    #[arg(long, default_value = "1-10000")]
    pub ids: String,
    /// Connects started per second.
    #[arg(long, default_value_t = 1_000.0)]
    pub rate: f64,
    /// Most connects in flight (sent, no 200 head yet) at once.
    #[arg(long, default_value_t = 512)]
    pub max_connecting: u64,
    /// Seconds to run before closing everything and printing the summary.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// Append `date\tepoch\trss_kib\tconns` lines to this file.
    #[arg(long)]
    pub mem_log: Option<PathBuf>,
    /// Seconds between mem-log lines.
    #[arg(long, default_value_t = 60)]
    pub mem_interval: u64,
    /// Server process for the mem log's RSS; default: the one listening on the URL's port.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Source addresses (127.0.0.1, .2, ...); 0: one per 12,000 connections on loopback.
    #[arg(long, default_value_t = 0)]
    pub source_addrs: u32,
    /// How the server frames messages: `seed` (uring-comet's chunks), `chunked` (one chunk per
    /// message, verbatim), `raw` (one line per message), `sse` (`data:` lines), `ws`
    /// (WebSocket upgrade, one frame per message).
    #[arg(long, value_enum, default_value_t = Framing::Seed)]
    pub stream: Framing,
}

/// Flags of `uring-comet loadtest msggen`.
#[derive(Args, Debug)]
pub struct MsggenArgs {
    /// Publish URL; `{id}` is replaced by the target id.
    #[arg(long, default_value = "http://127.0.0.1:8001/send/{id}")]
    pub url_template: String,
    /// Messages each generator sends.
    #[arg(long, default_value_t = 100)]
    pub count: u64,
    /// Milliseconds between one generator's messages.
    #[arg(long, default_value_t = 100)]
    pub interval_ms: u64,
    /// Target ids are drawn from 1..=max-id.
    #[arg(long, default_value_t = 10_000)]
    pub max_id: u64,
    /// Generators (keep-alive connections), each sending --count messages.
    #[arg(long, default_value_t = 100)]
    pub parallel: usize,
    /// Sequence number of the first message; give concurrent or successive runs against one
    /// flood disjoint ranges, or the flood reports their messages as duplicates.
    #[arg(long, default_value_t = 0)]
    pub first_seq: u64,
    /// Seed of the id PRNG.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Runs `uring-comet loadtest`: the main job, or the half named by the subcommand.
/// Fails (non-zero exit) if a message was lost or a bad chunk arrived.
pub fn run(args: LoadtestArgs) -> anyhow::Result<()> {
    match args.cmd {
        None if args.main.nodes > 1 => cluster::run(args.main),
        None => soak::main_job(args.main),
        Some(LoadtestCmd::Flood(a)) => halves::flood(a),
        Some(LoadtestCmd::Msggen(a)) => halves::msggen(a),
        Some(LoadtestCmd::Soak(a)) => soak::soak(a),
        Some(LoadtestCmd::Compare(a)) => compare::run(*a),
        Some(LoadtestCmd::Million(a)) => million::run(*a),
        Some(LoadtestCmd::Friends(a)) => friends::run(*a),
        Some(LoadtestCmd::MillionWorker(a)) => million_worker::run(a),
    }
}
