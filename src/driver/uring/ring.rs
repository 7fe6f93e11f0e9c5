//! The rings of one shard: opening one (and its fixed-file table), queueing entries,
//! submitting, and reaping completions from every ring.

use std::io;
use std::os::fd::AsRawFd;

use io_uring::{squeue, IoUring};

use super::{Uring, INTERNAL, SLOT_FREED};
use crate::driver::{Completion, REAP_BATCH};

/// One ring and its direct-descriptor slots.
pub(super) struct Ring {
    pub(super) ring: IoUring,
    /// Free slots of the fixed-file table (empty for a ring without a table).
    pub(super) free: Vec<u32>,
    /// Slots registered for the table (0: the ring has none).
    pub(super) table: u32,
    /// Submissions queued since the last `submit`.
    pub(super) queued: bool,
}

/// A ring with `entries` submission queue entries; see the module doc of [`super`] for the
/// setup flags.
fn new_ring(entries: u32) -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_cqsize(entries * 16)
        .setup_submit_all()
        .build(entries)
}

impl Uring {
    /// Opens another ring with `entries` submission queue entries and a fixed-file table
    /// of the plan's size, and adds its fd to the wait set. Returns its index. Errors:
    /// io_uring_setup or epoll_ctl failed (a table that cannot be registered is only
    /// logged: the ring then keeps plain fds).
    pub(super) fn add_ring(&mut self, entries: u32) -> io::Result<usize> {
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

    /// Queues `entry` on ring `r`, submitting first if its submission queue is full.
    pub(super) fn push(&mut self, r: usize, entry: squeue::Entry) {
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

    /// [`crate::driver::Driver::submit`]: submits every ring with queued entries.
    pub(super) fn submit_rings(&mut self) -> io::Result<()> {
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

    /// Whether any ring's completion queue holds an entry.
    pub(super) fn rings_have_completions(&mut self) -> bool {
        self.rings.iter_mut().any(|r| {
            let mut cq = r.ring.completion();
            cq.sync();
            !cq.is_empty()
        })
    }

    /// [`crate::driver::Driver::reap`]: moves the rings' completions into `out`, at most
    /// [`REAP_BATCH`] (starting at the next ring each call, so a busy ring 0 does not starve
    /// the others), except this driver's own (internal ops; the CLOSE of a direct
    /// descriptor, which frees its slot here). What is left stays in the completion queues.
    pub(super) fn reap_rings(&mut self, out: &mut Vec<Completion>) {
        let limit = out.len() + REAP_BATCH;
        let n = self.rings.len();
        let first = self.reap_from % n.max(1);
        self.reap_from = first + 1;
        for k in 0..n {
            let r = &mut self.rings[(first + k) % n];
            let mut cq = r.ring.completion();
            cq.sync();
            while out.len() < limit {
                // Taking an entry advances the queue's head; an entry not taken stays.
                let Some(cqe) = cq.next() else { break };
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
}
