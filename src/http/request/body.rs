//! How a publish-listener request's body is framed (RFC 9112 section 6): none,
//! `Content-Length`, or the chunked transfer coding (decoded by [`super::ChunkedBody`]); and
//! the framings refused (smuggling, codings we do not decode, bad lengths).

use super::header;
use crate::http::{Status, MAX_BODY};

/// How a request body is framed (RFC 9112 section 6.3).
pub(super) enum Body {
    /// No body length: none, or 411 where one is needed.
    None,
    /// `Content-Length`, at most [`MAX_BODY`].
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// The request body's framing. Errors: 400 for `Transfer-Encoding` with `Content-Length`
/// (section 6.1: the request smuggling case) or on HTTP/1.0, or an empty coding list; 501
/// for any coding but a final and only `chunked` (we decode no other); and
/// [`body_len`]'s.
pub(super) fn body(req: &httparse::Request<'_, '_>) -> Result<Body, Status> {
    let mut te = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
        .peekable();
    if te.peek().is_none() {
        return Ok(body_len(req)?.map_or(Body::None, Body::Length));
    }
    if header(req, "content-length").is_some() || req.version == Some(0) {
        return Err(Status::BadRequest);
    }
    // The field is a list, possibly over several lines (RFC 9110 section 5.3), empty
    // elements allowed (section 5.6.1).
    let (mut codings, mut chunked_last) = (0, false);
    for c in te.flat_map(|h| h.value.split(|&b| b == b',')) {
        let c = c.trim_ascii();
        if !c.is_empty() {
            codings += 1;
            chunked_last = c.eq_ignore_ascii_case(b"chunked");
        }
    }
    match (codings, chunked_last) {
        (0, _) => Err(Status::BadRequest),
        (1, true) => Ok(Body::Chunked),
        _ => Err(Status::NotImplemented),
    }
}

/// A body-carrying request's framing: (Content-Length or 0, chunked, `Expect: 100-continue`
/// on HTTP/1.1, RFC 9110 section 10.1.1). Errors: [`body`]'s, and 411 without a length.
pub(super) fn required_body(
    req: &httparse::Request<'_, '_>,
) -> Result<(usize, bool, bool), Status> {
    let (len, chunked) = match body(req)? {
        Body::None => return Err(Status::LengthRequired),
        Body::Length(n) => (n, false),
        Body::Chunked => (0, true),
    };
    let expect_continue = super::header(req, "expect")
        .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"))
        && req.version == Some(1);
    Ok((len, chunked, expect_continue))
}

/// The request body's length from Content-Length (`None` without one). Errors: 400 for a
/// bad or ambiguous length, 413 over [`MAX_BODY`].
fn body_len(req: &httparse::Request<'_, '_>) -> Result<Option<usize>, Status> {
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

#[cfg(test)]
mod tests {
    use crate::http::request::{parse_publish, Head, PubRequest};

    #[test]
    fn chunked_bodies() {
        for te in ["chunked", "Chunked", " chunked ,", ", CHUNKED"] {
            let head =
                format!("POST /send/9 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {te}\r\n\r\n");
            assert!(
                matches!(
                    parse_publish(head.as_bytes(), None),
                    Head::Done(
                        PubRequest::Send {
                            chunked: true,
                            len: 0,
                            ..
                        },
                        _
                    )
                ),
                "{te:?}"
            );
        }
        let edit = b"PUT /friends/1/2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(
            parse_publish(edit, None),
            Head::Done(PubRequest::Edit { chunked: true, .. }, _)
        ));
    }
}
