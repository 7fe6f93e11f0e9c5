//! The raw stream: `GET /sub/<ids>` without `Upgrade` or an SSE Accept. Each message is one
//! chunk holding the body verbatim (no escaping, no line handling, any bytes); an empty
//! message sends nothing and is not counted; no heartbeats (any byte would be payload).
//! HTTP/1.0 and HEAD are in tests/cases.rs.

mod common;

use std::time::Duration;

use common::*;

both_backends! {
/// Head (200, text/plain; charset=utf-8, no-cache, X-Accel-Buffering, CORS, chunked) at once;
/// each body arrives verbatim as one chunk with its exact hex size.
fn raw_stream_exact_bytes() {
    let server = start(2);
    let mut c = raw_connect(server.subscriber_addr(), "raw1");
    c.expect_silence(Duration::from_millis(200), "raw stream before any message");
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(p.send("raw1", b"hello"), 1);
    c.expect_bytes(b"5\r\nhello\r\n", "hello");
    assert_eq!(p.send("raw1", b"a\r\nb\nc\rd\r\n\r\n"), 1);
    c.expect_bytes(b"c\r\na\r\nb\nc\rd\r\n\r\n\r\n", "line ends verbatim");
    assert_eq!(p.send("raw1", b"<b>'&\"</b>"), 1);
    c.expect_bytes(b"a\r\n<b>'&\"</b>\r\n", "no HTML escaping");
    assert_eq!(p.send("raw1", b"0\r\n\r\n"), 1);
    c.expect_bytes(b"5\r\n0\r\n\r\n\r\n", "a body that looks like a last-chunk");
    let binary: Vec<u8> = (0..=255u8).collect();
    assert_eq!(p.send("raw1", &binary), 1);
    let mut want = b"100\r\n".to_vec();
    want.extend_from_slice(&binary);
    want.extend_from_slice(b"\r\n");
    c.expect_bytes(&want, "every byte value");
    for len in [15usize, 16, 255, 4095, 4096, 40_000] {
        let msg = vec![b'r'; len];
        assert_eq!(p.send("raw1", &msg), 1);
        c.expect_bytes(&chunk(&msg), &format!("{len}-byte body"));
    }
    c.expect_silence(Duration::from_millis(200), "after the last message");
}
}

both_backends! {
/// An empty message puts nothing on a raw stream (a zero-length chunk would end it) and is
/// not counted in `delivered`; the stream stays open and gets the next message. On an id
/// shared with other protocols only those count.
fn raw_empty_message_sends_nothing() {
    let server = start(2);
    let mut c = raw_connect(server.subscriber_addr(), "raw-empty");
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(p.send("raw-empty", b""), 0, "an empty message on a raw stream is not delivered");
    c.expect_silence(Duration::from_millis(200), "after an empty message");
    assert_eq!(p.send("raw-empty", b"after"), 1);
    c.expect_bytes(b"5\r\nafter\r\n", "message after the empty one");

    let mut sse = sse_connect(server.subscriber_addr(), "raw-empty");
    let mut seed = Subscriber::connect(server.subscriber_addr(), "raw-empty");
    assert_eq!(p.send("raw-empty", b""), 2, "SSE and /test count, raw does not");
    sse.expect_bytes(&chunk(b"data: \n\n"), "SSE empty event");
    seed.expect_msg(b"");
    c.expect_silence(Duration::from_millis(100), "raw stream after the shared empty message");
    assert_eq!(p.send("raw-empty", b"x"), 3);
    c.expect_bytes(b"1\r\nx\r\n", "raw after the shared empty message");
}
}

both_backends! {
/// No heartbeat on a raw stream, even with a 1 s interval: 2.5 s of silence, and the stream
/// is still logged in afterwards.
fn raw_has_no_heartbeat() {
    let mut cfg = common::server::local(2);
    cfg.heartbeat_s = 1;
    let server = start_with(cfg);
    let mut c = raw_connect(server.subscriber_addr(), "raw-quiet");
    c.expect_silence(Duration::from_millis(2500), "raw stream with heartbeats every 1 s");
    assert_eq!(publish(server.publish_addr(), "raw-quiet", b"still"), 1);
    c.expect_bytes(b"5\r\nstill\r\n", "message after 2.5 s");
}
}

both_backends! {
/// Several ids on one raw connection, and one id on several: each message once per connection.
fn raw_several_ids() {
    let server = start(2);
    let mut a = raw_connect(server.subscriber_addr(), "r1,r2,r3");
    let mut b = raw_connect(server.subscriber_addr(), "r2");
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(p.send("r1", b"one"), 1);
    assert_eq!(p.send("r2", b"two"), 2);
    assert_eq!(p.send("r3", b"three"), 1);
    a.expect_bytes(b"3\r\none\r\n3\r\ntwo\r\n5\r\nthree\r\n", "a");
    b.expect_bytes(b"3\r\ntwo\r\n", "b");
    a.expect_silence(Duration::from_millis(150), "a after three");
    b.expect_silence(Duration::from_millis(50), "b after two");
}
}

both_backends! {
/// The largest message the publish API takes (64 KiB) reaches a subscriber of each protocol
/// whole with the default `max_pending_bytes` (also 64 KiB): the framing around it must not
/// make it count as a slow consumer.
fn largest_message_default_limits() {
    let server = start(2);
    let max = vec![b'm'; 65536];
    let mut raw = raw_connect(server.subscriber_addr(), "max");
    let mut sse = sse_connect(server.subscriber_addr(), "max");
    let mut ws = ws_connect(server.subscriber_addr(), "max");
    let mut seed = Subscriber::connect(server.subscriber_addr(), "max");
    assert_eq!(
        publish(server.publish_addr(), "max", &max),
        4,
        "a 64 KiB message (the documented maximum) must reach each subscriber with the default limits"
    );
    raw.expect_bytes(&chunk(&max), "raw");
    let mut event = b"data: ".to_vec();
    event.extend_from_slice(&max);
    event.extend_from_slice(b"\n\n");
    sse.expect_bytes(&chunk(&event), "SSE");
    ws.expect_bytes(&ws_server_frame(0x81, &max), "WebSocket");
    seed.expect_msg(&max);
}
}
