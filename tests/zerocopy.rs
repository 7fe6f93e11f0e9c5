//! Zero-copy sends of shared frames (issue 18, `--zerocopy-min-bytes`): the kernel reads the
//! one shared buffer until its notification, so the server must hold it until then, not
//! until the send's first completion. A subscriber with a small receive buffer stops reading
//! while four large messages are sent to it one after the other: each is taken whole by its
//! (large) send buffer, so each send completes at once while the kernel still holds its
//! pages, and the next message's buffer (the same size) would reuse a buffer freed early.
//! When it reads at last, every byte must be the messages' own. On the epoll backend the
//! same bytes arrive through ordinary sends (`zerocopy_sends` stays 0).

mod common;

use std::time::Duration;

use common::*;
use uring_comet::http::stream::{self, Proto};

/// Message `k`: 60,000 bytes of one letter per message, so a stale buffer shows.
fn message(k: u8) -> Vec<u8> {
    vec![b'A' + k; 60_000]
}

/// A raw subscriber on `/sub/<id>` whose socket receives into a 16 KiB buffer (set before
/// connect, so its window stays small) and that reads only its head.
fn stalled_raw(addr: std::net::SocketAddr, id: &str) -> Client {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(16384).unwrap();
    s.connect_timeout(&addr.into(), Duration::from_secs(5))
        .unwrap();
    let stream: std::net::TcpStream = s.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut c = Client {
        stream,
        buf: Vec::new(),
    };
    c.send(&sub_get(id, ""));
    c.read_head().expect_200();
    c
}

both_backends! {
/// Four 60,000-byte messages to a subscriber that stops reading: each arrives whole and
/// unchanged once it reads; on io_uring they went zero-copy.
fn zerocopy_buffer_held_until_notification() {
    let mut cfg = local(2);
    cfg.zerocopy_min_bytes = 1024;
    cfg.sndbuf = 1 << 20;
    cfg.max_pending_bytes = 4 << 20;
    let server = start_with(cfg);
    let p = server.publish_addr();
    let mut a = stalled_raw(server.subscriber_addr(), "zc");
    let mut want = Vec::new();
    for k in 0..4 {
        let m = message(k);
        assert_eq!(publish(p, "zc", &m), 1);
        stream::message(&mut want, Proto::Raw, true, 0, &m);
        // Time for the send to complete (it fits the send buffer) before the next buffer
        // is allocated.
        std::thread::sleep(Duration::from_millis(100));
    }
    let zc = json_number(&stats(p), "zerocopy_sends") as u64;
    match backend() {
        uring_comet::config::Backend::Epoll => assert_eq!(zc, 0),
        _ => assert!(zc >= 4, "zerocopy_sends {zc}: the messages did not go zero-copy"),
    }
    let got = a.read_exact_bytes(want.len());
    let first_bad = got.iter().zip(&want).position(|(x, y)| x != y);
    assert!(first_bad.is_none(), "byte {first_bad:?} differs: a buffer was reused before its notification");
    a.expect_nothing_pending("after the four messages");
}
}
