//! Stage 2, completion dispatch: what each submission's 64-bit token says (operation,
//! connection) and where its completion goes.
//!
//! Every op on a connection counts in its record's `ops`; a completion on a closing
//! connection only counts down, and the last one frees the slot ([`Shard::finalize`]).

use super::Shard;
use crate::conn::{State, NONE};
use crate::driver::{Completion, Driver};

/// Multishot accept; the index is the listener (0 subscriber, 1 publish).
pub(super) const OP_ACCEPT: u64 = 1;
/// Recv into a connection's `inbuf` or a provided head buffer.
pub(super) const OP_RECV: u64 = 2;
/// POLLRDHUP poll of an idle stream.
pub(super) const OP_POLL: u64 = 3;
/// Send of a static head or `Aux::out`.
pub(super) const OP_SEND: u64 = 4;
/// Cancel of a connection's ops (or, with [`NONE`], of a listener's accept).
pub(super) const OP_CANCEL: u64 = 5;
/// Head buffers provided to the kernel (index [`NONE`]).
pub(super) const OP_PROVIDE: u64 = 6;
/// Non-blocking recv that drains bytes after a subscriber's head.
pub(super) const OP_DRAIN: u64 = 7;
/// Send of a shared message frame (`Aux::frame`, see `frames.rs`).
pub(super) const OP_FRAME: u64 = 8;
/// Zero-copy send of a shared frame; the index is its hold (`zerocopy.rs`), not a connection.
pub(super) const OP_FRAME_ZC: u64 = 9;

/// The token of operation `op` on connection (or listener) `idx`.
#[inline]
pub(super) fn token(op: u64, idx: u32) -> u64 {
    (op << 32) | u64::from(idx)
}

impl<D: Driver> Shard<D> {
    /// Hands completion `c` to the stage that submitted it.
    pub(super) fn on_completion(&mut self, c: Completion) {
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
        if op == OP_FRAME_ZC {
            return self.on_frame_zc(idx, c.result, c.more);
        }
        if let Some(b) = c.buf {
            return self.on_head_buffer(idx, b, c.result);
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
            OP_FRAME => self.on_frame_sent(idx, c.result),
            _ => {}
        }
    }
}
