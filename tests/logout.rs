//! Logout on every kind of close: a peer that vanishes without FIN or RST (case B04), an
//! idle stream closed by FIN, RST, half-close or a WebSocket close frame, never left in
//! CLOSE_WAIT (B05), and one close among several connections under an id (B06). Every
//! body runs on io_uring and on epoll.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// B04: a subscriber whose packets are all dropped (iptables DROP on its loopback port, so
/// neither FIN nor RST reaches the server) is closed by heartbeat + TCP_USER_TIMEOUT
/// (20 s) and logged out. Needs root and iptables, and ~25 s: run by hand with
/// `cargo test --release --test logout b04 -- --ignored`.
/// See tests/CASES.md#b04.
fn b04_vanished_peer_logged_out() {
    let ok = Command::new("iptables")
        .args(["-w", "-L", "-n"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "iptables -L failed: needs root and the iptables package"
    );
    let mut cfg = common::server::local(2);
    cfg.heartbeat_s = 1;
    let server = start_with(cfg);
    let (s, p) = (server.subscriber_addr(), server.publish_addr());
    let mut keep = Subscriber::connect(s, "b04");
    let c = Subscriber::connect(s, "b04");
    let cport = c.client.stream.local_addr().unwrap().port().to_string();
    struct Rules(String);
    impl Drop for Rules {
        fn drop(&mut self) {
            for chain in [
                ["-D", "INPUT", "-i", "lo", "-p", "tcp", "--dport"],
                ["-D", "OUTPUT", "-o", "lo", "-p", "tcp", "--sport"],
            ] {
                let _ = Command::new("iptables")
                    .arg("-w")
                    .args(chain)
                    .args([&self.0, "-j", "DROP"])
                    .status();
            }
        }
    }
    let rules = Rules(cport.clone());
    for chain in [
        ["-I", "INPUT", "-i", "lo", "-p", "tcp", "--dport"],
        ["-I", "OUTPUT", "-o", "lo", "-p", "tcp", "--sport"],
    ] {
        let st = Command::new("iptables")
            .arg("-w")
            .args(chain)
            .args([&cport, "-j", "DROP"])
            .status()
            .unwrap();
        assert!(st.success(), "iptables {chain:?}");
    }
    c.client
        .stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    rst_close(c.client.stream); // the RST is dropped too
    assert_eq!(
        publish(p, "b04", b"while vanishing"),
        2,
        "the vanished peer was dropped at once?"
    );
    let t = Instant::now();
    let gone = wait_until(Duration::from_secs(35), || {
        std::thread::sleep(Duration::from_millis(200));
        server_sockets_to(s.port(), cport.parse().unwrap()) == 0
    });
    let took = t.elapsed();
    let delivered = publish(p, "b04", b"after");
    drop(rules);
    eprintln!(
        "b04: server socket gone: {gone} after {took:?}; publish after: delivered {delivered}"
    );
    assert!(
        gone,
        "the server still holds the vanished peer's socket after {took:?}"
    );
    assert!(
        took <= Duration::from_secs(30),
        "took {took:?}: heartbeat 1 s + 20 s user timeout"
    );
    assert_eq!(delivered, 1, "the vanished peer is still logged in");
    for m in [&b"while vanishing"[..], b"after"] {
        skip_beats(&mut keep.client, &chunk(b"\n"));
        keep.expect_msg(m);
    }
}

/// `b04_vanished_peer_logged_out` on io_uring (tests/CASES.md#b04).
#[test]
#[ignore = "needs root and iptables, and ~25 s; run by hand (see loadtest/runs)"]
fn b04_vanished_peer_logged_out_uring() {
    with_backend(
        uring_comet::config::Backend::Uring,
        b04_vanished_peer_logged_out,
    )
}

/// `b04_vanished_peer_logged_out` on epoll (tests/CASES.md#b04).
#[test]
#[ignore = "needs root and iptables, and ~25 s; run by hand (see loadtest/runs)"]
fn b04_vanished_peer_logged_out_epoll() {
    with_backend(
        uring_comet::config::Backend::Epoll,
        b04_vanished_peer_logged_out,
    )
}

/// How a client ends its connection.
#[derive(Clone, Copy, Debug)]
enum Bye {
    /// close(): FIN.
    Fin,
    /// SO_LINGER 0: RST.
    Rst,
    /// shutdown(SHUT_WR) and keep the socket: FIN, still reading.
    HalfClose,
    /// WebSocket close frame, then FIN.
    WsClose,
}

both_backends! {
/// B05 generalised: 96 idle streams of every kind (seed 1.1 and 1.0, SSE, WebSocket, raw,
/// several ids per connection) closed by FIN, RST or half-close (and WebSocket close
/// frames): within 1 s, with no publish, no socket of the server is in CLOSE_WAIT, the
/// server holds no connection and no id, and a publish to any of the ids reaches nobody.
/// See tests/CASES.md#b05.
fn b05_no_close_wait_any_close() {
    let server = start(2);
    let (s, p) = (server.subscriber_addr(), server.publish_addr());
    let mut held: Vec<(Client, Bye)> = Vec::new();
    let closes = [Bye::Fin, Bye::Rst, Bye::HalfClose];
    let mut ids = Vec::new();
    for i in 0..96 {
        let id = format!("b05-{i}");
        let how = closes[i % 3];
        let c = match i % 6 {
            0 => Stream::open(s, Kind::Seed, &id).c,
            1 => Stream::open(s, Kind::Sse, &id).c,
            2 => Stream::open(s, Kind::Raw, &format!("{id},b05-multi-{i}")).c,
            3 => {
                let mut c = Client::connect(s);
                c.send(format!("GET /test/{id} HTTP/1.0\r\n\r\n").as_bytes());
                c.read_head().expect_200();
                c
            }
            _ => Stream::open(s, Kind::Ws, &id).c,
        };
        let how = if i % 6 == 5 { Bye::WsClose } else { how };
        ids.push(id);
        held.push((c, how));
    }
    assert_eq!(stat(p, "connections"), 96);
    let mut half = Vec::new();
    for (mut c, how) in held {
        match how {
            Bye::Fin => c.close(),
            Bye::Rst => rst_close(c.stream),
            Bye::HalfClose => {
                c.stream.shutdown(std::net::Shutdown::Write).unwrap();
                half.push(c);
            }
            Bye::WsClose => {
                c.send(&ws_client_frame(0x88, &1000u16.to_be_bytes(), MASK));
                c.close();
            }
        }
    }
    let t = Instant::now();
    let clean = wait_until(Duration::from_secs(1), || sockets_in_state(s.port(), CLOSE_WAIT) == 0);
    assert!(clean, "{} server sockets in CLOSE_WAIT 1 s after the clients closed", sockets_in_state(s.port(), CLOSE_WAIT));
    assert!(
        wait_until(Duration::from_secs(1).saturating_sub(t.elapsed()), || stat(p, "connections") == 0),
        "connections still held 1 s after the clients closed: {}",
        stats(p)
    );
    assert_eq!(stat(p, "ids"), 0, "{}", stats(p));
    // The half-closed clients see the server close too.
    for mut c in half {
        let _ = c.read_to_close();
    }
    let mut publ = Publisher::connect(p);
    for id in ids.iter().take(12) {
        assert_eq!(publ.send(id, b"x"), 0, "{id} still logged in");
    }
    assert_eq!(publ.send("b05-multi-2", b"x"), 0);
}
}

both_backends! {
/// B06 generalised: connections of every kind and on several shards under one id; closing
/// some (each kind of close) leaves the others logged in and receiving; a connection under
/// ids A and B leaves both and nothing else; 1000 connections on one id all get each
/// message.
/// See tests/CASES.md#b06.
fn b06_one_close_never_logs_out_others() {
    let server = start(2);
    let (s, p) = (server.subscriber_addr(), server.publish_addr());
    let mut a: Vec<Stream> = KINDS.iter().map(|&k| Stream::open(s, k, "b06")).collect();
    let mut b: Vec<Stream> = KINDS.iter().map(|&k| Stream::open(s, k, "b06")).collect();
    let mut multi = Stream::open(s, Kind::Seed, "b06,b06-x,b06-y");
    let mut x_only = Stream::open(s, Kind::Raw, "b06-x");
    // Close the first set, one kind of close each.
    for (i, st) in a.drain(..).enumerate() {
        match i % 3 {
            0 => st.c.close(),
            1 => rst_close(st.c.stream),
            _ => {
                let mut c = st.c;
                if st.kind == Kind::Ws {
                    c.send(&ws_client_frame(0x88, &[], MASK));
                }
                c.stream.shutdown(std::net::Shutdown::Write).unwrap();
                let _ = c.read_to_close();
            }
        }
    }
    assert!(wait_until(Duration::from_secs(2), || stat(p, "connections") == 6), "{}", stats(p));
    assert_eq!(publish(p, "b06", b"hello"), 5);
    for st in &mut b {
        st.expect(b"hello");
    }
    multi.expect(b"hello");
    multi.c.close();
    assert!(wait_until(Duration::from_secs(2), || stat(p, "connections") == 5));
    assert_eq!(publish(p, "b06-y", b"y"), 0, "closed multi-id connection still under b06-y");
    assert_eq!(publish(p, "b06-x", b"x"), 1, "x_only lost its id with the other connection");
    x_only.expect(b"x");
    assert_eq!(publish(p, "b06", b"again"), 4);
    for st in b.drain(..) {
        rst_close(st.c.stream);
    }
    assert!(wait_until(Duration::from_secs(2), || stat(p, "connections") == 1));
    assert_eq!(publish(p, "b06", b"gone"), 0);
    drop(x_only);
    // 1000 on one id.
    ensure_fd_limit(4096);
    let mut many: Vec<Subscriber> = (0..1000).map(|_| Subscriber::connect(s, "b06-many")).collect();
    for m in [&b"one"[..], b"two"] {
        assert_eq!(publish(p, "b06-many", m), 1000);
        for sub in &mut many {
            sub.expect_msg(m);
        }
    }
    for (i, sub) in many.into_iter().enumerate() {
        if i % 2 == 0 { sub.close() } else { rst_close(sub.client.stream) }
    }
    assert!(wait_until(Duration::from_secs(3), || stat(p, "connections") == 0));
    assert_eq!(stat(p, "ids"), 0);
}
}
