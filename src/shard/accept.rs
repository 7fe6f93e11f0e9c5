//! Stage 1, accept: the multishot accepts on this shard's two SO_REUSEPORT listeners, the
//! pause after an accept error, and the 503 a connection over `--max-conns` gets.
//!
//! `--max-conns` bounds the connections of all shards together, read from every shard's
//! `subscribers` and `publishers` gauges (a few relaxed loads per accept and per turn), not
//! an equal share per shard: a shard may rightly hold more than its share, because a stream
//! lives on its id's owner (`--placement owner`) and a connection still sending its head
//! counts on the shard that accepted it until it is handed over. With shares, a
//! `--takeover` server answered 503 in a drain's reconnect storm while holding 93% of its
//! limit (issue 16: one shard's owned streams plus the heads it was reading passed its half).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::completion::{token, OP_ACCEPT, OP_CANCEL};
use super::Shard;
use crate::conn::{Conn, Flags, State, NONE};
use crate::driver::Driver;
use crate::http::{response, Status};
use crate::stats::ShardStats;

/// Listener index in accept tokens: 0 subscriber, 1 publish.
const SUB: u32 = 0;

/// How long accepts pause after one failed (EMFILE, ENFILE, ENOMEM, ENOBUFS).
const RETRY: Duration = Duration::from_millis(100);

/// At most one warning (and one recovery line) per shard this often about failing accepts.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The listeners and the state of their accepts.
pub(super) struct Accept {
    /// Subscriber and publish listener.
    listeners: [Option<OwnedFd>; 2],
    /// Whether each listener's multishot accept is armed.
    armed: [bool; 2],
    /// Accepts are paused until then (after a failure).
    retry: Option<Instant>,
    /// Accepts that failed since the last one that succeeded.
    failures: u64,
    /// Which failures and recoveries are logged at warn and info (the rest at debug).
    log: FailLog,
    /// `--max-conns`: the most connections of all shards together.
    max_conns: usize,
    /// The 503 a connection over `--max-conns` (or arriving while stopping) gets.
    unavailable: Box<[u8]>,
}

impl Accept {
    /// Accepts on `listeners` (subscriber, publish) while the server (every shard) holds fewer
    /// than `max_conns` connections.
    pub(super) fn new(listeners: [OwnedFd; 2], max_conns: usize) -> Accept {
        let mut raw = Vec::new();
        response::error_text(
            &mut raw,
            Status::Unavailable,
            "the server is at its connection limit (--max-conns) or stopping; retry later",
        );
        let [sub, publ] = listeners;
        Accept {
            listeners: [Some(sub), Some(publ)],
            armed: [false; 2],
            retry: None,
            failures: 0,
            log: FailLog::default(),
            max_conns,
            unavailable: raw.into_boxed_slice(),
        }
    }

    /// Whether accepts are paused after a failure.
    pub(super) fn paused(&self) -> bool {
        self.retry.is_some()
    }

    /// A connection closed: accepting may resume if it had paused.
    pub(super) fn resume(&mut self) {
        self.retry = None;
    }
}

impl<D: Driver> Shard<D> {
    /// Arms each listener's multishot accept if it is not armed (unless paused or stopping).
    pub(super) fn arm_accepts(&mut self) {
        if self.lp.stopping() || self.drain.started() {
            return;
        }
        if let Some(at) = self.accept.retry {
            if Instant::now() < at {
                return;
            }
            self.accept.retry = None;
        }
        for l in 0..2 {
            if !self.accept.armed[l] {
                if let Some(fd) = &self.accept.listeners[l] {
                    self.driver
                        .accept_multi(fd.as_raw_fd(), token(OP_ACCEPT, l as u32));
                    self.accept.armed[l] = true;
                }
            }
        }
        // At `--max-conns` the shard still accepts, to answer 503: not ready for new
        // connections (`/readyz`) until one closes.
        let ready = u64::from(self.held_total() < self.accept.max_conns);
        if self.st().accepting.load(Relaxed) != ready {
            self.st().accepting.store(ready, Relaxed);
        }
    }

    /// Stops accepting: cancels the armed accepts (shutdown).
    pub(super) fn stop_accepts(&mut self) {
        self.st().accepting.store(0, Relaxed);
        for l in 0..2 {
            if let Some(fd) = &self.accept.listeners[l] {
                if self.accept.armed[l] {
                    self.driver
                        .cancel_fd(fd.as_raw_fd(), token(OP_CANCEL, NONE));
                }
            }
        }
    }

