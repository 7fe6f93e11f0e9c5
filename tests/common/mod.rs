//! Helpers shared by the integration tests: start a server, a tiny blocking HTTP/1.1 client
//! over `std::net::TcpStream` (every read has a timeout, so a broken server fails a test
//! instead of hanging it), subscriber and publisher wrappers, and the exact bytes the spec
//! gives for a message chunk.
//!
//! Each test binary compiles this module separately and uses only part of it.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use uring_comet::config::{Backend, ServerConfig};
use uring_comet::server::ServerHandle;

/// How long one read may block before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Most bytes a response head may have before the client gives up on it.
const MAX_HEAD: usize = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Server

thread_local! {
    /// The backend the current test body runs on (set by [`both_backends!`]).
    static BACKEND: std::cell::Cell<Backend> = const { std::cell::Cell::new(Backend::Uring) };
}

/// Runs `body` with servers started on `backend` (this thread only).
pub fn with_backend(backend: Backend, body: fn()) {
    BACKEND.with(|b| b.set(backend));
    body();
}

/// The backend of the running test body.
pub fn backend() -> Backend {
    BACKEND.with(|b| b.get())
}

/// Declares test functions whose one body runs twice: as `<name>::uring` on the io_uring
/// backend and as `<name>::epoll` on the epoll baseline.
#[macro_export]
macro_rules! both_backends {
    ($($(#[$meta:meta])* fn $name:ident() $body:block)*) => {$(
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn body() $body
            #[test]
            fn uring() {
                $crate::common::with_backend(uring_comet::config::Backend::Uring, body)
            }
            #[test]
            fn epoll() {
                $crate::common::with_backend(uring_comet::config::Backend::Epoll, body)
            }
        }
    )*};
}

/// Starts an in-process server with `shards` shards on 127.0.0.1 port 0.
pub fn start(shards: usize) -> ServerHandle {
    start_with(ServerConfig::local(shards))
}

/// Starts an in-process server with the given settings, on the test body's backend.
pub fn start_with(mut cfg: ServerConfig) -> ServerHandle {
    cfg.backend = backend();
    let server = uring_comet::server::start(cfg).expect("server::start failed");
    assert_eq!(
        server.backend(),
        backend(),
        "the server runs another backend than asked"
    );
    let s = server.subscriber_addr();
    let p = server.publish_addr();
    assert!(
        s.ip().is_loopback() && s.port() != 0,
        "subscriber_addr {s} is not a bound loopback address"
    );
    assert!(
        p.ip().is_loopback() && p.port() != 0,
        "publish_addr {p} is not a bound loopback address"
    );
    assert_ne!(
        s, p,
        "the subscriber and publish listeners must be separate"
    );
    server
}

/// The server binary run as a child process; killed (by pid, through `Child::kill`) and
/// reaped on drop, so a failing test leaves no process behind.
pub struct ChildServer {
    pub child: Child,
    pub subscriber: SocketAddr,
    pub publish: SocketAddr,
    /// The `LISTEN ...` line exactly as printed (without the newline).
    pub listen_line: String,
}

