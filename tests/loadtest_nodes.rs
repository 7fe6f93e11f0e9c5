//! `uring-comet loadtest --nodes N` end to end, small: redis-server and three real server
//! nodes as children of the load tester, in both `--cluster-mode`s. Every message arrives
//! once; in affine mode each record from Redis lands on its id's owner only (the nodes'
//! inbound records sum to the messages sent, none unwanted), in broadcast mode nodes also
//! receive records of ids they do not hold; with `--redis-shards 3` the nodes run on a Redis
//! Cluster and every master carries some of the payloads. The figures are for `loadtest/runs/`.

mod common;

use common::*;

/// `loadtest --nodes 3` in `mode`, 600 subscribers, 300 messages; the JSON report.
fn run(mode: &str) -> serde_json::Value {
    run_with(mode, &[])
}

/// [`run`] with `extra` flags.
fn run_with(mode: &str, extra: &[&str]) -> serde_json::Value {
    let out = binary()
        .args(["loadtest", "--json", "--nodes", "3", "--cluster-mode", mode])
        .args(extra)
        .args([
            "--conns",
            "600",
            "--connect-rate",
            "3000",
            "--parallel",
            "6",
        ])
        .args(["--rate", "300", "--duration", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{mode}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{mode}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The sum of a JSON array of numbers.
fn sum(v: &serde_json::Value) -> u64 {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .sum()
}

#[test]
fn affine_nodes_receive_only_their_own_ids() {
    let r = run("affine");
    assert_eq!(
        (&r["passed"], &r["mode"], &r["lost"]),
        (&true.into(), &"affine".into(), &0.into()),
        "{r}"
    );
    assert_eq!(r["sent"], 300, "{r}");
    assert_eq!(
        sum(&r["inbound_per_node"]),
        300,
        "each record once, at its owner: {r}"
    );
    assert_eq!(sum(&r["unwanted_per_node"]), 0, "{r}");
    assert_eq!(r["inbound_vs_share"].as_array().unwrap().len(), 3, "{r}");
}

#[test]
fn broadcast_nodes_receive_other_ids_too() {
    let r = run("broadcast");
    assert_eq!(
        (&r["passed"], &r["mode"], &r["lost"]),
        (&true.into(), &"broadcast".into(), &0.into()),
        "{r}"
    );
    assert!(sum(&r["inbound_per_node"]) > 300, "shared buckets: {r}");
    assert!(sum(&r["unwanted_per_node"]) > 0, "{r}");
}

#[test]
fn affine_needs_nodes() {
    let out = binary()
        .args(["loadtest", "--cluster-mode", "affine", "--conns", "10"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--cluster-mode affine needs --nodes 2 or more"),
        "{err}"
    );
}

/// `--redis-shards 3`: the nodes on a Redis Cluster of three masters (sharded pub/sub).
/// Every message arrives once, each record at its owner only; every master carried some of
/// the bucket payloads (`SPUBLISH` calls), together at most one per message (a payload holds
/// one or more records).
#[test]
fn affine_nodes_on_a_redis_cluster() {
    let r = run_with("affine", &["--redis-shards", "3"]);
    assert_eq!((&r["passed"], &r["lost"]), (&true.into(), &0.into()), "{r}");
    assert_eq!(
        sum(&r["inbound_per_node"]),
        300,
        "each record once, at its owner: {r}"
    );
    let shards = r["redis_shards"].as_array().unwrap();
    assert_eq!(shards.len(), 3, "{r}");
    let calls: Vec<u64> = shards
        .iter()
        .map(|s| s["spublish"].as_u64().unwrap())
        .collect();
    assert!(
        calls.iter().all(|&n| n > 0),
        "every master carried payloads: {calls:?}"
    );
    let total: u64 = calls.iter().sum();
    assert!(
        (1..=300).contains(&total),
        "one SPUBLISH per payload, a payload holds 1 or more records: {calls:?}"
    );
}
