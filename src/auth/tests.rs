//! Every token case against real keys: the secret and a JWKS of two keys chosen by `kid`.

use std::path::PathBuf;

use jsonwebtoken::{Algorithm, Header};

use super::sign::{unix_now, Claims, Signer};
use super::{Grant, Refusal, SubAuthArgs, Verifier};

/// Writes `bytes` to a fresh file under the temp dir.
fn file(name: &str, bytes: &[u8]) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("uc-auth-{}-{n}-{name}", std::process::id()));
    std::fs::write(&dir, bytes).unwrap();
    dir
}

/// A verifier for an HS256 secret and a JWKS holding an ES256 and an EdDSA key.
fn setup(tune: impl FnOnce(&mut SubAuthArgs)) -> (Verifier, Signer, Signer, Signer) {
    let hs = Signer::generate("hs256", "").unwrap();
    let es = Signer::generate("es256", "k-es").unwrap();
    let ed = Signer::generate("eddsa", "k-ed").unwrap();
    let es_set: serde_json::Value = serde_json::from_slice(&es.server_file).unwrap();
    let ed_set: serde_json::Value = serde_json::from_slice(&ed.server_file).unwrap();
    let jwks = serde_json::json!({"keys": [es_set["keys"][0], ed_set["keys"][0]]});
    let mut args = SubAuthArgs {
        sub_jwt_secret_file: Some(file("secret", &hs.server_file).display().to_string()),
        sub_jwks_file: Some(
            file("jwks", jwks.to_string().as_bytes())
                .display()
                .to_string(),
        ),
        sub_jwt_leeway: std::time::Duration::from_secs(5),
        ..SubAuthArgs::default()
    };
    tune(&mut args);
    let v = args.verifier().unwrap().unwrap();
    let v = std::sync::Arc::try_unwrap(v).unwrap();
    (v, hs, es, ed)
}

fn claims(sub: &str) -> Claims {
    Claims {
        sub: Some(sub.into()),
        exp: Some(unix_now() + 600),
        ..Claims::default()
    }
}

#[test]
fn each_key_verifies_its_own_tokens() {
    let (v, hs, es, ed) = setup(|_| {});
    for s in [&hs, &es, &ed] {
        let g = v.verify(&s.sign(&claims("u1"))).unwrap();
        assert_eq!(g.sub.as_deref(), Some("u1"));
    }
}

#[test]
fn refusals_name_the_reason() {
    let (v, hs, es, _) = setup(|_| {});
    assert_eq!(v.verify("abc"), Err(Refusal::Malformed));
    // alg none: three parts, unsigned.
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1MSJ9.";
    assert_eq!(v.verify(none), Err(Refusal::Malformed));
    // One signature character changed (not the last, whose low bits are padding).
    let mut t = hs.sign(&claims("u1")).into_bytes();
    let k = t.len() - 5;
    t[k] = if t[k] == b'A' { b'B' } else { b'A' };
    let t = String::from_utf8(t).unwrap();
    assert_eq!(v.verify(&t), Err(Refusal::BadSignature));
    let expired = Claims {
        exp: Some(unix_now() - 60),
        ..claims("u1")
    };
    assert_eq!(v.verify(&hs.sign(&expired)), Err(Refusal::Expired));
    let early = Claims {
        nbf: Some(unix_now() + 60),
        ..claims("u1")
    };
    assert_eq!(v.verify(&hs.sign(&early)), Err(Refusal::NotYetValid));
    // An ES256 token naming a kid nobody has.
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("nobody".into());
    let t = es.sign_with(&h, &claims("u1")).unwrap();
    assert_eq!(v.verify(&t), Err(Refusal::UnknownKey));
    // The EdDSA key's kid on an ES256 token: the key does not verify that algorithm.
    h.kid = Some("k-ed".into());
    let t = es.sign_with(&h, &claims("u1")).unwrap();
    assert_eq!(v.verify(&t), Err(Refusal::WrongAlgorithm));
}

#[test]
fn within_the_leeway_a_token_still_counts() {
    let (v, hs, _, _) = setup(|_| {});
    let just = Claims {
        exp: Some(unix_now() - 2),
        ..claims("u1")
    };
    assert!(v.verify(&hs.sign(&just)).is_ok());
}

#[test]
fn audience_and_issuer_are_checked_when_set() {
    let (v, hs, _, _) = setup(|a| {
        a.sub_jwt_aud = Some("comet".into());
        a.sub_jwt_iss = Some("auth.example".into());
    });
    let good = Claims {
        aud: Some("comet".into()),
        iss: Some("auth.example".into()),
        ..claims("u1")
    };
    assert!(v.verify(&hs.sign(&good)).is_ok());
    let aud = Claims {
        aud: Some("other".into()),
        ..good.clone()
    };
    assert_eq!(v.verify(&hs.sign(&aud)), Err(Refusal::WrongAudience));
    let iss = Claims {
        iss: Some("evil".into()),
        ..good
    };
    assert_eq!(v.verify(&hs.sign(&iss)), Err(Refusal::WrongIssuer));
}

#[test]
fn a_grant_covers_sub_ids_and_prefixes() {
    let g = Grant {
        sub: Some("u1".into()),
        ids: vec!["room-7".into(), "team-*".into()],
        exp: None,
    };
    for yes in ["u1", "room-7", "team-", "team-blue"] {
        assert!(g.covers(yes.as_bytes()), "{yes}");
    }
    for no in ["u2", "room-71", "room-", "tea", "u1x"] {
        assert!(!g.covers(no.as_bytes()), "{no}");
    }
}

#[test]
fn options_without_a_key_are_refused() {
    let args = SubAuthArgs {
        sub_jwt_aud: Some("x".into()),
        ..SubAuthArgs::default()
    };
    assert!(args.verifier().is_err());
    assert!(SubAuthArgs::default().verifier().unwrap().is_none());
}
