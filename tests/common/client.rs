//! A blocking HTTP/1.1 client over `std::net::TcpStream`: every read has [`TIMEOUT`], so a
//! broken server fails a test instead of hanging it. It reads heads, chunks, bodies and
//! WebSocket frames, and asserts silence or the close of the connection.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::http::{find, parse_head, Head};

/// How long one read may block before the test fails.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(5);

/// Most bytes a response head may have before the client gives up on it.
const MAX_HEAD: usize = 64 * 1024;

/// What a read that must end the connection saw.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Closed {
    /// Orderly close (read returned 0).
    Eof,
    /// The peer reset the connection (e.g. closed with unread input). The connection is closed all
    /// the same.
    Reset,
}

/// A blocking client connection with read-ahead buffer. Every read has [`TIMEOUT`].
pub(crate) struct Client {
    /// The connection.
    pub(crate) stream: TcpStream,
    /// Bytes read from the socket but not yet consumed.
    pub(crate) buf: Vec<u8>,
}

impl Client {
    /// Connects to `addr` (timeout [`TIMEOUT`]) with TCP_NODELAY and read and write timeouts.
    pub(crate) fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes all of `bytes`; panics on error.
    pub(crate) fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write of {} bytes: {e}", bytes.len()));
    }

    /// Writes all of `bytes`, ignoring errors (for requests the server may refuse before it has
    /// read them whole; the response is what the test checks).
    pub(crate) fn send_lossy(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Reads more bytes into `buf`; panics on timeout/error/EOF with `what` in the message.
    fn fill(&mut self, what: &str) {
        let mut tmp = [0u8; 16 * 1024];
        match read_retrying(&mut self.stream, &mut tmp) {
            Ok(0) => panic!(
                "connection closed by server while waiting for {what}; unconsumed bytes: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => panic!(
                "timed out ({TIMEOUT:?}) waiting for {what}; unconsumed bytes: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Err(e) => panic!(
                "read error waiting for {what}: {e}; unconsumed bytes: {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    /// Reads a response head (through CRLFCRLF) and parses it. Header names are kept as sent;
    /// look them up with [`Head::header`] (case-insensitive).
    pub(crate) fn read_head(&mut self) -> Head {
        let end = loop {
            if let Some(pos) = find(&self.buf, b"\r\n\r\n") {
                break pos + 4;
            }
            assert!(
                self.buf.len() < MAX_HEAD,
                "response head over {MAX_HEAD} bytes"
            );
            self.fill("a response head");
        };
        let raw: Vec<u8> = self.buf.drain(..end).collect();
        parse_head(&raw)
    }

    /// Reads exactly `n` bytes.
    pub(crate) fn read_exact_bytes(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.fill(&format!("{n} bytes (have {})", self.buf.len()));
        }
        self.buf.drain(..n).collect()
    }

    /// Reads `expected.len()` bytes and asserts they equal `expected`.
    pub(crate) fn expect_bytes(&mut self, expected: &[u8], what: &str) {
        let got = self.read_exact_bytes(expected.len());
        assert!(
            got == expected,
            "{what}: wrong bytes\n  expected: {:?}\n  got:      {:?}",
            String::from_utf8_lossy(expected),
            String::from_utf8_lossy(&got)
        );
    }

    /// Reads one chunk of a chunked body and returns its data (no extensions expected; the
    /// terminating CRLF is checked). A last chunk (size 0) returns an empty vec.
    pub(crate) fn read_chunk(&mut self) -> Vec<u8> {
        let line_end = loop {
            if let Some(pos) = find(&self.buf, b"\r\n") {
                break pos;
            }
            assert!(
                self.buf.len() < 64,
                "chunk-size line too long: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            self.fill("a chunk-size line");
        };
        let line: Vec<u8> = self.buf.drain(..line_end + 2).collect();
        let size_str = std::str::from_utf8(&line[..line_end]).expect("chunk size not ASCII");
        let size = usize::from_str_radix(size_str, 16)
            .unwrap_or_else(|_| panic!("bad chunk-size line {size_str:?}"));
        let data = self.read_exact_bytes(size);
        let crlf = self.read_exact_bytes(2);
        assert_eq!(crlf, b"\r\n", "chunk data not followed by CRLF");
        data
    }

    /// Reads a response body framed by Content-Length or chunked encoding (keep-alive).
    pub(crate) fn read_body(&mut self, head: &Head) -> Vec<u8> {
        if let Some(te) = head.header("transfer-encoding") {
            assert!(
                te.eq_ignore_ascii_case("chunked"),
                "unexpected transfer-encoding {te}"
            );
            let mut body = Vec::new();
            loop {
                let c = self.read_chunk();
                if c.is_empty() {
                    // No trailers expected: the final CRLF was consumed by read_chunk.
                    return body;
                }
                body.extend_from_slice(&c);
            }
        }
        let len: usize = head
            .header("content-length")
            .unwrap_or_else(|| panic!("response has neither Content-Length nor chunked: {head:?}"))
            .trim()
            .parse()
            .expect("bad Content-Length");
        self.read_exact_bytes(len)
    }

    /// Reads until the server closes the connection (EOF or reset); returns the bytes read after
    /// what was already consumed. Panics if the connection is still open after [`TIMEOUT`].
    pub(crate) fn read_to_close(&mut self) -> (Vec<u8>, Closed) {
        let mut out = std::mem::take(&mut self.buf);
        let mut tmp = [0u8; 16 * 1024];
        loop {
            match read_retrying(&mut self.stream, &mut tmp) {
                Ok(0) => return (out, Closed::Eof),
                Ok(n) => out.extend_from_slice(&tmp[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!(
                        "server did not close the connection within {TIMEOUT:?}; read so far: {:?}",
                        String::from_utf8_lossy(&out)
                    )
                }
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return (out, Closed::Reset),
                Err(e) => panic!("read error waiting for close: {e}"),
            }
        }
    }

    /// Asserts that no byte arrives within `wait` (EOF also counts as "no byte"). Returns
    /// true if the connection was closed.
    pub(crate) fn expect_silence(&mut self, wait: Duration, what: &str) -> bool {
        assert!(
            self.buf.is_empty(),
            "{what}: unexpected bytes already buffered: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        let deadline = Instant::now() + wait;
        let mut tmp = [0u8; 4096];
        let res = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(std::io::Error::from(ErrorKind::TimedOut));
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut tmp) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        self.stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        match res {
            Ok(0) => true,
            Ok(n) => panic!(
                "{what}: unexpected bytes: {:?}",
                String::from_utf8_lossy(&tmp[..n])
            ),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
            Err(e) => panic!("{what}: read error: {e}"),
        }
    }

    /// Non-blocking check: asserts nothing is readable right now (data already queued in the
    /// kernel counts; EOF does not).
    pub(crate) fn expect_nothing_pending(&mut self, what: &str) {
        assert!(
            self.buf.is_empty(),
            "{what}: unexpected bytes already buffered: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.stream.set_nonblocking(true).unwrap();
        let mut tmp = [0u8; 4096];
        let res = read_retrying(&mut self.stream, &mut tmp);
        self.stream.set_nonblocking(false).unwrap();
        match res {
            Ok(0) => panic!("{what}: the server closed the connection"),
            Ok(n) => panic!(
                "{what}: unexpected extra bytes: {:?}",
                String::from_utf8_lossy(&tmp[..n])
            ),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("{what}: read error: {e}"),
        }
    }

    /// Closes both directions.
    pub(crate) fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// `read`, retried on EINTR as `std::io::Read` documents. (A signal, or io_uring task work queued
/// to this thread, interrupts a blocking socket read with EINTR even under SA_RESTART when the
/// socket has a receive timeout.) Each retry restarts the [`TIMEOUT`].
pub(crate) fn read_retrying(stream: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Sends one request on a fresh connection and returns the response head and the rest of
/// what the server sent until it closed the connection. For error responses, which must close.
pub(crate) fn request_expect_close(addr: SocketAddr, request: &[u8]) -> (Head, Vec<u8>, Closed) {
    let mut c = Client::connect(addr);
    c.send_lossy(request);
    let head = c.read_head();
    let (rest, how) = c.read_to_close();
    (head, rest, how)
}

/// Asserts that `request` on a fresh connection to `addr` gets status `code` and that the server
/// then closes the connection.
pub(crate) fn expect_error(addr: SocketAddr, request: &[u8], code: u16, what: &str) -> Head {
    let mut c = Client::connect(addr);
    c.send_lossy(request);
    let head = c.read_head();
    assert!(
        head.status == code,
        "{what}: expected status {code}, got {:?}; request was {:?}",
        head.status_line,
        truncate(request)
    );
    head.expect_status(code);
    let _ = c.read_to_close();
    head
}

/// `b` as text for a failure message, cut after 200 bytes.
pub(crate) fn truncate(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.len() > 200 {
        format!("{}... ({} bytes)", &s[..200], b.len())
    } else {
        s.into_owned()
    }
}
