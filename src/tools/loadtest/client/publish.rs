//! The keep-alive publish connection shared by the load tester's two publishers, msggen's
//! generators ([`msggen`](super::msggen): one request in flight, on a schedule) and
//! compare's pipelined publishers ([`pipeline`](super::pipeline): up to `depth` in flight):
//! connect, queue `POST` requests, write them as the socket takes them, read answer bytes.
//! Answers are parsed by the caller ([`parse_answer`](crate::tools::loadtest::wire::answer::parse_answer)),
//! whose policy (what a failure counts as, what is sent again) differs.

use std::io::{self, Read};
use std::net::SocketAddr;

use mio::net::TcpStream;
use mio::Token;

use super::connect::{connect_done, watch_connect, write_from};
use crate::tools::loadtest::wire::check::format_body;
use crate::tools::loadtest::wire::url::UrlTemplate;

/// One publish connection: its socket, the requests not yet written, the answer bytes not
/// yet parsed.
#[derive(Default)]
pub(crate) struct PubConn {
    stream: Option<TcpStream>,
    /// Requests queued, written up to `out_off`.
    out: Vec<u8>,
    out_off: usize,
    /// Answer bytes read and not yet consumed by the caller.
    pub(crate) inbuf: Vec<u8>,
}

impl PubConn {
    /// A closed connection with buffers sized for a request and an answer.
    pub(crate) fn with_capacity(bytes: usize) -> PubConn {
        PubConn {
            stream: None,
            out: Vec::with_capacity(bytes),
            out_off: 0,
            inbuf: Vec::with_capacity(bytes),
        }
    }

    /// True from connect until [`close`](Self::close).
    pub(crate) fn is_open(&self) -> bool {
        self.stream.is_some()
    }

    /// Starts a non-blocking connect to `addr`, registered under `token`; forgets what was
    /// queued or read on the previous connection. Errors: the connect's or the setup's.
    pub(crate) fn connect(
        &mut self,
        registry: &mio::Registry,
        addr: SocketAddr,
        token: Token,
    ) -> io::Result<()> {
        let s = watch_connect(TcpStream::connect(addr), registry, token)?;
        self.stream = Some(s);
        self.out.clear();
        self.out_off = 0;
        self.inbuf.clear();
        Ok(())
    }

    /// On a writable event while connecting: `Ok(true)` connected, `Ok(false)` not yet.
    /// Errors: why the connect failed.
    pub(crate) fn connect_done(&self) -> io::Result<bool> {
        match &self.stream {
            Some(s) => connect_done(s),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// True when every queued request has been written.
    pub(crate) fn written(&self) -> bool {
        self.out_off == self.out.len()
    }

    /// Drops the written requests from the queue (only once all are written).
    pub(crate) fn clear_written(&mut self) {
        if self.written() {
            self.out.clear();
            self.out_off = 0;
        }
    }

    /// Queues `POST` of message `seq` to `id`, sent at `t_us` (CLOCK_MONOTONIC us): the
    /// body is [`format_body`]'s, with its Content-Length (RFC 9112 section 6.2). `scratch`
    /// is a buffer for the body.
    pub(crate) fn queue_post(
        &mut self,
        url: &UrlTemplate,
        id: u64,
        seq: u64,
        t_us: u64,
        scratch: &mut Vec<u8>,
    ) {
        scratch.clear();
        format_body(scratch, id, seq, t_us);
        url.write_request_start(&mut self.out, "POST", id);
        let len = format!("Content-Length: {}\r\n\r\n", scratch.len());
        self.out.extend_from_slice(len.as_bytes());
        self.out.extend_from_slice(scratch);
    }

    /// Writes what is queued until the socket would block. Errors: the write's (none when
    /// closed).
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        match self.stream.as_mut() {
            Some(s) => write_from(s, &self.out, &mut self.out_off).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Reads into [`inbuf`](Self::inbuf) (through `piece`) until the socket would block:
    /// `Ok(true)` if the server closed its side. Errors: the read's.
    pub(crate) fn read_in(&mut self, piece: &mut [u8]) -> io::Result<bool> {
        loop {
            let Some(s) = self.stream.as_mut() else {
                return Ok(false);
            };
            match s.read(piece) {
                Ok(0) => return Ok(true),
                Ok(n) => self.inbuf.extend_from_slice(&piece[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Closes the connection (closing the fd also removes it from epoll) and forgets the
    /// answer bytes read.
    pub(crate) fn close(&mut self) {
        self.stream = None;
        self.inbuf.clear();
    }
}
