//! The chunked transfer coding of a publish request body (RFC 9112 section 7.1), sans-IO and
//! in place: [`ChunkedBody::advance`] decodes what has arrived of a body, moving each chunk's
//! data down over the framing already read, so the buffer holds `[decoded][unread input]`
//! and never more than [`MAX_BODY`] decoded bytes plus what the last read brought. The
//! decoder's state between reads is a few integers (kept only while a chunked request is
//! being read), never a copy of the body.
//!
//! What is accepted: sizes in hex of either case, with leading zeros; chunk extensions
//! (section 7.1.1) after optional whitespace and a `;`, ignored; a trailer section (section
//! 7.1.2) read and discarded. What is refused: a size line that is not `1*HEXDIG [ BWS ";"
//! ... ]` (a sign, a space inside, no digits, an overflow of 64 bits), a line not ended by
//! CRLF (a bare LF, or a CR inside it), chunk data not followed by CRLF, a size line over
//! [`MAX_CHUNK_LINE`] bytes: 400; a trailer line without a colon: 400; a trailer section
//! over [`MAX_HEAD`] bytes: 431; a decoded body over [`MAX_BODY`]: 413 (as soon as a size
//! line says so, before the data arrives).

use crate::http::{Status, MAX_BODY, MAX_HEAD};

/// Longest chunk-size line accepted (size and extensions, without the CRLF), bytes.
pub const MAX_CHUNK_LINE: usize = 4096;

/// Where the decoder stands in the body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Phase {
    /// At the start of a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk's data, with this many bytes still to come.
    Data(u32),
    /// After a chunk's data: its CRLF is next.
    DataEnd,
    /// After the last chunk: trailer field lines until an empty line.
    Trailers,
}

/// The state of a chunked body being read: offsets into the body (the bytes after the
/// request head), which stay valid as the buffer grows at its end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkedBody {
    phase: Phase,
    /// Decoded bytes so far, at `body[..len]`.
    len: u32,
    /// The first input byte not yet read, at `body[at]` (`at >= len`).
    at: u32,
    /// Trailer bytes read so far.
    trailers: u32,
}

/// What [`ChunkedBody::advance`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The body is not complete. Only `body[..keep]` still matters (the decoded bytes and
    /// the start of a line not ended yet, moved down behind them): the caller drops the
    /// rest, reads more after it, and calls again with that buffer.
    More {
        /// Bytes of `body` to keep.
        keep: usize,
    },
    /// The body is complete: the message is `body[..len]`, and the body used `used` bytes
    /// of input (a pipelined request starts at `body[used..]`).
    Done {
        /// Decoded length, at most [`MAX_BODY`].
        len: usize,
        /// Input bytes the encoded body took, trailers included.
        used: usize,
    },
    /// A body to refuse with this status (400, 413 or 431); the connection is then closed.
    Refuse(Status),
}

/// One CRLF-ended line of at most `limit` bytes (CRLF not counted) at the start of
/// `input`: `Ok(Some((line, taken)))`, `Ok(None)` if its end has not arrived yet, or the
/// refusal. The length is judged first, on the bytes before the LF, so the verdict is the
/// same however the input was split across reads.
fn line(input: &[u8], limit: usize, too_long: Status) -> Result<Option<(&[u8], usize)>, Status> {
    let Some(lf) = input.iter().position(|&b| b == b'\n') else {
        return if input.len() > limit + 1 {
            Err(too_long)
        } else {
            Ok(None)
        };
    };
    if lf > limit + 1 {
        return Err(too_long);
    }
    if lf == 0 || input[lf - 1] != b'\r' {
        return Err(Status::BadRequest); // a bare LF
    }
    let l = &input[..lf - 1];
    if l.contains(&b'\r') {
        return Err(Status::BadRequest); // a bare CR
    }
    Ok(Some((l, lf + 1)))
}

