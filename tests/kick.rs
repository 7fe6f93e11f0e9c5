//! Kick (issue 15, admin): `DELETE /subscribers/<id>` on the publish listener ends every
//! connection logged in under the id, on every shard, each with its transport's exact end
//! (SSE `event: kicked` then the last chunk, WebSocket close 1008 `kicked`, `/test/` and raw
//! the last chunk, a held poll its empty answer), answers `{"closed":N}` with the exact N, and
//! leaves the other ids' streams alone; the refusals (400, 405 with `Allow`, 401 without the
//! publish token) and the `kicked` counter in `/stats` and `/metrics`. Every body runs on
//! io_uring and on epoll.

mod common;

use std::net::SocketAddr;

use common::*;
use uring_comet::config::Placement;

/// `DELETE /subscribers/<id>` on a fresh publish connection: the reply's head and body.
fn kick(p: SocketAddr, id: &str, token: Option<&str>) -> (Head, String) {
    let mut c = Client::connect(p);
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "DELETE /subscribers/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\n{}\r\n",
        auth.unwrap_or_default()
    );
    c.send(req.as_bytes());
    let head = c.read_head();
    let body = String::from_utf8(c.read_body(&head)).unwrap();
    (head, body)
}

/// Kicks `id` and asserts the exact 200 `{"closed":N}` reply.
fn kick_ok(p: SocketAddr, id: &str, n: usize) {
    let (head, body) = kick(p, id, None);
    head.expect_200();
    head.expect_header_exact("content-type", "application/json");
    assert_eq!(body, format!("{{\"closed\":{n}}}"), "kick of {id}");
}

/// The exact bytes a kicked stream of `kind` under `id` gets before the server closes it.
fn kicked_end(kind: Kind, id: &str) -> Vec<u8> {
    match kind {
        Kind::Ws => b"\x88\x08\x03\xf0kicked".to_vec(),
        Kind::Sse => {
            let mut w = chunk(format!("event: kicked\ndata: {id}\n\n").as_bytes());
            w.extend_from_slice(b"0\r\n\r\n");
            w
        }
        Kind::Seed | Kind::Raw => b"0\r\n\r\n".to_vec(),
    }
}

/// Subscribers per shard, from `/stats` `connections_per_shard`.
fn per_shard(p: SocketAddr) -> Vec<u64> {
    let s = stats(p);
    let list = s
        .split_once("\"connections_per_shard\":[")
        .and_then(|(_, r)| r.split_once(']'))
        .map(|(l, _)| l)
        .unwrap_or_else(|| panic!("no connections_per_shard in {s}"));
    list.split(',').map(|n| n.parse().unwrap()).collect()
}

/// `kicked` of shard `shard` in `/metrics`.
fn kicked_metric(p: SocketAddr, shard: &str) -> f64 {
    let scrape = parse_strict(&metrics_text(p, None));
    sum(&scrape, "uring_comet_kicked_total", &[("shard", shard)])
}

