//! `loadtest million`'s phase 4: one message to every id (sequence number = id) from
//! pipelined publishers, watched on the progress bar, then a drain bounded by 30 s without
//! progress; after it, the server's RSS and `/stats`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use indicatif::ProgressBar;

use std::net::SocketAddr;

use super::fleet::{Fleet, MemInfo};
use super::progress::{bar, RateMeter};
use super::{say, MillionArgs};
use crate::tools::loadtest::client::million_worker::Progress;
use crate::tools::loadtest::client::pipeline::{self, IdPlan, PipeConfig, PipeResult, PipeShared};
use crate::tools::loadtest::host::child::ServerGuard;
use crate::tools::loadtest::host::proc::rss_bytes;
use crate::tools::loadtest::report::million::MillionReport;
use crate::tools::loadtest::wire::answer::{json_u64, parse_answer};
use crate::tools::loadtest::wire::url::UrlTemplate;

/// Publishes one message to every id and waits until the workers have received them (or a
/// bounded drain passes); the counts go into `r`. Errors: the publisher's.
pub(super) fn deliver(
    a: &MillionArgs,
    fleet: &Fleet,
    server: &mut ServerGuard,
    r: &mut MillionReport,
) -> Result<()> {
    let n = a.connect.conns;
    say(&format!(
        "publishing one message to each of {n} ids ({} x {} pipelined)",
        a.publishers, a.depth
    ));
    let t0 = Instant::now();
    let mut watch = Watch::new(n, fleet.progress().received);
    let (h, shared) = start_publisher(a, server, t0)?;
    while !h.is_finished() {
        watch.show(fleet.progress());
        if !server.alive() {
            shared.stop.store(true, Relaxed);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let res = h
        .join()
        .map_err(|_| anyhow!("the publishing thread panicked"))??;
    r.published = res.ok;
    r.publish_failed = res.failed + n.saturating_sub(res.attempted);
    r.server_delivered = res.delivered_sum;
    for note in res.notes {
        r.notes.push(format!("publish: {note}"));
    }
    drain(fleet, &mut watch, res.ok, r);
    watch.bar.finish();
    r.deliver_s = t0.elapsed().as_secs_f64();
    say(&format!(
        "{} published, {} failed; {} received in {:.1} s",
        res.ok,
        r.publish_failed,
        fleet.progress().received - watch.received0,
        r.deliver_s
    ));
    Ok(())
}

/// The publishing thread: ids 1..=conns in order, at least 5,000 msg/s or cut short.
fn start_publisher(
    a: &MillionArgs,
    server: &ServerGuard,
    t0: Instant,
) -> Result<(JoinHandle<Result<PipeResult>>, Arc<PipeShared>)> {
    let n = a.connect.conns;
    let cfg = PipeConfig {
        url: UrlTemplate::local(server.pub_addr, "/send/{id}")?,
        conns: a.publishers,
        depth: a.depth,
        ids: IdPlan::InOrder {
            first_id: 1,
            count: n,
        },
        first_seq: 1,
        total: Some(n),
        // At least 5,000 msg/s, or the run is cut short.
        send_until: t0 + Duration::from_secs(30 + n / 5000),
        tail: Duration::from_secs(10),
        any_2xx: false,
    };
    let shared = Arc::new(PipeShared::default());
    let sh = shared.clone();
    let h = std::thread::Builder::new()
        .name("publish".into())
        .spawn(move || pipeline::run(cfg, sh))?;
    Ok((h, shared))
}

/// Waits until every accepted message arrived (or was bad); gives up after 30 s without
/// progress, with a note.
fn drain(fleet: &Fleet, watch: &mut Watch, accepted: u64, r: &mut MillionReport) {
    let mut last = (0, Instant::now());
    loop {
        let p = fleet.progress();
        let got = watch.show(p);
        if got + p.bad >= accepted {
            break;
        }
        if got != last.0 {
            last = (got, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(30) {
            r.notes.push(format!(
                "drain: {got} of {accepted} accepted messages arrived; gave up after 30 s without progress"
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Delivery progress: the bar, or a line every 5 s when stderr is not a terminal.
struct Watch {
    n: u64,
    received0: u64,
    bar: ProgressBar,
    rate: RateMeter,
    next_line: Instant,
}

impl Watch {
    fn new(n: u64, received0: u64) -> Watch {
        Watch {
            n,
            received0,
            bar: bar(n, "deliver"),
            rate: RateMeter::new(),
            next_line: Instant::now() + Duration::from_secs(5),
        }
    }

    /// Shows `p`; returns the messages received since the phase began.
    fn show(&mut self, p: Progress) -> u64 {
        let got = p.received - self.received0;
        let now = Instant::now();
        let v = self.rate.update(got, now);
        self.bar.set_position(got);
        self.bar.set_message(format!("bad {}, {v:.0}/s", p.bad));
        if self.bar.is_hidden() && now >= self.next_line {
            say(&format!("deliver: {got} of {} received, {v:.0}/s", self.n));
            self.next_line += Duration::from_secs(5);
        }
        got
    }
}

/// After phase 4: the server's RSS, the machine's memory and the server's `/stats`.
pub(super) fn after_delivery(server: &ServerGuard, r: &mut MillionReport) {
    r.server_rss_after = rss_bytes(server.pid).unwrap_or(0);
    r.mem[2] = MemInfo::read();
    r.server_stats = fetch_stats(server.pub_addr).unwrap_or_else(|e| {
        r.notes.push(format!("/stats: {e}"));
        Vec::new()
    });
}

/// `GET /stats` with the keys this report shows.
fn fetch_stats(addr: SocketAddr) -> Result<Vec<(String, u64)>> {
    use std::io::{Read, Write};
    let timeout = Duration::from_secs(5);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    write!(
        s,
        "GET /stats HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let ans = parse_answer(&buf)?.ok_or_else(|| anyhow!("incomplete /stats answer"))?;
    let body = &buf[ans.body_start..ans.len];
    Ok([
        "connections",
        "ids",
        "messages_delivered",
        "slow_consumers_closed",
        "rejected_at_capacity",
        "rss_bytes",
    ]
    .iter()
    .filter_map(|k| json_u64(body, k).map(|v| (k.to_string(), v)))
    .collect())
}
