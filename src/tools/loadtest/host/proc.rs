//! What /proc tells about a process and the host's sockets: RSS, CPU time, which process
//! listens on a port, how many connections are established on one; also the clock and the fd
//! limit. Sources: proc(5) (`/proc/PID/status` VmRSS, `/proc/PID/stat` utime/stime,
//! `/proc/net/tcp{,6}`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

/// CLOCK_MONOTONIC in microseconds: system-wide, so a time taken in one process can be
/// compared with one taken in another.
pub(crate) fn now_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Resident set size of `pid`, bytes (VmRSS of /proc/PID/status).
pub(crate) fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    // A zombie (exited, not reaped yet) still has a status file, without VmRSS.
    parse_vmrss(&status)
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status: the process has exited"))
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
pub(crate) fn cpu_seconds(pid: u32) -> Result<f64> {
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
pub(crate) fn wait_rss_stable(pid: u32, max_wait: Duration) -> Result<(u64, bool)> {
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
pub(crate) fn find_listener_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Fields: sl local rem st tx:rx tr:when retrnsmt uid timeout inode; state 0A = LISTEN.
            if f.len() > 9 && f[3] == "0A" && hex_port(f[1]) == Some(port) {
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

/// The raised RLIMIT_NOFILE ([`raise_nofile_limit`]) when it is below `need` fds, else
/// `None`: the one check behind every job's and worker's "need an fd limit of" error.
pub(crate) fn nofile_short_of(need: u64) -> Option<u64> {
    let limit = raise_nofile_limit();
    (need > limit).then_some(limit)
}

/// Raises this process's soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub(crate) fn raise_nofile_limit() -> u64 {
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

/// Established TCP connections (IPv4 and IPv6) whose local port is `port`.
pub(crate) fn established_on_port(port: u16) -> u64 {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::File::open(f).ok())
        .map(|f| count_established(BufReader::new(f), port))
        .sum()
}

/// Counts lines of a /proc/net/tcp text in state 01 with local port `port`. Streams the text:
/// with a million sockets the file is hundreds of megabytes.
fn count_established(text: impl BufRead, port: u16) -> u64 {
    text.lines()
        .skip(1)
        .map_while(|line| line.ok())
        .filter(|line| {
            let mut f = line.split_whitespace();
            let local = f.nth(1);
            let state = f.nth(1);
            state == Some("01") && local.and_then(hex_port) == Some(port)
        })
        .count() as u64
}

/// The port of a /proc/net/tcp address `HEXADDR:HEXPORT`.
pub(crate) fn hex_port(addr: &str) -> Option<u16> {
    u16::from_str_radix(addr.rsplit_once(':')?.1, 16).ok()
}

/// CPU seconds of the given processes so far (those still readable).
pub(crate) fn cpu_seconds_sum(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|&p| cpu_seconds(p).ok()).sum()
}

/// The 1, 5 and 15 minute load averages, as /proc/loadavg gives them.
pub(crate) fn loadavg() -> String {
    let t = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    t.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Anonymous memory of process `pid` (`Anonymous:` of /proc/PID/smaps_rollup), bytes; 0 if
/// unreadable. File-backed pages (the binary) are page cache, which MemAvailable counts as
/// available: RSS would count them.
pub(crate) fn anon_bytes(pid: u32) -> u64 {
    let t = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    t.lines()
        .find_map(|l| l.strip_prefix("Anonymous:"))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map_or(0, |k| k * 1024)
}

#[cfg(test)]
mod tests {
    use super::{
        count_established, cpu_seconds, hex_port, now_us, parse_cpu_ticks, parse_vmrss, rss_bytes,
    };

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 100 1 0 100 0 0 10 0
   1: 0100007F:1F40 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 101 1 0 20 4 30 10 -1
   2: 0100007F:D431 0100007F:1F40 01 00000000:00000000 00:00000000 00000000     0        0 102 1 0 20 4 30 10 -1
   3: 0100007F:1F40 0100007F:D432 06 00000000:00000000 00:00000000 00000000     0        0 0 1 0 20 4 30 10 -1
   4: 0100007F:1F40 0100007F:D433 01 00000000:00000000 00:00000000 00000000     0        0 103 1 0 20 4 30 10 -1
";

    #[test]
    fn counts_server_side_established_only() {
        assert_eq!(count_established(TCP.as_bytes(), 8000), 2);
        assert_eq!(count_established(TCP.as_bytes(), 8001), 0);
        assert_eq!(hex_port("0100007F:1F40"), Some(8000));
        assert_eq!(hex_port("junk"), None);
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
