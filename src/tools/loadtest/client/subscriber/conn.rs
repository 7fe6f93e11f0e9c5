//! One subscriber connection of the loop: its record, and connect, request, read and end.

use std::io::{self, Read};
use std::os::fd::AsRawFd;

use mio::net::TcpStream;
use mio::Token;

use super::{now_us, set_linger_zero, End, Role, SubLoop};
use crate::tools::loadtest::client::connect::{connect, connect_done, watch_connect, write_from};
use crate::tools::loadtest::wire::chunk::{Carry, ChunkParser, Expect, StreamError};

/// Where one connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not started yet, or ended.
    Idle,
    Connecting,
    /// Connected; `Conn::sent` bytes of the request written.
    Sending,
    /// Request written; reading the head, then the stream.
    Streaming,
    /// Head read; the stream is read by the ring, no longer by mio.
    Ringed,
}

/// One subscriber connection; its id comes from its slab index ([`Role::id`]).
pub(crate) struct Conn<P> {
    stream: Option<TcpStream>,
    /// A head, chunk or WebSocket frame split across reads; `None` otherwise.
    partial: Option<Carry>,
    parser: ChunkParser,
    /// The role's state of this connection (a message number, a count).
    pub(super) per: P,
    /// Request bytes written so far (a partial write on a new socket is rare but possible).
    sent: u16,
    state: State,
}

impl<P: Default> Conn<P> {
    /// A connection not yet started.
    pub(super) fn new() -> Conn<P> {
        Conn {
            stream: None,
            partial: None,
            parser: ChunkParser::new(),
            per: P::default(),
            sent: 0,
            state: State::Idle,
        }
    }
}

impl<P> Conn<P> {
    /// True from connect until the connection ends.
    pub(super) fn is_open(&self) -> bool {
        self.stream.is_some()
    }

    /// True once its head has been read, until it ends.
    pub(super) fn is_streaming(&self) -> bool {
        self.stream.is_some() && self.parser.head_done()
    }

    /// True once the server ended the stream (last chunk, close frame).
    pub(super) fn ended(&self) -> bool {
        self.parser.ended()
    }

    /// Its socket, while open.
    pub(super) fn stream(&self) -> Option<&TcpStream> {
        self.stream.as_ref()
    }

    /// Decodes `data`, the next bytes of connection `i`'s stream read at `now`, handing each
    /// unit to `role`.
    pub(super) fn feed<R: Role<Per = P>>(
        &mut self,
        role: &mut R,
        i: usize,
        data: &[u8],
        expect: Expect,
        now: u64,
    ) -> Result<(), StreamError> {
        let per = &mut self.per;
        self.parser
            .feed_stream(data, &mut self.partial, expect, |u| {
                role.on_unit(i, per, u, now)
            })
    }
}

impl<R: Role> SubLoop<R> {
    /// Starts the non-blocking connect of connection `i` (counted in flight by the caller).
    pub(super) fn launch(&mut self, i: usize) {
        let r = connect(self.role.source(i), self.cfg.url.addr);
        self.conns[i].state = State::Connecting;
        match watch_connect(r, self.poll.registry(), Token(i)) {
            Ok(s) => self.conns[i].stream = Some(s),
            Err(e) => return self.end(i, End::Connect(e)),
        }
        if !self.cfg.eager_request {
            return;
        }
        // A socket still in SYN_SENT answers EAGAIN and waits for its writable event as usual.
        self.conns[i].state = State::Sending;
        match self.send_request(i) {
            Ok(()) if self.conns[i].sent == 0 => self.conns[i].state = State::Connecting,
            Ok(()) => {}
            Err(e) => self.end(i, End::Connect(e)),
        }
    }

    /// Handles readiness of connection `i`: connect check, request, reads.
    pub(super) fn on_event(&mut self, i: usize, writable: bool, readable: bool) -> io::Result<()> {
        let c = &mut self.conns[i];
        let Some(stream) = c.stream.as_ref() else {
            return Ok(());
        };
        if c.state == State::Connecting {
            if !writable {
                return Ok(());
            }
            match connect_done(stream) {
                Ok(true) => c.state = State::Sending,
                Ok(false) => return Ok(()),
                Err(e) => {
                    self.end(i, End::Connect(e));
                    return Ok(());
                }
            }
        }
        if self.conns[i].state == State::Sending && writable {
            if let Err(e) = self.send_request(i) {
                self.end(i, End::Request(e));
                return Ok(());
            }
        }
        if readable && self.conns[i].state != State::Connecting {
            return self.read(i);
        }
        Ok(())
    }

