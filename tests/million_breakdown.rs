//! `loadtest million --split --json` at 2,000 subscribers (issue 20): the report carries the
//! memory breakdown (rows per slab cache with objects and bytes, page tables, socket buffers,
//! RSS), its sum and residual against the growth of memory in use (MemTotal - MemFree -
//! Buffers - Cached; MemTotal - MemAvailable beside it), the generator's
//! and the server's share of each row from the hold-peer run, and the hold-peer run's own
//! breakdown. The residual is within the stated tolerance, or the text says OUTSIDE (the host
//! is shared: other processes' sockets move the same caches).

mod common;

use std::process::Stdio;

use common::*;

#[test]
fn the_breakdown_is_reported_and_adds_up() {
    let out = binary()
        .args([
            "loadtest",
            "million",
            "--conns",
            "2000",
            "--connect-rate",
            "5000",
            "--split",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let b = &v["breakdown"];
    assert_eq!(b["conns"], 2000, "{b}");
    let rows = b["rows"].as_array().unwrap();
    let sum: i64 = rows.iter().map(|r| r["bytes"].as_i64().unwrap()).sum();
    assert_eq!(b["sum"].as_i64(), Some(sum), "{b}");
    let rec: i64 = rows
        .iter()
        .filter(|r| r["reclaimable"] == true)
        .map(|r| r["bytes"].as_i64().unwrap())
        .sum();
    assert_eq!(b["reclaimable"].as_i64(), Some(rec));
    let used = b["used_growth"].as_i64().unwrap();
    assert_eq!(
        b["residual_available"].as_i64(),
        Some(used - (sum - rec)),
        "{b}"
    );
    let in_use = b["in_use_growth"].as_i64().unwrap();
    assert_eq!(b["residual"].as_i64(), Some(in_use - sum), "{b}");
    let slab_readable = b["slab_readable"] == true;
    // SAFETY: geteuid has no preconditions.
    assert_eq!(slab_readable, unsafe { libc::geteuid() } == 0);
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    for n in [
        "PageTables",
        "socket buffers",
        "server RSS",
        "generator anon",
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    if slab_readable {
        for n in ["TCP", "sock_inode_cache", "filp", "dentry", "io_kiocb"] {
            assert!(names.contains(&n), "{n} in {names:?}");
        }
        let tcp = rows.iter().find(|r| r["name"] == "TCP").unwrap();
        assert_eq!(
            tcp["objsize"].as_u64().map(|s| s > 1000),
            Some(true),
            "{tcp}"
        );
    }
    for r in rows {
        assert!(r["generator"].is_number() && r["server"].is_number(), "{r}");
    }
    assert!(b["per_conn"]["server"].is_number() && b["per_conn"]["generator"].is_number());
    assert!(v["hold_peer_breakdown"]["rows"].is_array(), "{v}");
    assert_eq!(v["hold_peer"], false);
    let within = b["within_tolerance"] == true;
    let share = b["residual_share"].as_f64().unwrap().abs();
    assert_eq!(
        within,
        share <= b["tolerance"].as_f64().unwrap() + 1e-4,
        "{b}"
    );
    if !within {
        assert!(stderr.contains("tolerance 5%: OUTSIDE"), "{stderr}");
    }
    assert!(
        stderr.contains("whole machine per subscriber: generator"),
        "{stderr}"
    );
}
