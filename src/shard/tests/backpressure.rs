//! The backpressure rule (`--max-pending-bytes`): output queued behind a send in flight is
//! a subscriber's backlog; a backlog over the bound drops the subscriber only once that send
//! has been stuck 500 ms, or at once past 64 times the bound; the cut ends the stream on a
//! message boundary.
//!
//! Messages come as mesh `Route`s with no reply wanted (as from another cluster node), each
//! batch handled within one turn, so one turn's messages share one clock reading.

use std::os::fd::RawFd;
use std::time::Duration;

use bytes::Bytes;

use crate::driver::fake::{Call, Kind};
use crate::id::Id;
use crate::mesh::{Msg, ReplyTo};

use super::harness::{config, Harness};

/// `--max-pending-bytes` of these tests (the smallest the flag allows).
const BOUND: usize = 1024;
/// Longer than the shard's grace for a send in flight (500 ms).
const STUCK: Duration = Duration::from_millis(600);

/// A shard with one raw subscriber under id 1 whose head has been read; returns its handle.
fn streaming() -> (Harness, RawFd) {
    let mut h = Harness::new(config(1, |c| c.max_pending_bytes = BOUND));
    let (_, s) = h.subscribe(0, 10_001, "/sub/1");
    assert!(!h.read(0, s).is_empty(), "stream head");
    (h, s)
}

/// Publishes `count` messages of `len` bytes to id 1 in one batch; shard 0 turns once.
fn publish(h: &mut Harness, count: usize, len: usize) {
    let id = Id::parse(b"1").expect("id");
    let batch = (0..count)
        .map(|_| Msg::Route {
            id: id.clone(),
            msg: Bytes::from(vec![b'm'; len]),
            reply: ReplyTo::NOBODY,
            at: 0,
        })
        .collect();
    h.mesh.push(0, batch);
    h.turn(0);
}

/// Whether the shard cut subscriber `s` as too slow (counted). A cut is clean: nothing is
/// cancelled, the send in flight is left to finish.
fn cut(h: &Harness, s: RawFd) -> bool {
    let counted = h.stat(0, |st| &st.slow_closed);
    let cancelled = h.io[0].calls().contains(&Call::Cancel { fd: s });
    assert!(!cancelled, "a cut cancels nothing (slow_closed {counted})");
    assert!(
        h.io[0].in_flight(s).contains(&Kind::Send),
        "its send is left in flight"
    );
    counted == 1
}

/// After a cut: the reader takes what is in flight, whole, then only the stream's end
/// (the last chunk) comes, and the connection closes (FIN first, a lingering close).
fn ends_on_a_message_boundary(h: &mut Harness, s: RawFd) {
    let in_flight = h.io[0].complete_send(s).expect("the send in flight");
    assert!(
        in_flight.ends_with(b"\r\n"),
        "a whole chunk: {:?}",
        &in_flight[in_flight.len() - 8..]
    );
    h.turn(0);
    let rest = h.read(0, s);
    assert_eq!(
        rest, b"0\r\n\r\n",
        "only the end after the message in flight"
    );
    // Closing now: its armed poll is cancelled, then the fd closes with a linger.
    assert!(
        h.io[0].calls().contains(&Call::Cancel { fd: s }),
        "closing after its end"
    );
    h.io[0].complete(s, Kind::Poll, -libc::ECANCELED);
    h.io[0].complete(s, Kind::Cancel, 1);
    h.turn(0);
    assert!(
        h.io[0].calls().contains(&Call::Close {
            fd: s,
            linger: true
        }),
        "closed gracefully after its end"
    );
}

/// Over the bound behind a fresh send: kept (a burst to a reader that reads). The same
/// send still in flight 500 ms later: the next message drops the subscriber.
#[test]
fn backlog_over_the_bound_counts_only_behind_a_send_stuck_500ms() {
    let (mut h, s) = streaming();
    // One in flight, three (1,221 bytes with their framing) queued behind it.
    publish(&mut h, 4, 400);
    assert_eq!(h.io[0].in_flight(s), [Kind::Poll, Kind::Send]);
    assert!(!cut(&h, s), "a backlog behind a fresh send is not counted");
    std::thread::sleep(STUCK);
    publish(&mut h, 1, 400);
    assert!(cut(&h, s), "the send has been stuck 500 ms");
    ends_on_a_message_boundary(&mut h, s);
}

/// The 500 ms are those of the send now in flight: a reader that took a send which had
/// waited long is not dropped for the backlog behind the next one.
#[test]
fn a_send_taken_restarts_the_grace() {
    let (mut h, s) = streaming();
    publish(&mut h, 4, 400);
    std::thread::sleep(STUCK);
    // The reader takes the old send; in the same turn, more output piles up behind the new
    // one (the three queued messages).
    assert!(h.io[0].complete_send(s).is_some());
    publish(&mut h, 3, 400);
    assert_eq!(
        h.io[0].sends(s).len(),
        3,
        "head, first message, then the queued three"
    );
    assert!(!cut(&h, s), "the send in flight has just started");
}

/// Past 64 times the bound, the backlog drops the subscriber at once, stuck or not; at or
/// under it, it does not.
#[test]
fn backlog_past_64x_the_bound_is_cut_at_once() {
    const LEN: usize = 4000; // 4,007 bytes as a chunk
    let hard = 64 * BOUND;
    // 16 chunks queued: 64,112 bytes, under 65,536.
    let (mut h, s) = streaming();
    publish(&mut h, 1 + 16, LEN);
    assert!(16 * (LEN + 7) <= hard);
    assert!(!cut(&h, s), "16 chunks behind a fresh send");
    // 17 chunks queued: 68,119 bytes, past it.
    let (mut h, s) = streaming();
    publish(&mut h, 1 + 17, LEN);
    assert!(17 * (LEN + 7) > hard);
    assert!(cut(&h, s), "17 chunks behind a fresh send");
    ends_on_a_message_boundary(&mut h, s);
}
