//! One client process of `loadtest million` (the hidden `loadtest million-worker`): holds up to
//! ~19,500 subscriber streams (RLIMIT_NOFILE is 20,000 per process here and cannot be raised)
//! from one source address, and talks to the parent over a line protocol.
//!
//! The loop is the one subscriber loop ([`subscriber`](super::subscriber)): one thread, one
//! mio (epoll, edge-triggered) loop, 32-byte records (the role keeps 4 bytes: the count of
//! good messages), one shared 64 KiB read buffer. Connects are non-blocking, bound
//! round-robin to the `--source` addresses with IP_BIND_ADDRESS_NO_PORT (the 4-tuple picks
//! the port), started at `--rate` per second with at most `--max-connecting` between connect
//! and `200` head; the request is written right after connect() (eager), and every
//! connection ends with a reset.
//!
//! Every stream expects exactly one message, `Recvd msg #1: '<id>:<id>:<t_us>'<br/>\n` (the
//! parent publishes sequence number = id); a record counts the good messages of its
//! connection, anything else is counted as bad at once.
//!
//! Protocol. Stdout, one line each:
//! - `P <connected> <failed> <closed> <received> <bad>` every `--report-ms` (cumulative:
//!   streams with a `200` head, connects that never got one, streams that ended after their
//!   head, good messages, bad chunks);
//! - `R key=value ...` once at the end, the verdict over every connection ([`Verdict`]).
//!
//! With `--reconnect` (`loadtest million --drain-after`), a stream the server ends connects
//! again at once: `closed` then counts the ends and `connected` the heads of the new
//! connections too.
//!
//! Stdin: `close` (or end of input, e.g. the parent died) makes the worker check every
//! connection, close all of them with SO_LINGER 0 (a reset: no TIME_WAIT left behind on
//! either side), print `R` and exit.
//!
//! - `lines`: the `P` and `R` lines, written and parsed.
//! - `role`: the worker's half of the loop (checks, counts, progress lines).

use std::io::{self, BufRead, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::Args;

use super::subscriber::{self, Conn, LoopConfig};
use crate::tools::loadtest::host::proc::nofile_short_of;
use crate::tools::loadtest::wire::chunk::Expect;
use crate::tools::loadtest::wire::url::UrlTemplate;
pub(crate) use lines::{Progress, Verdict, LAT_BUCKETS};
use role::WorkerRole;

mod lines;
mod role;

/// Flags of the hidden `uring-comet loadtest million-worker` (started by `loadtest million`).
#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// The server's subscriber listener.
    #[arg(long)]
    pub connect: SocketAddr,
    /// Source addresses (127.0.0.2, ...), repeatable: connection `i` uses the `i % n`-th.
    #[arg(long, required = true)]
    pub source: Vec<Ipv4Addr>,
    /// First id; connection `i` subscribes to `/test/<first-id + i>`.
    #[arg(long)]
    pub first_id: u64,
    /// Connections.
    #[arg(long)]
    pub count: u64,
    /// Connects started per second.
    #[arg(long)]
    pub rate: f64,
    /// Most connects between connect and `200` head at once.
    #[arg(long, default_value_t = 64)]
    pub max_connecting: u64,
    /// Milliseconds between progress lines.
    #[arg(long, default_value_t = 250)]
    pub report_ms: u64,
    /// A stream the server ends after its head (a drain: last chunk, or a close) connects
    /// again at once to the same address (a `--takeover` server there), unpaced; its good
    /// messages keep counting across connections (1 byte more per connection).
    #[arg(long)]
    pub reconnect: bool,
    /// Subscriber tokens: sign each connection's token (HS256, `sub` its id, valid for an
    /// hour) with the secret in this file and send it as `Authorization: Bearer`.
    #[arg(long, value_name = "FILE")]
    pub token_secret: Option<std::path::PathBuf>,
}

/// Bytes of client state per connection (the brief: at most 64).
pub(crate) const RECORD_BYTES: usize = std::mem::size_of::<Conn<u32>>();

/// Runs the worker until `close` on stdin (or its end); prints the verdict. Errors: bad
/// flags, an fd limit below `--count`, the poll failed, stdout closed.
pub(crate) fn run(a: WorkerArgs) -> Result<()> {
    if a.count == 0 || !(a.rate.is_finite() && a.rate > 0.0) {
        bail!("--count and --rate must be positive");
    }
    if let Some(limit) = nofile_short_of(a.count + 32) {
        bail!(
            "{} connections need an fd limit of {}; RLIMIT_NOFILE is {limit}",
            a.count,
            a.count + 32
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    // Stdin: `close`, or its end (the parent is gone), ends the run.
    std::thread::Builder::new()
        .name("stdin".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            for line in io::stdin().lock().lines() {
                match line {
                    Ok(l) if l.trim() == "close" => break,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            s.store(true, Relaxed);
        })?;
    let cfg = LoopConfig {
        url: UrlTemplate::local(a.connect, "/test/{id}")?,
        headers: "",
        expect: Expect::Chunked,
        count: a.count as usize,
        connect_rate: a.rate,
        max_connecting: a.max_connecting,
        until: None,
        stop_when_all_ended: false,
        eager_request: true,
        short_read_drains: false,
        reset_on_end: true,
        reset_at_finish: true,
    };
    let end = subscriber::run(cfg, WorkerRole::new(a), None, &stop)?;
    end.role.report();
    let v = end.role.verdict(&end.pers, own_cpu_ms(), own_hwm());
    let mut out = io::stdout().lock();
    writeln!(out, "{}", v.line())?;
    out.flush()?;
    Ok(())
}

/// This process's CPU time (user + system), milliseconds.
fn own_cpu_ms() -> u64 {
    // SAFETY: getrusage writes one rusage through a valid pointer.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
    ms(ru.ru_utime) + ms(ru.ru_stime)
}

/// This process's peak RSS (VmHWM), bytes.
fn own_hwm() -> u64 {
    let t = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    t.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map_or(0, |k| k * 1024)
}

#[cfg(test)]
mod tests {
    use super::RECORD_BYTES;

    #[test]
    fn record_stays_small() {
        // The brief: at most 64 bytes of client state per connection. mio's sockets carry a
        // registration check (8 more bytes) in debug builds only.
        let limit = if cfg!(debug_assertions) { 48 } else { 32 };
        assert!(RECORD_BYTES <= limit);
    }
}
