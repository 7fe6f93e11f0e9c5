//! One function per limit: what it allows for the target, what it caps N at, and the fix.

use super::*;

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

/// ip_local_port_range: source ports of a load generator on this box.
pub(super) fn port_range(t: &Target, r: &Readings) -> Verdict {
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
pub(super) fn burst(t: &Target) -> u64 {
    (t.connect_rate * ACCEPT_STALL_MS / 1000).div_ceil(t.shards)
}

/// somaxconn: the accept queue of each listener (advice: it shapes bursts, it does not cap N).
pub(super) fn somaxconn(t: &Target, r: &Readings) -> Verdict {
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
pub(super) fn syn_backlog(t: &Target, r: &Readings) -> Verdict {
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
pub(super) fn conntrack(t: &Target, r: &Readings) -> Verdict {
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

/// tcp_ehash_entries: the established-socket hash table, sized at boot (advice).
pub(super) fn ehash(t: &Target, r: &Readings) -> Verdict {
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
pub(super) fn migrate_req(r: &Readings) -> Verdict {
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
