//! Stage 4, placement and login: a complete subscriber request is answered at once
//! (preflight, HEAD), or handed to the owner shard of its only id (`--placement owner`), or
//! logged in here; its socket is installed (io_uring direct descriptor) and its response
//! head queued: static bytes for every protocol but WebSocket, whose `101` answer waits in a
//! fixed handshake table. The head goes out once every owner has acknowledged (`JoinAck`)
//! and every cluster bucket is subscribed.

use super::Shard;
use crate::config::Placement;
use crate::conn::{Conn, Flags, Marks, State};
use crate::driver::Driver;
use crate::http::request::SubRequest;
use crate::http::stream::{self, Proto};
use crate::http::{response, ws};
use crate::mesh::Msg;
use crate::stats::ShardStats;

/// WebSocket handshake answers held at once in the shard's fixed table (more wait in
/// per-connection buffers).
const WS_HEAD_SLOTS: u16 = 512;
/// Bytes per handshake slot: a length byte and the 129-byte `101` answer, with room.
const WS_HEAD_LEN: usize = 192;

/// The response heads a stream starts with.
pub(super) struct StreamHeads {
    /// Static stream heads (protocol x HTTP/1.0 x HEAD), see [`head_index`].
    table: Vec<Box<[u8]>>,
    /// WebSocket `101` answers waiting to be sent, WS_HEAD_SLOTS x WS_HEAD_LEN (first byte
    /// of a slot: the answer's length); written, never moved, while a send from it is in
    /// flight.
    ws: Box<[u8]>,
    /// Free slots of `ws`.
    ws_free: Vec<u16>,
    /// The answer to a CORS preflight.
    preflight: Box<[u8]>,
}

impl StreamHeads {
    /// The heads for `--cors-origin` `cors_origin`.
    pub(super) fn new(cors_origin: &str) -> StreamHeads {
        let cors = response::cors_lines(cors_origin);
        let mut table = vec![Box::<[u8]>::default(); 12];
        for proto in [Proto::Seed, Proto::Raw, Proto::Sse] {
            for http10 in [false, true] {
                for head_only in [false, true] {
                    table[head_index(proto, http10, head_only)] =
                        stream::head(proto, http10, &cors, !head_only).into_boxed_slice();
                }
            }
        }
        StreamHeads {
            table,
            preflight: response::preflight(&cors).into_boxed_slice(),
            // Written (not calloc'ed): resident from the start, a fixed cost.
            ws: vec![0x5a; usize::from(WS_HEAD_SLOTS) * WS_HEAD_LEN].into_boxed_slice(),
            ws_free: (0..WS_HEAD_SLOTS).rev().collect(),
        }
    }

    /// The static head of connection `c`'s stream (its `Flags::HEAD_PENDING` bytes).
    #[inline]
    pub(super) fn head_of(&self, c: &Conn) -> &[u8] {
        if c.marks.contains(Marks::WS_HEAD) {
            let at = c.msgs as usize * WS_HEAD_LEN;
            return &self.ws[at + 1..at + 1 + usize::from(self.ws[at])];
        }
        &self.table[head_index(
            Proto::from_u8(c.proto),
            !c.flags.contains(Flags::CHUNKED),
            c.marks.contains(Marks::HEAD_ONLY),
        )]
    }

    /// Gives back `c`'s handshake-table slot, if it holds one.
    pub(super) fn free_ws(&mut self, c: &mut Conn) {
        if c.marks.contains(Marks::WS_HEAD) {
            self.ws_free.push(c.msgs as u16);
            c.marks.remove(Marks::WS_HEAD);
            c.msgs = 0;
        }
    }
}

/// Index of a static stream head in the table: protocol (seed, raw, SSE) x HTTP/1.0 x HEAD.
fn head_index(proto: Proto, http10: bool, head_only: bool) -> usize {
    let p = match proto {
        Proto::Seed => 0,
        Proto::Raw | Proto::Ws | Proto::Poll => 1,
        Proto::Sse => 2,
    };
    p * 4 + usize::from(http10) * 2 + usize::from(head_only)
}

impl<D: Driver> Shard<D> {
    /// A complete subscriber request: answer a preflight or HEAD at once, else place the
    /// connection and open its stream.
    pub(super) fn start_stream(&mut self, i: u32, mut req: SubRequest) {
        self.release_aux(i);
        if !self.authorize(i, &mut req) {
            return;
        }
        if req.preflight {
            let a = self.ensure_aux(i);
            self.aux[a].out.extend_from_slice(&self.heads.preflight);
            self.conns[i].state = State::Finishing;
            return self.try_send(i);
        }
        if req.head_only {
            // HEAD: the same head, no body, never logged in; then close.
            self.set_stream(i, &req, false);
            self.conns[i].state = State::Finishing;
            return self.try_send(i);
        }
        // A stream that resumes lives on its id's owner, where the history is.
        let resumes = self.resumable(&req);
        if (self.cfg.placement == Placement::Owner || resumes) && req.ids.len() == 1 {
            let owner = req.ids[0].owner(self.mesh.shards());
            if owner != self.me {
                return self.hand_off(i, owner, req);
            }
        }
        self.open(i, req);
    }

