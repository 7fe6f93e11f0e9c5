//! Resuming beside SSE (issue 14), on both backends, exact bytes: long-polling
//! (`GET /poll/<ids>`: answered at once when a message is after the cursor, held until the
//! next one otherwise, `--poll-timeout` answered with no message), and WebSocket and raw
//! streams on `/sub/` in cursor mode (`?cursors=1`: an opening JSON, each message with its
//! cursor) and without it (today's frames, resumed all the same).

mod common;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use common::*;

/// The `Comet-Last-Event-ID` of poll answers (the cursor to send next time: the body's
/// `last_event_id`), checked at the end of a test so that a wrong value does not hide what
/// the rest of the test checks.
struct Starts(Vec<String>);

impl Starts {
    /// Checks `Comet-Recovered` at once and records a `Comet-Last-Event-ID` that is not the
    /// answer's `last_event_id`.
    fn check(&mut self, head: &Head, body: &str, recovered: Option<bool>, what: &str) {
        let got = history_headers(head, recovered);
        let v: serde_json::Value = serde_json::from_str(body).expect("poll answer is JSON");
        let next = v["last_event_id"].as_str().expect("last_event_id");
        let want = Cursor::parse(next, what);
        if got != want {
            self.0.push(format!(
                "{what}: Comet-Last-Event-ID {got}, expected {want}"
            ));
        }
    }

    fn done(self) {
        assert!(
            self.0.is_empty(),
            "poll answers' Comet-Last-Event-ID:\n{}",
            self.0.join("\n")
        );
    }
}

/// The cursor before the first message of a poll answer's body.
fn before_first(body: &str) -> Cursor {
    let v: serde_json::Value = serde_json::from_str(body).expect("poll answer is JSON");
    let id = v["messages"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no message: {body}"));
    let c = Cursor::parse(id, "first message of a poll answer");
    c.at(0, c.off(0) - 1)
}

both_backends! {
/// A poll with messages after its cursor is answered at once with exactly those (query or
/// `Last-Event-ID`, `earliest`); at the current position it is held until the next message
/// and answered with it; without a cursor it is held too, and answered with the next
/// message and no `Comet-Recovered`.
fn poll_at_once_and_held() {
    let srv = serve_history(&[]);
    let (s, p) = (srv.subscriber, srv.publish);
    let mut starts = Starts(Vec::new());
    let (_keeper, lp) = sse_fresh(s, "lp");
    let mut publ = Publisher::connect(p);
    for n in 1..=3 {
        assert_eq!(publ.send("lp", &numbered("lp", n)), 1);
    }
    let (head, body) = poll(s, &format!("lp?last_event_id={}", lp.at(0, 1)));
    starts.check(&head, &body, Some(true), "at once (query)");
    let want = poll_body(&[(lp.at(0, 2), "lp#2"), (lp.at(0, 3), "lp#3")], &lp.at(0, 3), true, &[]);
    assert_eq!(body, want, "a poll answered at once");
    let (head, body) = poll_answer(&mut poll_send(s, "lp", &lei(&lp.at(0, 2).to_string())));
    starts.check(&head, &body, Some(true), "at once (header)");
    assert_eq!(body, poll_body(&[(lp.at(0, 3), "lp#3")], &lp.at(0, 3), true, &[]));
    let (head, body) = poll(s, "lp?last_event_id=earliest");
    starts.check(&head, &body, Some(true), "earliest");
    let mut t = Track::new("lp", lp.clone());
    assert_eq!(t.poll(&body, true, &[]), 3, "every message");

    let mut held = poll_send(s, &format!("lp?last_event_id={}", t.cur), "");
    held.expect_silence(QUIET, "a poll at the current position is held");
    assert!(publ.send("lp", &numbered("lp", 4)) >= 1);
    let (head, body) = poll_answer(&mut held);
    starts.check(&head, &body, Some(true), "held");
    assert_eq!(t.poll(&body, true, &[]), 1, "the held poll gets the next message");

    // Without a cursor nothing before the poll counts: publish until it is answered.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(poll_answer(&mut poll_send(s, "lp", "")));
    });
    let mut n = t.cur.off(0);
    let (head, body) = loop {
        n += 1;
        publ.send("lp", &numbered("lp", n));
        if let Ok(answer) = rx.recv_timeout(Duration::from_millis(100)) {
            break answer;
        }
        assert!(n < t.cur.off(0) + 50, "a poll without a cursor was never answered");
    };
    let first = before_first(&body);
    assert!(first.off(0) >= t.cur.off(0), "{first} before {}", t.cur);
    starts.check(&head, &body, None, "held without a cursor");
    assert!(Track::new("lp", first).poll(&body, true, &[]) >= 1, "the next message");
    starts.done();
}
}

