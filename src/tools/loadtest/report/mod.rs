//! The reports: what a job measured, as a type with a text and a JSON rendering.
//!
//! - [`main_job`]: the main job's [`Report`](main_job::Report) (also soak's).
//! - [`cluster`]: `loadtest --nodes N`'s [`ClusterReport`](cluster::ClusterReport).
//! - [`compare`]: `loadtest compare`'s table, one [`Row`](compare::Row) per server.
//! - [`friends`]: `loadtest friends`'s [`FriendsReport`](friends::FriendsReport).
//! - [`million`]: `loadtest million`'s [`MillionReport`](million::MillionReport).
//! - [`room`]: `loadtest room`'s [`RoomReport`](room::RoomReport).
//!
//! Here: [`Latency`] (percentiles every report prints) and [`json_str`].

pub(crate) mod cluster;
pub(crate) mod compare;
pub(crate) mod friends;
pub(crate) mod main_job;
pub(crate) mod million;
pub(crate) mod room;
pub(crate) mod rounds;

use hdrhistogram::Histogram;

/// Publish-to-receive latency percentiles, microseconds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Latency {
    /// Messages measured.
    pub count: u64,
    /// Median, us.
    pub p50: u64,
    /// 90th percentile, us.
    pub p90: u64,
    /// 99th percentile, us.
    pub p99: u64,
    /// 99.9th percentile, us.
    pub p999: u64,
    /// Largest, us.
    pub max: u64,
}

impl Latency {
    /// Summarises a histogram of microseconds (all zero if it is empty).
    pub(crate) fn from_histogram(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }

    /// `p50 / p90 / p99 / p99.9 / max` in microseconds, for text output.
    pub(crate) fn line(&self) -> String {
        format!(
            "p50 {} us, p90 {} us, p99 {} us, p99.9 {} us, max {} us ({} measured)",
            self.p50, self.p90, self.p99, self.p999, self.max, self.count
        )
    }
}

/// `s` as a JSON string literal.
pub(crate) fn json_str(s: &str) -> String {
    // Serialising a str cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}
