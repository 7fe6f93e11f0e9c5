//! The ends of a publisher's connection: a client that half-closes after its requests
//! (case B38) gets every reply, then EOF; a client refused while it is still sending its
//! body (case B39) reads its error reply and an orderly EOF, never a reset, because the
//! server lingers, reading and discarding, after the reply; and that linger is bounded in
//! bytes and time. Each case is looped 200 times; every body runs on io_uring and on epoll.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// Sends `data`, half-closes (`shutdown(SHUT_WR)`), reads to the end: the bytes and how
/// the connection ended.
fn half_close(addr: SocketAddr, data: &[u8]) -> (Vec<u8>, Closed) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.write_all(data).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let (mut out, mut buf) = (Vec::new(), [0u8; 16384]);
    loop {
        match read_retrying(&mut s, &mut buf) {
            Ok(0) => return (out, Closed::Eof),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (out, Closed::Reset),
            Err(e) => panic!("half-closed publisher: {e} after {}", truncate(&out)),
        }
    }
}

/// The exact bytes of the reply to a `/send/<id>` that reached one subscriber.
fn one_delivered_reply(p: SocketAddr, id: &str, sub: &mut Subscriber) -> Vec<u8> {
    let mut c = Client::connect(p);
    c.send(&send_request(id, b"probe"));
    let head = c.read_head();
    let body = c.read_body(&head);
    assert_eq!(body, b"{\"delivered\":1}");
    sub.expect_msg(b"probe");
    let mut reply = head.raw.clone();
    reply.extend_from_slice(&body);
    reply
}

