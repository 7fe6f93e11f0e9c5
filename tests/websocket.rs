//! WebSocket (RFC 6455) on `GET /sub/<ids>` with `Upgrade: websocket`: the handshake, the
//! exact frames for text, binary and every length encoding, ping/pong, the close handshake,
//! protocol errors (1002) and oversized client frames (1009), bad upgrades (400), and the
//! same session through a real client (`tungstenite`). Heartbeats and empty messages are in
//! tests/cases.rs.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

/// Reads the next frame and asserts it is exactly a close with `code`, then that the server
/// closes the connection with nothing after the frame.
fn expect_close(c: &mut Client, code: u16, what: &str) {
    let (b0, payload) = c.read_ws_frame();
    assert_eq!(
        (b0, payload.as_slice()),
        (0x88, &code.to_be_bytes()[..]),
        "{what}: expected close {code}"
    );
    let (rest, _) = c.read_to_close();
    assert!(
        rest.is_empty(),
        "{what}: bytes after the close frame: {rest:02x?}"
    );
}

/// Publishes until the id reports 0 receivers (the connection was logged out), 2 s at most.
fn expect_logged_out(publish_addr: SocketAddr, id: &str) {
    assert!(
        wait_until(Duration::from_secs(2), || publish(
            publish_addr,
            id,
            b"probe"
        ) == 0),
        "id {id} still has a receiver 2 s after its WebSocket closed"
    );
}

