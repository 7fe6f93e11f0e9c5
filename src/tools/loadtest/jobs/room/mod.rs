//! `uring-comet loadtest room`: many subscribers under few ids (a chat room, a live score),
//! where one publish becomes `--subs-per-room` sends. In phases:
//!
//! 1. **Server**: start it as a child (`--backend`, [`ServerFlags`]).
//! 2. **Connect**: `--rooms` x `--subs-per-room` subscribers on `--transport`, connection `i`
//!    in room `1 + i % rooms` ([`RoomRole`](crate::tools::loadtest::client::room::RoomRole)), on their own thread; all must get their head.
//! 3. **Publish** `--rate` messages/s of `--msg-bytes` to random rooms for `--duration`
//!    (msggen's generators, the rooms planned per sequence number so each room's due
//!    deliveries are known), the server's CPU read before.
//! 4. **Drain**: until every due delivery arrived (bounded by `--drain-ms`); the server's CPU
//!    and RSS read at once: the window ends here.
//! 5. **End**: subscribers stopped, the server killed.
//! 6. **Ceiling**: the host's delivery ceiling ([`ceiling`](super::compare::ceiling)) with as many connections and
//!    `--msg-bytes` messages, unless `--no-ceiling`: the server's CPU per delivery is held
//!    against its sender's CPU per message, measured in the same run.
//! 7. **Report** ([`RoomReport`](crate::tools::loadtest::report::room::RoomReport), text or `--json`); fail if a delivery was lost, doubled,
//!    out of order or wrong, or a subscriber was lost.
//!
//! Here: the flags and [`run`]; [`phases`]: the phases' bodies.

mod phases;

use anyhow::{bail, Result};
use clap::Args;

use super::halves::{check_fd_limit, check_positive};
use crate::config::Backend;
use crate::tools::duration;
use crate::tools::loadtest::cli::ServerFlags;
use crate::tools::loadtest::wire::resume::Transport;

/// Flags of `uring-comet loadtest room`.
#[derive(Args, Debug, Clone)]
pub struct RoomArgs {
    /// Rooms (ids 1..=rooms).
    #[arg(long, default_value_t = 1)]
    pub rooms: u64,
    /// Subscribers in each room.
    #[arg(long, default_value_t = 1_000)]
    pub subs_per_room: u64,
    /// Subscriber transport: `sse` (`/sub/<id>`, server-sent events), `ws` (`/sub/<id>?cursors=1`
    /// over WebSocket), `raw` (`/sub/<id>?cursors=1`, chunked) or `test` (`/test/<id>`, the
    /// seed's chunks, numbered per connection). With the server's history on (its default),
    /// `sse`, `ws` and `raw` carry the room's cursor, whose offsets order every delivery.
    #[arg(long, value_enum, default_value_t = Transport::Sse)]
    pub transport: Transport,
    /// Messages per second, all publishers together, each to a random room.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Body bytes of each message (`{room}:{seq}:{t_us}` padded with `:` and `x`s; at least
    /// that long, about 30 bytes).
    #[arg(long, default_value_t = 100)]
    pub msg_bytes: usize,
    /// Seconds of publishing; units allowed (`90s`, `1m`).
    #[arg(long, default_value = "10", value_parser = duration::parse_secs)]
    pub duration: f64,
    /// Publishing generators (keep-alive connections, one request in flight each).
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Subscriber connects started per second.
    #[arg(long, default_value_t = 5_000.0)]
    pub connect_rate: f64,
    /// Most subscriber connects in flight (sent, no head yet) at once.
    #[arg(long, default_value_t = 512)]
    pub max_connecting: u64,
    /// Data-plane backend for the server (its `--backend`); default: the server's own (auto).
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// The server under test.
    #[command(flatten)]
    pub server: ServerFlags,
    /// Most milliseconds to wait after publishing for every due delivery (units allowed:
    /// `5s`).
    #[arg(long, default_value_t = 5_000, value_parser = duration::parse_millis)]
    pub drain_ms: u64,
    /// Skip the delivery ceiling's run (`ceiling_sender_us_per_msg` is then null).
    #[arg(long)]
    pub no_ceiling: bool,
    /// deliver-ceiling's folder [default: ../shared/tools/deliver-ceiling beside the
    /// repository].
    #[arg(long)]
    pub ceiling_dir: Option<std::path::PathBuf>,
    /// Length of the delivery ceiling's run (`5`, `10s`).
    #[arg(long, default_value = "5", value_parser = duration::parse_whole_secs)]
    pub ceiling_secs: u64,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// Seed of the room PRNG.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Progress for people, on stderr.
fn say(msg: &str) {
    eprintln!("loadtest room: {msg}");
}

/// Runs `loadtest room`; fails if the run did not pass (after printing the report).
pub(crate) fn run(a: RoomArgs) -> Result<()> {
    validate(&a)?;
    // 1. Server.
    let mut server = phases::start_server(&a)?;
    // 2. Connect.
    let subs = phases::connect(&a, &server)?;
    // 3. Publish.
    let plan = phases::plan(&a);
    let window = phases::publish(&a, &server, &plan, &subs);
    // 4. Drain: inside `publish` (the window ends when every due delivery is in).
    // 5. End.
    let alive = server.alive();
    let role = subs.stop()?;
    drop(server);
    let window = window?;
    // 6. Ceiling.
    let ceiling = phases::ceiling(&a);
    // 7. Report.
    let mut report = phases::report(&a, role, window, ceiling);
    if !alive {
        report
            .notes
            .insert(0, "the server exited during the run".into());
    }
    if a.json {
        println!("{}", report.json());
    } else {
        println!("{}", report.text());
    }
    if !report.passed() {
        bail!(
            "room test failed: {} lost, {} bad deliveries, {} subscribers closed, {} publishes failed",
            report.lost,
            report.counts.errors(),
            report.closed,
            report.publish_failed
        );
    }
    Ok(())
}

/// Rejects flags the job cannot run with.
fn validate(a: &RoomArgs) -> Result<()> {
    check_positive(&[
        ("--rate", a.rate),
        ("--duration", a.duration),
        ("--connect-rate", a.connect_rate),
    ])?;
    if a.rooms == 0 || a.subs_per_room == 0 || a.parallel == 0 {
        bail!("--rooms, --subs-per-room and --parallel must be at least 1");
    }
    if a.rate / a.parallel as f64 > 1_000.0 {
        bail!("--rate over 1,000 per generator: give more --parallel");
    }
    check_fd_limit(a.rooms * a.subs_per_room + a.parallel as u64 + 1)
}