    /// Records the stream's protocol and framing, and queues its response head: static
    /// bytes for every protocol but WebSocket, whose answer depends on the client's key.
    /// A `resumable` stream's head is built with its verdict (`shard::resume`).
    fn set_stream(&mut self, i: u32, req: &SubRequest, resumable: bool) {
        let proto = if resumable {
            self.resumable_proto(req)
        } else {
            req.proto as u8
        };
        let c = &mut self.conns[i];
        c.proto = proto;
        c.flags.set(
            Flags::CHUNKED,
            !req.http10 && !matches!(req.proto, Proto::Ws | Proto::Poll),
        );
        if resumable {
            return;
        }
        let (Proto::Ws, Some(key)) = (req.proto, &req.ws_accept) else {
            c.flags.insert(Flags::HEAD_PENDING);
            if req.head_only {
                c.marks.insert(Marks::HEAD_ONLY);
            }
            return;
        };
        // The 101 answer depends on the client's key. It goes into a slot of the shard's
        // fixed handshake table when one is free (no allocation, nothing left resident after
        // a burst of handshakes), else into the connection's own buffer.
        let mut answer = Vec::with_capacity(WS_HEAD_LEN);
        ws::handshake(&mut answer, key, b"");
        match self.heads.ws_free.pop() {
            Some(slot) if answer.len() < WS_HEAD_LEN => {
                let at = usize::from(slot) * WS_HEAD_LEN;
                self.heads.ws[at] = answer.len() as u8;
                self.heads.ws[at + 1..at + 1 + answer.len()].copy_from_slice(&answer);
                let c = &mut self.conns[i];
                c.flags.insert(Flags::HEAD_PENDING);
                c.marks.insert(Marks::WS_HEAD);
                // `msgs` counts messages only for the seed's format; until the answer is
                // sent it names the slot.
                c.msgs = u32::from(slot);
            }
            other => {
                if let Some(slot) = other {
                    self.heads.ws_free.push(slot);
                }
                let a = self.ensure_aux(i);
                self.aux[a].out.extend_from_slice(&answer);
            }
        }
    }

    /// Gives back connection `i`'s handshake-table slot, if it holds one.
    pub(super) fn free_ws_head(&mut self, i: u32) {
        self.heads.free_ws(&mut self.conns[i]);
    }

    /// Gives subscriber `i` to shard `owner`, which owns its only id.
    fn hand_off(&mut self, i: u32, owner: usize, req: SubRequest) {
        let c = self.conns[i];
        // No op is in flight: the head's recv has just completed and nothing else was armed.
        debug_assert_eq!(c.ops, 0);
        self.driver.release_fd(c.fd);
        self.per_ip_hand_off(i, c.fd);
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

    /// Owner side of a hand-off (`Adopt`).
    pub(super) fn adopt(&mut self, fd: i32, req: SubRequest) {
        // The fd was handed to this shard and nothing else uses it.
        let counted = self.per_ip_take_handed(fd);
        if !self.admit(fd) {
            return self.per_ip_adopted(None, counted);
        }
        let i = self.conns.insert(Conn {
            fd,
            state: State::SubHead,
            ..Conn::FREE
        });
        self.per_ip_adopted(Some(i), counted);
        ShardStats::add(&self.st().subscribers, 1);
        self.open(i, req);
    }

    /// Opens the stream of subscriber `i`: logs it in, moves its socket into the ring's
    /// table, and sends its head once every owner knows this shard holds the ids.
    fn open(&mut self, i: u32, mut req: SubRequest) {
        self.set_expiry(i, &req);
        let early = std::mem::take(&mut req.early);
        let resumable = self.resumable(&req);
        self.set_stream(i, &req, resumable);
        let shards = self.mesh.shards();
        // Cluster mode with history: every position comes from Redis.
        let remote = resumable
            && self.resume.store.enabled()
            && (self.sequenced() || req.ids.iter().any(|id| id.owner(shards) != self.me));
        if resumable && !remote {
            // Verdict, replay and (below) login in one turn on the ids' owner: a publish
            // is either in the replay or delivered live, never both, never neither.
            self.open_local(i, &req);
            if self.conns[i].state == State::Finishing {
                return self.try_send(i); // a poll answered at once
            }
        }
        // Ids owned elsewhere are asked for after the login's `Join`s (shard/replay.rs).
        let asks = remote.then(|| req.clone());
        let held = self.cluster_hold(i, &req.ids);
        let (handle, waits) = self.router.login(&mut self.outbox, i, req.ids);
        if resumable && !remote {
            self.pin_logged_in(handle);
        }
        let waits = waits + held + asks.map_or(0, |req| self.start_remote(i, req));
        self.sync_ids_gauge();
        // A long-lived stream: move its socket out of the process fd table (io_uring
        // direct descriptor); no op is in flight on it here.
        let fd = self.driver.install(self.conns[i].fd);
        let c = &mut self.conns[i];
        c.fd = fd;
        c.ids = handle;
        c.waits = waits;
        c.flags.insert(Flags::LOGGED_IN);
        ShardStats::add(
            &self.stats[self.me].streams[Proto::from_u8(c.proto) as usize],
            1,
        );
        c.state = if waits > 0 {
            State::SubJoining
        } else {
            State::SubStream
        };
        if self.cfg.idle_poll || Proto::from_u8(c.proto) == Proto::Ws {
            self.arm_poll(i);
        }
        self.try_send(i);
        self.early_frames(i, early);
    }
}
