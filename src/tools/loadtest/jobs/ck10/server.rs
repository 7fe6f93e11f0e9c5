//! The main job's readings of the server: its baseline before any subscriber
//! ([`Baseline`]), the memory log while it runs ([`MemLog`]), its last readings ([`End`]).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;

use super::RSS_SETTLE;
use crate::tools::loadtest::cli::MainArgs;
use crate::tools::loadtest::client::churn;
use crate::tools::loadtest::host::child::ServerGuard;
use crate::tools::loadtest::host::memlog;
use crate::tools::loadtest::host::proc::{cpu_seconds, rss_bytes, wait_rss_stable};
use crate::tools::loadtest::wire::answer;

/// The server before any subscriber: CPU seconds, settled RSS (bytes), open fds.
pub(super) struct Baseline {
    pub(super) cpu_s: f64,
    pub(super) rss_idle: u64,
    pub(super) fds: u64,
}

impl Baseline {
    /// Reads the baseline of server `pid`, waiting for its RSS to settle.
    pub(super) fn read(pid: u32) -> Result<Baseline> {
        let cpu_s = cpu_seconds(pid)?;
        let (rss_idle, _) = wait_rss_stable(pid, RSS_SETTLE)?;
        Ok(Baseline {
            cpu_s,
            rss_idle,
            fds: churn::fd_count(pid),
        })
    }
}

/// The memory log's thread, when `--mem-log` is given.
pub(super) struct MemLog {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) thread: Option<JoinHandle<()>>,
}

impl MemLog {
    /// Starts the log's thread when `--mem-log` is given (every `--mem-interval` s, at
    /// least 1); the connection count from the server's `/stats`.
    pub(super) fn start(a: &MainArgs, server: &ServerGuard) -> Result<MemLog> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = match &a.mem_log {
            Some(path) => {
                let every = Duration::from_secs(a.mem_interval.unwrap_or(1).max(1));
                let conns = memlog::ConnCount::Stats(server.pub_addr, server.sub_addr.port());
                Some(memlog::spawn(
                    path,
                    every,
                    Some(server.pid),
                    conns,
                    stop.clone(),
                )?)
            }
            None => None,
        };
        Ok(MemLog { stop, thread })
    }

    /// Stops the log's thread and waits for it.
    pub(super) fn stop(self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.thread {
            let _ = h.join();
        }
    }
}

/// The server's last readings, before the clients stop.
pub(super) struct End {
    pub(super) server_exited: bool,
    pub(super) cpu_s: f64,
    pub(super) rss: u64,
    pub(super) stats: Result<Vec<(String, u64)>>,
}

impl End {
    /// Phase 6. A server that died mid-run is a failure to report, not a reason to lose the
    /// report: its zombie still has /proc/PID/stat (CPU) but no VmRSS.
    pub(super) fn read(server: &mut ServerGuard, cpu_publish_start: f64) -> End {
        End {
            server_exited: !server.alive(),
            cpu_s: cpu_seconds(server.pid).unwrap_or(cpu_publish_start),
            rss: rss_bytes(server.pid).unwrap_or(0),
            stats: answer::fetch_stats(server.pub_addr),
        }
    }
}
