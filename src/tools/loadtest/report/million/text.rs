//! `loadtest million`'s report as text: the run, the processes, memory, then the verdict.

use std::fmt::Write;

use super::kernel::TOLERANCE;
use super::{Breakdown, MillionReport};
use crate::tools::loadtest::jobs::million::fleet::MemInfo;

impl MillionReport {
    /// The report for people: the run, the processes, memory, then the verdict.
    pub(crate) fn text(&self) -> String {
        let mut s = String::new();
        self.write_run(&mut s);
        self.write_processes(&mut s);
        self.write_memory(&mut s);
        if let Some(b) = &self.breakdown {
            s.push_str(&b.text());
        }
        self.write_end(&mut s);
        if let Some(d) = &self.drain {
            if !s.ends_with('\n') {
                s.push('\n');
            }
            s.push_str(&d.text());
        }
        s
    }

    /// The header, the connect and the deliver lines.
    fn write_run(&self, s: &mut String) {
        let t = self.targets();
        let _ = writeln!(
            s,
            "== uring-comet loadtest million: {} subscribers, {} workers x <= {}, shards {}, heartbeat {} ==",
            self.conns,
            self.workers,
            self.per_worker,
            self.shards.map_or("default".into(), |n| n.to_string()),
            if self.heartbeat == 0 { "off".into() } else { format!("{} s", self.heartbeat) }
        );
        let _ = writeln!(
            s,
            "connect:   {} of {} streams in {:.1} s = {:.0} conns/s (asked {:.0}/s; target >= 20,000: {}); {} failed, {} closed by the server",
            self.connected, self.conns, self.connect_s, self.connect_rate(),
            self.connect_rate_asked, met(t[0].1), self.connect_failed, self.closed
        );
        if let Some(why) = &self.connect_stopped {
            let _ = writeln!(s, "           stopped short: {why}");
        }
        let _ = writeln!(
            s,
            "deliver:   {} published (200), {} failed, server said delivered {}; exactly once on {} connections, missing {}, extra {}, bad chunks {}, heartbeats {}",
            self.published, self.publish_failed, self.server_delivered, self.exact,
            self.missing, self.extra, self.bad, self.heartbeats
        );
        let _ = writeln!(
            s,
            "           {:.1} s from the first publish to the last message = {:.0} msg/s; latency p50 <= {} us, p99 <= {} us, max <= {} us (log2 buckets)",
            self.deliver_s, self.deliver_rate(), self.lat_quantile(0.5),
            self.lat_quantile(0.99), self.lat_quantile(1.0)
        );
    }

    /// The server's and the clients' memory and CPU.
    fn write_processes(&self, s: &mut String) {
        let t = self.targets();
        let _ = writeln!(
            s,
            "server:    RSS idle {}, all connected {}, after delivery {}: {:.1} B/conn (target <= 128: {}); CPU {:.1} s connecting, {:.1} s delivering, {:.1} s in all",
            mib(self.server_rss_idle), mib(self.server_rss_loaded), mib(self.server_rss_after),
            self.server_rss_per_conn(), met(t[1].1),
            self.server_cpu[0], self.server_cpu[1], self.server_cpu[2]
        );
        let _ = writeln!(
            s,
            "clients:   {} workers RSS {} (PSS {}, peak sum {}) + parent {}: {:.1} B/conn RSS, {:.1} B/conn PSS ({} B record per connection); CPU {:.1} s connecting, {:.1} s delivering, {:.1} s in all",
            self.workers, mib(self.workers_rss), mib(self.workers_pss), mib(self.workers_hwm),
            mib(self.parent_rss), self.client_rss_per_conn(), self.client_pss_per_conn(),
            self.client_record_bytes, self.client_cpu[0], self.client_cpu[1], self.client_cpu[2]
        );
    }

    /// The kernel's and the machine's memory.
    fn write_memory(&self, s: &mut String) {
        let t = self.targets();
        let n = self.connected.max(1) as f64;
        let [m0, m1, m2, m3] = &self.mem;
        let d = |f: fn(&MemInfo) -> u64| {
            if self.connected == 0 {
                return 0.0;
            }
            (f(m1) as f64 - f(m0) as f64) / n
        };
        let _ = writeln!(
            s,
            "kernel:    {:.0} B/conn (both sockets of each loopback pair, system-wide): Slab {:.0} (SUnreclaim {:.0}), PageTables {:.0}, KernelStack {:.0}, VmallocUsed {:.0}, TCP buffers {:.0}",
            self.kernel_per_conn(), d(|m| m.slab), d(|m| m.sunreclaim), d(|m| m.page_tables),
            d(|m| m.kernel_stack), d(|m| m.vmalloc), d(|m| m.tcp_mem)
        );
        let _ = writeln!(
            s,
            "           TCP sockets in use {} -> {} -> {} -> {} (idle, connected, delivered, closed); TCP buffers at peak {}; TIME_WAIT {} before, {} after close",
            m0.tcp_inuse, m1.tcp_inuse, m2.tcp_inuse, m3.tcp_inuse, mib(self.tcp_mem_peak), m0.tcp_tw, m3.tcp_tw
        );
        let _ = writeln!(
            s,
            "machine:   MemTotal - MemAvailable {} before, {} all connected, peak {} (target <= 12 GiB: {}); {:.0} B/conn",
            gib(self.machine_before), gib(m1.used()), gib(self.machine_peak),
            met(t[2].1), self.machine_per_conn()
        );
    }

