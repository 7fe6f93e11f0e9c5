//! A direct descriptor's slot is freed only by its CLOSE completion: the shard closes a
//! stream's handle only when every op on it has completed (the fake panics on a close with
//! an op in flight), the slot stays counted until the CLOSE itself completes, and the
//! shard's `slots` gauge (`direct_slots_in_use` in `/stats`) follows the driver's count.

use crate::driver::fake::{Call, Kind, FIXED};
use crate::driver::Driver;

use super::harness::{config, Harness};

/// A stream whose peer hangs up while its head's send is in flight: cancel, then the two
/// completions (the send's, the cancel's), then one CLOSE; the slot is in use until the
/// CLOSE completes, and free after.
#[test]
fn a_slot_is_freed_only_by_its_close_completion() {
    let mut h = Harness::new(config(1, |_| {}));
    let (_, s) = h.subscribe(0, 10_001, "/sub/7");
    assert_ne!(s & FIXED, 0, "installed as a direct descriptor");
    assert_eq!(h.io[0].slots_in_use(), 1);
    assert_eq!(h.stat(0, |st| &st.slots), 1, "the gauge counts the slot");
    assert_eq!(h.io[0].in_flight(s), [Kind::Poll, Kind::Send]);

    h.io[0].complete(s, Kind::Poll, i32::from(libc::POLLRDHUP));
    h.turn(0);
    assert_eq!(h.stat(0, |st| &st.subscribers), 0, "logged out at once");
    assert!(h.io[0].calls().contains(&Call::Cancel { fd: s }));
    assert_eq!(closes(&h, s), 0, "the send is still in flight");

    h.io[0].complete(s, Kind::Send, -libc::ECANCELED);
    h.turn(0);
    assert_eq!(closes(&h, s), 0, "the cancel is still in flight");

    h.io[0].complete(s, Kind::Cancel, 1);
    h.turn(0);
    assert_eq!(closes(&h, s), 1, "closed once the last op is in");
    assert_eq!(h.io[0].slots_in_use(), 1, "the CLOSE has not completed");
    assert_eq!(h.stat(0, |st| &st.slots), 1);

    h.io[0].finish_close(s);
    h.turn(0);
    assert_eq!(h.io[0].slots_in_use(), 0);
    assert_eq!(
        h.stat(0, |st| &st.slots),
        0,
        "the gauge sees the slot freed"
    );
}

/// A stream with nothing in flight but its poll is closed at once when the poll reports
/// the hang-up (no cancel: there is nothing to cancel); the gauge counts its slot beside a
/// new stream's until that CLOSE completes.
#[test]
fn an_idle_stream_closes_at_once_and_its_slot_waits_for_the_close() {
    let mut h = Harness::new(config(1, |_| {}));
    let (_, a) = h.subscribe(0, 10_001, "/sub/7");
    h.read(0, a);
    h.io[0].complete(a, Kind::Poll, i32::from(libc::POLLRDHUP));
    h.turn(0);
    assert!(!h.io[0].calls().contains(&Call::Cancel { fd: a }));
    assert_eq!(closes(&h, a), 1);

    // A new stream while the CLOSE is still running takes another slot.
    let (_, b) = h.subscribe(0, 10_002, "/sub/8");
    assert_ne!(a, b, "a slot whose CLOSE has not completed is not reused");
    assert_eq!(h.stat(0, |st| &st.slots), 2);
    h.io[0].finish_close(a);
    h.turn(0);
    assert_eq!(h.stat(0, |st| &st.slots), 1);
}

/// How many CLOSEs the shard submitted for handle `fd`.
fn closes(h: &Harness, fd: i32) -> usize {
    let calls = h.io[0].calls();
    calls
        .iter()
        .filter(|c| matches!(c, Call::Close { fd: f, .. } if *f == fd))
        .count()
}
