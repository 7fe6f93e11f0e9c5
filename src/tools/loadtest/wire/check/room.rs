//! `loadtest room`'s message format and its checks on every delivery.
//!
//! A room message is msggen's `{room}:{seq}:{t_us}` padded to `--msg-bytes` with `:` and
//! `x`s (`7:3:1000:xxxx...`): digits, colons and `x` only, so the seed's HTML escaping, SSE's
//! one `data:` line and the WebSocket text frame all carry it byte for byte. Many connections
//! get the same seq, so duplicates are judged per connection, by the number the stream gives
//! each message: the seed's `Recvd msg #N` on `/test/`, the cursor's offset on `/sub/` (every
//! subscriber of a room sees the room's offsets). A number at or below the connection's last
//! is a duplicate; one past the next is a gap (out of order; its messages are lost, found
//! when each connection's count is held against what was published to its room).

use hdrhistogram::Histogram;

use super::parse_u64;

/// Appends room `room`'s message `seq`, sent at `t_us`, padded with `:` and `x`s to
/// `pad_to` bytes when it is shorter.
pub(crate) fn format_room_body(out: &mut Vec<u8>, room: u64, seq: u64, t_us: u64, pad_to: usize) {
    let start = out.len();
    super::format_body(out, room, seq, t_us);
    let len = out.len() - start;
    if len < pad_to {
        out.push(b':');
        out.resize(start + pad_to, b'x');
    }
}

/// Parses a body made by [`format_room_body`] into `(room, seq, t_us)`; `None` if it is not
/// one (the padding is not looked at byte by byte, only its first byte: its length is the
/// check, see [`RoomCheck`]).
pub(crate) fn parse_room_body(body: &[u8]) -> Option<(u64, u64, u64)> {
    let mut parts = body.splitn(4, |&b| b == b':');
    let room = parse_u64(parts.next()?)?;
    let seq = parse_u64(parts.next()?)?;
    let t_us = parse_u64(parts.next()?)?;
    match parts.next() {
        None => Some((room, seq, t_us)),
        Some(pad) if pad.first() == Some(&b'x') => Some((room, seq, t_us)),
        Some(_) => None,
    }
}

/// Counts of what the room checker saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RoomCounts {
    /// Messages that passed every check (each connection's own count is in
    /// [`RoomCheck::received`]).
    pub(crate) ok: u64,
    /// Messages whose number was at or below the connection's last: seen before.
    pub(crate) duplicates: u64,
    /// Messages whose number skipped ahead (a gap before them); the message itself is kept.
    pub(crate) out_of_order: u64,
    /// Messages for another room than the connection's.
    pub(crate) wrong_room: u64,
    /// Messages not in the format, of the wrong length, or sent in the future.
    pub(crate) garbled: u64,
    /// Heartbeats (neither messages nor errors).
    pub(crate) heartbeats: u64,
}

impl RoomCounts {
    /// Deliveries that are errors.
    pub(crate) fn errors(&self) -> u64 {
        self.duplicates + self.out_of_order + self.wrong_room + self.garbled
    }
}

/// Most error descriptions kept.
const MAX_NOTES: usize = 5;

/// Every connection's checks; owned by the room's subscriber loop.
pub(crate) struct RoomCheck {
    /// The body length every message must have (`--msg-bytes`, or the unpadded length when
    /// that is longer).
    msg_bytes: usize,
    /// Messages kept per connection, by connection index.
    pub(crate) received: Vec<u32>,
    /// Publish-to-receive latency of every delivery, microseconds.
    pub(crate) latency_us: Histogram<u64>,
    /// What was seen.
    pub(crate) counts: RoomCounts,
    /// The first few errors, described.
    pub(crate) notes: Vec<String>,
}

impl RoomCheck {
    /// Checks for `conns` connections whose messages are `msg_bytes` long.
    pub(crate) fn new(conns: usize, msg_bytes: usize) -> RoomCheck {
        RoomCheck {
            msg_bytes,
            received: vec![0; conns],
            // 1 us to 1 hour at 3 significant digits; larger values saturate.
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("constant histogram bounds are valid"),
            counts: RoomCounts::default(),
            notes: Vec::new(),
        }
    }

