//! `uring-comet check-system`: can this box hold N concurrent connections?
//!
//! [`Readings::live`] reads every limit that decides it (sysctls from `/proc/sys`, rlimits,
//! io_uring availability, `MemAvailable`); [`evaluate`] turns a [`Target`] and the readings
//! into one [`Verdict`] per limit: does it allow N, what does it cap N at, and the fix. The
//! evaluation is pure, so the tests drive it with fake readings. Each knob is explained (why,
//! how to check it, the symptom when it is missing) in `kernel-tuning/README.md`, and
//! `kernel-tuning/apply.sh` sets them.
//!
//! Model: a connection is one server socket, plus one client socket when the load generator
//! runs on this box over loopback (`--loopback`, the default, because that is how the project
//! tests; `--loopback false` for a production box whose clients are elsewhere). Subscribers on
//! the io_uring backend live in rings' fixed-file tables, not in the process fd table
//! (`src/driver/uring/direct.rs`); on the epoll backend each is a process fd.
//!
//! - `limits`: memory, file descriptors and io_uring, one function per limit.
//! - `net`: ports, accept queues, conntrack, the TCP hash, SO_REUSEPORT migration.
//! - `report`: the verdicts as an aligned table and as JSON.
//! - `tests`: [`evaluate`] on fake readings.

use clap::Args;

use crate::config::{Backend, MAX_SHARDS};
use crate::driver::probe::probe_uring;
use crate::driver::uring::Plan;

// How the memory constants were measured (issue 20): `loadtest million --conns 100000
// --split` as root on the 2-vCPU / 24 GiB box (Linux 6.18, SLUB), the breakdown of
// /proc/slabinfo growth per connection, the generator's share from the hold-peer run and the
// server's = total - generator (method: src/tools/loadtest/report/million/kernel.rs). A cache's
// object costs its slab's pages / objects per slab (padding and slab tail included),
// reclaimable caches included:
// MemAvailable counts sock_inode_cache and dentry (~1.1 KB a socket) as available, but an open
// socket's inode and dentry cannot be reclaimed, which is why a model fed by MemAvailable
// growth alone overestimated the box (3,047,455 predicted, OOM kill at ~2,850,000).

/// Kernel memory of one idle TCP socket, measured (see above): `TCP` 2,520 B (a 2,368 B
/// tcp_sock), `sock_inode_cache` 862 B, `dentry` 195 B, `filp` 195 B, LSM blobs 56 B (a
/// direct descriptor still has its file). No userspace design moves it.
pub const KERNEL_SOCKET_BYTES: u64 = 3_830;
/// Kernel memory beyond the socket per idle io_uring subscriber: the io_kiocb of its armed
/// `POLL_ADD`, measured 272 B (1.06 io_kiocb a subscriber: the ring keeps those of accept
/// bursts cached); no per-slot resource node showed in any kmalloc cache. `serve
/// --no-idle-poll` takes it to ~22 B.
pub(super) const KERNEL_EXTRA_URING: u64 = 272;
/// The same for an epoll subscriber: its epitem and wait-queue entry (allocation trace,
/// `shared/notes/io-uring-measurements.md`).
pub(super) const KERNEL_EXTRA_EPOLL: u64 = 208;
/// Server userspace per idle subscriber: the issue-2 budget (measured: 70 B at 10,000).
pub(super) const SERVER_USER_BYTES: u64 = 128;
/// A loopback load generator's own memory per connection beyond its socket, measured (see
/// above; `loadtest million`'s workers): epoll's epitem and ep_head ~270 B (SLUB merges the
/// epitem's cache with other 128-byte ones), small kmallocs ~150 B, anon_vma_chain 64 B,
/// anonymous memory (records, buffers) 72 B, page tables ~10 B.
pub(super) const LOADGEN_BYTES: u64 = 600;
/// Kernel memory of one ring: 1,024 SQEs x 64 B + 16,384 CQEs x 16 B, rounded up.
pub(super) const RING_BYTES: u64 = 384 << 10;
/// Kernel memory of one fixed-file table slot (a pointer), registered whether used or not.
pub(super) const SLOT_BYTES: u64 = 8;
/// Pages of `tcp_mem` a socket holds while a message is queued on it: the kernel charges
/// socket buffers in whole pages, so one small chunk costs a page on the server's send queue
/// and another on the client's receive queue. An idle socket holds none; a message to every
/// subscriber at once (a broadcast) makes every socket hold one.
pub(super) const PAGES_PER_BUSY_SOCKET: u64 = 1;
/// The kernel's cap on one ring's fixed-file table (`IORING_MAX_FIXED_FILES`).
pub(super) const KERNEL_MAX_SLOTS: u64 = 1 << 20;
/// Rings one shard can address: the driver's handle is `FIXED | ring << 20 | slot`.
pub(super) const MAX_RINGS_PER_SHARD: u64 = 1_024;
/// Process fds besides subscribers, whole process: stdio, logging, spare.
pub(super) const BASE_FDS: u64 = 32;
/// Process fds per shard besides its subscriber rings: two listeners, the ring-set epoll,
/// the tokio-uring runtime's ring and epoll, eventfds.
pub(super) const SHARD_FDS: u64 = 8;
/// Accepted connections still reading their request head hold a plain fd; at least this many.
pub(super) const HEADS_MIN: u64 = 1_024;
/// Longest accept pause of a shard (EMFILE, ENFILE or ENOMEM: DESIGN.md section 3), ms: the
/// listen queues must absorb this long of connects.
pub(super) const ACCEPT_STALL_MS: u64 = 100;
/// The listen backlog the server asks for (`src/server/listen.rs`); the kernel caps it at somaxconn.
pub(super) const SERVER_BACKLOG: u64 = 65_535;
/// Connections the built-in load tester puts on one source address (`src/tools/loadtest/client/connect.rs`).
pub(super) const LOADTEST_PER_SOURCE: u64 = 12_000;
/// Fds of the load generator besides its connections.
pub(super) const LOADGEN_FDS: u64 = 64;
/// The LimitNOFILE of `kernel-tuning/uring-comet.service`.
pub(super) const UNIT_NOFILE: u64 = 1 << 20;
/// Established-hash chain length (sockets per bucket) above which lookups get slow.
pub(super) const EHASH_MAX_CHAIN: u64 = 4;

