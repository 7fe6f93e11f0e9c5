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
//! (`src/driver/uring.rs`); on the epoll backend each is a process fd.

use std::fmt::Write as _;

use clap::Args;

use crate::config::{Backend, MAX_SHARDS};
use crate::driver::uring::{self, Plan};

/// Kernel memory of one idle TCP socket: `tcp_sock` ~2.4 KB plus inode, dentry and file
/// ~1.3 KB (a direct descriptor still has its file). Measured per process with an allocation
/// trace (`shared/notes/io-uring-measurements.md`); no userspace design moves it.
pub const KERNEL_SOCKET_BYTES: u64 = 3_700;
/// Kernel memory beyond the socket per idle io_uring subscriber: the io_kiocb of its armed
/// `POLL_ADD` (256 B, measured) and its fixed-file slot's resource node (~64 B, estimated).
const KERNEL_EXTRA_URING: u64 = 320;
/// The same for an epoll subscriber: its epitem and wait-queue entry (measured).
const KERNEL_EXTRA_EPOLL: u64 = 208;
/// Server userspace per idle subscriber: the issue-2 budget (measured: 70 B at 10,000).
const SERVER_USER_BYTES: u64 = 128;
/// A loopback load generator's own memory per connection: the flood's ~32-byte record and
/// its epoll registration (estimated, not measured).
const LOADGEN_BYTES: u64 = 256;
/// Kernel memory of one ring: 1,024 SQEs x 64 B + 16,384 CQEs x 16 B, rounded up.
const RING_BYTES: u64 = 384 << 10;
/// Kernel memory of one fixed-file table slot (a pointer), registered whether used or not.
const SLOT_BYTES: u64 = 8;
/// Pages of `tcp_mem` a socket holds while a message is queued on it: the kernel charges
/// socket buffers in whole pages, so one small chunk costs a page on the server's send queue
/// and another on the client's receive queue. An idle socket holds none; a message to every
/// subscriber at once (a broadcast) makes every socket hold one.
const PAGES_PER_BUSY_SOCKET: u64 = 1;
/// The kernel's cap on one ring's fixed-file table (`IORING_MAX_FIXED_FILES`).
const KERNEL_MAX_SLOTS: u64 = 1 << 20;
/// Rings one shard can address: the driver's handle is `FIXED | ring << 20 | slot`.
const MAX_RINGS_PER_SHARD: u64 = 1_024;
/// Process fds besides subscribers, whole process: stdio, logging, spare.
const BASE_FDS: u64 = 32;
/// Process fds per shard besides its subscriber rings: two listeners, the ring-set epoll,
/// the tokio-uring runtime's ring and epoll, eventfds.
const SHARD_FDS: u64 = 8;
/// Accepted connections still reading their request head hold a plain fd; at least this many.
const HEADS_MIN: u64 = 1_024;
/// Longest accept pause of a shard (EMFILE, ENFILE or ENOMEM: DESIGN.md section 3), ms: the
/// listen queues must absorb this long of connects.
const ACCEPT_STALL_MS: u64 = 100;
/// The listen backlog the server asks for (`src/server.rs`); the kernel caps it at somaxconn.
const SERVER_BACKLOG: u64 = 65_535;
/// Connections the built-in load tester puts on one source address (`src/loadtest/flood.rs`).
const LOADTEST_PER_SOURCE: u64 = 25_000;
/// Fds of the load generator besides its connections.
const LOADGEN_FDS: u64 = 64;
/// The LimitNOFILE of `kernel-tuning/uring-comet.service`.
const UNIT_NOFILE: u64 = 1 << 20;
/// Established-hash chain length (sockets per bucket) above which lookups get slow.
const EHASH_MAX_CHAIN: u64 = 4;

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
    /// [`uring::probe`]'s answer.
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
            uring_probe: std::thread::spawn(uring::probe)
                .join()
                .unwrap_or_else(|_| Err("the io_uring probe panicked".into())),
        }
    }
}

