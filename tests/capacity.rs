//! Running out of room: `max_conns` answers 503 on every path and recovers once a slot
//! frees, and at RLIMIT_NOFILE the accept loop neither spins nor stops for good (tests/CASES.md
//! B07, B08). Every body runs on io_uring and on epoll.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;

both_backends! {
/// `max_conns` = 4 on one shard: the fifth connection gets a 503 and is closed (counted in
/// `rejected_at_capacity`), the four held streams are untouched, and once one closes a new
/// connection is served.
fn max_conns_rejects_then_recovers() {
    let mut cfg = common::server::local(1);
    cfg.max_conns = 4;
    let server = start_with(cfg);
    let (s, p) = (server.subscriber_addr(), server.publish_addr());
    let mut subs: Vec<Subscriber> = (0..4).map(|_| Subscriber::connect(s, "cap")).collect();
    let text = "the server is at its connection limit (--max-conns) or stopping; retry later\n";
    let want = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    // Before and after its request is in: the 503 whole, then the end of the stream.
    for request_first in [false, true] {
        let mut extra = Client::connect(s);
        if request_first {
            extra.send_lossy(b"GET /test/cap HTTP/1.1\r\nHost: x\r\n\r\n");
        }
        let (got, _) = extra.read_to_close();
        assert_eq!(
            String::from_utf8_lossy(&got),
            want,
            "the connection over max_conns (request sent first: {request_first})"
        );
    }
    subs.pop().unwrap().close();
    // A publisher is a connection too: retry until the freed slot is seen.
    let mut delivered = None;
    assert!(
        wait_until(Duration::from_secs(3), || {
            let Ok(mut c) = TcpStream::connect(p) else { return false };
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            if c.write_all(&send_request("cap", b"after")).is_err() {
                return false;
            }
            let mut cl = Client { stream: c, buf: Vec::new() };
            let mut b = [0u8; 512];
            match read_retrying(&mut cl.stream, &mut b) {
                Ok(n) if n > 0 => {
                    cl.buf.extend_from_slice(&b[..n]);
                    let head = cl.read_head();
                    head.expect_200();
                    delivered = Some(parse_delivered(&cl.read_body(&head)));
                    true
                }
                _ => false,
            }
        }),
        "no publish accepted within 3 s of a slot freeing"
    );
    assert_eq!(delivered, Some(3));
    for sub in &mut subs {
        sub.expect_msg(b"after");
    }
    drop(subs);
    assert!(wait_until(Duration::from_secs(2), || stat(p, "connections") == 0));
    assert!(stat(p, "rejected_at_capacity") >= 1);
}
}

both_backends! {
/// `max_conns` = 4 over 2 shards, subscribers under distinct ids: whether the accepting shard
/// or the id's owner (the hand-off) finds itself full, the connection over the limit gets
/// the same 503, never a bare close.
fn max_conns_503_on_both_paths() {
    let mut cfg = common::server::local(2);
    cfg.max_conns = 4;
    let server = start_with(cfg);
    let s = server.subscriber_addr();
    let (mut held, mut refused) = (Vec::new(), 0);
    for id in 0..40 {
        let mut c = Client::connect(s);
        c.send_lossy(format!("GET /test/u{id} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        let head = c.read_head();
        match head.status {
            200 => held.push(c),
            503 => {
                let (rest, _) = c.read_to_close();
                assert!(rest.ends_with(b"retry later\n"), "id {id}: {:?}", String::from_utf8_lossy(&rest));
                refused += 1;
            }
            other => panic!("id {id}: status {other}"),
        }
    }
    assert!(held.len() <= 4 && held.len() >= 2, "held {}", held.len());
    assert_eq!(refused + held.len(), 40);
}
}

/// Connects `n` clients to `addr` without sending anything (they wait in the server or in
/// its accept queue).
fn idle_clients(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            TcpStream::connect_timeout(&addr, TIMEOUT)
                .unwrap_or_else(|e| panic!("idle client {i} of {n}: {e}"))
        })
        .collect()
}

