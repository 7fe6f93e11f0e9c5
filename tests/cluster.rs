//! Cluster mode (issue 8): two in-process nodes sharing one id space through a real
//! redis-server, started by each test on a free loopback port and killed by pid (the shared
//! launcher `common::redis`). `.ci/run` installs Debian's `redis-server` when it is missing;
//! without it these tests fail, saying so.

mod common;

use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

use common::*;
use uring_comet::cluster::ClusterConfig;
use uring_comet::server::ServerHandle;

/// A node of the test's backend, 2 shards, in cluster mode on `redis`.
fn node(redis: &Redis) -> ServerHandle {
    node_buckets(redis, 1024)
}

/// [`node`] with `buckets` bucket channels.
fn node_buckets(redis: &Redis, buckets: u32) -> ServerHandle {
    let mut cfg = common::server::local(2);
    cfg.cluster = Some(ClusterConfig::new(&redis.url(), buckets).unwrap());
    let server = start_with(cfg);
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(
        json_number(&p.stats(), "cluster_up"),
        1.0,
        "a node returns from start once connected to Redis"
    );
    server
}

/// `POST /send/<id>` on `p`; returns the exact reply body.
fn send_body(p: &mut Publisher, id: &str, msg: &[u8]) -> String {
    p.client.send(&send_request(id, msg));
    let head = p.client.read_head();
    head.expect_200();
    head.expect_header("content-type", "application/json");
    String::from_utf8(p.client.read_body(&head)).unwrap()
}

const QUEUED_0: &str = r#"{"delivered":0,"scope":"node","cluster":"queued"}"#;
const QUEUED_1: &str = r#"{"delivered":1,"scope":"node","cluster":"queued"}"#;

both_backends! {
/// A subscriber on node A, a send through node B: delivered once, right after the
/// subscriber has its head (no wait for the subscription in the test: the node holds the
/// head until its bucket is subscribed). B's reply counts B's deliveries and says so.
fn send_via_other_node_delivered_once() {
    let redis = Redis::start();
    let (a, b) = (node(&redis), node(&redis));
    let mut pb = Publisher::connect(b.publish_addr());
    let mut pa = Publisher::connect(a.publish_addr());
    for round in 0..20 {
        let id = format!("cl-{round}");
        let mut sub = Subscriber::connect(a.subscriber_addr(), &id);
        assert_eq!(send_body(&mut pb, &id, b"via B"), QUEUED_0);
        sub.expect_msg(b"via B");
        // Sent on A itself: delivered locally, and A drops its own echo from Redis.
        assert_eq!(send_body(&mut pa, &id, b"via A"), QUEUED_1);
        sub.expect_msg(b"via A");
        if round == 0 {
            sub.client.expect_silence(Duration::from_millis(300), "exactly once each");
        }
    }
    // A's own 20 forwards come back from Redis and are dropped (counted once they arrive).
    assert!(
        wait_until(Duration::from_secs(2), || {
            let sa = pa.stats();
            json_number(&sa, "cluster_received") == 20.0
                && json_number(&sa, "cluster_echoes_dropped") == 20.0
        }),
        "{}",
        pa.stats()
    );
    assert_eq!(json_number(&pa.stats(), "cluster_forward_dropped"), 0.0);
    // Every record from Redis counts as inbound; none was for an id A did not hold.
    let sa = pa.stats();
    assert_eq!(json_number(&sa, "cluster_inbound"), 40.0, "{sa}");
    assert_eq!(json_number(&sa, "cluster_unwanted"), 0.0, "{sa}");
}
}

