//! WebSocket as real clients and load generators speak it: the RFC 6455 handshake
//! negotiation of case B35 (token lists, the version refusal with the version we speak, one
//! key, nothing echoed that was not agreed), the early frames of case B36 (frames in the same
//! write as the upgrade head), and the data-frame errors of sections 5.4 and 8.1
//! (a continuation with no message: 1002; text that is not UTF-8, also across fragments:
//! 1007). Every body runs on io_uring and on epoll.

mod common;

use std::time::Duration;

use common::*;

const U: &str = "Upgrade: websocket";
const C: &str = "Connection: Upgrade";
const V: &str = "Sec-WebSocket-Version: 13";

/// `GET /sub/<id>` with `lines` as header lines, plus `tail` bytes in the same write; the
/// client and the response head.
fn upgrade(
    server_addr: std::net::SocketAddr,
    id: &str,
    lines: &[&str],
    tail: &[u8],
) -> (Client, Head) {
    let mut c = Client::connect(server_addr);
    let extra: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
    let mut req = sub_get(id, &extra);
    req.extend_from_slice(tail);
    c.send(&req);
    let head = c.read_head();
    (c, head)
}

/// Reads frames until a close, asserts it is exactly close `code`, then EOF.
fn expect_ws_close(c: &mut Client, code: u16, what: &str) {
    let (b0, payload) = c.read_ws_frame();
    assert_eq!(
        (b0, payload.as_slice()),
        (0x88, &code.to_be_bytes()[..]),
        "{what}"
    );
    let (rest, how) = c.read_to_close();
    assert!(
        rest.is_empty() && how == Closed::Eof,
        "{what}: after the close {rest:02x?} {how:?}"
    );
}

both_backends! {
/// B35: Firefox's `keep-alive, Upgrade`, tokens in any case, offered subprotocols and
/// extensions, and a key with trailing whitespace get 101 with the right accept value and
/// no `Sec-WebSocket-Protocol` or `Sec-WebSocket-Extensions`; version 8 or none gets 426
/// with `Sec-WebSocket-Version: 13`; no `upgrade` token in `Connection`, a short key or two
/// keys get 400; `POST` with an upgrade 501. Every opened stream's first frame is the
/// published text, exactly. See tests/CASES.md#b35.
fn b35_websocket_handshake_negotiation() {
    let server = start(2);
    let s = server.subscriber_addr();
    let key = format!("Sec-WebSocket-Key: {WS_KEY}");
    let key_ows = format!("{key} \t");
    let opened_cases: [(&str, Vec<&str>); 5] = [
        ("firefox Connection list", vec![U, "Connection: keep-alive, Upgrade", V, &key]),
        ("token case", vec!["Upgrade: WebSocket", "Connection: UPGRADE", V, &key]),
        ("subprotocols offered", vec![U, C, V, &key, "Sec-WebSocket-Protocol: chat, superchat"]),
        ("deflate offered", vec![U, C, V, &key, "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"]),
        ("key + trailing OWS", vec![U, C, V, &key_ows]),
    ];
    let mut opened = Vec::new();
    for (what, lines) in &opened_cases {
        let (c, head) = upgrade(s, "35", lines, b"");
        assert_eq!(head.status_line, "HTTP/1.1 101 Switching Protocols", "{what}");
        head.expect_header_exact("sec-websocket-accept", WS_ACCEPT);
        head.expect_no_header("sec-websocket-protocol");
        head.expect_no_header("sec-websocket-extensions");
        opened.push((what, c));
    }
    for (what, lines) in [
        ("version 8", vec![U, C, "Sec-WebSocket-Version: 8", &key]),
        ("no version", vec![U, C, &key]),
    ] {
        let (mut c, head) = upgrade(s, "35", &lines, b"");
        head.expect_status(426);
        assert_eq!(head.header("sec-websocket-version"), Some("13"), "{what}");
        assert_eq!(c.read_to_close().1, Closed::Eof, "{what}");
    }
    let two_keys = [U, C, V, &key, "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA=="];
    for (what, lines) in [
        ("no Connection", &[U, V, &key][..]),
        ("Connection: keep-alive", &[U, "Connection: keep-alive", V, &key]),
        ("short key", &[U, C, V, "Sec-WebSocket-Key: c2hvcnQ="]),
        ("two keys", &two_keys),
    ] {
        let extra: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
        expect_error(s, &sub_get("35", &extra), 400, what);
    }
    let post = format!("POST /sub/35 HTTP/1.1\r\nHost: x\r\n{}\r\n", ws_headers());
    expect_error(s, post.as_bytes(), 501, "POST + upgrade");
    assert_eq!(publish(server.publish_addr(), "35", b"hello"), 5);
    for (what, c) in &mut opened {
        c.expect_bytes(b"\x81\x05hello", what);
    }
}
}

