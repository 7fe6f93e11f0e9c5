//! Id-affine cluster mode (issue 19, `--cluster-mode affine`): two in-process nodes on one
//! real redis-server (the shared launcher `common::redis`), each owning the buckets the jump
//! hash gives it. A subscriber of the other node's id gets a 307 to it, before anything is
//! subscribed; a send through either node reaches the owner's subscriber once; a node never
//! subscribes a bucket it does not own (checked on redis-server itself, `PUBSUB CHANNELS`).

mod common;

use std::time::Duration;

use common::*;
use uring_comet::cluster::affine::Affine;
use uring_comet::cluster::ClusterConfig;
use uring_comet::server::ServerHandle;

/// The public URLs the nodes announce (the test connects by address; only the `Location`
/// values are checked against these).
const URLS: &str = "http://n0.test:8080,http://n1.test:8081";

/// Node `index` of 2, the test's backend, 2 shards, affine mode on `redis`, 64 buckets.
fn node(redis: &Redis, index: u32) -> ServerHandle {
    node_with(redis, index, None)
}

/// [`node`] with a friends graph file, if any.
fn node_with(redis: &Redis, index: u32, friends: Option<std::path::PathBuf>) -> ServerHandle {
    let mut cfg = common::server::local(2);
    cfg.friends = friends;
    let affine = Affine::new(2, index, URLS).unwrap();
    cfg.cluster = Some(
        ClusterConfig::new(&redis.url(), 64)
            .unwrap()
            .with_affine(Some(affine)),
    );
    let server = start_with(cfg);
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(json_number(&p.stats(), "cluster_up"), 1.0);
    server
}

/// The bucket channels subscribed on `redis` (not the control channels) and each one's
/// subscriber count.
fn channels(redis: &Redis) -> Vec<(String, i64)> {
    let mut con = ::redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let names: Vec<String> = ::redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg("uc:64:*")
        .query(&mut con)
        .unwrap();
    names
        .into_iter()
        .filter(|n| n["uc:64:".len()..].parse::<u32>().is_ok())
        .map(|n| {
            let v: Vec<::redis::Value> = ::redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&n)
                .query(&mut con)
                .unwrap();
            let count = match v.get(1) {
                Some(::redis::Value::Int(c)) => *c,
                other => panic!("NUMSUB {n}: {other:?}"),
            };
            (n, count)
        })
        .collect()
}

/// `POST /send/<id>` on `p`; returns the exact reply body.
fn send_body(p: &mut Publisher, id: &str, msg: &[u8]) -> String {
    p.client.send(&send_request(id, msg));
    let head = p.client.read_head();
    head.expect_200();
    String::from_utf8(p.client.read_body(&head)).unwrap()
}

/// Ids `af-<n>` sorted by owner as node 0 answers them: (ids node 0 serves, ids it
/// redirects to node 1), checking each redirect's exact bytes.
fn split_ids(a: &ServerHandle) -> (Vec<String>, Vec<String>) {
    let (mut own, mut other) = (Vec::new(), Vec::new());
    for n in 0..16 {
        let id = format!("af-{n}");
        let req = format!("GET /sub/{id}?cursors=1&x=%2F HTTP/1.1\r\nHost: h\r\n\r\n");
        let mut c = Client::connect(a.subscriber_addr());
        c.send(req.as_bytes());
        let head = c.read_head();
        match head.status {
            200 => own.push(id),
            307 => {
                let (rest, _) = c.read_to_close();
                let loc = format!("http://n1.test:8081/sub/{id}?cursors=1&x=%2F");
                head.expect_header_exact("location", &loc);
                head.expect_header_exact("content-length", "0");
                assert!(rest.is_empty(), "a 307 has no body");
                other.push(id);
            }
            s => panic!("GET /sub/{id} on node 0: status {s}"),
        }
    }
    assert!(!own.is_empty() && !other.is_empty(), "16 ids over 2 nodes");
    (own, other)
}