both_backends! {
/// One bucket for every id (broadcast mode's worst case): a node holding a subscriber of
/// one id receives every other id's records too, and counts those it had no use for.
fn unwanted_records_counted() {
    let redis = Redis::start();
    let (a, b) = (node_buckets(&redis, 1), node_buckets(&redis, 1));
    let mut sub = Subscriber::connect(a.subscriber_addr(), "held");
    let mut pb = Publisher::connect(b.publish_addr());
    let mut pa = Publisher::connect(a.publish_addr());
    for n in 0..3 {
        assert_eq!(send_body(&mut pb, &format!("nobody-{n}"), b"x"), QUEUED_0);
    }
    assert_eq!(send_body(&mut pb, "held", b"wanted"), QUEUED_0);
    sub.expect_msg(b"wanted");
    let counted = wait_until(Duration::from_secs(2), || {
        let sa = pa.stats();
        json_number(&sa, "cluster_inbound") == 4.0 && json_number(&sa, "cluster_unwanted") == 3.0
    });
    assert!(counted, "{}", pa.stats());
    assert_eq!(json_number(&pa.stats(), "cluster_received"), 4.0);
    sub.client.expect_silence(Duration::from_millis(200), "only its own id's message");
}
}

both_backends! {
/// The same id subscribed on both nodes (and a second id of one connection on A): each
/// connection gets one copy of each message, whichever node it was sent through.
fn same_id_on_both_nodes_one_copy_each() {
    let redis = Redis::start();
    let (a, b) = (node(&redis), node(&redis));
    let mut on_a = Subscriber::connect(a.subscriber_addr(), "both");
    let mut on_b = Subscriber::connect(b.subscriber_addr(), "both");
    let mut multi = Subscriber::connect(a.subscriber_addr(), "other,both");
    let (mut pa, mut pb) = (Publisher::connect(a.publish_addr()), Publisher::connect(b.publish_addr()));
    assert_eq!(
        send_body(&mut pa, "both", b"one"),
        r#"{"delivered":2,"scope":"node","cluster":"queued"}"#
    );
    assert_eq!(send_body(&mut pb, "both", b"two"), QUEUED_1);
    // Messages sent through different nodes have no order between them: each node delivers
    // its own publish first. One copy of each, in either order.
    for s in [&mut on_a, &mut on_b, &mut multi] {
        let mut got = [s.next_msg(), s.next_msg()];
        got.sort();
        assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
    }
    assert_eq!(send_body(&mut pb, "other", b"three"), QUEUED_0);
    multi.expect_msg(b"three");
    for s in [&mut on_a, &mut on_b, &mut multi] {
        s.client.expect_silence(Duration::from_millis(300), "one copy each");
    }
    // Unknown ids cost nothing but a PUBLISH.
    assert_eq!(send_body(&mut pb, "nobody", b"x"), QUEUED_0);
}
}

both_backends! {
/// The other stream protocols cross nodes alike: an SSE subscriber on A and a raw one on B
/// each get exactly their framing of a message sent through the other node.
fn sse_and_raw_across_nodes() {
    let redis = Redis::start();
    let (a, b) = (node(&redis), node(&redis));
    let mut sse = sse_connect(a.subscriber_addr(), "proto");
    let mut raw = raw_connect(b.subscriber_addr(), "proto");
    let (mut pa, mut pb) = (Publisher::connect(a.publish_addr()), Publisher::connect(b.publish_addr()));
    assert_eq!(send_body(&mut pb, "proto", b"line1\nline2"), QUEUED_1);
    assert_eq!(sse.read_chunk(), b"data: line1\ndata: line2\n\n");
    assert_eq!(raw.read_chunk(), b"line1\nline2");
    assert_eq!(send_body(&mut pa, "proto", b"back"), QUEUED_1);
    assert_eq!(raw.read_chunk(), b"back");
    assert_eq!(sse.read_chunk(), b"data: back\n\n");
    sse.expect_silence(Duration::from_millis(200), "once");
    raw.expect_silence(Duration::from_millis(200), "once");
}
}

