//! How a subscriber stream carries messages ([`Framing`]): what the request asks for, what
//! head is accepted, and how a decoded unit (chunk, line or WebSocket frame) becomes messages
//! to check.
//!
//! uring-comet's `/test/` sends the seed's chunks (`Recvd msg #N: 'MSG'<br/>\n`); its `/sub/`
//! streams (SSE, WebSocket) and other servers (nchan, SSE servers) carry the message body
//! verbatim; since msggen's bodies are `{id}:{seq}:{t_us}`, any framing that keeps the body
//! byte for byte can be checked, only without the per-connection message number (so no order
//! check).

use super::check::Checker;
use super::chunk::{Expect, WS_REQUEST_HEADERS};

/// The framing of subscriber streams (`--stream`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// uring-comet's (the seed's): chunked, one chunk `Recvd msg #N: 'MSG'<br/>\n` per message.
    #[default]
    Seed,
    /// Chunked, one chunk per message holding the body verbatim; asks with `TE: chunked`
    /// (nchan's chunked subscriber).
    Chunked,
    /// Body delimited by close, one message per line (nchan's http-raw-stream, plain GET).
    Raw,
    /// Server-sent events, chunked or not: asks with `Accept: text/event-stream`; each
    /// `data:` line is a message, other lines (`id:`, `:` comments, blanks) are skipped.
    Sse,
    /// WebSocket (RFC 6455): a version-13 upgrade; each text or binary frame is a message,
    /// pings are heartbeats (never answered), a close frame ends the stream.
    Ws,
}

impl Framing {
    /// Extra request header lines (each ending in CRLF) that ask the server for this framing.
    pub(crate) fn request_headers(self) -> &'static str {
        match self {
            Framing::Seed | Framing::Raw => "",
            Framing::Chunked => "TE: chunked\r\n",
            Framing::Sse => "Accept: text/event-stream\r\n",
            Framing::Ws => WS_REQUEST_HEADERS,
        }
    }

    /// The response head accepted: `200` chunked, `200` chunked or delimited by close, or
    /// `101` to WebSocket.
    pub(crate) fn expect(self) -> Expect {
        match self {
            Framing::Seed | Framing::Chunked => Expect::Chunked,
            Framing::Raw | Framing::Sse => Expect::ChunkedOrClose,
            Framing::Ws => Expect::WebSocket,
        }
    }

    /// Checks the messages in one decoded unit (a chunk, or a line of an unchunked body)
    /// received at `now_us` on the connection subscribed to `conn_id`, whose previous seed
    /// message number is `*last_n`.
    pub(crate) fn check_unit(
        self,
        checker: &mut Checker,
        conn_id: u64,
        last_n: &mut u32,
        unit: &[u8],
        now_us: u64,
    ) {
        match self {
            // A quiet stream's heartbeat (uring-comet: a `\n` chunk every --heartbeat s).
            Framing::Seed | Framing::Chunked if unit == b"\n" => checker.counts.heartbeats += 1,
            Framing::Seed => checker.check(conn_id, last_n, unit, now_us),
            Framing::Chunked => checker.check_message(conn_id, unit, now_us),
            Framing::Raw if unit.is_empty() => {}
            Framing::Raw | Framing::Ws => checker.check_message(conn_id, unit, now_us),
            // uring-comet's SSE heartbeat: a chunk `: ping\n\n` (a line `: ping` unchunked).
            Framing::Sse if unit.strip_suffix(b"\n\n").unwrap_or(unit) == b": ping" => {
                checker.counts.heartbeats += 1
            }
            Framing::Sse => {
                // A chunk may hold a whole event (several lines); a line holds one.
                for line in unit.split(|&b| b == b'\n') {
                    if let Some(data) = sse_data(line) {
                        checker.check_message(conn_id, data, now_us);
                    }
                }
            }
        }
    }
}

/// The value of an SSE `data:` line (one optional space after the colon is not part of it;
/// RFC: WHATWG HTML, "Interpreting an event stream"), without a trailing CR.
fn sse_data(line: &[u8]) -> Option<&[u8]> {
    let v = line.strip_prefix(b"data:")?;
    let v = v.strip_prefix(b" ").unwrap_or(v);
    Some(v.strip_suffix(b"\r").unwrap_or(v))
}

#[cfg(test)]
mod tests {
    use super::{Checker, Expect, Framing};

    #[test]
    fn units_to_messages() {
        let mut c = Checker::new(true, 100);
        let mut n = 0;
        Framing::Seed.check_unit(&mut c, 5, &mut n, b"Recvd msg #1: '5:0:10'<br/>\n", 20);
        Framing::Chunked.check_unit(&mut c, 5, &mut n, b"5:1:10", 20);
        Framing::Raw.check_unit(&mut c, 5, &mut n, b"5:2:10", 20);
        Framing::Raw.check_unit(&mut c, 5, &mut n, b"", 20);
        Framing::Sse.check_unit(&mut c, 5, &mut n, b"id: 1:2\ndata: 5:3:10\n\n", 20);
        Framing::Sse.check_unit(&mut c, 5, &mut n, b"data:5:4:10\r", 20);
        Framing::Sse.check_unit(&mut c, 5, &mut n, b": hi", 20);
        Framing::Sse.check_unit(&mut c, 5, &mut n, b": hi\n\n", 20);
        Framing::Seed.check_unit(&mut c, 5, &mut n, b"\n", 20);
        Framing::Sse.check_unit(&mut c, 5, &mut n, b": ping\n\n", 20);
        Framing::Sse.check_unit(&mut c, 5, &mut n, b": ping", 20);
        Framing::Ws.check_unit(&mut c, 5, &mut n, b"5:5:10", 20);
        // uring-comet's SSE event for a message, as one chunk.
        let mut ev = Vec::new();
        crate::http::stream::sse_event(&mut ev, b"5:6:10");
        Framing::Sse.check_unit(&mut c, 5, &mut n, &ev, 20);
        assert_eq!((c.counts.ok, c.counts.chunks, c.counts.errors()), (7, 7, 0));
        assert_eq!(c.counts.heartbeats, 3);
        assert_eq!(n, 1);
        assert_eq!(
            Framing::Sse.request_headers(),
            "Accept: text/event-stream\r\n"
        );
        assert!(Framing::Ws
            .request_headers()
            .starts_with("Upgrade: websocket\r\n"));
        assert_eq!(Framing::Raw.expect(), Expect::ChunkedOrClose);
        assert_eq!(Framing::Seed.expect(), Expect::Chunked);
        assert_eq!(Framing::Ws.expect(), Expect::WebSocket);
    }
}
