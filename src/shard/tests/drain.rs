//! SIGTERM's drain (`shard/drain.rs`) on the fake driver: publishers go at once, streams
//! only at the pace of `--drain-period`, each with its exact end.

use crate::driver::fake::Call;

use super::harness::{config, Harness};

/// The head of a seed stream (`/test/`, HTTP/1.1, `--cors-origin *`), written out by hand.
const SEED_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\nAccess-Control-Allow-Origin: *\r\n\
Transfer-Encoding: chunked\r\n\r\n";

/// Two seed streams and an idle publisher on one shard with `--drain-period` `period_ms`;
/// the drain has started and the shard has turned. Returns the bench and the two streams.
fn draining(period_ms: u64) -> (Harness, [i32; 2]) {
    let mut h = Harness::new(config(1, |c| c.drain_period_ms = period_ms));
    let (_, a) = h.subscribe(0, 10_001, "/test/1");
    let (_, b) = h.subscribe(0, 10_002, "/test/2");
    assert_eq!(h.read(0, a), SEED_HEAD);
    assert_eq!(h.read(0, b), SEED_HEAD);
    h.publisher(0, 10_003);
    h.mesh.begin_drain();
    h.drive();
    (h, [a, b])
}

/// An hour-long drain: the idle publisher's connection is cancelled at once (closed, so it
/// reconnects elsewhere), but no stream is ended yet (the pace is due 0 of 2); the stop
/// that follows the period ends both with their last chunk.
#[test]
fn publishers_go_at_once_streams_at_the_pace() {
    let (mut h, [a, b]) = draining(3_600_000);
    let calls = h.io[0].calls();
    assert!(
        calls.contains(&Call::Cancel { fd: 10_003 }),
        "the idle publisher was not closed at the drain's start: {calls:?}"
    );
    assert_eq!(h.read(0, a), b"", "a stream ended before its turn");
    assert_eq!(h.read(0, b), b"", "a stream ended before its turn");
    h.mesh.shutdown();
    h.drive();
    assert_eq!(h.read(0, a), b"0\r\n\r\n");
    assert_eq!(h.read(0, b), b"0\r\n\r\n");
}

/// `--drain-period 0`: every stream is due at once and gets its last chunk at the first turn.
#[test]
fn a_zero_period_ends_every_stream_at_once() {
    let (mut h, [a, b]) = draining(0);
    assert_eq!(h.read(0, a), b"0\r\n\r\n");
    assert_eq!(h.read(0, b), b"0\r\n\r\n");
}
