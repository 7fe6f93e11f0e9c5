//! The figures of `loadtest million` ([`MillionReport`]) as text ([`text`]) and as one JSON
//! object (here). How each is measured: `loadtest/README.md`, section `loadtest million`.

use std::fmt::Write as _;

use super::json_str;
use crate::tools::loadtest::client::million_worker::LAT_BUCKETS;
use crate::tools::loadtest::jobs::million::fleet::MemInfo;

mod death;
mod drain;
pub(crate) mod kernel;
mod text;

pub(crate) use death::ServerDeath;
pub(crate) use drain::{DrainFigures, TakeoverCounts};
pub(crate) use kernel::{Breakdown, Snapshot};

#[cfg(test)]
mod tests;

/// Connect rate target, connections per second (issue 4).
pub(crate) const TARGET_CONNECT_RATE: f64 = 20_000.0;
/// Server RSS per connection target, bytes.
pub(crate) const TARGET_SERVER_RSS_PER_CONN: f64 = 128.0;
/// Whole-machine memory in use at peak target, bytes (12 GiB).
pub(crate) const TARGET_MACHINE_PEAK: u64 = 12 << 30;

/// Everything `loadtest million` measured.
#[derive(Debug, Default, Clone)]
pub(crate) struct MillionReport {
    /// Subscribers asked for (ids 1..=conns).
    pub conns: u64,
    /// Worker processes and the most connections one holds.
    pub workers: usize,
    /// Most connections per worker.
    pub per_worker: u64,
    /// Server shards (`None`: the server's default).
    pub shards: Option<usize>,
    /// Server heartbeat seconds (0: off).
    pub heartbeat: u64,
    /// Connects per second asked for, all workers together.
    pub connect_rate_asked: f64,

    /// Streams with a `200` head.
    pub connected: u64,
    /// Connects that never got a head.
    pub connect_failed: u64,
    /// Streams the server ended (or that broke) before the close.
    pub closed: u64,
    /// From starting the workers to the last `200` head, seconds.
    pub connect_s: f64,
    /// Why the connect phase stopped short, if it did.
    pub connect_stopped: Option<String>,

    /// Publishes answered `200 {"delivered":N}`.
    pub published: u64,
    /// Publishes not accepted (other status, no answer).
    pub publish_failed: u64,
    /// Sum of the answers' `delivered`.
    pub server_delivered: u64,
    /// From the first publish to the last message received, seconds.
    pub deliver_s: f64,
    /// Connections that got their message exactly once.
    pub exact: u64,
    /// Connections that got none.
    pub missing: u64,
    /// Connections that got it more than once.
    pub extra: u64,
    /// Chunks that were not the expected message.
    pub bad: u64,
    /// Heartbeat chunks seen.
    pub heartbeats: u64,
    /// Publish-to-receive latency, log2 buckets of microseconds, summed over workers.
    pub lat: Vec<u64>,

    /// Server VmRSS before any subscriber (stable), bytes.
    pub server_rss_idle: u64,
    /// With every subscriber connected (stable), bytes.
    pub server_rss_loaded: u64,
    /// After the delivery, bytes.
    pub server_rss_after: u64,
    /// Server CPU seconds while connecting, while delivering, over the whole run.
    pub server_cpu: [f64; 3],
    /// `GET /stats` after the delivery, selected keys.
    pub server_stats: Vec<(String, u64)>,
    /// The server exited during the run.
    pub server_exited: bool,

    /// Sum of the workers' VmRSS with every subscriber connected, bytes.
    pub workers_rss: u64,
    /// Sum of the workers' Pss at that point, bytes.
    pub workers_pss: u64,
    /// This process's VmRSS after the delivery (publishers, bitmaps), bytes.
    pub parent_rss: u64,
    /// Sum of the workers' peak RSS (VmHWM), bytes.
    pub workers_hwm: u64,
    /// Client CPU seconds (workers + this process) while connecting, while delivering, over
    /// the whole run.
    pub client_cpu: [f64; 3],
    /// Bytes of one connection's record in a worker.
    pub client_record_bytes: usize,

    /// Kernel readings: before connecting (server idle), all connected, after the delivery,
    /// after every connection closed. See [`MemInfo`].
    pub mem: [MemInfo; 4],
    /// MemTotal - MemAvailable before the server started, bytes.
    pub machine_before: u64,
    /// Highest MemTotal - MemAvailable during the run, bytes.
    pub machine_peak: u64,
    /// Highest `TCP: mem` (socket buffers) during the run, bytes.
    pub tcp_mem_peak: u64,

    /// /proc/loadavg before and after.
    pub loadavg: [String; 2],
    /// Problems, described.
    pub notes: Vec<String>,
    /// With `--drain-after`: what the clients saw during the drain.
    pub drain: Option<DrainFigures>,
    /// The server died during the run: how, see [`ServerDeath`].
    pub death: Option<ServerDeath>,
    /// Where the memory per connection went (slab caches, page tables...), see [`Breakdown`].
    pub breakdown: Option<Breakdown>,
    /// The run held its subscribers on a hold peer, not the server (`--hold-peer`).
    pub hold_peer: bool,
    /// With `--split`: the breakdown of the hold-peer run.
    pub baseline: Option<Breakdown>,
}

