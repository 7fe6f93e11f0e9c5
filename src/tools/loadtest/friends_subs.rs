//! The logged-in users of `loadtest friends`: one `GET /test/<user>` stream per user, all on
//! one thread with one mio loop, every friends event checked.
//!
//! A chunk must be exactly `Recvd msg #N from <from>: '<from>:<seq>:<t_us>'<br/>\n`: N the
//! previous N + 1 on its connection, the body's publisher the chunk's `from`, `from` a user
//! whose events this user receives (its follower list, from the loadtest's own copy of the
//! graph), and no (seq, connection) pair twice. Publish-to-receive latency is taken per
//! delivery from the send time in the body.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Poll, Token};

use super::check::{parse_body, parse_u64};
use super::chunk::{Carry, ChunkParser};
use super::flood::{connect_from, watch_connect};
use super::proc::now_us;
use super::uring_recv::{Got, RecvConfig, RecvRing};

/// How a subscriber thread reads its streams once they have their head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientIo {
    /// `uring` if this kernel has it (ring with DEFER_TASKRUN and IORING_FEAT_MIN_TIMEOUT),
    /// else `epoll`.
    Auto,
    /// One multishot receive per stream on an io_uring ring, woken per batch.
    Uring,
    /// mio (epoll, edge-triggered), woken per delivery.
    Epoll,
}

/// Lower bounds of the event sizes (logged-in recipients of the publisher) the latency is
/// also broken down by: 1-49, 50-199, 200-499, 500 and more.
pub const FANOUT_BUCKETS: [usize; 4] = [1, 50, 200, 500];

/// Connections per source address (see `flood`).
const CONNS_PER_SOURCE: usize = 12_000;
/// End reasons kept.
const MAX_NOTES: usize = 5;

/// What the subscriber loop does.
pub struct SubsConfig {
    /// The subscriber listener.
    pub addr: SocketAddr,
    /// All the users logged in by the load test, one connection each.
    pub users: Arc<Vec<u32>>,
    /// The indices into `users` this loop connects (several loops share the work).
    pub mine: Vec<usize>,
    /// Connects started per second.
    pub connect_rate: f64,
    /// Most connects in flight at once.
    pub max_connecting: usize,
    /// Publisher -> the logged-in users that receive its events (sorted).
    pub recipients: Arc<HashMap<u32, Vec<u32>>>,
    /// How streams are read after their head.
    pub io: ClientIo,
    /// With [`ClientIo::Uring`]: see [`RecvConfig::min_wait_us`].
    pub min_wait_us: u32,
    /// Deliveries this loop expects (sizes its set of seen deliveries).
    pub expected: usize,
}

/// Counters for other threads and the stop flag.
#[derive(Debug, Default)]
pub struct SubsShared {
    /// Streams with their `200` head.
    pub connected: AtomicU64,
    /// Connections that ended.
    pub closed: AtomicU64,
    /// Distinct deliveries received.
    pub received: AtomicU64,
    /// Set to end the loop.
    pub stop: AtomicBool,
}

/// What the loop saw.
pub struct SubsResult {
    /// Streams that got their head.
    pub connected: u64,
    /// Connections that ended.
    pub closed: u64,
    /// Distinct (event, connection) deliveries: `seq << 24 | connection`.
    pub got: ahash::AHashSet<u64>,
    /// Deliveries received twice.
    pub duplicates: u64,
    /// Chunks whose N was not the previous N + 1.
    pub out_of_order: u64,
    /// Events from a user this connection's user does not receive.
    pub unexpected: u64,
    /// Chunks that were not friends events in the test format, or broken streams.
    pub garbled: u64,
    /// Heartbeat chunks.
    pub heartbeats: u64,
    /// Publish-to-receive latency per delivery, us.
    pub latency_us: Histogram<u64>,
    /// The same, per event size ([`FANOUT_BUCKETS`]).
    pub by_fanout: Vec<Histogram<u64>>,
    /// The first few problems.
    pub notes: Vec<String>,
    /// How the streams were read after their heads (`uring` or `epoll`).
    pub io_used: Option<&'static str>,
    /// Multishot receives re-armed because provided buffers ran out (uring only).
    pub rearmed: u64,
}

