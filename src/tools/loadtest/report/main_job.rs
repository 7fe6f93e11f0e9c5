//! The main job's report ([`Report`]): its figures, as text and as one JSON object (hand-written: every
//! value is a number, so no JSON library is needed).

use std::fmt::Write;

use super::{json_str, Latency};
use crate::tools::loadtest::client::flood::ResumeFigures;
use crate::tools::loadtest::client::slow::ComebackFigures;
use crate::tools::loadtest::wire::resume::Transport;

/// Everything the main job measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Report {
    /// Subscriber streams that got their `200` head.
    pub conns: u64,
    /// Subscriber connections that ended or failed during the run.
    pub closed: u64,
    /// Seconds taken to open all subscriber streams.
    pub connect_s: f64,
    /// Publishes attempted.
    pub attempted: u64,
    /// Publishes answered `200 OK` ("sent").
    pub sent: u64,
    /// Publishes that failed (non-200, connection lost, or no answer in time).
    pub publish_failed: u64,
    /// Sum of the `delivered` counts in the publish answers.
    pub server_delivered: u64,
    /// Distinct test messages received by subscribers.
    pub delivered: u64,
    /// Publishes answered 200 whose message no subscriber received.
    pub lost: u64,
    /// Chunks received, all kinds.
    pub chunks: u64,
    /// Duplicate chunks (a seq received twice).
    pub duplicates: u64,
    /// Chunks whose `#N` was not the previous N + 1 on their connection.
    pub out_of_order: u64,
    /// Chunks carrying another id than their connection's.
    pub id_mismatch: u64,
    /// Chunks that were not well-formed test messages, plus broken streams.
    pub garbled: u64,
    /// Heartbeat chunks (`\n`) received; not messages, not errors.
    pub heartbeats: u64,
    /// Seconds spent publishing.
    pub publish_s: f64,
    /// Milliseconds waited after publishing for the last messages to arrive.
    pub drain_ms: u64,
    /// Publish-to-receive latency.
    pub latency: Latency,
    /// Server RSS after start, before any connection, bytes.
    pub server_rss_idle_bytes: u64,
    /// Server RSS with every subscriber connected, before any message, bytes.
    pub server_rss_loaded_bytes: u64,
    /// Whether the loaded reading was stable (two readings 500 ms apart within 1%).
    pub rss_stable: bool,
    /// (loaded - idle) / conns, bytes.
    pub rss_per_conn_bytes: u64,
    /// Server RSS at the end of the run, bytes (0 if it had exited).
    pub server_rss_end_bytes: u64,
    /// The server exited before the end of the run.
    pub server_exited: bool,
    /// Server CPU time (user + system) over the whole run, seconds.
    pub server_cpu_s: f64,
    /// Server CPU time while publishing (and draining), seconds.
    pub server_cpu_publish_s: f64,
    /// Numbers read from the server's `GET /stats` at the end, by key.
    pub server_stats: Vec<(String, u64)>,
    /// The first few errors, described.
    pub notes: Vec<String>,
    /// With `--churn`: what churn did and excused.
    pub churn: Option<crate::tools::loadtest::client::churn::ChurnFigures>,
    /// With `--slow-readers`: what the slow-reader side did.
    pub slow: Option<crate::tools::loadtest::client::slow::SlowFigures>,
    /// The server once every subscriber had left (`None` if it had exited).
    pub after_leave: Option<crate::tools::loadtest::client::churn::AfterLeave>,
    /// With `--slow-readers` and a resuming `--transport`: what the readers that came back
    /// got.
    pub slow_back: Option<ComebackFigures>,
    /// With a resuming `--transport`: the transport and what the resumes came to.
    pub resumed: Option<(Transport, ResumeFigures)>,
}

impl Report {
    /// True if nothing was lost and nothing wrong arrived.
    pub(crate) fn passed(&self) -> bool {
        self.lost == 0
            && !self.server_exited
            && self.publish_failed == 0
            && self.closed == 0
            && self.duplicates + self.out_of_order + self.id_mismatch + self.garbled == 0
            && self.after_leave.as_ref().is_none_or(|l| l.at_baseline())
            && self
                .churn
                .as_ref()
                .is_none_or(|c| c.reconnected == c.churned)
            && self.slow.as_ref().is_none_or(|s| s.failed == 0)
            && self
                .resumed
                .as_ref()
                .is_none_or(|(_, r)| r.header_missing == 0)
            && self
                .slow_back
                .as_ref()
                .is_none_or(|b| b.bad == 0 && b.received == b.expected)
    }

    /// A number of the server's `/stats`, as text (`?` if it was not read).
    fn stat(&self, key: &str) -> String {
        self.server_stats
            .iter()
            .find(|(k, _)| k == key)
            .map_or("?".to_string(), |(_, v)| v.to_string())
    }

