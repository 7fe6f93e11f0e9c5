//! URL templates such as `http://127.0.0.1:8000/test/{id}`: the address to connect to, the
//! Host header, and the request path with `{id}` filled in. A template without `{id}` names
//! one URL for every connection (a room: every subscriber under that one id).

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{anyhow, bail, Context, Result};

/// A parsed `http://HOST:PORT/PATH` template whose path holds `{id}` at most once.
#[derive(Debug, Clone)]
pub(crate) struct UrlTemplate {
    /// Where to connect (the first address HOST resolves to).
    pub(crate) addr: SocketAddr,
    /// `HOST:PORT` as written, for the Host header.
    pub(crate) host: String,
    /// The path before `{id}`.
    prefix: String,
    /// The path after `{id}`.
    suffix: String,
    /// Whether the path holds `{id}` (false: every id gets the same path, `prefix`).
    has_id: bool,
}

impl UrlTemplate {
    /// Parses a template; the port defaults to 80. Errors: not `http://`, no path, `{id}`
    /// twice, a host that does not resolve.
    pub(crate) fn parse(template: &str) -> Result<UrlTemplate> {
        let rest = template
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("URL template must start with http://: {template:?}"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => bail!("URL template has no path: {template:?}"),
        };
        let (prefix, suffix) = path.split_once("{id}").unwrap_or((path, ""));
        if suffix.contains("{id}") {
            bail!("URL template has {{id}} twice: {template:?}");
        }
        let with_port = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host.to_string()
        } else {
            format!("{host}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .with_context(|| format!("resolving {host:?}"))?
            .next()
            .ok_or_else(|| anyhow!("{host:?} resolves to no address"))?;
        Ok(UrlTemplate {
            addr,
            host: host.to_string(),
            prefix: prefix.to_string(),
            suffix: suffix.to_string(),
            has_id: path.contains("{id}"),
        })
    }

    /// Whether the path holds `{id}` (false: every connection requests the one path).
    pub(crate) fn has_id(&self) -> bool {
        self.has_id
    }

    /// A template for `path` (holding `{id}`) on a known address.
    pub(crate) fn local(addr: SocketAddr, path: &str) -> Result<UrlTemplate> {
        UrlTemplate::parse(&format!("http://{addr}{path}"))
    }

    /// Appends the request line and Host header for `id` (`METHOD PATH HTTP/1.1\r\nHost:
    /// ...\r\n`), leaving the head open for more headers.
    pub(crate) fn write_request_start(&self, out: &mut Vec<u8>, method: &str, id: u64) {
        self.write_request_start_with(out, method, id, |_| {});
    }

    /// As [`write_request_start`](Self::write_request_start), with `query` appending more
    /// of the request target after the template's path (e.g. `&last_event_id=...`).
    pub(crate) fn write_request_start_with(
        &self,
        out: &mut Vec<u8>,
        method: &str,
        id: u64,
        query: impl FnOnce(&mut Vec<u8>),
    ) {
        // Writing to a Vec cannot fail.
        let _ = if self.has_id {
            write!(out, "{method} {}{id}{}", self.prefix, self.suffix)
        } else {
            write!(out, "{method} {}", self.prefix)
        };
        query(out);
        let _ = write!(out, " HTTP/1.1\r\nHost: {}\r\n", self.host);
    }
}

#[cfg(test)]
mod tests {
    use super::UrlTemplate;

    #[test]
    fn parses_and_fills_in() {
        let t = UrlTemplate::parse("http://127.0.0.1:8000/test/{id}").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8000".parse().unwrap());
        let mut out = Vec::new();
        t.write_request_start(&mut out, "GET", 42);
        assert_eq!(out, b"GET /test/42 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n");
        let t = UrlTemplate::parse("http://127.0.0.1:8000/sub/{id}?cursors=1").unwrap();
        out.clear();
        t.write_request_start_with(&mut out, "GET", 7, |q| q.extend_from_slice(b"&x=1"));
        assert_eq!(
            out,
            b"GET /sub/7?cursors=1&x=1 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
        );
        let t = UrlTemplate::parse("http://127.0.0.1/a/{id}/b").unwrap();
        assert_eq!(t.addr.port(), 80);
        assert!(UrlTemplate::parse("https://127.0.0.1/{id}").is_err());
        assert!(t.has_id());
        // Without `{id}`: one path for every id (a room).
        let t = UrlTemplate::parse("http://127.0.0.1:8000/sub/room?cursors=1").unwrap();
        assert!(!t.has_id());
        out.clear();
        t.write_request_start(&mut out, "GET", 9);
        assert_eq!(
            out,
            b"GET /sub/room?cursors=1 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
        );
        assert!(UrlTemplate::parse("http://127.0.0.1/{id}/{id}").is_err());
        assert!(UrlTemplate::parse("http://127.0.0.1:8000").is_err());
        assert!(UrlTemplate::local("127.0.0.1:9".parse().unwrap(), "/send/{id}").is_ok());
    }
}
