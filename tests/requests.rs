//! Requests the server must read right or refuse cleanly: the publish token (401), request
//! head limits (414, 431, 400 without exactly one Host, 501 for a gzip-coded publish body),
//! publish bodies that lie about their length or stop half way, and pipelined requests
//! (case B17 of tests/CASES.md). Every body runs on io_uring and on epoll.

mod common;

use std::time::Duration;

use common::*;

both_backends! {
/// `publish_token`: `POST /send` and `GET /stats` need `Authorization: Bearer <token>`
/// (401 with `WWW-Authenticate: Bearer` and close otherwise: missing, wrong, a prefix, token
/// plus a byte, another scheme); the scheme is case-insensitive; `GET /` (demo page) stays
/// open; a refused publish delivers nothing.
fn publish_token_401() {
    let mut cfg = common::server::local(2);
    cfg.publish_token = Some("s3cret".into());
    let server = start_with(cfg);
    let (s, p) = (server.subscriber_addr(), server.publish_addr());
    let mut sub = Subscriber::connect(s, "tok1");
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cre"),
        Some("Bearer s3cret2"),
        Some("Basic czNjcmV0"),
        Some("Bearer  s3cret"),
        Some("s3cret"),
    ] {
        for (method, path) in [("POST", "/send/tok1"), ("GET", "/stats"), ("HEAD", "/stats")] {
            let req = pub_request(method, path, auth, b"nope");
            let mut c = Client::connect(p);
            c.send_lossy(&req);
            let head = c.read_head();
            assert!(
                head.status == 401,
                "{method} {path} with {auth:?}: got {:?}",
                head.status_line
            );
            head.expect_header("www-authenticate", "Bearer realm=\"uring-comet\"");
            let _ = c.read_to_close();
        }
    }
    sub.client.expect_nothing_pending("after refused publishes");
    // The right token, keep-alive: publish and stats on one connection.
    let mut c = Client::connect(p);
    c.send(&pub_request("POST", "/send/tok1", Some("Bearer s3cret"), b"authorised"));
    let head = c.read_head();
    head.expect_200();
    assert_eq!(parse_delivered(&c.read_body(&head)), 1);
    sub.expect_msg(b"authorised");
    c.send(&pub_request("GET", "/stats", Some("Bearer s3cret"), b""));
    let head = c.read_head();
    head.expect_200();
    let body = String::from_utf8(c.read_body(&head)).unwrap();
    assert!(json_number(&body, "connections") >= 1.0, "{body}");
    // The scheme in any case.
    c.send(&pub_request("POST", "/send/tok1", Some("bEARER s3cret"), b"any case"));
    let head = c.read_head();
    head.expect_200();
    assert_eq!(parse_delivered(&c.read_body(&head)), 1);
    sub.expect_msg(b"any case");
    // The demo page needs no token.
    let mut c = Client::connect(p);
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let head = c.read_head();
    head.expect_200();
    assert!(!c.read_body(&head).is_empty(), "empty demo page");
}
}

