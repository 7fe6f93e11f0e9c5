//! The negotiated streams of `/sub/<ids>`: raw chunked text, SSE (`Accept:
//! text/event-stream`, WHATWG HTML section 9.2) and WebSocket (RFC 6455): the requests,
//! head checks, opening handshakes, exact frame bytes, and a real SSE parser
//! (`eventsource-stream`) to read a stream as a browser would.

use std::net::SocketAddr;

use super::client::Client;
use super::http::Head;

/// The key of RFC 6455 section 1.3's example handshake.
pub(crate) const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// The `Sec-WebSocket-Accept` of [`WS_KEY`] (RFC 6455 section 1.3).
pub(crate) const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// `GET /sub/<ids> HTTP/1.1` with a Host line and `extra` header lines (each ending CRLF).
pub(crate) fn sub_get(ids: &str, extra: &str) -> Vec<u8> {
    format!("GET /sub/{ids} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n").into_bytes()
}

/// The header lines of an SSE request.
pub(crate) const SSE_HEADERS: &str = "Accept: text/event-stream\r\n";

/// The header lines of a WebSocket upgrade with [`WS_KEY`].
pub(crate) fn ws_headers() -> String {
    format!(
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {WS_KEY}\r\n"
    )
}

/// The stream headers every `/test/` and `/sub/` (raw, SSE) response carries, with the
/// default CORS setting: 200, `content_type`, no-cache, `X-Accel-Buffering: no`, `*`; then
/// chunked for HTTP/1.1 or `Connection: close` and no Transfer-Encoding for HTTP/1.0.
pub(crate) fn check_negotiated_head(head: &Head, content_type: &str, http10: bool) {
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
pub(crate) const SSE_HI: &[u8] = b"6\r\n: hi\n\n\r\n";

/// Opens `GET <path>` in HTTP/1.0 with `extra` header lines; returns the client and head.
pub(crate) fn get10(addr: SocketAddr, path: &str, extra: &str) -> (Client, Head) {
    let mut c = Client::connect(addr);
    c.send(format!("GET {path} HTTP/1.0\r\n{extra}\r\n").as_bytes());
    let head = c.read_head();
    (c, head)
}

/// Opens `GET /sub/<ids>` as SSE (HTTP/1.1), checks the head and the opening comment chunk.
pub(crate) fn sse_connect(addr: SocketAddr, ids: &str) -> Client {
    let mut c = Client::connect(addr);
    c.send(&sub_get(ids, SSE_HEADERS));
    let head = c.read_head();
    check_negotiated_head(&head, "text/event-stream", false);
    c.expect_bytes(SSE_HI, "SSE opening comment chunk");
    c
}

/// Opens `GET /sub/<ids>` without negotiation (raw, HTTP/1.1) and checks the head.
pub(crate) fn raw_connect(addr: SocketAddr, ids: &str) -> Client {
    let mut c = Client::connect(addr);
    c.send(&sub_get(ids, ""));
    let head = c.read_head();
    check_negotiated_head(&head, "text/plain; charset=utf-8", false);
    c
}

/// Checks a `101 Switching Protocols` answer to a handshake with [`WS_KEY`].
pub(crate) fn check_ws_101(head: &Head) {
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
pub(crate) fn ws_connect(addr: SocketAddr, ids: &str) -> Client {
    let mut c = Client::connect(addr);
    c.send(&sub_get(ids, &ws_headers()));
    let head = c.read_head();
    check_ws_101(&head);
    c
}

/// The masking key of the tests' client frames (RFC 6455 section 5.3: a client masks).
pub(crate) const MASK: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);

/// A client frame (RFC 6455 section 5.2): first byte `b0` (FIN, RSV, opcode) as given, the
/// payload masked with `mask` (or sent unmasked for `None`), the shortest length encoding.
pub(crate) fn ws_client_frame(b0: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
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

/// Appends the shortest length encoding of `len` (RFC 6455 section 5.2) with `mask_bit`.
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
pub(crate) fn ws_server_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![b0];
    ws_len(&mut f, 0, payload.len());
    f.extend_from_slice(payload);
    f
}

impl Client {
    /// Reads one server WebSocket frame; asserts it is unmasked and uses the shortest length
    /// encoding (section 5.2: "the minimal number of bytes MUST be used"). Returns the first
    /// byte and the payload.
    pub(crate) fn read_ws_frame(&mut self) -> (u8, Vec<u8>) {
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
pub(crate) fn sse_normalized(payload: &[u8]) -> String {
    let s = std::str::from_utf8(payload).expect("SSE test payloads are UTF-8");
    s.replace("\r\n", "\n").replace('\r', "\n")
}

/// Chunks of a chunked stream as a byte source for a streaming parser; every read has
/// [`TIMEOUT`], and a zero-length chunk (the end of the body) fails the test.
pub(crate) struct ChunkSource<'a> {
    /// The stream, its head already read.
    pub(crate) client: &'a mut Client,
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
pub(crate) fn sse_events(
    client: &mut Client,
) -> impl Iterator<Item = eventsource_stream::Event> + '_ {
    let bytes = futures::stream::iter(ChunkSource { client });
    futures::executor::block_on_stream(eventsource_stream::EventStream::new(bytes))
        .map(|r| r.unwrap_or_else(|e| panic!("the SSE client could not parse the stream: {e}")))
}
