//! The memory log (`--mem-log FILE`), in the seed's mochimem.log format: one line per
//! interval, `date\tepoch\trss_kib\tconns`, appended by a background thread.
//!
//! `conns` comes from one of two places ([`ConnCount`]):
//! - the main job asks the server: `"connections"` of `GET /stats` (cheap at any scale; the
//!   server's own count), falling back to /proc/net/tcp if /stats does not answer;
//! - `flood` alone counts /proc/net/tcp and /proc/net/tcp6 lines in state 01 (ESTABLISHED)
//!   whose local port is the subscriber port, i.e. the server's side of each subscriber
//!   connection, including ones still in its accept queue. On loopback the client's sockets
//!   have the subscriber port as their remote port, so they are not counted twice.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::tools::loadtest::host::proc::{established_on_port, rss_bytes};

/// Where the `conns` column comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ConnCount {
    /// `"connections"` of `GET /stats` on this publish address; /proc/net/tcp on the port if
    /// that fails.
    Stats(SocketAddr, u16),
    /// ESTABLISHED sockets with this local port in /proc/net/tcp{,6}.
    ProcNet(u16),
}

impl ConnCount {
    fn read(self) -> u64 {
        match self {
            ConnCount::Stats(addr, port) => crate::tools::loadtest::wire::answer::fetch_stats(addr)
                .ok()
                .and_then(|kv| kv.into_iter().find(|(k, _)| k == "connections"))
                .map(|(_, v)| v)
                .unwrap_or_else(|| established_on_port(port)),
            ConnCount::ProcNet(port) => established_on_port(port),
        }
    }
}

/// Starts a thread that appends a line to `path` now and every `interval` until `stop` is set.
/// `pid` is the server's process (RSS 0 if unknown or gone).
pub(crate) fn spawn(
    path: &Path,
    interval: Duration,
    pid: Option<u32>,
    conns: ConnCount,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening mem log {}", path.display()))?;
    let path = path.display().to_string();
    Ok(std::thread::spawn(move || {
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= next {
                let line = log_line(pid, conns);
                if let Err(e) = file.write_all(line.as_bytes()) {
                    eprintln!("mem log {path}: {e}; no more lines");
                    return;
                }
                next += interval;
            }
            // Short sleeps so that a stop is noticed quickly whatever the interval, and exact
            // ones before a line so that lines keep to the interval.
            let due = next.saturating_duration_since(Instant::now());
            std::thread::sleep(due.min(Duration::from_millis(50)));
        }
    }))
}

/// One log line: local date, epoch seconds, RSS in KiB, established subscriber connections.
fn log_line(pid: Option<u32>, conns: ConnCount) -> String {
    let epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let rss_kib = pid.and_then(|p| rss_bytes(p).ok()).unwrap_or(0) / 1024;
    let conns = conns.read();
    format!("{}\t{epoch}\t{rss_kib}\t{conns}\n", local_date(epoch))
}

/// `epoch` (seconds) as local time in the style of date(1): `Tue Mar  3 14:05:09 UTC 2026`.
pub(crate) fn local_date(epoch: u64) -> String {
    let t = epoch as libc::time_t;
    // SAFETY: tm is plain data; localtime_r and strftime write within the given sizes.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return epoch.to_string();
        }
        let mut buf = [0u8; 64];
        let n = libc::strftime(
            buf.as_mut_ptr().cast(),
            buf.len(),
            c"%a %b %e %H:%M:%S %Z %Y".as_ptr(),
            &tm,
        );
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::{local_date, log_line, ConnCount};

    #[test]
    fn line_shape() {
        let line = log_line(Some(std::process::id()), ConnCount::ProcNet(1));
        let f: Vec<&str> = line.trim_end().split('\t').collect();
        assert_eq!(f.len(), 4, "{line:?}");
        assert!(f[1].parse::<u64>().unwrap() > 1_600_000_000);
        assert!(f[2].parse::<u64>().unwrap() > 0);
        assert!(!local_date(0).is_empty());
    }
}
