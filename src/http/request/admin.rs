//! The publish listener's admin requests: `DELETE /subscribers/<id>` (kick: end every
//! connection logged in under the id). Parsed by [`super::parse_publish`], whose bearer-token
//! check (`--publish-token`) comes first.

use super::publish::PubRequest;
use super::{header, id_error};
use crate::http::Status;
use crate::id::Id;

/// The path prefix of the kick.
pub(super) const SUBSCRIBERS: &[u8] = b"/subscribers/";

/// `DELETE /subscribers/<id>`: end every connection logged in under `id`.
#[derive(Debug, PartialEq, Eq)]
pub struct Kick {
    /// The id whose connections end.
    pub id: Id,
    /// Close after replying.
    pub close: bool,
}

/// `DELETE /subscribers/<id>` (`path` starts with [`SUBSCRIBERS`]): a
/// [`PubRequest::Kick`]. Errors: 405 (with `Allow: DELETE`) for any other method, 400 for a
/// bad id (empty, over 128 bytes, a byte outside `[A-Za-z0-9._~-]`, a further `/`) or a
/// request with a body (none is read, so one would be parsed as the next request).
pub(super) fn kick(
    req: &httparse::Request<'_, '_>,
    path: &[u8],
    close: bool,
) -> Result<PubRequest, Status> {
    if req.method != Some("DELETE") {
        return Err(Status::MethodNotAllowed);
    }
    let body = header(req, "content-length").is_some_and(|v| v != b"0")
        || header(req, "transfer-encoding").is_some();
    if body {
        return Err(Status::BadRequest);
    }
    let id = Id::parse(&path[SUBSCRIBERS.len()..]).map_err(id_error)?;
    Ok(PubRequest::Kick(Kick { id, close }))
}

#[cfg(test)]
mod tests {
    use super::Kick;
    use crate::http::request::{parse_publish, Head, PubRequest};
    use crate::http::Status;
    use crate::id::Id;

    #[test]
    fn kick_requests() {
        assert_eq!(
            parse_publish(b"DELETE /subscribers/42 HTTP/1.1\r\nHost: x\r\n\r\n", None),
            Head::Done(
                PubRequest::Kick(Kick {
                    id: Id::Num(42),
                    close: false
                }),
                44
            )
        );
        assert!(matches!(
            parse_publish(b"DELETE /subscribers/a.b HTTP/1.0\r\n\r\n", None),
            Head::Done(PubRequest::Kick(Kick { close: true, .. }), _)
        ));
        for (head, status) in [
            (
                &b"GET /subscribers/1 HTTP/1.1\r\nHost: x\r\n\r\n"[..],
                Status::MethodNotAllowed,
            ),
            (
                b"POST /subscribers/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                Status::MethodNotAllowed,
            ),
            (
                b"PUT /subscribers/1 HTTP/1.1\r\nHost: x\r\n\r\n",
                Status::MethodNotAllowed,
            ),
            (
                b"DELETE /subscribers/ HTTP/1.1\r\nHost: x\r\n\r\n",
                Status::BadRequest,
            ),
            (
                b"DELETE /subscribers/a%20b HTTP/1.1\r\nHost: x\r\n\r\n",
                Status::BadRequest,
            ),
            (
                b"DELETE /subscribers/1/2 HTTP/1.1\r\nHost: x\r\n\r\n",
                Status::BadRequest,
            ),
            (
                b"DELETE /subscribers/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
                Status::BadRequest,
            ),
            (
                b"DELETE /subscribers HTTP/1.1\r\nHost: x\r\n\r\n",
                Status::NotImplemented,
            ),
        ] {
            let what = String::from_utf8_lossy(head);
            assert_eq!(parse_publish(head, None), Head::Refuse(status), "{what}");
        }
        // The publish token applies.
        let t = Some(&b"s3cret"[..]);
        assert_eq!(
            parse_publish(b"DELETE /subscribers/1 HTTP/1.1\r\nHost: x\r\n\r\n", t),
            Head::Refuse(Status::Unauthorized)
        );
        assert!(matches!(
            parse_publish(
                b"DELETE /subscribers/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n\r\n",
                t
            ),
            Head::Done(PubRequest::Kick(_), _)
        ));
    }
}
