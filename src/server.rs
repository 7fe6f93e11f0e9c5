//! Starting and stopping the server: listeners, shard threads, signals.
//!
//! [`start`] binds every shard's SO_REUSEPORT listeners in the calling thread (so bind errors
//! and the ports chosen for port 0 are known before it returns), then starts one OS thread
//! per shard. Each thread creates its own io_uring ring and runs a tokio-uring runtime whose
//! only task is the shard loop: turn the shard while it has work; otherwise announce sleep
//! and wait for the ring's fd (registered with the runtime's reactor through `AsyncFd`), the
//! shard's doorbell, or a timer, whichever comes first.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use socket2::{Domain, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::cluster::Cluster;
use crate::config::{Backend, CpuAffinity, ServerConfig};
use crate::driver::epoll::Epoll;
use crate::driver::uring::{self, Uring};
use crate::driver::Driver;
use crate::friends::journal::{self, Journal};
use crate::friends::load::{self, LoadOptions};
use crate::friends::lock::GraphLock;
use crate::mesh::Mesh;
use crate::shard::{FriendsShard, Shard};
use crate::stats::ShardStats;

/// Listen backlog; the kernel caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 65_535;
/// How long a stopping shard waits for its streams' last bytes and in-flight operations
/// before it drops its ring (SIGTERM to exit stays under 5 s).
const STOP_GRACE: Duration = Duration::from_secs(3);

/// A running server. Dropping it shuts the server down.
pub struct ServerHandle {
    backend: Backend,
    subscriber: SocketAddr,
    publish: SocketAddr,
    mesh: Arc<Mesh>,
    threads: Vec<JoinHandle<()>>,
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

    /// Whether a shard thread has ended on its own (it panicked: the server is broken).
    pub fn shard_died(&self) -> bool {
        !self.mesh.is_shutdown() && self.threads.iter().any(JoinHandle::is_finished)
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

/// A listener socket with SO_REUSEPORT, bound to `addr`. Its accepted sockets inherit
/// TCP_NODELAY, TCP_USER_TIMEOUT `send_timeout` (how long sent data may stay
/// unacknowledged before the kernel aborts the connection; with heartbeats this bounds how
/// long a peer that vanished without FIN or RST stays logged in: about `--heartbeat` +
/// `--send-timeout`), and with `sndbuf` > 0 that SO_SNDBUF (socket(7): set before listen).
fn listener(addr: SocketAddr, sndbuf: usize, send_timeout: Duration) -> io::Result<OwnedFd> {
    let s = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        None,
    )?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    // Accepted sockets inherit TCP_NODELAY: a chunk goes out at once, not after an ACK.
    s.set_tcp_nodelay(true)?;
    // Inherited by accepted sockets, like TCP_NODELAY.
    s.set_tcp_user_timeout(Some(send_timeout))?;
    if sndbuf > 0 {
        s.set_send_buffer_size(sndbuf)?;
    }
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    let s = socket2::SockRef::from(fd);
    s.local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("listener has no IP address"))
}

/// Binds one listener per shard on `addr` (port 0: the port the first one got).
fn listeners(
    addr: SocketAddr,
    shards: usize,
    sndbuf: usize,
    send_timeout: Duration,
) -> anyhow::Result<(Vec<OwnedFd>, SocketAddr)> {
    let first =
        listener(addr, sndbuf, send_timeout).with_context(|| format!("cannot listen on {addr}"))?;
    let bound = local_addr(&first)?;
    let mut all = vec![first];
    for _ in 1..shards {
        all.push(
            listener(bound, sndbuf, send_timeout)
                .with_context(|| format!("cannot listen on {bound} (SO_REUSEPORT)"))?,
        );
    }
    Ok((all, bound))
}

