//! One shard's event loop: the slab of connections, the router shard and the ring.
//!
//! # Data path, accept to send
//! 1. A multishot accept on this shard's SO_REUSEPORT listener completes with a new socket;
//!    it gets a 20-byte [`Conn`] in the slab and a pooled [`Aux`] whose `inbuf` receives the
//!    request head (one recv in flight at a time).
//! 2. The head is parsed ([`http::request`]). A subscriber is logged in under its ids
//!    ([`Router::login`]) and its response head is put in `Aux::out`. If an owner shard must
//!    first learn that this shard holds the id, the head waits for the `JoinAck`
//!    ([`crate::mesh`]); otherwise the send goes at once. A POLLRDHUP poll is armed, and it is
//!    the only thing an idle subscriber holds in the kernel: no recv, no buffer.
//! 3. When the head's send completes and nothing else is queued, the `Aux` goes back to the
//!    pool: the idle subscriber is its record and router entry only.
//! 4. A publish is routed to the id's owner shard, which forwards it to every shard holding
//!    the id; each formats one chunk per local connection into that connection's output and
//!    sends it (coalescing everything queued behind a send in flight into the next send).
//!    Replies to the publisher go out in request order once every shard has answered.
//! 5. A poll completion with RDHUP/HUP/ERR, a recv of 0, or a failed send closes the
//!    connection: it is logged out, its ops are cancelled, and the fd is closed when the
//!    last op has completed (the kernel owns buffers and fd until then).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::config::{Placement, ServerConfig};
use crate::conn::{Aux, Conn, Flags, Marks, Slab, State, NONE};
use crate::driver::{Completion, Driver};
use crate::http::request::{parse_publish, parse_subscribe, Head, PubRequest, SubRequest};
use crate::http::stream::{self, Proto};
use crate::http::{response, Status, MAX_BODY, MAX_HEAD};
use crate::id::Id;
use crate::mesh::{Mesh, Msg, Outbox, ReplyTo};
use crate::router::Router;
use subscriber::Ev;

mod cluster;
mod friends;
mod lifecycle;
mod publisher;
mod subscriber;
#[cfg(test)]
mod tests;
use crate::stats::{self, ShardStats};
pub use friends::FriendsShard;

const OP_ACCEPT: u64 = 1;
const OP_RECV: u64 = 2;
const OP_POLL: u64 = 3;
const OP_SEND: u64 = 4;
const OP_CANCEL: u64 = 5;
const OP_PROVIDE: u64 = 6;
const OP_DRAIN: u64 = 7;

/// Provided-buffer group of request-head buffers.
const HEAD_GROUP: u16 = 1;
/// Request-head buffers per shard.
const HEAD_BUFS: u16 = 256;
/// Bytes per request-head buffer. Most heads fit in one; a longer one is gathered in the
/// connection's own `inbuf`, up to [`MAX_HEAD`].
const HEAD_BUF_LEN: usize = 2048;

/// Listener index in accept tokens: 0 subscriber, 1 publish.
const SUB: u32 = 0;

/// Environment variable naming a shard that panics on its first idle tick (fault
/// injection for tests of the panic path; unset in production).
pub const PANIC_ENV: &str = "URING_COMET_TEST_PANIC_SHARD";
/// Most publishes one publisher may have awaiting replies before its reads pause.
const MAX_PIPELINE: usize = 1024;
/// Reply bytes a publisher may leave unread before its requests stop being read.
const MAX_PUB_OUTPUT: usize = 256 * 1024;
/// Most pooled `Aux` buffers kept per shard.
const AUX_POOL: usize = 64;
/// Buffers larger than this are freed rather than pooled, bytes.
const POOL_KEEP: usize = 2 * 1024;
/// WebSocket handshake answers held at once in the shard's fixed table (more wait in
/// per-connection buffers).
const WS_HEAD_SLOTS: u16 = 512;
/// Bytes per handshake slot: a length byte and the 129-byte `101` answer, with room.
const WS_HEAD_LEN: usize = 192;
/// Inbox batches taken per turn, so completions are never starved.
const BATCHES_PER_TURN: usize = 256;

fn token(op: u64, idx: u32) -> u64 {
    (op << 32) | u64::from(idx)
}

