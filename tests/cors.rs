//! CORS (Fetch standard, "CORS protocol") on the subscriber listener: the
//! `Access-Control-Allow-Origin` header on every stream, preflight (`OPTIONS`) answers, and
//! the `cors_origin` setting (`*`, one origin with `Vary: Origin`, or none). Case B19
//! (tests/CASES.md#b19) in tests/idle_streams.rs is the browser's-eye summary.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// A preflight as a browser sends it for an EventSource polyfill adding headers.
fn preflight_request(path: &str, version: &str) -> Vec<u8> {
    format!(
        "OPTIONS {path} {version}\r\nHost: 127.0.0.1\r\nOrigin: http://example.com\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: last-event-id, cache-control\r\n\r\n"
    )
    .into_bytes()
}

/// Sends a preflight on a fresh connection; returns its head after checking there is no body
/// and the server closes the connection.
fn preflight(addr: std::net::SocketAddr, path: &str, version: &str) -> Head {
    let t = Instant::now();
    let mut c = Client::connect(addr);
    c.send(&preflight_request(path, version));
    let head = c.read_head();
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "preflight took {:?}",
        t.elapsed()
    );
    let (rest, _) = c.read_to_close();
    assert!(
        rest.is_empty(),
        "body after a 204: {:?}",
        String::from_utf8_lossy(&rest)
    );
    head
}

/// The preflight headers that do not depend on the origin setting.
fn check_preflight(head: &Head) {
    head.expect_status(204);
    assert_eq!(head.status_line, "HTTP/1.1 204 No Content");
    head.expect_header_exact("access-control-allow-methods", "GET, HEAD, OPTIONS");
    head.expect_header_exact(
        "access-control-allow-headers",
        "Last-Event-ID, Cache-Control, Accept, Content-Type",
    );
    head.expect_header_exact("access-control-max-age", "86400");
    head.expect_header("connection", "close");
    head.expect_no_header("content-length");
    head.expect_no_header("transfer-encoding");
}

/// Every kind of stream request (with an `Origin`), and the content type it must get.
fn stream_requests(id: &str) -> Vec<(String, Vec<u8>, &'static str)> {
    let origin = "Origin: http://example.com\r\n";
    vec![
        (
            "/sub raw".into(),
            sub_get(id, origin),
            "text/plain; charset=utf-8",
        ),
        (
            "/sub SSE".into(),
            sub_get(id, &format!("{origin}{SSE_HEADERS}")),
            "text/event-stream",
        ),
        (
            "/test".into(),
            format!("GET /test/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\n{origin}\r\n").into_bytes(),
            "text/html; charset=utf-8",
        ),
        (
            "HEAD /sub SSE".into(),
            format!("HEAD /sub/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\n{origin}{SSE_HEADERS}\r\n")
                .into_bytes(),
            "text/event-stream",
        ),
    ]
}

both_backends! {
/// Default (`*`): every stream head carries `Access-Control-Allow-Origin: *` and no
/// `Vary: Origin` (a wildcard does not depend on the request), nor credentials.
fn cors_wildcard_on_every_stream() {
    let server = start(2);
    for (what, req, ct) in stream_requests("cors1") {
        let mut c = Client::connect(server.subscriber_addr());
        c.send(&req);
        let head = c.read_head();
        head.expect_200();
        head.expect_header("content-type", ct);
        assert_eq!(head.header("access-control-allow-origin"), Some("*"), "{what}");
        head.expect_no_header("vary");
        head.expect_no_header("access-control-allow-credentials");
    }
}
}

both_backends! {
/// Preflights on `/sub/<anything>` and `/test/<id>` (HTTP/1.1 and 1.0) get the 204 at once,
/// no body, a closed connection, and never open a stream: a publish afterwards reports 0.
fn preflight_answers_and_opens_nothing() {
    let server = start(2);
    for path in ["/sub/42", "/sub/42,43", "/sub/not!an@id", "/test/42", "/sub/42?x=1"] {
        for version in ["HTTP/1.1", "HTTP/1.0"] {
            let head = preflight(server.subscriber_addr(), path, version);
            check_preflight(&head);
            head.expect_header_exact("access-control-allow-origin", "*");
        }
    }
    assert_eq!(publish(server.publish_addr(), "42", b"x"), 0, "a preflight opened a stream");
    assert_eq!(publish(server.publish_addr(), "43", b"x"), 0, "a preflight opened a stream");
    // Other paths are still 404.
    expect_error(server.subscriber_addr(), &preflight_request("/nope", "HTTP/1.1"), 404, "OPTIONS /nope");
    // And streams still work.
    let mut c = sse_connect(server.subscriber_addr(), "42");
    assert_eq!(publish(server.publish_addr(), "42", b"y"), 1);
    c.expect_bytes(&chunk(b"data: y\n\n"), "stream after the preflights");
}
}

both_backends! {
/// `cors_origin = "https://a.example"`: that origin (never `*`) plus `Vary: Origin` on streams
/// and preflights.
fn cors_one_origin() {
    let mut cfg = common::server::local(2);
    cfg.cors_origin = "https://a.example".to_string();
    let server = start_with(cfg);
    for (what, req, _) in stream_requests("cors2") {
        let mut c = Client::connect(server.subscriber_addr());
        c.send(&req);
        let head = c.read_head();
        head.expect_200();
        assert_eq!(head.header("access-control-allow-origin"), Some("https://a.example"), "{what}");
        head.expect_header("vary", "origin");
    }
    let head = preflight(server.subscriber_addr(), "/sub/cors2", "HTTP/1.1");
    check_preflight(&head);
    head.expect_header_exact("access-control-allow-origin", "https://a.example");
    head.expect_header("vary", "origin");
}
}

both_backends! {
/// `cors_origin = ""`: no `Access-Control-*` header (nor `Vary`) anywhere; streams and
/// preflights still answer (the preflight a plain 204 with `Allow`).
fn cors_off() {
    let mut cfg = common::server::local(2);
    cfg.cors_origin = String::new();
    let server = start_with(cfg);
    for (what, req, ct) in stream_requests("cors3") {
        let mut c = Client::connect(server.subscriber_addr());
        c.send(&req);
        let head = c.read_head();
        head.expect_200();
        head.expect_header("content-type", ct);
        assert!(
            head.headers.iter().all(|(n, _)| !n.to_ascii_lowercase().starts_with("access-control-")),
            "{what}: CORS headers with cors_origin \"\": {}",
            String::from_utf8_lossy(&head.raw)
        );
        head.expect_no_header("vary");
    }
    let head = preflight(server.subscriber_addr(), "/sub/cors3", "HTTP/1.1");
    head.expect_status(204);
    head.expect_header("allow", "GET, HEAD, OPTIONS");
    assert!(
        head.headers.iter().all(|(n, _)| !n.to_ascii_lowercase().starts_with("access-control-")),
        "preflight with cors_origin \"\": {}",
        String::from_utf8_lossy(&head.raw)
    );
    head.expect_no_header("vary");
}
}
