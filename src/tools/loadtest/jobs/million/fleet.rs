//! The client side of `loadtest million`: the worker processes ([`Fleet`]), each a
//! `loadtest million-worker` child with its own source address, read over pipes; and the
//! whole machine's memory ([`MemInfo`], [`PeakSampler`]).
//!
//! Every child is ended by pid on every exit path: [`Fleet`]'s Drop sends SIGKILL to each
//! worker still running and reaps it, and each worker also gets SIGKILL from the kernel if this
//! process dies without running Drop (PR_SET_PDEATHSIG; set in the child before exec, and tied
//! to the thread that forked, so workers are spawned from the main thread).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

pub(crate) use super::connect::WorkerPlan;
use crate::tools::loadtest::client::million_worker::{Progress, Verdict};
use crate::tools::loadtest::host::child::die_with_parent;

/// What the parent knows of one worker, updated by its reader thread.
#[derive(Default)]
pub(crate) struct WorkerView {
    /// The latest `P` line.
    pub progress: Mutex<Progress>,
    /// The `R` line, once printed.
    pub verdict: Mutex<Option<Verdict>>,
    /// Its stdout ended (it exited or closed it).
    pub gone: AtomicBool,
}

/// One worker process.
pub(crate) struct WorkerProc {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Its process id.
    pub pid: u32,
    /// What it reported.
    pub view: Arc<WorkerView>,
}

/// The worker processes; dropping the fleet kills (SIGKILL by pid) and reaps every one still
/// running.
#[derive(Default)]
pub(crate) struct Fleet {
    /// The workers, in id order.
    pub workers: Vec<WorkerProc>,
    readers: Vec<JoinHandle<()>>,
}

impl Fleet {
    /// Starts one worker per plan (`bin loadtest million-worker ...`), each connecting to
    /// `target`. Call from the main thread (PR_SET_PDEATHSIG follows the forking thread).
    pub(crate) fn start(bin: &Path, target: SocketAddr, plans: &[WorkerPlan]) -> Result<Fleet> {
        let mut fleet = Fleet::default();
        for p in plans {
            let mut cmd = Command::new(bin);
            cmd.args(["loadtest", "million-worker", "--connect"])
                .arg(target.to_string())
                .args(
                    p.sources
                        .iter()
                        .flat_map(|a| ["--source".to_string(), a.to_string()]),
                )
                .arg("--first-id")
                .arg(p.first_id.to_string())
                .arg("--count")
                .arg(p.count.to_string())
                .arg("--rate")
                .arg(p.rate.to_string())
                .arg("--max-connecting")
                .arg(p.max_connecting.to_string())
                .args(p.reconnect.then_some("--reconnect"))
                .args(
                    p.token_secret
                        .iter()
                        .flat_map(|f| [OsStr::new("--token-secret"), f.as_os_str()]),
                )
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                // Workers log nothing but errors: let them through.
                .stderr(Stdio::inherit());
            die_with_parent(&mut cmd);
            let mut child = cmd
                .spawn()
                .with_context(|| format!("starting worker {}", fleet.workers.len()))?;
            let pid = child.id();
            let stdin = child.stdin.take();
            let stdout = child.stdout.take();
            let view = Arc::new(WorkerView::default());
            fleet.workers.push(WorkerProc {
                child,
                stdin,
                pid,
                view: view.clone(),
            });
            if let Some(out) = stdout {
                let h = std::thread::Builder::new()
                    .name(format!("worker-{pid}"))
                    .stack_size(64 * 1024)
                    .spawn(move || read_worker(out, &view))?;
                fleet.readers.push(h);
            }
        }
        Ok(fleet)
    }

    /// The sum of the workers' latest progress lines.
    pub(crate) fn progress(&self) -> Progress {
        let mut t = Progress::default();
        for w in &self.workers {
            let p = *w.view.progress.lock().unwrap_or_else(|e| e.into_inner());
            t.connected += p.connected;
            t.failed += p.failed;
            t.closed += p.closed;
            t.received += p.received;
            t.bad += p.bad;
        }
        t
    }

    /// Workers whose stdout ended without a verdict (they died).
    pub(crate) fn dead(&self) -> Vec<u32> {
        self.workers
            .iter()
            .filter(|w| {
                w.view.gone.load(Relaxed)
                    && w.view
                        .verdict
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .is_none()
            })
            .map(|w| w.pid)
            .collect()
    }

