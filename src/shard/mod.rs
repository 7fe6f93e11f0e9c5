//! One shard: the slab of connections, the router shard and the ring, and the stages a byte
//! goes through, one file each, in the order it travels:
//!
//! 1. `accept.rs`: multishot accepts; a new socket gets a 24-byte [`Conn`], or a 503 past the cap.
//! - 1b. `per_ip.rs`: `--max-conns-per-ip`: the count per source address, 429 past it.
//! 2. `completion.rs`: each completion goes to its stage by its token (operation, connection).
//! 3. `head.rs`: a subscriber's request head, read into provided buffers and parsed.
//! 4. `placement.rs`: hand-off to the id's owner, login, install, the response head.
//! - 4b. `expiry.rs`: subscriber tokens: the check on the head (401/403), the end at `exp`.
//! 5. `input.rs`: an idle stream's one POLLRDHUP poll; drained bytes, WebSocket control frames.
//! 6. `output.rs`: one send in flight, coalescing, backpressure, delivery, heartbeats;
//!    `frames.rs`: a fan-out's message built once per transport, shared by its subscribers;
//!    `zerocopy.rs`: large shared frames sent zero-copy, held until the kernel's notification;
//!    `prefix.rs`: `/test/`'s per-connection prefix before a shared frame (a vectored send).
//! 7. `publish.rs`: a publisher's pipelined requests, one method per kind; routing to the owner.
//! - 7b. `kick.rs`: `DELETE /subscribers/<id>`: every shard ends its connections under the id.
//! 8. `replies.rs`: publish replies, in request order once every shard has answered.
//! 9. `inbox.rs`: the messages of the other shards ([`crate::mesh`]).
//! 10. `close.rs`: logout, cancel, close after the last completion; head timeouts; the stop;
//!     `drain.rs`: SIGTERM's drain, the streams ended at a steady pace over `--drain-period`;
//!     `linger.rs`: the bounded read-and-discard after an error reply.
//! 11. `event_loop.rs`: one turn (completions, inbox, sweeps, outbox, submit); idle memory.
//! 12. `friends.rs`: friends fan-out and edits (`--friends`).
//! 13. `cluster.rs`: cluster mode (`--cluster`): forwarding to and from the other nodes.
//! 14. `resume.rs`: history (`--history`): numbering, the resume verdict and replay, polls;
//!     `replay.rs`: the same for ids another shard owns (`Replay`/`Replayed`); `poll.rs`:
//!     held polls and their timeout.
//! 15. `probes.rs`: the operations endpoints (`/metrics`, `/healthz`, `/readyz`).
//!
//! `tests/` (test builds only) drives the shard in memory on the fake driver
//! (`driver/fake.rs`), through its public API.
//!
//! An idle subscriber is its record and router entry only: once its head is sent it holds
//! no buffer (its `Aux` went back to the pool) and, in the kernel, one armed poll.
//!
//! # State
//! Shared by every stage: the settings, mesh and counters (read only), the driver, the slab
//! of [`Conn`] records (each stage updates the record of the connection it handles), the
//! [`Router`] and the [`Outbox`]. Everything else is in a sub-struct that the file of the
//! stage owning it defines; its fields are private to that file, so only that stage changes
//! them: `Accept`, `HeadBufs`, `StreamHeads` (placement), `Input`, `Output` (the `Aux`
//! table), `Publish`, `Replies`, `Close`, `Drain`, `Loop`, `Friends`, `ClusterState` and `Resumes`.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::config::ServerConfig;
use crate::conn::{Conn, Slab};
use crate::driver::Driver;
use crate::mesh::{Mesh, Outbox};
use crate::router::Router;
use crate::stats::ShardStats;

mod accept;
mod close;
mod cluster;
mod cluster_affine;
mod cluster_ctl;
mod completion;
mod drain;
mod event_loop;
mod expiry;
mod frames;
mod friends;
mod head;
mod history_release;
mod inbox;
mod input;
mod kick;
mod linger;
mod output;
mod per_ip;
mod placement;
mod poll;
mod prefix;
mod presence;
mod presence_req;
mod probes;
mod publish;
mod replay;
mod replies;
mod resume;
#[cfg(test)]
mod tests;
mod zerocopy;

pub use event_loop::PANIC_ENV;
pub use friends::FriendsShard;

