//! `uring-comet loadtest room` end to end, small: the real server as a child of the load
//! tester, 3 rooms of 40 subscribers on every transport, messages padded to 300 bytes; every
//! delivery due arrives exactly once, in order, and the report has the JSON keys.
//! The figures themselves are for the recorded runs (`loadtest/runs/`), not for a test.

mod common;

use common::*;

/// Runs 3 rooms x 40 subscribers on `transport` on this test's backend, no ceiling; the
/// JSON report.
fn run(transport: &str) -> serde_json::Value {
    let backend = match backend() {
        uring_comet::config::Backend::Epoll => "epoll",
        _ => "uring",
    };
    let out = binary()
        .args([
            "loadtest",
            "room",
            "--transport",
            transport,
            "--backend",
            backend,
        ])
        .args([
            "--rooms",
            "3",
            "--subs-per-room",
            "40",
            "--msg-bytes",
            "300",
        ])
        .args(["--rate", "50", "--duration", "1s", "--no-ceiling", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{transport}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{transport}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

both_backends! {
/// Every transport: 50 messages to 3 rooms of 40, each delivered to its room's 40
/// subscribers once (2,000 deliveries), none lost, doubled or out of order; the keys.
fn every_delivery_once_on_every_transport() {
    for transport in ["sse", "ws", "raw", "test"] {
        let r = run(transport);
        assert_eq!(r["passed"], true, "{r}");
        assert_eq!(r["published"], 50, "{r}");
        assert_eq!((&r["expected"], &r["delivered"]), (&2000.into(), &2000.into()), "{r}");
        assert_eq!((&r["lost"], &r["duplicates"], &r["out_of_order"]), (&0.into(), &0.into(), &0.into()), "{r}");
        assert!(r["deliveries_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["cpu_us_per_delivery"].is_number(), "{r}");
        assert!(r["ceiling_sender_us_per_msg"].is_null(), "{r}");
        for p in ["p50", "p99", "p999"] {
            assert!(r["latency_us"][p].as_u64().unwrap() > 0, "{r}");
        }
    }
}
}

both_backends! {
/// `loadtest flood` with a URL template without `{id}`: 20 connections all under `room`, 3
/// messages published to it, 60 chunks checked in order, none a duplicate or a wrong id.
fn flood_without_id_opens_one_room() {
    let server = start(2);
    let (s, p) = (server.subscriber_addr(), server.publish_addr());
    let flood = binary()
        .args(["loadtest", "flood", "--ids", "1-20", "--duration", "4s"])
        .arg(format!("--url-template=http://{s}/test/room"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let up = wait_until(std::time::Duration::from_secs(3), || stat(p, "connections") >= 20);
    assert!(up, "{}", stats(p));
    for seq in 0..3u64 {
        assert_eq!(publish(p, "room", format!("7:{seq}:1").as_bytes()), 20);
    }
    let out = flood.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("flood: 20 of 20 streams opened"), "{text}");
    assert!(
        text.contains("chunks: 60 (60 test messages ok, 0 other messages, 0 duplicate, 0 out of order, 0 wrong id, 0 garbled)"),
        "{text}"
    );
}
}
