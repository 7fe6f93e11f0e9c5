//! Stage 6b, shared frames: in a fan-out, the bytes of one message are built once per
//! transport and sent to every subscriber that can take them at once from that one
//! reference-counted buffer, not copied into each subscriber's output.
//!
//! A frame is the same for every subscriber of an id with the same protocol, transfer coding
//! (chunked or HTTP/1.0) and cursor mode: a raw chunk, an SSE event, a WebSocket frame (the
//! server's frames are not masked), with the message's own cursor when the stream carries
//! cursors; on the seed's `/test/`, whose `Recvd msg #N` is numbered per connection, the
//! escaped message and `'<br/>\n` (and the chunk's CRLF), sent after a prefix of each
//! connection's own (`prefix.rs`) in one vectored send. [`Frames`] holds the ones built during one fan-out (`Output::deliver_slot` makes
//! it, so a frame never outlives its message) and builds each the first time a subscriber
//! needs it: one allocation per transport per message, then a reference-count increment per
//! subscriber.
//!
//! A subscriber takes the shared frame when nothing of its own is queued or in flight (the
//! common case: a subscriber idle between messages); its `Aux` then holds the reference
//! (`Aux::frame`) and the send goes out as `OP_FRAME`. The buffer is the kernel's until that
//! send completes, and the `Aux` is not released while a send is in flight, so it can be
//! neither freed nor changed early. Output queued meanwhile goes to `next`, as behind any
//! send, and leaves in one send after the frame (coalescing). A frame at least
//! `--zerocopy-min-bytes` long goes out zero-copy (`zerocopy.rs`). Everyone else takes
//! [`Shard::deliver`]'s path and the message is written into its own output as before: a
//! subscriber with a backlog (its bytes must follow what is queued), a stream whose cursor
//! covers several ids, a poll, a stream whose head is still going out, a friends event.

use bytes::Bytes;

use super::output::Ev;
use super::Shard;
use crate::conn::{Flags, Marks, State, NONE};
use crate::driver::Driver;
use crate::history::Pos;
use crate::http::stream::{self, Proto, CURSORS};
use crate::http::{response, resume};

/// Variants a fan-out may need: {raw, SSE, WebSocket} x {chunked, not} x {cursors, not},
/// then the seed's body x {chunked, not}.
const VARIANTS: usize = 14;

/// The frames of one message built so far in its fan-out, by variant.
#[derive(Default)]
pub(super) struct Frames {
    built: [Option<Bytes>; VARIANTS],
}

impl Frames {
    /// The frame of `msg` (at `pos`) for `proto`, `chunked` and `cursors`, built on first
    /// use; `None` if the protocol has no bytes for it (an empty raw message) or shares none.
    fn get(
        &mut self,
        proto: Proto,
        chunked: bool,
        cursors: bool,
        msg: &[u8],
        pos: Pos,
    ) -> Option<&Bytes> {
        let k = match proto {
            Proto::Raw | Proto::Sse | Proto::Ws => {
                let p = proto as usize - Proto::Raw as usize;
                p * 4 + usize::from(chunked) * 2 + usize::from(cursors)
            }
            Proto::Seed => 12 + usize::from(chunked),
            Proto::Poll => return None,
        };
        if self.built[k].is_none() {
            self.built[k] = Some(build(proto, chunked, cursors, msg, pos)?);
        }
        self.built[k].as_ref()
    }
}

/// The bytes of `msg` for one variant, exactly as [`Shard::deliver`] writes them into a
/// subscriber's own output (`resume::message` with the message's own cursor, or
/// `stream::message`).
pub(super) fn build(
    proto: Proto,
    chunked: bool,
    cursors: bool,
    msg: &[u8],
    pos: Pos,
) -> Option<Bytes> {
    let mut out = Vec::with_capacity(msg.len() + 64);
    if proto == Proto::Seed {
        // The part after the per-connection `Recvd msg #N: '` (`shard::prefix`).
        response::html_escape(&mut out, msg);
        out.extend_from_slice(b"'<br/>\n");
        if chunked {
            out.extend_from_slice(b"\r\n");
        }
    } else if cursors {
        let mut cursor = Vec::with_capacity(40);
        pos.write(&mut cursor);
        resume::message(&mut out, proto, chunked, &cursor, msg);
    } else if !stream::message(&mut out, proto, chunked, 0, msg) {
        return None;
    }
    Some(Bytes::from(out))
}

