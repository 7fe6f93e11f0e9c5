//! Cluster mode on Redis Cluster (issue 19): `--cluster redis-cluster://...` with sharded
//! pub/sub. Each test starts a real Redis Cluster (3 masters + 3 replicas, `redis-server
//! --cluster-enabled yes` joined by `redis-cli --cluster create`; `common::redis_cluster`)
//! and real `uring-comet serve` processes (2 shards each) on loopback, killed by pid.
//! What they show: every message delivered exactly once across three nodes over sharded
//! channels on all three masters (and no classic pub/sub); a master killed, its replica
//! promoted, delivery resumes and a reconnecting subscriber (history on) loses nothing; a
//! slot moved between masters while messages flow loses none.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use uring_comet::cluster::affine::bucket_of;
use uring_comet::id::Id;

/// A node on `rc` with `flags`, connected (its `/stats` says `cluster_up: 1`).
fn node(rc: &RedisCluster, flags: &[&str]) -> ChildServer {
    let srv = Serve::new()
        .shards(2)
        .args(["--cluster", &rc.url()])
        .args(flags)
        .spawn();
    wait_up(srv.publish);
    srv
}

fn wait_up(publish: SocketAddr) {
    let mut p = Publisher::connect(publish);
    let up = wait_until(Duration::from_secs(20), || {
        json_number(&p.stats(), "cluster_up") == 1.0
    });
    assert!(up, "the node connects to Redis Cluster: {}", p.stats());
}

/// The hash slot of `id`'s bucket channel (`uc:1024:{b}`: the tag is the bucket number).
fn slot_of_id(id: &str) -> u16 {
    let b = bucket_of(&Id::parse(id.as_bytes()).unwrap(), 1024);
    slot_of(&format!("uc:1024:{{{b}}}"))
}

/// `POST /send/<id>` on `p`: the status (200 or 503 while Redis fails over).
fn try_send(p: &mut Publisher, id: &str, msg: &[u8]) -> u16 {
    p.client.send(&send_request(id, msg));
    let head = p.client.read_head();
    let _ = p.client.read_body(&head);
    head.status
}

/// Sends until accepted (a `503`, which closes the connection, means not kept: Redis has
/// no master for the slot yet); reconnects after each refusal.
fn send_until_accepted(p: &mut Publisher, id: &str, msg: &[u8], within: Duration) {
    let t0 = Instant::now();
    loop {
        match try_send(p, id, msg) {
            200 => return,
            503 if t0.elapsed() < within => {
                std::thread::sleep(Duration::from_millis(50));
                *p = Publisher::connect(p.client.stream.peer_addr().unwrap());
            }
            s => panic!(
                "publish of {:?}: status {s} after {:?}",
                String::from_utf8_lossy(msg),
                t0.elapsed()
            ),
        }
    }
}

/// Sharded channels each master holds (`PUBSUB SHARDCHANNELS`).
fn shard_channels(port: u16) -> Vec<String> {
    cli(port, &["PUBSUB", "SHARDCHANNELS"])
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// 24 ids with a subscriber on each of three nodes; three rounds of sends, each id's
/// through a different node each round: every subscriber gets its id's three messages,
/// exactly, in order, and nothing else. The bucket channels are sharded: each master holds
/// some, and no node uses classic pub/sub (`PUBSUB CHANNELS` empty everywhere).
#[test]
fn three_nodes_exactly_once_over_sharded_channels() {
    let rc = RedisCluster::start();
    let nodes: Vec<ChildServer> = (0..3).map(|_| node(&rc, &[])).collect();
    let ids: Vec<String> = (0..24).map(|i| format!("rc-{i}")).collect();
    let mut subs: Vec<(usize, Subscriber)> = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        for n in &nodes {
            subs.push((i, Subscriber::connect(n.subscriber, id)));
        }
    }
    let mut pubs: Vec<Publisher> = nodes
        .iter()
        .map(|n| Publisher::connect(n.publish))
        .collect();
    for round in 0..3 {
        for (i, id) in ids.iter().enumerate() {
            let via = (i + round) % 3;
            assert_eq!(
                try_send(&mut pubs[via], id, format!("{id} r{round}").as_bytes()),
                200
            );
        }
    }
    for (i, s) in &mut subs {
        for round in 0..3 {
            s.expect_msg(format!("{} r{round}", ids[*i]).as_bytes());
        }
    }
    for (_, s) in &mut subs {
        s.client
            .expect_silence(Duration::from_millis(100), "no duplicate");
    }
    for m in rc.masters() {
        let chans = shard_channels(m);
        assert!(!chans.is_empty(), "master {m} holds sharded channels");
        for ch in &chans {
            assert_eq!(
                rc.owner_of(slot_of(ch)),
                m,
                "{ch} is held by its slot's master"
            );
        }
        assert_eq!(
            cli(m, &["PUBSUB", "CHANNELS"]).trim(),
            "",
            "no classic pub/sub on {m}"
        );
    }
    let held: std::collections::HashSet<u16> =
        ids.iter().map(|id| rc.owner_of(slot_of_id(id))).collect();
    assert_eq!(held.len(), 3, "the 24 ids' buckets span all three masters");
}