impl SubsResult {
    /// Nothing seen yet, latencies going into `latency_us`.
    fn empty(latency_us: Histogram<u64>, capacity: usize) -> SubsResult {
        SubsResult {
            connected: 0,
            closed: 0,
            got: ahash::AHashSet::with_capacity(capacity),
            duplicates: 0,
            out_of_order: 0,
            unexpected: 0,
            garbled: 0,
            heartbeats: 0,
            by_fanout: vec![latency_us.clone(); FANOUT_BUCKETS.len()],
            latency_us,
            notes: Vec::new(),
            io_used: None,
            rearmed: 0,
        }
    }

    /// The results of two loops over disjoint connections, together.
    pub fn merge(mut self, o: SubsResult) -> Result<SubsResult> {
        self.connected += o.connected;
        self.closed += o.closed;
        self.got.extend(o.got);
        self.duplicates += o.duplicates;
        self.out_of_order += o.out_of_order;
        self.unexpected += o.unexpected;
        self.garbled += o.garbled;
        self.heartbeats += o.heartbeats;
        self.latency_us.add(&o.latency_us)?;
        for (h, oh) in self.by_fanout.iter_mut().zip(&o.by_fanout) {
            h.add(oh)?;
        }
        self.notes.extend(o.notes);
        self.rearmed += o.rearmed;
        self.io_used = match (self.io_used, o.io_used) {
            (Some(a), Some(b)) if a != b => Some("mixed"),
            (a, b) => a.or(b),
        };
        self.notes.truncate(MAX_NOTES);
        Ok(self)
    }
}

struct Conn {
    stream: Option<TcpStream>,
    partial: Option<Carry>,
    parser: ChunkParser,
    last_n: u64,
    sent: bool,
}

