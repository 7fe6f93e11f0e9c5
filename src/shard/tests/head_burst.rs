//! A burst of request heads larger than the head-buffer pool (a drain's reconnect storm):
//! a head recv that finds every buffer taken waits for one to come back, instead of failing
//! again at every turn.

use super::harness::{config, Harness, SUB};
use crate::driver::fake::Kind;

/// Head buffers per shard (`shard::head`'s pool).
const POOL: usize = 256;

/// 1,000 subscribers accepted at once with their heads already sent, four times the pool.
/// As the kernel does, every head recv armed while its bytes are there takes a buffer at once
/// or fails with `-ENOBUFS`. Each head fails at most once for want of a buffer, and every
/// one is served. Before, each waiting head was re-armed at once and failed again at every
/// turn while only the pool's 256 succeeded: 1,464 failures here, n²/512 in general.
#[test]
fn a_burst_of_heads_waits_for_buffers_without_retrying_each_turn() {
    let mut h = Harness::new(config(1, |_| {}));
    let n = 1_000;
    let fds: Vec<i32> = (0..n).map(|k| 20_000 + k as i32).collect();
    for &fd in &fds {
        h.io[0].accept(h.listener(0, SUB), fd);
    }
    h.turn(0);
    let mut served = vec![false; n];
    let mut failed = 0;
    for _ in 0..50 {
        // The kernel's pass: each armed head recv whose bytes are there completes now.
        for (k, &fd) in fds.iter().enumerate() {
            if !served[k] && h.io[0].in_flight(fd).contains(&Kind::RecvSelect) {
                let head = format!("GET /test/{k} HTTP/1.1\r\nHost: a\r\n\r\n");
                match h.io[0].recv_select(fd, head.as_bytes()) {
                    Some(_) => served[k] = true,
                    None => failed += 1,
                }
            }
        }
        h.turn(0);
        if served.iter().all(|&s| s) {
            break;
        }
    }
    let left = served.iter().filter(|&&s| !s).count();
    assert_eq!(left, 0, "heads never read after 50 turns");
    assert_eq!(
        failed,
        n - POOL,
        "head recvs that failed for want of a buffer: each head past the pool once"
    );
    let streams: u64 = (0..5).map(|p| h.stat(0, |s| &s.streams[p])).sum();
    assert_eq!(streams, n as u64, "every subscriber logged in");
    assert_eq!(
        h.io[0].provided(1),
        POOL,
        "every head buffer back in the pool"
    );
}
