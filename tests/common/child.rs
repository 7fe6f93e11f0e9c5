//! The one launcher of the `uring-comet` binary as a child process: [`Serve`] builds a
//! `serve` command (loopback port 0, the test body's backend) and [`ChildServer`] is the
//! running server, with its `LISTEN` addresses and captured stderr; [`binary`] is the same
//! binary for the tool subcommands (`gen-friends`, `loadtest`).
//!
//! A child is ended only through its own `Child` handle (kill by pid, then reaped), on drop
//! too, so a failing test leaves no process behind. The server writes no pid file.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::server::backend;

/// How long a child server may take to print its `LISTEN` line.
const LISTEN_WAIT: Duration = Duration::from_secs(10);

/// The `uring-comet` binary cargo built for these tests, as a command with no arguments.
pub(crate) fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_uring-comet"))
}

/// A `uring-comet serve` command line: `--listen 127.0.0.1:0 --publish-listen 127.0.0.1:0
/// --backend <test backend>` (either address can be set) and the flags added,
/// `RUST_LOG=warn`, no publish token from the environment, stdin closed.
pub(crate) struct Serve {
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    publish_listen: String,
    nofile: Option<u64>,
    listen: String,
}

impl Serve {
    /// The command with no extra flag.
    pub(crate) fn new() -> Serve {
        Serve {
            args: Vec::new(),
            env: Vec::new(),
            publish_listen: "127.0.0.1:0".into(),
            nofile: None,
            listen: "127.0.0.1:0".into(),
        }
    }

    /// The subscriber listener's address instead of `127.0.0.1:0`.
    pub(crate) fn listen(mut self, addr: &str) -> Serve {
        self.listen = addr.into();
        self
    }

    /// `--shards n`.
    pub(crate) fn shards(self, n: usize) -> Serve {
        self.args(["--shards".to_string(), n.to_string()])
    }

    /// The publish listener's address instead of `127.0.0.1:0`.
    pub(crate) fn publish_listen(mut self, addr: &str) -> Serve {
        self.publish_listen = addr.into();
        self
    }

    /// Extra flags, after the defaults.
    pub(crate) fn args<I, S>(mut self, args: I) -> Serve
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// One environment variable of the child.
    pub(crate) fn env(mut self, key: &str, value: &str) -> Serve {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The child's RLIMIT_NOFILE (soft and hard), set between fork and exec.
    pub(crate) fn nofile(mut self, n: u64) -> Serve {
        self.nofile = Some(n);
        self
    }

    /// The command itself, for a test that runs it to completion (`output()`), such as a
    /// refusal to start.
    pub(crate) fn command(&self) -> Command {
        let mut cmd = binary();
        cmd.args(["serve", "--listen"])
            .arg(&self.listen)
            .arg("--publish-listen")
            .arg(&self.publish_listen)
            .args(["--backend", &backend().to_string()])
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .env_remove("UC_PUBLISH_TOKEN")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        if let Some(n) = self.nofile {
            // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd
    }

    /// Starts the server and waits for its `LISTEN` line; panics (with its stderr) if it
    /// does not print one.
    pub(crate) fn spawn(self) -> ChildServer {
        let (srv, up) = self.try_spawn();
        assert!(up, "the server did not start: {}", srv.stderr());
        srv
    }

    /// Starts the server; `true` once its `LISTEN` line is out, `false` if it exited before
    /// printing one (a refusal to start). Panics if neither happens within 10 s.
    pub(crate) fn try_spawn(self) -> (ChildServer, bool) {
        let mut child = self
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn uring-comet serve");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut b = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut b) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&b[..n]);
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            let _ = tx.send(r.read_line(&mut line).map(|_| line.clone()));
            // Keep draining so the child never blocks on a full pipe.
            let mut sink = Vec::new();
            let _ = r.read_to_end(&mut sink);
        });
        // The guard first, so that a failed wait still kills the child.
        let unbound = SocketAddr::from(([0, 0, 0, 0], 0));
        let mut srv = ChildServer {
            child,
            subscriber: unbound,
            publish: unbound,
            listen_line: String::new(),
            stderr,
            stderr_reader: Some(stderr_reader),
        };
        let line = match rx.recv_timeout(LISTEN_WAIT) {
            Ok(Ok(l)) if !l.is_empty() => l,
            Ok(_) => return (srv, false), // stdout closed: exited without a LISTEN line
            Err(_) => panic!("no LISTEN line within 10 s; stderr: {}", srv.stderr()),
        };
        let line = line
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("LISTEN line not newline-terminated: {line:?}"));
        let (s, p) = parse_listen_line(line).unwrap_or_else(|| {
            panic!("stdout line is not `LISTEN subscriber=A publish=B`: {line:?}")
        });
        srv.subscriber = s;
        srv.publish = connectable(p);
        srv.listen_line = line.to_string();
        (srv, true)
    }
}

/// `addr` with an unspecified IP (a `0.0.0.0` listener) replaced by 127.0.0.1.
fn connectable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    }
}

/// Parses `LISTEN subscriber=A publish=B` exactly (single spaces, nothing else on the line).
pub(crate) fn parse_listen_line(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.strip_prefix("LISTEN subscriber=")?;
    let (s, rest) = rest.split_once(' ')?;
    let p = rest.strip_prefix("publish=")?;
    Some((s.parse().ok()?, p.parse().ok()?))
}

/// A running `uring-comet serve` child; killed (by pid, through `Child::kill`) and reaped on
/// drop, printing its stderr if the test is failing.
pub(crate) struct ChildServer {
    /// The process.
    pub(crate) child: Child,
    /// The subscriber listener, as printed.
    pub(crate) subscriber: SocketAddr,
    /// The publish listener, as printed, with 127.0.0.1 for an unspecified IP.
    pub(crate) publish: SocketAddr,
    /// The `LISTEN ...` line exactly as printed (without the newline).
    pub(crate) listen_line: String,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_reader: Option<JoinHandle<()>>,
}

impl ChildServer {
    /// `uring-comet serve --shards n` with every other flag at its test default.
    pub(crate) fn spawn(shards: usize) -> ChildServer {
        Serve::new().shards(shards).spawn()
    }

    /// The process id.
    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything the process wrote to stderr so far (all of it once it has exited and
    /// [`wait_exit`](Self::wait_exit) or [`stop`](Self::stop) returned).
    pub(crate) fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits at most `limit` for the process to exit; its status, or None if still running.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                self.join_stderr();
                return Some(s);
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the process (if still running), reaps it, and returns its status and stderr.
    pub(crate) fn stop(mut self) -> (ExitStatus, String) {
        let _ = self.child.kill();
        let status = self.child.wait().unwrap();
        self.join_stderr();
        (status, self.stderr())
    }

    /// Sends `sig` to the process.
    pub(crate) fn signal(&self, sig: i32) {
        let pid = self.pid();
        // SAFETY: kill(2) on a child we own and have not reaped.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
    }

    /// Open file descriptors of the process (`/proc/PID/fd`).
    pub(crate) fn fds(&self) -> usize {
        super::kernel::fd_count(self.child.id())
    }

    /// CPU seconds (user + system) the process used so far (`/proc/PID/stat`).
    pub(crate) fn cpu_s(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
    }

    /// Waits for the stderr reader to reach EOF (the process has exited).
    fn join_stderr(&mut self) {
        if let Some(r) = self.stderr_reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            self.join_stderr();
            eprintln!(
                "stderr of the server (pid {}):\n{}",
                self.pid(),
                self.stderr()
            );
        }
    }
}
