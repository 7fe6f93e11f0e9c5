//! A position the server can no longer serve (issue 14), on both backends, exact bytes: the
//! count bound (`--history`), the age bound (`--history-ttl`) and the memory cap
//! (`--history-memory`) give the reset verdict `expired`, a restart gives `unknown-epoch`,
//! `--history 0` keeps today's bytes and answers a cursor `no-history`; nothing is
//! replayed after a reset and the stream goes on live. Also the `/stats` history keys.
//!
//! An id keeps its stream (and epoch) while a subscriber is on it: each test holds a
//! "keeper" stream open so that a lost position is `expired`, not a recreated stream.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

/// Connects with `given` on SSE and expects the reset verdict `reason` for the one id `id`:
/// `Comet-Recovered: false`, `Comet-Last-Event-ID` at `now`, the reset opening, nothing
/// replayed. Returns the open stream.
fn expect_reset(s: SocketAddr, id: &str, given: &str, now: &Cursor, reason: &str) -> Client {
    let (mut c, head) = sse_open(s, id, &lei(given));
    assert_eq!(
        &history_headers(&head, Some(false)),
        now,
        "{reason}: Comet-Last-Event-ID"
    );
    c.expect_bytes(
        &sse_reset_opening(now, &[(id, reason)]),
        &format!("{reason}: opening"),
    );
    c.expect_silence(
        QUIET,
        &format!("{reason}: nothing is replayed after a reset"),
    );
    c
}

/// Publishes `<id>#from` to `<id>#to` (numbered payloads padded to `size` bytes).
fn publish_range(p: SocketAddr, id: &str, from: u64, to: u64, size: usize) {
    let mut publ = Publisher::connect(p);
    for n in from..=to {
        assert_eq!(
            publ.send(id, &padded(id, n, size)),
            1,
            "the keeper is the one subscriber"
        );
    }
}

/// `<id>#<n>` padded with `.` to `size` bytes (no padding for a shorter `size`).
fn padded(id: &str, n: u64, size: usize) -> Vec<u8> {
    let mut m = numbered(id, n);
    m.resize(size.max(m.len()), b'.');
    m
}

both_backends! {
/// `--history 4`, 10 messages: a cursor at 0 or 5 (message 6 is gone) is `expired` with the
/// current position 10, nothing replayed, then live from 11; at 6 it recovers 7-10 exactly;
/// `earliest` replays what is held, 7-10, opening at 6; a poll at 2 answers at once
/// with no message and the verdict.
fn lost_by_count_bound() {
    let srv = serve_history(&["--history", "4"]);
    let (s, p) = (srv.subscriber, srv.publish);
    let (_keeper, cur) = sse_fresh(s, "lc");
    publish_range(p, "lc", 1, 10, 0);
    let now = cur.at(0, 10);
    for off in [0, 5] {
        expect_reset(s, "lc", &cur.at(0, off).to_string(), &now, "expired");
    }
    expect_resume(s, "lc", &lei(&cur.at(0, 6).to_string()), &cur.at(0, 6), 10);
    expect_resume(s, "lc?last_event_id=earliest", "", &cur.at(0, 6), 10);
    let (head, body) = poll(s, &format!("lc?last_event_id={}", cur.at(0, 2)));
    assert_eq!(history_headers(&head, Some(false)), now);
    assert_eq!(body, poll_body(&[], &now, false, &[("lc", "expired")]));

    let mut c = expect_reset(s, "lc", &cur.at(0, 3).to_string(), &now, "expired");
    let mut t = Track::new("lc", now);
    assert!(publish(p, "lc", &numbered("lc", 11)) >= 2);
    t.sse(&mut c, "live message 11 after the reset");
}
}

both_backends! {
/// `--history-ttl 300ms`: 1 s after three messages (a wait, not a timing assertion) a cursor
/// at 0 is `expired` (current position 3), a cursor at 3 (the current one) still recovers,
/// and both go on live.
fn lost_by_ttl() {
    let srv = serve_history(&["--history-ttl", "300ms"]);
    let (s, p) = (srv.subscriber, srv.publish);
    let (_keeper, cur) = sse_fresh(s, "lt");
    publish_range(p, "lt", 1, 3, 0);
    std::thread::sleep(Duration::from_secs(1));
    let now = cur.at(0, 3);
    let mut lost = expect_reset(s, "lt", &cur.at(0, 0).to_string(), &now, "expired");
    let (mut kept, head) = sse_open(s, "lt", &lei(&now.to_string()));
    assert_eq!(history_headers(&head, Some(true)), now, "the current position recovers");
    kept.expect_bytes(&sse_opening(&now), "opening at the current position");
    assert!(publish(p, "lt", &numbered("lt", 4)) >= 3);
    Track::new("lt", now.clone()).sse(&mut lost, "live after the TTL reset");
    Track::new("lt", now).sse(&mut kept, "live after resuming at the current position");
}
}

