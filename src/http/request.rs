//! Request-head parsing for the subscriber and publish listeners (RFC 9112 sections 2-3,
//! 6.2-6.3), on top of `httparse`.
//!
//! A head that is not complete yet is [`Head::Incomplete`], not an error: the shard keeps
//! reading (up to [`MAX_HEAD`] bytes). Every refusal is a [`Status`] the shard answers with
//! before closing the connection.

use super::stream::Proto;
use super::{Status, MAX_BODY, MAX_HEAD, MAX_TARGET};
use crate::id::{Id, IdError};

/// Most header fields in one request head.
const MAX_HEADERS: usize = 64;

/// Result of looking at the bytes read so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Head<T> {
    /// The head is not complete yet; read more.
    Incomplete,
    /// A complete head, and its length in bytes (the body, if any, starts there).
    Done(T, usize),
    /// A head to refuse with this status; the connection is then closed.
    Refuse(Status),
}

/// A subscriber request on the subscriber listener.
#[derive(Debug, PartialEq, Eq)]
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
}

/// A request on the publish listener.
#[derive(Debug, PartialEq, Eq)]
pub enum PubRequest {
    /// `POST /send/<id>` with a body of `len` bytes following the head.
    Send {
        /// Target id.
        id: Id,
        /// Body length from Content-Length, at most [`MAX_BODY`].
        len: usize,
        /// Close after replying (`Connection: close`, or HTTP/1.0 without keep-alive).
        close: bool,
        /// The client sent `Expect: 100-continue` and waits for a `100 Continue` before
        /// its body (RFC 9110 section 10.1.1).
        expect_continue: bool,
        /// `POST /publish/<user>`: fan the body out to the friends of `id` rather than to
        /// the connections under `id`.
        friends: bool,
    },
    /// `PUT /friends/<a>/<b>` (`add`) or `DELETE /friends/<a>/<b>`: put b on a's friends
    /// list or take it off. A body, if any, is read and ignored.
    Edit {
        /// Whose friends list.
        a: Id,
        /// The friend.
        b: Id,
        /// PUT (true) or DELETE.
        add: bool,
        /// Body length from Content-Length (0 without one), at most [`MAX_BODY`].
        len: usize,
        /// Close after replying.
        close: bool,
    },
    /// `GET /stats`.
    Stats {
        /// Close after replying.
        close: bool,
        /// `HEAD`: the reply has no body.
        head: bool,
    },
    /// `GET /`: the demo page.
    Page {
        /// Close after replying.
        close: bool,
        /// `HEAD`: the reply has no body.
        head: bool,
    },
}

fn refuse_parse_error(e: httparse::Error) -> Status {
    match e {
        httparse::Error::TooManyHeaders => Status::HeadTooLarge,
        _ => Status::BadRequest,
    }
}

fn id_error(_: IdError) -> Status {
    Status::BadRequest
}

/// Parses the head at the start of `buf` with `f` deciding on the parsed request.
fn parse_with<T>(
    buf: &[u8],
    f: impl FnOnce(&httparse::Request<'_, '_>) -> Result<T, Status>,
) -> Head<T> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            Head::Refuse(Status::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => Head::Incomplete,
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => Head::Refuse(Status::HeadTooLarge),
        Ok(httparse::Status::Complete(_)) if req.path.is_some_and(|p| p.len() > MAX_TARGET) => {
            Head::Refuse(Status::UriTooLong)
        }
        // RFC 9112 section 3.2: an HTTP/1.1 request needs exactly one Host; any request with
        // several is refused.
        Ok(httparse::Status::Complete(_))
            if {
                let hosts = req
                    .headers
                    .iter()
                    .filter(|h| h.name.eq_ignore_ascii_case("host"))
                    .count();
                hosts > 1 || (hosts == 0 && req.version == Some(1))
            } =>
        {
            Head::Refuse(Status::BadRequest)
        }
        Ok(httparse::Status::Complete(n)) => match f(&req) {
            Ok(t) => Head::Done(t, n),
            Err(s) => Head::Refuse(s),
        },
        Err(e) => Head::Refuse(refuse_parse_error(e)),
    }
}

