//! Answers from the publish listener: `POST /send/<id>` responses (`{"delivered":N}`) and
//! `GET /stats`. Nothing here trusts the server: bad answers are errors, never panics.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

/// Largest answer body accepted, bytes.
const MAX_BODY: usize = 1 << 20;

/// One complete HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    /// Bytes of the input it took (head and body).
    pub(crate) len: usize,
    /// Where its body starts in the input (the head's length).
    pub(crate) body_start: usize,
    /// Status code.
    pub(crate) status: u16,
    /// The `delivered` number of a JSON body, if there is one.
    pub(crate) delivered: Option<u64>,
    /// The server said `Connection: close`.
    pub(crate) close: bool,
}

/// Parses the answer at the start of `buf`: `Ok(None)` if more bytes are needed. Only
/// Content-Length bodies are accepted (the interface promises them).
pub(crate) fn parse_answer(buf: &[u8]) -> Result<Option<Answer>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > 16 * 1024 => bail!("answer head too long"),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => bail!("bad answer head: {e}"),
    };
    let mut body_len = None;
    let mut close = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
            body_len = Some(v.ok_or_else(|| anyhow!("bad Content-Length"))?);
        } else if h.name.eq_ignore_ascii_case("connection") {
            close = String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("close");
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("chunked answers are not expected from the publish listener");
        }
    }
    let body_len = body_len.ok_or_else(|| anyhow!("answer without Content-Length"))?;
    if body_len > MAX_BODY {
        bail!("answer body of {body_len} bytes");
    }
    if buf.len() < head_len + body_len {
        return Ok(None);
    }
    let body = &buf[head_len..head_len + body_len];
    Ok(Some(Answer {
        len: head_len + body_len,
        body_start: head_len,
        status: resp.code.unwrap_or(0),
        delivered: json_u64(body, "delivered"),
        close,
    }))
}

/// The unsigned integer value of `"key"` in a flat JSON object, if present.
pub(crate) fn json_u64(body: &[u8], key: &str) -> Option<u64> {
    let pat = format!("\"{key}\"");
    let at = body.windows(pat.len()).position(|w| w == pat.as_bytes())?;
    let rest = &body[at + pat.len()..];
    let rest = &rest[rest.iter().position(|b| !b.is_ascii_whitespace())?..];
    let rest = rest.strip_prefix(b":")?;
    let rest = &rest[rest.iter().position(|b| !b.is_ascii_whitespace())?..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    super::check::parse_u64(&rest[..digits])
}

/// Keys of `GET /stats` that the report shows.
pub(crate) const STATS_KEYS: [&str; 14] = [
    "connections",
    "rss_bytes",
    "messages_sent",
    "messages_delivered",
    "ids",
    "direct_slots_in_use",
    "slow_consumers_closed",
    "send_timeouts",
    "history_ids",
    "history_messages",
    "history_bytes",
    "history_evicted",
    "recoveries",
    "recoveries_failed",
];

/// Fetches `GET /stats` from `addr` (at most 2 s) and returns the [`STATS_KEYS`] it has.
pub(crate) fn fetch_stats(addr: SocketAddr) -> Result<Vec<(String, u64)>> {
    fetch_stats_keys(addr, &STATS_KEYS)
}

/// Fetches `GET /stats` from `addr` (at most 2 s) and returns those of `keys` it has.
pub(crate) fn fetch_stats_keys(addr: SocketAddr, keys: &[&str]) -> Result<Vec<(String, u64)>> {
    let timeout = Duration::from_secs(2);
    let deadline = Instant::now() + timeout;
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET /stats HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    let mut piece = [0u8; 4096];
    let answer = loop {
        if let Some(a) = parse_answer(&buf)? {
            break a;
        }
        if Instant::now() >= deadline {
            bail!("/stats: no complete answer in 2 s");
        }
        match s.read(&mut piece)? {
            0 => bail!("/stats: connection closed mid-answer"),
            n => buf.extend_from_slice(&piece[..n]),
        }
    };
    if answer.status != 200 {
        bail!("/stats: status {}", answer.status);
    }
    let body = &buf[answer.body_start..answer.len];
    Ok(keys
        .iter()
        .filter_map(|k| json_u64(body, k).map(|v| (k.to_string(), v)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::{json_u64, parse_answer};

    const OK: &[u8] =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"delivered\":1}";

    #[test]
    fn complete_partial_and_pipelined_answers() {
        let a = parse_answer(OK).unwrap().unwrap();
        assert_eq!(
            (a.len, a.status, a.delivered, a.close),
            (OK.len(), 200, Some(1), false)
        );
        assert_eq!(&OK[a.body_start..a.len], b"{\"delivered\":1}");
        for cut in 0..OK.len() {
            assert_eq!(parse_answer(&OK[..cut]).unwrap(), None, "cut at {cut}");
        }
        let two = [OK, OK].concat();
        assert_eq!(parse_answer(&two).unwrap().unwrap().len, OK.len());
        let closing = b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        let a = parse_answer(closing).unwrap().unwrap();
        assert_eq!((a.status, a.close, a.delivered), (503, true, None));
    }

    #[test]
    fn bad_answers_are_errors() {
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_answer(b"garbage\r\n\r\n").is_err());
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
    }

    #[test]
    fn json_numbers() {
        assert_eq!(json_u64(b"{\"delivered\": 12}", "delivered"), Some(12));
        assert_eq!(
            json_u64(b"{\"a\":1,\"rss_bytes\":4096}", "rss_bytes"),
            Some(4096)
        );
        assert_eq!(json_u64(b"{\"delivered\":\"x\"}", "delivered"), None);
        assert_eq!(json_u64(b"{}", "delivered"), None);
    }
}