both_backends! {
/// `--history-memory 4096`, ten 1,000-byte messages: at most 4 are held (`history_bytes`
/// within the cap, at least 6 `history_evicted`), a cursor at 0 is `expired`, then live.
fn lost_by_memory_cap() {
    let srv = serve_history(&["--history-memory", "4096"]);
    let (s, p) = (srv.subscriber, srv.publish);
    let (_keeper, cur) = sse_fresh(s, "lm");
    publish_range(p, "lm", 1, 10, 1000);
    let evicted = |st: &str| json_number(st, "history_evicted") >= 6.0;
    assert!(
        wait_until(Duration::from_secs(2), || evicted(&stats(p))),
        "evictions not counted: {}",
        stats(p)
    );
    let st = stats(p);
    assert!(json_number(&st, "history_messages") <= 4.0, "held over the cap: {st}");
    assert!(json_number(&st, "history_bytes") <= 4096.0, "bytes over the cap: {st}");
    let now = cur.at(0, 10);
    let mut c = expect_reset(s, "lm", &cur.at(0, 0).to_string(), &now, "expired");
    assert_eq!(publish(p, "lm", &numbered("lm", 11)), 2);
    Track::new("lm", now).sse(&mut c, "live after the memory-cap reset");
}
}

both_backends! {
/// A restarted server (new process, new port) answers the old cursor `unknown-epoch`, with
/// its own new epoch at offset 0, on SSE and on `/poll/`; a cursor beyond the last
/// message is `unknown-offset`.
fn restart_unknown_epoch() {
    let srv = serve_history(&[]);
    let old = published(srv.subscriber, srv.publish, "rs", 2).at(0, 2);
    let (_keeper, _) = sse_fresh(srv.subscriber, "rs");
    let now = old.clone();
    expect_reset(srv.subscriber, "rs", &old.at(0, 3).to_string(), &now, "unknown-offset");
    drop(srv.stop());

    let srv = serve_history(&[]);
    let (s, p) = (srv.subscriber, srv.publish);
    let (mut c, head) = sse_open(s, "rs", &lei(&old.to_string()));
    let now = history_headers(&head, Some(false));
    assert_ne!(now.epoch(0), old.epoch(0), "a restart makes a new epoch");
    assert_eq!(now.off(0), 0);
    c.expect_bytes(&sse_reset_opening(&now, &[("rs", "unknown-epoch")]), "restart: opening");
    c.expect_silence(QUIET, "nothing replayed after unknown-epoch");
    // The stream stays open, so the id keeps the epoch for the poll.
    let (head, body) = poll(s, &format!("rs?last_event_id={old}"));
    assert_eq!(history_headers(&head, Some(false)), now);
    assert_eq!(body, poll_body(&[], &now, false, &[("rs", "unknown-epoch")]));
    assert_eq!(publish(p, "rs", &numbered("rs", 1)), 1);
    Track::new("rs", now).sse(&mut c, "live after unknown-epoch");
}
}

