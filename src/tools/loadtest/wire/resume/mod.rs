//! The main job's subscriber transports (`loadtest --transport`) and, for those that
//! resume, the per-connection decoder that turns a stream into cursors and messages
//! (the server's `src/http/resume.rs` writes these bytes):
//!
//! | transport | request | opening | message |
//! |---|---|---|---|
//! | `test` | `GET /test/<id>` | none | chunk `Recvd msg #N: 'MSG'<br/>\n` (no cursor) |
//! | `sse` | `GET /sub/<id>`, `Accept: text/event-stream` | `: hi\nid: <cursor>\n\n`, or `event: reset` events | `id: <cursor>\ndata: <line>\n\n` |
//! | `ws` | `GET /sub/<id>?cursors=1`, WebSocket upgrade | text frame: JSON | frame `<cursor>\n<payload>` |
//! | `raw` | `GET /sub/<id>?cursors=1` | JSON line | `<cursor> <len>\n<payload>\n` |
//!
//! A reconnect gives the last cursor back: the `Last-Event-ID` header (SSE), the
//! `last_event_id` query parameter (WebSocket, raw).
//!
//! - [`cursor`]: one id's position, the opening JSON, the SSE reset data.
//! - [`sse`]: the SSE byte-stream decoder (WHATWG).
//! - [`raw`]: the raw cursor-mode byte-stream decoder.

pub(crate) mod cursor;
pub(crate) mod raw;
pub(crate) mod sse;

use super::chunk::{Expect, WS_REQUEST_HEADERS};
use cursor::{parse_opening, parse_reset_data};
use raw::{RawDecoder, RawItem};
use sse::{SseDecoder, SseItem};

/// The main job's subscriber transport (`--transport`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// The seed's stream `/test/<id>` (chunks `Recvd msg #N: 'MSG'<br/>\n`); no resume.
    #[default]
    Test,
    /// Server-sent events on `/sub/<id>`; resumes with `Last-Event-ID`.
    Sse,
    /// WebSocket on `/sub/<id>?cursors=1`; resumes with `last_event_id`.
    Ws,
    /// Raw chunked stream on `/sub/<id>?cursors=1`; resumes with `last_event_id`.
    Raw,
}

