//! The connection record and its slab: what an idle subscriber costs in userspace.
//!
//! A [`Conn`] is 24 bytes and holds no pointer: while a subscriber is idle its only other
//! userspace cost is its router entry. Buffers live in a side table ([`Aux`]) and are
//! attached only while a request head is being read or output is in flight; they go back to
//! a pool when the connection is idle again. The slab's Vec is reserved for `--max-conns`
//! records up front: the reservation is address space, and pages become resident only as
//! records are first written, so the slab never doubles and copies at a million.

use std::collections::VecDeque;

/// No index (empty `aux`, free slot).
pub const NONE: u32 = u32::MAX;

/// What a connection is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Slot is free.
    Free,
    /// Subscriber: reading its request head.
    SubHead,
    /// Subscriber: logged in, response head held back until every owner acknowledged.
    SubJoining,
    /// Subscriber: streaming (head sent or in flight).
    SubStream,
    /// Subscriber or publisher: sending a final reply, then closing.
    Finishing,
    /// Publisher: keep-alive request/response loop.
    Pub,
    /// Closing: waiting for in-flight ops to finish before the fd is closed.
    Closing,
    /// After a final error reply: FIN sent, reading and discarding input until the peer's
    /// FIN or the bounds of `shard::input` (a lingering close, RFC 9112 section 9.6).
    Lingering,
}

/// Defines a flag byte: a `u8` newtype whose bits are named constants (monoio's
/// `driver/ready.rs` `Ready(u8)`), so a bit of one byte cannot be tested on the other.
macro_rules! flag_byte {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        #[repr(transparent)]
        pub struct $name(u8);

        impl $name {
            /// No bit set.
            pub const EMPTY: $name = $name(0);

            /// Whether every bit of `other` is set.
            #[inline]
            pub const fn contains(self, other: $name) -> bool {
                self.0 & other.0 == other.0
            }

            /// Whether any bit of `other` is set.
            #[inline]
            pub const fn intersects(self, other: $name) -> bool {
                self.0 & other.0 != 0
            }

            /// Sets the bits of `other`.
            #[inline]
            pub fn insert(&mut self, other: $name) {
                self.0 |= other.0;
            }

            /// Clears the bits of `other`.
            #[inline]
            pub fn remove(&mut self, other: $name) {
                self.0 &= !other.0;
            }

            /// Sets (`on`) or clears the bits of `other`.
            #[inline]
            pub fn set(&mut self, other: $name, on: bool) {
                if on {
                    self.insert(other);
                } else {
                    self.remove(other);
                }
            }
        }

        impl std::ops::BitOr for $name {
            type Output = $name;
            #[inline]
            fn bitor(self, other: $name) -> $name {
                $name(self.0 | other.0)
            }
        }
    };
}

flag_byte! {
    /// [`Conn::flags`]: the ops in flight and how the connection writes. Every bit is used.
    Flags
}

impl Flags {
    /// A send is in flight (its buffer is `Aux::out`, or a static head).
    pub const SENDING: Flags = Flags(1);
    /// A POLLRDHUP poll is armed.
    pub const POLLING: Flags = Flags(2);
    /// A recv is in flight (its buffer is `Aux::inbuf` or a provided head buffer).
    pub const RECVING: Flags = Flags(4);
    /// Subscriber output is chunked (HTTP/1.1); raw for HTTP/1.0.
    pub const CHUNKED: Flags = Flags(8);
    /// Logged in under ids (`ids` is a router handle).
    pub const LOGGED_IN: Flags = Flags(16);
    /// Publisher asked to close after its replies.
    pub const CLOSE_AFTER: Flags = Flags(32);
    /// Accepted on the publish listener.
    pub const PUBLISHER: Flags = Flags(64);
    /// The static response head is still to be sent, before anything in `Aux::out`.
    pub const HEAD_PENDING: Flags = Flags(128);
    /// Only while [`State::Closing`]: close gracefully, the last output was a final reply.
    /// Shares its bit with [`Flags::CHUNKED`], which means nothing once a connection is
    /// closing (the byte has no free bit).
    pub const LINGER: Flags = Flags::CHUNKED;
}

flag_byte! {
    /// [`Conn::marks`]: where a connection stands in its stream (subscriber) or request
    /// (publisher). Subscriber and publisher bits are distinct, so each means one thing.
    Marks
}

