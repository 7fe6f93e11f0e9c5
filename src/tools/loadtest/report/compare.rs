//! `loadtest compare`'s report ([`CompareReport`]): one [`Row`] per server, the table
//! (Markdown, so that it can go into a record as printed) and the JSON object. Tests: `tests`.

use std::fmt::Write;

use super::json_str;
use crate::tools::loadtest::host::procmem::{KernelMem, MemReading};
use crate::tools::loadtest::jobs::compare::ceiling::Ceiling;

/// Everything measured on one server.
#[derive(Debug, Clone, Default)]
pub(crate) struct Row {
    /// `uring`, `epoll`, or the name given to an external server.
    pub label: String,
    /// Subscriber streams opened.
    pub conns: u64,
    /// Processes measured; above 1 the memory figures use PSS sums instead of RSS.
    pub procs: u32,
    /// Before any subscriber.
    pub idle: MemReading,
    /// Every subscriber connected, no message yet.
    pub loaded: MemReading,
    /// After one message to every subscriber.
    pub after_msg: MemReading,
    /// A few seconds after every connection closed.
    pub after_close: MemReading,
    /// Kernel memory before connecting, with every subscriber connected, after close.
    pub kernel: [KernelMem; 3],
    /// Seconds to open every stream.
    pub connect_s: f64,
    /// One message per id: accepted, distinct received, accepted but never received.
    pub one_msg: [u64; 3],
    /// Saturation window, seconds.
    pub sat_secs: f64,
    /// Messages received by subscribers in the window.
    pub sat_delivered: u64,
    /// Server CPU time (user + system) in the window, seconds.
    pub sat_cpu_s: f64,
    /// Saturation publishes accepted and failed.
    pub sat_accepted: u64,
    /// Saturation publishes not accepted (or unanswered).
    pub sat_failed: u64,
    /// Publish-to-receive latency during saturation: p50, p99, microseconds.
    pub latency_us: [u64; 2],
    /// Bad chunks (duplicate, out of order, wrong id, garbled) over the whole run.
    pub bad_chunks: u64,
    /// Subscriber connections that ended before the close phase.
    pub closed: u64,
    /// The first few errors.
    pub notes: Vec<String>,
}

impl Row {
    /// The memory figure used for this server, bytes: RSS, or PSS for several processes.
    pub(crate) fn mem(&self, m: &MemReading) -> u64 {
        if self.procs > 1 {
            m.pss
        } else {
            m.rss
        }
    }

    /// (`m` - idle) / conns, bytes; negative if memory went down.
    pub(crate) fn per_conn(&self, m: &MemReading) -> f64 {
        (self.mem(m) as f64 - self.mem(&self.idle) as f64) / self.conns.max(1) as f64
    }

    /// Slab growth from before connecting to all connected, per connection, bytes
    /// (system-wide: both ends of each loopback connection).
    pub(crate) fn kernel_per_conn(&self) -> f64 {
        (self.kernel[1].slab as f64 - self.kernel[0].slab as f64) / self.conns.max(1) as f64
    }

    /// Connections opened per second.
    pub(crate) fn connect_rate(&self) -> f64 {
        self.conns as f64 / self.connect_s.max(1e-9)
    }

    /// Delivered messages per second while saturated.
    pub(crate) fn msgs_per_s(&self) -> f64 {
        self.sat_delivered as f64 / self.sat_secs.max(1e-9)
    }

    /// Server CPU microseconds per delivered message while saturated.
    pub(crate) fn cpu_us_per_msg(&self) -> f64 {
        self.sat_cpu_s * 1e6 / self.sat_delivered.max(1) as f64
    }

    /// (after close - idle) / idle, percent.
    pub(crate) fn close_vs_idle_pct(&self) -> f64 {
        let idle = self.mem(&self.idle) as f64;
        100.0 * (self.mem(&self.after_close) as f64 - idle) / idle.max(1.0)
    }
}

/// What one `loadtest compare` run measured: a row per server, the host's delivery ceiling,
/// the run's settings and the host's load average before and after.
#[derive(Debug)]
pub(crate) struct CompareReport {
    /// Idle subscribers per server.
    pub(crate) conns: u64,
    /// The stream uring-comet's subscribers opened (`chunked`, `sse`, `ws`).
    pub(crate) protocol: &'static str,
    /// Length of the saturation window, seconds.
    pub(crate) saturate_secs: f64,
    /// Publisher connections, and requests in flight on each.
    pub(crate) publishers: usize,
    /// See `publishers`.
    pub(crate) depth: usize,
    /// One row per server measured.
    pub(crate) rows: Vec<Row>,
    /// The host's delivery ceiling, if measured.
    pub(crate) ceiling: Option<Ceiling>,
    /// /proc/loadavg's first three fields before and after.
    pub(crate) load_before: String,
    /// See `load_before`.
    pub(crate) load_after: String,
    /// Servers that could not be measured, and why.
    pub(crate) failures: Vec<String>,
}