both_backends! {
/// The handshake answer: `101`, Upgrade, Connection, and the accept key of RFC 6455 section
/// 1.3's example (and a second known pair); nothing follows until a message.
fn ws_handshake() {
    let server = start(2);
    let mut c = ws_connect(server.subscriber_addr(), "ws-hs");
    c.expect_silence(Duration::from_millis(200), "WebSocket before any message");
    assert_eq!(publish(server.publish_addr(), "ws-hs", b"hello"), 1);
    c.expect_bytes(&[0x81, 0x05, b'h', b'e', b'l', b'l', b'o'], "text frame");

    // Another key, header names in other cases, extra tokens in Connection/Upgrade.
    let mut c = Client::connect(server.subscriber_addr());
    c.send(b"GET /sub/ws-hs2 HTTP/1.1\r\nHost: 127.0.0.1\r\nupgrade: WebSocket\r\nconnection: keep-alive, Upgrade\r\nsec-websocket-key: x3JJHMbDL1EzLkh9GBhXDw==\r\nsec-websocket-version: 13\r\nOrigin: http://example.com\r\n\r\n");
    let head = c.read_head();
    assert_eq!(head.status_line, "HTTP/1.1 101 Switching Protocols");
    head.expect_header_exact("sec-websocket-accept", "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
    head.expect_header("upgrade", "websocket");
    assert_eq!(publish(server.publish_addr(), "ws-hs2", b"x"), 1);
    c.expect_bytes(&[0x81, 0x01, b'x'], "text frame on the second connection");
}
}

both_backends! {
/// Exact frames: one unmasked FIN frame per message, text when the body is UTF-8 (also empty,
/// also multi-byte), binary when not; the shortest length encoding at 125/126/65535/65536.
fn ws_message_frames() {
    let mut cfg = common::server::local(2);
    cfg.max_pending_bytes = 1 << 20; // room for a 64 KiB message in one queue
    let server = start_with(cfg);
    let mut c = ws_connect(server.subscriber_addr(), "ws-frames");
    let mut p = Publisher::connect(server.publish_addr());
    let cases: Vec<(Vec<u8>, u8)> = vec![
        (b"hello".to_vec(), 0x81),
        (b"".to_vec(), 0x81),
        (b"line1\r\nline2\n\r".to_vec(), 0x81),
        ("caf\u{e9} \u{1f600}".as_bytes().to_vec(), 0x81),
        (vec![0xff, 0xfe, 0x00, 0x01], 0x82),
        (vec![b'a', 0xc3], 0x82), // truncated UTF-8 sequence
        (vec![0xed, 0xa0, 0x80], 0x82), // an encoded surrogate is not UTF-8
        (vec![b'a'; 125], 0x81),
        (vec![b'b'; 126], 0x81),
        (vec![b'c'; 65535], 0x81),
        (vec![b'd'; 65536], 0x81),
        ((0..=255u8).cycle().take(70_000).collect::<Vec<u8>>()[..65536].to_vec(), 0x82),
    ];
    for (msg, b0) in &cases {
        assert_eq!(p.send("ws-frames", msg), 1, "publish of {} bytes", msg.len());
        let expected = ws_server_frame(*b0, msg);
        // Spell out the length encodings once by hand.
        match msg.len() {
            125 => assert_eq!(&expected[..2], &[0x81, 125]),
            126 => assert_eq!(&expected[..4], &[0x81, 126, 0, 126]),
            65535 => assert_eq!(&expected[..4], &[0x81, 126, 0xff, 0xff]),
            65536 => assert_eq!(&expected[1..10], &[127, 0, 0, 0, 0, 0, 1, 0, 0]),
            _ => {}
        }
        c.expect_bytes(&expected, &format!("frame for a {}-byte message, first byte {b0:#x}", msg.len()));
    }
    c.expect_silence(Duration::from_millis(200), "after the last frame");
}
}

both_backends! {
/// Pings are answered with a pong carrying the same payload (empty, short, the 125-byte
/// maximum), also when the ping arrives split over several writes, several per write, or
/// between the fragments of a client message; the stream goes on.
fn ws_ping_pong() {
    let server = start(2);
    let mut c = ws_connect(server.subscriber_addr(), "ws-ping");
    c.send(&ws_client_frame(0x89, b"abc", MASK));
    c.expect_bytes(&[0x8a, 0x03, b'a', b'b', b'c'], "pong for 'abc'");
    c.send(&ws_client_frame(0x89, b"", MASK));
    c.expect_bytes(&[0x8a, 0x00], "pong for an empty ping");
    let long = [b'p'; 125];
    c.send(&ws_client_frame(0x89, &long, MASK));
    c.expect_bytes(&ws_server_frame(0x8a, &long), "pong for a 125-byte ping");

    // Split: one byte per write.
    let f = ws_client_frame(0x89, b"split", MASK);
    for b in &f {
        c.send(&[*b]);
        std::thread::sleep(Duration::from_millis(2));
    }
    c.expect_bytes(&[0x8a, 0x05, b's', b'p', b'l', b'i', b't'], "pong for a ping written byte by byte");

    // Two pings in one write: a pong for each, in order, or one for the most recent only
    // (RFC 6455 section 5.5.3 allows that; it bounds what a ping flood costs); never a pong
    // for the older one last.
    let mut two = ws_client_frame(0x89, b"one", MASK);
    two.extend(ws_client_frame(0x89, b"two", Some([1, 2, 3, 4])));
    c.send(&two);
    let first = c.read_ws_frame();
    if first == (0x8a, b"one".to_vec()) {
        assert_eq!(c.read_ws_frame(), (0x8a, b"two".to_vec()), "second of two pongs");
    } else {
        assert_eq!(first, (0x8a, b"two".to_vec()), "pong for two pings in one write");
    }
    c.expect_silence(Duration::from_millis(100), "after the pongs for two pings");

    // A ping between the fragments of a client text message.
    let mut frag = ws_client_frame(0x01, b"hel", MASK);
    frag.extend(ws_client_frame(0x89, b"mid", MASK));
    frag.extend(ws_client_frame(0x80, b"lo", MASK));
    c.send(&frag);
    c.expect_bytes(&[0x8a, 0x03, b'm', b'i', b'd'], "pong for a ping between fragments");
    c.expect_silence(Duration::from_millis(100), "after the fragmented message");

    assert_eq!(publish(server.publish_addr(), "ws-ping", b"after pings"), 1);
    c.expect_bytes(&ws_server_frame(0x81, b"after pings"), "message after the pings");
}
}

both_backends! {
/// Client data frames (text, binary, continuation, pongs; up to the 4096-byte limit) are
/// ignored: no answer, and the stream keeps delivering.
fn ws_client_data_frames_ignored() {
    let server = start(2);
    let mut c = ws_connect(server.subscriber_addr(), "ws-ignore");
    c.send(&ws_client_frame(0x81, b"publish me?", MASK));
    c.send(&ws_client_frame(0x82, &[0, 1, 2], MASK));
    c.send(&ws_client_frame(0x01, b"frag", MASK));
    c.send(&ws_client_frame(0x80, b"ment", MASK));
    c.send(&ws_client_frame(0x8a, b"unsolicited pong", MASK));
    c.send(&ws_client_frame(0x81, &[b'x'; 4096], MASK));
    c.expect_silence(Duration::from_millis(300), "answer to client data frames");
    assert_eq!(publish(server.publish_addr(), "ws-ignore", b"still here"), 1);
    c.expect_bytes(&ws_server_frame(0x81, b"still here"), "message after client frames");
}
}

both_backends! {
/// Close handshake: the server answers a close with a close echoing the status code
/// (a close without one gets an empty close or 1000), then closes the connection, and the
/// id is logged out.
fn ws_close_handshake() {
    let server = start(2);
    for (n, (payload, code)) in [
        (1000u16.to_be_bytes().to_vec(), 1000u16),
        (1001u16.to_be_bytes().to_vec(), 1001),
        ([&4001u16.to_be_bytes()[..], b"bye"].concat(), 4001),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("ws-close{n}");
        let mut c = ws_connect(server.subscriber_addr(), &id);
        c.send(&ws_client_frame(0x88, &payload, MASK));
        expect_close(&mut c, code, &format!("close {code}"));
        expect_logged_out(server.publish_addr(), &id);
    }
    // No status code: RFC 6455 section 5.5.1 lets the answer carry none or 1000.
    let mut c = ws_connect(server.subscriber_addr(), "ws-close-empty");
    c.send(&ws_client_frame(0x88, b"", MASK));
    let (b0, payload) = c.read_ws_frame();
    assert_eq!(b0, 0x88, "answer to an empty close");
    assert!(payload.is_empty() || payload == 1000u16.to_be_bytes(), "answer to an empty close: {payload:02x?}");
    let (rest, _) = c.read_to_close();
    assert!(rest.is_empty(), "bytes after the close: {rest:02x?}");
    expect_logged_out(server.publish_addr(), "ws-close-empty");
    // A message queued before the close still arrives first.
    let mut c = ws_connect(server.subscriber_addr(), "ws-close-after");
    assert_eq!(publish(server.publish_addr(), "ws-close-after", b"last"), 1);
    c.expect_bytes(&ws_server_frame(0x81, b"last"), "message before the close");
    c.send(&ws_client_frame(0x88, &1000u16.to_be_bytes(), MASK));
    expect_close(&mut c, 1000, "close after a message");
}
}

both_backends! {
/// Frames that break RFC 6455 end the connection with close 1002 (protocol error): unmasked
/// client frames, reserved bits, reserved opcodes, control frames over 125 bytes or
/// fragmented. The id is logged out.
fn ws_protocol_errors_close_1002() {
    let server = start(2);
    let big_ping = [b'p'; 126];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unmasked text", ws_client_frame(0x81, b"hi", None)),
        ("unmasked ping", ws_client_frame(0x89, b"", None)),
        ("unmasked close", ws_client_frame(0x88, &1000u16.to_be_bytes(), None)),
        ("RSV1", ws_client_frame(0xc1, b"hi", MASK)),
        ("RSV2", ws_client_frame(0xa1, b"hi", MASK)),
        ("RSV3", ws_client_frame(0x91, b"hi", MASK)),
        ("opcode 3", ws_client_frame(0x83, b"", MASK)),
        ("opcode 7", ws_client_frame(0x87, b"", MASK)),
        ("opcode 0xB", ws_client_frame(0x8b, b"", MASK)),
        ("opcode 0xF", ws_client_frame(0x8f, b"", MASK)),
        ("ping of 126 bytes", ws_client_frame(0x89, &big_ping, MASK)),
        ("close of 126 bytes", ws_client_frame(0x88, &big_ping, MASK)),
        ("fragmented ping", ws_client_frame(0x09, b"x", MASK)),
    ];
    for (n, (what, frame)) in cases.into_iter().enumerate() {
        let id = format!("ws-err{n}");
        let mut c = ws_connect(server.subscriber_addr(), &id);
        c.send(&frame);
        expect_close(&mut c, 1002, what);
        expect_logged_out(server.publish_addr(), &id);
    }
}
}

