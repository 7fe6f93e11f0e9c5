//! What a stream that carries cursors puts on the wire (sans-IO): the response header lines,
//! the opening, each message with its cursor, the reset verdicts, and the long-poll answer.
//! The contract is the README's "Resume" section; in short:
//!
//! | protocol | opening | message |
//! |---|---|---|
//! | SSE (WHATWG "Server-sent events") | `: hi\nid: <cursor>\n\n`, or `: hi\n\n` and one `event: reset` per lost id | `id: <cursor>\ndata: ...\n\n` |
//! | WebSocket, `cursors=1` (RFC 6455) | a text frame, the opening JSON | a frame `<cursor>\n<payload>` |
//! | raw, `cursors=1` | a chunk, the opening JSON and `\n` | a chunk `<cursor> <len>\n<payload>\n` |
//! | poll | one JSON answer with the messages, then close | |
//!
//! An id-only SSE event sets the EventSource's last event ID without firing an event (WHATWG
//! "dispatch the event", step 1 happens before the empty-data check), so a browser that
//! reconnects before any message still sends its position. `<cursor>` is always the
//! connection's cursor *after* the bytes it is on: every id's position, `.`-joined.

use std::io::Write;

use super::response::chunk_with;
use super::stream::{chunk, sse_event, Proto};
use super::ws;
use crate::history::Reason;
use crate::id::Id;

/// One lost id of a connection: the id and why its position could not be resumed.
pub type Lost<'a> = (&'a Id, Reason);

/// Appends the response header lines of a stream that carries cursors:
/// `Comet-Last-Event-ID: <cursor>` (the position before the first message this stream
/// sends) and, when the client gave a cursor, `Comet-Recovered: true|false`.
pub fn head_lines(out: &mut Vec<u8>, cursor: &[u8], recovered: Option<bool>) {
    out.extend_from_slice(b"Comet-Last-Event-ID: ");
    out.extend_from_slice(cursor);
    out.extend_from_slice(b"\r\n");
    if let Some(r) = recovered {
        let _ = write!(out, "Comet-Recovered: {r}\r\n");
    }
}

