//! Stage 15, presence (`crate::presence`): counts asked of every shard, the online/offline
//! edges the router reports, and the event log behind `GET /events/presence`.
//!
//! - **Counts** (`/presence/<id>`, `POST /presence`): the publisher's shard sends the ids to
//!   every shard (`PresenceAsk`, one shared list); each answers its local connection counts
//!   (`PresenceCounts`); the reply is the sum, exact for the connections logged in when each
//!   shard answered.
//! - **Events**: an id's owner sees its online/offline edges (`router/presence.rs`, with the
//!   debounce) and sends each to shard 0, the hub (`PresenceEdge`), which numbers it and
//!   hands it to every shard (`PresenceEvent`); every shard keeps the same log of the last
//!   `--presence-log` events and writes each event to the feeds it holds. A feed is a
//!   publish-listener connection that asked for `/events/presence`: it stays on the shard
//!   that accepted it, takes no further request, and resumes from the log by its cursor.
//! - **Friends presence** (`--friends-presence`): the owner fans the edge out to the user's
//!   friends as a friends event (`event: presence`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashbrown::HashMap;

use super::replies::{Pending, ReplyKind};
use super::Shard;
use crate::cluster::control::CtlKind;
use crate::conn::{Flags, State};
use crate::driver::Driver;
use crate::history::Pos;
use crate::http::presence::{self as wire, FeedReset};
use crate::http::stream::chunk;
use crate::id::Id;
use crate::mesh::Msg;
use crate::presence::epoch;
use crate::stats::ShardStats;

/// `Conn::proto` of a publisher connection that became a presence feed.
pub(super) const FEED: u8 = 0xFE;
/// Unsent feed output over which a feed that does not read is closed (it resumes by its
/// cursor), bytes.
const FEED_MAX_BACKLOG: usize = 1 << 20;
/// The shard that numbers the events.
const HUB: usize = 0;

/// A count request waiting for every shard's answer.
struct Ask {
    ids: Arc<[Id]>,
    counts: Vec<u32>,
    left: usize,
    one: bool,
    close: bool,
    head: bool,
}

/// One shard's presence state. See the module doc.
pub(super) struct PresenceState {
    /// The event log: (number, id, online), oldest first, at most `--presence-log`.
    log: VecDeque<(u64, Id, bool)>,
    /// The number of the last event seen (the hub's: the last one given).
    last: u64,
    /// Feed connections on this shard.
    feeds: Vec<u32>,
    /// Count requests of this shard's publishers, by reply token.
    asks: HashMap<u32, Ask>,
    /// Edges taken from the router this turn.
    edges: Vec<(Id, bool)>,
    /// When the feeds' next heartbeat is due.
    next_ping: Instant,
    /// Cluster-wide events: the cluster's epoch (0: this process's, [`epoch`]).
    cluster_epoch: u64,
}

impl PresenceState {
    /// No event, no feed.
    pub(super) fn new() -> PresenceState {
        PresenceState {
            log: VecDeque::new(),
            last: 0,
            feeds: Vec::new(),
            asks: HashMap::new(),
            edges: Vec::new(),
            next_ping: Instant::now(),
            cluster_epoch: 0,
        }
    }
}

impl<D: Driver> Shard<D> {
    /// Counts of `ids` for publisher `i` (`one`: the `/presence/<id>` form; `head`: HEAD,
    /// no body), asked of every shard; the reply is written once all have answered.
    pub(super) fn presence_query(
        &mut self,
        i: u32,
        ids: Vec<Id>,
        close: bool,
        head: bool,
        one: bool,
    ) {
        let t = self.push_reply(i, Pending::awaiting(i, ReplyKind::Send, close));
        let ids: Arc<[Id]> = ids.into();
        let shards = self.mesh.shards();
        // Cluster mode: the other nodes' sums come as one more answer.
        let extra = usize::from(self.ctl_send(CtlKind::Count, ids.clone(), t));
        let ask = Ask {
            counts: vec![0; ids.len()],
            ids: ids.clone(),
            left: shards + extra,
            one,
            close,
            head,
        };
        self.presence.asks.insert(t, ask);
        let from = self.me as u16;
        for s in (0..shards).filter(|&s| s != self.me) {
            let ids = ids.clone();
            self.outbox.push(
                s,
                Msg::PresenceAsk {
                    ids,
                    from,
                    token: t,
                },
            );
        }
        self.on_presence_ask(&ids, self.me, t);
    }

    /// Any shard: this shard's counts of `ids`, answered to shard `from`.
    pub(super) fn on_presence_ask(&mut self, ids: &[Id], from: usize, token: u32) {
        let counts: Vec<u32> = ids.iter().map(|id| self.router.local_count(id)).collect();
        if from == self.me {
            self.on_presence_counts(token, &counts);
        } else {
            self.outbox
                .push(from, Msg::PresenceCounts { token, counts });
        }
    }