/// The chunk size of a size line (section 7.1: `chunk-size [ chunk-ext ]`). Errors: 400.
fn chunk_size(l: &[u8]) -> Result<u64, Status> {
    let digits = l.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(Status::BadRequest);
    }
    let mut size = 0u64;
    for &d in &l[..digits] {
        let v = (d as char).to_digit(16).unwrap_or(0);
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(v)))
            .ok_or(Status::BadRequest)?;
    }
    // Extensions (`BWS ";" ...`) are ignored; anything else after the digits is malformed.
    let rest = &l[digits..];
    let ext = rest.trim_ascii_start();
    if !rest.is_empty() && !ext.starts_with(b";") {
        return Err(Status::BadRequest);
    }
    Ok(size)
}

impl ChunkedBody {
    /// Decodes what it can of `body` (everything received after the request head so far,
    /// the same buffer as on earlier calls, grown at its end). Moves chunk data down over
    /// the framing, so after [`Progress::Done`] the message is `body[..len]`.
    pub fn advance(&mut self, body: &mut [u8]) -> Progress {
        match self.run(body) {
            Ok(true) => Progress::Done {
                len: self.len as usize,
                used: self.at as usize,
            },
            Ok(false) => {
                // Drop the framing read so far: the unread tail (less than a line) moves
                // down behind the decoded bytes, so the buffer never holds more than
                // MAX_BODY plus one line plus one read.
                let (at, len) = (self.at as usize, self.len as usize);
                body.copy_within(at.., len);
                self.at = self.len;
                Progress::More {
                    keep: len + body.len() - at,
                }
            }
            Err(s) => Progress::Refuse(s),
        }
    }