both_backends! {
/// Two shards, placement `accept` (each stream stays where SO_REUSEPORT put it): streams of
/// every kind under `k`, some of them under `k` and `o` at once, until both shards hold
/// some; bystanders under `o` and `b`. The kick answers the exact count, each `k` stream
/// gets its exact end and is closed, `o` and `b` still receive, `kicked` counts on both
/// shards, and a second kick (and one of an unknown id) closes nothing.
fn kick_ends_every_stream_under_the_id() {
    let mut cfg = common::server::local(2);
    cfg.placement = Placement::Accept;
    let server = start_with(cfg);
    let (s, p) = (server.subscriber_addr(), server.publish_addr());
    let mut kicked = Vec::new();
    while kicked.len() < 10 || per_shard(p).contains(&0) {
        assert!(kicked.len() < 64, "64 streams, all on one shard: {:?}", per_shard(p));
        let kind = KINDS[kicked.len() % KINDS.len()];
        let ids = if kicked.len() % 3 == 2 { "k,o" } else { "k" };
        kicked.push(Stream::open(s, kind, ids));
    }
    let mut others: Vec<Stream> = KINDS
        .iter()
        .flat_map(|&kind| [Stream::open(s, kind, "o"), Stream::open(s, kind, "b")])
        .collect();
    let count = kicked.len();
    kick_ok(p, "k", count);
    for (j, mut st) in kicked.into_iter().enumerate() {
        let (rest, _) = st.c.read_to_close();
        assert_eq!(
            String::from_utf8_lossy(&rest),
            String::from_utf8_lossy(&kicked_end(st.kind, "k")),
            "kicked stream {j} ({:?})",
            st.kind
        );
    }
    // The others keep receiving.
    assert_eq!(publish(p, "o", b"still here"), 4);
    assert_eq!(publish(p, "b", b"me too"), 4);
    for (j, st) in others.iter_mut().enumerate() {
        st.expect(if j % 2 == 0 { b"still here" } else { b"me too" });
    }
    assert_eq!(publish(p, "k", b"nobody"), 0);
    assert_eq!(stat(p, "connections"), 8, "the kicked streams are gone");
    assert_eq!(stat(p, "kicked"), count as u64, "kicked in /stats");
    let (k0, k1) = (kicked_metric(p, "0"), kicked_metric(p, "1"));
    assert!(k0 > 0.0 && k1 > 0.0, "kicked on each shard: {k0} {k1}");
    assert_eq!(k0 + k1, count as f64);
    kick_ok(p, "k", 0);
    kick_ok(p, "nobody-here", 0);
}

/// A poll held under the id is answered (no message, its cursor) and closed; the kick
/// counts it.
fn kick_answers_a_held_poll() {
    let server = start_with(uring_comet::config::ServerConfig::local(2));
    let (s, p) = (server.subscriber_addr(), server.publish_addr());
    let (_keeper, cur) = sse_fresh(s, "kp");
    assert_eq!(publish(p, "kp", b"kp#1"), 1);
    let now = cur.at(0, 1);
    let mut held = poll_send(s, &format!("kp?last_event_id={now}"), "");
    held.expect_silence(QUIET, "a poll with nothing new is held");
    kick_ok(p, "kp", 2);
    let (head, body) = poll_answer(&mut held);
    assert_eq!(history_headers(&head, Some(true)), now);
    assert_eq!(body, poll_body(&[], &now, true, &[]));
}

/// The refusals: a bad id 400, another method 405 with `Allow: DELETE` (exact bytes), a
/// body 400; with `--publish-token` no kick without it (401) and the kick with it.
fn kick_refusals() {
    let mut cfg = common::server::local(1);
    cfg.publish_token = Some("s3cret".into());
    let server = start_with(cfg);
    let (s, p) = (server.subscriber_addr(), server.publish_addr());
    let get = b"GET /subscribers/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n\r\n";
    let (head, rest, _) = request_expect_close(p, get);
    assert_eq!(head.status, 405);
    let mut raw = head.raw.clone();
    raw.extend_from_slice(&rest);
    assert_eq!(
        String::from_utf8_lossy(&raw),
        "HTTP/1.1 405 Method Not Allowed\r\nAllow: DELETE\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 19\r\nConnection: close\r\n\r\nMethod Not Allowed\n"
    );
    let auth = "Authorization: Bearer s3cret\r\n";
    for (req, code) in [
        (format!("DELETE /subscribers/a%20b HTTP/1.1\r\nHost: x\r\n{auth}\r\n"), 400),
        (format!("DELETE /subscribers/ HTTP/1.1\r\nHost: x\r\n{auth}\r\n"), 400),
        (format!("DELETE /subscribers/1 HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 1\r\n\r\nx"), 400),
        (format!("POST /subscribers/1 HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\n\r\n"), 405),
        ("DELETE /subscribers/1 HTTP/1.1\r\nHost: x\r\n\r\n".to_string(), 401),
    ] {
        expect_error(p, req.as_bytes(), code, &req);
    }
    let mut st = Stream::open(s, Kind::Sse, "t1");
    let (head, body) = kick(p, "t1", Some("s3cret"));
    head.expect_200();
    assert_eq!(body, "{\"closed\":1}");
    let (rest, _) = st.c.read_to_close();
    assert_eq!(rest, kicked_end(Kind::Sse, "t1"));
}
}

both_backends! {
/// Cluster mode (two nodes on a real redis-server): the kick is cluster-wide
/// (`{"closed":2,"nodes":2}`): both nodes' streams under the id end with their transport's
/// end (more cases in tests/cluster_admin.rs).
fn kick_in_cluster_mode_is_cluster_wide() {
    let redis = Redis::start();
    let node = || {
        let mut cfg = common::server::local(2);
        cfg.cluster = Some(uring_comet::cluster::ClusterConfig::new(&redis.url(), 64).unwrap());
        let server = start_with(cfg);
        let up = wait_until(std::time::Duration::from_secs(5), || {
            json_number(&stats(server.publish_addr()), "cluster_up") == 1.0
        });
        assert!(up, "node not connected to Redis");
        server
    };
    let (a, b) = (node(), node());
    let mut on_a = Stream::open(a.subscriber_addr(), Kind::Raw, "ck");
    let mut on_b = Stream::open(b.subscriber_addr(), Kind::Raw, "ck");
    let (head, body) = kick(a.publish_addr(), "ck", None);
    head.expect_200();
    assert_eq!(body, r#"{"closed":2,"nodes":2}"#);
    let (rest, _) = on_a.c.read_to_close();
    assert_eq!(rest, kicked_end(Kind::Raw, "ck"));
    let (rest, _) = on_b.c.read_to_close();
    assert_eq!(rest, kicked_end(Kind::Raw, "ck"));
}
}
