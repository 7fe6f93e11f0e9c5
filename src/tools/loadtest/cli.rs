//! The load tester's command line: `uring-comet loadtest [SUBCOMMAND]` and the main job's,
//! flood's and msggen's flags. The flag groups every job flattens are [`ServerFlags`] (the
//! server under test) and [`ConnectFlags`] (subscribers connecting); the other jobs' own
//! flags live with the job ([`CompareArgs`], [`MillionArgs`], [`FriendsArgs`], [`SoakArgs`]).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::host::child::server_command;
use super::jobs::compare::CompareArgs;
use super::jobs::friends::FriendsArgs;
use super::jobs::million::MillionArgs;
use super::jobs::soak::SoakArgs;
use crate::config::Backend;
use crate::tools::duration;
use crate::tools::loadtest::client::million_worker::WorkerArgs;
use crate::tools::loadtest::wire::framing::Framing;
use crate::tools::loadtest::wire::resume::Transport;

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
    /// What history costs: server RSS growth per held message (`--ids` x `--per-id`
    /// messages of `--msg-bytes`, nobody subscribed).
    History(super::jobs::history::HistoryArgs),
    /// One server holding a million subscribers (`--conns`) from worker processes: connect
    /// rate, memory per connection (server, clients, kernel, machine), one message to every id.
    Million(Box<MillionArgs>),
    /// Friends fan-out: serve a social graph (generated or `--graph`), log in users by
    /// neighbourhood, publish events from their friends, check every delivery exactly once.
    Friends(Box<FriendsArgs>),
    /// Rooms: `--rooms` ids with `--subs-per-room` subscribers each on one `--transport`,
    /// `--rate` messages of `--msg-bytes` to random rooms; every delivery checked (exactly
    /// once, in order); deliveries/s, server CPU per delivery, latency per delivery, and the
    /// delivery ceiling's sender CPU per message measured in the same run.
    Room(Box<super::jobs::room::RoomArgs>),
    /// One client process of `million` (started by it; line protocol on stdin/stdout).
    #[command(hide = true)]
    MillionWorker(WorkerArgs),
    /// The accept-and-hold peer of `million --hold-peer` (started by it; prints `LISTEN`).
    #[command(hide = true)]
    HoldPeer(super::host::hold_peer::HoldPeerArgs),
}

/// The server under test, started as a child process (`BIN serve ...`): flattened into every
/// job that starts one. Its `--backend`, where a job has one, is the job's own flag.
#[derive(Args, Debug, Clone, Default)]
pub struct ServerFlags {
    /// Shards for the server (its `--shards`); default: the server's own.
    #[arg(long)]
    pub shards: Option<usize>,
    /// Any other flag for the server, repeatable, e.g. `--server-arg=--placement=accept`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    pub server_args: Vec<String>,
    /// Server binary to start (with `serve ...`); default: this executable.
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// Write the server's stderr to this file instead of ours.
    #[arg(long)]
    pub server_log: Option<PathBuf>,
}

impl ServerFlags {
    /// The server's binary and `serve` flags: `head` (the job's own), `--shards`, `--backend`
    /// when given, then `--server-arg`s, as [`server_command`]. Errors: this executable's path
    /// cannot be read.
    pub fn command(
        &self,
        head: Vec<String>,
        backend: Option<Backend>,
    ) -> anyhow::Result<(PathBuf, Vec<String>)> {
        server_command(
            self.server_bin.as_ref(),
            head,
            self.shards,
            backend,
            &self.server_args,
        )
    }
}

/// Subscribers connecting: how many, how fast, how many at once. Flattened into the jobs
/// that hold subscribers by id; a job with other defaults changes them with `mut_arg`.
#[derive(Args, Debug, Clone)]
pub struct ConnectFlags {
    /// Subscriber connections, ids 1..=conns.
    #[arg(long, default_value_t = 10_000)]
    pub conns: u64,
    /// Subscriber connects started per second.
    #[arg(long, default_value_t = 2_000.0)]
    pub connect_rate: f64,
    /// Most subscriber connects in flight (sent, no 200 head yet) at once.
    #[arg(long, default_value_t = 512)]
    pub max_connecting: u64,
}