/// Flags of `uring-comet check-system`. Each doc line is its `--help`.
#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// Concurrent subscriber connections to check for.
    #[arg(long, default_value_t = 1_000_000)]
    pub conns: u64,
    /// The load generator runs on this box over loopback, so each connection is two sockets
    /// here and needs a source port (`--loopback false`: clients are remote).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub loopback: bool,
    /// Shards the server will run; default: available cores.
    #[arg(long)]
    pub shards: Option<u64>,
    /// Publisher connections held at once (each a plain fd).
    #[arg(long, default_value_t = 100)]
    pub publishers: u64,
    /// Peak new connections per second (e.g. every subscriber reconnecting after a restart).
    #[arg(long, default_value_t = 10_000)]
    pub connect_rate: u64,
    /// Backend the server will run: `auto` (io_uring if the probe passes, else epoll),
    /// `uring`, or `epoll` (one process fd per subscriber).
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub backend: Backend,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// What to check for.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Subscriber connections.
    pub conns: u64,
    /// Load generator on this box over loopback.
    pub loopback: bool,
    /// Server shards.
    pub shards: u64,
    /// Publisher connections.
    pub publishers: u64,
    /// Peak connects per second.
    pub connect_rate: u64,
    /// Backend asked for.
    pub backend: Backend,
}

/// The live values; `None` where a value could not be read (or the knob does not exist).
#[derive(Debug, Clone)]
pub struct Readings {
    /// `MemAvailable` of /proc/meminfo, bytes.
    pub mem_available: Option<u64>,
    /// Page size, bytes.
    pub page_size: u64,
    /// `net.ipv4.tcp_mem`: min, pressure, max, in pages.
    pub tcp_mem: Option<[u64; 3]>,
    /// `fs.file-max`.
    pub file_max: Option<u64>,
    /// Files open system-wide now (first field of `fs.file-nr`).
    pub files_open: Option<u64>,
    /// `fs.nr_open`.
    pub nr_open: Option<u64>,
    /// RLIMIT_NOFILE of this process: soft, hard.
    pub nofile: Option<(u64, u64)>,
    /// `net.ipv4.ip_local_port_range`: first, last.
    pub port_range: Option<(u64, u64)>,
    /// `net.ipv4.ip_local_reserved_ports`, as inclusive ranges.
    pub reserved_ports: Vec<(u64, u64)>,
    /// `net.core.somaxconn`.
    pub somaxconn: Option<u64>,
    /// `net.ipv4.tcp_max_syn_backlog`.
    pub syn_backlog: Option<u64>,
    /// `net.ipv4.tcp_syncookies`.
    pub syncookies: Option<u64>,
    /// `net.netfilter.nf_conntrack_max` and `nf_conntrack_count`; `None`: not loaded.
    pub conntrack: Option<(u64, u64)>,
    /// `net.ipv4.tcp_ehash_entries` (absolute value: negative means shared with the host).
    pub ehash_entries: Option<u64>,
    /// `net.ipv4.tcp_migrate_req`.
    pub migrate_req: Option<u64>,
    /// `kernel.io_uring_disabled`; `None` before Linux 6.6 (no such knob: enabled).
    pub io_uring_disabled: Option<u64>,
    /// [`crate::driver::probe::probe_uring`]'s answer.
    pub uring_probe: Result<(), String>,
}

/// Whether a limit allows N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allows {
    /// It does.
    Yes,
    /// It does not bound N but deserves a look (advice, or a value that could not be read).
    Warn,
    /// It does not: N does not fit until it is fixed.
    No,
}

