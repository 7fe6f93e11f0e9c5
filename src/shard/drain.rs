//! Stage 10b, drain: SIGTERM's paced end of the streams (`--drain-period`).
//!
//! The server shuts every listener down (`shutdown(SHUT_RD)` on a listening socket takes
//! it out of its SO_REUSEPORT group at once, so new connections go to the other members: a
//! `--takeover` instance), then sets the mesh's `draining` flag
//! ([`crate::mesh::Mesh::begin_drain`]); at its next turn each shard:
//! 1. shuts its own two listeners down too (a no-op after the server did; it keeps the
//!    shard right when driven without one) and cancels their accepts; accepts are not
//!    re-armed, and a connection that still arrives (accepted just before, or handed over by
//!    another shard) gets the 503 of a stopping shard;
//! 2. closes its idle publisher connections, and the others once the replies they are owed
//!    are written (a publisher reconnects, to the new instance if there is one, so the
//!    drained subscribers find the messages published from then on where they reconnect);
//! 3. counts its live streams (`total`) and from then on, at every turn (the loop wakes every
//!    20 ms while draining), ends as many more as make `total * elapsed / period` ended,
//!    walking a cursor over its connection slab (wrapping, so a stream placed here after
//!    the start is ended too). Each stream gets its transport's proper end
//!    ([`Shard::end_stream`]: last chunk, WebSocket close 1001, SSE a randomized `retry:`
//!    first; a held poll its answer), written after the messages already queued to it, so a
//!    client that resumes with its cursor loses nothing.
//!
//! Once the period has passed (or every connection is gone), the server shuts the shards
//! down as before ([`Shard::begin_stop`]), which ends whatever is left at once; so does a
//! second SIGTERM or a SIGINT. Nothing here runs unless the drain has started: the turn
//! reads one flag.

use std::time::Instant;

use super::Shard;
use crate::conn::{Flags, State, NONE};
use crate::driver::Driver;

/// The paced drain's state (one per shard).
#[derive(Default)]
pub(super) struct Drain {
    /// When this shard saw the drain start; `None` before.
    started: Option<Instant>,
    /// Streams live at the start.
    total: u64,
    /// Streams ended by the pace so far.
    ended: u64,
    /// The next slab slot to look at.
    cursor: u32,
    /// The pace has ended `total` streams (or found none left); logged once.
    done: bool,
}

impl Drain {
    /// Whether the drain is under way on this shard (the loop then wakes often).
    pub(super) fn active(&self) -> bool {
        self.started.is_some() && !self.done
    }

    /// Whether the drain has started on this shard (accepts are not re-armed).
    pub(super) fn started(&self) -> bool {
        self.started.is_some()
    }
}

/// How many of `total` streams should be ended `elapsed_ms` into a `period_ms` drain (all of
/// them once the period is over, or at once for a period of 0).
pub(super) fn due(total: u64, elapsed_ms: u64, period_ms: u64) -> u64 {
    if elapsed_ms >= period_ms {
        return total;
    }
    (u128::from(total) * u128::from(elapsed_ms) / u128::from(period_ms)) as u64
}

impl<D: Driver> Shard<D> {
    /// One step of the drain, at the start of a turn while the mesh says draining: starts it
    /// on the first call, then ends the streams the pace says are due.
    pub(super) fn drain_tick(&mut self) {
        if self.lp.stopping() || self.drain.done {
            return; // the stop ends what is left
        }
        let now = Instant::now();
        let start = match self.drain.started {
            Some(t) => t,
            None => {
                self.start_drain(now);
                now
            }
        };
        let elapsed = now.duration_since(start).as_millis() as u64;
        let target = due(self.drain.total, elapsed, self.cfg.drain_period_ms);
        while self.drain.ended < target {
            match self.next_stream() {
                Some(i) => {
                    self.end_stream(i);
                    self.drain.ended += 1;
                }
                None => {
                    // Fewer left than counted (some closed on their own): nothing to pace.
                    self.drain.ended = self.drain.total;
                    break;
                }
            }
        }
        if self.drain.ended >= self.drain.total {
            self.drain.done = true;
            tracing::info!(
                shard = self.me,
                ended = self.drain.total,
                ms = elapsed,
                "drain: every stream ended"
            );
        }
    }

    /// The drain's first step on this shard: listeners out, publishers closed, streams counted.
    fn start_drain(&mut self, now: Instant) {
        self.drain.started = Some(now);
        self.stop_accepts();
        self.shutdown_listeners();
        self.end_feeds();
        let mut total = 0;
        for i in 0..self.conns.slots() as u32 {
            let c = self.conns[i];
            match c.state {
                State::SubStream | State::SubJoining => total += 1,
                // Replies still owed: close after writing them.
                State::Pub if c.aux != NONE && !self.aux[c.aux].replies.is_empty() => {
                    self.conns[i].flags.insert(Flags::CLOSE_AFTER)
                }
                State::Pub => self.close(i),
                _ => {}
            }
        }
        self.drain.total = total;
        tracing::info!(
            shard = self.me,
            streams = total,
            period_ms = self.cfg.drain_period_ms,
            "drain: listeners closed, ending streams at a steady pace"
        );
    }

    /// The next live stream from the cursor on (wrapping once), advancing the cursor past it.
    fn next_stream(&mut self) -> Option<u32> {
        let slots = self.conns.slots() as u32;
        for _ in 0..slots {
            let i = self.drain.cursor % slots;
            self.drain.cursor = i + 1;
            if self.conns[i].state == State::SubStream {
                return Some(i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::due;

    #[test]
    fn the_pace_is_even_and_ends_on_time() {
        // 1,000 streams over 10 s: 100 more every second, all at the end, none at the start.
        assert_eq!(due(1_000, 0, 10_000), 0);
        assert_eq!(due(1_000, 1_000, 10_000), 100);
        assert_eq!(due(1_000, 5_500, 10_000), 550);
        assert_eq!(due(1_000, 9_999, 10_000), 999);
        assert_eq!(due(1_000, 10_000, 10_000), 1_000);
        assert_eq!(due(1_000, 60_000, 10_000), 1_000);
        // A period of 0 ends everything at once; no overflow at a million streams.
        assert_eq!(due(7, 0, 0), 7);
        assert_eq!(due(1_000_000, u64::MAX / 2, u64::MAX), 499_999);
    }
}
