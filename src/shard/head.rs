//! Stage 3, request head: a subscriber's head is read into a buffer of a provided-buffer
//! group that the kernel picks only when bytes arrive (a connection waiting for its head
//! holds no userspace buffer), parsed straight out of it, and the buffer is given back in
//! the same turn. A head longer than one buffer is gathered in the connection's own
//! `Aux::inbuf`, up to [`MAX_HEAD`](crate::http::MAX_HEAD). A refused head gets its error
//! reply here.

use std::collections::VecDeque;

use super::completion::{token, OP_PROVIDE, OP_RECV};
use super::Shard;
use crate::conn::{Flags, Marks, State, NONE};
use crate::driver::Driver;
use crate::http::request::{parse_subscribe, Head};
use crate::http::stream::Proto;
use crate::http::{response, Status};

/// Provided-buffer group of request-head buffers.
const HEAD_GROUP: u16 = 1;
/// Request-head buffers per shard.
const HEAD_BUFS: u16 = 256;
/// Bytes per request-head buffer. Most heads fit in one; a longer one is gathered in the
/// connection's own `inbuf`.
const HEAD_BUF_LEN: usize = 2048;

/// The request-head buffers, HEAD_BUFS x HEAD_BUF_LEN, lent to the kernel as a
/// provided-buffer group. Never moved or freed while the ring lives.
pub(super) struct HeadBufs {
    mem: Box<[u8]>,
    /// Connections whose head recv found every buffer taken (`-ENOBUFS`), oldest first: each
    /// waits for a buffer to come back instead of retrying at once (see `park_head`).
    parked: VecDeque<u32>,
    /// Buffers given back since parked connections were last re-armed.
    returned: u32,
}

impl HeadBufs {
    /// The buffers, written (not calloc'ed) so the pool is resident from the start: a fixed
    /// cost in the idle RSS rather than a per-connection one as connections arrive.
    pub(super) fn new() -> HeadBufs {
        HeadBufs {
            mem: vec![0x5a; usize::from(HEAD_BUFS) * HEAD_BUF_LEN].into_boxed_slice(),
            parked: VecDeque::new(),
            returned: 0,
        }
    }
}

impl<D: Driver> Shard<D> {
    /// Lends every head buffer to the kernel (at start).
    pub(super) fn with_head_buffers(mut self) -> Self {
        // SAFETY: the buffers live as long as the shard, which outlives its ring's use of
        // them (the ring is dropped with the shard), and are only read by us for a buffer
        // the kernel has handed back in a completion.
        unsafe {
            self.driver.provide_buffers(
                self.head_bufs.mem.as_mut_ptr(),
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
            let ptr = self.head_bufs.mem.as_mut_ptr().add(at);
            self.driver.provide_buffers(
                ptr,
                HEAD_BUF_LEN as u32,
                1,
                HEAD_GROUP,
                b,
                token(OP_PROVIDE, NONE),
            );
        }
        self.head_bufs.returned += 1;
    }

    /// Subscriber waiting for (more of) its request head: a recv that takes a pooled
    /// buffer only when bytes arrive.
    pub(super) fn recv_head(&mut self, i: u32) {
        let c = &mut self.conns[i];
        c.flags.insert(Flags::RECVING);
        c.ops += 1;
        self.driver
            .recv_select(c.fd, HEAD_GROUP, HEAD_BUF_LEN as u32, token(OP_RECV, i));
    }

    /// A recv of connection `i` completed into head buffer `b` (`res` bytes or `-errno`):
    /// read it now (only head recvs select buffers), then give it back.
    pub(super) fn on_head_buffer(&mut self, i: u32, b: u16, res: i32) {
        let conn = &mut self.conns[i];
        conn.ops -= 1;
        if conn.state == State::SubHead && res > 0 {
            let at = usize::from(b) * HEAD_BUF_LEN;
            let mem = std::mem::take(&mut self.head_bufs.mem);
            self.on_head_bytes(i, &mem[at..at + res as usize]);
            self.head_bufs.mem = mem;
        } else if conn.state == State::Closing {
            if conn.ops == 0 {
                self.finalize(i);
            }
        } else if conn.state == State::SubHead {
            self.close(i);
        } else {
            // Finishing (a 408 on its way): the late bytes are not wanted.
            conn.flags.remove(Flags::RECVING);
        }
        self.give_back_head_buffer(b);
    }

    /// Bytes of a subscriber's request head, straight from a head buffer.
    fn on_head_bytes(&mut self, i: u32, data: &[u8]) {
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
            Head::Refuse(s) => {
                let head = if a == NONE {
                    response::is_head(data)
                } else {
                    response::is_head(&self.aux[a].inbuf)
                };
                self.refuse_as(i, s, head)
            }
            Head::Done(mut req, n) => {
                // A WebSocket client's frames may come in the same read as its head (load
                // generators, coalescing proxies, retransmits): they start its frame stream.
                let all = if a == NONE {
                    data
                } else {
                    &self.aux[a].inbuf[..]
                };
                if req.proto == Proto::Ws && all.len() > n {
                    req.early = all[n..].to_vec();
                }
                if self.affine_redirect(i, &req, data) {
                    return;
                }
                self.start_stream(i, req)
            }
        }
    }

    /// Answers connection `i` with error `status` (a refused or timed-out head) and closes
    /// it once that is sent.
    pub(super) fn refuse(&mut self, i: u32, status: Status) {
        let a = self.ensure_aux(i);
        let head = response::is_head(&self.aux[a].inbuf);
        self.refuse_as(i, status, head)
    }

    /// [`Shard::refuse`] for a request whose method is known: a `HEAD` gets the head alone.
    pub(super) fn refuse_as(&mut self, i: u32, status: Status, head: bool) {
        let a = self.ensure_aux(i);
        let sending = self.conns[i].flags.contains(Flags::SENDING);
        let aux = &mut self.aux[a];
        aux.inbuf.clear();
        let out = aux.queue(sending);
        let start = out.len();
        response::error(out, status);
        if head {
            response::drop_body(out, start);
        }
        self.conns[i].state = State::Finishing;
        self.conns[i].marks.insert(Marks::DISCARD);
        self.try_send(i);
    }

    /// Subscriber `i`'s head recv found no buffer (`-ENOBUFS`): its bytes are there, but
    /// every head buffer was taken. It waits here, with nothing armed, until a buffer comes
    /// back. Re-arming at once made a burst of n waiting heads cost n failed recvs per turn
    /// while only 256 succeed (measured: 1.96 million `-ENOBUFS` for 66,000 reconnects in a
    /// drain's storm, enough to stall the heads into EMFILE and 408s).
    pub(super) fn park_head(&mut self, i: u32) {
        self.head_bufs.parked.push_back(i);
    }

    /// Once a turn, after its completions: re-arms the oldest parked head recvs, one per
    /// buffer given back since the last call (at least one, so a recv whose buffer was taken
    /// by another still makes progress and wakes the shard), each behind that buffer's
    /// provide in submission order. A parked entry whose connection has moved on (closed,
    /// timed out, or its slot reused by a connection with a recv of its own) is dropped.
    pub(super) fn rearm_parked_heads(&mut self) {
        if self.head_bufs.parked.is_empty() {
            self.head_bufs.returned = 0;
            return;
        }
        let mut budget = std::mem::take(&mut self.head_bufs.returned).max(1);
        while budget > 0 {
            let Some(i) = self.head_bufs.parked.pop_front() else {
                break;
            };
            let c = self.conns[i];
            if c.state == State::SubHead && !c.flags.contains(Flags::RECVING) {
                self.recv_head(i);
                budget -= 1;
            }
        }
    }
}
