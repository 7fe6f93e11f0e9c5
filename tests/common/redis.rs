//! The one launcher of redis-server for the tests: a throwaway server on a free loopback
//! port (`--save '' --appendonly no`: nothing written to disk, no pid file, no daemon),
//! ended only through its own `Child` handle (kill by pid, then reaped), on drop too.
//! `scripts/test-deps.sh` (run by `scripts/test.sh` and `.ci/run`) installs Debian's
//! `redis-server` when it is missing; without it the tests that need it fail, saying so.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh redis-server may take to answer PING.
const PING_WAIT: Duration = Duration::from_secs(5);

/// A redis-server child on 127.0.0.1.
pub(crate) struct Redis {
    child: Option<Child>,
    port: u16,
}

/// The redis-server binary: on PATH, or where Debian puts it.
fn redis_bin() -> String {
    for p in [
        "redis-server",
        "/usr/bin/redis-server",
        "/usr/sbin/redis-server",
    ] {
        if Command::new(p)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return p.to_string();
        }
    }
    panic!(
        "redis-server not found: the cluster tests need it (`apt-get install -y redis-server`; .ci/run installs it)"
    );
}

impl Redis {
    /// Starts redis-server on a free port and waits until it answers PING.
    pub(crate) fn start() -> Redis {
        let port = free_port();
        let mut r = Redis { child: None, port };
        r.restart();
        r
    }

    /// Starts it (again) on the same port and waits (at most 5 s) until it answers PING.
    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is still running");
        let child = Command::new(redis_bin())
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let t0 = Instant::now();
        while !self.pings() {
            assert!(
                t0.elapsed() < PING_WAIT,
                "redis-server on port {} did not answer PING within 5 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether it answers `PING` with `+PONG` (1 s read timeout).
    fn pings(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// Kills it (SIGKILL, by its pid) and reaps it; [`restart`](Self::restart) brings it back.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `sig` to redis-server (e.g. SIGSTOP to stall it, SIGCONT to wake it).
    pub(crate) fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().expect("redis-server is running").id() as i32;
        // SAFETY: kill(2) on a child we own and have not reaped.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
    }

    /// `redis://127.0.0.1:PORT`, the form `--cluster` takes.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port nobody listens on: bound to port 0, then closed.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
