//! The publish listener's requests, one function per kind: `POST /send/<id>` and `POST
//! /publish/<user>` (a message), `PUT|DELETE /friends/<a>/<b>` (a friends edit), `GET
//! /stats` and `GET /` (the demo page); and the bearer-token check in front of them.

use super::body::{body, Body};
use super::{admin, header, id_error, parse_with, path_of, wants_close, Head, Probe};
use crate::http::Status;
use crate::id::Id;

/// A request on the publish listener.
#[derive(Debug, PartialEq, Eq)]
pub enum PubRequest {
    /// `POST /send/<id>` with a body of `len` bytes following the head.
    Send {
        /// Target id.
        id: Id,
        /// Body length from Content-Length, at most [`MAX_BODY`](crate::http::MAX_BODY); 0 for a chunked body.
        len: usize,
        /// The body is chunked (RFC 9112 section 7.1): its length is known once it is
        /// decoded ([`super::ChunkedBody`]).
        chunked: bool,
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
        /// Body length from Content-Length (0 without one or chunked), at most [`MAX_BODY`](crate::http::MAX_BODY).
        len: usize,
        /// The (ignored) body is chunked.
        chunked: bool,
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
    /// Presence: `/presence/<id>`, `POST /presence`, `/events/presence`.
    Presence(super::PresenceRequest),
    /// `GET /metrics`, `GET /healthz` or `GET /readyz` (answered by [`crate::metrics`]).
    Probe {
        /// Which one.
        probe: Probe,
        /// Close after replying.
        close: bool,
        /// `HEAD`: the reply has no body.
        head: bool,
    },
    /// `DELETE /subscribers/<id>`: end every connection logged in under the id.
    Kick(super::Kick),
}

/// Parses a publish-listener request head: `POST /send/<id>`, `POST /publish/<user>`,
/// `PUT|DELETE /friends/<a>/<b>`, `GET /stats`, or a [`Probe`] (`/metrics`, `/healthz`,
/// `/readyz`); `DELETE /subscribers/<id>` in `admin.rs` (405 for another method).
///
/// Refusals: 400 (malformed head, bad id, bad Content-Length, `Transfer-Encoding` together
/// with `Content-Length` or on HTTP/1.0), 404 (other paths), 411 (POST without a body
/// length), 413 (body over [`MAX_BODY`](crate::http::MAX_BODY)), 431 (head too long), 501 (other methods, or a
/// transfer coding other than a final, only `chunked`, RFC 9112 section 6.1).
///
/// With `token` set, every request but `GET /`, `/healthz` and `/readyz` (`/send`, `/stats`,
/// `/metrics`, the friends paths) needs `Authorization: Bearer <token>`
/// (RFC 6750 section 2.1; the scheme is case-insensitive, RFC 9110 section 11.1), the token
/// compared in constant time; else 401.
pub fn parse_publish(buf: &[u8], token: Option<&[u8]>) -> Head<PubRequest> {
    parse_with(buf, |req| {
        let path = path_of(req);
        let close = wants_close(req);
        let open =
            path == b"/" || matches!(Probe::of_path(path), Some(Probe::Healthz | Probe::Readyz));
        if let (false, Some(t)) = (open, token) {
            authorize(req, t)?;
        }
        let routed = match req.method {
            _ if path.starts_with(admin::SUBSCRIBERS) => admin::kick(req, path, close),
            Some(m @ ("GET" | "HEAD")) => get(req, path, close, m == "HEAD"),
            Some("POST") => post(req, path, close),
            // `curl -T` (an upload of unknown length) sends PUT: a publish all the same.
            Some("PUT") if path.starts_with(b"/send/") || path.starts_with(b"/publish/") => {
                post(req, path, close)
            }
            Some(m @ ("PUT" | "DELETE")) => friends_edit(req, path, close, m == "PUT"),
            _ => Err(Status::NotImplemented),
        };
        routed.map_err(|e| match (e, allowed(path)) {
            // A known target asked with a method it does not take (RFC 9110 section 15.5.6).
            (Status::NotFound | Status::NotImplemented, Some(a))
                if !a.split(", ").any(|m| Some(m) == req.method) =>
            {
                Status::Allow(a)
            }
            (e, _) => e,
        })
    })
}

/// The methods a known target of the publish listener takes (`None`: an unknown path).
fn allowed(path: &[u8]) -> Option<&'static str> {
    let under = |p: &[u8]| path.strip_prefix(p).is_some_and(|rest| !rest.is_empty());
    if under(b"/send/") || under(b"/publish/") {
        Some("POST, PUT")
    } else if under(b"/friends/") {
        Some("PUT, DELETE")
    } else if under(b"/presence/") {
        Some("GET, HEAD")
    } else if path == b"/presence" {
        Some("POST")
    } else if path == b"/" || path == b"/stats" || Probe::of_path(path).is_some() {
        Some("GET, HEAD")
    } else {
        None
    }
}

