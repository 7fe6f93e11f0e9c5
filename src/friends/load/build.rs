//! Building each shard's CSR from its packed (user, follower) entries: sort, de-duplicate,
//! then one pass for the user and offset arrays; one thread per shard.

use super::{LoadError, LoadReport};
use crate::friends::{Csr, ShardGraph};

/// Builds every shard's CSR from its buffer, one thread per shard, adding the totals to
/// `rep`. Errors: a shard over 2^32 entries (or its build thread panicked).
pub(super) fn build_all(
    bufs: Vec<Vec<u64>>,
    rep: &mut LoadReport,
) -> Result<Vec<ShardGraph>, LoadError> {
    let built: Vec<Result<(Csr, u64), LoadError>> = std::thread::scope(|s| {
        let handles: Vec<_> = bufs
            .into_iter()
            .map(|b| s.spawn(move || build(b)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(LoadError::TooLarge)))
            .collect()
    });
    let mut graphs = Vec::with_capacity(built.len());
    for b in built {
        let (csr, dups) = b?;
        rep.duplicates += dups;
        rep.users += csr.users.len() as u64;
        rep.entries += csr.entries() as u64;
        rep.heap_bytes += csr.heap_bytes() as u64;
        graphs.push(ShardGraph::new(csr));
    }
    Ok(graphs)
}

/// Sorts one shard's packed entries and builds its CSR; returns it and the repeats dropped.
fn build(mut entries: Vec<u64>) -> Result<(Csr, u64), LoadError> {
    entries.sort_unstable();
    let before = entries.len();
    entries.dedup();
    let dups = (before - entries.len()) as u64;
    if entries.len() > u32::MAX as usize {
        return Err(LoadError::TooLarge);
    }
    let mut users_n = 0;
    let mut prev = None;
    for &e in &entries {
        let u = (e >> 32) as u32;
        if prev != Some(u) {
            users_n += 1;
            prev = Some(u);
        }
    }
    let mut csr = Csr {
        users: Vec::with_capacity(users_n),
        offsets: Vec::with_capacity(users_n + 1),
        nbrs: Vec::with_capacity(entries.len()),
    };
    let mut prev = None;
    for &e in &entries {
        let u = (e >> 32) as u32;
        if prev != Some(u) {
            csr.users.push(u);
            csr.offsets.push(csr.nbrs.len() as u32);
            prev = Some(u);
        }
        csr.nbrs.push(e as u32);
    }
    csr.offsets.push(csr.nbrs.len() as u32);
    Ok((csr, dups))
}
