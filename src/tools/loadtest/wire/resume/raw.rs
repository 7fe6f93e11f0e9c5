//! A byte-stream decoder of a raw `/sub/` stream in cursor mode (`?cursors=1`, issue 14's
//! wire spec): the opening JSON line, then per message `<cursor> <len>\n<payload>\n`, where
//! `len` is the payload's length in bytes, decimal. The body arrives in chunks, but chunk
//! boundaries are not message boundaries for a client: this decodes the bytes, fed in any
//! pieces.

/// Longest opening or header line, bytes.
const MAX_LINE: usize = 8 * 1024;

/// Largest payload accepted, bytes.
const MAX_PAYLOAD: usize = 1 << 20;

/// What the decoder hands over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawItem<'a> {
    /// The opening line, without its `\n` (JSON, see [`super::cursor::parse_opening`]).
    Opening(&'a [u8]),
    /// A message: its cursor and payload.
    Message {
        /// The connection's cursor including this message.
        cursor: &'a [u8],
        /// The payload, verbatim.
        payload: &'a [u8],
    },
}

/// Where the decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// Inside the opening line.
    #[default]
    Opening,
    /// Inside a message's `<cursor> <len>` line.
    Header,
    /// Inside a payload; this many bytes still due.
    Payload(usize),
    /// After a payload, expecting its `\n`.
    PayloadLf,
}

/// The decoder of one stream.
#[derive(Debug, Default)]
pub(crate) struct RawDecoder {
    state: State,
    /// The line being read, or the current message's cursor once its header is read.
    line: Vec<u8>,
    /// The payload being read.
    payload: Vec<u8>,
}

impl RawDecoder {
    /// Decodes `input`, the next bytes of the body; calls `on_item` for the opening and each
    /// message. Errors: a line without `<cursor> <len>`, a payload not followed by `\n`, a
    /// line or payload over the limits. After an error the stream cannot be decoded further.
    pub(crate) fn feed(
        &mut self,
        mut input: &[u8],
        on_item: &mut dyn FnMut(RawItem<'_>),
    ) -> Result<(), &'static str> {
        while !input.is_empty() {
            match self.state {
                State::Opening | State::Header => {
                    let Some(end) = input.iter().position(|&b| b == b'\n') else {
                        self.line.extend_from_slice(input);
                        if self.line.len() > MAX_LINE {
                            return Err("raw stream: line longer than 8 KiB");
                        }
                        return Ok(());
                    };
                    self.line.extend_from_slice(&input[..end]);
                    input = &input[end + 1..];
                    self.line_done(on_item)?;
                }
                State::Payload(due) => {
                    let n = due.min(input.len());
                    self.payload.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.state = if n == due {
                        State::PayloadLf
                    } else {
                        State::Payload(due - n)
                    };
                }
                State::PayloadLf => {
                    if input[0] != b'\n' {
                        return Err("raw stream: payload not followed by \\n");
                    }
                    input = &input[1..];
                    on_item(RawItem::Message {
                        cursor: &self.line,
                        payload: &self.payload,
                    });
                    self.line.clear();
                    self.payload.clear();
                    self.state = State::Header;
                }
            }
        }
        Ok(())
    }

    /// A complete opening or header line is in `self.line`.
    fn line_done(&mut self, on_item: &mut dyn FnMut(RawItem<'_>)) -> Result<(), &'static str> {
        if self.state == State::Opening {
            on_item(RawItem::Opening(&self.line));
            self.line.clear();
            self.state = State::Header;
            return Ok(());
        }
        let bad = "raw stream: message line not `<cursor> <len>`";
        let sp = self.line.iter().rposition(|&b| b == b' ').ok_or(bad)?;
        let len = std::str::from_utf8(&self.line[sp + 1..])
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
            .ok_or(bad)?;
        if sp == 0 || len > MAX_PAYLOAD {
            return Err(bad);
        }
        self.line.truncate(sp);
        self.state = State::Payload(len);
        if len == 0 {
            self.state = State::PayloadLf;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{RawDecoder, RawItem};

    /// The spec's bytes: opening, a message, an empty payload, a payload holding `\n` and
    /// spaces.
    const STREAM: &[u8] = b"{\"last_event_id\":\"00000000000000ab-3\",\"recovered\":true,\"resets\":[]}\n00000000000000ab-4 7\n7:1:100\n00000000000000ab-5 0\n\n00000000000000ab-6 5\na\nb c\n";

    fn items(pieces: &[&[u8]]) -> Result<Vec<String>, &'static str> {
        let mut d = RawDecoder::default();
        let mut out = Vec::new();
        for p in pieces {
            d.feed(p, &mut |it| {
                let s = String::from_utf8_lossy;
                out.push(match it {
                    RawItem::Opening(o) => format!("open {}", s(o)),
                    RawItem::Message { cursor, payload } => format!("{}={}", s(cursor), s(payload)),
                })
            })?;
        }
        Ok(out)
    }

    #[test]
    fn every_split_gives_the_same_messages() {
        let want = vec![
            "open {\"last_event_id\":\"00000000000000ab-3\",\"recovered\":true,\"resets\":[]}"
                .to_string(),
            "00000000000000ab-4=7:1:100".into(),
            "00000000000000ab-5=".into(),
            "00000000000000ab-6=a\nb c".into(),
        ];
        for a in 0..=STREAM.len() {
            for b in (a..=STREAM.len()).step_by(7) {
                let got = items(&[&STREAM[..a], &STREAM[a..b], &STREAM[b..]]).unwrap();
                assert_eq!(got, want, "split at {a},{b}");
            }
        }
    }

    #[test]
    fn broken_framing_is_an_error() {
        let open = b"{}\n";
        for bad in [&b"abc\n"[..], b"c x\n", b"c 3\nabcX", b" 3\nabc\n"] {
            let mut s = open.to_vec();
            s.extend_from_slice(bad);
            assert!(items(&[&s]).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
