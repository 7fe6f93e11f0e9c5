//! Subscriber tokens (sans-IO): who may open a stream on which ids.
//!
//! Off unless `--sub-jwt-secret-file` or `--sub-jwks-file` is given. A token is a JWT
//! (RFC 7519) signed with HS256/384/512 (the secret file) or with a public key of the JWKS
//! file (RFC 7517: RS256, ES256, EdDSA, chosen by the header's `kid`, or the only key of its
//! kind when the token names none). Verification is the `jsonwebtoken` crate's; this module
//! picks the key, refuses an algorithm the key does not allow (`alg: none` never parses),
//! and reads the claims:
//! - `sub`: the user's own id, always allowed;
//! - `ids`: ids the token may subscribe to; an entry ending in `*` is a prefix;
//! - `exp`, `nbf`: checked with `--sub-jwt-leeway` (default 5 s); `aud` and `iss` when
//!   `--sub-jwt-aud` / `--sub-jwt-iss` are set.
//!
//! The token is read once, from the request head (see [`crate::http::request::SubRequest`]):
//! `Authorization: Bearer`, else the `token` query parameter (EventSource cannot set a
//! header), else the cookie named by `--sub-token-cookie`. A missing or invalid token is
//! answered 401 with `WWW-Authenticate: Bearer error="...", error_description="..."` (RFC
//! 6750 section 3), a valid one that does not cover an id 403 naming the id. The shard ends
//! a stream at its token's `exp` (`shard/expiry.rs`).
//!
//! # Files
//! - `keys`: the settings (`serve` flags) and loading the key files.
//! - `sign`: the signing side, for the load tester and the tests.

mod keys;
pub mod sign;

use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::http::request::SubRequest;
use crate::id::Id;

pub use keys::SubAuthArgs;

/// Why a subscriber's token was refused (401), as named in `WWW-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No token in the header, the query or the cookie.
    Missing,
    /// The token is not three base64url parts of JSON, or its header names an unknown
    /// algorithm (`none` included).
    Malformed,
    /// The header's algorithm is not one the chosen key verifies.
    WrongAlgorithm,
    /// No key of the JWKS has the header's `kid` (or none fits a token without one).
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// Past `exp` (plus the leeway).
    Expired,
    /// Before `nbf` (less the leeway).
    NotYetValid,
    /// `aud` is not `--sub-jwt-aud`.
    WrongAudience,
    /// `iss` is not `--sub-jwt-iss`.
    WrongIssuer,
    /// A claim has the wrong type (`ids` not an array of strings, `exp` not a number).
    BadClaims,
}

impl Refusal {
    /// The RFC 6750 error code: `invalid_request` for a missing token, else `invalid_token`.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Missing => "invalid_request",
            _ => "invalid_token",
        }
    }

    /// The human-readable reason (`error_description`).
    pub fn describe(&self) -> &'static str {
        match self {
            Refusal::Missing => "no token (Authorization: Bearer, ?token= or the cookie)",
            Refusal::Malformed => "malformed token",
            Refusal::WrongAlgorithm => "algorithm not allowed for the key",
            Refusal::UnknownKey => "no key for the token's kid",
            Refusal::BadSignature => "bad signature",
            Refusal::Expired => "token expired",
            Refusal::NotYetValid => "token not valid yet (nbf)",
            Refusal::WrongAudience => "wrong audience",
            Refusal::WrongIssuer => "wrong issuer",
            Refusal::BadClaims => "bad claims",
        }
    }
}

/// What a valid token allows: its `sub`, its `ids` (`*`-suffixed entries are prefixes) and
/// its `exp` (Unix seconds), if any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Grant {
    /// The user's own id (`sub`).
    #[serde(default)]
    pub sub: Option<String>,
    /// Further ids (`ids`).
    #[serde(default)]
    pub ids: Vec<String>,
    /// Expiry, Unix seconds (`exp`).
    #[serde(default)]
    pub exp: Option<u64>,
}

impl Grant {
    /// Whether the token may subscribe to `id` (its bytes as in the URL, decoded): `sub`
    /// itself, an entry of `ids`, or an entry `p*` of which `id` starts with `p`.
    pub fn covers(&self, id: &[u8]) -> bool {
        if self.sub.as_deref().is_some_and(|s| s.as_bytes() == id) {
            return true;
        }
        self.ids.iter().any(|e| match e.strip_suffix('*') {
            Some(prefix) => id.starts_with(prefix.as_bytes()),
            None => e.as_bytes() == id,
        })
    }
}

/// A key and the algorithms it verifies.
struct Key {
    kid: Option<String>,
    algs: Vec<Algorithm>,
    key: DecodingKey,
}

