//! The built-in load tester: its command line (`cli`) and dispatch ([`run`]).
//!
//! `uring-comet loadtest` alone is the main job, the seed's CK10 test (`jobs::ck10`): start
//! a server, hold 10,000 subscribers, publish 1,000 messages/s for 30 s, check every chunk
//! and report. `loadtest flood` (`flood`) and `loadtest msggen` (`msggen`) are its two
//! halves, usable on their own against any server with the same URL shapes
//! (`jobs::halves`). The other jobs: `compare`, `soak`, `million`, `friends`, `room` and
//! `--nodes N` (`jobs`).
//!
//! By role:
//! - `cli`: the flags, and the groups every job flattens.
//! - `jobs`: one module per job; each `run()` a list of phases.
//! - `host`: /proc, the server child, the memory log, redis-server.
//! - `report`: the reports as types, with text and JSON output.
//! - `client`: one subscriber event loop for `flood` (the main job's subscribers),
//!   `million_worker` (a `million` worker process) and `friends_subs` (friends' logins),
//!   with `slow` (slow readers), `churn` (subscribers leaving and coming back) and the
//!   multishot receive ring; one publish connection for `msggen` and `pipeline`.
//! - `wire`: the stream decoder, `framing` (how a server frames messages), `check`
//!   (the message format and the per-chunk checks), `answer` (publish answers and
//!   `/stats`), `url` (URL templates).
//!
//! Scenarios and figures: `loadtest/README.md`.

pub(crate) mod client;
pub(crate) mod wire;

pub(crate) mod cli;
pub(crate) mod host;
pub(crate) mod jobs;
pub(crate) mod report;

pub use cli::{FloodArgs, LoadtestArgs, LoadtestCmd, MainArgs, MsggenArgs};
pub use client::million_worker::WorkerArgs;
pub use host::hold_peer::HoldPeerArgs;
pub use jobs::compare::CompareArgs;
pub use jobs::friends::FriendsArgs;
pub use jobs::million::MillionArgs;
pub use jobs::room::RoomArgs;
pub use jobs::soak::SoakArgs;
pub use wire::framing::Framing;
pub use wire::resume::Transport;

use jobs::{cluster, compare, friends, halves, million, soak};

/// Runs `uring-comet loadtest`: the main job, or the half named by the subcommand.
/// Fails (non-zero exit) if a message was lost or a bad chunk arrived.
pub fn run(args: LoadtestArgs) -> anyhow::Result<()> {
    match args.cmd {
        None if args.main.nodes > 1 && args.main.transport != Transport::Test => {
            anyhow::bail!("--transport other than test does not run with --nodes yet")
        }
        None if args.main.nodes < 2
            && args.main.cluster_mode != crate::cluster::affine::ClusterMode::Broadcast =>
        {
            anyhow::bail!("--cluster-mode affine needs --nodes 2 or more")
        }
        None if args.main.nodes < 2 && args.main.redis_shards > 0 => {
            anyhow::bail!("--redis-shards needs --nodes 2 or more")
        }
        None if args.main.rounds > 0 && args.main.nodes > 1 => {
            anyhow::bail!("--rounds does not run with --nodes")
        }
        None if args.main.rounds > 0 => jobs::ck10::rounds::run(args.main),
        None if args.main.nodes > 1 => cluster::run(args.main),
        None => soak::main_job(args.main),
        Some(LoadtestCmd::Flood(a)) => halves::flood(a),
        Some(LoadtestCmd::Msggen(a)) => halves::msggen(a),
        Some(LoadtestCmd::Soak(a)) => soak::soak(a),
        Some(LoadtestCmd::History(a)) => jobs::history::run(a),
        Some(LoadtestCmd::Compare(a)) => compare::run(*a),
        Some(LoadtestCmd::Million(a)) => million::run(*a),
        Some(LoadtestCmd::Friends(a)) => friends::run(*a),
        Some(LoadtestCmd::Room(a)) => jobs::room::run(*a),
        Some(LoadtestCmd::MillionWorker(a)) => client::million_worker::run(a),
        Some(LoadtestCmd::HoldPeer(a)) => host::hold_peer::run(a),
    }
}
