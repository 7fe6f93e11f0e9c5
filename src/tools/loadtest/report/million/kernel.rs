//! Where the machine's memory per connection goes ([`Breakdown`]): the growth of every slab
//! cache (/proc/slabinfo), page tables, kernel stacks, vmalloc, socket buffers and the
//! processes' RSS from "server idle" to "every subscriber connected", divided by connections,
//! against the growth of MemTotal - MemAvailable; with a hold-peer baseline
//! ([`Breakdown::split`]) each row is split into the load generator's and the server's share.
//!
//! Sum and residual: the rows' sum is compared with the growth of memory in use, MemTotal -
//! MemFree - Buffers - Cached (all slab in, the page cache out, no estimate); the residual
//! (growth - sum) is shown, and [`TOLERANCE`] is the share of the growth it may reach. The
//! growth of MemTotal - MemAvailable is shown beside it, against the rows but the reclaimable
//! ones (MemAvailable counts the reclaimable slab, dentry and sock_inode_cache, as available,
//! by a heuristic, although an open socket pins them). Anything else on the host that
//! allocates meanwhile lands in the residual; so does memory the previous run still frees,
//! which `loadtest million` waits out before its first reading.
//!
//! Without root /proc/slabinfo is unreadable: the slab is then one row, the Slab growth of
//! /proc/meminfo, and no cache is named.
//!
//! The split (method, see `loadtest/README.md`, `--split`): a first run's subscribers connect to
//! a hold peer (`loadtest hold-peer`: accepts with io_uring into direct descriptors, sends the
//! head, reads the request once, then holds the socket with nothing armed) instead of the
//! server. In that run each connection is a pair of bare sockets, so the socket caches
//! ([`SOCKET_CACHES`]) are split half and half, io_uring's caches and the peer's RSS are the
//! peer's, and everything else is the generator's. The generator's rows per connection are
//! then subtracted from the real run's rows: server = total - generator, per row.

use super::super::json_str;
use crate::tools::loadtest::host::slabinfo::{SlabDelta, SlabInfo};
use crate::tools::loadtest::jobs::million::fleet::MemInfo;

/// The residual may be at most this share of the growth of memory in use.
pub(crate) const TOLERANCE: f64 = 0.05;

/// Caches holding one object per socket on each side of a connection: split half and half
/// between the two ends of a hold-peer run.
pub(crate) const SOCKET_CACHES: [&str; 5] = ["TCP", "TCPv6", "sock_inode_cache", "filp", "dentry"];

/// Caches only io_uring allocates: in a hold-peer run, the peer's (the generator uses epoll).
pub(crate) const URING_CACHES: [&str; 2] = ["io_kiocb", "io_buffer"];

/// Caches always listed, moved or not.
const NAMED: [&str; 12] = [
    "TCP",
    "TCPv6",
    "sock_inode_cache",
    "filp",
    "dentry",
    "io_kiocb",
    "eventpoll_epi",
    "eventpoll_pwq",
    "skbuff_head_cache",
    "kmalloc-64",
    "kmalloc-192",
    "kmalloc-512",
];

/// The row of the server's RSS growth (in a hold-peer run: the peer's).
pub(crate) const ROW_SERVER_RSS: &str = "server RSS";
/// The row of the load generator's anonymous memory (the workers' and the parent's growth).
pub(crate) const ROW_CLIENT_RSS: &str = "generator anon";

/// One row: a slab cache, or another kind of memory (`objsize` 0).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Row {
    /// Cache name, or what the row is (`PageTables`, `socket buffers`...).
    pub name: String,
    /// Bytes of one object (0: not a cache).
    pub objsize: u64,
    /// Change of objects in use (0: not a cache).
    pub objs: i64,
    /// Change in bytes.
    pub bytes: i64,
    /// A reclaimable slab cache (SReclaimable): MemAvailable counts it as available.
    pub reclaimable: bool,
}

