//! [`start`], as a list of phases, and the [`ServerHandle`] it returns.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::affinity::allowed_cpus;
use super::friends::load_friends;
use super::listen::{ensure_free, listeners};
use super::thread::{self, Seed, Shared};
use crate::cluster::Cluster;
use crate::config::{Backend, CpuAffinity, ServerConfig};
use crate::driver::epoll::Epoll;
use crate::driver::probe::choose_backend;
use crate::driver::uring::{Plan, Uring};
use crate::mesh::Mesh;
use crate::shard::FriendsShard;
use crate::stats::ShardStats;

/// How long [`start`] waits for the cluster agent's first Redis session before it returns
/// anyway (the node then serves local traffic and keeps reconnecting).
const CLUSTER_START_WAIT: Duration = Duration::from_secs(3);

/// A running server. Dropping it shuts the server down.
pub struct ServerHandle {
    backend: Backend,
    subscriber: SocketAddr,
    publish: SocketAddr,
    mesh: Arc<Mesh>,
    threads: Vec<JoinHandle<()>>,
    stats: Arc<[ShardStats]>,
    /// Every shard's listeners (duplicated fds), so [`ServerHandle::begin_drain`] can take
    /// them all out of their SO_REUSEPORT groups before it tells the shards.
    listening: Vec<OwnedFd>,
    metrics: Option<SocketAddr>,
}

impl ServerHandle {
    /// The bound subscriber listener address.
    pub fn subscriber_addr(&self) -> SocketAddr {
        self.subscriber
    }

    /// The backend the shards run (`Uring` or `Epoll`, never `Auto`).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The bound publish listener address.
    pub fn publish_addr(&self) -> SocketAddr {
        self.publish
    }

    /// The bound `--metrics-listen` address, if one was asked for.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// Whether a shard thread has ended on its own (it panicked: the server is broken).
    pub fn shard_died(&self) -> bool {
        !self.mesh.is_shutdown() && self.threads.iter().any(JoinHandle::is_finished)
    }

    /// Starts SIGTERM's drain (see `shard/drain.rs`): `/readyz` turns 503, every shard
    /// closes its listeners and ends its streams over `--drain-period`. Returns at once; the
    /// caller ends it with [`ServerHandle::shutdown`] once the period has passed or
    /// [`ServerHandle::drained`] says so.
    pub fn begin_drain(&self) {
        // Every listener leaves its group first (see `shard/drain.rs`), so that a client
        // the drain pushes away (a publisher whose connection it closes) can only reconnect
        // to another member of the group, never to a shard of this process that has not
        // seen the flag yet.
        for fd in &self.listening {
            // SAFETY: shutdown(2) on a listening socket we hold a duplicate of.
            unsafe { libc::shutdown(std::os::fd::AsRawFd::as_raw_fd(fd), libc::SHUT_RD) };
        }
        self.mesh.begin_drain();
    }

    /// Whether no subscriber or publisher connection is left on any shard (the drain has
    /// nothing more to do).
    pub fn drained(&self) -> bool {
        self.stats.iter().all(|s| {
            s.subscribers.load(std::sync::atomic::Ordering::Relaxed) == 0
                && s.publishers.load(std::sync::atomic::Ordering::Relaxed) == 0
        })
    }