both_backends! {
/// A poll on two ids (`/poll/pa,pb`): with `earliest` at once with every message of both
/// (each id in order, any interleaving), at the current position held until the next
/// message of either.
fn poll_several_ids() {
    let srv = serve_history(&[]);
    let (s, p) = (srv.subscriber, srv.publish);
    let mut starts = Starts(Vec::new());
    let (_ka, a) = sse_fresh(s, "pa");
    let (_kb, b) = sse_fresh(s, "pb");
    let mut publ = Publisher::connect(p);
    for (id, n) in [("pa", 1), ("pb", 1), ("pa", 2)] {
        assert_eq!(publ.send(id, &numbered(id, n)), 1);
    }
    let zero = Cursor(vec![a.0[0].clone(), b.0[0].clone()]);
    let (head, body) = poll(s, "pa,pb?last_event_id=earliest");
    starts.check(&head, &body, Some(true), "earliest on two ids");
    let mut t = Track::new("pa,pb", zero);
    assert_eq!(t.poll(&body, true, &[]), 3, "every message of both ids");
    let mut held = poll_send(s, "pa,pb", &lei(&t.cur.to_string()));
    held.expect_silence(QUIET, "a poll at the current position is held");
    assert!(publ.send("pb", &numbered("pb", 2)) >= 1);
    let (head, body) = poll_answer(&mut held);
    starts.check(&head, &body, Some(true), "held on two ids");
    assert_eq!(t.poll(&body, true, &[]), 1, "the held poll gets the next message");
    starts.done();
}
}

both_backends! {
/// `--poll-timeout 500ms`: a held poll is answered at its timeout with no message and the
/// cursor it was given (with a cursor: `Comet-Recovered: true`; without: none).
fn poll_timeout_answers_empty() {
    let srv = serve_history(&["--poll-timeout", "500ms"]);
    let (s, p) = (srv.subscriber, srv.publish);
    let (_keeper, cur) = sse_fresh(s, "pt");
    assert_eq!(publish(p, "pt", b"pt#1"), 1);
    let now = cur.at(0, 1);
    let (head, body) = poll(s, &format!("pt?last_event_id={now}"));
    assert_eq!(history_headers(&head, Some(true)), now);
    assert_eq!(body, poll_body(&[], &now, true, &[]));
    let (head, body) = poll(s, "pt");
    assert_eq!(history_headers(&head, None), now);
    assert_eq!(body, poll_body(&[], &now, true, &[]));
}
}

/// WebSocket payloads: every third is not UTF-8 (a binary frame in cursor mode).
fn ws_payload(id: &str, n: u64) -> Vec<u8> {
    if n % 3 == 0 {
        vec![0xff, b'0' + (n % 10) as u8]
    } else {
        numbered(id, n)
    }
}

/// Raw payloads: every fourth is empty, every third has a line break.
fn raw_payload(id: &str, n: u64) -> Vec<u8> {
    match (n % 4, n % 3) {
        (0, _) => Vec::new(),
        (_, 0) => format!("{id}\n{n}").into_bytes(),
        _ => numbered(id, n),
    }
}

/// The opening unit of a transport: cursor, recovered, resets `(id, reason)`.
type Opening = fn(&Cursor, bool, &[(&str, &str)]) -> Vec<u8>;

/// One transport in cursor mode, for [`resume_in_cursor_mode`].
struct Mode {
    open: fn(SocketAddr, &str, &str) -> (Client, Head),
    opening: Opening,
    next: fn(&mut Track, &mut Client, &str),
    payload: fn(&str, u64) -> Vec<u8>,
    today: fn(&[u8]) -> Vec<u8>,
}