impl Transport {
    /// The subscriber path, with `{id}` for the id.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Transport::Test => "/test/{id}",
            Transport::Sse => "/sub/{id}",
            Transport::Ws | Transport::Raw => "/sub/{id}?cursors=1",
        }
    }

    /// Extra request header lines (each ending CRLF) that ask for this transport.
    pub(crate) fn headers(self) -> &'static str {
        match self {
            Transport::Test | Transport::Raw => "",
            Transport::Sse => "Accept: text/event-stream\r\n",
            Transport::Ws => WS_REQUEST_HEADERS,
        }
    }

    /// The response head accepted.
    pub(crate) fn expect(self) -> Expect {
        match self {
            Transport::Ws => Expect::WebSocket,
            _ => Expect::Chunked,
        }
    }

    /// True if its streams carry cursors, so a reconnect can resume.
    pub(crate) fn resumes(self) -> bool {
        self != Transport::Test
    }

    /// Appends what gives `cursor` back on a reconnect after the request target's path (the
    /// query parameter `&last_event_id=...`, WebSocket and raw; their paths already have
    /// `?cursors=1`). A cursor is hex digits, decimal digits, `-` and `.`: nothing to escape.
    pub(crate) fn write_cursor_query(self, cursor: &str, out: &mut Vec<u8>) {
        if matches!(self, Transport::Ws | Transport::Raw) {
            out.extend_from_slice(b"&last_event_id=");
            out.extend_from_slice(cursor.as_bytes());
        }
    }

    /// Appends the header line that gives `cursor` back on a reconnect (`Last-Event-ID`, SSE).
    pub(crate) fn write_cursor_header(self, cursor: &str, out: &mut Vec<u8>) {
        if self == Transport::Sse {
            out.extend_from_slice(b"Last-Event-ID: ");
            out.extend_from_slice(cursor.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// What a stream in a resuming transport says, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event<'a> {
    /// The stream's opening (SSE: the id-only event, or one reset event per reset id).
    Opening {
        /// The connection's cursor before its first message.
        cursor: &'a [u8],
        /// The reason, if an id was reset (`expired`, `unknown-epoch`, ...).
        reset: Option<String>,
    },
    /// A message.
    Message {
        /// The connection's cursor including it (`None`: an SSE event without `id:`, as a
        /// server with history off sends).
        cursor: Option<&'a [u8]>,
        /// The payload.
        payload: &'a [u8],
    },
    /// A heartbeat (SSE `: ping`).
    Heartbeat,
}

/// One connection's decoder in a resuming transport, fed each decoded unit (a chunk of an
/// SSE or raw body, or a WebSocket data frame).
#[derive(Debug)]
pub(crate) enum ConnDecoder {
    /// SSE events across chunks.
    Sse(SseDecoder),
    /// Raw cursor-mode messages across chunks.
    Raw(RawDecoder),
    /// WebSocket: whether the opening frame has been read.
    Ws(bool),
    /// A stream without cursors (a WebSocket or raw stream from a server with history off:
    /// its head has no `Comet-Last-Event-ID`): each unit is one message.
    Plain,
}

impl ConnDecoder {
    /// The decoder for a stream whose response head is `head`: [`ConnDecoder::Plain`] for a
    /// WebSocket or raw stream without `Comet-Last-Event-ID` (history off), else
    /// [`new`](Self::new)'s. (An SSE stream decodes the same either way: without history
    /// its events have no `id:`.)
    pub(crate) fn for_head(t: Transport, head: &[u8]) -> Option<ConnDecoder> {
        match t {
            Transport::Ws | Transport::Raw if header(head, "comet-last-event-id").is_none() => {
                Some(ConnDecoder::Plain)
            }
            _ => ConnDecoder::new(t),
        }
    }

    /// A decoder at the start of a stream; `None` for `test`, which does not resume.
    pub(crate) fn new(t: Transport) -> Option<ConnDecoder> {
        match t {
            Transport::Test => None,
            Transport::Sse => Some(ConnDecoder::Sse(SseDecoder::default())),
            Transport::Raw => Some(ConnDecoder::Raw(RawDecoder::default())),
            Transport::Ws => Some(ConnDecoder::Ws(false)),
        }
    }

    /// Decodes one unit; calls `on_event` for each event in it. Errors: what is not in the
    /// spec's shape (an opening that is not the JSON, a frame without `\n`, an SSE event of
    /// another type, broken raw framing); the stream cannot be decoded after one.
    pub(crate) fn feed(
        &mut self,
        unit: &[u8],
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), &'static str> {
        let mut err = None;
        match self {
            ConnDecoder::Sse(d) => d.feed(unit, &mut |it| {
                if let Err(e) = sse_event(it, on_event) {
                    err.get_or_insert(e);
                }
            })?,
            ConnDecoder::Raw(d) => d.feed(unit, &mut |it| match it {
                RawItem::Opening(json) => {
                    if let Err(e) = opening(json, on_event) {
                        err.get_or_insert(e);
                    }
                }
                RawItem::Message { cursor, payload } => on_event(Event::Message {
                    cursor: Some(cursor),
                    payload,
                }),
            })?,
            ConnDecoder::Ws(opened @ false) => {
                *opened = true;
                opening(unit, on_event)?;
            }
            ConnDecoder::Plain => on_event(Event::Message {
                cursor: None,
                payload: unit,
            }),
            ConnDecoder::Ws(true) => {
                let nl = unit
                    .iter()
                    .position(|&b| b == b'\n')
                    .ok_or("WebSocket frame without `<cursor>\\n`")?;
                on_event(Event::Message {
                    cursor: Some(&unit[..nl]),
                    payload: &unit[nl + 1..],
                });
            }
        }
        err.map_or(Ok(()), Err)
    }
}

/// The value of header `name` (any case) in a complete response head.
pub(crate) fn header<'h>(head: &'h [u8], name: &str) -> Option<&'h [u8]> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    resp.parse(head).ok()?;
    resp.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// The opening JSON of a WebSocket or raw stream as an [`Event::Opening`] (the first reset's
/// reason, if any: one id per connection here).
fn opening(json: &[u8], on_event: &mut dyn FnMut(Event<'_>)) -> Result<(), &'static str> {
    let o = parse_opening(json).ok_or("opening not the spec's JSON")?;
    on_event(Event::Opening {
        cursor: o.cursor.as_bytes(),
        reset: o.resets.into_iter().next().map(|(_, reason)| reason),
    });
    Ok(())
}

/// One SSE item as an [`Event`].
fn sse_event(it: SseItem<'_>, on_event: &mut dyn FnMut(Event<'_>)) -> Result<(), &'static str> {
    let e = match it {
        SseItem::Comment(c) => {
            // `: hi` opens every stream; `: ping` is the heartbeat.
            if c.strip_prefix(b" ").unwrap_or(c) == b"ping" {
                on_event(Event::Heartbeat);
            }
            return Ok(());
        }
        SseItem::Event(e) => e,
    };
    match (e.kind, e.id, e.data) {
        (b"reset", Some(id), Some(data)) => {
            let (_, reason) = parse_reset_data(data).ok_or("reset event data not the JSON")?;
            on_event(Event::Opening {
                cursor: id,
                reset: Some(reason),
            });
        }
        (b"", Some(id), None) => on_event(Event::Opening {
            cursor: id,
            reset: None,
        }),
        (b"", cursor, Some(payload)) => on_event(Event::Message { cursor, payload }),
        _ => return Err("SSE event neither a message, an opening nor a reset"),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