    /// The workers' pids.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.workers.iter().map(|w| w.pid).collect()
    }

    /// Tells every worker to check and close its connections, and waits (at most `max`) for
    /// their verdicts and exits. Returns the verdicts (workers that gave none are missing).
    pub(crate) fn close(&mut self, max: Duration) -> Vec<(u32, Option<Verdict>)> {
        for w in &mut self.workers {
            if let Some(mut s) = w.stdin.take() {
                let _ = s.write_all(b"close\n");
                // Dropping stdin closes the pipe: end of input ends the worker too.
            }
        }
        let t0 = Instant::now();
        while t0.elapsed() < max && self.workers.iter().any(|w| !w.view.gone.load(Relaxed)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        for w in &mut self.workers {
            let left = max.saturating_sub(t0.elapsed()).max(Duration::from_secs(1));
            let t1 = Instant::now();
            while matches!(w.child.try_wait(), Ok(None)) && t1.elapsed() < left {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.workers
            .iter()
            .map(|w| {
                let v = w.view.verdict.lock().unwrap_or_else(|e| e.into_inner());
                (w.pid, v.clone())
            })
            .collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for w in &mut self.workers {
            if matches!(w.child.try_wait(), Ok(None)) {
                let _ = w.child.kill();
            }
            let _ = w.child.wait();
        }
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
    }
}

/// Reads a worker's stdout until it ends, keeping its latest progress and its verdict.
fn read_worker(out: std::process::ChildStdout, view: &WorkerView) {
    let r = BufReader::new(out);
    for line in r.lines() {
        let Ok(line) = line else {
            break;
        };
        if let Some(p) = Progress::parse(&line) {
            *view.progress.lock().unwrap_or_else(|e| e.into_inner()) = p;
        } else if let Some(v) = Verdict::parse(&line) {
            *view.verdict.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
        }
    }
    view.gone.store(true, Relaxed);
}

/// The lines of /proc/meminfo this run reads, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MemInfo {
    /// MemTotal.
    pub total: u64,
    /// MemAvailable.
    pub available: u64,
    /// MemFree.
    pub free: u64,
    /// Buffers and Cached (the page cache, shmem included).
    pub buffers: u64,
    /// Cached.
    pub cached: u64,
    /// Slab (SReclaimable + SUnreclaim).
    pub slab: u64,
    /// SUnreclaim.
    pub sunreclaim: u64,
    /// PageTables.
    pub page_tables: u64,
    /// KernelStack.
    pub kernel_stack: u64,
    /// VmallocUsed.
    pub vmalloc: u64,
    /// `TCP: mem` of /proc/net/sockstat (pages of socket buffers) in bytes.
    pub tcp_mem: u64,
    /// `TCP: inuse` of /proc/net/sockstat.
    pub tcp_inuse: u64,
    /// `TCP: tw` of /proc/net/sockstat (TIME_WAIT sockets).
    pub tcp_tw: u64,
}

impl MemInfo {
    /// Reads /proc/meminfo and /proc/net/sockstat (missing values are 0).
    pub(crate) fn read() -> MemInfo {
        let mut m = MemInfo::default();
        if let Ok(t) = std::fs::read_to_string("/proc/meminfo") {
            m.parse_meminfo(&t);
        }
        if let Ok(t) = std::fs::read_to_string("/proc/net/sockstat") {
            m.parse_sockstat(&t);
        }
        m
    }

    /// MemTotal - MemAvailable: memory in use on the whole machine.
    pub(crate) fn used(&self) -> u64 {
        self.total.saturating_sub(self.available)
    }

    /// MemTotal - MemFree - Buffers - Cached: memory in use, all slab in, page cache out.
    pub(crate) fn in_use(&self) -> u64 {
        (self.total).saturating_sub(self.free + self.buffers + self.cached)
    }

    /// The kernel's memory that grows with sockets: Slab + PageTables + KernelStack +
    /// VmallocUsed + TCP socket buffers.
    pub(crate) fn kernel(&self) -> u64 {
        self.slab + self.page_tables + self.kernel_stack + self.vmalloc + self.tcp_mem
    }

    fn parse_meminfo(&mut self, text: &str) {
        for line in text.lines() {
            let Some((key, rest)) = line.split_once(':') else {
                continue;
            };
            let Some(kib) = rest
                .trim()
                .strip_suffix("kB")
                .and_then(|v| v.trim().parse::<u64>().ok())
            else {
                continue;
            };
            let v = kib * 1024;
            match key {
                "MemTotal" => self.total = v,
                "MemAvailable" => self.available = v,
                "MemFree" => self.free = v,
                "Buffers" => self.buffers = v,
                "Cached" => self.cached = v,
                "Slab" => self.slab = v,
                "SUnreclaim" => self.sunreclaim = v,
                "PageTables" => self.page_tables = v,
                "KernelStack" => self.kernel_stack = v,
                "VmallocUsed" => self.vmalloc = v,
                _ => {}
            }
        }
    }

    fn parse_sockstat(&mut self, text: &str) {
        let Some(tcp) = text.lines().find(|l| l.starts_with("TCP:")) else {
            return;
        };
        let mut words = tcp.split_whitespace().skip(1);
        // SAFETY: sysconf has no memory effects.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        while let (Some(k), Some(v)) = (words.next(), words.next()) {
            let v: u64 = v.parse().unwrap_or(0);
            match k {
                "inuse" => self.tcp_inuse = v,
                "tw" => self.tcp_tw = v,
                "mem" => self.tcp_mem = v * page,
                _ => {}
            }
        }
    }
}

