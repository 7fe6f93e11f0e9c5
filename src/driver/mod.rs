//! The data plane's I/O interface: submit accept, recv, poll, send, cancel; reap completions.
//!
//! The shard ([`crate::shard`]) speaks only this interface, so protocol and router code are
//! written once and a second backend (the epoll baseline) plugs in beside [`uring`]. The
//! interface is completion-based, as io_uring is: every submission carries a 64-bit token
//! that comes back in exactly one [`Completion`] (several for a multishot accept, the last
//! without `more`).
//!
//! Buffer ownership: `recv` and `send` take raw pointers. The caller keeps the memory alive
//! and unmoved, and does not touch it, from the submission until its completion has been
//! reaped; the shard does this by keeping each connection's buffers in its side table until
//! the connection's in-flight op count is zero.
//!
//! # Files
//! - [`uring`]: the io_uring backend (rings, direct descriptors, the per-op entries).
//! - [`epoll`]: the epoll baseline backend (the same ops on readiness).
//! - `fake` (tests only): records what a shard submits and feeds it completions, so the
//!   shard's state machine is tested in memory.
//! - [`probe`]: choosing the backend at start (`--backend auto` probes io_uring and falls
//!   back to epoll).

use std::io;
use std::os::fd::RawFd;

pub mod epoll;
#[cfg(test)]
pub(crate) mod fake;
pub mod probe;
pub mod uring;

/// One finished operation.
#[derive(Debug, Clone, Copy)]
pub struct Completion {
    /// The token given at submission.
    pub token: u64,
    /// The result: bytes, an accepted fd, a poll mask (>= 0), or `-errno`.
    pub result: i32,
    /// More completions will follow for this token (multishot accept still armed).
    pub more: bool,
    /// The provided buffer the kernel picked, for [`Driver::recv_select`].
    pub buf: Option<u16>,
}

/// Most completions one [`Driver::reap`] moves out. A burst (15,000 subscribers sent to
/// in one turn) would otherwise grow the shard's completion buffer to its peak and keep
/// it, a new high-water mark in the allocator's arena every time a burst sets a record.
pub const REAP_BATCH: usize = 1024;

/// The operations a shard submits; see the module doc for buffer ownership.
pub trait Driver {
    /// Arms a multishot accept on `listener`: one completion per accepted socket
    /// (non-blocking, close-on-exec), until one arrives with `more == false`, after which the
    /// caller must arm it again (EMFILE, ENFILE, ENOMEM and CQ overflow all end it).
    fn accept_multi(&mut self, listener: RawFd, token: u64);

    /// Receives into `buf[..len]`; completes with the byte count, 0 at end of stream.
    ///
    /// # Safety
    /// `buf[..len]` must stay valid, unmoved and untouched until the completion is reaped.
    unsafe fn recv(&mut self, fd: RawFd, buf: *mut u8, len: u32, token: u64);

    /// Gives the kernel `nbufs` buffers of `len` bytes each, laid end to end from `addr`,
    /// as buffer group `group` with ids `bid..bid + nbufs`. A buffer handed out by
    /// [`Driver::recv_select`] is the caller's again until it provides it anew.
    ///
    /// # Safety
    /// The memory must stay valid and untouched by the caller while the kernel holds it.
    unsafe fn provide_buffers(
        &mut self,
        addr: *mut u8,
        len: u32,
        nbufs: u16,
        group: u16,
        bid: u16,
        token: u64,
    );

    /// Receives up to `len` bytes into a buffer the kernel picks from `group` only when
    /// data arrives (so a connection waiting for its request head holds no buffer); the
    /// completion names the buffer. Fails with `-ENOBUFS` if the group is empty.
    fn recv_select(&mut self, fd: RawFd, group: u16, len: u32, token: u64);

    /// Waits once for `POLLIN | POLLRDHUP` (and the always-reported `POLLHUP | POLLERR`) on
    /// `fd`; completes with the revents mask. Holding this is how an idle subscriber's
    /// hang-up is learnt without holding a read buffer.
    fn poll_rdhup(&mut self, fd: RawFd, token: u64);

    /// Sends `buf[..len]` (MSG_NOSIGNAL); completes with the bytes sent, which may be fewer.
    ///
    /// # Safety
    /// `buf[..len]` must stay valid, unmoved and unchanged until the completion is reaped.
    unsafe fn send(&mut self, fd: RawFd, buf: *const u8, len: u32, token: u64);

