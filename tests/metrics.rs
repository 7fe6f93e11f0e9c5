//! `GET /metrics` (issue 16): the Prometheus text exposition, parsed strictly and checked by
//! `promtool check metrics`; its counters equal `/stats` after a scripted run (exact
//! numbers); the bearer token guards it on the publish listener; `--metrics-listen` serves
//! it on its own address; a real Prometheus scrapes it and a PromQL query returns the
//! published-message count. Every body runs on both backends.

mod common;

use std::time::Duration;

use common::*;
use uring_comet::config::ServerConfig;

/// Subscribers: 3 seed streams under `a`, 2 SSE under `b`, 1 WebSocket under `c`.
const SEED_SUBS: u64 = 3;
const SSE_SUBS: u64 = 2;
/// Publishes: 5 to `a`, 4 to `b`, 2 to `c`, 1 to `nobody`.
const TO_A: u64 = 5;
const TO_B: u64 = 4;
const TO_C: u64 = 2;

/// Checks the names and labels of a scrape: every family `uring_comet_*`, labels only
/// `shard`, `transport` (and `le` on histogram buckets, which the parser takes apart).
fn check_names(s: &prometheus_parse::Scrape) {
    for x in &s.samples {
        assert!(x.metric.starts_with("uring_comet_"), "{}", x.metric);
        for k in x.labels.keys() {
            assert!(
                k == "shard" || k == "transport",
                "label {k} on {}",
                x.metric
            );
        }
    }
}

/// The histogram's `_count` and `+Inf` bucket, from the raw text.
fn latency_count(text: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.starts_with("uring_comet_publish_to_send_seconds_count "))
        .expect("no uring_comet_publish_to_send_seconds_count");
    let inf = text
        .lines()
        .find(|l| l.starts_with("uring_comet_publish_to_send_seconds_bucket{le=\"+Inf\"} "))
        .expect("no +Inf bucket");
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(
        inf.rsplit(' ').next().unwrap().parse::<f64>().unwrap(),
        count
    );
    count
}

