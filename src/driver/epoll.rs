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

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::{Completion, Driver};

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

    /// Registers the fd's current interests (one-shot), or removes it if it has none.
    fn arm(&mut self, fd: RawFd) {
        let ops = *self.ops(fd);
        let mut events = 0u32;
        match ops.read {
            Read::None => {}
            Read::Poll => events |= (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            _ => events |= libc::EPOLLIN as u32,
        }
        if ops.write {
            events |= libc::EPOLLOUT as u32;
        }
        if events == 0 {
            return; // one-shot: a fired registration is already disarmed
        }
        let mut ev = libc::epoll_event {
            events: events | libc::EPOLLONESHOT as u32,
            u64: fd as u64,
        };
        let op = if ops.registered {
            libc::EPOLL_CTL_MOD
        } else {
            libc::EPOLL_CTL_ADD
        };
        // SAFETY: valid epoll fd and event struct.
        let mut r = unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), op, fd, &mut ev) };
        if r < 0 && errno() == libc::ENOENT {
            // The fd was closed and its number reused since it was registered.
            r = unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        }
        if r < 0 {
            let e = errno();
            let ops = *self.ops(fd);
            if ops.read != Read::None {
                self.ops(fd).read = Read::None;
                self.done(ops.read_token, -e, false, None);
            }
            if let Some((token, _, _)) = self.sends.remove(&fd) {
                self.ops(fd).write = false;
                self.done(token, -e, false, None);
            }
            return;
        }
        self.ops(fd).registered = true;
    }

    /// Runs the pending read-side op of `fd`; returns false if it would still block.
    fn try_read(&mut self, fd: RawFd, revents: u32) -> bool {
        let ops = *self.ops(fd);
        let token = ops.read_token;
        match ops.read {
            Read::None => true,
            Read::Poll => {
                // epoll's EPOLLIN/RDHUP/HUP/ERR bits equal poll(2)'s POLLIN/RDHUP/HUP/ERR.
                self.ops(fd).read = Read::None;
                self.done(token, revents as i32, false, None);
                true
            }
            Read::Accept => {
                for _ in 0..ACCEPT_BATCH {
                    // SAFETY: plain syscall; the new fd becomes the shard's.
                    let r = unsafe {
                        libc::accept4(
                            fd,
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        )
                    };
                    if r >= 0 {
                        self.done(token, r, true, None);
                        continue;
                    }
                    let e = errno();
                    if e == libc::EAGAIN || e == libc::EINTR || e == libc::ECONNABORTED {
                        return false; // stays armed, like a multishot accept
                    }
                    self.ops(fd).read = Read::None;
                    self.done(token, -e, false, None);
                    return true;
                }
                false
            }
            Read::Recv => {
                let (ptr, len) = self.recvs[&fd];
                // SAFETY: the caller keeps buf[..len] valid until the completion (Driver::recv).
                let r = unsafe {
                    libc::recv(
                        fd,
                        ptr as *mut libc::c_void,
                        len as usize,
                        libc::MSG_DONTWAIT,
                    )
                };
                if r < 0 && errno() == libc::EAGAIN {
                    return false;
                }
                let res = if r < 0 { -errno() } else { r as i32 };
                self.recvs.remove(&fd);
                self.ops(fd).read = Read::None;
                self.done(token, res, false, None);
                true
            }
            Read::RecvSelect => {
                let len = self.select_len.get(&fd).copied().unwrap_or(0);
                let Some(at) = self.provided.len().checked_sub(1) else {
                    self.select_len.remove(&fd);
                    self.ops(fd).read = Read::None;
                    self.done(token, -libc::ENOBUFS, false, None);
                    return true;
                };
                let (_, ptr, blen, bid) = self.provided[at];
                // SAFETY: a provided buffer is ours to fill until handed back in a completion.
                let r = unsafe {
                    libc::recv(
                        fd,
                        ptr as *mut libc::c_void,
                        blen.min(len) as usize,
                        libc::MSG_DONTWAIT,
                    )
                };
                if r < 0 && errno() == libc::EAGAIN {
                    return false;
                }
                self.select_len.remove(&fd);
                self.ops(fd).read = Read::None;
                if r > 0 {
                    self.provided.swap_remove(at);
                    self.done(token, r as i32, false, Some(bid));
                } else {
                    self.done(token, if r < 0 { -errno() } else { 0 }, false, None);
                }
                true
            }
        }
    }

    /// Runs the blocked send of `fd`; returns false if it would still block.
    fn try_write(&mut self, fd: RawFd) -> bool {
        let Some(&(token, ptr, len)) = self.sends.get(&fd) else {
            return true;
        };
        // SAFETY: the caller keeps buf[..len] valid until the completion (Driver::send).
        let r = unsafe {
            libc::send(
                fd,
                ptr as *const libc::c_void,
                len as usize,
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if r < 0 && errno() == libc::EAGAIN {
            return false;
        }
        self.sends.remove(&fd);
        self.ops(fd).write = false;
        self.done(token, if r < 0 { -errno() } else { r as i32 }, false, None);
        true
    }

    fn set_read(&mut self, fd: RawFd, read: Read, token: u64) {
        let ops = self.ops(fd);
        ops.read = read;
        ops.read_token = token;
        if !self.try_read(fd, 0) {
            self.arm(fd);
        }
    }

    fn wait(&mut self, timeout_ms: i32) {
        // SAFETY: `events` is a live buffer of EVENTS entries.
        let n = unsafe {
            libc::epoll_wait(
                self.ep.as_raw_fd(),
                self.events.as_mut_ptr(),
                EVENTS as i32,
                timeout_ms,
            )
        };
        for k in 0..n.max(0) as usize {
            let ev = self.events[k];
            let fd = ev.u64 as RawFd;
            let revents = ev.events;
            let mut blocked = false;
            let read_events =
                (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
            if self.ops(fd).read != Read::None {
                blocked |= revents & read_events == 0 || !self.try_read(fd, revents & read_events);
            }
            if self.ops(fd).write {
                blocked |= !self.try_write(fd);
            }
            // One-shot fired: re-arm whatever is still pending.
            if blocked || self.ops(fd).read != Read::None || self.ops(fd).write {
                self.arm(fd);
            }
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
        if ops.registered {
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
        self.wait(0);
        out.extend(self.ready.drain(..));
    }

    fn wait_fd(&self) -> RawFd {
        self.ep.as_raw_fd()
    }
}
