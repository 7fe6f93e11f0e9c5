//! Cluster control (issue 15, admin and presence in cluster mode): two in-process nodes on
//! one real redis-server. A kick from one node ends the connections under the id on both
//! nodes and answers the exact total with `"nodes":2`; `GET /presence/<id>` and
//! `POST /presence` from either node count both nodes' connections exactly; with the other
//! node stopped, and with Redis down, the answers say `"nodes":1`. Every body runs on both
//! backends.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use uring_comet::cluster::ClusterConfig;
use uring_comet::server::ServerHandle;

/// A node of the test's backend, 2 shards, in cluster mode on `redis`, connected.
fn node(redis: &Redis) -> ServerHandle {
    let mut cfg = common::server::local(2);
    cfg.cluster = Some(ClusterConfig::new(&redis.url(), 64).unwrap());
    let server = start_with(cfg);
    let up = wait_until(Duration::from_secs(5), || {
        json_number(&stats(server.publish_addr()), "cluster_up") == 1.0
    });
    assert!(up, "node not connected to Redis");
    server
}

/// `method path` with `body` on a fresh publish connection: asserts a 200 JSON reply and
/// returns its body.
fn ask(p: SocketAddr, method: &str, path: &str, body: &str) -> String {
    let mut c = Client::connect(p);
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    c.send(req.as_bytes());
    let head = c.read_head();
    head.expect_200();
    head.expect_header_exact("content-type", "application/json");
    String::from_utf8(c.read_body(&head)).unwrap()
}

fn presence(p: SocketAddr, id: &str) -> String {
    ask(p, "GET", &format!("/presence/{id}"), "")
}

fn kick(p: SocketAddr, id: &str) -> String {
    ask(p, "DELETE", &format!("/subscribers/{id}"), "")
}

/// The exact bytes a kicked raw stream gets before the server closes it: the last chunk.
const RAW_KICKED: &[u8] = b"0\r\n\r\n";

/// The exact bytes a kicked SSE stream under `id` gets before the server closes it.
fn sse_kicked(id: &str) -> Vec<u8> {
    let mut w = chunk(format!("event: kicked\ndata: {id}\n\n").as_bytes());
    w.extend_from_slice(b"0\r\n\r\n");
    w
}

both_backends! {
/// Subscribers under one id on both nodes (two on A, one on B, another id beside them):
/// presence from either node counts all three; `POST /presence` too; a kick from A ends all
/// three with their transport's end and answers `{"closed":3,"nodes":2}`; the other id's
/// stream lives on. With B stopped, A's kick and count answer `"nodes":1` (within the
/// timeout).
fn kick_and_presence_across_two_nodes() {
    let redis = Redis::start();
    let (a, b) = (node(&redis), node(&redis));
    let (pa, pb) = (a.publish_addr(), b.publish_addr());
    let mut a1 = Stream::open(a.subscriber_addr(), Kind::Raw, "ca");
    let mut a2 = Stream::open(a.subscriber_addr(), Kind::Sse, "ca");
    let mut b1 = Stream::open(b.subscriber_addr(), Kind::Raw, "ca");
    let mut other = Stream::open(b.subscriber_addr(), Kind::Raw, "cz");
    let want = r#"{"id":"ca","connections":3,"nodes":2}"#;
    assert_eq!(presence(pa, "ca"), want);
    assert_eq!(presence(pb, "ca"), want);
    assert_eq!(presence(pa, "nobody"), r#"{"id":"nobody","connections":0,"nodes":2}"#);
    assert_eq!(ask(pb, "POST", "/presence", "ca\ncz\nnobody\n"), r#"{"ca":3,"cz":1,"nobody":0}"#);

    assert_eq!(kick(pa, "ca"), r#"{"closed":3,"nodes":2}"#);
    assert_eq!(a1.c.read_to_close().0, RAW_KICKED);
    assert_eq!(a2.c.read_to_close().0, sse_kicked("ca"));
    assert_eq!(b1.c.read_to_close().0, RAW_KICKED);
    assert_eq!(presence(pb, "ca"), r#"{"id":"ca","connections":0,"nodes":2}"#);
    assert_eq!(kick(pb, "ca"), r#"{"closed":0,"nodes":2}"#);
    let mut pub_a = Publisher::connect(pa);
    pub_a.client.send(&send_request("cz", b"still here"));
    let head = pub_a.client.read_head();
    let _ = pub_a.client.read_body(&head);
    other.expect(b"still here");

    // B stopped: A alone answers, "nodes":1, with A's connections.
    drop(other);
    b.shutdown().unwrap();
    let mut a3 = Stream::open(a.subscriber_addr(), Kind::Raw, "cb");
    assert_eq!(presence(pa, "cb"), r#"{"id":"cb","connections":1,"nodes":1}"#);
    assert_eq!(kick(pa, "cb"), r#"{"closed":1,"nodes":1}"#);
    assert_eq!(a3.c.read_to_close().0, RAW_KICKED);
}

/// Redis down: a kick and a count answer at once with this node's figures and
/// `"nodes":1`; once Redis is back, both nodes answer again.
fn redis_down_answers_this_node_alone() {
    let mut redis = Redis::start();
    let (a, b) = (node(&redis), node(&redis));
    let (pa, pb) = (a.publish_addr(), b.publish_addr());
    let _on_a = Stream::open(a.subscriber_addr(), Kind::Raw, "rd");
    let _on_b = Stream::open(b.subscriber_addr(), Kind::Raw, "rd");
    assert_eq!(presence(pa, "rd"), r#"{"id":"rd","connections":2,"nodes":2}"#);
    redis.kill();
    let down = wait_until(Duration::from_secs(10), || {
        json_number(&stats(pa), "cluster_up") == 0.0
    });
    assert!(down, "node A never noticed Redis down");
    assert_eq!(presence(pa, "rd"), r#"{"id":"rd","connections":1,"nodes":1}"#);
    let mut on_a = Stream::open(a.subscriber_addr(), Kind::Raw, "rd2");
    assert_eq!(kick(pa, "rd2"), r#"{"closed":1,"nodes":1}"#);
    assert_eq!(on_a.c.read_to_close().0, RAW_KICKED);
    redis.restart();
    let up = wait_until(Duration::from_secs(10), || {
        json_number(&stats(pa), "cluster_up") == 1.0 && json_number(&stats(pb), "cluster_up") == 1.0
    });
    assert!(up, "nodes never reconnected");
    assert_eq!(presence(pb, "rd"), r#"{"id":"rd","connections":2,"nodes":2}"#);
}
}