/// The breakdown of one run's growth from server idle to all connected.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Breakdown {
    /// Connections held at the second reading.
    pub conns: u64,
    /// /proc/slabinfo could be read at both readings (root).
    pub slab_readable: bool,
    /// The rows: listed caches, other caches, page tables..., RSS.
    pub rows: Vec<Row>,
    /// Growth of MemTotal - MemAvailable, bytes.
    pub used: i64,
    /// Growth of MemTotal - MemFree - Buffers - Cached (memory in use, all slab included),
    /// bytes: the reference of the residual.
    pub in_use: i64,
    /// Growth of `TCP: inuse` (/proc/net/sockstat): 2 per loopback connection on a quiet host.
    pub tcp_sockets: i64,
    /// With a hold-peer baseline: the generator's bytes per connection, by row name, and its
    /// whole-machine bytes per connection.
    pub generator: Option<(Vec<(String, f64)>, f64)>,
}

/// One point of the run: the readings the breakdown needs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    /// /proc/slabinfo (`None`: not readable).
    pub slab: Option<SlabInfo>,
    /// /proc/meminfo and /proc/net/sockstat.
    pub mem: MemInfo,
    /// This process's anonymous memory (smaps_rollup `Anonymous`), bytes.
    pub own_anon: u64,
}

impl Snapshot {
    /// Reads /proc/slabinfo, /proc/meminfo and /proc/net/sockstat now.
    pub(crate) fn read() -> Snapshot {
        Snapshot {
            slab: crate::tools::loadtest::host::slabinfo::read(),
            mem: MemInfo::read(),
            own_anon: crate::tools::loadtest::host::proc::anon_bytes(std::process::id()),
        }
    }
}

/// Growth of one /proc/meminfo figure.
fn grew(a: &MemInfo, b: &MemInfo, f: fn(&MemInfo) -> u64) -> i64 {
    f(b) as i64 - f(a) as i64
}

impl Breakdown {
    /// The breakdown from `a` to `b` with `conns` connections, the server's RSS growth and the
    /// generator's RSS (bytes); `page` is the page size.
    pub(crate) fn new(
        a: &Snapshot,
        b: &Snapshot,
        conns: u64,
        rss: (i64, i64),
        page: u64,
    ) -> Breakdown {
        let mut rows = Vec::new();
        let slab_readable = a.slab.is_some() && b.slab.is_some();
        if let (Some(sa), Some(sb)) = (&a.slab, &b.slab) {
            rows = slab_rows(&sb.delta(sa, page), conns);
        } else {
            rows.push(row("SUnreclaim", grew(&a.mem, &b.mem, |m| m.sunreclaim)));
            let rec = grew(&a.mem, &b.mem, |m| m.slab) - grew(&a.mem, &b.mem, |m| m.sunreclaim);
            rows.push(Row {
                reclaimable: true,
                ..row("SReclaimable", rec)
            });
        }
        rows.push(row("PageTables", grew(&a.mem, &b.mem, |m| m.page_tables)));
        rows.push(row("KernelStack", grew(&a.mem, &b.mem, |m| m.kernel_stack)));
        rows.push(row("VmallocUsed", grew(&a.mem, &b.mem, |m| m.vmalloc)));
        rows.push(row("socket buffers", grew(&a.mem, &b.mem, |m| m.tcp_mem)));
        rows.push(row(ROW_SERVER_RSS, rss.0));
        rows.push(row(ROW_CLIENT_RSS, rss.1));
        Breakdown {
            conns,
            slab_readable,
            rows,
            used: grew(&a.mem, &b.mem, MemInfo::used),
            in_use: grew(&a.mem, &b.mem, MemInfo::in_use),
            tcp_sockets: grew(&a.mem, &b.mem, |m| m.tcp_inuse),
            generator: None,
        }
    }

    /// Other processes opened or closed TCP sockets meanwhile: `TCP: inuse` did not grow by
    /// 2 per connection, within 1%.
    pub(crate) fn noisy(&self) -> bool {
        let want = 2 * self.conns as i64;
        self.tcp_sockets.abs_diff(want) * 100 > want.unsigned_abs()
    }

