//! A response head as the tests see it: [`parse_head`] checks the status line and every
//! header line strictly (RFC 9112 section 4 and 5: `HTTP/1.1 NNN reason`, `name: value`,
//! CRLF line ends, no bare CR or LF) and [`Head`] answers questions about the fields.

/// A parsed response head.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    /// The status line without CRLF, e.g. `HTTP/1.1 200 OK`.
    pub(crate) status_line: String,
    /// The status code of the status line.
    pub(crate) status: u16,
    /// Header fields in order received; names as sent.
    pub(crate) headers: Vec<(String, String)>,
    /// The raw head bytes including the final CRLFCRLF.
    pub(crate) raw: Vec<u8>,
}

impl Head {
    /// The value of header `name` (case-insensitive); panics if it appears more than once.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        let mut found = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name));
        let first = found.next().map(|(_, v)| v.as_str());
        assert!(
            found.next().is_none(),
            "header {name} appears more than once in {self:?}"
        );
        first
    }

    /// Asserts that header `name` is present with `value` (value compared ASCII-case-insensitively,
    /// as media types, charsets and transfer codings are).
    pub(crate) fn expect_header(&self, name: &str, value: &str) {
        match self.header(name) {
            Some(v) if v.eq_ignore_ascii_case(value) => {}
            other => panic!(
                "expected header `{name}: {value}`, got {other:?}; head:\n{}",
                String::from_utf8_lossy(&self.raw)
            ),
        }
    }

    /// Asserts the status line is exactly `HTTP/1.1 200 OK`.
    pub(crate) fn expect_200(&self) {
        assert_eq!(
            self.status_line,
            "HTTP/1.1 200 OK",
            "head:\n{}",
            String::from_utf8_lossy(&self.raw)
        );
    }

    /// Asserts the status line is `HTTP/1.1 <code> <any reason>`.
    pub(crate) fn expect_status(&self, code: u16) {
        assert!(
            self.status_line.starts_with(&format!("HTTP/1.1 {code}"))
                && self
                    .status_line
                    .as_bytes()
                    .get(12)
                    .is_none_or(|&b| b == b' '),
            "expected status {code}, got status line {:?}; head:\n{}",
            self.status_line,
            String::from_utf8_lossy(&self.raw)
        );
        assert_eq!(self.status, code);
    }

    /// Asserts that header `name` is absent.
    pub(crate) fn expect_no_header(&self, name: &str) {
        assert!(
            self.header(name).is_none(),
            "header {name} must not be sent; head:\n{}",
            String::from_utf8_lossy(&self.raw)
        );
    }

    /// Asserts the header value exactly (case-sensitive: for values that are not tokens).
    pub(crate) fn expect_header_exact(&self, name: &str, value: &str) {
        assert_eq!(
            self.header(name),
            Some(value),
            "header {name}; head:\n{}",
            String::from_utf8_lossy(&self.raw)
        );
    }
}

/// The first position of `needle` in `hay`.
pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses a raw response head (status line, header fields, CRLFCRLF).
pub(crate) fn parse_head(raw: &[u8]) -> Head {
    let text = std::str::from_utf8(raw).unwrap_or_else(|_| {
        panic!(
            "response head is not UTF-8: {:?}",
            String::from_utf8_lossy(raw)
        )
    });
    let body = text
        .strip_suffix("\r\n\r\n")
        .expect("head must end with CRLFCRLF");
    let mut lines = body.split("\r\n");
    let status_line = lines.next().unwrap().to_string();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    assert_eq!(version, "HTTP/1.1", "bad status line {status_line:?}");
    let code = parts.next().unwrap_or("");
    assert!(code.len() == 3, "bad status code in {status_line:?}");
    let status: u16 = code
        .parse()
        .unwrap_or_else(|_| panic!("bad status line {status_line:?}"));
    let mut headers = Vec::new();
    for line in lines {
        assert!(
            !line.contains('\n') && !line.contains('\r'),
            "bare CR/LF in head: {text:?}"
        );
        let (name, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("header line without colon: {line:?} in {text:?}"));
        assert!(
            !name.is_empty() && !name.contains(' ') && !name.contains('\t'),
            "bad header name {name:?} in {text:?}"
        );
        headers.push((
            name.to_string(),
            value.trim_matches(|c| c == ' ' || c == '\t').to_string(),
        ));
    }
    Head {
        status_line,
        status,
        headers,
        raw: raw.to_vec(),
    }
}
