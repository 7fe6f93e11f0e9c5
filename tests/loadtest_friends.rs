//! `uring-comet loadtest friends` end to end, small: a generated graph, the real server as a
//! child of the load tester, every delivery checked by the tool, with each way the tool reads
//! its streams (`--client-io uring|epoll`). The tool exits non-zero on any lost, duplicate,
//! unexpected or garbled delivery; the JSON report is checked here too.

mod common;

use common::*;

/// Reads `key` of the report as an integer.
fn int(report: &serde_json::Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer {key} in {report}"))
}

fn run(client_io: &str) {
    let dir = temp_dir(client_io);
    let graph = dir.join("g.tsv");
    let gen = binary()
        .args([
            "gen-friends",
            "--users",
            "3000",
            "--avg-friends",
            "10",
            "--seed",
            "3",
            "-o",
        ])
        .arg(&graph)
        .output()
        .unwrap();
    assert!(
        gen.status.success(),
        "gen-friends: {}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let out = binary()
        .args(["loadtest", "friends", "--graph"])
        .arg(&graph)
        .args([
            "--logins",
            "400",
            "--rate",
            "200",
            "--duration",
            "2",
            "--parallel",
            "4",
        ])
        .args(["--client-io", client_io, "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "loadtest friends --client-io {client_io}: {stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(report["client_io"], client_io);
    assert_eq!(int(&report, "events_ok"), 400, "{report}");
    let expected = int(&report, "deliveries_expected");
    assert!(
        expected > 400,
        "too few deliveries to show anything: {report}"
    );
    assert_eq!(int(&report, "deliveries_received"), expected, "{report}");
    assert_eq!(
        int(&report, "deliveries_server_reported"),
        expected,
        "{report}"
    );
    for k in [
        "lost",
        "duplicates",
        "unexpected",
        "out_of_order",
        "garbled",
        "closed",
    ] {
        assert_eq!(int(&report, k), 0, "{k}: {report}");
    }
    assert_eq!(int(&report["latency_us"], "count"), expected, "{report}");
    let by_size: u64 = report["latency_us_by_event_size"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| int(b, "count"))
        .sum();
    assert_eq!(by_size, expected, "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn loadtest_friends_uring_client() {
    run("uring");
}

#[test]
fn loadtest_friends_epoll_client() {
    run("epoll");
}
