//! The epoll baseline backend of [`Driver`]: the same completion interface built on
//! readiness, for kernels or sandboxes without io_uring and as the yardstick the io_uring
//! backend is measured against (`loadtest compare`).
//!
//! It is meant to be an honest baseline, not a strawman: like io_uring, it first tries every
//! recv and send inline at submission and only waits for readiness when the socket would
//! block; each fd has one `EPOLLONESHOT` registration that carries the union of its pending
//! ops' interests; accept drains the backlog in batches; a connection waiting for its
//! request head holds no buffer (the provided-buffer group is emulated: a buffer is taken
//! only when bytes are there). Per fd it keeps 16 bytes of op state in a table indexed by
//! fd; buffers of pending plain recvs and blocked sends sit in small side maps, since only
//! publishers and slow readers have them.
//!
//! Source: epoll(7), recv(2), send(2), accept4(2).
//!
//! # Files
//! - this file: the per-fd op state and the [`Driver`] ops, each tried inline first.
//! - `ready`: one-shot registration, `epoll_wait`, and the op each event unblocks.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{Completion, Driver, REAP_BATCH};

mod ready;

/// Accepts taken per readiness event before other fds get a turn.
const ACCEPT_BATCH: usize = 64;
/// Events taken per `epoll_wait`.
const EVENTS: usize = 1024;

/// What a fd's pending read-side op is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Read {
    None,
    Accept,
    Recv,
    RecvSelect,
    Poll,
}

/// Op state of one fd: 16 bytes.
#[derive(Debug, Clone, Copy)]
struct FdOps {
    read_token: u64,
    read: Read,
    /// A send is waiting for EPOLLOUT (its buffer is in `sends`).
    write: bool,
    /// The fd is in the epoll set.
    registered: bool,
}

impl FdOps {
    const IDLE: FdOps = FdOps {
        read_token: 0,
        read: Read::None,
        write: false,
        registered: false,
    };
}

/// One shard's epoll instance.
pub struct Epoll {
    ep: OwnedFd,
    ready: VecDeque<Completion>,
    fds: Vec<FdOps>,
    /// Buffers of pending plain recvs: fd -> (ptr, len).
    recvs: HashMap<RawFd, (usize, u32)>,
    /// Blocked sends: fd -> (token, ptr, len).
    sends: HashMap<RawFd, (u64, usize, u32)>,
    /// Provided buffers: (group, ptr, len, id).
    provided: Vec<(u16, usize, u32, u16)>,
    select_len: HashMap<RawFd, u32>,
    events: Vec<libc::epoll_event>,
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

impl Epoll {
    /// Creates the epoll instance. Errors: epoll_create1 failed.
    pub fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall; the fd returned is owned here.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll {
            // SAFETY: a fresh fd that nothing else owns.
            ep: unsafe { OwnedFd::from_raw_fd(fd) },
            ready: VecDeque::new(),
            fds: Vec::new(),
            recvs: HashMap::new(),
            sends: HashMap::new(),
            provided: Vec::new(),
            select_len: HashMap::new(),
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS],
        })
    }

    fn ops(&mut self, fd: RawFd) -> &mut FdOps {
        let i = fd as usize;
        if i >= self.fds.len() {
            self.fds.resize(i + 1, FdOps::IDLE);
        }
        &mut self.fds[i]
    }

    fn done(&mut self, token: u64, result: i32, more: bool, buf: Option<u16>) {
        self.ready.push_back(Completion {
            token,
            result,
            more,
            buf,
        });
    }

    fn set_read(&mut self, fd: RawFd, read: Read, token: u64) {
        let ops = self.ops(fd);
        ops.read = read;
        ops.read_token = token;
        if !self.try_read(fd, 0) {
            self.arm(fd);
        }
    }
}

impl Driver for Epoll {
    fn accept_multi(&mut self, listener: RawFd, token: u64) {
        self.set_read(listener, Read::Accept, token);
    }

    unsafe fn recv(&mut self, fd: RawFd, buf: *mut u8, len: u32, token: u64) {
        self.recvs.insert(fd, (buf as usize, len));
        self.set_read(fd, Read::Recv, token);
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
        for k in 0..nbufs {
            self.provided.push((
                group,
                addr as usize + usize::from(k) * len as usize,
                len,
                bid + k,
            ));
        }
        self.done(token, 0, false, None);
    }

    fn recv_select(&mut self, fd: RawFd, _group: u16, len: u32, token: u64) {
        // One group is used per shard, so the group id needs no lookup.
        self.select_len.insert(fd, len);
        self.set_read(fd, Read::RecvSelect, token);
    }

