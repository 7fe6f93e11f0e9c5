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
use crate::conn::{
    Aux, Conn, Slab, State, CHUNKED, CLOSE_AFTER, HEAD_PENDING, LINGER, LOGGED_IN, NONE, POLLING,
    PUBLISHER, RECVING, SENDING,
};
use crate::driver::{Completion, Driver};
use crate::http::request::{parse_publish, parse_subscribe, Head, PubRequest, SubRequest};
use crate::http::{response, Status, MAX_BODY, MAX_HEAD};
use crate::id::Id;
use crate::mesh::{Mesh, Msg, ReplyTo};
use crate::router::Router;
use crate::stats::{self, ShardStats};

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

/// Most publishes one publisher may have awaiting replies before its reads pause.
const MAX_PIPELINE: usize = 1024;
/// Most pooled `Aux` buffers kept per shard.
const AUX_POOL: usize = 64;
/// Buffers larger than this are freed rather than pooled, bytes.
const POOL_KEEP: usize = 16 * 1024;
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
}

impl Pending {
    fn done(&self) -> bool {
        self.routed && self.remaining == 0
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
    max_conns: usize,
    conns: Slab<Conn>,
    aux: Slab<Aux>,
    aux_pool: Vec<Aux>,
    router: Router,
    pending: Slab<Pending>,
    cqes: Vec<Completion>,
    to_close: Vec<u32>,
    fanout: Vec<u32>,
    scratch: Box<[u8]>,
    /// The request-head buffers, HEAD_BUFS x HEAD_BUF_LEN, lent to the kernel as a
    /// provided-buffer group. Never moved or freed while the ring lives.
    heads: Box<[u8]>,
    stopping: bool,
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
        Shard {
            me,
            driver,
            router: Router::new(me, shards, max_conns + cfg.max_conns / shards),
            mesh,
            stats,
            cfg,
            listeners: [Some(sub), Some(publ)],
            accept_armed: [false; 2],
            accept_retry: None,
            max_conns,
            conns: Slab::with_capacity(max_conns),
            aux: Slab::with_capacity(1024),
            aux_pool: Vec::new(),
            pending: Slab::with_capacity(1024),
            cqes: Vec::with_capacity(1024),
            to_close: Vec::new(),
            fanout: Vec::new(),
            scratch: vec![0; 4096].into_boxed_slice(),
            // Written (not calloc'ed) so the pool is resident from the start: a fixed cost in
            // the idle RSS rather than a per-connection one as connections arrive.
            heads: vec![0x5a; HEAD_BUFS as usize * HEAD_BUF_LEN].into_boxed_slice(),
            stopping: false,
        }
        .with_head_buffers()
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
        if self.conns.is_empty() && self.pending.is_empty() {
            let a = self.conns.release_if_empty();
            let b = self.router.release_if_empty();
            if a || b {
                self.aux_pool.clear();
                // SAFETY: malloc_trim has no preconditions; it is not on a per-message path.
                unsafe { libc::malloc_trim(0) };
            }
        }
    }

    /// Whether the shard has stopped and every connection is gone.
    pub fn finished(&self) -> bool {
        self.stopping && self.conns.is_empty()
    }