impl MillionReport {
    /// Connections per second over the connect phase.
    pub(crate) fn connect_rate(&self) -> f64 {
        self.connected as f64 / self.connect_s.max(1e-9)
    }

    /// (Loaded - idle) server RSS / connections, bytes.
    pub(crate) fn server_rss_per_conn(&self) -> f64 {
        if self.connected == 0 {
            return 0.0;
        }
        self.server_rss_loaded.saturating_sub(self.server_rss_idle) as f64 / self.connected as f64
    }

    /// All client processes' RSS (workers + this one) / connections, bytes.
    pub(crate) fn client_rss_per_conn(&self) -> f64 {
        (self.workers_rss + self.parent_rss) as f64 / self.connected.max(1) as f64
    }

    /// All client processes' PSS (shared pages of the binary counted once) / connections.
    pub(crate) fn client_pss_per_conn(&self) -> f64 {
        (self.workers_pss + self.parent_rss) as f64 / self.connected.max(1) as f64
    }

    /// Growth of a kernel figure from before connecting to all connected, / connections.
    fn per_conn(&self, f: impl Fn(&MemInfo) -> u64) -> f64 {
        if self.connected == 0 {
            return 0.0;
        }
        (f(&self.mem[1]) as f64 - f(&self.mem[0]) as f64) / self.connected as f64
    }

    /// Kernel memory per connection (both sockets of the loopback pair): growth of Slab +
    /// PageTables + KernelStack + VmallocUsed + TCP buffers, system-wide.
    pub(crate) fn kernel_per_conn(&self) -> f64 {
        self.per_conn(|m| m.kernel())
    }

    /// Whole-machine memory in use per connection: growth of MemTotal - MemAvailable.
    pub(crate) fn machine_per_conn(&self) -> f64 {
        self.per_conn(|m| m.used())
    }

    /// Messages per second over the delivery.
    pub(crate) fn deliver_rate(&self) -> f64 {
        self.exact as f64 / self.deliver_s.max(1e-9)
    }

    /// Latency quantile `q` as the upper bound of its log2 bucket, microseconds.
    pub(crate) fn lat_quantile(&self, q: f64) -> u64 {
        let total: u64 = self.lat.iter().sum();
        if total == 0 {
            return 0;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, n) in self.lat.iter().enumerate() {
            seen += n;
            if seen >= want {
                return 1u64 << b.min(LAT_BUCKETS - 1);
            }
        }
        1u64 << (LAT_BUCKETS - 1)
    }

    /// No loss: every subscriber connected, every publish accepted, every connection got its
    /// message exactly once, nothing bad, nothing closed, the server alive.
    pub(crate) fn passed(&self) -> bool {
        if self.hold_peer {
            // Nothing is delivered: every subscriber held is all a hold-peer run checks.
            return self.connected == self.conns
                && self.connect_failed == 0
                && self.connect_stopped.is_none()
                && !self.server_exited;
        }
        self.connected == self.conns
            && self.connect_failed == 0
            && self.closed == self.drain.as_ref().map_or(0, DrainFigures::closes)
            && self.drain.as_ref().is_none_or(|d| d.exit_code == Some(0))
            && self.connect_stopped.is_none()
            && self.published == self.conns
            && self.publish_failed == 0
            && self.exact == self.conns
            && self.missing == 0
            && self.extra == 0
            && self.bad == 0
            && !self.server_exited
    }

