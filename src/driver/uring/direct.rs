//! Direct descriptors: moving a long-lived socket into a ring's fixed-file table
//! ([`crate::driver::Driver::install`]) and closing a handle, plain or direct, so that a
//! slot is reused only after its CLOSE has completed.

use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use super::{Target, Uring, FIXED, INTERNAL, SLOT_FREED, SQ_ENTRIES_EXTRA};

impl Uring {
    /// [`crate::driver::Driver::install`]: the first ring with a free slot takes `fd`
    /// (opening another ring if the plan allows); `fd` itself if none can.
    pub(super) fn install_direct(&mut self, fd: RawFd) -> RawFd {
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

    /// [`crate::driver::Driver::close`] of handle `fd`: a plain fd at once by syscalls, a
    /// direct descriptor by a CLOSE op whose completion frees the slot.
    pub(super) fn close_handle(&mut self, fd: RawFd, linger: bool) {
        match Self::target(fd) {
            (_, Target::Fd(fd)) => self.close_plain(fd, linger),
            (r, Target::Fixed(slot)) => self.close_fixed(r, slot, linger),
        }
    }

    /// [`crate::driver::Driver::shutdown_write`]: a plain fd by the syscall, a direct
    /// descriptor by a SHUTDOWN op whose completion is internal.
    pub(super) fn shutdown_handle(&mut self, fd: RawFd) {
        match Self::target(fd) {
            // SAFETY: a plain syscall on a socket this shard owns.
            (_, Target::Fd(fd)) => unsafe {
                libc::shutdown(fd, libc::SHUT_WR);
            },
            (r, Target::Fixed(slot)) => {
                let shut = opcode::Shutdown::new(types::Fixed(slot), libc::SHUT_WR)
                    .build()
                    .user_data(INTERNAL);
                self.push(r, shut);
            }
        }
    }

    fn close_plain(&mut self, fd: RawFd, linger: bool) {
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
    }

    fn close_fixed(&mut self, r: usize, slot: u32, linger: bool) {
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
}
