//! The signing side of subscriber tokens, for the load tester (`--sub-token`) and the tests:
//! a fresh key (an HS256 secret, or an ES256 or Ed25519 key pair), the file the server reads
//! it from (`--sub-jwt-secret-file` or a one-key JWKS for `--sub-jwks-file`), and tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::Serialize;

/// A signing key and what the server needs to verify it.
pub struct Signer {
    alg: Algorithm,
    key: EncodingKey,
    kid: Option<String>,
    /// The server's key file: the secret (HS256) or a JWKS (JSON text).
    pub server_file: Vec<u8>,
    /// Whether `server_file` is a JWKS (`--sub-jwks-file`) rather than a secret.
    pub is_jwks: bool,
}

/// Claims a test or load tester signs.
#[derive(Serialize, Default, Clone, Debug)]
pub struct Claims {
    /// `sub`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// `ids`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
    /// `exp`, Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// `nbf`, Unix seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// `aud`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// `iss`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

impl Signer {
    /// A fresh key for `alg`: `hs256`, `es256` or `eddsa`, with key id `kid` in the JWKS.
    /// Errors: another name; the system's random source failed.
    pub fn generate(alg: &str, kid: &str) -> anyhow::Result<Signer> {
        let rng = SystemRandom::new();
        let kid = Some(kid.to_string());
        match alg {
            "hs256" => {
                let mut secret = [0u8; 32];
                rng.fill(&mut secret)
                    .map_err(|_| anyhow::anyhow!("random"))?;
                let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
                Ok(Signer {
                    alg: Algorithm::HS256,
                    key: EncodingKey::from_secret(hex.as_bytes()),
                    kid: None,
                    server_file: hex.into_bytes(),
                    is_jwks: false,
                })
            }
            "es256" => {
                let alg = &ECDSA_P256_SHA256_FIXED_SIGNING;
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng)
                    .map_err(|_| anyhow::anyhow!("ES256 key generation"))?;
                let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng)
                    .map_err(|_| anyhow::anyhow!("ES256 key"))?;
                // Uncompressed point: 0x04 || X (32 bytes) || Y (32 bytes).
                let point = pair.public_key().as_ref();
                let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "alg": "ES256",
                    "kid": kid, "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                    "y": URL_SAFE_NO_PAD.encode(&point[33..65])});
                Ok(Signer {
                    alg: Algorithm::ES256,
                    key: EncodingKey::from_ec_der(pkcs8.as_ref()),
                    kid,
                    server_file: serde_json::json!({"keys": [jwk]}).to_string().into_bytes(),
                    is_jwks: true,
                })
            }
            "eddsa" => {
                let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|_| anyhow::anyhow!("Ed25519 key generation"))?;
                let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
                    .map_err(|_| anyhow::anyhow!("Ed25519 key"))?;
                let jwk = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
                    "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())});
                Ok(Signer {
                    alg: Algorithm::EdDSA,
                    key: EncodingKey::from_ed_der(pkcs8.as_ref()),
                    kid,
                    server_file: serde_json::json!({"keys": [jwk]}).to_string().into_bytes(),
                    is_jwks: true,
                })
            }
            other => anyhow::bail!("unknown token algorithm {other:?} (hs256, es256, eddsa)"),
        }
    }

    /// The server flag naming `path` as this key's file.
    pub fn server_flag(&self) -> &'static str {
        if self.is_jwks {
            "--sub-jwks-file"
        } else {
            "--sub-jwt-secret-file"
        }
    }

    /// A token with `claims`, signed by this key (header `alg`, and `kid` for a JWKS key).
    pub fn sign(&self, claims: &Claims) -> String {
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        encode(&header, claims, &self.key).expect("signing with a generated key")
    }

    /// A token with `claims` and any `header` (tests: a wrong `alg`, another `kid`).
    pub fn sign_with(
        &self,
        header: &Header,
        claims: &Claims,
    ) -> jsonwebtoken::errors::Result<String> {
        encode(header, claims, &self.key)
    }
}

/// Now, Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
