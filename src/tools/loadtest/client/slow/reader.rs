//! One slow reader's connection: opened (and, with a resuming transport, reopened with its
//! cursor) by a blocking connect that reads the head byte by byte, then read only when the
//! job says so ([`SlowReader::drain`]), decoded with the stream decoder and the transport's
//! [`ConnDecoder`], each message checked by cursor offset and length.
//!
//! A cut shows as the end of the stream (last chunk, close frame, EOF or a reset): a
//! partial message before it is discarded with the decoders, and the resumed stream must
//! bring it again.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::ComebackFigures;
use crate::tools::loadtest::wire::chunk::{Carry, ChunkParser, Unit};
use crate::tools::loadtest::wire::resume::cursor::Position;
use crate::tools::loadtest::wire::resume::{header, ConnDecoder, Event, Transport};

/// Longest wait for a connect or a head, and for a blocking read of a head byte.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// What a drain found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drained {
    /// Everything available was read; the stream is still open.
    Open,
    /// The stream ended (the server cut it, or it could not be decoded).
    Ended,
}

/// One slow reader.
pub(crate) struct SlowReader {
    /// Its id.
    pub(crate) id: u64,
    transport: Transport,
    sock: TcpStream,
    /// The head bytes read by the connect, fed to the parser at the first drain.
    head: Vec<u8>,
    parser: ChunkParser,
    partial: Option<Carry>,
    dec: Option<ConnDecoder>,
    /// The last cursor seen (empty: none yet).
    cursor: String,
    pos: Option<Position>,
    /// Reconnected with a cursor, until the opening says how it went.
    resuming: bool,
    /// Messages received in order with the expected length.
    pub(crate) got: u64,
}

impl SlowReader {
    /// Opens the slow reader of `id` on `sub` in `transport`. Errors: a connect, write or
    /// head that fails, is not `200` (`101` for WebSocket) or takes over 5 s.
    pub(crate) fn open(sub: SocketAddr, id: u64, transport: Transport) -> Result<SlowReader> {
        let (sock, head) = connect(sub, id, transport, "")?;
        Ok(SlowReader {
            id,
            transport,
            sock,
            head,
            parser: ChunkParser::new(),
            partial: None,
            dec: ConnDecoder::new(transport),
            cursor: String::new(),
            pos: None,
            resuming: false,
            got: 0,
        })
    }

    /// Connects again with the last cursor (after a cut), counted in `fig`. Errors: as
    /// [`open`](Self::open).
    pub(crate) fn come_back(&mut self, sub: SocketAddr, fig: &mut ComebackFigures) -> Result<()> {
        let (sock, head) = connect(sub, self.id, self.transport, &self.cursor)?;
        (self.sock, self.head) = (sock, head);
        self.parser = ChunkParser::new();
        self.partial = None;
        self.dec = ConnDecoder::new(self.transport);
        self.resuming = !self.cursor.is_empty();
        fig.resumed += u64::from(self.resuming);
        if self.resuming && header_says_false(&self.head) {
            fig.header_false += 1;
        }
        Ok(())
    }

