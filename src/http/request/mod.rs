//! Request-head parsing for the subscriber and publish listeners (RFC 9112 sections 2-3,
//! 6.2-6.3), on top of `httparse`.
//!
//! A head that is not complete yet is [`Head::Incomplete`], not an error: the shard keeps
//! reading (up to [`MAX_HEAD`] bytes). Every refusal is a [`Status`] the shard answers with
//! before closing the connection.
//!
//! # Files
//! - this file: [`Head`] and what both listeners share (head limits, Host, the path,
//!   header lookup, `Connection`).
//! - `subscribe`: the subscriber listener's requests ([`SubRequest`], [`parse_subscribe`]).
//! - `publish`: the publish listener's requests ([`PubRequest`], [`parse_publish`]): send,
//!   friends publish and edits, stats, the demo page.
//! - `presence`: the publish listener's presence requests ([`PresenceRequest`]).
//! - `body`: a publish request's body framing (Content-Length, chunked, refusals).
//! - `chunked`: a chunked request body, decoded in place ([`ChunkedBody`]).

use super::{Status, MAX_HEAD, MAX_TARGET};
use crate::id::IdError;

mod admin;
mod body;
mod chunked;
mod presence;
mod probe;
mod publish;
mod subscribe;

pub use admin::Kick;
pub use chunked::{ChunkedBody, Progress, MAX_CHUNK_LINE};
pub use presence::{presence_ids, PresenceRequest, FEED_EARLIEST, MAX_PRESENCE_IDS};
pub use probe::Probe;
pub use publish::{parse_publish, PubRequest};
pub use subscribe::{parse_subscribe, SubRequest};

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

/// The value of query parameter `name` (the first one), as sent: ids and cursors are
/// unreserved characters (RFC 3986 section 2.3), so nothing is percent-decoded, and a
/// percent-encoded value is refused by its own parser.
fn query_param<'a>(req: &httparse::Request<'_, 'a>, name: &[u8]) -> Option<&'a [u8]> {
    let target = req.path.unwrap_or("").as_bytes();
    let query = &target[target.iter().position(|&b| b == b'?')? + 1..];
    query.split(|&b| b == b'&').find_map(|kv| {
        let eq = kv.iter().position(|&b| b == b'=').unwrap_or(kv.len());
        (&kv[..eq] == name).then(|| kv.get(eq + 1..).unwrap_or(b""))
    })
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

#[cfg(test)]
mod tests {
    use super::{parse_subscribe, Head, MAX_HEAD, MAX_TARGET};
    use crate::http::Status;

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
    fn host_rules() {
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
    }

    #[test]
    fn long_target() {
        let long = format!(
            "GET /test/{} HTTP/1.1\r\nHost: x\r\n\r\n",
            "1".repeat(MAX_TARGET)
        );
        assert_eq!(
            parse_subscribe(long.as_bytes()),
            Head::Refuse(Status::UriTooLong)
        );
    }
}
