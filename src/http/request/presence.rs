//! The publish listener's presence requests: `GET|HEAD /presence/<id>` (one id's count),
//! `POST /presence` (a body of ids, one per line), and `GET /events/presence` (the
//! online/offline event stream, resumable by `Last-Event-ID`).

use super::body::required_body;
use super::{header, id_error, query_param, PubRequest};
use crate::history::Pos;
use crate::http::Status;
use crate::id::Id;

/// Most ids one `POST /presence` may name.
pub const MAX_PRESENCE_IDS: usize = 10_000;

/// A presence request on the publish listener.
#[derive(Debug, PartialEq, Eq)]
pub enum PresenceRequest {
    /// `GET|HEAD /presence/<id>`: `{"id":"<id>","connections":N}`.
    One {
        /// The id asked for.
        id: Id,
        /// Close after replying.
        close: bool,
        /// `HEAD`: the reply has no body.
        head: bool,
    },
    /// `POST /presence` with a body of ids, one per line (`\n` or `\r\n`; blank lines
    /// skipped), at most [`MAX_PRESENCE_IDS`]: one JSON object id -> count.
    Many {
        /// Body length from Content-Length (0 for a chunked body).
        len: usize,
        /// The body is chunked (RFC 9112 section 7.1).
        chunked: bool,
        /// Close after replying.
        close: bool,
        /// `Expect: 100-continue` (RFC 9110 section 10.1.1): answered before the body.
        expect_continue: bool,
    },
    /// `GET /events/presence`: an SSE stream of `event: online` / `event: offline`.
    Feed {
        /// HTTP/1.0: no chunked coding, the stream ends with the connection.
        http10: bool,
        /// Where to resume: the `Last-Event-ID` header (WHATWG SSE; wins) or the
        /// `last_event_id` query parameter, an `<epoch>-<seq>` cursor, or `earliest`
        /// ([`FEED_EARLIEST`]: everything the log holds, as for the history); `None` to start
        /// live.
        after: Option<Pos>,
    },
}

/// The feed cursor `earliest` stands for: epoch 0, which no process or cluster ever issues
/// (theirs have the low bit set), so it resets nothing and replays the whole log.
pub const FEED_EARLIEST: Pos = Pos {
    epoch: 0,
    offset: 0,
};

/// `GET|HEAD` on a presence path: `Some` for `/presence/<id>` and `/events/presence`, `None`
/// for any other path. Errors: 400 for a bad id or a bad cursor (the body names it), 405-like
/// refusals are the caller's (a body on a GET is refused before this).
pub(super) fn get(
    req: &httparse::Request<'_, '_>,
    path: &[u8],
    close: bool,
    head: bool,
) -> Option<Result<PubRequest, Status>> {
    if let Some(id) = path.strip_prefix(b"/presence/") {
        let one = Id::parse(id).map_err(id_error);
        return Some(one.map(|id| PubRequest::Presence(PresenceRequest::One { id, close, head })));
    }
    if path != b"/events/presence" {
        return None;
    }
    if head {
        // A feed has no finite representation to describe: GET only.
        return Some(Err(Status::GetOnly));
    }
    let cursor = header(req, "last-event-id")
        .filter(|v| !v.is_empty())
        .or_else(|| query_param(req, b"last_event_id"));
    let after = match cursor.map(|c| (c == b"earliest", c)) {
        None => None,
        Some((true, _)) => Some(Ok(FEED_EARLIEST)),
        Some((false, c)) => Some(Pos::parse(c)),
    };
    let after = match after {
        None => None,
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => return Some(Err(Status::BadCursor(e))),
    };
    let http10 = req.version == Some(0);
    Some(Ok(PubRequest::Presence(PresenceRequest::Feed {
        http10,
        after,
    })))
}

/// `POST /presence`. Errors: [`body`]'s, and 411 without a body length.
pub(super) fn post(req: &httparse::Request<'_, '_>, close: bool) -> Result<PubRequest, Status> {
    let (len, chunked, expect_continue) = required_body(req)?;
    Ok(PubRequest::Presence(PresenceRequest::Many {
        len,
        chunked,
        close,
        expect_continue,
    }))
}