    /// Writes (the rest of) connection `i`'s `GET` request.
    fn send_request(&mut self, i: usize) -> io::Result<()> {
        self.req.clear();
        let id = self.role.id(i);
        let role = &self.role;
        self.cfg
            .url
            .write_request_start_with(&mut self.req, "GET", id, |q| role.write_query(i, q));
        self.req.extend_from_slice(self.cfg.headers.as_bytes());
        self.role.write_headers(i, &mut self.req);
        self.req.extend_from_slice(b"\r\n");
        let c = &mut self.conns[i];
        let Some(stream) = c.stream.as_mut() else {
            return Ok(());
        };
        let mut off = usize::from(c.sent);
        let done = write_from(stream, &self.req, &mut off);
        c.sent = off as u16;
        if done? {
            c.state = State::Streaming;
        }
        Ok(())
    }

    /// Reads connection `i` until it would block, feeding the decoder and the role; hands
    /// the stream to the ring once its head is in, if there is a ring.
    fn read(&mut self, i: usize) -> io::Result<()> {
        let expect = self.cfg.expect;
        let ending = loop {
            let SubLoop {
                conns, buf, role, ..
            } = self;
            let c = &mut conns[i];
            let Some(stream) = c.stream.as_mut() else {
                return Ok(());
            };
            let n = match stream.read(buf) {
                Ok(0) => break End::PeerClosed,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break End::Read(e),
            };
            let had_head = c.parser.head_done();
            let now = now_us();
            let fed = c.feed(role, i, &buf[..n], expect, now);
            if !had_head && c.parser.head_done() {
                self.pacer.in_flight -= 1;
                self.role.on_head(i, now);
                if fed.is_ok() && self.ring.is_some() {
                    return self.hand_to_ring(i);
                }
            }
            if let Err(e) = fed {
                break End::Stream(e);
            }
            if self.conns[i].ended() {
                break End::Finished;
            }
            if self.cfg.short_read_drains && n < self.buf.len() {
                // More data raises a new edge.
                return Ok(());
            }
        };
        self.end(i, ending);
        Ok(())
    }

    /// From here on the ring reads connection `i`'s stream.
    fn hand_to_ring(&mut self, i: usize) -> io::Result<()> {
        let c = &mut self.conns[i];
        let (Some(s), Some(r)) = (c.stream.as_mut(), self.ring.as_mut()) else {
            return Ok(());
        };
        self.poll.registry().deregister(s)?;
        r.arm(s.as_raw_fd(), i)?;
        c.state = State::Ringed;
        Ok(())
    }

    /// Closes connection `i` on purpose (with a reset if `reset`, else a FIN) and connects it
    /// again at once under the same id.
    pub(super) fn restart(&mut self, i: usize, reset: bool) {
        let c = &mut self.conns[i];
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
            if reset {
                set_linger_zero(&s);
            }
        }
        *c = Conn::new();
        self.pacer.in_flight += 1;
        self.launch(i);
    }

    /// Ends connection `i`: closes it (a ring's receive is stopped by the caller), frees its
    /// buffer, counts it, tells the role.
    pub(super) fn end(&mut self, i: usize, why: End) {
        let c = &mut self.conns[i];
        if let Some(mut s) = c.stream.take() {
            if c.state != State::Ringed {
                let _ = self.poll.registry().deregister(&mut s);
            }
            if self.cfg.reset_on_end {
                set_linger_zero(&s);
            }
        }
        c.partial = None;
        c.state = State::Idle;
        let head = c.parser.head_done();
        if !head {
            self.pacer.in_flight -= 1;
        }
        self.ended += 1;
        self.role.on_end(i, head, &why);
    }
}

#[cfg(test)]
mod tests {
    use super::{ChunkParser, Conn};

    #[test]
    fn connection_record_stays_small() {
        // A million of these must stay tens of megabytes. mio's sockets carry a registration
        // check (8 more bytes, padded to 16) only in debug builds.
        let limit = if cfg!(debug_assertions) { 48 } else { 32 };
        let size = std::mem::size_of::<Conn<u32>>();
        assert!(size <= limit, "{size}");
        assert!(std::mem::size_of::<ChunkParser>() <= 12);
    }
}
