//! `loadtest --nodes N`'s report ([`ClusterReport`]): the main job's figures over the cluster,
//! latency split into local and remote deliveries, the nodes' cluster counters, as text and
//! as one JSON object.

use std::fmt::Write as _;

use super::{json_str, Latency};
use crate::tools::loadtest::wire::check::CheckCounts;

/// What one `loadtest --nodes N` run measured; fields as the JSON keys of [`Self::json`].
#[derive(Debug, Default)]
pub(crate) struct ClusterReport {
    pub(crate) nodes: usize,
    /// `broadcast` or `affine` (`--cluster-mode`).
    pub(crate) mode: &'static str,
    pub(crate) conns: u64,
    pub(crate) closed: u64,
    pub(crate) connect_s: f64,
    pub(crate) attempted: u64,
    pub(crate) sent: u64,
    pub(crate) publish_failed: u64,
    pub(crate) delivered: u64,
    pub(crate) lost: u64,
    pub(crate) counts: CheckCounts,
    pub(crate) drain_ms: u64,
    pub(crate) publish_s: f64,
    pub(crate) all: Latency,
    pub(crate) local: Latency,
    pub(crate) remote: Latency,
    /// Per node: (cpu seconds over the run, /stats after the run).
    pub(crate) node_cpu_s: Vec<f64>,
    pub(crate) node_stats: Vec<Vec<(String, u64)>>,
    pub(crate) redis_cpu_s: f64,
    /// `--redis-shards`: each master's CPU seconds and `SPUBLISH` calls over the run.
    pub(crate) shards: Vec<(f64, u64)>,
    pub(crate) notes: Vec<String>,
}

impl ClusterReport {
    /// Nothing lost, failed, closed or wrong.
    pub(crate) fn passed(&self) -> bool {
        self.lost == 0 && self.publish_failed == 0 && self.closed == 0 && self.counts.errors() == 0
    }

