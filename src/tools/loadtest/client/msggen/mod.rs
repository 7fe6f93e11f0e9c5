//! The publisher side (the seed's msggen): `parallel` generators, each a keep-alive connection
//! that `POST`s a message to a random id every `interval`, on one thread with one mio loop.
//!
//! Each generator keeps its own schedule (start staggered by interval / parallel, then one
//! message per interval), so the total rate is parallel / interval however slow single answers
//! are: a generator whose answer came late sends its next message at once. One request is in
//! flight per generator, on a [`PubConn`](super::publish::PubConn) as compare's pipelined
//! publishers use.
//!
//! - `generator`: one generator's schedule, request and answer.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use mio::{Events, Poll};

use crate::tools::loadtest::wire::check::Bitmap;
use crate::tools::loadtest::wire::url::UrlTemplate;
use generator::{connect, fail, note, on_event, send, Gen, GenState, MAX_CONNECTS};

mod generator;

/// What a msggen run does.
pub(crate) struct MsggenConfig {
    /// Where to `POST` (`{id}` is the target id).
    pub(crate) url: UrlTemplate,
    /// Generators (keep-alive connections).
    pub(crate) parallel: usize,
    /// Messages in all, split evenly over the generators.
    pub(crate) total: u64,
    /// Time between one generator's messages.
    pub(crate) interval: Duration,
    /// Target ids are drawn uniformly from 1..=max_id.
    pub(crate) max_id: u64,
    /// If set, the target of message `first_seq + k` is `ids_by_seq[k]` instead (a plan
    /// made by the caller, who then knows each message's target).
    pub(crate) ids_by_seq: Option<Arc<Vec<u64>>>,
    /// Sequence number of the first message (the rest follow in order).
    pub(crate) first_seq: u64,
    /// PRNG seed (xorshift64*); the same seed gives the same ids.
    pub(crate) seed: u64,
    /// How long after the last scheduled send to wait for answers.
    pub(crate) tail: Duration,
    /// Keep a [`SendRecord`] of every publish answered `200` (in [`MsggenResult::sends`]),
    /// for a checker that must know when each message was sent (subscriber churn).
    pub(crate) record_sends: bool,
}

/// One publish answered `200`: which id, and when (CLOCK_MONOTONIC microseconds, as
/// [`now_us`](crate::tools::loadtest::host::proc::now_us)) the request was written and its answer read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SendRecord {
    /// The message's sequence number.
    pub(crate) seq: u64,
    /// Its target id.
    pub(crate) id: u64,
    /// When the request was written.
    pub(crate) sent_us: u64,
    /// When the `200` answer was read.
    pub(crate) answered_us: u64,
}

/// Counters for other threads, and the stop flag the loop obeys.
#[derive(Debug, Default)]
pub(crate) struct MsggenShared {
    /// Publishes answered `200`.
    pub(crate) ok: AtomicU64,
    /// Set by another thread to end the loop (in-flight requests count as failed).
    pub(crate) stop: AtomicBool,
}

/// What a msggen run did.
#[derive(Debug, Default)]
pub(crate) struct MsggenResult {
    /// Requests written.
    pub(crate) attempted: u64,
    /// Answered `200` ("sent").
    pub(crate) ok: u64,
    /// Not answered `200`: other status, connection lost, or no answer in time.
    pub(crate) failed: u64,
    /// `200` answers without a readable `delivered` number (errors too).
    pub(crate) bad_answers: u64,
    /// Sum of `delivered` over the `200` answers.
    pub(crate) delivered_sum: u64,
    /// Sequence numbers answered `200`.
    pub(crate) ok_seqs: Bitmap,
    /// From the first send to the end of the loop.
    pub(crate) elapsed: Duration,
    /// The first few errors, described.
    pub(crate) notes: Vec<String>,
    /// With [`MsggenConfig::record_sends`]: every publish answered `200`, in answer order.
    pub(crate) sends: Vec<SendRecord>,
    /// Whether to fill `sends` (copied from the config).
    record_sends: bool,
}

