//! Cluster control: kicks and presence counts across nodes (`DELETE /subscribers/<id>`,
//! `GET /presence/<id>`, `POST /presence` in cluster mode).
//!
//! Every node's agent subscribes the control channel `uc:<B>:ctl` (`uc<DB>:<B>:ctl` for a
//! URL with a database other than 0, as the bucket channels) and its own reply channel
//! `uc:<B>:ctl:<node>` (`<node>` the node id, 16 hex digits).
//! - The requesting shard does its node's part as without a cluster and queues a
//!   [`CtlRequest`] ([`Cluster::ctl_request`]); the agent numbers it and PUBLISHes a request
//!   record on the control channel. PUBLISH answers how many nodes are subscribed (this one
//!   included): the agent waits for that many less one answers, at most [`CTL_TIMEOUT`].
//! - Every other node's agent hands the request to each of its shards
//!   ([`crate::mesh::Msg::CtlAsk`]); each kicks (or counts) its local connections under the
//!   ids and gives its counts back ([`Cluster::ctl_part`]); once all shards have, the agent
//!   PUBLISHes the sums on the requester's reply channel.
//! - The requester's agent hands the summed answers and the number of nodes that answered
//!   (this one included) to the requesting shard ([`crate::mesh::Msg::CtlAnswer`]), which
//!   completes the HTTP reply. Redis down (or lost meanwhile): answered at once with what is
//!   in, `"nodes":1` if nothing else.
//!
//! Records (all integers big-endian): a request is `UCQ1`, node `u64`, request `u64`, kind
//! `u8`, id count `u32`, then per id its length `u16` and bytes; an answer is `UCA1`,
//! answering node `u64`, request `u64`, count `u32`, then the counts `u32` each.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;

use super::conn::{Conn, Sub};
use super::Cluster;
use crate::id::Id;
use crate::mesh::Msg;

/// Longest wait for the other nodes' answers.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(1);
const REQ_MAGIC: &[u8; 4] = b"UCQ1";
const ANS_MAGIC: &[u8; 4] = b"UCA1";

/// What a control request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtlKind {
    /// End the connections under the id; count them.
    Kick = 1,
    /// Count the connections under each id.
    Count = 2,
}

/// A shard's request for the other nodes.
#[derive(Debug)]
pub struct CtlRequest {
    /// What to do.
    pub kind: CtlKind,
    /// The ids.
    pub ids: Arc<[Id]>,
    /// The requesting shard.
    pub shard: u16,
    /// Its pending reply.
    pub token: u32,
}

/// One shard's counts for another node's request `req` (the agent's handle).
#[derive(Debug)]
pub struct CtlPart {
    /// The agent's handle ([`crate::mesh::Msg::CtlAsk`]'s `req`).
    pub req: u64,
    /// One count per id.
    pub counts: Vec<u32>,
}

/// The queues between the shards and the agent.
#[derive(Debug, Default)]
pub(super) struct CtlQueues {
    requests: SegQueue<CtlRequest>,
    parts: SegQueue<CtlPart>,
    /// The next request number or handle, never reused (not even across Redis sessions:
    /// a late answer to a request of a previous session must match nothing).
    next: AtomicU64,
}

impl Cluster {
    /// The control channel (`node` none) or `node`'s reply channel.
    pub(super) fn ctl_channel(&self, node: Option<u64>) -> String {
        let base = format!("{}:ctl", self.prefix);
        match node {
            Some(n) => format!("{base}:{n:016x}"),
            None => base,
        }
    }

    /// Queues a request for the other nodes; false (nothing queued) if Redis is down: the
    /// caller answers with its node's figures alone.
    pub fn ctl_request(&self, r: CtlRequest) -> bool {
        if !self.is_up() {
            return false;
        }
        self.ctl.requests.push(r);
        self.wake_agent();
        true
    }

    /// A shard's counts for another node's request.
    pub fn ctl_part(&self, p: CtlPart) {
        self.ctl.parts.push(p);
        self.wake_agent();
    }

    /// Answers every queued request at once with no other node (Redis down).
    pub(super) fn ctl_refuse_queued(&self) {
        while let Some(r) = self.ctl.requests.pop() {
            let counts = vec![0; r.ids.len()];
            answer(self, r.shard, r.kind, r.token, counts, 1);
        }
    }
}

fn answer(c: &Cluster, shard: u16, kind: CtlKind, token: u32, counts: Vec<u32>, nodes: u16) {
    let m = Msg::CtlAnswer {
        kind,
        token,
        counts,
        nodes,
    };
    c.mesh.push(usize::from(shard), vec![m]);
}

