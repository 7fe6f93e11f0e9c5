//! Resume across shards, turn by turn: a connection under an id another shard owns asks the
//! owner for what it missed (`Replay`); a message the owner routes before that answer is
//! skipped live (the answer holds it) and one routed after is kept, so each arrives once,
//! in order, whichever way the turns fall.

use super::harness::{config, id_owned_by, send_request, Harness, SUB};

/// The stream bytes after its head (the first blank line), as text.
fn body(stream: &[u8]) -> String {
    let at = stream
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    String::from_utf8_lossy(&stream[at + 4..]).into_owned()
}

/// Where each message `m1`, `m2`, ... (raw cursor mode: `<cursor> 2\nmN\n`) appears in
/// `text`, asserting each appears exactly once.
fn positions(text: &str, n: usize) -> Vec<usize> {
    (1..=n)
        .map(|k| {
            let needle = format!(" 2\nm{k}\n");
            assert_eq!(text.matches(&needle).count(), 1, "m{k} once in {text:?}");
            text.find(&needle).unwrap()
        })
        .collect()
}

/// Shard 0 already holds ids `a` and `c` (owned by shards 1 and 2) for a first subscriber;
/// a second one asks for everything (`earliest`). Shard 1 routes `m2` in the same turn as,
/// and before, the `Replay` (so `m2` reaches shard 0 live before the answer, which also
/// holds it: skipped), and `m3` after it while shard 2 has not answered yet (kept for the
/// start): the second subscriber gets m1, m2, m3 once each, in order; the first gets m2 and
/// m3 live.
#[test]
fn a_replay_from_the_owner_and_the_live_stream_neither_overlap_nor_gap() {
    let mut h = Harness::new(config(3, |c| c.history.max_msgs = 32));
    let (a, c) = (id_owned_by(1, 3), id_owned_by(2, 3));
    h.publisher(1, 20_001);
    h.write(1, 20_001, &send_request(&a, b"m1"));
    h.drive();
    let (home, first) = h.subscribe(0, 10_001, &format!("/sub/{a},{c}?cursors=1"));
    assert_eq!(
        home, 0,
        "a subscriber under several ids stays where it was accepted"
    );
    let opened = h.read(0, first);
    assert!(body(&opened).contains("{\"last_event_id\":"), "{opened:?}");

    h.accept(0, SUB, 10_002);
    let head =
        format!("GET /sub/{a},{c}?cursors=1&last_event_id=earliest HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(h.io[0].recv_select(10_002, head.as_bytes()).is_some());
    // Shard 0 logs it in and asks shards 1 and 2 (`Replay`); neither has turned yet.
    h.turn(0);
    // Shard 1 routes m2 (a Deliver to shard 0), then reads its inbox: the Replay, whose
    // answer holds m1 and m2. Shard 0 takes both.
    h.write(1, 20_001, &send_request(&a, b"m2"));
    h.turn(0);
    // m3 after the answer, while shard 2's is still awaited.
    h.write(1, 20_001, &send_request(&a, b"m3"));
    h.turn(0);
    h.drive();
    let second = h.io[0].handle_of(10_002);
    let got = h.read(0, second);
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(text.contains("\r\nComet-Recovered: true\r\n"), "{text}");
    let at = positions(&body(&got), 3);
    assert!(at[0] < at[1] && at[1] < at[2], "in order: {text}");
    let live = body(&[opened, h.read(0, first)].concat());
    let at = (live.find(" 2\nm2\n"), live.find(" 2\nm3\n"));
    assert!(matches!(at, (Some(x), Some(y)) if x < y), "{live}");
    assert!(
        !live.contains("\nm1\n"),
        "m1 was before the first subscriber: {live}"
    );
}