    /// Checks one message of connection `i` (subscribed to `room`), numbered `n` by its
    /// stream (`None`: the stream numbers nothing, as SSE with history off), whose last
    /// number is `*last`, read at `now_us`.
    pub(crate) fn message(
        &mut self,
        i: usize,
        room: u64,
        last: &mut u32,
        n: Option<u64>,
        body: &[u8],
        now_us: u64,
    ) {
        if let Some(n) = n {
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            let due = last.wrapping_add(1);
            if n < due {
                self.counts.duplicates += 1;
                return self.note(room, &format!("message #{n} after #{last}"), body);
            }
            *last = n;
            if n != due {
                self.counts.out_of_order += 1;
                self.note(room, &format!("message #{n} where #{due} was due"), body);
            }
        }
        let Some((to, _seq, t_us)) = parse_room_body(body) else {
            self.counts.garbled += 1;
            return self.note(room, "message not in the room format", body);
        };
        let want = self.msg_bytes.max(unpadded_len(body));
        if body.len() != want || t_us > now_us {
            self.counts.garbled += 1;
            let what = format!("{} bytes (want {want}) or sent in the future", body.len());
            return self.note(room, &what, body);
        }
        if to != room {
            self.counts.wrong_room += 1;
            return self.note(room, "message for another room", body);
        }
        self.received[i] += 1;
        self.counts.ok += 1;
        self.latency_us.saturating_record((now_us - t_us).max(1));
    }

    /// Keeps `what` (quoting the start of `body`) among the first few error notes.
    pub(crate) fn note(&mut self, room: u64, what: &str, body: &[u8]) {
        if self.notes.len() < MAX_NOTES {
            let shown: String = String::from_utf8_lossy(body).chars().take(80).collect();
            self.notes.push(format!("room {room}: {what}: {shown:?}"));
        }
    }
}

/// The length of `body` up to its padding (the `:` before the `x`s).
fn unpadded_len(body: &[u8]) -> usize {
    body.iter()
        .enumerate()
        .filter(|(_, &b)| b == b':')
        .nth(2)
        .map_or(body.len(), |(k, _)| k)
}

#[cfg(test)]
mod tests {
    use super::{format_room_body, parse_room_body, RoomCheck};

    fn body(room: u64, seq: u64, pad_to: usize) -> Vec<u8> {
        let mut v = Vec::new();
        format_room_body(&mut v, room, seq, 1000, pad_to);
        v
    }

    #[test]
    fn format_pads_and_parses() {
        assert_eq!(body(7, 3, 0), b"7:3:1000");
        assert_eq!(body(7, 3, 12), b"7:3:1000:xxx");
        assert_eq!(body(7, 3, 9), b"7:3:1000:");
        assert_eq!(parse_room_body(&body(7, 3, 100)), Some((7, 3, 1000)));
        assert_eq!(body(7, 3, 100).len(), 100);
        assert_eq!(parse_room_body(b"7:3:1000:yy"), None);
        assert_eq!(parse_room_body(b"7:3"), None);
    }

    #[test]
    fn order_duplicates_rooms_and_lengths() {
        let mut c = RoomCheck::new(2, 20);
        let mut last = 0;
        c.message(0, 7, &mut last, Some(1), &body(7, 0, 20), 2000);
        c.message(0, 7, &mut last, Some(2), &body(7, 1, 20), 2000);
        assert_eq!((c.counts.ok, c.counts.errors(), c.received[0]), (2, 0, 2));
        // Seen again: a duplicate, not kept.
        c.message(0, 7, &mut last, Some(2), &body(7, 1, 20), 2000);
        assert_eq!((c.counts.duplicates, c.received[0]), (1, 2));
        // A gap: out of order, the message itself kept.
        c.message(0, 7, &mut last, Some(5), &body(7, 4, 20), 2000);
        assert_eq!((c.counts.out_of_order, c.received[0], last), (1, 3, 5));
        // Another room's message, a short one, one from the future.
        let mut l1 = 0;
        c.message(1, 8, &mut l1, Some(1), &body(7, 0, 20), 2000);
        c.message(1, 8, &mut l1, Some(2), &body(8, 0, 19), 2000);
        c.message(1, 8, &mut l1, Some(3), &body(8, 0, 20), 999);
        assert_eq!(
            (c.counts.wrong_room, c.counts.garbled, c.received[1]),
            (1, 2, 0)
        );
        // No numbers (SSE with history off): only counted.
        c.message(1, 8, &mut l1, None, &body(8, 9, 20), 2000);
        assert_eq!(c.received[1], 1);
        assert_eq!(c.latency_us.len(), 4);
    }
}
