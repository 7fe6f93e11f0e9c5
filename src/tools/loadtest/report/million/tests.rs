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
