//! The scrape: every counter read once into a [`Sample`] (plain numbers), then written in
//! the Prometheus text exposition format (version 0.0.4) by prometheus-client's encoder, as
//! a [`Collector`] registered for this one scrape. Nothing here runs on a shard's data path
//! except the reply of `GET /metrics` itself.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::latency::Snapshot;
use crate::cluster::Cluster;
use crate::stats::{self, ShardStats};

/// Reads one counter of a shard.
type Field = fn(&ShardStats) -> &AtomicU64;

/// The per-shard families: name (after `uring_comet_`; a counter's `_total` is added by
/// the encoder), help, type, and the [`ShardStats`] field each shard's sample reads.
#[rustfmt::skip]
const PER_SHARD: &[(&str, &str, MetricType, Field)] = {
    use MetricType::{Counter as C, Gauge as G};
    &[
        ("subscribers", "Open subscriber connections, in any state (/stats connections).", G, |s| &s.subscribers),
        ("publishers", "Open publisher connections.", G, |s| &s.publishers),
        ("ids", "Ids owned by the shard with at least one connection somewhere.", G, |s| &s.ids),
        ("shard_accepting", "1 while the shard's accepts are armed, 0 while paused or stopping.", G, |s| &s.accepting),
        ("direct_slots", "io_uring direct-descriptor slots in use (0 on epoll).", G, |s| &s.slots),
        ("messages_published", "Publishes accepted (POST /send) on the shard.", C, |s| &s.sent),
        ("deliveries", "Messages queued to subscriber connections of the shard.", C, |s| &s.delivered),
        ("sent_bytes", "Bytes the kernel took from the shard's sends.", C, |s| &s.bytes_sent),
        ("slow_consumers_closed", "Subscribers cut for exceeding --max-pending-bytes.", C, |s| &s.slow_closed),
        ("send_timeouts", "Connections closed by the send deadline (--send-timeout).", C, |s| &s.send_timeouts),
        ("rejected_at_capacity", "Connections answered 503 at --max-conns or while stopping.", C, |s| &s.rejected),
        ("accept_errors", "Accepts that failed (EMFILE, ENFILE, ENOMEM, ENOBUFS).", C, |s| &s.accept_errors),
        ("head_timeouts", "Connections answered 408 by the --head-timeout sweep.", C, |s| &s.head_timeouts),
        ("friend_events", "Friends publishes fanned out by the shard.", C, |s| &s.friend_events),
        ("history_ids", "Ids with held history messages.", G, |s| &s.history_ids),
        ("history_messages", "History messages held.", G, |s| &s.history_messages),
        ("history_bytes", "Bytes counted against --history-memory.", G, |s| &s.history_bytes),
        ("history_evicted", "History messages evicted by the memory cap.", C, |s| &s.history_evicted),
        ("recoveries", "Connections that gave a cursor and got every id back.", C, |s| &s.recoveries),
        ("recoveries_failed", "Connections that gave a cursor and lost some id's position.", C, |s| &s.recoveries_failed),
        ("kicked", "Connections ended by DELETE /subscribers/<id> (kick).", C, |s| &s.kicked),
        ("per_ip_refused", "Subscriber connections answered 429 at --max-conns-per-ip.", C, |s| &s.per_ip_refused),
        ("per_ip_connections", "Subscriber connections counted under --max-conns-per-ip.", G, |s| &s.per_ip_conns),
        ("presence_events_online", "Presence online events numbered (shard 0 counts each once).", C, |s| &s.presence_online),
        ("presence_events_offline", "Presence offline events numbered (shard 0 counts each once).", C, |s| &s.presence_offline),
        ("presence_feeds", "Open GET /events/presence feeds.", G, |s| &s.presence_feeds),
        ("presence_feeds_cut", "Presence feeds closed for not reading (over 1 MiB unsent).", C, |s| &s.presence_feeds_cut),
        ("presence_requests", "Presence count requests answered.", C, |s| &s.presence_requests),
    ]
};

/// The transports of `uring_comet_connections`, in `Proto` order.
const TRANSPORTS: [&str; 5] = ["seed", "raw", "sse", "websocket", "poll"];

