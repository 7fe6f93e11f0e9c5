//! Stage 10, close: the end of connections and of the shard. A connection is logged out,
//! its ops cancelled, and its fd closed when the last completion is in (the kernel owns
//! buffers and fd until then); the head-timeout sweep answers 408 to slow requests; the
//! graceful stop ends every stream properly.

use std::time::{Duration, Instant};

use super::completion::{token, OP_CANCEL};
use super::replies::Pending;
use super::Shard;
use crate::conn::{Conn, Flags, Marks, State, NONE};
use crate::driver::Driver;
use crate::http::stream::{self, Proto};
use crate::http::{response, Status};
use crate::stats::ShardStats;

/// Connections to close at the end of the turn, and the head-timeout timer.
pub(super) struct Close {
    /// Connections marked during the turn (a slow consumer cut while its fan-out runs).
    marked: Vec<u32>,
    /// When the next head-timeout sweep is due.
    next_sweep: Instant,
    /// `--head-timeout`, seconds.
    timeout_s: u64,
}

impl Close {
    /// Nothing marked; the first sweep in `timeout_s` seconds.
    pub(super) fn new(timeout_s: u64) -> Close {
        Close {
            marked: Vec::new(),
            next_sweep: Instant::now() + Duration::from_secs(timeout_s),
            timeout_s,
        }
    }
}

impl<D: Driver> Shard<D> {
    /// Shutdown: stops accepting, ends every stream (last-chunk, WebSocket close) and
    /// closes once it is written, lets publishers have the replies they are owed, closes
    /// the rest.
    pub(super) fn begin_stop(&mut self) {
        self.stop_accepts();
        self.end_feeds();
        let live: Vec<u32> = (0..self.conns.slots() as u32)
            .filter(|&i| !matches!(self.conns[i].state, State::Free | State::Closing))
            .collect();
        for i in live {
            let c = self.conns[i];
            match c.state {
                // End every stream properly, then close once it is written.
                State::SubStream => self.end_stream(i),
                // Replies still owed: close after writing them.
                State::Pub if c.aux != NONE && !self.aux[c.aux].replies.is_empty() => {
                    self.conns[i].flags.insert(Flags::CLOSE_AFTER)
                }
                State::Finishing => {}
                _ => self.close(i),
            }
        }
    }

    /// Ends stream `i` (state `SubStream`) properly after what is queued to it, then closes
    /// it once written: a held poll gets its answer; SSE a `retry:` of 1-10 s (a fixed hash
    /// of the slot, so reconnects spread) then the last chunk; WebSocket a close 1001 "going
    /// away" (RFC 6455 section 7.4.1); other chunked streams the last chunk (shutdown, drain).
    pub(super) fn end_stream(&mut self, i: u32) {
        self.end_stream_as(i, 1001, true);
    }

    /// [`Shard::end_stream`] with WebSocket close code `ws_code`, and the SSE `retry:` only
    /// if `spread` (a stream that should come back at once, as after a hole in cluster mode,
    /// gets none).
    pub(super) fn end_stream_as(&mut self, i: u32, ws_code: u16, spread: bool) {
        let c = self.conns[i];
        if Proto::from_u8(c.proto) == Proto::Poll {
            return self.answer_poll_timeout(i);
        }
        let a = self.ensure_aux(i);
        let buf = self.aux[a].queue(c.flags.contains(Flags::SENDING));
        let (proto, chunked) = (Proto::from_u8(c.proto), c.flags.contains(Flags::CHUNKED));
        if spread && proto == Proto::Sse {
            let ms = 1_000 + (i.wrapping_mul(2_654_435_761) % 9_001);
            stream::retry(buf, chunked, ms);
        }
        stream::end(buf, proto, chunked, ws_code);
        self.conns[i].state = State::Finishing;
        self.try_send(i);
    }

    /// Runs the head-timeout sweep if it is due at `now`; returns whether it ran.
    pub(super) fn sweep_if_due(&mut self, now: Instant) -> bool {
        if now < self.close.next_sweep {
            return false;
        }
        self.close.next_sweep = now + Duration::from_secs(self.close.timeout_s);
        self.slow_sweep();
        true
    }

