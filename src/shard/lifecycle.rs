//! The end of connections and of the shard: closing (logout, cancel, close when the last
//! completion is in), the head-timeout sweep, and the graceful stop on shutdown.

use super::*;

impl<D: Driver> Shard<D> {
    pub(super) fn begin_stop(&mut self) {
        self.stopping = true;
        for l in 0..2 {
            if let Some(fd) = &self.listeners[l] {
                if self.accept_armed[l] {
                    self.driver
                        .cancel_fd(fd.as_raw_fd(), token(OP_CANCEL, NONE));
                }
            }
        }
        let live: Vec<u32> = (0..self.conns_capacity())
            .filter(|&i| !matches!(self.conns[i].state, State::Free | State::Closing))
            .collect();
        for i in live {
            let c = self.conns[i];
            match c.state {
                // End every stream properly, then close once it is written.
                State::SubStream => {
                    let a = self.ensure_aux(i);
                    let aux = &mut self.aux[a];
                    let buf = if c.flags.contains(Flags::SENDING) {
                        &mut aux.next
                    } else {
                        &mut aux.out
                    };
                    stream::end(
                        buf,
                        Proto::from_u8(c.proto),
                        c.flags.contains(Flags::CHUNKED),
                    );
                    self.conns[i].state = State::Finishing;
                    self.try_send(i);
                }
                // Replies still owed: close after writing them.
                State::Pub if c.aux != NONE && !self.aux[c.aux].replies.is_empty() => {
                    self.conns[i].flags.insert(Flags::CLOSE_AFTER)
                }
                State::Finishing => {}
                _ => self.close(i),
            }
        }
    }

    /// Every `--head-timeout`: a connection still reading the same request it was reading
    /// at the previous sweep gets 408 and is closed (slow loris). So a request gets between
    /// one and two timeouts to arrive.
    pub(super) fn slow_sweep(&mut self) {
        for i in 0..self.conns_capacity() {
            let c = self.conns[i];
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
            } else if c.marks.contains(Marks::SLOW) {
                if c.state == State::Pub {
                    self.aux[c.aux].inbuf.clear();
                    let mut raw = Vec::new();
                    response::error(&mut raw, Status::RequestTimeout);
                    self.push_reply(i, Pending::ready(i, raw, true));
                    self.flush_replies(i);
                } else {
                    self.refuse(i, Status::RequestTimeout);
                }
            } else {
                self.conns[i].marks.insert(Marks::SLOW);
            }
        }
    }

    pub(super) fn mark_close(&mut self, i: u32) {
        self.to_close.push(i);
    }

    pub(super) fn close_marked(&mut self) {
        while let Some(i) = self.to_close.pop() {
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
            self.router.logout(&mut self.outbox, i, c.ids);
            self.sync_ids_gauge();
            self.cluster_forget(i);
        }
        if c.flags.contains(Flags::PUBLISHER) {
            ShardStats::sub(&self.st().publishers, 1);
            if c.aux != NONE {
                let replies = std::mem::take(&mut self.aux[c.aux].replies);
                for t in replies {
                    if !self.pending[t].done() {
                        self.pending[t].conn = NONE;
                    } else {
                        self.pending.remove(t);
                    }
                }
            }
        } else {
            ShardStats::sub(&self.st().subscribers, 1);
        }
        let conn = &mut self.conns[i];
        if conn.state == State::Finishing {
            conn.flags.insert(Flags::LINGER);
        } else {
            conn.flags.remove(Flags::LINGER);
        }
        conn.state = State::Closing;
        conn.flags.remove(Flags::LOGGED_IN);
        if conn.ops == 0 {
            self.finalize(i);
        } else {
            conn.ops += 1;
            self.driver.cancel_fd(conn.fd, token(OP_CANCEL, i));
        }
        // A slot freed: accepting may resume if it had paused at capacity.
        self.accept_retry = None;
    }

    pub(super) fn finalize(&mut self, i: u32) {
        // No op refers to the fd any more (ops == 0); it is closed once. A connection that
        // ends with a final reply (an error, HEAD) lingers so that reply is not reset.
        self.driver.close(
            self.conns[i].fd,
            self.conns[i].flags.contains(Flags::LINGER),
        );
        self.free_ws_head(i);
        self.release_aux(i);
        self.conns[i] = Conn::FREE;
        self.conns.remove(i);
    }
}
