//! The flood's resume side (`loadtest --transport sse|ws|raw`): each connection's decoder
//! ([`ConnDecoder`]) and last cursor, the cursor given back when a churned subscriber
//! reconnects, the order check by cursor offset, and what the resumes came to
//! ([`ResumeFigures`]).
//!
//! Order: one id per connection, so each message's cursor is one position `<epoch>-<offset>`
//! and its offset must be the previous one + 1 in the same epoch; only an opening (a fresh
//! stream's, a recovered or reset resume's) sets the position otherwise. A reset is counted
//! and its missing messages are left to the job's accounting (lost).

use crate::tools::loadtest::wire::check::{parse_body, Checker};
use crate::tools::loadtest::wire::chunk::Unit;
use crate::tools::loadtest::wire::resume::cursor::Position;
use crate::tools::loadtest::wire::resume::{header, ConnDecoder, Event, Transport};

/// What the resumes came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ResumeFigures {
    /// Reconnects that gave a cursor back (their head read).
    pub(crate) reconnects: u64,
    /// Of those, answered recovered in band (SSE `id:` opening, `"recovered":true`).
    pub(crate) recovered: u64,
    /// Of those, answered with a reset in band (SSE `event: reset`, `"resets":[...]`).
    pub(crate) reset: u64,
    /// Of those, answered `Comet-Recovered: false` in the head.
    pub(crate) header_false: u64,
    /// Of those, answered without a `Comet-Recovered` header.
    pub(crate) header_missing: u64,
    /// Messages received on a resumed stream before its first live one: sent (by their
    /// payload's send time) before the resumed stream's head arrived.
    pub(crate) replayed: u64,
    /// Messages that came without a cursor (an SSE server with history off).
    pub(crate) uncursored: u64,
}

/// One connection's resume state.
#[derive(Debug)]
struct ConnResume {
    /// `None` after a stream error, until the connection starts again.
    dec: Option<ConnDecoder>,
    /// The last cursor seen (empty: none yet), given back on a reconnect.
    cursor: String,
    /// `cursor` as a position, when it is one.
    pos: Option<Position>,
    /// Reconnecting with a cursor, until the opening says how it went.
    resuming: bool,
    /// When a resumed stream's head arrived (us), until its first live message; 0 otherwise.
    resumed_us: u64,
}

/// Every connection's resume state, and the figures.
pub(super) struct Resume {
    transport: Transport,
    conns: Vec<ConnResume>,
    pub(super) fig: ResumeFigures,
}

impl Resume {
    /// The state of `count` connections in `transport`; `None` for `test`, which does not
    /// resume.
    pub(super) fn new(transport: Transport, count: usize) -> Option<Resume> {
        ConnDecoder::new(transport)?;
        let conns = (0..count)
            .map(|_| ConnResume {
                dec: ConnDecoder::new(transport),
                cursor: String::new(),
                pos: None,
                resuming: false,
                resumed_us: 0,
            })
            .collect();
        Some(Resume {
            transport,
            conns,
            fig: ResumeFigures::default(),
        })
    }

    /// Connection `i` is closed and connected again: a new stream, resumed if a cursor is
    /// known.
    pub(super) fn restarting(&mut self, i: usize) {
        let c = &mut self.conns[i];
        c.dec = ConnDecoder::new(self.transport);
        c.resuming = !c.cursor.is_empty();
        c.resumed_us = 0;
    }

    /// Appends connection `i`'s cursor to its request target, if it has one (WebSocket, raw).
    pub(super) fn write_query(&self, i: usize, out: &mut Vec<u8>) {
        let c = &self.conns[i];
        if !c.cursor.is_empty() {
            self.transport.write_cursor_query(&c.cursor, out);
        }
    }

    /// Appends connection `i`'s cursor header, if it has one (SSE).
    pub(super) fn write_headers(&self, i: usize, out: &mut Vec<u8>) {
        let c = &self.conns[i];
        if !c.cursor.is_empty() {
            self.transport.write_cursor_header(&c.cursor, out);
        }
    }