impl ChildServer {
    /// Runs `uring-comet serve --listen 127.0.0.1:0 --publish-listen 127.0.0.1:0 --shards N`
    /// and waits (at most 10 s) for its `LISTEN subscriber=... publish=...` stdout line.
    pub fn spawn(shards: usize) -> ChildServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_uring-comet"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--publish-listen",
                "127.0.0.1:0",
                "--shards",
                &shards.to_string(),
                "--backend",
                &backend().to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn uring-comet serve");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut r = std::io::BufReader::new(stdout);
            let mut line = String::new();
            let res = r.read_line(&mut line).map(|_| line.clone());
            let _ = tx.send(res);
            // Keep draining so the child never blocks on a full pipe.
            let mut sink = Vec::new();
            let _ = r.read_to_end(&mut sink);
        });
        // Build the guard first so that a failed wait still kills the child.
        let mut guard = ChildServer {
            child,
            subscriber: "0.0.0.0:0".parse().unwrap(),
            publish: "0.0.0.0:0".parse().unwrap(),
            listen_line: String::new(),
        };
        let line = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => panic!("reading the server's stdout: {e}"),
            Err(_) => panic!("the server printed no LISTEN line within 10 s"),
        };
        let line = line
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("LISTEN line not newline-terminated: {line:?}"));
        let (s, p) = parse_listen_line(line).unwrap_or_else(|| {
            panic!(
                "stdout line is not `LISTEN subscriber=127.0.0.1:P publish=127.0.0.1:Q`: {line:?}"
            )
        });
        guard.subscriber = s;
        guard.publish = p;
        guard.listen_line = line.to_string();
        guard
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses `LISTEN subscriber=A publish=B` exactly (single spaces, nothing else on the line).
pub fn parse_listen_line(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.strip_prefix("LISTEN subscriber=")?;
    let (s, rest) = rest.split_once(' ')?;
    let p = rest.strip_prefix("publish=")?;
    Some((s.parse().ok()?, p.parse().ok()?))
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP client

/// A parsed response head.
#[derive(Debug, Clone)]
pub struct Head {
    /// The status line without CRLF, e.g. `HTTP/1.1 200 OK`.
    pub status_line: String,
    pub status: u16,
    /// Header fields in order received; names as sent.
    pub headers: Vec<(String, String)>,
    /// The raw head bytes including the final CRLFCRLF.
    pub raw: Vec<u8>,
}

impl Head {
    /// The value of header `name` (case-insensitive); panics if it appears more than once.
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut found = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name));
        let first = found.next().map(|(_, v)| v.as_str());
        assert!(
            found.next().is_none(),
            "header {name} appears more than once in {self:?}"
        );
        first
    }

    /// Asserts that header `name` is present with `value` (value compared ASCII-case-insensitively,
    /// as media types, charsets and transfer codings are).
    pub fn expect_header(&self, name: &str, value: &str) {
        match self.header(name) {
            Some(v) if v.eq_ignore_ascii_case(value) => {}
            other => panic!(
                "expected header `{name}: {value}`, got {other:?}; head:\n{}",
                String::from_utf8_lossy(&self.raw)
            ),
        }
    }

    /// Asserts the status line is exactly `HTTP/1.1 200 OK`.
    pub fn expect_200(&self) {
        assert_eq!(
            self.status_line,
            "HTTP/1.1 200 OK",
            "head:\n{}",
            String::from_utf8_lossy(&self.raw)
        );
    }

    /// Asserts the status line is `HTTP/1.1 <code> <any reason>`.
    pub fn expect_status(&self, code: u16) {
        assert!(
            self.status_line.starts_with(&format!("HTTP/1.1 {code}"))
                && self
                    .status_line
                    .as_bytes()
                    .get(12)
                    .is_none_or(|&b| b == b' '),
            "expected status {code}, got status line {:?}; head:\n{}",
            self.status_line,
            String::from_utf8_lossy(&self.raw)
        );
        assert_eq!(self.status, code);
    }
}

/// What a read that must end the connection saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// Orderly close (read returned 0).
    Eof,
    /// The peer reset the connection (e.g. closed with unread input). The connection is closed all
    /// the same.
    Reset,
}