/// A node like [`node`], with a friends graph: the edge list `edges` in a directory of its
/// own (each node keeps its own journal beside its copy of the graph).
fn friends_node(redis: &Redis, name: &str, edges: &str) -> ServerHandle {
    let dir = temp_dir(name);
    let file = dir.join("graph.tsv");
    std::fs::write(&file, edges).unwrap();
    let mut cfg = common::server::local(2);
    cfg.cluster = Some(ClusterConfig::new(&redis.url(), 1024).unwrap());
    cfg.friends = Some(file);
    let server = start_with(cfg);
    let mut p = Publisher::connect(server.publish_addr());
    let s = p.stats();
    assert_eq!(json_number(&s, "cluster_up"), 1.0, "{s}");
    server
}

both_backends! {
/// A friends event accepted by one node reaches the friends' connections on every node,
/// once each: one cluster record per event, each node fanning it out from its own copy of
/// the graph. Non-friends get nothing; the reply counts the accepting node's part.
fn friends_event_across_nodes() {
    let redis = Redis::start();
    // Friendships (both ways): 1-2, 1-3, 5-3.
    let edges = "1\t2\n1\t3\n5\t3\n";
    let a = friends_node(&redis, "fa", edges);
    let b = friends_node(&redis, "fb", edges);
    let mut two_on_a = Subscriber::connect(a.subscriber_addr(), "2");
    let mut three_on_b = Subscriber::connect(b.subscriber_addr(), "3");
    let mut three_on_a = Subscriber::connect(a.subscriber_addr(), "3");
    let mut four_on_a = Subscriber::connect(a.subscriber_addr(), "4");
    let (mut pa, mut pb) = (Publisher::connect(a.publish_addr()), Publisher::connect(b.publish_addr()));
    assert_eq!(
        publish_friends(&mut pb, "1", b"hi <all>"),
        r#"{"friends":2,"delivered":1,"scope":"node","cluster":"queued"}"#
    );
    expect_friend(&mut three_on_b, 1, b"hi <all>");
    expect_friend(&mut two_on_a, 1, b"hi <all>");
    expect_friend(&mut three_on_a, 1, b"hi <all>");
    assert_eq!(
        publish_friends(&mut pa, "5", b"from five"),
        r#"{"friends":1,"delivered":1,"scope":"node","cluster":"queued"}"#
    );
    expect_friend(&mut three_on_a, 5, b"from five");
    expect_friend(&mut three_on_b, 5, b"from five");
    for s in [&mut two_on_a, &mut three_on_a, &mut three_on_b, &mut four_on_a] {
        s.client.expect_silence(Duration::from_millis(300), "once each, friends only");
    }
    // A plain send still crosses as before.
    assert_eq!(send_body(&mut pa, "3", b"plain"), QUEUED_1);
    three_on_a.expect_msg(b"plain");
    three_on_b.expect_msg(b"plain");
}
}

