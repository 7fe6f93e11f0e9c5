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
use crate::tools::loadtest::wire::check::room::format_room_body;
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
    /// body is [`format_body`](crate::tools::loadtest::wire::check::format_body)'s, with its Content-Length (RFC 9112 section 6.2). `scratch`
    /// is a buffer for the body.
    pub(crate) fn queue_post(
        &mut self,
        url: &UrlTemplate,
        id: u64,
        seq: u64,
        t_us: u64,
        scratch: &mut Vec<u8>,
    ) {
        self.queue_post_padded(url, (id, seq, t_us), 0, scratch);
    }

    /// As [`queue_post`](Self::queue_post), the body padded to `pad_to` bytes as
    /// [`format_room_body`] does (0: not padded, [`format_body`](crate::tools::loadtest::wire::check::format_body)'s bytes).
    pub(crate) fn queue_post_padded(
        &mut self,
        url: &UrlTemplate,
        (id, seq, t_us): (u64, u64, u64),
        pad_to: usize,
        scratch: &mut Vec<u8>,
    ) {
        scratch.clear();
        format_room_body(scratch, id, seq, t_us, pad_to);
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    use crate::tools::loadtest::client::msggen::{self, MsggenConfig, MsggenShared};
    use crate::tools::loadtest::client::pipeline::{self, IdPlan, PipeConfig, PipeShared};
    use crate::tools::loadtest::wire::url::UrlTemplate;

    /// Answers `POST`s with `200 {"delivered":1}`; after `per_conn` answers on a connection,
    /// the last says `Connection: close` and the connection is closed as nginx closes it: a
    /// moment later (msggen reads an answer and the close in one go as a lost answer), with
    /// a FIN, reading what comes until the client closes (a close with unread requests
    /// would be a reset that overtakes the answers).
    fn serve(per_conn: usize) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        thread::spawn(move || {
            for s in l.incoming() {
                let s = s.unwrap();
                thread::spawn(move || answer(s, per_conn));
            }
        });
        addr
    }

    fn answer(mut s: TcpStream, per_conn: usize) {
        let mut buf = Vec::new();
        let mut piece = [0u8; 4096];
        let mut answered = 0;
        while answered < per_conn {
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                match s.read(&mut piece) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&piece[..n]),
                }
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            assert!(head.starts_with("POST /send/"), "{head}");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            if buf.len() < end + 4 + len {
                match s.read(&mut piece) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&piece[..n]),
                }
                continue;
            }
            buf.drain(..end + 4 + len);
            answered += 1;
            let close = if answered == per_conn {
                "Connection: close\r\n"
            } else {
                ""
            };
            let a =
                format!("HTTP/1.1 200 OK\r\n{close}Content-Length: 15\r\n\r\n{{\"delivered\":1}}");
            if s.write_all(a.as_bytes()).is_err() {
                return;
            }
        }
        thread::sleep(Duration::from_millis(50));
        let _ = s.shutdown(std::net::Shutdown::Write);
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        while matches!(s.read(&mut piece), Ok(n) if n > 0) {}
    }

    #[test]
    fn msggen_sends_each_message_once_over_reconnects() {
        let addr = serve(4);
        let cfg = MsggenConfig {
            url: UrlTemplate::local(addr, "/send/{id}").unwrap(),
            parallel: 2,
            total: 10,
            interval: Duration::from_millis(2),
            max_id: 50,
            ids_by_seq: None,
            first_seq: 0,
            seed: 1,
            tail: Duration::from_secs(5),
            record_sends: true,
        };
        let res = msggen::run(cfg, Arc::new(MsggenShared::default())).unwrap();
        assert_eq!(
            (res.attempted, res.ok, res.failed),
            (10, 10, 0),
            "{:?}",
            res.notes
        );
        assert_eq!((res.delivered_sum, res.ok_seqs.count()), (10, 10));
        assert_eq!(res.sends.len(), 10);
    }

    #[test]
    fn pipeline_resends_what_a_closing_server_never_read() {
        let addr = serve(3);
        let cfg = PipeConfig {
            url: UrlTemplate::local(addr, "/send/{id}").unwrap(),
            conns: 2,
            depth: 8,
            ids: IdPlan::InOrder {
                first_id: 1,
                count: 5,
            },
            first_seq: 0,
            total: Some(20),
            send_until: Instant::now() + Duration::from_secs(5),
            tail: Duration::from_secs(5),
            any_2xx: false,
        };
        let res = pipeline::run(cfg, Arc::new(PipeShared::default())).unwrap();
        assert_eq!(
            (res.attempted, res.ok, res.failed),
            (20, 20, 0),
            "{:?}",
            res.notes
        );
        assert_eq!(res.ok_seqs.count(), 20);
        // Each connection takes 8 and answers 3: the other 5 were never read.
        assert!(res.resent > 0 && res.connects > 2, "{res:?}");
    }
}