both_backends! {
/// `--history 0`: every stream's bytes are today's (no `Comet-*` header, the opening
/// `: hi\n\n`, events without `id:`, WebSocket and raw payload only, `/test/` unchanged);
/// a valid cursor gets `Comet-Recovered: false` and one reset event `no-history` (its `id:`
/// line, if any, the `Comet-Last-Event-ID` of the head), then live events without `id:`; a
/// malformed cursor still gets 400; `/stats` holds nothing.
fn history_off_keeps_todays_bytes() {
    let srv = serve_history(&["--history", "0"]);
    let (s, p) = (srv.subscriber, srv.publish);
    let (mut sse, head) = sse_open(s, "z0", "");
    head.expect_no_header("comet-recovered");
    head.expect_no_header("comet-last-event-id");
    sse.expect_bytes(SSE_HI, "today's SSE opening");
    let (mut ws, head) = ws_open(s, "z0", "");
    head.expect_no_header("comet-last-event-id");
    let (mut raw, head) = raw_open(s, "z0", "");
    head.expect_no_header("comet-last-event-id");
    let mut seed = Subscriber::connect(s, "z0");
    seed.head.expect_no_header("comet-last-event-id");
    assert_eq!(publish(p, "z0", b"today"), 4);
    sse.expect_bytes(&chunk(b"data: today\n\n"), "today's SSE event");
    ws.expect_bytes(&ws_server_frame(0x81, b"today"), "today's WebSocket frame");
    raw.expect_bytes(&chunk(b"today"), "today's raw chunk");
    seed.expect_msg(b"today");

    // The spec names no cursor without history: the reset event has an `id:` line exactly
    // when the head has `Comet-Last-Event-ID`, and then the same cursor.
    let (mut c, head) = sse_open(s, "z0", &lei("0123456789abcdef-1"));
    head.expect_header_exact("comet-recovered", "false");
    let id_line = match head.header("comet-last-event-id") {
        Some(cur) => format!("id: {}\n", Cursor::parse(cur, "Comet-Last-Event-ID")),
        None => String::new(),
    };
    let reset = format!(
        ": hi\n\nevent: reset\n{id_line}data: {{\"reason\":\"no-history\",\"id\":\"z0\"}}\n\n"
    );
    c.expect_bytes(&chunk(reset.as_bytes()), "the no-history reset opening");
    assert_eq!(publish(p, "z0", b"next"), 5);
    c.expect_bytes(&chunk(b"data: next\n\n"), "live event without id after no-history");
    let req = sub_get("z0", &format!("{SSE_HEADERS}{}", lei("0123456789abcdef-01")));
    let (head, body, _) = request_expect_close(s, &req);
    check_bad_cursor(&head, &body, "a malformed cursor with --history 0");
    let st = stats(p);
    for key in ["history_ids", "history_messages", "history_bytes"] {
        assert_eq!(json_number(&st, key), 0.0, "{key} with --history 0: {st}");
    }
}
}

both_backends! {
/// `/stats` after a known scenario: two ids holding 3 and 2 messages (`history_ids` 2,
/// `history_messages` 5, `history_bytes` at least the 25 payload bytes and at most 128 B
/// more per message, `history_evicted` 0); two resumed connections with every id recovered
/// (SSE, WebSocket) count in `recoveries`, two with a reset (one id, and one of two ids) in
/// `recoveries_failed`, and a stream without a cursor in neither.
fn stats_history_keys() {
    let srv = serve_history(&[]);
    let (s, p) = (srv.subscriber, srv.publish);
    let c1 = published(s, p, "st1", 3);
    let c2 = published(s, p, "st2", 2);
    let held = |st: &str| json_number(st, "history_messages") == 5.0;
    assert!(wait_until(Duration::from_secs(2), || held(&stats(p))), "{}", stats(p));
    let st = stats(p);
    assert_eq!(json_number(&st, "history_ids"), 2.0, "{st}");
    let bytes = json_number(&st, "history_bytes");
    assert!((25.0..=25.0 + 5.0 * 128.0).contains(&bytes), "history_bytes: {st}");
    assert_eq!(json_number(&st, "history_evicted"), 0.0, "{st}");
    assert_eq!(json_number(&st, "recoveries"), 0.0, "no cursor given yet: {st}");
    assert_eq!(json_number(&st, "recoveries_failed"), 0.0, "{st}");

    let mut open = Vec::new();
    open.push(sse_open(s, "st1", &lei(&c1.at(0, 1).to_string())).0);
    open.push(ws_open(s, &format!("st1?cursors=1&last_event_id={}", c1.at(0, 3)), "").0);
    open.push(sse_open(s, "st2", &lei(&c2.at(0, 99).to_string())).0);
    let both = Cursor(vec![c1.0[0].clone(), ("0123456789abcdef".into(), 0)]);
    open.push(sse_open(s, "st1,st2", &lei(&both.to_string())).0);
    open.push(sse_fresh(s, "st1").0);
    let counted = |st: &str| {
        json_number(st, "recoveries") == 2.0 && json_number(st, "recoveries_failed") == 2.0
    };
    assert!(
        wait_until(Duration::from_secs(2), || counted(&stats(p))),
        "recoveries 2 and recoveries_failed 2 expected: {}",
        stats(p)
    );
}
}