/// A publish waiting for its reply.
struct Pending {
    /// Publisher connection, or NONE if it closed meanwhile.
    conn: u32,
    /// Holder replies still to come (may go below 0 while the owner's is outstanding).
    remaining: i32,
    /// The owner's reply has arrived (it says how many holder replies to expect).
    routed: bool,
    /// Connections queued so far.
    count: u64,
    /// Close the connection after this reply.
    close: bool,
    /// A ready-made reply (stats, error) instead of `{"delivered":N}`.
    raw: Option<Vec<u8>>,
    /// What the reply says: `{"delivered":N}`, `{"friends":F,"delivered":N}` or an edit's.
    kind: ReplyKind,
    /// Friends paths: credit still out (see [`crate::mesh`]); 0 for `/send`.
    credit: u64,
    /// Friends publish: followers of the publishing user.
    friends: u64,
    /// Friends edit: the journal write failed.
    failed: bool,
}

/// The shape of a publish-listener reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyKind {
    /// `POST /send/<id>`: `{"delivered":N}`.
    Send,
    /// `POST /publish/<user>`: `{"friends":F,"delivered":N}`.
    Friends,
    /// `PUT|DELETE /friends/<a>/<b>`: `{"changed":true|false}`.
    Edit,
}

impl Pending {
    /// A reply that is ready now (stats, page, error).
    fn ready(conn: u32, raw: Vec<u8>, close: bool) -> Pending {
        Pending {
            conn,
            remaining: 0,
            routed: true,
            count: 0,
            close,
            raw: Some(raw),
            kind: ReplyKind::Send,
            credit: 0,
            friends: 0,
            failed: false,
        }
    }

    /// A publish of `kind` awaiting its replies.
    fn awaiting(conn: u32, kind: ReplyKind, close: bool) -> Pending {
        let friends = kind != ReplyKind::Send;
        Pending {
            conn,
            remaining: 0,
            routed: friends,
            count: 0,
            close,
            raw: None,
            kind,
            credit: if friends { friends::FULL_CREDIT } else { 0 },
            friends: 0,
            failed: false,
        }
    }

    fn done(&self) -> bool {
        self.routed && self.remaining == 0 && self.credit == 0
    }
}

/// One shard. Build with [`Shard::new`], drive with [`Shard::turn`].
pub struct Shard<D: Driver> {
    me: usize,
    driver: D,
    mesh: Arc<Mesh>,
    stats: Arc<[ShardStats]>,
    cfg: Arc<ServerConfig>,
    listeners: [Option<OwnedFd>; 2],
    accept_armed: [bool; 2],
    accept_retry: Option<Instant>,
    /// Accepts that failed since the last one that succeeded (the first is logged at warn,
    /// the rest at debug, the recovery at info: an fd shortage logs 3 lines, not 10 a second).
    accept_failures: u64,
    max_conns: usize,
    conns: Slab<Conn>,
    aux: Slab<Aux>,
    aux_pool: Vec<Aux>,
    router: Router,
    /// Messages for other shards produced since the last flush, one batch per shard.
    outbox: Outbox,
    pending: Slab<Pending>,
    cqes: Vec<Completion>,
    /// Milliseconds since `epoch`, read once per turn (wrapping): dates the start of each
    /// subscriber's send batch.
    now_ms: u32,
    epoch: Instant,
    to_close: Vec<u32>,
    fanout: Vec<u32>,
    scratch: Box<[u8]>,
    /// Static stream heads (protocol x HTTP/1.0 x HEAD), see `subscriber::head_index`.
    stream_heads: Vec<Box<[u8]>>,
    /// WebSocket `101` answers waiting to be sent, WS_HEAD_SLOTS x WS_HEAD_LEN (first byte
    /// of a slot: the answer's length); written, never moved, while a send from it is in
    /// flight.
    ws_heads: Box<[u8]>,
    /// Free slots of `ws_heads`.
    ws_free: Vec<u16>,
    /// The answer to a CORS preflight.
    preflight: Box<[u8]>,
    /// The `GET /` reply: the demo page, with this server's subscriber port filled in.
    page: Box<[u8]>,
    /// The 503 a connection over `--max-conns` (or arriving while stopping) gets.
    unavailable: Box<[u8]>,
    /// When the next heartbeat sweep is due (None: heartbeats off).
    next_beat: Option<Instant>,
    /// When the next head-timeout sweep is due.
    next_slow: Instant,
    /// [`PANIC_ENV`] names this shard.
    inject_panic: bool,
    /// This shard's part of the friends store (`--friends`), if any.
    friends: Option<FriendsShard>,
    /// Scratch list of follower ids for one fan-out.
    friend_ids: Vec<u32>,
    /// The request-head buffers, HEAD_BUFS x HEAD_BUF_LEN, lent to the kernel as a
    /// provided-buffer group. Never moved or freed while the ring lives.
    heads: Box<[u8]>,
    stopping: bool,
    /// Cluster mode (see `cluster.rs`): the node's cluster state; the subscribers whose
    /// head waits for a bucket subscription, as (connection, bucket); and per pending
    /// publish token, whether its forward was dropped.
    cluster: Option<Arc<crate::cluster::Cluster>>,
    cluster_waiting: Vec<(u32, u32)>,
    cluster_dropped: Vec<bool>,
}

