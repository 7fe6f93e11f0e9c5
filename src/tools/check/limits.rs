//! One function per limit: what it allows for the target, what it caps N at, and the fix.
//! Here: memory, file descriptors and io_uring; the network limits are in [`super::net`].

use super::report::{commas, gib};
use super::{
    Allows, Backend, Plan, Readings, Target, Verdict, ACCEPT_STALL_MS, BASE_FDS, HEADS_MIN,
    KERNEL_EXTRA_EPOLL, KERNEL_EXTRA_URING, KERNEL_MAX_SLOTS, KERNEL_SOCKET_BYTES, LOADGEN_BYTES,
    LOADGEN_FDS, MAX_RINGS_PER_SHARD, PAGES_PER_BUSY_SOCKET, RING_BYTES, SERVER_USER_BYTES,
    SHARD_FDS, SLOT_BYTES, UNIT_NOFILE,
};

impl Verdict {
    /// A verdict; the fix is dropped when the limit allows N.
    pub(super) fn new(
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
    pub(super) fn unreadable(limit: &'static str, what: &str) -> Verdict {
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
pub(super) fn allows(ok: bool, otherwise: Allows) -> Allows {
    if ok {
        Allows::Yes
    } else {
        otherwise
    }
}

/// Sockets on this box per connection.
pub(super) fn sockets(t: &Target) -> u64 {
    if t.loopback {
        2
    } else {
        1
    }
}

/// Process fds the server needs besides idle subscribers: listeners, ring fds, publishers and
/// connections whose request head is being read (all plain fds).
pub(super) fn other_fds(t: &Target, rings_per_shard: u64) -> u64 {
    let heads = HEADS_MIN.max(t.connect_rate * ACCEPT_STALL_MS / 1000);
    BASE_FDS + t.shards * (SHARD_FDS + rings_per_shard) + t.publishers + heads
}

/// The server's ring plan for `t` under a soft RLIMIT_NOFILE ([`Plan`], per shard), and the
/// rings per shard it needs (the plan stops at the driver's 1,024).
pub(super) fn rings(t: &Target, soft: u64) -> (Plan, u64) {
    let per_shard = t.conns.div_ceil(t.shards);
    let plan = Plan::new(per_shard as usize, soft);
    (plan, per_shard.div_ceil(u64::from(plan.slots_per_ring)))
}

/// Memory: the sockets (kernel) and the records (server, load generator) vs MemAvailable.
pub(super) fn memory(t: &Target, r: &Readings, backend: Backend) -> Verdict {
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
pub(super) fn tcp_mem(t: &Target, r: &Readings) -> Verdict {
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
pub(super) fn file_max(t: &Target, r: &Readings) -> Verdict {
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
pub(super) fn nr_open(t: &Target, r: &Readings, backend: Backend) -> Verdict {
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
pub(super) fn nofile_server(t: &Target, r: &Readings, backend: Backend) -> Verdict {
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
pub(super) fn nofile_loadgen(t: &Target, r: &Readings) -> Verdict {
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

/// io_uring: the sysctl and the probe.
pub(super) fn io_uring(t: &Target, r: &Readings) -> Verdict {
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