    /// Reads everything available without blocking, checking each message (`msg_bytes`
    /// long); says whether the stream is still open.
    pub(crate) fn drain(&mut self, msg_bytes: usize, fig: &mut ComebackFigures) -> Drained {
        let head = std::mem::take(&mut self.head);
        if !head.is_empty() {
            self.dec = ConnDecoder::for_head(self.transport, &head);
            if self.feed(&head, msg_bytes, fig) == Drained::Ended {
                return Drained::Ended;
            }
        }
        if self.sock.set_nonblocking(true).is_err() {
            return Drained::Ended;
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.sock.read(&mut buf) {
                Ok(0) => return Drained::Ended,
                Ok(n) => {
                    if self.feed(&buf[..n], msg_bytes, fig) == Drained::Ended {
                        return Drained::Ended;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Drained::Open,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Drained::Ended,
            }
        }
    }

    /// Decodes `data`; `Ended` at the stream's end or an error.
    fn feed(&mut self, data: &[u8], msg_bytes: usize, fig: &mut ComebackFigures) -> Drained {
        let mut bad: Option<String> = None;
        let SlowReader {
            parser,
            partial,
            dec,
            ..
        } = self;
        let mut events = Vec::new();
        let fed = parser.feed_stream(data, partial, self.transport.expect(), |u| {
            let Unit::Data(d) = u else { return };
            let Some(dc) = dec.as_mut() else { return };
            let r = dc.feed(d, &mut |e| events.push(owned(e)));
            if let Err(why) = r {
                bad.get_or_insert(why.to_string());
                *dec = None;
            }
        });
        for e in events {
            self.on_event(e, msg_bytes, fig);
        }
        if let Err(e) = fed {
            bad.get_or_insert(e.to_string());
        }
        if let Some(why) = bad {
            fig.bad += 1;
            fig.note(self.id, &why);
            return Drained::Ended;
        }
        if self.parser.ended() {
            Drained::Ended
        } else {
            Drained::Open
        }
    }

    /// One event of the stream.
    fn on_event(&mut self, e: OwnedEvent, msg_bytes: usize, fig: &mut ComebackFigures) {
        let cursor = match e {
            OwnedEvent::Heartbeat => return,
            OwnedEvent::Opening(cursor, reset) => {
                if std::mem::take(&mut self.resuming) {
                    match reset {
                        Some(why) => {
                            fig.reset += 1;
                            let what = format!(
                                "resume from {} answered with a reset ({why})",
                                self.cursor
                            );
                            fig.note(self.id, &what);
                        }
                        None => fig.recovered += 1,
                    }
                }
                cursor
            }
            OwnedEvent::Message(cursor, len) => {
                let p = Position::parse(cursor.as_bytes());
                let in_order = match (self.pos, p) {
                    (Some(prev), Some(p)) => prev.epoch == p.epoch && p.offset == prev.offset + 1,
                    // No cursors (history off): nothing to check the order by.
                    _ => cursor.is_empty() && self.cursor.is_empty(),
                };
                if in_order && len == msg_bytes {
                    self.got += 1;
                } else {
                    fig.bad += 1;
                    let what = format!("message {cursor} ({len} bytes) after {}", self.cursor);
                    fig.note(self.id, &what);
                }
                cursor
            }
        };
        self.pos = Position::parse(cursor.as_bytes());
        self.cursor = cursor;
    }
}

/// An [`Event`] kept past its unit: the cursor, and a message's payload length.
enum OwnedEvent {
    Opening(String, Option<String>),
    Message(String, usize),
    Heartbeat,
}

fn owned(e: Event<'_>) -> OwnedEvent {
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match e {
        Event::Opening { cursor, reset } => OwnedEvent::Opening(s(cursor), reset),
        Event::Message { cursor, payload } => {
            OwnedEvent::Message(cursor.map_or_else(String::new, s), payload.len())
        }
        Event::Heartbeat => OwnedEvent::Heartbeat,
    }
}

/// A blocking connect of `id`'s stream in `transport`, giving `cursor` back if not empty;
/// returns the socket and the head (read byte by byte, so nothing after it is consumed).
fn connect(
    sub: SocketAddr,
    id: u64,
    transport: Transport,
    cursor: &str,
) -> Result<(TcpStream, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&sub, HEAD_TIMEOUT)
        .with_context(|| format!("slow reader {id}: connect"))?;
    s.set_read_timeout(Some(HEAD_TIMEOUT))?;
    let mut req = Vec::new();
    let path = transport.path().replace("{id}", &id.to_string());
    write!(req, "GET {path}")?;
    if !cursor.is_empty() {
        transport.write_cursor_query(cursor, &mut req);
    }
    write!(req, " HTTP/1.1\r\nHost: {sub}\r\n{}", transport.headers())?;
    if !cursor.is_empty() {
        transport.write_cursor_header(cursor, &mut req);
    }
    req.extend_from_slice(b"\r\n");
    s.write_all(&req)?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            Ok(_) => bail!("slow reader {id}: closed before its head"),
            Err(e) => bail!("slow reader {id}: reading its head: {e}"),
        }
        if head.len() > 4096 {
            bail!("slow reader {id}: head over 4 KiB");
        }
    }
    let status: &[u8] = if transport == Transport::Ws {
        b"HTTP/1.1 101 "
    } else {
        b"HTTP/1.1 200 "
    };
    if !head.starts_with(status) {
        bail!(
            "slow reader {id}: {:?}",
            String::from_utf8_lossy(&head[..head.len().min(40)])
        );
    }
    Ok((s, head))
}

/// True if a head says `Comet-Recovered: false`.
fn header_says_false(head: &[u8]) -> bool {
    header(head, "comet-recovered") == Some(b"false")
}
