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

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use io_uring::{opcode, squeue, types, IoUring};

use super::{Completion, Driver};

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
        (opcode::Shutdown::CODE, "SHUTDOWN"),
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

/// How many direct-descriptor slots a shard may need, and how they are laid out in rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Slots per ring: min(RLIMIT_NOFILE, 1,048,576, connections).
    pub slots_per_ring: u32,
    /// Rings the shard may open for subscribers (at least 1).
    pub rings: u32,
}

impl Plan {
    /// The plan for `conns` subscribers in one shard under RLIMIT_NOFILE `nofile`.
    pub fn new(conns: usize, nofile: u64) -> Plan {
        let cap = nofile.min(u64::from(KERNEL_MAX_SLOTS)).max(64) as u32;
        let slots_per_ring = (conns.max(1) as u64).min(u64::from(cap)) as u32;
        let rings = (conns.max(1) as u64)
            .div_ceil(u64::from(slots_per_ring))
            .min(1024) as u32;
        Plan {
            slots_per_ring,
            rings,
        }
    }

    /// The plan for this process's soft RLIMIT_NOFILE.
    pub fn for_this_process(conns: usize) -> Plan {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct it is given.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
        Plan::new(conns, rl.rlim_cur)
    }
}

/// One ring and its direct-descriptor slots.
struct Ring {
    ring: IoUring,
    /// Free slots of the fixed-file table (empty for a ring without a table).
    free: Vec<u32>,
    /// Slots registered for the table (0: the ring has none).
    table: u32,
    /// Submissions queued since the last `submit`.
    queued: bool,
}

/// One shard's rings.
pub struct Uring {
    rings: Vec<Ring>,
    plan: Plan,
    /// Epoll set of every ring fd: the shard's wait fd.
    poller: OwnedFd,
    /// Sink for the input discarded before a lingering close of a direct descriptor.
    sink: Box<[u8]>,
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

fn new_ring(entries: u32) -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_cqsize(entries * 16)
        .setup_submit_all()
        .build(entries)
}