    /// The report for people.
    pub(crate) fn text(&self) -> String {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let mut s = String::new();
        let _ = writeln!(s, "== uring-comet loadtest report ==");
        let _ = writeln!(
            s,
            "connections:      {} in {:.1} s, {} closed",
            self.conns, self.connect_s, self.closed
        );
        let _ = writeln!(
            s,
            "messages:         {} sent (200 OK) of {} attempted in {:.1} s, {} failed",
            self.sent, self.attempted, self.publish_s, self.publish_failed
        );
        let _ = writeln!(
            s,
            "delivered:        {} received, {} lost (drain {} ms); server said delivered {}",
            self.delivered, self.lost, self.drain_ms, self.server_delivered
        );
        let _ = writeln!(
            s,
            "bad chunks:       {} duplicate, {} out of order, {} wrong id, {} garbled (of {} chunks; {} heartbeats)",
            self.duplicates, self.out_of_order, self.id_mismatch, self.garbled, self.chunks, self.heartbeats
        );
        let _ = writeln!(s, "latency:          {}", self.latency.line());
        let _ = writeln!(
            s,
            "server RSS:       idle {:.1} MiB, loaded {:.1} MiB{}, end {:.1} MiB",
            mib(self.server_rss_idle_bytes),
            mib(self.server_rss_loaded_bytes),
            if self.rss_stable { "" } else { " (not stable)" },
            mib(self.server_rss_end_bytes)
        );
        let _ = writeln!(s, "RSS per conn:     {} bytes", self.rss_per_conn_bytes);
        let _ = writeln!(
            s,
            "server CPU:       {:.2} s over the run, {:.2} s while publishing",
            self.server_cpu_s, self.server_cpu_publish_s
        );
        if !self.server_stats.is_empty() {
            let kv: Vec<String> = self
                .server_stats
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let _ = writeln!(s, "server /stats:    {}", kv.join(" "));
        }
        self.side_lines(&mut s);
        if let Some(b) = &self.slow_back {
            let _ = writeln!(s, "slow came back:   {}", slow_back_line(b));
        }
        if let Some(l) = &self.after_leave {
            let _ = writeln!(s, "after leaving:    {}", l.line());
        }
        for n in &self.notes {
            let _ = writeln!(s, "error:            {n}");
        }
        let _ = write!(
            s,
            "result:           {}",
            if self.passed() { "PASS" } else { "FAIL" }
        );
        s
    }

    /// The text lines of the optional sections: churn, resumes, slow readers.
    fn side_lines(&self, s: &mut String) {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        if let Some(c) = &self.churn {
            let _ = writeln!(
                s,
                "churn:            {}%/min: {} left and {} came back; {} messages sent around an absence (excused), {} of them received anyway",
                c.per_min, c.churned, c.reconnected, c.excused, c.excused_received
            );
        }
        if let Some((t, r)) = &self.resumed {
            let _ = writeln!(s, "resumed:          {}", resumed_line(*t, r));
        }
        if let Some(w) = &self.slow {
            let _ = writeln!(
                s,
                "slow readers:     {} not reading, sent {} messages ({:.1} MiB), {} failed; server RSS peak {:.1} MiB meanwhile; the server cut {} for backlog and {} by the send deadline",
                w.readers,
                w.sent,
                mib(w.bytes),
                w.failed,
                mib(w.server_rss_peak_bytes),
                self.stat("slow_consumers_closed"),
                self.stat("send_timeouts")
            );
        }
    }

    /// The report as one JSON object on one line.
    pub(crate) fn json(&self) -> String {
        let l = &self.latency;
        let stats: Vec<String> = self
            .server_stats
            .iter()
            .map(|(k, v)| format!("{}:{v}", json_str(k)))
            .collect();
        let notes: Vec<String> = self.notes.iter().map(|n| json_str(n)).collect();
        let base = format!(
            concat!(
                "{{\"conns\":{},\"sent\":{},\"delivered\":{},\"lost\":{},",
                "\"latency_us\":{{\"p50\":{},\"p99\":{},\"max\":{},\"p90\":{},\"p999\":{},\"count\":{}}},",
                "\"server_rss_idle_bytes\":{},\"server_rss_loaded_bytes\":{},\"rss_per_conn_bytes\":{},",
                "\"server_cpu_s\":{:.3},\"passed\":{},\"closed\":{},\"connect_s\":{:.3},\"attempted\":{},",
                "\"publish_failed\":{},\"server_delivered\":{},\"chunks\":{},\"heartbeats\":{},\"duplicates\":{},",
                "\"out_of_order\":{},\"id_mismatch\":{},\"garbled\":{},\"publish_s\":{:.3},\"drain_ms\":{},",
                "\"rss_stable\":{},\"server_rss_end_bytes\":{},\"server_cpu_publish_s\":{:.3},\"server_exited\":{},",
                "\"server_stats\":{{{}}},\"errors\":[{}]}}"
            ),
            self.conns, self.sent, self.delivered, self.lost,
            l.p50, l.p99, l.max, l.p90, l.p999, l.count,
            self.server_rss_idle_bytes, self.server_rss_loaded_bytes, self.rss_per_conn_bytes,
            self.server_cpu_s, self.passed(), self.closed, self.connect_s, self.attempted,
            self.publish_failed, self.server_delivered, self.chunks, self.heartbeats, self.duplicates,
            self.out_of_order, self.id_mismatch, self.garbled, self.publish_s, self.drain_ms,
            self.rss_stable, self.server_rss_end_bytes, self.server_cpu_publish_s, self.server_exited,
            stats.join(","), notes.join(","),
        )
        ;
        // The fixed part ends with the object's closing brace; the optional sections go
        // before it.
        let base = base.strip_suffix('}').unwrap_or(&base);
        format!("{base}{}}}", self.json_extras())
    }

