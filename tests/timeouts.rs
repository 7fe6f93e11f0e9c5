//! Every deadline the server keeps, and what must not trip it: the head timeout (408 to a
//! request head or publish body not complete in time, never to a complete stream, an idle
//! keep-alive publisher or a publisher held back by backpressure), the heartbeat interval
//! on every stream kind, and the send deadline (TCP_USER_TIMEOUT) that aborts a reader
//! stuck at a zero window. Every body runs on io_uring and on epoll.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

both_backends! {
/// `head_timeout_s`: a head not complete (nothing sent on either listener, half a request
/// line, half a publish head) or a publish body not complete gets `408 Request Timeout` and
/// close after one to two timeouts (plus the shard's idle tick); a complete stream, and a
/// keep-alive publisher idle after a request, are never timed out.
fn head_and_body_timeout_408() {
    let mut cfg = common::server::local(2);
    cfg.head_timeout_s = 1;
    let server = start_with(cfg);
    let (s, p) = (server.subscriber_addr(), server.publish_addr());
    let mut stream = Subscriber::connect(s, "to1");
    let mut keepalive = Publisher::connect(p);
    assert_eq!(keepalive.send("nobody", b"x"), 0);
    let t0 = Instant::now();
    let mut slow: Vec<(Client, &str)> = Vec::new();
    slow.push((Client::connect(s), "subscriber that sent nothing"));
    slow.push((Client::connect(p), "publisher that sent nothing"));
    let mut c = Client::connect(s);
    c.send(b"GET /test/to1 HTTP/1.1\r\nHo");
    slow.push((c, "half a subscribe head"));
    let mut c = Client::connect(p);
    c.send(b"POST /send/to1 HTTP/1.1\r\nHost: x\r\nContent-Le");
    slow.push((c, "half a publish head"));
    let mut c = Client::connect(p);
    c.send(b"POST /send/to1 HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
    slow.push((c, "publish body 3 of 10 bytes"));
    for (mut c, what) in slow {
        let head = c.read_head();
        let at = t0.elapsed();
        assert!(head.status == 408, "{what}: got {:?}", head.status_line);
        head.expect_status(408);
        assert!(
            at >= Duration::from_millis(900) && at <= Duration::from_millis(3500),
            "{what}: 408 after {at:?}; expected one to two timeouts of 1 s (plus the idle tick)"
        );
        let (rest, _) = c.read_to_close();
        let body_len: usize = head.header("content-length").map_or(0, |v| v.parse().unwrap());
        assert_eq!(rest.len(), body_len, "{what}: bytes after the 408: {rest:?}");
    }
    // The stream opened before, whose head was complete, outlives two timeouts.
    std::thread::sleep(Duration::from_millis(2600).saturating_sub(t0.elapsed()));
    assert_eq!(publish(p, "to1", b"after 408s"), 1, "the complete stream was closed");
    stream.expect_msg(b"after 408s");
    assert_eq!(keepalive.send("nobody", b"y"), 0, "the idle keep-alive publisher was closed");
    // Nothing of the incomplete publish body was delivered.
    stream.client.expect_nothing_pending("after the 408s");
}
}

both_backends! {
/// `heartbeat_s` = 1: every quiet stream kind gets its heartbeat within ~2 s (seed: a `\n`
/// chunk, SSE: `: ping` comment, WebSocket: empty ping), raw none; a message after
/// heartbeats still has number 1 (heartbeats are not messages).
fn heartbeats_every_second() {
    let mut cfg = common::server::local(2);
    cfg.heartbeat_s = 1;
    let server = start_with(cfg);
    let (s, p) = (server.subscriber_addr(), server.publish_addr());
    let mut seed = Stream::open(s, Kind::Seed, "hb1");
    let mut sse = Stream::open(s, Kind::Sse, "hb1");
    let mut ws = Stream::open(s, Kind::Ws, "hb1");
    let mut raw = Stream::open(s, Kind::Raw, "hb1");
    seed.c.expect_bytes(&chunk(b"\n"), "seed heartbeat");
    sse.c.expect_bytes(&chunk(b": ping\n\n"), "SSE heartbeat");
    ws.c.expect_bytes(&[0x89, 0x00], "WebSocket ping");
    // Second heartbeat, about a second later.
    let t = Instant::now();
    seed.c.expect_bytes(&chunk(b"\n"), "second seed heartbeat");
    assert!(t.elapsed() < Duration::from_millis(2500), "second heartbeat after {:?}", t.elapsed());
    raw.c.expect_nothing_pending("raw stream after heartbeats of the others");
    assert_eq!(publish(p, "hb1", b"m"), 4);
    // Heartbeats may come before the message: skip them.
    skip_beats(&mut seed.c, &chunk(b"\n"));
    skip_beats(&mut sse.c, &chunk(b": ping\n\n"));
    skip_beats(&mut ws.c, &[0x89, 0x00]);
    for st in [&mut seed, &mut sse, &mut ws, &mut raw] {
        st.expect(b"m");
    }
}
}

both_backends! {
/// A publisher that pipelines far ahead and pauses reading its replies is held back by
/// backpressure, which is not its delay: with `--head-timeout 1` and a 2.5 s pause it still
/// gets every reply `200` and no `408` (the sweep used to count input the server itself held
/// back, and a request split across reads, as a slow request).
fn pipelining_publisher_held_back_is_not_timed_out() {
    let mut cfg = common::server::local(2);
    cfg.head_timeout_s = 1;
    let server = start_with(cfg);
    let n = 60_000;
    let one = send_request("nobody", b"x");
    let all: Vec<u8> = (0..n).flat_map(|_| one.iter().copied()).collect();
    let c = TcpStream::connect(server.publish_addr()).unwrap();
    let mut w = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&all));
    std::thread::sleep(Duration::from_millis(2500));
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut cl = Client { stream: c, buf: Vec::new() };
    for k in 0..n {
        let head = cl.read_head();
        assert_eq!(head.status, 200, "reply {k} of {n}");
        cl.read_body(&head);
    }
    writer.join().unwrap().unwrap();
}
}

