//! The subscriber listener's requests: `GET|HEAD|OPTIONS /test/<ids>` (the seed's stream),
//! `/sub/<ids>` (raw, SSE or WebSocket, negotiated from the head) and `GET /poll/<ids>`
//! (long-polling); a cursor to resume from comes as `Last-Event-ID` or `last_event_id=`.

use super::{has_token, header, id_error, parse_with, path_of, query_param, Head};
use crate::history::Resume;
use crate::http::stream::Proto;
use crate::http::Status;
use crate::id::Id;

/// A subscriber request on the subscriber listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubRequest {
    /// The ids to log in under (1 to 64, no duplicates); empty for a preflight.
    pub ids: Vec<Id>,
    /// `HEAD`: send the headers only, never log in.
    pub head_only: bool,
    /// `OPTIONS`: a CORS preflight; answer 204 at once, never open a stream.
    pub preflight: bool,
    /// HTTP/1.0 client: no chunked coding, the body ends when the connection closes.
    pub http10: bool,
    /// The stream protocol: `/test/` is the seed's; `/sub/` is negotiated (WebSocket on
    /// `Upgrade: websocket`, SSE on `Accept: text/event-stream`, raw otherwise).
    pub proto: Proto,
    /// WebSocket: the `Sec-WebSocket-Accept` value for the client's key (RFC 6455 section
    /// 4.2.2), computed here so the request carries no heap data across shards.
    pub ws_accept: Option<[u8; 28]>,
    /// Where to start: the `Last-Event-ID` header (WHATWG SSE; wins) or the `last_event_id`
    /// query parameter; an empty header counts as absent. Never set on `/test/`.
    pub resume: Resume,
    /// `cursors=1` in the query: WebSocket and raw streams carry each message's cursor.
    pub cursors: bool,
    /// WebSocket: the client's bytes that came after the head in the same read, the start
    /// of its frame stream (B36 in `tests/CASES.md`). Never filled by the parser: the shard
    /// sets it, so it travels with the request if the stream is handed to another shard.
    pub early: Vec<u8>,
    /// A subscriber token as sent: `Authorization: Bearer <token>` (the scheme compared
    /// case-insensitively, RFC 6750 section 2.1), else the `token` query parameter (section
    /// 2.3; EventSource cannot set headers). Checked only with tokens on (`crate::auth`).
    pub token: Option<Box<str>>,
    /// The `Cookie` header as sent (RFC 6265 section 5.4), for `--sub-token-cookie`.
    pub cookie: Option<Box<str>>,
    /// When the stream's token expires (its `exp` plus the leeway), Unix seconds; 0 for
    /// none. Never set by the parser: the shard that checks the token sets it, so it
    /// travels with the request if the stream is handed to another shard.
    pub expires: u64,
}

/// The id list of a subscriber path and its route: (ids, `/test/`, `/poll/`).
fn route(path: &[u8]) -> Option<(&[u8], bool, bool)> {
    if let Some(ids) = path.strip_prefix(b"/test/") {
        Some((ids, true, false))
    } else if let Some(ids) = path.strip_prefix(b"/sub/") {
        Some((ids, false, false))
    } else {
        path.strip_prefix(b"/poll/").map(|ids| (ids, false, true))
    }
}

/// The `Cookie` header of a request head, if it is text.
fn cookie_of(req: &httparse::Request<'_, '_>) -> Option<Box<str>> {
    let c = header(req, "cookie")?;
    std::str::from_utf8(c).ok().map(Box::from)
}

/// The token of a request head: the Bearer credentials, else the `token` query parameter.
fn token_of(req: &httparse::Request<'_, '_>) -> Option<Box<str>> {
    let bearer = header(req, "authorization").and_then(|v| {
        let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ')?);
        scheme
            .eq_ignore_ascii_case(b"bearer")
            .then_some(rest.trim_ascii())
    });
    let t = bearer.or_else(|| query_param(req, b"token"))?;
    std::str::from_utf8(t)
        .ok()
        .filter(|t| !t.is_empty())
        .map(Box::from)
}

