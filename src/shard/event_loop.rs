//! Stage 11, the event loop: one [`Shard::turn`] arms accepts, reaps completions, drains
//! the inbox, runs the sweeps that are due, closes what was marked, pushes the outbox and
//! submits; the caller (`server`) sleeps on [`Shard::wait_fd`] and the doorbell when a turn
//! did nothing, and calls [`Shard::on_idle`] after a quiet spell (memory goes back to the
//! kernel). Also the graceful stop's state.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::Shard;
use crate::driver::{Completion, Driver};

/// Environment variable naming a shard that panics on its first idle tick (fault
/// injection for tests of the panic path; unset in production).
pub const PANIC_ENV: &str = "URING_COMET_TEST_PANIC_SHARD";

/// The process-wide start of every shard's millisecond clock (taken by the first shard).
fn clock_start() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// The loop's clock, completion buffer and stop state.
pub(super) struct Loop {
    /// Completions reaped this turn (kept, so its capacity is reused; a reap moves at most
    /// its [`crate::driver::REAP_BATCH`] entries, so it never grows).
    cqes: Vec<Completion>,
    /// The start of the millisecond clock: the same instant on every shard of the process
    /// ([`clock_start`]), so a stamp taken on one shard means the same on another.
    epoch: Instant,
    /// Milliseconds since `epoch`, read once per turn (wrapping): dates the start of each
    /// subscriber's send batch and a publish's parse (`uring_comet_publish_to_send_seconds`).
    now_ms: u32,
    /// Shutdown was asked: no more accepts; the shard finishes once its connections are gone.
    stopping: bool,
    /// [`PANIC_ENV`] names this shard.
    inject_panic: bool,
    /// The shard has held a connection since its tables last went back to the kernel: once
    /// it is empty, [`Shard::idle_timeout`] shortens to [`RELEASE_QUIET`] so the release runs
    /// soon after the last close, not after a full second nobody else disturbs.
    held: bool,
}

/// Quiet time after the last connection closed before a shard gives its tables back.
const RELEASE_QUIET: Duration = Duration::from_millis(250);

impl Loop {
    /// The loop of shard `me`.
    pub(super) fn new(me: usize) -> Loop {
        Loop {
            cqes: Vec::with_capacity(crate::driver::REAP_BATCH),
            epoch: clock_start(),
            now_ms: 0,
            stopping: false,
            held: false,
            inject_panic: std::env::var(PANIC_ENV)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                == Some(me),
        }
    }

    /// Whole seconds on the shard's clock (since the process-wide [`clock_start`]).
    pub(super) fn epoch_secs(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }

    /// The turn's time on the shard's millisecond clock (wrapping).
    #[inline]
    pub(super) fn now_ms(&self) -> u32 {
        self.now_ms
    }

    /// Whether the shard is stopping.
    #[inline]
    pub(super) fn stopping(&self) -> bool {
        self.stopping
    }
}

impl<D: Driver> Shard<D> {
    /// The fd that polls readable when this shard's ring has completions.
    pub fn wait_fd(&self) -> i32 {
        self.driver.wait_fd()
    }

    /// One turn: arm accepts, reap completions, drain the inbox, push outboxes, submit.
    /// Returns whether it did any work (if not, the caller may sleep).
    pub fn turn(&mut self) -> bool {
        if self.mesh.is_shutdown() && !self.lp.stopping {
            self.lp.stopping = true;
            self.begin_stop();
        }
        if self.mesh.is_draining() {
            self.drain_tick();
        }
        self.lp.now_ms = self.lp.epoch.elapsed().as_millis() as u32;
        self.router.set_presence_clock(self.lp.now_ms);
        self.arm_accepts();
        let mut cqes = std::mem::take(&mut self.lp.cqes);
        self.driver.reap(&mut cqes);
        let mut worked = !cqes.is_empty();
        for c in cqes.drain(..) {
            self.on_completion(c);
        }
        self.lp.cqes = cqes;
        self.rearm_parked_heads();
        worked |= self.drain_inbox();
        let now = Instant::now();
        self.heartbeat_if_due(now);
        self.history_tick(now);
        self.expiry_sweep_if_due(now);
        if self.sweep_if_due(now) {
            // Messages are allocated on one shard and freed on another; glibc keeps what
            // such frees leave scattered in the arenas. Handing free pages back every few
            // seconds keeps RSS flat under steady traffic (a walk of the arenas, not on any
            // per-message path).
            crate::alloc::trim_busy();
        }
        self.close_marked();
        self.presence_turn();
        self.lp.held |= !self.conns.is_empty();
        self.flush_outbox();
        if let Err(e) = self.driver.submit() {
            tracing::error!(shard = self.me, "io_uring submit: {e}");
        }
        worked
    }

    /// Whether completions are waiting.
    pub fn has_completions(&mut self) -> bool {
        self.driver.has_completions()
    }

    /// How long the loop may sleep with nothing to do: short while a paused accept waits to
    /// be re-armed, the shard is stopping or draining (the drain's pace is read per turn);
    /// `RELEASE_QUIET` once the last connection closed and the tables are still held.
    pub fn idle_timeout(&self) -> Duration {
        if self.accept.paused() || self.lp.stopping || self.drain.active() {
            Duration::from_millis(20)
        } else if self.router.presence_waiting() {
            // An offline edge waits for its debounce: decided within 50 ms of it.
            Duration::from_millis(50)
        } else if self.lp.held && self.conns.is_empty() {
            RELEASE_QUIET
        } else {
            Duration::from_secs(1)
        }
    }

    /// Called when the loop has been idle: once the shard holds no connection and no id,
    /// give the memory of its tables back (slab and router pages, then `malloc_trim`).
    pub fn on_idle(&mut self) {
        // Fault injection for the test of the panic path (tests/lifecycle.rs `shard_panic_exits_101`): the shard
        // named by this variable panics on its first idle tick.
        if self.lp.inject_panic {
            panic!("{PANIC_ENV}={}: injected shard panic", self.me);
        }
        let mut released = false;
        if self.conns.is_empty() && self.replies.is_empty() {
            released |= self.conns.release_if_empty();
            released |= self.router.release_if_empty();
            self.expiry.release();
            released |= self.driver.release_idle();
            // Until a connection comes again, the idle tick is back to its slow pace.
            self.lp.held = false;
        }
        released |= self.aux.shrink_if_idle();
        // A history that expired to nothing (after the TTL, later than the last close).
        released |= self.release_history_if_empty();
        if released {
            self.aux.clear_pool();
            crate::alloc::trim();
        }
    }

    /// Whether the shard has stopped and every connection is gone.
    pub fn finished(&self) -> bool {
        self.lp.stopping && self.conns.is_empty()
    }

    /// Publishes this shard's count of live owned ids for /stats; called right after every
    /// router change, since the epoll backend may send a response head within the same turn.
    pub(super) fn sync_ids_gauge(&self) {
        self.st().ids.store(self.router.owned_ids() as u64, Relaxed);
    }

    /// Pushes the outbox to the other shards (end of a turn, or early in a large fan-out).
    pub(super) fn flush_outbox(&mut self) {
        // The gauge first: a JoinAck pushed below lets a head go out, after which a client
        // may read /stats and must see its ids counted.
        self.sync_ids_gauge();
        self.st().slots.store(self.driver.slots_in_use(), Relaxed);
        self.outbox.flush(&self.mesh);
    }
}
