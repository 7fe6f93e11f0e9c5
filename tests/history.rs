//! Resuming an SSE stream (issue 14) against the real server, exact bytes, on both backends:
//! `Last-Event-ID` gets exactly the missed messages then the live ones, the
//! `last_event_id` query form (the header wins, an empty header counts as absent),
//! `earliest`, a cursor over several ids (one recovered and one reset in one connection),
//! and a malformed cursor's 400 on every transport. The lost positions, a restart and
//! `--history 0` are in tests/history_lost.rs; long-polling, WebSocket and raw in
//! tests/history_transports.rs; the replay race and the slow-consumer cut in
//! tests/history_race.rs.

mod common;

use common::*;

/// Payloads of several lines, with quotes, so each replayed event's `data:` lines count.
fn two_lines(_: &str, n: u64) -> Vec<u8> {
    format!("line {n}\r\n\"second\" {n}").into_bytes()
}

both_backends! {
/// A stream closed after message 3 and reopened with `Last-Event-ID: <cursor of 3>` gets
/// `Comet-Recovered: true`, the opening `: hi\nid: <cursor of 3>\n\n`, exactly messages 4-6
/// (each one chunk `id: <cursor>\ndata: ...\n\n`), nothing else, then message 7 live; a
/// cursor at the current position replays nothing and goes on live.
fn sse_resume_with_last_event_id() {
    let srv = serve_history(&[]);
    let (s, p) = (srv.subscriber, srv.publish);
    let (mut c, cur0) = sse_fresh(s, "h1");
    assert_eq!(cur0.off(0), 0, "a stream nobody published to is at offset 0");
    let mut t = Track::new("h1", cur0);
    t.payload = two_lines;
    let mut publ = Publisher::connect(p);
    for n in 1..=3 {
        assert_eq!(publ.send("h1", &two_lines("h1", n)), 1);
        t.sse(&mut c, "live message before the close");
    }
    c.close();
    for n in 4..=6 {
        publ.send("h1", &two_lines("h1", n));
    }
    let (mut c, head) = sse_open(s, "h1", &lei(&t.cur.to_string()));
    assert_eq!(history_headers(&head, Some(true)), t.cur, "Comet-Last-Event-ID");
    c.expect_bytes(&sse_opening(&t.cur), "opening chunk of the resumed stream");
    for _ in 4..=6 {
        t.sse(&mut c, "replayed message");
    }
    c.expect_silence(QUIET, "after the replay of 4-6");
    assert_eq!(publ.send("h1", &two_lines("h1", 7)), 1);
    t.sse(&mut c, "live message 7 after the replay");
    c.close();

    // At the current position: recovered, nothing to replay, live from 8.
    let (mut c, head) = sse_open(s, "h1", &lei(&t.cur.to_string()));
    assert_eq!(history_headers(&head, Some(true)), t.cur);
    c.expect_bytes(&sse_opening(&t.cur), "opening chunk at the current position");
    c.expect_silence(QUIET, "nothing to replay");
    assert_eq!(publ.send("h1", &two_lines("h1", 8)), 1);
    t.sse(&mut c, "live message 8");
    assert_eq!(t.cur.off(0), 8);
}
}

both_backends! {
/// The query form `?last_event_id=<cursor>` resumes as the header does (also beside another
/// parameter); with both, the header wins; an empty `Last-Event-ID:` counts as absent (the
/// query's cursor is used).
fn sse_resume_with_query() {
    let srv = serve_history(&[]);
    let (s, p) = (srv.subscriber, srv.publish);
    let cur = published(s, p, "h2", 4);
    let at = |k| cur.at(0, k);
    expect_resume(s, &format!("h2?last_event_id={}", at(2)), "", &at(2), 4);
    expect_resume(s, &format!("h2?x=1&last_event_id={}&y=2", at(1)), "", &at(1), 4);
    expect_resume(s, &format!("h2?last_event_id={}", at(1)), &lei(&at(3).to_string()), &at(3), 4);
    expect_resume(s, &format!("h2?last_event_id={}", at(3)), "Last-Event-ID: \r\n", &at(3), 4);
    expect_resume(s, "h2", &lei(&at(0).to_string()), &at(0), 4);
}
}

both_backends! {
/// `earliest` (query or header) replays everything held from offset 0 (the opening names
/// `<epoch>-0`), then goes on live; on an id nobody published to it replays nothing.
fn sse_resume_earliest() {
    let srv = serve_history(&[]);
    let (s, p) = (srv.subscriber, srv.publish);
    let cur = published(s, p, "h3", 3);
    expect_resume(s, "h3?last_event_id=earliest", "", &cur.at(0, 0), 3);
    expect_resume(s, "h3", &lei("earliest"), &cur.at(0, 0), 3);
    let (mut c, head) = sse_open(s, "h3?last_event_id=earliest", "");
    let mut t = Track::new("h3", history_headers(&head, Some(true)));
    assert_eq!(t.cur, cur.at(0, 0));
    c.expect_bytes(&sse_opening(&t.cur), "opening chunk of earliest");
    for _ in 1..=3 {
        t.sse(&mut c, "message replayed for earliest");
    }
    assert_eq!(publish(p, "h3", &numbered("h3", 4)), 1);
    t.sse(&mut c, "live message after earliest");

    let (mut c, head) = sse_open(s, "h3new", &lei("earliest"));
    let mut t = Track::new("h3new", history_headers(&head, Some(true)));
    assert_eq!(t.cur.off(0), 0, "earliest on an id nobody published to");
    c.expect_bytes(&sse_opening(&t.cur), "opening chunk of earliest on a new id");
    c.expect_silence(QUIET, "earliest on a new id replays nothing");
    assert_eq!(publish(p, "h3new", &numbered("h3new", 1)), 1);
    t.sse(&mut c, "first message of a new id");
}
}

