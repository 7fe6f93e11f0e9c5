//! The phases of `loadtest room` ([`super::run`] lists them): the server, the subscribers on
//! their thread ([`Subscribers`]), the publish window with its drain ([`Window`]), the
//! ceiling's run, and the report from what they measured.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use super::{say, RoomArgs};
use crate::tools::loadtest::client::msggen::{self, MsggenConfig, MsggenShared, XorShift};
use crate::tools::loadtest::client::room::{RoomRole, RoomShared};
use crate::tools::loadtest::client::subscriber::{self, LoopConfig, Role};
use crate::tools::loadtest::host::child::ServerGuard;
use crate::tools::loadtest::host::proc::{cpu_seconds, rss_bytes, wait_rss_stable};
use crate::tools::loadtest::jobs::compare::ceiling::{self, Ceiling};
use crate::tools::loadtest::report::room::RoomReport;
use crate::tools::loadtest::report::Latency;
use crate::tools::loadtest::wire::url::UrlTemplate;

/// Longest wait for the server's RSS to settle once every subscriber is connected.
const RSS_SETTLE: Duration = Duration::from_secs(5);

/// Phase 1: the server as a child.
pub(super) fn start_server(a: &RoomArgs) -> Result<ServerGuard> {
    let (bin, args) = a.server.command(Vec::new(), a.backend)?;
    let server = ServerGuard::start(&bin, &args, a.server.server_log.as_ref())?;
    say(&format!(
        "server pid {}: subscribers on {}, publish on {}",
        server.pid, server.sub_addr, server.pub_addr
    ));
    Ok(server)
}

/// The subscriber loop on its thread, once every stream is open.
pub(super) struct Subscribers {
    shared: Arc<RoomShared>,
    thread: JoinHandle<Result<RoomRole>>,
    /// Server RSS once they were all connected and it settled, bytes.
    rss_connected: u64,
}

impl Subscribers {
    /// Stops the loop; what it saw. Errors: the loop failed or panicked.
    pub(super) fn stop(self) -> Result<RoomRole> {
        stop_loop(&self.shared, self.thread)
    }
}

fn stop_loop(shared: &RoomShared, thread: JoinHandle<Result<RoomRole>>) -> Result<RoomRole> {
    shared.stop.store(true, Relaxed);
    thread
        .join()
        .map_err(|_| anyhow!("the subscriber thread panicked"))?
}