impl CompareReport {
    /// The table with its heading, efficiency lines, load average, notes and errors.
    pub(crate) fn text(&self) -> String {
        let mut s = format!(
            "== uring-comet loadtest compare: {} idle subscribers ({} for uring-comet), saturation {} s ({} publishers x {} in flight) ==\n",
            self.conns, self.protocol, self.saturate_secs, self.publishers, self.depth
        );
        s += &table(&self.rows, self.ceiling.as_ref());
        s += &efficiency(&self.rows);
        s += &format!(
            "load average (1/5/15 min): before {}, after {}\n",
            self.load_before, self.load_after
        );
        for r in &self.rows {
            for n in &r.notes {
                s += &format!("note: {}: {n}\n", r.label);
            }
        }
        for f in &self.failures {
            s += &format!("error: {f}\n");
        }
        s
    }

    /// The report as one JSON object: the rows, the ceiling and the run's settings.
    pub(crate) fn json(&self) -> String {
        let meta = [
            ("protocol", self.protocol.to_string()),
            ("saturate_secs", format!("{}", self.saturate_secs)),
            (
                "publishers",
                format!("{} x {} in flight", self.publishers, self.depth),
            ),
            ("loadavg_before", self.load_before.clone()),
            ("loadavg_after", self.load_after.clone()),
            ("failures", self.failures.join("; ")),
        ];
        json(&self.rows, self.ceiling.as_ref(), &meta)
    }
}

/// The table, Markdown, one line per server plus the ceiling's.
pub(crate) fn table(rows: &[Row], ceiling: Option<&Ceiling>) -> String {
    let mut s = String::new();
    s.push_str("| server | conns | RSS idle | RSS/conn idle | RSS/conn after 1 msg each | RSS after close | kernel B/conn (Slab, system-wide) | connects/s | msgs/s | of ceiling | CPU us/msg | vs ceiling sender | p50 / p99 |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let star = if r.procs > 1 { " (PSS)" } else { "" };
        let (of_ceiling, vs_sender) = match ceiling {
            Some(c) => (
                format!("{:.0}%", 100.0 * r.msgs_per_s() / c.deliv_mps.max(1e-9)),
                format!("{:.2}x", r.cpu_us_per_msg() / c.send_us.max(1e-9)),
            ),
            None => ("-".into(), "-".into()),
        };
        let _ = writeln!(
            s,
            "| {}{star} | {} | {} | {:.0} B | {:.0} B | {} ({:+.1}%) | {:.0} | {} | {} | {of_ceiling} | {:.2} | {vs_sender} | {} / {} |",
            r.label,
            thousands(r.conns),
            mib(r.mem(&r.idle)),
            r.per_conn(&r.loaded),
            r.per_conn(&r.after_msg),
            mib(r.mem(&r.after_close)),
            r.close_vs_idle_pct(),
            r.kernel_per_conn(),
            thousands(r.connect_rate().round() as u64),
            thousands(r.msgs_per_s().round() as u64),
            r.cpu_us_per_msg(),
            micros(r.latency_us[0]),
            micros(r.latency_us[1]),
        );
    }
    if let Some(c) = ceiling {
        let _ = writeln!(
            s,
            "| ceiling: deliver-ceiling (uring send x64, epoll recv) | {} | | | | | | | {} | 100% | {:.2} (sender) | 1.00x | |",
            thousands(c.n),
            thousands(c.deliv_mps.round() as u64),
            c.send_us
        );
    }
    s
}

/// Lines under the table: messages per server CPU-second, and io_uring against epoll.
pub(crate) fn efficiency(rows: &[Row]) -> String {
    let mut s = String::new();
    for r in rows {
        let _ = writeln!(
            s,
            "{}: {} msgs per server CPU-second",
            r.label,
            thousands((1e6 / r.cpu_us_per_msg().max(1e-9)).round() as u64)
        );
    }
    if let Some(x) = uring_vs_epoll(rows) {
        let _ = writeln!(s, "io_uring vs epoll, msgs per server CPU-second: {x:.2}x");
    }
    s
}

/// Messages per CPU-second of the `uring` row over the `epoll` row's, if both are there.
pub(crate) fn uring_vs_epoll(rows: &[Row]) -> Option<f64> {
    let find = |l: &str| rows.iter().find(|r| r.label == l);
    let (u, e) = (find("uring")?, find("epoll")?);
    Some(e.cpu_us_per_msg() / u.cpu_us_per_msg().max(1e-9))
}

