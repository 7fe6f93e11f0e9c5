//! Stage 5, stream input: what a connection reads after its head. An idle stream holds one
//! POLLRDHUP poll and nothing else: a hang-up closes it, stray bytes are drained into a
//! shared scratch buffer nobody reads, and a WebSocket stream's control frames are read
//! into its own buffer and answered. Also the recv into a connection's own `inbuf` that
//! publishers and WebSocket frames use.

use super::completion::{token, OP_DRAIN, OP_POLL, OP_RECV};
use super::Shard;
use crate::conn::{Flags, Marks, State, NONE};
use crate::driver::Driver;
use crate::http::request::{ChunkedBody, Progress};
use crate::http::stream::Proto;
use crate::http::{ws, Status, MAX_BODY, MAX_HEAD};

/// How much of a publish-listener request's body has arrived.
pub(super) enum BodyRead {
    /// Not all of it: read more.
    Wait,
    /// All of it: the message is the `len` bytes where the body starts, and the body took
    /// `used` bytes of input from there.
    Here {
        /// Message length.
        len: usize,
        /// Input bytes of the body (framing included).
        used: usize,
    },
    /// A chunked body to refuse with this status (400, 413, 431).
    Refused(Status),
}

/// The drain buffer.
pub(super) struct Input {
    /// Where bytes after a subscriber's head are read and dropped; never read.
    scratch: Box<[u8]>,
}

impl Input {
    /// A 16 KiB drain buffer.
    pub(super) fn new() -> Input {
        Input {
            scratch: vec![0; 16 * 1024].into_boxed_slice(),
        }
    }

    /// The drain buffer, for a read whose bytes nobody looks at (a lingering close).
    pub(super) fn scratch(&mut self) -> (*mut u8, u32) {
        (self.scratch.as_mut_ptr(), self.scratch.len() as u32)
    }
}

impl<D: Driver> Shard<D> {
    /// Starts a recv into connection `i`'s `Aux::inbuf` (it has one), growing it up to the
    /// request limit, unless one is in flight.
    pub(super) fn start_recv(&mut self, i: u32) {
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

    /// The body of publisher `i`'s request that starts at `inbuf[start..]`: `len` bytes
    /// (Content-Length), or chunked. A chunked body is decoded in place as it arrives
    /// ([`ChunkedBody`], its state kept in the connection's `Aux` between reads), and the
    /// framing already read is dropped from `inbuf`.
    pub(super) fn read_body(
        &mut self,
        i: u32,
        inbuf: &mut Vec<u8>,
        start: usize,
        len: usize,
        chunked: bool,
    ) -> BodyRead {
        if !chunked {
            return if inbuf.len() < start + len {
                BodyRead::Wait
            } else {
                BodyRead::Here { len, used: len }
            };
        }
        let a = self.conns[i].aux;
        let mut body = self.aux[a].chunked;
        let progress = body.advance(&mut inbuf[start..]);
        self.aux[a].chunked = ChunkedBody::default();
        match progress {
            Progress::More { keep } => {
                // Nothing follows an incomplete body: the rest of `inbuf` was its framing.
                inbuf.truncate(start + keep);
                self.aux[a].chunked = body;
                BodyRead::Wait
            }
            Progress::Done { len, used } => BodyRead::Here { len, used },
            Progress::Refuse(s) => BodyRead::Refused(s),
        }
    }

    /// A recv into connection `i`'s own buffer completed: `res` bytes or `-errno`.
    pub(super) fn on_recv(&mut self, i: u32, res: i32) {
        self.conns[i].flags.remove(Flags::RECVING);
        if res == -libc::ENOBUFS && self.conns[i].state == State::SubHead {
            // Every head buffer was taken in this burst: wait for one to come back.
            return self.park_head(i);
        }
        if self.conns[i].state == State::Finishing {
            return; // a final reply is on its way; its completion closes
        }
        if res == 0 && self.conns[i].state == State::Pub {
            return self.on_publisher_fin(i);
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

    /// Publisher `i` sent its FIN (a half-close, `shutdown(SHUT_WR)`): it has nothing more
    /// to say but still reads (RFC 9112 section 9.6; B38 in `tests/CASES.md`). Every reply it
    /// is owed is written first: until then nothing is done here, and each reply written
    /// reads again (`read_more`), which sees the FIN again, until the last closes. A request
    /// cut short by the FIN gets no reply.
    fn on_publisher_fin(&mut self, i: u32) {
        let c = self.conns[i];
        let owed = c.aux != NONE && {
            let aux = &self.aux[c.aux];
            !aux.replies.is_empty() || aux.pending() > 0
        };
        if !owed && !c.flags.contains(Flags::SENDING) && !c.marks.contains(Marks::EDITING) {
            self.close(i);
        }
    }

    /// Arms the POLLRDHUP poll of stream `i` unless it is armed.
    pub(super) fn arm_poll(&mut self, i: u32) {
        let c = &mut self.conns[i];
        if !c.flags.contains(Flags::POLLING) {
            c.flags.insert(Flags::POLLING);
            c.ops += 1;
            self.driver.poll_rdhup(c.fd, token(OP_POLL, i));
        }
    }

    /// The poll of stream `i` fired with revents `res` (or failed).
    pub(super) fn on_poll(&mut self, i: u32, res: i32) {
        self.conns[i].flags.remove(Flags::POLLING);
        if res < 0 {
            return self.close(i);
        }
        if self.conns[i].state == State::Lingering {
            return self.linger_read(i);
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
                self.input.scratch.as_mut_ptr(),
                self.input.scratch.len() as u32,
                token(OP_DRAIN, i),
            )
        };
    }

    /// The drain of stream `i` completed: 0 is the peer's FIN, an error closes.
    pub(super) fn on_drain(&mut self, i: u32, res: i32) {
        if self.conns[i].state == State::Lingering {
            return self.linger_drained(i, res);
        }
        if res == 0 || (res < 0 && res != -libc::EAGAIN && res != -libc::EINTR) {
            return self.close_on_error(i, res);
        }
        self.arm_poll(i);
    }

    /// The frames a WebSocket client sent with its head (`early`, usually empty), read as
    /// the start of its frame stream once the stream is open: answered after the 101,
    /// and half a frame is kept for the next read.
    pub(super) fn early_frames(&mut self, i: u32, early: Vec<u8>) {
        let c = self.conns[i];
        if early.is_empty() || !matches!(c.state, State::SubStream | State::SubJoining) {
            return;
        }
        let a = self.ensure_aux(i);
        self.aux[a].inbuf.extend_from_slice(&early);
        self.on_ws_input(i);
    }

    /// Client bytes on a WebSocket stream (in `inbuf`): answer pings and closes.
    fn on_ws_input(&mut self, i: u32) {
        let a = self.conns[i].aux;
        let mut inbuf = std::mem::take(&mut self.aux[a].inbuf);
        let mut answer = Vec::new();
        let (what, used) = ws::read_frames(&inbuf, &mut answer, &mut self.aux[a].ws);
        inbuf.drain(..used);
        self.aux[a].inbuf = inbuf;
        let sending = self.conns[i].flags.contains(Flags::SENDING);
        let aux = &mut self.aux[a];
        // A pong waits behind nothing: if earlier output is still queued behind a send the
        // client has not taken, a ping flood's pongs are dropped (a close still goes out).
        if !answer.is_empty() && (what == ws::Input::End || !sending || aux.next.is_empty()) {
            aux.queue(sending).extend_from_slice(&answer);
        }
        if what == ws::Input::End {
            self.conns[i].state = State::Finishing;
        } else {
            self.arm_poll(i);
        }
        self.try_send(i);
    }
}
