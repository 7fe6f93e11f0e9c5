//! Stage 15b, presence requests on the publish listener (`GET /presence/<id>`,
//! `POST /presence`, `GET /events/presence`) and friends presence: the glue between the
//! parsed request ([`PresenceRequest`]) and `presence.rs`.

use super::friends::FULL_CREDIT;
use super::replies::Pending;
use super::Shard;
use crate::conn::Marks;
use crate::driver::Driver;
use crate::friends::{user_of, FriendEvent};
use crate::http::request::{presence_ids, PresenceRequest};
use crate::http::{response, Status};
use crate::id::Id;
use crate::mesh::ReplyTo;

const EVENTS_OFF: &str = "presence events are off: start the server with --presence-events";

impl<D: Driver> Shard<D> {
    /// A presence request whose head (`n` bytes at `inbuf[at..]`) is parsed; returns the
    /// bytes it used, or `None` if its body is not all here yet (or it was refused), as
    /// `on_request` does.
    pub(super) fn on_presence_request(
        &mut self,
        i: u32,
        req: PresenceRequest,
        n: usize,
        inbuf: &mut Vec<u8>,
        at: usize,
    ) -> Option<usize> {
        match req {
            PresenceRequest::One { id, close, head } => {
                self.presence_query(i, vec![id], close, head, true);
                Some(n)
            }
            PresenceRequest::Many {
                len,
                chunked,
                close,
                expect_continue,
            } => {
                let (len, used) =
                    self.request_body(i, inbuf, at, n, (len, chunked, expect_continue))?;
                match presence_ids(&inbuf[at + n..at + n + len]) {
                    Ok(ids) => self.presence_query(i, ids, close, false, false),
                    Err((s, why)) => {
                        let mut raw = Vec::new();
                        response::error_text(&mut raw, s, &format!("presence: {why}"));
                        self.push_reply(i, Pending::ready(i, raw, true));
                        self.conns[i].marks.insert(Marks::DISCARD);
                        return None;
                    }
                }
                Some(n + used)
            }
            PresenceRequest::Feed { after, http10 } => {
                if !self.cfg.presence.events {
                    let mut raw = Vec::new();
                    response::error_text(&mut raw, Status::NotFound, EVENTS_OFF);
                    self.push_reply(i, Pending::ready(i, raw, true));
                    return None;
                }
                self.open_feed(i, after, http10);
                Some(n)
            }
        }
    }

    /// `--friends-presence`, on the owner of `id`: its online/offline change goes to its
    /// friends' streams as a friends event (`event: presence`), a fan-out whose replies go
    /// nowhere.
    pub(super) fn friends_presence(&mut self, id: &Id, online: bool) {
        let Some(user) = user_of(id) else {
            return; // not a graph user: no friends
        };
        if self.friends.store.is_none() {
            return;
        }
        self.fanout_event(
            FriendEvent::presence(user, online),
            ReplyTo::NOBODY,
            FULL_CREDIT,
        );
    }
}