    /// The optional sections, each `,"key":{...}`, for [`Report::json`].
    fn json_extras(&self) -> String {
        let mut s = String::new();
        if let Some(c) = &self.churn {
            let _ = write!(
                s,
                ",\"churn\":{{\"per_min\":{},\"churned\":{},\"reconnected\":{},\"excused\":{},\"excused_received\":{}}}",
                c.per_min, c.churned, c.reconnected, c.excused, c.excused_received
            );
        }
        if let Some((t, r)) = &self.resumed {
            let _ = write!(
                s,
                ",\"resumed\":{{\"transport\":\"{}\",\"reconnects\":{},\"recovered\":{},\"reset\":{},\"header_false\":{},\"header_missing\":{},\"replayed\":{},\"uncursored\":{}}}",
                transport_name(*t), r.reconnects, r.recovered, r.reset, r.header_false, r.header_missing, r.replayed, r.uncursored
            );
        }
        if let Some(w) = &self.slow {
            let _ = write!(
                s,
                ",\"slow\":{{\"readers\":{},\"sent\":{},\"bytes\":{},\"failed\":{},\"server_rss_peak_bytes\":{}}}",
                w.readers, w.sent, w.bytes, w.failed, w.server_rss_peak_bytes
            );
        }
        if let Some(b) = &self.slow_back {
            let _ = write!(
                s,
                ",\"slow_resumed\":{{\"readers\":{},\"cut\":{},\"resumed\":{},\"recovered\":{},\"reset\":{},\"header_false\":{},\"expected\":{},\"received\":{},\"bad\":{}}}",
                b.readers, b.cut, b.resumed, b.recovered, b.reset, b.header_false, b.expected, b.received, b.bad
            );
        }
        if let Some(l) = &self.after_leave {
            let _ = write!(
                s,
                ",\"after_leave\":{{\"at_baseline\":{},\"settle_ms\":{},\"connections\":{},\"ids\":{},\"slots\":{},\"fds\":{},\"fds_baseline\":{},\"close_wait\":{},\"established\":{}}}",
                l.at_baseline(), l.settle_ms, l.connections, l.ids, l.slots, l.fds, l.fds_baseline, l.close_wait, l.established
            );
        }
        s
    }
}

/// The transport's flag value.
fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Test => "test",
        Transport::Sse => "sse",
        Transport::Ws => "ws",
        Transport::Raw => "raw",
    }
}

/// The text report's `resumed:` line.
fn resumed_line(t: Transport, r: &ResumeFigures) -> String {
    format!(
        "{}: {} reconnects gave a cursor: {} recovered, {} reset (Comet-Recovered: false {}, missing {}); {} messages replayed (sent while away, received before the first live one); {} messages without a cursor",
        transport_name(t),
        r.reconnects,
        r.recovered,
        r.reset,
        r.header_false,
        r.header_missing,
        r.replayed,
        r.uncursored
    )
}

/// The text report's `slow came back:` line.
fn slow_back_line(b: &ComebackFigures) -> String {
    format!(
        "{} readers: {} cuts seen, {} came back with a cursor ({} recovered, {} reset; Comet-Recovered: false {}); {} of {} messages received in cursor order, {} bad",
        b.readers, b.cut, b.resumed, b.recovered, b.reset, b.header_false, b.received, b.expected, b.bad
    )
}

#[cfg(test)]
mod tests {
    use super::Report;

    #[test]
    fn json_has_the_required_keys_and_escapes() {
        let r = Report {
            conns: 3,
            notes: vec!["a \"b\"\n".into()],
            ..Report::default()
        };
        let j = r.json();
        for key in [
            "\"conns\":3",
            "\"sent\":",
            "\"delivered\":",
            "\"lost\":",
            "\"latency_us\":{\"p50\":",
            "\"p99\":",
            "\"max\":",
            "\"server_rss_idle_bytes\":",
            "\"server_rss_loaded_bytes\":",
            "\"rss_per_conn_bytes\":",
            "\"server_cpu_s\":",
            "\"errors\":[\"a \\\"b\\\"\\n\"]",
        ] {
            assert!(j.contains(key), "{key} missing from {j}");
        }
        assert!(!j.contains('\n'));
        assert!(r.passed());
        assert!(r.text().ends_with("PASS"));
    }
}