    /// Bytes per connection.
    pub(crate) fn per_conn(&self, bytes: i64) -> f64 {
        bytes as f64 / self.conns.max(1) as f64
    }

    /// Sum of the rows, bytes: what the connections hold.
    pub(crate) fn sum(&self) -> i64 {
        self.rows.iter().map(|r| r.bytes).sum()
    }

    /// Sum of the reclaimable slab rows, bytes (MemAvailable counts them as available,
    /// although an open socket's inode and dentry cannot be reclaimed).
    pub(crate) fn reclaimable(&self) -> i64 {
        self.rows
            .iter()
            .filter(|r| r.reclaimable)
            .map(|r| r.bytes)
            .sum()
    }

    /// Growth of memory in use (MemTotal - MemFree - Buffers - Cached) not explained by the
    /// rows, bytes.
    pub(crate) fn residual(&self) -> i64 {
        self.in_use - self.sum()
    }

    /// The same against MemTotal - MemAvailable, which counts the reclaimable slab as
    /// available (so the rows it counts are all but the reclaimable ones), bytes.
    pub(crate) fn residual_available(&self) -> i64 {
        self.used - (self.sum() - self.reclaimable())
    }

    /// The residual is within [`TOLERANCE`] of the growth of memory in use.
    pub(crate) fn within_tolerance(&self) -> bool {
        (self.residual().unsigned_abs() as f64) <= TOLERANCE * self.in_use.unsigned_abs() as f64
    }

    /// The kernel's rows only (not the RSS rows), bytes.
    pub(crate) fn kernel(&self) -> i64 {
        self.rows
            .iter()
            .filter(|r| r.name != ROW_SERVER_RSS && r.name != ROW_CLIENT_RSS)
            .map(|r| r.bytes)
            .sum()
    }

    /// The hold peer's share of a row of a hold-peer run (0..=1), see the module doc.
    pub(crate) fn peer_share(name: &str) -> f64 {
        if SOCKET_CACHES.contains(&name) {
            0.5
        } else if URING_CACHES.contains(&name) || name == ROW_SERVER_RSS {
            1.0
        } else {
            0.0
        }
    }

    /// Of a hold-peer run: the generator's bytes per connection by row, and its
    /// whole-machine bytes per connection (growth - the peer's rows).
    pub(crate) fn generator_side(&self) -> (Vec<(String, f64)>, f64) {
        let rows: Vec<(String, f64)> = self
            .rows
            .iter()
            .map(|r| {
                (
                    r.name.clone(),
                    self.per_conn(r.bytes) * (1.0 - Self::peer_share(&r.name)),
                )
            })
            .collect();
        let peer: f64 = self
            .rows
            .iter()
            .map(|r| self.per_conn(r.bytes) * Self::peer_share(&r.name))
            .sum();
        (rows, self.per_conn(self.sum()) - peer)
    }

    /// The generator's bytes per connection for row `name` (0 if the baseline has none).
    pub(crate) fn generator_row(&self, name: &str) -> Option<f64> {
        let (rows, _) = self.generator.as_ref()?;
        Some(
            rows.iter()
                .find(|(n, _)| n == name)
                .map_or(0.0, |(_, v)| *v),
        )
    }

    /// The server's whole-machine bytes per connection: the rows' sum per connection (what
    /// the connections hold, reclaimable slab included) - the generator's (`None` without a
    /// baseline).
    pub(crate) fn server_machine_per_conn(&self) -> Option<f64> {
        let (_, g) = self.generator.as_ref()?;
        Some(self.per_conn(self.sum()) - g)
    }

