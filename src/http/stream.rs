//! Subscriber stream framing (sans-IO): what each protocol puts on the wire for a response
//! head, a message and a heartbeat.
//!
//! | protocol | request | message | heartbeat |
//! |---|---|---|---|
//! | seed | `GET /test/<id>` | chunk `Recvd msg #N: 'MSG'<br/>\n` (MSG HTML-escaped) | chunk `\n` (HTML whitespace) |
//! | raw | `GET /sub/<id>` | chunk = the body verbatim; an empty body sends nothing | none (any byte would be payload) |
//! | SSE | `GET /sub/<id>` with `Accept: text/event-stream` | one event: a `data:` line per payload line, blank line | comment `: ping\n\n` |
//! | WebSocket | `GET /sub/<id>` with `Upgrade: websocket` | one text frame (binary if not UTF-8) | ping frame |
//!
//! SSE follows the WHATWG HTML standard, "Server-sent events": CR, LF and CRLF all end a
//! line, so a payload can neither end its event early nor inject `event:`, `id:` or `retry:`
//! fields; an empty payload is `data: \n\n`. These are the bytes with history off; with
//! history on, a stream's opening and each message carry its cursor (`id:` on SSE; see
//! [`super::resume`]). Over HTTP/1.1 every stream but WebSocket is in chunked
//! transfer coding (RFC 9112 section 7.1) and no chunk is ever empty (an empty chunk ends the
//! body); HTTP/1.0 clients get the same bytes unchunked, ended by close.

use std::io::Write;

use super::response::{chunk_with, seed_chunk};
use super::ws;
use crate::friends::FriendEvent;

/// Subscriber protocol, as kept in the connection record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Proto {
    /// The seed's HTML chunks (`/test/`).
    Seed = 0,
    /// Bodies verbatim (`/sub/`, no negotiation).
    Raw = 1,
    /// Server-sent events.
    Sse = 2,
    /// WebSocket.
    Ws = 3,
    /// Long-polling (`/poll/`): one JSON answer, then close.
    Poll = 4,
}

/// Bit of the record's protocol byte: the stream carries cursors (SSE `id:` lines; the
/// cursor mode of WebSocket and raw streams, `cursors=1`; every poll answer).
pub const CURSORS: u8 = 0x80;

/// The bits of the record's protocol byte that name the [`Proto`]; the high four are flags
/// ([`CURSORS`] and the shard's own).
const PROTO_BITS: u8 = 0x0f;

impl Proto {
    /// From the record's byte (its flag bits ignored).
    pub fn from_u8(b: u8) -> Proto {
        match b & PROTO_BITS {
            1 => Proto::Raw,
            2 => Proto::Sse,
            3 => Proto::Ws,
            4 => Proto::Poll,
            _ => Proto::Seed,
        }
    }
}