/// Starts the server and returns once every shard runs (in cluster mode, also once the
/// node is connected to Redis, or after 3 s without it).
///
/// Errors: a listener cannot be bound; io_uring cannot be set up (the error names the
/// cause); a thread cannot be spawned.
pub fn start(mut cfg: ServerConfig) -> anyhow::Result<ServerHandle> {
    // Tables over 128 KiB (router index, slabs) get their own mappings, always: glibc would
    // otherwise raise its mmap threshold after the first such free and serve later growth
    // from the arenas, where the memory of every outgrown table stays resident.
    // SAFETY: mallopt has no preconditions.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
    // Probe on a thread of its own: a thread that has used io_uring gets io_uring task work
    // (TIF_NOTIFY_SIGNAL) even after its ring is gone, and a blocking socket read with
    // SO_RCVTIMEO in that thread then fails with EINTR. The caller's thread stays clean.
    let probed = std::thread::spawn(uring::probe)
        .join()
        .unwrap_or_else(|_| Err("the io_uring probe panicked".into()));
    cfg.backend = match (cfg.backend, probed) {
        (Backend::Epoll, _) => Backend::Epoll,
        (_, Ok(())) => Backend::Uring,
        (Backend::Auto, Err(why)) => {
            tracing::warn!("io_uring unavailable ({why}); using the epoll backend");
            Backend::Epoll
        }
        (_, Err(why)) => anyhow::bail!(
            "--backend uring: io_uring unavailable: {why}. Fix: allow io_uring (sysctl kernel.io_uring_disabled=0; a seccomp profile that permits io_uring_setup/io_uring_enter/io_uring_register; Linux 6.0 or later), or run with --backend epoll"
        ),
    };
    let backend = cfg.backend;
    let n = cfg.shards;
    let plan = uring::Plan::for_this_process(cfg.max_conns.div_ceil(n));
    if backend == Backend::Uring {
        tracing::info!(
            shards = n,
            rings_per_shard_at_most = plan.rings,
            slots_per_ring = plan.slots_per_ring,
            max_conns = cfg.max_conns,
            "direct-descriptor plan: subscribers live in ring fixed-file tables (capped per ring at min(RLIMIT_NOFILE, 1048576))"
        );
    }
    let send_timeout = Duration::from_secs(cfg.send_timeout_s);
    let (subs, subscriber) = listeners(cfg.listen, n, cfg.sndbuf, send_timeout)?;
    let (pubs, publish) = listeners(cfg.publish_listen, n, 0, send_timeout)?;
    let mesh = Arc::new(Mesh::new(n));
    // Cluster mode: shared by the shards; its Redis agent runs on shard 0's runtime.
    let cluster = cfg
        .cluster
        .clone()
        .map(|c| Arc::new(Cluster::new(c, mesh.clone())));
    if let (Some(c), Some(_)) = (&cluster, &cfg.friends) {
        c.want_friends(); // this node fans out friends events from the other nodes too
    }
    let stats: Arc<[ShardStats]> = (0..n).map(|_| ShardStats::default()).collect();
    let mut friends = load_friends(&cfg, &stats)?;
    let cfg = Arc::new(cfg);
    let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
    let mut threads = Vec::with_capacity(n);
    let cpus = match cfg.cpu_affinity {
        CpuAffinity::Auto => allowed_cpus(),
        CpuAffinity::Off => Vec::new(),
    };
    for (me, (sub, publ)) in subs.into_iter().zip(pubs).enumerate() {
        let cpu = (!cpus.is_empty()).then(|| cpus[me % cpus.len()]);
        let (mesh, stats, cfg, ready) =
            (mesh.clone(), stats.clone(), cfg.clone(), ready_tx.clone());
        let cluster = cluster.clone();
        let agent = cluster.clone().filter(|_| me == 0);
        let friends = friends.get_mut(me).and_then(Option::take);
        let t = std::thread::Builder::new()
            .name(format!("shard-{me}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    pin_to(me, cpu);
                }
                if backend == Backend::Uring {
                    // The ring is created on its own thread: SINGLE_ISSUER ties it to its creator.
                    let driver = match Uring::new(plan) {
                        Ok(d) => d,
                        Err(e) => return drop(ready.send(Err(e))),
                    };
                    let _ = ready.send(Ok(()));
                    let shard = Shard::new(me, driver, mesh.clone(), stats, cfg, sub, publ)
                        .with_cluster(cluster)
                        .with_friends(friends);
                    tokio_uring::start(async move {
                        let shares = spawn_agent(agent);
                        run(shard, mesh, me, shares).await
                    });
                } else {
                    let built = Epoll::new().and_then(|d| {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()?;
                        Ok((d, rt))
                    });
                    let (driver, rt) = match built {
                        Ok(x) => x,
                        Err(e) => return drop(ready.send(Err(e))),
                    };
                    let _ = ready.send(Ok(()));
                    let shard = Shard::new(me, driver, mesh.clone(), stats, cfg, sub, publ)
                        .with_cluster(cluster)
                        .with_friends(friends);
                    rt.block_on(async move {
                        let shares = spawn_agent(agent);
                        run(shard, mesh, me, shares).await
                    });
                }
            })?;
        threads.push(t);
    }
    drop(ready_tx);
    let handle = ServerHandle {
        backend,
        subscriber,
        publish,
        mesh,
        threads,
    };
    for _ in 0..n {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => anyhow::bail!("shard setup failed ({backend} backend): {e}"),
            Err(_) => anyhow::bail!("a shard thread ended during start"),
        }
    }
    if let Some(c) = &cluster {
        wait_cluster_up(c);
    }
    Ok(handle)
}

