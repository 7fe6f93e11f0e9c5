//! Affine mode: every node of a cluster must run with the same node list (`--cluster-nodes`,
//! `--cluster-node-urls`), or nodes compute different owners: redirect loops, buckets nobody
//! subscribes. So the list is claimed in Redis: `uc:<B>:affine` holds `"<N>|<urls>"`, set
//! `NX` with a [`LEASE`] that every node with the same list refreshes (every 2 s, with the
//! slot check). A node whose list differs from the key's does not join: its session fails
//! (the node stays down, as without Redis, and tries again with backoff), and it logs why
//! once, at error level. Changing the list therefore means stopping the old nodes: once the
//! last is gone the key lapses within [`LEASE`] and the new list is claimed.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use super::conn::Conn;
use super::Cluster;

/// How long the claim outlives the last node refreshing it.
pub const LEASE: Duration = Duration::from_secs(30);

/// Set once the mismatch has been logged (one error line per process).
static LOGGED: AtomicBool = AtomicBool::new(false);

impl Cluster {
    /// The key of the claim and this node's value, in affine mode.
    fn affine_claim(&self) -> Option<(String, String)> {
        let a = self.cfg.affine.as_ref()?;
        let urls: Vec<&str> = a.urls.iter().map(AsRef::as_ref).collect();
        Some((
            format!("{}:affine", self.prefix),
            format!("{}|{}", urls.len(), urls.join(",")),
        ))
    }
}

/// Claims (or refreshes) the node list in affine mode; nothing in broadcast mode.
///
/// Errors: Redis failed; another list holds the key (the message names both lists).
pub(super) async fn claim(c: &Cluster, publ: &mut Conn) -> Result<(), String> {
    let Some((key, mine)) = c.affine_claim() else {
        return Ok(());
    };
    let ms = LEASE.as_millis() as u64;
    let set: Option<String> = redis::cmd("SET")
        .arg(&key)
        .arg(&mine)
        .arg("NX")
        .arg("PX")
        .arg(ms)
        .query_async(publ)
        .await
        .map_err(|e| format!("SET {key}: {e}"))?;
    if set.is_some() {
        return Ok(());
    }
    let held: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(publ)
        .await
        .map_err(|e| format!("GET {key}: {e}"))?;
    match held {
        Some(h) if h == mine => {
            let _: i64 = redis::cmd("PEXPIRE")
                .arg(&key)
                .arg(ms)
                .query_async(publ)
                .await
                .map_err(|e| format!("PEXPIRE {key}: {e}"))?;
            Ok(())
        }
        // Lapsed between the two commands: claimed on the next try.
        None => Err(format!("{key} lapsed while claimed; trying again")),
        Some(h) => {
            let why = format!(
                "this node's affine list ({mine}) differs from the cluster's ({h}, Redis key {key}): every node needs the same --cluster-nodes and --cluster-node-urls; this node stays out of the cluster until they match (a list held by nodes that are gone lapses within {} s)",
                LEASE.as_secs()
            );
            if !LOGGED.swap(true, Relaxed) {
                tracing::error!("cluster: {why}");
            }
            Err("the affine node list does not match the cluster's (logged at error level)".into())
        }
    }
}
