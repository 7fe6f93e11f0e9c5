//! The drain figures of `loadtest million --drain-after` ([`DrainFigures`]): what the clients
//! saw while the server drained into a `--takeover` server, as text lines and a JSON object.

use std::fmt::Write as _;

/// What the clients saw from the SIGTERM on, second by second.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct DrainFigures {
    /// The server's `--drain-period`, seconds.
    pub period_s: f64,
    /// Streams open when the SIGTERM was sent.
    pub open: u64,
    /// Stream ends the clients saw in each second after the SIGTERM (from their progress
    /// lines, every 250 ms, so a close may count in the second after the one it happened in).
    pub closes_per_s: Vec<u64>,
    /// `200` heads of reconnections in each second after the SIGTERM.
    pub reconnects_per_s: Vec<u64>,
    /// Reconnections that got no `200` head.
    pub reconnect_failed: u64,
    /// The old server's exit code (`None`: it did not exit, or a signal ended it).
    pub exit_code: Option<i32>,
    /// The `--takeover` server's own counts at the end (`None`: its `/metrics` did not
    /// answer): where the failed reconnects were refused.
    pub takeover: Option<TakeoverCounts>,
}

/// The `--takeover` server's counters at the end of the drain, every shard summed (its
/// `GET /metrics`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TakeoverCounts {
    /// Connections it answered 503 (`--max-conns`, or stopping).
    pub rejected_at_capacity: u64,
    /// Connections it answered 408 (`--head-timeout`).
    pub head_timeouts: u64,
    /// Its accepts that failed (EMFILE...): each pauses accepting for 100 ms; the connection
    /// waits in the listener's queue.
    pub accept_errors: u64,
}

impl TakeoverCounts {
    fn json(&self) -> String {
        format!(
            "{{\"rejected_at_capacity\":{},\"head_timeouts\":{},\"accept_errors\":{}}}",
            self.rejected_at_capacity, self.head_timeouts, self.accept_errors
        )
    }
}

impl DrainFigures {
    /// Every stream end seen.
    pub(crate) fn closes(&self) -> u64 {
        self.closes_per_s.iter().sum()
    }

    /// Every reconnection that got its head.
    pub(crate) fn reconnects(&self) -> u64 {
        self.reconnects_per_s.iter().sum()
    }

    /// The even pace: open streams / period, per second.
    pub(crate) fn even_per_s(&self) -> f64 {
        self.open as f64 / self.period_s.max(1e-9)
    }

    /// The text lines (each ending in a newline).
    pub(crate) fn text(&self) -> String {
        let peak = |v: &[u64]| v.iter().copied().max().unwrap_or(0);
        let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ");
        let mut s = String::new();
        let _ = writeln!(
            s,
            "drain:      SIGTERM with {} streams open, --drain-period {:.0} s (even pace {:.0}/s); old server exit {}",
            self.open,
            self.period_s,
            self.even_per_s(),
            self.exit_code.map_or("none".to_string(), |c| c.to_string())
        );
        let _ = writeln!(
            s,
            "  closes:     {} seen by the clients, peak {}/s; per second: {}",
            self.closes(),
            peak(&self.closes_per_s),
            list(&self.closes_per_s)
        );
        let _ = writeln!(
            s,
            "  reconnects: {} to the --takeover server, {} failed, peak {}/s; per second: {}",
            self.reconnects(),
            self.reconnect_failed,
            peak(&self.reconnects_per_s),
            list(&self.reconnects_per_s)
        );
        if let Some(t) = &self.takeover {
            let _ = writeln!(
                s,
                "  takeover server: {} answered 503 (--max-conns or stopping), {} answered 408 (--head-timeout), {} accepts failed (EMFILE...: paused 100 ms, the connection waits queued)",
                t.rejected_at_capacity, t.head_timeouts, t.accept_errors
            );
        }
        s
    }

    /// The figures as one JSON object.
    pub(crate) fn json(&self) -> String {
        let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        format!(
            "{{\"period_s\":{},\"open\":{},\"closes\":{},\"reconnects\":{},\"reconnect_failed\":{},\"exit_code\":{},\"closes_per_s\":[{}],\"reconnects_per_s\":[{}],\"takeover\":{}}}",
            self.period_s,
            self.open,
            self.closes(),
            self.reconnects(),
            self.reconnect_failed,
            self.exit_code.map_or("null".to_string(), |c| c.to_string()),
            list(&self.closes_per_s),
            list(&self.reconnects_per_s),
            self.takeover
                .as_ref()
                .map_or("null".to_string(), TakeoverCounts::json)
        )
    }
}
