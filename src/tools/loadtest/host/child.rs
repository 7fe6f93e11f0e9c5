//! The server under test as a child process: its command line ([`server_command`]), the
//! guard that starts it and kills it on drop ([`ServerGuard`]), and its `LISTEN` line.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// The server a load test starts: `bin` (default: this executable) and its `serve` flags,
/// `head` (the test's own, e.g. `--friends FILE`) then `--shards` and `--backend` when
/// given, then `extra` (`--server-arg`) verbatim, so a later flag overrides an earlier one.
/// Errors: this executable's path cannot be read.
pub(crate) fn server_command(
    bin: Option<&PathBuf>,
    head: Vec<String>,
    shards: Option<usize>,
    backend: Option<crate::config::Backend>,
    extra: &[String],
) -> Result<(PathBuf, Vec<String>)> {
    let bin = match bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?,
    };
    let mut args = head;
    if let Some(n) = shards {
        args.extend(["--shards".to_string(), n.to_string()]);
    }
    if let Some(b) = backend {
        args.extend(["--backend".to_string(), b.to_string()]);
    }
    args.extend(extra.iter().cloned());
    Ok((bin, args))
}

/// The server under test, running as a child process; dropping the guard kills it (SIGKILL by
/// pid) and reaps it, so every exit path, errors included, leaves no server behind.
pub(crate) struct ServerGuard {
    child: Child,
    /// The child's process id.
    pub pid: u32,
    /// Subscriber listener (`GET /test/<id>`).
    pub sub_addr: SocketAddr,
    /// Publish listener (`POST /send/<id>`, `GET /stats`).
    pub pub_addr: SocketAddr,
    /// The subscriber tokens this server wants (`loadtest --sub-token`): id `1 + k`'s at `k`.
    pub tokens: Option<std::sync::Arc<Vec<String>>>,
}

impl ServerGuard {
    /// Starts `bin serve --listen 127.0.0.1:0 --publish-listen 127.0.0.1:0 [ARGS...]` and
    /// waits (at most 10 s) for its `LISTEN subscriber=ADDR publish=ADDR` line. The server's
    /// stderr goes to `log` if given, else to ours.
    pub(crate) fn start(bin: &Path, args: &[String], log: Option<&PathBuf>) -> Result<ServerGuard> {
        Self::start_waiting(bin, args, log, Duration::from_secs(10))
    }

    /// As [`ServerGuard::start`], waiting at most `wait` for the LISTEN line (a server that
    /// loads a friends graph first takes seconds).
    pub(crate) fn start_waiting(
        bin: &Path,
        args: &[String],
        log: Option<&PathBuf>,
        wait: Duration,
    ) -> Result<ServerGuard> {
        let any = ["127.0.0.1:0".to_string(), "127.0.0.1:0".to_string()];
        Self::spawn(bin, &any, args, log, wait)
    }

    /// Starts `bin serve --takeover` with `args` on this server's two addresses (joining its
    /// SO_REUSEPORT groups: a hand-over) and waits (at most 10 s) for its `LISTEN` line; its
    /// stderr goes to `log` if given. Errors: as [`ServerGuard::start`].
    pub(crate) fn takeover(
        &self,
        bin: &Path,
        args: &[String],
        log: Option<&PathBuf>,
    ) -> Result<ServerGuard> {
        let at = [self.sub_addr.to_string(), self.pub_addr.to_string()];
        let mut args = args.to_vec();
        args.push("--takeover".into());
        Self::spawn(bin, &at, &args, log, Duration::from_secs(10))
    }

    /// Sends the server SIGTERM (it drains, then exits 0).
    pub(crate) fn terminate(&self) {
        // SAFETY: kill(2) on our own child, not yet reaped (the guard reaps it on drop).
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
    }

    /// The exit code once the server has exited (`Some(None)`: killed by a signal).
    pub(crate) fn exit_code(&mut self) -> Option<Option<i32>> {
        self.child.try_wait().ok().flatten().map(|s| s.code())
    }