impl Marks {
    /// Subscriber: a message went out since the last heartbeat sweep.
    pub const ACTIVE: Marks = Marks(1);
    /// Subscriber: a HEAD request, whose head has no body (no SSE opening comment).
    pub const HEAD_ONLY: Marks = Marks(2);
    /// Either: still reading a request (head or publish body) at the last head-timeout
    /// sweep.
    pub const SLOW: Marks = Marks(4);
    /// Publisher: `100 Continue` was sent for the request being read.
    pub const CONTINUED: Marks = Marks(8);
    /// Publisher: its input is being parsed (taken out of `Aux::inbuf`).
    pub const PARSING: Marks = Marks(16);
    /// Subscriber: the WebSocket 101 answer waits in the shard's handshake table, in the
    /// slot named by `msgs` (no message is counted before the answer is out).
    pub const WS_HEAD: Marks = Marks(32);
    /// Subscriber: cut as a slow consumer this turn (closed at the end of the turn); takes
    /// no more output and is counted once.
    pub const CUT: Marks = Marks(64);
    /// Publisher: an edit (`PUT|DELETE /friends/...`) read on this connection is not
    /// applied yet; its later requests wait for it, so a pipelined publish sees the edit.
    pub const EDITING: Marks = Marks(128);
    /// Either, once its final reply is queued: that reply is an error (a refused request or
    /// head), so the close lingers, reading and discarding what the client still sends
    /// (`shard::input`). Shares [`Marks::HEAD_ONLY`]'s bit (the byte has no free bit): a
    /// HEAD subscriber's reply is final too, and lingers the same way.
    pub const DISCARD: Marks = Marks::HEAD_ONLY;
}

// The record's size is the idle subscriber's cost: it must not grow by accident.
const _: () = assert!(std::mem::size_of::<Conn>() == 24);

/// One connection. 24 bytes (checked at compile time); see the module doc.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct Conn {
    /// The socket.
    pub fd: i32,
    /// What it is doing.
    pub state: State,
    /// Operations in flight; the slot is freed only when this is 0.
    pub ops: u8,
    /// What is in flight and how it writes: [`Flags`].
    pub flags: Flags,
    /// Subscriber: owners' `JoinAck`s still awaited before the head may go out.
    pub waits: u8,
    /// Subscriber: messages written so far (the seed's `#N`). Publisher: requests read so
    /// far (saturating), so a connection that never sends one can be timed out.
    pub msgs: u32,
    /// Router handle while logged in.
    pub ids: u32,
    /// Index into the [`Aux`] table, or [`NONE`].
    pub aux: u32,
    /// Subscriber protocol ([`crate::http::stream::Proto`] as u8).
    pub proto: u8,
    /// Where it stands in its stream or request: [`Marks`].
    pub marks: Marks,
}

impl Conn {
    /// An unused slot.
    pub const FREE: Conn = Conn {
        fd: -1,
        state: State::Free,
        ops: 0,
        flags: Flags::EMPTY,
        waits: 0,
        msgs: 0,
        ids: NONE,
        aux: NONE,
        proto: 0,
        marks: Marks::EMPTY,
    };
}

/// Buffers of a connection that is reading or writing. Pooled.
#[derive(Default)]
pub struct Aux {
    /// Bytes received and not yet consumed (request head, publish body).
    pub inbuf: Vec<u8>,
    /// Bytes being sent: `out[sent..]` is in flight or next to go.
    pub out: Vec<u8>,
    /// How much of `out` the kernel has taken.
    pub sent: usize,
    /// Output queued while `out` is in flight; becomes `out` when that completes.
    pub next: Vec<u8>,
    /// Publisher: tokens of its publishes, in request order, awaiting their replies.
    pub replies: VecDeque<u32>,
    /// Subscriber: when the send of `out` began, on the shard's millisecond clock (see the
    /// backpressure rule in `deliver`).
    pub batch_ms: u32,
    /// Subscriber: when the messages of `out` and `next` were queued, for the
    /// `publish_to_send` histogram ([`crate::metrics::Stamps`]).
    pub lat: crate::metrics::Stamps,
    /// Publisher: where the decoding of a chunked request body stands between reads (see
    /// `shard::input`); the default while no chunked body is being read.
    pub chunked: crate::http::request::ChunkedBody,
    /// WebSocket subscriber: where a fragmented client message stands (RFC 6455 section
    /// 5.4); the Aux is kept while one is in progress.
    pub ws: crate::http::ws::Fragments,
    /// Subscriber: a frame shared by a fan-out's subscribers (reference-counted, `shard::frames`),
    /// in flight in place of `out` (then empty): the kernel's until its send completes.
    pub frame: Option<bytes::Bytes>,
    /// Subscriber on `/test/`: the shard's prefix slot sent before `frame` (its own
    /// `Recvd msg #N: '`, see `shard::prefix`); `sent` then counts the prefix's bytes first.
    pub prefix: Option<u32>,
}