/// Parses a subscriber request head: `GET|HEAD|OPTIONS /test/<id>[,<id>...]` or
/// `/sub/<id>[,<id>...]`.
///
/// Refusals: 501 for other methods, 404 for other paths, 400 for a bad id list, a malformed
/// head or a WebSocket upgrade that breaks RFC 6455 section 4.2.1 (see `ws_upgrade`), 426
/// for a WebSocket version other than 13, 431 for a head over
/// [`MAX_HEAD`](crate::http::MAX_HEAD) bytes.
pub fn parse_subscribe(buf: &[u8]) -> Head<SubRequest> {
    parse_with(buf, |req| {
        let (head_only, preflight) = match req.method {
            Some("GET") => (false, false),
            Some("HEAD") => (true, false),
            Some("OPTIONS") => (false, true),
            _ => return Err(Status::NotImplemented),
        };
        let (ids, seed, poll) = route(path_of(req)).ok_or(Status::NotFound)?;
        if poll && head_only {
            return Err(Status::NotImplemented);
        }
        let http10 = req.version == Some(0);
        if preflight {
            return Ok(SubRequest {
                ids: Vec::new(),
                head_only,
                preflight,
                http10,
                proto: Proto::Raw,
                ws_accept: None,
                resume: Resume::Fresh,
                cursors: false,
                early: Vec::new(),
                token: None,
                cookie: None,
                expires: 0,
            });
        }
        let ids = Id::parse_list(ids).map_err(id_error)?;
        let resume = if seed {
            Resume::Fresh
        } else {
            match header(req, "last-event-id")
                .filter(|v| !v.is_empty())
                .or_else(|| query_param(req, b"last_event_id"))
            {
                Some(c) => Resume::parse(c, ids.len()).map_err(Status::BadCursor)?,
                None => Resume::Fresh,
            }
        };
        let mut ws_accept = None;
        let proto = if seed {
            Proto::Seed
        } else if poll {
            Proto::Poll
        } else if has_token(header(req, "upgrade"), "websocket") && !head_only {
            ws_accept = Some(ws_upgrade(req)?);
            Proto::Ws
        } else if header(req, "accept").is_some_and(|a| {
            a.windows(17)
                .any(|w| w.eq_ignore_ascii_case(b"text/event-stream"))
        }) {
            Proto::Sse
        } else {
            Proto::Raw
        };
        Ok(SubRequest {
            ids,
            head_only,
            preflight,
            http10,
            proto,
            ws_accept,
            resume,
            cursors: !seed && query_param(req, b"cursors") == Some(b"1"),
            early: Vec::new(),
            token: token_of(req),
            cookie: cookie_of(req),
            expires: 0,
        })
    })
}

/// The `Sec-WebSocket-Accept` value of a WebSocket upgrade (RFC 6455 section 4.2.1), or its
/// refusal: 400 over HTTP/1.0, without the `upgrade` token in `Connection` (a token list,
/// over any number of lines, compared case-insensitively), or without exactly one valid
/// `Sec-WebSocket-Key` (section 11.3.1); 426 for a `Sec-WebSocket-Version` other than 13,
/// or none (section 4.2.2). Subprotocols and extensions offered are never accepted: the
/// answer names none.
fn ws_upgrade(req: &httparse::Request<'_, '_>) -> Result<[u8; 28], Status> {
    let all = |name: &'static str| {
        req.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.trim_ascii())
    };
    let upgrade = all("connection").any(|v| has_token(Some(v), "upgrade"));
    let mut keys = all("sec-websocket-key");
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) if is_ws_key(k) => k,
        _ => return Err(Status::BadRequest),
    };
    if req.version == Some(0) || !upgrade {
        return Err(Status::BadRequest);
    }
    let mut versions = all("sec-websocket-version");
    if (versions.next(), versions.next()) != (Some(&b"13"[..]), None) {
        return Err(Status::UpgradeRequired);
    }
    Ok(crate::http::ws::accept_key(key))
}

