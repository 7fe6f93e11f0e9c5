//! Unit tests of the publish-listener parser ([`super::parse_publish`]).
use super::{parse_publish, Head, PubRequest};
use crate::http::Status;
use crate::id::Id;

#[test]
fn send_and_publish() {
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
                chunked: false,
                close: false,
                expect_continue: false,
                friends: false,
            },
            53
        )
    );
    // PUT (`curl -T`) publishes too; PUT elsewhere is a friends edit or 501.
    let put = parse_publish(
        b"PUT /send/9 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        None,
    );
    assert!(matches!(
        put,
        Head::Done(
            PubRequest::Send {
                chunked: true,
                friends: false,
                ..
            },
            _
        )
    ));
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
}

#[test]
fn friends_edits() {
    assert_eq!(
        parse_publish(b"DELETE /friends/1/2 HTTP/1.1\r\nHost: x\r\n\r\n", None),
        Head::Done(
            PubRequest::Edit {
                a: Id::Num(1),
                b: Id::Num(2),
                add: false,
                len: 0,
                chunked: false,
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
}

#[test]
fn send_refusals() {
    for (head, status) in [
        (&b"POST /send/9 HTTP/1.1\r\nHost: x\r\n\r\n"[..], Status::LengthRequired),
        (&b"POST /send/9 HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n"[..], Status::TooLarge),
        (&b"POST /send/9 HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"[..], Status::BadRequest),
        (&b"POST /send/9 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..], Status::BadRequest),
        (&b"POST /send/9 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"[..], Status::NotImplemented),
        (&b"POST /send/9 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"[..], Status::NotImplemented),
        (&b"POST /send/9 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"[..], Status::NotImplemented),
        (&b"POST /send/9 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"[..], Status::BadRequest),
        (&b"POST /send/9 HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"[..], Status::BadRequest),
        (&b"POST /send/9 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,\r\n\r\n"[..], Status::BadRequest),
    ] {
        let what = String::from_utf8_lossy(head);
        assert_eq!(parse_publish(head, None), Head::Refuse(status), "{what}");
    }
}

#[test]
fn stats_and_other_methods() {
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
    // A known target, another method: 405 naming the ones it takes.
    for (req, allow) in [
        (
            &b"DELETE /send/1 HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            "POST, PUT",
        ),
        (b"GET /send/1 HTTP/1.1\r\nHost: x\r\n\r\n", "POST, PUT"),
        (
            b"DELETE /presence/42 HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET, HEAD",
        ),
        (
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            "GET, HEAD",
        ),
        (
            b"GET /friends/1/2 HTTP/1.1\r\nHost: x\r\n\r\n",
            "PUT, DELETE",
        ),
        (b"GET /presence HTTP/1.1\r\nHost: x\r\n\r\n", "POST"),
        (b"PATCH /stats HTTP/1.1\r\nHost: x\r\n\r\n", "GET, HEAD"),
    ] {
        assert_eq!(
            parse_publish(req, None),
            Head::Refuse(Status::Allow(allow)),
            "{}",
            String::from_utf8_lossy(req)
        );
    }
    // Unknown targets stay 404 or 501.
    assert_eq!(
        parse_publish(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", None),
        Head::Refuse(Status::NotFound)
    );
    assert_eq!(
        parse_publish(b"PATCH /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", None),
        Head::Refuse(Status::NotImplemented)
    );
}

#[test]
fn get_bodies_and_expect_continue() {
    let smuggle = b"GET /stats HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
    assert_eq!(
        parse_publish(smuggle, None),
        Head::Refuse(Status::BadRequest)
    );
    let cont = parse_publish(
        b"POST /send/1 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        None,
    );
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
fn bearer_token() {
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
}
