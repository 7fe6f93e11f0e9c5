//! Tests of the pure evaluation with fake readings (never this machine's live values).

use super::report::{commas, gib, json_str};
use super::{
    evaluate, parse_ranges, Allows, Backend, Readings, Report, Target, Verdict, RING_BYTES,
    SLOT_BYTES,
};

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
    // 2 x 3,830 + 272 + 128 + 600 = 8,660 B per connection; 2 rings of 500,000 slots.
    let fixed = 2 * (RING_BYTES + 500_000 * SLOT_BYTES);
    assert_eq!(m.caps_at, Some(((4u64 << 30) - fixed) / 8_660));
    // Remote clients: one socket per connection, no load generator.
    let mut t = target(1_000_000);
    t.loopback = false;
    let m = row(&evaluate(&t, &rd), "memory").clone();
    assert_eq!(m.caps_at, Some(((4u64 << 30) - fixed) / 4_230));
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
    assert!(p.note.contains("uses 84"), "{}", p.note);
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
    assert_eq!(json_str("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
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
