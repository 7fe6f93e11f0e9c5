//! A test-only [`Driver`] that does no I/O: it records what a shard submits and hands back
//! the completions a test feeds it, so the shard's state machine runs in memory, one turn
//! at a time (the model is quinn-proto's in-memory tests, `tests/util.rs`, `Pair::drive`).
//!
//! Tokens are opaque here: a test names an operation by its fd and [`Kind`], and the fake
//! completes it with the token it recorded at submission. The buffer contract of [`Driver`]
//! is kept as the kernel keeps it: a send's bytes are copied at submission; a recv's bytes
//! are written into the buffer the shard handed over just before its completion is queued;
//! a `recv_select` takes one of the buffers the shard provided (lowest id of the group
//! first) and names it in the completion, and that buffer is the shard's again until it
//! provides it anew. The shard breaking the contract panics, so the test fails: closing,
//! releasing or installing an fd that has an op in flight, providing a buffer twice, or
//! submitting on a handle it has closed.
//!
//! Direct descriptors are modelled as the io_uring backend has them (`driver/uring.rs`):
//! [`Driver::install`] takes a free slot of a fixed table and returns a handle with the
//! [`FIXED`] bit; [`Driver::close`] of that handle frees the slot only when its CLOSE
//! completes, which the test decides ([`Fake::finish_close`]). That completion is internal:
//! `reap` frees the slot and does not hand it to the shard. Until then
//! [`Driver::slots_in_use`] counts the slot.
//!
//! [`Driver::wait_fd`] is an eventfd that is readable while completions wait; it is the
//! only descriptor the fake owns, and it never touches the fds the test invents.
//!
//! Children: `control`, what a test does with the fake: look at the calls, feed
//! completions.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use super::{Completion, Driver};

mod control;

/// The bit that marks a handle returned by [`Driver::install`] (as in the io_uring backend);
/// the slot is the low bits.
pub(crate) const FIXED: RawFd = 1 << 30;

/// The kind of an operation in flight, as a test names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A multishot accept on a listener (never completes on its own).
    Accept,
    /// A recv into a buffer of the shard.
    Recv,
    /// A non-blocking recv (`recv_now`), into a buffer of the shard.
    RecvNow,
    /// A recv into a provided buffer picked when data arrives.
    RecvSelect,
    /// A POLLRDHUP poll.
    Poll,
    /// A send; its bytes were copied at submission.
    Send,
    /// A cancel of every op on the fd.
    Cancel,
}

/// One call the shard made, in order of submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Call {
    /// `accept_multi` on `listener`.
    Accept { listener: RawFd },
    /// `recv` (or `recv_now` if `now`) of up to `len` bytes.
    Recv { fd: RawFd, len: u32, now: bool },
    /// `recv_select` from buffer group `group`.
    RecvSelect { fd: RawFd, group: u16, len: u32 },
    /// `provide_buffers`: `nbufs` buffers of `len` bytes, ids from `bid`.
    Provide {
        group: u16,
        bid: u16,
        nbufs: u16,
        len: u32,
    },
    /// `poll_rdhup`.
    Poll { fd: RawFd },
    /// `send`, with a copy of the bytes.
    Send { fd: RawFd, bytes: Vec<u8> },
    /// `cancel_fd`.
    Cancel { fd: RawFd },
    /// `release_fd`.
    Release { fd: RawFd },
    /// `install` of `fd`, which returned `handle`.
    Install { fd: RawFd, handle: RawFd },
    /// `close`.
    Close { fd: RawFd, linger: bool },
    /// `shutdown_write`.
    Shutdown { fd: RawFd },
}

/// An operation submitted and not completed.
struct Flight {
    token: u64,
    fd: RawFd,
    kind: Kind,
    /// Recv: the shard's buffer and its length; RecvSelect: the length wanted.
    buf: *mut u8,
    len: u32,
    group: u16,
    /// Send: the bytes, copied at submission.
    bytes: Vec<u8>,
}

/// A buffer the shard lent with `provide_buffers`.
struct Provided {
    group: u16,
    bid: u16,
    addr: *mut u8,
    len: u32,
}

/// What `reap` takes next.
enum Ready {
    /// A completion for the shard.
    Op(Completion),
    /// The CLOSE of a direct descriptor ran: its slot is free (not shown to the shard).
    SlotFreed(u32),
}

