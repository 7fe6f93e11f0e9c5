//! Publisher connections of a shard: pipelined `POST /send/<id>` and `GET /stats` requests,
//! routing a publish to its id's owner, and replies in request order once every shard
//! holding the id has answered.

use super::*;

impl<D: Driver> Shard<D> {
    pub(super) fn on_publisher_input(&mut self, i: u32) {
        let a = self.conns[i].aux;
        // The input is taken out while its requests are handled; PARSING keeps a reply that
        // completes meanwhile (a publish routed on this very shard) from starting a recv
        // into the empty stand-in.
        let mut inbuf = std::mem::take(&mut self.aux[a].inbuf);
        self.conns[i].marks.insert(Marks::PARSING);
        let mut used = 0;
        let token = self.cfg.publish_token.clone();
        // A request after an edit waits until the edit is applied (read-your-writes on one
        // connection): the edit and, say, a publish go to different shards.
        while !self.conns[i].flags.contains(Flags::CLOSE_AFTER)
            && !self.conns[i].marks.contains(Marks::EDITING)
        {
            match parse_publish(&inbuf[used..], token.as_deref().map(str::as_bytes)) {
                Head::Incomplete => break,
                Head::Refuse(s) => {
                    let head = &inbuf[used..(used + 120).min(inbuf.len())];
                    tracing::debug!(shard = self.me, status = ?s, head = %String::from_utf8_lossy(head).escape_debug(), "publish request refused");
                    let mut raw = Vec::new();
                    response::error(&mut raw, s);
                    self.push_reply(i, Pending::ready(i, raw, true));
                }
                Head::Done(PubRequest::Page { close, head }, n) => {
                    used += n;
                    let mut raw = self.page.to_vec();
                    if head {
                        raw.truncate(raw.len() - response::demo_page_body_len(&raw));
                    }
                    self.push_reply(i, Pending::ready(i, raw, close));
                }
                Head::Done(PubRequest::Stats { close, head }, n) => {
                    used += n;
                    let body = self.stats_body();
                    let mut raw = Vec::new();
                    response::json(&mut raw, body.as_bytes(), close);
                    if head {
                        raw.truncate(raw.len() - body.len());
                    }
                    self.push_reply(i, Pending::ready(i, raw, close));
                }
                Head::Done(
                    PubRequest::Edit {
                        a,
                        b,
                        add,
                        len,
                        close,
                    },
                    n,
                ) => {
                    if inbuf.len() - used < n + len {
                        break; // the (ignored) body is not all here yet
                    }
                    used += n + len;
                    self.friends_edit(i, a, b, add, close);
                }
                Head::Done(
                    PubRequest::Send {
                        id,
                        len,
                        close,
                        expect_continue,
                        friends,
                    },
                    n,
                ) => {
                    if inbuf.len() - used < n + len {
                        // Body not complete yet. A client that asked for it gets `100
                        // Continue` now, if no earlier reply is owed (interim responses must
                        // not overtake final ones), once per request.
                        if expect_continue
                            && self.aux[a].replies.is_empty()
                            && !self.conns[i].marks.contains(Marks::CONTINUED)
                        {
                            self.conns[i].marks.insert(Marks::CONTINUED);
                            let sending = self.conns[i].flags.contains(Flags::SENDING);
                            let aux = &mut self.aux[a];
                            if sending { &mut aux.next } else { &mut aux.out }
                                .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                        }
                        break;
                    }
                    self.conns[i].marks.remove(Marks::CONTINUED);
                    let msg = Bytes::copy_from_slice(&inbuf[used + n..used + n + len]);
                    used += n + len;
                    if friends {
                        self.friends_publish(i, id, msg, close);
                        continue;
                    }
                    let t = self.push_reply(i, Pending::awaiting(i, ReplyKind::Send, close));
                    self.publish(id, msg, t);
                }
            }
        }
        if used > 0 {
            // Progress: what is left is a new request, not the one the sweep saw.
            self.conns[i].marks.remove(Marks::SLOW);
        }
        inbuf.drain(..used);
        self.aux[a].inbuf = inbuf;
        self.conns[i].marks.remove(Marks::PARSING);
        self.flush_replies(i);
        self.read_more(i);
    }

    /// Reads the publisher's next requests unless it has too many awaiting replies or too
    /// much reply output it has not read yet (backpressure on a publisher that pipelines
    /// without reading: its memory stays bounded).
    pub(super) fn read_more(&mut self, i: u32) {
        let c = self.conns[i];
        if c.state != State::Pub
            || c.flags.intersects(Flags::CLOSE_AFTER | Flags::RECVING)
            || c.marks.intersects(Marks::PARSING | Marks::EDITING)
            || c.aux == NONE
        {
            return;
        }
        let aux = &self.aux[c.aux];
        if aux.replies.len() < MAX_PIPELINE && aux.pending() < MAX_PUB_OUTPUT {
            self.start_recv(i);
        }
    }