    /// Sends `buf[..len]` as [`Driver::send`] does, zero-copy where the backend can
    /// (io_uring `IORING_OP_SEND_ZC`, Linux 6.0): the kernel then reads the pages of `buf`
    /// until the data has left (on loopback, until the receiver's socket has copied it), so
    /// the send completes twice with the same token: first with the bytes sent and `more`
    /// set, then, once the kernel is done with the buffer, a notification (`more` clear,
    /// result 0). A first completion without `more` (an error) has no notification. The
    /// default (epoll) is an ordinary send: one completion, `more` clear.
    ///
    /// # Safety
    /// `buf[..len]` must stay valid, unmoved and unchanged until the last completion (the
    /// notification, if the first had `more`) is reaped.
    unsafe fn send_zc(&mut self, fd: RawFd, buf: *const u8, len: u32, token: u64) {
        self.send(fd, buf, len, token)
    }

    /// Sends the bytes `msg`'s iovecs name, in order (sendmsg(2), MSG_NOSIGNAL, no address,
    /// no control data); completes with the bytes sent, which may be fewer. A vectored send:
    /// a short per-connection prefix and a shared body in one send.
    ///
    /// # Safety
    /// `msg`, its iovec array and every buffer it names must stay valid, unmoved and
    /// unchanged until the completion is reaped.
    unsafe fn sendmsg(&mut self, fd: RawFd, msg: *const libc::msghdr, token: u64);

    /// Whether [`Driver::send_zc`] is zero-copy here (else the caller may as well send).
    fn sends_zero_copy(&self) -> bool {
        false
    }

    /// Cancels every operation in flight on `fd` (each completes, usually with -ECANCELED);
    /// this op completes too, with the number cancelled or an error.
    fn cancel_fd(&mut self, fd: RawFd, token: u64);

    /// Forgets `fd`, which has no op in flight and now belongs to another shard.
    fn release_fd(&mut self, fd: RawFd);

    /// Takes socket `fd` (no op in flight) for a long-lived connection and returns the
    /// handle to use for it from now on. The io_uring backend moves it into a ring's
    /// fixed-file table as a direct descriptor, so it holds no entry in the process fd table
    /// (which is how one process holds more connections than RLIMIT_NOFILE); if every
    /// table is full it keeps the plain fd. The epoll backend returns `fd` itself.
    fn install(&mut self, fd: RawFd) -> RawFd;

    /// Closes handle `fd` (no op in flight). With `linger`, first sends FIN and discards
    /// unread input, so the close does not turn into a RST that could destroy a final reply
    /// still in flight.
    fn close(&mut self, fd: RawFd, linger: bool);

    /// Shuts down the sending side of handle `fd` (FIN after what is queued), keeping it
    /// open for reading: the start of a lingering close (see `shard::input`). May complete
    /// later, silently (no completion reaches the caller).
    fn shutdown_write(&mut self, fd: RawFd);

    /// Like [`Driver::recv`] but never waits: completes with `-EAGAIN` if nothing is there.
    ///
    /// # Safety
    /// As for [`Driver::recv`].
    unsafe fn recv_now(&mut self, fd: RawFd, buf: *mut u8, len: u32, token: u64);

    /// Hands queued submissions to the kernel without waiting.
    fn submit(&mut self) -> io::Result<()>;

    /// Whether completions are waiting to be reaped.
    fn has_completions(&mut self) -> bool;

    /// Moves the available completions into `out`, at most [`REAP_BATCH`] a call (the rest
    /// wait for the next call; [`Driver::has_completions`] reports them), so the caller's
    /// buffer of `REAP_BATCH` entries never grows.
    fn reap(&mut self, out: &mut Vec<Completion>);

    /// An fd that polls readable when completions are waiting (the shard's reactor waits on it).
    fn wait_fd(&self) -> RawFd;

    /// The shard holds no connection and has been idle: drop what only a burst needed
    /// (tables grown to a burst's peak and kept), so the RSS after close does not keep each
    /// new peak. Returns whether anything went (the caller then trims malloc). Not on any
    /// per-message path.
    fn release_idle(&mut self) -> bool {
        false
    }

    /// Direct-descriptor slots in use: installed and not yet freed by their CLOSE's
    /// completion (io_uring backend); 0 for a backend without fixed-file tables. A slot that
    /// stays in use after its connection is gone is a leak.
    fn slots_in_use(&self) -> u64 {
        0
    }
}
