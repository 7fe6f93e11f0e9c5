//! Response bytes: the seed's message chunk, every publish reply body (send, friends, edit,
//! with their cluster keys), the demo page, CORS lines and errors (RFC 9112 sections 4, 6
//! and 7.1 for chunked transfer coding). Stream heads are made in [`super::stream`].
//!
//! Everything appends to a caller's `Vec<u8>`, so one output buffer per connection collects
//! the head and any messages queued behind it, and is sent in one go.

use std::io::Write;

use super::Status;

/// Appends `msg` with `& < > " '` replaced by HTML character references.
pub fn html_escape(out: &mut Vec<u8>, msg: &[u8]) {
    let mut start = 0;
    for (i, &b) in msg.iter().enumerate() {
        let rep: &[u8] = match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'"' => b"&quot;",
            b'\'' => b"&#39;",
            _ => continue,
        };
        out.extend_from_slice(&msg[start..i]);
        out.extend_from_slice(rep);
        start = i + 1;
    }
    out.extend_from_slice(&msg[start..]);
}

/// Appends message number `n` in the seed's format, `Recvd msg #N: 'MSG'<br/>\n`, as one
/// chunk (or raw, for HTTP/1.0). The chunk is never empty, so it can never be mistaken for
/// the last-chunk that ends a chunked body.
pub fn seed_chunk(out: &mut Vec<u8>, n: u32, msg: &[u8], chunked: bool) {
    chunk_with(out, chunked, |out| {
        let _ = write!(out, "Recvd msg #{n}: '");
        html_escape(out, msg);
        out.extend_from_slice(b"'<br/>\n");
    });
}

/// Appends what `write` appends as one chunk (or raw, for `!chunked`), in one pass and with
/// no allocation: room for the size line is reserved in front, and the data is shifted over
/// the unused part of it afterwards. `write` must append at least one byte.
pub fn chunk_with(out: &mut Vec<u8>, chunked: bool, write: impl FnOnce(&mut Vec<u8>)) {
    if !chunked {
        return write(out);
    }
    let size_at = out.len();
    out.extend_from_slice(b"00000000\r\n");
    let data_at = out.len();
    write(out);
    let len = out.len() - data_at;
    let mut size = [0u8; 10];
    let n = {
        let mut w = &mut size[..];
        let _ = write!(w, "{len:x}\r\n");
        10 - w.len()
    };
    let spare = 10 - n;
    out.copy_within(data_at.., data_at - spare);
    out.truncate(out.len() - spare);
    out[size_at..size_at + n].copy_from_slice(&size[..n]);
    out.extend_from_slice(b"\r\n");
}

/// Whether a publish was forwarded to the other cluster nodes (`--cluster`), as its reply
/// says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// Not in cluster mode: the reply has no `scope` or `cluster` key.
    Off,
    /// Queued for the other nodes.
    Queued,
    /// Dropped (Redis down or the agent's queue full; counted in `/stats`).
    Dropped,
}

impl Forward {
    /// The reply's `,"scope":"node","cluster":"queued"|"dropped"` keys, or nothing.
    fn keys(self) -> &'static str {
        match self {
            Forward::Off => "",
            Forward::Queued => ",\"scope\":\"node\",\"cluster\":\"queued\"",
            Forward::Dropped => ",\"scope\":\"node\",\"cluster\":\"dropped\"",
        }
    }
}

/// Appends the reply to `POST /send/<id>` as a complete 200 reply: `{"delivered":N}`, `n`
/// connections queued; in cluster mode
/// `{"delivered":N,"scope":"node","cluster":"queued"|"dropped"}`, where N counts this node's
/// connections only and `cluster` says whether the message was queued for the other nodes.
pub fn delivered(out: &mut Vec<u8>, n: u64, forward: Forward, close: bool) {
    let body = format!("{{\"delivered\":{n}{}}}", forward.keys());
    json(out, body.as_bytes(), close);
}

/// Appends the reply to `POST /publish/<user>` as a complete 200 reply:
/// `{"friends":F,"delivered":N}`, `friends` followers and `n` connections queued; in cluster
/// mode `{"friends":F,"delivered":N,"scope":"node","cluster":"queued"|"dropped"}` (F and N of
/// this node's copy of the graph and its connections).
pub fn friends_delivered(out: &mut Vec<u8>, friends: u64, n: u64, forward: Forward, close: bool) {
    let body = format!(
        "{{\"friends\":{friends},\"delivered\":{n}{}}}",
        forward.keys()
    );
    json(out, body.as_bytes(), close);
}

/// Appends the reply to `PUT|DELETE /friends/<a>/<b>`: 200 `{"changed":true|false}`, or,
/// when the journal write `failed`, a 500 whose connection closes (the edit was not
/// applied).
pub fn edit(out: &mut Vec<u8>, changed: bool, failed: bool, close: bool) {
    if failed {
        return error_text(out, Status::Internal, "the edit could not be journaled");
    }
    let body = format!("{{\"changed\":{changed}}}");
    json(out, body.as_bytes(), close);
}

