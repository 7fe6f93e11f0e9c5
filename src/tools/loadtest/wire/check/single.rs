//! The check of a stream that must carry exactly one message (`loadtest million`: the
//! parent publishes one message to every id, with sequence number = id).

use super::{parse_body, parse_chunk};

/// What a chunk was.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// The expected message; its publish-to-receive latency, us.
    Good(u64),
    /// A heartbeat (`\n`).
    Heartbeat,
    /// Anything else, and why.
    Bad(&'static str),
}

/// Checks one chunk on the connection of `id` that has had `good` good messages so far: the
/// only right chunk is `Recvd msg #<good+1>: '<id>:<id>:<t_us>'<br/>\n` with `t_us <= now`.
pub(crate) fn check_chunk(id: u64, good: u32, chunk: &[u8], now: u64) -> Check {
    if chunk == b"\n" {
        return Check::Heartbeat;
    }
    let Some((n, msg)) = parse_chunk(chunk) else {
        return Check::Bad("garbled chunk");
    };
    let Some((mid, seq, t)) = parse_body(msg) else {
        return Check::Bad("message not in the test format");
    };
    if mid != id || seq != id {
        return Check::Bad("message for another id");
    }
    if t > now {
        return Check::Bad("send time in the future");
    }
    if n != u64::from(good) + 1 {
        return Check::Bad("wrong message number");
    }
    Check::Good(now - t)
}

#[cfg(test)]
mod tests {
    use super::{check_chunk, Check};

    #[test]
    fn chunks_checked() {
        let ok = &b"Recvd msg #1: '7:7:100'<br/>\n"[..];
        let wrong_seq = &b"Recvd msg #1: '7:6:100'<br/>\n"[..];
        // (id, good chunks so far, chunk, now in us) -> verdict
        let cases = [
            (7, 0, ok, 150, Check::Good(50)),
            (7, 1, ok, 150, Check::Bad("wrong message number")),
            (8, 0, ok, 150, Check::Bad("message for another id")),
            (7, 0, wrong_seq, 150, Check::Bad("message for another id")),
            (7, 0, ok, 50, Check::Bad("send time in the future")),
            (7, 0, &b"\n"[..], 1, Check::Heartbeat),
            (7, 0, &b"hello"[..], 1, Check::Bad("garbled chunk")),
        ];
        for (id, seen, chunk, now, want) in cases {
            let what = String::from_utf8_lossy(chunk);
            assert_eq!(
                check_chunk(id, seen, chunk, now),
                want,
                "{id} {seen} {what} {now}"
            );
        }
    }
}