both_backends! {
/// Misrouted subscribers (raw, /test/, WebSocket upgrade) get a 307 with the exact
/// Location, ids of both nodes in one request a 409, and only owned buckets are ever
/// subscribed on Redis; a send through the non-owner reaches the owner's subscriber once.
fn misrouted_redirected_owner_delivers_once() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, 0), node(&redis, 1));
    let (own, other) = split_ids(&a);
    let x = &other[0];
    let req = format!("GET /test/{x} HTTP/1.1\r\nHost: h\r\n\r\n");
    let (head, _, _) = request_expect_close(a.subscriber_addr(), req.as_bytes());
    head.expect_status(307);
    head.expect_header_exact("location", &format!("http://n1.test:8081/test/{x}"));
    // A cross-origin EventSource follows a redirect only with CORS on it (review F1).
    head.expect_header_exact("access-control-allow-origin", "*");
    let ws = format!(
        "GET /sub/{x} HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let (head, _, _) = request_expect_close(a.subscriber_addr(), ws.as_bytes());
    head.expect_status(307);
    head.expect_header_exact("location", &format!("http://n1.test:8081/sub/{x}"));
    let both = format!("GET /sub/{},{x} HTTP/1.1\r\nHost: h\r\n\r\n", own[0]);
    let conflict = expect_error(a.subscriber_addr(), both.as_bytes(), 409, "ids of both nodes");
    conflict.expect_header_exact("access-control-allow-origin", "*");
    // The owner serves it; node 1 redirects node 0's ids the other way.
    let mut sub = Subscriber::connect(b.subscriber_addr(), x);
    let req = format!("GET /sub/{} HTTP/1.1\r\nHost: h\r\n\r\n", own[0]);
    let (head, _, _) = request_expect_close(b.subscriber_addr(), req.as_bytes());
    head.expect_header_exact("location", &format!("http://n0.test:8080/sub/{}", own[0]));
    let mut pa = Publisher::connect(a.publish_addr());
    let mut pb = Publisher::connect(b.publish_addr());
    assert_eq!(
        send_body(&mut pa, x, b"via non-owner"),
        r#"{"delivered":0,"scope":"node","cluster":"queued"}"#
    );
    sub.expect_msg(b"via non-owner");
    assert_eq!(
        send_body(&mut pb, x, b"via owner"),
        r#"{"delivered":1,"scope":"node","cluster":"queued"}"#
    );
    sub.expect_msg(b"via owner");
    sub.client.expect_silence(Duration::from_millis(300), "exactly once each");
    // Node 0 served its own ids (split_ids left them subscribed) and node 1 one id: every
    // channel on Redis has exactly one subscriber (its owner), none for a redirected id.
    let ch = channels(&redis);
    assert!(!ch.is_empty() && ch.iter().all(|(_, n)| *n == 1), "{ch:?}");
    let held = |p: &mut Publisher| json_number(&p.stats(), "cluster_subscribed_buckets");
    assert_eq!(held(&mut pb), 1.0, "node 1 subscribed only its subscriber's bucket");
    assert_eq!(held(&mut pa) + held(&mut pb), ch.len() as f64, "{ch:?}");
    // Node 0 never received the message for node 1's id from Redis (only its own echo).
    let sa = pa.stats();
    assert_eq!(json_number(&sa, "cluster_received"), json_number(&sa, "cluster_echoes_dropped"), "{sa}");
}
}

