//! The cases of tests/CASES.md about a stream with no message yet, each generalised to its
//! kind of fault and run on every stream kind it can hit:
//!
//! - B13 HEAD (and OPTIONS) runs the endless stream;
//! - B14 a quiet subscribe sends nothing until the first message;
//! - B15 no heartbeat on quiet streams;
//! - B19 no CORS headers on the event stream.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;

/// A HEAD request on a fresh connection: the head at once, no body byte at all, then the
/// server closes. Returns the head.
fn head_request(addr: SocketAddr, req: &[u8]) -> Head {
    let t = Instant::now();
    let mut c = Client::connect(addr);
    c.send(req);
    let head = c.read_head();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "HEAD took {:?}: {:?}",
        t.elapsed(),
        String::from_utf8_lossy(req)
    );
    let (rest, _) = c.read_to_close();
    assert!(
        rest.is_empty(),
        "body bytes after a HEAD response ({:?}): {:?}",
        String::from_utf8_lossy(req),
        String::from_utf8_lossy(&rest)
    );
    head
}

both_backends! {
/// B13: HEAD on every stream kind answers at once with the headers a GET gets, no body (no
/// opening comment, no last-chunk), closes, and never logs in: publishes report 0, and after
/// 300 HEADs the server holds no more connections than before.
/// See tests/CASES.md#b13.
fn b13_head_never_runs_the_stream() {
    let server = start(2);
    let addr = server.subscriber_addr();
    let mut p = Publisher::connect(server.publish_addr());
    let baseline = json_number(&p.stats(), "connections");
    let kinds: [(&str, &str, &str, bool); 6] = [
        ("/test/b13", "HTTP/1.1", "", false),
        ("/test/b13", "HTTP/1.0", "", true),
        ("/sub/b13", "HTTP/1.1", "", false),
        ("/sub/b13", "HTTP/1.1", SSE_HEADERS, false),
        ("/sub/b13", "HTTP/1.0", SSE_HEADERS, true),
        ("/sub/b13,b13x", "HTTP/1.1", "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", false),
    ];
    for (path, version, extra, http10) in kinds {
        let req = format!("HEAD {path} {version}\r\nHost: 127.0.0.1\r\n{extra}\r\n");
        let head = head_request(addr, req.as_bytes());
        let ct = if path.starts_with("/test") {
            "text/html; charset=utf-8"
        } else if extra == SSE_HEADERS {
            "text/event-stream"
        } else {
            "text/plain; charset=utf-8"
        };
        if head.status == 200 && !http10 && head.header("connection").is_some() {
            // A HEAD answer may announce the close; everything else as for GET.
            head.expect_header("connection", "close");
            head.expect_header("content-type", ct);
        } else {
            check_negotiated_head(&head, ct, http10);
        }
    }
    assert_eq!(p.send("b13", b"x"), 0, "a HEAD logged a connection in");
    assert_eq!(p.send("b13x", b"x"), 0, "a HEAD logged a connection in");

    // Many HEADs (and preflights): nothing is left running.
    for i in 0..300 {
        let req = match i % 3 {
            0 => "HEAD /test/b13 HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
            1 => format!("HEAD /sub/b13 HTTP/1.1\r\nHost: x\r\n{SSE_HEADERS}\r\n"),
            _ => "OPTIONS /sub/b13 HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
        };
        let mut c = Client::connect(addr);
        c.send(req.as_bytes());
        let head = c.read_head();
        assert!(head.status == 200 || head.status == 204, "{req:?}: {:?}", head.status_line);
        let (rest, _) = c.read_to_close();
        assert!(rest.is_empty(), "{req:?}: body bytes {:?}", String::from_utf8_lossy(&rest));
    }
    assert_eq!(p.send("b13", b"x"), 0);
    let mut last = 0.0;
    assert!(
        wait_until(Duration::from_secs(2), || {
            last = json_number(&p.stats(), "connections");
            last <= baseline
        }),
        "connections {last} after 300 HEAD/OPTIONS requests, {baseline} before"
    );
}
}

