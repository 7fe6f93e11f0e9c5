//! One server through `loadtest compare`'s four phases, giving one [`Row`]:
//!
//! 1. **Idle**: memory before any subscriber; open `conns` idle streams with distinct ids
//!    (`1..=conns`); memory again once stable, and the kernel's.
//! 2. **One message each**: one publish to every id (pipelined, ids in order); check that each
//!    arrived; memory once stable (no per-connection buffer may survive a write).
//! 3. **Saturate**: pipelined publishers to random ids as fast as the server answers, for a
//!    fixed window; delivered messages/s and server CPU per delivered message over the window,
//!    publish-to-receive p50/p99 of those messages.
//! 4. **Close**: every subscriber closes; after a pause (the server gives memory back after
//!    ~1-2 s idle), memory once more.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use crate::tools::loadtest::client::flood::{self, FloodConfig, FloodResult, FloodShared};
use crate::tools::loadtest::client::pipeline::{self, IdPlan, PipeConfig, PipeResult, PipeShared};
use crate::tools::loadtest::host::procmem::{KernelMem, ProcSet};
use crate::tools::loadtest::report::compare::Row;
use crate::tools::loadtest::report::Latency;
use crate::tools::loadtest::wire::framing::Framing;
use crate::tools::loadtest::wire::resume::Transport;
use crate::tools::loadtest::wire::url::UrlTemplate;

/// Longest wait for memory to settle at each reading.
const SETTLE: Duration = Duration::from_secs(5);

/// Sequence numbers at or past `conns + SEQ_SPAN` are garbled (bounds the received bitmap).
const SEQ_SPAN: u64 = 1 << 27;

/// The server under test.
pub(crate) struct Target {
    /// The row's name.
    pub label: String,
    /// Its processes.
    pub procs: ProcSet,
    /// Subscriber URL (`{id}`).
    pub sub_url: UrlTemplate,
    /// Publish URL (`{id}`).
    pub pub_url: UrlTemplate,
    /// How its streams carry messages.
    pub framing: Framing,
    /// uring-comet: strict checks (`200 {"delivered":N}` answers, test messages only).
    pub ours: bool,
}

/// The scenario's knobs (`loadtest compare` flags).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Subscriber connections.
    pub conns: u64,
    /// Subscriber connects started per second.
    pub connect_rate: f64,
    /// Most connects in flight.
    pub max_connecting: u64,
    /// Saturation window.
    pub saturate: Duration,
    /// Publisher connections.
    pub publishers: usize,
    /// Requests in flight per publisher connection.
    pub depth: usize,
    /// Pause after closing before the last memory reading.
    pub close_wait: Duration,
    /// Source addresses for subscribers (0: automatic).
    pub source_addrs: u32,
}

/// Progress for people, on stderr.
fn say(msg: &str) {
    eprintln!("compare: {msg}");
}

/// Runs the four phases against `t`; `alive` tells whether the server is still running.
pub(crate) fn measure(t: &Target, s: &Settings, alive: &mut dyn FnMut() -> bool) -> Result<Row> {
    let mut row = Row {
        label: t.label.clone(),
        ..Row::default()
    };
    // Phase 1: idle, then idle subscribers.
    row.kernel[0] = KernelMem::read();
    row.idle = t.procs.wait_stable(SETTLE)?.0;
    row.procs = row.idle.procs;
    let (fshared, flood) = open_idle(t, s, alive, &mut row)?;
    row.loaded = t.procs.wait_stable(SETTLE)?.0;
    row.kernel[1] = KernelMem::read();
    // Phase 2: one message to every id.
    let one = one_each(t, s, &fshared)?;
    row.after_msg = t.procs.wait_stable(SETTLE)?.0;
    // Phase 3: saturate for a fixed window.
    let sat = saturate(t, s, &fshared, one.ok, &mut row)?;
    let server_alive = alive();
    // Phase 4: close everything, let the server give memory back.
    let fres = stop(&fshared, flood)?;
    say(&format!(
        "{}: closed every subscriber; waiting {:.0} s",
        t.label,
        s.close_wait.as_secs_f64()
    ));
    std::thread::sleep(s.close_wait);
    row.after_close = t.procs.wait_stable(SETTLE)?.0;
    row.kernel[2] = KernelMem::read();
    fill_row(&mut row, s.conns, &one, &sat, &fres, server_alive);
    Ok(row)
}

/// The subscriber loop on its thread.
type Flood = JoinHandle<Result<FloodResult>>;