/// Appends `data` as one chunk (or raw when `!chunked`); nothing for empty data.
pub fn chunk(out: &mut Vec<u8>, data: &[u8], chunked: bool) {
    if data.is_empty() {
        return;
    }
    if chunked {
        let _ = write!(out, "{:x}\r\n", data.len());
    }
    out.extend_from_slice(data);
    if chunked {
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends the SSE event for `msg` (see the module doc).
pub fn sse_event(out: &mut Vec<u8>, msg: &[u8]) {
    let mut rest = msg;
    loop {
        let end = rest.iter().position(|&b| b == b'\n' || b == b'\r');
        out.extend_from_slice(b"data: ");
        match end {
            None => {
                out.extend_from_slice(rest);
                out.push(b'\n');
                break;
            }
            Some(e) => {
                out.extend_from_slice(&rest[..e]);
                out.push(b'\n');
                let skip = if rest[e] == b'\r' && rest.get(e + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = &rest[e + skip..];
            }
        }
    }
    out.push(b'\n');
}

/// Appends message `msg`, the `n`th on its connection, in protocol `proto`. Returns false
/// if the protocol has no bytes for it (an empty message on a raw stream).
pub fn message(out: &mut Vec<u8>, proto: Proto, chunked: bool, n: u32, msg: &[u8]) -> bool {
    match proto {
        Proto::Seed => seed_chunk(out, n, msg, chunked),
        Proto::Raw => {
            if msg.is_empty() {
                return false;
            }
            chunk(out, msg, chunked);
        }
        // One event, one chunk, written in place (no copy per subscriber).
        Proto::Sse => chunk_with(out, chunked, |out| sse_event(out, msg)),
        Proto::Ws => ws::message(out, msg),
        // A poll's answer is written whole by the shard (`http::resume::poll_answer`).
        Proto::Poll => return false,
    }
    true
}

/// Appends friends event `ev` (its `msg` from user `from`), the `n`th message on its
/// connection, in protocol `proto`; `json` is the event as `{"from":"<from>","msg":"..."}`
/// (JSON-escaped), `event` its SSE event type (`friend`, or `presence` for a friend's
/// online/offline change).
///
/// | protocol | bytes |
/// |---|---|
/// | seed | chunk `Recvd msg #N from <from>: 'MSG'<br/>\n` (MSG HTML-escaped) |
/// | SSE | event `event: <event>\ndata: <json>\n\n` |
/// | WebSocket | text frame `<json>` |
/// | raw | chunk `<json>` |
pub fn friend_message(out: &mut Vec<u8>, proto: Proto, chunked: bool, n: u32, ev: &FriendEvent) {
    let (from, msg, json, event) = (ev.from, &ev.msg[..], &ev.json[..], ev.sse_event);
    match proto {
        Proto::Seed => chunk_with(out, chunked, |out| {
            let _ = write!(out, "Recvd msg #{n} from {from}: '");
            super::response::html_escape(out, msg);
            out.extend_from_slice(b"'<br/>\n");
        }),
        Proto::Raw => chunk(out, json, chunked),
        // JSON escapes every line end, so the data is one line.
        Proto::Sse => chunk_with(out, chunked, |out| {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(event.as_bytes());
            out.extend_from_slice(b"\ndata: ");
            out.extend_from_slice(json);
            out.extend_from_slice(b"\n\n");
        }),
        Proto::Ws => ws::message(out, json),
        Proto::Poll => {}
    }
}

/// Appends the heartbeat of `proto`; returns false if it has none.
pub fn heartbeat(out: &mut Vec<u8>, proto: Proto, chunked: bool) -> bool {
    match proto {
        Proto::Seed => chunk(out, b"\n", chunked),
        Proto::Raw | Proto::Poll => return false,
        Proto::Sse => chunk(out, b": ping\n\n", chunked),
        Proto::Ws => ws::ping(out),
    }
    true
}

/// Appends the proper end of a stream that the server closes: the last-chunk `0\r\n\r\n`
/// of chunked transfer coding, or a WebSocket close frame with status `ws_code` (RFC 6455
/// section 7.4.1: 1001 "going away" at shutdown, 1008 "policy violation" for a slow
/// consumer); nothing for an unchunked HTTP/1.0 body, which ends with the connection.
pub fn end(out: &mut Vec<u8>, proto: Proto, chunked: bool, ws_code: u16) {
    if proto == Proto::Ws {
        ws::close(out, ws_code);
    } else if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
}

/// Appends an SSE `retry:` field (WHATWG SSE: the EventSource waits `ms` before it
/// reconnects), alone in its event block and chunk, so a stream ended at shutdown does not
/// bring every client back in the same second.
pub fn retry(out: &mut Vec<u8>, chunked: bool, ms: u32) {
    let line = format!("retry: {ms}\n\n");
    chunk(out, line.as_bytes(), chunked);
}

/// The response head of a stream (not WebSocket, whose head depends on the client's key),
/// with `cors` header lines (each ending CRLF), plus for SSE (when `opening`; not for HEAD)
/// the opening comment, so a client sees a complete, open stream before any message
/// (WHATWG: `open` fires on the headers; the comment gets past buffering intermediaries).
pub fn head(proto: Proto, http10: bool, cors: &[u8], opening: bool) -> Vec<u8> {
    let mut out = head_with(proto, http10, cors, b"", opening);
    if proto == Proto::Sse && opening {
        chunk(&mut out, b": hi\n\n", !http10);
    }
    out
}

/// The response head of a stream with `extra` header lines after the `cors` ones (each
/// ending CRLF) and no opening (`opening` false: a HEAD answer, followed by a close).
pub fn head_with(proto: Proto, http10: bool, cors: &[u8], extra: &[u8], opening: bool) -> Vec<u8> {
    let mut out = b"HTTP/1.1 200 OK\r\n".to_vec();
    out.extend_from_slice(match proto {
        Proto::Seed => b"Content-Type: text/html; charset=utf-8\r\n".as_slice(),
        Proto::Raw => b"Content-Type: text/plain; charset=utf-8\r\n",
        Proto::Sse | Proto::Ws => b"Content-Type: text/event-stream\r\n",
        Proto::Poll => b"Content-Type: application/json\r\n",
    });
    out.extend_from_slice(b"Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
    out.extend_from_slice(cors);
    out.extend_from_slice(extra);
    // A HEAD answer (no `opening`) is followed by a close: say so.
    if !http10 && !opening {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(if http10 {
        b"Connection: close\r\n\r\n".as_slice()
    } else {
        b"Transfer-Encoding: chunked\r\n\r\n"
    });
    out
}

#[cfg(test)]
mod tests {
    use super::{friend_message, head, heartbeat, message, sse_event, Proto};

    fn sse(msg: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        sse_event(&mut out, msg);
        out
    }

    #[test]
    fn sse_line_ends() {
        assert_eq!(sse(b"line1\nline2"), b"data: line1\ndata: line2\n\n");
        assert_eq!(sse(b"tail\n"), b"data: tail\ndata: \n\n");
        assert_eq!(sse(b""), b"data: \n\n");
        assert_eq!(
            sse(b"a\r\nb\rc\n\nd"),
            b"data: a\ndata: b\ndata: c\ndata: \ndata: d\n\n"
        );
        assert_eq!(
            sse(b"x\n\nid: 7\nretry: 1\nevent: e"),
            b"data: x\ndata: \ndata: id: 7\ndata: retry: 1\ndata: event: e\n\n"
        );
        assert_eq!(sse(b"\r"), b"data: \ndata: \n\n");
    }

    #[test]
    fn framed_messages() {
        let mut out = Vec::new();
        assert!(message(&mut out, Proto::Sse, true, 1, b"hi"));
        assert_eq!(out, b"a\r\ndata: hi\n\n\r\n");
        out.clear();
        assert!(!message(&mut out, Proto::Raw, true, 1, b""));
        assert!(out.is_empty());
        assert!(message(&mut out, Proto::Raw, true, 1, b"hello"));
        assert_eq!(out, b"5\r\nhello\r\n");
        out.clear();
        assert!(message(&mut out, Proto::Raw, false, 1, b"hello"));
        assert_eq!(out, b"hello");
    }

    #[test]
    fn friend_messages() {
        let json = br#"{"from":"7","msg":"a<b"}"#;
        let ev = crate::friends::FriendEvent::new(7, bytes::Bytes::from_static(b"a<b"));
        assert_eq!(&ev.json[..], json);
        let mut out = Vec::new();
        friend_message(&mut out, Proto::Seed, true, 3, &ev);
        assert_eq!(out, b"23\r\nRecvd msg #3 from 7: 'a&lt;b'<br/>\n\r\n");
        out.clear();
        friend_message(&mut out, Proto::Sse, false, 1, &ev);
        assert_eq!(
            out,
            b"event: friend\ndata: {\"from\":\"7\",\"msg\":\"a<b\"}\n\n"
        );
        out.clear();
        friend_message(&mut out, Proto::Ws, false, 1, &ev);
        assert_eq!(out[0], 0x81);
        assert_eq!(&out[2..], json);
    }

    #[test]
    fn heartbeats_are_never_empty_chunks() {
        for proto in [Proto::Seed, Proto::Sse] {
            let mut out = Vec::new();
            assert!(heartbeat(&mut out, proto, true));
            assert!(!out.starts_with(b"0\r\n"), "{proto:?}");
        }
        let mut out = Vec::new();
        assert!(!heartbeat(&mut out, Proto::Raw, true));
    }

    #[test]
    fn sse_head() {
        let h = head(
            Proto::Sse,
            false,
            b"Access-Control-Allow-Origin: *\r\n",
            true,
        );
        assert_eq!(
            h,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\nAccess-Control-Allow-Origin: *\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n: hi\n\n\r\n"
        );
    }
}
