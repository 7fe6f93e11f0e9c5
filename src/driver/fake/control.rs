//! What a test does with the [`Fake`] between turns of its shard: look at what the shard
//! submitted ([`Fake::calls`], [`Fake::sends`], [`Fake::in_flight`]) and feed completions
//! (a connection accepted, bytes received, a send taken, an op completed, a CLOSE run).

use std::os::fd::RawFd;

use super::{Call, Fake, Kind, Ready, FIXED};

impl Fake {
    /// Every call so far, in order.
    pub(crate) fn calls(&self) -> Vec<Call> {
        self.0.borrow().calls.clone()
    }

    /// The bytes of every send submitted on `fd` so far, one entry per send.
    pub(crate) fn sends(&self, fd: RawFd) -> Vec<Vec<u8>> {
        let st = self.0.borrow();
        let sends = st.calls.iter().filter_map(|c| match c {
            Call::Send { fd: f, bytes } if *f == fd => Some(bytes.clone()),
            _ => None,
        });
        sends.collect()
    }

    /// The handle `fd` was installed as, or `fd` if it never was.
    pub(crate) fn handle_of(&self, fd: RawFd) -> RawFd {
        let st = self.0.borrow();
        let installed = st.calls.iter().rev().find_map(|c| match c {
            Call::Install { fd: f, handle } if *f == fd => Some(*handle),
            _ => None,
        });
        installed.unwrap_or(fd)
    }

    /// Whether `fd` was installed (taken for a long-lived stream) on this fake.
    pub(crate) fn installed(&self, fd: RawFd) -> bool {
        let st = self.0.borrow();
        st.calls
            .iter()
            .any(|c| matches!(c, Call::Install { fd: f, .. } if *f == fd))
    }

    /// The kinds of the ops in flight on `fd`, oldest first.
    pub(crate) fn in_flight(&self, fd: RawFd) -> Vec<Kind> {
        let st = self.0.borrow();
        st.flights
            .iter()
            .filter(|f| f.fd == fd)
            .map(|f| f.kind)
            .collect()
    }

    /// A connection `fd` arrives on `listener`, whose multishot accept must be armed.
    pub(crate) fn accept(&self, listener: RawFd, fd: RawFd) {
        let mut st = self.0.borrow_mut();
        let token = st
            .flights
            .iter()
            .find(|f| f.fd == listener && f.kind == Kind::Accept)
            .unwrap_or_else(|| panic!("no accept armed on listener {listener}"))
            .token;
        st.closed.retain(|&c| c != fd);
        st.push(token, fd, true, None);
    }

    /// Completes the oldest op of `kind` on `fd` with `result` (bytes, mask or -errno);
    /// panics if there is none.
    pub(crate) fn complete(&self, fd: RawFd, kind: Kind, result: i32) {
        let mut st = self.0.borrow_mut();
        let f = st.take(fd, kind);
        st.push(f.token, result, false, None);
    }

    /// The kernel takes the whole of the send in flight on `fd`: completes it and returns
    /// its bytes (`None` if no send is in flight).
    pub(crate) fn complete_send(&self, fd: RawFd) -> Option<Vec<u8>> {
        let mut st = self.0.borrow_mut();
        st.flights
            .iter()
            .any(|f| f.fd == fd && f.kind == Kind::Send)
            .then(|| {
                let f = st.take(fd, Kind::Send);
                st.push(f.token, f.bytes.len() as i32, false, None);
                f.bytes
            })
    }

    /// `data` arrives for the recv in flight on `fd`: as much as the shard's buffer takes is
    /// written into it and the recv completes; returns how many bytes were taken.
    pub(crate) fn recv(&self, fd: RawFd, data: &[u8]) -> usize {
        let mut st = self.0.borrow_mut();
        let f = st.take(fd, Kind::Recv);
        let n = data.len().min(f.len as usize);
        // SAFETY: the shard lent `f.buf[..f.len]` until this completion is reaped
        // (`Driver::recv`'s contract), and `n <= f.len`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), f.buf, n) };
        st.push(f.token, n as i32, false, None);
        n
    }

    /// `data` arrives for the `recv_select` in flight on `fd`: it is written into the
    /// lowest-numbered buffer the shard has provided to the group, and the completion names
    /// it. Returns the buffer id, or `None` if the group was empty (the recv then fails with
    /// -ENOBUFS, as the kernel's does). `data` must fit in one buffer and the length asked.
    pub(crate) fn recv_select(&self, fd: RawFd, data: &[u8]) -> Option<u16> {
        let mut st = self.0.borrow_mut();
        let f = st.take(fd, Kind::RecvSelect);
        let at = (0..st.provided.len())
            .filter(|&i| st.provided[i].group == f.group)
            .min_by_key(|&i| st.provided[i].bid);
        let Some(at) = at else {
            st.push(f.token, -libc::ENOBUFS, false, None);
            return None;
        };
        let b = st.provided.swap_remove(at);
        assert!(
            data.len() <= b.len.min(f.len) as usize,
            "data over one buffer"
        );
        // SAFETY: buffer `b.bid` was lent by `provide_buffers` and is not yet handed back;
        // it is `b.len` bytes long, and `data` fits.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), b.addr, data.len()) };
        st.push(f.token, data.len() as i32, false, Some(b.bid));
        Some(b.bid)
    }

    /// Buffers the shard has provided to `group` and not been handed back.
    pub(crate) fn provided(&self, group: u16) -> usize {
        let st = self.0.borrow();
        st.provided.iter().filter(|b| b.group == group).count()
    }

    /// The CLOSE of direct descriptor `handle` completes: its slot is free at the next reap.
    pub(crate) fn finish_close(&self, handle: RawFd) {
        assert!(handle & FIXED != 0, "{handle} is not a direct descriptor");
        let mut st = self.0.borrow_mut();
        let submitted = st
            .calls
            .iter()
            .any(|c| matches!(c, Call::Close { fd, .. } if *fd == handle));
        assert!(submitted, "no CLOSE submitted for {handle}");
        st.ready
            .push_back(Ready::SlotFreed((handle & !FIXED) as u32));
        st.ring();
    }

    /// A sendmsg as one send of its iovecs' bytes, gathered now (the fake's send copies at
    /// submission, as the kernel copies into the socket buffer).
    ///
    /// # Safety
    /// As `Driver::sendmsg`: `msg` and what it names are valid.
    pub(super) unsafe fn send_gathered(&mut self, fd: RawFd, msg: *const libc::msghdr, token: u64) {
        let mut bytes = Vec::new();
        // SAFETY: the caller's contract: a valid msghdr with `msg_iovlen` valid iovecs.
        let iovs = unsafe { std::slice::from_raw_parts((*msg).msg_iov, (*msg).msg_iovlen) };
        for v in iovs {
            // SAFETY: each iovec names a valid buffer (the contract).
            bytes.extend_from_slice(unsafe {
                std::slice::from_raw_parts(v.iov_base as *const u8, v.iov_len)
            });
        }
        // SAFETY: `bytes` lives through the call, which copies it.
        unsafe { crate::driver::Driver::send(self, fd, bytes.as_ptr(), bytes.len() as u32, token) }
    }
}