/// Parses `ip_local_reserved_ports` (`8000,9000-9010`) into inclusive ranges.
fn parse_ranges(s: &str) -> Vec<(u64, u64)> {
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

impl Verdict {
    /// A verdict; the fix is dropped when the limit allows N.
    fn new(
        limit: &'static str,
        current: String,
        allows: Allows,
        caps_at: Option<u64>,
        fix: String,
        note: String,
    ) -> Verdict {
        let fix = if allows == Allows::Yes {
            String::new()
        } else {
            fix
        };
        Verdict {
            limit,
            current,
            allows,
            caps_at,
            fix,
            note,
        }
    }

    /// A value that could not be read: not checked.
    fn unreadable(limit: &'static str, what: &str) -> Verdict {
        let note = format!("could not read {what}; not checked");
        Verdict::new(
            limit,
            "unreadable".into(),
            Allows::Warn,
            None,
            String::new(),
            note,
        )
    }
}

/// `Yes` if `ok`, else `otherwise`.
fn allows(ok: bool, otherwise: Allows) -> Allows {
    if ok {
        Allows::Yes
    } else {
        otherwise
    }
}

/// Sockets on this box per connection.
fn sockets(t: &Target) -> u64 {
    if t.loopback {
        2
    } else {
        1
    }
}

/// Process fds the server needs besides idle subscribers: listeners, ring fds, publishers and
/// connections whose request head is being read (all plain fds).
fn other_fds(t: &Target, rings_per_shard: u64) -> u64 {
    let heads = HEADS_MIN.max(t.connect_rate * ACCEPT_STALL_MS / 1000);
    BASE_FDS + t.shards * (SHARD_FDS + rings_per_shard) + t.publishers + heads
}

/// The server's ring plan for `t` under a soft RLIMIT_NOFILE ([`Plan`], per shard), and the
/// rings per shard it needs (the plan stops at the driver's 1,024).
fn rings(t: &Target, soft: u64) -> (Plan, u64) {
    let per_shard = t.conns.div_ceil(t.shards);
    let plan = Plan::new(per_shard as usize, soft);
    (plan, per_shard.div_ceil(u64::from(plan.slots_per_ring)))
}

/// Memory: the sockets (kernel) and the records (server, load generator) vs MemAvailable.
fn memory(t: &Target, r: &Readings, backend: Backend) -> Verdict {
    let Some(avail) = r.mem_available else {
        return Verdict::unreadable("memory", "MemAvailable in /proc/meminfo");
    };
    let uring = backend == Backend::Uring;
    let wait = if uring {
        KERNEL_EXTRA_URING
    } else {
        KERNEL_EXTRA_EPOLL
    };
    let loadgen = if t.loopback { LOADGEN_BYTES } else { 0 };
    let per_conn = sockets(t) * KERNEL_SOCKET_BYTES + wait + SERVER_USER_BYTES + loadgen;
    let rings = match r.nofile {
        Some((soft, _)) if uring => {
            let (plan, _) = rings(t, soft);
            let table = u64::from(plan.slots_per_ring) * SLOT_BYTES;
            t.shards * u64::from(plan.rings) * (RING_BYTES + table)
        }
        _ => 0,
    };
    let need = t.conns * per_conn + rings;
    let fix = match t.loopback {
        true => "more RAM, or the load generator on another box (--loopback false)",
        false => "more RAM, or fewer connections per box",
    };
    let note = format!(
        "needs {}: {} B per connection ({} socket(s) x {} B kernel + {wait} B kernel wait + \
         {SERVER_USER_BYTES} B server + {loadgen} B load generator) + {} of rings; a message queued \
         on every socket at once adds {} KiB per socket (see tcp_mem)",
        gib(need),
        commas(per_conn),
        sockets(t),
        commas(KERNEL_SOCKET_BYTES),
        gib(rings),
        PAGES_PER_BUSY_SOCKET * r.page_size / 1024,
    );
    let caps = avail.saturating_sub(rings) / per_conn;
    let current = format!("MemAvailable {}", gib(avail));
    Verdict::new(
        "memory",
        current,
        allows(need <= avail, Allows::No),
        Some(caps),
        fix.into(),
        note,
    )
}

/// tcp_mem's hard limit vs one page per socket (a message queued on every socket at once).
fn tcp_mem(t: &Target, r: &Readings) -> Verdict {
    let limit = "net.ipv4.tcp_mem";
    let Some([_, _, max]) = r.tcp_mem else {
        return Verdict::unreadable(limit, limit);
    };
    let per_conn = sockets(t) * PAGES_PER_BUSY_SOCKET;
    let need = t.conns * per_conn;
    let fix = format!(
        "sysctl -w {limit}=\"{need} {} {}\"",
        need / 4 * 5,
        need / 2 * 3
    );
    let note = format!(
        "a socket with a message queued holds at least {PAGES_PER_BUSY_SOCKET} page: a broadcast \
         to {} connections needs {} pages ({}); over the max the kernel drops segments and they \
         are retransmitted (nstat TcpExtTCPMemoryPressures, TcpExtPruneCalled)",
        commas(t.conns),
        commas(need),
        gib(need * r.page_size),
    );
    let current = format!("max {} pages ({})", commas(max), gib(max * r.page_size));
    Verdict::new(
        limit,
        current,
        allows(max >= need, Allows::No),
        Some(max / per_conn),
        fix,
        note,
    )
}

/// fs.file-max: every socket is a file, direct descriptor or not.
fn file_max(t: &Target, r: &Readings) -> Verdict {
    let Some(max) = r.file_max else {
        return Verdict::unreadable("fs.file-max", "fs.file-max");
    };
    let open = r.files_open.unwrap_or(0) + t.publishers;
    let need = t.conns * sockets(t) + open;
    let note = format!(
        "system-wide open files: {} sockets + {} open now; a socket in a fixed-file table is \
         still a file (CAP_SYS_ADMIN is exempt, a service user is not); symptom: ENFILE, \
         \"VFS: file-max limit reached\"",
        commas(t.conns * sockets(t)),
        commas(open),
    );
    let caps = max.saturating_sub(open) / sockets(t);
    let fix = format!("sysctl -w fs.file-max={}", need / 4 * 5);
    Verdict::new(
        "fs.file-max",
        commas(max),
        allows(max >= need, Allows::No),
        Some(caps),
        fix,
        note,
    )
}

/// fs.nr_open: the ceiling of RLIMIT_NOFILE, so of every process's fd table.
fn nr_open(t: &Target, r: &Readings, backend: Backend) -> Verdict {
    let Some(nr) = r.nr_open else {
        return Verdict::unreadable("fs.nr_open", "fs.nr_open");
    };
    if backend == Backend::Epoll {
        let other = other_fds(t, 0);
        let need = t.conns + other;
        let note = format!(
            "epoll: one process holds every subscriber as a plain fd: {} in all",
            commas(need)
        );
        let (ok, fix) = (nr >= need, format!("sysctl -w fs.nr_open={need}"));
        let caps = Some(nr.saturating_sub(other));
        return Verdict::new(
            "fs.nr_open",
            commas(nr),
            allows(ok, Allows::No),
            caps,
            fix,
            note,
        );
    }
    let mut note = String::from(
        "io_uring: subscribers need no process fds; nr_open bounds RLIMIT_NOFILE, which sizes \
         the rings' tables",
    );
    if nr < UNIT_NOFILE {
        note += &format!("; below the unit's LimitNOFILE={UNIT_NOFILE}: systemd cannot start it");
    }
    if t.loopback && nr < t.conns + LOADGEN_FDS {
        note += "; a one-process load generator cannot hold that many plain fds";
    }
    let fix = format!("sysctl -w fs.nr_open={UNIT_NOFILE}");
    let ok = nr >= UNIT_NOFILE;
    Verdict::new(
        "fs.nr_open",
        commas(nr),
        allows(ok, Allows::Warn),
        None,
        fix,
        note,
    )
}

/// RLIMIT_NOFILE of the server: with io_uring it sizes each ring's fixed-file table.
fn nofile_server(t: &Target, r: &Readings, backend: Backend) -> Verdict {
    let limit = "RLIMIT_NOFILE";
    let Some((soft, hard)) = r.nofile else {
        return Verdict::unreadable(limit, limit);
    };
    let current = format!("{} (hard {})", commas(soft), commas(hard));
    let raise = |n: u64| {
        format!(
            "LimitNOFILE={UNIT_NOFILE}, or ulimit -n {n} (hard limit {})",
            commas(hard)
        )
    };
    if backend == Backend::Epoll {
        let other = other_fds(t, 0);
        let need = t.conns + other;
        let note = format!(
            "epoll: every subscriber is a process fd: {} + {} others",
            commas(t.conns),
            commas(other)
        );
        let caps = Some(soft.saturating_sub(other));
        return Verdict::new(
            limit,
            current,
            allows(soft >= need, Allows::No),
            caps,
            raise(need),
            note,
        );
    }
    let (_, rings_per_shard) = rings(t, soft);
    let other = other_fds(t, rings_per_shard);
    let slots = soft.clamp(64, KERNEL_MAX_SLOTS);
    // Rings a shard can open: the driver's maximum, and the fds left after everything else.
    let fds_left = soft.saturating_sub(other_fds(t, 0)) / t.shards;
    let max_rings = MAX_RINGS_PER_SHARD.min(fds_left);
    let one_ring_each = rings_per_shard > 1 && t.conns.div_ceil(t.shards) <= KERNEL_MAX_SLOTS;
    let note = format!(
        "subscribers are direct descriptors, outside the fd table: a ring's table holds at most \
         min(RLIMIT_NOFILE, 1,048,576) = {} slots, so {} need {rings_per_shard} ring(s) per shard \
         x {} shard(s) = {} rings; process fds needed: {} (listeners, ring fds, publishers, heads \
         being read){}",
        commas(slots),
        commas(t.conns),
        t.shards,
        rings_per_shard * t.shards,
        commas(other),
        match one_ring_each {
            true => format!("; with LimitNOFILE={UNIT_NOFILE}: 1 ring per shard"),
            false => String::new(),
        },
    );
    let ok = rings_per_shard <= max_rings;
    let caps = Some(t.shards * max_rings * slots);
    Verdict::new(
        limit,
        current,
        allows(ok, Allows::No),
        caps,
        raise(UNIT_NOFILE),
        note,
    )
}

/// RLIMIT_NOFILE of a load generator on this box: the built-in flood holds plain fds.
fn nofile_loadgen(t: &Target, r: &Readings) -> Verdict {
    let limit = "RLIMIT_NOFILE (load gen)";
    let Some((soft, hard)) = r.nofile else {
        return Verdict::unreadable(limit, "RLIMIT_NOFILE");
    };
    let per_process = soft.saturating_sub(LOADGEN_FDS).max(1);
    let fix = format!(
        "ulimit -n {} (hard limit {}), or {} `loadtest flood --ids` processes",
        t.conns + LOADGEN_FDS,
        commas(hard),
        t.conns.div_ceil(per_process)
    );
    let note = format!(
        "`loadtest flood` holds each connection as a plain fd in one process: {} per process \
         here; a limit of the load generator, not of the server (the exit status ignores it)",
        commas(per_process)
    );
    let ok = soft >= t.conns + LOADGEN_FDS;
    let current = format!("{} (hard {})", commas(soft), commas(hard));
    Verdict::new(
        limit,
        current,
        allows(ok, Allows::Warn),
        Some(per_process),
        fix,
        note,
    )
}

/// ip_local_port_range: source ports of a load generator on this box.
fn port_range(t: &Target, r: &Readings) -> Verdict {
    let limit = "net.ipv4.ip_local_port_range";
    let Some((lo, hi)) = r.port_range else {
        return Verdict::unreadable(limit, limit);
    };
    // Reserved ports inside the range are never picked for connect().
    let reserved: u64 = (r.reserved_ports.iter())
        .map(|&(a, b)| (b.min(hi) + 1).saturating_sub(a.max(lo)))
        .sum();
    let ports = (hi + 1).saturating_sub(lo).saturating_sub(reserved).max(1);
    let current = format!("{lo}-{hi} ({} ports)", commas(ports));
    if !t.loopback {
        let note = "clients are remote: each client address has its own ports".into();
        return Verdict::new(limit, current, Allows::Yes, None, String::new(), note);
    }
    // 127.0.0.0/8 holds 16,777,214 source addresses: no practical cap, only a spread to do.
    let mut note = format!(
        "one (source, destination) pair has {} ports: {} connections need {} source addresses in \
         127.0.0.0/8 (the loadtest uses {}, one per {}, with IP_BIND_ADDRESS_NO_PORT)",
        commas(ports),
        commas(t.conns),
        t.conns.div_ceil(ports),
        t.conns.div_ceil(LOADTEST_PER_SOURCE),
        commas(LOADTEST_PER_SOURCE),
    );
    let ok = ports >= LOADTEST_PER_SOURCE;
    if !ok {
        note += "; the range is smaller than the loadtest's share per source";
    }
    let fix = format!("sysctl -w {limit}=\"10240 65535\"");
    Verdict::new(limit, current, allows(ok, Allows::Warn), None, fix, note)
}

/// Connects one listener must queue while its shard pauses accepting.
fn burst(t: &Target) -> u64 {
    (t.connect_rate * ACCEPT_STALL_MS / 1000).div_ceil(t.shards)
}

/// somaxconn: the accept queue of each listener (advice: it shapes bursts, it does not cap N).
fn somaxconn(t: &Target, r: &Readings) -> Verdict {
    let limit = "net.core.somaxconn";
    let Some(max) = r.somaxconn else {
        return Verdict::unreadable(limit, limit);
    };
    let queue = max.min(SERVER_BACKLOG);
    let note = format!(
        "accept queue per listener = min({}, somaxconn) = {}; a {ACCEPT_STALL_MS} ms accept pause \
         at {} connects/s queues {} per listener; overflow drops SYNs (nstat \
         TcpExtListenOverflows) and clients retry after 1 s",
        commas(SERVER_BACKLOG),
        commas(queue),
        commas(t.connect_rate),
        commas(burst(t)),
    );
    let fix = format!("sysctl -w {limit}=65535");
    Verdict::new(
        limit,
        commas(max),
        allows(queue >= burst(t), Allows::Warn),
        None,
        fix,
        note,
    )
}

/// tcp_max_syn_backlog: half-open connections (advice).
fn syn_backlog(t: &Target, r: &Readings) -> Verdict {
    let limit = "net.ipv4.tcp_max_syn_backlog";
    let Some(max) = r.syn_backlog else {
        return Verdict::unreadable(limit, limit);
    };
    let cookies = r.syncookies.unwrap_or(1) != 0;
    let note = match cookies {
        true => "with syncookies on, the SYN queue is bounded by the listen backlog and overflow \
                 is answered with cookies; this knob only drops SYNs when syncookies are off"
            .to_string(),
        false => format!(
            "syncookies off: SYNs beyond 3/4 of it are dropped; a burst is {}",
            commas(burst(t))
        ),
    };
    let current = format!(
        "{} (syncookies {})",
        commas(max),
        if cookies { "on" } else { "off" }
    );
    let ok = cookies || max >= burst(t);
    Verdict::new(
        limit,
        current,
        allows(ok, Allows::Warn),
        None,
        format!("sysctl -w {limit}=65535"),
        note,
    )
}

/// nf_conntrack_max: if connection tracking sees these connections, one entry each.
fn conntrack(t: &Target, r: &Readings) -> Verdict {
    let limit = "net.netfilter.nf_conntrack_max";
    let (current, note) = match r.conntrack {
        None => (
            "not loaded".to_string(),
            "nf_conntrack is not loaded: nothing tracks connections".to_string(),
        ),
        Some((max, 0)) => (
            format!("{} (tracking 0)", commas(max)),
            format!(
                "loaded but tracking nothing (no stateful rule matches); if one starts to, it caps \
                 N at {} (keep the comet ports NOTRACK: kernel-tuning/README.md)",
                commas(max)
            ),
        ),
        Some((max, count)) => {
            let need = t.conns + count;
            let note = "connection tracking is active: one entry per connection; when full, new \
                        SYNs are dropped (\"nf_conntrack: table full, dropping packet\")";
            let fix = format!("sysctl -w {limit}={need}, or NOTRACK the comet ports");
            let current = format!("{} (tracking {})", commas(max), commas(count));
            let caps = Some(max.saturating_sub(count));
            return Verdict::new(
                limit,
                current,
                allows(max >= need, Allows::No),
                caps,
                fix,
                note.into(),
            );
        }
    };
    Verdict::new(limit, current, Allows::Yes, None, String::new(), note)
}

/// io_uring: the sysctl and the probe.
fn io_uring(t: &Target, r: &Readings) -> Verdict {
    let disabled = r.io_uring_disabled;
    let knob = disabled.map_or("no knob (before 6.6)".into(), |d| {
        format!("io_uring_disabled={d}")
    });
    let probe = if r.uring_probe.is_ok() {
        "ok"
    } else {
        "failed"
    };
    let current = format!("{knob}, probe {probe}");
    let (allows, caps, note) = match (&r.uring_probe, t.backend) {
        (_, Backend::Epoll) => (Allows::Yes, None, "not used (--backend epoll)".to_string()),
        (Ok(()), _) => (
            Allows::Yes,
            None,
            "subscribers go to fixed-file tables".to_string(),
        ),
        (Err(why), Backend::Uring) => (
            Allows::No,
            Some(0),
            format!("{why}: `serve --backend uring` will not start"),
        ),
        (Err(why), Backend::Auto) => (
            Allows::Warn,
            None,
            format!("{why}: `serve` falls back to epoll, checked as such (RLIMIT_NOFILE row)"),
        ),
    };
    let fix = match disabled.unwrap_or(0) {
        0 => "allow io_uring_setup/io_uring_enter/io_uring_register (seccomp); Linux 6.0+".into(),
        _ => "sysctl -w kernel.io_uring_disabled=0".into(),
    };
    Verdict::new("io_uring", current, allows, caps, fix, note)
}

/// tcp_ehash_entries: the established-socket hash table, sized at boot (advice).
fn ehash(t: &Target, r: &Readings) -> Verdict {
    let limit = "net.ipv4.tcp_ehash_entries";
    let Some(buckets) = r.ehash_entries.filter(|&b| b > 0) else {
        return Verdict::unreadable(limit, limit);
    };
    let sockets = t.conns * sockets(t);
    let chain = sockets.div_ceil(buckets);
    let note = format!(
        "{} sockets in {} buckets: ~{chain} per chain, walked for every incoming segment (sized \
         at boot)",
        commas(sockets),
        commas(buckets)
    );
    let fix = format!("boot with thash_entries={}", sockets.next_power_of_two());
    let ok = chain <= EHASH_MAX_CHAIN;
    Verdict::new(
        limit,
        commas(buckets),
        allows(ok, Allows::Warn),
        None,
        fix,
        note,
    )
}

/// tcp_migrate_req: a closed SO_REUSEPORT listener hands its queue to the others (advice).
fn migrate_req(r: &Readings) -> Verdict {
    let limit = "net.ipv4.tcp_migrate_req";
    let Some(on) = r.migrate_req else {
        return Verdict::unreadable(limit, "net.ipv4.tcp_migrate_req (Linux 5.14+)");
    };
    let note = "when a shard's listener closes (the shard died or the server stops), its queued \
                connections move to another listener instead of being reset";
    let fix = format!("sysctl -w {limit}=1");
    Verdict::new(
        limit,
        on.to_string(),
        allows(on == 1, Allows::Warn),
        None,
        fix,
        note.into(),
    )
}

impl Report {
    /// N fits: no limit says no.
    pub fn fits(&self) -> bool {
        self.verdicts.iter().all(|v| v.allows != Allows::No)
    }

    /// The lowest cap among the limits that say no.
    pub fn cap(&self) -> Option<(u64, &'static str)> {
        let no = self.verdicts.iter().filter(|v| v.allows == Allows::No);
        no.filter_map(|v| Some((v.caps_at?, v.limit))).min()
    }

    /// The final line.
    pub fn summary(&self) -> String {
        let conns = commas(self.target.conns);
        if self.fits() {
            return format!("FITS: {conns} connections are within every limit of this box");
        }
        let no = self.verdicts.iter().filter(|v| v.allows == Allows::No);
        let no: Vec<&str> = no.map(|v| v.limit).collect();
        let cap = (self.cap()).map_or(String::new(), |(c, l)| {
            format!(", capped at {} by {l}", commas(c))
        });
        format!(
            "DOES NOT FIT: {conns} connections{cap}; limits that say NO: {}. kernel-tuning/ \
             (apply.sh, uring-comet.service) sets them all",
            no.join(", "),
        )
    }

    /// The aligned table, the notes and the final line.
    pub fn text(&self) -> String {
        let t = &self.target;
        let clients = match t.loopback {
            true => "load generator on this box (2 sockets each)",
            false => "remote clients (1 socket each)",
        };
        let mut out = format!(
            "check-system: {} connections, {clients}, {} shard(s), {} backend\n\n",
            commas(t.conns),
            t.shards,
            self.backend,
        );
        let head = ["LIMIT", "CURRENT", "ALLOWS N?", "CAPS N AT", "FIX"].map(String::from);
        let mut rows = vec![head];
        for v in &self.verdicts {
            let word = if v.allows == Allows::No {
                "NO"
            } else {
                allows_word(v.allows)
            };
            let fix = if v.fix.is_empty() { "-" } else { &v.fix };
            let caps = v.caps_at.map_or("-".into(), commas);
            rows.push([
                v.limit.into(),
                v.current.clone(),
                word.into(),
                caps,
                fix.into(),
            ]);
        }
        let width = |c: usize| rows.iter().map(|r| r[c].len()).max().unwrap_or(0);
        let widths = [width(0), width(1), width(2), width(3)];
        for r in &rows {
            for (cell, w) in r.iter().zip(widths) {
                let _ = write!(out, "{cell:<w$}  ");
            }
            let _ = writeln!(out, "{}", r[4]);
        }
        out.push_str("\nnotes:\n");
        for v in &self.verdicts {
            let _ = writeln!(out, "  {}: {}", v.limit, v.note);
        }
        let _ = writeln!(out, "\n{}", self.summary());
        out
    }

    /// One JSON object: the target, `fits`, `cap`, one object per limit, the final line.
    pub fn json(&self) -> String {
        let t = &self.target;
        let opt = |n: Option<u64>| n.map_or("null".into(), |n| n.to_string());
        let limits: Vec<String> = (self.verdicts.iter())
            .map(|v| {
                format!(
                    "{{\"limit\":{},\"current\":{},\"allows\":\"{}\",\"caps_at\":{},\"fix\":{},\"note\":{}}}",
                    json_str(v.limit),
                    json_str(&v.current),
                    allows_word(v.allows),
                    opt(v.caps_at),
                    json_str(&v.fix),
                    json_str(&v.note),
                )
            })
            .collect();
        format!(
            "{{\"conns\":{},\"loopback\":{},\"shards\":{},\"backend\":\"{}\",\"fits\":{},\"cap\":{},\"limits\":[{}],\"summary\":{}}}\n",
            t.conns,
            t.loopback,
            t.shards,
            self.backend,
            self.fits(),
            opt(self.cap().map(|(c, _)| c)),
            limits.join(","),
            json_str(&self.summary()),
        )
    }
}

fn allows_word(a: Allows) -> &'static str {
    match a {
        Allows::Yes => "yes",
        Allows::Warn => "warn",
        Allows::No => "no",
    }
}

