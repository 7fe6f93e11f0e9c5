//! What the agent receives from Redis: each pub/sub payload decoded ([`super::wire`]), its
//! records handed to the owner shards of their ids, batched per shard; own echoes and
//! undecodable records counted.

use std::sync::atomic::Ordering::Relaxed;

use bytes::Bytes;

use super::sequencer::Sequencer;
use super::wire::{self, Kind};
use super::Cluster;
use crate::id::Id;
use crate::mesh::Msg;

/// Records from Redis on their way to the owner shards, batched per shard.
pub(super) struct Inbound {
    out: Vec<Vec<Msg>>,
    /// A bad payload was logged on this connection (one line per session).
    warned: bool,
    /// A message from a node without history was logged (one line per session).
    warned_mixed: bool,
}

impl Inbound {
    pub(super) fn new(shards: usize) -> Inbound {
        Inbound {
            out: (0..shards).map(|_| Vec::new()).collect(),
            warned: false,
            warned_mixed: false,
        }
    }

    pub(super) fn take(
        &mut self,
        c: &Cluster,
        channel: &str,
        payload: &[u8],
        seq: &mut Option<Sequencer>,
    ) {
        let payload = Bytes::copy_from_slice(payload);
        let (node, records, err) = wire::decode(&payload);
        let mine = node == Some(c.node);
        let mut bad = u64::from(err.is_some());
        c.stats.inbound.fetch_add(records.len() as u64, Relaxed);
        for r in records {
            if mine && r.kind != Kind::Positioned {
                c.stats.echoes.fetch_add(1, Relaxed);
                continue;
            }
            match (r.kind, Id::parse(&r.key)) {
                (Kind::Positioned, Ok(id)) => {
                    let owner = id.owner(self.out.len());
                    let m = match (r.pos, seq.as_mut()) {
                        (Some((pos, tag)), Some(s)) => s.record(mine, id, r.msg, pos, tag),
                        // History off here: delivered as a plain send (no cursor to carry).
                        _ => Msg::Remote { id, msg: r.msg },
                    };
                    self.out[owner].push(m);
                    if !mine {
                        c.stats.received.fetch_add(1, Relaxed);
                    }
                }
                // History on here, off on the node that sent it: it has no number, and a
                // number made up here would mean nothing on the other nodes. Dropped, counted.
                (Kind::Send, Ok(_)) if seq.is_some() => {
                    bad += 1;
                    if !self.warned_mixed {
                        self.warned_mixed = true;
                        tracing::warn!("cluster: a message from a node with --history 0 dropped (this node keeps history in Redis; every node must have history on, or every node off); counted in /stats cluster_bad_records");
                    }
                }
                (Kind::Send, Ok(id)) => {
                    let owner = id.owner(self.out.len());
                    self.out[owner].push(Msg::Remote { id, msg: r.msg });
                    c.stats.received.fetch_add(1, Relaxed);
                }
                // A friends event (friends channel, subscribed by `want_friends`): the owner
                // of the user fans it out from this node's copy of the graph.
                (Kind::Friends, Ok(id)) => match crate::friends::user_of(&id) {
                    Some(user) => {
                        let owner = crate::friends::owner_of(user, self.out.len());
                        self.out[owner].push(Msg::RemoteFriends { user, msg: r.msg });
                        c.stats.received.fetch_add(1, Relaxed);
                    }
                    // Not a graph user: it has no friends anywhere.
                    None => {
                        c.stats.received.fetch_add(1, Relaxed);
                    }
                },
                (_, Err(_)) => bad += 1,
            }
        }
        if bad > 0 {
            c.stats.bad.fetch_add(bad, Relaxed);
            if !self.warned {
                self.warned = true;
                tracing::warn!(
                    channel,
                    "cluster: undecodable payload or invalid id from Redis ({err:?}); counted in /stats cluster_bad_records"
                );
            }
        }
    }

    pub(super) fn flush(&mut self, c: &Cluster) {
        for (s, batch) in self.out.iter_mut().enumerate() {
            if !batch.is_empty() {
                c.mesh.push(s, std::mem::take(batch));
            }
        }
    }
}