both_backends! {
    /// A scripted run: K publishes to ids with M subscribers each; /metrics and /stats say
    /// the same exact numbers, per transport too, and the histogram counts every delivery.
    fn counters_match_stats_after_a_scripted_run() {
        let srv = start(2);
        let (s, p) = (srv.subscriber_addr(), srv.publish_addr());
        let mut seeds: Vec<_> = (0..SEED_SUBS).map(|_| Subscriber::connect(s, "a")).collect();
        let _sse: Vec<_> = (0..SSE_SUBS).map(|_| sse_connect(s, "b")).collect();
        let _ws = ws_connect(s, "c");
        let mut publ = Publisher::connect(p);
        for i in 0..TO_A {
            assert_eq!(publ.send("a", format!("m{i}").as_bytes()), SEED_SUBS);
        }
        for i in 0..TO_B {
            assert_eq!(publ.send("b", format!("n{i}").as_bytes()), SSE_SUBS);
        }
        for i in 0..TO_C {
            assert_eq!(publ.send("c", format!("w{i}").as_bytes()), 1);
        }
        assert_eq!(publ.send("nobody", b"x"), 0);
        for sub in &mut seeds {
            for i in 0..TO_A {
                sub.expect_msg(format!("m{i}").as_bytes());
            }
        }
        let deliveries = TO_A * SEED_SUBS + TO_B * SSE_SUBS + TO_C;
        // Every send's completion is reaped soon after the bytes left; the histogram counts
        // a message then.
        let counted = wait_until(Duration::from_secs(5), || {
            latency_count(&metrics_text(p, None)) == deliveries as f64
        });
        let text = metrics_text(p, None);
        assert!(counted, "histogram count is not {deliveries}:\n{text}");
        promtool_check(&text);
        let m = parse_strict(&text);
        check_names(&m);
        let st = stats(p);
        let pairs = [
            ("uring_comet_messages_published_total", "messages_sent"),
            ("uring_comet_deliveries_total", "messages_delivered"),
            ("uring_comet_subscribers", "connections"),
            ("uring_comet_publishers", "publishers"),
            ("uring_comet_ids", "ids"),
            ("uring_comet_slow_consumers_closed_total", "slow_consumers_closed"),
            ("uring_comet_rejected_at_capacity_total", "rejected_at_capacity"),
            ("uring_comet_send_timeouts_total", "send_timeouts"),
            ("uring_comet_direct_slots", "direct_slots_in_use"),
        ];
        for (metric, key) in pairs {
            assert_eq!(sum(&m, metric, &[]), json_number(&st, key), "{metric} vs /stats {key}");
        }
        assert_eq!(sum(&m, "uring_comet_messages_published_total", &[]), (TO_A + TO_B + TO_C + 1) as f64);
        assert_eq!(sum(&m, "uring_comet_deliveries_total", &[]), deliveries as f64);
        assert_eq!(sum(&m, "uring_comet_subscribers", &[]), (SEED_SUBS + SSE_SUBS + 1) as f64);
        assert_eq!(sum(&m, "uring_comet_ids", &[]), 3.0);
        let by = |t| sum(&m, "uring_comet_connections", &[("transport", t)]);
        assert_eq!((by("seed"), by("sse"), by("websocket"), by("raw"), by("poll")), (3.0, 2.0, 1.0, 0.0, 0.0));
        assert_eq!(sum(&m, "uring_comet_shard_accepting", &[]), 2.0, "both shards accept");
        assert!(sum(&m, "uring_comet_sent_bytes_total", &[]) > 0.0);
        assert_eq!(sum(&m, "uring_comet_head_timeouts_total", &[]), 0.0);
        assert_eq!(sum(&m, "uring_comet_accept_errors_total", &[]), 0.0);
        assert!(sum(&m, "uring_comet_rss_bytes", &[]) > 0.0);
        // Per shard, never per id: each per-shard family has one sample per shard.
        let shards = m.samples.iter().filter(|x| x.metric == "uring_comet_deliveries_total").count();
        assert_eq!(shards, 2);
        // The streams close: the transport gauges go back to 0.
        drop(seeds);
        drop(_sse);
        drop(_ws);
        let back = wait_until(Duration::from_secs(5), || {
            let m = parse_strict(&metrics_text(p, None));
            sum(&m, "uring_comet_connections", &[]) == 0.0 && sum(&m, "uring_comet_subscribers", &[]) == 0.0
        });
        assert!(back, "gauges not back to 0:\n{}", metrics_text(p, None));
    }

    /// With --publish-token, /metrics needs it (like /stats); /healthz and /readyz do not.
    fn the_token_guards_metrics_not_the_probes() {
        let mut cfg = local(1);
        cfg.publish_token = Some("s3cret".into());
        let srv = start_with(cfg);
        let p = srv.publish_addr();
        assert_eq!(get(p, "/metrics", None).0.status, 401);
        assert_eq!(get(p, "/metrics", Some("wrong")).0.status, 401);
        metrics_text(p, Some("s3cret"));
        assert_eq!(probe(p, "/healthz"), (200, "ok\n".into()));
        assert_eq!(probe(p, "/readyz"), (200, "ready\n".into()));
        // HEAD: the same head, no body.
        let (head, body, _) = request_expect_close(p, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        head.expect_200();
        head.expect_header_exact("content-length", "3");
        assert!(body.is_empty());
    }

    /// --metrics-listen: the endpoints on their own address, without the token; other paths
    /// 404, other methods 405.
    fn metrics_listen_serves_the_endpoints() {
        let mut cfg: ServerConfig = local(2);
        cfg.publish_token = Some("s3cret".into());
        cfg.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        let srv = start_with(cfg);
        let m = srv.metrics_addr().expect("metrics_addr");
        assert!(m.port() != 0 && m != srv.publish_addr() && m != srv.subscriber_addr());
        let text = metrics_text(m, None);
        promtool_check(&text);
        assert_eq!(probe(m, "/healthz"), (200, "ok\n".into()));
        assert_eq!(probe(m, "/readyz"), (200, "ready\n".into()));
        assert_eq!(get(m, "/stats", None).0.status, 404);
        let (head, _, _) = request_expect_close(m, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        head.expect_status(405);
    }

    /// A head that never completes (408 from the --head-timeout sweep) and a connection over
    /// --max-conns (503) are counted, once each, in their families.
    fn head_timeouts_and_rejections_are_counted() {
        let mut cfg = local(1);
        cfg.head_timeout_s = 1;
        cfg.max_conns = 2;
        // Scraped on --metrics-listen: its connections do not count against --max-conns.
        cfg.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        let srv = start_with(cfg);
        let (s, m) = (srv.subscriber_addr(), srv.metrics_addr().unwrap());
        let mut slow = Client::connect(s);
        slow.send(b"GET /test/x HTTP/1.1\r\nHo");
        let _stream = Subscriber::connect(s, "held");
        // Two connections held: a third gets 503.
        let over = Client::connect(s).read_head();
        over.expect_status(503);
        slow.read_head().expect_status(408);
        let m = parse_strict(&metrics_text(m, None));
        assert_eq!(sum(&m, "uring_comet_head_timeouts_total", &[]), 1.0);
        assert_eq!(sum(&m, "uring_comet_rejected_at_capacity_total", &[]), 1.0);
    }

    /// --metrics-listen on an address already in use: the start fails, naming the flag.
    fn metrics_listen_in_use_stops_the_start() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut cfg = local(1);
        cfg.metrics_listen = Some(taken.local_addr().unwrap());
        let e = start_error(cfg, "metrics-listen in use").to_string();
        assert!(e.contains("--metrics-listen") && e.contains("in use"), "{e}");
    }

    /// A real Prometheus (1 s scrape interval) scrapes the publish listener; a PromQL query
    /// over its HTTP API returns the number of messages published.
    fn prometheus_scrapes_the_published_count() {
        let srv = start(2);
        let p = srv.publish_addr();
        let mut publ = Publisher::connect(p);
        for i in 0..7 {
            publ.send(&format!("id{i}"), b"m");
        }
        let prom = Prometheus::scraping(p, None);
        let q = "sum(uring_comet_messages_published_total{job=\"uring-comet\"})";
        let got = wait_until(Duration::from_secs(30), || prom.query_one(q) == Some(7.0));
        assert!(got, "PromQL {q} gave {:?}, not 7", prom.query_one(q));
        let up = prom.query_one("up{job=\"uring-comet\"}");
        assert_eq!(up, Some(1.0));
    }
}
