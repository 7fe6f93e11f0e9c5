//! Stage 6c, zero-copy sends of shared frames (`--zerocopy-min-bytes`): a frame at least that
//! long goes to each idle subscriber with `Driver::send_zc` (io_uring `IORING_OP_SEND_ZC`;
//! the epoll backend, `Driver::sends_zero_copy` false, sends it ordinarily), so the kernel reads the one buffer for every
//! subscriber instead of copying it into each socket.
//!
//! Who owns the buffer: a zero-copy send completes twice. The first completion (`more` set)
//! says how many bytes went; the connection then goes on as after any send (its `Aux` lets
//! the frame go, the next output follows). The kernel may still read the pages until the
//! second completion, the notification. So each zero-copy send takes a [`Hold`]: a clone of
//! the frame's `Bytes` in this stage's slab, whose index (not the connection's) is the
//! token's; only the notification drops it. A first completion without `more` (an error)
//! has no notification and drops it at once. The slab grows to the peak of sends in flight
//! and stays: no allocation per send once warm.

use bytes::Bytes;

use super::completion::{token, OP_FRAME, OP_FRAME_ZC};
use super::Shard;
use crate::conn::{Flags, Slab, State};
use crate::driver::Driver;
use crate::stats::ShardStats;

/// One zero-copy send's buffer, held until the kernel's notification.
struct Hold {
    /// The connection it was sent on.
    conn: u32,
    /// Its first completion has been handled (what comes next is the notification).
    done: bool,
    /// The reference that keeps the buffer alive.
    _frame: Bytes,
}

/// The buffers of zero-copy sends in flight, by hold index.
pub(super) struct Holds {
    holds: Slab<Hold>,
}

impl Default for Holds {
    fn default() -> Holds {
        Holds {
            holds: Slab::with_capacity(0),
        }
    }
}

impl<D: Driver> Shard<D> {
    /// Submits the send of subscriber `i`'s frame from byte `from` on (its `Aux` holds
    /// `frame` and, on `/test/`, a prefix slot counted first): the rest of the prefix and
    /// the whole frame in one vectored send; else `frame`'s rest, zero-copy when it is at
    /// least `--zerocopy-min-bytes`, else an ordinary send.
    pub(super) fn submit_frame(&mut self, i: u32, frame: &Bytes, from: usize) {
        let c = self.conns[i];
        let prefix = self.aux[c.aux].prefix;
        let plen = prefix.map_or(0, |s| self.prefixes.len(s));
        if let Some(s) = prefix.filter(|_| from < plen) {
            let msg = self.prefixes.msghdr(s, from, frame);
            let c = &mut self.conns[i];
            c.flags.insert(Flags::SENDING);
            c.ops += 1;
            // SAFETY: the msghdr, its iovecs and the prefix live in slot `s`, freed only
            // when the frame is done; the frame is the Bytes the Aux holds (as below).
            return unsafe { self.driver.sendmsg(c.fd, msg, token(OP_FRAME, i)) };
        }
        let rest = &frame[from - plen..];
        let (ptr, len) = (rest.as_ptr(), rest.len().min(u32::MAX as usize) as u32);
        let min = self.cfg.zerocopy_min_bytes;
        let c = &mut self.conns[i];
        c.flags.insert(Flags::SENDING);
        c.ops += 1;
        let fd = c.fd;
        if min == 0 || rest.len() < min || !self.driver.sends_zero_copy() {
            // SAFETY: the Bytes in the connection's Aux keeps the buffer alive and unchanged
            // until this send's completion takes it out; the Aux is not released while
            // SENDING is set.
            unsafe { self.driver.send(fd, ptr, len, token(OP_FRAME, i)) };
            return;
        }
        let h = self.zc.holds.insert(Hold {
            conn: i,
            done: false,
            _frame: frame.clone(),
        });
        ShardStats::bump(&self.stats[self.me].zerocopy_sends, 1);
        // SAFETY: hold `h` keeps the buffer alive and unchanged (Bytes is immutable) until
        // the send's last completion (the notification, see the module doc) removes it.
        unsafe { self.driver.send_zc(fd, ptr, len, token(OP_FRAME_ZC, h)) };
    }

    /// A completion of the zero-copy send under hold `h`: its first (the bytes sent, and
    /// `more` if a notification follows) or the notification.
    pub(super) fn on_frame_zc(&mut self, h: u32, res: i32, more: bool) {
        let hold = &mut self.zc.holds[h];
        if hold.done {
            // The notification: the kernel is done with the buffer.
            return self.zc.holds.remove(h);
        }
        hold.done = true;
        let i = hold.conn;
        if !more {
            self.zc.holds.remove(h);
        }
        // The first completion is the connection's, as an ordinary send's would be.
        let conn = &mut self.conns[i];
        conn.ops -= 1;
        if conn.state == State::Closing {
            if conn.ops == 0 {
                self.finalize(i);
            }
            return;
        }
        self.on_frame_sent(i, res);
    }
}