    fn poll_rdhup(&mut self, fd: RawFd, token: u64) {
        let ops = self.ops(fd);
        ops.read = Read::Poll;
        ops.read_token = token;
        // EPOLL_CTL_ADD/MOD report a condition that already holds, so no inline check.
        self.arm(fd);
    }

    unsafe fn send(&mut self, fd: RawFd, buf: *const u8, len: u32, token: u64) {
        let r = libc::send(
            fd,
            buf as *const libc::c_void,
            len as usize,
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        );
        if r >= 0 {
            return self.done(token, r as i32, false, None);
        }
        let e = errno();
        if e != libc::EAGAIN {
            return self.done(token, -e, false, None);
        }
        self.sends.insert(fd, (token, buf as usize, len));
        self.ops(fd).write = true;
        self.arm(fd);
    }

    unsafe fn sendmsg(&mut self, fd: RawFd, msg: *const libc::msghdr, token: u64) {
        let r = libc::sendmsg(fd, msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT);
        if r >= 0 {
            return self.done(token, r as i32, false, None);
        }
        let e = errno();
        if e != libc::EAGAIN {
            return self.done(token, -e, false, None);
        }
        // Blocked: `len` SENDMSG marks the pointer as the msghdr (see `try_write`).
        self.sends.insert(fd, (token, msg as usize, ready::SENDMSG));
        self.ops(fd).write = true;
        self.arm(fd);
    }

    fn cancel_fd(&mut self, fd: RawFd, token: u64) {
        let ops = *self.ops(fd);
        let mut n = 0;
        if ops.read != Read::None {
            self.recvs.remove(&fd);
            self.select_len.remove(&fd);
            self.done(ops.read_token, -libc::ECANCELED, false, None);
            n += 1;
        }
        if let Some((t, _, _)) = self.sends.remove(&fd) {
            self.done(t, -libc::ECANCELED, false, None);
            n += 1;
        }
        // Nothing is pending on `fd` now: drop its registration and op state.
        self.release_fd(fd);
        self.done(token, if n == 0 { -libc::ENOENT } else { n }, false, None);
    }

    fn release_fd(&mut self, fd: RawFd) {
        if self.ops(fd).registered {
            // SAFETY: valid epoll fd; a null event is allowed for DEL.
            unsafe {
                libc::epoll_ctl(
                    self.ep.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    fd,
                    std::ptr::null_mut(),
                )
            };
        }
        *self.ops(fd) = FdOps::IDLE;
    }

    fn install(&mut self, fd: RawFd) -> RawFd {
        fd
    }

    fn close(&mut self, fd: RawFd, linger: bool) {
        self.release_fd(fd);
        // SAFETY: plain syscalls on a socket this shard owns, with no op pending on it;
        // MSG_DONTWAIT never blocks.
        unsafe {
            if linger {
                let mut sink = [0u8; 1024];
                libc::shutdown(fd, libc::SHUT_WR);
                for _ in 0..64 {
                    if libc::recv(fd, sink.as_mut_ptr().cast(), sink.len(), libc::MSG_DONTWAIT) <= 0
                    {
                        break;
                    }
                }
            }
            libc::close(fd);
        }
    }

    fn shutdown_write(&mut self, fd: RawFd) {
        // SAFETY: a plain syscall on a socket this shard owns.
        unsafe { libc::shutdown(fd, libc::SHUT_WR) };
    }

    unsafe fn recv_now(&mut self, fd: RawFd, buf: *mut u8, len: u32, token: u64) {
        let r = libc::recv(fd, buf.cast(), len as usize, libc::MSG_DONTWAIT);
        self.done(token, if r < 0 { -errno() } else { r as i32 }, false, None);
    }

    fn submit(&mut self) -> io::Result<()> {
        Ok(()) // every op was issued (or registered) when it was made
    }

    fn has_completions(&mut self) -> bool {
        if self.ready.is_empty() {
            self.wait(0);
        }
        !self.ready.is_empty()
    }

    fn reap(&mut self, out: &mut Vec<Completion>) {
        if self.ready.len() < REAP_BATCH {
            self.wait(0);
        }
        let n = self.ready.len().min(REAP_BATCH);
        out.extend(self.ready.drain(..n));
    }

    fn wait_fd(&self) -> RawFd {
        self.ep.as_raw_fd()
    }

    fn release_idle(&mut self) -> bool {
        // Sends that complete at once queue their completion here, so a fan-out to 15,000
        // subscribers in one turn grows the queue to 15,000 entries (360 KB), kept.
        if self.ready.is_empty() && self.ready.capacity() > REAP_BATCH {
            self.ready = VecDeque::new();
            return true;
        }
        false
    }
}