/// Reads the next chunk if one arrives within `wait`.
fn try_chunk(sub: &mut Subscriber, wait: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(end) = find(&sub.client.buf, b"\r\n") {
            let size =
                usize::from_str_radix(std::str::from_utf8(&sub.client.buf[..end]).unwrap(), 16)
                    .expect("chunk size");
            if sub.client.buf.len() >= end + 2 + size + 2 {
                sub.received += 1;
                return Some(sub.client.read_chunk());
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        sub.client.stream.set_read_timeout(Some(left)).unwrap();
        let mut tmp = [0u8; 4096];
        let r = sub.client.stream.read(&mut tmp);
        sub.client.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        match r {
            Ok(0) => panic!("subscriber closed by the server"),
            Ok(n) => sub.client.buf.extend_from_slice(&tmp[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => panic!("subscriber read: {e}"),
        }
    }
}

both_backends! {
/// Redis killed mid-test: both nodes keep serving local traffic (the reply says the
/// forward was dropped, /stats counts it); Redis restarted on the same port: delivery
/// across nodes resumes within 2 s, without restarting the nodes, and exactly once.
fn redis_restart_delivery_resumes() {
    let mut redis = Redis::start();
    let (a, b) = (node(&redis), node(&redis));
    let mut sub = Subscriber::connect(a.subscriber_addr(), "rs");
    let (mut pa, mut pb) = (Publisher::connect(a.publish_addr()), Publisher::connect(b.publish_addr()));
    assert_eq!(send_body(&mut pb, "rs", b"before"), QUEUED_0);
    sub.expect_msg(b"before");

    redis.kill();
    assert!(
        wait_until(Duration::from_secs(3), || json_number(&pb.stats(), "cluster_up") == 0.0
            && json_number(&pa.stats(), "cluster_up") == 0.0),
        "nodes notice Redis is gone"
    );
    assert_eq!(
        send_body(&mut pa, "rs", b"local while down"),
        r#"{"delivered":1,"scope":"node","cluster":"dropped"}"#
    );
    sub.expect_msg(b"local while down");
    // A subscriber arriving meanwhile gets its head at once.
    let mut late = Subscriber::connect(a.subscriber_addr(), "rs-late");
    assert_eq!(
        send_body(&mut pb, "rs", b"lost"),
        r#"{"delivered":0,"scope":"node","cluster":"dropped"}"#
    );
    assert!(json_number(&pb.stats(), "cluster_forward_dropped") >= 1.0);
    sub.client.expect_silence(Duration::from_millis(200), "nothing crosses while Redis is down");

    redis.restart();
    let t0 = Instant::now();
    let mut got = None;
    let mut probes = 0;
    while t0.elapsed() < Duration::from_secs(2) {
        probes += 1;
        let _ = send_body(&mut pb, "rs", format!("probe {probes}").as_bytes());
        if let Some(c) = try_chunk(&mut sub, Duration::from_millis(50)) {
            got = Some(c);
            break;
        }
    }
    let resumed = t0.elapsed();
    let chunk = got.unwrap_or_else(|| panic!("no delivery across nodes within 2 s of Redis restarting ({probes} probes)"));
    let text = String::from_utf8(chunk).unwrap();
    assert!(
        text.starts_with("Recvd msg #3: 'probe ") && text.ends_with("'<br/>\n"),
        "{text:?}"
    );
    eprintln!("delivery resumed {resumed:?} after the restart ({probes} probes)");
    // From now on, exactly once, both ways, and for the subscriber that came while down.
    assert!(wait_until(Duration::from_secs(2), || json_number(&pb.stats(), "cluster_up") == 1.0));
    // Drain probes still in flight.
    while try_chunk(&mut sub, Duration::from_millis(200)).is_some() {}
    assert_eq!(send_body(&mut pb, "rs", b"after"), QUEUED_0);
    sub.expect_msg(b"after");
    assert_eq!(send_body(&mut pb, "rs-late", b"late"), QUEUED_0);
    late.expect_msg(b"late");
    sub.client.expect_silence(Duration::from_millis(200), "once");
    let sa = pa.stats();
    assert_eq!(json_number(&sa, "cluster_outages"), 1.0, "{sa}");
}
}

/// A `--cluster` that is not a redis:// URL is refused at start, naming the flag.
#[test]
fn bad_cluster_url_is_refused() {
    let out = Serve::new()
        .env("UC_CLUSTER", "http://127.0.0.1:1")
        .command()
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--cluster must be a redis://"), "{err}");
}

/// A node whose Redis is not there at all still starts (after its bounded wait) and serves
/// local traffic; its forwards are counted as dropped.
#[test]
fn node_without_redis_serves_locally() {
    let port = free_port();
    let mut cfg = common::server::local(2);
    cfg.cluster = Some(ClusterConfig::new(&format!("redis://127.0.0.1:{port}"), 16).unwrap());
    let server = start_with(cfg);
    let mut sub = Subscriber::connect(server.subscriber_addr(), "solo");
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(
        send_body(&mut p, "solo", b"hi"),
        r#"{"delivered":1,"scope":"node","cluster":"dropped"}"#
    );
    sub.expect_msg(b"hi");
    let s = p.stats();
    assert_eq!(json_number(&s, "cluster_up"), 0.0, "{s}");
    assert_eq!(json_number(&s, "cluster_forward_dropped"), 1.0, "{s}");
}
