//! Server-sent events on `GET /sub/<ids>` with `Accept: text/event-stream`: the head and
//! opening comment, the exact bytes of every kind of payload line (LF, CR, CRLF, blank lines,
//! lines that look like SSE fields or comments), what a real WHATWG parser makes of them,
//! `Last-Event-ID` of any shape on every `/sub/` kind (case B11), and Accept negotiation.
//! HTTP/1.0 and empty messages are in tests/cases.rs; heartbeats, HEAD and CORS in
//! tests/idle_streams.rs.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Payloads and the exact event each must become (written out by hand from the WHATWG
/// format: one `data: ` line per payload line, CR, LF and CRLF each ending a line, a blank
/// line ending the event).
const FRAMING: &[(&[u8], &[u8])] = &[
    (b"hello", b"data: hello\n\n"),
    (b"line1\nline2", b"data: line1\ndata: line2\n\n"),
    (b"tail\n", b"data: tail\ndata: \n\n"),
    (b"\nhead", b"data: \ndata: head\n\n"),
    (b"a\r\nb", b"data: a\ndata: b\n\n"),
    (b"a\rb", b"data: a\ndata: b\n\n"),
    (b"a\r", b"data: a\ndata: \n\n"),
    (b"\r\n", b"data: \ndata: \n\n"),
    (b"\n\r", b"data: \ndata: \ndata: \n\n"),
    (b"\r\r\n\n", b"data: \ndata: \ndata: \ndata: \n\n"),
    (b"a\n\nb", b"data: a\ndata: \ndata: b\n\n"),
    (b"a\r\n\r\nb", b"data: a\ndata: \ndata: b\n\n"),
    (b"\n\n\n", b"data: \ndata: \ndata: \ndata: \n\n"),
    (b"id: 7", b"data: id: 7\n\n"),
    (b"retry: 1", b"data: retry: 1\n\n"),
    (b"event: x", b"data: event: x\n\n"),
    (b": comment", b"data: : comment\n\n"),
    (b"data: nested", b"data: data: nested\n\n"),
    (
        b"x\nid: 7\rretry: 1\r\nevent: x\n: comment\n\ndata: y",
        b"data: x\ndata: id: 7\ndata: retry: 1\ndata: event: x\ndata: : comment\ndata: \ndata: data: y\n\n",
    ),
    (b" leading space", b"data:  leading space\n\n"),
    (b"tab\there", b"data: tab\there\n\n"),
    ("caf\u{e9} \u{2713} \u{1f600}".as_bytes(), "data: caf\u{e9} \u{2713} \u{1f600}\n\n".as_bytes()),
    (b"<b>&amp;'\"</b>", b"data: <b>&amp;'\"</b>\n\n"),
    (b"", b"data: \n\n"),
];

both_backends! {
/// The SSE head (200, text/event-stream, no-cache, X-Accel-Buffering, CORS, chunked) and the
/// opening comment chunk come at once, before any message; nothing else follows unasked.
fn sse_head_and_opening_comment() {
    let server = start(2);
    let t = Instant::now();
    let mut c = Client::connect(server.subscriber_addr());
    c.send(&sub_get("sse-head", SSE_HEADERS));
    let head = c.read_head();
    check_negotiated_head(&head, "text/event-stream", false);
    c.expect_bytes(b"6\r\n: hi\n\n\r\n", "opening comment chunk");
    assert!(t.elapsed() < Duration::from_secs(1), "head and comment took {:?}", t.elapsed());
    c.expect_silence(Duration::from_millis(300), "SSE stream before any message");
    // The stream is logged in once its head is out.
    assert_eq!(publish(server.publish_addr(), "sse-head", b"first"), 1);
    c.expect_bytes(b"d\r\ndata: first\n\n\r\n", "first event");
}
}

both_backends! {
/// Exact bytes: every payload of [`FRAMING`] is one chunk holding exactly its event.
fn sse_framing_exact_bytes() {
    let server = start(2);
    let mut c = sse_connect(server.subscriber_addr(), "sse-bytes");
    let mut p = Publisher::connect(server.publish_addr());
    for (payload, event) in FRAMING {
        assert_eq!(p.send("sse-bytes", payload), 1, "publish {:?}", String::from_utf8_lossy(payload));
        let what = format!("event for payload {:?}", String::from_utf8_lossy(payload));
        c.expect_bytes(&chunk(event), &what);
    }
    c.expect_silence(Duration::from_millis(200), "after the last event");
}
}

