//! The binary's life as a child process: it refuses an unsafe start (a public publish
//! listener without a token), ends every stream properly and exits 0 on SIGTERM or SIGINT,
//! and exits 101 at once when a shard panics. Every body runs on io_uring and on epoll.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// The `N` of an SSE block `retry: N\n\n` (0 if `block` is not one).
fn retry_ms(block: Option<&str>) -> u32 {
    block
        .and_then(|b| b.strip_prefix("retry: "))
        .and_then(|b| b.strip_suffix("\n\n"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Opens one stream of every kind (and HTTP/1.0 forms) on a child server (history off: the
/// streams' bytes are the ones before cursors), signals it with `sig`, and checks each
/// stream's proper end (SSE: a `retry:` first) and the exit.
fn graceful_stop(sig: i32) {
    // SIGTERM drains over `--drain-period` (tests/drain.rs); 1 s keeps the exit under 5 s.
    let (mut srv, up) = Serve::new()
        .shards(2)
        .args(["--history", "0", "--drain-period", "1s"])
        .try_spawn();
    assert!(up, "server did not start: {}", srv.stderr());
    let (s, p) = (srv.subscriber, srv.publish);
    let mut streams: Vec<Stream> = KINDS.iter().map(|&k| Stream::open(s, k, "bye1")).collect();
    let mut seed10 = Client::connect(s);
    seed10.send(b"GET /test/bye1 HTTP/1.0\r\n\r\n");
    seed10.read_head().expect_200();
    let mut sse10 = Client::connect(s);
    sse10.send(b"GET /sub/bye1 HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n");
    sse10.read_head().expect_200();
    sse10.expect_bytes(b": hi\n\n", "SSE opening comment over HTTP/1.0");
    let mut idle_pub = Publisher::connect(p);
    assert_eq!(idle_pub.send("bye1", b"before"), 6);
    for st in &mut streams {
        st.expect(b"before");
    }
    seed10.expect_bytes(&msg_data(1, b"before"), "HTTP/1.0 seed message");
    sse10.expect_bytes(b"data: before\n\n", "HTTP/1.0 SSE message");
    let t = Instant::now();
    srv.signal(sig);
    for st in &mut streams {
        let (mut rest, how) = st.c.read_to_close();
        if st.kind == Kind::Sse {
            // An SSE stream is told to come back after 1-10 s, then ends.
            let retry = rest
                .drain(..rest.len().saturating_sub(5))
                .collect::<Vec<u8>>();
            let retry = String::from_utf8(retry).unwrap();
            let block = retry
                .split_once("\r\n")
                .and_then(|(_, r)| r.strip_suffix("\r\n"));
            let ms = retry_ms(block);
            assert!((1_000..=10_000).contains(&ms), "SSE retry {retry:?}");
        }
        let want: &[u8] = if st.kind == Kind::Ws {
            &[0x88, 0x02, 0x03, 0xe9]
        } else {
            b"0\r\n\r\n"
        };
        assert_eq!(
            rest, want,
            "{:?}: end of stream on signal {sig} ({how:?})",
            st.kind
        );
    }
    let (rest, _) = seed10.read_to_close();
    assert!(
        rest.is_empty(),
        "HTTP/1.0 seed: bytes after a signal: {rest:?}"
    );
    let (rest, _) = sse10.read_to_close();
    let ms = retry_ms(std::str::from_utf8(&rest).ok());
    assert!(
        (1_000..=10_000).contains(&ms),
        "HTTP/1.0 SSE: {rest:?} after a signal"
    );
    let (rest, _) = idle_pub.client.read_to_close();
    assert!(rest.is_empty(), "idle publisher got {rest:?}");
    let status = srv.wait_exit(Duration::from_secs(5).saturating_sub(t.elapsed()));
    let status = status.unwrap_or_else(|| panic!("still running 5 s after signal {sig}"));
    assert_eq!(
        status.code(),
        Some(0),
        "exit after signal {sig}; stderr: {}",
        srv.stderr()
    );
    assert!(
        TcpStream::connect_timeout(&s, Duration::from_secs(1)).is_err(),
        "still accepting"
    );
}

both_backends! {
/// SIGTERM: every stream ends properly (`0\r\n\r\n`, WebSocket close 1001, nothing on
/// HTTP/1.0), exit 0 within 5 s, nothing accepted after.
fn sigterm_ends_every_stream() {
    graceful_stop(libc::SIGTERM);
}

/// The same on SIGINT.
fn sigint_ends_every_stream() {
    graceful_stop(libc::SIGINT);
}
}

both_backends! {
/// A shard that panics takes the process down at once with status 101 and a message
/// naming the thread (so a supervisor restarts it), with streams open.
fn shard_panic_exits_101() {
    for shard in ["0", "1"] {
        let (mut srv, up) = Serve::new().shards(2).env("URING_COMET_TEST_PANIC_SHARD", shard).try_spawn();
        assert!(up, "server did not start: {}", srv.stderr());
        let t = Instant::now();
        let mut c = Client::connect(srv.subscriber);
        c.send(b"GET /test/x HTTP/1.1\r\nHost: x\r\n\r\n");
        let status = srv
            .wait_exit(Duration::from_secs(4))
            .unwrap_or_else(|| panic!("shard {shard} panicked but the process runs on after 4 s"));
        let took = t.elapsed();
        assert_eq!(status.code(), Some(101), "stderr: {}", srv.stderr());
        assert!(took < Duration::from_millis(3000), "exit {took:?} after start");
        let err = srv.stderr();
        assert!(
            err.contains(&format!("thread shard-{shard} panicked")),
            "stderr does not name the thread: {err}"
        );
        let _ = c.read_to_close();
    }
}
}

/// `--publish-listen` on a non-loopback address needs `--publish-token`: without it the
/// binary refuses to start and names the fix; with it, it starts and enforces the token.
#[test]
fn public_publish_listener_needs_token() {
    let (mut srv, up) = Serve::new().publish_listen("0.0.0.0:0").try_spawn();
    assert!(!up, "started with a public publish listener and no token");
    let status = srv.wait_exit(Duration::from_secs(5)).expect("did not exit");
    assert!(!status.success());
    let err = srv.stderr();
    assert!(
        err.contains("--publish-token"),
        "the error does not name the fix: {err}"
    );
    let (srv, up) = Serve::new()
        .publish_listen("0.0.0.0:0")
        .args(["--publish-token", "tk"])
        .try_spawn();
    assert!(up, "did not start with a token: {}", srv.stderr());
    expect_error(
        srv.publish,
        &send_request("1", b"x"),
        401,
        "public listener, no token",
    );
    let mut c = Client::connect(srv.publish);
    c.send(&pub_request("POST", "/send/1", Some("Bearer tk"), b"x"));
    c.read_head().expect_200();
}
