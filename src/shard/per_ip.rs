//! Stage 1b, `--max-conns-per-ip`: a subscriber connection from an address that already
//! holds the limit (all shards together) gets `429 Too Many Requests` with `Retry-After`
//! and a lingering close, like every error reply; its address may connect again once one
//! of its connections has closed.
//!
//! The address is read at accept time (`getpeername` on the fresh socket: once a stream's
//! socket is an io_uring direct descriptor it cannot be asked any more) and counted in the
//! process-wide table ([`crate::admin::per_ip`]). What the close needs to give the count
//! back, the connection's entry in that table, is kept in a side table beside the slab,
//! indexed like it (a `u32` a connection), as `expiry.rs` does for token expiry: the 24-byte
//! record does not grow, its 2 spare bytes could not name one of more than 65,536 addresses.
//! With the limit off nothing here is touched (no syscall, no lock, no page of the side
//! table); with it on, a connection costs 4 bytes more and its accept one `getpeername` and
//! one lock. A socket handed to another shard (placement) stays counted: its entry travels
//! through the table, keyed by the socket.

use std::net::IpAddr;
use std::os::fd::{BorrowedFd, RawFd};

use super::Shard;
use crate::admin::per_ip::NO_ENTRY;
use crate::driver::Driver;
use crate::http::Status;
use crate::stats::ShardStats;

/// Each connection slot's entry in the per-address table ([`NO_ENTRY`]: not counted).
pub(super) struct PerIpSlots {
    /// Indexed by connection slot; reserved (address space) on first use.
    entry: Vec<u32>,
    /// Room to reserve for `entry` on first use (the shard's share of `--max-conns`).
    cap: usize,
}

impl PerIpSlots {
    /// An empty side table for up to `cap` connections (nothing reserved until used).
    pub(super) fn new(cap: usize) -> PerIpSlots {
        PerIpSlots {
            entry: Vec::new(),
            cap,
        }
    }

    /// Records `e` for slot `i`.
    fn set(&mut self, i: u32, e: u32) {
        if self.entry.capacity() == 0 {
            self.entry.reserve_exact(self.cap);
        }
        let i = i as usize;
        if self.entry.len() <= i {
            self.entry.resize(i + 1, NO_ENTRY);
        }
        self.entry[i] = e;
    }

    /// Takes slot `i`'s entry out, leaving it uncounted.
    fn take(&mut self, i: u32) -> u32 {
        match self.entry.get_mut(i as usize) {
            Some(e) => std::mem::replace(e, NO_ENTRY),
            None => NO_ENTRY,
        }
    }
}

/// The peer address of socket `fd` (a plain fd), if it still has one.
fn peer_ip(fd: RawFd) -> Option<IpAddr> {
    // SAFETY: `fd` is an open socket this shard owns for the duration of the call.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let addr = socket2::SockRef::from(&fd).peer_addr().ok()?;
    addr.as_socket().map(|a| a.ip())
}

impl<D: Driver> Shard<D> {
    /// A new subscriber connection `i` (its socket still a plain fd): counted under its
    /// address, or, at the limit, answered 429 and closed (returns false). Always true with
    /// the limit off.
    pub(super) fn per_ip_admit(&mut self, i: u32) -> bool {
        let limit = self.cfg.admin.max_conns_per_ip;
        if limit == 0 {
            return true;
        }
        // A peer already gone has no address: let the head read find out.
        let Some(ip) = peer_ip(self.conns[i].fd) else {
            self.per_ip.set(i, NO_ENTRY);
            return true;
        };
        match self.mesh.per_ip.acquire(ip, limit) {
            Some(e) => {
                self.per_ip.set(i, e);
                ShardStats::add(&self.st().per_ip_conns, 1);
                true
            }
            None => {
                self.per_ip.set(i, NO_ENTRY);
                ShardStats::add(&self.st().per_ip_refused, 1);
                tracing::debug!(shard = self.me, %ip, limit, "per-IP limit: 429");
                self.refuse(i, Status::TooManyRequests);
                false
            }
        }
    }

    /// Subscriber `i` is closing: its address's count goes down.
    pub(super) fn per_ip_release(&mut self, i: u32) {
        if self.cfg.admin.max_conns_per_ip == 0 {
            return;
        }
        let e = self.per_ip.take(i);
        if e != NO_ENTRY {
            self.mesh.per_ip.release(e);
            ShardStats::sub(&self.st().per_ip_conns, 1);
        }
    }

    /// Subscriber `i` (socket `fd`) goes to another shard: its count travels with the
    /// socket.
    pub(super) fn per_ip_hand_off(&mut self, i: u32, fd: RawFd) {
        if self.cfg.admin.max_conns_per_ip == 0 {
            return;
        }
        let e = self.per_ip.take(i);
        if e != NO_ENTRY {
            self.mesh.per_ip.hand(fd, e);
            ShardStats::sub(&self.st().per_ip_conns, 1);
        }
    }

    /// Socket `fd` handed to this shard: its entry, if it was counted (give it to
    /// [`Shard::per_ip_adopted`] or, if the socket is refused, release it).
    pub(super) fn per_ip_take_handed(&mut self, fd: RawFd) -> u32 {
        if self.cfg.admin.max_conns_per_ip == 0 {
            return NO_ENTRY;
        }
        self.mesh.per_ip.take_handed(fd).unwrap_or(NO_ENTRY)
    }

    /// The handed socket with entry `e` is now connection `i` here (or, with `i` `None`,
    /// was refused: its count goes).
    pub(super) fn per_ip_adopted(&mut self, i: Option<u32>, e: u32) {
        if e == NO_ENTRY {
            return;
        }
        match i {
            Some(i) => {
                self.per_ip.set(i, e);
                ShardStats::add(&self.st().per_ip_conns, 1);
            }
            None => self.mesh.per_ip.release(e),
        }
    }
}