/// How long [`start`] waits for the cluster agent's first Redis session before it returns
/// anyway (the node then serves local traffic and keeps reconnecting).
const CLUSTER_START_WAIT: Duration = Duration::from_secs(3);

/// Waits (bounded) until the node is connected to Redis, so that a node that has printed its
/// `LISTEN` line holds the head of each new subscriber until its bucket is subscribed.
fn wait_cluster_up(c: &Cluster) {
    let t0 = Instant::now();
    while !c.is_up() {
        if t0.elapsed() > CLUSTER_START_WAIT {
            tracing::warn!(
                "cluster: not connected to Redis after {} s; serving local traffic meanwhile",
                CLUSTER_START_WAIT.as_secs()
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Starts the cluster agent, if any, as a task on the calling shard's runtime (it lives
/// until that runtime is dropped at shutdown).
/// Returns whether it did (the shard loop then shares its runtime).
/// The CPUs this process may run on, in order (empty if they cannot be read).
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the kernel fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a live cpu_set_t of `size` bytes.
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        tracing::warn!(
            "sched_getaffinity: {}; shards are not pinned",
            io::Error::last_os_error()
        );
        return Vec::new();
    }
    // SAFETY: reading bits of an initialised set, below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Pins the calling thread (shard `me`) to `cpu`; a failure is logged and ignored.
fn pin_to(me: usize, cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; `cpu` < CPU_SETSIZE (from allowed_cpus).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a live cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        tracing::warn!(
            shard = me,
            cpu,
            "sched_setaffinity: {}; shard not pinned",
            io::Error::last_os_error()
        );
    }
}

fn spawn_agent(agent: Option<Arc<Cluster>>) -> bool {
    match agent {
        Some(c) => {
            tokio::spawn(crate::cluster::agent::run(c));
            true
        }
        None => false,
    }
}

/// Turns in a row after which a busy shard loop that shares its runtime (with the cluster
/// agent, on shard 0) yields to it, so the agent is never starved while the shard has work.
const TURNS_PER_YIELD: u32 = 16;

/// Loads the friends store (`--friends`): the edge file, then its journal (replayed and
/// compacted); one part per shard. Logs and records in `stats` the load time, entries,
/// heap bytes and the RSS the load added. The lock on FILE ([`crate::friends::lock`]) is
/// taken first and kept in the journal the shards share: it is held as long as any shard
/// can append. Errors: the file's directory does not exist, or another server holds the
/// lock (both before anything is loaded); a bad line under `--strict`; the file or journal
/// cannot be read or written.
fn load_friends(
    cfg: &ServerConfig,
    stats: &[ShardStats],
) -> anyhow::Result<Vec<Option<FriendsShard>>> {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(path) = &cfg.friends else {
        return Ok(Vec::new());
    };
    // Before anything is loaded or logged: a FILE whose directory is missing is a wrong
    // path (a typo, a volume not mounted), not an empty graph; no journal could be kept.
    // Then the lock, before the journal is compacted: a second server on FILE would rename
    // its compacted journal over ours while we append to it (see friends::lock).
    let held = GraphLock::take(path)?;
    let rss0 = crate::stats::rss_bytes();
    let t0 = Instant::now();
    let opts = LoadOptions {
        shards: cfg.shards,
        directed: cfg.friends_directed,
        strict: cfg.friends_strict,
    };
    let (mut graphs, rep) = load::load(path, opts)?;
    let jpath = journal::path_for(path);
    let (j, replay) = Journal::start(&jpath, &mut graphs, cfg.friends_directed)
        .with_context(|| format!("friends journal {}", jpath.display()))?;
    let j = j.holding(held);
    let elapsed = t0.elapsed();
    // The load's edge buffers were freed; hand their pages back before measuring.
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    let grown = crate::stats::rss_bytes().saturating_sub(rss0);
    for (s, g) in stats.iter().zip(&graphs) {
        s.graph_users.store(g.csr.users.len() as u64, Relaxed);
        s.graph_entries.store(g.csr.entries() as u64, Relaxed);
        s.graph_heap_bytes.store(g.csr.heap_bytes() as u64, Relaxed);
    }
    stats[0].graph_rss_bytes.store(grown, Relaxed);
    stats[0]
        .graph_load_us
        .store(elapsed.as_micros() as u64, Relaxed);
    tracing::info!(
        file = %path.display(),
        lines = rep.lines,
        edges = rep.edges,
        bad_lines = rep.bad_lines,
        self_loops = rep.self_loops,
        duplicates = rep.duplicates,
        users = rep.users,
        entries = rep.entries,
        heap_bytes = rep.heap_bytes,
        rss_grown = grown,
        rss_per_entry = format!("{:.2}", grown as f64 / rep.entries.max(1) as f64),
        journal_edits = replay.edits,
        journal_bad_lines = replay.bad_lines,
        journal_kept = replay.kept,
        secs = format!("{:.2}", elapsed.as_secs_f64()),
        "friends graph loaded"
    );
    let j = Arc::new(Mutex::new(j));
    let shards = graphs
        .into_iter()
        .map(|graph| {
            Some(FriendsShard {
                graph,
                journal: Some(j.clone()),
                directed: cfg.friends_directed,
            })
        })
        .collect();
    Ok(shards)
}

struct RingFd(RawFd);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// The shard loop; see the module doc.
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

/// `uring-comet serve`: starts the server, prints `LISTEN subscriber=ADDR publish=ADDR` on
/// stdout, and runs until SIGINT or SIGTERM (exit 0) or until a shard dies (exit 1).
pub fn serve_forever(cfg: ServerConfig) -> anyhow::Result<()> {
    // A file-size limit (RLIMIT_FSIZE) makes a journal write fail with EFBIG, answered 500,
    // instead of killing the process with SIGXFSZ (setrlimit(2)).
    // SAFETY: setting a signal's disposition to ignore.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    // Block the stop signals in every thread (shards inherit the mask) and take them
    // synchronously here.
    // SAFETY: plain signal-mask calls on a zeroed sigset.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    // A panicking shard must not leave a half-alive server: report it and exit non-zero at
    // once, so a supervisor (the systemd unit's Restart=on-failure) starts a fresh one.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        let thread = std::thread::current().name().unwrap_or("?").to_string();
        eprintln!("uring-comet: thread {thread} panicked; exiting with status 101 so a supervisor restarts the server");
        std::process::exit(101);
    }));
    let shards = cfg.shards;
    let handle = start(cfg)?;
    tracing::info!(shards, backend = %handle.backend(), subscriber = %handle.subscriber_addr(), publish = %handle.publish_addr(), "uring-comet serving");
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "LISTEN subscriber={} publish={}",
            handle.subscriber_addr(),
            handle.publish_addr()
        )?;
        out.flush()?;
    }
    loop {
        let timeout = libc::timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        // SAFETY: `set` is a valid sigset; a null siginfo pointer is allowed.
        let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout) };
        if sig == libc::SIGINT || sig == libc::SIGTERM {
            tracing::info!("signal {sig}: shutting down");
            return handle.shutdown();
        }
        if handle.shard_died() {
            tracing::error!("a shard thread died; exiting so a supervisor can restart the server");
            std::process::exit(1);
        }
    }
}
