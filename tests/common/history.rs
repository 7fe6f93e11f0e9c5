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
//! - long-polling `GET /poll/<ids>`: one JSON answer, then the close.
//!
//! [`Track`] follows a connection's cursor: it checks that each message moves exactly one
//! id's offset on by one and carries that id's next payload, whatever order the ids'
//! messages interleave in.

use std::net::SocketAddr;
use std::time::Duration;

use super::client::{Client, Closed};
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

/// `s` as a JSON string (RFC 8259: `"` and `\` escaped, the control characters as `\n`,
/// `\r`, `\t` or `\u00XX`); the tests that compare bytes use only payloads whose escaping
/// RFC 8259 leaves no choice about but these short forms.
pub(crate) fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The exact body of a poll answer.
pub(crate) fn poll_body(
    msgs: &[(Cursor, &str)],
    last: &Cursor,
    recovered: bool,
    resets: &[(&str, &str)],
) -> String {
    let m: Vec<String> = msgs
        .iter()
        .map(|(c, d)| format!("{{\"id\":\"{c}\",\"data\":{}}}", json_str(d)))
        .collect();
    format!(
        "{{\"messages\":[{}],{}",
        m.join(","),
        &opening_json(last, recovered, resets)[1..]
    )
}

/// Sends `GET /poll/<path>` (ids and query) with `extra` header lines and returns the open
/// client, for a poll the test expects to be held.
pub(crate) fn poll_send(addr: SocketAddr, path: &str, extra: &str) -> Client {
    let mut c = Client::connect(addr);
    c.send(format!("GET /poll/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n").as_bytes());
    c
}

/// Reads a poll answer: checks the head (200, JSON, no-cache, CORS `*`, Content-Length,
/// `Connection: close`) and that the server closes after the body; returns head and body.
pub(crate) fn poll_answer(c: &mut Client) -> (Head, String) {
    let head = c.read_head();
    head.expect_200();
    head.expect_header("content-type", "application/json");
    head.expect_header("cache-control", "no-cache");
    head.expect_header_exact("access-control-allow-origin", "*");
    head.expect_header("connection", "close");
    head.expect_no_header("transfer-encoding");
    assert!(
        head.header("content-length").is_some(),
        "poll answer without Content-Length"
    );
    let body = c.read_body(&head);
    let (rest, how) = c.read_to_close();
    assert!(
        rest.is_empty(),
        "bytes after the poll answer: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(
        how,
        Closed::Eof,
        "the poll answer must end with an orderly close"
    );
    (head, String::from_utf8(body).expect("poll answer is UTF-8"))
}