both_backends! {
/// A real WHATWG parser (`eventsource-stream`) on the live stream: each payload of [`FRAMING`]
/// is exactly one `message` event whose data is the payload with its line ends as LF; lines
/// that look like `id:`, `event:` or `retry:` fields never become fields, comments never
/// swallow data, and the opening comment is no event.
fn sse_real_client_sees_each_payload() {
    let server = start(2);
    let mut c = sse_connect(server.subscriber_addr(), "sse-client");
    let mut p = Publisher::connect(server.publish_addr());
    for (payload, _) in FRAMING {
        assert_eq!(p.send("sse-client", payload), 1);
    }
    // A large multi-line payload too (about 36 KB of event).
    let big: Vec<u8> = (0..1000).flat_map(|i| format!("line {i:04} of many\r\n").into_bytes()).collect();
    assert_eq!(p.send("sse-client", &big), 1);
    let mut events = sse_events(&mut c);
    for (payload, _) in FRAMING.iter().chain(std::iter::once(&(&big[..], &b""[..]))) {
        let e = events.next().expect("event stream ended");
        let want = sse_normalized(payload);
        assert_eq!(e.data, want, "data of the event for payload {:?}", String::from_utf8_lossy(payload));
        assert_eq!(e.event, "message", "event type for payload {:?}", String::from_utf8_lossy(payload));
        assert_eq!(e.id, "", "an id field appeared for payload {:?}", String::from_utf8_lossy(payload));
        assert_eq!(e.retry, None, "a retry field appeared for payload {:?}", String::from_utf8_lossy(payload));
    }
}
}

both_backends! {
/// Several connections, several ids: each SSE subscriber gets each message once, framed alone
/// (two events never share a chunk, so a message can never merge into another).
fn sse_several_ids_and_subscribers() {
    let server = start(2);
    let mut a = sse_connect(server.subscriber_addr(), "sa,sb");
    let mut b = sse_connect(server.subscriber_addr(), "sb");
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(p.send("sa", b"to a\nonly"), 1);
    assert_eq!(p.send("sb", b"to both"), 2);
    assert_eq!(p.send("sc", b"to nobody"), 0);
    a.expect_bytes(&chunk(b"data: to a\ndata: only\n\n"), "a #1");
    a.expect_bytes(&chunk(b"data: to both\n\n"), "a #2");
    b.expect_bytes(&chunk(b"data: to both\n\n"), "b #1");
    a.expect_silence(Duration::from_millis(200), "a after #2");
    b.expect_silence(Duration::from_millis(100), "b after #1");
}
}

both_backends! {
/// With history off, no `id:` is ever sent; a `Last-Event-ID` that is not a cursor gets
/// `400` naming the reason and the connection closes; an empty one counts as absent (the
/// stream opens as usual and gets the next message).
fn sse_bad_last_event_id_gets_400() {
    let server = start(2);
    let long = "9".repeat(3000);
    for (n, value) in ["5", "garbage", "-1", "1:2:3", "99999999999999999999:0", long.as_str()].iter().enumerate() {
        let id = format!("lei{n}");
        let mut c = Client::connect(server.subscriber_addr());
        c.send(&sub_get(&id, &format!("{SSE_HEADERS}Last-Event-ID: {value}\r\n")));
        expect_bad_cursor(&mut c, value);
    }
    let mut c = Client::connect(server.subscriber_addr());
    c.send(&sub_get("lei-empty", &format!("{SSE_HEADERS}Last-Event-ID: \r\n")));
    check_negotiated_head(&c.read_head(), "text/event-stream", false);
    c.expect_bytes(SSE_HI, "opening comment");
    assert_eq!(publish(server.publish_addr(), "lei-empty", b"fresh"), 1);
    c.expect_bytes(&chunk(b"data: fresh\n\n"), "the next message, without id");
    c.expect_silence(Duration::from_millis(50), "after it");
}
}

/// `GET /sub/b11` as stream `kind` asks for it, with `Last-Event-ID: <lei>` if given.
fn sub_b11_request(kind: Kind, lei: Option<&[u8]>) -> Vec<u8> {
    let mut req = b"GET /sub/b11 HTTP/1.1\r\nHost: x\r\n".to_vec();
    if let Some(v) = lei {
        req.extend_from_slice(b"Last-Event-ID: ");
        req.extend_from_slice(v);
        req.extend_from_slice(b"\r\n");
    }
    match kind {
        Kind::Sse => req.extend_from_slice(SSE_HEADERS.as_bytes()),
        Kind::Ws => req.extend_from_slice(ws_headers().as_bytes()),
        _ => {}
    }
    req.extend_from_slice(b"\r\n");
    req
}

/// Reads the `400` a malformed cursor gets (`what` names it) and the close after it.
fn expect_bad_cursor(c: &mut Client, what: &str) {
    let head = c.read_head();
    head.expect_status(400);
    head.expect_header("Connection", "close");
    let body = c.read_body(&head);
    assert!(
        body.starts_with(b"bad cursor: "),
        "Last-Event-ID {what:.20}: body {:?}",
        String::from_utf8_lossy(&body)
    );
    let (rest, _) = c.read_to_close();
    assert!(rest.is_empty(), "{what:.20}: bytes after the 400: {rest:?}");
}

