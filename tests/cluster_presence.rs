//! Cluster-wide presence events (issue 15): two in-process nodes on one real redis-server,
//! `--presence-events` on both. An id's first connection anywhere makes one `online` on
//! every node's feed, with the same cursor; a second connection on the other node, and the
//! close of the first, make none; the last close anywhere makes one `offline`. A feed resumes
//! by its cursor on the other node. A node that stops is swept: the ids only it held go
//! offline within its lease (a killed child-process node). Every body runs on both backends.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use uring_comet::cluster::ClusterConfig;
use uring_comet::presence::PresenceConfig;
use uring_comet::server::ServerHandle;

/// A node of the test's backend, 2 shards, presence events on (no debounce), in cluster
/// mode on `redis`, connected.
fn node(redis: &Redis) -> ServerHandle {
    let mut cfg = local(2);
    cfg.cluster = Some(ClusterConfig::new(&redis.url(), 64).unwrap());
    cfg.presence = PresenceConfig {
        events: true,
        debounce_ms: 0,
        log: 1024,
        friends: false,
    };
    let server = start_with(cfg);
    let up = wait_until(Duration::from_secs(5), || {
        json_number(&stats(server.publish_addr()), "cluster_up") == 1.0
    });
    assert!(up, "node not connected to Redis");
    server
}

/// The next event on both feeds: the same bytes (cursor included) on each; returns it.
fn on_both(fa: &mut Client, fb: &mut Client) -> Event {
    let (ea, eb) = (next_event(fa), next_event(fb));
    assert_eq!(
        ea, eb,
        "both nodes' feeds carry the same event under the same cursor"
    );
    ea
}

/// Waits long enough for an edge to reach Redis, checking that no feed gets an event.
fn quiet(feeds: [&mut Client; 2], what: &str) {
    for f in feeds {
        f.expect_silence(Duration::from_millis(300), what);
    }
}

fn feed(addr: SocketAddr) -> Client {
    open_feed(addr, None, None).0
}

both_backends! {
/// The cluster-level edges only: online once, nothing while another node still holds the
/// id, offline once; the same cursors on both nodes; a feed resumed on the other node gets
/// exactly what it missed.
fn online_offline_across_two_nodes() {
    let redis = Redis::start();
    let (a, b) = (node(&redis), node(&redis));
    let (mut fa, mut fb) = (feed(a.publish_addr()), feed(b.publish_addr()));
    let ua = Subscriber::connect(a.subscriber_addr(), "u");
    let on = on_both(&mut fa, &mut fb);
    assert_eq!((on.1.as_str(), on.2.as_str()), ("online", "u"));
    let ub = Subscriber::connect(b.subscriber_addr(), "u");
    quiet([&mut fa, &mut fb], "a second node's connection is no cluster-wide edge");
    ua.close();
    quiet([&mut fa, &mut fb], "u is still online on node B");
    ub.close();
    let off = on_both(&mut fa, &mut fb);
    assert_eq!((off.1.as_str(), off.2.as_str()), ("offline", "u"));
    assert_eq!(seq_of(&off.0), seq_of(&on.0) + 1, "numbered without a gap");
    let _v = Subscriber::connect(b.subscriber_addr(), "v");
    let v_on = on_both(&mut fa, &mut fb);
    assert_eq!((v_on.1.as_str(), v_on.2.as_str()), ("online", "v"));

    // Resumed on node A from the cursor node B's feed gave: the same two events.
    let (mut again, from) = open_feed(a.publish_addr(), Some(&on.0), None);
    assert_eq!(from, on.0);
    assert_eq!(next_event(&mut again), off);
    assert_eq!(next_event(&mut again), v_on);
}

/// Node B, a child process, is killed (SIGKILL: no goodbye) while it holds v alone and u
/// with node A: within its lease and a sweep, A's feed gets `offline v` and nothing for u.
fn a_killed_node_is_swept() {
    let redis = Redis::start();
    let a = node(&redis);
    let url = redis.url();
    let b = Serve::new()
        .shards(2)
        .args(["--cluster", url.as_str(), "--cluster-buckets", "64"])
        .args(["--presence-events", "--presence-debounce", "0"])
        .spawn();
    let up = wait_until(Duration::from_secs(5), || {
        json_number(&stats(b.publish), "cluster_up") == 1.0
    });
    assert!(up, "node B not connected to Redis");
    let mut fa = feed(a.publish_addr());
    let _ua = Subscriber::connect(a.subscriber_addr(), "u");
    assert_eq!(next_event(&mut fa).1, "online");
    let _ub = Subscriber::connect(b.subscriber, "u");
    let _vb = Subscriber::connect(b.subscriber, "v");
    let v_on = next_event(&mut fa);
    assert_eq!((v_on.1.as_str(), v_on.2.as_str()), ("online", "v"));
    fa.expect_silence(Duration::from_millis(300), "u was online already");
    b.signal(libc::SIGKILL);
    let lease = uring_comet::cluster::presence::LEASE + uring_comet::cluster::presence::SWEEP_EVERY;
    fa.stream.set_read_timeout(Some(lease + Duration::from_secs(5))).unwrap();
    let v_off = next_event(&mut fa);
    assert_eq!((v_off.1.as_str(), v_off.2.as_str()), ("offline", "v"));
    assert_eq!(seq_of(&v_off.0), seq_of(&v_on.0) + 1);
    fa.expect_silence(Duration::from_millis(500), "u is still held by node A");
}

/// Redis lost and back empty (a new presence epoch): node A resyncs what it holds. The ids
/// it held throughout are announced online again under the new epoch; one that left during
/// the outage is not (it is no longer held), and one that came during the outage is.
fn redis_restart_resyncs_the_node() {
    let mut redis = Redis::start();
    let a = node(&redis);
    let mut fa = feed(a.publish_addr());
    let _kept = Subscriber::connect(a.subscriber_addr(), "kept");
    let first = next_event(&mut fa);
    let gone = Subscriber::connect(a.subscriber_addr(), "gone");
    assert_eq!(next_event(&mut fa).2, "gone");
    redis.kill();
    let down = wait_until(Duration::from_secs(10), || {
        json_number(&stats(a.publish_addr()), "cluster_up") == 0.0
    });
    assert!(down, "node A never noticed Redis down");
    gone.close();
    let _new = Subscriber::connect(a.subscriber_addr(), "new");
    fa.expect_silence(Duration::from_millis(300), "no event numbered while Redis is down");
    redis.restart();
    let mut seen: Vec<(String, String)> = (0..2)
        .map(|_| {
            let (at, kind, id) = next_event(&mut fa);
            assert_ne!(at.split('-').next(), first.0.split('-').next(), "a new epoch");
            (kind, id)
        })
        .collect();
    seen.sort();
    let want = [("online", "kept"), ("online", "new")].map(|(k, i)| (k.to_string(), i.to_string()));
    assert_eq!(seen, want);
    fa.expect_silence(Duration::from_millis(300), "nothing for the id that left");
}
}
