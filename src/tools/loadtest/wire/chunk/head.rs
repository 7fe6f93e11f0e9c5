//! The response head a subscriber stream must start with (RFC 9112 section 4 status line,
//! section 6.1 Transfer-Encoding; RFC 6455 section 4.2.2 for a WebSocket upgrade), checked
//! once the head is complete.

use super::{Expect, State, StreamError};

/// The `Sec-WebSocket-Accept` the server must answer [`WS_REQUEST_HEADERS`](super::WS_REQUEST_HEADERS)'s
/// key with (RFC 6455 section 1.3's example).
const WS_ACCEPT: &[u8] = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Checks a complete response head against `expect`; returns the state its body starts in.
pub(super) fn check_head(head: &[u8], expect: Expect) -> Result<State, StreamError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(StreamError::BadHead("incomplete".into())),
        Err(e) => return Err(StreamError::BadHead(e.to_string())),
    }
    let want = if expect == Expect::WebSocket {
        101
    } else {
        200
    };
    if resp.code != Some(want) {
        return Err(StreamError::BadHead(format!(
            "status {:?}",
            resp.code.unwrap_or(0)
        )));
    }
    let value = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    if expect == Expect::WebSocket {
        if !value("upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket")) {
            return Err(StreamError::BadHead("no Upgrade: websocket".into()));
        }
        if value("sec-websocket-accept") != Some(WS_ACCEPT) {
            return Err(StreamError::BadHead("wrong Sec-WebSocket-Accept".into()));
        }
        return Ok(State::WsOp);
    }
    let coding =
        value("transfer-encoding").map(|v| String::from_utf8_lossy(v).to_ascii_lowercase());
    match coding {
        Some(c) if c.contains("chunked") => Ok(State::Size),
        None if expect == Expect::ChunkedOrClose => Ok(State::Line),
        _ => Err(StreamError::BadHead("no Transfer-Encoding: chunked".into())),
    }
}
