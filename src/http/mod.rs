//! Sans-IO HTTP/1.1 (RFC 9112) for both listeners: request heads in ([`request`]), response
//! heads, chunks and error replies out ([`response`]). Nothing here touches a socket or a
//! clock; the shard feeds bytes in and writes the bytes that come out.
//!
//! # Files
//! - [`request`]: request heads in, one file per listener (subscribe, publish).
//! - [`response`]: response heads, replies and error bodies out.
//! - [`resume`]: the bytes of streams that carry cursors (history): openings, messages with
//!   their cursor, reset verdicts, the long-poll answer.
//! - [`stream`]: what each stream protocol (seed, raw, SSE, WebSocket) puts on the wire.
//! - [`ws`]: the WebSocket handshake answer, server frames out, client frames in.

pub mod presence;
pub mod request;
pub mod response;
pub mod resume;
pub mod stream;
pub mod ws;

/// Longest request head accepted, bytes (request line + header fields + the blank line).
/// A longer head gets 431 (RFC 6585 section 5).
pub const MAX_HEAD: usize = 8 * 1024;
/// Longest request target (path and query), bytes; a longer one gets 414 (RFC 9112
/// section 3: servers should accept at least 8000 octets of request line; ours fits in the
/// 8 KiB head, and no valid target of ours is near this: 64 ids of 128 bytes is 8,255).
pub const MAX_TARGET: usize = 8 * 1024 - 64;
/// Largest publish body, bytes; a larger Content-Length gets 413.
pub const MAX_BODY: usize = 64 * 1024;

/// The status codes this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 200 OK.
    Ok,
    /// 400 Bad Request: malformed head, bad id or id list.
    BadRequest,
    /// 400 Bad Request: a cursor (`Last-Event-ID`, `last_event_id=`) that is not one; the
    /// body names the reason.
    BadCursor(crate::history::CursorError),
    /// 401 Unauthorized: a publish without the `--publish-token` bearer token.
    Unauthorized,
    /// 403 Forbidden: a subscriber token that does not cover a requested id.
    Forbidden,
    /// 404 Not Found: a path this listener does not serve.
    NotFound,
    /// 408 Request Timeout: the head (or a publish body) did not arrive within
    /// `--head-timeout`.
    RequestTimeout,
    /// 411 Length Required: a publish without Content-Length.
    LengthRequired,
    /// 413 Content Too Large: a publish body over [`MAX_BODY`].
    TooLarge,
    /// 414 URI Too Long: a request target over [`MAX_TARGET`].
    UriTooLong,
    /// 431 Request Header Fields Too Large: a head over [`MAX_HEAD`].
    HeadTooLarge,
    /// 501 Not Implemented: a method (or transfer coding) this listener does not serve.
    NotImplemented,
    /// 503 Service Unavailable: the server is at its connection limit or shutting down.
    Unavailable,
    /// 500 Internal Server Error: a friends edit could not be written to its journal.
    Internal,
    /// 426 Upgrade Required: a WebSocket upgrade offering a version other than 13; the
    /// reply carries `Sec-WebSocket-Version: 13` (RFC 6455 section 4.2.2).
    UpgradeRequired,
    /// 405 Method Not Allowed: a method other than DELETE on `/subscribers/<id>`; the reply
    /// carries `Allow: DELETE` (RFC 9110 section 15.5.6).
    MethodNotAllowed,
    /// 405 Method Not Allowed on a GET-only target (`/events/presence`); the reply carries
    /// `Allow: GET` (RFC 9110 section 15.5.6).
    GetOnly,
    /// 405 Method Not Allowed on a known target of the publish listener that takes other
    /// methods, named in the reply's `Allow` (e.g. `POST, PUT` for `GET /send/<id>`; RFC
    /// 9110 section 15.5.6).
    Allow(&'static str),
    /// 429 Too Many Requests: a subscriber from an address already holding
    /// `--max-conns-per-ip` connections; the reply carries `Retry-After` (RFC 6585 section 4).
    TooManyRequests,
}

impl Status {
    /// The numeric code and reason phrase.
    pub fn code_reason(self) -> (u16, &'static str) {
        match self {
            Status::Ok => (200, "OK"),
            Status::BadRequest | Status::BadCursor(_) => (400, "Bad Request"),
            Status::Unauthorized => (401, "Unauthorized"),
            Status::Forbidden => (403, "Forbidden"),
            Status::RequestTimeout => (408, "Request Timeout"),
            Status::NotFound => (404, "Not Found"),
            Status::LengthRequired => (411, "Length Required"),
            Status::TooLarge => (413, "Content Too Large"),
            Status::UriTooLong => (414, "URI Too Long"),
            Status::HeadTooLarge => (431, "Request Header Fields Too Large"),
            Status::NotImplemented => (501, "Not Implemented"),
            Status::Unavailable => (503, "Service Unavailable"),
            Status::Internal => (500, "Internal Server Error"),
            Status::UpgradeRequired => (426, "Upgrade Required"),
            Status::MethodNotAllowed | Status::GetOnly | Status::Allow(_) => {
                (405, "Method Not Allowed")
            }
            Status::TooManyRequests => (429, "Too Many Requests"),
        }
    }
}
