//! `uring-comet loadtest --rounds N` end to end, small: the real server as a child of the
//! load tester, a few rounds of subscribers that connect, get one message each and close,
//! with the seed's stream and with SSE. Every round delivers every message and ends with the
//! server back at its baseline; the report has the RSS after close of every round. Whether
//! RSS grows is for the recorded runs (`loadtest/runs/`), not for a test.

mod common;

use common::*;

/// Runs three rounds of 60 subscribers in `transport` on this test's backend; the JSON
/// report.
fn run(transport: &str) -> serde_json::Value {
    let backend = match backend() {
        uring_comet::config::Backend::Epoll => "epoll",
        _ => "uring",
    };
    let out = binary()
        .args([
            "loadtest",
            "--rounds",
            "3",
            "--transport",
            transport,
            "--backend",
            backend,
        ])
        .args([
            "--conns",
            "60",
            "--rate",
            "2000",
            "--parallel",
            "4",
            "--json",
        ])
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
/// Three rounds with `/test/` and with SSE: each delivers 60 of 60, no bad chunk, back to
/// baseline, an RSS after close for each round, and the growth reported from round 1.
fn rounds_report_every_round() {
    for transport in ["test", "sse"] {
        let r = run(transport);
        assert_eq!(r["passed"], true, "{r}");
        assert_eq!(r["transport"], transport);
        let rounds = r["rounds"].as_array().expect("rounds");
        assert_eq!(rounds.len(), 3, "{r}");
        for (k, round) in rounds.iter().enumerate() {
            assert_eq!(round["round"], k as u64 + 1);
            assert_eq!((&round["delivered"], &round["bad_chunks"]), (&60.into(), &0.into()), "{round}");
            assert_eq!(round["at_baseline"], true, "{round}");
            assert!(round["rss_after_close_bytes"].as_u64().unwrap() > 0, "{round}");
        }
        assert_eq!(r["growth_from_round"], 1);
        assert!(r["rss_after_close_growth_pct"].is_number());
    }
}
}
