//! `loadtest friends`'s clients: the logins' subscriber loops ([`Logins`], phase 5) and the
//! publishers with the drain after them (phase 6).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use super::plan::EventPlan;
use super::FriendsArgs;
use crate::tools::loadtest::client::friends_subs::{self, SubsConfig, SubsResult, SubsShared};
use crate::tools::loadtest::client::msggen::{self, MsggenConfig, MsggenResult, MsggenShared};
use crate::tools::loadtest::host::child::ServerGuard;
use crate::tools::loadtest::host::proc::cpu_seconds;
use crate::tools::loadtest::wire::url::UrlTemplate;

/// The logins' subscriber loops, one per client thread, each over its share.
pub(super) struct Logins {
    pub(super) shared: Vec<Arc<SubsShared>>,
    pub(super) loops: Vec<JoinHandle<Result<SubsResult>>>,
    pub(super) connect_s: f64,
}

impl Logins {
    /// `f` summed over the threads.
    pub(super) fn sum(&self, f: fn(&SubsShared) -> &AtomicU64) -> u64 {
        sum(&self.shared, f)
    }

    /// Tells every loop to stop, without waiting.
    pub(super) fn stop_all(&self) {
        self.shared.iter().for_each(|s| s.stop.store(true, Relaxed));
    }

    /// Stops every loop and merges what they saw. Errors: a thread panicked or failed.
    pub(super) fn stop(self) -> Result<SubsResult> {
        self.stop_all();
        let mut res: Option<SubsResult> = None;
        for l in self.loops {
            let r = l
                .join()
                .map_err(|_| anyhow!("a subscriber thread panicked"))??;
            res = Some(match res {
                None => r,
                Some(acc) => acc.merge(r)?,
            });
        }
        res.ok_or_else(|| anyhow!("no subscriber thread"))
    }
}

/// `f` summed over the subscriber threads' shared counters.
fn sum(shared: &[Arc<SubsShared>], f: fn(&SubsShared) -> &AtomicU64) -> u64 {
    shared.iter().map(|s| f(s).load(Relaxed)).sum()
}

/// Phase 5: every login connects (bounded: twice the planned time plus 10 s). Errors: a
/// login failed, the budget ran out, a loop ended or the server exited.
pub(super) fn log_in(
    a: &FriendsArgs,
    server: &mut ServerGuard,
    plan: &EventPlan,
) -> Result<Logins> {
    let order = &plan.p.logins;
    let threads = usize::from(a.client_threads);
    let all_users = Arc::new(order.clone());
    let mut shared = Vec::new();
    let mut loops = Vec::new();
    for t in 0..threads {
        let sh = Arc::new(SubsShared::default());
        let scfg = SubsConfig {
            addr: server.sub_addr,
            users: all_users.clone(),
            mine: (t..order.len()).step_by(threads).collect(),
            connect_rate: a.connect_rate / threads as f64,
            max_connecting: (a.max_connecting / threads).max(1),
            recipients: plan.recipients.clone(),
            io: a.client_io,
            min_wait_us: a.client_min_wait_us,
            expected: plan.planned / threads + plan.planned / threads / 8,
        };
        let ss = sh.clone();
        loops.push(
            std::thread::Builder::new()
                .name(format!("friends-subs-{t}"))
                .spawn(move || friends_subs::run(scfg, ss))?,
        );
        shared.push(sh);
    }
    let t0 = Instant::now();
    let budget = Duration::from_secs_f64(2.0 * order.len() as f64 / a.connect_rate + 10.0);
    while sum(&shared, |s| &s.connected) < order.len() as u64 {
        let failed = sum(&shared, |s| &s.closed);
        if failed > 0
            || t0.elapsed() > budget
            || !server.alive()
            || loops.iter().any(|l| l.is_finished())
        {
            shared.iter().for_each(|s| s.stop.store(true, Relaxed));
            let notes: Vec<String> = loops
                .into_iter()
                .filter_map(|l| l.join().ok().and_then(Result::ok))
                .flat_map(|r| r.notes)
                .collect();
            bail!(
                "only {} of {} logins connected ({failed} failed). {}",
                sum(&shared, |s| &s.connected),
                order.len(),
                notes.join("; ")
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Logins {
        shared,
        loops,
        connect_s: t0.elapsed().as_secs_f64(),
    })
}

/// What publishing and draining measured.
pub(super) struct Published {
    pub(super) result: MsggenResult,
    /// Deliveries the events answered `200` must make.
    pub(super) expected: u64,
    pub(super) server_cpu_s: f64,
    pub(super) client_cpu_s: f64,
    pub(super) server_exited: bool,
}

/// Phase 6: `--parallel` publishers send the planned events at `--rate`; then waits (at most
/// `--drain-ms`) for the deliveries they must make. Errors: the publisher's.
pub(super) fn publish(
    a: &FriendsArgs,
    server: &mut ServerGuard,
    plan: &EventPlan,
    logins: &Logins,
) -> Result<Published> {
    let total = plan.events.len() as u64;
    let cpu0 = cpu_seconds(server.pid)?;
    let me = std::process::id();
    let client0 = cpu_seconds(me)?;
    let mcfg = MsggenConfig {
        url: UrlTemplate::local(server.pub_addr, "/publish/{id}")?,
        parallel: a.parallel,
        total,
        interval: Duration::from_secs_f64(a.parallel as f64 / a.rate),
        max_id: 1,
        ids_by_seq: Some(plan.events.clone()),
        first_seq: 0,
        seed: a.graph.shape.seed,
        tail: Duration::from_secs(2),
        record_sends: false,
    };
    let result = msggen::run(mcfg, Arc::new(MsggenShared::default()))?;
    let expected = (0..total)
        .filter(|&seq| result.ok_seqs.contains(seq))
        .map(|seq| plan.recipients[&(plan.events[seq as usize] as u32)].len() as u64)
        .sum();
    let d0 = Instant::now();
    while logins.sum(|s| &s.received) < expected && d0.elapsed() < Duration::from_millis(a.drain_ms)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(Published {
        server_exited: !server.alive(),
        server_cpu_s: cpu_seconds(server.pid).unwrap_or(cpu0) - cpu0,
        client_cpu_s: cpu_seconds(me).unwrap_or(client0) - client0,
        result,
        expected,
    })
}
