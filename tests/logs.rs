//! Log lines (issue 16): `--log-format json` writes one JSON object a line with `timestamp`,
//! `level`, `target` and `fields.message`; in either format, at the default level (`info`),
//! connections, publishes and refused requests add no line. Both backends.

mod common;

use std::time::Duration;

use common::*;

/// Runs a server with `format`, drives traffic, stops it with SIGTERM; returns the stderr
/// lines written before the traffic and after it (before the stop), and all of them.
fn run(format: &str) -> (usize, usize, Vec<String>) {
    let mut srv = Serve::new()
        .shards(2)
        .args(["--log-format", format])
        .env("RUST_LOG", "info")
        .spawn();
    let lines = |srv: &ChildServer| srv.stderr().lines().count();
    // The start's lines are out before the LISTEN line; let the reader thread catch up.
    std::thread::sleep(Duration::from_millis(200));
    let before = lines(&srv);
    let subs: Vec<_> = (0..20)
        .map(|i| Subscriber::connect(srv.subscriber, &format!("u{i}")))
        .collect();
    let mut publ = Publisher::connect(srv.publish);
    for i in 0..20 {
        assert_eq!(publ.send(&format!("u{i}"), b"hello"), 1);
    }
    expect_error(
        srv.publish,
        b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
        404,
        "unknown path",
    );
    expect_error(
        srv.subscriber,
        b"BREW /coffee HTTP/1.1\r\n\r\n",
        400,
        "no Host",
    );
    drop(subs);
    drop(publ);
    std::thread::sleep(Duration::from_millis(200));
    let after = lines(&srv);
    srv.signal(libc::SIGTERM);
    assert!(srv
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    let all = srv.stderr().lines().map(str::to_string).collect();
    (before, after, all)
}

both_backends! {
    /// JSON lines parse, each with the four parts; no line per connection or message.
    fn json_lines_parse() {
        let (before, after, all) = run("json");
        assert_eq!(before, after, "traffic logged lines:\n{}", all.join("\n"));
        assert!(all.iter().any(|l| l.contains("SIGTERM: draining")), "no stop line: {all:?}");
        for line in &all {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
            assert!(matches!(v["level"].as_str(), Some("INFO" | "WARN" | "ERROR")), "{line}");
            assert!(v["target"].as_str().is_some_and(|t| t.starts_with("uring_comet")), "{line}");
            assert!(v["fields"]["message"].is_string(), "{line}");
        }
        let serving = all.iter().find(|l| l.contains("uring-comet serving")).expect("serving line");
        let v: serde_json::Value = serde_json::from_str(serving).unwrap();
        assert_eq!(v["fields"]["shards"], 2);
    }

    /// Text lines (the default): no line per connection or message either.
    fn text_lines_are_quiet_under_traffic() {
        let (before, after, all) = run("text");
        assert_eq!(before, after, "traffic logged lines:\n{}", all.join("\n"));
        assert!(all.iter().all(|l| !l.starts_with('{')), "{all:?}");
    }
}
