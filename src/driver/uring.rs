//! The io_uring backend of [`Driver`]: one raw ring per shard, built with the `io-uring`
//! crate beside the shard's tokio-uring runtime (whose own ring has no multishot, poll or
//! cancel support; see DESIGN.md).
//!
//! Setup: `SINGLE_ISSUER` (only the shard thread submits), a completion queue 16 times the
//! submission queue so bursts of completions rarely spill to the kernel's overflow list, and
//! no `DEFER_TASKRUN` or `COOP_TASKRUN`: the shard sleeps in epoll on the ring fd, and
//! completions must be posted without the thread entering the ring first.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use io_uring::{opcode, squeue, types, IoUring};

use super::{Completion, Driver};

/// Submission queue entries per ring.
const SQ_ENTRIES: u32 = 4096;
/// Completion queue entries per ring.
const CQ_ENTRIES: u32 = SQ_ENTRIES * 16;

/// Environment variable that makes [`probe`] fail, to exercise the epoll fallback.
pub const DISABLE_ENV: &str = "URING_COMET_DISABLE_URING";

/// Checks that io_uring can be used here: a ring can be set up and the kernel knows every
/// opcode the shard submits. Errors: the cause, in words (sysctl, seccomp, old kernel, or
/// [`DISABLE_ENV`] set).
pub fn probe() -> Result<(), String> {
    if std::env::var_os(DISABLE_ENV).is_some() {
        return Err(format!(
            "disabled by the {DISABLE_ENV} environment variable"
        ));
    }
    let ring = IoUring::new(8).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOSYS) => format!("io_uring_setup: {e}: the kernel has no io_uring, or a seccomp profile (e.g. Docker's default) blocks it"),
        Some(libc::EPERM) => format!("io_uring_setup: {e}: disabled by sysctl kernel.io_uring_disabled, or not permitted for this user or container"),
        _ => format!("io_uring_setup: {e}"),
    })?;
    let mut p = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut p)
        .map_err(|e| format!("io_uring probe: {e}"))?;
    for (code, name) in [
        (opcode::Accept::CODE, "ACCEPT"),
        (opcode::Recv::CODE, "RECV"),
        (opcode::Send::CODE, "SEND"),
        (opcode::PollAdd::CODE, "POLL_ADD"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
        (opcode::ProvideBuffers::CODE, "PROVIDE_BUFFERS"),
        (
            opcode::SendZc::CODE,
            "SEND_ZC (Linux 6.0, for multishot accept and cancel-by-fd too)",
        ),
    ] {
        if !p.is_supported(code) {
            return Err(format!(
                "the kernel lacks IORING_OP_{name}: Linux 6.0 or later is needed"
            ));
        }
    }
    Ok(())
}

/// One shard's ring.
pub struct Uring {
    ring: IoUring,
}

impl Uring {
    /// Creates the ring. Errors: io_uring_setup failed (disabled by sysctl
    /// `kernel.io_uring_disabled`, blocked by seccomp, or too old a kernel), as an io error.
    pub fn new() -> io::Result<Uring> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_cqsize(CQ_ENTRIES)
            .setup_submit_all()
            .build(SQ_ENTRIES)?;
        Ok(Uring { ring })
    }

    fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every entry built by this driver refers to memory whose lifetime the
            // caller guarantees (see the `Driver` method contracts) or to no memory at all.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            // The submission queue is full: hand it to the kernel and try again.
            if let Err(e) = self.ring.submit() {
                if e.raw_os_error() != Some(libc::EBUSY) && e.raw_os_error() != Some(libc::EAGAIN) {
                    tracing::error!("io_uring submit failed: {e}");
                }
                // EBUSY: the completion queue is overflowing; making room is the caller's
                // next reap. Yield the CPU for a moment rather than spin.
                std::thread::yield_now();
            }
        }
    }
}

impl Driver for Uring {
    fn accept_multi(&mut self, listener: RawFd, token: u64) {
        let e = opcode::AcceptMulti::new(types::Fd(listener))
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build()
            .user_data(token);
        self.push(e);
    }

    unsafe fn recv(&mut self, fd: RawFd, buf: *mut u8, len: u32, token: u64) {
        let e = opcode::Recv::new(types::Fd(fd), buf, len)
            .build()
            .user_data(token);
        self.push(e);
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
        let e = opcode::ProvideBuffers::new(addr, len as i32, nbufs, group, bid)
            .build()
            .user_data(token);
        self.push(e);
    }

    fn recv_select(&mut self, fd: RawFd, group: u16, len: u32, token: u64) {
        let e = opcode::Recv::new(types::Fd(fd), std::ptr::null_mut(), len)
            .buf_group(group)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT)
            .user_data(token);
        self.push(e);
    }

    fn poll_rdhup(&mut self, fd: RawFd, token: u64) {
        let mask = (libc::POLLIN | libc::POLLRDHUP) as u32;
        let e = opcode::PollAdd::new(types::Fd(fd), mask)
            .build()
            .user_data(token);
        self.push(e);
    }

    unsafe fn send(&mut self, fd: RawFd, buf: *const u8, len: u32, token: u64) {
        let e = opcode::Send::new(types::Fd(fd), buf, len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(token);
        self.push(e);
    }

    fn cancel_fd(&mut self, fd: RawFd, token: u64) {
        let e = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all())
            .build()
            .user_data(token);
        self.push(e);
    }

    fn release_fd(&mut self, _fd: RawFd) {
        // Nothing to undo: an fd with no op in flight has no state in the ring.
    }

    fn submit(&mut self) -> io::Result<()> {
        match self.ring.submit() {
            Ok(_) => Ok(()),
            // Busy: completions must be reaped first; the next turn submits again.
            Err(e)
                if e.raw_os_error() == Some(libc::EBUSY)
                    || e.raw_os_error() == Some(libc::EAGAIN) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn has_completions(&mut self) -> bool {
        let mut cq = self.ring.completion();
        cq.sync();
        !cq.is_empty()
    }

    fn reap(&mut self, out: &mut Vec<Completion>) {
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            out.push(Completion {
                token: cqe.user_data(),
                result: cqe.result(),
                more: io_uring::cqueue::more(cqe.flags()),
                buf: io_uring::cqueue::buffer_select(cqe.flags()),
            });
        }
    }

    fn wait_fd(&self) -> RawFd {
        self.ring.as_raw_fd()
    }
}
