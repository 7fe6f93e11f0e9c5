//! Subscriber ids: opaque byte strings taken from one URL path segment.
//!
//! An id is 1 to [`MAX_ID_LEN`] bytes of `[A-Za-z0-9._~-]` (RFC 3986 "unreserved"). Any
//! other byte (including `%`, so percent-encoded ids are refused rather than decoded) makes
//! the whole request a 400, on both listeners alike, so the same id is never spelled two
//! ways. Decimal integers are the common case: a canonical decimal (no leading zero, fits in
//! 63 bits) is stored inline in 8 bytes with no allocation; `007` and `7` stay distinct ids
//! because `007` is not canonical and is kept as a string.

use std::fmt;
use std::hash::{Hash, Hasher};

/// Longest id, bytes.
pub const MAX_ID_LEN: usize = 128;
/// Most ids one subscriber connection may be logged in under (`/test/1,2,3`).
pub const MAX_IDS_PER_CONN: usize = 64;

/// A subscriber id. 16 bytes: inline for canonical decimals, one heap string otherwise.
#[derive(Clone, PartialEq, Eq)]
pub enum Id {
    /// A canonical decimal below 2^63, e.g. `123`.
    Num(u64),
    /// Any other valid id, stored as its bytes (thin pointer keeps `Id` at 16 bytes).
    Str(Box<Box<[u8]>>),
}

/// Why a path segment is not a valid id or id list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is empty (also an empty member of a list such as `1,,2`).
    #[error("empty id")]
    Empty,
    /// The id is longer than [`MAX_ID_LEN`] bytes.
    #[error("id longer than 128 bytes")]
    TooLong,
    /// The id holds a byte outside `[A-Za-z0-9._~-]`.
    #[error("id holds a byte outside [A-Za-z0-9._~-]")]
    BadByte,
    /// The list names more than [`MAX_IDS_PER_CONN`] ids.
    #[error("more than 64 ids")]
    TooMany,
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-')
}

impl Id {
    /// Parses one id. Errors: [`IdError::Empty`], [`IdError::TooLong`], [`IdError::BadByte`].
    pub fn parse(s: &[u8]) -> Result<Id, IdError> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if s.len() > MAX_ID_LEN {
            return Err(IdError::TooLong);
        }
        if !s.iter().all(|&b| is_id_byte(b)) {
            return Err(IdError::BadByte);
        }
        // Canonical decimal: no leading zero (except "0" itself), at most 18 digits so it
        // is always below 2^63 and the inline form round-trips to the same bytes.
        let canonical =
            s.len() <= 18 && s.iter().all(u8::is_ascii_digit) && (s[0] != b'0' || s.len() == 1);
        if canonical {
            let n = s.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            return Ok(Id::Num(n));
        }
        Ok(Id::Str(Box::new(s.into())))
    }

    /// Parses a comma-separated list of 1 to [`MAX_IDS_PER_CONN`] ids; duplicates are
    /// folded into one. Errors: as [`Id::parse`] for any member, or [`IdError::TooMany`].
    pub fn parse_list(s: &[u8]) -> Result<Vec<Id>, IdError> {
        let mut ids: Vec<Id> = Vec::with_capacity(1);
        for part in s.split(|&b| b == b',') {
            if ids.len() == MAX_IDS_PER_CONN {
                return Err(IdError::TooMany);
            }
            let id = Id::parse(part)?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// A 64-bit hash of the id, the same in every shard and process (used to pick the owner
    /// shard, so it must not depend on a random seed).
    pub fn stable_hash(&self) -> u64 {
        // FNV-1a over the canonical bytes for strings; a multiplicative mix for numbers.
        match self {
            Id::Num(n) => (n ^ 0x9e37_79b9_7f4a_7c15)
                .wrapping_mul(0xff51_afd7_ed55_8ccd)
                .rotate_left(29),
            Id::Str(s) => s.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            }),
        }
    }

    /// The shard that owns this id among `shards` shards.
    pub fn owner(&self, shards: usize) -> usize {
        ((self.stable_hash() >> 16) % shards as u64) as usize
    }
}

impl Hash for Id {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Id::Num(n) => state.write_u64(*n),
            Id::Str(s) => state.write(s),
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Num(n) => write!(f, "{n}"),
            // Valid ids are ASCII, so this is lossless.
            Id::Str(s) => f.write_str(&String::from_utf8_lossy(s)),
        }
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::{Id, IdError};

    #[test]
    fn sizes_and_forms() {
        assert_eq!(std::mem::size_of::<Id>(), 16);
        assert_eq!(Id::parse(b"123").unwrap(), Id::Num(123));
        assert_eq!(Id::parse(b"0").unwrap(), Id::Num(0));
        assert!(matches!(Id::parse(b"007").unwrap(), Id::Str(_)));
        assert_ne!(Id::parse(b"007").unwrap(), Id::parse(b"7").unwrap());
        assert!(matches!(
            Id::parse(b"9999999999999999999999").unwrap(),
            Id::Str(_)
        ));
        assert_eq!(Id::parse(b"a.b_c~d-e").unwrap().to_string(), "a.b_c~d-e");
    }

    #[test]
    fn rejects() {
        assert_eq!(Id::parse(b""), Err(IdError::Empty));
        assert_eq!(Id::parse(&[b'a'; 129]), Err(IdError::TooLong));
        assert!(Id::parse(&[b'a'; 128]).is_ok());
        for bad in [&b"a%20"[..], b"a/b", b"a b", b"\0", b"\xff", b"a,b"] {
            assert_eq!(Id::parse(bad), Err(IdError::BadByte), "{bad:?}");
        }
    }

    #[test]
    fn lists() {
        assert_eq!(Id::parse_list(b"1,2,3").unwrap().len(), 3);
        assert_eq!(Id::parse_list(b"1,1").unwrap().len(), 1);
        assert_eq!(Id::parse_list(b"1,,2"), Err(IdError::Empty));
        assert_eq!(Id::parse_list(b"1,"), Err(IdError::Empty));
        let ok: Vec<String> = (0..64).map(|i| i.to_string()).collect();
        assert_eq!(Id::parse_list(ok.join(",").as_bytes()).unwrap().len(), 64);
        let over: Vec<String> = (0..65).map(|i| i.to_string()).collect();
        assert_eq!(
            Id::parse_list(over.join(",").as_bytes()),
            Err(IdError::TooMany)
        );
    }
}
