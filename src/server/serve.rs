//! `uring-comet serve`: start the server, print the `LISTEN` line, and run until a stop
//! signal (exit 0) or a dead shard (exit 1).
//!
//! Source: signal(7), sigtimedwait(2), setrlimit(2) (SIGXFSZ).

use std::io::Write;

use super::startup::start;
use crate::config::ServerConfig;

/// `uring-comet serve`: starts the server, prints `LISTEN subscriber=ADDR publish=ADDR` on
/// stdout, and runs until SIGINT or SIGTERM (exit 0) or until a shard dies (exit 1; a shard
/// that panics exits the process with 101 at once). Errors: [`start`] failed, stdout could
/// not be written, or a shard had panicked by shutdown.
pub fn serve_forever(cfg: ServerConfig) -> anyhow::Result<()> {
    let set = take_stop_signals();
    exit_on_panic();
    let shards = cfg.shards;
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
        let timeout = libc::timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        // SAFETY: `set` is a valid sigset; a null siginfo pointer is allowed.
        let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout) };
        if sig == libc::SIGINT || sig == libc::SIGTERM {
            tracing::info!("signal {sig}: shutting down");
            return handle.shutdown();
        }
        if handle.shard_died() {
            tracing::error!("a shard thread died; exiting so a supervisor can restart the server");
            std::process::exit(1);
        }
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