/// Appends the reply to `DELETE /subscribers/<id>` as a complete 200 reply:
/// `{"closed":N}`, `n` connections ended; in cluster mode `{"closed":N,"nodes":K}` when `k`
/// nodes (this one included) answered, or `{"closed":N,"scope":"node"}` when only this node's
/// connections were counted.
pub fn kicked(out: &mut Vec<u8>, n: u64, nodes: Option<u64>, cluster: bool, close: bool) {
    let body = match (nodes, cluster) {
        (Some(k), _) => format!("{{\"closed\":{n},\"nodes\":{k}}}"),
        (None, true) => format!("{{\"closed\":{n},\"scope\":\"node\"}}"),
        (None, false) => format!("{{\"closed\":{n}}}"),
    };
    json(out, body.as_bytes(), close);
}

/// Appends a complete 200 reply carrying a JSON body.
pub fn json(out: &mut Vec<u8>, body: &[u8], close: bool) {
    let _ = write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// The CORS header lines (each ending CRLF) for `--cors-origin` `origin` (Fetch standard,
/// "CORS protocol"): none for "", `Access-Control-Allow-Origin: *` for `*`, else that origin
/// with `Vary: Origin`. Streams carry them so a page on another origin may subscribe.
pub fn cors_lines(origin: &str) -> Vec<u8> {
    match origin {
        "" => Vec::new(),
        "*" => b"Access-Control-Allow-Origin: *\r\n".to_vec(),
        o => format!("Access-Control-Allow-Origin: {o}\r\nVary: Origin\r\n").into_bytes(),
    }
}

/// Cuts the body off the reply that begins at `out[start..]` (everything after its blank
/// line), keeping its `Content-Length`: the answer to a `HEAD` (RFC 9110 section 9.3.2, the
/// same head as a `GET` would get, no content).
pub fn drop_body(out: &mut Vec<u8>, start: usize) {
    if let Some(p) = out[start..].windows(4).position(|w| w == b"\r\n\r\n") {
        out.truncate(start + p + 4);
    }
}

/// Whether request bytes `req` are a `HEAD` request (its method, RFC 9110 section 9.3.2).
pub fn is_head(req: &[u8]) -> bool {
    req.starts_with(b"HEAD ")
}

/// Inserts header `lines` (each ending CRLF, e.g. [`cors_lines`]) right after the status line
/// of the reply that begins at `out[start..]`; nothing if the reply has no CRLF.
pub fn insert_lines(out: &mut Vec<u8>, start: usize, lines: &[u8]) {
    if lines.is_empty() {
        return;
    }
    if let Some(p) = out[start..].windows(2).position(|w| w == b"\r\n") {
        let at = start + p + 2;
        out.splice(at..at, lines.iter().copied());
    }
}

/// The complete answer to a CORS preflight (`OPTIONS` on a stream path): 204 with the
/// methods and request headers a subscriber may use (`Last-Event-ID` and `Cache-Control`
/// are what EventSource polyfills add). With CORS off (`cors` empty, `--cors-origin ""`) it
/// is a plain 204 with `Allow` and no `Access-Control-*` line (Fetch standard, CORS
/// protocol: a preflight without Allow-Origin fails, as it should). It never opens a
/// stream; the connection closes.
pub fn preflight(cors: &[u8]) -> Vec<u8> {
    let mut out = b"HTTP/1.1 204 No Content\r\n".to_vec();
    out.extend_from_slice(cors);
    out.extend_from_slice(b"Allow: GET, HEAD, OPTIONS\r\n");
    if !cors.is_empty() {
        out.extend_from_slice(
            b"Access-Control-Allow-Methods: GET, HEAD, OPTIONS\r\nAccess-Control-Allow-Headers: Last-Event-ID, Cache-Control, Accept, Content-Type\r\nAccess-Control-Max-Age: 86400\r\n",
        );
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out
}

/// The demo page (`GET /` on the publish listener), embedded in the binary, with the
/// subscriber listener's port filled in, as a complete 200 reply.
pub fn demo_page(sub_port: u16) -> Vec<u8> {
    let body = include_str!("demo.html").replace("{{SUB_PORT}}", &sub_port.to_string());
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nCache-Control: no-cache\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// The body length of a complete reply made by [`demo_page`] (what HEAD leaves out).
pub fn demo_page_body_len(reply: &[u8]) -> usize {
    reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |at| reply.len() - at - 4)
}

/// Appends a complete error reply whose plain-text body is `text` (one line, ending in
/// `\n`); the connection is closed after it.
pub fn error_text(out: &mut Vec<u8>, status: Status, text: &str) {
    let (code, reason) = status.code_reason();
    let _ = write!(
        out,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}\n",
        text.len() + 1
    );
}

/// Appends a complete `401 Unauthorized` for a subscriber without a valid token, naming the
/// RFC 6750 error `code` and its description (section 3: `WWW-Authenticate: Bearer
/// realm="uring-comet", error="...", error_description="..."`); the body says the same.
pub fn unauthorized(out: &mut Vec<u8>, code: &str, description: &str) {
    let text = format!("unauthorized: {description}\n");
    let _ = write!(
        out,
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"uring-comet\", error=\"{code}\", error_description=\"{description}\"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

/// Appends a complete error reply; the connection is closed after it.
pub fn error(out: &mut Vec<u8>, status: Status) {
    if let Status::BadCursor(e) = status {
        return error_text(out, status, &format!("bad cursor: {e}"));
    }
    let (code, reason) = status.code_reason();
    // RFC 6750 section 3: a 401 names the scheme it wants.
    let allow;
    let challenge = match status {
        Status::Unauthorized => "WWW-Authenticate: Bearer realm=\"uring-comet\"\r\n",
        // RFC 6455 section 4.4: the versions this server speaks.
        Status::UpgradeRequired => "Sec-WebSocket-Version: 13\r\n",
        // RFC 9110 section 15.5.6: the methods the target allows.
        Status::MethodNotAllowed => "Allow: DELETE\r\n",
        Status::GetOnly => "Allow: GET\r\n",
        Status::Allow(methods) => {
            allow = format!("Allow: {methods}\r\n");
            &allow
        }
        // RFC 6585 section 4 / RFC 9110 section 10.2.3: when to try again, seconds.
        Status::TooManyRequests => "Retry-After: 10\r\n",
        _ => "",
    };
    let _ = write!(
        out,
        "HTTP/1.1 {code} {reason}\r\n{challenge}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reason}\n",
        reason.len() + 1
    );
}

#[cfg(test)]
mod tests {
    use super::{delivered, edit, error, friends_delivered, html_escape, seed_chunk, Forward};

    #[test]
    fn lines_go_after_the_status_line() {
        let mut out =
            b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 409 Conflict\r\nContent-Length: 0\r\n\r\n".to_vec();
        super::insert_lines(&mut out, 19, b"A: 1\r\n");
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\n\r\nHTTP/1.1 409 Conflict\r\nA: 1\r\nContent-Length: 0\r\n\r\n"
        );
        let before = out.clone();
        super::insert_lines(&mut out, 0, b"");
        assert_eq!(out, before, "no lines: unchanged");
    }
    use crate::http::Status;

    #[test]
    fn chunk_exact_bytes() {
        let mut out = Vec::new();
        seed_chunk(&mut out, 1, b"Hello World", true);
        assert_eq!(out, b"21\r\nRecvd msg #1: 'Hello World'<br/>\n\r\n");
        let mut raw = Vec::new();
        seed_chunk(&mut raw, 12, b"x", false);
        assert_eq!(raw, b"Recvd msg #12: 'x'<br/>\n");
    }

    #[test]
    fn chunk_sizes_around_hex_digit_boundaries() {
        for len in [0usize, 1, 200, 240, 241, 4000, 4096, 65536] {
            let msg = vec![b'a'; len];
            let mut out = b"prefix".to_vec();
            seed_chunk(&mut out, 3, &msg, true);
            let body = &out[6..];
            let crlf = body.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&body[..crlf]).unwrap(), 16).unwrap();
            assert_eq!(body.len(), crlf + 2 + size + 2);
            assert_eq!(
                &body[crlf + 2..crlf + 2 + size],
                format!("Recvd msg #3: '{}'<br/>\n", "a".repeat(len)).as_bytes()
            );
        }
    }

    #[test]
    fn escapes() {
        let mut out = Vec::new();
        html_escape(&mut out, b"a&b<c>d\"e'f");
        assert_eq!(out, b"a&amp;b&lt;c&gt;d&quot;e&#39;f");
    }

    #[test]
    fn replies() {
        let mut out = Vec::new();
        delivered(&mut out, 2, Forward::Off, false);
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"delivered\":2}");
        let mut out = Vec::new();
        delivered(&mut out, 2, Forward::Dropped, true);
        assert!(out.ends_with(b"Connection: close\r\n\r\n{\"delivered\":2,\"scope\":\"node\",\"cluster\":\"dropped\"}"));
        let mut out = Vec::new();
        friends_delivered(&mut out, 3, 1, Forward::Queued, false);
        assert!(out.ends_with(
            b"\r\n\r\n{\"friends\":3,\"delivered\":1,\"scope\":\"node\",\"cluster\":\"queued\"}"
        ));
        let mut out = Vec::new();
        edit(&mut out, true, false, false);
        assert!(out.ends_with(b"\r\n\r\n{\"changed\":true}"));
        let mut out = Vec::new();
        edit(&mut out, true, true, false);
        assert!(out.starts_with(b"HTTP/1.1 500 "));
        let mut out = Vec::new();
        error(&mut out, Status::NotFound);
        assert!(out.starts_with(b"HTTP/1.1 404 Not Found\r\n"));
        assert!(out.ends_with(b"Connection: close\r\n\r\nNot Found\n"));
    }
}
