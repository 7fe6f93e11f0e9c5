//! The report of the main job's rounds (`loadtest --rounds N`, [`crate::tools::loadtest::jobs::ck10`]):
//! one line per round and the growth of the RSS after close, in text or JSON.

use std::fmt::Write;

use crate::tools::loadtest::wire::resume::Transport;

/// The round from which the growth of the RSS after close is measured (the first rounds
/// climb to the allocator's high-water mark).
pub(crate) const GROWTH_FROM: u32 = 10;

/// One round's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Round {
    /// 1-based.
    pub(crate) round: u32,
    /// Streams that got their head.
    pub(crate) connected: u64,
    /// Publishes answered `200`.
    pub(crate) published: u64,
    /// Messages received, distinct.
    pub(crate) delivered: u64,
    /// Duplicate, out-of-order, misdelivered or garbled chunks.
    pub(crate) bad_chunks: u64,
    /// Server RSS with every subscriber connected, bytes.
    pub(crate) rss_loaded_bytes: u64,
    /// Server RSS once every subscriber closed and it settled, bytes.
    pub(crate) rss_after_close_bytes: u64,
    /// The server came back to its baseline (connections, ids, slots, fds) after close.
    pub(crate) at_baseline: bool,
}

/// The whole run.
#[derive(Debug, Clone)]
pub(crate) struct RoundsReport {
    /// `--conns`.
    pub(crate) conns: u64,
    /// `--transport`.
    pub(crate) transport: Transport,
    /// Server RSS before the first round, bytes.
    pub(crate) rss_idle_bytes: u64,
    /// Every round, in order.
    pub(crate) rounds: Vec<Round>,
}

/// `--transport`'s value as typed (`test`, `sse`, `ws`, `raw`).
fn transport_name(t: Transport) -> String {
    format!("{t:?}").to_lowercase()
}

impl RoundsReport {
    /// Growth of the RSS after close from round [`GROWTH_FROM`] (from the first in a run of
    /// at most that many rounds) to the last, percent, and the round it starts from; `None`
    /// without rounds.
    pub(crate) fn growth_pct(&self) -> Option<(u32, f64)> {
        let last = self.rounds.last()?;
        let want = if last.round > GROWTH_FROM {
            GROWTH_FROM
        } else {
            1
        };
        let from = self.rounds.iter().find(|r| r.round == want)?;
        let (a, b) = (
            from.rss_after_close_bytes as f64,
            last.rss_after_close_bytes as f64,
        );
        Some((from.round, if a > 0.0 { (b - a) / a * 100.0 } else { 0.0 }))
    }

    /// Every message of every round arrived, once and right, and the server came back to
    /// baseline after each.
    pub(crate) fn passed(&self) -> bool {
        !self.rounds.is_empty()
            && self.rounds.iter().all(|r| {
                r.connected == self.conns
                    && r.published == self.conns
                    && r.delivered == r.published
                    && r.bad_chunks == 0
                    && r.at_baseline
            })
    }

    /// The text report: one line per round, then the growth.
    pub(crate) fn text(&self) -> String {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let mut s = String::new();
        let _ = writeln!(s, "== uring-comet loadtest rounds ==");
        let _ = writeln!(
            s,
            "{} subscribers a round ({}), server RSS idle {:.1} MiB",
            self.conns,
            transport_name(self.transport),
            mib(self.rss_idle_bytes)
        );
        let _ = writeln!(
            s,
            "round  delivered  bad  loaded MiB  after close MiB  baseline"
        );
        for r in &self.rounds {
            let _ = writeln!(
                s,
                "{:>5}  {:>9}  {:>3}  {:>10.1}  {:>15.1}  {}",
                r.round,
                format!("{}/{}", r.delivered, r.published),
                r.bad_chunks,
                mib(r.rss_loaded_bytes),
                mib(r.rss_after_close_bytes),
                if r.at_baseline { "yes" } else { "NO" }
            );
        }
        if let Some((from, pct)) = self.growth_pct() {
            let last = self.rounds.last().map_or(0, |r| r.round);
            let _ = writeln!(s, "RSS after close, round {from} to {last}: {pct:+.2}%");
        }
        let _ = write!(s, "result: {}", if self.passed() { "PASS" } else { "FAIL" });
        s
    }

    /// The JSON report: `conns`, `transport`, `server_rss_idle_bytes`, `rounds` (one object
    /// per round), `growth_from_round`, `rss_after_close_growth_pct`, `passed`.
    pub(crate) fn json(&self) -> String {
        let rounds: Vec<String> = self
            .rounds
            .iter()
            .map(|r| {
                format!(
                    "{{\"round\":{},\"connected\":{},\"published\":{},\"delivered\":{},\"bad_chunks\":{},\"rss_loaded_bytes\":{},\"rss_after_close_bytes\":{},\"at_baseline\":{}}}",
                    r.round, r.connected, r.published, r.delivered, r.bad_chunks,
                    r.rss_loaded_bytes, r.rss_after_close_bytes, r.at_baseline
                )
            })
            .collect();
        let (from, pct) = self.growth_pct().unwrap_or((0, 0.0));
        format!(
            "{{\"conns\":{},\"transport\":\"{}\",\"server_rss_idle_bytes\":{},\"rounds\":[{}],\"growth_from_round\":{from},\"rss_after_close_growth_pct\":{pct:.3},\"passed\":{}}}",
            self.conns,
            transport_name(self.transport),
            self.rss_idle_bytes,
            rounds.join(","),
            self.passed()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{Round, RoundsReport};
    use crate::tools::loadtest::wire::resume::Transport;

    #[test]
    fn growth_and_json() {
        let round = |n: u32, rss: u64| Round {
            round: n,
            connected: 2,
            published: 2,
            delivered: 2,
            rss_after_close_bytes: rss,
            at_baseline: true,
            ..Round::default()
        };
        let mut r = RoundsReport {
            conns: 2,
            transport: Transport::Test,
            rss_idle_bytes: 1,
            rounds: (1..=12).map(|n| round(n, 1000 + u64::from(n))).collect(),
        };
        let (from, pct) = r.growth_pct().unwrap();
        assert_eq!(from, 10);
        assert!((pct - 200.0 / 1010.0).abs() < 1e-9, "{pct}");
        assert!(r.passed());
        let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(v["rounds"][11]["rss_after_close_bytes"], 1012);
        assert_eq!(v["passed"], true);
        r.rounds[3].delivered = 1;
        assert!(!r.passed());
        assert!(r.text().ends_with("result: FAIL"));
    }
}
