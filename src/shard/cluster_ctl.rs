//! Stage 13c, cluster control: a shard's side of kicks and presence counts across nodes
//! ([`crate::cluster::control`]). The requesting shard does its node's part as without a
//! cluster and also asks the other nodes through the agent; their sums come back as one
//! `CtlAnswer`, counted like one more shard's answer, with the number of nodes that
//! answered for the reply's `"nodes"`. Another node's request arrives as `CtlAsk`: this
//! shard kicks (or counts) its local connections under the ids and gives its counts to the
//! agent.

use std::sync::Arc;

use hashbrown::HashMap;

use super::Shard;
use crate::cluster::control::{CtlKind, CtlPart, CtlRequest};
use crate::driver::Driver;
use crate::id::Id;
use crate::mesh::Msg;

/// Nodes that answered, by pending reply token (cluster mode, kick and presence replies).
#[derive(Default)]
pub(super) struct CtlState {
    nodes: HashMap<u32, u16>,
}

impl<D: Driver> Shard<D> {
    /// Cluster mode: asks the other nodes to `kind` under `ids` for pending reply `t`;
    /// returns whether an answer (`CtlAnswer`) will come. Redis down: none, and the reply
    /// says `"nodes":1`. No cluster: none, and no `"nodes"`.
    pub(super) fn ctl_send(&mut self, kind: CtlKind, ids: Arc<[Id]>, t: u32) -> bool {
        let Some(c) = self.cluster_node() else {
            return false;
        };
        let r = CtlRequest {
            kind,
            ids,
            shard: self.me as u16,
            token: t,
        };
        if c.ctl_request(r) {
            return true;
        }
        self.ctl.nodes.insert(t, 1);
        false
    }

    /// `CtlAsk` or `CtlAnswer`.
    pub(super) fn on_ctl_msg(&mut self, m: Msg) {
        match m {
            Msg::CtlAsk { kind, ids, req } => self.on_ctl_ask(kind, &ids, req),
            Msg::CtlAnswer {
                kind,
                token,
                counts,
                nodes,
            } => self.on_ctl_answer(kind, token, &counts, nodes),
            _ => {}
        }
    }

    /// `CtlAsk`: another node's kick or count; this shard's counts go to the agent.
    pub(super) fn on_ctl_ask(&mut self, kind: CtlKind, ids: &[Id], req: u64) {
        let counts = match kind {
            CtlKind::Kick => ids.iter().map(|id| self.kick_local(id)).collect(),
            CtlKind::Count => ids.iter().map(|id| self.router.local_count(id)).collect(),
        };
        if let Some(c) = self.cluster_node() {
            c.ctl_part(CtlPart { req, counts });
        }
    }

    /// `CtlAnswer`: the other nodes' sums for pending reply `t`, `nodes` answering.
    pub(super) fn on_ctl_answer(&mut self, kind: CtlKind, t: u32, counts: &[u32], nodes: u16) {
        self.ctl.nodes.insert(t, nodes);
        match kind {
            CtlKind::Kick => self.on_replied(t, counts.first().copied().unwrap_or(0), None),
            CtlKind::Count => self.on_presence_counts(t, counts),
        }
    }

    /// For the reply to `t`: how many nodes answered (cluster mode), forgotten after.
    pub(super) fn ctl_nodes(&mut self, t: u32) -> Option<u64> {
        self.ctl.nodes.remove(&t).map(u64::from)
    }
}
