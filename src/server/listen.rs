//! The listeners: one SO_REUSEPORT socket per shard on each listener address, bound in the
//! calling thread so bind errors and the port chosen for port 0 are known before `start`
//! returns.
//!
//! Source: socket(7) (SO_REUSEPORT, SO_SNDBUF), tcp(7) (TCP_NODELAY, TCP_USER_TIMEOUT),
//! listen(2).

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::Duration;

use anyhow::Context;
use socket2::{Domain, Socket, Type};

/// Listen backlog; the kernel caps it at `net.core.somaxconn`.
const BACKLOG: i32 = 65_535;

/// A listener socket with SO_REUSEPORT, bound to `addr`. Its accepted sockets inherit
/// TCP_NODELAY, TCP_USER_TIMEOUT `send_timeout` (how long sent data may stay
/// unacknowledged before the kernel aborts the connection; with heartbeats this bounds how
/// long a peer that vanished without FIN or RST stays logged in: about `--heartbeat` +
/// `--send-timeout`), and with `sndbuf` > 0 that SO_SNDBUF (socket(7): set before listen).
fn listener(addr: SocketAddr, sndbuf: usize, send_timeout: Duration) -> io::Result<OwnedFd> {
    let s = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        None,
    )?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    // Accepted sockets inherit TCP_NODELAY: a chunk goes out at once, not after an ACK.
    s.set_tcp_nodelay(true)?;
    // Inherited by accepted sockets, like TCP_NODELAY.
    s.set_tcp_user_timeout(Some(send_timeout))?;
    if sndbuf > 0 {
        s.set_send_buffer_size(sndbuf)?;
    }
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    Ok(s.into())
}

fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    let s = socket2::SockRef::from(fd);
    s.local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("listener has no IP address"))
}

/// Binds one listener per shard on `addr` (port 0: the port the first one got), and
/// returns them with the address bound. `sndbuf` bytes (0: the kernel's autotuning) and
/// `send_timeout` as for [`listener`]. Errors: a bind or listen failed (the message names
/// the address).
pub(super) fn listeners(
    addr: SocketAddr,
    shards: usize,
    sndbuf: usize,
    send_timeout: Duration,
) -> anyhow::Result<(Vec<OwnedFd>, SocketAddr)> {
    let first =
        listener(addr, sndbuf, send_timeout).with_context(|| format!("cannot listen on {addr}"))?;
    let bound = local_addr(&first)?;
    let mut all = vec![first];
    for _ in 1..shards {
        all.push(
            listener(bound, sndbuf, send_timeout)
                .with_context(|| format!("cannot listen on {bound} (SO_REUSEPORT)"))?,
        );
    }
    Ok((all, bound))
}

/// Refuses `addr` if its port already has a listener (a second `serve` started by mistake
/// would silently split the connections with it: every listener sets SO_REUSEPORT). Probes
/// with a socket that sets SO_REUSEADDR but not SO_REUSEPORT: Linux refuses its bind with
/// EADDRINUSE while any socket listens on an overlapping address (socket(7)), and not for
/// TIME_WAIT leftovers. Port 0 is never checked. Errors: the port is in use, naming it and,
/// when `/proc` tells, the pid and name of the process holding it; or the probe could not
/// bind for another reason.
pub(super) fn ensure_free(addr: SocketAddr, flag: &str) -> anyhow::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
    probe.set_reuse_address(true)?;
    match probe.bind(&addr.into()) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
            let port = addr.port();
            let who = super::holder::holders(&super::holder::listening_inodes(port));
            let by = match who.as_slice() {
                [] => String::new(),
                w => {
                    let names: Vec<String> =
                        w.iter().map(|(p, n)| format!("pid {p} ({n})")).collect();
                    format!(", held by {}", names.join(", "))
                }
            };
            anyhow::bail!(
                "{flag} {addr}: port {port} is already in use{by}. Another server on the same port would split the connections with it (SO_REUSEPORT) and lose messages; stop it first, or start with --takeover to hand over from it on purpose (then SIGTERM the old one)"
            )
        }
        Err(e) => Err(e).with_context(|| format!("cannot listen on {addr}")),
    }
}