both_backends! {
/// B36: frames written together with the upgrade head start the frame stream: a ping gets
/// its pong right after the 101; of two pings the last is answered; a close gets close 1000
/// and then EOF (no RST); half a ping waits for its other half, then is answered. The
/// streams that stayed open still get messages. With 4 shards and 8 early pings, some
/// streams are accepted on a shard that hands them to the id's owner: the early bytes go
/// with them. See tests/CASES.md#b36.
fn b36_early_frames_after_upgrade_head() {
    let server = start(4);
    let s = server.subscriber_addr();
    let ws = ws_headers();
    let lines: Vec<&str> = ws.lines().collect();
    let mut kept = Vec::new();
    for _ in 0..8 {
        let (mut ping, head) = upgrade(s, "36", &lines, &ws_client_frame(0x89, b"early", MASK));
        assert_eq!(head.status, 101);
        ping.expect_bytes(b"\x8a\x05early", "pong after the head");
        kept.push(ping);
    }

    let mut two = ws_client_frame(0x89, b"p1", MASK);
    two.extend(ws_client_frame(0x89, b"p2", MASK));
    let (mut pings, head) = upgrade(s, "36", &lines, &two);
    assert_eq!(head.status, 101);
    let (b0, mut payload) = pings.read_ws_frame();
    if payload == b"p1" {
        (_, payload) = pings.read_ws_frame(); // the first pong may come too (B31)
    }
    assert_eq!((b0, payload.as_slice()), (0x8a, &b"p2"[..]), "pong for the last ping");

    let close = ws_client_frame(0x88, &1000u16.to_be_bytes(), MASK);
    let (mut closing, head) = upgrade(s, "36", &lines, &close);
    assert_eq!(head.status, 101);
    expect_ws_close(&mut closing, 1000, "early close");

    let split = ws_client_frame(0x89, b"split", MASK);
    let (mut half, head) = upgrade(s, "36", &lines, &split[..4]);
    assert_eq!(head.status, 101);
    half.expect_silence(Duration::from_millis(150), "half a ping");
    half.send(&split[4..]);
    half.expect_bytes(b"\x8a\x05split", "pong once the ping is whole");

    kept.extend([pings, half]);
    assert_eq!(publish(server.publish_addr(), "36", b"later"), 10);
    for c in &mut kept {
        c.expect_bytes(b"\x81\x05later", "message after early frames");
    }
}
}

both_backends! {
/// Sections 5.4 and 8.1: a continuation with no message started closes with 1002; a text
/// frame that is not UTF-8 with 1007, also when the bad byte is in a later fragment; a
/// code point split across fragments, each in its own write, is fine (the stream stays open
/// and keeps answering), and so is a binary message that is not UTF-8.
fn ws_data_frame_errors() {
    let server = start(2);
    let s = server.subscriber_addr();
    let mut c = ws_connect(s, "wsf");
    c.send(&ws_client_frame(0x80, b"tail", MASK));
    expect_ws_close(&mut c, 1002, "continuation with no message");

    let mut c = ws_connect(s, "wsf");
    c.send(&ws_client_frame(0x81, &[b'a', 0xff], MASK));
    expect_ws_close(&mut c, 1007, "text not UTF-8");

    let mut c = ws_connect(s, "wsf");
    c.send(&ws_client_frame(0x01, &[0xe2, 0x82], MASK));
    c.send(&ws_client_frame(0x80, b"A", MASK));
    expect_ws_close(&mut c, 1007, "bad byte in the last fragment");

    let mut c = ws_connect(s, "wsf");
    c.send(&ws_client_frame(0x01, &[b'x', 0xe2], MASK));
    c.expect_silence(Duration::from_millis(100), "first fragment");
    c.send(&ws_client_frame(0x00, &[0x82], MASK));
    c.expect_silence(Duration::from_millis(100), "middle fragment");
    c.send(&ws_client_frame(0x80, &[0xac, b'!'], MASK));
    c.send(&ws_client_frame(0x82, &[0xff, 0xfe], MASK));
    c.send(&ws_client_frame(0x89, b"ok?", MASK));
    c.expect_bytes(b"\x8a\x03ok?", "still open after a split code point");
    assert_eq!(publish(server.publish_addr(), "wsf", b"x"), 1);
    c.expect_bytes(b"\x81\x01x", "message");
}
}