/// A blocking client connection with read-ahead buffer. Every read has [`TIMEOUT`].
pub struct Client {
    pub stream: TcpStream,
    /// Bytes read from the socket but not yet consumed.
    pub buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
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
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write of {} bytes: {e}", bytes.len()));
    }

    /// Writes all of `bytes`, ignoring errors (for requests the server may refuse before it has
    /// read them whole; the response is what the test checks).
    pub fn send_lossy(&mut self, bytes: &[u8]) {
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
    pub fn read_head(&mut self) -> Head {
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
    pub fn read_exact_bytes(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.fill(&format!("{n} bytes (have {})", self.buf.len()));
        }
        self.buf.drain(..n).collect()
    }

    /// Reads `expected.len()` bytes and asserts they equal `expected`.
    pub fn expect_bytes(&mut self, expected: &[u8], what: &str) {
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
    pub fn read_chunk(&mut self) -> Vec<u8> {
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
    pub fn read_body(&mut self, head: &Head) -> Vec<u8> {
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
    pub fn read_to_close(&mut self) -> (Vec<u8>, Closed) {
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
    pub fn expect_silence(&mut self, wait: Duration, what: &str) -> bool {
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
    pub fn expect_nothing_pending(&mut self, what: &str) {
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
    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// `read`, retried on EINTR as `std::io::Read` documents. (A signal, or io_uring task work queued
/// to this thread, interrupts a blocking socket read with EINTR even under SA_RESTART when the
/// socket has a receive timeout.) Each retry restarts the [`TIMEOUT`].
pub fn read_retrying(stream: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses a raw response head (status line, header fields, CRLFCRLF).
pub fn parse_head(raw: &[u8]) -> Head {
    let text = std::str::from_utf8(raw).unwrap_or_else(|_| {
        panic!(
            "response head is not UTF-8: {:?}",
            String::from_utf8_lossy(raw)
        )
    });
    let body = text
        .strip_suffix("\r\n\r\n")
        .expect("head must end with CRLFCRLF");
    let mut lines = body.split("\r\n");
    let status_line = lines.next().unwrap().to_string();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    assert_eq!(version, "HTTP/1.1", "bad status line {status_line:?}");
    let code = parts.next().unwrap_or("");
    assert!(code.len() == 3, "bad status code in {status_line:?}");
    let status: u16 = code
        .parse()
        .unwrap_or_else(|_| panic!("bad status line {status_line:?}"));
    let mut headers = Vec::new();
    for line in lines {
        assert!(
            !line.contains('\n') && !line.contains('\r'),
            "bare CR/LF in head: {text:?}"
        );
        let (name, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("header line without colon: {line:?} in {text:?}"));
        assert!(
            !name.is_empty() && !name.contains(' ') && !name.contains('\t'),
            "bad header name {name:?} in {text:?}"
        );
        headers.push((
            name.to_string(),
            value.trim_matches(|c| c == ' ' || c == '\t').to_string(),
        ));
    }
    Head {
        status_line,
        status,
        headers,
        raw: raw.to_vec(),
    }
}

/// Sends one request on a fresh connection and returns the response head and the rest of
/// what the server sent until it closed the connection. For error responses, which must close.
pub fn request_expect_close(addr: SocketAddr, request: &[u8]) -> (Head, Vec<u8>, Closed) {
    let mut c = Client::connect(addr);
    c.send_lossy(request);
    let head = c.read_head();
    let (rest, how) = c.read_to_close();
    (head, rest, how)
}

/// Asserts that `request` on a fresh connection to `addr` gets status `code` and that the server
/// then closes the connection.
pub fn expect_error(addr: SocketAddr, request: &[u8], code: u16, what: &str) -> Head {
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

fn truncate(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.len() > 200 {
        format!("{}... ({} bytes)", &s[..200], b.len())
    } else {
        s.into_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// The comet protocol

/// `& < > " '` escaped as the spec says.
pub fn html_escape(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len());
    for &b in msg {
        match b {
            b'&' => out.extend_from_slice(b"&amp;"),
            b'<' => out.extend_from_slice(b"&lt;"),
            b'>' => out.extend_from_slice(b"&gt;"),
            b'"' => out.extend_from_slice(b"&quot;"),
            b'\'' => out.extend_from_slice(b"&#39;"),
            _ => out.push(b),
        }
    }
    out
}

/// The data of message `n` on a connection: `Recvd msg #N: 'MSG'<br/>\n`, MSG escaped.
pub fn msg_data(n: u64, msg: &[u8]) -> Vec<u8> {
    let mut d = format!("Recvd msg #{n}: '").into_bytes();
    d.extend_from_slice(&html_escape(msg));
    d.extend_from_slice(b"'<br/>\n");
    d
}

/// One chunk carrying `data`: lowercase hex size, CRLF, data, CRLF.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut c = format!("{:x}\r\n", data.len()).into_bytes();
    c.extend_from_slice(data);
    c.extend_from_slice(b"\r\n");
    c
}

/// The exact bytes of message `n` on a subscriber stream.
pub fn msg_chunk(n: u64, msg: &[u8]) -> Vec<u8> {
    chunk(&msg_data(n, msg))
}

/// A subscriber connection whose response head has been read and checked.
pub struct Subscriber {
    pub client: Client,
    pub head: Head,
    /// Messages received so far on this connection.
    pub received: u64,
}

/// Checks the head of a subscriber stream (GET or HEAD).
pub fn check_stream_head(head: &Head) {
    head.expect_200();
    head.expect_header("content-type", "text/html; charset=utf-8");
    head.expect_header("transfer-encoding", "chunked");
    assert!(
        head.header("content-length").is_none(),
        "a chunked stream must not carry Content-Length: {}",
        String::from_utf8_lossy(&head.raw)
    );
}

impl Subscriber {
    /// Connects, sends `GET /test/<ids> HTTP/1.1`, reads and checks the head.
    pub fn connect(addr: SocketAddr, ids: &str) -> Subscriber {
        let mut client = Client::connect(addr);
        client.send(format!("GET /test/{ids} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes());
        let head = client.read_head();
        check_stream_head(&head);
        Subscriber {
            client,
            head,
            received: 0,
        }
    }

    /// Reads the next message and asserts it is exactly the chunk for `msg` with the next number.
    pub fn expect_msg(&mut self, msg: &[u8]) {
        self.received += 1;
        let expected = msg_chunk(self.received, msg);
        let what = format!("message #{} ({:?})", self.received, truncate(msg));
        self.client.expect_bytes(&expected, &what);
    }

    /// Reads the next chunk, checks it is exactly `Recvd msg #<next>: '...'<br/>\n` in form, and
    /// returns the (still escaped) message text between the quotes.
    pub fn next_msg(&mut self) -> Vec<u8> {
        self.received += 1;
        let data = self.client.read_chunk();
        let prefix = format!("Recvd msg #{}: '", self.received);
        assert!(
            data.starts_with(prefix.as_bytes()) && data.ends_with(b"'<br/>\n"),
            "chunk is not `{prefix}...'<br/>\\n`: {:?}",
            String::from_utf8_lossy(&data)
        );
        data[prefix.len()..data.len() - 7].to_vec()
    }

    pub fn close(self) {
        self.client.close()
    }
}

/// A keep-alive connection to the publish listener.
pub struct Publisher {
    pub client: Client,
}

/// The request bytes of `POST /send/<id>` with body `msg`.
pub fn send_request(id: &str, msg: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST /send/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
        msg.len()
    )
    .into_bytes();
    r.extend_from_slice(msg);
    r
}

/// Parses exactly `{"delivered":N}`.
pub fn parse_delivered(body: &[u8]) -> u64 {
    let s = std::str::from_utf8(body).expect("publish reply body not UTF-8");
    let n = s
        .strip_prefix("{\"delivered\":")
        .and_then(|r| r.strip_suffix('}'))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_else(|| panic!("publish reply body is not exactly {{\"delivered\":N}}: {s:?}"));
    n.parse().unwrap()
}

impl Publisher {
    pub fn connect(addr: SocketAddr) -> Publisher {
        Publisher {
            client: Client::connect(addr),
        }
    }

    /// Reads one publish reply (head and body) and returns N of `{"delivered":N}`.
    pub fn read_reply(&mut self) -> u64 {
        let head = self.client.read_head();
        head.expect_200();
        head.expect_header("content-type", "application/json");
        let body = self.client.read_body(&head);
        parse_delivered(&body)
    }

    /// `POST /send/<id>` with body `msg`; returns N of `{"delivered":N}`.
    pub fn send(&mut self, id: &str, msg: &[u8]) -> u64 {
        self.client.send(&send_request(id, msg));
        self.read_reply()
    }

    /// `GET /stats`; returns the JSON body.
    pub fn stats(&mut self) -> String {
        self.client
            .send(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        let head = self.client.read_head();
        head.expect_200();
        let ct = head.header("content-type").unwrap_or("");
        assert!(
            ct.to_ascii_lowercase().starts_with("application/json"),
            "GET /stats Content-Type should be application/json, got {ct:?}"
        );
        let body = self.client.read_body(&head);
        String::from_utf8(body).expect("stats not UTF-8")
    }
}

/// One-shot publish on a fresh connection.
pub fn publish(addr: SocketAddr, id: &str, msg: &[u8]) -> u64 {
    Publisher::connect(addr).send(id, msg)
}

/// Extracts the number after `"key":` from a JSON text (a tiny extractor: top-level or nested,
/// first occurrence). Panics if the key is missing or its value is not a JSON number.
pub fn json_number(json: &str, key: &str) -> f64 {
    let pat = format!("\"{key}\"");
    let pos = json
        .find(&pat)
        .unwrap_or_else(|| panic!("key {key:?} missing from stats JSON: {json}"));
    let rest = json[pos + pat.len()..].trim_start();
    let rest = rest
        .strip_prefix(':')
        .unwrap_or_else(|| panic!("no ':' after {key:?} in {json}"))
        .trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E')))
        .unwrap_or(rest.len());
    let tok = &rest[..end];
    assert!(
        !tok.is_empty() && (tok.starts_with('-') || tok.as_bytes()[0].is_ascii_digit()),
        "value of {key:?} is not a JSON number in {json}"
    );
    tok.parse()
        .unwrap_or_else(|_| panic!("value of {key:?} ({tok:?}) is not a number in {json}"))
}

/// Polls `cond` every 10 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Makes sure this process may open `n` file descriptors (raises the soft limit up to the hard
/// one if needed). Panics with a clear message if it cannot.
pub fn ensure_fd_limit(n: u64) {
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

// ---------------------------------------------------------------------------------------------
// `/sub/` negotiated streams: raw, SSE, WebSocket

/// The key of RFC 6455 section 1.3's example handshake, and its `Sec-WebSocket-Accept`.
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// `GET /sub/<ids> HTTP/1.1` with a Host line and `extra` header lines (each ending CRLF).
pub fn sub_get(ids: &str, extra: &str) -> Vec<u8> {
    format!("GET /sub/{ids} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n").into_bytes()
}

/// The header lines of an SSE request.
pub const SSE_HEADERS: &str = "Accept: text/event-stream\r\n";

/// The header lines of a WebSocket upgrade with [`WS_KEY`].
pub fn ws_headers() -> String {
    format!(
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {WS_KEY}\r\n"
    )
}

impl Head {
    /// Asserts that header `name` is absent.
    pub fn expect_no_header(&self, name: &str) {
        assert!(
            self.header(name).is_none(),
            "header {name} must not be sent; head:\n{}",
            String::from_utf8_lossy(&self.raw)
        );
    }

    /// Asserts the header value exactly (case-sensitive: for values that are not tokens).
    pub fn expect_header_exact(&self, name: &str, value: &str) {
        assert_eq!(
            self.header(name),
            Some(value),
            "header {name}; head:\n{}",
            String::from_utf8_lossy(&self.raw)
        );
    }
}

/// The stream headers every `/test/` and `/sub/` (raw, SSE) response carries, with the
/// default CORS setting: 200, `content_type`, no-cache, `X-Accel-Buffering: no`, `*`; then
/// chunked for HTTP/1.1 or `Connection: close` and no Transfer-Encoding for HTTP/1.0.
pub fn check_negotiated_head(head: &Head, content_type: &str, http10: bool) {
    head.expect_200();
    head.expect_header("content-type", content_type);
    head.expect_header("cache-control", "no-cache");
    head.expect_header("x-accel-buffering", "no");
    head.expect_header_exact("access-control-allow-origin", "*");
    head.expect_no_header("content-length");
    if http10 {
        head.expect_no_header("transfer-encoding");
        head.expect_header("connection", "close");
    } else {
        head.expect_header("transfer-encoding", "chunked");
        head.expect_no_header("connection");
    }
}

/// The SSE opening comment chunk sent right after the head.
pub const SSE_HI: &[u8] = b"6\r\n: hi\n\n\r\n";

/// Opens `GET /sub/<ids>` as SSE (HTTP/1.1), checks the head and the opening comment chunk.
pub fn sse_connect(addr: SocketAddr, ids: &str) -> Client {
    let mut c = Client::connect(addr);
    c.send(&sub_get(ids, SSE_HEADERS));
    let head = c.read_head();
    check_negotiated_head(&head, "text/event-stream", false);
    c.expect_bytes(SSE_HI, "SSE opening comment chunk");
    c
}

/// Opens `GET /sub/<ids>` without negotiation (raw, HTTP/1.1) and checks the head.
pub fn raw_connect(addr: SocketAddr, ids: &str) -> Client {
    let mut c = Client::connect(addr);
    c.send(&sub_get(ids, ""));
    let head = c.read_head();
    check_negotiated_head(&head, "text/plain; charset=utf-8", false);
    c
}

/// Checks a `101 Switching Protocols` answer to a handshake with [`WS_KEY`].
pub fn check_ws_101(head: &Head) {
    assert_eq!(
        head.status_line,
        "HTTP/1.1 101 Switching Protocols",
        "head:\n{}",
        String::from_utf8_lossy(&head.raw)
    );
    head.expect_header("upgrade", "websocket");
    head.expect_header("connection", "upgrade");
    head.expect_header_exact("sec-websocket-accept", WS_ACCEPT);
    head.expect_no_header("transfer-encoding");
    head.expect_no_header("content-length");
}

/// Opens `GET /sub/<ids>` as a WebSocket (raw bytes, RFC 6455 handshake with [`WS_KEY`]).
pub fn ws_connect(addr: SocketAddr, ids: &str) -> Client {
    let mut c = Client::connect(addr);
    c.send(&sub_get(ids, &ws_headers()));
    let head = c.read_head();
    check_ws_101(&head);
    c
}

/// A client frame (RFC 6455 section 5.2): first byte `b0` (FIN, RSV, opcode) as given, the
/// payload masked with `mask` (or sent unmasked for `None`), the shortest length encoding.
pub fn ws_client_frame(b0: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![b0];
    let m = if mask.is_some() { 0x80 } else { 0 };
    ws_len(&mut f, m, payload.len());
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

fn ws_len(f: &mut Vec<u8>, mask_bit: u8, len: usize) {
    if len < 126 {
        f.push(mask_bit | len as u8);
    } else if len < 65536 {
        f.push(mask_bit | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(mask_bit | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// The exact bytes of an unmasked server frame: `b0`, shortest length, payload.
pub fn ws_server_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![b0];
    ws_len(&mut f, 0, payload.len());
    f.extend_from_slice(payload);
    f
}

/// The exact bytes of a server close frame with `code`.
pub fn ws_close_frame(code: u16) -> Vec<u8> {
    ws_server_frame(0x88, &code.to_be_bytes())
}

impl Client {
    /// Reads one server WebSocket frame; asserts it is unmasked and uses the shortest length
    /// encoding (section 5.2: "the minimal number of bytes MUST be used"). Returns the first
    /// byte and the payload.
    pub fn read_ws_frame(&mut self) -> (u8, Vec<u8>) {
        let h = self.read_exact_bytes(2);
        assert_eq!(h[1] & 0x80, 0, "server frame is masked: {h:02x?}");
        let len = match h[1] & 0x7f {
            126 => {
                let b = self.read_exact_bytes(2);
                let n = u16::from_be_bytes([b[0], b[1]]) as usize;
                assert!(n >= 126, "length {n} in a 16-bit field");
                n
            }
            127 => {
                let b = self.read_exact_bytes(8);
                let n = u64::from_be_bytes(b.try_into().unwrap());
                assert!(n >= 65536 && n >> 63 == 0, "length {n} in a 64-bit field");
                n as usize
            }
            n => n as usize,
        };
        (h[0], self.read_exact_bytes(len))
    }
}

/// What a WHATWG EventSource hands to `onmessage` for a published payload: the payload with
/// every CRLF, CR and LF line end as LF (the event-stream format cannot carry CR).
pub fn sse_normalized(payload: &[u8]) -> String {
    let s = std::str::from_utf8(payload).expect("SSE test payloads are UTF-8");
    s.replace("\r\n", "\n").replace('\r', "\n")
}

/// Chunks of a chunked stream as a byte source for a streaming parser; every read has
/// [`TIMEOUT`], and a zero-length chunk (the end of the body) fails the test.
pub struct ChunkSource<'a> {
    pub client: &'a mut Client,
}

impl Iterator for ChunkSource<'_> {
    type Item = Result<Vec<u8>, std::convert::Infallible>;

    fn next(&mut self) -> Option<Self::Item> {
        let c = self.client.read_chunk();
        assert!(
            !c.is_empty(),
            "zero-length chunk: the server ended a stream that must stay open"
        );
        Some(Ok(c))
    }
}

/// The events of an SSE stream (its head and opening comment already read) as parsed by the
/// `eventsource-stream` crate, an implementation of the WHATWG event-stream parser: a real
/// client, not our own reading of the format.
pub fn sse_events(client: &mut Client) -> impl Iterator<Item = eventsource_stream::Event> + '_ {
    let bytes = futures::stream::iter(ChunkSource { client });
    futures::executor::block_on_stream(eventsource_stream::EventStream::new(bytes))
        .map(|r| r.unwrap_or_else(|e| panic!("the SSE client could not parse the stream: {e}")))
}
