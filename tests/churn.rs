//! Churn (issue 6): subscribers that come and go, closing every way a client can (FIN, RST,
//! mid-head), leave the server at its baseline once they are gone: open connections and ids
//! in `/stats`, io_uring direct-descriptor slots (`direct_slots_in_use`), the process's fd
//! count, and no server socket left in CLOSE_WAIT. Those that stay get every message sent
//! meanwhile. The server runs as a child process so its fds and sockets can be counted.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use uring_comet::config::Backend;

/// A number of `/stats`, read over `watcher`, one keep-alive publish connection held for
/// the whole test (a connection per reading would leave fds closing behind each one).
fn stat(watcher: &mut Publisher, key: &str) -> u64 {
    json_number(&watcher.stats(), key) as u64
}

/// The server's counts once every client is gone, polled until they settle (at most 5 s).
/// `base_fds` was read with `watcher` already connected, so the fd counts compare exactly.
fn settled(pid: u32, s: SocketAddr, watcher: &mut Publisher, base_fds: usize) -> String {
    let mut last = String::new();
    let ok = wait_until(Duration::from_secs(5), || {
        let (conns, ids, slots) = (
            stat(watcher, "connections"),
            stat(watcher, "ids"),
            stat(watcher, "direct_slots_in_use"),
        );
        let fds = fd_count(pid);
        let close_wait = sockets_in_state(s.port(), CLOSE_WAIT);
        let established = sockets_in_state(s.port(), ESTABLISHED);
        last = format!(
            "connections={conns} ids={ids} slots={slots} fds={fds} (baseline {base_fds}) \
             subscriber sockets CLOSE_WAIT={close_wait} ESTABLISHED={established}"
        );
        conns == 0
            && ids == 0
            && slots == 0
            && fds <= base_fds
            && close_wait == 0
            && established == 0
    });
    assert!(ok, "not back to baseline within 5 s: {last}");
    last
}

both_backends! {
/// Three rounds of 60 subscribers on 2 shards: each round a third leave with FIN, a third
/// with RST, and the rest stay; 20 half-sent heads are abandoned each round; new subscribers
/// join. Everyone connected gets the message sent to its id; at the end everything is back
/// to baseline, and while they were connected the io_uring backend held exactly one
/// direct-descriptor slot per subscriber and no fd (the epoll backend: one fd each).
fn churn_returns_to_baseline() {
    ensure_fd_limit(1_000);
    let server = ChildServer::spawn(2);
    let pid = server.child.id();
    let (s, p) = (server.subscriber, server.publish);
    let mut watcher = Publisher::connect(p);
    assert!(wait_until(Duration::from_secs(5), || stat(&mut watcher, "connections") == 0));
    // Every shard is up and only the watcher is connected: the fds to come back to (read
    // 100 ms apart until two readings agree, in case the server is still opening some).
    let mut base_fds = fd_count(pid);
    assert!(wait_until(Duration::from_secs(3), || {
        std::thread::sleep(Duration::from_millis(100));
        let now = fd_count(pid);
        std::mem::replace(&mut base_fds, now) == now
    }));
    let mut staying: Vec<(String, Subscriber)> = Vec::new();
    let mut n = 0u32;
    for round in 0..3 {
        let mut joined: Vec<(String, Subscriber)> = (0..60)
            .map(|_| {
                n += 1;
                let id = format!("churn{n}");
                let sub = Subscriber::connect(s, &id);
                (id, sub)
            })
            .collect();
        let half_heads: Vec<Client> = (0..20)
            .map(|_| {
                let mut c = Client::connect(s);
                c.send(b"GET /test/half HTTP/1.1\r\nHo");
                c
            })
            .collect();
        // `connections` counts every accepted subscriber-listener connection, heads included.
        let open = (staying.len() + joined.len()) as u64;
        let mut seen = 0;
        assert!(
            wait_until(Duration::from_secs(5), || {
                seen = stat(&mut watcher, "connections");
                seen == open + 20
            }),
            "round {round}: connections={seen}, want {}",
            open + 20
        );
        match backend() {
            Backend::Uring => {
                // Streams hold slots; publishers (the /stats reader) and heads still being
                // read hold plain fds until they are installed.
                assert_eq!(stat(&mut watcher, "direct_slots_in_use"), open, "round {round}");
            }
            Backend::Epoll => {
                assert_eq!(stat(&mut watcher, "direct_slots_in_use"), 0);
                assert!(fd_count(pid) >= base_fds + open as usize, "round {round}");
            }
            Backend::Auto => unreachable!(),
        }
        for (id, sub) in staying.iter_mut().chain(joined.iter_mut()) {
            let msg = format!("round {round} to {id}");
            assert_eq!(publish(p, id, msg.as_bytes()), 1, "{id}");
            sub.expect_msg(msg.as_bytes());
        }
        // A third leave with FIN, a third with RST; the rest stay for the next round.
        for (k, (_, sub)) in joined.drain(..40).enumerate() {
            if k % 2 == 0 {
                sub.close();
            } else {
                rst_close(sub.client.stream);
            }
        }
        drop(half_heads);
        staying.extend(joined);
    }
    for (k, (_, sub)) in staying.into_iter().enumerate() {
        if k % 2 == 0 {
            sub.close();
        } else {
            rst_close(sub.client.stream);
        }
    }
    let line = settled(pid, s, &mut watcher, base_fds);
    eprintln!("after churn: {line}");
}
}