impl<D: Driver> Shard<D> {
    /// Delivers `ev` to subscriber `i` in a fan-out: from the shared frame in `frames` when
    /// `i` can take it (see the module doc), else through [`Shard::deliver`]. Returns
    /// whether it was queued.
    pub(super) fn deliver_fan(&mut self, i: u32, ev: Ev<'_>, frames: &mut Frames) -> bool {
        let Ev::Plain { msg, pos, at } = ev else {
            return self.deliver(i, ev);
        };
        let c = self.conns[i];
        let busy = c.state != State::SubStream
            || c.flags.intersects(Flags::SENDING | Flags::HEAD_PENDING)
            || c.marks.intersects(Marks::CUT | Marks::WS_HEAD)
            || (c.aux != NONE && self.aux[c.aux].pending() > 0)
            || (c.proto & CURSORS != 0 && self.needs_live_cursor(i));
        let cursors = c.proto & CURSORS != 0;
        let chunked = c.flags.contains(Flags::CHUNKED);
        let frame = match busy {
            true => None,
            false => frames.get(Proto::from_u8(c.proto), chunked, cursors, msg, pos),
        };
        let Some(frame) = frame else {
            return self.deliver(i, ev);
        };
        let frame = frame.clone();
        let prefix = (Proto::from_u8(c.proto) == Proto::Seed).then(|| {
            self.prefixes
                .seed(c.msgs.wrapping_add(1), frame.len(), chunked)
        });
        let a = self.ensure_aux(i);
        let now_ms = self.lp.now_ms();
        let aux = &mut self.aux[a];
        aux.frame = Some(frame.clone());
        aux.prefix = prefix;
        // Nothing is pending: `out` is empty or wholly sent.
        aux.out.clear();
        aux.sent = 0;
        aux.batch_ms = now_ms;
        aux.lat.queued(false, now_ms, at);
        let c = &mut self.conns[i];
        c.msgs = c.msgs.wrapping_add(1);
        c.marks.insert(Marks::ACTIVE);
        self.submit_frame(i, &frame, 0);
        true
    }

    /// A send of subscriber `i`'s shared frame completed: `res` bytes taken, or `-errno`.
    /// A short send goes on with the rest of the frame; a whole one lets the frame go and
    /// whatever was queued behind it follow ([`Shard::try_send`]).
    pub(super) fn on_frame_sent(&mut self, i: u32, res: i32) {
        self.conns[i].flags.remove(Flags::SENDING);
        let a = self.conns[i].aux;
        if res < 0 {
            self.frame_done(a);
            return self.close_on_error(i, res);
        }
        self.count_sent(i, res as usize);
        let now_ms = self.lp.now_ms();
        let aux = &mut self.aux[a];
        aux.sent += res as usize;
        let plen = aux.prefix.map_or(0, |s| self.prefixes.len(s));
        if let Some(f) = aux.frame.as_ref().filter(|f| aux.sent < plen + f.len()) {
            // A short send: the rest of the frame, still held by the Aux.
            let (f, from) = (f.clone(), aux.sent);
            return self.submit_frame(i, &f, from);
        }
        self.frame_done(a);
        let aux = &mut self.aux[a];
        if let Some((ms, n)) = aux.lat.sent(now_ms) {
            self.stats[self.me].publish_to_send.observe(ms, n);
        }
        self.try_send(i);
    }

    /// Aux `a`'s frame is sent, failed, or its connection is gone with no op in flight (the
    /// Aux is released): it and its prefix slot go.
    pub(super) fn frame_done(&mut self, a: u32) {
        let aux = &mut self.aux[a];
        aux.frame = None;
        aux.sent = 0;
        if let Some(s) = aux.prefix.take() {
            self.prefixes.free(s);
        }
    }
}
