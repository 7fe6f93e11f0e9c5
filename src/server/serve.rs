//! `uring-comet serve`: start the server, print the `LISTEN` line, and run until a stop
//! signal (exit 0) or a dead shard (exit 1).
//!
//! Signals: SIGTERM starts the drain (`/readyz` 503, listeners closed, streams ended at a
//! steady pace over `--drain-period`, see `shard/drain.rs`), then the server stops; a second
//! SIGTERM, or a SIGINT, stops it at once (every stream still gets its proper end).
//!
//! Source: signal(7), sigtimedwait(2), setrlimit(2) (SIGXFSZ).

use std::io::Write;
use std::time::{Duration, Instant};

use super::startup::{start, ServerHandle};
use crate::config::ServerConfig;

/// How often the drain looks whether every connection is gone.
const DRAIN_CHECK: Duration = Duration::from_millis(100);

/// `uring-comet serve`: starts the server, prints `LISTEN subscriber=ADDR publish=ADDR` on
/// stdout, and runs until SIGINT (exit 0 at once) or SIGTERM (exit 0 after the drain), or
/// until a shard dies (exit 1; a shard that panics exits the process with 101 at once).
/// Errors: [`start`] failed (a port already has a listener, without `--takeover`), stdout
/// could not be written, or a shard had panicked by shutdown.
pub fn serve_forever(cfg: ServerConfig) -> anyhow::Result<()> {
    let set = take_stop_signals();
    exit_on_panic();
    let shards = cfg.shards;
    let drain = Duration::from_millis(cfg.drain_period_ms);
    let handle = start(cfg)?;
    tracing::info!(shards, backend = %handle.backend(), subscriber = %handle.subscriber_addr(), publish = %handle.publish_addr(), "uring-comet serving");
    if let Some(m) = handle.metrics_addr() {
        tracing::info!(metrics = %m, "serving /metrics, /healthz and /readyz");
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "LISTEN subscriber={} publish={}",
            handle.subscriber_addr(),
            handle.publish_addr()
        )?;
        out.flush()?;
    }
    loop {
        let sig = wait_signal(&set, Duration::from_secs(1));
        if sig == libc::SIGINT {
            tracing::info!("SIGINT: stopping at once");
            return handle.shutdown();
        }
        if sig == libc::SIGTERM {
            return drain_then_stop(handle, &set, drain);
        }
        exit_if_shard_died(&handle);
    }
}

/// SIGTERM: drains for at most `period` (less once every connection is gone, or at once on
/// a second SIGTERM or a SIGINT), then stops the shards.
fn drain_then_stop(
    handle: ServerHandle,
    set: &libc::sigset_t,
    period: Duration,
) -> anyhow::Result<()> {
    tracing::info!(
        period_ms = period.as_millis() as u64,
        "SIGTERM: draining (listeners closed, streams ended at a steady pace); a second SIGTERM or SIGINT stops at once"
    );
    handle.begin_drain();
    let end = Instant::now() + period;
    loop {
        if handle.drained() {
            tracing::info!("drain: every connection has ended; stopping");
            break;
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::info!("drain: period over; stopping");
            break;
        }
        let sig = wait_signal(set, left.min(DRAIN_CHECK));
        if sig == libc::SIGINT || sig == libc::SIGTERM {
            tracing::info!("signal {sig} during the drain: stopping at once");
            break;
        }
        exit_if_shard_died(&handle);
    }
    handle.shutdown()
}

/// Waits at most `limit` for one of the signals of `set`; returns it, or -1 on timeout.
fn wait_signal(set: &libc::sigset_t, limit: Duration) -> i32 {
    let timeout = libc::timespec {
        tv_sec: limit.as_secs() as libc::time_t,
        tv_nsec: limit.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `set` is a valid sigset; a null siginfo pointer is allowed.
    unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &timeout) }
}

/// Exits with status 1 if a shard thread has ended on its own.
fn exit_if_shard_died(handle: &ServerHandle) {
    if handle.shard_died() {
        tracing::error!("a shard thread died; exiting so a supervisor can restart the server");
        std::process::exit(1);
    }
}

/// Ignores SIGXFSZ and blocks SIGINT and SIGTERM in this thread (the shards inherit the
/// mask); returns the set to wait for them with.
fn take_stop_signals() -> libc::sigset_t {
    // A file-size limit (RLIMIT_FSIZE) makes a journal write fail with EFBIG, answered 500,
    // instead of killing the process with SIGXFSZ (setrlimit(2)).
    // SAFETY: setting a signal's disposition to ignore.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    // Block the stop signals in every thread (shards inherit the mask) and take them
    // synchronously in `serve_forever`.
    // SAFETY: plain signal-mask calls on a zeroed sigset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Makes a panic in any thread exit the process with status 101 after the default report.
fn exit_on_panic() {
    // A panicking shard must not leave a half-alive server: report it and exit non-zero at
    // once, so a supervisor (the systemd unit's Restart=on-failure) starts a fresh one.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        let thread = std::thread::current().name().unwrap_or("?").to_string();
        eprintln!("uring-comet: thread {thread} panicked; exiting with status 101 so a supervisor restarts the server");
        std::process::exit(101);
    }));
}