both_backends! {
/// B13, pipelined: `HEAD` then `GET /nope` in one segment. The HEAD answer carries no body,
/// so the second request must either get its own 404 right after the HEAD headers, or the
/// HEAD answer must announce `Connection: close` (RFC 9112 section 9.6) and the server
/// close with nothing after it; silently dropping a request on a connection that looked
/// persistent is the desynchronisation B13 is about.
/// See tests/CASES.md#b13.
fn b13_head_pipelined() {
    let server = start(2);
    for path in ["/test/42", "/sub/42"] {
        let mut c = Client::connect(server.subscriber_addr());
        c.send(
            format!("HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
                .as_bytes(),
        );
        let head = c.read_head();
        head.expect_200();
        let (rest, _) = c.read_to_close();
        if rest.is_empty() {
            assert_eq!(
                head.header("connection").map(|v| v.to_ascii_lowercase()),
                Some("close".to_string()),
                "HEAD {path}: the server closed after the HEAD answer without announcing it, \
                 dropping the pipelined GET /nope; head:\n{}",
                String::from_utf8_lossy(&head.raw)
            );
        } else {
            assert!(
                rest.starts_with(b"HTTP/1.1 404 "),
                "HEAD {path}: after the HEAD headers came {:?} instead of the 404",
                String::from_utf8_lossy(&rest)
            );
        }
    }
}
}

/// B13, OPTIONS: the answer names the allowed methods in `Allow` (RFC 9110 section 9.3.7;
/// the case expects it) besides the CORS headers.
/// See tests/CASES.md#b13.
fn b13_options_allow() {
    let server = start(2);
    for req in [
        "OPTIONS /test/42 HTTP/1.1\r\nHost: x\r\n\r\n",
        "OPTIONS /sub/42 HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let head = request_expect_close(server.subscriber_addr(), req.as_bytes()).0;
        assert!(
            head.status == 200 || head.status == 204,
            "{req:?}: {:?}",
            head.status_line
        );
        let allow = head.header("allow").unwrap_or_else(|| {
            panic!(
                "{req:?}: no Allow header; head:\n{}",
                String::from_utf8_lossy(&head.raw)
            )
        });
        assert!(
            allow.split(',').any(|m| m.trim() == "GET"),
            "{req:?}: Allow: {allow}"
        );
    }
}

/// `b13_options_allow` on io_uring (tests/CASES.md#b13).
#[test]
fn b13_options_allow_uring() {
    with_backend(uring_comet::config::Backend::Uring, b13_options_allow)
}

/// `b13_options_allow` on epoll (tests/CASES.md#b13).
#[test]
fn b13_options_allow_epoll() {
    with_backend(uring_comet::config::Backend::Epoll, b13_options_allow)
}

both_backends! {
/// B14: with no publish at all, every stream kind gets its complete head at once (SSE also
/// its opening comment, so EventSource fires `open` and proxies flush), with
/// `X-Accel-Buffering: no` and `Cache-Control: no-cache`; no fake message follows.
/// See tests/CASES.md#b14.
fn b14_quiet_subscribe_gets_headers_at_once() {
    let server = start(2);
    let addr = server.subscriber_addr();
    let limit = Duration::from_millis(500);
    let t = Instant::now();
    let mut c = sse_connect(addr, "idle123");
    assert!(t.elapsed() < limit, "SSE head and comment took {:?}", t.elapsed());
    c.expect_silence(Duration::from_millis(300), "quiet SSE stream");

    let t = Instant::now();
    let mut c = raw_connect(addr, "idle125");
    assert!(t.elapsed() < limit, "raw head took {:?}", t.elapsed());
    c.expect_silence(Duration::from_millis(100), "quiet raw stream");

    let t = Instant::now();
    let mut s = Subscriber::connect(addr, "idle124");
    assert!(t.elapsed() < limit, "/test head took {:?}", t.elapsed());
    check_negotiated_head(&s.head, "text/html; charset=utf-8", false);
    s.client.expect_silence(Duration::from_millis(100), "quiet /test stream");

    let t = Instant::now();
    let mut c = ws_connect(addr, "idle126");
    assert!(t.elapsed() < limit, "WebSocket 101 took {:?}", t.elapsed());
    c.expect_silence(Duration::from_millis(100), "quiet WebSocket");
}
}

/// Reads what arrives on `c` until `want` has arrived whole, for at most `limit`; fails with
/// what did arrive otherwise.
fn expect_within(c: &mut Client, want: &[u8], limit: Duration, what: &str) -> Duration {
    let t = Instant::now();
    c.stream.set_read_timeout(Some(limit)).unwrap();
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        c.read_exact_bytes(want.len())
    }));
    c.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    match got {
        Ok(got) => assert!(
            got == want,
            "{what}: expected {:?}, got {:?}",
            String::from_utf8_lossy(want),
            String::from_utf8_lossy(&got)
        ),
        Err(_) => panic!(
            "{what}: no {:?} within {limit:?}",
            String::from_utf8_lossy(want)
        ),
    }
    t.elapsed()
}