    /// `/stats`, the load average, the notes and the verdict.
    fn write_end(&self, s: &mut String) {
        let stats: Vec<String> = self
            .server_stats
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(s, "/stats:    {}", stats.join(" "));
        let _ = writeln!(
            s,
            "load:      before {}, after {}",
            self.loadavg[0], self.loadavg[1]
        );
        if let Some(d) = &self.death {
            let _ = writeln!(s, "{}", d.text());
        }
        for note in &self.notes {
            let _ = writeln!(s, "note:      {note}");
        }
        let _ = write!(
            s,
            "result:    {}",
            if self.passed() {
                "PASS (no loss)"
            } else {
                "FAIL"
            }
        );
    }
}

impl Breakdown {
    /// The breakdown as text lines (a table), each starting with `kernel:` or spaces.
    pub(crate) fn text(&self) -> String {
        let mut s = String::new();
        let split = self.generator.is_some();
        let _ = writeln!(
            s,
            "breakdown: growth server idle -> {} connected, bytes per connection{}{}",
            self.conns,
            if self.slab_readable {
                ""
            } else {
                " (/proc/slabinfo not readable: run as root to name the caches)"
            },
            if split {
                "; generator from the hold-peer run, server = total - generator"
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "           {:<22} {:>7} {:>9} {:>9}{}",
            "row",
            "objsize",
            "objs/conn",
            "B/conn",
            if split { "  generator    server" } else { "" }
        );
        for r in &self.rows {
            self.write_row(&mut s, r);
        }
        let (sum, res) = (self.per_conn(self.sum()), self.per_conn(self.residual()));
        let rec = self.per_conn(self.reclaimable());
        let _ = writeln!(
            s,
            "           sum {sum:.1} B/conn (kernel {:.1}; (r) reclaimable slab {rec:.1}, which MemAvailable counts as available)",
            self.per_conn(self.kernel())
        );
        let _ = writeln!(
            s,
            "           sum {sum:.1} vs in-use growth (MemTotal-MemFree-Buffers-Cached) {:.1} B/conn: residual {res:.1} B/conn ({:.1}% of the growth; tolerance {:.0}%: {})",
            self.per_conn(self.in_use),
            100.0 * res / self.per_conn(self.in_use).abs().max(1e-9),
            TOLERANCE * 100.0,
            if self.within_tolerance() { "within" } else { "OUTSIDE" }
        );
        let _ = writeln!(
            s,
            "           (MemAvailable view: sum - (r) {:.1} vs MemTotal-MemAvailable growth {:.1} B/conn, residual {:.1})",
            sum - rec,
            self.per_conn(self.used),
            self.per_conn(self.residual_available()),
        );
        if let Some(r) = self.rows.iter().find(|r| r.name == "proc_inode_cache") {
            if self.per_conn(r.bytes) >= 1.0 {
                let _ = writeln!(s, "           proc_inode_cache and part of dentry: /proc/PID/fd entries made when a process lists other processes' fds (a host monitor), not a cost of the socket");
            }
        }
        if self.noisy() {
            let _ = writeln!(s, "           NOT QUIET: TCP sockets in use grew by {}, not 2 x {}: other processes' sockets are in these figures", self.tcp_sockets, self.conns);
        }
        if let (Some((_, g)), Some(server)) = (&self.generator, self.server_machine_per_conn()) {
            let _ = writeln!(
                s,
                "           whole machine per subscriber: generator {g:.1} B, server {server:.1} B"
            );
        }
        s
    }

    /// One row of the table: name ((r): reclaimable), object size, objects and bytes per
    /// connection, and with a baseline the generator's and the server's bytes.
    fn write_row(&self, s: &mut String, r: &super::kernel::Row) {
        let pc = self.per_conn(r.bytes);
        let objs = if r.objsize > 0 {
            format!("{:.2}", r.objs as f64 / self.conns.max(1) as f64)
        } else {
            "-".into()
        };
        let size = if r.objsize > 0 {
            r.objsize.to_string()
        } else {
            "-".into()
        };
        let name = if r.reclaimable {
            format!("{} (r)", r.name)
        } else {
            r.name.clone()
        };
        let _ = write!(s, "           {name:<22} {size:>7} {objs:>9} {pc:>9.1}");
        if let Some(g) = self.generator_row(&r.name) {
            let _ = write!(s, "  {g:>9.1} {:>9.1}", pc - g);
        }
        s.push('\n');
    }
}

/// Bytes as MiB, one decimal.
fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

/// Bytes as GiB, two decimals.
fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

/// `met` or `MISSED`, for a target.
fn met(b: bool) -> &'static str {
    if b {
        "met"
    } else {
        "MISSED"
    }
}