    /// The targets of issue 4: (name, met).
    pub(crate) fn targets(&self) -> [(&'static str, bool); 3] {
        [
            (
                "connect_rate_ge_20000",
                self.connect_rate() >= TARGET_CONNECT_RATE,
            ),
            (
                "server_rss_per_conn_le_128",
                self.server_rss_per_conn() <= TARGET_SERVER_RSS_PER_CONN,
            ),
            (
                "machine_peak_le_12gib",
                self.machine_peak <= TARGET_MACHINE_PEAK,
            ),
        ]
    }

    /// The report as one JSON object on one line.
    pub(crate) fn json(&self) -> String {
        let mem = |m: &MemInfo| {
            format!(
                "{{\"used\":{},\"slab\":{},\"sunreclaim\":{},\"page_tables\":{},\"kernel_stack\":{},\"vmalloc\":{},\"tcp_mem\":{},\"tcp_inuse\":{},\"tcp_tw\":{}}}",
                m.used(), m.slab, m.sunreclaim, m.page_tables, m.kernel_stack, m.vmalloc,
                m.tcp_mem, m.tcp_inuse, m.tcp_tw
            )
        };
        let mems: Vec<String> = self.mem.iter().map(mem).collect();
        let stats: Vec<String> = self
            .server_stats
            .iter()
            .map(|(k, v)| format!("{}:{v}", json_str(k)))
            .collect();
        let targets: Vec<String> = self
            .targets()
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        let notes: Vec<String> = self.notes.iter().map(|n| json_str(n)).collect();
        let lat: Vec<String> = self.lat.iter().map(u64::to_string).collect();
        let stopped = self
            .connect_stopped
            .as_deref()
            .map_or("null".into(), json_str);
        let mut s = String::new();
        let _ = write!(
            s,
            concat!(
                "{{\"conns\":{},\"workers\":{},\"per_worker\":{},\"shards\":{},\"heartbeat_s\":{},",
                "\"connect_rate_asked\":{:.0},\"connected\":{},\"connect_failed\":{},\"closed\":{},",
                "\"connect_s\":{:.3},\"connect_rate\":{:.0},\"connect_stopped\":{},",
                "\"published\":{},\"publish_failed\":{},\"server_delivered\":{},\"deliver_s\":{:.3},",
                "\"deliver_rate\":{:.0},\"exact\":{},\"missing\":{},\"extra\":{},\"bad\":{},",
                "\"heartbeats\":{},\"latency_us\":{{\"p50_le\":{},\"p99_le\":{},\"max_le\":{},",
                "\"log2_buckets\":[{}]}},"
            ),
            self.conns, self.workers, self.per_worker,
            self.shards.map_or("null".into(), |n| n.to_string()), self.heartbeat,
            self.connect_rate_asked, self.connected, self.connect_failed, self.closed,
            self.connect_s, self.connect_rate(), stopped,
            self.published, self.publish_failed, self.server_delivered, self.deliver_s,
            self.deliver_rate(), self.exact, self.missing, self.extra, self.bad,
            self.heartbeats, self.lat_quantile(0.5), self.lat_quantile(0.99),
            self.lat_quantile(1.0), lat.join(",")
        );
        let _ = write!(
            s,
            concat!(
                "\"server\":{{\"rss_idle\":{},\"rss_loaded\":{},\"rss_after\":{},\"rss_per_conn\":{:.1},",
                "\"cpu_connect_s\":{:.2},\"cpu_deliver_s\":{:.2},\"cpu_total_s\":{:.2},\"exited\":{},",
                "\"stats\":{{{}}}}},",
                "\"clients\":{{\"workers_rss\":{},\"workers_pss\":{},\"workers_hwm\":{},\"parent_rss\":{},",
                "\"rss_per_conn\":{:.1},\"pss_per_conn\":{:.1},\"record_bytes\":{},",
                "\"cpu_connect_s\":{:.2},\"cpu_deliver_s\":{:.2},\"cpu_total_s\":{:.2}}},",
                "\"kernel\":{{\"per_conn\":{:.0},\"tcp_mem_peak\":{},\"readings\":[{}]}},",
                "\"machine\":{{\"used_before\":{},\"used_peak\":{},\"per_conn\":{:.0}}},",
                "\"targets\":{{{}}},\"loadavg_before\":{},\"loadavg_after\":{},\"passed\":{},\"notes\":[{}]}}"
            ),
            self.server_rss_idle, self.server_rss_loaded, self.server_rss_after,
            self.server_rss_per_conn(), self.server_cpu[0], self.server_cpu[1],
            self.server_cpu[2], self.server_exited, stats.join(","),
            self.workers_rss, self.workers_pss, self.workers_hwm, self.parent_rss,
            self.client_rss_per_conn(), self.client_pss_per_conn(), self.client_record_bytes,
            self.client_cpu[0], self.client_cpu[1], self.client_cpu[2],
            self.kernel_per_conn(), self.tcp_mem_peak, mems.join(","),
            self.machine_before, self.machine_peak, self.machine_per_conn(),
            targets.join(","), json_str(&self.loadavg[0]), json_str(&self.loadavg[1]),
            self.passed(), notes.join(",")
        );
        self.json_tail(&mut s);
        s
    }

    /// Appends the optional parts to the JSON object in `s`: `drain`, `server_death`,
    /// `hold_peer` and `breakdown`, `hold_peer_breakdown`.
    fn json_tail(&self, s: &mut String) {
        if let Some(d) = &self.drain {
            s.pop(); // the closing brace
            let _ = write!(s, ",\"drain\":{}}}", d.json());
        }
        if let Some(d) = &self.death {
            s.pop(); // the closing brace
            let _ = write!(s, ",\"server_death\":{}}}", d.json());
        }
        if let Some(b) = &self.breakdown {
            s.pop(); // the closing brace
            let _ = write!(
                s,
                ",\"hold_peer\":{},\"breakdown\":{}}}",
                self.hold_peer,
                b.json()
            );
        }
        if let Some(b) = &self.baseline {
            s.pop(); // the closing brace
            let _ = write!(s, ",\"hold_peer_breakdown\":{}}}", b.json());
        }
    }
}
