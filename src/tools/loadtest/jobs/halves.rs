//! `loadtest flood` and `loadtest msggen` on their own: flags to configs, a run, a summary.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::tools::loadtest::cli::{FloodArgs, MsggenArgs};
use crate::tools::loadtest::client::flood::{self, FloodConfig, FloodShared};
use crate::tools::loadtest::client::msggen::{self, MsggenConfig, MsggenShared};
use crate::tools::loadtest::host::{memlog, proc};
use crate::tools::loadtest::report::Latency;
use crate::tools::loadtest::wire::resume::Transport;
use crate::tools::loadtest::wire::url::UrlTemplate;

/// Sequence numbers at or above this are garbled when flood runs alone (it does not know how
/// many were sent); bounds the received-set bitmap to 16 MiB.
const FLOOD_SEQ_LIMIT: u64 = 1 << 27;

/// Runs `loadtest flood`.
pub(crate) fn flood(a: FloodArgs) -> Result<()> {
    let url = UrlTemplate::parse(&a.url_template)?;
    let (first, last) = parse_ids(&a.ids)?;
    let count = last - first + 1;
    check_positive(&[("--rate", a.rate), ("--duration", a.duration)])?;
    check_fd_limit(count)?;
    let stop_log = Arc::new(AtomicBool::new(false));
    let mem_log = match &a.mem_log {
        Some(path) => {
            let pid = a
                .server_pid
                .or_else(|| proc::find_listener_pid(url.addr.port()));
            if pid.is_none() {
                eprintln!(
                    "flood: no process found listening on port {}; mem log RSS will be 0",
                    url.addr.port()
                );
            }
            let every = Duration::from_secs(a.mem_interval.max(1));
            let conns = memlog::ConnCount::ProcNet(url.addr.port());
            Some(memlog::spawn(path, every, pid, conns, stop_log.clone())?)
        }
        None => None,
    };
    let cfg = FloodConfig {
        ids: None,
        url,
        first_id: first,
        count,
        connect_rate: a.rate,
        max_connecting: a.max_connecting.max(1),
        duration: Some(Duration::from_secs_f64(a.duration)),
        stats_to_stderr: false,
        strict: false,
        seq_limit: FLOOD_SEQ_LIMIT,
        source_addrs: a.source_addrs,
        framing: a.stream,
        transport: Transport::Test,
        latency_from_seq: 0,
        local_seqs: None,
        churn_per_min: 0.0,
        tokens: None,
    };
    let res = flood::run(cfg, Arc::new(FloodShared::default()));
    stop_log.store(true, Ordering::Relaxed);
    if let Some(h) = mem_log {
        let _ = h.join();
    }
    let res = res?;
    let c = &res.checker.counts;
    println!(
        "flood: {} of {count} streams opened, {} closed ({} never opened, {} broken)",
        res.connected, res.closed, res.connect_failed, res.broken
    );
    println!(
        "chunks: {} ({} test messages ok, {} other messages, {} duplicate, {} out of order, {} wrong id, {} garbled); {} heartbeats",
        c.chunks, c.ok, c.foreign, c.duplicates, c.out_of_order, c.id_mismatch, c.garbled, c.heartbeats
    );
    println!(
        "latency: {}",
        Latency::from_histogram(&res.checker.latency_us).line()
    );
    for n in res.notes.iter().chain(&res.checker.notes) {
        println!("note: {n}");
    }
    if c.errors() > 0 {
        bail!("{} bad chunks", c.errors());
    }
    Ok(())
}

/// Runs `loadtest msggen`.
pub(crate) fn msggen(a: MsggenArgs) -> Result<()> {
    let url = UrlTemplate::parse(&a.url_template)?;
    if a.parallel == 0 || a.max_id == 0 || a.interval_ms == 0 {
        bail!("--parallel, --max-id and --interval-ms must be at least 1");
    }
    check_fd_limit(a.parallel as u64)?;
    let cfg = MsggenConfig {
        url,
        parallel: a.parallel,
        total: a.count.saturating_mul(a.parallel as u64),
        interval: Duration::from_millis(a.interval_ms),
        max_id: a.max_id,
        ids_by_seq: None,
        first_seq: a.first_seq,
        seed: a.seed,
        tail: Duration::from_secs(5),
        record_sends: false,
    };
    let res = msggen::run(cfg, Arc::new(MsggenShared::default()))?;
    let secs = res.elapsed.as_secs_f64();
    println!(
        "msggen: {} sent, {} answered 200, {} failed; delivered (sum of answers) {}; {:.1} s, {:.0} msg/s",
        res.attempted,
        res.ok,
        res.failed,
        res.delivered_sum,
        secs,
        res.attempted as f64 / secs.max(1e-9)
    );
    for n in &res.notes {
        println!("note: {n}");
    }
    if res.failed > 0 || res.bad_answers > 0 {
        bail!(
            "{} publishes failed, {} bad answers",
            res.failed,
            res.bad_answers
        );
    }
    Ok(())
}

/// Parses `FIRST-LAST` (inclusive) or a single id.
pub(crate) fn parse_ids(s: &str) -> Result<(u64, u64)> {
    let num = |t: &str| {
        t.trim()
            .parse::<u64>()
            .with_context(|| format!("bad id {t:?} in --ids {s:?}"))
    };
    let (first, last) = match s.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(s)?, num(s)?),
    };
    if last < first {
        bail!("--ids {s:?}: the range is empty");
    }
    Ok((first, last))
}

/// Fails unless every value is a positive finite number.
pub(crate) fn check_positive(values: &[(&str, f64)]) -> Result<()> {
    for (name, v) in values {
        if !(v.is_finite() && *v > 0.0) {
            bail!("{name} must be a positive number, not {v}");
        }
    }
    Ok(())
}

/// Raises the fd limit and fails early if `sockets` (plus a margin) would not fit.
pub(crate) fn check_fd_limit(sockets: u64) -> Result<()> {
    let need = sockets + 64;
    if let Some(limit) = proc::nofile_short_of(need) {
        return Err(anyhow!(
            "{sockets} sockets need an fd limit of at least {need}; RLIMIT_NOFILE is {limit} (raise it with ulimit -n)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{check_positive, parse_ids};

    #[test]
    fn id_ranges() {
        assert_eq!(parse_ids("1-10000").unwrap(), (1, 10000));
        assert_eq!(parse_ids("7").unwrap(), (7, 7));
        assert!(parse_ids("5-1").is_err());
        assert!(parse_ids("a-b").is_err());
        assert!(check_positive(&[("x", 0.0)]).is_err());
        assert!(check_positive(&[("x", f64::NAN)]).is_err());
        assert!(check_positive(&[("x", 1.5)]).is_ok());
    }
}
