//! The seed's comet protocol as bytes: a message is one chunk `Recvd msg #N: 'MSG'<br/>\n`
//! (MSG HTML-escaped, N counted per connection), a publish is `POST /send/<id>` answered
//! `{"delivered":N}`; [`Subscriber`] and [`Publisher`] wrap a [`Client`] for each side, and
//! [`stats`]/[`stat`] read `GET /stats`.

use std::net::SocketAddr;

use super::client::{truncate, Client};
use super::http::Head;

/// `& < > " '` escaped as the spec says.
pub(crate) fn html_escape(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len());
    for &b in msg {
        match b {
            b'&' => out.extend_from_slice(b"&amp;"),
            b'<' => out.extend_from_slice(b"&lt;"),
            b'>' => out.extend_from_slice(b"&gt;"),
            b'"' => out.extend_from_slice(b"&quot;"),
            b'\'' => out.extend_from_slice(b"&#39;"),
            _ => out.push(b),
        }
    }
    out
}

/// The data of message `n` on a connection: `Recvd msg #N: 'MSG'<br/>\n`, MSG escaped.
pub(crate) fn msg_data(n: u64, msg: &[u8]) -> Vec<u8> {
    let mut d = format!("Recvd msg #{n}: '").into_bytes();
    d.extend_from_slice(&html_escape(msg));
    d.extend_from_slice(b"'<br/>\n");
    d
}

/// One chunk carrying `data`: lowercase hex size, CRLF, data, CRLF.
pub(crate) fn chunk(data: &[u8]) -> Vec<u8> {
    let mut c = format!("{:x}\r\n", data.len()).into_bytes();
    c.extend_from_slice(data);
    c.extend_from_slice(b"\r\n");
    c
}

/// The exact bytes of message `n` on a subscriber stream.
pub(crate) fn msg_chunk(n: u64, msg: &[u8]) -> Vec<u8> {
    chunk(&msg_data(n, msg))
}

/// A subscriber connection whose response head has been read and checked.
pub(crate) struct Subscriber {
    /// The connection.
    pub(crate) client: Client,
    /// Its response head.
    pub(crate) head: Head,
    /// Messages received so far on this connection.
    pub(crate) received: u64,
}

/// Checks the head of a subscriber stream (GET or HEAD).
pub(crate) fn check_stream_head(head: &Head) {
    head.expect_200();
    head.expect_header("content-type", "text/html; charset=utf-8");
    head.expect_header("transfer-encoding", "chunked");
    assert!(
        head.header("content-length").is_none(),
        "a chunked stream must not carry Content-Length: {}",
        String::from_utf8_lossy(&head.raw)
    );
}