/// `1234567` -> `1,234,567`.
fn commas(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Bytes in GiB, or MiB below one GiB, one decimal.
fn gib(bytes: u64) -> String {
    match bytes >= 1 << 30 {
        true => format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64),
        false => format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64),
    }
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Readings like this project's sandbox (defaults of a 24 GiB box, RLIMIT_NOFILE 20,000).
    fn sandbox() -> Readings {
        Readings {
            mem_available: Some(23 << 30),
            page_size: 4096,
            tcp_mem: Some([287_898, 383_866, 575_796]),
            file_max: Some(2_466_165),
            files_open: Some(8_000),
            nr_open: Some(1 << 20),
            nofile: Some((20_000, 20_000)),
            port_range: Some((32_768, 60_999)),
            reserved_ports: vec![],
            somaxconn: Some(4_096),
            syn_backlog: Some(2_048),
            syncookies: Some(1),
            conntrack: Some((262_144, 0)),
            ehash_entries: Some(262_144),
            migrate_req: Some(0),
            io_uring_disabled: Some(0),
            uring_probe: Ok(()),
        }
    }

    /// The same box after kernel-tuning/ (sysctl.d conf and LimitNOFILE=1048576).
    fn tuned() -> Readings {
        Readings {
            tcp_mem: Some([2_097_152, 2_621_440, 3_145_728]),
            file_max: Some(4_194_304),
            nofile: Some((1 << 20, 1 << 20)),
            port_range: Some((10_240, 65_535)),
            somaxconn: Some(65_535),
            syn_backlog: Some(65_535),
            ehash_entries: Some(2_097_152),
            migrate_req: Some(1),
            ..sandbox()
        }
    }

    fn target(conns: u64) -> Target {
        Target {
            conns,
            loopback: true,
            shards: 2,
            publishers: 100,
            connect_rate: 10_000,
            backend: Backend::Auto,
        }
    }

    fn row<'a>(r: &'a Report, limit: &str) -> &'a Verdict {
        r.verdicts.iter().find(|v| v.limit == limit).unwrap()
    }

    #[test]
    fn a_million_on_the_default_box_is_capped_by_tcp_mem() {
        let r = evaluate(&target(1_000_000), &sandbox());
        assert!(!r.fits());
        let tm = row(&r, "net.ipv4.tcp_mem");
        assert_eq!(tm.allows, Allows::No);
        // 575,796 pages, one per socket, two sockets per loopback connection.
        assert_eq!(tm.caps_at, Some(287_898));
        assert_eq!(
            tm.fix,
            "sysctl -w net.ipv4.tcp_mem=\"2000000 2500000 3000000\""
        );
        assert_eq!(r.cap(), Some((287_898, "net.ipv4.tcp_mem")));
        assert!(r.summary().starts_with("DOES NOT FIT: 1,000,000"));
        // file-max: (2,466,165 - 8,000 - 100) / 2 sockets.
        let fm = row(&r, "fs.file-max");
        assert_eq!((fm.allows, fm.caps_at), (Allows::Yes, Some(1_229_032)));
    }

    #[test]
    fn rlimit_nofile_sizes_rings_not_subscribers() {
        let r = evaluate(&target(1_000_000), &sandbox());
        let n = row(&r, "RLIMIT_NOFILE");
        assert_eq!(n.allows, Allows::Yes);
        assert!(n.note.contains("20,000 slots"), "{}", n.note);
        assert!(
            n.note
                .contains("25 ring(s) per shard x 2 shard(s) = 50 rings"),
            "{}",
            n.note
        );
        assert!(n.note.contains("1 ring per shard"), "{}", n.note);
        // 1,024 rings per shard (the driver's handle) x 20,000 slots x 2 shards.
        assert_eq!(n.caps_at, Some(40_960_000));
        // The one-process load generator is the one that runs out of fds here: advice only.
        let g = row(&r, "RLIMIT_NOFILE (load gen)");
        assert_eq!((g.allows, g.caps_at), (Allows::Warn, Some(19_936)));
        assert!(
            g.fix.contains("51 `loadtest flood --ids` processes"),
            "{}",
            g.fix
        );
    }

    #[test]
    fn a_million_fits_the_tuned_box() {
        let r = evaluate(&target(1_000_000), &tuned());
        assert!(r.fits(), "{}", r.text());
        assert!(
            r.verdicts.iter().all(|v| v.allows == Allows::Yes),
            "{}",
            r.text()
        );
        let n = row(&r, "RLIMIT_NOFILE");
        assert!(
            n.note
                .contains("1 ring(s) per shard x 2 shard(s) = 2 rings"),
            "{}",
            n.note
        );
        assert!(r.summary().starts_with("FITS: 1,000,000"));
    }

    #[test]
    fn ten_thousand_fit_the_default_box() {
        let r = evaluate(&target(10_000), &sandbox());
        assert!(r.fits(), "{}", r.text());
        assert_eq!(row(&r, "RLIMIT_NOFILE (load gen)").allows, Allows::Yes);
    }

    #[test]
    fn memory_counts_both_sockets_on_loopback() {
        let mut rd = tuned();
        rd.mem_available = Some(4 << 30);
        let r = evaluate(&target(1_000_000), &rd);
        let m = row(&r, "memory");
        assert_eq!(m.allows, Allows::No);
        // 2 x 3,700 + 320 + 128 + 256 = 8,104 B per connection; 2 rings of 500,000 slots.
        let fixed = 2 * (RING_BYTES + 500_000 * SLOT_BYTES);
        assert_eq!(m.caps_at, Some(((4u64 << 30) - fixed) / 8_104));
        // Remote clients: one socket per connection, no load generator.
        let mut t = target(1_000_000);
        t.loopback = false;
        let m = row(&evaluate(&t, &rd), "memory").clone();
        assert_eq!(m.caps_at, Some(((4u64 << 30) - fixed) / 4_148));
        assert_eq!(
            row(&evaluate(&t, &sandbox()), "net.ipv4.tcp_mem").caps_at,
            Some(575_796)
        );
    }

    #[test]
    fn epoll_needs_a_process_fd_per_subscriber() {
        let mut t = target(1_000_000);
        t.backend = Backend::Epoll;
        let r = evaluate(&t, &sandbox());
        assert_eq!(r.backend, Backend::Epoll);
        let n = row(&r, "RLIMIT_NOFILE");
        // 20,000 - (32 + 2 x 8 + 100 publishers + 1,024 heads).
        assert_eq!((n.allows, n.caps_at), (Allows::No, Some(18_828)));
        assert_eq!(row(&r, "io_uring").note, "not used (--backend epoll)");
        assert_eq!(row(&r, "fs.nr_open").allows, Allows::Yes);
        assert!(evaluate(&t, &tuned()).fits());
    }

    #[test]
    fn io_uring_unavailable() {
        let mut rd = tuned();
        rd.io_uring_disabled = Some(2);
        rd.uring_probe = Err("io_uring_setup: EPERM".into());
        // auto: falls back to epoll, which 1,048,576 fds allow.
        let r = evaluate(&target(1_000_000), &rd);
        assert_eq!(r.backend, Backend::Epoll);
        let u = row(&r, "io_uring");
        assert_eq!(u.allows, Allows::Warn);
        assert_eq!(u.fix, "sysctl -w kernel.io_uring_disabled=0");
        assert!(r.fits());
        // uring asked for: the server would not start.
        let mut t = target(1_000_000);
        t.backend = Backend::Uring;
        let r = evaluate(&t, &rd);
        assert_eq!(
            (row(&r, "io_uring").allows, r.cap()),
            (Allows::No, Some((0, "io_uring")))
        );
    }

    #[test]
    fn conntrack_caps_only_when_tracking() {
        let mut rd = tuned();
        assert_eq!(
            row(
                &evaluate(&target(1_000_000), &rd),
                "net.netfilter.nf_conntrack_max"
            )
            .allows,
            Allows::Yes
        );
        rd.conntrack = Some((262_144, 144));
        let r = evaluate(&target(1_000_000), &rd);
        let c = row(&r, "net.netfilter.nf_conntrack_max");
        assert_eq!((c.allows, c.caps_at), (Allows::No, Some(262_000)));
        rd.conntrack = None;
        assert!(evaluate(&target(1_000_000), &rd).fits());
    }

    #[test]
    fn ports_and_sources() {
        let mut rd = sandbox();
        rd.reserved_ports = parse_ranges("8000,32768-32777,70000\n");
        let p = row(
            &evaluate(&target(1_000_000), &rd),
            "net.ipv4.ip_local_port_range",
        )
        .clone();
        assert_eq!(p.current, "32768-60999 (28,222 ports)");
        assert!(p.note.contains("need 36 source addresses"), "{}", p.note);
        assert!(p.note.contains("uses 40"), "{}", p.note);
        rd.port_range = Some((50_000, 60_000));
        let p = row(
            &evaluate(&target(1_000_000), &rd),
            "net.ipv4.ip_local_port_range",
        )
        .clone();
        assert_eq!(p.allows, Allows::Warn);
    }

    #[test]
    fn listen_queues_are_advice() {
        let mut rd = tuned();
        rd.somaxconn = Some(128);
        rd.syncookies = Some(0);
        rd.syn_backlog = Some(128);
        let r = evaluate(&target(1_000_000), &rd);
        assert_eq!(row(&r, "net.core.somaxconn").allows, Allows::Warn);
        assert_eq!(row(&r, "net.ipv4.tcp_max_syn_backlog").allows, Allows::Warn);
        assert!(r.fits());
    }

    #[test]
    fn unreadable_values_are_not_verdicts() {
        let mut rd = tuned();
        rd.tcp_mem = None;
        rd.mem_available = None;
        let r = evaluate(&target(1_000_000), &rd);
        assert_eq!(row(&r, "memory").allows, Allows::Warn);
        assert_eq!(row(&r, "net.ipv4.tcp_mem").current, "unreadable");
        assert!(r.fits());
    }

    #[test]
    fn text_and_json() {
        let r = evaluate(&target(1_000_000), &sandbox());
        let text = r.text();
        let header = text.lines().find(|l| l.starts_with("LIMIT")).unwrap();
        let tm = text
            .lines()
            .find(|l| l.starts_with("net.ipv4.tcp_mem"))
            .unwrap();
        // Aligned: the verdict column starts at the same offset on every row.
        assert_eq!(header.find("ALLOWS N?"), tm.find("NO "));
        assert!(text.ends_with(&format!("{}\n", r.summary())));
        let json = r.json();
        assert!(json.starts_with("{\"conns\":1000000,\"loopback\":true,\"shards\":2,\"backend\":\"uring\",\"fits\":false,\"cap\":287898,"));
        assert!(json.contains("{\"limit\":\"net.ipv4.tcp_mem\",\"current\":\"max 575,796 pages (2.2 GiB)\",\"allows\":\"no\",\"caps_at\":287898,"));
        assert_eq!(json_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }

    #[test]
    fn formatting() {
        assert_eq!(commas(0), "0");
        assert_eq!(commas(999), "999");
        assert_eq!(commas(1_000), "1,000");
        assert_eq!(commas(1_048_576), "1,048,576");
        assert_eq!(gib(3 << 29), "1.5 GiB");
        assert_eq!(parse_ranges(""), vec![]);
    }
}
