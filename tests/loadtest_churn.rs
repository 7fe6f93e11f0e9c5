//! `uring-comet loadtest --churn` end to end, small: with nothing lost the run passes.
//! A churn pick that falls on a subscriber already away is skipped and is not a leave, and
//! the drain stops the churn and waits for those away to come back, so every subscriber
//! that left is counted back and the exit status is success.

mod common;

use common::*;

/// Integer `key` of object `o` in the report.
fn int(o: &serde_json::Value, key: &str) -> u64 {
    o[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no integer {key} in {o}"))
}

both_backends! {
    fn churn_with_nothing_lost_passes() {
        let backend = match backend() {
            uring_comet::config::Backend::Epoll => "epoll",
            _ => "uring",
        };
        // 100 subscribers, 100% of them a second: picks come in batches, and the fixed
        // seed makes some fall on one already away (the old count took those as leaves).
        let out = binary()
            .args(["loadtest", "--backend", backend, "--conns", "100", "--rate", "100"])
            .args(["--duration", "2", "--parallel", "4", "--churn", "6000", "--json"])
            .output()
            .unwrap();
        let (so, se) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        let r: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {so}\n{se}"));
        assert_eq!(int(&r, "lost"), 0, "{r}");
        let churn = &r["churn"];
        assert!(int(churn, "churned") > 0, "no churn: {r}");
        assert_eq!(int(churn, "churned"), int(churn, "reconnected"), "{r}");
        assert!(out.status.success(), "{r}\n{se}");
    }
}