    /// One unit of connection `i` (subscribed to `id`), read at `now_us`, checked by
    /// `checker`.
    pub(super) fn on_unit(
        &mut self,
        i: usize,
        id: u64,
        unit: Unit<'_>,
        now_us: u64,
        checker: &mut Checker,
    ) {
        let d = match unit {
            Unit::Head(h) => return self.on_head(i, h, now_us),
            Unit::Ping => return checker.counts.heartbeats += 1,
            Unit::Data(d) => d,
        };
        let (c, fig) = (&mut self.conns[i], &mut self.fig);
        let Some(mut dec) = c.dec.take() else {
            return; // Broken: ignored until the connection starts again.
        };
        let fed = dec.feed(d, &mut |e| on_event(c, fig, id, e, now_us, checker));
        match fed {
            Ok(()) => c.dec = Some(dec),
            Err(why) => {
                checker.counts.garbled += 1;
                checker.note(id, why, d);
            }
        }
    }

    /// The head of connection `i`'s stream: whether it carries cursors, a resume's
    /// `Comet-Recovered` header.
    fn on_head(&mut self, i: usize, head: &[u8], now_us: u64) {
        let c = &mut self.conns[i];
        c.dec = ConnDecoder::for_head(self.transport, head);
        if !c.resuming {
            return;
        }
        self.fig.reconnects += 1;
        c.resumed_us = now_us;
        match header(head, "comet-recovered") {
            Some(b"false") => self.fig.header_false += 1,
            Some(_) => {}
            None => self.fig.header_missing += 1,
        }
    }
}

/// One event of connection `c`'s stream (subscribed to `id`).
fn on_event(
    c: &mut ConnResume,
    fig: &mut ResumeFigures,
    id: u64,
    e: Event<'_>,
    now_us: u64,
    checker: &mut Checker,
) {
    match e {
        Event::Heartbeat => checker.counts.heartbeats += 1,
        Event::Opening { cursor, reset } => {
            if std::mem::take(&mut c.resuming) {
                match reset {
                    Some(why) => {
                        fig.reset += 1;
                        let what =
                            format!("resume from {} answered with a reset ({why})", c.cursor);
                        checker.note(id, &what, cursor);
                    }
                    // A recovered resume goes on from where the connection was.
                    None if cursor != c.cursor.as_bytes() => {
                        fig.recovered += 1;
                        let what = format!("resume from {} recovered at another cursor", c.cursor);
                        checker.note(id, &what, cursor);
                    }
                    None => fig.recovered += 1,
                }
            } else if let Some(why) = reset {
                checker.note(id, &format!("reset ({why}) without a cursor given"), cursor);
            }
            set_cursor(c, cursor);
        }
        Event::Message {
            cursor: None,
            payload,
        } => {
            fig.uncursored += 1;
            checker.check_message(id, payload, now_us);
        }
        Event::Message {
            cursor: Some(cursor),
            payload,
        } => {
            let Some(p) = Position::parse(cursor) else {
                checker.counts.chunks += 1;
                checker.counts.garbled += 1;
                return checker.note(id, "cursor not one `<epoch>-<offset>`", cursor);
            };
            match c.pos {
                Some(prev) if prev.epoch != p.epoch => {
                    checker.out_of_order(id, "epoch changed without a reset", cursor)
                }
                Some(prev) => {
                    checker.check_numbered(id, prev.offset + 1, p.offset, payload, now_us)
                }
                None => checker.check_message(id, payload, now_us),
            }
            if c.resumed_us != 0 {
                match parse_body(payload) {
                    Some((_, _, t_us)) if t_us < c.resumed_us => fig.replayed += 1,
                    _ => c.resumed_us = 0,
                }
            }
            set_cursor(c, cursor);
        }
    }
}

/// Keeps `cursor` as connection `c`'s last cursor (and position, if it is one).
fn set_cursor(c: &mut ConnResume, cursor: &[u8]) {
    c.cursor.clear();
    c.cursor.push_str(&String::from_utf8_lossy(cursor));
    c.pos = Position::parse(cursor);
}

#[cfg(test)]
mod tests {
    use super::{Resume, Transport};
    use crate::tools::loadtest::wire::check::Checker;
    use crate::tools::loadtest::wire::chunk::Unit;

    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nComet-Last-Event-ID: 00000000000000ab-0\r\nTransfer-Encoding: chunked\r\n\r\n";
    const RESUMED: &[u8] =
        b"HTTP/1.1 200 OK\r\nComet-Recovered: true\r\nComet-Last-Event-ID: 00000000000000ab-2\r\nTransfer-Encoding: chunked\r\n\r\n";