    /// Takes both listeners out of their SO_REUSEPORT groups at once (the drain): on Linux
    /// `shutdown(SHUT_RD)` on a listening socket stops it listening (tcp_disconnect), so new
    /// connections go to the group's other members, and wakes its pending accept with an
    /// error. Its queued connections are reset, or with `net.ipv4.tcp_migrate_req = 1`
    /// handed to another member (kernel-tuning/). The fds stay open until the shard ends.
    pub(super) fn shutdown_listeners(&mut self) {
        for fd in self.accept.listeners.iter().flatten() {
            // SAFETY: shutdown(2) on a listening socket this shard owns; no buffer involved.
            unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RD) };
        }
    }

    /// An accept completion on listener `l`: a new socket (`res` >= 0) or an error.
    pub(super) fn on_accept(&mut self, l: u32, res: i32, more: bool) {
        if !more {
            self.accept.armed[l as usize] = false;
            ShardStats::add(&self.st().accept_rearmed, 1);
        }
        if res < 0 {
            return self.accept_failed(res);
        }
        if self.accept.failures > 0 {
            let failed = std::mem::take(&mut self.accept.failures);
            if self.accept.log.recovered() {
                tracing::info!(shard = self.me, failed, "accepting again");
            } else {
                tracing::debug!(shard = self.me, failed, "accepting again");
            }
        }
        // A non-negative accept result is a new fd that nothing else owns.
        let fd = res;
        if !self.admit(fd) {
            return;
        }
        let (state, flags) = if l == SUB {
            (State::SubHead, Flags::EMPTY)
        } else {
            (State::Pub, Flags::PUBLISHER)
        };
        let i = self.conns.insert(Conn {
            fd,
            state,
            flags,
            ..Conn::FREE
        });
        if l == SUB {
            ShardStats::add(&self.st().subscribers, 1);
            if !self.per_ip_admit(i) {
                return; // 429 at --max-conns-per-ip
            }
            self.recv_head(i);
        } else {
            ShardStats::add(&self.st().publishers, 1);
            let a = self.aux.take();
            self.conns[i].aux = a;
            self.start_recv(i);
        }
    }

    fn accept_failed(&mut self, res: i32) {
        if self.lp.stopping() || self.drain.started() || res == -libc::ECANCELED {
            return;
        }
        if res == -libc::EINVAL {
            // Not listening any more: the drain shut the listener down and sets its flag
            // just after. Pause (no re-arm spin) without a warning; the drain takes over.
            tracing::debug!(shard = self.me, "accept: the listener was shut down");
            self.st().accepting.store(0, Relaxed);
            self.accept.retry = Some(Instant::now() + RETRY);
            return;
        }
        // EMFILE, ENFILE, ENOMEM, ENOBUFS: the pending connection stays queued, so re-arming
        // at once would spin. Retry after a pause or when a connection closes.
        // In a reconnect storm at RLIMIT_NOFILE the pause and the recovery alternate every
        // ~100 ms: one warning per LOG_EVERY (with the failures not shown since), not 20 lines
        // a second per shard.
        let e = std::io::Error::from_raw_os_error(-res);
        match self.accept.log.failed(Instant::now()) {
            Some(unlogged) => tracing::warn!(
                shard = self.me,
                failed_since_last_warning = unlogged,
                "accept failed: {e}; pausing accepts, retrying every 100 ms or when a connection closes (logged at most every 10 s)"
            ),
            None => tracing::debug!(shard = self.me, "accept failed again: {e}"),
        }
        self.accept.failures += 1;
        ShardStats::add(&self.st().accept_errors, 1);
        self.st().accepting.store(0, Relaxed);
        self.accept.retry = Some(Instant::now() + RETRY);
    }

    /// Whether this shard takes socket `fd` (fresh from accept, or handed over): if it is
    /// stopping or draining, or the server holds `--max-conns` connections (every shard
    /// together; a handed-over one is counted by no shard while it travels), answers 503,
    /// closes `fd` and counts it.
    pub(super) fn admit(&mut self, fd: RawFd) -> bool {
        let held = self.held_total();
        if self.lp.stopping() || self.drain.started() || held >= self.accept.max_conns {
            tracing::debug!(
                shard = self.me,
                stopping = self.lp.stopping(),
                draining = self.drain.started(),
                held,
                max_conns = self.accept.max_conns,
                "503 to a new connection"
            );
            ShardStats::add(&self.st().rejected, 1);
            refuse_unheld(fd, &self.accept.unavailable);
            return false;
        }
        true
    }
}