impl Uring {
    /// Creates ring 0 with room planned for `plan`. Errors: io_uring_setup or epoll_create
    /// failed (see [`probe`] for the causes).
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
        };
        u.add_ring(SQ_ENTRIES)?;
        Ok(u)
    }

    /// The plan this driver sizes its tables by.
    pub fn plan(&self) -> Plan {
        self.plan
    }

    fn add_ring(&mut self, entries: u32) -> io::Result<usize> {
        let ring = new_ring(entries)?;
        let slots = self.plan.slots_per_ring;
        let (free, table) = match ring.submitter().register_files_sparse(slots) {
            Ok(()) => ((0..slots).rev().collect(), slots),
            Err(e) => {
                tracing::warn!("registering {slots} direct-descriptor slots failed ({e}); this ring keeps plain fds");
                (Vec::new(), 0)
            }
        };
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: self.rings.len() as u64,
        };
        // SAFETY: valid epoll fd, ring fd and event struct.
        if unsafe {
            libc::epoll_ctl(
                self.poller.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                ring.as_raw_fd(),
                &mut ev,
            )
        } < 0
        {
            return Err(io::Error::last_os_error());
        }
        self.rings.push(Ring {
            ring,
            free,
            table,
            queued: false,
        });
        Ok(self.rings.len() - 1)
    }

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

    fn push(&mut self, r: usize, entry: squeue::Entry) {
        let ring = &mut self.rings[r];
        ring.queued = true;
        loop {
            // SAFETY: every entry built by this driver refers to memory whose lifetime the
            // caller guarantees (see the `Driver` method contracts) or to no memory at all.
            if unsafe { ring.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            // The submission queue is full: hand it to the kernel and try again.
            if let Err(e) = ring.ring.submit() {
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

    fn cancel_fd(&mut self, fd: RawFd, token: u64) {
        let (r, t) = Self::target(fd);
        let e = on_target!(t, f => opcode::AsyncCancel2::new(types::CancelBuilder::fd(f).all()).build().user_data(token));
        self.push(r, e);
    }

    fn release_fd(&mut self, _fd: RawFd) {
        // Nothing to undo: a plain fd with no op in flight has no state in the ring.
    }

    fn install(&mut self, fd: RawFd) -> RawFd {
        let r = match self.rings.iter().position(|r| !r.free.is_empty()) {
            Some(r) => r,
            None if (self.rings.len() as u32) < self.plan.rings => {
                match self.add_ring(SQ_ENTRIES_EXTRA) {
                    Ok(r) => {
                        tracing::info!(
                            rings = self.rings.len(),
                            "opened another ring for direct descriptors"
                        );
                        r
                    }
                    Err(e) => {
                        tracing::warn!("cannot open another ring ({e}); keeping plain fds");
                        return fd;
                    }
                }
            }
            None => return fd, // the plan is used up: the connection keeps its plain fd
        };
        let Some(slot) = self.rings[r].free.pop() else {
            return fd;
        };
        match self.rings[r]
            .ring
            .submitter()
            .register_files_update(slot, &[fd])
        {
            Ok(_) => {
                // SAFETY: the table holds its own reference to the socket now.
                unsafe { libc::close(fd) };
                FIXED | ((r as i32) << 20) | slot as i32
            }
            Err(e) => {
                self.rings[r].free.push(slot);
                tracing::warn!("installing a direct descriptor failed ({e}); keeping the plain fd");
                fd
            }
        }
    }

    fn close(&mut self, fd: RawFd, linger: bool) {
        let (r, t) = Self::target(fd);
        let Target::Fixed(slot) = t else {
            // SAFETY: plain syscalls on a socket this shard owns, with no op in flight;
            // MSG_DONTWAIT never blocks.
            unsafe {
                if linger {
                    libc::shutdown(fd, libc::SHUT_WR);
                    for _ in 0..64 {
                        if libc::recv(
                            fd,
                            self.sink.as_mut_ptr().cast(),
                            self.sink.len(),
                            libc::MSG_DONTWAIT,
                        ) <= 0
                        {
                            break;
                        }
                    }
                }
                libc::close(fd);
            }
            return;
        };
        // The slot is released by the CLOSE op below, and only its completion puts it back
        // on the free list: a linked op resolves its fixed file when it is issued (which
        // for SHUTDOWN is later, on io-wq), so a slot freed and reused earlier would see
        // the SHUTDOWN land on the *next* connection in it (seen as streams ending at once).
        let f = types::Fixed(slot);
        if linger {
            // FIN, then one non-blocking read of what is pending, then the close; hard links
            // keep the chain going whatever each step returns.
            let shut = opcode::Shutdown::new(f, libc::SHUT_WR)
                .build()
                .flags(squeue::Flags::IO_HARDLINK)
                .user_data(INTERNAL);
            let ptr = self.sink.as_mut_ptr();
            let len = self.sink.len() as u32;
            let drain = opcode::Recv::new(f, ptr, len)
                .flags(libc::MSG_DONTWAIT)
                .build()
                .flags(squeue::Flags::IO_HARDLINK)
                .user_data(INTERNAL);
            self.push(r, shut);
            self.push(r, drain);
        }
        let close = opcode::Close::new(f)
            .build()
            .user_data(SLOT_FREED | ((r as u64) << 20) | u64::from(slot));
        self.push(r, close);
    }

    fn submit(&mut self) -> io::Result<()> {
        for ring in self.rings.iter_mut().filter(|r| r.queued) {
            ring.queued = false;
            match ring.ring.submit() {
                Ok(_) => {}
                // Busy: completions must be reaped first; the next turn submits again.
                Err(e)
                    if e.raw_os_error() == Some(libc::EBUSY)
                        || e.raw_os_error() == Some(libc::EAGAIN) =>
                {
                    ring.queued = true
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn has_completions(&mut self) -> bool {
        self.rings.iter_mut().any(|r| {
            let mut cq = r.ring.completion();
            cq.sync();
            !cq.is_empty()
        })
    }

    fn reap(&mut self, out: &mut Vec<Completion>) {
        for r in &mut self.rings {
            let mut cq = r.ring.completion();
            cq.sync();
            for cqe in &mut cq {
                let ud = cqe.user_data();
                if ud == INTERNAL {
                    continue;
                }
                if ud & !0xffff_ffff == SLOT_FREED {
                    // The CLOSE of a direct descriptor ran on this ring: its slot is free.
                    if cqe.result() < 0 {
                        tracing::error!(
                            "closing direct descriptor slot {} failed: {}",
                            ud & 0xf_ffff,
                            io::Error::from_raw_os_error(-cqe.result())
                        );
                    }
                    r.free.push((ud & 0xf_ffff) as u32);
                    continue;
                }
                out.push(Completion {
                    token: cqe.user_data(),
                    result: cqe.result(),
                    more: io_uring::cqueue::more(cqe.flags()),
                    buf: io_uring::cqueue::buffer_select(cqe.flags()),
                });
            }
        }
    }

    fn wait_fd(&self) -> RawFd {
        self.poller.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::Plan;

    #[test]
    fn plans() {
        assert_eq!(
            Plan::new(500_000, 20_000),
            Plan {
                slots_per_ring: 20_000,
                rings: 25
            }
        );
        assert_eq!(
            Plan::new(500_000, 1 << 20),
            Plan {
                slots_per_ring: 500_000,
                rings: 1
            }
        );
        assert_eq!(
            Plan::new(5_000, 20_000),
            Plan {
                slots_per_ring: 5_000,
                rings: 1
            }
        );
        assert_eq!(
            Plan::new(2_000_000, u64::MAX),
            Plan {
                slots_per_ring: 1 << 20,
                rings: 2
            }
        );
    }
}