/// On `id` in `mode`: a fresh stream (opening with the cursor, `recovered` true, no
/// resets), two live messages, three missed and resumed by query, two more by header, a
/// resume without `cursors=1` (today's units), and an unknown offset (the reset opening).
fn resume_in_cursor_mode(srv: &ChildServer, id: &str, mode: Mode) {
    let (s, p) = (srv.subscriber, srv.publish);
    let mut publ = Publisher::connect(p);
    let (_keeper, _) = sse_fresh(s, id);
    let (mut c, head) = (mode.open)(s, &format!("{id}?cursors=1"), "");
    let mut t = Track::new(id, history_headers(&head, None));
    t.payload = mode.payload;
    c.expect_bytes(
        &(mode.opening)(&t.cur, true, &[]),
        "opening without a cursor",
    );
    for n in 1..=2 {
        publ.send(id, &(mode.payload)(id, n));
        (mode.next)(&mut t, &mut c, "live message");
    }
    c.close();
    for n in 3..=7 {
        publ.send(id, &(mode.payload)(id, n));
    }
    let (mut c, head) = (mode.open)(s, &format!("{id}?cursors=1&last_event_id={}", t.cur), "");
    assert_eq!(history_headers(&head, Some(true)), t.cur);
    c.expect_bytes(
        &(mode.opening)(&t.cur, true, &[]),
        "opening resumed by query",
    );
    for _ in 3..=5 {
        (mode.next)(&mut t, &mut c, "message replayed (query)");
    }
    c.close();
    let (mut c, head) = (mode.open)(s, &format!("{id}?cursors=1"), &lei(&t.cur.to_string()));
    assert_eq!(history_headers(&head, Some(true)), t.cur);
    c.expect_bytes(
        &(mode.opening)(&t.cur, true, &[]),
        "opening resumed by header",
    );
    for _ in 6..=7 {
        (mode.next)(&mut t, &mut c, "message replayed (header)");
    }
    c.expect_silence(QUIET, "after the replay");
    publ.send(id, &(mode.payload)(id, 8));
    (mode.next)(&mut t, &mut c, "live message after the replay");

    let given = t.cur.at(0, 5);
    let (mut c, head) = (mode.open)(s, &format!("{id}?last_event_id={given}"), "");
    assert_eq!(
        history_headers(&head, Some(true)),
        given,
        "resumed without cursors=1"
    );
    for n in 6..=8 {
        let today = (mode.today)(&(mode.payload)(id, n));
        c.expect_bytes(&today, "today's unit of a replayed message");
    }
    c.expect_silence(QUIET, "after the replay without cursors=1");

    let (mut c, head) = (mode.open)(
        s,
        &format!("{id}?cursors=1&last_event_id={}", t.cur.at(0, 99)),
        "",
    );
    assert_eq!(history_headers(&head, Some(false)), t.cur);
    let reset = (mode.opening)(&t.cur, false, &[(id, "unknown-offset")]);
    c.expect_bytes(&reset, "opening with a reset");
    c.expect_silence(QUIET, "nothing replayed after a reset");
    publ.send(id, &(mode.payload)(id, 9));
    (mode.next)(&mut t, &mut c, "live message after the reset");
}

both_backends! {
/// WebSocket `?cursors=1`: the opening text frame
/// `{"last_event_id":..,"recovered":..,"resets":[..]}`, each message `<cursor>\n<payload>`
/// (binary when not UTF-8), resumed by query and by header; without `cursors=1` a resumed
/// stream sends today's payload-only frames.
fn ws_resume_cursor_mode() {
    let srv = serve_history(&[]);
    let mode = Mode {
        open: ws_open,
        opening: ws_opening,
        next: Track::ws,
        payload: ws_payload,
        today: |m| {
            let b0 = if std::str::from_utf8(m).is_ok() { 0x81 } else { 0x82 };
            ws_server_frame(b0, m)
        },
    };
    resume_in_cursor_mode(&srv, "wr", mode);
}
}

both_backends! {
/// Raw `?cursors=1`: the opening JSON and `\n` as one chunk, each message one chunk
/// `<cursor> <len>\n<payload>\n` (an empty payload too: `<cursor> 0\n\n`), resumed by query
/// and by header; without `cursors=1` today's chunks (nothing for an empty payload).
fn raw_resume_cursor_mode() {
    let srv = serve_history(&[]);
    let mode = Mode {
        open: raw_open,
        opening: raw_opening,
        next: Track::raw,
        payload: raw_payload,
        today: |m| if m.is_empty() { Vec::new() } else { chunk(m) },
    };
    resume_in_cursor_mode(&srv, "rr", mode);
}
}