    /// `key` summed over the nodes' `/stats`.
    fn stat(&self, key: &str) -> u64 {
        self.node_stats
            .iter()
            .flat_map(|s| s.iter())
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v)
            .sum()
    }

    /// `key` of each node's `/stats`, by node.
    fn per_node(&self, key: &str) -> Vec<u64> {
        let get = |s: &Vec<(String, u64)>| s.iter().find(|(k, _)| k == key).map_or(0, |(_, v)| *v);
        self.node_stats.iter().map(get).collect()
    }

    /// Each node's inbound records from Redis over its share of the messages sent
    /// (sent / nodes): about 1 in affine mode, about `nodes` in broadcast mode.
    fn inbound_vs_share(&self) -> Vec<f64> {
        let share = self.sent as f64 / self.nodes.max(1) as f64;
        let ratio = |x: u64| x as f64 / share.max(1.0);
        self.per_node("cluster_inbound")
            .into_iter()
            .map(ratio)
            .collect()
    }

    /// The added p99 of remote deliveries over local ones, us (negative: remote was faster).
    fn added_p99_us(&self) -> i64 {
        self.remote.p99 as i64 - self.local.p99 as i64
    }

    /// The report for people, ending in `PASS` or `FAIL`.
    pub(crate) fn text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "cluster: {} nodes ({}) + redis-server",
            self.nodes, self.mode
        );
        let _ = writeln!(
            t,
            "subscribers: {} connected in {:.1} s, {} closed",
            self.conns, self.connect_s, self.closed
        );
        let _ = writeln!(
            t,
            "messages: {} attempted, {} sent (200), {} failed, {} delivered, {} LOST, {} duplicates, {} out of order, {} wrong id, {} garbled",
            self.attempted, self.sent, self.publish_failed, self.delivered, self.lost,
            self.counts.duplicates, self.counts.out_of_order, self.counts.id_mismatch, self.counts.garbled
        );
        let _ = writeln!(
            t,
            "publishing took {:.1} s; drain {} ms",
            self.publish_s, self.drain_ms
        );
        let _ = writeln!(t, "latency, all:    {}", self.all.line());
        let _ = writeln!(t, "latency, local:  {}", self.local.line());
        let _ = writeln!(t, "latency, remote: {}", self.remote.line());
        let _ = writeln!(t, "added p99, remote vs local: {} us", self.added_p99_us());
        let _ = writeln!(
            t,
            "cluster: {} forwarded, {} received, {} echoes dropped, {} forward dropped, {} batches",
            self.stat("cluster_forwarded"),
            self.stat("cluster_received"),
            self.stat("cluster_echoes_dropped"),
            self.stat("cluster_forward_dropped"),
            self.stat("cluster_batches")
        );
        let ratios: Vec<String> = (self.per_node("cluster_inbound").iter())
            .zip(self.inbound_vs_share())
            .map(|(n, r)| format!("{n} ({r:.2}x)"))
            .collect();
        let _ = writeln!(
            t,
            "inbound records from Redis per node (x of sent/{}): {}; unwanted per node: {:?}",
            self.nodes,
            ratios.join(", "),
            self.per_node("cluster_unwanted")
        );
        let cpus: Vec<String> = self
            .node_cpu_s
            .iter()
            .map(|c| format!("{c:.2} s"))
            .collect();
        let _ = writeln!(
            t,
            "CPU: nodes {}; redis-server {:.2} s",
            cpus.join(", "),
            self.redis_cpu_s
        );
        if !self.shards.is_empty() {
            let per: Vec<String> = (self.shards.iter())
                .map(|(c, n)| format!("{c:.2} s CPU, {n} SPUBLISH"))
                .collect();
            let _ = writeln!(t, "Redis Cluster masters: {}", per.join("; "));
        }
        for n in &self.notes {
            let _ = writeln!(t, "note: {n}");
        }
        let _ = write!(t, "{}", if self.passed() { "PASS" } else { "FAIL" });
        t
    }

    /// The report as one JSON object (latencies in us, CPU in s).
    pub(crate) fn json(&self) -> String {
        let lat = |l: &Latency| {
            format!(
                "{{\"count\":{},\"p50\":{},\"p90\":{},\"p99\":{},\"p999\":{},\"max\":{}}}",
                l.count, l.p50, l.p90, l.p99, l.p999, l.max
            )
        };
        let cpus: Vec<String> = self.node_cpu_s.iter().map(|c| format!("{c:.3}")).collect();
        let shards: Vec<String> = (self.shards.iter())
            .map(|(c, n)| format!("{{\"cpu_s\":{c:.3},\"spublish\":{n}}}"))
            .collect();
        let stats: Vec<String> = self
            .node_stats
            .iter()
            .map(|s| {
                let kv: Vec<String> = s
                    .iter()
                    .map(|(k, v)| format!("{}:{v}", json_str(k)))
                    .collect();
                format!("{{{}}}", kv.join(","))
            })
            .collect();
        let notes: Vec<String> = self.notes.iter().map(|n| json_str(n)).collect();
        let ratios: Vec<String> = (self.inbound_vs_share().iter())
            .map(|r| format!("{r:.3}"))
            .collect();
        let per = |k: &str| {
            let v: Vec<String> = self.per_node(k).iter().map(u64::to_string).collect();
            v.join(",")
        };
        format!(
            "{{\"nodes\":{},\"mode\":\"{}\",\"inbound_per_node\":[{}],\"inbound_vs_share\":[{}],\"unwanted_per_node\":[{}],\"conns\":{},\"closed\":{},\"connect_s\":{:.3},\"attempted\":{},\"sent\":{},\"publish_failed\":{},\"delivered\":{},\"lost\":{},\"duplicates\":{},\"out_of_order\":{},\"id_mismatch\":{},\"garbled\":{},\"publish_s\":{:.3},\"drain_ms\":{},\"latency_us\":{},\"latency_local_us\":{},\"latency_remote_us\":{},\"added_p99_us\":{},\"node_cpu_s\":[{}],\"redis_cpu_s\":{:.3},\"redis_shards\":[{}],\"node_stats\":[{}],\"notes\":[{}],\"passed\":{}}}",
            self.nodes, self.mode, per("cluster_inbound"), ratios.join(","), per("cluster_unwanted"),
            self.conns, self.closed, self.connect_s, self.attempted, self.sent,
            self.publish_failed, self.delivered, self.lost, self.counts.duplicates,
            self.counts.out_of_order, self.counts.id_mismatch, self.counts.garbled, self.publish_s,
            self.drain_ms, lat(&self.all), lat(&self.local), lat(&self.remote),
            self.added_p99_us(), cpus.join(","), self.redis_cpu_s, shards.join(","), stats.join(","),
            notes.join(","), self.passed()
        )
    }
}
