//! Loading the friends store (`--friends FILE`) before the shards start: the lock on FILE,
//! the edge file, then its journal (replayed and compacted); one part per shard.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;

use crate::config::ServerConfig;
use crate::friends::journal::{self, Journal};
use crate::friends::load::{self, LoadOptions};
use crate::friends::lock::GraphLock;
use crate::shard::FriendsShard;
use crate::stats::ShardStats;

/// Loads the friends store (`--friends`): the edge file, then its journal (replayed and
/// compacted); one part per shard (empty without `--friends`). Logs and records in `stats`
/// the load time, entries, heap bytes and the RSS the load added. The lock on FILE
/// ([`crate::friends::lock`]) is taken first and kept in the journal the shards share: it is
/// held as long as any shard can append. Errors: the file's directory does not exist, or
/// another server holds the lock (both before anything is loaded); a bad line under
/// `--strict`; the file or journal cannot be read or written.
pub(super) fn load_friends(
    cfg: &ServerConfig,
    stats: &[ShardStats],
) -> anyhow::Result<Vec<Option<FriendsShard>>> {
    let Some(path) = &cfg.friends else {
        return Ok(Vec::new());
    };
    // Before anything is loaded or logged: a FILE whose directory is missing is a wrong
    // path (a typo, a volume not mounted), not an empty graph; no journal could be kept.
    // Then the lock, before the journal is compacted: a second server on FILE would rename
    // its compacted journal over ours while we append to it (see friends::lock).
    let held = GraphLock::take(path)?;
    let rss0 = crate::stats::rss_bytes();
    let t0 = Instant::now();
    let opts = LoadOptions {
        shards: cfg.shards,
        directed: cfg.friends_directed,
        strict: cfg.friends_strict,
    };
    let (mut graphs, rep) = load::load(path, opts)?;
    let jpath = journal::path_for(path);
    let (j, replay) = Journal::start(&jpath, &mut graphs, cfg.friends_directed)
        .with_context(|| format!("friends journal {}", jpath.display()))?;
    let j = j.holding(held);
    let elapsed = t0.elapsed();
    // The load's edge buffers were freed; hand their pages back before measuring.
    crate::alloc::trim();
    let grown = crate::stats::rss_bytes().saturating_sub(rss0);
    for (s, g) in stats.iter().zip(&graphs) {
        s.graph_users.store(g.csr.users.len() as u64, Relaxed);
        s.graph_entries.store(g.csr.entries() as u64, Relaxed);
        s.graph_heap_bytes.store(g.csr.heap_bytes() as u64, Relaxed);
    }
    stats[0].graph_rss_bytes.store(grown, Relaxed);
    stats[0]
        .graph_load_us
        .store(elapsed.as_micros() as u64, Relaxed);
    tracing::info!(
        file = %path.display(),
        lines = rep.lines,
        edges = rep.edges,
        bad_lines = rep.bad_lines,
        self_loops = rep.self_loops,
        duplicates = rep.duplicates,
        users = rep.users,
        entries = rep.entries,
        heap_bytes = rep.heap_bytes,
        rss_grown = grown,
        rss_per_entry = format!("{:.2}", grown as f64 / rep.entries.max(1) as f64),
        journal_edits = replay.edits,
        journal_bad_lines = replay.bad_lines,
        journal_kept = replay.kept,
        secs = format!("{:.2}", elapsed.as_secs_f64()),
        "friends graph loaded"
    );
    let j = Arc::new(Mutex::new(j));
    let shards = graphs
        .into_iter()
        .map(|graph| {
            Some(FriendsShard {
                graph,
                journal: Some(j.clone()),
                directed: cfg.friends_directed,
            })
        })
        .collect();
    Ok(shards)
}
