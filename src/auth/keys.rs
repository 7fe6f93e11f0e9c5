//! The subscriber-token flags of `serve` and the key files they name.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::{Key, Verifier};

/// `serve` flags for subscriber tokens (README: Subscriber tokens). Each doc line is its
/// `--help`.
#[derive(Args, Debug, Clone, Default)]
pub struct SubAuthArgs {
    /// Require a JWT on every subscriber route, HS256/384/512 signed with the secret in this
    /// file (its bytes, one trailing newline removed). Off by default: anyone who reaches
    /// the subscriber listener can open any id.
    #[arg(long, value_name = "FILE")]
    pub sub_jwt_secret_file: Option<String>,
    /// Require a JWT signed by a key of this JWKS file (RFC 7517: RSA for RS256, P-256 for
    /// ES256, Ed25519 for EdDSA), chosen by the token's `kid`.
    #[arg(long, value_name = "FILE")]
    pub sub_jwks_file: Option<String>,
    /// With tokens on: the `aud` a token must carry.
    #[arg(long, value_name = "AUD")]
    pub sub_jwt_aud: Option<String>,
    /// With tokens on: the `iss` a token must carry.
    #[arg(long, value_name = "ISS")]
    pub sub_jwt_iss: Option<String>,
    /// Clock skew allowed on `exp` and `nbf` (`5s`, `1m`).
    #[arg(long, default_value = "5s", value_parser = crate::duration::parse_duration)]
    pub sub_jwt_leeway: Duration,
    /// With tokens on: also read the token from this cookie (after the `Authorization`
    /// header and the `token` query parameter).
    #[arg(long, value_name = "NAME")]
    pub sub_token_cookie: Option<String>,
}

impl SubAuthArgs {
    /// The verifier these flags ask for: `None` when neither key file is given.
    ///
    /// Errors: a key file cannot be read, the secret is empty, the JWKS is not JSON or holds
    /// no usable key (an RSA, P-256 or Ed25519 public key), or `aud`/`iss`/the cookie name
    /// are given without a key file. An empty path or name counts as not given (a config
    /// file's `""`).
    pub fn verifier(&self) -> anyhow::Result<Option<Arc<Verifier>>> {
        let mut keys = Vec::new();
        let mut warm_secret = None;
        let set = |p: &Option<String>| p.clone().filter(|p| !p.is_empty()).map(PathBuf::from);
        let text = |t: &Option<String>| t.clone().filter(|t| !t.is_empty());
        let (aud, iss, cookie) = (
            text(&self.sub_jwt_aud),
            text(&self.sub_jwt_iss),
            text(&self.sub_token_cookie),
        );
        if let Some(path) = &set(&self.sub_jwt_secret_file) {
            let mut secret = std::fs::read(path)
                .with_context(|| format!("--sub-jwt-secret-file {}", path.display()))?;
            if secret.last() == Some(&b'\n') {
                secret.pop();
            }
            if secret.is_empty() {
                bail!(
                    "--sub-jwt-secret-file {}: the secret is empty",
                    path.display()
                );
            }
            keys.push(Key {
                kid: None,
                algs: vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
                key: DecodingKey::from_secret(&secret),
            });
            warm_secret = Some(secret);
        }
        if let Some(path) = &set(&self.sub_jwks_file) {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--sub-jwks-file {}", path.display()))?;
            let set: JwkSet = serde_json::from_str(&text)
                .with_context(|| format!("--sub-jwks-file {}: not a JWKS", path.display()))?;
            let before = keys.len();
            for jwk in &set.keys {
                let Some(algs) = jwk_algorithms(jwk) else {
                    continue;
                };
                let key = DecodingKey::from_jwk(jwk)
                    .with_context(|| format!("--sub-jwks-file {}: a bad key", path.display()))?;
                let kid = jwk.common.key_id.clone();
                keys.push(Key { kid, algs, key });
            }
            if keys.len() == before {
                bail!(
                    "--sub-jwks-file {}: no RSA, P-256 or Ed25519 public key",
                    path.display()
                );
            }
        }
        if keys.is_empty() {
            if aud.is_some() || iss.is_some() || cookie.is_some() {
                bail!("--sub-jwt-aud, --sub-jwt-iss and --sub-token-cookie need --sub-jwt-secret-file or --sub-jwks-file");
            }
            return Ok(None);
        }
        let v = Verifier {
            keys,
            aud,
            iss,
            leeway_s: self.sub_jwt_leeway.as_secs(),
            cookie,
        };
        v.warm_up(warm_secret.as_deref());
        Ok(Some(Arc::new(v)))
    }
}

impl Verifier {
    /// Runs the verification once per key at start, so its code (base64, JSON, HMAC and the
    /// signature schemes: a few hundred KiB of the binary, file-backed pages) is resident
    /// before the first subscriber rather than faulted in by it: at 10,000 subscribers those
    /// pages read as +25-40 B of RSS per subscriber in the main job (session 5; the
    /// anonymous memory grew by 5.6 B). The HS secret signs a real token (the whole path,
    /// claims included); a JWKS key gets one with a wrong signature (up to its check).
    fn warm_up(&self, secret: Option<&[u8]>) {
        if let Some(secret) = secret {
            let claims = serde_json::json!({"sub": "0", "ids": ["0*"]});
            let key = jsonwebtoken::EncodingKey::from_secret(secret);
            if let Ok(t) = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key) {
                let _ = self.verify(&t);
            }
        }
        for k in &self.keys {
            let alg = format!("{:?}", k.algs[0]);
            let kid = k
                .kid
                .as_deref()
                .map_or(String::new(), |kid| format!(",\"kid\":{kid:?}"));
            let header = format!("{{\"alg\":\"{alg}\"{kid}}}");
            let b64 = |s: &[u8]| {
                base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, s)
            };
            let t = format!(
                "{}.{}.{}",
                b64(header.as_bytes()),
                b64(b"{}"),
                b64(&[7; 64])
            );
            let _ = self.verify(&t);
        }
    }
}

/// The algorithms a JWKS key verifies: its `alg` if given (and of its kind), else its kind's
/// (RSA: RS256; P-256: ES256; Ed25519: EdDSA). `None` for a key of another kind (a
/// symmetric `oct` key in a public key set is ignored, never used as an HMAC secret).
fn jwk_algorithms(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Vec<Algorithm>> {
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    let named = match jwk.common.key_algorithm {
        None => None,
        Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
        Some(KeyAlgorithm::RS384) => Some(Algorithm::RS384),
        Some(KeyAlgorithm::RS512) => Some(Algorithm::RS512),
        Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
        Some(KeyAlgorithm::EdDSA) => Some(Algorithm::EdDSA),
        Some(_) => return None,
    };
    match named {
        Some(a) if family(a) == family(kind) => Some(vec![a]),
        Some(_) => None,
        None => Some(vec![kind]),
    }
}

/// The key kind an algorithm needs.
fn family(a: Algorithm) -> u8 {
    match a {
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => 1,
        Algorithm::ES256 | Algorithm::ES384 => 2,
        Algorithm::EdDSA => 3,
        _ => 0,
    }
}
