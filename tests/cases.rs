//! The cases of tests/CASES.md that concern message framing, each generalised to its kind
//! of fault and run on every protocol it can hit:
//!
//! - B01 a newline in a message breaks the framing (SSE, and every other protocol);
//! - B03 an empty message ends a chunked stream (every protocol and HTTP version);
//! - B09 HTTP/1.0 clients get chunked framing (every stream kind).
//!
//! The cases about streams with no message yet (B13, B14, B15, B19) are in
//! tests/idle_streams.rs.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

/// One subscriber of every stream kind on `id`, each with its head (and SSE's opening
/// comment) read: seed /test 1.1 and 1.0, raw 1.1 and 1.0, SSE 1.1 and 1.0, WebSocket.
struct AllKinds {
    seed: Subscriber,
    seed10: Client,
    raw: Client,
    raw10: Client,
    sse: Client,
    sse10: Client,
    ws: Client,
}

impl AllKinds {
    fn open(addr: SocketAddr, id: &str) -> AllKinds {
        let seed = Subscriber::connect(addr, id);
        let (seed10, h) = get10(addr, &format!("/test/{id}"), "");
        check_negotiated_head(&h, "text/html; charset=utf-8", true);
        let raw = raw_connect(addr, id);
        let (raw10, h) = get10(addr, &format!("/sub/{id}"), "");
        check_negotiated_head(&h, "text/plain; charset=utf-8", true);
        let sse = sse_connect(addr, id);
        let (mut sse10, h) = get10(addr, &format!("/sub/{id}"), SSE_HEADERS);
        check_negotiated_head(&h, "text/event-stream", true);
        sse10.expect_bytes(b": hi\n\n", "SSE opening comment over HTTP/1.0 (unchunked)");
        let ws = ws_connect(addr, id);
        AllKinds {
            seed,
            seed10,
            raw,
            raw10,
            sse,
            sse10,
            ws,
        }
    }

    /// Subscribers that count a non-empty message (all seven).
    const ALL: u64 = 7;

    /// Asserts every connection gets exactly its bytes for message `msg` (the `n`th on each).
    fn expect_msg(&mut self, n: u64, msg: &[u8], sse_event: &[u8]) {
        let what = format!("message #{n} {:?}", String::from_utf8_lossy(msg));
        self.seed.expect_msg(msg);
        self.seed10
            .expect_bytes(&msg_data(n, msg), &format!("/test HTTP/1.0 {what}"));
        if !msg.is_empty() {
            self.raw.expect_bytes(&chunk(msg), &format!("raw {what}"));
            self.raw10
                .expect_bytes(msg, &format!("raw HTTP/1.0 {what}"));
        }
        self.sse
            .expect_bytes(&chunk(sse_event), &format!("SSE {what}"));
        self.sse10
            .expect_bytes(sse_event, &format!("SSE HTTP/1.0 {what}"));
        let b0 = if std::str::from_utf8(msg).is_ok() {
            0x81
        } else {
            0x82
        };
        self.ws
            .expect_bytes(&ws_server_frame(b0, msg), &format!("WebSocket {what}"));
    }

    fn expect_silence(&mut self, wait: Duration, what: &str) {
        for c in [
            &mut self.seed.client,
            &mut self.seed10,
            &mut self.raw,
            &mut self.raw10,
            &mut self.sse,
            &mut self.sse10,
            &mut self.ws,
        ] {
            assert!(!c.expect_silence(wait, what), "{what}: a stream was closed");
        }
    }
}

both_backends! {
/// B01: every line of a payload gets its own `data: ` line on SSE (LF, CR, CRLF; a trailing
/// newline is an empty last line), and a real EventSource parser sees `line1\nline2` and
/// `tail\n`; on every other protocol the same payloads arrive verbatim inside their own
/// framing, so no payload byte can end or split a message.
/// See tests/CASES.md#b01.
fn b01_newlines_never_break_framing() {
    let server = start(2);
    let mut all = AllKinds::open(server.subscriber_addr(), "b01");
    let mut p = Publisher::connect(server.publish_addr());
    let cases: [(&[u8], &[u8]); 5] = [
        (b"line1\nline2", b"data: line1\ndata: line2\n\n"),
        (b"tail\n", b"data: tail\ndata: \n\n"),
        (b"cr\rcrlf\r\nlf\n", b"data: cr\ndata: crlf\ndata: lf\ndata: \n\n"),
        (b"\n\nid: 1\nevent: end\n\n", b"data: \ndata: \ndata: id: 1\ndata: event: end\ndata: \ndata: \n\n"),
        (b"0\r\n\r\n", b"data: 0\ndata: \ndata: \n\n"),
    ];
    for (n, (msg, event)) in cases.iter().enumerate() {
        assert_eq!(p.send("b01", msg), AllKinds::ALL);
        all.expect_msg(n as u64 + 1, msg, event);
    }
    all.expect_silence(Duration::from_millis(100), "after B01's messages");

    // What an EventSource sees (WHATWG parser), on a fresh SSE stream.
    let mut c = sse_connect(server.subscriber_addr(), "b01-client");
    for (msg, _) in &cases {
        assert_eq!(p.send("b01-client", msg), 1);
    }
    let data: Vec<String> = sse_events(&mut c).take(cases.len()).map(|e| e.data).collect();
    assert_eq!(data[0], "line1\nline2");
    assert_eq!(data[1], "tail\n");
    let want: Vec<String> = cases.iter().map(|(m, _)| sse_normalized(m)).collect();
    assert_eq!(data, want);
}
}

