//! `loadtest room`'s report ([`RoomReport`]): deliveries per second, server CPU per delivery,
//! the delivery ceiling's sender CPU per message from the same run, latency per delivery,
//! and every check, in text or JSON.

use std::fmt::Write;

use serde_json::json;

use super::Latency;
use crate::tools::loadtest::jobs::compare::ceiling::Ceiling;
use crate::tools::loadtest::wire::check::room::RoomCounts;

/// What one `loadtest room` run measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct RoomReport {
    /// The server's backend (`--backend`, or `auto`).
    pub(crate) backend: String,
    /// `--transport` (`test`, `sse`, `ws`, `raw`).
    pub(crate) transport: String,
    /// `--rooms`.
    pub(crate) rooms: u64,
    /// `--subs-per-room`.
    pub(crate) subs_per_room: u64,
    /// `--msg-bytes`.
    pub(crate) msg_bytes: usize,
    /// Streams that got their head.
    pub(crate) connected: u64,
    /// Connections that ended or failed during the run.
    pub(crate) closed: u64,
    /// Publishes answered `200`.
    pub(crate) published: u64,
    /// Publishes not answered `200` (or answered without a `delivered` count).
    pub(crate) publish_failed: u64,
    /// Deliveries due: for each publish answered `200`, its room's subscribers.
    pub(crate) expected: u64,
    /// Deliveries that arrived and passed every check.
    pub(crate) delivered: u64,
    /// Deliveries due that did not arrive (summed per connection).
    pub(crate) lost: u64,
    /// The checks' counts.
    pub(crate) counts: RoomCounts,
    /// From the first publish to the last delivery (or the drain's end), seconds.
    pub(crate) window_s: f64,
    /// Server CPU seconds (user + system) over the window.
    pub(crate) server_cpu_s: f64,
    /// Server RSS once every subscriber was connected, bytes.
    pub(crate) rss_connected_bytes: u64,
    /// Server RSS at the end of the window, bytes.
    pub(crate) rss_end_bytes: u64,
    /// Publish-to-receive latency per delivery.
    pub(crate) latency: Latency,
    /// The delivery ceiling's run (same connections, `--msg-bytes` messages), if it ran.
    pub(crate) ceiling: Option<Ceiling>,
    /// Why a figure is missing, and the first errors.
    pub(crate) notes: Vec<String>,
}

impl RoomReport {
    /// Deliveries per second over the window.
    pub(crate) fn deliveries_per_s(&self) -> f64 {
        self.delivered as f64 / self.window_s.max(1e-9)
    }

    /// Server CPU microseconds per delivery (0 without deliveries).
    pub(crate) fn cpu_us_per_delivery(&self) -> f64 {
        if self.delivered == 0 {
            return 0.0;
        }
        self.server_cpu_s * 1e6 / self.delivered as f64
    }

    /// The server's CPU per delivery over the ceiling's sender CPU per message.
    pub(crate) fn vs_ceiling(&self) -> Option<f64> {
        let c = self.ceiling.as_ref()?;
        (c.send_us > 0.0).then(|| self.cpu_us_per_delivery() / c.send_us)
    }

    /// Every due delivery arrived exactly once, in order, unharmed; no publish failed and no
    /// subscriber was lost.
    pub(crate) fn passed(&self) -> bool {
        self.lost == 0
            && self.counts.errors() == 0
            && self.publish_failed == 0
            && self.closed == 0
            && self.connected == self.rooms * self.subs_per_room
    }