/// Runs until `shared.stop` is set (or every connection ended). Connects, requests and heads
/// go through mio; the streams are then read by mio too, or handed to a [`RecvRing`].
pub fn run(cfg: SubsConfig, shared: Arc<SubsShared>) -> Result<SubsResult> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let n = cfg.mine.len();
    let rcfg = RecvConfig {
        min_wait_us: cfg.min_wait_us,
        ..RecvConfig::default()
    };
    let mut ring = match cfg.io {
        ClientIo::Epoll => None,
        ClientIo::Uring => Some(RecvRing::new(n, rcfg)?),
        ClientIo::Auto => {
            match RecvRing::new(n, rcfg) {
                Ok(r) => {
                    if cfg.mine.first() == Some(&0) {
                        eprintln!("loadtest friends: reading the streams with io_uring (--client-io auto)");
                    }
                    Some(r)
                }
                Err(e) => {
                    eprintln!(
                        "loadtest friends: io_uring client unavailable ({e}); reading with epoll"
                    );
                    None
                }
            }
        }
    };
    let sources = cfg.users.len().div_ceil(CONNS_PER_SOURCE).max(1) as u32;
    let mut conns: Vec<Conn> = (0..n)
        .map(|_| Conn {
            stream: None,
            partial: None,
            parser: ChunkParser::new(),
            last_n: 0,
            sent: false,
        })
        .collect();
    // Sized up front: growing a set of a million entries mid-run stalls this loop for tens
    // of ms, which would show up as delivery latency.
    let mut res = SubsResult::empty(Histogram::new_with_bounds(1, 60_000_000, 3)?, cfg.expected);
    let mut buf = vec![0u8; 64 * 1024];
    let (mut launched, mut in_flight) = (0usize, 0usize);
    let mut endings: Vec<(usize, String)> = Vec::new();
    let start = Instant::now();
    loop {
        if shared.stop.load(Relaxed) || res.closed as usize == n {
            break;
        }
        let due = (start.elapsed().as_secs_f64() * cfg.connect_rate) as usize + 1;
        while launched < n.min(due) && in_flight < cfg.max_connecting {
            let i = launched;
            launched += 1;
            in_flight += 1;
            let g = cfg.mine[i] as u32;
            let src = Ipv4Addr::from(u32::from(Ipv4Addr::LOCALHOST) + (g % sources));
            match watch_connect(connect_from(src, cfg.addr), poll.registry(), Token(i)) {
                Ok(s) => conns[i].stream = Some(s),
                Err(e) => {
                    in_flight -= 1;
                    res.closed += 1;
                    res.note(format!("user {}: connect: {e}", cfg.users[g as usize]));
                }
            }
        }
        let connecting = launched < n || in_flight > 0;
        if ring.is_none() || connecting {
            let wait = Duration::from_millis(if ring.is_some() { 1 } else { 20 });
            match poll.poll(&mut events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let user = cfg.users[cfg.mine[i]];
            let c = &mut conns[i];
            let Some(stream) = c.stream.as_mut() else {
                continue;
            };
            let mut ending: Option<String> = None;
            if !c.sent && (ev.is_writable() || ev.is_error()) {
                if let Ok(Some(e)) | Err(e) = stream.take_error() {
                    ending = Some(format!("connect: {e}"));
                } else if stream.peer_addr().is_ok() {
                    let req = format!("GET /test/{user} HTTP/1.1\r\nHost: {}\r\n\r\n", cfg.addr);
                    // A new socket's send buffer takes a 60-byte request whole.
                    match stream.write(req.as_bytes()) {
                        Ok(k) if k == req.len() => c.sent = true,
                        Ok(_) => ending = Some("short request write".into()),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => ending = Some(format!("write: {e}")),
                    }
                }
            }
            while ending.is_none() && c.sent && (ev.is_readable() || ev.is_read_closed()) {
                let Some(stream) = c.stream.as_mut() else {
                    break;
                };
                let k = match stream.read(&mut buf) {
                    Ok(0) => {
                        ending = Some("server closed the stream".into());
                        break;
                    }
                    Ok(k) => k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        ending = Some(format!("read: {e}"));
                        break;
                    }
                };
                let had_head = c.parser.head_done();
                ending = c.feed(&mut res, &cfg.recipients, cfg.mine[i], user, &buf[..k]);
                if !had_head && c.parser.head_done() {
                    res.connected += 1;
                    in_flight -= 1;
                    shared.connected.store(res.connected, Relaxed);
                    if let (Some(r), None) = (ring.as_mut(), &ending) {
                        // From here on the ring reads this stream.
                        let mut s = c.stream.take().expect("read above");
                        poll.registry().deregister(&mut s)?;
                        r.arm(s.as_raw_fd(), i)?;
                        c.stream = Some(s);
                        break;
                    }
                }
                if k < buf.len() {
                    // A short read emptied the socket: more data raises a new edge, so the
                    // read that would only say EAGAIN is saved (half the syscalls).
                    break;
                }
            }
            if let Some(why) = ending {
                if let Some(mut s) = c.stream.take() {
                    let _ = poll.registry().deregister(&mut s);
                }
                if !c.parser.head_done() {
                    in_flight -= 1;
                }
                res.closed += 1;
                shared.closed.store(res.closed, Relaxed);
                res.note(format!("user {user}: {why}"));
            }
        }
        events.clear();
        if let Some(r) = ring.as_mut() {
            let wait = if connecting {
                Duration::ZERO
            } else {
                Duration::from_millis(20)
            };
            r.wait(wait, |i, got| {
                let user = cfg.users[cfg.mine[i]];
                let c = &mut conns[i];
                let why = match got {
                    Got::Data(d) => c.feed(&mut res, &cfg.recipients, cfg.mine[i], user, d),
                    Got::End => Some("server closed the stream".into()),
                    Got::Error(e) => Some(format!("read: {e}")),
                };
                if let Some(why) = why {
                    endings.push((i, why));
                }
            })?;
            for (i, why) in endings.drain(..) {
                if conns[i].stream.take().is_some() {
                    r.stop(i)?;
                    res.closed += 1;
                    shared.closed.store(res.closed, Relaxed);
                    res.note(format!("user {}: {why}", cfg.users[cfg.mine[i]]));
                }
            }
        }
        shared.received.store(res.got.len() as u64, Relaxed);
    }
    // The load tester closes first: a reset (SO_LINGER 0) leaves no TIME_WAIT per login on
    // the client side, as the other load tests do.
    for s in conns.iter().filter_map(|c| c.stream.as_ref()) {
        let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
    }
    res.io_used = Some(if ring.is_some() { "uring" } else { "epoll" });
    res.rearmed = ring.as_ref().map_or(0, |r| r.rearmed);
    Ok(res)
}

