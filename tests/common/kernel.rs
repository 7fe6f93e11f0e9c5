//! What the kernel says about the server, read from `/proc` (proc(5)): its open fds, TCP
//! sockets by port and state (`/proc/net/tcp`); and the two things a test asks of it: a
//! close with RST, and enough RLIMIT_NOFILE for this process.

use std::net::TcpStream;
use std::time::Duration;

/// `/proc/net/tcp` state of an established connection.
pub(crate) const ESTABLISHED: &str = "01";
/// `/proc/net/tcp` state of a socket whose peer closed and which was not closed yet.
pub(crate) const CLOSE_WAIT: &str = "08";

/// Open fds of process `pid` (`/proc/PID/fd`); panics if the process is gone.
pub(crate) fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .count()
}

/// The rows of `/proc/net/tcp` and `/proc/net/tcp6` as (local port, remote port, state).
fn tcp_rows() -> Vec<(u16, u16, String)> {
    let port = |s: &str| u16::from_str_radix(s.rsplit(':').next().unwrap(), 16).ok();
    let mut rows = Vec::new();
    for t in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(t) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let (Some(l), Some(r), Some(st)) = (
                f.get(1).and_then(|s| port(s)),
                f.get(2).and_then(|s| port(s)),
                f.get(3),
            ) {
                rows.push((l, r, st.to_string()));
            }
        }
    }
    rows
}

/// TCP sockets (this network namespace) whose local port is `port` and whose state is
/// `state` ([`ESTABLISHED`], [`CLOSE_WAIT`]): the server's side of its connections.
pub(crate) fn sockets_in_state(port: u16, state: &str) -> usize {
    tcp_rows()
        .iter()
        .filter(|(l, _, st)| *l == port && st == state)
        .count()
}

/// Server sockets (local port `port`) connected to remote port `rport`, any state.
pub(crate) fn server_sockets_to(port: u16, rport: u16) -> usize {
    tcp_rows()
        .iter()
        .filter(|(l, r, _)| *l == port && *r == rport)
        .count()
}

/// Closes `s` with RST (SO_LINGER 0): no FIN, no TIME_WAIT on our side.
pub(crate) fn rst_close(s: TcpStream) {
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    drop(s);
}

/// Makes sure this process may open `n` file descriptors (raises the soft limit up to the hard
/// one if needed). Panics with a clear message if it cannot.
pub(crate) fn ensure_fd_limit(n: u64) {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur >= n as libc::rlim_t {
            return;
        }
        let want = (n as libc::rlim_t).min(lim.rlim_max);
        lim.rlim_cur = want;
        let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        assert!(
            lim.rlim_cur >= n as libc::rlim_t,
            "this test needs {n} file descriptors; RLIMIT_NOFILE is {} (hard {})",
            lim.rlim_cur,
            lim.rlim_max
        );
    }
}