/// A small PRNG (xorshift64*); enough to spread ids, no crate needed.
pub(crate) struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (0 is replaced: xorshift needs a non-zero state).
    pub(crate) fn new(seed: u64) -> Self {
        XorShift(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next pseudo-random number.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Runs the publishers on this thread until every message is answered, the deadline (last
/// scheduled send + tail) passes, or `shared.stop` is set. Errors: the poll failed.
pub(crate) fn run(cfg: MsggenConfig, shared: Arc<MsggenShared>) -> Result<MsggenResult> {
    run_padded(cfg, 0, shared)
}

/// As [`run`], each body padded to `pad_to` bytes ([`format_room_body`](crate::tools::loadtest::wire::check::room::format_room_body)'s
/// `:xxx...`; `loadtest room --msg-bytes`); 0 pads nothing (msggen's bodies).
pub(crate) fn run_padded(
    cfg: MsggenConfig,
    pad_to: usize,
    shared: Arc<MsggenShared>,
) -> Result<MsggenResult> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(256);
    let mut res = MsggenResult {
        record_sends: cfg.record_sends,
        ..MsggenResult::default()
    };
    let start = Instant::now();
    let (mut gens, deadline) = schedule(&cfg, start);
    let mut plan = Plan {
        rng: XorShift::new(cfg.seed),
        next_seq: cfg.first_seq,
        cfg: &cfg,
        pad_to,
    };
    loop {
        let now = Instant::now();
        let done = gens
            .iter()
            .all(|g| g.left == 0 && g.state != GenState::Busy);
        if done || now >= deadline || shared.stop.load(Relaxed) {
            break;
        }
        let timeout = deadline
            .saturating_duration_since(now)
            .min(Duration::from_millis(100));
        let timeout = plan.turn(&poll, &mut gens, &mut res, now, timeout);
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        for ev in events.iter() {
            let Some(g) = gens.get_mut(ev.token().0) else {
                continue;
            };
            // Errors and hang-ups are handled by the write or read that reports them.
            let failed = ev.is_error() || ev.is_read_closed();
            let (w, r) = (ev.is_writable() || failed, ev.is_readable() || failed);
            on_event(&mut res, g, ev.token().0, w, r);
        }
        shared.ok.store(res.ok, Relaxed);
    }
    for (i, g) in gens.iter_mut().enumerate() {
        if g.state == GenState::Busy {
            let why = format!("publisher {i}: no answer before the deadline");
            fail(&mut res, g, why);
        }
        // Messages never sent (server gone, or stopped early) are neither sent nor failed.
        g.close();
    }
    res.elapsed = start.elapsed();
    shared.ok.store(res.ok, Relaxed);
    Ok(res)
}

/// The generators (starts staggered by interval / parallel, messages split evenly) and the
/// deadline: the last scheduled send plus the tail.
fn schedule(cfg: &MsggenConfig, start: Instant) -> (Vec<Gen>, Instant) {
    let parallel = cfg.parallel.max(1);
    let (per, extra) = (cfg.total / parallel as u64, cfg.total % parallel as u64);
    let gens = (0..parallel)
        .map(|g| {
            let first_due = start + cfg.interval.mul_f64(g as f64 / parallel as f64);
            Gen::new(first_due, per + u64::from((g as u64) < extra))
        })
        .collect();
    let most = per + u64::from(extra > 0);
    (gens, start + cfg.interval.mul_f64(most as f64) + cfg.tail)
}

/// Which message goes where next.
struct Plan<'a> {
    cfg: &'a MsggenConfig,
    rng: XorShift,
    next_seq: u64,
    /// Bodies padded to this many bytes (0: not padded).
    pad_to: usize,
}

impl Plan<'_> {
    /// Connects the generators that are down with messages left, sends on the idle ones
    /// whose message is due; returns `timeout` cut to the next message due.
    fn turn(
        &mut self,
        poll: &Poll,
        gens: &mut [Gen],
        res: &mut MsggenResult,
        now: Instant,
        mut timeout: Duration,
    ) -> Duration {
        let cfg = self.cfg;
        for (i, g) in gens.iter_mut().enumerate() {
            if g.state == GenState::Down && g.left > 0 && g.connects < MAX_CONNECTS {
                g.connects += 1;
                if let Err(e) = connect(poll, cfg.url.addr, g, i) {
                    note(res, format!("publisher {i}: connect: {e}"));
                }
            }
            if g.state != GenState::Idle || g.left == 0 {
                continue;
            }
            if g.next_due > now {
                timeout = timeout.min(g.next_due - now);
                continue;
            }
            let id = match &cfg.ids_by_seq {
                Some(plan) => plan[(self.next_seq - cfg.first_seq) as usize % plan.len().max(1)],
                None => 1 + self.rng.next_u64() % cfg.max_id.max(1),
            };
            g.next_due += cfg.interval;
            send(res, g, i, &cfg.url, (id, self.next_seq), self.pad_to);
            self.next_seq += 1;
        }
        timeout
    }
}

#[cfg(test)]
mod tests {
    use super::XorShift;

    #[test]
    fn xorshift_is_deterministic_and_spreads() {
        let mut a = XorShift::new(7);
        let mut b = XorShift::new(7);
        let xs: Vec<u64> = (0..1000).map(|_| a.next_u64() % 10).collect();
        let ys: Vec<u64> = (0..1000).map(|_| b.next_u64() % 10).collect();
        assert_eq!(xs, ys);
        for d in 0..10 {
            let n = xs.iter().filter(|&&x| x == d).count();
            assert!((50..150).contains(&n), "digit {d} drawn {n} times");
        }
        assert_ne!(XorShift::new(0).next_u64(), 0);
    }
}