struct State {
    calls: Vec<Call>,
    flights: Vec<Flight>,
    provided: Vec<Provided>,
    ready: VecDeque<Ready>,
    /// Slots of the fixed table; `free` are those not in use.
    table: u32,
    free: Vec<u32>,
    /// Handles closed (plain fds and direct descriptors); a submission on one panics.
    closed: Vec<RawFd>,
    bell: OwnedFd,
}

/// The fake driver. Clones share one state: give one to the shard, keep one in the test.
#[derive(Clone)]
pub(crate) struct Fake(Rc<RefCell<State>>);

impl Fake {
    /// A fake with a fixed table of `slots` direct-descriptor slots (0: `install` keeps the
    /// plain fd, as the epoll backend does).
    pub(crate) fn new(slots: u32) -> Fake {
        // SAFETY: eventfd has no memory preconditions; a non-negative result is a new fd.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        assert!(fd >= 0, "eventfd: {}", io::Error::last_os_error());
        Fake(Rc::new(RefCell::new(State {
            calls: Vec::new(),
            flights: Vec::new(),
            provided: Vec::new(),
            ready: VecDeque::new(),
            table: slots,
            free: (0..slots).rev().collect(),
            closed: Vec::new(),
            // SAFETY: `fd` is the new eventfd, owned by nothing else.
            bell: unsafe { OwnedFd::from_raw_fd(fd) },
        })))
    }
}

impl State {
    /// Removes and returns the oldest op of `kind` on `fd`.
    fn take(&mut self, fd: RawFd, kind: Kind) -> Flight {
        let at = self
            .flights
            .iter()
            .position(|f| f.fd == fd && f.kind == kind)
            .unwrap_or_else(|| panic!("no {kind:?} in flight on fd {fd}"));
        self.flights.remove(at)
    }

    fn push(&mut self, token: u64, result: i32, more: bool, buf: Option<u16>) {
        let c = Completion {
            token,
            result,
            more,
            buf,
        };
        self.ready.push_back(Ready::Op(c));
        self.ring();
    }

