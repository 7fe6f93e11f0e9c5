//! History in cluster mode (issue 14): Redis numbers and keeps each id's messages, so a
//! cursor means the same on every node. Real `uring-comet serve` processes (2 shards each,
//! history at its defaults) on one real redis-server (`common::redis`, started per test on a
//! free port and killed by pid), exact SSE bytes, on both backends: a subscriber resumes on
//! node B after node A is killed; the history outlives a node's restart; a publish racing a
//! resume on another node arrives once and in order; with Redis down, publishes and streams
//! that need a position get `503`, and `/test/` goes on.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;

/// A node on `redis` with `flags`, connected (its `/stats` says `cluster_up: 1`).
fn node(redis: &Redis, flags: &[&str]) -> ChildServer {
    let srv = Serve::new()
        .shards(2)
        .args(["--cluster", &redis.url()])
        .args(flags)
        .spawn();
    let mut p = Publisher::connect(srv.publish);
    let up = wait_until(Duration::from_secs(5), || {
        json_number(&p.stats(), "cluster_up") == 1.0
    });
    assert!(up, "the node connects to Redis: {}", p.stats());
    srv
}

/// `POST /send/<id>` on `p` in cluster mode: returns the node's own deliveries, checking the
/// reply's exact bytes `{"delivered":N,"scope":"node","cluster":"queued"}`.
fn send(p: &mut Publisher, id: &str, msg: &[u8]) -> u64 {
    p.client.send(&send_request(id, msg));
    let head = p.client.read_head();
    head.expect_200();
    let body = String::from_utf8(p.client.read_body(&head)).unwrap();
    let n = body
        .strip_prefix(r#"{"delivered":"#)
        .and_then(|b| b.strip_suffix(r#","scope":"node","cluster":"queued"}"#))
        .and_then(|n| n.parse().ok());
    n.unwrap_or_else(|| panic!("publish reply {body:?}"))
}

/// A stream on `id` gets messages 1-`n` (published through `publish`); returns its first
/// cursor (offset 0).
fn published_cluster(s: SocketAddr, publish: SocketAddr, id: &str, n: u64) -> Cursor {
    let (mut c, cur) = sse_fresh(s, id);
    let mut t = Track::new(id, cur.clone());
    let mut p = Publisher::connect(publish);
    for k in 1..=n {
        assert_eq!(send(&mut p, id, &numbered(id, k)), 1);
        t.sse(&mut c, "live message");
    }
    cur
}

/// Opens `/sub/<id>` as SSE on `s` with cursor `given` and expects `Comet-Recovered: true`,
/// the opening at `given`, then every message of `t` up to offset `last`, nothing more.
fn expect_replay(s: SocketAddr, t: &mut Track, last: u64, what: &str) -> Client {
    let given = t.cur.to_string();
    let (mut c, head) = sse_open(s, &t.ids[0], &lei(&given));
    assert_eq!(
        history_headers(&head, Some(true)),
        t.cur,
        "{what}: Comet-Last-Event-ID"
    );
    c.expect_bytes(&sse_opening(&t.cur), &format!("{what}: opening"));
    while t.cur.off(0) < last {
        t.sse(&mut c, &format!("{what}: replayed message"));
    }
    c.expect_silence(QUIET, &format!("{what}: nothing more replayed"));
    c
}

both_backends! {
/// Messages 1-3 published alternately through nodes A and B reach a stream on A in order,
/// numbered 1, 2, 3 by Redis; A is killed (SIGKILL); 4 and 5 are published through B;
/// the stream reopened on B with the cursor of 3 gets exactly 4 and 5, then 6 live. Each
/// publish reply counts the publishing node's own deliveries.
fn resume_on_other_node_after_kill() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    let (mut c, cur0) = sse_fresh(a.subscriber, "ch");
    assert_eq!(cur0.off(0), 0, "an id nobody published to is at offset 0");
    let mut t = Track::new("ch", cur0);
    let mut pa = Publisher::connect(a.publish);
    let mut pb = Publisher::connect(b.publish);
    for n in 1..=3 {
        let (p, here) = if n % 2 == 1 { (&mut pa, 1) } else { (&mut pb, 0) };
        assert_eq!(send(p, "ch", &numbered("ch", n)), here, "message {n}: delivered count");
        t.sse(&mut c, "live on node A");
    }
    drop((c, pa));
    drop(a.stop());
    for n in 4..=5 {
        assert_eq!(send(&mut pb, "ch", &numbered("ch", n)), 0);
    }
    let mut c = expect_replay(b.subscriber, &mut t, 5, "resumed on node B");
    assert_eq!(send(&mut pb, "ch", &numbered("ch", 6)), 1);
    t.sse(&mut c, "live on node B after the replay");
}
}

both_backends! {
/// A node that restarts (killed, then a new process on a new port) still has the history:
/// the first stream's cursor (offset 0) replays messages 1-3; `last_event_id=earliest`
/// does too; a cursor of another epoch is `unknown-epoch`.
fn history_survives_node_restart() {
    let redis = Redis::start();
    let a = node(&redis, &[]);
    let old = published_cluster(a.subscriber, a.publish, "rs", 3);
    drop(a.stop());
    let a = node(&redis, &[]);
    let mut t = Track::new("rs", old.clone());
    drop(expect_replay(a.subscriber, &mut t, 3, "after the restart"));
    let (mut c, head) = sse_open(a.subscriber, "rs?last_event_id=earliest", "");
    assert_eq!(history_headers(&head, Some(true)), old, "earliest starts before 1");
    c.expect_bytes(&sse_opening(&old), "earliest: opening");
    let mut e = Track::new("rs", old.clone());
    for _ in 1..=3 {
        e.sse(&mut c, "earliest: replayed");
    }
    c.expect_silence(QUIET, "earliest: nothing more");
    let other = format!("{}-2", if old.epoch(0) == "00000000000000ab" { "00000000000000cd" } else { "00000000000000ab" });
    let (mut c, head) = sse_open(a.subscriber, "rs", &lei(&other));
    let now = history_headers(&head, Some(false));
    assert_eq!(now, old.at(0, 3));
    c.expect_bytes(&sse_reset_opening(&now, &[("rs", "unknown-epoch")]), "reset opening");
    c.expect_silence(QUIET, "nothing replayed after a reset");
}
}

both_backends! {
/// 100 rounds: a publisher on node B sends 2,000 messages without pause while a stream on
/// node A reads a few, closes and resumes with its cursor (`--history 4096`: none expires):
/// every message arrives once and in order (the cursor moves by exactly one each time),
/// whether it came in the replay or live.
fn publish_racing_resume_across_nodes() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, &["--history", "4096"]), node(&redis, &["--history", "4096"]));
    let (mut c, cur0) = sse_fresh(a.subscriber, "race");
    let mut t = Track::new("race", cur0);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (stop2, publish) = (stop.clone(), b.publish);
    let sender = std::thread::spawn(move || {
        let mut p = Publisher::connect(publish);
        for n in 1..=TOTAL {
            if stop2.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            send(&mut p, "race", &numbered("race", n));
        }
    });
    const TOTAL: u64 = 2000;
    for round in 0..100 {
        for _ in 0..=round % 3 {
            t.sse(&mut c, "a message before the close");
        }
        drop(c);
        let given = t.cur.to_string();
        let (c2, head) = sse_open(a.subscriber, "race", &lei(&given));
        assert_eq!(history_headers(&head, Some(true)), t.cur, "resumed at its cursor");
        c = c2;
        c.expect_bytes(&sse_opening(&t.cur), "opening of the resumed stream");
    }
    while t.cur.off(0) < TOTAL {
        t.sse(&mut c, "the rest, in order");
    }
    c.expect_silence(QUIET, "nothing after the last message");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.join().unwrap();
}
}

