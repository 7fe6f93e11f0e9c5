//! The server as a child process ([`ServerGuard`]) and what /proc tells about a process: RSS,
//! CPU time, which process listens on a port; also the clock and the fd limit.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// CLOCK_MONOTONIC in microseconds: system-wide, so a time taken in one process can be
/// compared with one taken in another.
pub fn now_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Resident set size of `pid`, bytes (VmRSS of /proc/PID/status).
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_vmrss(&status).ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// VmRSS of a /proc/PID/status text, bytes.
fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line["VmRSS:".len()..]
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// CPU time used by `pid` so far, user + system, seconds (fields 14 and 15 of /proc/PID/stat).
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let ticks = parse_cpu_ticks(&stat).ok_or_else(|| anyhow!("bad /proc/{pid}/stat"))?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    Ok(ticks as f64 / hz as f64)
}

/// utime + stime of a /proc/PID/stat text, clock ticks.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 is index 0; 14 is index 11
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Waits until two RSS readings 500 ms apart differ by less than 1%, at most `max_wait`.
/// Returns the last reading (bytes) and whether it was stable.
pub fn wait_rss_stable(pid: u32, max_wait: Duration) -> Result<(u64, bool)> {
    let start = Instant::now();
    let mut prev = rss_bytes(pid)?;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let cur = rss_bytes(pid)?;
        if cur.abs_diff(prev) * 100 < prev.max(1) {
            return Ok((cur, true));
        }
        if start.elapsed() >= max_wait {
            return Ok((cur, false));
        }
        prev = cur;
    }
}

/// Finds the process holding a listening TCP socket on `port` (any address), by matching the
/// socket's inode in /proc/net/tcp{,6} with the fds under /proc/*/fd. Needs permission to read
/// the other process's fds (same user or root).
pub fn find_listener_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Fields: sl local rem st tx:rx tr:when retrnsmt uid timeout inode; state 0A = LISTEN.
            if f.len() > 9 && f[3] == "0A" && super::memlog::hex_port(f[1]) == Some(port) {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| Path::new(i) == target) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// Raises this process's soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one rlimit through a valid pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim = want;
            }
        }
    }
    lim.rlim_cur
}

/// The server a load test starts: `bin` (default: this executable) and its `serve` flags,
/// `head` (the test's own, e.g. `--friends FILE`) then `--shards` and `--backend` when
/// given, then `extra` (`--server-arg`) verbatim, so a later flag overrides an earlier one.
/// Errors: this executable's path cannot be read.
pub fn server_command(
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
pub struct ServerGuard {
    child: Child,
    /// The child's process id.
    pub pid: u32,
    /// Subscriber listener (`GET /test/<id>`).
    pub sub_addr: SocketAddr,
    /// Publish listener (`POST /send/<id>`, `GET /stats`).
    pub pub_addr: SocketAddr,
}

impl ServerGuard {
    /// Starts `bin serve --listen 127.0.0.1:0 --publish-listen 127.0.0.1:0 [ARGS...]` and
    /// waits (at most 10 s) for its `LISTEN subscriber=ADDR publish=ADDR` line. The server's
    /// stderr goes to `log` if given, else to ours.
    pub fn start(bin: &Path, args: &[String], log: Option<&PathBuf>) -> Result<ServerGuard> {
        Self::start_waiting(bin, args, log, Duration::from_secs(10))
    }

    /// As [`ServerGuard::start`], waiting at most `wait` for the LISTEN line (a server that
    /// loads a friends graph first takes seconds).
    pub fn start_waiting(
        bin: &Path,
        args: &[String],
        log: Option<&PathBuf>,
        wait: Duration,
    ) -> Result<ServerGuard> {
        let mut cmd = Command::new(bin);
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--publish-listen",
            "127.0.0.1:0",
        ]);
        cmd.args(args);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        if let Some(path) = log {
            let f = std::fs::File::create(path)
                .with_context(|| format!("creating server log {}", path.display()))?;
            cmd.stderr(f);
        }
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL the child if
        // this process dies without running the guard's Drop (e.g. killed by a signal).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
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

    /// True while the child has not exited.
    pub fn alive(&mut self) -> bool {
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
pub fn parse_listen_line(line: &str) -> Result<(SocketAddr, SocketAddr)> {
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
    use super::*;

    #[test]
    fn listen_line() {
        let (s, p) =
            parse_listen_line("LISTEN subscriber=127.0.0.1:4000 publish=127.0.0.1:4001\n").unwrap();
        assert_eq!(s.port(), 4000);
        assert_eq!(p.port(), 4001);
        assert!(parse_listen_line("LISTEN subscriber=127.0.0.1:4000").is_err());
        assert!(parse_listen_line("hello").is_err());
    }

    #[test]
    fn proc_fields() {
        assert_eq!(
            parse_vmrss("Name:\tx\nVmRSS:\t    1234 kB\nVmData: 5 kB\n"),
            Some(1234 * 1024)
        );
        assert_eq!(parse_vmrss("Name:\tx\n"), None);
        let stat = "42 (a b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn own_process_readings() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).unwrap() > 0);
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
        assert!(now_us() > 0);
    }
}
