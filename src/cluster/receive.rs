//! What the agent does with the messages of its subscriptions, a batch at a time (everything
//! already read): control and presence records to their handlers, records to the owner
//! shards ([`Inbound`]); on Redis Cluster each bucket payload's number checked first
//! ([`super::backlog`]), gaps and moved channels filled from the bucket's backlog.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering::Relaxed;

use futures_util::{FutureExt, StreamExt};

use super::backlog::{self, Admit};
use super::conn::{self, Conn, Event, Events, Sub};
use super::control::CtlAgent;
use super::inbound::Inbound;
use super::sequencer::Sequencer;
use super::Cluster;

/// The agent's state for one batch.
pub(super) struct Batch<'a> {
    pub(super) inbound: &'a mut Inbound,
    pub(super) seq: &'a mut Option<Sequencer>,
    pub(super) ctl: &'a mut CtlAgent,
}

impl Batch<'_> {
    /// Takes `first` and every event already read after it; then subscribes moved channels
    /// again and fills the buckets with gaps. Errors end the session (a dropped node
    /// connection, a failed `SSUBSCRIBE` or `LRANGE`).
    pub(super) async fn run(
        &mut self,
        c: &Cluster,
        first: Event,
        stream: &mut Events,
        publ: &mut Conn,
        sink: &mut Sub,
    ) -> Result<(), String> {
        let mut lost = Vec::new();
        let mut gaps = BTreeSet::new();
        let mut next = Some(first);
        while let Some(m) = next {
            match m {
                Event::Msg(m) => self.msg(c, &m, &mut gaps),
                Event::Lost(ch) => lost.push(ch),
                Event::Disconnected => {
                    self.inbound.flush(c);
                    return Err("a Redis Cluster node connection dropped".to_string());
                }
            }
            next = stream.next().now_or_never().flatten();
        }
        // A moved bucket: what reached its new owner before the new subscription is in the
        // backlog there (the keys moved with the slot).
        gaps.extend(lost.iter().filter_map(|ch| c.bucket_of_channel(ch)));
        conn::resubscribe(c, sink, lost).await?;
        for b in gaps {
            c.refill.push(b);
        }
        self.refill(c, publ).await
    }

    /// Fills every bucket queued for it from its backlog, in order, then hands everything
    /// taken to the shards.
    pub(super) async fn refill(&mut self, c: &Cluster, publ: &mut Conn) -> Result<(), String> {
        for b in c.take_refills() {
            let channel = c.channel(b);
            for p in backlog::fill(c, publ, b).await? {
                self.inbound.take(c, &channel, &p, self.seq);
            }
        }
        self.inbound.flush(c);
        Ok(())
    }

    /// One message: a control record ([`super::control`]), a presence event, or a batch of
    /// records (numbered on Redis Cluster: delivered if next, dropped if seen, else left to
    /// the backlog fill).
    fn msg(&mut self, c: &Cluster, m: &redis::Msg, gaps: &mut BTreeSet<u32>) {
        let p = m.get_payload_bytes();
        if super::control::is_ctl(p) {
            return self.ctl.take(c, p);
        }
        if super::presence::is_presence(p) {
            return super::presence::take(c, p);
        }
        let channel = m.get_channel_name();
        let p = match c.bucket_of_channel(channel.as_bytes()) {
            Some(b) => {
                let Some(n) = backlog::seq_of(p) else {
                    c.stats.bad.fetch_add(1, Relaxed);
                    return;
                };
                match c.admit(b, n) {
                    Admit::Next => &p[backlog::SEQ_LEN..],
                    Admit::Dup => {
                        c.stats.backlog_dups.fetch_add(1, Relaxed);
                        return;
                    }
                    Admit::Gap => {
                        gaps.insert(b);
                        return;
                    }
                }
            }
            None => p,
        };
        self.inbound.take(c, channel, p, self.seq);
    }
}
