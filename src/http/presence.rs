//! What presence puts on the wire (sans-IO): the count replies and the
//! `GET /events/presence` stream (WHATWG "Server-sent events" in chunked transfer coding,
//! RFC 9112 section 7.1).
//!
//! | what | bytes |
//! |---|---|
//! | `GET /presence/<id>` | `{"id":"<id>","connections":N}` (cluster mode: `,"nodes":K` too, K nodes counted) |
//! | `POST /presence` | `{"<id>":N,...}`, each id once, in the body's order |
//! | feed opening | `: presence\nid: <cursor>\n\n` (sets the EventSource's last event ID) |
//! | an event | `id: <cursor>\nevent: online\ndata: <id>\n\n` (or `offline`) |
//! | a cursor that cannot resume | `event: reset\ndata: {"reason":"unknown-epoch"\|"expired"\|"unknown-offset"}\n\n` first |
//! | heartbeat | `: ping\n\n` |
//!
//! HTTP/1.1 clients get each as a chunk; HTTP/1.0 clients the same bytes unframed, the body
//! ended by the close. Ids are RFC 3986 unreserved characters, so they need no JSON escaping. The cursor is
//! `<epoch>-<seq>` ([`Pos`]): the process's presence epoch and the event's number.

use std::io::Write;

use super::response::json;
use super::stream::chunk;
use crate::history::Pos;
use crate::id::Id;

/// The response head of `GET /events/presence` (a stream that never ends on its own):
/// chunked for HTTP/1.1; for HTTP/1.0, which cannot decode chunked coding (RFC 9112 section
/// 6.1), the bare event stream ended by the close.
pub fn feed_head(out: &mut Vec<u8>, http10: bool) {
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n");
    out.extend_from_slice(if http10 {
        b"Connection: close\r\n\r\n".as_slice()
    } else {
        b"Transfer-Encoding: chunked\r\n\r\n".as_slice()
    });
}

/// Why a feed's cursor could not resume (the reasons of the history's reset verdicts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedReset {
    /// The cursor is from another process (a restart): `"unknown-epoch"`.
    Epoch,
    /// Events after the cursor are no longer kept (`--presence-log`): `"expired"`.
    Gone,
    /// The cursor is ahead of the last event: `"unknown-offset"`.
    Ahead,
}

/// Appends the reply to `GET /presence/<id>`: `{"id":"<id>","connections":N}`, and with
/// `node_scope` (cluster mode, where N counts this node's connections only)
/// `{"id":"<id>","connections":N,"scope":"node"}`.
pub fn count(out: &mut Vec<u8>, id: &Id, n: u64, node_scope: bool, close: bool) {
    let scope = if node_scope {
        ",\"scope\":\"node\""
    } else {
        ""
    };
    let body = format!("{{\"id\":\"{id}\",\"connections\":{n}{scope}}}");
    json(out, body.as_bytes(), close);
}

/// Appends the reply to `GET /presence/<id>` in cluster mode: `{"id":"<id>","connections":N,
/// "nodes":K}`, `k` nodes (this one included) counted.
pub fn count_nodes(out: &mut Vec<u8>, id: &Id, n: u64, k: u64, close: bool) {
    let body = format!("{{\"id\":\"{id}\",\"connections\":{n},\"nodes\":{k}}}");
    json(out, body.as_bytes(), close);
}

/// Appends the reply to `POST /presence`: one JSON object id -> count, each id once (its
/// first place in `ids`), `counts[k]` the count of `ids[k]`.
pub fn counts(out: &mut Vec<u8>, ids: &[Id], counts: &[u32], close: bool) {
    let mut seen = hashbrown::HashSet::with_capacity(ids.len());
    let mut body = Vec::with_capacity(ids.len() * 12 + 2);
    body.push(b'{');
    for (id, n) in ids.iter().zip(counts) {
        if !seen.insert(id) {
            continue;
        }
        if body.len() > 1 {
            body.push(b',');
        }
        let _ = write!(body, "\"{id}\":{n}");
    }
    body.push(b'}');
    json(out, &body, close);
}

