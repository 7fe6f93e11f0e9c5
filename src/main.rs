//! The `uring-comet` binary: parse flags (with `serve --config FILE` applied), set up
//! logging (`--log-format`), hand off to the library.
//!
//! Subcommands: `serve` (the comet server, [`uring_comet::server`]); with the cargo feature
//! `loadtest` (on by default) also the tools beside it ([`uring_comet::tools`]): `loadtest`
//! (the built-in load tester), `plot` (a memory log as a chart), `check-system` (whether this
//! box's limits allow N connections) and `gen-friends` (a synthetic social graph).

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "uring-comet",
    version,
    about = "io_uring comet server: long-lived HTTP streams routed by id"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server: subscriber listener and publish listener, one shard per core.
    Serve(Box<uring_comet::config::ServeArgs>),
    /// Load-test a server (by default: start one as a child process and run the seed's CK10 test).
    #[cfg(feature = "loadtest")]
    Loadtest(Box<uring_comet::tools::loadtest::LoadtestArgs>),
    /// Draw a memory log (`--mem-log`) as a chart: RSS and connections against minutes.
    #[cfg(feature = "loadtest")]
    Plot(uring_comet::tools::plot::PlotArgs),
    /// Check whether this box's limits (sysctls, rlimits, io_uring, memory) allow N connections; exit 1 if not.
    #[cfg(feature = "loadtest")]
    CheckSystem(uring_comet::tools::check::CheckArgs),
    /// Generate a synthetic social graph (power-law Chung-Lu) as a SNAP edge list for `serve --friends`.
    #[cfg(feature = "loadtest")]
    GenFriends(uring_comet::tools::gen_friends::GenArgs),
}

fn main() -> anyhow::Result<()> {
    // `serve --config FILE`: the file's settings become flags before clap parses.
    let argv = uring_comet::config::file::with_file_args(std::env::args_os().collect())?;
    let cli = Cli::parse_from(argv);
    let format = match &cli.cmd {
        Cmd::Serve(args) => args.log_format,
        #[allow(unreachable_patterns)]
        _ => uring_comet::config::LogFormat::Text,
    };
    uring_comet::logging::init(format);
    match cli.cmd {
        Cmd::Serve(args) => uring_comet::server::serve_forever((*args).into_config()?),
        #[cfg(feature = "loadtest")]
        Cmd::Loadtest(args) => uring_comet::tools::loadtest::run(*args),
        #[cfg(feature = "loadtest")]
        Cmd::Plot(args) => uring_comet::tools::plot::run(args),
        #[cfg(feature = "loadtest")]
        Cmd::CheckSystem(args) => std::process::exit(uring_comet::tools::check::run(args)?),
        #[cfg(feature = "loadtest")]
        Cmd::GenFriends(args) => uring_comet::tools::gen_friends::run(args),
    }
}
