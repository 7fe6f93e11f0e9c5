//! The io_uring backend of [`Driver`]: raw rings built with the `io-uring` crate beside the
//! shard's tokio-uring runtime (whose own ring has no multishot, poll, cancel or provided
//! buffer support; see DESIGN.md).
//!
//! # Rings and direct descriptors
//! Ring 0 of a shard takes accepts (plain fds), request heads (provided buffers),
//! publishers and the first subscribers. A subscriber that starts streaming is
//! [`Driver::install`]ed: its socket moves into a ring's fixed-file table (a direct
//! descriptor, `io_uring_register(2)` `IORING_REGISTER_FILES_UPDATE`) and its plain fd is
//! closed, so it takes no slot of the process fd table. The kernel caps a ring's table at
//! min(RLIMIT_NOFILE, 1,048,576) slots, so a shard that must hold more subscribers than that
//! opens further rings on demand, up to the plan made from `--max-conns` ([`Plan`]). Every
//! ring's fd sits in one epoll set whose fd is the shard's [`Driver::wait_fd`].
//!
//! A handle names a plain fd (below 2^30) or a direct descriptor:
//! `FIXED | ring << 20 | slot` (1,024 rings of up to 1,048,576 slots).
//!
//! Setup: `SINGLE_ISSUER` (only the shard thread submits), a completion queue 16 times the
//! submission queue so bursts of completions rarely spill to the kernel's overflow list, and
//! no `DEFER_TASKRUN` or `COOP_TASKRUN`: the shard sleeps in epoll on the ring fds, and
//! completions must be posted without the thread entering the ring first.
//!
//! # Files
//! - `plan`: how many rings and slots a shard may use ([`Plan`]).
//! - `ring`: opening rings, queueing entries, submitting, reaping.
//! - `direct`: installing direct descriptors and closing handles.
//!
//! The per-op entries (accept, recv, send, poll, cancel) are built side by side below, in
//! the [`Driver`] impl.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use io_uring::{opcode, squeue, types};

use super::{Completion, Driver};

mod direct;
mod plan;
mod ring;

/// The io_uring probe, at the path `check-system` uses ([`crate::driver::probe`] holds it).
pub use plan::Plan;

/// Submission queue entries of ring 0 (accepts, heads, publishers).
const SQ_ENTRIES: u32 = 4096;
/// Submission queue entries of the extra rings (subscribers only).
const SQ_ENTRIES_EXTRA: u32 = 1024;
/// Handle bit: a direct descriptor.
const FIXED: i32 = 1 << 30;
/// Most slots of one ring's fixed-file table (the kernel's own cap).
const KERNEL_MAX_SLOTS: u32 = 1 << 20;
/// User data of this driver's own ops whose completions callers never see.
const INTERNAL: u64 = u64::MAX;
/// User data tag of the CLOSE of a direct descriptor: its completion frees the slot
/// (`SLOT_FREED | ring << 20 | slot`).
const SLOT_FREED: u64 = 0xffff_fffe << 32;

/// One shard's rings.
pub struct Uring {
    rings: Vec<ring::Ring>,
    plan: Plan,
    /// Epoll set of every ring fd: the shard's wait fd.
    poller: OwnedFd,
    /// Sink for the input discarded before a lingering close of a direct descriptor.
    sink: Box<[u8]>,
    /// The ring the next reap starts at (turns round, see `reap_rings`).
    reap_from: usize,
}

/// Where an op goes: a plain fd or a slot of a ring's table.
#[derive(Clone, Copy)]
enum Target {
    Fd(i32),
    Fixed(u32),
}

/// Builds `$e` with `$t` bound to the right `io_uring::types` target.
macro_rules! on_target {
    ($target:expr, $t:ident => $e:expr) => {
        match $target {
            Target::Fd(fd) => {
                let $t = types::Fd(fd);
                $e
            }
            Target::Fixed(slot) => {
                let $t = types::Fixed(slot);
                $e
            }
        }
    };
}

impl Uring {
    /// Creates ring 0 with room planned for `plan`. Errors: io_uring_setup or epoll_create
    /// failed (see [`probe_uring`](crate::driver::probe::probe_uring) for the causes).
    pub fn new(plan: Plan) -> io::Result<Uring> {
        // SAFETY: plain syscall; the fd returned is owned here.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut u = Uring {
            rings: Vec::new(),
            plan,
            // SAFETY: a fresh fd that nothing else owns.
            poller: unsafe { OwnedFd::from_raw_fd(ep) },
            sink: vec![0; 4096].into_boxed_slice(),
            reap_from: 0,
        };
        u.add_ring(SQ_ENTRIES)?;
        Ok(u)
    }

    /// The plan this driver sizes its tables by.
    pub fn plan(&self) -> Plan {
        self.plan
    }

    /// The ring and target a handle names (see the module doc for the encoding).
    fn target(h: RawFd) -> (usize, Target) {
        if h & FIXED != 0 {
            (
                ((h & !FIXED) >> 20) as usize,
                Target::Fixed((h & 0xf_ffff) as u32),
            )
        } else {
            (0, Target::Fd(h))
        }
    }
}