/// The subscriber-token checker of one server, built once at start from the `serve` flags
/// ([`SubAuthArgs::verifier`]) and shared by every shard.
pub struct Verifier {
    keys: Vec<Key>,
    aud: Option<String>,
    iss: Option<String>,
    leeway_s: u64,
    cookie: Option<String>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.len())
            .field("aud", &self.aud)
            .field("iss", &self.iss)
            .field("leeway_s", &self.leeway_s)
            .field("cookie", &self.cookie)
            .finish()
    }
}

impl Verifier {
    /// The leeway on `exp` and `nbf`, seconds (`--sub-jwt-leeway`).
    pub fn leeway_s(&self) -> u64 {
        self.leeway_s
    }

    /// The cookie name to read a token from (`--sub-token-cookie`), if any.
    pub fn cookie(&self) -> Option<&str> {
        self.cookie.as_deref()
    }

    /// Verifies `token` (the compact JWS form): the key chosen by `kid` and algorithm, the
    /// signature, `exp`/`nbf` against the clock with the leeway, `aud` and `iss` when set.
    pub fn verify(&self, token: &str) -> Result<Grant, Refusal> {
        let header = decode_header(token).map_err(|_| Refusal::Malformed)?;
        let key = self.key_for(header.kid.as_deref(), header.alg)?;
        let mut v = Validation::new(header.alg);
        v.algorithms = vec![header.alg];
        v.leeway = self.leeway_s;
        v.validate_nbf = true;
        v.required_spec_claims.clear();
        v.validate_aud = self.aud.is_some();
        if let Some(aud) = &self.aud {
            v.set_audience(&[aud]);
        }
        if let Some(iss) = &self.iss {
            v.set_issuer(&[iss]);
        }
        decode::<Grant>(token, &key.key, &v)
            .map(|d| d.claims)
            .map_err(|e| refusal(e.kind()))
    }

    /// The key for a token signed with `alg` naming `kid`: the key with that `kid` (which
    /// must allow `alg`), else a key without one that allows `alg` (the secret); without a
    /// `kid`, the first key that allows `alg`.
    fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Result<&Key, Refusal> {
        if let Some(kid) = kid {
            if let Some(k) = self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
                return k
                    .algs
                    .contains(&alg)
                    .then_some(k)
                    .ok_or(Refusal::WrongAlgorithm);
            }
            let unnamed = self.keys.iter().filter(|k| k.kid.is_none());
            return unnamed
                .into_iter()
                .find(|k| k.algs.contains(&alg))
                .ok_or(Refusal::UnknownKey);
        }
        self.keys
            .iter()
            .find(|k| k.algs.contains(&alg))
            .ok_or(Refusal::WrongAlgorithm)
    }
}

/// Why a subscriber request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// 401: no valid token.
    Unauthorized(Refusal),
    /// 403: a valid token that does not cover this id.
    Forbidden(Id),
}

impl Verifier {
    /// Checks subscriber request `req`: its token (the header or query form, else the
    /// `--sub-token-cookie` cookie) must verify and cover every id. Returns the token's
    /// `exp` (Unix seconds), if any. A preflight needs no token.
    pub fn check(&self, req: &SubRequest) -> Result<Option<u64>, Denial> {
        if req.preflight {
            return Ok(None);
        }
        let cookie = self.cookie().and_then(|name| {
            let header = req.cookie.as_deref()?;
            cookie_value(header, name)
        });
        let token = req.token.as_deref().or(cookie);
        let token = token.ok_or(Denial::Unauthorized(Refusal::Missing))?;
        let grant = self.verify(token).map_err(Denial::Unauthorized)?;
        if let Some(id) = req
            .ids
            .iter()
            .find(|id| !grant.covers(id.to_string().as_bytes()))
        {
            return Err(Denial::Forbidden(id.clone()));
        }
        Ok(grant.exp)
    }
}

/// The value of cookie `name` in a `Cookie` header (`a=1; b=2`, RFC 6265 section 5.4).
fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then(|| v.trim_matches('"'))
    })
}

/// The refusal for one of the crate's errors.
fn refusal(kind: &jsonwebtoken::errors::ErrorKind) -> Refusal {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidSignature => Refusal::BadSignature,
        K::ExpiredSignature => Refusal::Expired,
        K::ImmatureSignature => Refusal::NotYetValid,
        K::InvalidAudience => Refusal::WrongAudience,
        K::InvalidIssuer => Refusal::WrongIssuer,
        K::InvalidAlgorithm | K::MissingAlgorithm => Refusal::WrongAlgorithm,
        K::Json(_) | K::MissingRequiredClaim(_) => Refusal::BadClaims,
        _ => Refusal::Malformed,
    }
}

#[cfg(test)]
mod tests;
