//! The cluster wire message: what one Redis `PUBLISH` carries between nodes (sans-IO).
//!
//! One payload carries a batch of records published by one node:
//!
//! ```text
//! "UC" 0x01            magic and version (3 bytes)
//! node   u64 BE        the publishing node's random id (receivers drop their own echoes)
//! then, repeated until the end:
//!   kind  u8           1 = send (`POST /send/<id>`), 2 = friends event (`POST /publish/<user>`),
//!                      3 = send with its position (history on: written by Redis, see
//!                      [`super::history`])
//!   klen  u8           1..=128
//!   key   klen bytes   the id (send) or the publishing user (friends event), as in the URL
//!   (kind 3 only:)
//!   epoch  u64 BE      the id's stream epoch
//!   offset u64 BE      the message's offset in it
//!   tag    u64 BE      the publishing node's tag of the publish (its reply waits for it)
//!   mlen  u32 BE       at most 64 KiB (the publish listener's body limit)
//!   msg   mlen bytes   the message, verbatim
//! ```
//!
//! Decoding never panics and never trusts a length: a truncated or oversized record ends
//! the batch with an error, and the records before it are kept.

use bytes::{BufMut, Bytes};

use crate::http::MAX_BODY;
use crate::id::MAX_ID_LEN;

/// Magic and version at the start of every payload.
const MAGIC: [u8; 3] = *b"UC\x01";
/// Bytes before the first record.
pub const HEADER_LEN: usize = MAGIC.len() + 8;
/// Bytes of one record around its key and message.
pub const RECORD_OVERHEAD: usize = 1 + 1 + 4;

/// What a record asks the receiving node to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `send(id, msg)`: deliver to the local connections under the id.
    Send = 1,
    /// A friends event from user `key`: every node fans it out to the local friends of `key`
    /// from its own copy of the graph (issue 7; carried, not yet acted on).
    Friends = 2,
    /// A send numbered by Redis (history on in cluster mode): every node, the publishing
    /// one too, delivers it at its position.
    Positioned = 3,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Send),
            2 => Some(Kind::Friends),
            3 => Some(Kind::Positioned),
            _ => None,
        }
    }
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// What to do.
    pub kind: Kind,
    /// The id (send) or the publishing user (friends event), 1 to 128 bytes, not yet
    /// validated as an id.
    pub key: Bytes,
    /// The message.
    pub msg: Bytes,
    /// Kind 3: the message's position and the publishing node's tag.
    pub pos: Option<(crate::history::Pos, u64)>,
}

/// Why a payload could not be (wholly) decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The payload does not start with the magic and version, or is shorter than a header.
    #[error("not a uring-comet cluster payload (bad magic or version)")]
    BadHeader,
    /// A record is cut short or names a length over its limit.
    #[error("truncated or oversized record")]
    BadRecord,
    /// A record's kind byte is unknown.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
}

/// Starts a payload from node `node` in `out` (cleared first).
pub fn begin(out: &mut Vec<u8>, node: u64) {
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.put_u64(node);
}

/// Appends one record. `key` must be 1 to 128 bytes and `msg` at most 64 KiB (the callers
/// pass validated ids and accepted bodies; longer ones are cut, never panicked on).
pub fn push(out: &mut Vec<u8>, kind: Kind, key: &[u8], msg: &[u8]) {
    let key = &key[..key.len().min(MAX_ID_LEN)];
    let msg = &msg[..msg.len().min(MAX_BODY)];
    out.push(kind as u8);
    out.push(key.len() as u8);
    out.extend_from_slice(key);
    out.put_u32(msg.len() as u32);
    out.extend_from_slice(msg);
}

/// Decodes a payload: the publishing node, and its records in order. On a bad record the
/// records before it are returned along with the error.
pub fn decode(payload: &Bytes) -> (Option<u64>, Vec<Record>, Option<WireError>) {
    let mut records = Vec::new();
    if payload.len() < HEADER_LEN || payload[..3] != MAGIC {
        return (None, records, Some(WireError::BadHeader));
    }
    let node = u64::from_be_bytes(payload[3..HEADER_LEN].try_into().unwrap_or([0; 8]));
    let mut at = HEADER_LEN;
    while at < payload.len() {
        match record(payload, at) {
            Ok((r, next)) => {
                records.push(r);
                at = next;
            }
            Err(e) => return (Some(node), records, Some(e)),
        }
    }
    (Some(node), records, None)
}