both_backends! {
/// The send deadline (`send_timeout_s`, TCP_USER_TIMEOUT): a reader that stops with its
/// receive window at zero, holding less than `max_pending_bytes` in the server, is aborted by
/// the kernel once its data stays unacknowledged that long, counted in `send_timeouts` and
/// logged out; a reader of the same id that keeps reading gets every message meanwhile.
fn stalled_reader_hits_the_send_deadline() {
    let mut cfg = common::server::local(2);
    cfg.send_timeout_s = 2;
    let server = start_with(cfg);
    let (s, p) = (server.subscriber_addr(), server.publish_addr());
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&s.into()).unwrap();
    let mut stalled = Client { stream: sock.into(), buf: Vec::new() };
    stalled.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stalled.send(b"GET /test/deadline HTTP/1.1\r\nHost: x\r\n\r\n");
    check_stream_head(&stalled.read_head());
    let mut fast = Subscriber::connect(s, "deadline");
    let mut publ = Publisher::connect(p);
    // ~48 KiB: more than the stalled reader's window and the kernel's first send buffer,
    // less than the 64 KiB bound, so only the deadline can end it.
    for i in 0..12 {
        let m = format!("{i:02}").repeat(2 * 1024);
        assert_eq!(publ.send("deadline", m.as_bytes()), 2);
        fast.expect_msg(m.as_bytes());
    }
    assert!(
        wait_until(Duration::from_secs(15), || stat(p, "send_timeouts") == 1),
        "no send timeout within 15 s of a 2 s deadline: {}",
        stats(p)
    );
    assert_eq!(stat(p, "slow_consumers_closed"), 0);
    assert_eq!(publ.send("deadline", b"after"), 1);
    fast.expect_msg(b"after");
    drop(stalled);
}
}
