//! Stage 4b, subscriber tokens (`crate::auth`): the check of a subscriber's token on its
//! request head (401 naming the reason, 403 naming the id), and the end of a stream when its
//! token expires.
//!
//! The expiry of each stream is a `u32` (seconds on the shard's clock, 0: none) in a table
//! beside the connection slab, indexed like it and, like it, reserved for the shard's share
//! of `--max-conns` up front as address space only: with tokens off it is never touched (no
//! byte per subscriber); with tokens on an idle subscriber costs 4 bytes more. Once a second
//! one sweep over the table ends every stream past its token's `exp` plus the leeway (the
//! transport's proper end; SSE an `event: expired` first, WebSocket close 1008): no timer
//! per connection. The client reconnects with a fresh token and, with history, resumes from
//! its cursor with nothing lost.

use std::time::{Duration, Instant};

use super::Shard;
use crate::auth::Denial;
use crate::conn::State;
use crate::driver::Driver;
use crate::http::request::SubRequest;
use crate::http::response;
use crate::http::stream::{self, Proto};

/// The expiry table and its sweep timer.
pub(super) struct Expiry {
    /// Per connection slot: when its stream's token expires (seconds on the shard's clock
    /// plus 1; 0: never or no token).
    at: Vec<u32>,
    /// Room to reserve for `at` on first use (the shard's share of `--max-conns`).
    cap: usize,
    /// When the next sweep is due.
    next_sweep: Instant,
    /// Refusals not logged yet (one log line a second at most).
    unlogged: u64,
    /// When a refusal may be logged again.
    next_log: Instant,
}

impl Expiry {
    /// An empty table for up to `cap` connections (nothing reserved until a token comes).
    pub(super) fn new(cap: usize) -> Expiry {
        let now = Instant::now();
        Expiry {
            at: Vec::new(),
            cap,
            next_sweep: now,
            unlogged: 0,
            next_log: now,
        }
    }

    /// Releases the table's pages (the shard has emptied).
    pub(super) fn release(&mut self) {
        crate::conn::release_pages(&mut self.at);
    }
}

impl<D: Driver> Shard<D> {
    /// With tokens on, checks request `req` of connection `i`: refused (401 or 403, and
    /// false) or allowed, its expiry recorded in `req` (it travels with a hand-off).
    pub(super) fn authorize(&mut self, i: u32, req: &mut SubRequest) -> bool {
        let Some(v) = self.cfg.sub_auth.clone() else {
            return true;
        };
        let verdict = v.check(req);
        // Checked: the token and cookie go now, on this shard (not carried in a hand-off).
        req.token = None;
        req.cookie = None;
        match verdict {
            Ok(exp) => {
                req.expires = exp.map_or(0, |e| e.saturating_add(v.leeway_s()));
                true
            }
            Err(denial) => {
                self.refuse_token(i, &denial, req.head_only);
                false
            }
        }
    }

    /// Answers 401 or 403 for `denial` and closes; logs (at most one line a second).
    fn refuse_token(&mut self, i: u32, denial: &Denial, head: bool) {
        let a = self.ensure_aux(i);
        let sending = self.conns[i].flags.contains(crate::conn::Flags::SENDING);
        let out = self.aux[a].queue(sending);
        let start = out.len();
        let (status, why) = match denial {
            Denial::Unauthorized(r) => {
                response::unauthorized(out, r.code(), r.describe());
                (401, r.describe().to_string())
            }
            Denial::Forbidden(id) => {
                let why = format!("forbidden: the token does not cover id {id}");
                response::error_text(out, crate::http::Status::Forbidden, &why);
                (403, why)
            }
        };
        // A page on another origin reads why it was refused (Fetch standard, CORS protocol).
        response::insert_lines(out, start, &self.resume.cors);
        if head {
            response::drop_body(out, start);
        }
        self.conns[i].state = State::Finishing;
        self.try_send(i);
        let e = &mut self.expiry;
        e.unlogged += 1;
        let now = Instant::now();
        if now >= e.next_log {
            e.next_log = now + Duration::from_secs(1);
            let refused = std::mem::take(&mut e.unlogged);
            tracing::info!(
                shard = self.me,
                status,
                refused,
                "subscriber refused: {why}"
            );
        }
    }

    /// Records the expiry `req` carries for stream `i` (with tokens on every stream sets
    /// its slot, so a slot never keeps an earlier stream's).
    pub(super) fn set_expiry(&mut self, i: u32, req: &SubRequest) {
        if self.cfg.sub_auth.is_none() {
            return;
        }
        let e = &mut self.expiry;
        if e.at.capacity() == 0 {
            e.at.reserve_exact(e.cap);
        }
        let i = i as usize;
        if e.at.len() <= i {
            e.at.resize(i + 1, 0);
        }
        e.at[i] = match req.expires {
            0 => 0,
            exp => {
                let now_unix = crate::auth::sign::unix_now();
                let now = self.lp.epoch_secs();
                let left = exp.saturating_sub(now_unix);
                u32::try_from(now.saturating_add(left).saturating_add(1)).unwrap_or(u32::MAX)
            }
        };
    }

    /// Once a second with tokens on: ends every stream whose token has expired.
    pub(super) fn expiry_sweep_if_due(&mut self, now: Instant) {
        if self.expiry.at.is_empty() || now < self.expiry.next_sweep {
            return;
        }
        self.expiry.next_sweep = now + Duration::from_secs(1);
        let secs = self.lp.epoch_secs();
        for i in 0..self.expiry.at.len().min(self.conns.slots()) {
            let at = self.expiry.at[i];
            if at == 0 || u64::from(at - 1) > secs {
                continue;
            }
            self.expiry.at[i] = 0;
            if self.conns[i as u32].state == State::SubStream {
                self.end_expired(i as u32);
            }
        }
    }

    /// Ends stream `i` because its token expired: SSE an `event: expired` first.
    fn end_expired(&mut self, i: u32) {
        let c = self.conns[i];
        if Proto::from_u8(c.proto) == Proto::Sse {
            let a = self.ensure_aux(i);
            let chunked = c.flags.contains(crate::conn::Flags::CHUNKED);
            let sending = c.flags.contains(crate::conn::Flags::SENDING);
            let buf = self.aux[a].queue(sending);
            stream::chunk(buf, b"event: expired\ndata: token expired\n\n", chunked);
        }
        self.end_stream_as(i, 1008, false);
    }
}
