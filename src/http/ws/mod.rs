//! WebSocket (RFC 6455) for subscriber streams, sans-IO: the handshake answer, server
//! frames out, client frames in. Frame headers are parsed and written by `tungstenite`'s
//! frame codec; what is ours is the small loop around it (unmasking, the few opcodes a
//! push-only server has to answer), fuzzed with the rest of the input parsers.
//!
//! Client data frames (text, binary, continuation) are ignored: this is a push channel and
//! publishing is never possible on the subscriber listener. Their framing is checked all the
//! same ([`Fragments`], in `message`): a continuation with no message started, or a new
//! message inside a fragmented one, closes with 1002; text that is not UTF-8, also split
//! across fragments, with 1007 (sections 5.4, 8.1). A ping is answered with a pong
//! carrying its payload (section 5.5.3); a close is answered with a close echoing its status
//! code (section 5.5.1) and the connection then ends. A frame that breaks the protocol
//! (unmasked, reserved bits or opcodes, control frame over 125 bytes or fragmented, a
//! payload over [`MAX_CLIENT_FRAME`]) ends the connection with close code 1002, or 1009 for
//! the size.

use std::io::Cursor;

use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

mod message;

pub use message::Fragments;
use message::Verdict;

/// Largest client frame payload buffered, bytes: clients have nothing to say to a push
/// stream beyond control frames.
pub const MAX_CLIENT_FRAME: u64 = 4096;

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key` (section 4.2.2:
/// base64 of the SHA-1 of the key and the protocol's GUID, always 28 bytes).
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let mut out = [b'='; 28];
    let derived = tungstenite::handshake::derive_accept_key(key);
    let n = derived.len().min(28);
    out[..n].copy_from_slice(&derived.as_bytes()[..n]);
    out
}

/// Appends the `101 Switching Protocols` answer carrying `accept` (from [`accept_key`]),
/// with `extra` header lines (each ending in CRLF) before the blank line.
pub fn handshake(out: &mut Vec<u8>, accept: &[u8; 28], extra: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    out.extend_from_slice(accept);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(extra);
    out.extend_from_slice(b"\r\n");
}

fn header(out: &mut Vec<u8>, opcode: OpCode, len: usize) {
    let h = FrameHeader {
        is_final: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: None,
    };
    // Writing into a Vec cannot fail.
    let _ = h.format(len as u64, out);
}

/// Appends one unmasked server frame carrying `msg`: text if it is UTF-8, else binary.
pub fn message(out: &mut Vec<u8>, msg: &[u8]) {
    let kind = if std::str::from_utf8(msg).is_ok() {
        Data::Text
    } else {
        Data::Binary
    };
    header(out, OpCode::Data(kind), msg.len());
    out.extend_from_slice(msg);
}

/// Appends one unmasked server frame whose payload is `prefix` then `msg` (the cursor mode
/// of a stream: `prefix` is `<cursor>\n`, ASCII): text if `msg` is UTF-8, else binary.
pub fn message_after(out: &mut Vec<u8>, prefix: &[u8], msg: &[u8]) {
    let kind = if std::str::from_utf8(msg).is_ok() && prefix.is_ascii() {
        Data::Text
    } else {
        Data::Binary
    };
    header(out, OpCode::Data(kind), prefix.len() + msg.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(msg);
}

/// Appends a ping frame with an empty payload (the heartbeat).
pub fn ping(out: &mut Vec<u8>) {
    header(out, OpCode::Control(Control::Ping), 0);
}

/// Appends a pong frame echoing `payload` (at most 125 bytes).
pub fn pong(out: &mut Vec<u8>, payload: &[u8]) {
    header(out, OpCode::Control(Control::Pong), payload.len());
    out.extend_from_slice(payload);
}

/// Appends a close frame with status `code` (1000 normal, 1001 going away, 1002 protocol
/// error, 1009 too big).
pub fn close(out: &mut Vec<u8>, code: u16) {
    header(out, OpCode::Control(Control::Close), 2);
    out.extend_from_slice(&code.to_be_bytes());
}

/// What the client's bytes ask of the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// Need more bytes: keep `buf[consumed..]` and read again.
    More,
    /// Answer with these bytes (pongs), then read again.
    Reply,
    /// Answer with these bytes (a close frame) and end the connection.
    End,
}

/// Whether a close status received from a client is one a peer may send (RFC 6455
/// section 7.4: 1000-1003, 1007-1011 and 3000-4999; 1004-1006 and 1015 are reserved and
/// must never be on the wire).
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// Reads every complete client frame at the start of `buf`, appending answers to `out`.
/// Returns what to do next and how many bytes were consumed.
///
/// Pings read in one call get one pong, for the last of them (section 5.5.3 allows
/// answering only the most recent ping), so a ping flood costs at most one pong per read.
/// A close is answered with the client's status, or without one if it sent none; an
/// invalid status or a 1-byte payload gets 1002, a reason that is not UTF-8 gets 1007.
/// `frags` is where a fragmented data message stands: kept by the caller between calls
/// while [`Fragments::in_message`], else the default.
pub fn read_frames(buf: &[u8], out: &mut Vec<u8>, frags: &mut Fragments) -> (Input, usize) {
    let mut pos = 0usize;
    let mut last_ping: Option<Vec<u8>> = None;
    loop {
        let mut cur = Cursor::new(&buf[pos..]);
        let (h, len) = match FrameHeader::parse(&mut cur) {
            Ok(Some(x)) => x,
            Ok(None) => return (answer_pings(out, last_ping), pos),
            Err(_) => {
                close(out, 1002);
                return (Input::End, buf.len());
            }
        };
        if let Some(code) = refusal(&h, len) {
            close(out, code);
            return (Input::End, buf.len());
        }
        let start = pos + cur.position() as usize;
        let end = start + len as usize;
        if end > buf.len() {
            return (answer_pings(out, last_ping), pos);
        }
        let mask = h.mask.unwrap_or([0; 4]);
        let payload: Vec<u8> = buf[start..end]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        pos = end;
        match h.opcode {
            OpCode::Control(Control::Ping) => last_ping = Some(payload),
            OpCode::Control(Control::Close) => {
                answer_pings(out, last_ping.take());
                answer_close(out, &payload);
                return (Input::End, pos);
            }
            OpCode::Data(d) => {
                // Nothing to do with the data on a push stream, but its framing and text
                // must be right.
                let op = match d {
                    Data::Continue => 0,
                    Data::Text => 1,
                    _ => 2,
                };
                if let Verdict::Close(code) = frags.frame(op, h.is_final, &payload) {
                    close(out, code);
                    return (Input::End, buf.len());
                }
            }
            OpCode::Control(_) => {} // pong
        }
    }
}

/// Answers the last ping read, if any, with its pong: [`Input::Reply`] if it did, else
/// [`Input::More`] (section 5.5.3: only the most recent ping needs an answer).
fn answer_pings(out: &mut Vec<u8>, last_ping: Option<Vec<u8>>) -> Input {
    match last_ping {
        Some(p) => {
            pong(out, &p);
            Input::Reply
        }
        None => Input::More,
    }
}

/// The close code a frame with header `h` and a payload of `len` bytes is refused with:
/// 1002 for a protocol error (unmasked, reserved bits or opcodes, a control frame over 125
/// bytes or fragmented; section 5), 1009 for a payload over [`MAX_CLIENT_FRAME`].
fn refusal(h: &FrameHeader, len: u64) -> Option<u16> {
    let control = matches!(h.opcode, OpCode::Control(_));
    let bad = h.mask.is_none()
        || h.rsv1
        || h.rsv2
        || h.rsv3
        || matches!(
            h.opcode,
            OpCode::Data(Data::Reserved(_)) | OpCode::Control(Control::Reserved(_))
        )
        || (control && (len > 125 || !h.is_final));
    if bad {
        Some(1002)
    } else if len > MAX_CLIENT_FRAME {
        Some(1009)
    } else {
        None
    }
}

/// Answers a client's close frame with `payload`: an empty close for an empty one, else a
/// close echoing its code, or 1002 (bad code, 1-byte payload) or 1007 (reason not UTF-8)
/// (section 5.5.1, 7.4).
fn answer_close(out: &mut Vec<u8>, payload: &[u8]) {
    match payload.len() {
        0 => header(out, OpCode::Control(Control::Close), 0),
        1 => close(out, 1002),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !valid_close_code(code) {
                close(out, 1002);
            } else if std::str::from_utf8(&payload[2..]).is_err() {
                close(out, 1007);
            } else {
                close(out, code);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{accept_key, close, handshake, message, ping, Fragments, Input};

    fn read_frames(buf: &[u8], out: &mut Vec<u8>) -> (Input, usize) {
        super::read_frames(buf, out, &mut Fragments::default())
    }

    fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    #[test]
    fn accept_key_of_rfc_example() {
        let mut out = Vec::new();
        handshake(&mut out, &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), b"");
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
    }

    #[test]
    fn server_frames() {
        let mut out = Vec::new();
        message(&mut out, b"hi");
        assert_eq!(out, [0x81, 2, b'h', b'i']);
        out.clear();
        message(&mut out, &[0xff]);
        assert_eq!(out, [0x82, 1, 0xff]);
        out.clear();
        message(&mut out, &[b'a'; 300]);
        assert_eq!(&out[..4], &[0x81, 126, 1, 44]);
        out.clear();
        ping(&mut out);
        close(&mut out, 1001);
        assert_eq!(out, [0x89, 0, 0x88, 2, 0x03, 0xe9]);
    }

    #[test]
    fn ping_close_and_partial() {
        let mut input = client_frame(0x9, b"abc", [1, 2, 3, 4]);
        let mut out = Vec::new();
        assert_eq!(read_frames(&input[..4], &mut out), (Input::More, 0));
        assert_eq!(read_frames(&input, &mut out), (Input::Reply, input.len()));
        assert_eq!(out, [0x8a, 3, b'a', b'b', b'c']);
        out.clear();
        input.extend(client_frame(0x8, &1000u16.to_be_bytes(), [9, 9, 9, 9]));
        assert_eq!(read_frames(&input, &mut out).0, Input::End);
        assert_eq!(&out[out.len() - 4..], &[0x88, 2, 0x03, 0xe8]);
    }

    #[test]
    fn close_codes_and_ping_coalescing() {
        let cases: [(&[u8], &[u8]); 6] = [
            (b"", &[0x88, 0]),
            (&[0x0f, 0xa1], &[0x88, 2, 0x0f, 0xa1]), // 4001 echoed
            (&[0x03, 0xed], &[0x88, 2, 0x03, 0xea]), // 1005 -> 1002
            (&[0x03, 0xe7], &[0x88, 2, 0x03, 0xea]), // 999 -> 1002
            (&[0x03], &[0x88, 2, 0x03, 0xea]),       // 1 byte -> 1002
            (&[0x03, 0xe8, 0xff, 0xfe], &[0x88, 2, 0x03, 0xef]), // bad UTF-8 -> 1007
        ];
        for (payload, want) in cases {
            let mut out = Vec::new();
            assert_eq!(
                read_frames(&client_frame(0x8, payload, [1, 2, 3, 4]), &mut out).0,
                Input::End
            );
            assert_eq!(out, want, "close payload {payload:?}");
        }
        let mut flood = Vec::new();
        for k in 0..50u8 {
            flood.extend(client_frame(0x9, &[k], [5, 6, 7, 8]));
        }
        let mut out = Vec::new();
        assert_eq!(read_frames(&flood, &mut out), (Input::Reply, flood.len()));
        assert_eq!(out, [0x8a, 1, 49], "one pong, for the last ping");
        // A ping between the fragments of a text message is answered.
        let mut frag = vec![0x01, 0x83, 0, 0, 0, 0, b'h', b'e', b'l'];
        frag.extend(client_frame(0x9, b"mid", [1, 1, 1, 1]));
        frag.extend([0x80, 0x82, 0, 0, 0, 0, b'l', b'o']);
        let mut out = Vec::new();
        assert_eq!(read_frames(&frag, &mut out), (Input::Reply, frag.len()));
        assert_eq!(out, b"\x8a\x03mid");
    }

    #[test]
    fn protocol_errors_close_1002() {
        let mut out = Vec::new();
        // Unmasked client frame.
        assert_eq!(read_frames(&[0x89, 0], &mut out).0, Input::End);
        assert_eq!(out, [0x88, 2, 0x03, 0xea]);
        // Text frames are ignored.
        out.clear();
        let f = client_frame(0x1, b"hello", [0, 1, 0, 1]);
        assert_eq!(read_frames(&f, &mut out), (Input::More, f.len()));
        assert!(out.is_empty());
        // A continuation with no message started: 1002; text that is not UTF-8: 1007.
        let f = client_frame(0x0, b"tail", [3, 1, 4, 1]);
        assert_eq!(read_frames(&f, &mut out).0, Input::End);
        assert_eq!(out, [0x88, 2, 0x03, 0xea]);
        out.clear();
        let f = client_frame(0x1, &[b'a', 0xff], [3, 1, 4, 1]);
        assert_eq!(read_frames(&f, &mut out).0, Input::End);
        assert_eq!(out, [0x88, 2, 0x03, 0xef]);
    }

    #[test]
    fn utf8_split_across_fragments_and_reads() {
        // "€" split over two fragments, each in its own read: fine; then a bad byte.
        let (mut frags, mut out) = (Fragments::default(), Vec::new());
        let mut first_nf = client_frame(0x1, &[0xe2, 0x82], [1, 2, 3, 4]);
        first_nf[0] &= 0x7f; // not final
        let r = super::read_frames(&first_nf, &mut out, &mut frags);
        assert_eq!(r, (Input::More, first_nf.len()));
        assert!(frags.in_message());
        let last = client_frame(0x0, &[0xac, b'!'], [4, 3, 2, 1]);
        assert_eq!(
            super::read_frames(&last, &mut out, &mut frags).0,
            Input::More
        );
        assert!(!frags.in_message() && out.is_empty());
        let r = super::read_frames(&first_nf, &mut out, &mut frags);
        assert_eq!(r.0, Input::More);
        let bad = client_frame(0x0, &[0x41], [4, 3, 2, 1]);
        assert_eq!(super::read_frames(&bad, &mut out, &mut frags).0, Input::End);
        assert_eq!(out, [0x88, 2, 0x03, 0xef]);
    }
}