/// One shard. Build with [`Shard::new`], drive with [`Shard::turn`].
pub struct Shard<D: Driver> {
    /// This shard's index.
    me: usize,
    /// The I/O backend.
    driver: D,
    /// The queues to the other shards.
    mesh: Arc<Mesh>,
    /// Every shard's counters; this one writes only `stats[me]`.
    stats: Arc<[ShardStats]>,
    /// The server's settings.
    cfg: Arc<ServerConfig>,
    /// The connection records, indexed by connection number.
    conns: Slab<Conn>,
    /// Ids to local connections, and the directory of the ids this shard owns.
    router: Router,
    /// Messages for other shards produced since the last flush, one batch per shard.
    outbox: Outbox,
    /// Stage 1: listeners and the accept pause.
    accept: accept::Accept,
    /// Stage 3: the request-head buffers lent to the kernel.
    head_bufs: head::HeadBufs,
    /// Stage 4: the static response heads and the WebSocket handshake table.
    heads: placement::StreamHeads,
    /// Stage 5: the drain buffer.
    input: input::Input,
    /// Stage 6: the buffers of connections doing I/O, and the heartbeat timer.
    aux: output::Output,
    /// Stage 7: the demo page.
    publish: publish::Publish,
    /// Stage 8: the publishes awaiting their replies.
    replies: replies::Replies,
    /// Stage 10: connections to close at the end of the turn, the head-timeout timer.
    close: close::Close,
    /// Stage 11: the loop's clock, completion buffer and stop state.
    lp: event_loop::Loop,
    /// Stage 12: this shard's part of the friends store.
    friends: friends::Friends,
    /// Stage 13: cluster mode.
    cluster: cluster::ClusterState,
    /// Stage 14: the history of the ids this shard owns, held polls.
    resume: resume::Resumes,
    /// Stage 10b: SIGTERM's paced drain.
    drain: drain::Drain,
    /// `/metrics`, `/healthz`, `/readyz`: what they read besides the counters.
    probes: probes::Probes,
    /// Stage 4b: subscriber tokens: each stream's expiry, the sweep that ends them.
    expiry: expiry::Expiry,
    /// Stage 6c: the buffers of zero-copy sends in flight.
    zc: zerocopy::Holds,
    /// Stage 6d: `/test/` prefixes of shared frames in flight.
    prefixes: prefix::Prefixes,
    /// Stage 15: presence counts, events and feeds.
    presence: presence::PresenceState,
    /// Cluster control: nodes that answered, per pending reply (`cluster_ctl`).
    ctl: cluster_ctl::CtlState,
    /// Stage 1b: `--max-conns-per-ip`: each connection's entry in the per-address table.
    per_ip: per_ip::PerIpSlots,
}

impl<D: Driver> Shard<D> {
    /// Shard `me` with its two listeners (subscriber, publish) and its share of
    /// `--max-conns`.
    pub fn new(
        me: usize,
        driver: D,
        mesh: Arc<Mesh>,
        stats: Arc<[ShardStats]>,
        cfg: Arc<ServerConfig>,
        sub: OwnedFd,
        publ: OwnedFd,
    ) -> Self {
        let shards = mesh.shards();
        let max_conns = cfg.max_conns.div_ceil(shards);
        let sub_port = socket2::SockRef::from(&sub)
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map_or(0, |a| a.port());
        let mut router = Router::new(me, shards, max_conns + cfg.max_conns / shards);
        if cfg.presence.edges() {
            router.enable_presence(cfg.presence.debounce_ms);
        }
        Shard {
            me,
            driver,
            router,
            outbox: Outbox::new(shards),
            conns: Slab::with_capacity(max_conns),
            accept: accept::Accept::new([sub, publ], cfg.max_conns),
            head_bufs: head::HeadBufs::new(),
            heads: placement::StreamHeads::new(&cfg.cors_origin),
            input: input::Input::new(),
            aux: output::Output::new(cfg.heartbeat_s),
            publish: publish::Publish::new(sub_port),
            replies: replies::Replies::new(),
            close: close::Close::new(cfg.head_timeout_s),
            lp: event_loop::Loop::new(me),
            friends: friends::Friends::default(),
            cluster: cluster::ClusterState::default(),
            resume: resume::Resumes::new(&cfg),
            drain: drain::Drain::default(),
            probes: probes::Probes::default(),
            expiry: expiry::Expiry::new(max_conns),
            zc: zerocopy::Holds::default(),
            prefixes: prefix::Prefixes::default(),
            presence: presence::PresenceState::new(),
            ctl: cluster_ctl::CtlState::default(),
            per_ip: per_ip::PerIpSlots::new(max_conns),
            mesh,
            stats,
            cfg,
        }
        .with_head_buffers()
    }

    /// Gives the shard its part of the friends store (`--friends`).
    pub fn with_friends(mut self, friends: Option<FriendsShard>) -> Self {
        self.friends = friends::Friends::with_store(friends);
        self
    }

    /// This shard's counters.
    fn st(&self) -> &ShardStats {
        &self.stats[self.me]
    }
}