    /// `bin serve --listen L --publish-listen P [ARGS...]`, then its `LISTEN` line.
    fn spawn(
        bin: &Path,
        listen: &[String; 2],
        args: &[String],
        log: Option<&PathBuf>,
        wait: Duration,
    ) -> Result<ServerGuard> {
        let mut cmd = Command::new(bin);
        cmd.args([
            "serve",
            "--listen",
            &listen[0],
            "--publish-listen",
            &listen[1],
        ]);
        cmd.args(args);
        Self::spawn_command(cmd, bin, log, wait)
    }

    /// Starts `bin loadtest hold-peer` (the accept-and-hold peer of `loadtest million
    /// --hold-peer`) and waits (at most 10 s) for its `LISTEN` line; its stderr goes to `log`
    /// if given. Errors: as [`ServerGuard::start`].
    pub(crate) fn start_hold_peer(bin: &Path, log: Option<&PathBuf>) -> Result<ServerGuard> {
        let mut cmd = Command::new(bin);
        cmd.args(["loadtest", "hold-peer"]);
        Self::spawn_command(cmd, bin, log, Duration::from_secs(10))
    }

    /// Runs `cmd` (stdout piped, stdin null, stderr to `log` or ours), then its `LISTEN` line.
    fn spawn_command(
        mut cmd: Command,
        bin: &Path,
        log: Option<&PathBuf>,
        wait: Duration,
    ) -> Result<ServerGuard> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        if let Some(path) = log {
            let f = std::fs::File::create(path)
                .with_context(|| format!("creating server log {}", path.display()))?;
            cmd.stderr(f);
        }
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout pipe"))?;
        // Construct the guard now so that a bad or missing LISTEN line still kills the child.
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        let mut guard = ServerGuard {
            child,
            pid,
            sub_addr: any,
            pub_addr: any,
            tokens: None,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let _ = tx.send(r.read_line(&mut line).map(|_| line));
            // Keep draining so that later prints cannot block the server on a full pipe.
            let _ = std::io::copy(&mut r, &mut std::io::sink());
        });
        let line = match rx.recv_timeout(wait) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => bail!("reading the server's stdout: {e}"),
            Err(_) => bail!(
                "the server printed no LISTEN line within {} s",
                wait.as_secs()
            ),
        };
        let (sub, publ) = parse_listen_line(&line)?;
        guard.sub_addr = sub;
        guard.pub_addr = publ;
        Ok(guard)
    }

    /// Its wait status once it has exited (`None`: still running).
    pub(crate) fn status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// True while the child has not exited.
    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses `LISTEN subscriber=ADDR publish=ADDR` into the two addresses.
/// Makes the child `cmd` starts die (SIGKILL) when the thread that forks it dies without
/// running a guard's Drop (killed by a signal, say), so no server, worker or redis-server
/// outlives the load tester (prctl(2) `PR_SET_PDEATHSIG`; it follows the forking thread, so
/// call `spawn` from a thread that lives as long as the child should).
pub(crate) fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of this process, which is all
    // a pre_exec closure may do between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

pub(crate) fn parse_listen_line(line: &str) -> Result<(SocketAddr, SocketAddr)> {
    let mut sub = None;
    let mut publ = None;
    let mut words = line.split_whitespace();
    if words.next() != Some("LISTEN") {
        bail!("expected a LISTEN line from the server, got {line:?}");
    }
    for w in words {
        if let Some(a) = w.strip_prefix("subscriber=") {
            sub = a.parse().ok();
        } else if let Some(a) = w.strip_prefix("publish=") {
            publ = a.parse().ok();
        }
    }
    match (sub, publ) {
        (Some(s), Some(p)) => Ok((s, p)),
        _ => bail!("bad LISTEN line from the server: {line:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_listen_line;

    #[test]
    fn listen_line() {
        let (s, p) =
            parse_listen_line("LISTEN subscriber=127.0.0.1:4000 publish=127.0.0.1:4001\n").unwrap();
        assert_eq!(s.port(), 4000);
        assert_eq!(p.port(), 4001);
        assert!(parse_listen_line("LISTEN subscriber=127.0.0.1:4000").is_err());
        assert!(parse_listen_line("hello").is_err());
    }
}
