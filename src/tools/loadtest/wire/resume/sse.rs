//! A byte-stream decoder of server-sent events (WHATWG HTML, "Interpreting an event
//! stream"): fed whatever pieces of the body arrive (chunk boundaries are not event
//! boundaries), it hands over each comment line and each dispatched event with its fields.
//!
//! Lines end with CRLF, LF or CR (a CR at the end of one piece and an LF at the start of
//! the next are one line end). A line starting with `:` is a comment; otherwise
//! `field:value` (one space after the colon is not part of the value), or a bare `field`
//! with an empty value. `data` lines are joined with LF; `event` sets the type; `id` sets
//! the event's id (a value holding NUL is ignored, as the standard says); `retry` and
//! unknown fields are skipped. A blank line dispatches the event if any field was seen;
//! unlike a browser, an id-only event is handed over too (it carries the opening cursor).

/// Longest line or event data kept, bytes: past it the stream is treated as broken.
const MAX_EVENT: usize = 1 << 20;

/// One dispatched event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SseEvent<'a> {
    /// The `event:` value (empty: the default type, `message`).
    pub(crate) kind: &'a [u8],
    /// The `id:` value, if the event had one.
    pub(crate) id: Option<&'a [u8]>,
    /// The `data:` lines joined with LF, if the event had any.
    pub(crate) data: Option<&'a [u8]>,
}

/// What the decoder hands over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SseItem<'a> {
    /// A comment line's text after the `:` (uring-comet's `hi` opening, `ping` heartbeat).
    Comment(&'a [u8]),
    /// An event, at its blank line.
    Event(SseEvent<'a>),
}

/// The decoder of one stream.
#[derive(Debug, Default)]
pub(crate) struct SseDecoder {
    /// The current line, while it is split across pieces.
    line: Vec<u8>,
    /// The last piece ended with CR: an LF starting the next is part of that line end.
    after_cr: bool,
    data: Vec<u8>,
    has_data: bool,
    kind: Vec<u8>,
    id: Option<Vec<u8>>,
    /// A field has been seen since the last dispatch.
    fields: bool,
}

impl SseDecoder {
    /// Decodes `input`, the next bytes of the body; calls `on_item` for each comment and
    /// event. Errors: a line or an event's data longer than 1 MiB.
    pub(crate) fn feed(
        &mut self,
        mut input: &[u8],
        on_item: &mut dyn FnMut(SseItem<'_>),
    ) -> Result<(), &'static str> {
        if self.after_cr {
            self.after_cr = false;
            input = input.strip_prefix(b"\n").unwrap_or(input);
        }
        while let Some(end) = input.iter().position(|&b| b == b'\n' || b == b'\r') {
            let skip = if input[end] == b'\r' {
                match input.get(end + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    None => {
                        self.after_cr = true;
                        1
                    }
                }
            } else {
                1
            };
            if self.line.is_empty() {
                self.on_line(&input[..end], on_item)?;
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&input[..end]);
                self.on_line(&line, on_item)?;
                line.clear();
                self.line = line;
            }
            input = &input[end + skip..];
        }
        self.line.extend_from_slice(input);
        if self.line.len() > MAX_EVENT {
            return Err("SSE line longer than 1 MiB");
        }
        Ok(())
    }

    /// One complete line (without its line end).
    fn on_line(
        &mut self,
        line: &[u8],
        on_item: &mut dyn FnMut(SseItem<'_>),
    ) -> Result<(), &'static str> {
        if line.is_empty() {
            self.dispatch(on_item);
            return Ok(());
        }
        if let Some(text) = line.strip_prefix(b":") {
            on_item(SseItem::Comment(text));
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
                if self.data.len() > MAX_EVENT {
                    return Err("SSE event data longer than 1 MiB");
                }
            }
            b"event" => self.kind = value.to_vec(),
            b"id" if !value.contains(&0) => self.id = Some(value.to_vec()),
            _ => {}
        }
        self.fields = true;
        Ok(())
    }

    /// A blank line: hands over the event if any field was seen, then starts the next.
    fn dispatch(&mut self, on_item: &mut dyn FnMut(SseItem<'_>)) {
        if self.fields {
            on_item(SseItem::Event(SseEvent {
                kind: &self.kind,
                id: self.id.as_deref(),
                data: self.has_data.then_some(&self.data[..]),
            }));
        }
        self.data.clear();
        self.kind.clear();
        self.id = None;
        self.has_data = false;
        self.fields = false;
    }
}

#[cfg(test)]
mod tests {
    use super::{SseDecoder, SseItem};

    /// Items as owned text: `:comment`, or `kind|id|data` with `-` for none.
    fn items(pieces: &[&[u8]]) -> Vec<String> {
        let mut d = SseDecoder::default();
        let mut out = Vec::new();
        for p in pieces {
            d.feed(p, &mut |it| {
                let s = String::from_utf8_lossy;
                out.push(match it {
                    SseItem::Comment(c) => format!(":{}", s(c)),
                    SseItem::Event(e) => format!(
                        "{}|{}|{}",
                        s(e.kind),
                        e.id.map_or("-".into(), |i| s(i).into_owned()),
                        e.data.map_or("-".into(), |d| s(d).into_owned())
                    ),
                })
            })
            .unwrap();
        }
        out
    }

    /// The spec's openings (fresh, then reset) and message events, as the server sends them.
    const STREAM: &[u8] = b": hi\nid: 00000000000000ab-3\n\n: hi\n\nevent: reset\nid: 00000000000000ac-9\ndata: {\"reason\":\"expired\",\"id\":\"7\"}\n\nid: 00000000000000ab-4\ndata: 7:1:100\n\n: ping\n\nid: 00000000000000ab-5\ndata: a\ndata: b\n\n";

    fn want() -> Vec<String> {
        [
            ": hi",
            "|00000000000000ab-3|-",
            ": hi",
            "reset|00000000000000ac-9|{\"reason\":\"expired\",\"id\":\"7\"}",
            "|00000000000000ab-4|7:1:100",
            ": ping",
            "|00000000000000ab-5|a\nb",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn every_two_way_split_gives_the_same_events() {
        for a in 0..=STREAM.len() {
            assert_eq!(items(&[&STREAM[..a], &STREAM[a..]]), want(), "split at {a}");
        }
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(items(&bytes), want());
    }

    #[test]
    fn cr_and_crlf_end_lines_too() {
        let s = STREAM
            .iter()
            .flat_map(|&b| {
                if b == b'\n' {
                    vec![b'\r', b'\n']
                } else {
                    vec![b]
                }
            })
            .collect::<Vec<u8>>();
        for a in 0..=s.len() {
            assert_eq!(items(&[&s[..a], &s[a..]]), want(), "CRLF split at {a}");
        }
        let cr: Vec<u8> = STREAM
            .iter()
            .map(|&b| if b == b'\n' { b'\r' } else { b })
            .collect();
        for a in 0..=cr.len() {
            assert_eq!(items(&[&cr[..a], &cr[a..]]), want(), "CR split at {a}");
        }
    }

    #[test]
    fn fields_without_space_bare_names_and_nul_ids() {
        let got = items(&[b"data:x\nid\n\nid: a\0b\ndata\n\nretry: 5\n\n"]);
        assert_eq!(got, ["||x", "|-|", "|-|-"].map(String::from).to_vec());
    }
}