both_backends! {
/// Redis down: a publish is refused with `503` (nothing is delivered without its number), a
/// stream that needs a position too, while `/test/` streams go on; once Redis is back (empty:
/// no persistence), publishes are numbered again and an old cursor is `unknown-epoch`.
fn redis_down_refuses_what_needs_it() {
    let mut redis = Redis::start();
    let a = node(&redis, &[]);
    let old = published_cluster(a.subscriber, a.publish, "rd", 1);
    let mut seed = Subscriber::connect(a.subscriber, "rd");
    redis.kill();
    let mut p = Publisher::connect(a.publish);
    let down = wait_until(Duration::from_secs(5), || json_number(&p.stats(), "cluster_up") == 0.0);
    assert!(down, "the node sees Redis go");
    p.client.send(&send_request("rd", b"lost"));
    let head = p.client.read_head();
    head.expect_status(503);
    let body = String::from_utf8(p.client.read_body(&head)).unwrap();
    assert!(body.starts_with("cluster unavailable: "), "{body:?}");
    seed.client.expect_silence(QUIET, "a refused publish is delivered nowhere");
    let mut c = Client::connect(a.subscriber);
    c.send(&sub_get("rd", SSE_HEADERS));
    let head = c.read_head();
    head.expect_status(503);
    drop(c);
    redis.restart();
    let mut p = Publisher::connect(a.publish);
    let up = wait_until(Duration::from_secs(5), || json_number(&p.stats(), "cluster_up") == 1.0);
    assert!(up, "the node reconnects");
    assert_eq!(send(&mut p, "rd", b"back"), 1, "the /test/ stream is still there");
    seed.expect_msg(b"back");
    let (mut c, head) = sse_open(a.subscriber, "rd", &lei(&old.at(0, 1).to_string()));
    let now = history_headers(&head, Some(false));
    assert_eq!(now.off(0), 1, "Redis numbered `back` 1 in a new epoch");
    assert_ne!(now.epoch(0), old.epoch(0));
    c.expect_bytes(&sse_reset_opening(&now, &[("rd", "unknown-epoch")]), "reset opening");
}
}

