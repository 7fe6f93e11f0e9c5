//! Cluster mode on Redis Cluster (issue 19): `--cluster redis-cluster://...` with sharded
//! pub/sub. Each test starts a real Redis Cluster (3 masters + 3 replicas, `redis-server
//! --cluster-enabled yes` joined by `redis-cli --cluster create`; `common::redis_cluster`)
//! and real `uring-comet serve` processes (2 shards each) on loopback, killed by pid.
//! What they show: every message delivered exactly once across three nodes over sharded
//! channels on all three masters (and no classic pub/sub); a master killed, its replica
//! promoted, delivery resumes and a reconnecting subscriber (history on) loses nothing.

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
/// kept). A fresh live subscriber on node C gets message 11 (delivery resumed), and a
/// stream reopened on C with the cursor of message 5 gets exactly 6-11, in order.
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
}
