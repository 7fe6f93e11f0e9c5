//! The main job's leak guard, `uring-comet loadtest --rounds N`: one server, and N rounds of
//! the same life, each measured once every client is gone:
//!
//! 1. **Server**: start it as a child; its settled idle RSS as the baseline.
//! 2. **Each round**: open `--conns` subscribers (ids 1..=conns, any `--transport`), publish
//!    one message to each id (at `--rate`, from `--parallel` connections), wait for them to
//!    arrive, close every subscriber, wait for the server to be back to its baseline
//!    (connections, ids, slots, fds) and, if its history drains (a short `--history-ttl`),
//!    for every held message to expire, then read its settled RSS: the RSS after close.
//! 3. **Report** (text or `--json`): every round's figures, and the growth of the RSS
//!    after close from round 10 (or the first) to the last, in percent. A leak shows as a
//!    steady climb; a high-water mark as a climb for a few rounds and then a plateau. Fails
//!    if a message was lost or arrived wrong, or the server did not come back to baseline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use super::clients::{connect, drain};
use super::server::Baseline;
use super::{say, start_server, validate, LEAVE_SETTLE, PUBLISH_TAIL, RSS_SETTLE};
use crate::tools::loadtest::cli::MainArgs;
use crate::tools::loadtest::client::churn::AfterLeave;
use crate::tools::loadtest::client::msggen::{self, MsggenConfig, MsggenShared};
use crate::tools::loadtest::host::child::ServerGuard;
use crate::tools::loadtest::host::proc::wait_rss_stable;
use crate::tools::loadtest::report::rounds::{Round, RoundsReport};
use crate::tools::loadtest::wire::answer::fetch_stats_keys;
use crate::tools::loadtest::wire::url::UrlTemplate;

/// The longest wait for the server's history to drain after a round's close.
const HISTORY_SETTLE: Duration = Duration::from_secs(30);
/// A history count that has not fallen for this long will not drain (a TTL longer than a
/// round, e.g. the default 10 minutes): the RSS is read with it held.
const HISTORY_STUCK: Duration = Duration::from_secs(3);
/// After the history drained: a shard gives an emptied history's tables back (and trims
/// malloc) on its next idle tick, which comes after a second in which nothing woke it.
const HISTORY_RELEASE: Duration = Duration::from_millis(1500);

/// Runs the main job's rounds (`--rounds N`, N >= 1); fails after the report if anything
/// was lost or the server did not come back to baseline.
pub(crate) fn run(a: MainArgs) -> Result<()> {
    validate(&a)?;
    // 1. Server.
    let mut server = start_server(&a)?;
    let base = Baseline::read(server.pid)?;
    let mut report = RoundsReport {
        conns: a.connect.conns,
        transport: a.transport,
        rss_idle_bytes: base.rss_idle,
        rounds: Vec::new(),
    };
    // 2. Rounds.
    for n in 1..=a.rounds {
        let round = one_round(&a, &mut server, &base, n)?;
        say(&format!(
            "round {n}: {} of {} delivered, RSS after close {:.1} MiB",
            round.delivered,
            round.published,
            round.rss_after_close_bytes as f64 / (1 << 20) as f64
        ));
        report.rounds.push(round);
        if !server.alive() {
            break;
        }
    }
    drop(server);
    // 3. Report.
    if a.json {
        println!("{}", report.json());
    } else {
        println!("{}", report.text());
    }
    if !report.passed() {
        bail!("rounds failed: a message was lost or arrived wrong, or the server did not come back to baseline");
    }
    Ok(())
}

/// Round `n`: connect, publish one message to each id, drain, close, settle, measure.
fn one_round(a: &MainArgs, server: &mut ServerGuard, base: &Baseline, n: u32) -> Result<Round> {
    let conns = a.connect.conns;
    let subs = connect(a, server, conns)?;
    let (rss_loaded, _) = wait_rss_stable(server.pid, RSS_SETTLE)?;
    let cfg = MsggenConfig {
        url: UrlTemplate::local(server.pub_addr, "/send/{id}")?,
        parallel: a.parallel,
        total: conns,
        interval: Duration::from_secs_f64(a.parallel as f64 / a.rate),
        max_id: conns,
        ids_by_seq: Some(Arc::new((1..=conns).collect())),
        first_seq: 0,
        seed: a.seed,
        tail: PUBLISH_TAIL,
        record_sends: false,
    };
    let published = std::thread::Builder::new()
        .name("msggen".into())
        .spawn(move || msggen::run(cfg, Arc::new(MsggenShared::default())))?
        .join()
        .map_err(|_| anyhow!("the publisher thread panicked"))??;
    drain(&subs.shared, published.ok, a.drain_ms);
    let fres = subs.stop()?;
    let leave = AfterLeave::wait(
        server.pid,
        server.sub_addr,
        server.pub_addr,
        base.fds,
        LEAVE_SETTLE,
    );
    if wait_history_drained(server.pub_addr) {
        std::thread::sleep(HISTORY_RELEASE);
    }
    let (rss_after_close, _) = wait_rss_stable(server.pid, RSS_SETTLE)?;
    let c = &fres.checker.counts;
    // What went wrong, in the round's own words (the first few notes).
    for note in fres.checker.notes.iter().chain(&fres.notes).take(3) {
        say(&format!("round {n}: {note}"));
    }
    Ok(Round {
        round: n,
        connected: fres.connected,
        published: published.ok,
        delivered: fres.checker.received.count(),
        bad_chunks: c.duplicates + c.out_of_order + c.id_mismatch + c.garbled,
        rss_loaded_bytes: rss_loaded,
        rss_after_close_bytes: rss_after_close,
        at_baseline: leave.at_baseline(),
    })
}

/// Waits (polling `/stats` every 200 ms) until the server's history holds no message and no
/// stream, for at most [`HISTORY_SETTLE`], giving up once the count of held messages has
/// not fallen for [`HISTORY_STUCK`]. Returns whether it held something and then drained (the
/// RSS read after close is then the server's without the round's messages, not a reading
/// taken at a random point of their expiry).
fn wait_history_drained(publish: SocketAddr) -> bool {
    let t0 = Instant::now();
    let (mut low, mut since, mut held) = (u64::MAX, t0, false);
    while t0.elapsed() < HISTORY_SETTLE {
        let Ok(stats) = fetch_stats_keys(publish, &["history_ids", "history_messages"]) else {
            return false;
        };
        let total: u64 = stats.iter().map(|(_, v)| *v).sum();
        if total == 0 {
            return held;
        }
        held = true;
        if total < low {
            (low, since) = (total, Instant::now());
        } else if since.elapsed() >= HISTORY_STUCK {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}
