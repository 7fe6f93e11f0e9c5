//! Long-polling (issue 14), as the tests read it: `GET /poll/<ids>[?last_event_id=<cursor>]`
//! on the subscriber listener is answered once, `200`, `application/json`, no-cache, CORS,
//! `Content-Length`, `Connection: close`, with the body
//! `{"messages":[{"id":"<cursor>","data":"<payload>"}],"last_event_id":"<cursor>","recovered":<bool>,"resets":[...]}`,
//! then the server closes.

use std::net::SocketAddr;

use super::client::{Client, Closed};
use super::history::{opening_json, Cursor};
use super::http::Head;

/// `s` as a JSON string (RFC 8259: `"` and `\` escaped, the control characters as `\n`,
/// `\r`, `\t` or `\u00XX`); the tests that compare bytes use only payloads whose escaping
/// RFC 8259 leaves no choice about but these short forms.
pub(crate) fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The exact body of a poll answer.
pub(crate) fn poll_body(
    msgs: &[(Cursor, &str)],
    last: &Cursor,
    recovered: bool,
    resets: &[(&str, &str)],
) -> String {
    let m: Vec<String> = msgs
        .iter()
        .map(|(c, d)| format!("{{\"id\":\"{c}\",\"data\":{}}}", json_str(d)))
        .collect();
    format!(
        "{{\"messages\":[{}],{}",
        m.join(","),
        &opening_json(last, recovered, resets)[1..]
    )
}

/// Sends `GET /poll/<path>` (ids and query) with `extra` header lines and returns the open
/// client, for a poll the test expects to be held.
pub(crate) fn poll_send(addr: SocketAddr, path: &str, extra: &str) -> Client {
    let mut c = Client::connect(addr);
    c.send(format!("GET /poll/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n").as_bytes());
    c
}

/// Reads a poll answer: checks the head (200, JSON, no-cache, CORS `*`, Content-Length,
/// `Connection: close`) and that the server closes after the body; returns head and body.
pub(crate) fn poll_answer(c: &mut Client) -> (Head, String) {
    let head = c.read_head();
    head.expect_200();
    head.expect_header("content-type", "application/json");
    head.expect_header("cache-control", "no-cache");
    head.expect_header_exact("access-control-allow-origin", "*");
    head.expect_header("connection", "close");
    head.expect_no_header("transfer-encoding");
    assert!(
        head.header("content-length").is_some(),
        "poll answer without Content-Length"
    );
    let body = c.read_body(&head);
    let (rest, how) = c.read_to_close();
    assert!(
        rest.is_empty(),
        "bytes after the poll answer: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert_eq!(
        how,
        Closed::Eof,
        "the poll answer must end with an orderly close"
    );
    (head, String::from_utf8(body).expect("poll answer is UTF-8"))
}

/// `GET /poll/<path>` answered (at once or after a wait): head and body.
pub(crate) fn poll(addr: SocketAddr, path: &str) -> (Head, String) {
    poll_answer(&mut poll_send(addr, path, ""))
}