both_backends! {
/// A client frame over 4096 bytes of payload gets close 1009 (message too big), decided
/// from the header alone: no need to send (or buffer) the payload.
fn ws_oversized_client_frame_1009() {
    let server = start(2);
    let mut c = ws_connect(server.subscriber_addr(), "ws-big1");
    c.send_lossy(&ws_client_frame(0x81, &[b'y'; 4097], MASK));
    expect_close(&mut c, 1009, "4097-byte text frame");
    expect_logged_out(server.publish_addr(), "ws-big1");

    // Header only, claiming 2^40 bytes.
    let mut c = ws_connect(server.subscriber_addr(), "ws-big2");
    let mut h = vec![0x82, 0x80 | 127];
    h.extend_from_slice(&(1u64 << 40).to_be_bytes());
    h.extend_from_slice(&[1, 2, 3, 4]);
    c.send(&h);
    expect_close(&mut c, 1009, "header claiming 2^40 bytes");
    expect_logged_out(server.publish_addr(), "ws-big2");
}
}

both_backends! {
/// Upgrades that RFC 6455 section 4.2.1 does not allow get 400 and a closed connection: no
/// key, an empty key, a key that is not base64 of 16 bytes, and any upgrade over HTTP/1.0;
/// a version missing or not 13 gets 426 naming version 13 (section 4.2.2; more in
/// tests/ws_handshake.rs).
fn ws_bad_upgrades_400() {
    let server = start(2);
    let key = format!("Sec-WebSocket-Key: {WS_KEY}\r\n");
    let cases = [
        ("no key", "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n".to_string()),
        ("empty key", "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: \r\n".to_string()),
        ("short key", "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n".to_string()),
        ("key of 17 bytes", "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAA=\r\n".to_string()),
        ("no version", format!("Upgrade: websocket\r\nConnection: Upgrade\r\n{key}")),
        ("version 8", format!("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\n{key}")),
        ("version 14", format!("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 14\r\n{key}")),
    ];
    for (what, headers) in &cases {
        let code = if what.starts_with("no version") || what.starts_with("version") { 426 } else { 400 };
        let head = expect_error(server.subscriber_addr(), &sub_get("ws-bad", headers), code, what);
        if code == 426 {
            assert_eq!(head.header("sec-websocket-version"), Some("13"), "{what}");
        }
    }
    let http10 = format!("GET /sub/ws-bad HTTP/1.0\r\nHost: 127.0.0.1\r\n{}\r\n", ws_headers());
    expect_error(server.subscriber_addr(), http10.as_bytes(), 400, "upgrade over HTTP/1.0");
    assert_eq!(publish(server.publish_addr(), "ws-bad", b"x"), 0, "a refused upgrade was logged in");
}
}

