//! `loadtest room`'s subscribers: `rooms` ids with `subs_per_room` connections each on one
//! transport, on the one subscriber loop ([`subscriber`](super::subscriber)); every delivery
//! checked by [`RoomCheck`] (order by the stream's own numbering, room, length) and counted
//! per connection.
//!
//! Connection `i` subscribes to room `1 + i % rooms`, so every room fills at the same pace.
//! `/test/` numbers its chunks per connection (`Recvd msg #N`); `sse`, `ws` and `raw` carry
//! the room's cursor, whose offset every subscriber of the room shares (the opening sets where
//! a connection starts).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::connect::{loopback_source, CONNS_PER_SOURCE};
use super::subscriber::{End, Role, Turn};
use crate::tools::loadtest::wire::check::parse_chunk;
use crate::tools::loadtest::wire::check::room::RoomCheck;
use crate::tools::loadtest::wire::chunk::Unit;
use crate::tools::loadtest::wire::resume::cursor::Position;
use crate::tools::loadtest::wire::resume::{ConnDecoder, Event, Transport};

/// Most end reasons kept.
const MAX_NOTES: usize = 5;

/// Counters the loop publishes for other threads, and the stop flag it obeys.
#[derive(Debug, Default)]
pub(crate) struct RoomShared {
    /// Streams that got their head.
    pub(crate) connected: AtomicU64,
    /// Connections that ended or failed.
    pub(crate) closed: AtomicU64,
    /// Deliveries that passed every check.
    pub(crate) delivered: AtomicU64,
    /// Set by another thread to end the loop.
    pub(crate) stop: AtomicBool,
}

/// The room subscribers in the loop.
pub(crate) struct RoomRole {
    rooms: u64,
    transport: Transport,
    /// Source addresses spread over (1: the kernel's choice).
    sources: u32,
    /// Each connection's decoder (cursor transports; empty for `test`).
    decoders: Vec<Option<ConnDecoder>>,
    /// The checks and per-connection counts.
    pub(crate) check: RoomCheck,
    /// Streams that got their head.
    pub(crate) connected: u64,
    /// Connections that ended or failed.
    pub(crate) closed: u64,
    /// The first few reasons a connection ended.
    pub(crate) notes: Vec<String>,
    shared: Arc<RoomShared>,
}

impl RoomRole {
    /// `conns` connections over `rooms` rooms on `transport` to a server at `ip`, messages of
    /// `msg_bytes`, counters published to `shared`.
    pub(crate) fn new(
        conns: usize,
        rooms: u64,
        transport: Transport,
        msg_bytes: usize,
        ip: IpAddr,
        shared: Arc<RoomShared>,
    ) -> RoomRole {
        let sources = match ip {
            IpAddr::V4(ip) if ip.is_loopback() => (conns as u64).div_ceil(CONNS_PER_SOURCE) as u32,
            _ => 1,
        };
        let decoders = match transport {
            Transport::Test => Vec::new(),
            t => (0..conns).map(|_| ConnDecoder::new(t)).collect(),
        };
        RoomRole {
            rooms: rooms.max(1),
            transport,
            sources,
            decoders,
            check: RoomCheck::new(conns, msg_bytes),
            connected: 0,
            closed: 0,
            notes: Vec::new(),
            shared,
        }
    }

    /// One unit of a cursor transport's connection `i` in `room`.
    fn cursor_unit(&mut self, i: usize, room: u64, last: &mut u32, d: &[u8], now_us: u64) {
        let Some(mut dec) = self.decoders[i].take() else {
            return; // Broken: the rest of this stream is not looked at.
        };
        let check = &mut self.check;
        let fed = dec.feed(d, &mut |e| match e {
            Event::Heartbeat => check.counts.heartbeats += 1,
            Event::Opening { cursor, .. } => {
                *last = Position::parse(cursor).map_or(0, |p| p.offset as u32);
            }
            Event::Message { cursor, payload } => {
                let n = match cursor.map(Position::parse) {
                    None => None,
                    Some(Some(p)) => Some(p.offset),
                    Some(None) => {
                        check.counts.garbled += 1;
                        return check.note(room, "cursor not one `<epoch>-<offset>`", payload);
                    }
                };
                check.message(i, room, last, n, payload, now_us);
            }
        });
        match fed {
            Ok(()) => self.decoders[i] = Some(dec),
            Err(why) => {
                self.check.counts.garbled += 1;
                self.check.note(room, why, d);
            }
        }
    }
}

impl Role for RoomRole {
    /// The connection's last message number (0: none yet).
    type Per = u32;

    fn id(&self, i: usize) -> u64 {
        1 + i as u64 % self.rooms
    }

    fn source(&self, i: usize) -> Option<Ipv4Addr> {
        (self.sources > 1).then(|| loopback_source(i as u32 % self.sources))
    }

    fn tick(&mut self, _turn: &mut Turn<'_, u32>, _now: Instant) -> Duration {
        Duration::from_millis(100)
    }

    fn after_events(&mut self) {
        self.shared.connected.store(self.connected, Relaxed);
        self.shared.closed.store(self.closed, Relaxed);
        self.shared.delivered.store(self.check.counts.ok, Relaxed);
    }

    fn on_unit(&mut self, i: usize, last: &mut u32, unit: Unit<'_>, now_us: u64) {
        let room = self.id(i);
        match unit {
            Unit::Ping => self.check.counts.heartbeats += 1,
            Unit::Head(h) => {
                if self.transport != Transport::Test {
                    self.decoders[i] = ConnDecoder::for_head(self.transport, h);
                }
            }
            Unit::Data(b"\n") if self.transport == Transport::Test => {
                self.check.counts.heartbeats += 1
            }
            Unit::Data(d) if self.transport == Transport::Test => match parse_chunk(d) {
                Some((n, body)) => self.check.message(i, room, last, Some(n), body, now_us),
                None => {
                    self.check.counts.garbled += 1;
                    self.check.note(room, "garbled chunk", d);
                }
            },
            Unit::Data(d) => self.cursor_unit(i, room, last, d, now_us),
        }
    }

    fn on_head(&mut self, _i: usize, _now_us: u64) {
        self.connected += 1;
    }

    fn on_end(&mut self, i: usize, _head: bool, why: &End) {
        self.closed += 1;
        if self.notes.len() < MAX_NOTES {
            self.notes
                .push(format!("connection {i} (room {}): {why}", self.id(i)));
        }
    }
}