    /// Publisher's shard: one shard's counts for request `t`.
    pub(super) fn on_presence_counts(&mut self, t: u32, counts: &[u32]) {
        let Some(ask) = self.presence.asks.get_mut(&t) else {
            return;
        };
        for (sum, n) in ask.counts.iter_mut().zip(counts) {
            *sum += n;
        }
        ask.left -= 1;
        if ask.left > 0 {
            return;
        }
        let Some(ask) = self.presence.asks.remove(&t) else {
            return;
        };
        let mut raw = Vec::new();
        if ask.one {
            let node = self.cfg.cluster.is_some();
            let n = u64::from(ask.counts[0]);
            match self.ctl_nodes(t) {
                Some(k) => wire::count_nodes(&mut raw, &ask.ids[0], n, k, ask.close),
                None => wire::count(&mut raw, &ask.ids[0], n, node, ask.close),
            }
        } else {
            self.ctl_nodes(t);
            wire::counts(&mut raw, &ask.ids, &ask.counts, ask.close);
        }
        if ask.head {
            raw.truncate(raw.len() - crate::http::response::demo_page_body_len(&raw));
        }
        ShardStats::bump(&self.st().presence_requests, 1);
        self.finish_reply(t, raw);
    }

    /// Once a turn: the router's edges go to the hub (and to the friends), and the feeds get
    /// their heartbeat when due.
    pub(super) fn presence_turn(&mut self) {
        let p = self.cfg.presence;
        if !p.edges() {
            return;
        }
        let mut edges = std::mem::take(&mut self.presence.edges);
        self.router.take_presence(&mut edges);
        for (id, online) in edges.drain(..) {
            if p.friends {
                self.friends_presence(&id, online);
            }
            if !p.events {
                continue;
            }
            if self.me == HUB {
                self.on_presence_edge(id, online);
            } else {
                self.outbox.push(HUB, Msg::PresenceEdge { id, online });
            }
        }
        self.presence.edges = edges;
        self.ping_feeds();
    }

    /// Hub: numbers an edge and hands it to every shard; in cluster mode hands it to the
    /// agent instead (Redis numbers the cluster-wide edges, `cluster/presence.rs`).
    pub(super) fn on_presence_edge(&mut self, id: Id, online: bool) {
        if let Some(c) = self.cluster_node().filter(|c| c.presence_events()) {
            return c.presence_edge(id, online);
        }
        let seq = self.presence.last + 1;
        for s in (0..self.mesh.shards()).filter(|&s| s != self.me) {
            let id = id.clone();
            self.outbox.push(s, Msg::PresenceEvent { seq, id, online });
        }
        self.on_presence_event(seq, id, online);
    }

    /// Every shard: event `seq` goes into the log and out to this shard's feeds.
    pub(super) fn on_presence_event(&mut self, seq: u64, id: Id, online: bool) {
        self.presence.last = seq;
        if self.me == HUB {
            let st = self.st();
            ShardStats::bump(
                if online {
                    &st.presence_online
                } else {
                    &st.presence_offline
                },
                1,
            );
        }
        if !self.presence.feeds.is_empty() {
            let mut ev = Vec::with_capacity(64);
            let at = Pos {
                epoch: self.feed_epoch(),
                offset: seq,
            };
            wire::feed_event(&mut ev, at, &id, online);
            for k in (0..self.presence.feeds.len()).rev() {
                let i = self.presence.feeds[k];
                self.feed_write(i, &ev);
            }
        }
        let log = &mut self.presence.log;
        if log.len() == self.cfg.presence.log {
            log.pop_front();
        }
        log.push_back((seq, id, online));
    }

    /// The epoch of the feeds' cursors: the cluster's with cluster-wide events, else this
    /// process's.
    fn feed_epoch(&self) -> u64 {
        match self.presence.cluster_epoch {
            0 => epoch(),
            e => e,
        }
    }

    /// A Redis session began (cluster-wide events): unless the log ends exactly at `seq` in
    /// the same epoch, it is emptied and restarts after `seq`.
    pub(super) fn on_presence_floor(&mut self, cluster_epoch: u64, seq: u64) {
        let p = &mut self.presence;
        if p.cluster_epoch != cluster_epoch || p.last != seq {
            p.log.clear();
            p.last = seq;
            p.cluster_epoch = cluster_epoch;
        }
    }

