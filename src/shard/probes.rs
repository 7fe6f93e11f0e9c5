//! The publish listener's operations endpoints (`GET /metrics`, `/healthz`, `/readyz`): a
//! ready reply made by [`crate::metrics`] from every shard's counters, the cluster state and
//! the mesh's flags, queued in request order like `/stats`; and the shard's side of the
//! send counters (bytes, the `publish_to_send` histogram).

use std::sync::Arc;

use super::replies::Pending;
use super::Shard;
use crate::cluster::Cluster;
use crate::conn::{Flags, NONE};
use crate::driver::Driver;
use crate::http::request::Probe;
use crate::metrics::View;
use crate::stats::ShardStats;

/// What the probes read besides the shard's own fields: the cluster state, if any.
#[derive(Default)]
pub(super) struct Probes {
    /// Cluster mode's state (`/readyz` asks whether Redis is subscribed).
    cluster: Option<Arc<Cluster>>,
}

impl<D: Driver> Shard<D> {
    /// Gives the probes the node's cluster state (`--cluster`), if any.
    pub fn with_probes(mut self, cluster: Option<Arc<Cluster>>) -> Self {
        self.probes = Probes { cluster };
        self
    }

    /// A send of connection `i` took `res` bytes (called before the output stage counts
    /// them): `sent_bytes`, and when that completes its `out`, the messages `out` carried
    /// go into the `publish_to_send` histogram at their age on this turn's clock (see
    /// [`crate::metrics::Latency`]). After a response head, the stamps of what was queued
    /// behind it move up unobserved (the head is not a message).
    #[inline]
    pub(super) fn count_sent(&mut self, i: u32, res: usize) {
        let st = &self.stats[self.me];
        ShardStats::bump(&st.bytes_sent, res as u64);
        let c = self.conns[i];
        if c.aux == NONE {
            return;
        }
        let aux = &mut self.aux[c.aux];
        if c.flags.contains(Flags::HEAD_PENDING) {
            aux.lat.sent(0);
        } else if aux.sent + res == aux.out.len() {
            if let Some((ms, n)) = aux.lat.sent(self.lp.now_ms()) {
                st.publish_to_send.observe(ms, n);
            }
        }
    }

    /// `GET /metrics`, `/healthz` or `/readyz` (or `HEAD`) on publisher connection `i`.
    pub(super) fn probe(&mut self, i: u32, probe: Probe, close: bool, head: bool) {
        let view = View {
            shards: &self.stats,
            cluster: self.probes.cluster.as_deref(),
            mesh: &self.mesh,
        };
        let raw = view.reply(probe, head, close);
        self.push_reply(i, Pending::ready(i, raw, close));
    }
}