/// A request of this node waiting for the other nodes.
struct Mine {
    shard: u16,
    token: u32,
    kind: CtlKind,
    counts: Vec<u32>,
    /// Answers expected (known once PUBLISH has returned).
    expect: Option<u32>,
    got: u32,
    deadline: Instant,
}

/// Another node's request being answered by this node's shards.
struct Theirs {
    node: u64,
    req: u64,
    counts: Vec<u32>,
    left: usize,
}

/// The agent's side, for one Redis session.
#[derive(Default)]
pub(super) struct CtlAgent {
    mine: HashMap<u64, Mine>,
    theirs: HashMap<u64, Theirs>,
}

/// Whether a pub/sub payload is a control record.
pub(super) fn is_ctl(payload: &[u8]) -> bool {
    payload.starts_with(REQ_MAGIC) || payload.starts_with(ANS_MAGIC)
}

/// Subscribes the control channel and this node's reply channel.
pub(super) async fn subscribe(c: &Cluster, sink: &mut Sub) -> Result<(), String> {
    let chans = [c.ctl_channel(None), c.ctl_channel(Some(c.node))];
    for ch in chans {
        match tokio::time::timeout(super::agent::REDIS_TIMEOUT, sink.subscribe(ch)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("SUBSCRIBE control: {e}")),
            Err(_) => return Err("SUBSCRIBE control: no answer within 2 s".to_string()),
        }
    }
    Ok(())
}

impl CtlAgent {
    /// The earliest deadline of this node's waiting requests.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.mine.values().map(|m| m.deadline).min()
    }

    /// A control record from Redis.
    pub(super) fn take(&mut self, c: &Cluster, payload: &[u8]) {
        let Some((magic, node, req, rest)) = head(payload) else {
            return bad(c);
        };
        if node == c.node {
            return; // own request, back from the control channel
        }
        if magic == REQ_MAGIC {
            self.their_request(c, node, req, rest);
        } else if let Some(m) = self.mine.get_mut(&req) {
            let Some(counts) = decode_counts(rest, m.counts.len()) else {
                return bad(c);
            };
            for (sum, n) in m.counts.iter_mut().zip(counts) {
                *sum = sum.saturating_add(n);
            }
            m.got += 1;
        }
    }

    fn their_request(&mut self, c: &Cluster, node: u64, req: u64, rest: &[u8]) {
        let Some((kind, ids)) = decode_request(rest) else {
            return bad(c);
        };
        let h = c.ctl.next.fetch_add(1, Relaxed);
        let shards = c.mesh.shards();
        let ids: Arc<[Id]> = ids.into();
        self.theirs.insert(
            h,
            Theirs {
                node,
                req,
                counts: vec![0; ids.len()],
                left: shards,
            },
        );
        for s in 0..shards {
            let ids = ids.clone();
            c.mesh.push(s, vec![Msg::CtlAsk { kind, ids, req: h }]);
        }
    }

    /// After each wake: answers finished requests of other nodes, sends this node's new
    /// ones, and hands the complete (or timed-out) ones to their shards.
    pub(super) async fn step(&mut self, c: &Cluster, publ: &mut Conn) -> Result<(), String> {
        while let Some(p) = c.ctl.parts.pop() {
            let Some(t) = self.theirs.get_mut(&p.req) else {
                continue; // from before a reconnect
            };
            for (sum, n) in t.counts.iter_mut().zip(&p.counts) {
                *sum = sum.saturating_add(*n);
            }
            t.left -= 1;
            if t.left > 0 {
                continue;
            }
            if let Some(t) = self.theirs.remove(&p.req) {
                let mut out = Vec::with_capacity(24 + 4 * t.counts.len());
                out.extend_from_slice(ANS_MAGIC);
                out.extend_from_slice(&c.node.to_be_bytes());
                out.extend_from_slice(&t.req.to_be_bytes());
                out.extend_from_slice(&(t.counts.len() as u32).to_be_bytes());
                for n in &t.counts {
                    out.extend_from_slice(&n.to_be_bytes());
                }
                publish(c, publ, c.ctl_channel(Some(t.node)), out).await?;
            }
        }
        while let Some(r) = c.ctl.requests.pop() {
            let req = c.ctl.next.fetch_add(1, Relaxed);
            let out = encode_request(c.node, req, r.kind, &r.ids);
            self.mine.insert(
                req,
                Mine {
                    shard: r.shard,
                    token: r.token,
                    kind: r.kind,
                    counts: vec![0; r.ids.len()],
                    expect: None,
                    got: 0,
                    deadline: Instant::now() + CTL_TIMEOUT,
                },
            );
            let n = publish(c, publ, c.ctl_channel(None), out).await?;
            if let Some(m) = self.mine.get_mut(&req) {
                m.expect = Some(n.saturating_sub(1));
            }
        }
        self.settle(c, false);
        Ok(())
    }

    /// Hands this node's complete requests (all of them with `all`: the session ended) to
    /// their shards.
    pub(super) fn settle(&mut self, c: &Cluster, all: bool) {
        let now = Instant::now();
        let done: Vec<u64> = (self.mine.iter())
            .filter(|(_, m)| all || now >= m.deadline || m.expect.is_some_and(|e| m.got >= e))
            .map(|(&k, _)| k)
            .collect();
        for k in done {
            if let Some(m) = self.mine.remove(&k) {
                let nodes = u16::try_from(m.got + 1).unwrap_or(u16::MAX);
                answer(c, m.shard, m.kind, m.token, m.counts, nodes);
            }
        }
        if all {
            self.theirs.clear();
        }
    }
}