/// Connects a `tungstenite` client to `ws://<addr>/sub/<ids>`.
fn tungstenite_connect(addr: SocketAddr, ids: &str) -> tungstenite::WebSocket<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    let (ws, resp) = tungstenite::client(format!("ws://{addr}/sub/{ids}"), stream)
        .unwrap_or_else(|e| panic!("tungstenite handshake failed: {e}"));
    assert_eq!(resp.status(), 101);
    ws
}

fn read_msg(ws: &mut tungstenite::WebSocket<TcpStream>, what: &str) -> Message {
    ws.read()
        .unwrap_or_else(|e| panic!("{what}: tungstenite read failed: {e}"))
}

both_backends! {
/// A real client (`tungstenite`, which checks masking, lengths, UTF-8 of text and the close
/// handshake): text, binary and multi-line messages arrive as sent; its ping gets a pong; its
/// close gets a close with the same code, then the connection ends.
fn ws_real_client_session() {
    let server = start(2);
    let mut ws = tungstenite_connect(server.subscriber_addr(), "wt1,wt2");
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(p.send("wt1", b"hello"), 1);
    assert_eq!(p.send("wt2", b"line1\r\nline2\nline3\r"), 1);
    assert_eq!(p.send("wt1", &[0xff, 0x00, 0x80]), 1);
    assert_eq!(p.send("wt1", b""), 1);
    assert_eq!(read_msg(&mut ws, "#1"), Message::text("hello"));
    assert_eq!(read_msg(&mut ws, "#2"), Message::text("line1\r\nline2\nline3\r"));
    assert_eq!(read_msg(&mut ws, "#3"), Message::binary(vec![0xff, 0x00, 0x80]));
    assert_eq!(read_msg(&mut ws, "#4"), Message::text(""));

    ws.send(Message::Ping(tungstenite::Bytes::from_static(b"are you there")))
        .expect("send ping");
    assert_eq!(
        read_msg(&mut ws, "pong"),
        Message::Pong(tungstenite::Bytes::from_static(b"are you there"))
    );
    ws.send(Message::text("ignored by the server")).expect("send text");
    assert_eq!(p.send("wt2", b"after client text"), 1);
    assert_eq!(read_msg(&mut ws, "#5"), Message::text("after client text"));

    ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "done".into() }))
        .expect("send close");
    match read_msg(&mut ws, "close answer") {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Normal),
        other => panic!("expected a close frame with 1000, got {other:?}"),
    }
    match ws.read() {
        Err(tungstenite::Error::ConnectionClosed) => {}
        other => panic!("expected the connection to end after the close handshake, got {other:?}"),
    }
    expect_logged_out(server.publish_addr(), "wt1");
    expect_logged_out(server.publish_addr(), "wt2");
}
}

