//! `--max-conns-per-ip`: the subscriber connections each source address holds, counted
//! across every shard in one table behind a lock ([`PerIp`]).
//!
//! The table holds one entry per active address (its count), none per connection: a shard
//! keeps the entry number of each counted connection in a side table of its own
//! (`shard::per_ip`, 4 bytes a connection, only with the limit on). The lock is taken on a
//! subscriber's accept and close, and on a hand-off between shards, only with the limit on;
//! nothing on a message's path takes it. Why one locked table rather than a table per shard:
//! a per-shard count cannot enforce a process-wide limit without asking the other shards
//! (a mesh round trip per accept, delaying the head), while the lock is held for one hash
//! lookup (tens of nanoseconds), so two shards accepting at full rate keep it free almost all
//! the time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard};

/// No entry: a connection that is not counted.
pub const NO_ENTRY: u32 = u32::MAX;

/// The per-address connection counts of the whole process.
#[derive(Default)]
pub struct PerIp {
    inner: Mutex<Inner>,
}

/// The table under the lock.
#[derive(Default)]
struct Inner {
    /// Address -> its entry in `entries`.
    index: HashMap<IpAddr, u32, ahash::RandomState>,
    /// Per entry: the address and its connections (0: free, listed in `free`).
    entries: Vec<(IpAddr, u32)>,
    /// Free entries.
    free: Vec<u32>,
    /// Connections being handed from one shard to another (socket -> entry): counted, and
    /// in no shard's side table until the receiving shard takes them.
    handed: HashMap<RawFd, u32, ahash::RandomState>,
}

impl PerIp {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic under the lock leaves the counts consistent (each change is one step).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one more connection from `addr` (IPv4-mapped IPv6 counts as the IPv4
    /// address) unless it already holds `limit`; returns its entry (give it back to
    /// [`PerIp::release`]), or `None` at the limit.
    pub fn acquire(&self, addr: IpAddr, limit: u32) -> Option<u32> {
        let addr = addr.to_canonical();
        let mut t = self.lock();
        if let Some(&e) = t.index.get(&addr) {
            let count = &mut t.entries[e as usize].1;
            if *count >= limit {
                return None;
            }
            *count += 1;
            return Some(e);
        }
        if limit == 0 {
            return None;
        }
        let e = match t.free.pop() {
            Some(e) => {
                t.entries[e as usize] = (addr, 1);
                e
            }
            None => {
                t.entries.push((addr, 1));
                (t.entries.len() - 1) as u32
            }
        };
        t.index.insert(addr, e);
        Some(e)
    }

    /// One connection of entry `e` closed; the entry goes once its count is 0.
    pub fn release(&self, e: u32) {
        let mut t = self.lock();
        let (addr, count) = &mut t.entries[e as usize];
        *count -= 1;
        if *count == 0 {
            let addr = *addr;
            t.index.remove(&addr);
            t.free.push(e);
        }
    }

    /// Socket `fd`, counted under entry `e`, goes to another shard ([`PerIp::take_handed`]).
    pub fn hand(&self, fd: RawFd, e: u32) {
        self.lock().handed.insert(fd, e);
    }

    /// The entry socket `fd` was handed over with, if it was counted.
    pub fn take_handed(&self, fd: RawFd) -> Option<u32> {
        self.lock().handed.remove(&fd)
    }

    /// Addresses with at least one counted connection, and connections counted.
    pub fn totals(&self) -> (u64, u64) {
        let t = self.lock();
        let conns = t
            .index
            .values()
            .map(|&e| u64::from(t.entries[e as usize].1));
        (t.index.len() as u64, conns.sum())
    }
}

#[cfg(test)]
mod tests {
    use super::PerIp;
    use std::net::IpAddr;

    #[test]
    fn counts_per_address_and_frees_entries() {
        let t = PerIp::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let e1 = t.acquire(a, 2).unwrap();
        let e2 = t.acquire(mapped, 2).unwrap();
        assert_eq!(e1, e2, "IPv4-mapped IPv6 is the same address");
        assert_eq!(t.acquire(a, 2), None, "the third from one address");
        let eb = t.acquire(b, 2).unwrap();
        assert_eq!(t.totals(), (2, 3));
        t.release(e1);
        assert_eq!(t.acquire(a, 2), Some(e1), "room again after a close");
        t.release(e1);
        t.release(e1);
        t.release(eb);
        assert_eq!(t.totals(), (0, 0));
        // Entries are reused.
        assert!(t.acquire(b, 1).unwrap() <= 1);
        assert_eq!(
            t.acquire(a, 0),
            None,
            "limit 0 on a new address admits none"
        );
        t.hand(7, e1);
        assert_eq!(t.take_handed(7), Some(e1));
        assert_eq!(t.take_handed(7), None);
    }
}
