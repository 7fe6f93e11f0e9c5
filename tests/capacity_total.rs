//! `--max-conns` counts the connections of every shard together (issue 16: the 503s of a
//! `--takeover` server during a drain's reconnect storm). A shard may hold more than an
//! equal share: with `--placement owner` a stream lives on its id's owner, so the ids
//! decide how the streams split, and a connection still sending its head counts on the
//! shard that accepted it until it is handed to the owner. Every body runs on io_uring and
//! on epoll.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use uring_comet::id::Id;

/// The 503 a connection over `--max-conns` gets, byte for byte.
fn unavailable() -> String {
    let text = "the server is at its connection limit (--max-conns) or stopping; retry later\n";
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )
}

/// The first `n` ids `cap0`, `cap1`, ... that shard `shard` of `shards` owns.
fn owned_by(shard: usize, shards: usize, n: usize) -> Vec<String> {
    (0..)
        .map(|k| format!("cap{k}"))
        .filter(|s| Id::parse(s.as_bytes()).unwrap().owner(shards) == shard)
        .take(n)
        .collect()
}

/// `GET /test/<id>` on a fresh connection; its status, and the whole answer for a 503.
fn subscribe(addr: SocketAddr, id: &str) -> (Client, u16) {
    let mut c = Client::connect(addr);
    c.send_lossy(format!("GET /test/{id} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    let head = c.read_head();
    (c, head.status)
}

both_backends! {
/// `max_conns` = 4 over 2 shards, four subscribers whose ids shard 0 owns: all four are
/// served (before: shard 0's equal share, 2, answered the third a 503 while the process
/// held 2 of its 4), the fifth connection gets the 503 whole and is closed, and once a
/// subscriber leaves, a publisher (a connection too) is served and reaches the others.
fn max_conns_counts_every_shard_together() {
    let mut cfg = common::server::local(2);
    cfg.max_conns = 4;
    let server = start_with(cfg);
    let (s, p) = (server.subscriber_addr(), server.publish_addr());
    let ids = owned_by(0, 2, 5);
    let mut held = Vec::new();
    for (k, id) in ids[..4].iter().enumerate() {
        let (c, status) = subscribe(s, id);
        assert_eq!(status, 200, "subscriber {k} of 4 on shard 0's id {id} (--max-conns 4, 2 shards)");
        held.push(c);
    }
    let mut over = Client::connect(s);
    over.send_lossy(format!("GET /test/{} HTTP/1.1\r\nHost: x\r\n\r\n", ids[4]).as_bytes());
    let (got, _) = over.read_to_close();
    assert_eq!(String::from_utf8_lossy(&got), unavailable(), "the fifth connection");
    held.pop().unwrap().close();
    let mut delivered = None;
    let served = wait_until(Duration::from_secs(3), || {
        delivered = try_publish(p, &ids[0], b"room");
        delivered.is_some()
    });
    assert!(served, "no publish served within 3 s of a subscriber leaving");
    assert_eq!(delivered, Some(1));
    held[0].expect_bytes(&msg_chunk(1, b"room"), "the message on shard 0's stream");
    drop(held);
    // The closes are asynchronous: until they land the server is still at its limit and
    // answers the /stats connection itself 503, which is not yet an answer.
    assert!(wait_until(Duration::from_secs(3), || try_stat(p, "connections") == Some(0)));
    assert!(stat(p, "rejected_at_capacity") >= 1);
}
}

/// One number of `GET /stats` on a fresh connection, or `None` if the server answered 503
/// (still at its limit).
fn try_stat(p: SocketAddr, key: &str) -> Option<u64> {
    let mut c = Client::connect(p);
    c.send_lossy(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n");
    let head = c.read_head();
    if head.status == 503 {
        return None;
    }
    head.expect_200();
    let body = String::from_utf8(c.read_body(&head)).unwrap();
    Some(json_number(&body, key) as u64)
}

/// `POST /send/<id>` on a fresh connection: `{"delivered":N}`'s N, or `None` if the
/// server answered 503 (still at its limit).
fn try_publish(p: SocketAddr, id: &str, msg: &[u8]) -> Option<u64> {
    let mut c = Client::connect(p);
    c.send_lossy(&send_request(id, msg));
    let head = c.read_head();
    if head.status == 503 {
        return None;
    }
    head.expect_200();
    Some(parse_delivered(&c.read_body(&head)))
}