    /// `GET /events/presence` on publisher `i`: it becomes a feed (chunked, or for `http10`
    /// unframed and ended by the close), after the events since `after` if the log still has
    /// them (else an `event: reset` first).
    pub(super) fn open_feed(&mut self, i: u32, after: Option<Pos>, http10: bool) {
        let (last, e) = (self.presence.last, self.feed_epoch());
        let oldest = self.presence.log.front().map_or(last + 1, |ev| ev.0);
        let earliest = after == Some(crate::http::request::FEED_EARLIEST);
        let reset = match after {
            None => None,
            Some(_) if earliest => None,
            Some(p) if p.epoch != e => Some(FeedReset::Epoch),
            Some(p) if p.offset > last => Some(FeedReset::Ahead),
            Some(p) if p.offset + 1 < oldest => Some(FeedReset::Gone),
            Some(_) => None,
        };
        let from = match (after, reset) {
            _ if earliest => oldest - 1,
            (Some(p), None) => p.offset,
            _ => last,
        };
        let at = |offset| Pos { epoch: e, offset };
        let mut raw = Vec::new();
        wire::feed_open(&mut raw, at(from), reset, http10);
        let mut ev = Vec::new();
        for (seq, id, online) in self.presence.log.iter().filter(|ev| ev.0 > from) {
            ev.clear();
            wire::feed_event(&mut ev, at(*seq), id, *online);
            chunk(&mut raw, &ev, !http10);
        }
        self.conns[i].proto = FEED;
        // A publisher never uses CHUNKED: on a feed it says how its events are framed.
        self.conns[i].flags.set(Flags::CHUNKED, !http10);
        if self.presence.feeds.is_empty() {
            let beat = Duration::from_secs(self.cfg.heartbeat_s.max(1));
            self.presence.next_ping = Instant::now() + beat;
        }
        self.presence.feeds.push(i);
        self.feeds_gauge();
        self.push_reply(i, Pending::ready(i, raw, false));
    }

    /// Queues feed bytes on feed `i` (unframed: chunked here for an HTTP/1.1 feed), behind any
    /// reply it is still owed; a feed whose unsent output passes [`FEED_MAX_BACKLOG`] is
    /// closed instead.
    fn feed_write(&mut self, i: u32, raw: &[u8]) {
        let mut framed = Vec::new();
        let bytes = if self.conns[i].flags.contains(Flags::CHUNKED) {
            chunk(&mut framed, raw, true);
            &framed[..]
        } else {
            raw
        };
        let c = self.conns[i];
        if c.state != State::Pub {
            return;
        }
        let a = c.aux;
        if self.aux[a].pending() > FEED_MAX_BACKLOG {
            tracing::info!(shard = self.me, "presence feed not reading: closed");
            ShardStats::bump(&self.st().presence_feeds_cut, 1);
            return self.close(i);
        }
        if !self.aux[a].replies.is_empty() {
            self.push_reply(i, Pending::ready(i, bytes.to_vec(), false));
            return self.flush_replies(i);
        }
        let sending = c.flags.contains(Flags::SENDING);
        self.aux[a].queue(sending).extend_from_slice(bytes);
        self.try_send(i);
    }

    /// Every `--heartbeat`: a `: ping` comment on each feed.
    fn ping_feeds(&mut self) {
        if self.presence.feeds.is_empty() {
            return;
        }
        let now = Instant::now();
        if now < self.presence.next_ping {
            return;
        }
        self.presence.next_ping = now + Duration::from_secs(self.cfg.heartbeat_s.max(1));
        for k in (0..self.presence.feeds.len()).rev() {
            let i = self.presence.feeds[k];
            self.feed_write(i, wire::FEED_PING);
        }
    }

    /// Feed `i` is closing.
    pub(super) fn feed_closed(&mut self, i: u32) {
        self.presence.feeds.retain(|&f| f != i);
        self.feeds_gauge();
    }

    /// `/stats` `presence_feeds`: this shard's open feeds.
    fn feeds_gauge(&self) {
        let n = self.presence.feeds.len() as u64;
        self.st()
            .presence_feeds
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stop or drain: each feed gets a `retry:` of 1-10 s (a fixed hash of the slot, as the
    /// SSE streams get, so reconnects spread) and its last-chunk, and closes once they are
    /// written.
    pub(super) fn end_feeds(&mut self) {
        let feeds = std::mem::take(&mut self.presence.feeds);
        self.feeds_gauge();
        for i in feeds {
            let c = self.conns[i];
            if c.state == State::Pub {
                let chunked = c.flags.contains(Flags::CHUNKED);
                let mut end = Vec::with_capacity(32);
                let ms = 1_000 + (i.wrapping_mul(2_654_435_761) % 9_001);
                crate::http::stream::retry(&mut end, chunked, ms);
                if chunked {
                    end.extend_from_slice(wire::FEED_END);
                }
                if self.aux[c.aux].replies.is_empty() {
                    let sending = c.flags.contains(Flags::SENDING);
                    self.aux[c.aux].queue(sending).extend_from_slice(&end);
                } else {
                    self.push_reply(i, Pending::ready(i, end, false));
                    self.flush_replies(i);
                }
            }
            if self.conns[i].state == State::Pub {
                self.conns[i].state = State::Finishing;
                self.try_send(i);
            }
        }
    }
}
