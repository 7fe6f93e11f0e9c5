//! The agent's side of cluster-wide presence events ([`super::presence`] has the protocol):
//! per Redis session, the channel subscription, the scripts, the epoch, the lease, the
//! sweep, the resync, and the edges sent as pipelined `EVALSHA`s.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::conn::{Conn, Sub};
use super::presence::{BATCH, EDGE, LEASE, LEASE_REFRESH, SWEEP, SWEEP_EVERY};
use super::Cluster;
use crate::id::Id;
use crate::mesh::Msg;

/// The agent's presence state for one Redis session.
#[derive(Debug)]
pub(super) struct PresenceAgent {
    prefix: String,
    node: String,
    next_lease: Instant,
    next_sweep: Instant,
    /// `SCRIPT LOAD`'s digests of [`EDGE`] and [`SWEEP`] (loaded once a session: a
    /// restarted Redis is a new session).
    edge_sha: String,
    sweep_sha: String,
}

impl PresenceAgent {
    /// Session start, before the node is marked up: subscribes the channel, loads the
    /// scripts, reads (or sets) the epoch and tells the shards the current number (their
    /// logs may have a gap). None when presence events are off. [`PresenceAgent::join`]
    /// follows once the node is up.
    pub(super) async fn start(
        c: &Cluster,
        publ: &mut Conn,
        sink: &mut Sub,
    ) -> Result<Option<PresenceAgent>, String> {
        if !c.presence_events() {
            return Ok(None);
        }
        let timeout = super::agent::REDIS_TIMEOUT;
        match tokio::time::timeout(timeout, sink.subscribe(c.presence_channel())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("SUBSCRIBE presence: {e}")),
            Err(_) => return Err("SUBSCRIBE presence: no answer within 2 s".to_string()),
        }
        let a = PresenceAgent {
            prefix: c.presence_prefix(),
            node: format!("{:016x}", c.node),
            next_lease: Instant::now(),
            next_sweep: Instant::now(),
            edge_sha: load(publ, &c.script_plain(EDGE)).await?,
            sweep_sha: load(publ, &c.script_plain(SWEEP)).await?,
        };
        let fresh: u64 = rand_epoch(c.node);
        let (epoch, seq): (u64, Option<u64>) = redis::pipe()
            .cmd("SET")
            .arg(format!("{}:pepoch", a.prefix))
            .arg(fresh)
            .arg("NX")
            .ignore()
            .cmd("GET")
            .arg(format!("{}:pepoch", a.prefix))
            .cmd("GET")
            .arg(format!("{}:pseq", a.prefix))
            .query_async::<(u64, Option<u64>)>(publ)
            .await
            .map_err(|e| format!("presence epoch: {e}"))?;
        c.presence.epoch.store(epoch, Relaxed);
        for s in 0..c.mesh.shards() {
            let seq = seq.unwrap_or(0);
            c.mesh.push(s, vec![Msg::PresenceFloor { epoch, seq }]);
        }
        Ok(Some(a))
    }

    /// Once the node is up (the hub queues its edges from then on): takes the lease and
    /// resyncs the node's ids.
    pub(super) async fn join(&mut self, c: &Cluster, publ: &mut Conn) -> Result<(), String> {
        self.lease(publ, true).await?;
        self.resync(c, publ).await
    }

    /// When the agent next needs to run for presence (lease or sweep).
    /// The one key the scripts declare (they use none by name): it routes them to the
    /// presence slot on Redis Cluster, where Redis lets a script touch other keys of its slot.
    fn route_key(&self) -> String {
        format!("{}:pseq", self.prefix)
    }

    pub(super) fn deadline(&self) -> Instant {
        self.next_lease.min(self.next_sweep)
    }

    /// After each wake: sends queued edges, refreshes the lease, sweeps when due.
    pub(super) async fn step(&mut self, c: &Cluster, publ: &mut Conn) -> Result<(), String> {
        let mut edges = Vec::new();
        while let Some(e) = c.presence.edges.pop() {
            edges.push(e);
            if edges.len() == BATCH {
                self.send(publ, &std::mem::take(&mut edges)).await?;
            }
        }
        self.send(publ, &edges).await?;
        let now = Instant::now();
        if now >= self.next_lease && !self.lease(publ, false).await? {
            // The lease had expired (a pause longer than LEASE): swept; add our ids again.
            tracing::warn!("cluster presence: this node's lease had expired; resyncing its ids");
            self.resync(c, publ).await?;
        }
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_EVERY;
            let n: u64 = redis::cmd("EVALSHA")
                .arg(&self.sweep_sha)
                .arg(1)
                .arg(self.route_key())
                .arg(&self.prefix)
                .query_async(publ)
                .await
                .map_err(|e| format!("presence sweep: {e}"))?;
            if n > 0 {
                tracing::info!(offline = n, "cluster presence: swept the ids of lost nodes");
            }
        }
        Ok(())
    }

    /// Refreshes the lease; returns whether it was still there (`first`: taken anew).
    async fn lease(&mut self, publ: &mut Conn, first: bool) -> Result<bool, String> {
        self.next_lease = Instant::now() + LEASE_REFRESH;
        let key = format!("{}:plive:{}", self.prefix, self.node);
        let mut cmd = redis::cmd("SET");
        cmd.arg(&key).arg(1).arg("PX").arg(LEASE.as_millis() as u64);
        if !first {
            cmd.arg("XX");
        }
        let r: Option<String> = cmd
            .query_async(publ)
            .await
            .map_err(|e| format!("presence lease: {e}"))?;
        if r.is_none() {
            // Gone: take it anew before resyncing.
            redis::cmd("SET")
                .arg(&key)
                .arg(1)
                .arg("PX")
                .arg(LEASE.as_millis() as u64)
                .query_async::<()>(publ)
                .await
                .map_err(|e| format!("presence lease: {e}"))?;
        }
        Ok(r.is_some() || first)
    }

    /// Makes Redis agree with the node's set: adds the node to every id it holds, removes it
    /// from every id Redis lists for it that it no longer holds.
    async fn resync(&mut self, c: &Cluster, publ: &mut Conn) -> Result<(), String> {
        // Edges queued before now are in the set already.
        while c.presence.edges.pop().is_some() {}
        let held: Vec<Id> = {
            let held = c.presence.held.lock().unwrap_or_else(|e| e.into_inner());
            held.iter().cloned().collect()
        };
        let listed: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
            .arg(format!("{}:pids:{}", self.prefix, self.node))
            .query_async(publ)
            .await
            .map_err(|e| format!("presence resync: {e}"))?;
        let gone: Vec<(Id, bool)> = {
            let held = c.presence.held.lock().unwrap_or_else(|e| e.into_inner());
            (listed.iter().filter_map(|raw| Id::parse(raw).ok()))
                .filter(|id| !held.contains(id))
                .map(|id| (id, false))
                .collect()
        };
        for chunk in held.chunks(BATCH) {
            let edges: Vec<(Id, bool)> = chunk.iter().map(|id| (id.clone(), true)).collect();
            self.send(publ, &edges).await?;
        }
        for chunk in gone.chunks(BATCH) {
            self.send(publ, chunk).await?;
        }
        Ok(())
    }

    /// Runs [`EDGE`] for each edge, pipelined.
    async fn send(&self, publ: &mut Conn, edges: &[(Id, bool)]) -> Result<(), String> {
        if edges.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (id, online) in edges {
            pipe.cmd("EVALSHA")
                .arg(&self.edge_sha)
                .arg(1)
                .arg(self.route_key())
                .arg(&self.prefix)
                .arg(&self.node)
                .arg(if *online { "1" } else { "0" })
                .arg(id.to_string())
                .ignore();
        }
        pipe.query_async::<()>(publ)
            .await
            .map_err(|e| format!("presence edges: {e}"))
    }
}

/// `SCRIPT LOAD`s `lua`; its digest.
async fn load(publ: &mut Conn, lua: &str) -> Result<String, String> {
    redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(lua)
        .query_async(publ)
        .await
        .map_err(|e| format!("presence SCRIPT LOAD: {e}"))
}

/// A fresh epoch: time and node mixed, never 0.
fn rand_epoch(node: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    (t ^ node.rotate_left(17)) | 1
}
