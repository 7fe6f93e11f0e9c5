//! Issue 14's history on the wire, as the tests read it: the cursor (`<epoch>-<offset>` per
//! id, joined by `.` in path order: 16 lowercase hex digits, never all zeros, and a decimal
//! offset, message N being "everything up to and including N"), the headers
//! `Comet-Recovered` and `Comet-Last-Event-ID`, and the exact bytes of each transport in
//! cursor mode:
//!
//! - SSE: the opening chunk `: hi\nid: <cursor>\n\n`, or `: hi\n\n` and one
//!   `event: reset\nid: <cursor>\ndata: {"reason":"<r>","id":"<id>"}\n\n` per reset id;
//!   each message one chunk `id: <cursor>\ndata: <line>\n...\n\n`;
//! - WebSocket (`?cursors=1`): an opening text frame
//!   `{"last_event_id":"<cursor>","recovered":<bool>,"resets":[...]}`, then one frame
//!   `<cursor>\n<payload>` per message (text if UTF-8, else binary);
//! - raw (`?cursors=1`): the same JSON and `\n` as one chunk, then one chunk
//!   `<cursor> <len>\n<payload>\n` per message;
//!
//! Long-polling is in `poll.rs`; following a connection's cursor message by message in
//! `track.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use super::client::Client;
use super::comet::chunk;
use super::http::Head;
use super::negotiated::{
    check_negotiated_head, check_ws_101, sub_get, ws_headers, ws_server_frame, SSE_HEADERS,
};

/// How long a stream must stay silent after its replay (nothing more may be replayed).
pub(crate) const QUIET: Duration = Duration::from_millis(200);

/// A connection's cursor: one `(epoch, offset)` per id, in path order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cursor(pub(crate) Vec<(String, u64)>);

impl Cursor {
    /// Parses a cursor strictly (the wire syntax above); panics naming `what` if it is not one.
    pub(crate) fn parse(s: &str, what: &str) -> Cursor {
        let pos = s.split('.').map(|p| {
            let (e, o) = p
                .split_once('-')
                .unwrap_or_else(|| panic!("{what}: no `-` in {s:?}"));
            let hex = e.len() == 16
                && e.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            assert!(
                hex && e != "0000000000000000",
                "{what}: bad epoch {e:?} in {s:?}"
            );
            let dec = !o.is_empty() && o.len() <= 19 && o.bytes().all(|b| b.is_ascii_digit());
            assert!(
                dec && (o == "0" || !o.starts_with('0')),
                "{what}: bad offset {o:?} in {s:?}"
            );
            (e.to_string(), o.parse().unwrap())
        });
        Cursor(pos.collect())
    }

    /// The cursor with id `i`'s offset replaced by `off`.
    pub(crate) fn at(&self, i: usize, off: u64) -> Cursor {
        let mut c = self.clone();
        c.0[i].1 = off;
        c
    }

    /// The epoch of id `i`.
    pub(crate) fn epoch(&self, i: usize) -> &str {
        &self.0[i].0
    }

    /// The offset of id `i`.
    pub(crate) fn off(&self, i: usize) -> u64 {
        self.0[i].1
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (e, o)) in self.0.iter().enumerate() {
            write!(f, "{}{e}-{o}", if i > 0 { "." } else { "" })?;
        }
        Ok(())
    }
}

/// Checks the history headers of a `/sub/` or `/poll/` answer: `Comet-Recovered` is
/// `recovered` (absent for `None`: no cursor given), and `Comet-Last-Event-ID` is present and
/// a cursor; returns it.
pub(crate) fn history_headers(head: &Head, recovered: Option<bool>) -> Cursor {
    match recovered {
        None => head.expect_no_header("comet-recovered"),
        Some(r) => head.expect_header_exact("comet-recovered", if r { "true" } else { "false" }),
    }
    let v = head.header("comet-last-event-id").unwrap_or_else(|| {
        panic!(
            "no Comet-Last-Event-ID; head:\n{}",
            String::from_utf8_lossy(&head.raw)
        )
    });
    Cursor::parse(v, "Comet-Last-Event-ID")
}

/// `Last-Event-ID: <value>` as a header line for [`sub_get`]'s `extra`.
pub(crate) fn lei(value: &str) -> String {
    format!("Last-Event-ID: {value}\r\n")
}

/// Opens `GET /sub/<path>` (ids and query) as SSE with `extra` header lines; checks the
/// stream head; returns the client and the head (the opening chunk still unread).
pub(crate) fn sse_open(addr: SocketAddr, path: &str, extra: &str) -> (Client, Head) {
    let mut c = Client::connect(addr);
    c.send(&sub_get(path, &format!("{SSE_HEADERS}{extra}")));
    let head = c.read_head();
    check_negotiated_head(&head, "text/event-stream", false);
    (c, head)
}

/// Opens `GET /sub/<path>` as a WebSocket with `extra` header lines; checks the 101.
pub(crate) fn ws_open(addr: SocketAddr, path: &str, extra: &str) -> (Client, Head) {
    let mut c = Client::connect(addr);
    c.send(&sub_get(path, &format!("{}{extra}", ws_headers())));
    let head = c.read_head();
    check_ws_101(&head);
    (c, head)
}

