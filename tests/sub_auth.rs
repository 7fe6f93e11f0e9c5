//! Subscriber tokens (issue 15) against the real server on both backends, exact bytes: every
//! refusal (401 naming the reason in `WWW-Authenticate`, 403 naming the id), the three forms
//! a token comes in (header, query, cookie), a JWKS of two keys chosen by `kid`, prefixes in
//! `ids`, every subscriber route, and a stream ended at its token's `exp`.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use jsonwebtoken::{Algorithm, Header};
use uring_comet::auth::sign::{unix_now, Claims, Signer};

/// The keys of one test: an HS256 secret and a JWKS of an ES256 (`k-es`) and an EdDSA
/// (`k-ed`) key, written where the server reads them.
struct Keys {
    hs: Signer,
    es: Signer,
    ed: Signer,
    secret: PathBuf,
    jwks: PathBuf,
}

impl Keys {
    fn new(tag: &str) -> Keys {
        // Both backends' tests run at once in this process: a directory each.
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("uc-sub-auth-{}-{tag}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (hs, es, ed) = (
            Signer::generate("hs256", "").unwrap(),
            Signer::generate("es256", "k-es").unwrap(),
            Signer::generate("eddsa", "k-ed").unwrap(),
        );
        let key = |s: &Signer| {
            serde_json::from_slice::<serde_json::Value>(&s.server_file).unwrap()["keys"][0].clone()
        };
        let jwks = serde_json::json!({"keys": [key(&es), key(&ed)]}).to_string();
        let (secret, jwks_path) = (dir.join("secret"), dir.join("jwks.json"));
        std::fs::write(&secret, &hs.server_file).unwrap();
        std::fs::write(&jwks_path, jwks).unwrap();
        Keys {
            hs,
            es,
            ed,
            secret,
            jwks: jwks_path,
        }
    }

    /// `serve` with both key files and `flags`.
    fn serve(&self, flags: &[&str]) -> ChildServer {
        Serve::new()
            .shards(2)
            .env("RUST_LOG", "info")
            .args(["--sub-jwt-secret-file", self.secret.to_str().unwrap()])
            .args(["--sub-jwks-file", self.jwks.to_str().unwrap()])
            .args(flags)
            .spawn()
    }
}

/// Claims for user `sub` valid for ten minutes.
fn user(sub: &str) -> Claims {
    Claims {
        sub: Some(sub.into()),
        exp: Some(unix_now() + 600),
        ..Claims::default()
    }
}

/// A GET of `path` with `extra` header lines.
fn get(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").into_bytes()
}

/// Expects the exact 401 for `code` and `description` on `request` (with the default
/// `--cors-origin *` line, so a page on another origin can read it), and the close.
fn expect_401(addr: SocketAddr, request: &[u8], code: &str, description: &str) {
    let (head, body, _) = request_expect_close(addr, request);
    let text = format!("unauthorized: {description}\n");
    let want = format!("HTTP/1.1 401 Unauthorized\r\nAccess-Control-Allow-Origin: *\r\nWWW-Authenticate: Bearer realm=\"uring-comet\", error=\"{code}\", error_description=\"{description}\"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", text.len());
    assert_eq!(
        String::from_utf8_lossy(&head.raw),
        want,
        "request {:?}",
        truncate(request)
    );
    assert_eq!(String::from_utf8_lossy(&body), text);
}

/// Expects an SSE stream head on `path` with `extra`, then a published message on `id`.
fn expect_stream(srv: &ChildServer, path: &str, extra: &str, id: &str) {
    let (mut c, _) = sse_open(srv.subscriber, path, extra);
    c.read_chunk(); // the opening comment and cursor
    assert_eq!(publish(srv.publish, id, b"m1"), 1, "{path}: one subscriber");
    let chunk = c.read_chunk();
    assert!(
        String::from_utf8_lossy(&chunk).ends_with("data: m1\n\n"),
        "{path}: {chunk:?}"
    );
}