/// Phase 1: opens `conns` idle subscribers (bounded: twice the planned time plus 10 s);
/// the connect time goes into `row`. Errors: a stream failed or did not open in time, or
/// the server exited (the subscriber loop is then stopped).
fn open_idle(
    t: &Target,
    s: &Settings,
    alive: &mut dyn FnMut() -> bool,
    row: &mut Row,
) -> Result<(Arc<FloodShared>, Flood)> {
    let n = s.conns;
    let fshared = Arc::new(FloodShared::default());
    let fcfg = FloodConfig {
        ids: None,
        url: t.sub_url.clone(),
        first_id: 1,
        count: n,
        connect_rate: s.connect_rate,
        max_connecting: s.max_connecting.max(1),
        duration: None,
        stats_to_stderr: true,
        strict: t.ours,
        seq_limit: n + SEQ_SPAN,
        source_addrs: s.source_addrs,
        framing: t.framing,
        transport: Transport::Test,
        latency_from_seq: n,
        local_seqs: None,
        churn_per_min: 0.0,
        tokens: None,
    };
    let fs = fshared.clone();
    let flood = std::thread::Builder::new()
        .name("flood".into())
        .spawn(move || flood::run(fcfg, fs))?;
    say(&format!("{}: opening {n} idle subscribers", t.label));
    let t0 = Instant::now();
    let budget = Duration::from_secs_f64(2.0 * n as f64 / s.connect_rate) + Duration::from_secs(10);
    loop {
        let (up, down) = (
            fshared.connected.load(Relaxed),
            fshared.closed.load(Relaxed),
        );
        if up == n {
            break;
        }
        if down > 0 || flood.is_finished() || t0.elapsed() > budget || !alive() {
            let notes = stop(&fshared, flood).map(|r| r.notes.join("; "));
            bail!(
                "{}: only {up} of {n} streams opened ({down} failed). {}",
                t.label,
                notes.unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    row.connect_s = t0.elapsed().as_secs_f64();
    Ok((fshared, flood))
}

/// Phase 2: one message to every id (pipelined, ids in order), then waits (at most 5 s) for
/// them to arrive.
fn one_each(t: &Target, s: &Settings, fshared: &FloodShared) -> Result<PipeResult> {
    let n = s.conns;
    say(&format!("{}: one message to each of {n} ids", t.label));
    let one = pipeline::run(
        PipeConfig {
            url: t.pub_url.clone(),
            conns: s.publishers,
            depth: s.depth,
            ids: IdPlan::InOrder {
                first_id: 1,
                count: n,
            },
            first_seq: 0,
            total: Some(n),
            send_until: Instant::now() + Duration::from_secs(30 + n / 1000),
            tail: Duration::from_secs(5),
            any_2xx: !t.ours,
        },
        Arc::new(PipeShared::default()),
    )?;
    wait_received(fshared, one.ok, Duration::from_secs(5));
    Ok(one)
}

/// Phase 3: pipelined publishers to random ids as fast as the server answers for the
/// window; deliveries and the server's CPU over the window go into `row`.
fn saturate(
    t: &Target,
    s: &Settings,
    fshared: &FloodShared,
    one_ok: u64,
    row: &mut Row,
) -> Result<PipeResult> {
    let n = s.conns;
    say(&format!(
        "{}: saturating for {:.0} s",
        t.label,
        s.saturate.as_secs_f64()
    ));
    let (cpu0, recv0, w0) = (
        t.procs.cpu_seconds(),
        fshared.received.load(Relaxed),
        Instant::now(),
    );
    let pcfg = PipeConfig {
        url: t.pub_url.clone(),
        conns: s.publishers,
        depth: s.depth,
        ids: IdPlan::Random { max_id: n, seed: 1 },
        first_seq: n,
        total: None,
        send_until: w0 + s.saturate,
        tail: Duration::from_secs(2),
        any_2xx: !t.ours,
    };
    let sat = std::thread::Builder::new()
        .name("saturate".into())
        .spawn(move || pipeline::run(pcfg, Arc::new(PipeShared::default())))?;
    std::thread::sleep((w0 + s.saturate).saturating_duration_since(Instant::now()));
    let (cpu1, recv1, w1) = (
        t.procs.cpu_seconds(),
        fshared.received.load(Relaxed),
        Instant::now(),
    );
    let sat = sat
        .join()
        .map_err(|_| anyhow!("the saturating thread panicked"))??;
    wait_received(fshared, one_ok + sat.ok, Duration::from_secs(2));
    row.sat_secs = (w1 - w0).as_secs_f64();
    row.sat_delivered = recv1 - recv0;
    row.sat_cpu_s = cpu1 - cpu0;
    row.sat_accepted = sat.ok;
    row.sat_failed = sat.failed;
    Ok(sat)
}

/// The row's delivery figures and notes from the one-each and saturation publishers and
/// the subscribers' result (at most 8 notes).
fn fill_row(
    row: &mut Row,
    n: u64,
    one: &PipeResult,
    sat: &PipeResult,
    fres: &FloodResult,
    server_alive: bool,
) {
    let received = &fres.checker.received;
    let lost = one.ok_seqs.count_missing_from(received);
    row.conns = fres.connected;
    row.one_msg = [one.ok, one.ok - lost, lost];
    let lat = Latency::from_histogram(&fres.checker.latency_us);
    row.latency_us = [lat.p50, lat.p99];
    row.bad_chunks = fres.checker.counts.errors();
    row.closed = fres.closed;
    if !server_alive {
        row.notes.push("the server exited during the run".into());
    }
    if one.ok < n {
        row.notes.push(format!(
            "only {} of {n} one-each publishes accepted",
            one.ok
        ));
    }
    for n in one
        .notes
        .iter()
        .chain(&sat.notes)
        .chain(&fres.notes)
        .chain(&fres.checker.notes)
    {
        if row.notes.len() < 8 {
            row.notes.push(n.clone());
        }
    }
}

/// Waits (at most `max`) until the subscribers have received `want` distinct messages.
fn wait_received(shared: &FloodShared, want: u64, max: Duration) {
    let t0 = Instant::now();
    while shared.received.load(Relaxed) < want && t0.elapsed() < max {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Stops the subscriber loop (closing every stream) and returns what it saw.
fn stop(shared: &FloodShared, h: JoinHandle<Result<FloodResult>>) -> Result<FloodResult> {
    shared.stop.store(true, Relaxed);
    h.join()
        .map_err(|_| anyhow!("the subscriber thread panicked"))?
}
