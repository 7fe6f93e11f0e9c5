//! The head-timeout sweep (`--head-timeout`): a connection still reading the same request
//! it was reading at the previous sweep gets 408; one that finished a request since, or
//! whose input the server itself holds back, does not.
//!
//! `head_timeout_s = 0` makes every turn a sweep (the flag's parser never lets it below 1),
//! so a test counts sweeps by counting turns, with no clock.

use crate::driver::fake::Kind;

use super::harness::{config, delivered_reply, id_owned_by, send_request, Harness, SUB};

/// The 408 reply, written out by hand.
const TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 16\r\nConnection: close\r\n\r\nRequest Timeout\n";

/// Bench whose every turn sweeps.
fn sweeping(shards: usize) -> Harness {
    Harness::new(config(shards, |c| c.head_timeout_s = 0))
}

/// Two subscribers arrive in one turn (one sweep: both still reading); one sends its whole
/// head before the next sweep and streams, the other gets 408 at that sweep, not before.
#[test]
fn a_head_unfinished_at_two_sweeps_gets_408_and_only_it() {
    let mut h = sweeping(1);
    let (slow, quick) = (10_001, 10_002);
    h.io[0].accept(h.listener(0, SUB), slow);
    h.io[0].accept(h.listener(0, SUB), quick);
    h.turn(0);
    assert!(h.io[0].sends(slow).is_empty(), "no 408 at the first sweep");
    // A partial head does not count as progress: the request is the same.
    h.io[0].recv_select(slow, b"GET /test/1 HTTP/1.1\r\nHost: a\r\n");
    h.io[0].recv_select(quick, b"GET /test/2 HTTP/1.1\r\nHost: a\r\n\r\n");
    h.turn(0);
    assert_eq!(h.io[0].sends(slow), [TIMEOUT]);
    let quick = h.io[0].handle_of(quick);
    let head = h.read(0, quick);
    assert!(head.starts_with(b"HTTP/1.1 200 OK\r\n"), "a stream head");
    h.turn(0);
    assert_eq!(h.io[0].sends(quick).len(), 1, "a stream is never timed out");
}

/// A publisher that completes a request between every two sweeps is never timed out, even
/// with part of the next request always unread; once it stops mid-request, the second sweep
/// answers 408, after the replies it is owed.
#[test]
fn a_publisher_finishing_requests_between_sweeps_is_not_timed_out() {
    let mut h = sweeping(1);
    let p = 10_001;
    h.publisher(0, p);
    let req = send_request("1", b"x");
    let (len, half) = (req.len(), req.len() / 2);
    let stream: Vec<u8> = req.repeat(6);
    // Each turn: the client reads what was sent, then sends the rest of a request and half
    // of the next (the first turn: a whole request and a half).
    let mut out = Vec::new();
    let mut at = 0;
    for end in [
        len + half,
        2 * len + half,
        3 * len + half,
        4 * len + half,
        5 * len + half,
    ] {
        out.extend(h.io[0].complete_send(p).unwrap_or_default());
        let reading = h.io[0].in_flight(p).contains(&Kind::Recv);
        assert!(reading, "timed out while finishing requests: {out:?}");
        assert_eq!(h.io[0].recv(p, &stream[at..end]), end - at);
        at = end;
        h.turn(0);
    }
    h.turn(0);
    out.extend(h.read(0, p));
    let mut expected = delivered_reply(0).repeat(5);
    expected.extend_from_slice(TIMEOUT);
    assert_eq!(
        out, expected,
        "five replies, then 408 for the sixth, unfinished"
    );
}

/// A publisher pipelining more publishes than the server lets await replies: its reads
/// pause with the tail of a request unread. That wait is the server's, not the client's:
/// however many sweeps pass, no 408; once replies come back and reading resumes, every
/// request is answered.
#[test]
fn a_publisher_the_server_holds_back_is_not_timed_out() {
    let mut h = sweeping(2);
    let (p, x, n) = (10_001, id_owned_by(1, 2), 2000);
    h.publisher(0, p);
    let stream = send_request(&x, b"a").repeat(n);
    // Shard 1, the owner of x, does not turn yet: every publish awaits its reply.
    let mut at = 0;
    while h.io[0].in_flight(p).contains(&Kind::Recv) {
        at += h.io[0].recv(p, &stream[at..]);
        h.turn(0);
    }
    assert!(at < stream.len(), "the server paused reading");
    for _ in 0..3 {
        h.turn(0);
    }
    // The owner answers and reading resumes; each turn of shard 0 from then on takes more
    // of the stream (the client sends as soon as it may).
    for _ in 0..100 {
        if at == stream.len() {
            break;
        }
        h.turn(1);
        if h.io[0].in_flight(p).contains(&Kind::Recv) {
            at += h.io[0].recv(p, &stream[at..]);
        }
        h.turn(0);
    }
    assert_eq!(
        at,
        stream.len(),
        "reading resumed and took the whole stream"
    );
    h.drive();
    let out = h.read(0, p);
    assert_eq!(
        out.len(),
        n * delivered_reply(0).len(),
        "every request answered"
    );
    assert_eq!(out, delivered_reply(0).repeat(n));
}