/// The ids of a `POST /presence` body: one per line, `\r\n` or `\n`, blank lines skipped,
/// duplicates kept (each answered once in the JSON object). Errors: 400 naming the first line
/// that is not an id, 413 for more than [`MAX_PRESENCE_IDS`] lines; the text is the reply's.
pub fn presence_ids(body: &[u8]) -> Result<Vec<Id>, (Status, String)> {
    let mut ids = Vec::new();
    for (n, line) in body.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if ids.len() == MAX_PRESENCE_IDS {
            let why = format!("more than {MAX_PRESENCE_IDS} ids (one per line)");
            return Err((Status::TooLarge, why));
        }
        let id = Id::parse(line).map_err(|e| {
            let why = format!("line {}: not an id ({e}): one id per line", n + 1);
            (Status::BadRequest, why)
        })?;
        ids.push(id);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::{presence_ids, PresenceRequest, MAX_PRESENCE_IDS};
    use crate::history::{CursorError, Pos};
    use crate::http::request::{parse_publish, Head, PubRequest};
    use crate::http::Status;
    use crate::id::Id;

    fn parse(head: &str) -> Head<PubRequest> {
        parse_publish(head.as_bytes(), None)
    }

    #[test]
    fn counts_and_feed() {
        let one = parse("GET /presence/u7 HTTP/1.1\r\nHost: a\r\n\r\n");
        let want = PresenceRequest::One {
            id: Id::parse(b"u7").unwrap(),
            close: false,
            head: false,
        };
        assert!(matches!(one, Head::Done(PubRequest::Presence(r), _) if r == want));
        let many = parse("POST /presence HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n");
        let want = PresenceRequest::Many {
            len: 4,
            chunked: false,
            close: false,
            expect_continue: false,
        };
        assert!(matches!(many, Head::Done(PubRequest::Presence(r), _) if r == want));
        let feed = parse(
            "GET /events/presence HTTP/1.1\r\nHost: a\r\nLast-Event-ID: 00000000000000ab-3\r\n\r\n",
        );
        let after = Some(Pos {
            epoch: 0xab,
            offset: 3,
        });
        assert!(
            matches!(feed, Head::Done(PubRequest::Presence(PresenceRequest::Feed { after: a, http10: false }), _) if a == after)
        );
        let live = parse("GET /events/presence?last_event_id= HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(matches!(live, Head::Refuse(Status::BadCursor(_))));
    }

    #[test]
    fn refusals() {
        let bad_id = parse("GET /presence/a%20b HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(bad_id, Head::Refuse(Status::BadRequest));
        let bad_cursor =
            parse("GET /events/presence HTTP/1.1\r\nHost: a\r\nLast-Event-ID: x-1\r\n\r\n");
        assert_eq!(
            bad_cursor,
            Head::Refuse(Status::BadCursor(CursorError::Epoch))
        );
        let no_len = parse("POST /presence HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(no_len, Head::Refuse(Status::LengthRequired));
    }

    #[test]
    fn body_of_ids() {
        let ids = presence_ids(b"1\r\nabc\n\n7").unwrap();
        assert_eq!(
            ids,
            vec![Id::Num(1), Id::parse(b"abc").unwrap(), Id::Num(7)]
        );
        let bad = presence_ids(b"1\nno space").unwrap_err();
        assert_eq!(bad.0, Status::BadRequest);
        assert!(bad.1.starts_with("line 2: not an id"), "{}", bad.1);
        let many: String = (0..=MAX_PRESENCE_IDS).map(|i| format!("{i}\n")).collect();
        let big = presence_ids(many.as_bytes()).unwrap_err();
        assert_eq!(
            big,
            (
                Status::TooLarge,
                "more than 10000 ids (one per line)".into()
            )
        );
        let ok: String = (0..MAX_PRESENCE_IDS).map(|i| format!("{i}\n")).collect();
        assert_eq!(presence_ids(ok.as_bytes()).unwrap().len(), MAX_PRESENCE_IDS);
    }
}
