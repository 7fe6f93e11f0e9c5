//! `loadtest --sub-token ALG`: a fresh key, the server flag that makes the server require
//! tokens signed by it, and one token per subscriber, signed before the connect phase so
//! the connect rate measures the server's verification, not the load tester's signing.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};

use super::say;
use crate::auth::sign::{unix_now, Claims, Signer};
use crate::tools::loadtest::cli::MainArgs;

/// What `--sub-token` prepares.
pub(super) struct Prepared {
    /// The server's flags: `--sub-jwt-secret-file PATH` or `--sub-jwks-file PATH`.
    pub(super) server_args: Vec<String>,
    /// Id `1 + k`'s token at `k` (`sub` the id, valid for an hour).
    pub(super) tokens: Arc<Vec<String>>,
}

/// The key, its file and the tokens for `--sub-token`, if given. Errors: an unknown
/// algorithm; the key file cannot be written.
pub(super) fn prepare(a: &MainArgs) -> Result<Option<Prepared>> {
    let Some(alg) = &a.sub_token else {
        return Ok(None);
    };
    let signer = Signer::generate(alg, "loadtest")?;
    let path = std::env::temp_dir().join(format!(
        "uring-comet-loadtest-{}-{}",
        std::process::id(),
        if signer.is_jwks {
            "jwks.json"
        } else {
            "secret"
        }
    ));
    std::fs::write(&path, &signer.server_file)
        .with_context(|| format!("writing {}", path.display()))?;
    let n = a.connect.conns;
    let t0 = Instant::now();
    let exp = Some(unix_now() + 3_600);
    let tokens: Vec<String> = (1..=n)
        .map(|id| {
            signer.sign(&Claims {
                sub: Some(id.to_string()),
                exp,
                ..Claims::default()
            })
        })
        .collect();
    let s = t0.elapsed().as_secs_f64();
    say(&format!(
        "signed {n} {alg} tokens in {s:.2} s ({:.1} us each), before the connect phase",
        s * 1e6 / n.max(1) as f64
    ));
    Ok(Some(Prepared {
        server_args: vec![signer.server_flag().into(), path.display().to_string()],
        tokens: Arc::new(tokens),
    }))
}