impl<D: Driver> Shard<D> {
    /// Shard `me` with its two listeners (subscriber, publish) and its share of
    /// `--max-conns`.
    pub fn new(
        me: usize,
        driver: D,
        mesh: Arc<Mesh>,
        stats: Arc<[ShardStats]>,
        cfg: Arc<ServerConfig>,
        sub: OwnedFd,
        publ: OwnedFd,
    ) -> Self {
        let shards = mesh.shards();
        let max_conns = cfg.max_conns.div_ceil(shards);
        let cors = response::cors_lines(&cfg.cors_origin);
        let sub_port = socket2::SockRef::from(&sub)
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map_or(0, |a| a.port());
        let beat = Duration::from_secs(cfg.heartbeat_s);
        Shard {
            stream_heads: subscriber::stream_heads(&cors),
            preflight: response::preflight(&cors).into_boxed_slice(),
            // Written (not calloc'ed): resident from the start, a fixed cost.
            ws_heads: vec![0x5a; usize::from(WS_HEAD_SLOTS) * WS_HEAD_LEN].into_boxed_slice(),
            ws_free: (0..WS_HEAD_SLOTS).rev().collect(),
            page: response::demo_page(sub_port).into_boxed_slice(),
            unavailable: {
                let mut raw = Vec::new();
                response::error_text(
                    &mut raw,
                    Status::Unavailable,
                    "the server is at its connection limit (--max-conns) or stopping; retry later",
                );
                raw.into_boxed_slice()
            },
            next_beat: (cfg.heartbeat_s > 0).then(|| Instant::now() + beat),
            next_slow: Instant::now() + Duration::from_secs(cfg.head_timeout_s),
            inject_panic: std::env::var(PANIC_ENV)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                == Some(me),
            friends: None,
            friend_ids: Vec::new(),
            me,
            driver,
            router: Router::new(me, shards, max_conns + cfg.max_conns / shards),
            outbox: Outbox::new(shards),
            mesh,
            stats,
            cfg,
            listeners: [Some(sub), Some(publ)],
            accept_armed: [false; 2],
            accept_retry: None,
            accept_failures: 0,
            max_conns,
            conns: Slab::with_capacity(max_conns),
            aux: Slab::with_capacity(1024),
            aux_pool: Vec::new(),
            pending: Slab::with_capacity(1024),
            cqes: Vec::with_capacity(1024),
            now_ms: 0,
            epoch: Instant::now(),
            to_close: Vec::new(),
            fanout: Vec::new(),
            scratch: vec![0; 4096].into_boxed_slice(),
            // Written (not calloc'ed) so the pool is resident from the start: a fixed cost in
            // the idle RSS rather than a per-connection one as connections arrive.
            heads: vec![0x5a; HEAD_BUFS as usize * HEAD_BUF_LEN].into_boxed_slice(),
            stopping: false,
            cluster: None,
            cluster_waiting: Vec::new(),
            cluster_dropped: Vec::new(),
        }
        .with_head_buffers()
    }

    /// Gives the shard its part of the friends store (`--friends`).
    pub fn with_friends(mut self, friends: Option<FriendsShard>) -> Self {
        self.friends = friends;
        self
    }

    fn with_head_buffers(mut self) -> Self {
        // SAFETY: `heads` lives as long as the shard, which outlives its ring's use of it
        // (the ring is dropped with the shard), and is only read by us for a buffer the
        // kernel has handed back in a completion.
        unsafe {
            self.driver.provide_buffers(
                self.heads.as_mut_ptr(),
                HEAD_BUF_LEN as u32,
                HEAD_BUFS,
                HEAD_GROUP,
                0,
                token(OP_PROVIDE, NONE),
            );
        }
        self
    }

