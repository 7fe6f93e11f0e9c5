//! HEAD, and the error responses: 404, 501, 400 (ids and malformed requests), 431, 413. Every
//! error response must be followed by the server closing the connection.

mod common;

use std::time::Duration;

use common::*;

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").into_bytes()
}

/// A GET head of exactly `total` bytes (through the final CRLFCRLF) for /test/<id>.
fn padded_get(id: &str, total: usize) -> Vec<u8> {
    let base = format!("GET /test/{id} HTTP/1.1\r\nHost: x\r\nX-Pad: \r\n\r\n").len();
    assert!(total > base);
    let r = format!(
        "GET /test/{id} HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "p".repeat(total - base)
    );
    assert_eq!(r.len(), total);
    r.into_bytes()
}

both_backends! {
/// HEAD /test/<id>: same status and stream headers as GET, no body, never logged in.
fn head_request() {
    let server = start(2);
    let mut c = Client::connect(server.subscriber_addr());
    c.send(b"HEAD /test/777 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let head = c.read_head();
    check_stream_head(&head);
    let get = Subscriber::connect(server.subscriber_addr(), "778");
    for name in ["content-type", "transfer-encoding"] {
        assert_eq!(head.header(name), get.head.header(name), "HEAD and GET differ in {name}");
    }
    assert_eq!(head.status_line, get.head.status_line);
    // No body: not even a last chunk.
    let closed = c.expect_silence(Duration::from_millis(300), "body of a HEAD response");
    // Never logged in: a send to 777 reaches nobody, and nothing arrives on the HEAD connection.
    assert_eq!(publish(server.publish_addr(), "777", b"to head"), 0, "HEAD logged the connection in");
    if !closed {
        c.expect_silence(Duration::from_millis(200), "HEAD connection after a send to its id");
    }
    // HEAD with several ids, same thing.
    let mut c = Client::connect(server.subscriber_addr());
    c.send(b"HEAD /test/h1,h2 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    check_stream_head(&c.read_head());
    assert_eq!(publish(server.publish_addr(), "h2", b"x"), 0);
    // HEAD of a bad id gets the same 400 as GET.
    expect_error(server.subscriber_addr(), b"HEAD /test/a!b HTTP/1.1\r\nHost: x\r\n\r\n", 400, "HEAD bad id");
}
}

both_backends! {
/// Paths other than /test/<ids> -> 404 (also the publish paths on the subscriber listener).
fn not_found() {
    let server = start(2);
    for path in ["/", "/foo", "/testx/1", "/tests/1", "/send/1", "/stats", "/TEST/1"] {
        expect_error(server.subscriber_addr(), &get(path), 404, path);
    }
}
}

both_backends! {
/// Methods other than GET, HEAD and OPTIONS (a CORS preflight) -> 501; POST /send/1 on the
/// subscriber listener is 501, so publishing there is impossible (and indeed nothing is
/// delivered).
fn not_implemented() {
    let server = start(2);
    let mut sub = Subscriber::connect(server.subscriber_addr(), "1");
    expect_error(server.subscriber_addr(), &send_request("1", b"sneaky"), 501, "POST /send/1 on the subscriber listener");
    for method in ["POST", "PUT", "DELETE", "PATCH", "CONNECT"] {
        let req = format!("{method} /test/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        expect_error(server.subscriber_addr(), req.as_bytes(), 501, method);
    }
    sub.client.expect_silence(Duration::from_millis(200), "subscriber 1 after refused publishes");
    assert_eq!(publish(server.publish_addr(), "1", b"real"), 1);
    sub.expect_msg(b"real");
}
}

both_backends! {
/// Ids: 1 to 128 bytes of [A-Za-z0-9._~-], up to 64 per connection, no empty members.
fn ids_valid_and_invalid() {
    let server = start(2);
    let s = server.subscriber_addr();
    let mut p = Publisher::connect(server.publish_addr());

    // Accepted edge cases.
    let id128 = "Z".repeat(128);
    let punct = "aZ09._~-";
    let mut sub128 = Subscriber::connect(s, &id128);
    let mut sub_p = Subscriber::connect(s, punct);
    let ids64: Vec<String> = (0..64).map(|i| format!("m{i}")).collect();
    let mut sub64 = Subscriber::connect(s, &ids64.join(","));
    assert_eq!(p.send(&id128, b"long id"), 1);
    sub128.expect_msg(b"long id");
    assert_eq!(p.send(punct, b"punct"), 1);
    sub_p.expect_msg(b"punct");
    assert_eq!(p.send("m0", b"first of 64"), 1);
    assert_eq!(p.send("m63", b"last of 64"), 1);
    sub64.expect_msg(b"first of 64");
    sub64.expect_msg(b"last of 64");

    // Refused with 400.
    let id129 = "Z".repeat(129);
    let ids65: Vec<String> = (0..65).map(|i| format!("n{i}")).collect();
    let ids65 = ids65.join(",");
    let bad = [
        "/test/",
        "/test/a!b",
        "/test/a%20b",
        "/test/a+b",
        "/test/a*b",
        "/test/a/b",
        id129.as_str(),
        "/test/1,,2",
        "/test/1,",
        "/test/,1",
        "/test/,",
        ids65.as_str(),
    ];
    for t in bad {
        let path = if t.starts_with("/test/") { t.to_string() } else { format!("/test/{t}") };
        expect_error(s, &get(&path), 400, &format!("GET {}", &path[..path.len().min(80)]));
    }
    // Raw non-ASCII bytes in the id.
    expect_error(s, "GET /test/caf\u{e9} HTTP/1.1\r\nHost: x\r\n\r\n".as_bytes(), 400, "non-ASCII id");
    // None of the refused requests logged anything in.
    assert_eq!(p.send("n0", b"x"), 0, "a 65-id request must not log in its first ids");
    assert_eq!(p.send("1", b"x"), 0, "`1,,2` must not log in 1");
    assert_eq!(p.send("2", b"x"), 0, "`1,,2` must not log in 2");
}
}

both_backends! {
/// Malformed requests -> 400 and close.
fn malformed_requests() {
    let server = start(2);
    let s = server.subscriber_addr();
    let cases: [(&[u8], &str); 4] = [
        (b"GARBAGE\r\n\r\n", "no spaces"),
        (b"GET /test/1 HTTP/1.1\r\nNoColonHere\r\n\r\n", "header without colon"),
        (b"GET /test/1\r\n\r\n", "no HTTP version"),
        (b"\x01\x02\x03 \xff\xfe HTTP/1.1\r\n\r\n", "binary garbage"),
    ];
    for (req, what) in cases {
        expect_error(s, req, 400, what);
    }
    // The publish listener too.
    expect_error(server.publish_addr(), b"GARBAGE\r\n\r\n", 400, "publish: no spaces");
    expect_error(
        server.publish_addr(),
        b"POST /send/1 HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        400,
        "publish: bad Content-Length",
    );
    expect_error(server.publish_addr(), &send_request("a!b", b"x"), 400, "publish: bad id");
}
}

both_backends! {
/// A request head over 8 KiB -> 431; a head of exactly 8 KiB is fine.
fn head_too_large() {
    let server = start(2);
    let s = server.subscriber_addr();
    // Exactly 8192 bytes including the final CRLFCRLF: not over 8 KiB.
    let mut c = Client::connect(s);
    c.send(&padded_get("h8k", 8192));
    check_stream_head(&c.read_head());
    let mut sub = Subscriber { head: parse_head(b"HTTP/1.1 200 OK\r\n\r\n"), client: c, received: 0 };
    assert_eq!(publish(server.publish_addr(), "h8k", b"fits"), 1);
    sub.expect_msg(b"fits");

    // 8193 bytes: over.
    expect_error(s, &padded_get("h8k1", 8193), 431, "head of 8193 bytes");
    // 9000 bytes, complete.
    expect_error(s, &padded_get("h9k", 9000), 431, "head of 9000 bytes");
    // 12000 bytes that never end (no CRLFCRLF): the server must not wait for more.
    let mut endless = b"GET /test/1 HTTP/1.1\r\nX-Pad: ".to_vec();
    endless.resize(12000, b'q');
    expect_error(s, &endless, 431, "endless head");
    // On the publish listener too.
    let mut big = b"POST /send/1 HTTP/1.1\r\nContent-Length: 1\r\nX-Pad: ".to_vec();
    big.resize(9000, b'q');
    big.extend_from_slice(b"\r\n\r\nx");
    expect_error(server.publish_addr(), &big, 431, "publish head of 9 KiB");
    assert_eq!(publish(server.publish_addr(), "1", b"x"), 0, "the refused requests logged 1 in");
}
}

both_backends! {
/// A publish body over 64 KiB -> 413 (and nothing delivered); 400 for 65 ids is in
/// `ids_valid_and_invalid`.
fn body_too_large() {
    let server = start(2);
    let mut sub = Subscriber::connect(server.subscriber_addr(), "big");
    let body = vec![b'b'; 65537];
    expect_error(server.publish_addr(), &send_request("big", &body), 413, "body of 65537 bytes");
    // Far over, announced by Content-Length only: the reply must not wait for the body.
    expect_error(
        server.publish_addr(),
        b"POST /send/big HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n",
        413,
        "Content-Length 10000000 without body",
    );
    sub.client.expect_silence(Duration::from_millis(200), "nothing delivered from refused bodies");
    assert_eq!(publish(server.publish_addr(), "big", b"ok"), 1);
    sub.expect_msg(b"ok");
}
}

/// The whole reply to `req` on a fresh connection to `addr`, up to the server's close.
fn whole_reply(addr: std::net::SocketAddr, req: &[u8]) -> Vec<u8> {
    let mut c = Client::connect(addr);
    c.send_lossy(req);
    c.read_to_close().0
}

both_backends! {
/// An error answering a HEAD is the head a GET gets, Content-Length included, and no body
/// (RFC 9110 section 9.3.2), then the close: a bad id, an unknown path and a method the
/// subscriber listener does not take; on the publish listener an unknown path and a bad id.
fn head_errors_have_no_body() {
    let server = start(2);
    let cases = [
        (server.subscriber_addr(), "/test/a%20b"),
        (server.subscriber_addr(), "/nowhere"),
        (server.publish_addr(), "/nowhere"),
        (server.publish_addr(), "/send/a%20b"),
    ];
    for (addr, path) in cases {
        let got = whole_reply(addr, format!("GET {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        let end = got.windows(4).position(|w| w == b"\r\n\r\n").expect("a whole head") + 4;
        assert!(got.len() > end, "GET {path}: an error with a body: {:?}", String::from_utf8_lossy(&got));
        assert!(got.starts_with(b"HTTP/1.1 4"), "GET {path}: {:?}", String::from_utf8_lossy(&got));
        let head = whole_reply(addr, format!("HEAD {path} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        assert_eq!(
            String::from_utf8_lossy(&head),
            String::from_utf8_lossy(&got[..end]),
            "HEAD {path}: the GET's head, no body"
        );
    }
}
}

both_backends! {
/// A known publish-listener target asked with a method it does not take gets 405 naming
/// the ones it does (RFC 9110 section 15.5.6), exact bytes, then the close; an unknown
/// target stays 404.
fn wrong_method_on_a_known_target_is_405() {
    let server = start(2);
    let p = server.publish_addr();
    for (method, path, allow) in [
        ("GET", "/send/1", "POST, PUT"),
        ("DELETE", "/presence/42", "GET, HEAD"),
        ("POST", "/metrics", "GET, HEAD"),
    ] {
        let req = format!("{method} {path} HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
        let want = format!("HTTP/1.1 405 Method Not Allowed\r\nAllow: {allow}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 19\r\nConnection: close\r\n\r\nMethod Not Allowed\n");
        assert_eq!(String::from_utf8_lossy(&whole_reply(p, req.as_bytes())), want, "{method} {path}");
    }
    let reply = whole_reply(p, b"GET /nowhere HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(reply.starts_with(b"HTTP/1.1 404 Not Found\r\n"), "{:?}", String::from_utf8_lossy(&reply));
}
}
