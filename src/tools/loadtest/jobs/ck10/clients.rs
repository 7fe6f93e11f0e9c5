//! The main job's clients: the subscribers ([`Subscribers`], phase 2), the slow readers
//! ([`SlowLoad`], phase 3), the publishers (phase 4) and the drain (phase 5).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use super::{say, PUBLISH_TAIL};
use crate::tools::loadtest::cli::MainArgs;
use crate::tools::loadtest::client::flood::{self, FloodConfig, FloodResult, FloodShared};
use crate::tools::loadtest::client::msggen::{self, MsggenConfig, MsggenResult, MsggenShared};
use crate::tools::loadtest::client::slow::comeback::{self, Watch, Watcher};
use crate::tools::loadtest::client::slow::{
    self, BlastConfig, ComebackFigures, SlowFigures, SlowReader,
};
use crate::tools::loadtest::host::child::ServerGuard;
use crate::tools::loadtest::wire::framing::Framing;
use crate::tools::loadtest::wire::url::UrlTemplate;

/// The subscriber loop on its thread, once every stream is open.
pub(super) struct Subscribers {
    pub(super) shared: Arc<FloodShared>,
    pub(super) thread: JoinHandle<Result<FloodResult>>,
    pub(super) connect_s: f64,
}

impl Subscribers {
    /// Stops the subscriber loop and returns what it saw.
    pub(super) fn stop(self) -> Result<FloodResult> {
        stop_flood(&self.shared, self.thread)
    }
}