    /// Stops every shard and waits for their threads. Errors: a shard had panicked.
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> anyhow::Result<()> {
        self.mesh.shutdown();
        let mut panicked = 0;
        for t in self.threads.drain(..) {
            panicked += usize::from(t.join().is_err());
        }
        anyhow::ensure!(panicked == 0, "{panicked} shard thread(s) panicked");
        Ok(())
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Starts the server and returns once every shard runs (in cluster mode, also once the
/// node is connected to Redis, or after 3 s without it).
///
/// Phases: tune malloc; choose the backend (probe, fallback); plan direct descriptors; check
/// that the ports are free (unless `--takeover`); bind the listeners; build the mesh,
/// cluster state and counters; load the friends store; start the shard threads; wait until
/// each has opened its driver; start the `--metrics-listen` thread; wait (bounded) for Redis.
///
/// Errors: a port already has a listener (unless `--takeover`); a listener cannot be bound;
/// io_uring cannot be set up (the error names the cause); the friends store cannot be
/// loaded; a thread cannot be spawned.
pub fn start(mut cfg: ServerConfig) -> anyhow::Result<ServerHandle> {
    keep_big_tables_mapped();
    cfg.backend = choose_backend(cfg.backend)?;
    let (backend, n) = (cfg.backend, cfg.shards);
    let plan = direct_descriptor_plan(&cfg);
    let send_timeout = Duration::from_secs(cfg.send_timeout_s);
    if !cfg.takeover {
        ensure_free(cfg.listen, "--listen")?;
        ensure_free(cfg.publish_listen, "--publish-listen")?;
    }
    let (subs, subscriber) = listeners(cfg.listen, n, cfg.sndbuf, send_timeout)?;
    let (pubs, publish) = listeners(cfg.publish_listen, n, 0, send_timeout)?;
    let mesh = Arc::new(Mesh::new(n));
    let cluster = cluster_for(&cfg, &mesh);
    let stats: Arc<[ShardStats]> = (0..n).map(|_| ShardStats::default()).collect();
    let friends = load_friends(&cfg, &stats)?;
    let all_stats = stats.clone();
    let listening = subs
        .iter()
        .chain(&pubs)
        .map(OwnedFd::try_clone)
        .collect::<io::Result<Vec<_>>>()?;
    let seeds = seeds(subs, pubs, friends, cfg.cpu_affinity);
    let (ready, ready_rx) = mpsc::channel::<io::Result<()>>();
    let metrics_src = match cfg.metrics_listen {
        Some(a) => Some((
            crate::metrics::listen::bind(a)?,
            crate::metrics::listen::Sources {
                stats: stats.clone(),
                cluster: cluster.clone(),
                mesh: mesh.clone(),
            },
        )),
        None => None,
    };
    let shared = Shared {
        cfg: Arc::new(cfg),
        mesh: mesh.clone(),
        stats,
        cluster: cluster.clone(),
        plan,
        ready,
    };
    // Every thread holds its own sender: once `spawn_shards` has dropped the original, the
    // channel closes when the last thread ends.
    let threads = spawn_shards(backend, shared, seeds)?;
    let mut handle = ServerHandle {
        backend,
        subscriber,
        publish,
        mesh,
        threads,
        stats: all_stats,
        listening,
        metrics: None,
    };
    wait_ready(&ready_rx, n, backend)?;
    if let Some((listener, src)) = metrics_src {
        handle.metrics = Some(crate::metrics::listen::spawn(listener, src)?);
    }
    if let Some(c) = &cluster {
        wait_cluster_up(c);
    }
    Ok(handle)
}

/// Makes glibc give every allocation over 128 KiB its own mapping, always, and give a
/// thread arena's free top back at once.
fn keep_big_tables_mapped() {
    // Tables over 128 KiB (router index, slabs) get their own mappings, always: glibc would
    // otherwise raise its mmap threshold after the first such free and serve later growth
    // from the arenas, where the memory of every outgrown table stays resident.
    // SAFETY: mallopt has no preconditions.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
    // A shard's arena (a thread arena) gives its free top back only on a free of 64 KiB or
    // more, and only what is over M_TRIM_THRESHOLD (128 KiB by default); `malloc_trim` trims
    // the main arena's top alone (glibc 2.36 `mtrim`). So after every close up to about
    // 256 KiB per shard stayed resident, by an amount that wandered from burst to burst
    // (issue 17's leak guard). With 0 the top goes back down to M_TOP_PAD on each such free;
    // small frees (every per-message one) never trim, so nothing is added per message.
    // SAFETY: mallopt has no preconditions.
    unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, 0) };
}

/// The direct-descriptor plan for one shard, logged if the shards run io_uring. It allows a
/// shard all of `--max-conns` (the limit counts every shard together, and a stream lives on
/// its id's owner, so the ids decide the split): a plan caps the rings a shard may open,
/// each opened only when the ones before are full.
fn direct_descriptor_plan(cfg: &ServerConfig) -> Plan {
    let n = cfg.shards;
    let plan = Plan::for_this_process(cfg.max_conns);
    if cfg.backend == Backend::Uring {
        tracing::info!(
            shards = n,
            rings_per_shard_at_most = plan.rings,
            slots_per_ring = plan.slots_per_ring,
            max_conns = cfg.max_conns,
            "direct-descriptor plan: subscribers live in ring fixed-file tables (capped per ring at min(RLIMIT_NOFILE, 1048576))"
        );
    }
    plan
}

/// Cluster mode's state, shared by the shards (its Redis agent runs on shard 0's runtime).
fn cluster_for(cfg: &ServerConfig, mesh: &Arc<Mesh>) -> Option<Arc<Cluster>> {
    let cluster = cfg
        .cluster
        .clone()
        .map(|c| Arc::new(Cluster::new(c, mesh.clone())));
    if let (Some(c), Some(_)) = (&cluster, &cfg.friends) {
        c.want_friends(); // this node fans out friends events from the other nodes too
    }
    if let Some(c) = cluster.as_ref().filter(|_| cfg.presence.events) {
        c.enable_presence_events(); // online/offline numbered cluster-wide by Redis
    }
    cluster
}

/// One [`Seed`] per shard: its listeners, its part of the friends store, and with
/// `--cpu-affinity auto` its CPU.
fn seeds(
    subs: Vec<OwnedFd>,
    pubs: Vec<OwnedFd>,
    mut friends: Vec<Option<FriendsShard>>,
    affinity: CpuAffinity,
) -> Vec<Seed> {
    let cpus = match affinity {
        CpuAffinity::Auto => allowed_cpus(),
        CpuAffinity::Off => Vec::new(),
    };
    subs.into_iter()
        .zip(pubs)
        .enumerate()
        .map(|(me, (sub, publ))| Seed {
            me,
            cpu: (!cpus.is_empty()).then(|| cpus[me % cpus.len()]),
            sub,
            publ,
            friends: friends.get_mut(me).and_then(Option::take),
        })
        .collect()
}

/// Starts one thread per seed on `backend` (`Uring` or `Epoll`; [`choose_backend`] never
/// returns `Auto`). Errors: a thread could not be spawned.
fn spawn_shards(
    backend: Backend,
    shared: Shared,
    seeds: Vec<Seed>,
) -> io::Result<Vec<JoinHandle<()>>> {
    seeds
        .into_iter()
        .map(|seed| match backend {
            Backend::Uring => thread::spawn::<Uring>(shared.clone(), seed),
            _ => thread::spawn::<Epoll>(shared.clone(), seed),
        })
        .collect()
}

/// Waits until each of the `n` shards has reported that its driver opened. Errors: the
/// first shard whose driver failed (named with `backend`), or a thread that ended first.
fn wait_ready(
    rx: &mpsc::Receiver<io::Result<()>>,
    n: usize,
    backend: Backend,
) -> anyhow::Result<()> {
    for _ in 0..n {
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => anyhow::bail!("shard setup failed ({backend} backend): {e}"),
            Err(_) => anyhow::bail!("a shard thread ended during start"),
        }
    }
    Ok(())
}

/// Waits (bounded) until the node is connected to Redis, so that a node that has printed its
/// `LISTEN` line holds the head of each new subscriber until its bucket is subscribed.
fn wait_cluster_up(c: &Cluster) {
    let t0 = Instant::now();
    while !c.is_up() {
        if t0.elapsed() > CLUSTER_START_WAIT {
            if c.sequenced() {
                tracing::warn!(
                    "cluster: not connected to Redis after {} s; publishes and new streams answered 503 meanwhile (history lives in Redis; /test/ streams are served)",
                    CLUSTER_START_WAIT.as_secs()
                );
            } else {
                tracing::warn!(
                    "cluster: not connected to Redis after {} s; serving local traffic meanwhile",
                    CLUSTER_START_WAIT.as_secs()
                );
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
