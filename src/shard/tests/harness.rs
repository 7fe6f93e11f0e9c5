//! The in-memory bench: one or more shards sharing a [`Mesh`], each on a [`Fake`] driver,
//! driven turn by turn (quinn-proto's `Pair::drive` is the model). It uses only the shard's
//! public API (`Shard::new`, `turn`, `has_completions`, `wait_fd`); connections are fds the
//! test invents, which the fake never hands to the kernel.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::config::ServerConfig;
use crate::driver::fake::Fake;
use crate::driver::Driver;
use crate::id::Id;
use crate::mesh::Mesh;
use crate::shard::Shard;
use crate::stats::ShardStats;

/// Listener index of the subscriber listener.
pub(super) const SUB: usize = 0;
/// Listener index of the publish listener.
pub(super) const PUBL: usize = 1;
/// Direct-descriptor slots of each fake's fixed table.
const SLOTS: u32 = 8;
/// Rounds [`Harness::drive`] allows before it calls the shards busy for ever.
const MAX_ROUNDS: usize = 64;

/// Shards, their fake drivers and what they share.
pub(super) struct Harness {
    pub(super) shards: Vec<Shard<Fake>>,
    /// The test's handle on each shard's driver.
    pub(super) io: Vec<Fake>,
    pub(super) mesh: Arc<Mesh>,
    pub(super) stats: Arc<[ShardStats]>,
    /// Each shard's listener fds (subscriber, publish): eventfds, owned by the shard.
    listeners: Vec<[RawFd; 2]>,
}

/// The config of every bench: heartbeats off, head timeouts an hour away and history off
/// (streams as before cursors), so nothing happens that a test did not feed; `tune` changes
/// what the test is about.
pub(super) fn config(shards: usize, tune: impl FnOnce(&mut ServerConfig)) -> ServerConfig {
    let mut cfg = ServerConfig::local(shards);
    cfg.heartbeat_s = 0;
    cfg.history.max_msgs = 0;
    cfg.head_timeout_s = 3600;
    tune(&mut cfg);
    cfg
}

/// A descriptor that stands in for a listener: an eventfd (the fake never accepts on it).
fn listener() -> OwnedFd {
    // SAFETY: eventfd has no memory preconditions; a non-negative result is a new fd.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is the new eventfd, owned by nothing else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

impl Harness {
    /// `cfg.shards` shards, each with a fake driver; every shard has turned once (accepts
    /// armed).
    pub(super) fn new(cfg: ServerConfig) -> Harness {
        let n = cfg.shards;
        let cfg = Arc::new(cfg);
        let mesh = Arc::new(Mesh::new(n));
        let stats: Arc<[ShardStats]> = (0..n).map(|_| ShardStats::default()).collect();
        let mut h = Harness {
            shards: Vec::new(),
            io: Vec::new(),
            mesh: mesh.clone(),
            stats: stats.clone(),
            listeners: Vec::new(),
        };
        for me in 0..n {
            let io = Fake::new(SLOTS);
            let (sub, publ) = (listener(), listener());
            h.listeners.push([sub.as_raw_fd(), publ.as_raw_fd()]);
            let shard = Shard::new(
                me,
                io.clone(),
                mesh.clone(),
                stats.clone(),
                cfg.clone(),
                sub,
                publ,
            );
            assert_eq!(
                shard.wait_fd(),
                io.wait_fd(),
                "the shard waits on its driver's fd"
            );
            h.shards.push(shard);
            h.io.push(io);
        }
        for s in 0..n {
            h.turn(s);
        }
        h
    }

    /// One turn of shard `s`; returns whether it did any work.
    pub(super) fn turn(&mut self, s: usize) -> bool {
        self.shards[s].turn()
    }

    /// Turns every shard, round after round, until a whole round does nothing and no
    /// completion waits.
    pub(super) fn drive(&mut self) {
        for _ in 0..MAX_ROUNDS {
            let mut worked = false;
            for s in 0..self.shards.len() {
                worked |= self.turn(s);
            }
            let waiting = self.shards.iter_mut().any(|s| s.has_completions());
            if !worked && !waiting {
                return;
            }
        }
        panic!("the shards were still busy after {MAX_ROUNDS} rounds");
    }

    /// A connection `fd` arrives on listener `l` of shard `s`, which turns once.
    pub(super) fn accept(&mut self, s: usize, l: usize, fd: RawFd) {
        self.io[s].accept(self.listener(s, l), fd);
        self.turn(s);
    }

    /// The fd of listener `l` (SUB or PUBL) of shard `s`.
    pub(super) fn listener(&self, s: usize, l: usize) -> RawFd {
        self.listeners[s][l]
    }

    /// A subscriber `fd` arrives on shard `s` and asks for `path` (`GET`, HTTP/1.1) in one
    /// segment; then the shards are driven. Returns where it lives and its handle: (shard, handle).
    pub(super) fn subscribe(&mut self, s: usize, fd: RawFd, path: &str) -> (usize, RawFd) {
        self.accept(s, SUB, fd);
        let head = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
        let bid = self.io[s].recv_select(fd, head.as_bytes());
        assert!(bid.is_some(), "no head buffer provided");
        self.drive();
        let home = (0..self.io.len())
            .find(|&i| self.io[i].installed(fd))
            .unwrap_or_else(|| panic!("subscriber {fd} was never installed"));
        (home, self.io[home].handle_of(fd))
    }

    /// A publisher `fd` connects to shard `s`.
    pub(super) fn publisher(&mut self, s: usize, fd: RawFd) {
        self.accept(s, PUBL, fd);
    }

    /// Client `fd` on shard `s` sends `data`, fed to its recvs until all is taken; shard `s`
    /// turns after each recv.
    pub(super) fn write(&mut self, s: usize, fd: RawFd, data: &[u8]) {
        let mut at = 0;
        while at < data.len() {
            at += self.io[s].recv(fd, &data[at..]);
            self.turn(s);
        }
    }

    /// Client `fd` on shard `s` reads everything the shard sends it: each send in flight is
    /// taken whole and shard `s` turns, until no send is in flight. Returns the bytes.
    pub(super) fn read(&mut self, s: usize, fd: RawFd) -> Vec<u8> {
        let mut got = Vec::new();
        while let Some(bytes) = self.io[s].complete_send(fd) {
            got.extend_from_slice(&bytes);
            self.turn(s);
        }
        got
    }

    /// Shard `s`'s counter, as `GET /stats` reads it.
    pub(super) fn stat(&self, s: usize, pick: impl Fn(&ShardStats) -> &AtomicU64) -> u64 {
        pick(&self.stats[s]).load(Relaxed)
    }
}

/// The first decimal id (from 1) whose owner is shard `s` of `shards`.
pub(super) fn id_owned_by(s: usize, shards: usize) -> String {
    (1u32..)
        .map(|n| n.to_string())
        .find(|id| {
            Id::parse(id.as_bytes())
                .expect("a decimal id")
                .owner(shards)
                == s
        })
        .expect("some id is owned by every shard")
}

/// A `POST /send/<id>` request carrying `body`.
pub(super) fn send_request(id: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST /send/{id} HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// The exact reply to a `POST /send` that reached `n` connections (keep-alive).
pub(super) fn delivered_reply(n: u64) -> Vec<u8> {
    let body = format!("{{\"delivered\":{n}}}");
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