impl Subscriber {
    /// Connects, sends `GET /test/<ids> HTTP/1.1`, reads and checks the head.
    pub(crate) fn connect(addr: SocketAddr, ids: &str) -> Subscriber {
        let mut client = Client::connect(addr);
        client.send(format!("GET /test/{ids} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes());
        let head = client.read_head();
        check_stream_head(&head);
        Subscriber {
            client,
            head,
            received: 0,
        }
    }

    /// Reads the next message and asserts it is exactly the chunk for `msg` with the next number.
    pub(crate) fn expect_msg(&mut self, msg: &[u8]) {
        self.received += 1;
        let expected = msg_chunk(self.received, msg);
        let what = format!("message #{} ({:?})", self.received, truncate(msg));
        self.client.expect_bytes(&expected, &what);
    }

    /// Reads the next chunk, checks it is exactly `Recvd msg #<next>: '...'<br/>\n` in form, and
    /// returns the (still escaped) message text between the quotes.
    pub(crate) fn next_msg(&mut self) -> Vec<u8> {
        self.received += 1;
        let data = self.client.read_chunk();
        let prefix = format!("Recvd msg #{}: '", self.received);
        assert!(
            data.starts_with(prefix.as_bytes()) && data.ends_with(b"'<br/>\n"),
            "chunk is not `{prefix}...'<br/>\\n`: {:?}",
            String::from_utf8_lossy(&data)
        );
        data[prefix.len()..data.len() - 7].to_vec()
    }

    /// Closes both directions.
    pub(crate) fn close(self) {
        self.client.close()
    }
}

/// A keep-alive connection to the publish listener.
pub(crate) struct Publisher {
    /// The connection.
    pub(crate) client: Client,
}

/// The request bytes of `POST /send/<id>` with body `msg`.
pub(crate) fn send_request(id: &str, msg: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST /send/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
        msg.len()
    )
    .into_bytes();
    r.extend_from_slice(msg);
    r
}

/// A raw request to the publish listener with an optional bearer token.
pub(crate) fn pub_request(method: &str, path: &str, auth: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    if let Some(a) = auth {
        r.push_str(&format!("Authorization: {a}\r\n"));
    }
    if method == "POST" {
        r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

/// Parses exactly `{"delivered":N}`.
pub(crate) fn parse_delivered(body: &[u8]) -> u64 {
    let s = std::str::from_utf8(body).expect("publish reply body not UTF-8");
    let n = s
        .strip_prefix("{\"delivered\":")
        .and_then(|r| r.strip_suffix('}'))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or_else(|| panic!("publish reply body is not exactly {{\"delivered\":N}}: {s:?}"));
    n.parse().unwrap()
}

impl Publisher {
    /// Connects to the publish listener at `addr`.
    pub(crate) fn connect(addr: SocketAddr) -> Publisher {
        Publisher {
            client: Client::connect(addr),
        }
    }

    /// Reads one publish reply (head and body) and returns N of `{"delivered":N}`.
    pub(crate) fn read_reply(&mut self) -> u64 {
        let head = self.client.read_head();
        head.expect_200();
        head.expect_header("content-type", "application/json");
        let body = self.client.read_body(&head);
        parse_delivered(&body)
    }

    /// `POST /send/<id>` with body `msg`; returns N of `{"delivered":N}`.
    pub(crate) fn send(&mut self, id: &str, msg: &[u8]) -> u64 {
        self.client.send(&send_request(id, msg));
        self.read_reply()
    }

    /// `GET /stats`; returns the JSON body.
    pub(crate) fn stats(&mut self) -> String {
        self.client
            .send(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        let head = self.client.read_head();
        head.expect_200();
        let ct = head.header("content-type").unwrap_or("");
        assert!(
            ct.to_ascii_lowercase().starts_with("application/json"),
            "GET /stats Content-Type should be application/json, got {ct:?}"
        );
        let body = self.client.read_body(&head);
        String::from_utf8(body).expect("stats not UTF-8")
    }
}

/// One-shot publish on a fresh connection.
pub(crate) fn publish(addr: SocketAddr, id: &str, msg: &[u8]) -> u64 {
    Publisher::connect(addr).send(id, msg)
}

/// Extracts the number after `"key":` from a JSON text (a tiny extractor: top-level or nested,
/// first occurrence). Panics if the key is missing or its value is not a JSON number.
pub(crate) fn json_number(json: &str, key: &str) -> f64 {
    let pat = format!("\"{key}\"");
    let pos = json
        .find(&pat)
        .unwrap_or_else(|| panic!("key {key:?} missing from stats JSON: {json}"));
    let rest = json[pos + pat.len()..].trim_start();
    let rest = rest
        .strip_prefix(':')
        .unwrap_or_else(|| panic!("no ':' after {key:?} in {json}"))
        .trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E')))
        .unwrap_or(rest.len());
    let tok = &rest[..end];
    assert!(
        !tok.is_empty() && (tok.starts_with('-') || tok.as_bytes()[0].is_ascii_digit()),
        "value of {key:?} is not a JSON number in {json}"
    );
    tok.parse()
        .unwrap_or_else(|_| panic!("value of {key:?} ({tok:?}) is not a number in {json}"))
}

/// `GET /stats` on a fresh publish connection; the JSON body.
pub(crate) fn stats(publish_addr: SocketAddr) -> String {
    Publisher::connect(publish_addr).stats()
}

/// One number of `GET /stats` (on a fresh publish connection), as an integer.
pub(crate) fn stat(publish_addr: SocketAddr, key: &str) -> u64 {
    json_number(&stats(publish_addr), key) as u64
}