both_backends! {
/// B07: at RLIMIT_NOFILE 256, 400 clients (300 subscribers, 100 publishers) that send
/// nothing: the server stays up, uses well under a core while accept fails with EMFILE,
/// and within 1 s of the clients closing a fresh subscribe and publish work.
/// See tests/CASES.md#b07.
fn b07_emfile_no_spin_and_recovery() {
    ensure_fd_limit(2048);
    let (mut srv, up) = Serve::new().shards(2).nofile(256).try_spawn();
    assert!(up, "did not start at RLIMIT_NOFILE 256: {}", srv.stderr());
    let (s, p) = (srv.subscriber, srv.publish);
    let mut clients = idle_clients(s, 300);
    clients.extend(idle_clients(p, 100));
    std::thread::sleep(Duration::from_millis(300));
    assert!(srv.fds() >= 240, "not at the fd limit: {} fds", srv.fds());
    let c0 = srv.cpu_s();
    std::thread::sleep(Duration::from_secs(2));
    let cpu = (srv.cpu_s() - c0) / 2.0;
    assert!(srv.child.try_wait().unwrap().is_none(), "server died at EMFILE: {}", srv.stderr());
    assert!(cpu < 0.25, "server used {:.0}% of a core while at EMFILE (spinning)", cpu * 100.0);
    drop(clients);
    let t = Instant::now();
    let mut sub = Subscriber::connect(s, "emfile");
    assert_eq!(publish(p, "emfile", b"back"), 1);
    sub.expect_msg(b"back");
    assert!(t.elapsed() <= Duration::from_secs(1), "recovery took {:?}", t.elapsed());
    eprintln!("b07: CPU at EMFILE {:.1}% of a core; recovery {:?}", cpu * 100.0, t.elapsed());
}
}

/// `n` sequential `GET /test/1`s, each answered with a 200 status line, closed with RST (no
/// TIME_WAIT left on this side, so repeated runs do not exhaust the port range).
fn sequential_subscribes(addr: SocketAddr, n: usize, what: &str) {
    for i in 0..n {
        let mut c = TcpStream::connect_timeout(&addr, TIMEOUT)
            .unwrap_or_else(|e| panic!("{what}: connect {i}: {e}"));
        c.set_read_timeout(Some(TIMEOUT)).unwrap();
        c.write_all(b"GET /test/1 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut got = [0u8; 12];
        let mut have = 0;
        while have < 12 {
            match read_retrying(&mut c, &mut got[have..]) {
                Ok(0) => panic!("{what}: request {i} closed after {have} bytes"),
                Ok(k) => have += k,
                Err(e) => panic!("{what}: request {i} not answered: {e}"),
            }
        }
        assert_eq!(&got, b"HTTP/1.1 200", "{what}: request {i}");
        rst_close(c);
    }
}

both_backends! {
/// B08: 2,500 sequential subscribes, an EMFILE episode (RLIMIT_NOFILE 256, 400 idle
/// clients), 2,500 more: every one answered, and the server's fd count and connection
/// count return to their idle baseline (no accepted socket leaked).
/// See tests/CASES.md#b08.
fn b08_accept_never_stops() {
    ensure_fd_limit(2048);
    let (srv, up) = Serve::new().shards(2).nofile(256).try_spawn();
    assert!(up, "did not start: {}", srv.stderr());
    let (s, p) = (srv.subscriber, srv.publish);
    std::thread::sleep(Duration::from_millis(200));
    let base = srv.fds();
    sequential_subscribes(s, 2500, "before EMFILE");
    let clients = idle_clients(s, 400);
    std::thread::sleep(Duration::from_millis(500));
    assert!(srv.fds() >= 240, "no EMFILE episode: {} fds", srv.fds());
    drop(clients);
    sequential_subscribes(s, 2500, "after EMFILE");
    let settled = wait_until(Duration::from_secs(3), || srv.fds() <= base);
    assert!(settled, "fds: {} at idle before, {} after", base, srv.fds());
    assert!(wait_until(Duration::from_secs(2), || stat(p, "connections") == 0), "{}", stats(p));
    assert!(
        wait_until(Duration::from_secs(2), || srv.fds() <= base),
        "fds: {} at idle before, {} after",
        base,
        srv.fds()
    );
}
}
