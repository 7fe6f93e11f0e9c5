//! The messages of the cross-core protocol ([`Msg`]) and where a publish reply goes
//! ([`ReplyTo`]); the protocol itself is in the parent module's doc.

use bytes::Bytes;

use crate::friends::FriendEvent;
use crate::history::{Pos, Reason, Start};
use crate::http::request::SubRequest;
use crate::id::Id;

/// The owner's answer to a `Replay`: the position before the first replayed message and the
/// replayed messages (offset, body), or the reset reason with the current position.
pub type Verdict = Result<(Pos, Vec<(u64, Bytes)>), (Reason, Pos)>;

/// Where a publish reply goes: the publisher's shard and its pending-publish token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyTo {
    /// Shard index of the publisher's connection.
    pub shard: u16,
    /// Token of the pending publish on that shard.
    pub token: u32,
}

impl ReplyTo {
    /// No reply wanted: a message that came from another cluster node.
    pub const NOBODY: ReplyTo = ReplyTo {
        shard: u16::MAX,
        token: u32::MAX,
    };
}

/// One cross-core message; see the module doc for the protocol. Ids are [`Id`]s, shard
/// indices are `u16` (at most 64 shards), `reply` names the pending publish an answer goes
/// to, and `credit` is a share of a friends operation's credit (see "credit" above).
#[derive(Debug)]
pub enum Msg {
    /// Holder `from` now has connections under `id`.
    Join {
        /// The id logged in under.
        id: Id,
        /// The holder shard.
        from: u16,
        /// The join's sequence number, echoed by its `JoinAck`.
        seq: u32,
    },
    /// The owner recorded the join numbered `seq`.
    JoinAck {
        /// The id joined.
        id: Id,
        /// The `seq` of the `Join` acknowledged.
        seq: u32,
    },
    /// Holder `from` has no connection under `id` any more.
    Leave {
        /// The id left.
        id: Id,
        /// The holder shard.
        from: u16,
    },
    /// Publish to `id`, sent to its owner.
    Route {
        /// The id published to.
        id: Id,
        /// The message body as published.
        msg: Bytes,
        /// Where the owner's `Replied` goes.
        reply: ReplyTo,
        /// When the publish was parsed (ms, the process-wide turn clock).
        at: u32,
    },
    /// Deliver to the local connections under `id`, sent by the owner to a holder.
    Deliver {
        /// The id published to.
        id: Id,
        /// The message body as published.
        msg: Bytes,
        /// Its position in `id`'s history (zero with history off).
        pos: Pos,
        /// Where the holder's `Replied` goes.
        reply: ReplyTo,
        /// When the publish was parsed (ms, the process-wide turn clock).
        at: u32,
    },
    /// A connection on shard `from` resumes `id` (its `k`th id) from `start`; sent to the
    /// owner after the holder's `Join`, so every message after the owner's answer reaches
    /// the holder as a `Deliver`.
    Replay {
        /// The id to resume.
        id: Id,
        /// The holder shard.
        from: u16,
        /// The connection on the holder, and its resume token (connection slots are reused).
        conn: u32,
        /// The connection's resume token.
        token: u32,
        /// Which of the connection's ids this is (path order).
        k: u8,
        /// Where the connection starts.
        start: Start,
    },
    /// The owner's answer to `Replay`: where the id starts for that connection, what it
    /// missed (offset, body), or why its position is lost.
    Replayed {
        /// The connection on the holder.
        conn: u32,
        /// Its resume token.
        token: u32,
        /// Which of the connection's ids this is.
        k: u8,
        /// The verdict: the position before the first replayed message and the replayed
        /// messages, or the reset reason with the current position.
        verdict: Verdict,
    },
    /// Part of a publish reply: `count` connections queued. From the owner (`more` is
    /// `Some(k)`): k holders' replies follow. From a holder: `None`. The two may arrive in
    /// either order, so the publisher's shard waits for the owner's and k others.
    Replied {
        /// The pending publish on the publisher's shard.
        token: u32,
        /// Connections the message was queued to on the replying shard.
        count: u32,
        /// Owner only: how many holders it forwarded to.
        more: Option<u16>,
    },
    /// Friends publish of `msg` by `user`, sent to the owner of `user`.
    FriendsRoute {
        /// The publishing user.
        user: u32,
        /// The event body as published.
        msg: Bytes,
        /// Where the replies go.
        reply: ReplyTo,
        /// The share of credit this message carries.
        credit: u64,
    },
    /// Deliver friends event `ev` to the local connections under `friends`; with
    /// `holders_too` (the receiver owns every id in `friends`) also forward to the other
    /// shards its directory names for them.
    FriendsBatch {
        /// The event, its JSON made once by the owner of the publishing user.
        ev: FriendEvent,
        /// The follower ids to deliver to.
        friends: Vec<u32>,
        /// Also forward to the other holder shards of these ids.
        holders_too: bool,
        /// Where the replies go.
        reply: ReplyTo,
        /// The share of credit this message carries.
        credit: u64,
    },
    /// Part of a friends reply (publish or edit), sent to the publisher's shard.
    FriendsReplied {
        /// The pending publish or edit on the publisher's shard.
        token: u32,
        /// Followers of the publishing user (owner step only, else 0).
        friends: u32,
        /// Connections queued, or, for an edit, halves changed.
        count: u32,
        /// The credit returned.
        credit: u64,
        /// The edit could not be journaled.
        failed: bool,
    },
    /// Edit of the pair `a b` (b on or off a's friends list), sent to its coordinator.
    FriendEdit {
        /// The first user of the pair.
        a: u32,
        /// The second user of the pair.
        b: u32,
        /// `PUT` (true) or `DELETE` (false).
        add: bool,
        /// Where the replies go.
        reply: ReplyTo,
        /// The share of credit this message carries.
        credit: u64,
    },
    /// Apply one half of an edit: `follower` starts (`add`) or stops following `user`; sent
    /// to the owner of `user`.
    FriendEditHalf {
        /// The user whose follower list changes.
        user: u32,
        /// The follower added or removed.
        follower: u32,
        /// Add (true) or remove (false).
        add: bool,
        /// Where the reply goes.
        reply: ReplyTo,
        /// The share of credit this message carries.
        credit: u64,
    },
    /// Take over subscriber socket `fd`, whose request (one id, owned by the receiving
    /// shard) has been parsed (see "Placement" above).
    Adopt {
        /// The socket, a plain fd with no op in flight.
        fd: i32,
        /// Its parsed request.
        req: Box<SubRequest>,
    },
    // --- cluster mode (crate::cluster) ---
    /// Cluster agent -> owner of `id`: a message another node published; deliver it like a
    /// `Route` whose reply goes nowhere.
    Remote {
        /// The id published to.
        id: Id,
        /// The message body as published.
        msg: Bytes,
    },
    /// Cluster agent -> owner of `id`, history on: a message Redis numbered (published on any
    /// node, this one too); delivered at `pos`, like a `Route` whose reply goes to `reply`.
    RemoteAt {
        /// The id published to.
        id: Id,
        /// The message body as published.
        msg: Bytes,
        /// Its position in the id's stream, cluster-wide.
        pos: Pos,
        /// The publisher's reply ([`ReplyTo::NOBODY`] if published on another node).
        reply: ReplyTo,
    },
    /// Cluster agent -> a publisher's shard, history on: Redis was lost before publish
    /// `token` came back numbered; it is answered `503` and the connection closes.
    PublishFailed {
        /// The pending publish.
        token: u32,
        /// Whether it had been sent to Redis (then it may have been delivered).
        sent: bool,
    },
    /// Cluster agent -> owner of `user`: a friends event another node accepted; fanned out
    /// like a `FriendsRoute` whose replies go nowhere.
    RemoteFriends {
        /// The publishing user.
        user: u32,
        /// The event body as published.
        msg: Bytes,
    },
    /// Cluster agent -> every shard: subscriptions changed (or Redis went down); heads held
    /// for a bucket subscription may go.
    ClusterReady,
    // --- presence (crate::presence, shard/presence.rs) ---
    /// Publisher's shard -> every shard: count the local connections under each of `ids`.
    PresenceAsk {
        /// The ids, shared by every shard's copy of the question.
        ids: std::sync::Arc<[Id]>,
        /// The asking shard.
        from: u16,
        /// The pending reply on the asking shard.
        token: u32,
    },
    /// Answer to `PresenceAsk`: `counts[k]` connections under `ids[k]` on the answering shard.
    PresenceCounts {
        /// The pending reply on the asking shard.
        token: u32,
        /// One count per id, in the question's order.
        counts: Vec<u32>,
    },
    /// Owner of `id` -> the hub (shard 0): `id` went online (its first connection) or offline
    /// (its last one closed, and the debounce passed).
    PresenceEdge {
        /// The id.
        id: Id,
        /// Online (true) or offline.
        online: bool,
    },
    /// Hub -> every other shard: presence event number `seq`, for the log and the feeds.
    PresenceEvent {
        /// The event's number (1, 2, ...; the cursor's offset).
        seq: u64,
        /// The id.
        id: Id,
        /// Online (true) or offline.
        online: bool,
    },
    /// Cluster agent -> every shard (cluster-wide presence events, `cluster/presence.rs`):
    /// a Redis session began; the cluster's presence epoch is `epoch` and its last event
    /// number `seq`. A shard whose log does not end at `seq` (events missed while the node
    /// was cut off, or a new epoch) empties it, so a feed resuming from before gets a reset.
    PresenceFloor {
        /// The cluster's presence epoch.
        epoch: u64,
        /// The last event number Redis has given.
        seq: u64,
    },
    // --- admin (shard::kick) ---
    /// Publisher's shard -> every other shard (`DELETE /subscribers/<id>`): end each local
    /// connection logged in under `id` with its transport's proper end; answered with a
    /// `Replied` (`more: None`) counting them.
    Kick {
        /// The id whose connections end.
        id: Id,
        /// Where the `Replied` goes.
        reply: ReplyTo,
    },
    // --- cluster control (cluster::control, shard::cluster_ctl) ---
    /// Cluster agent -> every shard: another node's kick or presence count; each shard
    /// kicks (or counts) its local connections under `ids` and hands its counts back to the
    /// agent ([`crate::cluster::Cluster::ctl_part`]).
    CtlAsk {
        /// What to do ([`crate::cluster::control::CtlKind`]).
        kind: crate::cluster::control::CtlKind,
        /// The ids (a kick has one).
        ids: std::sync::Arc<[Id]>,
        /// The agent's handle of the request.
        req: u64,
    },
    /// Cluster agent -> the requesting shard: the other nodes' sums for pending reply `token`
    /// (`counts[k]` for the request's `ids[k]`), `nodes` answering (this one included).
    CtlAnswer {
        /// What was asked.
        kind: crate::cluster::control::CtlKind,
        /// The pending reply on the requesting shard.
        token: u32,
        /// The other nodes' counts summed, one per id.
        counts: Vec<u32>,
        /// Nodes that answered, this one included.
        nodes: u16,
    },
}