/// Whether `k` is a `Sec-WebSocket-Key` RFC 6455 allows: base64 of 16 bytes, i.e. 22
/// characters of the base64 alphabet and `==`.
fn is_ws_key(k: &[u8]) -> bool {
    k.len() == 24
        && k.ends_with(b"==")
        && k[..22]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

#[cfg(test)]
mod tests {
    use super::{parse_subscribe, Head, SubRequest};
    use crate::http::Status;
    use crate::id::Id;

    #[test]
    fn subscribe_forms() {
        let r = parse_subscribe(b"GET /test/1,2 HTTP/1.1\r\nHost: x\r\n\r\n");
        let Head::Done(req, n) = r else {
            panic!("{r:?}")
        };
        assert_eq!(n, 35);
        assert_eq!(req.ids, vec![Id::Num(1), Id::Num(2)]);
        assert!(!req.head_only && !req.http10);
        assert!(matches!(
            parse_subscribe(b"HEAD /test/1 HTTP/1.0\r\n\r\n"),
            Head::Done(
                SubRequest {
                    head_only: true,
                    http10: true,
                    ..
                },
                _
            )
        ));
        assert_eq!(
            parse_subscribe(b"GET /test/1 HTTP/1.1\r\nHost: x\r\nHost"),
            Head::Incomplete
        );
        for (head, status) in [
            (
                &b"POST /test/1 HTTP/1.1\r\nHost: x\r\n\r\n"[..],
                Status::NotImplemented,
            ),
            (
                &b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n"[..],
                Status::NotFound,
            ),
            (
                &b"GET /test/ HTTP/1.1\r\nHost: x\r\n\r\n"[..],
                Status::BadRequest,
            ),
            (
                &b"GET /test/a%20b HTTP/1.1\r\nHost: x\r\n\r\n"[..],
                Status::BadRequest,
            ),
            (&b"GARBAGE\r\n\r\n"[..], Status::BadRequest),
        ] {
            let what = String::from_utf8_lossy(head);
            assert_eq!(parse_subscribe(head), Head::Refuse(status), "{what}");
        }
    }

    #[test]
    fn websocket_handshake_rules() {
        const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
        let u = "Upgrade: websocket";
        let c = "Connection: Upgrade";
        let v = "Sec-WebSocket-Version: 13";
        let case = |lines: &[&str]| {
            let head = format!(
                "GET /sub/35 HTTP/1.1\r\nHost: x\r\n{}\r\n",
                lines.iter().map(|l| format!("{l}\r\n")).collect::<String>()
            );
            match parse_subscribe(head.as_bytes()) {
                Head::Done(r, _) => Ok(r.ws_accept.map(|a| a.to_vec())),
                Head::Refuse(s) => Err(s),
                Head::Incomplete => panic!("incomplete"),
            }
        };
        let accepted = Ok(Some(b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_vec()));
        let key_ows = format!("{KEY} \t");
        for ok in [
            &[u, "Connection: keep-alive, Upgrade", v, KEY][..],
            &["Upgrade: WebSocket", "Connection: UPGRADE", v, KEY],
            &[u, "Connection: keep-alive", "Connection: upgrade", v, KEY],
            &[u, c, v, KEY, "Sec-WebSocket-Protocol: chat, superchat"],
            &[u, c, v, &key_ows],
        ] {
            assert_eq!(case(ok), accepted, "{ok:?}");
        }
        let two_keys = [u, c, v, KEY, "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA=="];
        for (lines, status) in [
            (
                &[u, c, "Sec-WebSocket-Version: 8", KEY][..],
                Status::UpgradeRequired,
            ),
            (&[u, c, KEY], Status::UpgradeRequired),
            (&[u, v, KEY], Status::BadRequest),
            (&[u, "Connection: keep-alive", v, KEY], Status::BadRequest),
            (
                &[u, c, v, "Sec-WebSocket-Key: c2hvcnQ="],
                Status::BadRequest,
            ),
            (&two_keys, Status::BadRequest),
        ] {
            assert_eq!(case(lines), Err(status), "{lines:?}");
        }
    }

    #[test]
    fn absolute_form_target() {
        let abs = parse_subscribe(
            b"GET http://example.com:8000/test/5?x HTTP/1.1\r\nHost: example.com\r\n\r\n",
        );
        assert!(
            matches!(abs, Head::Done(SubRequest { ref ids, .. }, _) if ids == &vec![Id::Num(5)]),
            "{abs:?}"
        );
    }
}
