//! Sans-IO decoder of one subscriber stream: the response head, then chunked transfer coding
//! (RFC 9112 section 7.1), fed with whatever pieces the socket returns. Other servers' streams
//! (nchan's raw stream, SSE without chunking) are bodies delimited by close: the decoder then
//! hands over lines instead of chunks ([`Expect::ChunkedOrClose`]). A WebSocket stream (a
//! `101` head) is decoded frame by frame ([`ChunkParser::feed_stream`]).
//!
//! The decoder itself is 12 bytes so that a million idle subscribers cost little. Bytes are
//! copied only when they must outlive one read: a head, a chunk or a WebSocket data frame
//! split across reads goes to a per-connection buffer allocated on demand and freed as soon
//! as it is complete.
//!
//! - `chunked`: the chunked coding's size lines, CRLFs and trailer, one byte at a time.
//! - `head`: the response head's checks (status, transfer coding, WebSocket accept key).
//! - `ws`: WebSocket server frames (RFC 6455 section 5.2).
//! - `tests`: every way of splitting a stream across reads gives the same units.

/// Largest chunk accepted, bytes. The server's messages are at most 64 KiB plus the
/// `Recvd msg #N: '...'<br/>\n` wrapper (and HTML escaping can grow them up to 6x); anything
/// larger is treated as garbled framing rather than allocated.
pub(crate) const MAX_CHUNK: u32 = 1 << 20;

/// Largest response head accepted, bytes.
pub(crate) const MAX_HEAD: usize = 8 * 1024;

/// A connection's carry-over buffer for a head or chunk split across reads. Boxed on purpose:
/// `Option<Box<Vec>>` is 8 bytes in every connection record where `Option<Vec>` is 24, and it
/// is allocated only while a split is pending.
#[allow(clippy::box_collection)]
pub(crate) type Carry = Box<Vec<u8>>;

/// A WebSocket upgrade's header lines (RFC 6455 section 4.1). The `Sec-WebSocket-Key` is
/// fixed, section 1.3's example (base64 of 16 bytes): one key lets the client check the
/// answer without hashing; the server hashes it on every handshake all the same.
pub(crate) const WS_REQUEST_HEADERS: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// What response head a stream must start with, and so how its body is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// `200` with `Transfer-Encoding: chunked`: chunks.
    Chunked,
    /// `200`, chunked (chunks) or without transfer coding (lines of a body ended by close).
    ChunkedOrClose,
    /// `101 Switching Protocols` to `websocket` with the right `Sec-WebSocket-Accept`:
    /// server frames (unmasked, unfragmented).
    WebSocket,
}

/// One decoded piece of a stream, as handed to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unit<'a> {
    /// A chunk's data, a line, or a WebSocket text or binary frame's payload.
    Data(&'a [u8]),
    /// A WebSocket ping or pong frame (the server's heartbeat); its payload is skipped,
    /// never buffered.
    Ping,
    /// The response head, once complete and accepted (status line to the blank line), for
    /// a role that reads its headers (`Comet-Recovered`); handed over before any unit of
    /// the body.
    Head(&'a [u8]),
}

/// Why a stream could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamError {
    /// The response head was not `200` with `Transfer-Encoding: chunked` (or what the
    /// [`Expect`] allows), or did not parse.
    BadHead(String),
    /// The chunked framing was broken (bad size line, missing CRLF, oversized chunk, ...).
    BadFraming(&'static str),
    /// A WebSocket frame the server may not send (masked, fragmented, reserved bits or
    /// opcode, oversized), or bytes after its close frame.
    WsFrame(&'static str),
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::BadHead(why) => write!(f, "bad response head: {why}"),
            StreamError::BadFraming(why) => write!(f, "bad chunked framing: {why}"),
            StreamError::WsFrame(why) => write!(f, "bad WebSocket frame: {why}"),
        }
    }
}