    fn give_back_head_buffer(&mut self, b: u16) {
        let at = usize::from(b) * HEAD_BUF_LEN;
        // SAFETY: as in `with_head_buffers`; buffer `b` is ours again until provided here.
        unsafe {
            let ptr = self.heads.as_mut_ptr().add(at);
            self.driver.provide_buffers(
                ptr,
                HEAD_BUF_LEN as u32,
                1,
                HEAD_GROUP,
                b,
                token(OP_PROVIDE, NONE),
            );
        }
    }

    /// The fd that polls readable when this shard's ring has completions.
    pub fn wait_fd(&self) -> i32 {
        self.driver.wait_fd()
    }

    fn st(&self) -> &ShardStats {
        &self.stats[self.me]
    }

    /// One turn: arm accepts, reap completions, drain the inbox, push outboxes, submit.
    /// Returns whether it did any work (if not, the caller may sleep).
    pub fn turn(&mut self) -> bool {
        if self.mesh.is_shutdown() && !self.stopping {
            self.begin_stop();
        }
        self.now_ms = self.epoch.elapsed().as_millis() as u32;
        self.arm_accepts();
        let mut cqes = std::mem::take(&mut self.cqes);
        self.driver.reap(&mut cqes);
        let mut worked = !cqes.is_empty();
        for c in cqes.drain(..) {
            self.on_completion(c);
        }
        self.cqes = cqes;
        for _ in 0..BATCHES_PER_TURN {
            let Some(batch) = self.mesh.pop(self.me) else {
                break;
            };
            worked = true;
            for m in batch {
                self.on_msg(m);
            }
        }
        let now = Instant::now();
        if let Some(at) = self.next_beat {
            if now >= at {
                self.next_beat = Some(now + Duration::from_secs(self.cfg.heartbeat_s));
                self.heartbeat_sweep();
            }
        }
        if now >= self.next_slow {
            self.next_slow = now + Duration::from_secs(self.cfg.head_timeout_s);
            self.slow_sweep();
            // Messages are allocated on one shard and freed on another; glibc keeps what
            // such frees leave scattered in the arenas. Handing free pages back every few
            // seconds keeps RSS flat under steady traffic (a walk of the arenas, not on any
            // per-message path).
            // SAFETY: malloc_trim has no preconditions.
            unsafe { libc::malloc_trim(0) };
        }
        self.close_marked();
        self.flush_outbox();
        if let Err(e) = self.driver.submit() {
            tracing::error!(shard = self.me, "io_uring submit: {e}");
        }
        worked
    }

    /// Whether completions are waiting.
    pub fn has_completions(&mut self) -> bool {
        self.driver.has_completions()
    }

    /// How long the loop may sleep with nothing to do: short while a paused accept waits to
    /// be re-armed or the shard is stopping.
    pub fn idle_timeout(&self) -> Duration {
        if self.accept_retry.is_some() || self.stopping {
            Duration::from_millis(20)
        } else {
            Duration::from_secs(1)
        }
    }

    /// Called when the loop has been idle: once the shard holds no connection and no id,
    /// give the memory of its tables back (slab and router pages, then `malloc_trim`).
    pub fn on_idle(&mut self) {
        // Fault injection for the test of the panic path (tests/reliability): the shard
        // named by this variable panics on its first idle tick.
        if self.inject_panic {
            panic!("{PANIC_ENV}={}: injected shard panic", self.me);
        }
        let mut released = false;
        if self.conns.is_empty() && self.pending.is_empty() {
            released |= self.conns.release_if_empty();
            released |= self.router.release_if_empty();
        }
        // The buffer records grow to the peak of connections doing I/O at once (a burst of
        // WebSocket handshakes, each answer held until sent); once none is in use, let them
        // go, so a burst leaves nothing resident behind it.
        if self.aux.is_empty() && self.aux.slots() > AUX_POOL {
            self.aux = Slab::with_capacity(AUX_POOL);
            released = true;
        }
        if released {
            self.aux_pool.clear();
            // SAFETY: malloc_trim has no preconditions; it is not on a per-message path.
            unsafe { libc::malloc_trim(0) };
        }
    }

