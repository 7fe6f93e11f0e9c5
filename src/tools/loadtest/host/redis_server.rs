//! A redis-server child for `loadtest --nodes` (Debian's `redis-server` package): a free
//! loopback port, no persistence, killed by pid when the guard drops.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::child::die_with_parent;

/// The redis-server binary: on PATH, or where Debian puts it.
pub(crate) fn binary() -> Result<String> {
    for p in [
        "redis-server",
        "/usr/bin/redis-server",
        "/usr/sbin/redis-server",
    ] {
        let ok = Command::new(p)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(p.to_string());
        }
    }
    bail!("redis-server not found; install Debian's package: apt-get install -y redis-server")
}

/// A running redis-server; dropping it kills (SIGKILL) and reaps it.
pub(crate) struct RedisGuard {
    child: Child,
    /// Its process id.
    pub pid: u32,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl RedisGuard {
    /// Starts redis-server on a free port (`--save '' --appendonly no`) and waits (at most
    /// 5 s) until it answers PING. Errors: no binary, or no answer.
    pub(crate) fn start() -> Result<RedisGuard> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        RedisGuard::start_with(port, &[], None)
    }

    /// [`RedisGuard::start`] on `port` with `extra` flags, in directory `dir` (its working
    /// directory: where a cluster node writes its `nodes.conf`).
    pub(crate) fn start_with(
        port: u16,
        extra: &[&str],
        dir: Option<&std::path::Path>,
    ) -> Result<RedisGuard> {
        let bin = binary()?;
        let mut cmd = Command::new(&bin);
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if let Some(d) = dir {
            cmd.current_dir(d);
        }
        die_with_parent(&mut cmd);
        let child = cmd.spawn().with_context(|| format!("starting {bin}"))?;
        let pid = child.id();
        let guard = RedisGuard { child, pid, port };
        let t0 = Instant::now();
        while !guard.pings() {
            if t0.elapsed() > Duration::from_secs(5) {
                bail!("redis-server on port {port} did not answer PING within 5 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(guard)
    }

    fn pings(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// The URL nodes connect to.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
