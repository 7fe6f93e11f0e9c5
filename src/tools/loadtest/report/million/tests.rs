//! Tests of the million report: the verdict, the per-connection figures and the JSON.

use super::MillionReport;

#[test]
fn verdict_and_figures() {
    let mut r = MillionReport {
        conns: 10,
        connected: 10,
        published: 10,
        exact: 10,
        connect_s: 0.5,
        server_rss_idle: 1000,
        server_rss_loaded: 1900,
        lat: vec![0, 0, 5, 4, 1],
        ..MillionReport::default()
    };
    assert!(r.passed());
    assert_eq!(r.connect_rate(), 20.0);
    assert_eq!(r.server_rss_per_conn(), 90.0);
    assert_eq!(r.lat_quantile(0.5), 4);
    assert_eq!(r.lat_quantile(0.99), 16);
    assert_eq!(r.lat_quantile(1.0), 16);
    let j = r.json();
    assert!(j.contains("\"passed\":true") && !j.contains('\n'), "{j}");
    assert!(r.text().ends_with("PASS (no loss)"));
    r.missing = 1;
    r.exact = 9;
    assert!(!r.passed());
    assert!(r.json().contains("\"missing\":1"));
}

#[test]
fn drain_figures_text_and_json() {
    use super::DrainFigures;
    let d = DrainFigures {
        period_s: 10.0,
        open: 300,
        closes_per_s: vec![20, 30, 30, 30, 30, 30, 30, 30, 30, 30, 10],
        reconnects_per_s: vec![19, 30, 30, 30, 30, 30, 30, 30, 30, 30, 10],
        reconnect_failed: 1,
        exit_code: Some(0),
        takeover: None,
    };
    assert_eq!((d.closes(), d.reconnects()), (300, 299));
    assert_eq!(
        d.json(),
        "{\"period_s\":10,\"open\":300,\"closes\":300,\"reconnects\":299,\"reconnect_failed\":1,\"exit_code\":0,\"closes_per_s\":[20,30,30,30,30,30,30,30,30,30,10],\"reconnects_per_s\":[19,30,30,30,30,30,30,30,30,30,10],\"takeover\":null}"
    );
    let t = d.text();
    assert!(t.contains("300 seen by the clients, peak 30/s"), "{t}");
    assert!(t.contains("even pace 30/s"), "{t}");
    let r = MillionReport {
        drain: Some(d.clone()),
        ..MillionReport::default()
    };
    assert!(r.json().ends_with(",\"drain\":{\"period_s\":10,\"open\":300,\"closes\":300,\"reconnects\":299,\"reconnect_failed\":1,\"exit_code\":0,\"closes_per_s\":[20,30,30,30,30,30,30,30,30,30,10],\"reconnects_per_s\":[19,30,30,30,30,30,30,30,30,30,10],\"takeover\":null}}"));
    let with = DrainFigures {
        takeover: Some(super::TakeoverCounts {
            rejected_at_capacity: 1,
            head_timeouts: 0,
            accept_errors: 7,
        }),
        ..d
    };
    assert!(with.json().ends_with(
        ",\"takeover\":{\"rejected_at_capacity\":1,\"head_timeouts\":0,\"accept_errors\":7}}"
    ));
    assert!(with.text().contains("\n  takeover server: 1 answered 503 (--max-conns or stopping), 0 answered 408 (--head-timeout), 7 accepts failed"));
}

#[test]
fn server_death_text_and_json() {
    let log = "[1.0] foo\n[2.0] oom-kill:constraint=CONSTRAINT_NONE,task=uring-comet,pid=4242,uid=0\n[2.1] Out of memory: Killed process 4242 (uring-comet) total-vm:1kB\n";
    let line = super::death::oom_line(log, 4242).unwrap();
    assert_eq!(
        line,
        "[2.1] Out of memory: Killed process 4242 (uring-comet) total-vm:1kB"
    );
    assert_eq!(super::death::oom_line(log, 424), None);
    let d = super::ServerDeath {
        exit_code: None,
        signal: Some(9),
        oom: Some("x".into()),
        log_readable: true,
        connected: 1234,
    };
    assert_eq!(
        d.text(),
        "server:    DIED signal 9, OOM kill in the kernel log: x; 1234 subscribers connected"
    );
    assert_eq!(
        d.json(),
        "{\"exit_code\":null,\"signal\":9,\"oom\":\"x\",\"log_readable\":true,\"connected\":1234}"
    );
    let r = MillionReport {
        death: Some(d),
        ..MillionReport::default()
    };
    assert!(r.json().ends_with(",\"server_death\":{\"exit_code\":null,\"signal\":9,\"oom\":\"x\",\"log_readable\":true,\"connected\":1234}}"));
    assert!(r.text().contains("\nserver:    DIED signal 9"));
}