    /// The breakdown as one JSON object: `{"conns":N,"slab_readable":bool,"rows":[{"name":..,
    /// "objsize":N,"objs":N,"bytes":N,"per_conn":F[,"generator":F,"server":F]}],"sum":N,
    /// "used_growth":N,"in_use_growth":N,"residual_available":N,"residual":N,"residual_share":F,"tolerance":F,"within_tolerance":bool,
    /// "per_conn":{"sum":F,"kernel":F,"used":F,"residual":F[,"generator":F,"server":F]}}`.
    pub(crate) fn json(&self) -> String {
        let rows: Vec<String> = self
            .rows
            .iter()
            .map(|r| {
                let pc = self.per_conn(r.bytes);
                let side = self.generator_row(&r.name).map_or(String::new(), |g| {
                    format!(",\"generator\":{g:.1},\"server\":{:.1}", pc - g)
                });
                format!(
                    "{{\"name\":{},\"objsize\":{},\"objs\":{},\"bytes\":{},\"reclaimable\":{},\"per_conn\":{pc:.1}{side}}}",
                    json_str(&r.name), r.objsize, r.objs, r.bytes, r.reclaimable
                )
            })
            .collect();
        let sides = self.generator.as_ref().map_or(String::new(), |(_, g)| {
            format!(
                ",\"generator\":{g:.1},\"server\":{:.1}",
                self.per_conn(self.sum()) - g
            )
        });
        let share = self.residual() as f64 / (self.in_use.unsigned_abs().max(1)) as f64;
        format!(
            concat!(
                "{{\"conns\":{},\"slab_readable\":{},\"rows\":[{}],\"sum\":{},\"reclaimable\":{},\"used_growth\":{},\"in_use_growth\":{},\"residual_available\":{},",
                "\"residual\":{},\"residual_share\":{:.4},\"tolerance\":{},\"within_tolerance\":{},\"tcp_sockets_growth\":{},\"quiet\":{},",
                "\"per_conn\":{{\"sum\":{:.1},\"kernel\":{:.1},\"used\":{:.1},\"residual\":{:.1}{}}}}}"
            ),
            self.conns, self.slab_readable, rows.join(","), self.sum(), self.reclaimable(), self.used,
            self.in_use, self.residual_available(),
            self.residual(), share, TOLERANCE, self.within_tolerance(), self.tcp_sockets, !self.noisy(),
            self.per_conn(self.sum()), self.per_conn(self.kernel()), self.per_conn(self.used),
            self.per_conn(self.residual()), sides
        )
    }
}

/// The slab's rows from the caches' changes: every [`NAMED`] cache and every other that moved
/// by 1 B a connection or more (objects x bytes per object, biggest first), the other caches
/// summed, and the free room in slabs that changed hands (page growth - object growth), each
/// of the last two split into unreclaimable and reclaimable, so that the rows add up to the
/// growth of the slab's pages.
fn slab_rows(deltas: &[SlabDelta], conns: u64) -> Vec<Row> {
    let (listed, other): (Vec<&SlabDelta>, Vec<&SlabDelta>) = deltas.iter().partition(|d| {
        NAMED.contains(&d.name.as_str()) || d.obj_bytes.unsigned_abs() >= conns.max(1)
    });
    let mut rows: Vec<Row> = listed
        .into_iter()
        .map(|d| Row {
            name: d.name.clone(),
            objsize: d.objsize,
            objs: d.objs,
            bytes: d.obj_bytes,
            reclaimable: d.reclaimable,
        })
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.bytes));
    let sum = |set: &[&SlabDelta], rec: bool, f: fn(&SlabDelta) -> i64| -> i64 {
        set.iter()
            .filter(|d| d.reclaimable == rec)
            .map(|d| f(d))
            .sum()
    };
    let all: Vec<&SlabDelta> = deltas.iter().collect();
    let free = |rec: bool| sum(&all, rec, |d| d.bytes) - sum(&all, rec, |d| d.obj_bytes);
    for rec in [false, true] {
        let (o, f) = match rec {
            false => ("other slab caches", "slab free room"),
            true => ("other reclaimable", "reclaimable free room"),
        };
        rows.push(Row {
            reclaimable: rec,
            ..row(o, sum(&other, rec, |d| d.obj_bytes))
        });
        rows.push(Row {
            reclaimable: rec,
            ..row(f, free(rec))
        });
    }
    rows
}

/// A row that is not a cache.
fn row(name: &str, bytes: i64) -> Row {
    Row {
        name: name.into(),
        bytes,
        ..Row::default()
    }
}