/// The path without its query string. An absolute-form target (`http://host/path`, RFC
/// 9112 section 3.2.2, which a server must accept) is reduced to its path.
fn path_of<'a>(req: &httparse::Request<'_, 'a>) -> &'a [u8] {
    let mut p = req.path.unwrap_or("").as_bytes();
    for scheme in [&b"http://"[..], b"https://"] {
        if p.len() > scheme.len() && p[..scheme.len()].eq_ignore_ascii_case(scheme) {
            let rest = &p[scheme.len()..];
            p = rest
                .iter()
                .position(|&b| b == b'/')
                .map_or(&b"/"[..], |at| &rest[at..]);
        }
    }
    p.split(|&b| b == b'?').next().unwrap_or(p)
}

fn header<'a>(req: &httparse::Request<'_, 'a>, name: &str) -> Option<&'a [u8]> {
    req.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

fn has_token(value: Option<&[u8]>, token: &str) -> bool {
    value.is_some_and(|v| {
        v.split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Whether to close after the reply (RFC 9112 section 9.3).
fn wants_close(req: &httparse::Request<'_, '_>) -> bool {
    let conn = header(req, "connection");
    if req.version == Some(0) {
        !has_token(conn, "keep-alive")
    } else {
        has_token(conn, "close")
    }
}

/// Whether `a == b`, in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Parses a subscriber request head: `GET|HEAD|OPTIONS /test/<id>[,<id>...]` or
/// `/sub/<id>[,<id>...]`.
///
/// Refusals: 501 for other methods, 404 for other paths, 400 for a bad id list, a malformed
/// head or a WebSocket upgrade without `Sec-WebSocket-Version: 13` and a key (RFC 6455
/// section 4.2.1; also over HTTP/1.0), 431 for a head over [`MAX_HEAD`] bytes.
pub fn parse_subscribe(buf: &[u8]) -> Head<SubRequest> {
    parse_with(buf, |req| {
        let (head_only, preflight) = match req.method {
            Some("GET") => (false, false),
            Some("HEAD") => (true, false),
            Some("OPTIONS") => (false, true),
            _ => return Err(Status::NotImplemented),
        };
        let path = path_of(req);
        let (ids, seed) = match (path.strip_prefix(b"/test/"), path.strip_prefix(b"/sub/")) {
            (Some(ids), _) => (ids, true),
            (None, Some(ids)) => (ids, false),
            _ => return Err(Status::NotFound),
        };
        let http10 = req.version == Some(0);
        if preflight {
            return Ok(SubRequest {
                ids: Vec::new(),
                head_only,
                preflight,
                http10,
                proto: Proto::Raw,
                ws_accept: None,
            });
        }
        let ids = Id::parse_list(ids).map_err(id_error)?;
        let mut ws_accept = None;
        let proto = if seed {
            Proto::Seed
        } else if has_token(header(req, "upgrade"), "websocket") && !head_only {
            // RFC 6455 section 4.2.1: the key is 16 bytes in base64 (24 characters).
            let key = header(req, "sec-websocket-key").filter(|k| is_ws_key(k));
            if http10 || header(req, "sec-websocket-version") != Some(b"13") || key.is_none() {
                return Err(Status::BadRequest);
            }
            ws_accept = key.map(super::ws::accept_key);
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
        })
    })
}

/// The request body's length from Content-Length (`None` without one). Errors: 501 for a
/// Transfer-Encoding body, 400 for a bad or ambiguous length, 413 over [`MAX_BODY`].
fn body_len(req: &httparse::Request<'_, '_>) -> Result<Option<usize>, Status> {
    if header(req, "transfer-encoding").is_some() {
        return Err(Status::NotImplemented);
    }
    let mut lens = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"));
    let Some(len) = lens.next().map(|h| h.value) else {
        return Ok(None);
    };
    // RFC 9112 section 6.3: several differing lengths are an error; digits only.
    if lens.any(|h| h.value != len)
        || len.is_empty()
        || len.len() > 12
        || !len.iter().all(u8::is_ascii_digit)
    {
        return Err(Status::BadRequest);
    }
    let len = len
        .iter()
        .fold(0usize, |n, &d| n * 10 + usize::from(d - b'0'));
    if len > MAX_BODY {
        return Err(Status::TooLarge);
    }
    Ok(Some(len))
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

/// Parses a publish-listener request head: `POST /send/<id>`, `POST /publish/<user>`,
/// `PUT|DELETE /friends/<a>/<b>` or `GET /stats`.
///
/// Refusals: 400 (malformed head, bad id, bad Content-Length), 404 (other paths), 411
/// (POST without Content-Length), 413 (body over [`MAX_BODY`]), 431 (head too long), 501
/// (other methods, or a `Transfer-Encoding` request body, which this listener does not
/// decode).
///
/// With `token` set, `POST /send` and `GET /stats` need `Authorization: Bearer <token>`
/// (RFC 6750 section 2.1; the scheme is case-insensitive, RFC 9110 section 11.1), the token
/// compared in constant time; else 401.
pub fn parse_publish(buf: &[u8], token: Option<&[u8]>) -> Head<PubRequest> {
    parse_with(buf, |req| {
        let path = path_of(req);
        let close = wants_close(req);
        if path != b"/" {
            if let Some(t) = token {
                let got = header(req, "authorization")
                    .and_then(|v| {
                        let (scheme, rest) = v.split_at(v.len().min(7));
                        scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
                    })
                    .unwrap_or(b"");
                if !constant_time_eq(got, t) {
                    return Err(Status::Unauthorized);
                }
            }
        }
        match req.method {
            Some(m @ ("GET" | "HEAD")) => {
                // No body is read on these, so none may be sent: a body would be parsed as the
                // next request (request smuggling).
                let body = header(req, "content-length").is_some_and(|v| v != b"0")
                    || header(req, "transfer-encoding").is_some();
                if body {
                    return Err(Status::BadRequest);
                }
                let head = m == "HEAD";
                match path {
                    b"/stats" => Ok(PubRequest::Stats { close, head }),
                    b"/" => Ok(PubRequest::Page { close, head }),
                    _ => Err(Status::NotFound),
                }
            }
            Some("POST") => {
                let (id, friends) = match (
                    path.strip_prefix(b"/send/"),
                    path.strip_prefix(b"/publish/"),
                ) {
                    (Some(id), _) => (id, false),
                    (None, Some(id)) => (id, true),
                    _ => return Err(Status::NotFound),
                };
                let id = Id::parse(id).map_err(id_error)?;
                let len = body_len(req)?.ok_or(Status::LengthRequired)?;
                let expect_continue = header(req, "expect")
                    .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"))
                    && req.version == Some(1);
                Ok(PubRequest::Send {
                    id,
                    len,
                    close,
                    expect_continue,
                    friends,
                })
            }
            Some(m @ ("PUT" | "DELETE")) => {
                // Other paths keep answering these methods 501, as before friends existed.
                let pair = path
                    .strip_prefix(b"/friends/")
                    .ok_or(Status::NotImplemented)?;
                let mut parts = pair.split(|&b| b == b'/');
                let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else {
                    return Err(Status::NotFound);
                };
                let (a, b) = (
                    Id::parse(a).map_err(id_error)?,
                    Id::parse(b).map_err(id_error)?,
                );
                let len = body_len(req)?.unwrap_or(0);
                Ok(PubRequest::Edit {
                    a,
                    b,
                    add: m == "PUT",
                    len,
                    close,
                })
            }
            _ => Err(Status::NotImplemented),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            parse_subscribe(b"POST /test/1 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Head::Refuse(Status::NotImplemented)
        );
        assert_eq!(
            parse_subscribe(b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n"),
            Head::Refuse(Status::NotFound)
        );
        assert_eq!(
            parse_subscribe(b"GET /test/ HTTP/1.1\r\nHost: x\r\n\r\n"),
            Head::Refuse(Status::BadRequest)
        );
        assert_eq!(
            parse_subscribe(b"GET /test/a%20b HTTP/1.1\r\nHost: x\r\n\r\n"),
            Head::Refuse(Status::BadRequest)
        );
        assert_eq!(
            parse_subscribe(b"GARBAGE\r\n\r\n"),
            Head::Refuse(Status::BadRequest)
        );
    }

    #[test]
    fn head_limit() {
        let mut big = b"GET /test/1 HTTP/1.1\r\nHost: x\r\nX: ".to_vec();
        big.resize(MAX_HEAD, b'a');
        assert_eq!(parse_subscribe(&big), Head::Refuse(Status::HeadTooLarge));
    }

    #[test]
    fn split_anywhere_same_result() {
        let full = b"GET /test/77 HTTP/1.1\r\nHost: x\r\n\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse_subscribe(&full[..cut]), Head::Incomplete, "cut {cut}");
        }
        assert!(matches!(parse_subscribe(full), Head::Done(_, 34)));
    }

    #[test]
    fn host_absolute_form_and_get_bodies() {
        assert_eq!(
            parse_subscribe(b"GET /test/1 HTTP/1.1\r\n\r\n"),
            Head::Refuse(Status::BadRequest)
        );
        assert_eq!(
            parse_subscribe(b"GET /test/1 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Head::Refuse(Status::BadRequest)
        );
        assert!(matches!(
            parse_subscribe(b"GET /test/1 HTTP/1.0\r\n\r\n"),
            Head::Done(..)
        ));
        let abs = parse_subscribe(
            b"GET http://example.com:8000/test/5?x HTTP/1.1\r\nHost: example.com\r\n\r\n",
        );
        assert!(
            matches!(abs, Head::Done(SubRequest { ref ids, .. }, _) if ids == &vec![Id::Num(5)]),
            "{abs:?}"
        );
        let smuggle = b"GET /stats HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(
            parse_publish(smuggle, None),
            Head::Refuse(Status::BadRequest)
        );
        let cont = parse_publish(b"POST /send/1 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", None);
        assert!(matches!(
            cont,
            Head::Done(
                PubRequest::Send {
                    expect_continue: true,
                    ..
                },
                _
            )
        ));
    }

    #[test]
    fn token_and_long_target() {
        let t = Some(&b"s3cret"[..]);
        let ok =
            b"POST /send/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(
            parse_publish(ok, t),
            Head::Done(PubRequest::Send { .. }, _)
        ));
        let bad =
            b"POST /send/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cre\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse_publish(bad, t), Head::Refuse(Status::Unauthorized));
        assert_eq!(
            parse_publish(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n", t),
            Head::Refuse(Status::Unauthorized)
        );
        assert!(matches!(
            parse_publish(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", t),
            Head::Done(PubRequest::Page { .. }, _)
        ));
        let long = format!(
            "GET /test/{} HTTP/1.1\r\nHost: x\r\n\r\n",
            "1".repeat(MAX_TARGET)
        );
        assert_eq!(
            parse_subscribe(long.as_bytes()),
            Head::Refuse(Status::UriTooLong)
        );
    }

    #[test]
    fn publish_forms() {
        let r = parse_publish(
            b"POST /send/9 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
            None,
        );
        assert_eq!(
            r,
            Head::Done(
                PubRequest::Send {
                    id: Id::Num(9),
                    len: 5,
                    close: false,
                    expect_continue: false,
                    friends: false,
                },
                53
            )
        );
        assert!(matches!(
            parse_publish(
                b"POST /publish/7 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx",
                None
            ),
            Head::Done(
                PubRequest::Send {
                    friends: true,
                    len: 1,
                    ..
                },
                _
            )
        ));
        assert_eq!(
            parse_publish(b"DELETE /friends/1/2 HTTP/1.1\r\nHost: x\r\n\r\n", None),
            Head::Done(
                PubRequest::Edit {
                    a: Id::Num(1),
                    b: Id::Num(2),
                    add: false,
                    len: 0,
                    close: false
                },
                41
            )
        );
        assert!(matches!(
            parse_publish(
                b"PUT /friends/1/2 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
                None
            ),
            Head::Done(
                PubRequest::Edit {
                    add: true,
                    len: 2,
                    ..
                },
                _
            )
        ));
        for bad in [
            &b"PUT /friends/1 HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"PUT /friends/1/2/3 HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert_eq!(parse_publish(bad, None), Head::Refuse(Status::NotFound));
        }
        assert_eq!(
            parse_publish(b"PUT /friends/1/a%20 HTTP/1.1\r\nHost: x\r\n\r\n", None),
            Head::Refuse(Status::BadRequest)
        );
        assert_eq!(
            parse_publish(b"POST /send/9 HTTP/1.1\r\nHost: x\r\n\r\n", None),
            Head::Refuse(Status::LengthRequired)
        );
        assert_eq!(
            parse_publish(
                b"POST /send/9 HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n",
                None
            ),
            Head::Refuse(Status::TooLarge)
        );
        assert_eq!(
            parse_publish(
                b"POST /send/9 HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
                None
            ),
            Head::Refuse(Status::BadRequest)
        );
        assert_eq!(
            parse_publish(
                b"POST /send/9 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                None
            ),
            Head::Refuse(Status::BadRequest)
        );
        assert_eq!(
            parse_publish(
                b"POST /send/9 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                None
            ),
            Head::Refuse(Status::NotImplemented)
        );
        assert_eq!(
            parse_publish(b"GET /stats HTTP/1.0\r\n\r\n", None),
            Head::Done(
                PubRequest::Stats {
                    close: true,
                    head: false
                },
                23
            )
        );
        assert_eq!(
            parse_publish(b"DELETE /send/1 HTTP/1.1\r\nHost: x\r\n\r\n", None),
            Head::Refuse(Status::NotImplemented)
        );
    }
}