/// One limit's verdict.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The limit's name (a sysctl, an rlimit, `memory`, `io_uring`).
    pub limit: &'static str,
    /// Its live value, in words.
    pub current: String,
    /// Whether it allows N.
    pub allows: Allows,
    /// Most connections it allows; `None`: it does not bound N.
    pub caps_at: Option<u64>,
    /// The fix (a sysctl line, `LimitNOFILE=`, `ulimit -n`); empty when it allows N.
    pub fix: String,
    /// Why, with the arithmetic.
    pub note: String,
}

/// All verdicts for one target.
#[derive(Debug, Clone)]
pub struct Report {
    /// What was checked.
    pub target: Target,
    /// The backend the server would run (`auto` resolved by the probe).
    pub backend: Backend,
    /// One per limit.
    pub verdicts: Vec<Verdict>,
}

/// Runs `uring-comet check-system`; returns the exit status: 0 if N fits, 1 if not.
pub fn run(args: CheckArgs) -> anyhow::Result<i32> {
    let cores = || std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let target = Target {
        conns: args.conns.max(1),
        loopback: args.loopback,
        shards: args.shards.unwrap_or_else(cores),
        publishers: args.publishers,
        connect_rate: args.connect_rate,
        backend: args.backend,
    };
    if target.shards == 0 || target.shards > MAX_SHARDS as u64 {
        anyhow::bail!("--shards must be 1 to {MAX_SHARDS}, got {}", target.shards);
    }
    let report = evaluate(&target, &Readings::live());
    print!(
        "{}",
        if args.json {
            report.json()
        } else {
            report.text()
        }
    );
    Ok(if report.fits() { 0 } else { 1 })
}

impl Readings {
    /// Reads this machine. The io_uring probe runs on a thread of its own: a thread that has
    /// used io_uring later gets EINTR from socket reads with a timeout.
    pub fn live() -> Readings {
        let nums = |key: &str| -> Option<Vec<u64>> {
            let s = std::fs::read_to_string(format!("/proc/sys/{key}")).ok()?;
            let abs = |w: &str| w.trim_start_matches('-').parse().ok();
            s.split_whitespace().map(abs).collect()
        };
        let one = |key: &str| nums(key)?.first().copied();
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes only the struct it is given.
        let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_available = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kib| kib * 1024);
        let reserved = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports");
        Readings {
            mem_available,
            page_size: u64::try_from(page).unwrap_or(4096),
            tcp_mem: nums("net/ipv4/tcp_mem").and_then(|v| v.try_into().ok()),
            file_max: one("fs/file-max"),
            files_open: one("fs/file-nr"),
            nr_open: one("fs/nr_open"),
            nofile: got.then_some((rl.rlim_cur, rl.rlim_max)),
            port_range: nums("net/ipv4/ip_local_port_range")
                .and_then(|v| Some((*v.first()?, *v.get(1)?))),
            reserved_ports: parse_ranges(&reserved.unwrap_or_default()),
            somaxconn: one("net/core/somaxconn"),
            syn_backlog: one("net/ipv4/tcp_max_syn_backlog"),
            syncookies: one("net/ipv4/tcp_syncookies"),
            conntrack: one("net/netfilter/nf_conntrack_max")
                .map(|max| (max, one("net/netfilter/nf_conntrack_count").unwrap_or(0))),
            ehash_entries: one("net/ipv4/tcp_ehash_entries"),
            migrate_req: one("net/ipv4/tcp_migrate_req"),
            io_uring_disabled: one("kernel/io_uring_disabled"),
            uring_probe: std::thread::spawn(probe_uring)
                .join()
                .unwrap_or_else(|_| Err("the io_uring probe panicked".into())),
        }
    }
}

/// Parses `ip_local_reserved_ports` (`8000,9000-9010`) into inclusive ranges.
pub(super) fn parse_ranges(s: &str) -> Vec<(u64, u64)> {
    let range = |part: &str| {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    s.split(',').filter_map(|p| range(p.trim())).collect()
}

/// The verdict of every limit for `t` under `r`.
pub fn evaluate(t: &Target, r: &Readings) -> Report {
    let backend = match (t.backend, &r.uring_probe) {
        (Backend::Epoll, _) | (Backend::Auto, Err(_)) => Backend::Epoll,
        _ => Backend::Uring,
    };
    let mut verdicts = vec![
        memory(t, r, backend),
        tcp_mem(t, r),
        file_max(t, r),
        nr_open(t, r, backend),
        nofile_server(t, r, backend),
    ];
    if t.loopback {
        verdicts.push(nofile_loadgen(t, r));
    }
    verdicts.extend([
        port_range(t, r),
        somaxconn(t, r),
        syn_backlog(t, r),
        conntrack(t, r),
        io_uring(t, r),
        ehash(t, r),
        migrate_req(r),
    ]);
    Report {
        target: *t,
        backend,
        verdicts,
    }
}

mod limits;
mod net;
mod report;
#[cfg(test)]
mod tests;

use limits::{file_max, io_uring, memory, nofile_loadgen, nofile_server, nr_open, tcp_mem};
use net::{conntrack, ehash, migrate_req, port_range, somaxconn, syn_backlog};
