//! `loadtest million`'s memory breakdown readings, and the hold-peer runs that split it into
//! the load generator's and the server's share (`--hold-peer`, `--split`): see
//! [`Breakdown`](crate::tools::loadtest::report::million::Breakdown) for the method.

use std::path::{Path, PathBuf};

use crate::tools::loadtest::host::child::ServerGuard;
use crate::tools::loadtest::host::proc::anon_bytes;
use crate::tools::loadtest::host::procmem::ProcSet;
use crate::tools::loadtest::host::slabinfo::page_size;
use crate::tools::loadtest::report::million::{Breakdown, MillionReport, Snapshot};

/// The server (`bin serve ARGS`), or with `hold` the hold peer (this executable's
/// `loadtest hold-peer`); its stderr to `log` if given. Errors: as [`ServerGuard::start`].
pub(super) fn start(
    hold: bool,
    bin: &Path,
    args: &[String],
    log: Option<&PathBuf>,
) -> anyhow::Result<ServerGuard> {
    if hold {
        ServerGuard::start_hold_peer(&std::env::current_exe()?, log)
    } else {
        ServerGuard::start(bin, args, log)
    }
}

/// Longest wait for the host's memory to settle before the first reading.
const SETTLE_HOST: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits (at most [`SETTLE_HOST`]) until, over three one-second steps in a row, memory in use
/// (MemTotal - MemFree - Buffers - Cached) moved by less than 16 MiB and TCP sockets in use
/// by fewer than 100: what a previous run closed is freed before the breakdown's first
/// reading. Returns the seconds waited and whether it settled.
pub(super) fn settle_host() -> (f64, bool) {
    use crate::tools::loadtest::jobs::million::fleet::MemInfo;
    let t0 = std::time::Instant::now();
    let mut last = MemInfo::read();
    let mut calm = 0;
    while calm < 3 && t0.elapsed() < SETTLE_HOST {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let now = MemInfo::read();
        let quiet = now.in_use().abs_diff(last.in_use()) < 16 << 20
            && now.tcp_inuse.abs_diff(last.tcp_inuse) < 100;
        calm = if quiet { calm + 1 } else { 0 };
        last = now;
    }
    (t0.elapsed().as_secs_f64(), calm >= 3)
}

/// Reads /proc/slabinfo, /proc/meminfo and /proc/net/sockstat into reading `i` of `r.mem`;
/// returns the whole snapshot.
pub(super) fn snapshot(r: &mut MillionReport, i: usize) -> Snapshot {
    let s = Snapshot::read();
    r.mem[i] = s.mem;
    s
}

/// With every subscriber connected: the workers' RSS and PSS, then the breakdown from
/// `snaps[0]` (server idle) to `snaps[1]` (all connected) into `r`. The server's RSS growth
/// (`r.server_rss_loaded` - idle) and the generator's anonymous memory (the workers', and this
/// process's growth) are its user-space rows.
pub(super) fn connected_memory(r: &mut MillionReport, workers: &[u32], snaps: [&Snapshot; 2]) {
    if let Ok(m) = (ProcSet {
        roots: workers.to_vec(),
    })
    .mem()
    {
        (r.workers_rss, r.workers_pss) = (m.rss, m.pss);
    }
    let server = if r.server_rss_loaded == 0 {
        0 // it died: no reading
    } else {
        r.server_rss_loaded as i64 - r.server_rss_idle as i64
    };
    let me = anon_bytes(std::process::id()) as i64 - snaps[0].own_anon as i64;
    let clients = workers.iter().map(|&p| anon_bytes(p)).sum::<u64>() as i64 + me;
    r.breakdown = Some(Breakdown::new(
        snaps[0],
        snaps[1],
        r.connected,
        (server, clients),
        page_size(),
    ));
}

/// `loadtest million --hold-peer` and `--split`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SplitFlags {
    /// Hold the subscribers on a minimal accept-and-hold peer (`loadtest hold-peer`: io_uring
    /// accept into direct descriptors, sends the head, reads the request once, then nothing
    /// armed) instead of the server; no delivery. Measures the load generator's own memory.
    #[arg(long)]
    pub hold_peer: bool,
    /// Run `--hold-peer` first with the same subscribers, then the real run: its breakdown
    /// gets a generator column (from the first run) and a server column (total - generator),
    /// and the server's whole-machine bytes per subscriber.
    #[arg(long, conflicts_with = "hold_peer")]
    pub split: bool,
}

/// How long the memory gets to settle after the hold-peer run before the real run starts.
const SETTLE_BETWEEN: std::time::Duration = std::time::Duration::from_secs(5);

/// With `--split`: the hold-peer run (`run_once(a, true)`), its report text on stderr, its
/// breakdown returned; `None` without `--split`. Errors: as the run's.
pub(super) fn baseline(
    a: &super::MillionArgs,
    run_once: fn(&super::MillionArgs, bool) -> anyhow::Result<MillionReport>,
) -> anyhow::Result<Option<Breakdown>> {
    if !a.split.split {
        return Ok(None);
    }
    super::say("--split: first the generator alone, its subscribers held by a hold peer");
    let r = run_once(a, true)?;
    eprintln!("{}", r.text());
    std::thread::sleep(SETTLE_BETWEEN);
    super::say("--split: now the real run, against the server");
    Ok(r.breakdown)
}

/// Puts the hold-peer run's generator figures into the real run's breakdown, and the whole
/// baseline beside it.
pub(super) fn apply(r: &mut MillionReport, baseline: Option<Breakdown>) {
    let Some(base) = baseline else {
        return;
    };
    if let Some(b) = &mut r.breakdown {
        b.generator = Some(base.generator_side());
    }
    if base.noisy() {
        r.notes.push(format!(
            "the hold-peer run was not quiet (TCP sockets in use grew by {}, not 2 x {}): the generator and server columns carry other processes' sockets",
            base.tcp_sockets, base.conns
        ));
    }
    r.baseline = Some(base);
}
