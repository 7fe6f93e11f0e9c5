//! Where `loadtest --nodes N` puts each subscriber, and the flags that make the nodes agree:
//! an equal block of the ids per node (`--cluster-mode broadcast`), or each id on the node
//! owning its bucket (`--cluster-mode affine`: the server's own bucket hash and jump
//! consistent hash, [`crate::cluster::affine`], with the default `--cluster-buckets`).

use std::sync::Arc;

use anyhow::{bail, Result};

use crate::cluster::affine::{bucket_of, jump, ClusterMode};
use crate::cluster::DEFAULT_BUCKETS;
use crate::id::Id;

/// The share `k` of `n` parts of `total`: (first, count).
pub(super) fn share(total: u64, n: u64, k: u64) -> (u64, u64) {
    let (per, extra) = (total / n, total % n);
    (k * per + k.min(extra), per + u64::from(k < extra))
}

/// Each node's subscriber ids.
pub(super) enum Placement {
    /// Node k holds ids `share(conns, n, k) + 1`: (first id, count) per node.
    Blocks(Vec<(u64, u64)>),
    /// Node k holds the ids of 1..=conns whose bucket node k owns.
    Owners(Vec<Arc<[u64]>>),
}

impl Placement {
    /// The placement of ids 1..=`conns` over `n` nodes in `mode`. Errors: a server argument
    /// changes `--cluster-buckets` (the job would place ids by the wrong buckets), or a
    /// node would hold no subscriber.
    pub(super) fn new(
        mode: ClusterMode,
        conns: u64,
        n: usize,
        server_args: &[String],
    ) -> Result<Placement> {
        if mode == ClusterMode::Broadcast {
            let nodes = (0..n as u64).map(|k| share(conns, n as u64, k)).collect();
            return Ok(Placement::Blocks(nodes));
        }
        if server_args
            .iter()
            .any(|a| a.starts_with("--cluster-buckets"))
        {
            bail!("--cluster-mode affine places ids by the default --cluster-buckets ({DEFAULT_BUCKETS}): leave it out of --server-arg");
        }
        let mut nodes: Vec<Vec<u64>> = vec![Vec::new(); n];
        for id in 1..=conns {
            nodes[owner_of(id, n as u32) as usize].push(id);
        }
        if let Some(k) = nodes.iter().position(Vec::is_empty) {
            bail!("node {k} owns none of the ids 1..={conns}: use more --conns");
        }
        Ok(Placement::Owners(
            nodes.into_iter().map(Arc::from).collect(),
        ))
    }

    /// Node k's subscribers: (first id, count, the id list in affine mode).
    pub(super) fn node(&self, k: usize) -> (u64, u64, Option<Arc<[u64]>>) {
        match self {
            Placement::Blocks(b) => (b[k].0 + 1, b[k].1, None),
            Placement::Owners(o) => (o[k][0], o[k].len() as u64, Some(o[k].clone())),
        }
    }
}

/// The node owning numeric id `id` among `n` (as `serve --cluster-mode affine` decides).
pub(super) fn owner_of(id: u64, n: u32) -> u32 {
    let id = Id::parse(id.to_string().as_bytes()).expect("a decimal number is a valid id");
    jump(u64::from(bucket_of(&id, DEFAULT_BUCKETS)), n)
}

/// Node `k`'s extra `serve` flags in `mode` (none in broadcast mode). The URLs only fill the
/// 307s' `Location`, which the job never follows: it connects each subscriber to its owner.
pub(super) fn node_args(mode: ClusterMode, n: usize, k: usize) -> Vec<String> {
    if mode == ClusterMode::Broadcast {
        return Vec::new();
    }
    let urls: Vec<String> = (0..n)
        .map(|i| format!("http://node{i}.loadtest.invalid:80"))
        .collect();
    vec![
        "--cluster-mode".into(),
        "affine".into(),
        "--cluster-nodes".into(),
        n.to_string(),
        "--cluster-node-index".into(),
        k.to_string(),
        "--cluster-node-urls".into(),
        urls.join(","),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_everything_once() {
        for (total, n) in [(10_000u64, 2u64), (30_001, 3), (5, 5), (7, 2)] {
            let mut next = 0;
            for k in 0..n {
                let (first, count) = share(total, n, k);
                assert_eq!(first, next);
                next += count;
            }
            assert_eq!(next, total);
        }
    }

    #[test]
    fn owners_cover_every_id_once_near_evenly() {
        let p = Placement::new(ClusterMode::Affine, 10_000, 4, &[]).unwrap();
        let mut seen = vec![false; 10_001];
        for k in 0..4 {
            let (_, count, ids) = p.node(k);
            let ids = ids.unwrap();
            assert_eq!(ids.len() as u64, count);
            assert!(
                (1_800..3_200).contains(&count),
                "node {k}: {count} of 10,000"
            );
            for &id in ids.iter() {
                assert!(!seen[id as usize], "id {id} twice");
                seen[id as usize] = true;
                assert_eq!(owner_of(id, 4), k as u32);
            }
        }
        assert!(seen[1..].iter().all(|&s| s));
    }
}