    /// The report for people.
    pub(crate) fn text(&self) -> String {
        let mut s = String::new();
        let c = &self.counts;
        // Writing to a String cannot fail.
        let _ = writeln!(
            s,
            "room: {} rooms x {} subscribers ({}), {} B messages, backend {}",
            self.rooms, self.subs_per_room, self.transport, self.msg_bytes, self.backend
        );
        let _ = writeln!(
            s,
            "subscribers: {} connected, {} closed during the run",
            self.connected, self.closed
        );
        let _ = writeln!(
            s,
            "published: {} answered 200, {} failed",
            self.published, self.publish_failed
        );
        let _ = writeln!(
            s,
            "deliveries: {} of {} due, {} lost, {} duplicate, {} out of order, {} wrong room, {} garbled; {} heartbeats",
            self.delivered, self.expected, self.lost, c.duplicates, c.out_of_order, c.wrong_room, c.garbled, c.heartbeats
        );
        let _ = writeln!(
            s,
            "rate: {:.0} deliveries/s over {:.2} s",
            self.deliveries_per_s(),
            self.window_s
        );
        let _ = writeln!(
            s,
            "server CPU: {:.2} s, {:.2} us per delivery",
            self.server_cpu_s,
            self.cpu_us_per_delivery()
        );
        match (&self.ceiling, self.vs_ceiling()) {
            (Some(c), Some(r)) => {
                let _ = writeln!(
                    s,
                    "ceiling: sender {:.2} us/msg, receiver {:.2} us/msg, {:.0} msgs/s ({} conns, {} B); server/ceiling sender {r:.2}x",
                    c.send_us, c.recv_us, c.deliv_mps, c.n, self.msg_bytes
                );
            }
            _ => s.push_str("ceiling: not measured\n"),
        }
        let _ = writeln!(
            s,
            "server RSS: {} KiB connected, {} KiB at the end",
            self.rss_connected_bytes / 1024,
            self.rss_end_bytes / 1024
        );
        let _ = writeln!(s, "latency per delivery: {}", self.latency.line());
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        let _ = write!(s, "result: {verdict}");
        s
    }

    /// The report as one JSON object: the keys `deliveries_per_s`,
    /// `cpu_us_per_delivery`, `ceiling_sender_us_per_msg` (null when not measured), `lost`,
    /// `duplicates`, `latency_us` (`p50`, `p99`, `p999`), and the rest of the figures.
    pub(crate) fn json(&self) -> String {
        let c = &self.counts;
        let ceiling = self.ceiling.as_ref();
        json!({
            "backend": self.backend,
            "transport": self.transport,
            "rooms": self.rooms,
            "subs_per_room": self.subs_per_room,
            "msg_bytes": self.msg_bytes,
            "connected": self.connected,
            "closed": self.closed,
            "published": self.published,
            "publish_failed": self.publish_failed,
            "expected": self.expected,
            "delivered": self.delivered,
            "lost": self.lost,
            "duplicates": c.duplicates,
            "out_of_order": c.out_of_order,
            "wrong_room": c.wrong_room,
            "garbled": c.garbled,
            "heartbeats": c.heartbeats,
            "window_s": self.window_s,
            "deliveries_per_s": self.deliveries_per_s(),
            "server_cpu_s": self.server_cpu_s,
            "cpu_us_per_delivery": self.cpu_us_per_delivery(),
            "ceiling_sender_us_per_msg": ceiling.map(|c| c.send_us),
            "ceiling_receiver_us_per_msg": ceiling.map(|c| c.recv_us),
            "ceiling_msgs_per_s": ceiling.map(|c| c.deliv_mps),
            "cpu_vs_ceiling_sender": self.vs_ceiling(),
            "server_rss_connected_bytes": self.rss_connected_bytes,
            "server_rss_end_bytes": self.rss_end_bytes,
            "latency_us": {
                "count": self.latency.count,
                "p50": self.latency.p50,
                "p99": self.latency.p99,
                "p999": self.latency.p999,
                "max": self.latency.max,
            },
            "notes": self.notes,
            "passed": self.passed(),
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::RoomReport;
    use crate::tools::loadtest::jobs::compare::ceiling::Ceiling;

    #[test]
    fn figures_text_and_json() {
        let mut r = RoomReport {
            rooms: 1,
            subs_per_room: 2,
            connected: 2,
            published: 10,
            expected: 20,
            delivered: 20,
            window_s: 2.0,
            server_cpu_s: 0.0001,
            ..RoomReport::default()
        };
        assert_eq!(r.deliveries_per_s(), 10.0);
        assert!((r.cpu_us_per_delivery() - 5.0).abs() < 1e-9);
        assert!(r.passed());
        let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(v["ceiling_sender_us_per_msg"], serde_json::Value::Null);
        assert_eq!(v["latency_us"]["p999"], 0);
        assert!(r.text().contains("ceiling: not measured"));
        r.ceiling = Some(Ceiling {
            n: 2,
            deliv_mps: 1.0,
            send_us: 4.0,
            recv_us: 4.0,
            row: String::new(),
        });
        assert_eq!(r.vs_ceiling(), Some(1.25));
        let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(v["ceiling_sender_us_per_msg"], 4.0);
        for k in [
            "deliveries_per_s",
            "cpu_us_per_delivery",
            "lost",
            "duplicates",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        r.lost = 1;
        assert!(!r.passed());
        assert!(r.text().ends_with("result: FAIL"));
    }
}
