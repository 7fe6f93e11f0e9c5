//! Readiness: registering a fd's pending interests (one-shot), waiting for events, and
//! running the op each event unblocks: one function per read kind (accept, recv,
//! recv-select, poll) and one for a blocked send.
//!
//! Source: epoll(7), epoll_ctl(2), recv(2), send(2), accept4(2).

use std::os::fd::{AsRawFd, RawFd};

use super::{errno, Epoll, Read, ACCEPT_BATCH, EVENTS};

/// The length that marks a blocked send as a sendmsg (its pointer is the msghdr): no send
/// is 4 GiB long (output is bounded far below).
pub(super) const SENDMSG: u32 = u32::MAX;

impl Epoll {
    /// Registers the fd's current interests (one-shot), or removes it if it has none.
    pub(super) fn arm(&mut self, fd: RawFd) {
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
            self.fail_pending(fd, errno());
            return;
        }
        self.ops(fd).registered = true;
    }

    /// Completes every pending op of `fd` with `-e` (its registration failed).
    fn fail_pending(&mut self, fd: RawFd, e: i32) {
        let ops = *self.ops(fd);
        if ops.read != Read::None {
            self.ops(fd).read = Read::None;
            self.done(ops.read_token, -e, false, None);
        }
        if let Some((token, _, _)) = self.sends.remove(&fd) {
            self.ops(fd).write = false;
            self.done(token, -e, false, None);
        }
    }

    /// Runs the pending read-side op of `fd`; returns false if it would still block.
    pub(super) fn try_read(&mut self, fd: RawFd, revents: u32) -> bool {
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
            Read::Accept => self.try_accept(fd, token),
            Read::Recv => self.try_recv(fd, token),
            Read::RecvSelect => self.try_recv_select(fd, token),
        }
    }

    /// Accepts up to [`ACCEPT_BATCH`] connections on listener `fd`, one completion each.
    fn try_accept(&mut self, fd: RawFd, token: u64) -> bool {
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

    /// A plain recv into the caller's buffer.
    fn try_recv(&mut self, fd: RawFd, token: u64) -> bool {
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

    /// A recv into a provided buffer, taken only if bytes arrived (`-ENOBUFS` if none is left).
    fn try_recv_select(&mut self, fd: RawFd, token: u64) -> bool {
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

    /// Runs the blocked send of `fd`; returns false if it would still block.
    pub(super) fn try_write(&mut self, fd: RawFd) -> bool {
        let Some(&(token, ptr, len)) = self.sends.get(&fd) else {
            return true;
        };
        // SAFETY: the caller keeps buf[..len] valid until the completion (Driver::send),
        // or, for a blocked sendmsg, the msghdr and what it names (Driver::sendmsg).
        let r = unsafe {
            if len == SENDMSG {
                libc::sendmsg(
                    fd,
                    ptr as *const libc::msghdr,
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            } else {
                libc::send(
                    fd,
                    ptr as *const libc::c_void,
                    len as usize,
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            }
        };
        if r < 0 && errno() == libc::EAGAIN {
            return false;
        }
        self.sends.remove(&fd);
        self.ops(fd).write = false;
        self.done(token, if r < 0 { -errno() } else { r as i32 }, false, None);
        true
    }

    /// Takes the ready events (waiting at most `timeout_ms`) and runs the ops they unblock.
    pub(super) fn wait(&mut self, timeout_ms: i32) {
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
