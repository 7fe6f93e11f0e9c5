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
pub(crate) struct RecvConfig {
    /// Provided buffers (a power of two, at most 32,768).
    pub(crate) buffers: u16,
    /// Bytes per buffer; a longer read continues in the next buffer.
    pub(crate) buffer_bytes: u32,
    /// Completions a wait asks for before it returns.
    pub(crate) batch: u32,
    /// Microseconds after the first completion that a wait returns with fewer than `batch`;
    /// 0: every wait returns at the first completion.
    pub(crate) min_wait_us: u32,
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
pub(crate) enum Got<'a> {
    /// The next bytes of the stream.
    Data(&'a [u8]),
    /// The peer closed its side (a read of 0).
    End,
    /// The receive failed (`-errno` from the completion, e.g. ECONNRESET).
    Error(io::Error),
}

/// A ring receiving on many streams. Not `Send`: it must be used by the thread that made it
/// (`SINGLE_ISSUER`).
pub(crate) struct RecvRing {
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
    pub(crate) rearmed: u64,
}

impl RecvRing {
    /// A ring for tokens `0..streams`. Errors: io_uring_setup failed (no io_uring, or a kernel
    /// before 6.1 for `DEFER_TASKRUN`), or the buffer ring could not be registered (before
    /// 5.19).
    pub(crate) fn new(streams: usize, cfg: RecvConfig) -> io::Result<RecvRing> {
        assert!(cfg.buffers.is_power_of_two() && cfg.buffers <= 1 << 15);
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(32_768)
            .build(1024)?;
        if !ring.params().is_feature_min_timeout() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no IORING_FEAT_MIN_TIMEOUT (Linux 6.12) for batched waits",
            ));
        }
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
    pub(crate) fn arm(&mut self, fd: RawFd, token: usize) -> io::Result<()> {
        self.fds[token] = fd;
        let e = opcode::RecvMulti::new(types::Fd(fd), BGID)
            .build()
            .user_data(token as u64);
        self.push(e)
    }

    /// Cancels the receive of `token` (before its socket is closed).
    pub(crate) fn stop(&mut self, token: usize) -> io::Result<()> {
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
    pub(crate) fn wait(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(usize, Got<'_>),
    ) -> io::Result<()> {
        let ts = Timespec::new()
            .sec(timeout.as_secs())
            .nsec(timeout.subsec_nanos());
        // A zero timeout or min wait asks for one completion: nothing is held back.
        let batched = !timeout.is_zero() && self.cfg.min_wait_us > 0;
        let args = SubmitArgs::new()
            .min_wait_usec(if batched { self.cfg.min_wait_us } else { 0 })
            .timespec(&ts);
        let want = if batched { self.cfg.batch as usize } else { 1 };
        match self.ring.submitter().submit_with_args(want, &args) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
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
                // A stopped stream's last bytes (read before the cancel landed) are dropped.
                if res > 0 && self.fds[token] >= 0 {
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

#[cfg(test)]
mod tests {
    use super::{Got, RecvConfig, RecvRing};
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::time::Duration;
    use std::time::Instant;

    /// A connected loopback pair: (ours, the peer that writes).
    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        c.set_nonblocking(true).unwrap();
        (c, s)
    }

    /// Waits until `done` says so (or `limit` passes), collecting what each token got.
    fn drain(
        r: &mut RecvRing,
        limit: Duration,
        bytes: &mut [Vec<u8>],
        ends: &mut [bool],
        done: impl Fn(&[Vec<u8>], &[bool]) -> bool,
    ) {
        let t0 = Instant::now();
        while !done(bytes, ends) && t0.elapsed() < limit {
            r.wait(Duration::from_millis(10), |t, got| match got {
                Got::Data(d) => bytes[t].extend_from_slice(d),
                Got::End => ends[t] = true,
                Got::Error(e) => panic!("token {t}: {e}"),
            })
            .unwrap();
        }
    }

    #[test]
    fn streams_arrive_whole_in_order_then_end() {
        let mut r = RecvRing::new(
            2,
            RecvConfig {
                buffers: 4,
                buffer_bytes: 16,
                batch: 8,
                min_wait_us: 50,
            },
        )
        .unwrap();
        let (a, mut pa) = pair();
        let (b, mut pb) = pair();
        r.arm(a.as_raw_fd(), 0).unwrap();
        r.arm(b.as_raw_fd(), 1).unwrap();
        // 4 x 16 bytes of buffers against 10,000 bytes per stream: the kernel runs out of
        // buffers and ends the multishot receives, which must be re-armed without a loss.
        let want_a: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let want_b: Vec<u8> = (0..10_000u32).map(|i| (i % 241) as u8).collect();
        pa.write_all(&want_a).unwrap();
        pb.write_all(&want_b).unwrap();
        let (mut bytes, mut ends) = (vec![Vec::new(); 2], vec![false; 2]);
        let five = Duration::from_secs(5);
        drain(&mut r, five, &mut bytes, &mut ends, |b, _| {
            b[0].len() + b[1].len() == 20_000
        });
        assert_eq!(bytes[0], want_a);
        assert_eq!(bytes[1], want_b);
        assert!(
            r.rearmed > 0,
            "the buffers never ran out: the test shows nothing"
        );
        drop(pa);
        drain(&mut r, five, &mut bytes, &mut ends, |_, e| e[0]);
        assert_eq!(ends, [true, false]);
        // A stopped stream reports nothing more, even when its peer writes and closes.
        r.stop(1).unwrap();
        pb.write_all(b"late").unwrap();
        drop(pb);
        let mut late = vec![Vec::new(); 2];
        let mut late_ends = vec![false; 2];
        let short = Duration::from_millis(300);
        drain(&mut r, short, &mut late, &mut late_ends, |_, _| false);
        assert_eq!((late, late_ends), (vec![Vec::new(); 2], vec![false; 2]));
    }
}
