//! `--max-conns-per-ip` (issue 15, admin): a subscriber connection from an address that
//! already holds N connections, all shards together, gets `429 Too Many Requests` (exact
//! bytes, with `Retry-After`) and is closed; once one of its connections closes the address
//! may connect again; publishers are not counted; the counts go back to zero when every
//! connection has closed (`/stats`, `/metrics`); with the limit off nothing is counted.
//! Loopback clients all come from 127.0.0.1. Every body runs on io_uring and on epoll.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

/// The exact 429 a connection over the limit gets.
const TOO_MANY: &str = "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 10\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 18\r\nConnection: close\r\n\r\nToo Many Requests\n";

/// A subscriber request on a fresh connection that must be refused: asserts the exact
/// 429 bytes and the close.
fn expect_429(s: SocketAddr, what: &str) {
    let (head, rest, _) = request_expect_close(s, b"GET /sub/x9 HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut raw = head.raw.clone();
    raw.extend_from_slice(&rest);
    assert_eq!(String::from_utf8_lossy(&raw), TOO_MANY, "{what}");
}

/// Waits until `/stats` `per_ip_conns` is `n` (a close is counted when the server sees it).
fn wait_counted(p: SocketAddr, n: u64) {
    let ok = wait_until(Duration::from_secs(5), || stat(p, "per_ip_conns") == n);
    assert!(
        ok,
        "per_ip_conns {} after 5 s, want {n}",
        stat(p, "per_ip_conns")
    );
}

/// `uring_comet_per_ip_connections`, all shards.
fn counted_metric(p: SocketAddr) -> f64 {
    let scrape = parse_strict(&metrics_text(p, None));
    sum(&scrape, "uring_comet_per_ip_connections", &[])
}

both_backends! {
/// Limit 3 on two shards (placement `owner`: single-id streams are handed to their ids'
/// owners, the multi-id one stays): three streams of different kinds are accepted, the
/// fourth and fifth get the exact 429 and are closed, a publisher is not counted; after one
/// stream closes a new one is accepted (and the next refused again); once every stream has
/// closed the count is 0 in `/stats` and `/metrics`.
fn limit_refuses_then_recovers() {
    let mut cfg = common::server::local(2);
    cfg.admin.max_conns_per_ip = 3;
    let server = start_with(cfg);
    let (s, p) = (server.subscriber_addr(), server.publish_addr());
    let mut open = vec![
        Stream::open(s, Kind::Sse, "p1"),
        Stream::open(s, Kind::Ws, "p2"),
        Stream::open(s, Kind::Raw, "p3,p4"),
    ];
    wait_counted(p, 3);
    expect_429(s, "the 4th connection");
    expect_429(s, "the 5th connection");
    assert_eq!(stat(p, "per_ip_refused"), 2);
    // Publishers are not counted; the streams under the limit receive.
    assert_eq!(publish(p, "p2", b"hello"), 1);
    open[1].expect(b"hello");
    // One closes: room for one more.
    open.remove(0).c.close();
    wait_counted(p, 2);
    open.push(Stream::open(s, Kind::Seed, "p5"));
    assert_eq!(publish(p, "p5", b"back"), 1);
    open[2].expect(b"back");
    expect_429(s, "at the limit again");
    assert_eq!(stat(p, "per_ip_refused"), 3);
    for st in open {
        st.c.close();
    }
    wait_counted(p, 0);
    assert_eq!(counted_metric(p), 0.0);
    assert_eq!(stat(p, "connections"), 0);
}

/// A stream kicked or ended by the server gives its count back too, and a connection that
/// never sends a request counts while it is open.
fn server_side_closes_give_the_count_back() {
    let mut cfg = common::server::local(2);
    cfg.admin.max_conns_per_ip = 2;
    let server = start_with(cfg);
    let (s, p) = (server.subscriber_addr(), server.publish_addr());
    let mut st = Stream::open(s, Kind::Sse, "q1");
    let idle = Client::connect(s);
    wait_counted(p, 2);
    expect_429(s, "an idle connection counts");
    let mut c = Client::connect(p);
    c.send(b"DELETE /subscribers/q1 HTTP/1.1\r\nHost: x\r\n\r\n");
    let head = c.read_head();
    assert_eq!(c.read_body(&head), b"{\"closed\":1}");
    let _ = st.c.read_to_close();
    wait_counted(p, 1);
    idle.close();
    wait_counted(p, 0);
    let _ok = Stream::open(s, Kind::Raw, "q2");
    let _ok2 = Stream::open(s, Kind::Raw, "q3");
    wait_counted(p, 2);
}

/// With the limit off (the default) nothing is counted and nothing refused.
fn limit_off_counts_nothing() {
    let server = start(2);
    let (s, p) = (server.subscriber_addr(), server.publish_addr());
    let streams: Vec<Stream> = (0..8)
        .map(|j| Stream::open(s, KINDS[j % 4], &format!("z{j}")))
        .collect();
    assert_eq!(stat(p, "connections"), 8);
    assert_eq!(stat(p, "per_ip_conns"), 0);
    assert_eq!(stat(p, "per_ip_refused"), 0);
    drop(streams);
}
}