/// Two snapshots from a captured /proc/slabinfo: 1,000 connections add two `TCP` and two
/// `sock_inode_cache` objects each (whole slabs), and one `io_kiocb`.
fn snapshots() -> (super::Snapshot, super::Snapshot) {
    use crate::tools::loadtest::host::slabinfo::parse;
    let before = parse(include_str!("../../host/testdata/slabinfo-6.18.txt"));
    let mut after = before.clone();
    for c in &mut after.caches {
        match c.name.as_str() {
            // 2,000 objects of 2,368 B: 154 slabs of 8 pages (13 objects a slab).
            "TCP" => (c.active_objs, c.num_slabs) = (c.active_objs + 2000, c.num_slabs + 154),
            // 2,000 of 832 B: 106 slabs of 4 pages (19 a slab), reclaimable.
            "sock_inode_cache" => {
                (c.active_objs, c.num_slabs) = (c.active_objs + 2000, c.num_slabs + 106);
                c.reclaimable = true;
            }
            // 1,000 of 256 B: 63 slabs of 1 page (16 a slab).
            "io_kiocb" => (c.active_objs, c.num_slabs) = (c.active_objs + 1000, c.num_slabs + 63),
            _ => {}
        }
    }
    let mem = |used: u64| super::MemInfo {
        total: 24 << 30,
        available: (24 << 30) - used,
        free: (24 << 30) - used - (2 << 30),
        cached: 2 << 30,
        ..super::MemInfo::default()
    };
    let a = super::Snapshot {
        slab: Some(before),
        mem: mem(1 << 30),
        own_anon: 0,
    };
    let mut b = super::Snapshot {
        slab: Some(after),
        mem: mem(1 << 30),
        own_anon: 0,
    };
    b.mem.page_tables = 40_960;
    b.mem.tcp_inuse = 2000;
    // Growth counted by MemAvailable: TCP + io_kiocb + page tables + RSS rows, not the
    // reclaimable sock_inode_cache.
    let counted = 154 * 8 * 4096 + 63 * 4096 + 40_960 + 90_000 + 200_000;
    b.mem.available -= counted;
    // Memory in use grows by all of it, the reclaimable slab included; the page cache that
    // moved meanwhile (DAMON's pageout here drops some) is left out.
    b.mem.free += 64 << 20;
    b.mem.free -= counted + 106 * 4 * 4096;
    b.mem.cached -= 64 << 20;
    (a, b)
}

#[test]
fn breakdown_arithmetic() {
    let (a, b) = snapshots();
    let mut k = super::Breakdown::new(&a, &b, 1000, (90_000, 200_000), 4096);
    let row = |k: &super::Breakdown, n: &str| k.rows.iter().find(|r| r.name == n).unwrap().clone();
    // Objects x slab bytes per object (8 pages / 13 objects); the rest of the new slabs
    // (TCP's 154, io_kiocb's 63 for 1,000 objects of 256 B) is free room.
    let tcp = (2000.0 * 8.0 * 4096.0 / 13.0_f64).round() as i64;
    assert_eq!(row(&k, "TCP").bytes, tcp);
    assert_eq!(row(&k, "TCP").objs, 2000);
    let inode = (2000.0 * 4.0 * 4096.0 / 19.0_f64).round() as i64;
    let free = 154 * 8 * 4096 - tcp + 63 * 4096 - 256_000;
    assert_eq!(row(&k, "slab free room").bytes, free);
    assert_eq!(
        row(&k, "reclaimable free room").bytes,
        106 * 4 * 4096 - inode
    );
    assert!(row(&k, "reclaimable free room").reclaimable);
    assert!(row(&k, "sock_inode_cache").reclaimable);
    assert_eq!(k.rows[0].name, "TCP", "biggest first");
    assert_eq!(k.reclaimable(), 106 * 4 * 4096);
    let all = 154 * 8 * 4096 + 106 * 4 * 4096 + 63 * 4096 + 40_960 + 90_000 + 200_000;
    assert_eq!(k.sum(), all);
    assert_eq!(k.residual(), 0);
    assert_eq!(k.residual_available(), 0);
    assert!(k.within_tolerance() && !k.noisy());
    assert_eq!(k.per_conn(row(&k, "io_kiocb").bytes), 256.0);
    // Without root: one SUnreclaim row and one SReclaimable row from /proc/meminfo.
    let (mut a2, mut b2) = (a.clone(), b.clone());
    (a2.slab, b2.slab) = (None, None);
    let k2 = super::Breakdown::new(&a2, &b2, 1000, (0, 0), 4096);
    assert!(!k2.slab_readable && k2.rows[0].name == "SUnreclaim");
    // A hold-peer run as the baseline: half the socket caches and io_kiocb are the peer's.
    let (rows, g) = k.generator_side();
    let tcp_g = rows.iter().find(|(n, _)| n == "TCP").unwrap().1;
    assert_eq!(tcp_g, k.per_conn(tcp) / 2.0);
    let peer = k.per_conn(tcp + inode) / 2.0 + 256.0 + 90.0;
    assert!((g - (k.per_conn(all) - peer)).abs() < 1e-6, "{g}");
    k.generator = Some((rows, g));
    assert!((k.server_machine_per_conn().unwrap() - peer).abs() < 1e-6);
    let j = k.json();
    for key in [
        "\"rows\":[",
        "\"residual\":0",
        "\"within_tolerance\":true",
        "\"generator\":",
        "\"server\":",
        "\"reclaimable\":true",
    ] {
        assert!(j.contains(key), "{key} in {j}");
    }
    assert!(k.text().contains("whole machine per subscriber: generator"));
    // Growth the rows do not explain shows as the residual.
    b2 = b.clone();
    b2.mem.available -= 10 << 20;
    b2.mem.free -= 10 << 20;
    let k3 = super::Breakdown::new(&a, &b2, 1000, (90_000, 200_000), 4096);
    assert_eq!(k3.residual(), 10 << 20);
    assert_eq!(k3.residual_available(), 10 << 20);
    assert!(!k3.within_tolerance() && k3.text().contains("OUTSIDE"));
    b2.mem.tcp_inuse = 2100;
    let k4 = super::Breakdown::new(&a, &b2, 1000, (0, 0), 4096);
    assert!(k4.noisy() && k4.text().contains("NOT QUIET") && k4.json().contains("\"quiet\":false"));
}