/// Where the decoder stands in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Inside the response head; `aux` counts how much of `\r\n\r\n` has been matched.
    Head,
    /// Inside the hex chunk size; `aux` counts digits seen.
    Size,
    /// Inside a chunk extension (`;name=value`), skipped up to the CR.
    Ext,
    /// After the size line's CR, expecting LF.
    SizeLf,
    /// Inside chunk data; `aux` is the count of data bytes still due.
    Data,
    /// After chunk data, expecting CR.
    DataCr,
    /// After chunk data's CR, expecting LF.
    DataLf,
    /// After the last (zero-size) chunk, in the trailer section; `aux` is the current line's length.
    Trailer,
    /// After the trailer's CR, expecting LF; `aux` is the line's length.
    TrailerLf,
    /// The stream ended with the last chunk; no more bytes are allowed.
    Done,
    /// A body without chunked coding, handed over line by line (without `\n` or `\r\n`).
    Line,
    /// WebSocket: expecting a frame's first byte (FIN, opcode).
    WsOp,
    /// WebSocket: expecting the second byte (mask bit, 7-bit length).
    WsLen,
    /// WebSocket: inside the 16- or 64-bit extended length; `aux` counts bytes still due.
    WsExt,
    /// WebSocket: inside a text or binary frame's payload; `aux` counts bytes still due.
    WsData,
    /// WebSocket: inside a control frame's payload, skipped; `aux` counts bytes still due.
    WsSkip,
}

/// Incremental decoder of one subscriber response: head, then chunks (or lines, or
/// WebSocket frames).
#[derive(Debug, Clone)]
pub(crate) struct ChunkParser {
    state: State,
    /// WebSocket: the opcode of the frame being read (0 otherwise).
    op: u8,
    /// Chunk size (or WebSocket payload length) being read or read, bytes.
    size: u32,
    /// Meaning depends on `state` (see [`State`]).
    aux: u32,
}

impl Default for ChunkParser {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkParser {
    /// A decoder at the start of a response.
    pub(crate) fn new() -> Self {
        ChunkParser {
            state: State::Head,
            op: 0,
            size: 0,
            aux: 0,
        }
    }

    /// True once the response head has been read and accepted.
    pub(crate) fn head_done(&self) -> bool {
        self.state != State::Head
    }

    /// True once the last chunk (and its trailer section), or a WebSocket close frame, has
    /// been read.
    pub(crate) fn ended(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes `input`, the next bytes of the stream, calling `on_chunk` once with the complete
    /// data of each chunk. `partial` is the connection's carry-over buffer: `None` except while
    /// a head or a chunk is split across calls. (The load tester calls
    /// [`feed_stream`](Self::feed_stream); this form and `feed_any` are for tests.)
    #[cfg(test)]
    pub(crate) fn feed(
        &mut self,
        input: &[u8],
        partial: &mut Option<Carry>,
        on_chunk: impl FnMut(&[u8]),
    ) -> Result<(), StreamError> {
        self.feed_any(input, partial, false, on_chunk)
    }

    /// As [`feed`](Self::feed), but if `unchunked_ok` a `200` head without chunked coding is
    /// accepted too: its body is then split into lines, and `on_chunk` gets each line without
    /// its `\n` (or `\r\n`).
    #[cfg(test)]
    pub(crate) fn feed_any(
        &mut self,
        input: &[u8],
        partial: &mut Option<Carry>,
        unchunked_ok: bool,
        mut on_chunk: impl FnMut(&[u8]),
    ) -> Result<(), StreamError> {
        let expect = if unchunked_ok {
            Expect::ChunkedOrClose
        } else {
            Expect::Chunked
        };
        self.feed_stream(input, partial, expect, |unit| {
            if let Unit::Data(d) = unit {
                on_chunk(d)
            }
        })
    }

    /// Decodes `input`, the next bytes of a stream whose head must be as `expect` says,
    /// calling `on_unit` once with each complete chunk, line or WebSocket frame. `partial`
    /// is the connection's carry-over buffer: `None` except while a head, a chunk, a line or
    /// a WebSocket data frame is split across calls.
    pub(crate) fn feed_stream(
        &mut self,
        input: &[u8],
        partial: &mut Option<Carry>,
        expect: Expect,
        mut on_unit: impl FnMut(Unit<'_>),
    ) -> Result<(), StreamError> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Head => i = self.feed_head(input, i, partial, expect, &mut on_unit)?,
                State::Line => {
                    i = self.feed_line(input, i, partial, &mut |l| on_unit(Unit::Data(l)))?
                }
                State::Data | State::WsData => {
                    i = self.feed_data(input, i, partial, &mut on_unit);
                    if self.aux == 0 {
                        self.state = if self.state == State::Data {
                            State::DataCr
                        } else {
                            State::WsOp
                        };
                    }
                }
                State::WsOp | State::WsLen | State::WsExt | State::WsSkip => {
                    i = self.feed_ws(input, i, &mut on_unit)?
                }
                State::Done if self.op != 0 => {
                    return Err(StreamError::WsFrame("bytes after the close frame"))
                }
                _ => {
                    self.byte(input[i])?;
                    i += 1;
                }
            }
        }
        Ok(())
    }