async fn publish(
    c: &Cluster,
    publ: &mut Conn,
    ch: String,
    payload: Vec<u8>,
) -> Result<u32, String> {
    let mut cmd = redis::cmd(c.publish_cmd());
    cmd.arg(ch).arg(payload);
    cmd.query_async::<u32>(publ)
        .await
        .map_err(|e| format!("PUBLISH control: {e}"))
}

fn bad(c: &Cluster) {
    c.stats.bad.fetch_add(1, Relaxed);
}

fn encode_request(node: u64, req: u64, kind: CtlKind, ids: &[Id]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + ids.len() * 16);
    out.extend_from_slice(REQ_MAGIC);
    out.extend_from_slice(&node.to_be_bytes());
    out.extend_from_slice(&req.to_be_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
    for id in ids {
        let s = id.to_string();
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out
}

/// A record's magic, node and request number, and the rest.
fn head(p: &[u8]) -> Option<(&[u8], u64, u64, &[u8])> {
    let (magic, p) = p.split_at_checked(4)?;
    let (node, p) = p.split_at_checked(8)?;
    let (req, p) = p.split_at_checked(8)?;
    Some((
        magic,
        u64::from_be_bytes(node.try_into().ok()?),
        u64::from_be_bytes(req.try_into().ok()?),
        p,
    ))
}

fn take_u32(p: &mut &[u8]) -> Option<u32> {
    let (n, rest) = p.split_at_checked(4)?;
    *p = rest;
    Some(u32::from_be_bytes(n.try_into().ok()?))
}

fn decode_request(mut p: &[u8]) -> Option<(CtlKind, Vec<Id>)> {
    let (&k, rest) = p.split_first()?;
    p = rest;
    let kind = match k {
        1 => CtlKind::Kick,
        2 => CtlKind::Count,
        _ => return None,
    };
    let n = take_u32(&mut p)? as usize;
    let mut ids = Vec::with_capacity(n.min(10_000));
    for _ in 0..n {
        let (len, rest) = p.split_at_checked(2)?;
        let len = usize::from(u16::from_be_bytes(len.try_into().ok()?));
        let (id, rest) = rest.split_at_checked(len)?;
        ids.push(Id::parse(id).ok()?);
        p = rest;
    }
    p.is_empty().then_some((kind, ids))
}

fn decode_counts(mut p: &[u8], want: usize) -> Option<Vec<u32>> {
    let n = take_u32(&mut p)? as usize;
    if n != want || p.len() != 4 * n {
        return None;
    }
    (0..n).map(|_| take_u32(&mut p)).collect()
}

#[cfg(test)]
mod tests {
    use super::{decode_counts, decode_request, encode_request, head, CtlKind, REQ_MAGIC};
    use crate::id::Id;

    #[test]
    fn request_round_trip() {
        let ids = [Id::Num(7), Id::parse(b"user-x").unwrap()];
        let p = encode_request(0xabc, 9, CtlKind::Count, &ids);
        let (magic, node, req, rest) = head(&p).unwrap();
        assert_eq!((magic, node, req), (&REQ_MAGIC[..], 0xabc, 9));
        let (kind, got) = decode_request(rest).unwrap();
        assert_eq!(kind, CtlKind::Count);
        assert_eq!(got, ids);
        assert!(decode_request(&rest[..rest.len() - 1]).is_none());
        assert_eq!(decode_counts(&[0, 0, 0, 1, 0, 0, 0, 5], 1), Some(vec![5]));
        assert_eq!(decode_counts(&[0, 0, 0, 1, 0, 0, 0, 5], 2), None);
    }
}
