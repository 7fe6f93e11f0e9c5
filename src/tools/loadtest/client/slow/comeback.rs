//! Slow readers that come back (`--slow-readers` with a resuming `--transport`): while the
//! publisher runs, a watcher reads the server's `/stats` every 100 ms; when the count of
//! subscribers cut (`slow_consumers_closed` + `send_timeouts`) grows and then holds still
//! for 100 ms (or after 500 ms), it drains every slow reader once (a reader that does not read cannot see its own end: the end waits behind
//! the data its full receive window holds back). Each reader whose stream ended connects
//! again at once with its last cursor. Between those drains nobody reads, so the readers
//! stay slow. Once the publisher has stopped, [`finish`] reads every reader until it has
//! every message sent to it, coming back again after any further cut.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::reader::{Drained, SlowReader};
use super::ComebackFigures;
use crate::tools::loadtest::wire::answer::fetch_stats;

/// Time between two looks at `/stats`.
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// Longest wait, after a cut, for the count of cuts to stop growing before the drain.
const SETTLE_MAX: Duration = Duration::from_millis(500);

/// How long [`finish`] waits on an open stream that brings nothing new before it gives up
/// on that reader (the publisher has stopped: what is due is in flight or held back).
const FINISH_IDLE: Duration = Duration::from_millis(500);

/// Longest time [`finish`] gives one reader to get every message sent to it.
const FINISH_PER_READER: Duration = Duration::from_secs(5);

/// Most comebacks of one reader in [`finish`] (a server that cuts at once, forever).
const MAX_COMEBACKS: u32 = 100;

/// Where the slow readers are and what their messages look like.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Watch {
    /// The subscriber listener (to come back to).
    pub(crate) sub: SocketAddr,
    /// The publish listener (its `/stats`).
    pub(crate) publish: SocketAddr,
    /// Body bytes of every message to a slow reader.
    pub(crate) msg_bytes: usize,
}

/// The watcher's thread: it hands the readers and figures back when stopped.
pub(crate) type Watcher = JoinHandle<(Vec<SlowReader>, ComebackFigures)>;

/// Starts the watcher over `readers` until `stop` is set. Errors: the thread cannot start.
pub(crate) fn spawn(
    readers: Vec<SlowReader>,
    w: Watch,
    stop: Arc<AtomicBool>,
) -> std::io::Result<Watcher> {
    std::thread::Builder::new()
        .name("slow-watch".into())
        .spawn(move || watch(readers, w, &stop))
}

fn watch(
    mut readers: Vec<SlowReader>,
    w: Watch,
    stop: &AtomicBool,
) -> (Vec<SlowReader>, ComebackFigures) {
    let mut fig = ComebackFigures {
        readers: readers.len() as u64,
        ..ComebackFigures::default()
    };
    let mut cuts_seen = cuts(w.publish);
    // The first cut not yet answered by a drain.
    let mut unanswered: Option<Instant> = None;
    while !stop.load(Relaxed) {
        std::thread::sleep(WATCH_EVERY);
        let now = cuts(w.publish);
        let growing = now > cuts_seen;
        cuts_seen = now;
        if growing {
            unanswered.get_or_insert_with(Instant::now);
        }
        // Readers fill alike and are cut together: wait while the count still grows (at
        // most 1 s), so that a drain does not spare the readers about to be cut.
        let due = unanswered.is_some_and(|t| !growing || t.elapsed() >= SETTLE_MAX);
        if due {
            unanswered = None;
            for r in &mut readers {
                if r.drain(w.msg_bytes, &mut fig) == Drained::Ended {
                    come_back(r, w.sub, &mut fig);
                }
            }
        }
    }
    (readers, fig)
}

/// Subscribers the server has cut so far (`slow_consumers_closed` + `send_timeouts`).
fn cuts(publish: SocketAddr) -> u64 {
    let stats = fetch_stats(publish).unwrap_or_default();
    stats
        .iter()
        .filter(|(k, _)| k == "slow_consumers_closed" || k == "send_timeouts")
        .map(|(_, v)| *v)
        .sum()
}

/// Counts a cut and connects `r` again with its cursor (a failure is noted).
fn come_back(r: &mut SlowReader, sub: SocketAddr, fig: &mut ComebackFigures) {
    fig.cut += 1;
    if let Err(e) = r.come_back(sub, fig) {
        fig.note(r.id, &format!("{e:#}"));
    }
}

/// Once the publisher has stopped: reads each reader (coming back after a cut) until it has
/// `want[k]` messages (reader `k`), at most 5 s each and at most 500 ms without a new one;
/// the figures with what was expected and received.
pub(crate) fn finish(
    mut readers: Vec<SlowReader>,
    mut fig: ComebackFigures,
    want: &[u64],
    w: Watch,
) -> ComebackFigures {
    for (k, r) in readers.iter_mut().enumerate() {
        let want = want.get(k).copied().unwrap_or(0);
        fig.expected += want;
        let t0 = Instant::now();
        let (mut comebacks, mut progress) = (0, (r.got, Instant::now()));
        while r.got < want && t0.elapsed() < FINISH_PER_READER {
            let drained = r.drain(w.msg_bytes, &mut fig);
            if r.got >= want {
                break; // An end after everything needs no comeback.
            }
            if r.got != progress.0 {
                progress = (r.got, Instant::now());
            }
            match drained {
                Drained::Ended if comebacks < MAX_COMEBACKS => {
                    comebacks += 1;
                    come_back(r, w.sub, &mut fig);
                }
                Drained::Open if progress.1.elapsed() < FINISH_IDLE => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Drained::Ended | Drained::Open => break,
            }
        }
        fig.received += r.got;
    }
    fig
}
