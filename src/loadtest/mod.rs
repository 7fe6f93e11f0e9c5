//! Built-in load tester (placeholder: being written).
use clap::Args;

/// Options of `uring-comet loadtest`.
#[derive(Args, Debug)]
pub struct LoadtestArgs {}

/// Runs the load test.
pub fn run(_args: LoadtestArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
