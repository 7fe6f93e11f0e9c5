//! The network limits: the ephemeral port range, the accept queues, conntrack, the TCP
//! established hash, and SO_REUSEPORT migration.

use super::limits::{allows, sockets};
use super::report::commas;
use super::{
    Allows, Readings, Target, Verdict, ACCEPT_STALL_MS, EHASH_MAX_CHAIN, LOADTEST_PER_SOURCE,
    SERVER_BACKLOG,
};

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