/// The whole comparison as one JSON object.
pub(crate) fn json(rows: &[Row], ceiling: Option<&Ceiling>, meta: &[(&str, String)]) -> String {
    let mut s = String::from("{");
    for (k, v) in meta {
        let _ = write!(s, "{}:{},", json_str(k), json_str(v));
    }
    let each: Vec<String> = rows.iter().map(|r| row_json(r, ceiling)).collect();
    let _ = write!(s, "\"rows\":[{}],", each.join(","));
    match ceiling {
        Some(c) => {
            let _ = write!(
                s,
                "\"ceiling\":{{\"n\":{},\"deliv_mps\":{},\"send_us\":{},\"recv_us\":{},\"row\":{}}},",
                c.n,
                num(c.deliv_mps),
                num(c.send_us),
                num(c.recv_us),
                json_str(&c.row)
            );
        }
        None => s.push_str("\"ceiling\":null,"),
    }
    let _ = write!(
        s,
        "\"uring_vs_epoll_msgs_per_cpu_s\":{}}}",
        opt(uring_vs_epoll(rows))
    );
    s
}

fn row_json(r: &Row, ceiling: Option<&Ceiling>) -> String {
    let mem = |m: &MemReading| format!("{{\"rss\":{},\"pss\":{}}}", m.rss, m.pss);
    let k = &r.kernel;
    let d = |f: fn(&KernelMem) -> u64, a: usize, b: usize| f(&k[b]) as i64 - f(&k[a]) as i64;
    let notes: Vec<String> = r.notes.iter().map(|n| json_str(n)).collect();
    format!(
        concat!(
            "{{\"label\":{},\"conns\":{},\"procs\":{},\"mem_basis\":\"{}\",",
            "\"bytes\":{{\"idle\":{},\"loaded\":{},\"after_msg\":{},\"after_close\":{}}},",
            "\"per_conn_idle_bytes\":{},\"per_conn_after_msg_bytes\":{},\"after_close_vs_idle_pct\":{},",
            "\"kernel\":{{\"slab_per_conn_bytes\":{},\"sunreclaim_per_conn_bytes\":{},\"sockets_used_delta\":{},",
            "\"tcp_inuse_delta\":{},\"tcp_mem_delta_bytes\":{},\"slab_after_close_delta_bytes\":{}}},",
            "\"connect_s\":{},\"connect_rate\":{},",
            "\"one_msg\":{{\"accepted\":{},\"received\":{},\"lost\":{}}},",
            "\"saturate\":{{\"secs\":{},\"delivered\":{},\"msgs_per_s\":{},\"cpu_s\":{},\"cpu_us_per_msg\":{},",
            "\"msgs_per_cpu_s\":{},\"accepted\":{},\"failed\":{},\"p50_us\":{},\"p99_us\":{},",
            "\"of_ceiling\":{},\"vs_ceiling_sender_cpu\":{}}},",
            "\"bad_chunks\":{},\"closed\":{},\"errors\":[{}]}}"
        ),
        json_str(&r.label), r.conns, r.procs, if r.procs > 1 { "pss" } else { "rss" },
        mem(&r.idle), mem(&r.loaded), mem(&r.after_msg), mem(&r.after_close),
        num(r.per_conn(&r.loaded)), num(r.per_conn(&r.after_msg)), num(r.close_vs_idle_pct()),
        num(r.kernel_per_conn()),
        num(d(|m| m.sunreclaim, 0, 1) as f64 / r.conns.max(1) as f64),
        d(|m| m.sockets_used, 0, 1), d(|m| m.tcp_inuse, 0, 1), d(|m| m.tcp_mem, 0, 1),
        d(|m| m.slab, 0, 2),
        num(r.connect_s), num(r.connect_rate()),
        r.one_msg[0], r.one_msg[1], r.one_msg[2],
        num(r.sat_secs), r.sat_delivered, num(r.msgs_per_s()), num(r.sat_cpu_s),
        num(r.cpu_us_per_msg()), num(1e6 / r.cpu_us_per_msg().max(1e-9)),
        r.sat_accepted, r.sat_failed, r.latency_us[0], r.latency_us[1],
        opt(ceiling.map(|c| r.msgs_per_s() / c.deliv_mps.max(1e-9))),
        opt(ceiling.map(|c| r.cpu_us_per_msg() / c.send_us.max(1e-9))),
        r.bad_chunks, r.closed, notes.join(","),
    )
}

/// A finite number with 3 decimals, or `null`.
fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "null".into()
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "null".into(), num)
}

/// `12345678` -> `12,345,678`.
pub(crate) fn thousands(v: u64) -> String {
    let d = v.to_string();
    let mut out = String::new();
    for (i, c) in d.chars().enumerate() {
        if i > 0 && (d.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as MiB with one decimal.
fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// Microseconds as `850 us` or `12.3 ms`.
fn micros(us: u64) -> String {
    if us < 10_000 {
        format!("{us} us")
    } else {
        format!("{:.1} ms", us as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests;
