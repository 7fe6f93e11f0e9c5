//! Stage 9, inbox: the batches other shards (and the cluster agent) pushed to this one,
//! taken a bounded number per turn, each message handed to the stage it is for. The
//! protocol (who sends what, ordering, credit) is written down in [`crate::mesh`].

use super::output::Ev;
use super::Shard;
use crate::driver::Driver;
use crate::mesh::Msg;

/// Inbox batches taken per turn, so completions are never starved.
const BATCHES_PER_TURN: usize = 256;

impl<D: Driver> Shard<D> {
    /// Handles up to [`BATCHES_PER_TURN`] batches; returns whether there was any.
    pub(super) fn drain_inbox(&mut self) -> bool {
        let mut worked = false;
        for _ in 0..BATCHES_PER_TURN {
            let Some(batch) = self.mesh.pop(self.me) else {
                break;
            };
            worked = true;
            for m in batch {
                self.on_msg(m);
            }
        }
        worked
    }

    /// One message: directory upkeep, publish routing and replies, hand-offs, cluster; the
    /// friends messages go on to [`Shard::on_friends_msg`].
    fn on_msg(&mut self, m: Msg) {
        match m {
            Msg::Join { id, from, seq } => {
                self.router
                    .on_join(&mut self.outbox, id, from as usize, seq);
                self.sync_ids_gauge();
            }
            Msg::JoinAck { id, seq } => {
                if let Some(s) = self.router.join_acked(&id, seq) {
                    self.release_joined(s);
                }
            }
            Msg::Leave { id, from } => {
                self.router.on_leave(&id, from as usize);
                self.sync_ids_gauge();
            }
            Msg::Route { id, msg, reply, at } => self.route(id, msg, reply, at),
            Msg::Deliver {
                id,
                msg,
                pos,
                reply,
                at,
            } => {
                let n = self.router.lookup(&id).map_or(0, |s| {
                    if self.sequenced() {
                        self.sequenced_seen(s, &id, pos);
                    } else if self.resume.store.enabled() {
                        self.resume.remote.track(s, &id, pos);
                    }
                    // A stream under this one id lives on its owner: only connections under
                    // several ids (whole cursors) get it here.
                    let ev = Ev::Plain { msg: &msg, pos, at };
                    self.deliver_slot(s, ev)
                });
                self.reply(reply, n, None);
            }
            Msg::Replay {
                id,
                from,
                conn,
                token,
                k,
                start,
            } => self.on_replay(id, from, conn, token, k, start),
            Msg::Replayed {
                conn,
                token,
                k,
                verdict,
            } => self.on_replayed(conn, token, k, verdict),
            Msg::Replied { token, count, more } => self.on_replied(token, count, more),
            Msg::Adopt { fd, req } => self.adopt(fd, *req),
            Msg::Remote { id, msg } => self.on_remote(id, msg),
            Msg::RemoteAt {
                id,
                msg,
                pos,
                reply,
            } => self.on_remote_at(id, msg, pos, reply),
            Msg::PublishFailed { token, sent } => self.publish_failed(token, sent),
            Msg::RemoteFriends { user, msg } => self.on_remote_friends(user, msg),
            Msg::ClusterReady => self.on_cluster_ready(),
            Msg::PresenceAsk { ids, from, token } => self.on_presence_ask(&ids, from.into(), token),
            Msg::PresenceCounts { token, counts } => self.on_presence_counts(token, &counts),
            Msg::PresenceEdge { id, online } => self.on_presence_edge(id, online),
            Msg::PresenceEvent { seq, id, online } => self.on_presence_event(seq, id, online),
            Msg::PresenceFloor { epoch, seq } => self.on_presence_floor(epoch, seq),
            Msg::Kick { id, reply } => self.on_kick(&id, reply),
            m @ (Msg::CtlAsk { .. } | Msg::CtlAnswer { .. }) => self.on_ctl_msg(m),
            m @ (Msg::FriendsRoute { .. }
            | Msg::FriendsBatch { .. }
            | Msg::FriendsReplied { .. }
            | Msg::FriendEdit { .. }
            | Msg::FriendEditHalf { .. }) => self.on_friends_msg(m),
        }
    }

    /// A message of the friends paths (`FriendsRoute`, `FriendsBatch`, `FriendsReplied`,
    /// `FriendEdit`, `FriendEditHalf`).
    fn on_friends_msg(&mut self, m: Msg) {
        match m {
            Msg::FriendsRoute {
                user,
                msg,
                reply,
                credit,
            } => self.fanout_owner(user, msg, reply, credit),
            Msg::FriendsBatch {
                ev,
                friends,
                holders_too,
                reply,
                credit,
            } => {
                let mut credit = credit;
                let n = self.fanout_local(&friends, &ev, holders_too, reply, &mut credit);
                self.friends_reply(reply, 0, n, credit, false);
            }
            Msg::FriendsReplied {
                token,
                friends,
                count,
                credit,
                failed,
            } => self.on_friends_replied(token, friends, count, credit, failed),
            Msg::FriendEdit {
                a,
                b,
                add,
                reply,
                credit,
            } => self.edit_coordinate(a, b, add, reply, credit),
            Msg::FriendEditHalf {
                user,
                follower,
                add,
                reply,
                credit,
            } => {
                let changed = self.edit_half(user, follower, add);
                self.friends_reply(reply, 0, u32::from(changed), credit, false);
            }
            _ => unreachable!("on_msg hands only friends messages here"),
        }
    }
}
