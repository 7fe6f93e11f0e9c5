//! The hidden `uring-comet loadtest hold-peer`: the least a peer can do to hold subscriber
//! connections, so that `loadtest million --hold-peer` measures the load generator's own
//! memory (the method: [`Breakdown`](crate::tools::loadtest::report::million::Breakdown)).
//!
//! One listener with the server's socket options (SO_REUSEADDR, TCP_NODELAY,
//! TCP_USER_TIMEOUT `--send-timeout`, backlog 65,535 capped by `net.core.somaxconn`). Accepts
//! with io_uring multishot accept into direct descriptors (IORING_FILE_INDEX_ALLOC: no fd
//! table, so RLIMIT_NOFILE does not cap it); when a ring's table is nearly full the next
//! ring takes over, each with a table of `--slots-per-ring`. Per connection: one SEND of a
//! subscriber head (`200`, chunked: what the workers wait for) and one RECV of the request
//! into a scratch buffer shared by all (its bytes are never looked at), then nothing: no poll,
//! no read armed, the socket held until the process ends. A ring hands over to the next
//! before its table is full (an accept that finds no slot closes the connection it took). So each connection costs the peer
//! its socket (tcp_sock, inode, dentry, file) and a slot, as on the server minus the server's
//! own per-connection state.
//!
//! Prints `LISTEN subscriber=ADDR publish=ADDR` (both the one listener) on stdout like
//! `serve`, then runs until killed. Source: io_uring_enter(2) (IORING_OP_ACCEPT with
//! IORING_ACCEPT_MULTISHOT, IORING_FILE_INDEX_ALLOC), io_uring_register(2)
//! (IORING_REGISTER_FILES_SPARSE).

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use io_uring::{opcode, types, IoUring};
use socket2::{Domain, Socket, Type};

/// Flags of the hidden `uring-comet loadtest hold-peer` (started by `loadtest million
/// --hold-peer`).
#[derive(Args, Debug, Clone)]
pub struct HoldPeerArgs {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Direct-descriptor slots per ring (at most RLIMIT_NOFILE: the kernel's cap).
    #[arg(long, default_value_t = 20_000)]
    pub slots_per_ring: u32,
    /// TCP_USER_TIMEOUT of the accepted sockets, seconds (the server's `--send-timeout`).
    #[arg(long, default_value_t = 20)]
    pub send_timeout: u64,
}

/// What a subscriber worker waits for: a `200` head of a chunked stream.
const HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n";
/// User data of the accept; sends and receives use others, never looked at.
const ACCEPT: u64 = 0;
/// User data of the cancel of a ring's accept when the next ring takes over.
const CANCEL: u64 = 3;
/// Submission queue entries per ring (a burst of accepts pushes two entries each).
const ENTRIES: u32 = 1024;
/// Completion queue entries per ring: more than a ring's in-flight sends and receives.
const CQ_ENTRIES: u32 = 8192;

/// Runs the hold peer until it is killed. Errors: the listener or a ring cannot be set up.
pub(crate) fn run(a: HoldPeerArgs) -> Result<()> {
    let l = Socket::new(Domain::for_address(a.listen), Type::STREAM.cloexec(), None)?;
    l.set_reuse_address(true)?;
    l.set_tcp_nodelay(true)?;
    l.set_tcp_user_timeout(Some(Duration::from_secs(a.send_timeout.max(1))))?;
    l.bind(&a.listen.into())?;
    l.listen(65_535)?;
    let addr = l
        .local_addr()?
        .as_socket()
        .context("listener has no address")?;
    let slots = a.slots_per_ring.min(nofile_limit()).max(1);
    // More than a listen queue (somaxconn, 4,096 here) of accepts may land before a reap.
    let spare = (slots / 4).min(5000);
    let mut held = 0; // connections on the current ring
    let mut rings = vec![new_ring(slots)?];
    arm_accept(&mut rings[0], l.as_raw_fd())?;
    println!("LISTEN subscriber={addr} publish={addr}");
    std::io::stdout().flush()?;
    // Requests land here, all of them over each other: their bytes are never read. Leaked:
    // receives may be in flight until the process ends.
    let scratch: &'static mut [u8] = Box::leak(vec![0u8; 4096].into_boxed_slice());
    let ts = types::Timespec::new().nsec(100_000_000);
    loop {
        let cur = rings.len() - 1;
        let args = types::SubmitArgs::new().timespec(&ts);
        match rings[cur].submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => return Err(e).context("io_uring_enter"),
        }
        let mut full = false;
        for (r, ring) in rings.iter_mut().enumerate() {
            let (f, n) = reap(ring, r == cur, l.as_raw_fd(), scratch.as_mut_ptr())?;
            full |= f;
            if r == cur {
                held += n;
            }
        }
        // A multishot accept that finds the table full has already accepted the connection
        // it cannot place, and the kernel closes it: move on before, with slots to spare for
        // the accepts in flight while the old one is cancelled.
        if full || held + spare >= slots {
            if !full {
                let cancel = opcode::AsyncCancel::new(ACCEPT).build().user_data(CANCEL);
                push(&mut rings[cur], &cancel)?;
                rings[cur].submit().context("io_uring_enter")?;
            }
            held = 0;
            let mut ring = new_ring(slots)?;
            arm_accept(&mut ring, l.as_raw_fd())?;
            rings.push(ring);
        }
    }
}