/// Flags of the main job (`uring-comet loadtest`).
#[derive(Args, Debug)]
pub struct MainArgs {
    /// Subscribers connecting.
    #[command(flatten)]
    pub connect: ConnectFlags,
    /// Messages per second, all generators together.
    #[arg(long, default_value_t = 1_000.0)]
    pub rate: f64,
    /// Seconds of publishing; units allowed (`90s`, `10m`, `1h`).
    #[arg(long, default_value = "30", value_parser = duration::parse_secs)]
    pub duration: f64,
    /// Publishing generators (keep-alive connections).
    #[arg(long, default_value_t = 100)]
    pub parallel: usize,
    /// Data-plane backend for the server (its `--backend`); default: the server's own (auto).
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// The server under test.
    #[command(flatten)]
    pub server: ServerFlags,
    /// Most milliseconds to wait after publishing for every sent message to arrive (units
    /// allowed: `2s`).
    #[arg(long, default_value_t = 2_000, value_parser = duration::parse_millis)]
    pub drain_ms: u64,
    /// Print the report as one JSON object on stdout (Stats lines then go to stderr).
    #[arg(long)]
    pub json: bool,
    /// Append `date\tepoch\trss_kib\tconns` lines to this file during the run, and draw it
    /// to the same name with .svg [default: TARGET_DIR/loadtest/mem.log, started fresh].
    #[arg(long)]
    pub mem_log: Option<PathBuf>,
    /// Seconds between mem-log lines (units allowed: `1m`) [default: 1].
    #[arg(long, value_parser = duration::parse_whole_secs)]
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
    /// With `--nodes`: how the nodes share the ids, as their `--cluster-mode`. `broadcast`:
    /// node k holds an equal block of the ids; `affine`: the nodes run `--cluster-mode
    /// affine` and each subscriber connects to the node owning its id's bucket. The report
    /// gives each node's inbound records from Redis against total/N.
    #[arg(long, value_enum, default_value_t = crate::cluster::affine::ClusterMode::Broadcast)]
    pub cluster_mode: crate::cluster::affine::ClusterMode,
    /// With `--nodes`: 0 runs one redis-server; 3 or more a Redis Cluster of that many
    /// masters (no replicas; `redis-cli --cluster create`), the nodes on
    /// `--cluster redis-cluster://...` (sharded pub/sub). The report gives each master's CPU
    /// seconds and `SPUBLISH` calls.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=16))]
    pub redis_shards: u16,
    /// Subscriber transport: `test` (the seed's stream `/test/<id>`, no resume), `sse`
    /// (`/sub/<id>` as server-sent events), `ws` (`/sub/<id>?cursors=1` over WebSocket) or
    /// `raw` (`/sub/<id>?cursors=1`, chunked). The last three carry a cursor with every
    /// message and check each id's messages in cursor order; a subscriber that comes back
    /// (`--churn`, a cut slow reader) gives its last cursor back (`Last-Event-ID` for sse,
    /// `last_event_id` for ws and raw) and must then get every message it missed: nothing
    /// is excused. The report's `resumed:` line counts the resumes.
    #[arg(long, value_enum, default_value_t = Transport::Test)]
    pub transport: Transport,
    /// Subscriber churn: this percent of the subscribers a minute leave (alternately FIN and
    /// RST) and connect again under the same id, once all are up. Messages sent while a
    /// subscriber was away (or answered under 500 ms before it left) are counted as excused,
    /// and with `--transport test` not as lost; all others must arrive (with a resuming
    /// `--transport`, every message must arrive). At the end the server must be back to its baseline
    /// (connections, ids, direct-descriptor slots, fds, no CLOSE_WAIT).
    #[arg(long, default_value_t = 0.0, value_name = "PERCENT_PER_MIN")]
    pub churn: f64,
    /// Slow readers: this many more subscribers (ids conns+1..) that read their head and then
    /// never read, sent `--slow-msg-bytes` messages at `--slow-rate` while the test traffic
    /// runs. Everyone else must get every message; the report gives the server's RSS peak and
    /// how many slow readers it cut (`slow_consumers_closed` once their kernel buffers and
    /// `--max-pending-bytes` are full, `send_timeouts` after `--send-timeout`). With the
    /// kernel's send-buffer autotuning a reader absorbs MiBs first: give the server a
    /// `--server-arg=--sndbuf=65536` to see the bound at work within seconds. With a
    /// resuming `--transport` the readers are drained whenever `/stats` shows new cuts (once
    /// the count holds still, at most 500 ms later), a cut reader comes back at once with
    /// its last cursor, and at the end each must have every message answered `200` to it
    /// (the `slow came back:` line); what a reader misses until it is back must fit in the
    /// server's `--history`.
    #[arg(long, default_value_t = 0)]
    pub slow_readers: u64,
    /// Body bytes of each message to a slow reader.
    #[arg(long, default_value_t = 8_192)]
    pub slow_msg_bytes: usize,
    /// Messages per second to the slow readers, round-robin.
    #[arg(long, default_value_t = 1_000.0)]
    pub slow_rate: f64,
    /// Leak guard: instead of one publish phase, run this many rounds against one server,
    /// each: open `--conns` subscribers (any `--transport`), publish one message to each
    /// (at `--rate`), close them all, wait for the server to be back to its baseline (and
    /// for its history to drain, if it does within the round: a short `--history-ttl`),
    /// and read its RSS after close. The report lists every round and the growth of the RSS
    /// after close from round 10 to the last, percent (a leak climbs steadily; a high-water
    /// mark levels off). 0 (the default) runs the ordinary main job.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub rounds: u32,
    /// Subscriber tokens: generate a key (`hs256` a secret, `es256` or `eddsa` a JWKS),
    /// start the server requiring tokens signed by it, sign one token per subscriber (its
    /// id as `sub`, valid for an hour) before the connect phase, and send each as
    /// `Authorization: Bearer`. The signing time is reported apart from the connect rate.
    #[arg(long, value_name = "ALG")]
    pub sub_token: Option<String>,
}

/// Flags of `uring-comet loadtest flood`.
#[derive(Args, Debug)]
pub struct FloodArgs {
    /// Subscriber URL; `{id}` is replaced by each id. Without `{id}` every connection opens
    /// that one URL (a room: all under one id); `--ids` then only counts the connections, and
    /// each connection's messages are checked in order but not against an id, nor as
    /// duplicates of another connection's.
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
    /// Seconds to run before closing everything and printing the summary (units allowed:
    /// `10m`).
    #[arg(long, default_value = "60", value_parser = duration::parse_secs)]
    pub duration: f64,
    /// Append `date\tepoch\trss_kib\tconns` lines to this file.
    #[arg(long)]
    pub mem_log: Option<PathBuf>,
    /// Seconds between mem-log lines (units allowed: `1m`).
    #[arg(long, default_value_t = 60, value_parser = duration::parse_whole_secs)]
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
    /// Milliseconds between one generator's messages (units allowed: `1s`).
    #[arg(long, default_value_t = 100, value_parser = duration::parse_millis)]
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