/// History on. A stream on node A reads messages 1-5 published through node B; the master
/// of the id's slot is killed (SIGKILL) and its replica promoted (node timeout 1 s);
/// messages 6-10 are sent through B, each retried while B answers 503 (no master yet: not
/// kept). A fresh live subscriber on node C gets message 11 (delivery resumed); a stream
/// reopened on C with the cursor of message 5 gets exactly 6-11, in order; and the stream
/// on A, open throughout, gets 6-11 too, in order (its node filled the gap from the
/// bucket's backlog after reconnecting).
#[test]
fn master_failover_then_resume_loses_nothing() {
    let mut rc = RedisCluster::start();
    let flags = ["--history", "100"];
    let (a, b, c) = (node(&rc, &flags), node(&rc, &flags), node(&rc, &flags));
    let id = "fo-1";
    let (mut sa, cur0) = sse_fresh(a.subscriber, id);
    let mut t = Track::new(id, cur0);
    let mut pb = Publisher::connect(b.publish);
    for n in 1..=5 {
        send_until_accepted(&mut pb, id, &numbered(id, n), Duration::from_secs(1));
        t.sse(&mut sa, "live on A before the failover");
    }
    let at5 = t.cur.clone();
    // Replication is asynchronous (Redis Cluster spec, "Write safety"): give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    let master = rc.owner_of(slot_of_id(id));
    rc.kill(master);
    let t0 = Instant::now();
    for n in 6..=10 {
        send_until_accepted(&mut pb, id, &numbered(id, n), Duration::from_secs(30));
    }
    eprintln!(
        "failover: publishes accepted again after {:?}",
        t0.elapsed()
    );
    assert_ne!(
        rc.owner_of(slot_of_id(id)),
        master,
        "a replica took over the slot"
    );
    let mut live = Subscriber::connect(c.subscriber, id);
    send_until_accepted(&mut pb, id, &numbered(id, 11), Duration::from_secs(5));
    live.expect_msg(&numbered(id, 11));
    let mut t = Track::new(id, at5);
    let (mut sc, head) = sse_open(c.subscriber, id, &lei(&t.cur.to_string()));
    assert_eq!(
        history_headers(&head, Some(true)),
        t.cur,
        "resumed at message 5"
    );
    sc.expect_bytes(&sse_opening(&t.cur), "opening");
    for _ in 6..=11 {
        t.sse(&mut sc, "replayed after the failover");
    }
    sc.expect_silence(QUIET, "nothing more");
    let mut ta = Track::new(id, t.cur.at(0, 5));
    for _ in 6..=11 {
        ta.sse(&mut sa, "live on A across the failover");
    }
    sa.expect_silence(QUIET, "nothing more on A");
    let st = stats(a.publish);
    eprintln!(
        "failover, node A: outages {}, backlog filled {}, missed {}",
        json_number(&st, "cluster_outages"),
        json_number(&st, "cluster_backlog_filled"),
        json_number(&st, "cluster_backlog_missed")
    );
}

