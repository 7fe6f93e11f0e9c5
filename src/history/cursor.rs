//! Cursors (sans-IO): a position in one id's stream, `<epoch>-<offset>`, and a connection's
//! cursor, the positions of its ids joined by `.` in path order.
//!
//! The epoch is 16 lowercase hex digits (a u64, never 0), new whenever an id's stream is
//! recreated (expiry, eviction, restart); the offset is the decimal number of the last
//! message the client has (messages of an id are numbered 1, 2, 3...; 0: none yet). No
//! wall-clock time is in a cursor, so a clock that goes back cannot confuse it. Every byte is
//! URL-safe (RFC 3986 unreserved), so a cursor goes in a query string as is.

use std::fmt;
use std::io::Write;

/// Most positions a cursor holds: one per id of a connection
/// ([`crate::id::MAX_IDS_PER_CONN`]).
const MAX_POSITIONS: usize = crate::id::MAX_IDS_PER_CONN;

/// A position in one id's stream: the client has every message up to and including
/// `offset` of the stream numbered `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// The stream's epoch (never 0 for a real stream).
    pub epoch: u64,
    /// The last message's number (0: none).
    pub offset: u64,
}

impl Pos {
    /// Appends `<epoch>-<offset>` (16 hex digits, `-`, decimal) to `out`.
    pub fn write(self, out: &mut Vec<u8>) {
        let _ = write!(out, "{:016x}-{}", self.epoch, self.offset);
    }

    /// Parses one position. Errors: [`CursorError::Epoch`], [`CursorError::Offset`].
    pub fn parse(s: &[u8]) -> Result<Pos, CursorError> {
        let dash = s
            .iter()
            .position(|&b| b == b'-')
            .ok_or(CursorError::Epoch)?;
        let (e, o) = (&s[..dash], &s[dash + 1..]);
        if e.len() != 16 || !e.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(CursorError::Epoch);
        }
        // 16 hex digits always fit a u64.
        let epoch = u64::from_str_radix(std::str::from_utf8(e).unwrap_or("0"), 16)
            .map_err(|_| CursorError::Epoch)?;
        if epoch == 0 {
            return Err(CursorError::Epoch);
        }
        let canonical = !o.is_empty()
            && o.len() <= 19
            && o.iter().all(u8::is_ascii_digit)
            && (o[0] != b'0' || o.len() == 1);
        if !canonical {
            return Err(CursorError::Offset);
        }
        let offset = std::str::from_utf8(o)
            .ok()
            .and_then(|o| o.parse().ok())
            .ok_or(CursorError::Offset)?;
        Ok(Pos { epoch, offset })
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{}", self.epoch, self.offset)
    }
}

/// Where a subscriber asks to start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Resume {
    /// No cursor given: from now on.
    #[default]
    Fresh,
    /// `earliest`: everything still held, of every id.
    Earliest,
    /// One position per id, in path order.
    At(Vec<Pos>),
}

/// Where one id of a connection starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// From now on (no cursor).
    Now,
    /// Everything still held (`earliest`).
    Earliest,
    /// After this position.
    At(Pos),
}

impl Resume {
    /// Where the `k`th id starts.
    pub fn start(&self, k: usize) -> Start {
        match self {
            Resume::Fresh => Start::Now,
            Resume::Earliest => Start::Earliest,
            Resume::At(at) => Start::At(at[k]),
        }
    }
}

/// Why a cursor is refused (a `400`, body `bad cursor: <this>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// An epoch that is not 16 lowercase hex digits, or is 0.
    #[error("an epoch is not 16 lowercase hex digits, or is 0 (reserved)")]
    Epoch,
    /// An offset that is not a canonical decimal of at most 19 digits.
    #[error("an offset is not a decimal number")]
    Offset,
    /// More or fewer positions than the request has ids.
    #[error("the number of positions is not the number of ids")]
    Count,
}

impl Resume {
    /// Parses a connection's cursor for a request under `ids` ids: `earliest`, or `ids`
    /// positions joined by `.`. Errors: [`CursorError`].
    pub fn parse(s: &[u8], ids: usize) -> Result<Resume, CursorError> {
        if s == b"earliest" {
            return Ok(Resume::Earliest);
        }
        let mut at = Vec::with_capacity(ids.min(MAX_POSITIONS));
        for part in s.split(|&b| b == b'.') {
            if at.len() == ids.min(MAX_POSITIONS) {
                return Err(CursorError::Count);
            }
            at.push(Pos::parse(part)?);
        }
        if at.len() != ids {
            return Err(CursorError::Count);
        }
        Ok(Resume::At(at))
    }
}

/// Appends a connection's cursor: `positions` joined by `.`.
pub fn write_cursor(out: &mut Vec<u8>, positions: &[Pos]) {
    for (k, p) in positions.iter().enumerate() {
        if k > 0 {
            out.push(b'.');
        }
        p.write(out);
    }
}

/// The generation an id's implicit epoch is computed from while the id has subscribers
/// (see `store`'s module doc, Epochs): [`Pin::NONE`] (the bucket's current generation) or the
/// value of `History::pin_now` kept by the owner's router since the id's position was
/// first handed out. 0 is `NONE`, so the router can keep it in a field that starts at 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pin(pub u32);

impl Pin {
    /// Not pinned: the bucket's current generation.
    pub const NONE: Pin = Pin(0);
}

#[cfg(test)]
mod tests {
    use super::{write_cursor, CursorError, Pos, Resume};

    #[test]
    fn position_round_trip() {
        let p = Pos {
            epoch: 0x0123_4567_89ab_cdef,
            offset: 42,
        };
        let mut out = Vec::new();
        p.write(&mut out);
        assert_eq!(out, b"0123456789abcdef-42");
        assert_eq!(Pos::parse(&out), Ok(p));
        assert_eq!(p.to_string().as_bytes(), out);
    }

    #[test]
    fn bad_positions() {
        for (s, e) in [
            (&b"0123456789ABCDEF-1"[..], CursorError::Epoch),
            (b"0123456789abcde-1", CursorError::Epoch),
            (b"0000000000000000-1", CursorError::Epoch),
            (b"x", CursorError::Epoch),
            (b"0123456789abcdef-", CursorError::Offset),
            (b"0123456789abcdef-01", CursorError::Offset),
            (b"0123456789abcdef--1", CursorError::Offset),
            (
                b"0123456789abcdef-99999999999999999999",
                CursorError::Offset,
            ),
            (b"0123456789abcdef-1 ", CursorError::Offset),
        ] {
            assert_eq!(Pos::parse(s), Err(e), "{}", String::from_utf8_lossy(s));
        }
    }

    #[test]
    fn connection_cursors() {
        let a = b"0123456789abcdef-3.fedcba9876543210-0";
        let Ok(Resume::At(at)) = Resume::parse(a, 2) else {
            panic!()
        };
        assert_eq!(at[1].offset, 0);
        let mut out = Vec::new();
        write_cursor(&mut out, &at);
        assert_eq!(out, a);
        assert_eq!(Resume::parse(a, 1), Err(CursorError::Count));
        assert_eq!(Resume::parse(a, 3), Err(CursorError::Count));
        assert_eq!(Resume::parse(b"earliest", 5), Ok(Resume::Earliest));
        assert_eq!(Resume::parse(b"", 1), Err(CursorError::Epoch));
    }
}
