//! The load tester's io_uring receive path: one ring per subscriber thread, one multishot
//! `RECV` per stream into a provided-buffer ring, and waits that batch completions.
//!
//! Why (measured in `loadtest/runs/2026-11-29-vm/summary.md`, friends fan-out): on loopback
//! the kernel charges the receiver's TCP work *and its wake-up* to the sending core, so a load
//! tester that sleeps in `epoll_wait` and is woken by every delivery makes the server pay an
//! inter-processor wake-up per message (a VM exit here), and pays an `epoll_wait` plus a
//! `recv` syscall per delivery itself. This ring is set up with `IORING_SETUP_DEFER_TASKRUN`:
//! a delivery only queues task work on the ring, and the thread is woken once `batch`
//! completions are ready or `min_wait_us` after the first one (`IORING_FEAT_MIN_TIMEOUT`,
//! Linux 6.12), whichever comes first; the receives then run in this thread, many per
//! `io_uring_enter`. A delivery's measured latency includes that wait, so the bound is kept
//! small (100 us by default).
//!
//! Sources: io_uring_setup(2) (`DEFER_TASKRUN`, `SINGLE_ISSUER`), io_uring_enter(2)
//! (`IORING_ENTER_EXT_ARG`, `min_wait_usec`), io_uring_register_buf_ring(3),
//! io_uring_prep_recv_multishot(3).

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::types::{BufRingEntry, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, types, IoUring};

/// The provided-buffer group id of the ring's buffers.
const BGID: u16 = 0;
/// A user_data that is not a stream (cancels).
const CANCEL: u64 = u64::MAX;

/// How the receive ring is sized and waits.
#[derive(Debug, Clone, Copy)]
pub struct RecvConfig {
    /// Provided buffers (a power of two, at most 32,768).
    pub buffers: u16,
    /// Bytes per buffer; a longer read continues in the next buffer.
    pub buffer_bytes: u32,
    /// Completions a wait asks for before it returns.
    pub batch: u32,
    /// Microseconds after the first completion that a wait returns with fewer than `batch`.
    pub min_wait_us: u32,
}

impl Default for RecvConfig {
    fn default() -> RecvConfig {
        RecvConfig {
            buffers: 4096,
            buffer_bytes: 1024,
            batch: 64,
            min_wait_us: 100,
        }
    }
}

/// What one completion said about stream `token`.
#[derive(Debug)]
pub enum Got<'a> {
    /// The next bytes of the stream.
    Data(&'a [u8]),
    /// The peer closed its side (a read of 0).
    End,
    /// The receive failed (`-errno` from the completion, e.g. ECONNRESET).
    Error(io::Error),
}

/// A ring receiving on many streams. Not `Send`: it must be used by the thread that made it
/// (`SINGLE_ISSUER`).
pub struct RecvRing {
    ring: IoUring,
    cfg: RecvConfig,
    /// `buffers * buffer_bytes` bytes the kernel reads into.
    bufs: Box<[u8]>,
    /// The buffer ring shared with the kernel: `buffers` entries of 16 bytes, page aligned.
    br: *mut BufRingEntry,
    br_layout: Layout,
    tail: u16,
    /// The socket of each token, to re-arm a multishot receive the kernel ended early.
    fds: Vec<RawFd>,
    /// Multishot receives re-armed because the provided buffers ran out.
    pub rearmed: u64,
}

impl RecvRing {
    /// A ring for tokens `0..streams`. Errors: io_uring_setup failed (no io_uring, or a kernel
    /// before 6.1 for `DEFER_TASKRUN`), or the buffer ring could not be registered (before
    /// 5.19).
    pub fn new(streams: usize, cfg: RecvConfig) -> io::Result<RecvRing> {
        assert!(cfg.buffers.is_power_of_two() && cfg.buffers <= 1 << 15);
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(32_768)
            .build(1024)?;
        let n = usize::from(cfg.buffers);
        let bufs = vec![0u8; n * cfg.buffer_bytes as usize].into_boxed_slice();
        let br_layout = Layout::from_size_align(n * std::mem::size_of::<BufRingEntry>(), 4096)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: a non-zero size; freed in Drop with the same layout.
        let br = unsafe { alloc_zeroed(br_layout) }.cast::<BufRingEntry>();
        if br.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut r = RecvRing {
            ring,
            cfg,
            bufs,
            br,
            br_layout,
            tail: 0,
            fds: vec![-1; streams],
            rearmed: 0,
        };
        // SAFETY: `br` is page aligned, `buffers` entries long, and outlives the registration
        // (Drop unregisters it before freeing).
        unsafe {
            r.ring
                .submitter()
                .register_buf_ring_with_flags(br as u64, cfg.buffers, BGID, 0)?
        };
        for bid in 0..cfg.buffers {
            r.give_back(bid);
        }
        Ok(r)
    }