/// A subscriber on node A holds 4 ids of one bucket; node B publishes 400 messages to them
/// (one every 2 ms) while the bucket's slot moves to another master (`IMPORTING`,
/// `MIGRATING`, `MIGRATE`, `SETSLOT NODE`: what `redis-cli --cluster reshard` does). Every
/// message arrives, once and in order per id; node A counts the resubscription and misses
/// no payload.
#[test]
fn slot_migration_while_publishing_loses_nothing() {
    let rc = RedisCluster::start();
    let (a, b) = (node(&rc, &[]), node(&rc, &[]));
    let first = "mg-0";
    let slot = slot_of_id(first);
    let ids: Vec<String> = (0..20_000)
        .map(|i| format!("mg-{i}"))
        .filter(|id| slot_of_id(id) == slot)
        .take(4)
        .collect();
    assert_eq!(ids.len(), 4, "four ids of one bucket");
    let mut sub = Subscriber::connect(a.subscriber, &ids.join(","));
    let from = rc.owner_of(slot);
    let to = *rc.masters().iter().find(|&&m| m != from).unwrap();
    let publish = b.publish;
    let ids2 = ids.clone();
    let sender = std::thread::spawn(move || {
        let mut p = Publisher::connect(publish);
        for n in 0..400 {
            let id = &ids2[n % 4];
            assert_eq!(
                try_send(&mut p, id, format!("{id} #{n}").as_bytes()),
                200,
                "message {n}"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    rc.migrate_slot(slot, to);
    sender.join().unwrap();
    assert_eq!(rc.owner_of(slot), to, "the slot moved");
    // Order holds per id (the ids' owner shards forward to the holder independently).
    let mut got: Vec<Vec<String>> = vec![Vec::new(); 4];
    for _ in 0..400 {
        let m = String::from_utf8(sub.next_msg()).unwrap();
        let k = ids
            .iter()
            .position(|id| m.starts_with(&format!("{id} #")))
            .expect("one of the ids");
        got[k].push(m);
    }
    for (k, id) in ids.iter().enumerate() {
        let want: Vec<String> = (0..400)
            .filter(|n| n % 4 == k)
            .map(|n| format!("{id} #{n}"))
            .collect();
        assert_eq!(got[k], want, "{id}: every message once, in order");
    }
    sub.client
        .expect_silence(Duration::from_millis(100), "no duplicate");
    let st = stats(a.publish);
    eprintln!(
        "slot move: resubscribed {}, backlog filled {}, dups {}, missed {}",
        json_number(&st, "cluster_resubscribed"),
        json_number(&st, "cluster_backlog_filled"),
        json_number(&st, "cluster_backlog_dups"),
        json_number(&st, "cluster_backlog_missed")
    );
    assert!(json_number(&st, "cluster_resubscribed") >= 1.0, "{st}");
    assert_eq!(json_number(&st, "cluster_backlog_missed"), 0.0, "{st}");
}

/// `METHOD PATH` on a fresh publish connection: the reply's status and body.
fn ask(p: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut c = Client::connect(p);
    c.send(
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    let head = c.read_head();
    let body = String::from_utf8(c.read_body(&head)).unwrap();
    (head.status, body)
}

/// Presence and control on Redis Cluster (`--presence-events`, no debounce), two nodes: a
/// subscriber on A makes one `online` on both nodes' feeds under the same cursor; `GET
/// /presence` on B counts it (`"nodes":2`); `DELETE /subscribers` on B ends it on A
/// (`{"closed":1,"nodes":2}`); the `offline` follows, numbered next, on both feeds.
#[test]
fn presence_and_kick_across_nodes() {
    let rc = RedisCluster::start();
    let flags = ["--presence-events", "--presence-debounce", "0"];
    let (a, b) = (node(&rc, &flags), node(&rc, &flags));
    let (mut fa, mut fb) = (
        open_feed(a.publish, None, None).0,
        open_feed(b.publish, None, None).0,
    );
    let mut s = Subscriber::connect(a.subscriber, "pk");
    let on = (next_event(&mut fa), next_event(&mut fb));
    assert_eq!(
        on.0, on.1,
        "the same event under the same cursor on both feeds"
    );
    assert_eq!((on.0 .1.as_str(), on.0 .2.as_str()), ("online", "pk"));
    assert_eq!(
        ask(b.publish, "GET", "/presence/pk"),
        (200, r#"{"id":"pk","connections":1,"nodes":2}"#.to_string())
    );
    assert_eq!(
        ask(b.publish, "DELETE", "/subscribers/pk"),
        (200, r#"{"closed":1,"nodes":2}"#.to_string())
    );
    let (end, _) = s.client.read_to_close();
    assert_eq!(
        end, b"0\r\n\r\n",
        "kicked from node B: the end of the chunked body"
    );
    let off = (next_event(&mut fa), next_event(&mut fb));
    assert_eq!(off.0, off.1);
    assert_eq!((off.0 .1.as_str(), off.0 .2.as_str()), ("offline", "pk"));
    assert_eq!(
        seq_of(&off.0 .0),
        seq_of(&on.0 .0) + 1,
        "numbered without a gap"
    );
}