    /// Publishes this shard's count of live owned ids for /stats; called right after every
    /// router change, since the epoll backend may send a response head within the same turn.
    fn sync_ids_gauge(&self) {
        self.st().ids.store(
            self.router.owned_ids() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Whether the shard has stopped and every connection is gone.
    pub fn finished(&self) -> bool {
        self.stopping && self.conns.is_empty()
    }

    fn conns_capacity(&self) -> u32 {
        self.conns.slots() as u32
    }

    fn arm_accepts(&mut self) {
        if self.stopping {
            return;
        }
        if let Some(at) = self.accept_retry {
            if Instant::now() < at {
                return;
            }
            self.accept_retry = None;
        }
        for l in 0..2 {
            if !self.accept_armed[l] {
                if let Some(fd) = &self.listeners[l] {
                    self.driver
                        .accept_multi(fd.as_raw_fd(), token(OP_ACCEPT, l as u32));
                    self.accept_armed[l] = true;
                }
            }
        }
    }

    fn on_completion(&mut self, c: Completion) {
        let op = c.token >> 32;
        let idx = c.token as u32;
        if op == OP_ACCEPT {
            return self.on_accept(idx, c.result, c.more);
        }
        if idx == NONE {
            if op == OP_PROVIDE && c.result < 0 {
                tracing::error!(
                    shard = self.me,
                    "providing head buffers failed: {}",
                    std::io::Error::from_raw_os_error(-c.result)
                );
            }
            return; // cancel of a listener's accept, or buffers provided
        }
        if let Some(b) = c.buf {
            // A head buffer: read it now (only SubHead recvs select buffers), then return it.
            let conn = &mut self.conns[idx];
            conn.ops -= 1;
            if conn.state == State::SubHead && c.result > 0 {
                let at = usize::from(b) * HEAD_BUF_LEN;
                let data = std::mem::take(&mut self.heads);
                self.on_head_bytes(idx, &data[at..at + c.result as usize]);
                self.heads = data;
            } else if conn.state == State::Closing {
                if conn.ops == 0 {
                    self.finalize(idx);
                }
            } else if conn.state == State::SubHead {
                self.close(idx);
            } else {
                // Finishing (a 408 on its way): the late bytes are not wanted.
                conn.flags.remove(Flags::RECVING);
            }
            self.give_back_head_buffer(b);
            return;
        }
        let conn = &mut self.conns[idx];
        conn.ops -= 1;
        if conn.state == State::Closing {
            if conn.ops == 0 {
                self.finalize(idx);
            }
            return;
        }
        match op {
            OP_RECV => self.on_recv(idx, c.result),
            OP_POLL => self.on_poll(idx, c.result),
            OP_SEND => self.on_send(idx, c.result),
            OP_DRAIN => self.on_drain(idx, c.result),
            _ => {}
        }
    }

    fn on_accept(&mut self, l: u32, res: i32, more: bool) {
        if !more {
            self.accept_armed[l as usize] = false;
            self.st()
                .accept_rearmed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if res < 0 {
            if !self.stopping && res != -libc::ECANCELED {
                // EMFILE, ENFILE, ENOMEM, ENOBUFS: the pending connection stays queued, so
                // re-arming at once would spin. Retry after a pause or when a connection closes.
                let e = std::io::Error::from_raw_os_error(-res);
                if self.accept_failures == 0 {
                    tracing::warn!(shard = self.me, "accept failed: {e}; pausing accepts, retrying every 100 ms or when a connection closes");
                } else {
                    tracing::debug!(shard = self.me, "accept failed again: {e}");
                }
                self.accept_failures += 1;
                self.accept_retry = Some(Instant::now() + Duration::from_millis(100));
            }
            return;
        }
        if self.accept_failures > 0 {
            tracing::info!(
                shard = self.me,
                failed = self.accept_failures,
                "accepting again"
            );
            self.accept_failures = 0;
        }
        // SAFETY: a non-negative accept result is a new fd that nothing else owns.
        let fd = res;
        if self.stopping || self.conns.len() >= self.max_conns {
            ShardStats::add(&self.st().rejected, 1);
            refuse_unheld(fd, &self.unavailable);
            return;
        }
        let (state, flags) = if l == SUB {
            (State::SubHead, Flags::EMPTY)
        } else {
            (State::Pub, Flags::PUBLISHER)
        };
        let i = self.conns.insert(Conn {
            fd,
            state,
            flags,
            ..Conn::FREE
        });
        if l == SUB {
            ShardStats::add(&self.st().subscribers, 1);
        } else {
            ShardStats::add(&self.st().publishers, 1);
        }
        if l == SUB {
            self.recv_head(i);
        } else {
            let a = self.take_aux();
            self.conns[i].aux = a;
            self.start_recv(i);
        }
    }

    fn take_aux(&mut self) -> u32 {
        let aux = self.aux_pool.pop().unwrap_or_default();
        self.aux.insert(aux)
    }

    fn ensure_aux(&mut self, i: u32) -> u32 {
        if self.conns[i].aux == NONE {
            let a = self.take_aux();
            // A send already in flight (a head, or output sent without an Aux) is dated now.
            self.aux[a].batch_ms = self.now_ms;
            self.conns[i].aux = a;
        }
        self.conns[i].aux
    }

    fn release_aux(&mut self, i: u32) {
        let a = std::mem::replace(&mut self.conns[i].aux, NONE);
        if a == NONE {
            return;
        }
        let mut aux = std::mem::take(&mut self.aux[a]);
        self.aux.remove(a);
        if self.aux_pool.len() < AUX_POOL {
            for v in [&mut aux.inbuf, &mut aux.out, &mut aux.next] {
                v.clear();
                if v.capacity() > POOL_KEEP {
                    *v = Vec::new();
                }
            }
            aux.sent = 0;
            aux.replies.clear();
            self.aux_pool.push(aux);
        }
    }

    fn start_recv(&mut self, i: u32) {
        let c = self.conns[i];
        if c.flags.contains(Flags::RECVING) {
            return;
        }
        // Never into a buffer that is taken out for parsing (it would be dropped under the
        // kernel's feet when put back).
        assert!(
            !c.marks.contains(Marks::PARSING),
            "recv started while the input is being parsed"
        );
        let limit = if c.state == State::Pub {
            MAX_HEAD + MAX_BODY + 16 * 1024
        } else {
            MAX_HEAD
        };
        let buf = &mut self.aux[c.aux].inbuf;
        if buf.capacity() - buf.len() < 4096 {
            let want = (buf.len() + 16 * 1024).min(limit);
            buf.reserve(want.saturating_sub(buf.len()));
        }
        let spare = buf.capacity() - buf.len();
        if spare == 0 {
            // Parsers refuse heads over MAX_HEAD and bodies over MAX_BODY before this.
            return self.mark_close(i);
        }
        // SAFETY: the spare capacity of `inbuf` stays allocated and untouched until the
        // recv completes: the Aux is not released while RECVING is set.
        unsafe {
            let ptr = buf.as_mut_ptr().add(buf.len());
            self.driver.recv(
                c.fd,
                ptr,
                spare.min(u32::MAX as usize) as u32,
                token(OP_RECV, i),
            );
        }
        let c = &mut self.conns[i];
        c.flags.insert(Flags::RECVING);
        c.ops += 1;
    }

    fn on_recv(&mut self, i: u32, res: i32) {
        self.conns[i].flags.remove(Flags::RECVING);
        if res == -libc::ENOBUFS && self.conns[i].state == State::SubHead {
            // Every head buffer was taken in this burst; they come back this turn.
            return self.recv_head(i);
        }
        if self.conns[i].state == State::Finishing {
            return; // a final reply is on its way; its completion closes
        }
        if res <= 0 {
            return self.close_on_error(i, res);
        }
        let a = self.conns[i].aux;
        let buf = &mut self.aux[a].inbuf;
        // SAFETY: the kernel initialised `res` bytes after `len`, within the spare capacity.
        unsafe { buf.set_len(buf.len() + res as usize) };
        match self.conns[i].state {
            State::Pub => self.on_publisher_input(i),
            State::SubStream | State::SubJoining => self.on_ws_input(i),
            _ => {}
        }
    }

    fn refuse(&mut self, i: u32, status: Status) {
        let a = self.ensure_aux(i);
        let aux = &mut self.aux[a];
        aux.inbuf.clear();
        let buf = if self.conns[i].flags.contains(Flags::SENDING) {
            &mut aux.next
        } else {
            &mut aux.out
        };
        response::error(buf, status);
        self.conns[i].state = State::Finishing;
        self.try_send(i);
    }

    fn on_msg(&mut self, m: Msg) {
        match m {
            Msg::Join { id, from, seq } => {
                self.router
                    .on_join(&mut self.outbox, id, from as usize, seq);
                self.sync_ids_gauge();
            }
            Msg::JoinAck { id, seq } => {
                if let Some(s) = self.router.join_acked(&id, seq) {
                    let mut fanout = std::mem::take(&mut self.fanout);
                    fanout.clear();
                    fanout.extend_from_slice(self.router.subscribers(s));
                    for &c in &fanout {
                        let conn = &mut self.conns[c];
                        conn.waits = conn.waits.saturating_sub(1);
                        if conn.waits == 0 && conn.state == State::SubJoining {
                            conn.state = State::SubStream;
                            self.try_send(c);
                        }
                    }
                    self.fanout = fanout;
                }
            }
            Msg::Leave { id, from } => {
                self.router.on_leave(&id, from as usize);
                self.sync_ids_gauge();
            }
            Msg::Route { id, msg, reply } => self.route(id, msg, reply),
            Msg::Deliver { id, msg, reply } => {
                let n = self
                    .router
                    .lookup(&id)
                    .map_or(0, |s| self.deliver_slot(s, Ev::Plain(&msg)));
                self.reply(reply, n, None);
            }
            Msg::FriendsRoute {
                user,
                msg,
                reply,
                credit,
            } => self.fanout_owner(user, msg, reply, credit),
            Msg::FriendsBatch {
                ev,
                friends,
                holders_too,
                reply,
                credit,
            } => {
                let mut credit = credit;
                let n = self.fanout_local(&friends, &ev, holders_too, reply, &mut credit);
                self.friends_reply(reply, 0, n, credit, false);
            }
            Msg::FriendsReplied {
                token,
                friends,
                count,
                credit,
                failed,
            } => self.on_friends_replied(token, friends, count, credit, failed),
            Msg::FriendEdit {
                a,
                b,
                add,
                reply,
                credit,
            } => self.edit_coordinate(a, b, add, reply, credit),
            Msg::FriendEditHalf {
                user,
                follower,
                add,
                reply,
                credit,
            } => {
                let changed = self.edit_half(user, follower, add);
                self.friends_reply(reply, 0, u32::from(changed), credit, false);
            }
            Msg::Replied { token, count, more } => self.on_replied(token, count, more),
            Msg::Adopt { fd, req } => self.adopt(fd, *req),
            Msg::Remote { id, msg } => self.on_remote(id, msg),
            Msg::RemoteFriends { user, msg } => self.on_remote_friends(user, msg),
            Msg::ClusterReady => self.on_cluster_ready(),
        }
    }

    pub(super) fn flush_outbox(&mut self) {
        // The gauge first: a JoinAck pushed below lets a head go out, after which a client
        // may read /stats and must see its ids counted.
        self.st().ids.store(
            self.router.owned_ids() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.st().slots.store(
            self.driver.slots_in_use(),
            std::sync::atomic::Ordering::Relaxed,
        );
        self.outbox.flush(&self.mesh);
    }
}

/// Answers an accepted connection the shard will not hold with `answer` (a complete 503) and
/// closes it, without blocking and without a record: a fresh socket's send buffer takes the
/// few bytes whole, the FIN follows them (shutdown), and what the client has already sent is
/// read and dropped first, so that the close does not become a reset (RFC 9112 section 9.6:
/// a server closes its side after the response, then reads what the client still sends).
/// Best effort: a client whose request arrives after the close may get a reset after the 503.
pub(super) fn refuse_unheld(fd: std::os::fd::RawFd, answer: &[u8]) {
    // SAFETY: `fd` is a connected socket this shard owns (fresh from accept) and closes here;
    // the buffers live for each call.
    unsafe {
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        libc::send(fd, answer.as_ptr().cast(), answer.len(), flags);
        libc::shutdown(fd, libc::SHUT_WR);
        let mut sink = [0u8; 2048];
        for _ in 0..4 {
            if libc::recv(fd, sink.as_mut_ptr().cast(), sink.len(), libc::MSG_DONTWAIT) <= 0 {
                break;
            }
        }
        libc::close(fd);
    }
}