both_backends! {
/// B03: an empty message on every protocol and HTTP version is either framed as a non-empty
/// unit (`/test` chunk, SSE `data: \n\n`, WebSocket `81 00`) or not sent at all (raw, where it
/// is not counted); never a zero-length chunk. Every stream stays open and gets the next
/// message.
/// See tests/CASES.md#b03.
fn b03_empty_message_never_ends_a_stream() {
    let server = start(2);
    let mut all = AllKinds::open(server.subscriber_addr(), "b03");
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(p.send("b03", b""), AllKinds::ALL - 2, "raw streams do not count an empty message");
    all.expect_msg(1, b"", b"data: \n\n");
    // The exact bytes once more, by hand, for the chunked ones.
    assert_eq!(msg_chunk(1, b""), b"16\r\nRecvd msg #1: ''<br/>\n\r\n");
    assert_eq!(chunk(b"data: \n\n"), b"8\r\ndata: \n\n\r\n");
    all.raw.expect_silence(Duration::from_millis(150), "raw stream after an empty message");
    all.raw10.expect_silence(Duration::from_millis(10), "raw HTTP/1.0 stream after an empty message");
    assert_eq!(p.send("b03", b"after"), AllKinds::ALL);
    all.expect_msg(2, b"after", b"data: after\n\n");
    // Several empty messages in a row, then one more: still open.
    for _ in 0..3 {
        assert_eq!(p.send("b03", b""), AllKinds::ALL - 2);
    }
    for n in 3..6 {
        all.expect_msg(n, b"", b"data: \n\n");
    }
    assert_eq!(p.send("b03", b"last"), AllKinds::ALL);
    all.expect_msg(6, b"last", b"data: last\n\n");
    all.expect_silence(Duration::from_millis(150), "after B03's messages");
}
}

both_backends! {
/// B09: HTTP/1.0 requests on `/test`, raw `/sub` and SSE `/sub` get 200 with no
/// Transfer-Encoding, `Connection: close`, and bodies with no chunk framing, ended by the
/// server closing the connection (here: at shutdown); the same requests in HTTP/1.1 are
/// chunked; a WebSocket upgrade over HTTP/1.0 is refused.
/// See tests/CASES.md#b09.
fn b09_http10_never_gets_chunks() {
    let server = start(2);
    let addr = server.subscriber_addr();
    let (mut seed10, h) = get10(addr, "/test/b09", "");
    check_negotiated_head(&h, "text/html; charset=utf-8", true);
    let (mut raw10, h) = get10(addr, "/sub/b09", "Connection: keep-alive\r\n");
    check_negotiated_head(&h, "text/plain; charset=utf-8", true);
    let (mut sse10, h) = get10(addr, "/sub/b09", SSE_HEADERS);
    check_negotiated_head(&h, "text/event-stream", true);
    sse10.expect_bytes(b": hi\n\n", "SSE opening comment");
    let mut seed11 = Subscriber::connect(addr, "b09");
    let mut raw11 = raw_connect(addr, "b09");

    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(p.send("b09", b"hello"), 5);
    assert_eq!(p.send("b09", b"two\nlines"), 5);
    seed10.expect_bytes(b"Recvd msg #1: 'hello'<br/>\nRecvd msg #2: 'two\nlines'<br/>\n", "/test HTTP/1.0");
    raw10.expect_bytes(b"hellotwo\nlines", "raw HTTP/1.0");
    sse10.expect_bytes(b"data: hello\n\ndata: two\ndata: lines\n\n", "SSE HTTP/1.0");
    seed11.expect_msg(b"hello");
    seed11.expect_msg(b"two\nlines");
    raw11.expect_bytes(b"5\r\nhello\r\n9\r\ntwo\nlines\r\n", "raw HTTP/1.1 is chunked");

    let ws10 = format!("GET /sub/b09 HTTP/1.0\r\n{}\r\n", ws_headers());
    expect_error(addr, ws10.as_bytes(), 400, "WebSocket upgrade over HTTP/1.0");

    // The body ends when the server closes: nothing more, then EOF.
    server.shutdown().expect("shutdown");
    for (what, c) in [("/test", &mut seed10), ("raw", &mut raw10), ("SSE", &mut sse10)] {
        let (rest, _) = c.read_to_close();
        assert!(
            !rest.windows(3).any(|w| w == b"0\r\n"),
            "{what} HTTP/1.0: chunk framing at the end: {:?}",
            String::from_utf8_lossy(&rest)
        );
        // SSE is told when to come back (a bare `retry:` block, no chunk size); the others
        // get nothing more.
        let text = String::from_utf8_lossy(&rest);
        let bare_retry = text
            .strip_prefix("retry: ")
            .and_then(|t| t.strip_suffix("\n\n"))
            .is_some_and(|n| n.parse::<u32>().is_ok());
        let want = if what == "SSE" { bare_retry } else { rest.is_empty() };
        assert!(want, "{what} HTTP/1.0: bytes at shutdown: {text:?}");
    }
}
}