both_backends! {
/// B38, 200 times each: one `/send` then SHUT_WR gets exactly its reply then EOF; three
/// pipelined sends get three replies, in order; `GET /stats` its 200; a body cut short by
/// the FIN gets nothing, is never delivered, and the connection ends with EOF. The
/// subscriber (on another shard half the time) gets every delivered message, once. See
/// tests/CASES.md#b38.
fn b38_half_closed_publisher_gets_its_replies() {
    let server = start(4);
    let p = server.publish_addr();
    let mut sub = Subscriber::connect(server.subscriber_addr(), "38");
    let reply = one_delivered_reply(p, "38", &mut sub);
    let mut three = send_request("38", b"hc2");
    three.extend(send_request("38", b"hc3"));
    three.extend(send_request("38", b"hc4"));
    for round in 0..200 {
        let (out, how) = half_close(p, &send_request("38", b"hc1"));
        assert_eq!((truncate(&out), how), (truncate(&reply), Closed::Eof), "one send, round {round}");
        let (out, how) = half_close(p, &three);
        assert_eq!((truncate(&out), how), (truncate(&reply.repeat(3)), Closed::Eof), "three, round {round}");
        let (out, how) = half_close(p, b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(out.starts_with(b"HTTP/1.1 200 OK\r\n") && how == Closed::Eof, "stats, round {round}: {}", truncate(&out));
        assert_eq!(out.windows(9).filter(|w| w == b"HTTP/1.1 ").count(), 1, "stats, round {round}");
        let truncated = b"POST /send/38 HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\ntrunc";
        let (out, how) = half_close(p, truncated);
        assert_eq!((truncate(&out), how), (String::new(), Closed::Eof), "truncated body, round {round}");
        for m in [&b"hc1"[..], b"hc2", b"hc3", b"hc4"] {
            sub.expect_msg(m);
        }
    }
    sub.client.expect_silence(Duration::from_millis(100), "the truncated body was delivered");
}
}

/// How an upload refused early ended, as a browser-like client sees it.
#[derive(Debug, PartialEq, Eq)]
enum Upload {
    /// Read the reply's status line, then EOF.
    Eof(String),
    /// Read the status line (if any), then a reset.
    Reset(String),
    /// A send failed (EPIPE or ECONNRESET) after this status line.
    ResetOnSend(String),
}

/// Sends `head` and then a body of `total` bytes while reading, as a browser does; once the
/// reply head has arrived, sends `after` more bytes (data already in flight, also after the
/// server's FIN), then stops sending and reads to the end.
fn upload(addr: SocketAddr, head: &[u8], total: usize, after: usize) -> Upload {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(head).unwrap();
    s.set_nonblocking(true).unwrap();
    let piece = vec![b'a'; 65536];
    let (mut sent, mut out, mut limit, mut eof) = (0, Vec::new(), total, false);
    let mut buf = [0u8; 16384];
    let deadline = Instant::now() + TIMEOUT;
    let status = |out: &[u8]| {
        String::from_utf8_lossy(out.split(|&b| b == b'\r').next().unwrap_or(b"")).into_owned()
    };
    loop {
        assert!(
            Instant::now() < deadline,
            "upload stuck: sent {sent}, read {}",
            truncate(&out)
        );
        let mut progress = false;
        if eof && sent >= limit {
            return Upload::Eof(status(&out));
        }
        match if eof { Ok(0) } else { s.read(&mut buf) } {
            Ok(0) => eof = true,
            Ok(n) => {
                progress = true;
                out.extend_from_slice(&buf[..n]);
                if limit == total && out.windows(4).any(|w| w == b"\r\n\r\n") {
                    limit = total.min(sent + after);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Upload::Reset(status(&out)),
            Err(e) => panic!("read: {e}"),
        }
        if sent < limit {
            match s.write(&piece[..piece.len().min(limit - sent)]) {
                Ok(n) => {
                    sent += n;
                    progress = true;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(_) => return Upload::ResetOnSend(status(&out)),
            }
        }
        if !progress {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

both_backends! {
/// B39, 200 times: a 1 MiB upload refused before its body (413 over 64 KiB, 400 for a bad
/// id, 404 for an unknown path, 501 for a POST on the subscriber port), the client sending
/// on for 256 KiB after the reply head: the client reads the status line and then EOF; no
/// reset, no failed send. See tests/CASES.md#b39.
fn b39_error_reply_survives_the_upload() {
    let server = start(2);
    let (s, p) = (server.subscriber_addr(), server.publish_addr());
    let total = 1 << 20;
    let head = |path: &str| format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\n\r\n").into_bytes();
    let cases = [
        (p, head("/send/39"), "HTTP/1.1 413 Content Too Large"),
        (p, head("/send/a%2Fb"), "HTTP/1.1 400 Bad Request"),
        (p, head("/nope"), "HTTP/1.1 404 Not Found"),
        (s, head("/sub/39"), "HTTP/1.1 501 Not Implemented"),
    ];
    for round in 0..200 {
        let (addr, head, want) = &cases[round % cases.len()];
        let got = upload(*addr, head, total, 256 << 10);
        assert_eq!(got, Upload::Eof(want.to_string()), "round {round}");
    }
    assert!(wait_until(Duration::from_secs(5), || stat(p, "connections") == 0), "{}", stats(p));
}
}

both_backends! {
/// The linger after an error reply is bounded: a client that keeps sending after its 413
/// is cut once 16 MiB are discarded (a reset is then expected), and one that sends nothing
/// more and never closes is closed by the second head-timeout sweep; neither holds its
/// slot afterwards (`connections` back to 0).
fn error_linger_is_bounded() {
    let mut cfg = local(2);
    cfg.head_timeout_s = 1;
    let server = start_with(cfg);
    let p = server.publish_addr();
    let head = b"POST /send/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n";
    let got = upload(p, head, 100_000_000, 64 << 20);
    assert!(matches!(&got, Upload::Reset(s) | Upload::ResetOnSend(s) if s.starts_with("HTTP/1.1 413")), "{got:?}");
    let mut quiet = Client::connect(p);
    quiet.send(head);
    quiet.read_head().expect_status(413);
    assert_eq!(quiet.read_to_close().1, Closed::Eof, "the reply ends with our FIN");
    assert!(wait_until(Duration::from_secs(4), || stat(p, "connections") == 0), "{}", stats(p));
    drop(quiet);
}
}

both_backends! {
/// With `--friends`, an edit followed by SHUT_WR gets its `200 {"changed":true}` (the
/// reply waits for the journal and the graph's shards), and a publish pipelined after it
/// sees the edit, then EOF.
fn half_closed_friends_edit_gets_its_reply() {
    let dir = temp_dir("half-close-edit");
    let server = start_with(friends_config(&dir, 2, "1\t2\n"));
    let p = server.publish_addr();
    for b in 3..23 {
        let mut req = raw_request("PUT", &format!("/friends/1/{b}"), b"");
        req.extend(raw_request("POST", "/publish/1", b"e"));
        let (out, how) = half_close(p, &req);
        let text = String::from_utf8_lossy(&out);
        assert_eq!(how, Closed::Eof, "{text}");
        assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
        assert!(text.contains("{\"changed\":true}"), "{text}");
        assert!(text.contains(&format!("{{\"friends\":{},\"delivered\":0}}", b - 1)), "{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
}