/// Appends the feed's head and its opening (framed per `http10`): the cursor `at` (the last
/// event before this stream's first), after a reset if the client's cursor could not resume.
pub fn feed_open(out: &mut Vec<u8>, at: Pos, reset: Option<FeedReset>, http10: bool) {
    feed_head(out, http10);
    if let Some(r) = reset {
        let reason = match r {
            FeedReset::Epoch => "unknown-epoch",
            FeedReset::Gone => "expired",
            FeedReset::Ahead => "unknown-offset",
        };
        let ev = format!("event: reset\ndata: {{\"reason\":\"{reason}\"}}\n\n");
        chunk(out, ev.as_bytes(), !http10);
    }
    let open = format!(": presence\nid: {at}\n\n");
    chunk(out, open.as_bytes(), !http10);
}

/// Appends one event, unframed: `id: <at>\nevent: online|offline\ndata: <id>\n\n` (the
/// caller frames it per connection with [`chunk`]).
pub fn feed_event(out: &mut Vec<u8>, at: Pos, id: &Id, online: bool) {
    let kind = if online { "online" } else { "offline" };
    let _ = write!(out, "id: {at}\nevent: {kind}\ndata: {id}\n\n");
}

/// The feed's heartbeat, unframed.
pub const FEED_PING: &[u8] = b": ping\n\n";

/// The end of a chunked feed: the last-chunk (RFC 9112 section 7.1).
pub const FEED_END: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::{count, counts, feed_event, feed_open, FeedReset};
    use crate::history::Pos;
    use crate::id::Id;

    fn body(reply: &[u8]) -> &[u8] {
        let at = reply.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        &reply[at + 4..]
    }

    #[test]
    fn count_replies() {
        let mut out = Vec::new();
        count(&mut out, &Id::parse(b"u7").unwrap(), 3, false, false);
        assert_eq!(body(&out), br#"{"id":"u7","connections":3}"#);
        let mut out = Vec::new();
        count(&mut out, &Id::Num(7), 0, true, false);
        assert_eq!(body(&out), br#"{"id":"7","connections":0,"scope":"node"}"#);
        let ids = [Id::Num(1), Id::parse(b"b").unwrap(), Id::Num(1)];
        let mut out = Vec::new();
        counts(&mut out, &ids, &[2, 0, 2], true);
        assert_eq!(body(&out), br#"{"1":2,"b":0}"#);
        assert!(out.windows(17).any(|w| w == b"Connection: close"));
    }

    #[test]
    fn feed_bytes() {
        let at = Pos {
            epoch: 0xab,
            offset: 4,
        };
        let mut out = Vec::new();
        feed_open(&mut out, at, Some(FeedReset::Gone), false);
        let mut head = Vec::new();
        super::feed_head(&mut head, false);
        assert!(head.ends_with(b"X-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\n\r\n"));
        assert_eq!(
            &out[head.len()..],
            &b"29\r\nevent: reset\ndata: {\"reason\":\"expired\"}\n\n\r\n23\r\n: presence\nid: 00000000000000ab-4\n\n\r\n"[..]
        );
        let mut out = Vec::new();
        feed_open(&mut out, at, Some(FeedReset::Ahead), true);
        let mut head = Vec::new();
        super::feed_head(&mut head, true);
        assert!(head.ends_with(b"Connection: close\r\n\r\n"));
        assert_eq!(
            &out[head.len()..],
            &b"event: reset\ndata: {\"reason\":\"unknown-offset\"}\n\n: presence\nid: 00000000000000ab-4\n\n"[..]
        );
        let mut out = Vec::new();
        feed_event(
            &mut out,
            Pos {
                epoch: 0xab,
                offset: 5,
            },
            &Id::Num(42),
            false,
        );
        assert_eq!(out, b"id: 00000000000000ab-5\nevent: offline\ndata: 42\n\n");
    }
}
