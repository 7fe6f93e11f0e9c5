//! Memory and CPU of a server that may be several processes ([`ProcSet`]: nginx's master and
//! workers), and the kernel's memory ([`KernelMem`]), for `loadtest compare`.
//!
//! Per process: VmRSS and Pss from /proc/PID/smaps_rollup (Pss splits pages shared between
//! processes, so the sum over a process set counts them once), utime + stime from
//! /proc/PID/stat. Kernel: Slab and SUnreclaim from /proc/meminfo, and /proc/net/sockstat.
//! These are system-wide: with client and server on one host they include both ends of every
//! loopback connection, and anything else the host does meanwhile.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::tools::loadtest::host::proc::cpu_seconds;

/// The processes of one server: the given pids and all their descendants, found afresh at
/// every reading (so workers that start later are counted).
#[derive(Debug, Clone)]
pub(crate) struct ProcSet {
    /// The pids given (`--pid`, or the child server).
    pub roots: Vec<u32>,
}

/// A memory reading of a process set, bytes (sums over its processes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MemReading {
    /// Sum of Rss (resident pages, shared ones counted in every process that maps them).
    pub rss: u64,
    /// Sum of Pss (shared pages divided between their sharers).
    pub pss: u64,
    /// Processes read.
    pub procs: u32,
}

impl ProcSet {
    /// The roots and their descendants, roots first.
    pub(crate) fn pids(&self) -> Vec<u32> {
        let mut all = self.roots.clone();
        let parents = all_ppids();
        let mut i = 0;
        while i < all.len() {
            let p = all[i];
            for &(child, ppid) in &parents {
                if ppid == p && !all.contains(&child) {
                    all.push(child);
                }
            }
            i += 1;
        }
        all
    }

    /// Sums Rss and Pss over the set; fails if no process could be read.
    pub(crate) fn mem(&self) -> Result<MemReading> {
        let mut m = MemReading::default();
        for pid in self.pids() {
            let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
                continue;
            };
            if let Some((rss, pss)) = parse_smaps_rollup(&text) {
                m.rss += rss;
                m.pss += pss;
                m.procs += 1;
            }
        }
        if m.procs == 0 {
            bail!("no process of {:?} could be read", self.roots);
        }
        Ok(m)
    }

    /// CPU time (user + system) of the set so far, seconds.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        self.pids()
            .into_iter()
            .filter_map(|p| cpu_seconds(p).ok())
            .sum()
    }

    /// Waits until two readings 500 ms apart differ by less than 1% in Rss, at most
    /// `max_wait`; returns the last reading and whether it was stable.
    pub(crate) fn wait_stable(&self, max_wait: Duration) -> Result<(MemReading, bool)> {
        let start = Instant::now();
        let mut prev = self.mem()?;
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let cur = self.mem()?;
            if cur.rss.abs_diff(prev.rss) * 100 < prev.rss.max(1) {
                return Ok((cur, true));
            }
            if start.elapsed() >= max_wait {
                return Ok((cur, false));
            }
            prev = cur;
        }
    }
}

/// (pid, ppid) of every process, from /proc/*/stat.
fn all_ppids() -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, parse_ppid(&stat)?))
        })
        .collect()
}

/// Field 4 (ppid) of a /proc/PID/stat text.
fn parse_ppid(stat: &str) -> Option<u32> {
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `(Rss, Pss)` in bytes from a /proc/PID/smaps_rollup text.
pub(crate) fn parse_smaps_rollup(text: &str) -> Option<(u64, u64)> {
    Some((kib_field(text, "Rss:")?, kib_field(text, "Pss:")?))
}

/// The value of a `Key:   123 kB` line, in bytes.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let v = line[key.len()..].trim().strip_suffix("kB")?.trim();
    Some(v.parse::<u64>().ok()? * 1024)
}

/// The kernel's memory as far as sockets are concerned (system-wide).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct KernelMem {
    /// Slab of /proc/meminfo, bytes.
    pub slab: u64,
    /// SUnreclaim of /proc/meminfo, bytes.
    pub sunreclaim: u64,
    /// `sockets: used` of /proc/net/sockstat.
    pub sockets_used: u64,
    /// `TCP: inuse` of /proc/net/sockstat.
    pub tcp_inuse: u64,
    /// `TCP: mem` of /proc/net/sockstat (socket buffer pages) in bytes.
    pub tcp_mem: u64,
}

impl KernelMem {
    /// Reads /proc/meminfo and /proc/net/sockstat (missing values are 0).
    pub(crate) fn read() -> KernelMem {
        let mut k = KernelMem::default();
        if let Ok(t) = std::fs::read_to_string("/proc/meminfo") {
            k.slab = kib_field(&t, "Slab:").unwrap_or(0);
            k.sunreclaim = kib_field(&t, "SUnreclaim:").unwrap_or(0);
        }
        if let Ok(t) = std::fs::read_to_string("/proc/net/sockstat") {
            let (used, inuse, mem) = parse_sockstat(&t);
            // SAFETY: sysconf has no memory effects.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
            (k.sockets_used, k.tcp_inuse, k.tcp_mem) = (used, inuse, mem * page);
        }
        k
    }
}

/// `(sockets used, TCP inuse, TCP mem pages)` from a /proc/net/sockstat text.
pub(crate) fn parse_sockstat(text: &str) -> (u64, u64, u64) {
    let value = |line: &str, key: &str| -> u64 {
        let mut words = line.split_whitespace();
        while let Some(w) = words.next() {
            if w == key {
                return words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            }
        }
        0
    };
    let line = |prefix: &str| text.lines().find(|l| l.starts_with(prefix)).unwrap_or("");
    let sockets = line("sockets:");
    let tcp = line("TCP:");
    (
        value(sockets, "used"),
        value(tcp, "inuse"),
        value(tcp, "mem"),
    )
}

#[cfg(test)]
mod tests {
    use super::{kib_field, parse_ppid, parse_smaps_rollup, parse_sockstat, KernelMem, ProcSet};

    #[test]
    fn smaps_rollup() {
        let t = "55d0-7ffe ---p 00000000 00:00 0 [rollup]\nRss:                8312 kB\nPss:                6020 kB\nPss_Dirty:          5000 kB\n";
        assert_eq!(parse_smaps_rollup(t), Some((8312 * 1024, 6020 * 1024)));
        assert_eq!(parse_smaps_rollup("Rss: 1 kB\n"), None);
        assert_eq!(
            kib_field("Slab:  100 kB\nSUnreclaim: 40 kB\n", "SUnreclaim:"),
            Some(40960)
        );
    }

    #[test]
    fn sockstat() {
        let t = "sockets: used 30123\nTCP: inuse 30005 orphan 0 tw 12 alloc 30010 mem 7\nUDP: inuse 2 mem 1\n";
        assert_eq!(parse_sockstat(t), (30123, 30005, 7));
        assert_eq!(parse_sockstat(""), (0, 0, 0));
    }

    #[test]
    fn own_process_set() {
        assert_eq!(parse_ppid("42 (a) b) S 7 1 1"), Some(7));
        let me = ProcSet {
            roots: vec![std::process::id()],
        };
        let m = me.mem().unwrap();
        assert!(m.rss > 0 && m.pss > 0 && m.procs >= 1);
        assert!(me.cpu_seconds() >= 0.0);
        assert!(KernelMem::read().slab > 0);
    }
}