/// Kills (Redis `CLIENT KILL ID`) the one pub/sub connection subscribed to exactly `subs`
/// channels, on the Redis of `redis`.
fn kill_pubsub_with(redis: &Redis, subs: usize) {
    use std::io::{Read, Write};
    let url = redis.url();
    let port = url.rsplit(':').next().unwrap();
    let mut r = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    r.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    r.write_all(b"CLIENT LIST TYPE pubsub\r\n").unwrap();
    let mut list = Vec::new();
    let mut b = [0u8; 4096];
    while !list.ends_with(b"\r\n") || list.iter().filter(|&&c| c == b'\n').count() < 2 {
        let n = r.read(&mut b).unwrap();
        assert!(n > 0, "Redis closed");
        list.extend_from_slice(&b[..n]);
    }
    let list = String::from_utf8(list).unwrap();
    let want = format!(" sub={subs} ");
    let line = list.lines().find(|l| l.contains(&want));
    let id = line
        .and_then(|l| l.strip_prefix("id="))
        .and_then(|l| l.split(' ').next());
    let id = id.unwrap_or_else(|| panic!("no pub/sub client with {want:?}: {list}"));
    r.write_all(format!("CLIENT KILL ID {id}\r\n").as_bytes())
        .unwrap();
    let n = r.read(&mut b).unwrap();
    assert_eq!(&b[..n], b":1\r\n", "CLIENT KILL ID {id}");
}

both_backends! {
/// Node A's pub/sub connection to Redis is killed while node B publishes: A misses those
/// messages. At the first message after the hole (A back, B publishing on) A ends its SSE
/// stream cleanly (the last chunk) instead of skipping ahead; reopened with its cursor, the
/// stream gets every message it had not, once, in order.
fn gap_in_a_live_stream_ends_it_to_resume() {
    let redis = Redis::start();
    let flags = ["--history", "64"];
    let (a, b) = (node(&redis, &flags), node(&redis, &flags));
    let (mut c, cur0) = sse_fresh(a.subscriber, "gap");
    let mut t = Track::new("gap", cur0);
    let mut pb = Publisher::connect(b.publish);
    assert_eq!(send(&mut pb, "gap", &numbered("gap", 1)), 0);
    t.sse(&mut c, "before the drop");
    kill_pubsub_with(&redis, 3); // A's: its bucket and the 2 control channels (B: 2)
    let mut pa = Publisher::connect(a.publish);
    const LAST: u64 = 40;
    for n in 2..=LAST {
        assert_eq!(send(&mut pb, "gap", &numbered("gap", n)), 0);
        std::thread::sleep(Duration::from_millis(10));
        if n == LAST - 1 {
            let back = wait_until(Duration::from_secs(5), || {
                let s = pa.stats();
                json_number(&s, "cluster_up") == 1.0 && json_number(&s, "cluster_outages") == 1.0
            });
            assert!(back, "A reconnects: {}", pa.stats());
        }
    }
    // Live: in order up to the hole, then the stream's end.
    loop {
        let chunk = c.read_chunk();
        if chunk.is_empty() {
            break;
        }
        t.sse_unit(&chunk, "live before the hole");
    }
    assert!(t.cur.off(0) < LAST, "A missed something: the hole is real");
    drop(c);
    drop(expect_replay(a.subscriber, &mut t, LAST, "resumed after the hole"));
}
}

both_backends! {
/// Redis stalls (SIGSTOP): a publish sent to it and another queued behind it both get `503`
/// once the node gives up on Redis (2 s), each on a connection that then closes, and
/// neither is delivered; after SIGCONT publishing works again.
fn redis_stall_fails_every_waiting_publish() {
    let redis = Redis::start();
    let a = node(&redis, &[]);
    let (mut c, cur) = sse_fresh(a.subscriber, "st");
    redis.signal(libc::SIGSTOP);
    let mut first = Publisher::connect(a.publish);
    first.client.send(&send_request("st", b"one"));
    std::thread::sleep(Duration::from_millis(300));
    let mut second = Publisher::connect(a.publish);
    second.client.send(&send_request("st", b"two"));
    for p in [&mut first, &mut second] {
        let head = p.client.read_head();
        head.expect_status(503);
        head.expect_header("connection", "close");
        let body = String::from_utf8(p.client.read_body(&head)).unwrap();
        assert!(body.starts_with("cluster unavailable: "), "{body:?}");
        let (rest, _) = p.client.read_to_close();
        assert!(rest.is_empty(), "nothing after the 503");
    }
    redis.signal(libc::SIGCONT);
    c.expect_silence(QUIET, "a refused publish is delivered nowhere");
    let mut p = Publisher::connect(a.publish);
    let up = wait_until(Duration::from_secs(5), || json_number(&p.stats(), "cluster_up") == 1.0);
    assert!(up, "the node reconnects");
    drop((c, cur));
    // `one` reached Redis before the stall and may have been numbered when it woke.
    let (mut c, cur) = sse_fresh(a.subscriber, "st");
    assert_eq!(send(&mut p, "st", b"three"), 1);
    let next = cur.at(0, cur.off(0) + 1);
    c.expect_bytes(&sse_msg(&next, b"three"), "after the stall");
}
}