both_backends! {
/// Every way a token is refused: missing, malformed, `alg: none`, a bad signature, an
/// algorithm the key does not allow, an unknown `kid`, expired, `nbf` ahead, wrong `aud`
/// and `iss`; and an id the token does not cover (403 naming it).
fn each_refusal_names_its_reason() {
    let k = Keys::new("refusals");
    let srv = k.serve(&["--sub-jwt-aud", "comet", "--sub-jwt-iss", "auth.example"]);
    let s = srv.subscriber;
    let ok = Claims { aud: Some("comet".into()), iss: Some("auth.example".into()), ..user("u1") };
    let with = |t: &str| get(&format!("/sub/u1?token={t}"), "");
    expect_401(s, &get("/sub/u1", ""), "invalid_request", "no token (Authorization: Bearer, ?token= or the cookie)");
    expect_401(s, &with("not-a-jwt"), "invalid_token", "malformed token");
    expect_401(s, &with("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1MSJ9."), "invalid_token", "malformed token");
    let good = k.hs.sign(&ok);
    // One signature character changed (not the last, whose low bits are padding).
    let at = good.len() - 5;
    let swap = if &good[at..at + 1] == "A" { "B" } else { "A" };
    let forged = format!("{}{swap}{}", &good[..at], &good[at + 1..]);
    expect_401(s, &with(&forged), "invalid_token", "bad signature");
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k-es".into());
    expect_401(s, &with(&k.hs.sign_with(&h, &ok).unwrap()), "invalid_token", "algorithm not allowed for the key");
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("gone".into());
    expect_401(s, &with(&k.es.sign_with(&h, &ok).unwrap()), "invalid_token", "no key for the token's kid");
    let expired = Claims { exp: Some(unix_now() - 60), ..ok.clone() };
    expect_401(s, &with(&k.hs.sign(&expired)), "invalid_token", "token expired");
    let early = Claims { nbf: Some(unix_now() + 60), ..ok.clone() };
    expect_401(s, &with(&k.hs.sign(&early)), "invalid_token", "token not valid yet (nbf)");
    let aud = Claims { aud: Some("other".into()), ..ok.clone() };
    expect_401(s, &with(&k.hs.sign(&aud)), "invalid_token", "wrong audience");
    let iss = Claims { iss: Some("evil".into()), ..ok.clone() };
    expect_401(s, &with(&k.hs.sign(&iss)), "invalid_token", "wrong issuer");
    // A valid token that does not cover every id: 403 naming the first one it misses.
    let (head, body, _) = request_expect_close(s, &get(&format!("/sub/u1,u2?token={good}"), ""));
    assert_eq!(head.status, 403);
    head.expect_header_exact("access-control-allow-origin", "*");
    assert_eq!(String::from_utf8_lossy(&body), "forbidden: the token does not cover id u2\n");
    // A HEAD gets the same 401 head and no body (RFC 9110 section 9.3.2).
    let (head, body, _) = request_expect_close(s, b"HEAD /sub/u1 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(head.status, 401);
    head.expect_header_exact("content-length", &"unauthorized: no token (Authorization: Bearer, ?token= or the cookie)\n".len().to_string());
    assert!(body.is_empty(), "HEAD: no body, got {:?}", String::from_utf8_lossy(&body));
    // Every subscriber route checks: /test/, /poll/, a WebSocket upgrade.
    for path in ["/test/u1", "/poll/u1"] {
        expect_401(s, &get(path, ""), "invalid_request", "no token (Authorization: Bearer, ?token= or the cookie)");
    }
    let ws = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    expect_401(s, &get("/sub/u1", ws), "invalid_request", "no token (Authorization: Bearer, ?token= or the cookie)");
    let logged = wait_until(Duration::from_secs(2), || srv.stderr().contains("subscriber refused: no token"));
    assert!(logged, "the refusals are logged (one line a second at most): {}", srv.stderr());
}
}

both_backends! {
/// A token as `Authorization: Bearer`, as `?token=` and as the `--sub-token-cookie` cookie;
/// `sub` and a prefix entry of `ids` cover their ids; both JWKS keys verify, chosen by `kid`.
fn each_form_and_key_opens_a_stream() {
    let k = Keys::new("forms");
    let srv = k.serve(&["--sub-token-cookie", "uc_token"]);
    let claims = Claims { ids: vec!["room-*".into()], ..user("u1") };
    let t = k.hs.sign(&claims);
    expect_stream(&srv, "u1", &format!("Authorization: Bearer {t}\r\n"), "u1");
    expect_stream(&srv, &format!("room-6?token={t}"), "", "room-6");
    expect_stream(&srv, "room-7", &format!("Cookie: a=1; uc_token={t}; b=2\r\n"), "room-7");
    expect_stream(&srv, "room-8", &format!("Authorization: bearer {}\r\n", k.es.sign(&claims)), "room-8");
    expect_stream(&srv, "room-9", &format!("Authorization: Bearer {}\r\n", k.ed.sign(&claims)), "room-9");
}
}

both_backends! {
/// A stream whose token expires (leeway 0) ends by itself within about a second of `exp`,
/// with `event: expired` and then the last chunk; a WebSocket gets close 1008.
fn a_stream_ends_at_its_tokens_exp() {
    let k = Keys::new("exp");
    let srv = k.serve(&["--sub-jwt-leeway", "0s"]);
    let t = k.hs.sign(&Claims { exp: Some(unix_now() + 2), ..user("u1") });
    let (mut c, _) = sse_open(srv.subscriber, &format!("u1?token={t}"), "");
    c.read_chunk(); // the opening
    c.expect_bytes(&chunk(b"event: expired\ndata: token expired\n\n"), "the expired event");
    c.expect_bytes(b"0\r\n\r\n", "the last chunk");
    let (rest, _) = c.read_to_close();
    assert!(rest.is_empty(), "nothing after the last chunk: {rest:?}");
}
}

/// Nothing is refused with tokens off (the default): an id opens without a token.
#[test]
fn tokens_are_off_by_default() {
    let srv = Serve::new().shards(1).spawn();
    expect_stream(&srv, "u1", "", "u1");
}
