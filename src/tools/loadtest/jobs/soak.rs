//! Memory over time: `loadtest soak` (the main job held for minutes or hours with the memory
//! log on, like the seed's 24-hour test) and the chart every main job leaves behind.
//!
//! Both run [`ck10`](super::ck10) and then draw the memory log with [`crate::tools::plot`]: the main
//! job writes `mem.svg` beside its log (`<target>/loadtest/mem.log` unless `--mem-log` is
//! given); the soak writes `<log>.svg` and `<log>.png` and prints the growth after warm-up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use super::ck10;
use crate::tools::duration::parse_duration;
use crate::tools::loadtest::cli::{ConnectFlags, MainArgs, ServerFlags};
use crate::tools::loadtest::wire::resume::Transport;
use crate::tools::plot;

/// Flags of `uring-comet loadtest soak`.
#[derive(Args, Debug)]
pub struct SoakArgs {
    /// Subscribers connecting.
    #[command(flatten)]
    pub connect: ConnectFlags,
    /// Messages per second, all generators together.
    #[arg(long, default_value_t = 1_000.0)]
    pub rate: f64,
    /// How long to publish: `30s`, `10m`, `1h`, `1h30m` (a bare number is seconds).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub duration: Duration,
    /// The memory log, written anew [default: TARGET_DIR/loadtest/soak-mem.log]; the charts go
    /// beside it with the extensions .svg and .png.
    #[arg(long)]
    pub mem_log: Option<PathBuf>,
    /// Time between memory-log lines (`5s`, `1m`, ...).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub mem_interval: Duration,
    /// Warm-up before growth is measured, from when every subscriber is connected.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Publishing generators (keep-alive connections).
    #[arg(long, default_value_t = 100)]
    pub parallel: usize,
    /// Data-plane backend for the server (its `--backend`); default: the server's own (auto).
    #[arg(long, value_enum)]
    pub backend: Option<crate::config::Backend>,
    /// The server under test.
    #[command(flatten)]
    pub server: ServerFlags,
    /// Print the report as one JSON object on stdout (Stats lines then go to stderr).
    #[arg(long)]
    pub json: bool,
    /// Subscriber churn, percent of the subscribers reconnecting per minute (see the main
    /// job's `--churn`); 0: none.
    #[arg(long, default_value_t = 0.0, value_name = "PERCENT_PER_MIN")]
    pub churn: f64,
}

/// Runs the main job (`uring-comet loadtest`), then draws its memory log to `mem.svg` beside
/// it. Without `--mem-log` the log is `<target>/loadtest/mem.log`, started fresh.
pub(crate) fn main_job(mut a: MainArgs) -> Result<()> {
    let log = match &a.mem_log {
        Some(p) => p.clone(),
        None => fresh_log("mem.log")?,
    };
    a.mem_log = Some(log.clone());
    let result = ck10::run(a);
    chart(&log, &["svg"]);
    result
}

/// Runs `loadtest soak`: the main job for `--duration` with the memory log on, then the charts
/// and the growth after warm-up.
pub(crate) fn soak(a: SoakArgs) -> Result<()> {
    let log = match &a.mem_log {
        Some(p) => {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?;
            p.clone()
        }
        None => fresh_log("soak-mem.log")?,
    };
    let conns = a.connect.conns;
    let main = MainArgs {
        connect: a.connect,
        rate: a.rate,
        duration: a.duration.as_secs_f64(),
        parallel: a.parallel,
        backend: a.backend,
        server: a.server,
        drain_ms: 2_000,
        json: a.json,
        mem_log: Some(log.clone()),
        mem_interval: Some(a.mem_interval.as_secs().max(1)),
        source_addrs: 0,
        seed: 1,
        nodes: 1,
        cluster_mode: Default::default(),
        redis_shards: 0,
        transport: Transport::Test,
        churn: a.churn,
        slow_readers: 0,
        slow_msg_bytes: 0,
        slow_rate: 0.0,
        rounds: 0,
        sub_token: None,
    };
    eprintln!(
        "soak: {} subscribers ({}% reconnecting a minute), {} msg/s for {:.0} s; memory log {} every {} s",
        conns,
        a.churn,
        a.rate,
        a.duration.as_secs_f64(),
        log.display(),
        a.mem_interval.as_secs().max(1)
    );
    let result = ck10::run(main);
    chart(&log, &["svg", "png"]);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    match plot::parse_mem_log(&text).map(|s| plot::growth(&s, a.warmup)) {
        Ok(Some(g)) => eprintln!("soak: {}", g.line()),
        Ok(None) => eprintln!("soak: the log does not reach past the warm-up"),
        Err(e) => eprintln!("soak: mem log {}: {e}", log.display()),
    }
    result
}

/// Draws `log` to `<log>.<ext>` for each extension and says where; a chart that cannot be
/// drawn is reported, never a reason to fail the run.
fn chart(log: &Path, exts: &[&str]) {
    let samples = match std::fs::read_to_string(log)
        .map_err(anyhow::Error::from)
        .and_then(|t| plot::parse_mem_log(&t))
    {
        Ok(s) => s,
        Err(e) => return eprintln!("loadtest: no memory chart: {}: {e}", log.display()),
    };
    for ext in exts {
        let out = log.with_extension(ext);
        match plot::draw(&samples, &out, &plot::default_title(log)) {
            Ok(()) => eprintln!(
                "loadtest: memory chart {} (log {})",
                out.display(),
                log.display()
            ),
            Err(e) => eprintln!("loadtest: no memory chart {}: {e:#}", out.display()),
        }
    }
}

/// An empty file `name` in [`out_dir`].
fn fresh_log(name: &str) -> Result<PathBuf> {
    let dir = out_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    Ok(path)
}

/// Where runs leave their files by default: `<target>/loadtest` when this executable lives in
/// a cargo target directory (`<target>/release` or `<target>/debug`), else
/// `$TMPDIR/uring-comet-loadtest`.
pub(crate) fn out_dir() -> PathBuf {
    let exe = std::env::current_exe().ok();
    let parent = exe.as_deref().and_then(Path::parent);
    match parent {
        Some(p) if p.ends_with("release") || p.ends_with("debug") => match p.parent() {
            Some(target) => target.join("loadtest"),
            None => std::env::temp_dir().join("uring-comet-loadtest"),
        },
        _ => std::env::temp_dir().join("uring-comet-loadtest"),
    }
}