/// `GET /poll/<path>` answered (at once or after a wait): head and body.
pub(crate) fn poll(addr: SocketAddr, path: &str) -> (Head, String) {
    poll_answer(&mut poll_send(addr, path, ""))
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

/// A connection's cursor followed message by message (see the module doc).
pub(crate) struct Track {
    /// The ids of the connection, in path order.
    pub(crate) ids: Vec<String>,
    /// The cursor including the last message read.
    pub(crate) cur: Cursor,
    /// The payload of message `n` (1-based) of an id.
    pub(crate) payload: fn(&str, u64) -> Vec<u8>,
}

/// The tests' default payload of message `n` of `id`: `<id>#<n>`.
pub(crate) fn numbered(id: &str, n: u64) -> Vec<u8> {
    format!("{id}#{n}").into_bytes()
}

impl Track {
    /// A track of `ids` (comma-separated, as in the path) from `cur`, with [`numbered`].
    pub(crate) fn new(ids: &str, cur: Cursor) -> Track {
        let ids: Vec<String> = ids.split(',').map(String::from).collect();
        assert_eq!(ids.len(), cur.0.len(), "cursor {cur} for ids {ids:?}");
        Track {
            ids,
            cur,
            payload: numbered,
        }
    }

    /// Takes the message whose cursor is `next`: exactly one id moved on by one; returns
    /// the cursor and that message's expected payload (the caller compares exact bytes).
    pub(crate) fn step(&mut self, next: &str, what: &str) -> (Cursor, Vec<u8>) {
        let n = Cursor::parse(next, what);
        assert_eq!(
            n.0.len(),
            self.cur.0.len(),
            "{what}: cursor {n} after {}",
            self.cur
        );
        let moved: Vec<usize> = (0..self.ids.len())
            .filter(|&i| n.0[i] != self.cur.0[i])
            .collect();
        let ok = moved.len() == 1
            && n.epoch(moved[0]) == self.cur.epoch(moved[0])
            && n.off(moved[0]) == self.cur.off(moved[0]) + 1;
        assert!(
            ok,
            "{what}: cursor {n} after {} is not exactly one message on",
            self.cur
        );
        let i = moved[0];
        self.cur = n.clone();
        let p = (self.payload)(&self.ids[i], n.off(i));
        (n, p)
    }

    /// Reads the next SSE message event and checks its exact bytes.
    pub(crate) fn sse(&mut self, c: &mut Client, what: &str) {
        let d = c.read_chunk();
        let cur = cursor_after(&d, b"id: ", b'\n', what);
        let (n, p) = self.step(&cur, what);
        assert_unit(&chunk(&d), &sse_msg(&n, &p), what);
    }

    /// Reads the next WebSocket message frame (cursor mode) and checks its exact bytes.
    pub(crate) fn ws(&mut self, c: &mut Client, what: &str) {
        let (b0, d) = c.read_ws_frame();
        let cur = cursor_after(&d, b"", b'\n', what);
        let (n, p) = self.step(&cur, what);
        assert_unit(&ws_server_frame(b0, &d), &ws_msg(&n, &p), what);
    }

    /// Reads the next raw message chunk (cursor mode) and checks its exact bytes.
    pub(crate) fn raw(&mut self, c: &mut Client, what: &str) {
        let d = c.read_chunk();
        let cur = cursor_after(&d, b"", b' ', what);
        let (n, p) = self.step(&cur, what);
        assert_unit(&chunk(&d), &raw_msg(&n, &p), what);
    }
}

/// The text between `prefix` and the first `end` byte of `d` (a cursor, checked later).
fn cursor_after(d: &[u8], prefix: &[u8], end: u8, what: &str) -> String {
    let rest = d.strip_prefix(prefix).unwrap_or_else(|| {
        panic!(
            "{what}: unit does not start with {prefix:?}: {:?}",
            String::from_utf8_lossy(d)
        )
    });
    let stop = rest.iter().position(|&b| b == end).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..stop]).into_owned()
}

/// Asserts one framed unit equals the expected bytes.
pub(crate) fn assert_unit(got: &[u8], want: &[u8], what: &str) {
    assert!(
        got == want,
        "{what}: wrong bytes\n  expected: {:?}\n  got:      {:?}",
        String::from_utf8_lossy(want),
        String::from_utf8_lossy(got)
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

/// Publishes `<id>#1` to `<id>#n` to a fresh id (learning its epoch from a stream that reads
/// them and closes); returns the cursor of each offset `k` as `at(k)`.
pub(crate) fn published(s: SocketAddr, p: SocketAddr, id: &str, n: u64) -> Cursor {
    let (mut c, cur) = sse_fresh(s, id);
    let mut t = Track::new(id, cur.clone());
    let mut publ = super::comet::Publisher::connect(p);
    for k in 1..=n {
        assert_eq!(publ.send(id, &numbered(id, k)), 1);
        t.sse(&mut c, "message to the first stream");
    }
    c.close();
    cur
}

/// Opens `/sub/<path>` as SSE with `extra`, expects `Comet-Recovered: true` and the cursor
/// `from`, then exactly the messages after it up to `to`, then silence.
pub(crate) fn expect_resume(s: SocketAddr, path: &str, extra: &str, from: &Cursor, to: u64) {
    let what = format!("GET /sub/{path} with {extra:?}");
    let (mut c, head) = sse_open(s, path, extra);
    assert_eq!(
        &history_headers(&head, Some(true)),
        from,
        "{what}: Comet-Last-Event-ID"
    );
    c.expect_bytes(&sse_opening(from), &format!("{what}: opening chunk"));
    let id = path.split(['?', ',']).next().unwrap();
    let mut t = Track::new(id, from.clone());
    while t.cur.off(0) < to {
        t.sse(&mut c, &format!("{what}: replayed message"));
    }
    c.expect_silence(QUIET, &format!("{what}: after the replay"));
}
