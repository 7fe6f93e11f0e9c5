//! The chunked transfer coding (RFC 9112 section 7.1) between chunk data: the hex size line
//! and its extensions, the CRLF after the data, the trailer section after the last chunk.
//! These go one byte at a time; chunk data, heads, lines and WebSocket frames are taken in
//! bulk by the caller.

use super::{ChunkParser, State, StreamError, MAX_CHUNK};

impl ChunkParser {
    /// Advances the framing states that go one byte at a time.
    pub(super) fn byte(&mut self, b: u8) -> Result<(), StreamError> {
        use StreamError::BadFraming;
        match self.state {
            State::Size => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    let digit = (b as char).to_digit(16).unwrap_or(0);
                    self.size = self.size.saturating_mul(16).saturating_add(digit);
                    if self.size > MAX_CHUNK {
                        return Err(BadFraming("chunk larger than the limit"));
                    }
                    self.aux += 1;
                }
                b';' | b' ' | b'\t' if self.aux > 0 => self.state = State::Ext,
                b'\r' if self.aux > 0 => self.state = State::SizeLf,
                _ => return Err(BadFraming("bad chunk size line")),
            },
            State::Ext => {
                if b == b'\r' {
                    self.state = State::SizeLf;
                } else if b == b'\n' {
                    return Err(BadFraming("bare LF in chunk extension"));
                }
            }
            State::SizeLf => {
                if b != b'\n' {
                    return Err(BadFraming("size line not ended by CRLF"));
                }
                if self.size == 0 {
                    self.state = State::Trailer;
                    self.aux = 0;
                } else {
                    self.state = State::Data;
                    self.aux = self.size;
                }
            }
            State::DataCr if b == b'\r' => self.state = State::DataLf,
            State::DataLf if b == b'\n' => {
                self.state = State::Size;
                self.size = 0;
                self.aux = 0;
            }
            State::DataCr | State::DataLf => {
                return Err(BadFraming("chunk data not followed by CRLF"))
            }
            State::Trailer => match b {
                b'\r' => self.state = State::TrailerLf,
                b'\n' => return Err(BadFraming("bare LF in trailer")),
                _ => self.aux = self.aux.saturating_add(1),
            },
            State::TrailerLf => {
                if b != b'\n' {
                    return Err(BadFraming("trailer line not ended by CRLF"));
                }
                // An empty line ends the trailer section, and with it the response.
                self.state = if self.aux == 0 {
                    State::Done
                } else {
                    State::Trailer
                };
                self.aux = 0;
            }
            State::Done => return Err(BadFraming("bytes after the last chunk")),
            // These are consumed by `feed_stream` before it gets here.
            State::Head
            | State::Data
            | State::Line
            | State::WsOp
            | State::WsLen
            | State::WsExt
            | State::WsData
            | State::WsSkip => return Err(BadFraming("internal: byte() in a bulk state")),
        }
        Ok(())
    }
}
