//! One subscriber connection of the flood loop: its record, and connect, request, read and end.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;

use mio::net::TcpStream;
use mio::{Interest, Token};

use super::super::chunk::{Carry, ChunkParser, Unit};
use super::super::proc::now_us;
use super::{Flood, MAX_NOTES};

/// Where one connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SubState {
    NotStarted,
    Connecting,
    /// Connected; `Sub::sent` bytes of the request written.
    Sending,
    /// Request written; reading the head, then chunks.
    Streaming,
    Ended,
}

/// One subscriber connection. Its id is implied by its slab index.
pub(super) struct Sub {
    stream: Option<TcpStream>,
    /// A head, chunk or WebSocket frame split across reads; `None` otherwise.
    partial: Option<Carry>,
    parser: ChunkParser,
    /// The previous message number received on this connection.
    last_n: u32,
    /// Request bytes written so far (a partial write on a new socket is rare but possible).
    sent: u16,
    state: SubState,
}

impl Sub {
    /// A connection not yet started.
    pub(super) fn new() -> Sub {
        Sub {
            stream: None,
            partial: None,
            parser: ChunkParser::new(),
            last_n: 0,
            sent: 0,
            state: SubState::NotStarted,
        }
    }

    /// True from connect until the connection ends.
    pub(super) fn is_open(&self) -> bool {
        self.stream.is_some()
    }

    /// True once its `200` head has been read, until it ends.
    pub(super) fn is_streaming(&self) -> bool {
        self.stream.is_some() && self.parser.head_done()
    }
}

impl Flood {
    /// Starts the non-blocking connect of connection `i`.
    pub(super) fn launch(&mut self, i: usize) {
        let r = if self.sources > 1 {
            let src = Ipv4Addr::from(u32::from(Ipv4Addr::LOCALHOST) + (i as u32 % self.sources));
            connect_from(src, self.cfg.url.addr)
        } else {
            TcpStream::connect(self.cfg.url.addr)
        };
        self.in_flight += 1;
        let sub = &mut self.subs[i];
        sub.state = SubState::Connecting;
        match watch_connect(r, self.poll.registry(), Token(i)) {
            Ok(s) => sub.stream = Some(s),
            Err(e) => self.end(i, &format!("connect: {e}")),
        }
    }

