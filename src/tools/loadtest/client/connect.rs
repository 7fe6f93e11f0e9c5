//! What every client connection of the load tester does before and around its first byte:
//! a non-blocking connect (from a chosen source address), its registration with mio, the
//! check that it completed, and writing a request that may not go out in one piece.
//! [`Pacer`] spaces subscriber connects at a rate with a cap on those still connecting.

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Token};

/// Connections per source address before the source is spread over 127.0.0.0/8. The
/// ephemeral range holds about 28,000 ports, but connect() tries the even half first, and
/// once one (source, destination) pair holds ~14,000 every further connect scans it (seen
/// as connects falling from thousands to hundreds a second); so well under that.
pub(crate) const CONNS_PER_SOURCE: u64 = 12_000;

/// Source address number `k` of a spread over loopback: 127.0.0.1 + `k`.
pub(crate) fn loopback_source(k: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::LOCALHOST) + k)
}

/// Starts a non-blocking connect to `dst`, from `src` if given (see [`connect_from`]), else
/// from the kernel's choice of source. Errors: the socket's or the connect's.
pub(crate) fn connect(src: Option<Ipv4Addr>, dst: SocketAddr) -> io::Result<TcpStream> {
    match src {
        Some(src) => connect_from(src, dst),
        None => TcpStream::connect(dst),
    }
}

/// Readies a connect just started (`r`, from [`connect`]): TCP_NODELAY, and a registration
/// under `token` for readable and writable events (the first writable event says the connect
/// finished). Errors: the connect's, or the setup's.
pub(crate) fn watch_connect(
    r: io::Result<TcpStream>,
    registry: &mio::Registry,
    token: Token,
) -> io::Result<TcpStream> {
    let mut s = r?;
    s.set_nodelay(true)?;
    registry.register(&mut s, token, Interest::READABLE | Interest::WRITABLE)?;
    Ok(s)
}

/// Whether the connect of `s` has completed, on a writable event (mio's recipe: an error, or
/// a peer address once connected): `Ok(true)` done, `Ok(false)` still under way. Errors: why
/// the connect failed.
pub(crate) fn connect_done(s: &TcpStream) -> io::Result<bool> {
    if let Some(e) = s.take_error()? {
        return Err(e);
    }
    match s.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes `out[*off..]` to `s` until it is all out (`Ok(true)`) or the socket would block
/// (`Ok(false)`), advancing `*off`. Errors: the write's (a write of 0 is `WriteZero`).
pub(crate) fn write_from(s: &mut TcpStream, out: &[u8], off: &mut usize) -> io::Result<bool> {
    while *off < out.len() {
        match s.write(&out[*off..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// A non-blocking connect from `src` (any port) to `dst`, for spreading source addresses.
///
/// The source port is left to `connect` (IP_BIND_ADDRESS_NO_PORT, ip(7)): a plain
/// `bind(src, 0)` picks a port unique for `src` alone, which gets slow and then fails with
/// EADDRINUSE long before the ~28,000 ports of the range are used; `connect` picks one unique
/// for the whole 4-tuple, so every (source, destination) pair has the full range.
pub(crate) fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    use std::os::fd::AsRawFd;
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads one c_int through a valid pointer on a socket we own.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    sock.bind(&SocketAddr::from((src, 0)).into())?;
    match sock.connect(&dst.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(sock.into()))
}

/// Spaces connects: `rate` a second from `start`, at most `max_in_flight` between connect and
/// response head, `count` in all (connection `i` is the `i`-th launched), so the server's
/// listen queue cannot overflow.
#[derive(Debug)]
pub(crate) struct Pacer {
    start: Instant,
    rate: f64,
    max_in_flight: u64,
    count: u64,
    /// Connections launched so far (the next one is number `launched`).
    pub(crate) launched: u64,
    /// Launched, no head yet, not ended.
    pub(crate) in_flight: u64,
}

impl Pacer {
    /// A pacer starting now.
    pub(crate) fn new(rate: f64, max_in_flight: u64, count: u64) -> Pacer {
        Pacer {
            start: Instant::now(),
            rate,
            max_in_flight,
            count,
            launched: 0,
            in_flight: 0,
        }
    }

    /// Connects due by `now` (one at once, then `rate` a second).
    fn due(&self, now: Instant) -> u64 {
        (now.duration_since(self.start).as_secs_f64() * self.rate) as u64 + 1
    }

    /// The next connection to launch by `now`, if one is due and the cap allows it (counted
    /// as launched and in flight).
    pub(crate) fn next(&mut self, now: Instant) -> Option<usize> {
        if self.launched < self.count.min(self.due(now)) && self.in_flight < self.max_in_flight {
            self.launched += 1;
            self.in_flight += 1;
            return Some(self.launched as usize - 1);
        }
        None
    }

    /// True while connections remain to launch or are still waiting for their head.
    pub(crate) fn connecting(&self) -> bool {
        self.launched < self.count || self.in_flight > 0
    }

    /// How long from `now` until the next connect is due, if one could be launched then.
    pub(crate) fn wait(&self, now: Instant) -> Option<Duration> {
        if self.launched < self.count && self.in_flight < self.max_in_flight {
            let next = self.start + Duration::from_secs_f64(self.due(now) as f64 / self.rate);
            return Some(next.saturating_duration_since(now));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::{loopback_source, Pacer};
    use std::time::Duration;

    #[test]
    fn pacer_keeps_rate_and_cap() {
        let mut p = Pacer::new(1000.0, 2, 10);
        let t0 = p.start;
        // One at once, then one a millisecond.
        assert_eq!(p.next(t0), Some(0));
        assert_eq!(p.next(t0), None);
        let t1 = t0 + Duration::from_millis(5);
        assert_eq!(p.next(t1), Some(1));
        // The cap of two in flight holds even though more are due.
        assert_eq!(p.next(t1), None);
        assert_eq!(p.wait(t1), None);
        p.in_flight -= 1;
        assert_eq!(p.next(t1), Some(2));
        assert!(p.connecting());
        assert_eq!(loopback_source(2).to_string(), "127.0.0.3");
    }
}