/// Phase 2: opens every subscriber, bounded by twice the planned time plus 10 s. Errors: a
/// connection failed, the budget ran out, or the server exited.
pub(super) fn connect(a: &RoomArgs, server: &ServerGuard) -> Result<Subscribers> {
    let conns = a.rooms * a.subs_per_room;
    let shared = Arc::new(RoomShared::default());
    let url = UrlTemplate::local(server.sub_addr, a.transport.path())?;
    let role = RoomRole::new(
        conns as usize,
        a.rooms,
        a.transport,
        a.msg_bytes,
        url.addr.ip(),
        shared.clone(),
    );
    let cfg = LoopConfig {
        url,
        headers: a.transport.headers(),
        expect: a.transport.expect(),
        count: conns as usize,
        connect_rate: a.connect_rate,
        max_connecting: a.max_connecting.max(1),
        until: None,
        stop_when_all_ended: true,
        eager_request: false,
        short_read_drains: false,
        reset_on_end: false,
        reset_at_finish: true,
    };
    let s = shared.clone();
    let thread = std::thread::Builder::new()
        .name("room-subs".into())
        .spawn(move || Ok(subscriber::run(cfg, role, None, &s.stop)?.role))?;
    say(&format!(
        "opening {} rooms x {} subscribers ({conns} streams)",
        a.rooms, a.subs_per_room
    ));
    let t0 = Instant::now();
    let budget = Duration::from_secs_f64(2.0 * conns as f64 / a.connect_rate + 10.0);
    loop {
        let (up, down) = (shared.connected.load(Relaxed), shared.closed.load(Relaxed));
        if up == conns {
            break;
        }
        if down > 0 || thread.is_finished() || t0.elapsed() > budget {
            let notes = stop_loop(&shared, thread)
                .map(|r| r.notes.join("; "))
                .unwrap_or_else(|e| format!("{e:#}"));
            bail!("only {up} of {conns} subscriber streams opened ({down} failed). {notes}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (rss_connected, _) = wait_rss_stable(server.pid, RSS_SETTLE)?;
    say(&format!(
        "{conns} streams open in {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
    Ok(Subscribers {
        shared,
        thread,
        rss_connected,
    })
}

/// Which room each message goes to, by sequence number (drawn before the run, so each room's
/// due deliveries are known from the publishes answered `200`).
pub(super) struct Plan {
    rooms_by_seq: Arc<Vec<u64>>,
}

/// Phase 3's plan: `--rate` x `--duration` messages, each to a room drawn at random.
pub(super) fn plan(a: &RoomArgs) -> Plan {
    let total = (a.rate * a.duration).round().max(1.0) as u64;
    let mut rng = XorShift::new(a.seed);
    let rooms = (0..total).map(|_| 1 + rng.next_u64() % a.rooms).collect();
    Plan {
        rooms_by_seq: Arc::new(rooms),
    }
}

/// What the publish window measured.
pub(super) struct Window {
    /// Publishes answered `200` per room (index `room - 1`).
    per_room_ok: Vec<u64>,
    published: u64,
    publish_failed: u64,
    /// Seconds from the first publish to the last due delivery (or the drain's end).
    secs: f64,
    /// Server CPU seconds over the window.
    cpu_s: f64,
    rss_connected: u64,
    rss_end: u64,
}

/// Phases 3 and 4: publishes the plan at `--rate`, then waits (up to `--drain-ms`) for every
/// due delivery; the server's CPU is read at both ends. Errors: the publishers' loop failed,
/// /proc could not be read.
pub(super) fn publish(
    a: &RoomArgs,
    server: &ServerGuard,
    plan: &Plan,
    subs: &Subscribers,
) -> Result<Window> {
    let total = plan.rooms_by_seq.len() as u64;
    let cfg = MsggenConfig {
        url: UrlTemplate::local(server.pub_addr, "/send/{id}")?,
        parallel: a.parallel,
        total,
        interval: Duration::from_secs_f64(a.parallel as f64 / a.rate),
        max_id: a.rooms,
        ids_by_seq: Some(plan.rooms_by_seq.clone()),
        first_seq: 0,
        seed: a.seed,
        tail: Duration::from_secs(5),
        record_sends: false,
    };
    say(&format!(
        "publishing {total} messages of {} B at {}/s",
        a.msg_bytes, a.rate
    ));
    let cpu0 = cpu_seconds(server.pid)?;
    let t0 = Instant::now();
    let res = msggen::run_padded(cfg, a.msg_bytes, Arc::new(MsggenShared::default()))?;
    let mut per_room_ok = vec![0u64; a.rooms as usize];
    for (seq, &room) in plan.rooms_by_seq.iter().enumerate() {
        if res.ok_seqs.contains(seq as u64) {
            per_room_ok[(room - 1) as usize] += 1;
        }
    }
    let due = per_room_ok.iter().sum::<u64>() * a.subs_per_room;
    // 4. Drain.
    let deadline = Instant::now() + Duration::from_millis(a.drain_ms);
    while subs.shared.delivered.load(Relaxed) < due && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds(server.pid)? - cpu0;
    Ok(Window {
        per_room_ok,
        published: res.ok,
        publish_failed: res.failed + res.bad_answers,
        secs,
        cpu_s,
        rss_connected: subs.rss_connected,
        rss_end: rss_bytes(server.pid).unwrap_or(0),
    })
}

/// Phase 6: the delivery ceiling with as many connections and messages of `--msg-bytes`;
/// `Err` says why it did not run.
pub(super) fn ceiling(a: &RoomArgs) -> Result<Ceiling, String> {
    if a.no_ceiling {
        return Err("ceiling skipped (--no-ceiling)".into());
    }
    let dir = a.ceiling_dir.clone().or_else(ceiling::default_dir).ok_or(
        "ceiling: ../shared/tools/deliver-ceiling not found beside the repository (--ceiling-dir)",
    )?;
    let conns = a.rooms * a.subs_per_room;
    say(&format!(
        "delivery ceiling: {conns} connections, {} B messages, {} s",
        a.msg_bytes, a.ceiling_secs
    ));
    ceiling::build(&dir)
        .and_then(|bin| ceiling::run_sized(&bin, conns, a.msg_bytes, a.ceiling_secs))
        .map_err(|e| format!("ceiling: {e:#}"))
}

/// Phase 7: the report from what the subscribers saw, the window and the ceiling.
pub(super) fn report(
    a: &RoomArgs,
    role: RoomRole,
    w: Window,
    ceiling: Result<Ceiling, String>,
) -> RoomReport {
    let due_of = |i: usize| w.per_room_ok[(role.id(i) - 1) as usize];
    let lost = (0..role.check.received.len())
        .map(|i| due_of(i).saturating_sub(u64::from(role.check.received[i])))
        .sum();
    let mut notes = role.notes.clone();
    notes.extend(role.check.notes.iter().cloned());
    let ceiling = ceiling.map_err(|why| notes.push(why)).ok();
    RoomReport {
        backend: a
            .backend
            .map_or("auto".into(), |b| format!("{b:?}").to_lowercase()),
        transport: format!("{:?}", a.transport).to_lowercase(),
        rooms: a.rooms,
        subs_per_room: a.subs_per_room,
        msg_bytes: a.msg_bytes,
        connected: role.connected,
        closed: role.closed,
        published: w.published,
        publish_failed: w.publish_failed,
        expected: w.per_room_ok.iter().sum::<u64>() * a.subs_per_room,
        delivered: role.check.counts.ok,
        lost,
        counts: role.check.counts.clone(),
        window_s: w.secs,
        server_cpu_s: w.cpu_s,
        rss_connected_bytes: w.rss_connected,
        rss_end_bytes: w.rss_end,
        latency: Latency::from_histogram(&role.check.latency_us),
        ceiling,
        notes,
    }
}