impl Driver for Uring {
    fn slots_in_use(&self) -> u64 {
        self.rings
            .iter()
            .map(|r| u64::from(r.table) - r.free.len() as u64)
            .sum()
    }

    fn accept_multi(&mut self, listener: RawFd, token: u64) {
        let e = opcode::AcceptMulti::new(types::Fd(listener))
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build()
            .user_data(token);
        self.push(0, e);
    }

    unsafe fn recv(&mut self, fd: RawFd, buf: *mut u8, len: u32, token: u64) {
        let (r, t) = Self::target(fd);
        let e = on_target!(t, f => opcode::Recv::new(f, buf, len).build().user_data(token));
        self.push(r, e);
    }

    unsafe fn recv_now(&mut self, fd: RawFd, buf: *mut u8, len: u32, token: u64) {
        let (r, t) = Self::target(fd);
        let e = on_target!(t, f => opcode::Recv::new(f, buf, len).flags(libc::MSG_DONTWAIT).build().user_data(token));
        self.push(r, e);
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
        self.push(0, e);
    }

    fn recv_select(&mut self, fd: RawFd, group: u16, len: u32, token: u64) {
        // Head buffers belong to ring 0, where connections whose head is read live.
        let (r, t) = Self::target(fd);
        debug_assert_eq!(r, 0);
        let e = on_target!(t, f => opcode::Recv::new(f, std::ptr::null_mut(), len)
            .buf_group(group)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT)
            .user_data(token));
        self.push(r, e);
    }

    fn poll_rdhup(&mut self, fd: RawFd, token: u64) {
        let mask = (libc::POLLIN | libc::POLLRDHUP) as u32;
        let (r, t) = Self::target(fd);
        let e = on_target!(t, f => opcode::PollAdd::new(f, mask).build().user_data(token));
        self.push(r, e);
    }

    unsafe fn send(&mut self, fd: RawFd, buf: *const u8, len: u32, token: u64) {
        let (r, t) = Self::target(fd);
        let e = on_target!(t, f => opcode::Send::new(f, buf, len).flags(libc::MSG_NOSIGNAL).build().user_data(token));
        self.push(r, e);
    }

    unsafe fn send_zc(&mut self, fd: RawFd, buf: *const u8, len: u32, token: u64) {
        // The buffer is the caller's to keep until the notification (see the trait).
        let (r, t) = Self::target(fd);
        let e = on_target!(t, f => opcode::SendZc::new(f, buf, len).flags(libc::MSG_NOSIGNAL).build().user_data(token));
        self.push(r, e);
    }

    unsafe fn sendmsg(&mut self, fd: RawFd, msg: *const libc::msghdr, token: u64) {
        let (r, t) = Self::target(fd);
        let flags = libc::MSG_NOSIGNAL as u32;
        let e =
            on_target!(t, f => opcode::SendMsg::new(f, msg).flags(flags).build().user_data(token));
        self.push(r, e);
    }

    fn sends_zero_copy(&self) -> bool {
        true
    }

    fn cancel_fd(&mut self, fd: RawFd, token: u64) {
        let (r, t) = Self::target(fd);
        let e = on_target!(t, f => opcode::AsyncCancel2::new(types::CancelBuilder::fd(f).all()).build().user_data(token));
        self.push(r, e);
    }

    fn release_fd(&mut self, _fd: RawFd) {
        // Nothing to undo: a plain fd with no op in flight has no state in the ring.
    }

    fn install(&mut self, fd: RawFd) -> RawFd {
        self.install_direct(fd)
    }

    fn close(&mut self, fd: RawFd, linger: bool) {
        self.close_handle(fd, linger)
    }

    fn shutdown_write(&mut self, fd: RawFd) {
        self.shutdown_handle(fd)
    }

    fn submit(&mut self) -> io::Result<()> {
        self.submit_rings()
    }

    fn has_completions(&mut self) -> bool {
        self.rings_have_completions()
    }

    fn reap(&mut self, out: &mut Vec<Completion>) {
        self.reap_rings(out)
    }

    fn wait_fd(&self) -> RawFd {
        self.poller.as_raw_fd()
    }
}