impl Aux {
    /// Bytes queued for output and not yet taken by the kernel.
    pub fn pending(&self) -> usize {
        // In flight: `frame` (with a prefix, `sent` counts its bytes too) or `out`.
        let flight = self.frame.as_ref().map_or(self.out.len(), |f| f.len());
        flight.saturating_sub(self.sent) + self.next.len()
    }

    /// Where new output goes: `next` while a send of `out` is in flight (`sending`, so
    /// `out` must not change), else `out`.
    #[inline]
    pub fn queue(&mut self, sending: bool) -> &mut Vec<u8> {
        if sending {
            &mut self.next
        } else {
            &mut self.out
        }
    }
}

/// A free-list slab of `T`.
pub struct Slab<T> {
    items: Vec<T>,
    free: Vec<u32>,
}

impl<T> Slab<T> {
    /// An empty slab with room for `cap` items reserved (address space only).
    pub fn with_capacity(cap: usize) -> Slab<T> {
        Slab {
            items: Vec::with_capacity(cap),
            free: Vec::new(),
        }
    }

    /// Stores `item`, returning its index.
    pub fn insert(&mut self, item: T) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.items[i as usize] = item;
                i
            }
            None => {
                self.items.push(item);
                (self.items.len() - 1) as u32
            }
        }
    }

    /// Marks `i` free; its item stays until overwritten (callers reset it).
    pub fn remove(&mut self, i: u32) {
        self.free.push(i);
    }

    /// Items in use.
    pub fn len(&self) -> usize {
        self.items.len() - self.free.len()
    }

    /// Slots ever used (in use or free); indices below this are valid.
    pub fn slots(&self) -> usize {
        self.items.len()
    }

    /// If no item is in use, forgets every slot and gives the slab's pages back to the
    /// kernel (see [`release_pages`]); returns whether it did.
    pub fn release_if_empty(&mut self) -> bool {
        if !self.is_empty() || self.items.is_empty() {
            return false;
        }
        self.free = Vec::new();
        release_pages(&mut self.items);
        true
    }

    /// Whether no item is in use.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Clears `v` and returns the whole pages of its buffer to the kernel (`madvise
/// MADV_DONTNEED`, madvise(2)): RSS drops, the capacity stays reserved, and a page reads as
/// zeros when it is written again. Used when a shard has emptied, so RSS after every
/// connection closed returns near the idle figure.
pub fn release_pages<T>(v: &mut Vec<T>) {
    v.clear();
    let bytes = v.capacity() * std::mem::size_of::<T>();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
    let start = (v.as_mut_ptr() as usize).next_multiple_of(page);
    let end = (v.as_mut_ptr() as usize + bytes) / page * page;
    if end > start {
        // SAFETY: [start, end) lies inside the Vec's own allocation, which holds no live
        // value after `clear`; MADV_DONTNEED on private anonymous memory zero-fills it.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

impl<T> std::ops::Index<u32> for Slab<T> {
    type Output = T;
    fn index(&self, i: u32) -> &T {
        &self.items[i as usize]
    }
}

impl<T> std::ops::IndexMut<u32> for Slab<T> {
    fn index_mut(&mut self, i: u32) -> &mut T {
        &mut self.items[i as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::{Flags, Marks};

    #[test]
    fn each_named_bit_is_its_own() {
        let flags = [
            Flags::SENDING,
            Flags::POLLING,
            Flags::RECVING,
            Flags::CHUNKED,
            Flags::LOGGED_IN,
            Flags::CLOSE_AFTER,
            Flags::PUBLISHER,
            Flags::HEAD_PENDING,
        ];
        let mut all = Flags::EMPTY;
        for f in flags {
            assert!(!all.intersects(f), "{f:?} shares a bit");
            all.insert(f);
        }
        let marks = [
            Marks::ACTIVE,
            Marks::HEAD_ONLY,
            Marks::SLOW,
            Marks::CONTINUED,
            Marks::PARSING,
            Marks::WS_HEAD,
            Marks::CUT,
            Marks::EDITING,
        ];
        let mut all = Marks::EMPTY;
        for m in marks {
            assert!(!all.intersects(m), "{m:?} shares a bit");
            all.insert(m);
        }
    }

    #[test]
    fn insert_remove_contains() {
        let mut f = Flags::EMPTY;
        f.insert(Flags::SENDING | Flags::RECVING);
        assert!(f.contains(Flags::SENDING) && f.contains(Flags::RECVING));
        f.remove(Flags::SENDING);
        assert!(!f.contains(Flags::SENDING) && f.contains(Flags::RECVING));
        assert!(!f.contains(Flags::SENDING | Flags::RECVING));
        assert!(f.intersects(Flags::SENDING | Flags::RECVING));
        f.set(Flags::CHUNKED, true);
        f.set(Flags::RECVING, false);
        assert_eq!(f, Flags::CHUNKED);
    }
}
