//! The WebSocket half of the stream decoder: server frames (RFC 6455 section 5.2) after a
//! `101` head, one byte of header at a time, in the same 12-byte [`ChunkParser`].
//!
//! A push server's frames are few: text or binary data (one per message), ping (its
//! heartbeat), pong, and close (the end). They are unmasked and never fragmented; anything
//! else is a [`StreamError::WsFrame`]. A data frame's payload is handed over as a
//! [`Unit::Data`] (through the carry-over buffer only when split across reads); a ping or
//! pong is a [`Unit::Ping`], its payload skipped without being buffered; a close frame ends
//! the stream. No answer is ever written: a client need not answer pings.

use super::{ChunkParser, State, StreamError, Unit, MAX_CHUNK};

/// Opcodes (section 5.2).
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;

impl ChunkParser {
    /// Consumes frame header bytes, or a control frame's payload, from `input[i..]`; returns
    /// the index after what it took. Data payloads are left to the caller ([`State::WsData`]).
    pub(super) fn feed_ws(
        &mut self,
        input: &[u8],
        mut i: usize,
        on_unit: &mut impl FnMut(Unit<'_>),
    ) -> Result<usize, StreamError> {
        use StreamError::WsFrame;
        while i < input.len() {
            match self.state {
                State::WsOp => {
                    let b = input[i];
                    i += 1;
                    if b & 0x80 == 0 {
                        return Err(WsFrame("fragmented frame (no FIN)"));
                    }
                    if b & 0x70 != 0 {
                        return Err(WsFrame("reserved bits set"));
                    }
                    self.op = b & 0x0f;
                    if !matches!(self.op, TEXT | BINARY | CLOSE | PING | PONG) {
                        return Err(WsFrame("continuation or reserved opcode"));
                    }
                    self.state = State::WsLen;
                }
                State::WsLen => {
                    let b = input[i];
                    i += 1;
                    if b & 0x80 != 0 {
                        return Err(WsFrame("masked server frame"));
                    }
                    let len = b & 0x7f;
                    if self.op >= CLOSE && len > 125 {
                        return Err(WsFrame("control frame over 125 bytes"));
                    }
                    self.size = 0;
                    match len {
                        126 => (self.state, self.aux) = (State::WsExt, 2),
                        127 => (self.state, self.aux) = (State::WsExt, 8),
                        n => {
                            self.size = u32::from(n);
                            self.payload_start(on_unit);
                        }
                    }
                }
                State::WsExt => {
                    // Below the limit before the shift, so no overflow: 2^20 * 256 < 2^32.
                    self.size = (self.size << 8) | u32::from(input[i]);
                    i += 1;
                    if self.size > MAX_CHUNK {
                        return Err(WsFrame("frame larger than the limit"));
                    }
                    self.aux -= 1;
                    if self.aux == 0 {
                        self.payload_start(on_unit);
                    }
                }
                State::WsSkip => {
                    let n = (self.aux as usize).min(input.len() - i);
                    i += n;
                    self.aux -= n as u32;
                    if self.aux == 0 {
                        self.control_done(on_unit);
                    }
                }
                // Data payloads, and the end, are the caller's.
                _ => return Ok(i),
            }
        }
        Ok(i)
    }

    /// The header is complete (`self.size` is the payload length): go to the payload, or
    /// finish the frame at once if it has none.
    fn payload_start(&mut self, on_unit: &mut impl FnMut(Unit<'_>)) {
        self.aux = self.size;
        match (self.op, self.size) {
            (TEXT | BINARY, 0) => {
                on_unit(Unit::Data(&[]));
                self.state = State::WsOp;
            }
            (TEXT | BINARY, _) => self.state = State::WsData,
            (_, 0) => self.control_done(on_unit),
            _ => self.state = State::WsSkip,
        }
    }

    /// A control frame's payload has been skipped: count a ping or pong, end at a close.
    fn control_done(&mut self, on_unit: &mut impl FnMut(Unit<'_>)) {
        if self.op == CLOSE {
            self.state = State::Done;
        } else {
            on_unit(Unit::Ping);
            self.state = State::WsOp;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{BINARY, PONG};
    use crate::tools::loadtest::wire::chunk::{
        Carry, ChunkParser, Expect, State, StreamError, Unit, MAX_CHUNK, WS_REQUEST_HEADERS,
    };

    const HEAD: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

    /// What a decoded stream gave, in order: data as `Some`, pings as `None`.
    type Units = Vec<Option<Vec<u8>>>;

    /// An unmasked server frame with FIN set, as uring-comet writes it (`src/http/ws.rs`).
    fn frame(op: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80 | op];
        match payload.len() {
            n @ 0..=125 => out.push(n as u8),
            n @ 126..=0xffff => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    /// Feeds `pieces` one after another; returns the units, the result and the parser.
    fn run(pieces: &[&[u8]]) -> (Units, Result<(), StreamError>, ChunkParser) {
        let mut p = ChunkParser::new();
        let mut partial: Option<Carry> = None;
        let mut out = Vec::new();
        for piece in pieces {
            let r = p.feed_stream(piece, &mut partial, Expect::WebSocket, |u| match u {
                Unit::Data(d) => out.push(Some(d.to_vec())),
                Unit::Ping => out.push(None),
                Unit::Head(_) => {}
            });
            if r.is_err() {
                return (out, r, p);
            }
            // Nothing stays buffered outside a split head or data frame.
            if !matches!(p.state, State::Head | State::WsData) {
                assert!(partial.is_none(), "carry-over kept in {:?}", p.state);
            }
        }
        (out, Ok(()), p)
    }

    /// A stream of the server's own frames (`src/http/ws.rs`): the messages of the load
    /// test, a heartbeat ping between them, 7- and 16-bit lengths, and the close frame.
    fn sample() -> (Vec<u8>, Units) {
        let long16 = vec![b'x'; 300];
        let mut s = HEAD.to_vec();
        let mut want = Vec::new();
        let mut msg = |s: &mut Vec<u8>, m: &[u8]| {
            crate::http::ws::message(s, m);
            want.push(Some(m.to_vec()));
        };
        msg(&mut s, b"7:0:12345");
        crate::http::ws::ping(&mut s);
        msg(&mut s, b"7:15000:99999999999");
        msg(&mut s, &long16);
        msg(&mut s, b"");
        msg(&mut s, &[0xff, 0xfe]); // not UTF-8: a binary frame
        crate::http::ws::close(&mut s, 1001);
        want.insert(1, None);
        (s, want)
    }

    #[test]
    fn whole_stream_in_one_read() {
        let (s, want) = sample();
        let (out, r, p) = run(&[&s]);
        r.unwrap();
        assert_eq!(out, want);
        assert!(p.ended());
    }

    #[test]
    fn every_two_way_split() {
        let (s, want) = sample();
        for a in 0..=s.len() {
            let (out, r, p) = run(&[&s[..a], &s[a..]]);
            r.unwrap();
            assert_eq!(out, want, "split at {a}");
            assert!(p.ended());
        }
    }

    #[test]
    fn a_64_bit_length_split_anywhere_near_its_header() {
        let long = vec![b'y'; 70_000];
        let mut s = HEAD.to_vec();
        crate::http::ws::message(&mut s, &long);
        crate::http::ws::message(&mut s, b"1:2:3");
        let want = vec![Some(long), Some(b"1:2:3".to_vec())];
        let n = s.len();
        let splits = (0..HEAD.len() + 40)
            .chain((HEAD.len() + 40..n - 40).step_by(997))
            .chain(n - 40..=n);
        for a in splits {
            let (out, r, _) = run(&[&s[..a], &s[a..]]);
            r.unwrap();
            assert_eq!(out, want, "split at {a}");
        }
    }

    #[test]
    fn every_three_way_split_of_a_few_frames() {
        // Short frames with a ping and a 16-bit length between them, the whole head included.
        let mut s = HEAD.to_vec();
        crate::http::ws::message(&mut s, b"3:1:10");
        crate::http::ws::ping(&mut s);
        s.extend(frame(PONG, b"ab"));
        crate::http::ws::message(&mut s, &[b'z'; 130]);
        crate::http::ws::message(&mut s, b"3:2:11");
        let want: Units = vec![
            Some(b"3:1:10".to_vec()),
            None,
            None,
            Some(vec![b'z'; 130]),
            Some(b"3:2:11".to_vec()),
        ];
        for a in 0..=s.len() {
            for b in a..=s.len() {
                let (out, r, p) = run(&[&s[..a], &s[a..b], &s[b..]]);
                r.unwrap();
                assert_eq!(out, want, "split at {a},{b}");
                assert!(!p.ended());
            }
        }
        // One byte per read.
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(run(&bytes).0, want);
    }

    #[test]
    fn frames_a_server_may_not_send() {
        let bad: [(&[u8], &str); 7] = [
            (&[0x01, 1, b'a'], "fragmented"),
            (&[0x80, 0], "continuation"),
            (&[0xc1, 0], "reserved bits"),
            (&[0x83, 0], "reserved opcode"),
            (&[0x81, 0x81, 1, 2, 3, 4, b'a'], "masked"),
            (&[0x89, 126, 0, 126], "control over 125"),
            (&[0x81, 127, 0, 0, 0, 0, 0, 0x20, 0, 0], "over the limit"),
        ];
        for (f, what) in bad {
            let mut s = HEAD.to_vec();
            s.extend_from_slice(f);
            let (_, r, _) = run(&[&s]);
            assert!(matches!(r, Err(StreamError::WsFrame(_))), "{what}: {r:?}");
        }
        let mut s = HEAD.to_vec();
        crate::http::ws::close(&mut s, 1000);
        s.push(0x81);
        let (_, r, _) = run(&[&s]);
        assert_eq!(r, Err(StreamError::WsFrame("bytes after the close frame")));
        // The largest frame accepted, with a 64-bit length.
        let mut s = HEAD.to_vec();
        s.extend(frame(BINARY, &vec![1; MAX_CHUNK as usize]));
        let (out, r, _) = run(&[&s[..100], &s[100..]]);
        r.unwrap();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn heads() {
        let ok = |h: &[u8]| run(&[h]).1;
        assert!(ok(HEAD).is_ok());
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(ok(chunked), Err(StreamError::BadHead(_))));
        let wrong_key = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: AAAA\r\n\r\n";
        assert!(matches!(ok(wrong_key), Err(StreamError::BadHead(_))));
        let no_upgrade = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert!(matches!(ok(no_upgrade), Err(StreamError::BadHead(_))));
        // The server's own answer to the key we send.
        let key = WS_REQUEST_HEADERS
            .split("\r\n")
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap();
        assert_eq!(key.len(), 24, "base64 of 16 bytes");
        let mut h = Vec::new();
        crate::http::ws::handshake(
            &mut h,
            &crate::http::ws::accept_key(key.as_bytes()),
            b"X-Any: 1\r\n",
        );
        assert!(ok(&h).is_ok());
    }
}