both_backends! {
/// B15: with `heartbeat_s = 1`, every quiet stream gets a heartbeat within 3 s and again
/// within the next 2.5 s: SSE a comment chunk `: ping\n\n`, `/test` a `\n` chunk, WebSocket a
/// ping `89 00`, the HTTP/1.0 forms unchunked; never a zero-length chunk; a raw stream none.
/// Heartbeats are not messages: `/test` numbering and `messages_delivered` do not move, and a
/// real EventSource parser sees no event.
/// See tests/CASES.md#b15.
fn b15_heartbeats_on_quiet_streams() {
    let mut cfg = common::server::local(2);
    cfg.heartbeat_s = 1;
    let server = start_with(cfg);
    let addr = server.subscriber_addr();
    let mut p = Publisher::connect(server.publish_addr());
    let mut sse = sse_connect(addr, "quiet");
    let mut seed = Subscriber::connect(addr, "quiet2");
    let mut ws = ws_connect(addr, "quiet3");
    let (mut seed10, _) = get10(addr, "/test/quiet4", "");
    let (mut sse10, _) = get10(addr, "/sub/quiet5", SSE_HEADERS);
    sse10.expect_bytes(b": hi\n\n", "SSE HTTP/1.0 opening comment");
    let mut raw = raw_connect(addr, "quiet6");
    let mut sse_parsed = sse_connect(addr, "quiet7");
    let delivered0 = json_number(&p.stats(), "messages_delivered");

    let beats: [(&str, &mut Client, &[u8]); 5] = [
        ("SSE", &mut sse, b"8\r\n: ping\n\n\r\n"),
        ("/test", &mut seed.client, b"1\r\n\n\r\n"),
        ("WebSocket", &mut ws, &[0x89, 0x00]),
        ("/test HTTP/1.0", &mut seed10, b"\n"),
        ("SSE HTTP/1.0", &mut sse10, b": ping\n\n"),
    ];
    for (what, c, beat) in beats {
        expect_within(c, beat, Duration::from_secs(3), &format!("first {what} heartbeat"));
        expect_within(c, beat, Duration::from_millis(2500), &format!("second {what} heartbeat"));
    }
    raw.expect_silence(Duration::from_millis(100), "raw stream (no heartbeats)");
    assert_eq!(
        json_number(&p.stats(), "messages_delivered"),
        delivered0,
        "heartbeats counted as delivered messages"
    );
    // Not messages: /test numbering starts at 1, the SSE parser's first event is the message.
    assert_eq!(p.send("quiet2", b"first"), 1);
    seed.expect_msg(b"first");
    assert_eq!(p.send("quiet7", b"first"), 1);
    let e = sse_events(&mut sse_parsed).next().expect("SSE event");
    assert_eq!(e.data, "first", "the SSE client saw a heartbeat as an event");
}
}