/// A thread reading /proc/meminfo every 200 ms, keeping the highest MemTotal - MemAvailable
/// and the highest TCP buffer memory; stopped and joined on drop.
pub(crate) struct PeakSampler {
    /// Highest MemTotal - MemAvailable seen, bytes.
    pub used: Arc<AtomicU64>,
    /// Highest `TCP: mem` seen, bytes.
    pub tcp_mem: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    h: Option<JoinHandle<()>>,
}

impl PeakSampler {
    /// Starts sampling.
    pub(crate) fn start() -> Result<PeakSampler> {
        let used = Arc::new(AtomicU64::new(MemInfo::read().used()));
        let tcp_mem = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (u, t, s) = (used.clone(), tcp_mem.clone(), stop.clone());
        let h = std::thread::Builder::new()
            .name("mem-peak".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                while !s.load(Relaxed) {
                    let m = MemInfo::read();
                    u.fetch_max(m.used(), Relaxed);
                    t.fetch_max(m.tcp_mem, Relaxed);
                    std::thread::sleep(Duration::from_millis(200));
                }
            })?;
        Ok(PeakSampler {
            used,
            tcp_mem,
            stop,
            h: Some(h),
        })
    }
}

impl Drop for PeakSampler {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.h.take() {
            let _ = h.join();
        }
    }
}

/// The `i`-th worker's source address: 127.0.0.2, .3, ... (carrying into the third byte).
pub(crate) fn source_addr(first: Ipv4Addr, i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(first) + i)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::{source_addr, MemInfo};

    #[test]
    fn meminfo_and_sockstat() {
        let mut m = MemInfo::default();
        m.parse_meminfo(
            "MemTotal:       24000000 kB\nMemAvailable:   20000000 kB\nSlab:  100 kB\nSUnreclaim: 40 kB\nPageTables: 8 kB\nKernelStack: 4 kB\nVmallocUsed: 2 kB\nHugePages_Total: 0\n",
        );
        m.parse_sockstat(
            "sockets: used 30123\nTCP: inuse 30005 orphan 0 tw 12 alloc 30010 mem 7\nUDP: inuse 2 mem 1\n",
        );
        assert_eq!(m.used(), 4_000_000 * 1024);
        assert_eq!((m.slab, m.sunreclaim), (100 * 1024, 40 * 1024));
        assert_eq!((m.tcp_inuse, m.tcp_tw), (30005, 12));
        assert_eq!(m.kernel(), (100 + 8 + 4 + 2) * 1024 + m.tcp_mem);
        assert!(m.tcp_mem >= 7 * 4096);
        assert!(MemInfo::read().total > 0);
    }

    #[test]
    fn sources() {
        let first = Ipv4Addr::new(127, 0, 0, 2);
        assert_eq!(source_addr(first, 0), first);
        assert_eq!(source_addr(first, 51), Ipv4Addr::new(127, 0, 0, 53));
        assert_eq!(source_addr(first, 254), Ipv4Addr::new(127, 0, 1, 0));
    }
}