    /// Puts buffer `bid` back in the kernel's ring.
    fn give_back(&mut self, bid: u16) {
        let mask = self.cfg.buffers - 1;
        let len = self.cfg.buffer_bytes;
        let addr = self.bufs.as_ptr() as u64 + u64::from(bid) * u64::from(len);
        // SAFETY: the index is masked into the ring; the entry is not the kernel's until the
        // tail moves past it.
        unsafe {
            let e = &mut *self.br.add(usize::from(self.tail & mask));
            e.set_addr(addr);
            e.set_len(len);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field overlays entry 0's last 2 bytes (io_uring_buf_ring), which
        // the kernel reads; published with release so the entry is visible first.
        unsafe {
            let t = BufRingEntry::tail(self.br).cast_mut();
            AtomicU16::from_ptr(t).store(self.tail, Ordering::Release);
        }
    }

    /// Starts receiving on `fd` (a connected, non-blocking socket that stays open until
    /// [`RecvRing::stop`] or the end of the stream) as `token`.
    pub fn arm(&mut self, fd: RawFd, token: usize) -> io::Result<()> {
        self.fds[token] = fd;
        let e = opcode::RecvMulti::new(types::Fd(fd), BGID)
            .build()
            .user_data(token as u64);
        self.push(e)
    }

    /// Cancels the receive of `token` (before its socket is closed).
    pub fn stop(&mut self, token: usize) -> io::Result<()> {
        self.fds[token] = -1;
        let e = opcode::AsyncCancel::new(token as u64)
            .build()
            .user_data(CANCEL);
        self.push(e)
    }

    fn push(&mut self, e: io_uring::squeue::Entry) -> io::Result<()> {
        // SAFETY: the entry points at nothing of ours but the buffer ring.
        while unsafe { self.ring.submission().push(&e) }.is_err() {
            self.ring.submit()?;
        }
        Ok(())
    }

    /// Submits what is queued and waits up to `timeout` for `batch` completions (fewer once
    /// `min_wait_us` has passed since the first), then hands each to `f` as (token, what).
    /// A zero `timeout` only runs the receives already due.
    pub fn wait(&mut self, timeout: Duration, mut f: impl FnMut(usize, Got<'_>)) -> io::Result<()> {
        let ts = Timespec::new()
            .sec(timeout.as_secs())
            .nsec(timeout.subsec_nanos());
        let args = SubmitArgs::new()
            .min_wait_usec(self.cfg.min_wait_us)
            .timespec(&ts);
        let want = if timeout.is_zero() { 1 } else { self.cfg.batch as usize };
        match self.ring.submitter().submit_with_args(want, &args) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {}
            Err(e) => return Err(e),
        }
        loop {
            let Some(cqe) = self.ring.completion().next() else {
                return Ok(());
            };
            let token = cqe.user_data();
            if token == CANCEL {
                continue;
            }
            let token = token as usize;
            let (res, flags) = (cqe.result(), cqe.flags());
            let more = cqueue::more(flags);
            if let Some(bid) = cqueue::buffer_select(flags) {
                if res > 0 {
                    let at = usize::from(bid) * self.cfg.buffer_bytes as usize;
                    f(token, Got::Data(&self.bufs[at..at + res as usize]));
                }
                self.give_back(bid);
            }
            if more || self.fds[token] < 0 {
                continue;
            }
            match res {
                0 => f(token, Got::End),
                r if r == -libc::ENOBUFS || r > 0 => {
                    // The kernel ended the multishot early (buffers ran out, or a full CQ):
                    // the data not read is still in the socket.
                    self.rearmed += 1;
                    self.arm(self.fds[token], token)?;
                }
                r if r == -libc::ECANCELED => {}
                r => f(token, Got::Error(io::Error::from_raw_os_error(-r))),
            }
        }
    }
}

impl Drop for RecvRing {
    fn drop(&mut self) {
        // No receive may pick a buffer once the ring's memory is gone.
        let _ = self.ring.submitter().unregister_buf_ring(BGID);
        // SAFETY: allocated in `new` with this layout, unregistered above.
        unsafe { dealloc(self.br.cast(), self.br_layout) };
    }
}
