//! Stage 10a, the lingering close after an error reply (RFC 9112 section 9.6; nginx's
//! `lingering_close`). A client refused while it is still sending (a 413 to a large upload,
//! a 404 or 501 before its body) has bytes in flight. Closing with unread input makes the
//! kernel answer with a RST, which can destroy the reply before the client reads it and
//! fails the client's next send. So once the error reply is written, the connection sends
//! its FIN, then reads and discards (into the shared scratch buffer) until the client's FIN,
//! and only then closes. The discard is bounded:
//! - bytes: [`LINGER_MAX_BYTES`] discarded, then the close (a RST if more comes);
//! - time: the head-timeout sweep closes a connection found lingering at two sweeps in a
//!   row, so between one and two `--head-timeout` (10 to 20 s by default), whether the
//!   client keeps sending or goes quiet.
//!
//! A lingering connection holds its slot and one poll or recv, and no buffer of its own.
//! Only connections marked [`Marks::DISCARD`] linger; other final replies (a close
//! asked for, a stream's end at shutdown) close as before, with the driver's one drain.

use super::completion::{token, OP_DRAIN};
use super::Shard;
use crate::conn::{Flags, Marks, State};
use crate::driver::Driver;

/// Most bytes one lingering connection discards before it is closed anyway.
pub(super) const LINGER_MAX_BYTES: u32 = 16 << 20;

impl<D: Driver> Shard<D> {
    /// A final reply of connection `i` is written: close it, or, after an error reply,
    /// linger (module doc).
    pub(super) fn end_final(&mut self, i: u32) {
        let c = self.conns[i];
        let busy = c
            .flags
            .intersects(Flags::RECVING | Flags::POLLING | Flags::SENDING);
        if !c.marks.contains(Marks::DISCARD) || busy || self.lp.stopping() {
            return self.close(i);
        }
        self.driver.shutdown_write(c.fd);
        self.release_aux(i);
        let c = &mut self.conns[i];
        c.state = State::Lingering;
        c.msgs = 0; // bytes discarded
        c.marks.remove(Marks::SLOW);
        self.arm_poll(i);
    }

    /// The poll of lingering connection `i` fired (readable, the peer's FIN, or an error):
    /// read what is there.
    pub(super) fn linger_read(&mut self, i: u32) {
        let c = &mut self.conns[i];
        c.ops += 1;
        let (ptr, len) = self.input.scratch();
        // SAFETY: the scratch buffer lives as long as the shard and its contents are never
        // read.
        unsafe { self.driver.recv_now(c.fd, ptr, len, token(OP_DRAIN, i)) };
    }

    /// A discarding read of lingering connection `i` completed with `res`: 0 is the
    /// client's FIN (everything read: the close sends no RST), more bytes read on, up to
    /// [`LINGER_MAX_BYTES`].
    pub(super) fn linger_drained(&mut self, i: u32, res: i32) {
        if res == -libc::EAGAIN || res == -libc::EINTR {
            return self.arm_poll(i);
        }
        if res <= 0 {
            return self.close(i);
        }
        let c = &mut self.conns[i];
        c.msgs = c.msgs.saturating_add(res as u32);
        if c.msgs >= LINGER_MAX_BYTES {
            return self.close(i);
        }
        // A full read: more is probably waiting.
        if res as u32 == self.input.scratch().1 {
            self.linger_read(i)
        } else {
            self.arm_poll(i)
        }
    }

    /// The head-timeout sweep met lingering connection `i`: the second time, it is closed.
    pub(super) fn linger_sweep(&mut self, i: u32) {
        if self.conns[i].marks.contains(Marks::SLOW) {
            self.close(i);
        } else {
            self.conns[i].marks.insert(Marks::SLOW);
        }
    }
}
