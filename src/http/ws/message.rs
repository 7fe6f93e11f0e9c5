//! A client's data messages on a WebSocket stream (RFC 6455 sections 5.4, 5.6, 8.1): a push
//! stream ignores what they say, but not how they are framed. A continuation with no
//! message started, or a new message while one is still in progress, is a protocol error
//! (1002); text that is not UTF-8 (8.1), also when a code point is split across fragments,
//! is 1007. The state is a few bytes, kept by the shard only while a fragmented message is
//! in progress ([`Fragments::in_message`]).

/// Where a client's fragmented data message stands between frames.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fragments {
    /// 0: no message in progress; 1: a text message; 2: a binary message.
    kind: u8,
    /// The start of a UTF-8 sequence that the last text fragment ended inside.
    carry: [u8; 3],
    /// Bytes of `carry` in use.
    carry_len: u8,
}

/// A data frame's verdict, for [`Fragments::frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Well-formed; nothing to answer.
    Fine,
    /// Close with this code (1002 or 1007).
    Close(u16),
}

/// Opcodes of data frames (section 5.2).
const CONTINUATION: u8 = 0;
const TEXT: u8 = 1;

/// Length of the UTF-8 sequence that lead byte `b` starts (only called on the lead byte of
/// a valid prefix).
fn seq_len(b: u8) -> usize {
    match b {
        0xf0..=0xf7 => 4,
        0xe0..=0xef => 3,
        _ => 2,
    }
}

impl Fragments {
    /// Whether a fragmented message is in progress (the state must be kept).
    pub fn in_message(&self) -> bool {
        self.kind != 0
    }

    /// A data frame of `opcode` (0 continuation, 1 text, 2 binary), final or not, carrying
    /// `payload` (unmasked).
    pub(super) fn frame(&mut self, opcode: u8, fin: bool, payload: &[u8]) -> Verdict {
        let text = match (opcode, self.kind) {
            (CONTINUATION, 0) => return Verdict::Close(1002), // no message to continue
            (CONTINUATION, k) => k == 1,
            (_, 0) => opcode == TEXT,
            _ => return Verdict::Close(1002), // a new message inside a fragmented one
        };
        self.kind = if fin {
            0
        } else if text {
            1
        } else {
            2
        };
        if text && !self.utf8(payload, fin) {
            *self = Fragments::default();
            return Verdict::Close(1007);
        }
        if fin {
            *self = Fragments::default();
        }
        Verdict::Fine
    }

    /// Validates the next `payload` of a text message, with the sequence the previous
    /// fragment ended inside; `fin`: nothing may be left open.
    fn utf8(&mut self, payload: &[u8], fin: bool) -> bool {
        let mut data = payload;
        if self.carry_len > 0 {
            let have = usize::from(self.carry_len);
            let need = seq_len(self.carry[0]);
            let take = (need - have).min(data.len());
            let mut seq = [0u8; 4];
            seq[..have].copy_from_slice(&self.carry[..have]);
            seq[have..have + take].copy_from_slice(&data[..take]);
            data = &data[take..];
            match std::str::from_utf8(&seq[..have + take]) {
                Ok(_) => self.carry_len = 0,
                Err(e) if e.error_len().is_none() && !fin => {
                    // Still inside the sequence (a 1-byte fragment): keep what there is.
                    self.carry[have..have + take].copy_from_slice(&seq[have..have + take]);
                    self.carry_len = (have + take) as u8;
                    return true;
                }
                Err(_) => return false,
            }
        }
        match std::str::from_utf8(data) {
            Ok(_) => true,
            Err(e) if e.error_len().is_none() && !fin => {
                let tail = &data[e.valid_up_to()..];
                self.carry[..tail.len()].copy_from_slice(tail);
                self.carry_len = tail.len() as u8;
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Fragments, Verdict};

    /// Feeds `text` as a message fragmented at every cut in `cuts`.
    fn fragmented(text: &[u8], cuts: &[usize]) -> Verdict {
        let mut f = Fragments::default();
        let mut at = 0;
        let mut ends: Vec<usize> = cuts.to_vec();
        ends.push(text.len());
        for (k, &end) in ends.iter().enumerate() {
            let op = if k == 0 { 1 } else { 0 };
            let v = f.frame(op, k == ends.len() - 1, &text[at..end]);
            if v != Verdict::Fine {
                return v;
            }
            at = end;
        }
        assert!(!f.in_message());
        Verdict::Fine
    }

    #[test]
    fn utf8_across_every_cut() {
        let s = "aé€😀z".as_bytes();
        for a in 0..=s.len() {
            for b in a..=s.len() {
                assert_eq!(fragmented(s, &[a, b]), Verdict::Fine, "cuts {a} {b}");
            }
        }
        let mut bad = s.to_vec();
        bad[4] = b'x'; // inside the euro sign
        for a in 0..=bad.len() {
            assert_eq!(fragmented(&bad, &[a]), Verdict::Close(1007), "cut {a}");
        }
        // A message that ends inside a sequence, an overlong form, a surrogate.
        for tail in [&[0xe2, 0x82][..], &[0xc0, 0x80], &[0xed, 0xa0, 0x80]] {
            assert_eq!(fragmented(tail, &[1]), Verdict::Close(1007), "{tail:?}");
            assert_eq!(fragmented(tail, &[]), Verdict::Close(1007), "{tail:?}");
        }
    }

    #[test]
    fn fragment_order() {
        let mut f = Fragments::default();
        assert_eq!(
            f.frame(0, true, b"x"),
            Verdict::Close(1002),
            "continuation first"
        );
        assert_eq!(
            f.frame(2, false, &[0xff]),
            Verdict::Fine,
            "binary is not UTF-8"
        );
        assert!(f.in_message());
        assert_eq!(
            f.frame(1, true, b"x"),
            Verdict::Close(1002),
            "text inside binary"
        );
        let mut f = Fragments::default();
        assert_eq!(f.frame(2, false, &[0xff]), Verdict::Fine);
        assert_eq!(f.frame(0, true, &[0xfe]), Verdict::Fine);
        assert!(!f.in_message());
    }
}