/// The node-wide cluster families (cluster mode only): name, help, type, value.
type ClusterField = fn(&Cluster) -> u64;
#[rustfmt::skip]
const CLUSTER: &[(&str, &str, MetricType, ClusterField)] = {
    use MetricType::{Counter as C, Gauge as G};
    &[
        ("cluster_up", "1 while connected to Redis and subscribed.", G, |c| u64::from(c.is_up())),
        ("cluster_forwarded", "Messages published to Redis for the other nodes.", C, |c| c.stats.forwarded.load(Relaxed)),
        ("cluster_forward_dropped", "Messages not forwarded (Redis down, a failed PUBLISH, the queue bound).", C, |c| c.stats.dropped.load(Relaxed)),
        ("cluster_received", "Records received from the other nodes.", C, |c| c.stats.received.load(Relaxed)),
        ("cluster_inbound", "Records that arrived from Redis pub/sub, own echoes included.", C, |c| c.stats.inbound.load(Relaxed)),
        ("cluster_unwanted", "Records from other nodes for an id with no subscriber on this node.", C, |c| c.stats.unwanted.load(Relaxed)),
        ("cluster_resubscribed", "Redis Cluster: channels subscribed again after their slot moved.", C, |c| c.stats.resubscribed.load(Relaxed)),
        ("cluster_backlog_filled", "Redis Cluster: payloads delivered from a bucket backlog after a gap or a slot move.", C, |c| c.stats.backlog_filled.load(Relaxed)),
        ("cluster_backlog_missed", "Redis Cluster: payloads of a gap the bucket backlog no longer held (lost).", C, |c| c.stats.backlog_missed.load(Relaxed)),
        ("cluster_backlog_dups", "Redis Cluster: payloads that arrived live after their backlog delivery (dropped).", C, |c| c.stats.backlog_dups.load(Relaxed)),
        ("cluster_redis_reconnects", "Redis connection episodes ended by an error (each followed by a reconnect).", C, |c| c.stats.outages.load(Relaxed)),
    ]
};

/// Every value of one scrape, read once.
#[derive(Debug)]
pub(super) struct Sample {
    /// Per family of [`PER_SHARD`], one value per shard.
    per_shard: Vec<Vec<u64>>,
    /// Per shard, per transport: logged-in streams.
    streams: Vec<[u64; 5]>,
    /// Per family of [`CLUSTER`] (empty outside cluster mode).
    cluster: Vec<u64>,
    /// The process's RSS, bytes.
    rss: u64,
    /// The latency histogram, all shards.
    latency: Snapshot,
}

impl Sample {
    /// Reads every counter (relaxed loads; each value is one shard's at some instant).
    pub(super) fn read(shards: &[ShardStats], cluster: Option<&Cluster>) -> Sample {
        Sample {
            per_shard: PER_SHARD
                .iter()
                .map(|(.., f)| shards.iter().map(|s| f(s).load(Relaxed)).collect())
                .collect(),
            streams: shards
                .iter()
                .map(|s| std::array::from_fn(|t| s.streams[t].load(Relaxed)))
                .collect(),
            cluster: cluster
                .map_or_else(Vec::new, |c| CLUSTER.iter().map(|(.., f)| f(c)).collect()),
            rss: stats::rss_bytes(),
            latency: Snapshot::of(shards),
        }
    }

    /// The exposition text (Prometheus text format 0.0.4).
    pub(super) fn encode(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail; the encoder's only errors are the writer's.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}

/// Writes one family: its HELP and TYPE lines, then one sample per label set.
fn family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    ty: MetricType,
    samples: impl IntoIterator<Item = (Vec<(&'static str, String)>, u64)>,
) -> std::fmt::Result {
    let name = format!("uring_comet_{name}");
    let mut m = enc.encode_descriptor(&name, help, None, ty)?;
    for (labels, v) in samples {
        let f = m.encode_family(&labels)?;
        match ty {
            MetricType::Counter => ConstCounter::new(v).encode(f)?,
            _ => ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(f)?,
        }
    }
    Ok(())
}

impl Collector for Sample {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let shard = |i: usize| vec![("shard", i.to_string())];
        for ((name, help, ty, _), values) in PER_SHARD.iter().zip(&self.per_shard) {
            let samples = values.iter().enumerate().map(|(i, &v)| (shard(i), v));
            family(&mut enc, name, help, *ty, samples)?;
        }
        let streams = self.streams.iter().enumerate().flat_map(|(i, per)| {
            TRANSPORTS.iter().zip(per).map(move |(t, &v)| {
                (
                    vec![("shard", i.to_string()), ("transport", t.to_string())],
                    v,
                )
            })
        });
        let help =
            "Logged-in subscriber streams by transport (seed /test/, raw, sse, websocket, poll).";
        family(&mut enc, "connections", help, MetricType::Gauge, streams)?;
        for ((name, help, ty, _), &v) in CLUSTER.iter().zip(&self.cluster) {
            family(&mut enc, name, help, *ty, [(Vec::new(), v)])?;
        }
        let help = "Resident set size of the process.";
        family(
            &mut enc,
            "rss_bytes",
            help,
            MetricType::Gauge,
            [(Vec::new(), self.rss)],
        )?;
        let help = "From a message's queueing on its subscriber to the completion of the send that carried it (1 ms resolution).";
        let mut m = enc.encode_descriptor(
            "uring_comet_publish_to_send",
            help,
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        let h = &self.latency;
        m.encode_histogram::<NoLabelSet>(h.sum_ms as f64 / 1000.0, h.count(), &h.seconds(), None)
    }
}