    pub(super) fn push_reply(&mut self, i: u32, p: Pending) -> u32 {
        self.conns[i].msgs = self.conns[i].msgs.saturating_add(1);
        if p.close {
            self.conns[i].flags.insert(Flags::CLOSE_AFTER);
        }
        let t = self.pending.insert(p);
        let a = self.conns[i].aux;
        self.aux[a].replies.push_back(t);
        t
    }

    /// `send(id, msg)`: the publish numbered `t` on this shard.
    pub(super) fn publish(&mut self, id: Id, msg: Bytes, t: u32) {
        ShardStats::add(&self.st().sent, 1);
        // Cluster mode: the other nodes get it through Redis; local delivery does not wait.
        self.cluster_forward(t, &id, &msg);
        let reply = ReplyTo {
            shard: self.me as u16,
            token: t,
        };
        let owner = id.owner(self.mesh.shards());
        if owner == self.me {
            self.route(id, msg, reply);
        } else {
            self.outbox.push(owner, Msg::Route { id, msg, reply });
        }
    }

    /// Owner side of a publish: local delivery, forwarding, and the first reply.
    pub(super) fn route(&mut self, id: Id, msg: Bytes, reply: ReplyTo) {
        let (local, forwarded) = self.router.route(&mut self.outbox, &id, &msg, reply);
        let n = local.map_or(0, |s| self.deliver_slot(s, Ev::Plain(&msg)));
        self.reply(reply, n, Some(forwarded));
    }

    pub(super) fn reply(&mut self, to: ReplyTo, count: u32, more: Option<u16>) {
        if to == ReplyTo::NOBODY {
            return; // a message from another cluster node
        }
        if to.shard as usize == self.me {
            self.on_replied(to.token, count, more);
        } else {
            self.outbox.push(
                to.shard as usize,
                Msg::Replied {
                    token: to.token,
                    count,
                    more,
                },
            );
        }
    }

    pub(super) fn on_replied(&mut self, t: u32, count: u32, more: Option<u16>) {
        let p = &mut self.pending[t];
        p.count += u64::from(count);
        match more {
            Some(k) => {
                p.routed = true;
                p.remaining += i32::from(k);
            }
            None => p.remaining -= 1,
        }
        self.settle(t);
    }

    /// After part of pending publish `t`'s answer came in: once it is complete, writes the
    /// replies now due on its connection and reads on (or forgets it, if the publisher has
    /// gone).
    pub(super) fn settle(&mut self, t: u32) {
        let p = &self.pending[t];
        if !p.done() {
            return;
        }
        if p.conn == NONE {
            self.pending.remove(t);
        } else {
            let (c, edit) = (p.conn, p.kind == ReplyKind::Edit);
            if edit && self.conns[c].marks.contains(Marks::EDITING) {
                // The edit is applied: the requests read after it may go on (unless they
                // are being parsed right now, on this very stack).
                self.conns[c].marks.remove(Marks::EDITING);
                let a = self.conns[c].aux;
                if !self.conns[c].marks.contains(Marks::PARSING)
                    && a != NONE
                    && !self.aux[a].inbuf.is_empty()
                {
                    return self.on_publisher_input(c);
                }
            }
            self.flush_replies(c);
            self.read_more(c);
        }
    }

    /// Writes the publisher's finished replies, in request order.
    pub(super) fn flush_replies(&mut self, i: u32) {
        let a = self.conns[i].aux;
        while let Some(&t) = self.aux[a].replies.front() {
            if !self.pending[t].done() {
                break;
            }
            let p = std::mem::replace(
                &mut self.pending[t],
                Pending::ready(NONE, Vec::new(), false),
            );
            self.pending.remove(t);
            let cluster = self.cluster_reply(t);
            let sending = self.conns[i].flags.contains(Flags::SENDING);
            let aux = &mut self.aux[a];
            aux.replies.pop_front();
            let buf = if sending { &mut aux.next } else { &mut aux.out };
            match (p.raw, p.kind) {
                (Some(raw), _) => buf.extend_from_slice(&raw),
                (None, ReplyKind::Send) => response::delivered(buf, p.count, cluster, p.close),
                (None, ReplyKind::Friends) => {
                    response::friends_delivered(buf, p.friends, p.count, cluster, p.close)
                }
                (None, ReplyKind::Edit) => response::edit(buf, p.count > 0, p.failed, p.close),
            }
            let close = p.close || (p.kind == ReplyKind::Edit && p.failed);
            if close {
                // Nothing after a reply that closes: drop later pipelined requests.
                for t in aux.replies.drain(..) {
                    if self.pending[t].done() {
                        self.pending.remove(t);
                    } else {
                        self.pending[t].conn = NONE;
                    }
                }
                self.conns[i].state = State::Finishing;
                break;
            }
        }
        self.try_send(i);
    }
}