    /// The decoding loop: `Ok(true)` once complete, `Ok(false)` for more input.
    fn run(&mut self, body: &mut [u8]) -> Result<bool, Status> {
        loop {
            let at = self.at as usize;
            let input = &body[at..];
            match self.phase {
                Phase::Size => {
                    let Some((l, taken)) = line(input, MAX_CHUNK_LINE, Status::BadRequest)? else {
                        return Ok(false);
                    };
                    let size = chunk_size(l)?;
                    if size > (MAX_BODY - self.len as usize) as u64 {
                        return Err(Status::TooLarge);
                    }
                    self.at += taken as u32;
                    self.phase = if size == 0 {
                        Phase::Trailers
                    } else {
                        Phase::Data(size as u32)
                    };
                }
                Phase::Data(left) => {
                    let n = input.len().min(left as usize);
                    if n == 0 {
                        return Ok(false);
                    }
                    let to = self.len as usize;
                    body.copy_within(at..at + n, to);
                    self.len += n as u32;
                    self.at += n as u32;
                    self.phase = match left - n as u32 {
                        0 => Phase::DataEnd,
                        l => Phase::Data(l),
                    };
                }
                Phase::DataEnd => {
                    match input {
                        [b'\r', b'\n', ..] => {}
                        [] | [b'\r'] => return Ok(false),
                        _ => return Err(Status::BadRequest),
                    }
                    self.at += 2;
                    self.phase = Phase::Size;
                }
                Phase::Trailers => {
                    // What is left of the trailer budget for this line and its CRLF.
                    let room = MAX_HEAD.saturating_sub(self.trailers as usize + 2);
                    let Some((l, taken)) = line(input, room, Status::HeadTooLarge)? else {
                        return Ok(false);
                    };
                    self.at += taken as u32;
                    self.trailers += taken as u32;
                    if l.is_empty() {
                        return Ok(true);
                    }
                    if !l.contains(&b':') || l[0].is_ascii_whitespace() {
                        return Err(Status::BadRequest);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ChunkedBody, Progress, MAX_CHUNK_LINE};
    use crate::http::{Status, MAX_BODY};

    /// Decodes `input` fed in pieces of `step` bytes; the message and what follows it.
    fn decode(input: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), Status> {
        let mut d = ChunkedBody::default();
        let (mut buf, mut fed) = (Vec::new(), 0);
        for piece in input.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            fed += piece.len();
            match d.advance(&mut buf) {
                Progress::More { keep } => buf.truncate(keep),
                Progress::Done { len, used } => {
                    let mut rest = buf[used..].to_vec();
                    rest.extend_from_slice(&input[fed..]);
                    return Ok((buf[..len].to_vec(), rest));
                }
                Progress::Refuse(s) => return Err(s),
            }
        }
        Err(Status::Ok) // incomplete
    }

    fn both(input: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Status> {
        let whole = decode(input, input.len());
        for step in [1, 2, 3, 7] {
            assert_eq!(decode(input, step), whole, "split every {step}");
        }
        whole
    }

    #[test]
    fn forms() {
        let ok = |b: &[u8], msg: &[u8]| assert_eq!(both(b), Ok((msg.to_vec(), Vec::new())));
        ok(b"5\r\nhello\r\n0\r\n\r\n", b"hello");
        ok(b"1\r\nh\r\n1\r\ni\r\n0\r\n\r\n", b"hi");
        ok(b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789");
        ok(b"a\r\n0123456789\r\n000\r\n\r\n", b"0123456789");
        ok(b"2;name=val;x\r\nhi\r\n0 ; last\r\n\r\n", b"hi");
        ok(b"2\r\nhi\r\n0\r\nX-Sum: 1\r\nY: 2\r\n\r\n", b"hi");
        ok(b"0\r\n\r\n", b"");
        // A pipelined request after the body is not touched.
        let two = b"2\r\nhi\r\n0\r\n\r\nPOST /";
        assert_eq!(both(two), Ok((b"hi".to_vec(), b"POST /".to_vec())));
    }

    #[test]
    fn refusals() {
        for bad in [
            &b"+5\r\nhello\r\n0\r\n\r\n"[..],
            b"-5\r\n",
            b"g\r\n",
            b"\r\n",
            b"5 5\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\rx\r\n",
            b"10000000000000000\r\n",
            b"0\r\nno colon\r\n\r\n",
            b"0\r\n folded: x\r\n\r\n",
        ] {
            let what = String::from_utf8_lossy(bad);
            assert_eq!(both(bad), Err(Status::BadRequest), "{what:?}");
        }
        let long = format!("1;{}\r\n", "e".repeat(MAX_CHUNK_LINE));
        assert_eq!(both(long.as_bytes()), Err(Status::BadRequest));
        // Exactly at the limits: accepted, however split (found by the fuzzer).
        let at_limit = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_LINE - 2));
        assert_eq!(both(at_limit.as_bytes()), Ok((b"x".to_vec(), Vec::new())));
        let trailer = format!("0\r\nX:{}\r\n\r\n", "t".repeat(crate::http::MAX_HEAD - 6));
        assert_eq!(both(trailer.as_bytes()), Ok((Vec::new(), Vec::new())));
        assert_eq!(both(b"10001\r\n"), Err(Status::TooLarge));
        assert_eq!(both(b"ffffffffffffffff\r\n"), Err(Status::TooLarge));
        let big = format!(
            "8000\r\n{a}\r\n8000\r\n{a}\r\n1\r\n",
            a = "a".repeat(0x8000)
        );
        assert_eq!(both(big.as_bytes()), Err(Status::TooLarge));
        let trailers = format!("0\r\nX: {}\r\n\r\n", "t".repeat(9000));
        assert_eq!(both(trailers.as_bytes()), Err(Status::HeadTooLarge));
    }

    #[test]
    fn exactly_the_limit() {
        let mut b = format!("{MAX_BODY:x}\r\n").into_bytes();
        b.extend(std::iter::repeat_n(b'x', MAX_BODY));
        b.extend_from_slice(b"\r\n0\r\n\r\n");
        let (msg, _) = decode(&b, 1000).unwrap();
        assert_eq!(msg.len(), MAX_BODY);
        // One byte per chunk: the buffer never holds much more than the decoded body.
        let mut d = ChunkedBody::default();
        let (mut buf, mut most) = (Vec::new(), 0);
        for _ in 0..MAX_BODY {
            buf.extend_from_slice(b"1;ext=1\r\nx\r\n");
            most = most.max(buf.len());
            let Progress::More { keep } = d.advance(&mut buf) else {
                panic!("ended early")
            };
            buf.truncate(keep);
        }
        buf.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(
            d.advance(&mut buf),
            Progress::Done {
                len: MAX_BODY,
                used: MAX_BODY + 5
            }
        );
        assert!(most <= MAX_BODY + 16, "buffer grew to {most}");
    }
}