impl Conn {
    /// Feeds `data`, the next bytes of the stream of login `g` (user `user`), checking each chunk;
    /// returns why the stream must end, if it must.
    fn feed(
        &mut self,
        res: &mut SubsResult,
        rec: &HashMap<u32, Vec<u32>>,
        g: usize,
        user: u32,
        data: &[u8],
    ) -> Option<String> {
        let now = now_us();
        let last_n = &mut self.last_n;
        let fed = self.parser.feed_any(data, &mut self.partial, false, |d| {
            check_chunk(res, rec, g, user, last_n, d, now)
        });
        fed.err().map(|e| {
            res.garbled += 1;
            e.to_string()
        })
    }
}

impl SubsResult {
    /// Keeps one of the first few problems.
    fn note(&mut self, s: String) {
        if self.notes.len() < MAX_NOTES {
            self.notes.push(s);
        }
    }
}

/// Checks one chunk on connection `i` (user `user`).
fn check_chunk(
    res: &mut SubsResult,
    recipients: &HashMap<u32, Vec<u32>>,
    i: usize,
    user: u32,
    last_n: &mut u64,
    d: &[u8],
    now: u64,
) {
    if d == b"\n" {
        res.heartbeats += 1;
        return;
    }
    let Some((n, from, body)) = parse_friend_chunk(d) else {
        res.garbled += 1;
        return;
    };
    if n != *last_n + 1 {
        res.out_of_order += 1;
    }
    *last_n = n;
    let Some((id, seq, t_us)) = parse_body(body) else {
        res.garbled += 1;
        return;
    };
    if id != from {
        res.garbled += 1;
        return;
    }
    let Some(r) = u32::try_from(from)
        .ok()
        .and_then(|f| recipients.get(&f))
        .filter(|r| r.binary_search(&user).is_ok())
    else {
        res.unexpected += 1;
        return;
    };
    if !res.got.insert(seq << 24 | i as u64) {
        res.duplicates += 1;
        return;
    }
    let us = now.saturating_sub(t_us).max(1);
    let _ = res.latency_us.record(us);
    let b = FANOUT_BUCKETS
        .iter()
        .rposition(|&lo| r.len() >= lo)
        .unwrap_or(0);
    let _ = res.by_fanout[b].record(us);
}

/// Splits `Recvd msg #N from U: 'BODY'<br/>\n` into (N, U, BODY).
pub fn parse_friend_chunk(d: &[u8]) -> Option<(u64, u64, &[u8])> {
    let rest = d.strip_prefix(b"Recvd msg #")?;
    let k = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let n = parse_u64(&rest[..k])?;
    let rest = rest[k..].strip_prefix(b" from ")?;
    let k = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let from = parse_u64(&rest[..k])?;
    let body = rest[k..].strip_prefix(b": '")?.strip_suffix(b"'<br/>\n")?;
    Some((n, from, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn friend_chunks() {
        assert_eq!(
            parse_friend_chunk(b"Recvd msg #12 from 7: '7:3:99'<br/>\n"),
            Some((12, 7, &b"7:3:99"[..]))
        );
        assert_eq!(parse_friend_chunk(b"Recvd msg #12: '7:3:99'<br/>\n"), None);
        let mut res = SubsResult::empty(Histogram::new(3).unwrap(), 0);
        let rec: HashMap<u32, Vec<u32>> = [(7, vec![2, 5])].into_iter().collect();
        let mut last = 0;
        let c = |n: u64, from: u64, seq: u64| {
            format!("Recvd msg #{n} from {from}: '{from}:{seq}:100'<br/>\n").into_bytes()
        };
        check_chunk(&mut res, &rec, 0, 5, &mut last, &c(1, 7, 1), 150);
        check_chunk(&mut res, &rec, 0, 5, &mut last, &c(2, 7, 1), 150);
        check_chunk(&mut res, &rec, 0, 5, &mut last, &c(4, 7, 2), 150);
        check_chunk(&mut res, &rec, 0, 5, &mut last, &c(5, 8, 3), 150);
        assert_eq!(
            (
                res.got.len(),
                res.duplicates,
                res.out_of_order,
                res.unexpected
            ),
            (2, 1, 1, 1)
        );
        assert_eq!(res.latency_us.max(), 50);
    }
}