/// Phase 2: opens `conns` subscriber streams, bounded by twice the planned time plus 10 s.
/// Errors: a connection failed, the budget ran out, or the server exited.
pub(super) fn connect(a: &MainArgs, server: &mut ServerGuard, total: u64) -> Result<Subscribers> {
    let shared = Arc::new(FloodShared::default());
    let cfg = FloodConfig {
        ids: None,
        url: UrlTemplate::local(server.sub_addr, a.transport.path())?,
        first_id: 1,
        count: a.connect.conns,
        connect_rate: a.connect.connect_rate,
        max_connecting: a.connect.max_connecting.max(1),
        duration: None,
        stats_to_stderr: a.json,
        strict: true,
        seq_limit: total,
        source_addrs: a.source_addrs,
        framing: Framing::Seed,
        transport: a.transport,
        latency_from_seq: 0,
        local_seqs: None,
        churn_per_min: a.churn,
        tokens: server.tokens.clone(),
    };
    let fs = shared.clone();
    let flood = std::thread::Builder::new()
        .name("flood".into())
        .spawn(move || flood::run(cfg, fs))?;
    let conns = a.connect.conns;
    say(&format!(
        "opening {conns} subscriber streams at {}/s",
        a.connect.connect_rate
    ));
    let t0 = Instant::now();
    let budget = Duration::from_secs_f64(2.0 * conns as f64 / a.connect.connect_rate)
        + Duration::from_secs(10);
    loop {
        let (up, down) = (shared.connected.load(Relaxed), shared.closed.load(Relaxed));
        if up == conns {
            break;
        }
        let why = if up + down >= conns || flood.is_finished() {
            Some(format!("{down} connections failed"))
        } else if t0.elapsed() > budget {
            Some(format!("not done after {:.0} s", budget.as_secs_f64()))
        } else if !server.alive() {
            Some("the server exited".to_string())
        } else {
            None
        };
        if let Some(why) = why {
            let notes = stop_flood(&shared, flood)
                .map(|r| r.notes.join("; "))
                .unwrap_or_default();
            bail!("only {up} of {conns} subscriber streams opened: {why}. {notes}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let connect_s = t0.elapsed().as_secs_f64();
    say(&format!(
        "{conns} streams open in {connect_s:.1} s; waiting for the server's RSS to settle"
    ));
    Ok(Subscribers {
        shared,
        thread: flood,
        connect_s,
    })
}

/// The slow readers, their publisher, and with a resuming transport the watcher that
/// brings them back after a cut (none without `--slow-readers`).
pub(super) struct SlowLoad {
    /// The readers nobody watches (`--transport test`); closed when dropped.
    pub(super) readers: Vec<SlowReader>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) blaster: Option<JoinHandle<Result<SlowFigures>>>,
    /// With a resuming transport: the watcher, and what it watches.
    watcher: Option<(Watcher, Watch)>,
}

impl SlowLoad {
    /// Phase 3: opens the slow readers and starts their publisher (and their watcher).
    pub(super) fn start(a: &MainArgs, server: &ServerGuard) -> Result<SlowLoad> {
        let stop = Arc::new(AtomicBool::new(false));
        if a.slow_readers == 0 {
            return Ok(SlowLoad {
                readers: Vec::new(),
                stop,
                blaster: None,
                watcher: None,
            });
        }
        let first_id = a.connect.conns + 1;
        say(&format!(
            "opening {} slow readers (ids {first_id}..={}), which will not read{}",
            a.slow_readers,
            a.connect.conns + a.slow_readers,
            if a.transport.resumes() {
                " until one is cut"
            } else {
                ""
            }
        ));
        let mut readers = slow::open(server.sub_addr, first_id, a.slow_readers, a.transport)?;
        let cfg = BlastConfig {
            publish: server.pub_addr,
            first_id,
            readers: a.slow_readers,
            msg_bytes: a.slow_msg_bytes,
            rate: a.slow_rate,
            server_pid: server.pid,
        };
        let watcher = if a.transport.resumes() {
            let w = Watch {
                sub: server.sub_addr,
                publish: server.pub_addr,
                msg_bytes: a.slow_msg_bytes,
            };
            let readers = std::mem::take(&mut readers);
            Some((comeback::spawn(readers, w, stop.clone())?, w))
        } else {
            None
        };
        let blaster = Some(slow::spawn_blaster(cfg, stop.clone())?);
        Ok(SlowLoad {
            readers,
            stop,
            blaster,
            watcher,
        })
    }

    /// Stops the slow readers' publisher (and watcher); its figures, if it ran.
    pub(super) fn stop_publisher(&mut self) -> Option<Result<SlowFigures>> {
        self.stop.store(true, Relaxed);
        self.blaster.take().map(|h| {
            h.join()
                .map_err(|_| anyhow!("the slow-reader publisher panicked"))
                .and_then(|r| r)
        })
    }

    /// With a resuming transport, after [`stop_publisher`](Self::stop_publisher): reads each
    /// reader until it has every message `sent` says was answered `200` to it, coming back
    /// after a cut; then closes them. `None` without a watcher.
    pub(super) fn come_back(&mut self, sent: Option<&SlowFigures>) -> Option<ComebackFigures> {
        let (h, w) = self.watcher.take()?;
        let (readers, fig) = h.join().ok()?;
        say("reading the slow readers to the end, coming back after any cut");
        let want = sent.map_or(&[][..], |f| &f.per_reader[..]);
        Some(comeback::finish(readers, fig, want, w))
    }
}

/// Phase 4: `rate` messages/s for `duration` s from `parallel` generators, bounded by its own
/// deadline (duration + tail). Errors: the publisher's.
pub(super) fn publish(a: &MainArgs, server: &ServerGuard, total: u64) -> Result<MsggenResult> {
    say(&format!(
        "publishing {total} messages at {}/s from {} generators",
        a.rate, a.parallel
    ));
    let cfg = MsggenConfig {
        url: UrlTemplate::local(server.pub_addr, "/send/{id}")?,
        parallel: a.parallel,
        total,
        interval: Duration::from_secs_f64(a.parallel as f64 / a.rate),
        max_id: a.connect.conns,
        ids_by_seq: None,
        first_seq: 0,
        seed: a.seed,
        tail: PUBLISH_TAIL,
        record_sends: a.churn > 0.0,
    };
    let shared = Arc::new(MsggenShared::default());
    let gen = std::thread::Builder::new()
        .name("msggen".into())
        .spawn(move || msggen::run(cfg, shared))?;
    gen.join()
        .map_err(|_| anyhow!("the publisher thread panicked"))
        .and_then(|r| r)
}

/// Phase 5: stops the churn, then waits (at most `drain_ms`) until `sent` messages have been
/// received and every churned subscriber is back; the milliseconds waited.
pub(super) fn drain(subs: &FloodShared, sent: u64, drain_ms: u64) -> u64 {
    subs.churn_hold.store(true, Relaxed);
    let d0 = Instant::now();
    let pending = || {
        subs.received.load(Relaxed) < sent
            || subs.reconnected.load(Relaxed) < subs.churned.load(Relaxed)
    };
    while pending() && d0.elapsed() < Duration::from_millis(drain_ms) {
        std::thread::sleep(Duration::from_millis(5));
    }
    d0.elapsed().as_millis() as u64
}

/// Stops the subscriber loop and returns what it saw.
fn stop_flood(shared: &FloodShared, h: JoinHandle<Result<FloodResult>>) -> Result<FloodResult> {
    shared.stop.store(true, Relaxed);
    h.join()
        .map_err(|_| anyhow!("the subscriber thread panicked"))?
}