/// The record at `at` and where the next one starts.
fn record(p: &Bytes, at: usize) -> Result<(Record, usize), WireError> {
    let head = p.get(at..at + 2).ok_or(WireError::BadRecord)?;
    let kind = Kind::from_u8(head[0]).ok_or(WireError::UnknownKind(head[0]))?;
    let klen = usize::from(head[1]);
    if klen == 0 || klen > MAX_ID_LEN {
        return Err(WireError::BadRecord);
    }
    let key_at = at + 2;
    let mut len_at = key_at + klen;
    let mut pos = None;
    if kind == Kind::Positioned {
        let p = p.get(len_at..len_at + 24).ok_or(WireError::BadRecord)?;
        let word = |i: usize| u64::from_be_bytes(p[i..i + 8].try_into().unwrap_or([0; 8]));
        let at = crate::history::Pos {
            epoch: word(0),
            offset: word(8),
        };
        pos = Some((at, word(16)));
        len_at += 24;
    }
    let len = p.get(len_at..len_at + 4).ok_or(WireError::BadRecord)?;
    let mlen = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if mlen > MAX_BODY {
        return Err(WireError::BadRecord);
    }
    let msg_at = len_at + 4;
    let end = msg_at.checked_add(mlen).ok_or(WireError::BadRecord)?;
    if end > p.len() {
        return Err(WireError::BadRecord);
    }
    Ok((
        Record {
            kind,
            key: p.slice(key_at..key_at + klen),
            msg: p.slice(msg_at..end),
            pos,
        },
        end,
    ))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::{begin, decode, push, Kind, WireError};

    #[test]
    fn round_trip_exact_bytes() {
        let mut out = Vec::new();
        begin(&mut out, 0x0102_0304_0506_0708);
        push(&mut out, Kind::Send, b"42", b"hi");
        push(&mut out, Kind::Friends, b"alice", b"");
        assert_eq!(
            out,
            b"UC\x01\x01\x02\x03\x04\x05\x06\x07\x08\x01\x0242\x00\x00\x00\x02hi\x02\x05alice\x00\x00\x00\x00"
        );
        let (node, recs, err) = decode(&Bytes::from(out));
        assert_eq!((node, err), (Some(0x0102_0304_0506_0708), None));
        assert_eq!(recs.len(), 2);
        assert_eq!(
            (recs[0].kind, &recs[0].key[..], &recs[0].msg[..]),
            (Kind::Send, &b"42"[..], &b"hi"[..])
        );
        assert_eq!(
            (recs[1].kind, &recs[1].key[..], &recs[1].msg[..]),
            (Kind::Friends, &b"alice"[..], &b""[..])
        );
    }

    #[test]
    fn positioned_record_as_the_script_writes_it() {
        // What history.rs' PUBLISH_LUA appends: kind 3, the key, epoch, offset, tag, message.
        let mut out = Vec::new();
        begin(&mut out, 9);
        out.extend_from_slice(b"\x03\x0242");
        out.extend_from_slice(&0x1122_3344_5566_7788u64.to_be_bytes());
        out.extend_from_slice(&5u64.to_be_bytes());
        out.extend_from_slice(&77u64.to_be_bytes());
        out.extend_from_slice(b"\x00\x00\x00\x02hi");
        let (node, recs, err) = decode(&Bytes::from(out.clone()));
        assert_eq!((node, err, recs.len()), (Some(9), None, 1));
        let pos = crate::history::Pos {
            epoch: 0x1122_3344_5566_7788,
            offset: 5,
        };
        assert_eq!(recs[0].kind, Kind::Positioned);
        assert_eq!(
            (&recs[0].key[..], &recs[0].msg[..]),
            (&b"42"[..], &b"hi"[..])
        );
        assert_eq!(recs[0].pos, Some((pos, 77)));
        // Cut anywhere inside: an error, never a panic.
        for cut in super::HEADER_LEN + 1..out.len() {
            let (_, recs, err) = decode(&Bytes::copy_from_slice(&out[..cut]));
            assert_eq!((recs.len(), err), (0, Some(WireError::BadRecord)));
        }
    }

    #[test]
    fn bad_payloads_never_panic() {
        assert_eq!(
            decode(&Bytes::from_static(b"")).2,
            Some(WireError::BadHeader)
        );
        assert_eq!(
            decode(&Bytes::from_static(b"XX\x01\0\0\0\0\0\0\0\0")).2,
            Some(WireError::BadHeader)
        );
        let mut out = Vec::new();
        begin(&mut out, 7);
        push(&mut out, Kind::Send, b"1", b"ok");
        let good = out.len();
        push(&mut out, Kind::Send, b"2", b"cut short");
        // Every truncation of the second record keeps the first and reports the rest.
        for cut in good + 1..out.len() {
            let (node, recs, err) = decode(&Bytes::copy_from_slice(&out[..cut]));
            assert_eq!(
                (node, recs.len(), err),
                (Some(7), 1, Some(WireError::BadRecord))
            );
        }
        // A length over 64 KiB, a zero-length key, an unknown kind.
        let mut big = out[..good].to_vec();
        big.extend_from_slice(b"\x01\x011\xff\xff\xff\xff");
        assert_eq!(decode(&Bytes::from(big)).2, Some(WireError::BadRecord));
        let mut empty_key = out[..good].to_vec();
        empty_key.extend_from_slice(b"\x01\x00\0\0\0\0");
        assert_eq!(
            decode(&Bytes::from(empty_key)).2,
            Some(WireError::BadRecord)
        );
        let mut kind = out[..good].to_vec();
        kind.extend_from_slice(b"\x09\x011\0\0\0\0");
        assert_eq!(
            decode(&Bytes::from(kind)).2,
            Some(WireError::UnknownKind(9))
        );
    }
}
