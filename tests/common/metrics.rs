//! `/metrics`, `/healthz` and `/readyz` as the tests see them: one request on a fresh
//! connection (`Connection: close`), the exposition parsed strictly (every line must be a
//! HELP, TYPE or sample line that prometheus-parse recognises, so a line it would skip fails
//! the test) and checked by `promtool check metrics`.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use prometheus_parse::{LineInfo, Scrape, Value};

use super::client::request_expect_close;
use super::http::Head;

/// `GET path` on a fresh connection to `addr` (with `Authorization: Bearer token` if given);
/// the head and the body (read to the close).
pub(crate) fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (Head, String) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n");
    let (head, body, _) = request_expect_close(addr, req.as_bytes());
    let body = String::from_utf8(body).expect("body not UTF-8");
    if let Some(n) = head.header("content-length") {
        assert_eq!(
            n.parse::<usize>().unwrap(),
            body.len(),
            "Content-Length of {path}"
        );
    }
    (head, body)
}

/// The status and body of `/readyz` (or another probe) at `addr`.
pub(crate) fn probe(addr: SocketAddr, path: &str) -> (u16, String) {
    let (head, body) = get(addr, path, None);
    (head.status, body)
}

/// `GET /metrics` at `addr`: 200, the Prometheus text format's Content-Type, and its text.
pub(crate) fn metrics_text(addr: SocketAddr, token: Option<&str>) -> String {
    let (head, body) = get(addr, "/metrics", token);
    head.expect_200();
    head.expect_header_exact("content-type", "text/plain; version=0.0.4; charset=utf-8");
    body
}

/// Parses an exposition strictly: every non-empty line is HELP, TYPE or a sample.
pub(crate) fn parse_strict(text: &str) -> Scrape {
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let ok = match LineInfo::parse(line) {
            LineInfo::Doc { .. } | LineInfo::Type { .. } => line.starts_with("# "),
            LineInfo::Sample { value, .. } => value.parse::<f64>().is_ok() || value == "+Inf",
            _ => false,
        };
        assert!(ok, "not a HELP, TYPE or sample line: {line:?}");
    }
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("exposition parses")
}

/// Runs `promtool check metrics` on `text`; panics with its output unless it is clean.
pub(crate) fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool not found: scripts/test-deps.sh installs Debian's `prometheus`");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A sample's value (counter, gauge or untyped).
pub(crate) fn value(v: &Value) -> f64 {
    match v {
        Value::Counter(x) | Value::Gauge(x) | Value::Untyped(x) => *x,
        other => panic!("not a single-valued sample: {other:?}"),
    }
}

/// The sum of every sample of `name` whose labels include each of `labels`.
pub(crate) fn sum(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let hits: Vec<f64> = s
        .samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| value(&x.value))
        .collect();
    assert!(!hits.is_empty(), "no sample {name} {labels:?}");
    hits.iter().sum()
}
