//! `uring-comet loadtest --transport sse|ws|raw` end to end, small: the real server as a
//! child of the load tester, subscribers that churn (leave and come back with their last
//! cursor) and slow readers that the server cuts and that come back with theirs. With a
//! resuming transport nothing may be missing: every message sent around an absence arrives,
//! every resume is answered recovered, and the cut readers get every message sent to them.
//!
//! The exit status is not asserted here (tests/loadtest_churn.rs does); the report's figures
//! are.

mod common;

use common::*;

/// Integer `key` of object `o` in the report.
fn int(o: &serde_json::Value, key: &str) -> u64 {
    o[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer {key} in {o}"))
}

/// Runs the main job in `transport` on this test's backend; returns its JSON report.
fn run(transport: &str) -> serde_json::Value {
    let backend = match backend() {
        uring_comet::config::Backend::Epoll => "epoll",
        _ => "uring",
    };
    let out = binary()
        .args(["loadtest", "--transport", transport, "--backend", backend])
        .args(["--conns", "100", "--rate", "400", "--duration", "3"])
        .args(["--parallel", "8", "--churn", "1200", "--slow-readers", "10"])
        // Cuts within a second (64 KiB kernel buffer), and history enough for the ~100
        // messages a second each slow reader misses until it is back.
        .args(["--server-arg=--sndbuf=65536", "--server-arg=--history=1000"])
        .arg("--json")
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{transport}: {e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The checks on one report.
fn check(transport: &str, r: &serde_json::Value) {
    let sent = int(r, "sent");
    assert_eq!(sent, 1200, "{transport}: {r}");
    assert_eq!(int(r, "delivered"), sent, "{transport}: {r}");
    for k in [
        "lost",
        "duplicates",
        "out_of_order",
        "id_mismatch",
        "garbled",
    ] {
        assert_eq!(int(r, k), 0, "{transport}: {k}: {r}");
    }
    let churn = &r["churn"];
    assert!(int(churn, "churned") > 0, "{transport}: no churn: {r}");
    assert_eq!(int(churn, "excused"), int(churn, "excused_received"), "{r}");
    let resumed = &r["resumed"];
    assert_eq!(resumed["transport"], transport, "{r}");
    assert!(int(resumed, "reconnects") > 0, "{transport}: {r}");
    for k in ["reset", "header_false", "header_missing", "uncursored"] {
        assert_eq!(int(resumed, k), 0, "{transport}: resumed {k}: {r}");
    }
    let slow = &r["slow_resumed"];
    assert!(
        int(slow, "resumed") > 0,
        "{transport}: no slow reader cut: {r}"
    );
    assert_eq!(int(slow, "resumed"), int(slow, "recovered"), "{r}");
    assert_eq!(int(slow, "received"), int(slow, "expected"), "{r}");
    assert_eq!(int(slow, "bad"), 0, "{r}");
}

both_backends! {
    fn churned_and_cut_subscribers_resume_and_miss_nothing() {
        for t in ["sse", "ws", "raw"] {
            check(t, &run(t));
        }
    }
}