both_backends! {
/// 414 over 8128 target bytes (a target of exactly 8128 is served), 431 over 8 KiB of head,
/// 400 without exactly one Host on HTTP/1.1 (both listeners), absolute-form targets served
/// on both listeners, GET/HEAD with a body refused on the publish listener, 501 for a
/// publish body in a transfer coding other than chunked (chunked bodies: tests/chunked.rs).
fn request_head_limits() {
    let server = start(2);
    let (s, p) = (server.subscriber_addr(), server.publish_addr());
    // Exactly 8128 target bytes: 63 ids of 127 bytes and one of 58, all distinct.
    let mut ids: Vec<String> = (0..63).map(|i| format!("{i:03}{}", "a".repeat(124))).collect();
    ids.push(format!("zz{}", "b".repeat(56)));
    let target = format!("/test/{}", ids.join(","));
    assert_eq!(target.len(), 8128);
    let mut c = Client::connect(s);
    c.send(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    check_stream_head(&c.read_head());
    let long = format!("{target}?");
    expect_error(s, format!("GET {long} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(), 414, "8129-byte target");
    expect_error(p, format!("POST /send/1?{} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", "q".repeat(8125)).as_bytes(), 414, "long publish target");
    let pad = "a".repeat(8300);
    expect_error(s, format!("GET /test/1 HTTP/1.1\r\nHost: x\r\nX-Pad: {pad}\r\n\r\n").as_bytes(), 431, "head over 8 KiB");
    expect_error(p, format!("GET /stats HTTP/1.1\r\nHost: x\r\nX-Pad: {pad}\r\n\r\n").as_bytes(), 431, "publish head over 8 KiB");
    for (addr, req, what) in [
        (s, &b"GET /test/1 HTTP/1.1\r\n\r\n"[..], "no Host"),
        (s, b"GET /test/1 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "two Hosts"),
        (s, b"GET /test/1 HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", "two Hosts, same value"),
        (p, b"POST /send/1 HTTP/1.1\r\nContent-Length: 1\r\n\r\nx", "publish without Host"),
        (p, b"GET /stats HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "stats with two Hosts"),
        (p, b"GET /stats HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", "GET with a body"),
        (p, b"HEAD /stats HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx", "HEAD with a body"),
        (p, b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "GET / chunked"),
    ] {
        expect_error(addr, req, 400, what);
    }
    expect_error(p, b"POST /send/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501, "gzip publish body");
    // HTTP/1.0 needs no Host.
    let mut c = Client::connect(s);
    c.send(b"GET /test/h10 HTTP/1.0\r\n\r\n");
    c.read_head().expect_200();
    // Absolute-form on both listeners.
    let mut a = Client::connect(s);
    a.send(format!("GET http://{s}/test/abs1?x=1 HTTP/1.1\r\nHost: {s}\r\n\r\n").as_bytes());
    check_stream_head(&a.read_head());
    let mut pc = Client::connect(p);
    pc.send(format!("POST http://{p}/send/abs1 HTTP/1.1\r\nHost: {p}\r\nContent-Length: 3\r\n\r\nabs").as_bytes());
    let head = pc.read_head();
    head.expect_200();
    assert_eq!(parse_delivered(&pc.read_body(&head)), 1);
    a.expect_bytes(&msg_chunk(1, b"abs"), "message to the absolute-form subscriber");
    assert_eq!(publish(p, "h10", b"to 1.0"), 1);
}
}

both_backends! {
/// Publish bodies: `Expect: 100-continue` gets exactly `HTTP/1.1 100 Continue\r\n\r\n`
/// before the body; a Content-Length longer than the body waits, then 408, delivering
/// nothing; a shorter one leaves bytes parsed as the next request (400 and close after the
/// first reply); a publisher that disconnects mid-body (FIN or RST) delivers nothing.
fn publish_body_faults() {
    let mut cfg = common::server::local(2);
    cfg.head_timeout_s = 1;
    let server = start_with(cfg);
    let (s, p) = (server.subscriber_addr(), server.publish_addr());
    let mut sub = Subscriber::connect(s, "pb1");
    // 100-continue, twice on one connection.
    let mut c = Client::connect(p);
    for m in [&b"continued"[..], b"again"] {
        c.send(format!("POST /send/pb1 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", m.len()).as_bytes());
        c.expect_bytes(b"HTTP/1.1 100 Continue\r\n\r\n", "interim 100 before the body");
        c.expect_nothing_pending("after 100 Continue, before the body");
        c.send(m);
        let head = c.read_head();
        head.expect_200();
        assert_eq!(parse_delivered(&c.read_body(&head)), 1);
        sub.expect_msg(m);
    }
    // Content-Length longer than the body: no reply until the timeout, then 408.
    let mut c = Client::connect(p);
    c.send(b"POST /send/pb1 HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\nonly ten b");
    assert!(!c.expect_silence(Duration::from_millis(700), "publish with 10 of 20 body bytes"));
    let head = c.read_head();
    head.expect_status(408);
    let _ = c.read_to_close();
    sub.client.expect_nothing_pending("after the 408 publish");
    // Content-Length shorter than what follows: the rest is the next request.
    let mut c = Client::connect(p);
    c.send(b"POST /send/pb1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcXYZ\r\n\r\n");
    let head = c.read_head();
    head.expect_200();
    assert_eq!(parse_delivered(&c.read_body(&head)), 1);
    let head = c.read_head();
    head.expect_status(400);
    let _ = c.read_to_close();
    sub.expect_msg(b"abc");
    // Disconnects mid-body, with FIN and with RST, and mid-head.
    for rst in [false, true] {
        let mut c = Client::connect(p);
        c.send(b"POST /send/pb1 HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabcd");
        std::thread::sleep(Duration::from_millis(50));
        if rst { rst_close(c.stream) } else { c.close() }
    }
    let mut c = Client::connect(p);
    c.send(b"POST /send/pb1 HTTP/1.1\r\nHost: x\r\nContent-Len");
    c.close();
    assert!(!sub.client.expect_silence(Duration::from_millis(300), "after publishers vanished mid-body"));
    assert_eq!(publish(p, "pb1", b"next"), 1);
    sub.expect_msg(b"next");
}
}

both_backends! {
/// B17 generalised: pipelined requests in one segment — three publishes (the case), a mix
/// of publish, stats, HEAD and page requests, 200 publishes in one write, and the same
/// bytes split at every 7th byte — are all answered in order, and the subscriber gets every
/// message in order; a subscribe followed by a pipelined request on the same connection
/// keeps its stream intact (the extra request is not served).
/// See tests/CASES.md#b17.
fn b17_pipelined_requests_all_answered() {
    let server = start(2);
    let (s, p) = (server.subscriber_addr(), server.publish_addr());
    let mut sub = Subscriber::connect(s, "42");
    let mut c = Client::connect(p);
    c.send(b"POST /send/42 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nonePOST /send/42 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\ntwoPOST /send/42 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nthree");
    let mut p3 = Publisher { client: c };
    for m in [&b"one"[..], b"two", b"three"] {
        assert_eq!(p3.read_reply(), 1);
        sub.expect_msg(m);
    }
    let _ = p3.client.read_to_close();
    // A mix, one write.
    let mut mix = send_request("42", b"a");
    mix.extend_from_slice(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n");
    mix.extend_from_slice(&send_request("42", b"b"));
    mix.extend_from_slice(b"HEAD /stats HTTP/1.1\r\nHost: x\r\n\r\n");
    mix.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    mix.extend_from_slice(&send_request("42", b"c"));
    for split in [false, true] {
        let mut c = Client::connect(p);
        if split {
            for part in mix.chunks(7) {
                c.send(part);
                std::thread::sleep(Duration::from_micros(200));
            }
        } else {
            c.send(&mix);
        }
        let mut pc = Publisher { client: c };
        assert_eq!(pc.read_reply(), 1);
        let h = pc.client.read_head();
        h.expect_200();
        let body = pc.client.read_body(&h);
        assert!(body.starts_with(b"{"), "stats reply {body:?}");
        assert_eq!(pc.read_reply(), 1);
        pc.client.read_head().expect_200(); // HEAD /stats: no body
        let h = pc.client.read_head();
        h.expect_200();
        let page = pc.client.read_body(&h);
        assert!(!page.is_empty());
        assert_eq!(pc.read_reply(), 1);
        pc.client.expect_nothing_pending("after the mix");
        for m in [&b"a"[..], b"b", b"c"] {
            sub.expect_msg(m);
        }
    }
    // 200 publishes in one write.
    let mut many = Vec::new();
    for i in 0..200 {
        many.extend_from_slice(&send_request("42", format!("p{i}").as_bytes()));
    }
    let mut pc = Publisher::connect(p);
    pc.client.send(&many);
    for i in 0..200 {
        assert_eq!(pc.read_reply(), 1, "reply {i}");
    }
    for i in 0..200 {
        sub.expect_msg(format!("p{i}").as_bytes());
    }
    // A subscribe with a pipelined request behind it, every kind.
    for kind in KINDS {
        let extra = match kind {
            Kind::Sse => SSE_HEADERS.to_string(),
            Kind::Ws => ws_headers(),
            _ => String::new(),
        };
        let path = if kind == Kind::Seed { "/test/b17s" } else { "/sub/b17s" };
        let mut c = Client::connect(s);
        c.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\nGET /test/b17other HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        let head = c.read_head();
        assert!(head.status == 200 || head.status == 101, "{kind:?}: {:?}", head.status_line);
        if kind == Kind::Sse {
            c.expect_bytes(SSE_HI, "opening comment");
        }
        let mut st = Stream { kind, c, n: 0 };
        assert_eq!(publish(p, "b17other", b"no"), 0, "{kind:?}: the pipelined subscribe was served");
        // The stream may have been closed for the extra bytes (allowed: on a WebSocket they
        // are a protocol error, close 1002) or carry on intact; never garbled.
        let n = publish(p, "b17s", b"intact");
        if kind == Kind::Ws {
            let (b0, payload) = st.c.read_ws_frame();
            assert!(
                (b0, &payload[..]) == (0x81, &b"intact"[..]) || (b0, &payload[..]) == (0x88, &[3, 0xea][..]),
                "WebSocket after a pipelined request: frame {b0:02x} {payload:?} (delivered {n})"
            );
        } else if n == 1 {
            st.expect(b"intact");
        } else {
            assert_eq!(n, 0, "{kind:?}");
            let _ = st.c.read_to_close();
        }
    }
}
}