    pub(super) fn on_event(&mut self, i: usize, writable: bool, readable: bool) {
        let sub = &mut self.subs[i];
        let Some(stream) = sub.stream.as_mut() else {
            return;
        };
        if sub.state == SubState::Connecting {
            if !writable {
                return;
            }
            // mio's recipe: an error, or a peer address once the connect has completed.
            match stream.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => return self.end(i, &format!("connect: {e}")),
            }
            match stream.peer_addr() {
                Ok(_) => sub.state = SubState::Sending,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.end(i, &format!("connect: {e}")),
            }
        }
        if sub.state == SubState::Sending && writable {
            if let Err(e) = self.send_request(i) {
                return self.end(i, &format!("sending request: {e}"));
            }
        }
        if readable && self.subs[i].state != SubState::Connecting {
            self.read(i);
        }
    }

    /// Writes (the rest of) connection `i`'s `GET` request.
    fn send_request(&mut self, i: usize) -> io::Result<()> {
        self.req.clear();
        let id = self.cfg.first_id + i as u64;
        self.cfg.url.write_request_start(&mut self.req, "GET", id);
        let extra = self.cfg.framing.request_headers();
        self.req.extend_from_slice(extra.as_bytes());
        self.req.extend_from_slice(b"\r\n");
        let sub = &mut self.subs[i];
        let Some(stream) = sub.stream.as_mut() else {
            return Ok(());
        };
        while (sub.sent as usize) < self.req.len() {
            match stream.write(&self.req[sub.sent as usize..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sub.sent += n as u16,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        sub.state = SubState::Streaming;
        Ok(())
    }

    /// Reads connection `i` until it would block, feeding the decoder and the checker.
    fn read(&mut self, i: usize) {
        let id = self.cfg.first_id + i as u64;
        let framing = self.cfg.framing;
        let expect = framing.expect();
        let Flood {
            subs, buf, checker, ..
        } = self;
        let sub = &mut subs[i];
        let ending = loop {
            let Some(stream) = sub.stream.as_mut() else {
                return;
            };
            let n = match stream.read(buf) {
                Ok(0) => break "server closed the connection".to_string(),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break format!("read: {e}"),
            };
            let had_head = sub.parser.head_done();
            let now = now_us();
            let last_n = &mut sub.last_n;
            let fed =
                sub.parser
                    .feed_stream(&buf[..n], &mut sub.partial, expect, |unit| match unit {
                        Unit::Data(d) => framing.check_unit(checker, id, last_n, d, now),
                        // A WebSocket ping: the server's heartbeat.
                        Unit::Ping => checker.counts.heartbeats += 1,
                    });
            if !had_head && sub.parser.head_done() {
                self.in_flight -= 1;
                if let Some(g) = self.churn.open.remove(&(i as u32)) {
                    self.churn.gaps[g].to_us = now;
                    self.churn.reconnected += 1;
                    self.shared
                        .reconnected
                        .store(self.churn.reconnected, Relaxed);
                } else {
                    self.res.connected += 1;
                    self.shared.connected.store(self.res.connected, Relaxed);
                }
            }
            if let Err(e) = fed {
                self.res.broken += 1;
                checker.counts.garbled += 1;
                break e.to_string();
            }
            if sub.parser.ended() {
                break "server ended the stream (last chunk or close frame)".to_string();
            }
        };
        self.end(i, &ending);
    }

    /// Churn: closes streaming connection `i` on purpose (every other one with a RST, the
    /// rest with a FIN), records the start of its absence, and connects it again at once.
    pub(super) fn churn_one(&mut self, i: usize) {
        let sub = &mut self.subs[i];
        if let Some(mut s) = sub.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
            if self.churn.gaps.len() % 2 == 1 {
                let _ = socket2::SockRef::from(&s).set_linger(Some(std::time::Duration::ZERO));
            }
        }
        *sub = Sub::new();
        self.churn.open.insert(i as u32, self.churn.gaps.len());
        self.churn.gaps.push(super::Gap {
            id: self.cfg.first_id + i as u64,
            from_us: now_us(),
            to_us: u64::MAX,
        });
        self.launch(i);
    }

    /// Ends connection `i`: closes it, frees its buffer, counts it.
    fn end(&mut self, i: usize, why: &str) {
        let sub = &mut self.subs[i];
        if let Some(mut s) = sub.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        sub.partial = None;
        if !sub.parser.head_done() {
            self.in_flight -= 1;
            self.res.connect_failed += 1;
        }
        sub.state = SubState::Ended;
        self.res.closed += 1;
        self.shared.closed.store(self.res.closed, Relaxed);
        if self.notes.len() < MAX_NOTES {
            self.notes
                .push(format!("id {}: {why}", self.cfg.first_id + i as u64));
        }
    }
}

/// Readies a connect just started (`r`, from [`connect_from`] or `TcpStream::connect`):
/// TCP_NODELAY, and a registration under `token` for readable and writable events (the first
/// writable event says the connect finished). Errors: the connect's, or the setup's.
pub(in crate::tools::loadtest) fn watch_connect(
    r: io::Result<TcpStream>,
    registry: &mio::Registry,
    token: Token,
) -> io::Result<TcpStream> {
    let mut s = r?;
    s.set_nodelay(true)?;
    registry.register(&mut s, token, Interest::READABLE | Interest::WRITABLE)?;
    Ok(s)
}

/// A non-blocking connect from `src` (any port) to `dst`, for spreading source addresses.
///
/// The source port is left to `connect` (IP_BIND_ADDRESS_NO_PORT): a plain `bind(src, 0)`
/// picks a port unique for `src` alone, which gets slow and then fails with EADDRINUSE long
/// before the ~28,000 ports of the range are used; `connect` picks one unique for the whole
/// 4-tuple, so every (source, destination) pair has the full range.
pub(in crate::tools::loadtest) fn connect_from(
    src: Ipv4Addr,
    dst: SocketAddr,
) -> io::Result<TcpStream> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_record_stays_small() {
        // A million of these must stay tens of megabytes. mio's sockets carry a registration
        // check (8 more bytes, padded to 16) only in debug builds.
        let limit = if cfg!(debug_assertions) { 48 } else { 32 };
        let size = std::mem::size_of::<Sub>();
        assert!(size <= limit, "{size}");
        assert!(std::mem::size_of::<ChunkParser>() <= 12);
    }
}
