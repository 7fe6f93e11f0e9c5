//! The shard threads: one body for both backends, generic over the driver, and the shard
//! loop each runs.
//!
//! A backend is a [`Driver`] plus the runtime its shard loop runs on ([`ShardRuntime`]):
//! io_uring shards run on tokio-uring, epoll shards on tokio's current-thread runtime. The
//! body is the same for both: pin, open the driver on this thread, report ready, build the
//! shard, run its loop (beside the cluster agent on shard 0) until shutdown.

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::affinity::pin_to;
use crate::cluster::Cluster;
use crate::config::ServerConfig;
use crate::driver::epoll::Epoll;
use crate::driver::uring::{Plan, Uring};
use crate::driver::Driver;
use crate::mesh::Mesh;
use crate::shard::{FriendsShard, Shard};
use crate::stats::ShardStats;

/// How long a stopping shard waits for its streams' last bytes and in-flight operations
/// before it drops its driver, once stopped (after the drain, or at once on SIGINT).
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Turns in a row after which a busy shard loop that shares its runtime (with the cluster
/// agent, on shard 0) yields to it, so the agent is never starved while the shard has work.
const TURNS_PER_YIELD: u32 = 16;

/// A backend: a driver opened on the shard's own thread, and the runtime its loop runs on.
pub(super) trait ShardRuntime: Driver + Sized + 'static {
    /// What [`ShardRuntime::open`] builds besides the driver and `block_on` consumes.
    type Runtime;

    /// Opens this thread's driver (and runtime, if it is built before the loop starts).
    /// Errors: the kernel refused the ring, epoll instance or runtime.
    fn open(plan: Plan) -> io::Result<(Self, Self::Runtime)>;

    /// Runs `fut` to completion on this thread.
    fn block_on(rt: Self::Runtime, fut: impl Future<Output = ()>);
}

impl ShardRuntime for Uring {
    /// tokio-uring builds its runtime in `block_on`.
    type Runtime = ();

    fn open(plan: Plan) -> io::Result<(Self, ())> {
        // The ring is created on its own thread: SINGLE_ISSUER ties it to its creator.
        Ok((Uring::new(plan)?, ()))
    }

    fn block_on(_: (), fut: impl Future<Output = ()>) {
        tokio_uring::start(fut)
    }
}

impl ShardRuntime for Epoll {
    type Runtime = tokio::runtime::Runtime;

    fn open(_: Plan) -> io::Result<(Self, Self::Runtime)> {
        let driver = Epoll::new()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok((driver, rt))
    }

    fn block_on(rt: Self::Runtime, fut: impl Future<Output = ()>) {
        rt.block_on(fut)
    }
}

/// What every shard thread shares.
#[derive(Clone)]
pub(super) struct Shared {
    /// The validated settings.
    pub(super) cfg: Arc<ServerConfig>,
    /// The cross-core queues and doorbells.
    pub(super) mesh: Arc<Mesh>,
    /// Per-shard counters.
    pub(super) stats: Arc<[ShardStats]>,
    /// Cluster mode's shared state; its Redis agent runs on shard 0.
    pub(super) cluster: Option<Arc<Cluster>>,
    /// The direct-descriptor plan (io_uring backend).
    pub(super) plan: Plan,
    /// Where each thread reports whether its driver opened.
    pub(super) ready: mpsc::Sender<io::Result<()>>,
}

/// What one shard thread owns.
pub(super) struct Seed {
    /// The shard's index.
    pub(super) me: usize,
    /// The CPU to pin the thread to, if any.
    pub(super) cpu: Option<usize>,
    /// Its subscriber listener.
    pub(super) sub: OwnedFd,
    /// Its publish listener.
    pub(super) publ: OwnedFd,
    /// Its part of the friends store (`--friends`).
    pub(super) friends: Option<FriendsShard>,
}

/// Starts thread `shard-N` for `seed`, running backend `D`. Errors: the thread could not be
/// spawned.
pub(super) fn spawn<D: ShardRuntime>(shared: Shared, seed: Seed) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("shard-{}", seed.me))
        .spawn(move || body::<D>(shared, seed))
}

/// The body of every shard thread; see the module doc.
fn body<D: ShardRuntime>(shared: Shared, seed: Seed) {
    let Seed {
        me,
        cpu,
        sub,
        publ,
        friends,
    } = seed;
    if let Some(cpu) = cpu {
        pin_to(me, cpu);
    }
    let (driver, rt) = match D::open(shared.plan) {
        Ok(x) => x,
        Err(e) => return drop(shared.ready.send(Err(e))),
    };
    let _ = shared.ready.send(Ok(()));
    let Shared {
        cfg,
        mesh,
        stats,
        cluster,
        ..
    } = shared;
    let agent = cluster.clone().filter(|_| me == 0);
    let shard = Shard::new(me, driver, mesh.clone(), stats, cfg, sub, publ)
        .with_probes(cluster.clone())
        .with_cluster(cluster)
        .with_friends(friends);
    D::block_on(rt, async move {
        let shares = spawn_agent(agent);
        run(shard, mesh, me, shares).await
    });
}

/// Starts the cluster agent, if any, as a task on the calling shard's runtime (it lives
/// until that runtime is dropped at shutdown). Returns whether it did (the shard loop then
/// shares its runtime).
fn spawn_agent(agent: Option<Arc<Cluster>>) -> bool {
    match agent {
        Some(c) => {
            tokio::spawn(crate::cluster::agent::run(c));
            true
        }
        None => false,
    }
}

/// The driver's wait fd, for the reactor's `AsyncFd`.
struct RingFd(RawFd);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// The shard loop: turn the shard while it has work; otherwise announce sleep and wait for
/// the driver's fd, the doorbell or the idle timer. After shutdown it runs until the shard
/// has finished or [`STOP_GRACE`] has passed.
async fn run<D: Driver>(mut shard: Shard<D>, mesh: Arc<Mesh>, me: usize, shares: bool) {
    // SAFETY: the ring fd outlives the registration: `shard` owns the ring and is dropped
    // after `ring` (declared later, dropped first).
    let ring =
        unsafe { AsyncFd::register_with_interest(RingFd(shard.wait_fd()), Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
            .expect("register the ring fd with the reactor");
    let mut stop_deadline = None;
    let mut busy_turns = 0u32;
    loop {
        let worked = shard.turn();
        busy_turns = if worked && shares { busy_turns + 1 } else { 0 };
        if busy_turns >= TURNS_PER_YIELD {
            busy_turns = 0;
            tokio::task::yield_now().await;
        }
        if mesh.is_shutdown() {
            let deadline = *stop_deadline.get_or_insert_with(|| Instant::now() + STOP_GRACE);
            if shard.finished() || Instant::now() > deadline {
                tracing::debug!(shard = me, finished = shard.finished(), "shard stopped");
                break;
            }
        }
        if worked || (!mesh.prepare_sleep(me) && !mesh.is_shutdown()) {
            continue;
        }
        if shard.has_completions() {
            mesh.woke(me);
            continue;
        }
        tokio::select! {
            r = ring.readable() => if let Ok(mut g) = r { g.clear_ready() },
            _ = mesh.doorbell(me).notified() => {}
            _ = tokio::time::sleep(shard.idle_timeout()) => shard.on_idle(),
        }
        mesh.woke(me);
    }
}
