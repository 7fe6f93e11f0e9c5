//! Subscriber connections of a shard: request head, placement and login, the stream's
//! output (head, messages, heartbeats), and client input on an idle stream (discarded, or
//! WebSocket control frames).

use super::*;
use crate::http::ws;

/// How long a send may stay in flight before the output queued behind it counts against
/// `--max-pending-bytes`, ms: longer than a zero-window probe's first retry (200 ms), so a
/// reader whose window looked shut for a moment is not taken for a stalled one.
const STALL_GRACE_MS: u32 = 500;

/// Backlog, in multiples of `--max-pending-bytes`, that drops a subscriber at once, stalled
/// or not: the hard bound on what one subscriber's output may hold.
const HARD_FACTOR: usize = 64;

impl<D: Driver> Shard<D> {
    /// Subscriber waiting for (more of) its request head: a recv that takes a pooled
    /// buffer only when bytes arrive.
    pub(super) fn recv_head(&mut self, i: u32) {
        let c = &mut self.conns[i];
        c.flags.insert(Flags::RECVING);
        c.ops += 1;
        self.driver
            .recv_select(c.fd, HEAD_GROUP, HEAD_BUF_LEN as u32, token(OP_RECV, i));
    }

    /// Bytes of a subscriber's request head, straight from a head buffer.
    pub(super) fn on_head_bytes(&mut self, i: u32, data: &[u8]) {
        self.conns[i].flags.remove(Flags::RECVING);
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

    /// A complete subscriber request: answer a preflight or HEAD at once, else place the
    /// connection and open its stream.
    pub(super) fn start_stream(&mut self, i: u32, req: SubRequest) {
        self.release_aux(i);
        if req.preflight {
            let a = self.ensure_aux(i);
            self.aux[a].out.extend_from_slice(&self.preflight);
            self.conns[i].state = State::Finishing;
            return self.try_send(i);
        }
        if req.head_only {
            // HEAD: the same head, no body, never logged in; then close.
            self.set_stream(i, &req);
            self.conns[i].state = State::Finishing;
            return self.try_send(i);
        }
        if self.cfg.placement == Placement::Owner && req.ids.len() == 1 {
            let owner = req.ids[0].owner(self.mesh.shards());
            if owner != self.me {
                return self.hand_off(i, owner, req);
            }
        }
        self.open(i, req);
    }

    /// Records the stream's protocol and framing, and queues its response head: static
    /// bytes for every protocol but WebSocket, whose answer depends on the client's key.
    fn set_stream(&mut self, i: u32, req: &SubRequest) {
        let c = &mut self.conns[i];
        c.proto = req.proto as u8;
        if !req.http10 && req.proto != Proto::Ws {
            c.flags.insert(Flags::CHUNKED);
        } else {
            c.flags.remove(Flags::CHUNKED);
        }
        if let (Proto::Ws, Some(key)) = (req.proto, &req.ws_accept) {
            // The 101 answer depends on the client's key. It goes into a slot of the shard's
            // fixed handshake table when one is free (no allocation, nothing left resident
            // after a burst of handshakes), else into the connection's own buffer.
            let mut answer = Vec::with_capacity(WS_HEAD_LEN);
            ws::handshake(&mut answer, key, b"");
            match self.ws_free.pop() {
                Some(slot) if answer.len() < WS_HEAD_LEN => {
                    let at = usize::from(slot) * WS_HEAD_LEN;
                    self.ws_heads[at] = answer.len() as u8;
                    self.ws_heads[at + 1..at + 1 + answer.len()].copy_from_slice(&answer);
                    let c = &mut self.conns[i];
                    c.flags.insert(Flags::HEAD_PENDING);
                    c.marks.insert(Marks::WS_HEAD);
                    // `msgs` counts messages only for the seed's format; until the answer is
                    // sent it names the slot.
                    c.msgs = u32::from(slot);
                }
                other => {
                    if let Some(slot) = other {
                        self.ws_free.push(slot);
                    }
                    let a = self.ensure_aux(i);
                    self.aux[a].out.extend_from_slice(&answer);
                }
            }
        } else {
            c.flags.insert(Flags::HEAD_PENDING);
            if req.head_only {
                c.marks.insert(Marks::HEAD_ONLY);
            }
        }
    }

    /// Gives subscriber `i` to shard `owner`, which owns its only id.
    pub(super) fn hand_off(&mut self, i: u32, owner: usize, req: SubRequest) {
        let c = self.conns[i];
        // No op is in flight: the head's recv has just completed and nothing else was armed.
        debug_assert_eq!(c.ops, 0);
        self.driver.release_fd(c.fd);
        self.outbox.push(
            owner,
            Msg::Adopt {
                fd: c.fd,
                req: Box::new(req),
            },
        );
        ShardStats::sub(&self.st().subscribers, 1);
        self.release_aux(i);
        self.conns[i] = Conn::FREE;
        self.conns.remove(i);
    }

    /// Owner side of a hand-off.
    pub(super) fn adopt(&mut self, fd: i32, req: SubRequest) {
        if self.stopping || self.conns.len() >= self.max_conns {
            ShardStats::add(&self.st().rejected, 1);
            // The fd was handed to this shard and nothing else uses it.
            refuse_unheld(fd, &self.unavailable);
            return;
        }
        let i = self.conns.insert(Conn {
            fd,
            state: State::SubHead,
            ..Conn::FREE
        });
        ShardStats::add(&self.st().subscribers, 1);
        self.open(i, req);
    }

    /// Opens the stream of subscriber `i`: logs it in, moves its socket into the ring's
    /// table, and sends its head once every owner knows this shard holds the ids.
    fn open(&mut self, i: u32, req: SubRequest) {
        self.set_stream(i, &req);
        let held = self.cluster_hold(i, &req.ids);
        let (handle, waits) = self.router.login(&mut self.outbox, i, req.ids);
        let waits = waits + held;
        self.sync_ids_gauge();
        // A long-lived stream: move its socket out of the process fd table (io_uring
        // direct descriptor); no op is in flight on it here.
        let fd = self.driver.install(self.conns[i].fd);
        let c = &mut self.conns[i];
        c.fd = fd;
        c.ids = handle;
        c.waits = waits;
        c.flags.insert(Flags::LOGGED_IN);
        c.state = if waits > 0 {
            State::SubJoining
        } else {
            State::SubStream
        };
        self.arm_poll(i);
        self.try_send(i);
    }

    pub(super) fn arm_poll(&mut self, i: u32) {
        let c = &mut self.conns[i];
        if !c.flags.contains(Flags::POLLING) {
            c.flags.insert(Flags::POLLING);
            c.ops += 1;
            self.driver.poll_rdhup(c.fd, token(OP_POLL, i));
        }
    }

    pub(super) fn on_poll(&mut self, i: u32, res: i32) {
        self.conns[i].flags.remove(Flags::POLLING);
        if res < 0 {
            return self.close(i);
        }
        let ev = res as i16;
        if ev & libc::POLLERR != 0 {
            // The socket has an error (the send deadline, a reset, ...). The next send or
            // recv on it fails with that error, and its completion closes the connection and
            // counts why: with a send in flight, that send; otherwise the read below.
            if self.conns[i].flags.contains(Flags::SENDING) {
                return;
            }
        } else if ev & (libc::POLLRDHUP | libc::POLLHUP) != 0 {
            return self.close(i);
        }
        if Proto::from_u8(self.conns[i].proto) == Proto::Ws {
            // WebSocket control frames: read them into the connection's own buffer (held
            // only while a frame is incomplete) and answer.
            self.ensure_aux(i);
            return self.start_recv(i);
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

    pub(super) fn on_drain(&mut self, i: u32, res: i32) {
        if res == 0 || (res < 0 && res != -libc::EAGAIN && res != -libc::EINTR) {
            return self.close_on_error(i, res);
        }
        self.arm_poll(i);
    }

    /// Client bytes on a WebSocket stream (in `inbuf`): answer pings and closes.
    pub(super) fn on_ws_input(&mut self, i: u32) {
        let a = self.conns[i].aux;
        let mut inbuf = std::mem::take(&mut self.aux[a].inbuf);
        let mut answer = Vec::new();
        let (what, used) = ws::read_frames(&inbuf, &mut answer);
        inbuf.drain(..used);
        self.aux[a].inbuf = inbuf;
        let sending = self.conns[i].flags.contains(Flags::SENDING);
        let aux = &mut self.aux[a];
        // A pong waits behind nothing: if earlier output is still queued behind a send the
        // client has not taken, a ping flood's pongs are dropped (a close still goes out).
        if !answer.is_empty() && (what == ws::Input::End || !sending || aux.next.is_empty()) {
            if sending { &mut aux.next } else { &mut aux.out }.extend_from_slice(&answer);
        }
        if what == ws::Input::End {
            self.conns[i].state = State::Finishing;
        } else {
            self.arm_poll(i);
        }
        self.try_send(i);
    }

    /// Sends what is queued if nothing is in flight and the connection may write: first
    /// the static response head, then `Aux::out`.
    pub(super) fn try_send(&mut self, i: u32) {
        let c = self.conns[i];
        if c.flags.contains(Flags::SENDING) || c.state == State::SubJoining {
            return;
        }
        if c.flags.contains(Flags::HEAD_PENDING) {
            let head = self.head_of(&c);
            // SAFETY: the head table lives, unchanged, as long as the shard.
            unsafe {
                self.driver
                    .send(c.fd, head.as_ptr(), head.len() as u32, token(OP_SEND, i))
            };
            let c = &mut self.conns[i];
            c.flags.insert(Flags::SENDING);
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
        if aux.sent == 0 {
            aux.batch_ms = self.now_ms;
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
        c.flags.insert(Flags::SENDING);
        c.ops += 1;
    }

    /// The static head of connection `c`'s stream.
    fn head_of(&self, c: &Conn) -> &[u8] {
        if c.marks.contains(Marks::WS_HEAD) {
            let at = c.msgs as usize * WS_HEAD_LEN;
            return &self.ws_heads[at + 1..at + 1 + usize::from(self.ws_heads[at])];
        }
        &self.stream_heads[head_index(
            Proto::from_u8(c.proto),
            !c.flags.contains(Flags::CHUNKED),
            c.marks.contains(Marks::HEAD_ONLY),
        )]
    }

    /// Gives back connection `i`'s handshake-table slot, if it holds one.
    pub(super) fn free_ws_head(&mut self, i: u32) {
        let c = &mut self.conns[i];
        if c.marks.contains(Marks::WS_HEAD) {
            self.ws_free.push(c.msgs as u16);
            c.marks.remove(Marks::WS_HEAD);
            c.msgs = 0;
        }
    }

    /// Nothing left to send.
    pub(super) fn send_idle(&mut self, i: u32) {
        let c = self.conns[i];
        match c.state {
            State::Finishing => self.close(i),
            // Idle again: give the buffers back unless a WebSocket frame is half read.
            State::SubStream
                if !c.flags.contains(Flags::RECVING)
                    && (c.aux == NONE || self.aux[c.aux].inbuf.is_empty()) =>
            {
                self.release_aux(i)
            }
            State::Pub
                if c.flags.contains(Flags::CLOSE_AFTER) && self.aux[c.aux].replies.is_empty() =>
            {
                self.close(i)
            }
            _ => {}
        }
    }

    pub(super) fn on_send(&mut self, i: u32, res: i32) {
        self.conns[i].flags.remove(Flags::SENDING);
        if res < 0 {
            return self.close_on_error(i, res);
        }
        let c = self.conns[i];
        if c.flags.contains(Flags::HEAD_PENDING) {
            self.conns[i].flags.remove(Flags::HEAD_PENDING);
            if (res as usize) < self.head_of(&c).len() {
                // Short send of the head: what is left goes in front of any queued output.
                let mut out = self.head_of(&c)[res as usize..].to_vec();
                let a = self.ensure_aux(i);
                let aux = &mut self.aux[a];
                out.extend_from_slice(&aux.out[aux.sent..]);
                out.extend_from_slice(&aux.next);
                aux.next.clear();
                aux.out = out;
                aux.sent = 0;
            }
            self.free_ws_head(i);
            return self.try_send(i);
        }
        let a = c.aux;
        self.aux[a].sent += res as usize;
        self.try_send(i);
        if self.conns[i].state == State::Pub {
            self.read_more(i);
        }
    }

    /// Queues message `ev` on subscriber `i` in its protocol; returns whether it was
    /// queued (not: the connection is not streaming, is too slow, or its protocol has no
    /// bytes for an empty message).
    pub(super) fn deliver(&mut self, i: u32, ev: Ev<'_>) -> bool {
        let c = self.conns[i];
        if !matches!(c.state, State::SubStream | State::SubJoining) || c.marks.contains(Marks::CUT)
        {
            return false;
        }
        let a = self.ensure_aux(i);
        let now_ms = self.now_ms;
        let c = &mut self.conns[i];
        let aux = &mut self.aux[a];
        // Backpressure: output queued behind a send in flight is backlog. One message may
        // always wait (however large). A backlog beyond `--max-pending-bytes` drops the
        // subscriber once that send has been stuck for STALL_GRACE_MS (the socket is full:
        // it is not reading), and at once beyond HARD_FACTOR times the bound, so its output
        // never grows without bound nor delays anyone else. A reader that keeps reading is
        // not dropped for a burst: a send completes as soon as the kernel takes it, and a
        // window that looks shut for a moment (a delayed ACK or window update, up to a
        // zero-window probe interval) is not a stalled reader.
        let sending = c.flags.contains(Flags::SENDING);
        let backlog = if sending { aux.next.len() } else { 0 };
        let stalled = now_ms.wrapping_sub(aux.batch_ms) >= STALL_GRACE_MS;
        let buf = if sending { &mut aux.next } else { &mut aux.out };
        let (proto, chunked, n) = (
            Proto::from_u8(c.proto),
            c.flags.contains(Flags::CHUNKED),
            c.msgs.wrapping_add(1),
        );
        let queued = match ev {
            Ev::Plain(msg) => stream::message(buf, proto, chunked, n, msg),
            Ev::Friend(e) => {
                stream::friend_message(buf, proto, chunked, n, e.from, &e.msg, &e.json);
                true
            }
        };
        if !queued {
            self.try_send(i); // releases an Aux taken for nothing
            return false;
        }
        let bound = self.cfg.max_pending_bytes;
        if backlog > 0
            && aux.next.len() > bound
            && (stalled || aux.next.len() > bound.saturating_mul(HARD_FACTOR))
        {
            ShardStats::add(&self.stats[self.me].slow_closed, 1);
            c.marks.insert(Marks::CUT);
            self.mark_close(i);
            return false;
        }
        if !c.marks.contains(Marks::WS_HEAD) {
            c.msgs = c.msgs.wrapping_add(1);
        }
        c.marks.insert(Marks::ACTIVE);
        self.try_send(i);
        true
    }

    /// Queues `ev` on every local connection under the id in slot `s`; returns how many.
    pub(super) fn deliver_slot(&mut self, s: u32, ev: Ev<'_>) -> u32 {
        let mut fanout = std::mem::take(&mut self.fanout);
        fanout.clear();
        fanout.extend_from_slice(self.router.subscribers(s));
        let mut n = 0;
        for &c in &fanout {
            n += u32::from(self.deliver(c, ev));
        }
        self.fanout = fanout;
        ShardStats::add(&self.st().delivered, u64::from(n));
        n
    }

    /// Every `--heartbeat` seconds: a heartbeat on each stream that was quiet since the
    /// last sweep (not counted as a message). One pass over the slab per interval.
    pub(super) fn heartbeat_sweep(&mut self) {
        for i in 0..self.conns.slots() as u32 {
            let c = self.conns[i];
            self.conns[i].marks.remove(Marks::ACTIVE);
            if c.state != State::SubStream || c.marks.contains(Marks::ACTIVE) {
                continue;
            }
            let a = self.ensure_aux(i);
            let sending = c.flags.contains(Flags::SENDING);
            let aux = &mut self.aux[a];
            let buf = if sending { &mut aux.next } else { &mut aux.out };
            stream::heartbeat(
                buf,
                Proto::from_u8(c.proto),
                c.flags.contains(Flags::CHUNKED),
            );
            self.try_send(i);
        }
    }
}

/// A message to queue on a subscriber stream.
#[derive(Clone, Copy)]
pub(super) enum Ev<'a> {
    /// `POST /send/<id>`: the body as published.
    Plain(&'a [u8]),
    /// `POST /publish/<user>`: an event from a friend.
    Friend(&'a crate::friends::FriendEvent),
}

/// Index of a static stream head in the shard's table: protocol (seed, raw, SSE) x
/// HTTP/1.0 x HEAD.
pub(super) fn head_index(proto: Proto, http10: bool, head_only: bool) -> usize {
    let p = match proto {
        Proto::Seed => 0,
        Proto::Raw | Proto::Ws => 1,
        Proto::Sse => 2,
    };
    p * 4 + usize::from(http10) * 2 + usize::from(head_only)
}

/// The table of static stream heads, indexed by [`head_index`].
pub(super) fn stream_heads(cors: &[u8]) -> Vec<Box<[u8]>> {
    let mut t = vec![Box::<[u8]>::default(); 12];
    for proto in [Proto::Seed, Proto::Raw, Proto::Sse] {
        for http10 in [false, true] {
            for head_only in [false, true] {
                t[head_index(proto, http10, head_only)] =
                    stream::head(proto, http10, cors, !head_only).into_boxed_slice();
            }
        }
    }
    t
}