/// Which node (0 or 1) owns `id`, as node 0 answers a subscriber of it.
fn owner(a: &ServerHandle, id: &str) -> usize {
    let mut c = Client::connect(a.subscriber_addr());
    c.send(format!("GET /sub/{id} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
    match c.read_head().status {
        200 => 0,
        307 => 1,
        s => panic!("GET /sub/{id}: status {s}"),
    }
}

/// `method path` with `body` on a fresh publish connection to `p`: asserts a 200 and
/// returns the body.
fn ask(p: std::net::SocketAddr, method: &str, path: &str, body: &str) -> String {
    let mut c = Client::connect(p);
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    c.send(req.as_bytes());
    let head = c.read_head();
    head.expect_200();
    String::from_utf8(c.read_body(&head)).unwrap()
}

both_backends! {
/// In affine mode the other cluster features still cross nodes: presence counts and kicks
/// (the control channels, which every node subscribes) asked at the non-owner count the
/// owner's connections; a friends event published at one node reaches each friend on its
/// owner once (the friends channel every node subscribes).
fn presence_kick_friends_across_affine_nodes() {
    let redis = Redis::start();
    let dirs = [temp_dir("aff0"), temp_dir("aff1")];
    let edges: String = (2..=12).map(|f| format!("1\t{f}\n")).collect();
    for d in &dirs {
        std::fs::write(d.join("graph.tsv"), &edges).unwrap();
    }
    let nodes = [
        node_with(&redis, 0, Some(dirs[0].join("graph.tsv"))),
        node_with(&redis, 1, Some(dirs[1].join("graph.tsv"))),
    ];
    // One friend of user 1 owned by each node, each subscribed on its owner.
    let ids: Vec<(String, usize)> = (2..=12).map(|f| (f.to_string(), owner(&nodes[0], &f.to_string()))).collect();
    let on = |n: usize| ids.iter().find(|(_, o)| *o == n).expect("11 ids over 2 nodes").0.clone();
    let (f0, f1) = (on(0), on(1));
    let mut s0 = Subscriber::connect(nodes[0].subscriber_addr(), &f0);
    let mut s1 = Subscriber::connect(nodes[1].subscriber_addr(), &f1);
    let p0 = nodes[0].publish_addr();
    let want = format!(r#"{{"id":"{f1}","connections":1,"nodes":2}}"#);
    assert_eq!(ask(p0, "GET", &format!("/presence/{f1}"), ""), want);
    let mut pb = Publisher::connect(nodes[1].publish_addr());
    let r = publish_friends(&mut pb, "1", b"hi friends");
    assert!(r.starts_with(r#"{"friends":11,"delivered":1,"#), "{r}");
    expect_friend(&mut s0, 1, b"hi friends");
    expect_friend(&mut s1, 1, b"hi friends");
    for s in [&mut s0, &mut s1] {
        s.client.expect_silence(Duration::from_millis(300), "once each");
    }
    assert_eq!(ask(p0, "DELETE", &format!("/subscribers/{f1}"), ""), r#"{"closed":1,"nodes":2}"#);
    let _ = s1.client.read_to_close();
}
}

/// haproxy (Debian's, installed by scripts/test-deps.sh) in the foreground on `port`,
/// `balance uri` with `hash-type consistent` over `backends`; killed by pid on drop.
struct Haproxy(std::process::Child, std::path::PathBuf);

impl Haproxy {
    fn start(port: u16, backends: &[std::net::SocketAddr]) -> Haproxy {
        let dir = temp_dir("affine-lb");
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, a)| format!("  server n{i} {a}\n"))
            .collect();
        let cfg = format!(
            "defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n\
             frontend f\n  bind 127.0.0.1:{port}\n  default_backend nodes\n\
             backend nodes\n  balance uri\n  hash-type consistent\n{servers}"
        );
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, cfg).unwrap();
        let child = std::process::Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&file)
            .spawn()
            .expect("haproxy missing: run scripts/test-deps.sh (Debian: apt-get install haproxy)");
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let up = wait_until(Duration::from_secs(5), || {
            std::net::TcpStream::connect(addr).is_ok()
        });
        assert!(up, "haproxy did not listen on {addr}");
        Haproxy(child, file)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The status and `Location` of `GET /sub/<id>` on `addr` (the connection is dropped).
fn get_sub(addr: std::net::SocketAddr, id: &str) -> (u16, Option<String>) {
    let mut c = Client::connect(addr);
    c.send(format!("GET /sub/{id} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
    let head = c.read_head();
    (head.status, head.header("location").map(str::to_string))
}

both_backends! {
/// haproxy in front of two affine nodes, `balance uri` + `hash-type consistent`: sticky per
/// id (the same node answers an id every time), and its hash need not agree with ours: an
/// id it sends to the wrong node gets one 307 straight to the owner's own URL (the nodes
/// announce their direct addresses), which serves it; an id it sends to the owner is
/// served at once.
fn haproxy_sticky_per_id_then_one_redirect() {
    let redis = Redis::start();
    let ports = [common::redis::free_port(), common::redis::free_port()];
    let urls = format!("http://127.0.0.1:{},http://127.0.0.1:{}", ports[0], ports[1]);
    let nodes: Vec<ServerHandle> = (0..2u32)
        .map(|i| {
            let mut cfg = common::server::local(2);
            cfg.listen = format!("127.0.0.1:{}", ports[i as usize]).parse().unwrap();
            let affine = Affine::new(2, i, &urls).unwrap();
            cfg.cluster = Some(ClusterConfig::new(&redis.url(), 64).unwrap().with_affine(Some(affine)));
            start_with(cfg)
        })
        .collect();
    let lb = Haproxy::start(common::redis::free_port(), &[nodes[0].subscriber_addr(), nodes[1].subscriber_addr()]);
    let lb_addr: std::net::SocketAddr = format!("127.0.0.1:{}", lb_port(&lb)).parse().unwrap();
    let (mut direct, mut redirected) = (0, 0);
    for n in 0..16 {
        let id = format!("lb-{n}");
        let first = get_sub(lb_addr, &id);
        assert_eq!(get_sub(lb_addr, &id), first, "{id}: the LB is sticky per id");
        match first {
            (200, None) => direct += 1,
            (307, Some(loc)) => {
                let owner = urls.split(',').position(|u| loc == format!("{u}/sub/{id}")).expect(&loc);
                let (status, _) = get_sub(nodes[owner].subscriber_addr(), &id);
                assert_eq!(status, 200, "{id}: the owner serves it after one redirect");
                redirected += 1;
            }
            other => panic!("{id} through haproxy: {other:?}"),
        }
    }
    eprintln!("haproxy: {direct} ids served at once, {redirected} after one 307");
    assert_eq!(direct + redirected, 16);
}
}

/// The port haproxy listens on (from its config file).
fn lb_port(lb: &Haproxy) -> u16 {
    let cfg = std::fs::read_to_string(&lb.1).unwrap();
    let bind = cfg
        .lines()
        .find_map(|l| l.trim().strip_prefix("bind 127.0.0.1:"))
        .unwrap();
    bind.parse().unwrap()
}

both_backends! {
/// Every node must share the node list: a node started with another one (3 nodes instead of
/// 2) stays out of the cluster (`cluster_up` 0, no bucket subscribed) and says why, once,
/// at error level; the nodes with the right list go on (a send through node 0 still
/// reaches its subscriber).
fn a_node_with_another_list_stays_out() {
    let redis = Redis::start();
    let a = node(&redis, 0);
    let other = Serve::new()
        .shards(2)
        .args(["--cluster", &redis.url(), "--cluster-buckets", "64", "--cluster-mode", "affine"])
        .args(["--cluster-nodes", "3", "--cluster-node-index", "2"])
        .args(["--cluster-node-urls", "http://x:1,http://y:2,http://z:3"])
        .spawn();
    let said = wait_until(Duration::from_secs(5), || other.stderr().contains("differs from the cluster's"));
    assert!(said, "{}", other.stderr());
    let st = stats(other.publish);
    assert_eq!(json_number(&st, "cluster_up"), 0.0, "{st}");
    assert_eq!(json_number(&st, "cluster_subscribed_buckets"), 0.0, "{st}");
    assert_eq!(other.stderr().matches("differs from the cluster's").count(), 1, "logged once");
    let (own, _) = split_ids(&a);
    let mut sub = Subscriber::connect(a.subscriber_addr(), &own[0]);
    let mut p = Publisher::connect(a.publish_addr());
    assert_eq!(send_body(&mut p, &own[0], b"still on"), r#"{"delivered":1,"scope":"node","cluster":"queued"}"#);
    sub.expect_msg(b"still on");
}
}