    /// Makes the eventfd readable.
    fn ring(&self) {
        let one = 1u64;
        // SAFETY: an 8-byte write from a live u64 to our eventfd.
        unsafe { libc::write(self.bell.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Records an op in flight on `fd` (which must not be closed).
    fn submit(&mut self, fd: RawFd, kind: Kind, token: u64, call: Call) -> &mut Flight {
        assert!(!self.closed.contains(&fd), "{kind:?} on closed fd {fd}");
        self.calls.push(call);
        self.flights.push(Flight {
            token,
            fd,
            kind,
            buf: std::ptr::null_mut(),
            len: 0,
            group: 0,
            bytes: Vec::new(),
        });
        self.flights.last_mut().expect("just pushed")
    }

    /// Panics if `fd` has an op in flight (the shard must wait for every completion).
    fn idle(&self, fd: RawFd, what: &str) {
        let busy: Vec<Kind> = self
            .flights
            .iter()
            .filter(|f| f.fd == fd)
            .map(|f| f.kind)
            .collect();
        assert!(busy.is_empty(), "{what} of fd {fd} with {busy:?} in flight");
    }
}

impl Driver for Fake {
    fn accept_multi(&mut self, listener: RawFd, token: u64) {
        let call = Call::Accept { listener };
        self.0
            .borrow_mut()
            .submit(listener, Kind::Accept, token, call);
    }

    unsafe fn recv(&mut self, fd: RawFd, buf: *mut u8, len: u32, token: u64) {
        let call = Call::Recv {
            fd,
            len,
            now: false,
        };
        let mut st = self.0.borrow_mut();
        let f = st.submit(fd, Kind::Recv, token, call);
        (f.buf, f.len) = (buf, len);
    }

    unsafe fn provide_buffers(
        &mut self,
        addr: *mut u8,
        len: u32,
        nbufs: u16,
        group: u16,
        bid: u16,
        token: u64,
    ) {
        let mut st = self.0.borrow_mut();
        for i in 0..nbufs {
            let b = bid + i;
            let held = st.provided.iter().any(|p| p.group == group && p.bid == b);
            assert!(!held, "buffer {b} of group {group} provided twice");
            // The buffers lie end to end from `addr` (the trait's contract); nothing is
            // written through the pointer until a recv_select takes the buffer.
            let addr = addr.wrapping_add(usize::from(i) * len as usize);
            st.provided.push(Provided {
                group,
                bid: b,
                addr,
                len,
            });
        }
        st.calls.push(Call::Provide {
            group,
            bid,
            nbufs,
            len,
        });
        st.push(token, 0, false, None);
    }

    fn recv_select(&mut self, fd: RawFd, group: u16, len: u32, token: u64) {
        let call = Call::RecvSelect { fd, group, len };
        let mut st = self.0.borrow_mut();
        let f = st.submit(fd, Kind::RecvSelect, token, call);
        (f.len, f.group) = (len, group);
    }

    fn poll_rdhup(&mut self, fd: RawFd, token: u64) {
        let call = Call::Poll { fd };
        self.0.borrow_mut().submit(fd, Kind::Poll, token, call);
    }

    unsafe fn send(&mut self, fd: RawFd, buf: *const u8, len: u32, token: u64) {
        // SAFETY: the caller keeps `buf[..len]` valid until the completion (the contract);
        // it is copied now, as the kernel copies into the socket buffer.
        let bytes = unsafe { std::slice::from_raw_parts(buf, len as usize) }.to_vec();
        let call = Call::Send {
            fd,
            bytes: bytes.clone(),
        };
        let mut st = self.0.borrow_mut();
        st.submit(fd, Kind::Send, token, call).bytes = bytes;
    }

    unsafe fn sendmsg(&mut self, fd: RawFd, msg: *const libc::msghdr, token: u64) {
        self.send_gathered(fd, msg, token)
    }
    fn cancel_fd(&mut self, fd: RawFd, token: u64) {
        let call = Call::Cancel { fd };
        self.0.borrow_mut().submit(fd, Kind::Cancel, token, call);
    }

    fn release_fd(&mut self, fd: RawFd) {
        let mut st = self.0.borrow_mut();
        st.idle(fd, "release");
        st.calls.push(Call::Release { fd });
    }

    fn install(&mut self, fd: RawFd) -> RawFd {
        let mut st = self.0.borrow_mut();
        st.idle(fd, "install");
        let handle = st.free.pop().map_or(fd, |slot| FIXED | slot as RawFd);
        // A slot is reused only after its CLOSE completed: the handle is live again.
        st.closed.retain(|&c| c != handle);
        st.calls.push(Call::Install { fd, handle });
        handle
    }

    fn close(&mut self, fd: RawFd, linger: bool) {
        let mut st = self.0.borrow_mut();
        st.idle(fd, "close");
        assert!(!st.closed.contains(&fd), "fd {fd} closed twice");
        st.closed.push(fd);
        st.calls.push(Call::Close { fd, linger });
    }

    fn shutdown_write(&mut self, fd: RawFd) {
        self.0.borrow_mut().calls.push(Call::Shutdown { fd });
    }

    unsafe fn recv_now(&mut self, fd: RawFd, buf: *mut u8, len: u32, token: u64) {
        let call = Call::Recv { fd, len, now: true };
        let mut st = self.0.borrow_mut();
        let f = st.submit(fd, Kind::RecvNow, token, call);
        (f.buf, f.len) = (buf, len);
    }

    fn submit(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn has_completions(&mut self) -> bool {
        !self.0.borrow().ready.is_empty()
    }

    fn reap(&mut self, out: &mut Vec<Completion>) {
        let mut st = self.0.borrow_mut();
        let mut count = 0u64;
        // SAFETY: an 8-byte read into a live u64 from our non-blocking eventfd; EAGAIN
        // (nothing rung) is fine.
        unsafe { libc::read(st.bell.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
        while let Some(r) = st.ready.pop_front() {
            match r {
                Ready::Op(c) => out.push(c),
                Ready::SlotFreed(slot) => st.free.push(slot),
            }
        }
    }

    fn wait_fd(&self) -> RawFd {
        self.0.borrow().bell.as_raw_fd()
    }

    fn slots_in_use(&self) -> u64 {
        let st = self.0.borrow();
        u64::from(st.table) - st.free.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::RawFd;

    use super::{Driver, Fake, Kind};

    /// Whether `fd` polls readable now.
    fn readable(fd: RawFd) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd, no wait.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    /// `wait_fd` polls readable exactly while `has_completions` says so: a reactor waiting
    /// on it never sleeps through a completion, nor wakes for none.
    #[test]
    fn wait_fd_is_readable_while_completions_wait() {
        let mut d = Fake::new(0);
        let fd = d.wait_fd();
        assert!(!d.has_completions() && !readable(fd));
        d.poll_rdhup(7, 42);
        d.complete(7, Kind::Poll, 1);
        assert!(d.has_completions() && readable(fd));
        let mut out = Vec::new();
        d.reap(&mut out);
        assert_eq!((out.len(), out[0].token, out[0].result), (1, 42, 1));
        assert!(!d.has_completions() && !readable(fd));
    }
}
