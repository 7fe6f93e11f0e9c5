//! Progress on stderr for `loadtest million`'s long phases: a bar when stderr is a terminal
//! (else a line every 5 s, written by the phase), and a rate over the last second.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar on stderr, hidden when stderr is not a terminal (then lines every 5 s).
pub(super) fn bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "{prefix:>8} [{elapsed_precise}] {bar:40.cyan/blue} {pos}/{len} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    b.set_style(style);
    b.set_prefix(what.to_string());
    b.enable_steady_tick(Duration::from_millis(200));
    b
}

/// A rate over the last second or so.
pub(super) struct RateMeter {
    mark: (u64, Instant),
    rate: f64,
}

impl RateMeter {
    /// A meter starting now at 0.
    pub(super) fn new() -> RateMeter {
        RateMeter {
            mark: (0, Instant::now()),
            rate: 0.0,
        }
    }

    /// Feeds the current count; returns the rate per second over the last window.
    pub(super) fn update(&mut self, count: u64, now: Instant) -> f64 {
        let dt = now.duration_since(self.mark.1).as_secs_f64();
        if dt >= 1.0 {
            self.rate = count.saturating_sub(self.mark.0) as f64 / dt;
            self.mark = (count, now);
        }
        self.rate
    }
}