    fn begin_stop(&mut self) {
        self.stopping = true;
        for l in 0..2 {
            if let Some(fd) = &self.listeners[l] {
                if self.accept_armed[l] {
                    self.driver
                        .cancel_fd(fd.as_raw_fd(), token(OP_CANCEL, NONE));
                }
            }
        }
        let live: Vec<u32> = (0..self.conns_capacity())
            .filter(|&i| !matches!(self.conns[i].state, State::Free | State::Closing))
            .collect();
        for i in live {
            self.close(i);
        }
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
            } else {
                self.close(idx);
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
                tracing::warn!(
                    shard = self.me,
                    "accept failed: {}; pausing accepts",
                    std::io::Error::from_raw_os_error(-res)
                );
                self.accept_retry = Some(Instant::now() + Duration::from_millis(100));
            }
            return;
        }
        // SAFETY: a non-negative accept result is a new fd that nothing else owns.
        let fd = res;
        if self.stopping || self.conns.len() >= self.max_conns {
            ShardStats::add(&self.st().rejected, 1);
            unsafe { libc::close(fd) };
            return;
        }
        let (state, flags) = if l == SUB {
            (State::SubHead, 0)
        } else {
            (State::Pub, PUBLISHER)
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

    /// Subscriber waiting for (more of) its request head: a recv that takes a pooled
    /// buffer only when bytes arrive.
    fn recv_head(&mut self, i: u32) {
        let c = &mut self.conns[i];
        c.flags |= RECVING;
        c.ops += 1;
        self.driver
            .recv_select(c.fd, HEAD_GROUP, HEAD_BUF_LEN as u32, token(OP_RECV, i));
    }

    /// Bytes of a subscriber's request head, straight from a head buffer.
    fn on_head_bytes(&mut self, i: u32, data: &[u8]) {
        self.conns[i].flags &= !RECVING;
        let a = self.conns[i].aux;
        let parsed = if a == NONE {
            parse_subscribe(data)
        } else {
            self.aux[a].inbuf.extend_from_slice(data);
            parse_subscribe(&self.aux[a].inbuf)
        };
        match parsed {
            Head::Incomplete => {
                if a == NONE {
                    let a = self.ensure_aux(i);
                    self.aux[a].inbuf.extend_from_slice(data);
                }
                self.recv_head(i);
            }
            Head::Refuse(s) => self.refuse(i, s),
            Head::Done(req, _) => self.start_stream(i, req),
        }
    }

    fn take_aux(&mut self) -> u32 {
        let aux = self.aux_pool.pop().unwrap_or_default();
        self.aux.insert(aux)
    }

    fn ensure_aux(&mut self, i: u32) -> u32 {
        if self.conns[i].aux == NONE {
            self.conns[i].aux = self.take_aux();
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
        if c.flags & RECVING != 0 {
            return;
        }
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
        c.flags |= RECVING;
        c.ops += 1;
    }

    fn on_recv(&mut self, i: u32, res: i32) {
        self.conns[i].flags &= !RECVING;
        if res == -libc::ENOBUFS && self.conns[i].state == State::SubHead {
            // Every head buffer was taken in this burst; they come back this turn.
            return self.recv_head(i);
        }
        if res <= 0 {
            return self.close(i);
        }
        let a = self.conns[i].aux;
        let buf = &mut self.aux[a].inbuf;
        // SAFETY: the kernel initialised `res` bytes after `len`, within the spare capacity.
        unsafe { buf.set_len(buf.len() + res as usize) };
        if self.conns[i].state == State::Pub {
            self.on_publisher_input(i);
        }
    }

    fn refuse(&mut self, i: u32, status: Status) {
        let a = self.ensure_aux(i);
        let aux = &mut self.aux[a];
        aux.inbuf.clear();
        let buf = if self.conns[i].flags & SENDING != 0 {
            &mut aux.next
        } else {
            &mut aux.out
        };
        response::error(buf, status);
        self.conns[i].state = State::Finishing;
        self.try_send(i);
    }

    fn start_stream(&mut self, i: u32, req: SubRequest) {
        // The head is static bytes: an idle subscriber never needs an Aux for it.
        self.release_aux(i);
        let c = &mut self.conns[i];
        c.flags |= HEAD_PENDING;
        if !req.http10 {
            c.flags |= CHUNKED;
        }
        if req.head_only {
            // HEAD: the same head, no body, never logged in; then close.
            self.conns[i].state = State::Finishing;
            return self.try_send(i);
        }
        if self.cfg.placement == Placement::Owner && req.ids.len() == 1 {
            let owner = req.ids[0].owner(self.mesh.shards());
            if owner != self.me {
                return self.hand_off(i, owner, req);
            }
        }
        self.login(i, req.ids);
    }

    /// Gives subscriber `i` to shard `owner`, which owns its only id.
    fn hand_off(&mut self, i: u32, owner: usize, mut req: SubRequest) {
        let c = self.conns[i];
        // No op is in flight: the head's recv has just completed and nothing else was armed.
        debug_assert_eq!(c.ops, 0);
        let id = req.ids.pop().expect("one id");
        self.driver.release_fd(c.fd);
        self.router.out[owner].push(Msg::Adopt {
            fd: c.fd,
            id,
            http10: c.flags & CHUNKED == 0,
        });
        ShardStats::sub(&self.st().subscribers, 1);
        self.release_aux(i);
        self.conns[i] = Conn::FREE;
        self.conns.remove(i);
    }

    /// Owner side of a hand-off.
    fn adopt(&mut self, fd: i32, id: Id, http10: bool) {
        if self.stopping || self.conns.len() >= self.max_conns {
            ShardStats::add(&self.st().rejected, 1);
            // SAFETY: the fd was handed to this shard and nothing else uses it.
            unsafe { libc::close(fd) };
            return;
        }
        let flags = HEAD_PENDING | if http10 { 0 } else { CHUNKED };
        let i = self.conns.insert(Conn {
            fd,
            state: State::SubHead,
            flags,
            ..Conn::FREE
        });
        ShardStats::add(&self.st().subscribers, 1);
        self.login(i, vec![id]);
    }

    /// Logs subscriber `i` in and starts its stream (the head goes out once every owner
    /// knows this shard holds the ids).
    fn login(&mut self, i: u32, ids: Vec<Id>) {
        let (handle, waits) = self.router.login(i, ids);
        // A long-lived stream: move its socket out of the process fd table (io_uring
        // direct descriptor); no op is in flight on it here.
        let fd = self.driver.install(self.conns[i].fd);
        let c = &mut self.conns[i];
        c.fd = fd;
        c.ids = handle;
        c.waits = waits;
        c.flags |= LOGGED_IN;
        c.state = if waits > 0 {
            State::SubJoining
        } else {
            State::SubStream
        };
        self.arm_poll(i);
        self.try_send(i);
    }

    fn arm_poll(&mut self, i: u32) {
        let c = &mut self.conns[i];
        if c.flags & POLLING == 0 {
            c.flags |= POLLING;
            c.ops += 1;
            self.driver.poll_rdhup(c.fd, token(OP_POLL, i));
        }
    }

    fn on_poll(&mut self, i: u32, res: i32) {
        self.conns[i].flags &= !POLLING;
        if res < 0 {
            return self.close(i);
        }
        let ev = res as i16;
        if ev & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
            return self.close(i);
        }
        // Bytes after the request head: a subscriber has nothing more to say, so read and
        // discard them (one non-blocking recv into the shared scratch buffer, whose contents
        // nobody reads); a read of 0 is the peer's FIN.
        let c = &mut self.conns[i];
        c.ops += 1;
        // SAFETY: `scratch` lives as long as the shard and is never read.
        unsafe {
            self.driver.recv_now(
                c.fd,
                self.scratch.as_mut_ptr(),
                self.scratch.len() as u32,
                token(OP_DRAIN, i),
            )
        };
    }

    fn on_drain(&mut self, i: u32, res: i32) {
        if res == 0 || (res < 0 && res != -libc::EAGAIN && res != -libc::EINTR) {
            return self.close(i);
        }
        self.arm_poll(i);
    }

    /// Sends `out` if nothing is in flight and the connection may write.
    fn try_send(&mut self, i: u32) {
        let c = self.conns[i];
        if c.flags & SENDING != 0 || c.state == State::SubJoining {
            return;
        }
        if c.flags & HEAD_PENDING != 0 {
            let head = response::stream_head_bytes(c.flags & CHUNKED == 0);
            // SAFETY: static bytes.
            unsafe {
                self.driver
                    .send(c.fd, head.as_ptr(), head.len() as u32, token(OP_SEND, i))
            };
            let c = &mut self.conns[i];
            c.flags |= SENDING;
            c.ops += 1;
            return;
        }
        if c.aux == NONE {
            return self.send_idle(i);
        }
        let aux = &mut self.aux[c.aux];
        if aux.sent == aux.out.len() {
            aux.out.clear();
            aux.sent = 0;
            std::mem::swap(&mut aux.out, &mut aux.next);
        }
        if aux.out.is_empty() {
            return self.send_idle(i);
        }
        let rest = &aux.out[aux.sent..];
        // SAFETY: `out` is neither touched nor freed while SENDING is set (new output goes
        // to `next`, and the Aux is released only when idle).
        unsafe {
            self.driver.send(
                c.fd,
                rest.as_ptr(),
                rest.len().min(u32::MAX as usize) as u32,
                token(OP_SEND, i),
            )
        };
        let c = &mut self.conns[i];
        c.flags |= SENDING;
        c.ops += 1;
    }

    /// Nothing left to send.
    fn send_idle(&mut self, i: u32) {
        let c = self.conns[i];
        match c.state {
            State::Finishing => self.close(i),
            State::SubStream => self.release_aux(i),
            State::Pub if c.flags & CLOSE_AFTER != 0 && self.aux[c.aux].replies.is_empty() => {
                self.close(i)
            }
            _ => {}
        }
    }

    fn on_send(&mut self, i: u32, res: i32) {
        self.conns[i].flags &= !SENDING;
        if res < 0 {
            return self.close(i);
        }
        let c = self.conns[i];
        if c.flags & HEAD_PENDING != 0 {
            self.conns[i].flags &= !HEAD_PENDING;
            let head = response::stream_head_bytes(c.flags & CHUNKED == 0);
            if (res as usize) < head.len() {
                // Short send of the head: what is left goes in front of any queued output.
                let a = self.ensure_aux(i);
                let aux = &mut self.aux[a];
                debug_assert!(aux.out.is_empty() || aux.sent == 0);
                let mut out = head[res as usize..].to_vec();
                out.extend_from_slice(&aux.out[aux.sent..]);
                out.extend_from_slice(&aux.next);
                aux.next.clear();
                aux.out = out;
                aux.sent = 0;
            }
            return self.try_send(i);
        }
        let a = c.aux;
        self.aux[a].sent += res as usize;
        self.try_send(i);
    }

    /// Queues message `msg` on subscriber `i`; returns whether it was queued.
    fn deliver(&mut self, i: u32, msg: &[u8]) -> bool {
        let c = self.conns[i];
        if !matches!(c.state, State::SubStream | State::SubJoining) {
            return false;
        }
        let a = self.ensure_aux(i);
        let c = &mut self.conns[i];
        c.msgs = c.msgs.wrapping_add(1);
        let aux = &mut self.aux[a];
        let buf = if c.flags & SENDING != 0 {
            &mut aux.next
        } else {
            &mut aux.out
        };
        response::seed_chunk(buf, c.msgs, msg, c.flags & CHUNKED != 0);
        if aux.pending() > self.cfg.max_pending_bytes {
            // Backpressure: a subscriber that does not read is dropped rather than let its
            // output grow without bound or delay anyone else.
            ShardStats::add(&self.stats[self.me].slow_closed, 1);
            self.mark_close(i);
            return false;
        }
        self.try_send(i);
        true
    }

    fn deliver_slot(&mut self, s: u32, msg: &[u8]) -> u32 {
        let mut fanout = std::mem::take(&mut self.fanout);
        fanout.clear();
        fanout.extend_from_slice(self.router.subscribers(s));
        let mut n = 0;
        for &c in &fanout {
            n += u32::from(self.deliver(c, msg));
        }
        self.fanout = fanout;
        ShardStats::add(&self.st().delivered, u64::from(n));
        n
    }

    fn on_publisher_input(&mut self, i: u32) {
        let a = self.conns[i].aux;
        let mut inbuf = std::mem::take(&mut self.aux[a].inbuf);
        let mut used = 0;
        while self.conns[i].flags & CLOSE_AFTER == 0 {
            match parse_publish(&inbuf[used..]) {
                Head::Incomplete => break,
                Head::Refuse(s) => {
                    let mut raw = Vec::new();
                    response::error(&mut raw, s);
                    self.push_reply(
                        i,
                        Pending {
                            conn: i,
                            remaining: 0,
                            routed: true,
                            count: 0,
                            close: true,
                            raw: Some(raw),
                        },
                    );
                }
                Head::Done(PubRequest::Stats { close }, n) => {
                    used += n;
                    let body = stats::json(&self.stats);
                    let mut raw = Vec::new();
                    response::json(&mut raw, body.as_bytes(), close);
                    self.push_reply(
                        i,
                        Pending {
                            conn: i,
                            remaining: 0,
                            routed: true,
                            count: 0,
                            close,
                            raw: Some(raw),
                        },
                    );
                }
                Head::Done(PubRequest::Send { id, len, close }, n) => {
                    if inbuf.len() - used < n + len {
                        break; // body not complete yet
                    }
                    let msg = Bytes::copy_from_slice(&inbuf[used + n..used + n + len]);
                    used += n + len;
                    let t = self.push_reply(
                        i,
                        Pending {
                            conn: i,
                            remaining: 0,
                            routed: false,
                            count: 0,
                            close,
                            raw: None,
                        },
                    );
                    self.publish(id, msg, t);
                }
            }
        }
        inbuf.drain(..used);
        self.aux[a].inbuf = inbuf;
        self.flush_replies(i);
        let c = self.conns[i];
        if c.state == State::Pub
            && c.flags & CLOSE_AFTER == 0
            && self.aux[a].replies.len() < MAX_PIPELINE
        {
            self.start_recv(i);
        }
    }

    fn push_reply(&mut self, i: u32, p: Pending) -> u32 {
        if p.close {
            self.conns[i].flags |= CLOSE_AFTER;
        }
        let t = self.pending.insert(p);
        let a = self.conns[i].aux;
        self.aux[a].replies.push_back(t);
        t
    }

    /// `send(id, msg)`: the publish numbered `t` on this shard.
    fn publish(&mut self, id: Id, msg: Bytes, t: u32) {
        ShardStats::add(&self.st().sent, 1);
        let reply = ReplyTo {
            shard: self.me as u16,
            token: t,
        };
        let owner = id.owner(self.mesh.shards());
        if owner == self.me {
            self.route(id, msg, reply);
        } else {
            self.router.out[owner].push(Msg::Route { id, msg, reply });
        }
    }

    /// Owner side of a publish: local delivery, forwarding, and the first reply.
    fn route(&mut self, id: Id, msg: Bytes, reply: ReplyTo) {
        let (local, forwarded) = self.router.route(&id, &msg, reply);
        let n = local.map_or(0, |s| self.deliver_slot(s, &msg));
        self.reply(reply, n, Some(forwarded));
    }

    fn reply(&mut self, to: ReplyTo, count: u32, more: Option<u16>) {
        if to.shard as usize == self.me {
            self.on_replied(to.token, count, more);
        } else {
            self.router.out[to.shard as usize].push(Msg::Replied {
                token: to.token,
                count,
                more,
            });
        }
    }

    fn on_replied(&mut self, t: u32, count: u32, more: Option<u16>) {
        let p = &mut self.pending[t];
        p.count += u64::from(count);
        match more {
            Some(k) => {
                p.routed = true;
                p.remaining += i32::from(k);
            }
            None => p.remaining -= 1,
        }
        if p.done() {
            if p.conn == NONE {
                self.pending.remove(t);
            } else {
                let c = p.conn;
                self.flush_replies(c);
            }
        }
    }

    /// Writes the publisher's finished replies, in request order.
    fn flush_replies(&mut self, i: u32) {
        let a = self.conns[i].aux;
        while let Some(&t) = self.aux[a].replies.front() {
            if !self.pending[t].done() {
                break;
            }
            let p = std::mem::replace(
                &mut self.pending[t],
                Pending {
                    conn: NONE,
                    remaining: 0,
                    routed: true,
                    count: 0,
                    close: false,
                    raw: None,
                },
            );
            self.pending.remove(t);
            let sending = self.conns[i].flags & SENDING != 0;
            let aux = &mut self.aux[a];
            aux.replies.pop_front();
            let buf = if sending { &mut aux.next } else { &mut aux.out };
            match p.raw {
                Some(raw) => buf.extend_from_slice(&raw),
                None => response::delivered(buf, p.count, p.close),
            }
            if p.close {
                // Nothing after a reply that closes: drop later pipelined requests.
                for t in aux.replies.drain(..) {
                    if self.pending[t].done() {
                        self.pending.remove(t);
                    } else {
                        self.pending[t].conn = NONE;
                    }
                }
                self.conns[i].state = State::Finishing;
                break;
            }
        }
        self.try_send(i);
    }

    fn on_msg(&mut self, m: Msg) {
        match m {
            Msg::Join { id, from, seq } => self.router.on_join(id, from as usize, seq),
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
            Msg::Leave { id, from } => self.router.on_leave(&id, from as usize),
            Msg::Route { id, msg, reply } => self.route(id, msg, reply),
            Msg::Deliver { id, msg, reply } => {
                let n = self
                    .router
                    .lookup(&id)
                    .map_or(0, |s| self.deliver_slot(s, &msg));
                self.reply(reply, n, None);
            }
            Msg::Replied { token, count, more } => self.on_replied(token, count, more),
            Msg::Adopt { fd, id, http10 } => self.adopt(fd, id, http10),
        }
    }

    fn flush_outbox(&mut self) {
        for to in 0..self.router.out.len() {
            if !self.router.out[to].is_empty() {
                let batch = std::mem::take(&mut self.router.out[to]);
                self.mesh.push(to, batch);
            }
        }
        self.st().ids.store(
            self.router.owned_ids() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn mark_close(&mut self, i: u32) {
        self.to_close.push(i);
    }

    fn close_marked(&mut self) {
        while let Some(i) = self.to_close.pop() {
            self.close(i);
        }
    }

    /// Logs the connection out and starts tearing it down.
    fn close(&mut self, i: u32) {
        let c = self.conns[i];
        if matches!(c.state, State::Free | State::Closing) {
            return;
        }
        if c.flags & LOGGED_IN != 0 {
            self.router.logout(i, c.ids);
        }
        if c.flags & PUBLISHER != 0 {
            ShardStats::sub(&self.st().publishers, 1);
            if c.aux != NONE {
                let replies = std::mem::take(&mut self.aux[c.aux].replies);
                for t in replies {
                    if !self.pending[t].done() {
                        self.pending[t].conn = NONE;
                    } else {
                        self.pending.remove(t);
                    }
                }
            }
        } else {
            ShardStats::sub(&self.st().subscribers, 1);
        }
        let conn = &mut self.conns[i];
        if conn.state == State::Finishing {
            conn.flags |= LINGER;
        } else {
            conn.flags &= !LINGER;
        }
        conn.state = State::Closing;
        conn.flags &= !LOGGED_IN;
        if conn.ops == 0 {
            self.finalize(i);
        } else {
            conn.ops += 1;
            self.driver.cancel_fd(conn.fd, token(OP_CANCEL, i));
        }
        // A slot freed: accepting may resume if it had paused at capacity.
        self.accept_retry = None;
    }

    fn finalize(&mut self, i: u32) {
        // No op refers to the fd any more (ops == 0); it is closed once. A connection that
        // ends with a final reply (an error, HEAD) lingers so that reply is not reset.
        self.driver
            .close(self.conns[i].fd, self.conns[i].flags & LINGER != 0);
        self.release_aux(i);
        self.conns[i] = Conn::FREE;
        self.conns.remove(i);
    }
}
