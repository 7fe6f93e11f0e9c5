//! A connection's cursor followed message by message (issue 14): [`Track`] checks that each
//! message of any transport moves exactly one id's offset on by one and carries that id's
//! next payload, whatever order the ids' messages interleave in, and compares the exact
//! bytes of its unit; [`published`] and [`expect_resume`] are the SSE steps most tests share.

use std::net::SocketAddr;

use super::client::Client;
use super::comet::{chunk, Publisher};
use super::history::{
    history_headers, raw_msg, sse_fresh, sse_msg, sse_open, sse_opening, ws_msg, Cursor, QUIET,
};
use super::negotiated::ws_server_frame;
use super::poll::poll_body;

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
        self.sse_unit(&c.read_chunk(), what)
    }

    /// Reads the next WebSocket message frame (cursor mode) and checks its exact bytes.
    pub(crate) fn ws(&mut self, c: &mut Client, what: &str) {
        let (b0, d) = c.read_ws_frame();
        self.ws_unit(b0, &d, what)
    }

    /// Reads the next raw message chunk (cursor mode) and checks its exact bytes.
    pub(crate) fn raw(&mut self, c: &mut Client, what: &str) {
        self.raw_unit(&c.read_chunk(), what)
    }

    /// Checks the data `d` of an SSE chunk already read.
    pub(crate) fn sse_unit(&mut self, d: &[u8], what: &str) {
        let cur = cursor_after(d, b"id: ", b'\n', what);
        let (n, p) = self.step(&cur, what);
        assert_unit(&chunk(d), &sse_msg(&n, &p), what);
    }

    /// Checks a WebSocket frame already read (first byte `b0`, payload `d`).
    pub(crate) fn ws_unit(&mut self, b0: u8, d: &[u8], what: &str) {
        let cur = cursor_after(d, b"", b'\n', what);
        let (n, p) = self.step(&cur, what);
        assert_unit(&ws_server_frame(b0, d), &ws_msg(&n, &p), what);
    }

    /// Checks the data `d` of a raw chunk already read.
    pub(crate) fn raw_unit(&mut self, d: &[u8], what: &str) {
        let cur = cursor_after(d, b"", b' ', what);
        let (n, p) = self.step(&cur, what);
        assert_unit(&chunk(d), &raw_msg(&n, &p), what);
    }
}

impl Track {
    /// Checks a poll answer's body: its messages (any number, parsed as JSON) follow the
    /// track, and the whole body is exactly [`poll_body`] of them with `recovered` and
    /// `resets`, `last_event_id` being the cursor after the last one. Returns how many.
    pub(crate) fn poll(&mut self, body: &str, recovered: bool, resets: &[(&str, &str)]) -> usize {
        let v: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("poll answer is not JSON ({e}): {body:?}"));
        let list = v["messages"]
            .as_array()
            .unwrap_or_else(|| panic!("no messages: {body}"));
        let mut want = Vec::new();
        for m in list {
            let id = m["id"]
                .as_str()
                .unwrap_or_else(|| panic!("message id: {body}"));
            let (c, p) = self.step(id, "poll answer");
            want.push((
                c,
                String::from_utf8(p).expect("poll test payloads are UTF-8"),
            ));
        }
        let msgs: Vec<(Cursor, &str)> = want.iter().map(|(c, p)| (c.clone(), p.as_str())).collect();
        assert_eq!(
            body,
            poll_body(&msgs, &self.cur, recovered, resets),
            "poll answer body"
        );
        msgs.len()
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

/// Publishes `<id>#1` to `<id>#n` to a fresh id (learning its epoch from a stream that reads
/// them and closes); returns the cursor of each offset `k` as `at(k)`.
pub(crate) fn published(s: SocketAddr, p: SocketAddr, id: &str, n: u64) -> Cursor {
    let (mut c, cur) = sse_fresh(s, id);
    let mut t = Track::new(id, cur.clone());
    let mut publ = Publisher::connect(p);
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