/// Appends the opening JSON `{"last_event_id":"<cursor>","recovered":B,"resets":[...]}`
/// (WebSocket and raw cursor mode, and the tail of a poll answer).
fn opening_json(out: &mut Vec<u8>, cursor: &[u8], lost: &[Lost<'_>]) {
    out.extend_from_slice(b"\"last_event_id\":\"");
    out.extend_from_slice(cursor);
    let _ = write!(out, "\",\"recovered\":{},\"resets\":[", lost.is_empty());
    for (k, (id, reason)) in lost.iter().enumerate() {
        let comma = if k > 0 { "," } else { "" };
        // Ids are unreserved URL characters: nothing to escape.
        let _ = write!(
            out,
            "{comma}{{\"id\":\"{id}\",\"reason\":\"{}\"}}",
            reason.as_str()
        );
    }
    out.push(b']');
}

/// Appends the opening of a stream that carries cursors (nothing for a stream without
/// one): `cursor` as in [`head_lines`], `lost` the ids whose position was lost, in path order.
pub fn opening(out: &mut Vec<u8>, proto: Proto, chunked: bool, cursor: &[u8], lost: &[Lost<'_>]) {
    match proto {
        Proto::Sse => chunk_with(out, chunked, |out| {
            if lost.is_empty() {
                out.extend_from_slice(b": hi\nid: ");
                out.extend_from_slice(cursor);
                out.extend_from_slice(b"\n\n");
                return;
            }
            out.extend_from_slice(b": hi\n\n");
            for (id, reason) in lost {
                out.extend_from_slice(b"event: reset\nid: ");
                out.extend_from_slice(cursor);
                let _ = write!(
                    out,
                    "\ndata: {{\"reason\":\"{}\",\"id\":\"{id}\"}}\n\n",
                    reason.as_str()
                );
            }
        }),
        Proto::Ws | Proto::Raw => {
            let mut json = b"{".to_vec();
            opening_json(&mut json, cursor, lost);
            json.push(b'}');
            if proto == Proto::Ws {
                ws::message(out, &json);
            } else {
                json.push(b'\n');
                chunk(out, &json, chunked);
            }
        }
        Proto::Seed | Proto::Poll => {}
    }
}

/// Appends message `msg` with the connection's cursor after it, in `proto`'s cursor form.
pub fn message(out: &mut Vec<u8>, proto: Proto, chunked: bool, cursor: &[u8], msg: &[u8]) {
    match proto {
        Proto::Sse => chunk_with(out, chunked, |out| {
            out.extend_from_slice(b"id: ");
            out.extend_from_slice(cursor);
            out.push(b'\n');
            sse_event(out, msg);
        }),
        Proto::Ws => {
            let mut prefix = Vec::with_capacity(cursor.len() + 1);
            prefix.extend_from_slice(cursor);
            prefix.push(b'\n');
            ws::message_after(out, &prefix, msg);
        }
        Proto::Raw => chunk_with(out, chunked, |out| {
            out.extend_from_slice(cursor);
            let _ = writeln!(out, " {}", msg.len());
            out.extend_from_slice(msg);
            out.push(b'\n');
        }),
        Proto::Seed | Proto::Poll => {}
    }
}

/// Appends one message of a poll answer's `messages` array (`first`: no comma before it):
/// `{"id":"<cursor>","data":"<msg as a JSON string>"}`, invalid UTF-8 replaced by U+FFFD.
pub fn poll_message(out: &mut Vec<u8>, first: bool, cursor: &[u8], msg: &[u8]) {
    if !first {
        out.push(b',');
    }
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(cursor);
    out.extend_from_slice(b"\",\"data\":");
    let text = String::from_utf8_lossy(msg);
    // Serializing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &*text);
    out.push(b'}');
}

/// Appends a complete poll answer: `200`, JSON, `cors` lines, the [`head_lines`], then
/// `{"messages":[<messages>],"last_event_id":..,"recovered":..,"resets":[..]}`, and the
/// connection closes. `messages` is the array's inside (see [`poll_message`]).
pub fn poll_answer(
    out: &mut Vec<u8>,
    cors: &[u8],
    cursor: &[u8],
    recovered: Option<bool>,
    lost: &[Lost<'_>],
    messages: &[u8],
) {
    let mut body = b"{\"messages\":[".to_vec();
    body.extend_from_slice(messages);
    body.extend_from_slice(b"],");
    opening_json(&mut body, cursor, lost);
    body.push(b'}');
    out.extend_from_slice(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-cache\r\n",
    );
    out.extend_from_slice(cors);
    head_lines(out, cursor, recovered);
    let _ = write!(
        out,
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(&body);
}

#[cfg(test)]
mod tests {
    use super::{message, opening, poll_answer, poll_message, Proto};
    use crate::history::Reason;
    use crate::id::Id;

    const C: &[u8] = b"0123456789abcdef-2";

    #[test]
    fn sse_bytes() {
        let mut out = Vec::new();
        opening(&mut out, Proto::Sse, false, C, &[]);
        assert_eq!(out, b": hi\nid: 0123456789abcdef-2\n\n");
        out.clear();
        let id = Id::Num(7);
        opening(&mut out, Proto::Sse, false, C, &[(&id, Reason::Expired)]);
        assert_eq!(
            out,
            b": hi\n\nevent: reset\nid: 0123456789abcdef-2\ndata: {\"reason\":\"expired\",\"id\":\"7\"}\n\n"
        );
        out.clear();
        message(&mut out, Proto::Sse, true, C, b"a\nb");
        assert_eq!(
            out,
            b"28\r\nid: 0123456789abcdef-2\ndata: a\ndata: b\n\n\r\n"
        );
    }

    #[test]
    fn ws_and_raw_bytes() {
        let mut out = Vec::new();
        opening(&mut out, Proto::Raw, false, C, &[]);
        assert_eq!(
            out,
            b"{\"last_event_id\":\"0123456789abcdef-2\",\"recovered\":true,\"resets\":[]}\n"
        );
        out.clear();
        message(&mut out, Proto::Raw, false, C, b"hey");
        assert_eq!(out, b"0123456789abcdef-2 3\nhey\n");
        out.clear();
        message(&mut out, Proto::Ws, false, C, b"hey");
        assert_eq!(out[0], 0x81);
        assert_eq!(&out[2..], b"0123456789abcdef-2\nhey");
        out.clear();
        message(&mut out, Proto::Ws, false, C, &[0xff]);
        assert_eq!(out[0], 0x82);
    }

    #[test]
    fn poll_bytes() {
        let mut msgs = Vec::new();
        poll_message(&mut msgs, true, C, b"say \"hi\"");
        let mut out = Vec::new();
        poll_answer(&mut out, b"", C, Some(true), &[], &msgs);
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("\r\nComet-Recovered: true\r\n"), "{head}");
        assert_eq!(
            body,
            "{\"messages\":[{\"id\":\"0123456789abcdef-2\",\"data\":\"say \\\"hi\\\"\"}],\"last_event_id\":\"0123456789abcdef-2\",\"recovered\":true,\"resets\":[]}"
        );
        assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
    }
}
