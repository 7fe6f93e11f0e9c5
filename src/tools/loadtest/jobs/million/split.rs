//! `loadtest million`'s memory breakdown readings, and the hold-peer runs that split it into
//! the load generator's and the server's share (`--hold-peer`, `--split`): see
//! [`Breakdown`](crate::tools::loadtest::report::million::Breakdown) for the method.

use crate::tools::loadtest::host::proc::rss_bytes;
use crate::tools::loadtest::host::procmem::ProcSet;
use crate::tools::loadtest::host::slabinfo::page_size;
use crate::tools::loadtest::report::million::{Breakdown, MillionReport, Snapshot};

/// Reads /proc/slabinfo, /proc/meminfo and /proc/net/sockstat into reading `i` of `r.mem`;
/// returns the whole snapshot.
pub(super) fn snapshot(r: &mut MillionReport, i: usize) -> Snapshot {
    let s = Snapshot::read();
    r.mem[i] = s.mem;
    s
}

/// With every subscriber connected: the workers' RSS and PSS, then the breakdown from
/// `snaps[0]` (server idle) to `snaps[1]` (all connected) into `r`. The server's RSS growth
/// (`r.server_rss_loaded` - idle) and the generator's (workers' PSS + this process's RSS) are
/// its RSS rows.
pub(super) fn connected_memory(r: &mut MillionReport, workers: &[u32], snaps: [&Snapshot; 2]) {
    if let Ok(m) = (ProcSet {
        roots: workers.to_vec(),
    })
    .mem()
    {
        (r.workers_rss, r.workers_pss) = (m.rss, m.pss);
    }
    let server = if r.server_rss_loaded == 0 {
        0 // it died: no reading
    } else {
        r.server_rss_loaded as i64 - r.server_rss_idle as i64
    };
    let me = rss_bytes(std::process::id()).unwrap_or(0);
    let clients = (r.workers_pss + me) as i64;
    r.breakdown = Some(Breakdown::new(
        snaps[0],
        snaps[1],
        r.connected,
        (server, clients),
        page_size(),
    ));
}