/// Opens `GET /sub/<path>` raw (no negotiation) with `extra` header lines; checks the head.
pub(crate) fn raw_open(addr: SocketAddr, path: &str, extra: &str) -> (Client, Head) {
    let mut c = Client::connect(addr);
    c.send(&sub_get(path, extra));
    let head = c.read_head();
    check_negotiated_head(&head, "text/plain; charset=utf-8", false);
    (c, head)
}

/// The SSE `data:` lines of `payload` (each CR, LF or CRLF ends a line) and the blank line.
pub(crate) fn sse_data(payload: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(payload).expect("SSE test payloads are UTF-8");
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = Vec::new();
    for line in text.split('\n') {
        out.extend_from_slice(format!("data: {line}\n").as_bytes());
    }
    out.push(b'\n');
    out
}

/// The SSE opening chunk of a connection whose every id recovered (or that gave no cursor).
pub(crate) fn sse_opening(cursor: &Cursor) -> Vec<u8> {
    chunk(format!(": hi\nid: {cursor}\n\n").as_bytes())
}

/// The SSE opening chunk with one reset event per `(id, reason)`, in path order.
pub(crate) fn sse_reset_opening(cursor: &Cursor, resets: &[(&str, &str)]) -> Vec<u8> {
    let mut d = String::from(": hi\n\n");
    for (id, reason) in resets {
        d.push_str(&format!(
            "event: reset\nid: {cursor}\ndata: {{\"reason\":\"{reason}\",\"id\":\"{id}\"}}\n\n"
        ));
    }
    chunk(d.as_bytes())
}

/// The chunk of one SSE message event.
pub(crate) fn sse_msg(cursor: &Cursor, payload: &[u8]) -> Vec<u8> {
    let mut d = format!("id: {cursor}\n").into_bytes();
    d.extend_from_slice(&sse_data(payload));
    chunk(&d)
}

/// The opening JSON of WebSocket and raw cursor mode (and the tail of a poll answer).
pub(crate) fn opening_json(cursor: &Cursor, recovered: bool, resets: &[(&str, &str)]) -> String {
    format!(
        "{{\"last_event_id\":\"{cursor}\",\"recovered\":{recovered},\"resets\":{}}}",
        resets_json(resets)
    )
}

/// `[{"id":"<id>","reason":"<r>"},...]`.
pub(crate) fn resets_json(resets: &[(&str, &str)]) -> String {
    let r: Vec<String> = resets
        .iter()
        .map(|(id, reason)| format!("{{\"id\":\"{id}\",\"reason\":\"{reason}\"}}"))
        .collect();
    format!("[{}]", r.join(","))
}

/// The opening text frame of a WebSocket in cursor mode.
pub(crate) fn ws_opening(cursor: &Cursor, recovered: bool, resets: &[(&str, &str)]) -> Vec<u8> {
    ws_server_frame(0x81, opening_json(cursor, recovered, resets).as_bytes())
}

/// One WebSocket message frame in cursor mode: text if the whole frame is UTF-8, else binary.
pub(crate) fn ws_msg(cursor: &Cursor, payload: &[u8]) -> Vec<u8> {
    let mut p = format!("{cursor}\n").into_bytes();
    p.extend_from_slice(payload);
    let b0 = if std::str::from_utf8(&p).is_ok() {
        0x81
    } else {
        0x82
    };
    ws_server_frame(b0, &p)
}

/// The opening chunk of a raw stream in cursor mode.
pub(crate) fn raw_opening(cursor: &Cursor, recovered: bool, resets: &[(&str, &str)]) -> Vec<u8> {
    chunk(format!("{}\n", opening_json(cursor, recovered, resets)).as_bytes())
}

/// One raw message chunk in cursor mode: `<cursor> <len>\n<payload>\n`.
pub(crate) fn raw_msg(cursor: &Cursor, payload: &[u8]) -> Vec<u8> {
    let mut d = format!("{cursor} {}\n", payload.len()).into_bytes();
    d.extend_from_slice(payload);
    d.push(b'\n');
    chunk(&d)
}

/// Asserts `body` is `bad cursor: <reason>\n` with a one-line, non-empty reason, for a 400.
pub(crate) fn check_bad_cursor(head: &Head, body: &[u8], what: &str) {
    head.expect_status(400);
    head.expect_header("content-type", "text/plain; charset=utf-8");
    head.expect_header("connection", "close");
    let b = String::from_utf8_lossy(body);
    let reason = b
        .strip_prefix("bad cursor: ")
        .and_then(|r| r.strip_suffix('\n'));
    assert!(
        reason.is_some_and(|r| !r.trim().is_empty() && !r.contains('\n')),
        "{what}: body is not `bad cursor: <reason>\\n`: {b:?}"
    );
}

/// `uring-comet serve --shards 2` with `flags` (history at its defaults unless given).
pub(crate) fn serve_history(flags: &[&str]) -> super::child::ChildServer {
    super::child::Serve::new().shards(2).args(flags).spawn()
}

/// Opens a fresh SSE stream on `ids` (no cursor): no `Comet-Recovered`, and the opening
/// chunk carries the cursor of `Comet-Last-Event-ID`; returns the client and that cursor.
pub(crate) fn sse_fresh(addr: SocketAddr, ids: &str) -> (Client, Cursor) {
    let (mut c, head) = sse_open(addr, ids, "");
    let cur = history_headers(&head, None);
    c.expect_bytes(
        &sse_opening(&cur),
        "opening chunk of a stream without a cursor",
    );
    (c, cur)
}