    fn feed(r: &mut Resume, c: &mut Checker, units: &[Unit<'_>], now: u64) {
        for u in units {
            r.on_unit(0, 7, *u, now, c);
        }
    }

    #[test]
    fn sse_cursor_kept_given_back_and_resume_counted() {
        let mut r = Resume::new(Transport::Sse, 1).unwrap();
        let mut c = Checker::new(true, 100);
        let units = [
            Unit::Head(HEAD),
            Unit::Data(b": hi\nid: 00000000000000ab-0\n\n"),
            Unit::Data(b"id: 00000000000000ab-1\ndata: 7:0:10\n\n"),
            Unit::Data(b"id: 00000000000000ab-2\nda"),
            Unit::Data(b"ta: 7:1:20\n\n"),
        ];
        feed(&mut r, &mut c, &units, 100);
        assert_eq!((c.counts.ok, c.counts.errors()), (2, 0));
        let mut h = Vec::new();
        r.restarting(0);
        r.write_headers(0, &mut h);
        assert_eq!(h, b"Last-Event-ID: 00000000000000ab-2\r\n");
        // The resume: recovered, one message sent while away (t 150 < head 200), one live.
        feed(&mut r, &mut c, &[Unit::Head(RESUMED)], 200);
        let units = [
            Unit::Data(b": hi\nid: 00000000000000ab-2\n\n"),
            Unit::Data(b"id: 00000000000000ab-3\ndata: 7:2:150\n\n"),
            Unit::Data(b"id: 00000000000000ab-4\ndata: 7:3:250\n\n"),
            Unit::Data(b"id: 00000000000000ab-5\ndata: 7:4:150\n\n"),
        ];
        feed(&mut r, &mut c, &units, 300);
        let f = &r.fig;
        assert_eq!(
            (f.reconnects, f.recovered, f.reset, f.replayed),
            (1, 1, 0, 1)
        );
        assert_eq!((f.header_false, f.header_missing), (0, 0));
        assert_eq!((c.counts.ok, c.counts.errors()), (5, 0));
    }

    #[test]
    fn reset_gap_and_epoch_change() {
        let mut r = Resume::new(Transport::Raw, 1).unwrap();
        let mut c = Checker::new(true, 100);
        let open = b"{\"last_event_id\":\"00000000000000ab-0\",\"recovered\":true,\"resets\":[]}\n";
        feed(&mut r, &mut c, &[Unit::Head(HEAD), Unit::Data(open)], 100);
        feed(
            &mut r,
            &mut c,
            &[Unit::Data(b"00000000000000ab-2 6\n7:0:10\n")],
            100,
        );
        assert_eq!(c.counts.out_of_order, 1, "offset 2 where 1 was due");
        r.restarting(0);
        let mut q = Vec::new();
        r.write_query(0, &mut q);
        assert_eq!(q, b"&last_event_id=00000000000000ab-2");
        let reset = b"{\"last_event_id\":\"00000000000000ac-5\",\"recovered\":false,\"resets\":[{\"id\":\"7\",\"reason\":\"unknown-epoch\"}]}\n00000000000000ac-6 6\n7:1:10\n00000000000000ad-7 6\n7:2:10\n";
        let head = b"HTTP/1.1 200 OK\r\nComet-Recovered: false\r\nComet-Last-Event-ID: 00000000000000ac-5\r\nTransfer-Encoding: chunked\r\n\r\n";
        feed(&mut r, &mut c, &[Unit::Head(head), Unit::Data(reset)], 100);
        let f = &r.fig;
        assert_eq!(
            (f.reconnects, f.recovered, f.reset, f.header_false),
            (1, 0, 1, 1)
        );
        assert_eq!((c.counts.ok, c.counts.out_of_order), (1, 2));
        // Broken framing: garbled once, then the stream is ignored until it starts again.
        feed(
            &mut r,
            &mut c,
            &[Unit::Data(b"x\n"), Unit::Data(b"y\n")],
            100,
        );
        assert_eq!(c.counts.garbled, 1);
        // History off: no Comet-Last-Event-ID, each chunk one message without a cursor.
        r.restarting(0);
        let plain =
            b"HTTP/1.1 200 OK\r\nComet-Recovered: false\r\nTransfer-Encoding: chunked\r\n\r\n";
        feed(
            &mut r,
            &mut c,
            &[Unit::Head(plain), Unit::Data(b"7:3:10")],
            100,
        );
        assert_eq!((c.counts.ok, r.fig.uncursored), (2, 1));
    }
}