both_backends! {
/// B15, the other half: a stream that got a message since the last sweep gets no heartbeat
/// (publishing every 200 ms for 2.6 s with a 1 s interval: only events arrive, apart from at
/// most one heartbeat before the first message).
/// See tests/CASES.md#b15.
fn b15_no_heartbeat_on_busy_streams() {
    let mut cfg = common::server::local(2);
    cfg.heartbeat_s = 1;
    let server = start_with(cfg);
    let mut c = sse_connect(server.subscriber_addr(), "busy");
    let mut p = Publisher::connect(server.publish_addr());
    let t = Instant::now();
    let mut n = 0;
    while t.elapsed() < Duration::from_millis(2600) {
        n += 1;
        assert_eq!(p.send("busy", format!("m{n}").as_bytes()), 1);
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut seen = 0;
    let mut early_beats = 0;
    while seen < n {
        let data = c.read_chunk();
        if data == b": ping\n\n" {
            assert_eq!(seen, 0, "heartbeat on a stream that got a message every 200 ms (after #{seen})");
            early_beats += 1;
            assert!(early_beats <= 1, "two heartbeats before the first message");
            continue;
        }
        seen += 1;
        assert_eq!(data, format!("data: m{seen}\n\n").as_bytes());
    }
}
}

both_backends! {
/// B19: a cross-origin EventSource can open the stream (`Access-Control-Allow-Origin` on the
/// SSE answer), and a preflight for the headers polyfills add gets 204 at once with GET in
/// the allowed methods and `Last-Event-ID` and `Cache-Control` in the allowed headers,
/// without opening a stream.
/// See tests/CASES.md#b19.
fn b19_cors_on_event_streams() {
    let server = start(2);
    let addr = server.subscriber_addr();
    let mut c = Client::connect(addr);
    c.send(&sub_get("42", &format!("Origin: http://example.com\r\n{SSE_HEADERS}")));
    let head = c.read_head();
    head.expect_200();
    let acao = head.header("access-control-allow-origin").unwrap_or_else(|| {
        panic!("no Access-Control-Allow-Origin on the SSE stream: {}", String::from_utf8_lossy(&head.raw))
    });
    assert!(acao == "*" || acao == "http://example.com", "Access-Control-Allow-Origin: {acao}");
    c.expect_bytes(SSE_HI, "SSE opening comment");

    let t = Instant::now();
    let (head, rest, _) = request_expect_close(
        addr,
        b"OPTIONS /sub/43 HTTP/1.1\r\nHost: x\r\nOrigin: http://example.com\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: last-event-id, cache-control\r\n\r\n",
    );
    assert!(t.elapsed() < Duration::from_millis(500), "preflight took {:?}", t.elapsed());
    assert!(head.status == 200 || head.status == 204, "{:?}", head.status_line);
    assert!(rest.is_empty(), "preflight body: {:?}", String::from_utf8_lossy(&rest));
    let list = |name: &str| -> Vec<String> {
        head.header(name)
            .unwrap_or_else(|| panic!("no {name} in {}", String::from_utf8_lossy(&head.raw)))
            .split(',')
            .map(|t| t.trim().to_ascii_lowercase())
            .collect()
    };
    assert!(list("access-control-allow-methods").contains(&"get".to_string()));
    let headers = list("access-control-allow-headers");
    for h in ["last-event-id", "cache-control"] {
        assert!(headers.contains(&h.to_string()), "{h} not in Access-Control-Allow-Headers {headers:?}");
    }
    assert!(head.header("access-control-allow-origin").is_some());
    assert_eq!(publish(server.publish_addr(), "43", b"x"), 0, "the preflight opened a stream");
    assert_eq!(publish(server.publish_addr(), "42", b"y"), 1);
    c.expect_bytes(&chunk(b"data: y\n\n"), "the cross-origin stream gets messages");
}
}
