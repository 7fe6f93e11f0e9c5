//! The friends fan-out as bytes (`serve --friends FILE`): a graph file in a fresh directory,
//! `POST /publish/<user>` and `PUT|DELETE /friends/<a>/<b>` on the publish listener, and the
//! exact chunk of a friends event, `Recvd msg #N from <user>: 'MSG'<br/>\n`.

use std::path::{Path, PathBuf};

use uring_comet::config::ServerConfig;
use uring_comet::id::Id;

use super::comet::{chunk, html_escape, Publisher, Subscriber};
use super::server::backend;

/// A fresh directory for one test body, named after the test binary, this process, `name`
/// and the backend (so both backends' runs of a body never share it); removed first if an
/// earlier run left it.
pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "uc-{}-{}-{name}-{}",
        env!("CARGO_CRATE_NAME"),
        std::process::id(),
        backend()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A server with `shards` shards over the edge list `edges`, written to `dir/graph.tsv`.
pub(crate) fn friends_config(dir: &Path, shards: usize, edges: &str) -> ServerConfig {
    let file = dir.join("graph.tsv");
    std::fs::write(&file, edges).unwrap();
    let mut cfg = crate::common::server::local(shards);
    cfg.friends = Some(file);
    cfg
}

/// A request's raw bytes with a Content-Length body (for pipelining several on one
/// connection).
pub(crate) fn raw_request(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Reads one reply on the publish connection: (status, body).
pub(crate) fn read_reply(p: &mut Publisher) -> (u16, String) {
    let head = p.client.read_head();
    let body = p.client.read_body(&head);
    (head.status, String::from_utf8(body).unwrap())
}

/// Sends a request with `body` on the publish connection; returns (status, body).
pub(crate) fn request(p: &mut Publisher, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    p.client.send(&raw_request(method, path, body));
    read_reply(p)
}

/// `POST /publish/<user>`; asserts a `200 OK` reply and returns its body.
pub(crate) fn publish_friends(p: &mut Publisher, user: &str, msg: &[u8]) -> String {
    p.client
        .send(&raw_request("POST", &format!("/publish/{user}"), msg));
    let head = p.client.read_head();
    head.expect_200();
    String::from_utf8(p.client.read_body(&head)).unwrap()
}

/// `PUT` or `DELETE /friends/<a>/<b>`; asserts a 200 and returns the body.
pub(crate) fn edit(p: &mut Publisher, method: &str, a: u64, b: u64) -> String {
    let (status, body) = request(p, method, &format!("/friends/{a}/{b}"), b"");
    assert_eq!(status, 200, "{method} /friends/{a}/{b}: {body}");
    body
}

/// The exact chunk of friends event `msg` from `from`, the `n`th message on its connection.
pub(crate) fn friend_chunk(n: u64, from: u64, msg: &[u8]) -> Vec<u8> {
    let mut d = format!("Recvd msg #{n} from {from}: '").into_bytes();
    d.extend_from_slice(&html_escape(msg));
    d.extend_from_slice(b"'<br/>\n");
    chunk(&d)
}

/// Reads the next chunk and checks it is exactly friends event `msg` from `from`.
pub(crate) fn expect_friend(sub: &mut Subscriber, from: u64, msg: &[u8]) {
    sub.received += 1;
    let want = friend_chunk(sub.received, from, msg);
    sub.client
        .expect_bytes(&want, &format!("event from {from} #{}", sub.received));
}

/// The first ids above 1 whose owner among 2 shards is (`same`) and is not (`other`) the
/// owner of user 1.
pub(crate) fn ids_around_1() -> (u64, u64, u64) {
    let o1 = Id::Num(1).owner(2);
    let mut same = (2..).filter(|&i| Id::Num(i).owner(2) == o1);
    let other: Vec<u64> = (2..)
        .filter(|&i| Id::Num(i).owner(2) != o1)
        .take(2)
        .collect();
    (same.next().unwrap(), other[0], other[1])
}
