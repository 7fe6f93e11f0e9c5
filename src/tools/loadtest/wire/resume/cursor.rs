//! Cursors and openings as the load tester reads them (issue 14's wire spec): a one-id
//! cursor `<epoch>-<offset>` ([`Position`]), and the opening JSON of a WebSocket or raw
//! stream in cursor mode and the data of an SSE `event: reset` ([`Opening`]).

/// One id's position in its stream: `<epoch>-<offset>`, where `epoch` is exactly 16
/// lowercase hex digits (never all zeros) and `offset` is decimal without a leading zero
/// (at most 19 digits). Offset N means "everything up to and including message N".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    /// The stream's epoch (new whenever the stream is recreated).
    pub(crate) epoch: u64,
    /// The number of the last message covered (0: none yet).
    pub(crate) offset: u64,
}

impl Position {
    /// Parses a one-id cursor; `None` if it is not exactly in the spec's syntax (a cursor of
    /// several ids, joined by `.`, is not one position).
    pub(crate) fn parse(s: &[u8]) -> Option<Position> {
        let dash = s.iter().position(|&b| b == b'-')?;
        let (hex, dec) = (&s[..dash], &s[dash + 1..]);
        let lower_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        if hex.len() != 16 || !hex.iter().all(lower_hex) {
            return None;
        }
        let epoch = u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
        let leading_zero = dec.len() > 1 && dec[0] == b'0';
        if epoch == 0 || dec.is_empty() || dec.len() > 19 || leading_zero {
            return None;
        }
        if !dec.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let offset = std::str::from_utf8(dec).ok()?.parse().ok()?;
        Some(Position { epoch, offset })
    }
}

/// What a stream says when it opens: its cursor and the ids that were reset (empty when
/// every id recovered or no cursor was given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Opening {
    /// The connection's cursor before the first message (`last_event_id`).
    pub(crate) cursor: String,
    /// The server's `recovered` (true when no cursor was given).
    pub(crate) recovered: bool,
    /// `(id, reason)` of each id reset: `expired`, `unknown-epoch`, `unknown-offset`,
    /// `no-history`.
    pub(crate) resets: Vec<(String, String)>,
}

/// Parses the opening JSON of a WebSocket or raw stream in cursor mode:
/// `{"last_event_id":"<cursor>","recovered":true|false,"resets":[{"id":"<id>","reason":"<r>"}]}`.
/// `None` if it is not that shape.
pub(crate) fn parse_opening(json: &[u8]) -> Option<Opening> {
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    let cursor = v.get("last_event_id")?.as_str()?.to_string();
    let recovered = v.get("recovered")?.as_bool()?;
    let resets = v
        .get("resets")?
        .as_array()?
        .iter()
        .map(reset_entry)
        .collect::<Option<Vec<_>>>()?;
    Some(Opening {
        cursor,
        recovered,
        resets,
    })
}

/// `(id, reason)` of a reset entry `{"id":"<id>","reason":"<r>"}` (the SSE reset event's
/// data has the same two keys, reason first).
pub(crate) fn reset_entry(v: &serde_json::Value) -> Option<(String, String)> {
    let id = v.get("id")?.as_str()?.to_string();
    let reason = v.get("reason")?.as_str()?.to_string();
    Some((id, reason))
}

/// Parses an SSE reset event's data `{"reason":"<reason>","id":"<id>"}` into `(id, reason)`.
pub(crate) fn parse_reset_data(json: &[u8]) -> Option<(String, String)> {
    reset_entry(&serde_json::from_slice(json).ok()?)
}

#[cfg(test)]
mod tests {
    use super::{parse_opening, parse_reset_data, Position};

    #[test]
    fn positions_in_the_spec_syntax_only() {
        let p = Position::parse(b"00000000000000ab-17").unwrap();
        assert_eq!((p.epoch, p.offset), (0xab, 17));
        let max = Position::parse(b"ffffffffffffffff-9999999999999999999").unwrap();
        assert_eq!(
            (max.epoch, max.offset),
            (u64::MAX, 9_999_999_999_999_999_999)
        );
        assert_eq!(Position::parse(b"0123456789abcdef-0").unwrap().offset, 0);
        for bad in [
            &b"0000000000000000-1"[..],               // epoch all zeros
            b"00000000000000AB-1",                    // upper case
            b"00000000000000a-1",                     // 15 digits
            b"00000000000000ab-01",                   // leading zero
            b"00000000000000ab-",                     // no offset
            b"00000000000000ab-10000000000000000000", // 20 digits
            b"00000000000000ab-1.00000000000000ac-2", // two ids
            b"earliest",
        ] {
            assert_eq!(
                Position::parse(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn openings_as_the_spec_writes_them() {
        let o = parse_opening(
            br#"{"last_event_id":"00000000000000ab-3","recovered":true,"resets":[]}"#,
        )
        .unwrap();
        assert_eq!(o.cursor, "00000000000000ab-3");
        assert!(o.recovered && o.resets.is_empty());
        let o = parse_opening(br#"{"last_event_id":"00000000000000ac-9","recovered":false,"resets":[{"id":"7","reason":"unknown-epoch"}]}"#).unwrap();
        assert!(!o.recovered);
        assert_eq!(o.resets, vec![("7".into(), "unknown-epoch".into())]);
        assert_eq!(parse_opening(b"7:1:100"), None);
        assert_eq!(parse_opening(br#"{"recovered":true,"resets":[]}"#), None);
        assert_eq!(
            parse_reset_data(br#"{"reason":"expired","id":"7"}"#),
            Some(("7".into(), "expired".into()))
        );
    }
}
