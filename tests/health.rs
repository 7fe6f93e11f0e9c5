//! `GET /healthz` and `GET /readyz` (issue 16): 200 `ok` while the process runs; `/readyz`
//! 200 `ready` once every shard accepts and, in cluster mode, Redis is subscribed, 503 `not
//! ready: REASON` otherwise: through a start (in process and as the binary) and through the
//! loss and return of Redis, with the cluster counters of `/metrics` equal to `/stats`; at
//! `--max-conns` `/readyz` is 503 until a connection closes. Every
//! body runs on both backends; redis-server comes from `common::redis`.

mod common;

use std::time::Duration;

use common::*;
use uring_comet::cluster::ClusterConfig;

/// The reply to `/readyz` while Redis is away.
const NOT_READY_CLUSTER: &str = "not ready: cluster: not connected to Redis or not subscribed\n";

both_backends! {
    /// Right after start: alive and, once each shard has armed its accepts, ready.
    fn ready_after_start() {
        let srv = start(2);
        let p = srv.publish_addr();
        assert_eq!(probe(p, "/healthz"), (200, "ok\n".into()));
        let ready = wait_until(Duration::from_secs(2), || probe(p, "/readyz").0 == 200);
        assert!(ready, "/readyz: {:?}", probe(p, "/readyz"));
        assert_eq!(probe(p, "/readyz"), (200, "ready\n".into()));
    }

    /// The binary: from its LISTEN line on, /healthz answers 200 and /readyz turns 200.
    fn binary_ready_after_listen() {
        let srv = Serve::new().shards(2).spawn();
        assert_eq!(probe(srv.publish, "/healthz"), (200, "ok\n".into()));
        let ready = wait_until(Duration::from_secs(2), || probe(srv.publish, "/readyz").0 == 200);
        assert!(ready, "/readyz: {:?}", probe(srv.publish, "/readyz"));
    }

    /// At `--max-conns` (one shard, 3 connections): `/readyz` on `--metrics-listen` turns
    /// 503 naming the capacity while the shard is full (a fourth connection gets the 503 of
    /// a full server), and 200 again once a stream closes.
    fn not_ready_at_max_conns() {
        let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let srv = Serve::new()
            .shards(1)
            .args(["--max-conns", "3", "--metrics-listen", &metrics.to_string()])
            .spawn();
        let ready = wait_until(Duration::from_secs(2), || probe(metrics, "/readyz").0 == 200);
        assert!(ready, "/readyz before: {:?}", probe(metrics, "/readyz"));
        let mut subs: Vec<Subscriber> = (1..=3).map(|k| Subscriber::connect(srv.subscriber, &k.to_string())).collect();
        let full = (503, "not ready: shard 0 is not accepting (paused after an accept error, or the server is at --max-conns)\n".to_string());
        assert!(wait_until(Duration::from_secs(2), || probe(metrics, "/readyz") == full), "/readyz at capacity: {:?}", probe(metrics, "/readyz"));
        let (head, _, _) = request_expect_close(srv.subscriber, b"GET /sub/4 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(head.status, 503, "a connection over --max-conns");
        subs.pop().unwrap().close();
        let back = wait_until(Duration::from_secs(2), || probe(metrics, "/readyz").0 == 200);
        assert!(back, "/readyz after a close: {:?}", probe(metrics, "/readyz"));
    }

    /// Cluster mode: ready while Redis is subscribed; Redis killed: 503 naming the cluster
    /// (and /healthz still 200); Redis back on the same port: 200 again, and the reconnect
    /// is counted in /metrics as in /stats.
    fn readyz_follows_redis() {
        let mut redis = Redis::start();
        let mut cfg = local(2);
        cfg.cluster = Some(ClusterConfig::new(&redis.url(), 1024).unwrap());
        let srv = start_with(cfg);
        let p = srv.publish_addr();
        let ready = wait_until(Duration::from_secs(3), || probe(p, "/readyz").0 == 200);
        assert!(ready, "/readyz with Redis up: {:?}", probe(p, "/readyz"));
        let m = parse_strict(&metrics_text(p, None));
        assert_eq!(sum(&m, "uring_comet_cluster_up", &[]), 1.0);

        redis.kill();
        let down = wait_until(Duration::from_secs(3), || probe(p, "/readyz").0 == 503);
        assert!(down, "/readyz with Redis gone: {:?}", probe(p, "/readyz"));
        assert_eq!(probe(p, "/readyz"), (503, NOT_READY_CLUSTER.into()));
        assert_eq!(probe(p, "/healthz"), (200, "ok\n".into()));
        assert_eq!(sum(&parse_strict(&metrics_text(p, None)), "uring_comet_cluster_up", &[]), 0.0);

        redis.restart();
        let back = wait_until(Duration::from_secs(10), || probe(p, "/readyz").0 == 200);
        assert!(back, "/readyz with Redis back: {:?}", probe(p, "/readyz"));
        let text = metrics_text(p, None);
        promtool_check(&text);
        let m = parse_strict(&text);
        let st = stats(p);
        let reconnects = sum(&m, "uring_comet_cluster_redis_reconnects_total", &[]);
        assert!(reconnects >= 1.0, "{text}");
        assert_eq!(reconnects, json_number(&st, "cluster_outages"));
        for (metric, key) in [
            ("uring_comet_cluster_forwarded_total", "cluster_forwarded"),
            ("uring_comet_cluster_forward_dropped_total", "cluster_forward_dropped"),
            ("uring_comet_cluster_received_total", "cluster_received"),
            ("uring_comet_cluster_inbound_total", "cluster_inbound"),
            ("uring_comet_cluster_unwanted_total", "cluster_unwanted"),
        ] {
            assert_eq!(sum(&m, metric, &[]), json_number(&st, key), "{metric}");
        }
    }
}