impl<D: Driver> Shard<D> {
    /// Connections held by every shard together: their `subscribers` and `publishers`
    /// gauges, each written only by its own shard (relaxed loads; another shard's accept or
    /// close in the same instant may be missed by one).
    fn held_total(&self) -> usize {
        let held: u64 = self
            .stats
            .iter()
            .map(|s| s.subscribers.load(Relaxed) + s.publishers.load(Relaxed))
            .sum();
        held as usize
    }
}

/// Answers an accepted connection the shard will not hold with `answer` (a complete 503) and
/// closes it, without blocking and without a record: a fresh socket's send buffer takes the
/// few bytes whole, the FIN follows them (shutdown), and what the client has already sent is
/// read and dropped first, so that the close does not become a reset (RFC 9112 section 9.6:
/// a server closes its side after the response, then reads what the client still sends).
/// Best effort: a client whose request arrives after the close may get a reset after the 503.
fn refuse_unheld(fd: RawFd, answer: &[u8]) {
    // SAFETY: `fd` is a connected socket this shard owns (fresh from accept or handed over)
    // and closes here; the buffers live for each call.
    unsafe {
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        libc::send(fd, answer.as_ptr().cast(), answer.len(), flags);
        libc::shutdown(fd, libc::SHUT_WR);
        let mut sink = [0u8; 2048];
        for _ in 0..4 {
            if libc::recv(fd, sink.as_mut_ptr().cast(), sink.len(), libc::MSG_DONTWAIT) <= 0 {
                break;
            }
        }
        libc::close(fd);
    }
}

/// Which accept failures and recoveries are worth a line at warn and info: the first failure,
/// then at most one every [`LOG_EVERY`] (saying how many were not shown), and the first
/// recovery after each of those.
#[derive(Default)]
struct FailLog {
    /// When the last warning was logged.
    warned: Option<Instant>,
    /// Failures since then not logged at warn.
    unlogged: u64,
    /// A warning has been logged and no recovery line since.
    owed_recovery: bool,
}

impl FailLog {
    /// An accept failed at `now`: `Some(failures not shown since the last warning)` if this
    /// one is logged at warn, `None` if only at debug.
    fn failed(&mut self, now: Instant) -> Option<u64> {
        if self
            .warned
            .is_some_and(|t| now.duration_since(t) < LOG_EVERY)
        {
            self.unlogged += 1;
            return None;
        }
        self.warned = Some(now);
        self.owed_recovery = true;
        Some(std::mem::take(&mut self.unlogged))
    }

    /// Accepting works again: whether this is logged at info (the first since a warning).
    fn recovered(&mut self) -> bool {
        std::mem::take(&mut self.owed_recovery)
    }
}

#[cfg(test)]
mod tests {
    use super::{FailLog, LOG_EVERY};
    use std::time::{Duration, Instant};

    #[test]
    fn a_flapping_fd_shortage_logs_two_lines_per_period() {
        // Pause and recovery alternating every 100 ms for 25 s, as in a reconnect storm at
        // RLIMIT_NOFILE: a warning and a recovery line at 0 s, 10 s and 20 s, nothing else.
        let t0 = Instant::now();
        let mut log = FailLog::default();
        let (mut warned, mut recovered) = (Vec::new(), 0);
        for k in 0..250u32 {
            let now = t0 + Duration::from_millis(100) * k;
            if let Some(unlogged) = log.failed(now) {
                warned.push((now.duration_since(t0), unlogged));
            }
            recovered += u32::from(log.recovered());
        }
        let s = Duration::from_secs;
        assert_eq!(warned, vec![(s(0), 0), (LOG_EVERY, 99), (s(20), 99)]);
        assert_eq!(recovered, 3);
        // A recovery with no warning since the last recovery line is not announced.
        assert!(!log.recovered());
    }
}
