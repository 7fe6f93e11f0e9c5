//! The delivery ceiling of this host, for `loadtest compare`: `deliver-ceiling` (in the shared
//! tools folder, `../shared/tools/deliver-ceiling` beside the repository) writes small messages
//! over N idle loopback connections with no server logic at all; its delivered messages/s and
//! its sender's CPU per message are what a server's figures are held against.
//!
//! The tool's folder may be read-only, so it is built with `CARGO_TARGET_DIR` outside it
//! (`/tmp/deliver-ceiling-target`, as its README does).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

/// Where the tool is built.
const TARGET_DIR: &str = "/tmp/deliver-ceiling-target";

/// One ceiling run's figures.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ceiling {
    /// Connections.
    pub n: u64,
    /// Delivered messages per second (sender's bytes / size over first write to last read).
    pub deliv_mps: f64,
    /// Sender CPU per message, microseconds.
    pub send_us: f64,
    /// Receiver CPU per message, microseconds.
    pub recv_us: f64,
    /// The tool's `ROW ...` line, verbatim.
    pub row: String,
}

/// The tool's folder beside this repository (or beside the working directory), if present.
pub(crate) fn default_dir() -> Option<PathBuf> {
    let beside_repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/deliver-ceiling");
    let beside_cwd = PathBuf::from("../shared/tools/deliver-ceiling");
    [beside_repo, beside_cwd]
        .into_iter()
        .find(|d| d.join("Cargo.toml").is_file())
}

/// Builds the tool in `dir` (release, quietly; a no-op when up to date); returns its binary.
pub(crate) fn build(dir: &Path) -> Result<PathBuf> {
    let status = Command::new("cargo")
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", TARGET_DIR)
        .stdin(Stdio::null())
        .status()
        .context("running cargo to build deliver-ceiling")?;
    if !status.success() {
        bail!(
            "building deliver-ceiling in {} failed ({status})",
            dir.display()
        );
    }
    Ok(Path::new(TARGET_DIR).join("release/deliver-ceiling"))
}

/// Runs `BIN run --n N --send uring --batch 64 --recv epoll --secs SECS` and parses its row.
pub(crate) fn run(bin: &Path, n: u64, secs: u64) -> Result<Ceiling> {
    run_sized(bin, n, 64, secs)
}

/// As [`run`], with messages of `size` bytes (`--size`; `loadtest room --msg-bytes`).
pub(crate) fn run_sized(bin: &Path, n: u64, size: usize, secs: u64) -> Result<Ceiling> {
    let out = Command::new(bin)
        .args([
            "run",
            "--n",
            &n.to_string(),
            "--send",
            "uring",
            "--batch",
            "64",
        ])
        .args(["--recv", "epoll", "--secs", &secs.max(1).to_string()])
        .args(["--size", &size.max(1).to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.starts_with("ROW "))
        .ok_or_else(|| anyhow!("deliver-ceiling printed no ROW line ({})", out.status))?;
    parse_row(row)
}

/// Parses a `ROW key=value ...` line.
pub(crate) fn parse_row(row: &str) -> Result<Ceiling> {
    let kv: HashMap<&str, &str> = row
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .collect();
    let num = |k: &str| -> Result<f64> {
        kv.get(k)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("deliver-ceiling row has no number {k}: {row}"))
    };
    if kv.get("ok") != Some(&"1") {
        bail!("deliver-ceiling lost bytes (ok != 1): {row}");
    }
    Ok(Ceiling {
        n: num("n")? as u64,
        deliv_mps: num("deliv_mps")?,
        send_us: num("s_us")?,
        recv_us: num("r_us")?,
        row: row.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::parse_row;

    #[test]
    fn row() {
        let r = "ROW send=uring batch=64 recv=epoll n=15000 pin=no st=1 rt=1 size=64 fixed=0 msgs=2000000 ok=1 send_s=10.001 e2e_s=10.010 send_mps=199980 deliv_mps=199800 s_us=4.400 r_us=4.500 sr_us=8.900";
        let c = parse_row(r).unwrap();
        assert_eq!(c.n, 15000);
        assert_eq!((c.deliv_mps, c.send_us, c.recv_us), (199800.0, 4.4, 4.5));
        assert!(parse_row(&r.replace("ok=1", "ok=0")).is_err());
        assert!(parse_row("ROW ok=1 n=5").is_err());
    }
}
