//! The main job's leak guard, `uring-comet loadtest --rounds N`: one server, and N rounds of
//! the same life, each measured once every client is gone:
//!
//! 1. **Server**: start it as a child; its settled idle RSS as the baseline.
//! 2. **Each round**: open `--conns` subscribers (ids 1..=conns, any `--transport`), publish
//!    one message to each id (at `--rate`, from `--parallel` connections), wait for them to
//!    arrive, close every subscriber, wait for the server to be back to its baseline
//!    (connections, ids, slots, fds), then read its settled RSS: the RSS after close.
//! 3. **Report** (text or `--json`): every round's figures, and the growth of the RSS
//!    after close from round 10 (or the first) to the last, in percent. A leak shows as a
//!    steady climb; a high-water mark as a climb for a few rounds and then a plateau. Fails
//!    if a message was lost or arrived wrong, or the server did not come back to baseline.

use std::sync::Arc;
use std::time::Duration;

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
use crate::tools::loadtest::wire::url::UrlTemplate;

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