/// Checks `Authorization: Bearer <token>` in constant time. Errors: 401.
fn authorize(req: &httparse::Request<'_, '_>, token: &[u8]) -> Result<(), Status> {
    let got = header(req, "authorization")
        .and_then(|v| {
            let (scheme, rest) = v.split_at(v.len().min(7));
            scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
        })
        .unwrap_or(b"");
    // The `subtle` crate: no branch on the bytes (the length may show).
    if bool::from(subtle::ConstantTimeEq::ct_eq(got, token)) {
        Ok(())
    } else {
        Err(Status::Unauthorized)
    }
}

/// `GET|HEAD /stats`, `GET|HEAD /` and the probes. Errors: 400 for a request with a body, 404 for
/// other paths.
fn get(
    req: &httparse::Request<'_, '_>,
    path: &[u8],
    close: bool,
    head: bool,
) -> Result<PubRequest, Status> {
    // No body is read on these, so none may be sent: a body would be parsed as the next
    // request (request smuggling).
    let body = header(req, "content-length").is_some_and(|v| v != b"0")
        || header(req, "transfer-encoding").is_some();
    if body {
        return Err(Status::BadRequest);
    }
    if let Some(r) = super::presence::get(req, path, close, head) {
        return r;
    }
    match path {
        b"/stats" => Ok(PubRequest::Stats { close, head }),
        b"/" => Ok(PubRequest::Page { close, head }),
        _ => match Probe::of_path(path) {
            Some(probe) => Ok(PubRequest::Probe { probe, close, head }),
            None => Err(Status::NotFound),
        },
    }
}

/// `POST /send/<id>` and `POST /publish/<user>`. Errors: 404 for other paths, 400 for a bad
/// id, and [`body`]'s; 411 without Content-Length or a chunked body.
fn post(req: &httparse::Request<'_, '_>, path: &[u8], close: bool) -> Result<PubRequest, Status> {
    let (id, friends) = match (
        path.strip_prefix(b"/send/"),
        path.strip_prefix(b"/publish/"),
    ) {
        (Some(id), _) => (id, false),
        (None, Some(id)) => (id, true),
        _ if path == b"/presence" => return super::presence::post(req, close),
        _ if path == b"/events/presence" => return Err(Status::GetOnly),
        _ => return Err(Status::NotFound),
    };
    let id = Id::parse(id).map_err(id_error)?;
    let (len, chunked, expect_continue) = super::body::required_body(req)?;
    Ok(PubRequest::Send {
        id,
        len,
        chunked,
        close,
        expect_continue,
        friends,
    })
}

/// `PUT|DELETE /friends/<a>/<b>` (`add` for PUT). Errors: 501 for other paths (as before
/// friends existed), 404 for a path without exactly two ids, 400 for a bad id, and
/// [`body`]'s.
fn friends_edit(
    req: &httparse::Request<'_, '_>,
    path: &[u8],
    close: bool,
    add: bool,
) -> Result<PubRequest, Status> {
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
    let (len, chunked) = match body(req)? {
        Body::None => (0, false),
        Body::Length(n) => (n, false),
        Body::Chunked => (0, true),
    };
    Ok(PubRequest::Edit {
        a,
        b,
        add,
        len,
        chunked,
        close,
    })
}

#[cfg(test)]
#[path = "publish_tests.rs"]
mod tests;