    /// Consumes data bytes (`self.aux` still due of `self.size`) from `input[i..]`, handing
    /// the data over once complete: in place when it all came in this read, else through
    /// `partial`. Returns the index after what it took.
    fn feed_data(
        &mut self,
        input: &[u8],
        mut i: usize,
        partial: &mut Option<Carry>,
        on_unit: &mut impl FnMut(Unit<'_>),
    ) -> usize {
        let n = (self.aux as usize).min(input.len() - i);
        let piece = &input[i..i + n];
        i += n;
        self.aux -= n as u32;
        match partial {
            // The whole chunk is in this read: hand it over without copying.
            None if self.aux == 0 => on_unit(Unit::Data(piece)),
            None => {
                let mut buf = Vec::with_capacity(self.size as usize);
                buf.extend_from_slice(piece);
                *partial = Some(Box::new(buf));
            }
            Some(buf) => {
                buf.extend_from_slice(piece);
                if self.aux == 0 {
                    on_unit(Unit::Data(buf));
                    *partial = None;
                }
            }
        }
        i
    }

    /// Consumes head bytes from `input[i..]`; returns the index after them.
    fn feed_head(
        &mut self,
        input: &[u8],
        mut i: usize,
        partial: &mut Option<Carry>,
        expect: Expect,
        on_unit: &mut impl FnMut(Unit<'_>),
    ) -> Result<usize, StreamError> {
        let start = i;
        while i < input.len() && self.aux < 4 {
            let want = b"\r\n\r\n"[self.aux as usize];
            self.aux = match input[i] {
                b if b == want => self.aux + 1,
                b'\r' => 1,
                _ => 0,
            };
            i += 1;
        }
        if self.aux == 4 {
            self.state = match partial.take() {
                // The whole head came in this read: check it in place.
                None => {
                    let state = head::check_head(&input[start..i], expect)?;
                    on_unit(Unit::Head(&input[start..i]));
                    state
                }
                Some(mut buf) => {
                    buf.extend_from_slice(&input[start..i]);
                    let state = head::check_head(&buf, expect)?;
                    on_unit(Unit::Head(&buf));
                    state
                }
            };
            self.size = 0;
            self.aux = 0;
        } else {
            let buf = partial.get_or_insert_with(|| Box::new(Vec::with_capacity(256)));
            buf.extend_from_slice(&input[start..i]);
            if buf.len() > MAX_HEAD {
                return Err(StreamError::BadHead(format!(
                    "longer than {MAX_HEAD} bytes"
                )));
            }
        }
        Ok(i)
    }

    /// Consumes body bytes from `input[i..]` up to and including the next `\n`, handing the
    /// line over when it is complete; returns the index after what it took.
    fn feed_line(
        &mut self,
        input: &[u8],
        i: usize,
        partial: &mut Option<Carry>,
        on_line: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, StreamError> {
        let rest = &input[i..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            let buf = partial.get_or_insert_with(|| Box::new(Vec::with_capacity(rest.len())));
            buf.extend_from_slice(rest);
            if buf.len() > MAX_CHUNK as usize {
                return Err(StreamError::BadFraming("line longer than the limit"));
            }
            return Ok(input.len());
        };
        let strip_cr = |l: &[u8]| -> usize { l.len() - usize::from(l.last() == Some(&b'\r')) };
        match partial.take() {
            // The whole line is in this read: hand it over without copying.
            None => on_line(&rest[..strip_cr(&rest[..end])]),
            Some(mut buf) => {
                buf.extend_from_slice(&rest[..end]);
                on_line(&buf[..strip_cr(&buf)]);
            }
        }
        Ok(i + end + 1)
    }
}

mod chunked;
mod head;
#[cfg(test)]
mod tests;
mod ws;