both_backends! {
/// `/sub/ma,mb`: the cursor has one position per id in path order (`/sub/mb,ma` lists the
/// same epochs the other way round); resuming replays each id's missed messages in order
/// (any interleaving of the two ids), each event's cursor moving exactly its id on; a
/// cursor with one id recovered and one at an unknown offset gets `Comet-Recovered: false`,
/// one reset event for that id in the opening chunk, and still the other id's replay.
fn sse_resume_several_ids() {
    let srv = serve_history(&[]);
    let (s, p) = (srv.subscriber, srv.publish);
    let (mut c, cur) = sse_fresh(s, "ma,mb");
    let mut t = Track::new("ma,mb", cur);
    let mut publ = Publisher::connect(p);
    for (id, n) in [("ma", 1), ("mb", 1), ("ma", 2)] {
        assert_eq!(publ.send(id, &numbered(id, n)), 1);
        t.sse(&mut c, "live message of two ids");
    }
    c.close();
    let (_c2, back) = sse_fresh(s, "mb,ma");
    assert_eq!(back, Cursor(vec![t.cur.0[1].clone(), t.cur.0[0].clone()]), "path order");
    for (id, n) in [("mb", 2), ("ma", 3), ("mb", 3)] {
        publ.send(id, &numbered(id, n));
    }
    let (mut c, head) = sse_open(s, "ma,mb", &lei(&t.cur.to_string()));
    assert_eq!(history_headers(&head, Some(true)), t.cur);
    c.expect_bytes(&sse_opening(&t.cur), "opening chunk of two ids");
    for _ in 0..3 {
        t.sse(&mut c, "replayed message of two ids");
    }
    assert_eq!((t.cur.off(0), t.cur.off(1)), (3, 3));
    c.expect_silence(QUIET, "after the replay of two ids");
    assert!(publ.send("mb", &numbered("mb", 4)) >= 1);
    t.sse(&mut c, "live message after the replay of two ids");
    c.close();

    publ.send("ma", &numbered("ma", 4));
    let given = t.cur.at(1, 99);
    let (mut c, head) = sse_open(s, "ma,mb", &lei(&given.to_string()));
    assert_eq!(history_headers(&head, Some(false)), t.cur, "given for ma, current for mb");
    c.expect_bytes(&sse_reset_opening(&t.cur, &[("mb", "unknown-offset")]), "reset opening");
    t.sse(&mut c, "ma's message replayed beside mb's reset");
    c.expect_silence(QUIET, "after ma's replay");
    assert!(publ.send("mb", &numbered("mb", 5)) >= 1);
    t.sse(&mut c, "mb live after its reset");
}
}

/// Malformed cursors for one id, each with what is wrong.
const BAD: &[&str] = &[
    "garbage",
    "0123456789abcdef",
    "0123456789abcdef-",
    "0123456789ABCDEF-1",
    "0123456789abcde-1",
    "0123456789abcdef0-1",
    "0000000000000000-1",
    "0123456789abcdeg-1",
    "0123456789abcdef-01",
    "0123456789abcdef--1",
    "0123456789abcdef-+1",
    "0123456789abcdef-1x",
    "0123456789abcdef-12345678901234567890",
    "0123456789abcdef-1.0123456789abcdef-2",
    "0123456789abcdef-1.",
    ".0123456789abcdef-1",
    "-1",
    "EARLIEST",
    "earliest.earliest",
];

both_backends! {
/// A malformed cursor (bad epoch, bad offset, wrong number of positions) gets `400`,
/// `text/plain; charset=utf-8`, `bad cursor: <reason>\n` and the close, by header or query,
/// on SSE, WebSocket, raw and `/poll/`; a valid cursor the server does not know (19 digits,
/// another epoch) is not a 400 but a reset.
fn bad_cursor_400() {
    let srv = serve_history(&[]);
    let s = srv.subscriber;
    let ws = ws_headers();
    let two = "0123456789abcdef-1";
    let mut cases: Vec<(String, String)> = Vec::new();
    for bad in BAD {
        cases.push((format!("/sub/bc?last_event_id={bad}"), SSE_HEADERS.into()));
        cases.push(("/sub/bc".into(), format!("{SSE_HEADERS}{}", lei(bad))));
        cases.push((format!("/sub/bc?cursors=1&last_event_id={bad}"), ws.clone()));
        cases.push(("/sub/bc".into(), lei(bad)));
        cases.push((format!("/poll/bc?last_event_id={bad}"), String::new()));
    }
    cases.push(("/sub/bc1,bc2".into(), format!("{SSE_HEADERS}{}", lei(two))));
    cases.push((format!("/poll/bc1,bc2?last_event_id={two}"), String::new()));
    cases.push(("/sub/bc".into(), format!("{SSE_HEADERS}{}", lei(&format!("{two}.{two}")))));
    for (path, extra) in &cases {
        let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n");
        let (head, body, _) = request_expect_close(s, req.as_bytes());
        let what = format!("request {req:?}");
        check_bad_cursor(&head, &body, &what);
        let len: usize = head.header("content-length").expect("Content-Length").parse().unwrap();
        assert_eq!(len, body.len(), "{what}: Content-Length");
    }
    for good in ["0123456789abcdef-9999999999999999999", "ffffffffffffffff-0"] {
        let (mut c, head) = sse_open(s, "bc", &lei(good));
        let cur = history_headers(&head, Some(false));
        c.expect_bytes(&sse_reset_opening(&cur, &[("bc", "unknown-epoch")]), good);
    }
}
}