both_backends! {
/// Negotiation: SSE whenever Accept lists text/event-stream (any case, with parameters or
/// among other types); raw for anything else, including `*/*` and no Accept at all.
fn sse_accept_negotiation() {
    let server = start(2);
    let sse = [
        "Accept: text/event-stream\r\n",
        "Accept: TEXT/Event-Stream\r\n",
        "Accept: text/html, text/event-stream;q=0.9\r\n",
        "Accept: text/event-stream; charset=utf-8\r\n",
        "accept: text/event-stream\r\nCache-Control: no-cache\r\n",
    ];
    for (n, h) in sse.iter().enumerate() {
        let id = format!("neg-s{n}");
        let mut c = Client::connect(server.subscriber_addr());
        c.send(&sub_get(&id, h));
        let head = c.read_head();
        check_negotiated_head(&head, "text/event-stream", false);
        c.expect_bytes(SSE_HI, h);
        assert_eq!(publish(server.publish_addr(), &id, b"m"), 1);
        c.expect_bytes(&chunk(b"data: m\n\n"), h);
    }
    let raw = ["", "Accept: */*\r\n", "Accept: text/plain\r\n", "Accept: text/html\r\n"];
    for (n, h) in raw.iter().enumerate() {
        let id = format!("neg-r{n}");
        let mut c = Client::connect(server.subscriber_addr());
        c.send(&sub_get(&id, h));
        let head = c.read_head();
        check_negotiated_head(&head, "text/plain; charset=utf-8", false);
        assert_eq!(publish(server.publish_addr(), &id, b"m"), 1);
        c.expect_bytes(b"1\r\nm\r\n", h);
    }
}
}

both_backends! {
/// B11 generalised: a `Last-Event-ID` of any shape (garbage, negative, huge, lists, 3000
/// digits, bytes over 0x7f, repeated), or a resume id in the query string, on SSE and every
/// other `/sub/` kind: a clean `400 bad cursor` and a close, nothing else; streams opened
/// before keep working and get the next message, and the server serves new subscribers.
/// See tests/CASES.md#b11.
fn b11_any_last_event_id_is_ignored() {
    let server = start(2);
    let (s, p) = (server.subscriber_addr(), server.publish_addr());
    let mut open: Vec<Stream> = Vec::new();
    for kind in [Kind::Sse, Kind::Raw, Kind::Ws] {
        let mut c = Client::connect(s);
        c.send(&sub_b11_request(kind, None));
        let head = c.read_head();
        match kind {
            Kind::Ws => check_ws_101(&head),
            Kind::Sse => {
                check_negotiated_head(&head, "text/event-stream", false);
                c.expect_bytes(SSE_HI, "SSE opening comment");
            }
            _ => check_negotiated_head(&head, "text/plain; charset=utf-8", false),
        }
        open.push(Stream { kind, c, n: 0 });
    }
    let nines = "9".repeat(3000);
    let values: Vec<Vec<u8>> = vec![
        b"garbage".to_vec(),
        b"-1".to_vec(),
        b"0".to_vec(),
        b"99999999999999999999:0".to_vec(),
        b"1:2:3".to_vec(),
        b"1,2".to_vec(),
        nines.into_bytes(),
        b"\xff\xfe\x80".to_vec(),
        b"never-issued".to_vec(),
        b"18446744073709551616".to_vec(),
        b"%00%0a".to_vec(),
        b"0123456789abcdef-1.0123456789abcdef-2".to_vec(),
    ];
    for v in &values {
        for kind in [Kind::Sse, Kind::Raw, Kind::Ws] {
            let mut c = Client::connect(s);
            c.send(&sub_b11_request(kind, Some(v)));
            expect_bad_cursor(&mut c, &String::from_utf8_lossy(v));
        }
    }
    // Repeated header and query-string resume ids: the first header is the one read.
    let mut c = Client::connect(s);
    c.send(b"GET /sub/b11?last_event_id=5&last-event-id=x HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nLast-Event-ID: 1\r\nLast-Event-ID: 2\r\n\r\n");
    expect_bad_cursor(&mut c, "repeated");
    let mut c = Client::connect(s);
    c.send(b"GET /sub/b11?last_event_id=garbage HTTP/1.1\r\nHost: x\r\n\r\n");
    expect_bad_cursor(&mut c, "query");
    let n = open.len() as u64;
    assert_eq!(publish(p, "b11", b"fresh"), n);
    for st in &mut open {
        st.expect(b"fresh");
    }
    // Still one server: a new seed subscriber works.
    let mut seed = Subscriber::connect(s, "b11");
    assert_eq!(publish(p, "b11", b"again"), n + 1);
    seed.expect_msg(b"again");
}
}