both_backends! {
/// The heartbeat as a real client sees it: a ping (empty payload) within 3 s on a quiet
/// stream with a 1 s interval, which the client answers; messages still arrive after it.
fn ws_real_client_heartbeat() {
    let mut cfg = common::server::local(2);
    cfg.heartbeat_s = 1;
    let server = start_with(cfg);
    let mut ws = tungstenite_connect(server.subscriber_addr(), "wt-beat");
    match read_msg(&mut ws, "heartbeat") {
        Message::Ping(p) => assert!(p.is_empty(), "heartbeat ping has a payload: {p:?}"),
        other => panic!("expected a heartbeat ping, got {other:?}"),
    }
    assert_eq!(publish(server.publish_addr(), "wt-beat", b"after beat"), 1);
    assert_eq!(read_msg(&mut ws, "message after the heartbeat"), Message::text("after beat"));
}
}

both_backends! {
/// A close handshake ends only its own connection: 100 times in a row a WebSocket is closed
/// by its client (close answered, connection ended) and a new SSE stream is opened at once;
/// every close must be answered with its close frame, and every new stream must get its
/// message and stay open.
fn ws_close_then_new_stream() {
    let server = start(1);
    for i in 0..100 {
        let mut a = ws_connect(server.subscriber_addr(), "wsc-a");
        a.send(&ws_client_frame(0x88, &1000u16.to_be_bytes(), MASK));
        expect_close(&mut a, 1000, &format!("round {i}: close handshake"));
        let mut b = sse_connect(server.subscriber_addr(), "wsc-b");
        assert_eq!(
            publish(server.publish_addr(), "wsc-b", b"hello"),
            1,
            "round {i}"
        );
        b.expect_bytes(
            &chunk(b"data: hello\n\n"),
            &format!("round {i}: SSE stream opened after a WebSocket close"),
        );
    }
}
}

both_backends! {
/// Close frames a server must not echo (RFC 6455 section 7.4: 1005, 1006 and 1015 are never
/// sent in a close frame; codes under 1000 are not used; a 1-byte payload has no valid code;
/// section 8.1: a reason that is not UTF-8 fails the connection) get close 1002 (1007 for the
/// reason).
fn ws_invalid_close_frames() {
    let server = start(2);
    let cases: [(&str, Vec<u8>, &[u16]); 6] = [
        ("1005 on the wire", 1005u16.to_be_bytes().to_vec(), &[1002]),
        ("1006 on the wire", 1006u16.to_be_bytes().to_vec(), &[1002]),
        ("1015 on the wire", 1015u16.to_be_bytes().to_vec(), &[1002]),
        ("999", 999u16.to_be_bytes().to_vec(), &[1002]),
        ("1-byte payload", vec![0x03], &[1002]),
        (
            "reason not UTF-8",
            [&1000u16.to_be_bytes()[..], &[0xff, 0xfe]].concat(),
            &[1007, 1002],
        ),
    ];
    for (what, payload, codes) in cases {
        let mut c = ws_connect(server.subscriber_addr(), "ws-badclose");
        c.send(&ws_client_frame(0x88, &payload, MASK));
        let (b0, p) = c.read_ws_frame();
        assert_eq!(b0, 0x88, "{what}: no close frame");
        assert!(
            p.len() >= 2 && codes.contains(&u16::from_be_bytes([p[0], p[1]])),
            "{what}: server answered close {p:02x?}, expected one of {codes:?}"
        );
        let _ = c.read_to_close();
    }
}
}