/// Takes `ring`'s completions: each accepted connection gets its head and a read; a
/// multishot accept that ended is armed again on the `current` ring, unless the table is
/// full (true: a new ring takes over). Returns that and the connections accepted. Submits
/// what it queued.
fn reap(ring: &mut IoUring, current: bool, listener: i32, scratch: *mut u8) -> Result<(bool, u32)> {
    let mut full = false;
    let mut rearm = false;
    let mut accepted = Vec::new();
    for c in ring.completion() {
        if c.user_data() != ACCEPT {
            continue; // a send or a read: nothing to do
        }
        if c.result() >= 0 {
            accepted.push(c.result() as u32);
        }
        if !io_uring::cqueue::more(c.flags()) && current {
            full |= c.result() == -libc::ENFILE;
            rearm |= c.result() != -libc::ENFILE;
        }
    }
    for slot in &accepted {
        hold(ring, *slot, scratch)?;
    }
    if rearm && !full {
        arm_accept(ring, listener)?;
    }
    if !ring.submission().is_empty() {
        ring.submit().context("io_uring_enter")?;
    }
    Ok((full, accepted.len() as u32))
}

/// A ring with a sparse table of `slots` direct descriptors.
fn new_ring(slots: u32) -> Result<IoUring> {
    let ring = IoUring::builder()
        .setup_cqsize(CQ_ENTRIES)
        .setup_submit_all()
        .build(ENTRIES)
        .context("io_uring_setup")?;
    ring.submitter()
        .register_files_sparse(slots)
        .context("registering the direct-descriptor table")?;
    Ok(ring)
}

/// Arms a multishot accept of `listener` into a free slot of `ring`'s table.
fn arm_accept(ring: &mut IoUring, listener: i32) -> Result<()> {
    let e = opcode::AcceptMulti::new(types::Fd(listener))
        .allocate_file_index(true) // no SOCK_CLOEXEC: EINVAL with a direct descriptor
        .build()
        .user_data(ACCEPT);
    push(ring, &e)
}

/// The head, then one read of the request, on the connection in `slot`.
fn hold(ring: &mut IoUring, slot: u32, scratch: *mut u8) -> Result<()> {
    let f = types::Fixed(slot);
    let send = opcode::Send::new(f, HEAD.as_ptr(), HEAD.len() as u32)
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(1);
    push(ring, &send)?;
    let recv = opcode::Recv::new(f, scratch, 4096).build().user_data(2);
    push(ring, &recv)
}

/// Queues `e`, submitting first if the submission queue is full.
fn push(ring: &mut IoUring, e: &io_uring::squeue::Entry) -> Result<()> {
    loop {
        // SAFETY: HEAD is static, the scratch buffer is leaked (it lives until the process
        // ends); the listener outlives every accept (run only returns to end the process).
        if unsafe { ring.submission().push(e) }.is_ok() {
            return Ok(());
        }
        ring.submit().context("io_uring_enter")?;
    }
}

/// The soft RLIMIT_NOFILE (the kernel caps a ring's table at it).
fn nofile_limit() -> u32 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the given struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 1024;
    }
    r.rlim_cur.min(u64::from(u32::MAX)) as u32
}
