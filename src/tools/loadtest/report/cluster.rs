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

    /// The added p99 of remote deliveries over local ones, us (negative: remote was faster).
    fn added_p99_us(&self) -> i64 {
        self.remote.p99 as i64 - self.local.p99 as i64
    }

    /// The report for people, ending in `PASS` or `FAIL`.
    pub(crate) fn text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "cluster: {} nodes + redis-server", self.nodes);
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
        format!(
            "{{\"nodes\":{},\"conns\":{},\"closed\":{},\"connect_s\":{:.3},\"attempted\":{},\"sent\":{},\"publish_failed\":{},\"delivered\":{},\"lost\":{},\"duplicates\":{},\"out_of_order\":{},\"id_mismatch\":{},\"garbled\":{},\"publish_s\":{:.3},\"drain_ms\":{},\"latency_us\":{},\"latency_local_us\":{},\"latency_remote_us\":{},\"added_p99_us\":{},\"node_cpu_s\":[{}],\"redis_cpu_s\":{:.3},\"node_stats\":[{}],\"notes\":[{}],\"passed\":{}}}",
            self.nodes, self.conns, self.closed, self.connect_s, self.attempted, self.sent,
            self.publish_failed, self.delivered, self.lost, self.counts.duplicates,
            self.counts.out_of_order, self.counts.id_mismatch, self.counts.garbled, self.publish_s,
            self.drain_ms, lat(&self.all), lat(&self.local), lat(&self.remote),
            self.added_p99_us(), cpus.join(","), self.redis_cpu_s, stats.join(","),
            notes.join(","), self.passed()
        )
    }
}