    /// Every `--head-timeout`: a connection still reading the same request it was reading
    /// at the previous sweep gets 408 and is closed (slow loris). So a request gets between
    /// one and two timeouts to arrive.
    fn slow_sweep(&mut self) {
        for i in 0..self.conns.slots() as u32 {
            let c = self.conns[i];
            if c.state == State::Lingering {
                self.linger_sweep(i);
                continue;
            }
            let reading = match c.state {
                State::SubHead => true,
                // A request under way while we wait for its bytes, or none yet on a new
                // connection: a publish connection that never sends a byte must not hold a
                // slot for ever. Input held back by us (backpressure, an edit being applied)
                // is not the client's delay; a request completed since the last sweep clears
                // SLOW (`on_publisher_input`).
                State::Pub => {
                    c.msgs == 0
                        || (c.aux != NONE
                            && c.flags.contains(Flags::RECVING)
                            && !self.aux[c.aux].inbuf.is_empty())
                }
                _ => false,
            };
            if !reading {
                self.conns[i].marks.remove(Marks::SLOW);
            } else if !c.marks.contains(Marks::SLOW) {
                self.conns[i].marks.insert(Marks::SLOW);
            } else if c.state == State::Pub {
                ShardStats::add(&self.st().head_timeouts, 1);
                self.aux[c.aux].inbuf.clear();
                let mut raw = Vec::new();
                response::error(&mut raw, Status::RequestTimeout);
                self.push_reply(i, Pending::ready(i, raw, true));
                self.flush_replies(i);
            } else {
                ShardStats::add(&self.st().head_timeouts, 1);
                self.refuse(i, Status::RequestTimeout);
            }
        }
    }

    /// Closes connection `i` at the end of the turn (not under a fan-out's feet).
    pub(super) fn mark_close(&mut self, i: u32) {
        self.close.marked.push(i);
    }

    /// Cuts subscriber `i` as a slow consumer (counted once), cleanly, on a message
    /// boundary: what its send in flight holds goes out whole (bounded by the send
    /// deadline), the messages not started are dropped, then the stream's proper end
    /// (WebSocket close 1008), then a lingering close; a client that resumes loses nothing.
    pub(super) fn cut_clean(&mut self, i: u32) {
        ShardStats::add(&self.stats[self.me].slow_closed, 1);
        let c = &mut self.conns[i];
        c.marks.insert(Marks::CUT);
        c.state = State::Finishing;
        let (proto, chunked) = (Proto::from_u8(c.proto), c.flags.contains(Flags::CHUNKED));
        self.aux[c.aux].lat.drop_next();
        let next = &mut self.aux[c.aux].next;
        next.clear();
        stream::end(next, proto, chunked, 1008);
    }

    /// Closes the connections marked this turn.
    pub(super) fn close_marked(&mut self) {
        while let Some(i) = self.close.marked.pop() {
            self.close(i);
        }
    }

    /// Closes connection `i` after an op on it failed with `-errno` (or its peer ended it,
    /// `res` = 0). ETIMEDOUT is the send deadline (TCP_USER_TIMEOUT: sent data unacknowledged
    /// for `--send-timeout`), counted in `send_timeouts`.
    pub(super) fn close_on_error(&mut self, i: u32, res: i32) {
        if res == -libc::ETIMEDOUT {
            ShardStats::add(&self.st().send_timeouts, 1);
        }
        self.close(i);
    }

    /// Logs the connection out and starts tearing it down.
    pub(super) fn close(&mut self, i: u32) {
        let c = self.conns[i];
        if matches!(c.state, State::Free | State::Closing) {
            return;
        }
        if c.flags.contains(Flags::LOGGED_IN) {
            ShardStats::sub(&self.st().streams[Proto::from_u8(c.proto) as usize], 1);
            self.poll_done(i);
            self.forget_remote(i);
            self.router.logout(&mut self.outbox, i, c.ids);
            self.sync_ids_gauge();
            self.cluster_forget(i);
        }
        if c.flags.contains(Flags::PUBLISHER) {
            ShardStats::sub(&self.st().publishers, 1);
            if c.proto == super::presence::FEED {
                self.feed_closed(i);
            }
            if c.aux != NONE {
                for t in std::mem::take(&mut self.aux[c.aux].replies) {
                    self.replies.abandon(t);
                }
            }
        } else {
            ShardStats::sub(&self.st().subscribers, 1);
            self.per_ip_release(i);
        }
        let conn = &mut self.conns[i];
        // LINGER reuses CHUNKED's bit, which means nothing once closing.
        conn.flags
            .set(Flags::LINGER, conn.state == State::Finishing);
        conn.state = State::Closing;
        conn.flags.remove(Flags::LOGGED_IN);
        if conn.ops == 0 {
            self.finalize(i);
        } else {
            conn.ops += 1;
            self.driver.cancel_fd(conn.fd, token(OP_CANCEL, i));
        }
        // A slot freed: accepting may resume if it had paused at capacity.
        self.accept.resume();
    }

    /// The last op of closing connection `i` has completed: closes its fd and frees its
    /// buffers and slot.
    pub(super) fn finalize(&mut self, i: u32) {
        // No op refers to the fd any more (ops == 0); it is closed once. A connection that
        // ends with a final reply (an error, HEAD) lingers so that reply is not reset.
        let c = self.conns[i];
        self.driver.close(c.fd, c.flags.contains(Flags::LINGER));
        self.free_ws_head(i);
        self.release_aux(i);
        self.conns[i] = Conn::FREE;
        self.conns.remove(i);
    }
}
