//! `--no-idle-poll` (issue 20): an idle SSE or raw subscriber holds no hang-up poll, so the
//! server learns of its hang-up only by writing to it: the first message after the hang-up is
//! still counted as delivered, and a later write fails on the peer's reset and closes the
//! stream. With the default (a poll per idle subscriber) the hang-up closes the stream with
//! no write. WebSocket streams keep their poll under `--no-idle-poll`: pings are answered and
//! a hang-up is seen at once.

mod common;

use std::time::Duration;

use common::*;

/// Publishes to `id` until `/stats` shows no subscriber connection (at most 10 s).
fn publish_until_closed(p: std::net::SocketAddr, id: &str) -> bool {
    wait_until(Duration::from_secs(10), || {
        publish(p, id, b"again");
        stat(p, "connections") == 0
    })
}

both_backends! {
/// `--no-idle-poll`: a subscriber that hung up is still delivered to once (nothing watched
/// its socket), and the write after its reset closes it.
fn no_idle_poll_sees_a_hang_up_at_the_next_write() {
    let mut cfg = local(1);
    cfg.idle_poll = false;
    cfg.heartbeat_s = 0;
    let server = start_with(cfg);
    let p = server.publish_addr();
    for id in ["gone-sse", "gone-raw"] {
        let c = match id {
            "gone-sse" => sse_connect(server.subscriber_addr(), id),
            _ => raw_connect(server.subscriber_addr(), id),
        };
        assert_eq!(stat(p, "connections"), 1);
        drop(c);
        assert_eq!(publish(p, id, b"one"), 1, "no poll saw the hang-up of {id}");
        assert!(publish_until_closed(p, id), "a write closes {id}: {}", stats(p));
    }
}

/// The default: the idle subscriber's poll sees its hang-up and closes it with no write.
fn idle_poll_sees_a_hang_up_without_a_write() {
    let mut cfg = local(1);
    cfg.heartbeat_s = 0;
    let server = start_with(cfg);
    let p = server.publish_addr();
    drop(sse_connect(server.subscriber_addr(), "gone"));
    assert!(wait_until(Duration::from_secs(10), || stat(p, "connections") == 0), "{}", stats(p));
    assert_eq!(publish(p, "gone", b"one"), 0);
}

/// `--no-idle-poll` leaves WebSocket streams their poll: a ping gets its pong, a hang-up
/// closes the stream with no write.
fn no_idle_poll_keeps_websocket_polls() {
    let mut cfg = local(1);
    cfg.idle_poll = false;
    cfg.heartbeat_s = 0;
    let server = start_with(cfg);
    let p = server.publish_addr();
    let mut c = ws_connect(server.subscriber_addr(), "ws");
    c.send(&ws_client_frame(0x89, b"abc", MASK));
    c.expect_bytes(&[0x8a, 0x03, b'a', b'b', b'c'], "pong for 'abc'");
    drop(c);
    assert!(wait_until(Duration::from_secs(10), || stat(p, "connections") == 0), "{}", stats(p));
}
}
