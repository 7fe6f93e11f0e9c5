//! The one subscriber event loop of the load tester, used by the main job's flood
//! ([`flood`](super::flood)), the million workers ([`million_worker`](super::million_worker))
//! and the friends logins ([`friends_subs`](super::friends_subs)).
//!
//! One thread, one mio (epoll, edge-triggered) loop, one slab of small [`Conn`] records
//! indexed by token (32 bytes with a 4-byte role state: a million cost tens of MB), one
//! shared 64 KiB read buffer; a per-connection buffer exists only while a head or unit is
//! split across reads. Each turn:
//! 1. connects due at `connect_rate`, at most `max_connecting` between connect and head
//!    ([`Pacer`](super::connect::Pacer));
//! 2. the role's [`Role::tick`] (stats lines, progress, churn) and the restarts it asked for;
//! 3. a wait on mio (and, with a [`RecvRing`], on the ring), then for each ready socket:
//!    connect check, `GET` request, reads fed to the [`ChunkParser`], each decoded unit to
//!    [`Role::on_unit`], the head to [`Role::on_head`], the end to [`Role::on_end`].
//!
//! What differs per role is the [`Role`] (ids, sources, what a message means, what is
//! counted) and a few switches in [`LoopConfig`]. With a ring (friends' `--client-io
//! uring`), a stream leaves mio once its head is read and is read by multishot receives.
//!
//! - `conn`: one connection's record and its steps (launch, request, read, end).
//! - `tests`: the loop against a small blocking server on 127.0.0.1:0.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Result;
use mio::{Events, Poll};

use super::connect::Pacer;
use super::uring_recv::{Got, RecvRing};
use crate::tools::loadtest::wire::chunk::{Expect, StreamError, Unit};
use crate::tools::loadtest::wire::url::UrlTemplate;
pub(crate) use conn::Conn;

mod conn;

/// What one kind of subscriber does with its streams: the per-role half of the loop.
pub(crate) trait Role {
    /// Per-connection state kept in the record (4 bytes keeps a record at 32 bytes).
    type Per: Copy + Default;
    /// The id connection `i` subscribes to (`{id}` of the URL).
    fn id(&self, i: usize) -> u64;
    /// The source address of connection `i`; `None`: the kernel's choice.
    fn source(&self, i: usize) -> Option<Ipv4Addr>;
    /// Periodic work at the start of each turn (stats lines, churn); returns the longest the
    /// turn may then wait, ms-scale.
    fn tick(&mut self, turn: &mut Turn<'_, Self::Per>, now: Instant) -> Duration;
    /// After each turn's events (publish counters to other threads).
    fn after_events(&mut self) {}
    /// One decoded unit (chunk, line, WebSocket frame or ping) of connection `i`, read at
    /// `now_us` (CLOCK_MONOTONIC microseconds).
    fn on_unit(&mut self, i: usize, per: &mut Self::Per, unit: Unit<'_>, now_us: u64);
    /// Appends to connection `i`'s request target, after the URL template's path (a query
    /// parameter such as `&last_event_id=...`); nothing by default.
    fn write_query(&self, _i: usize, _out: &mut Vec<u8>) {}
    /// Appends request header lines (each ending CRLF) for connection `i`, after
    /// [`LoopConfig::headers`]; none by default.
    fn write_headers(&self, _i: usize, _out: &mut Vec<u8>) {}
    /// Connection `i` got its response head at `now_us` (after its [`Unit::Head`]).
    fn on_head(&mut self, i: usize, now_us: u64);
    /// Connection `i` ended (`head` says whether it had got its head), and why.
    fn on_end(&mut self, i: usize, head: bool, why: &End);
}

/// Why a connection ended. `Display` gives the flood's words; roles may word some apart.
#[derive(Debug)]
pub(crate) enum End {
    /// The connect failed.
    Connect(std::io::Error),
    /// Writing the request failed.
    Request(std::io::Error),
    /// The server closed the connection (a read of 0).
    PeerClosed,
    /// A read failed.
    Read(std::io::Error),
    /// The stream could not be decoded (bad head, framing or frame).
    Stream(StreamError),
    /// The server ended the stream (last chunk, or a WebSocket close frame).
    Finished,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Connect(e) => write!(f, "connect: {e}"),
            End::Request(e) => write!(f, "sending request: {e}"),
            End::PeerClosed => f.write_str("server closed the connection"),
            End::Read(e) => write!(f, "read: {e}"),
            End::Stream(e) => write!(f, "{e}"),
            End::Finished => f.write_str("server ended the stream (last chunk or close frame)"),
        }
    }
}

/// The loop's settings apart from the role.
pub(crate) struct LoopConfig {
    /// Where to connect and what to `GET` (`{id}` from [`Role::id`]).
    pub(crate) url: UrlTemplate,
    /// Extra request header lines, each ending in CRLF.
    pub(crate) headers: &'static str,
    /// The response head accepted, and so how the body is decoded.
    pub(crate) expect: Expect,
    /// Connections; connection `i` is token `i`.
    pub(crate) count: usize,
    /// Connects started per second.
    pub(crate) connect_rate: f64,
    /// Most connections between connect and head at once.
    pub(crate) max_connecting: u64,
    /// Stop after this long; `None`: until the stop flag.
    pub(crate) until: Option<Duration>,
    /// Stop once every connection has ended.
    pub(crate) stop_when_all_ended: bool,
    /// Write the request right after connect() (on loopback the handshake has usually
    /// completed inside it), saving a writable wake-up and the connect check.
    pub(crate) eager_request: bool,
    /// A read shorter than the buffer emptied the socket: stop reading until the next edge
    /// (saves the read that would only say EAGAIN).
    pub(crate) short_read_drains: bool,
    /// Close each ending connection with a reset (SO_LINGER 0: no TIME_WAIT).
    pub(crate) reset_on_end: bool,
    /// Close the connections still open at the end with a reset.
    pub(crate) reset_at_finish: bool,
}

/// The role's view of the loop during [`Role::tick`].
pub(crate) struct Turn<'a, P> {
    conns: &'a [Conn<P>],
    restarts: &'a mut Vec<(usize, bool)>,
}

impl<P> Turn<'_, P> {
    /// True if connection `i` has its head and is open.
    pub(crate) fn streaming(&self, i: usize) -> bool {
        self.conns[i].is_streaming()
    }

    /// Closes connection `i` after the tick (with a reset if `reset`, else a FIN) and
    /// connects it again at once, outside the connect pacing.
    pub(crate) fn restart(&mut self, i: usize, reset: bool) {
        self.restarts.push((i, reset));
    }
}

/// What the loop hands back at the end.
pub(crate) struct Finish<R: Role> {
    /// The role, with whatever it counted.
    pub(crate) role: R,
    /// Each connection's role state, by index.
    pub(crate) pers: Vec<R::Per>,
    /// How streams were read after their heads: `uring` or `epoll`.
    pub(crate) io_used: &'static str,
    /// Multishot receives re-armed (ring only).
    pub(crate) rearmed: u64,
}

/// The loop: its settings, sockets, pacing and role.
struct SubLoop<R: Role> {
    cfg: LoopConfig,
    poll: Poll,
    conns: Vec<Conn<R::Per>>,
    /// With `--client-io uring`: reads the streams once their heads are in.
    ring: Option<RecvRing>,
    /// The one read buffer all connections share.
    buf: Vec<u8>,
    /// Scratch space for a request.
    req: Vec<u8>,
    pacer: Pacer,
    /// Connections ended so far.
    ended: usize,
    /// Restarts asked for by the role's tick.
    restarts: Vec<(usize, bool)>,
    /// Ends reported by the ring, handled once its wait returns.
    ring_ends: Vec<(usize, End)>,
    role: R,
}

/// Runs `role`'s subscribers on this thread until `stop` is set, `cfg.until` passes, or
/// (with `stop_when_all_ended`) every connection has ended. Errors: the poll or ring failed.
pub(crate) fn run<R: Role>(
    cfg: LoopConfig,
    role: R,
    ring: Option<RecvRing>,
    stop: &AtomicBool,
) -> Result<Finish<R>> {
    let pacer = Pacer::new(cfg.connect_rate, cfg.max_connecting, cfg.count as u64);
    let mut l = SubLoop {
        poll: Poll::new()?,
        conns: (0..cfg.count).map(|_| Conn::new()).collect(),
        ring,
        buf: vec![0; 64 * 1024],
        req: Vec::with_capacity(256),
        pacer,
        ended: 0,
        restarts: Vec::new(),
        ring_ends: Vec::new(),
        role,
        cfg,
    };
    l.event_loop(stop)?;
    if l.cfg.reset_at_finish {
        for s in l.conns.iter().filter_map(Conn::stream) {
            set_linger_zero(s);
        }
    }
    Ok(Finish {
        pers: l.conns.iter().map(|c| c.per).collect(),
        io_used: if l.ring.is_some() { "uring" } else { "epoll" },
        rearmed: l.ring.as_ref().map_or(0, |r| r.rearmed),
        role: l.role,
    })
}

impl<R: Role> SubLoop<R> {
    fn event_loop(&mut self, stop: &AtomicBool) -> Result<()> {
        let mut events = Events::with_capacity(1024);
        let start = Instant::now();
        loop {
            let now = Instant::now();
            let ended = self.cfg.stop_when_all_ended && self.ended == self.cfg.count;
            let timed_out = self.cfg.until.is_some_and(|d| now >= start + d);
            if ended || timed_out || stop.load(Relaxed) {
                return Ok(());
            }
            while let Some(i) = self.pacer.next(now) {
                self.launch(i);
            }
            let mut turn = Turn {
                conns: &self.conns,
                restarts: &mut self.restarts,
            };
            let mut wait = self.role.tick(&mut turn, now);
            for (i, reset) in std::mem::take(&mut self.restarts) {
                self.restart(i, reset);
            }
            if let Some(w) = self.pacer.wait(now) {
                wait = wait.min(w);
            }
            let connecting = self.pacer.connecting();
            if self.ring.is_none() || connecting {
                // With a ring, mio only sees connects and heads: a short poll, then the ring.
                let poll_wait = if self.ring.is_some() {
                    wait.min(Duration::from_millis(1))
                } else {
                    wait
                };
                match self.poll.poll(&mut events, Some(poll_wait)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            for ev in events.iter() {
                let i = ev.token().0;
                if self.conns.get(i).is_some_and(Conn::is_open) {
                    // Errors and hang-ups are handled by the write or read that reports them.
                    let failed = ev.is_error() || ev.is_read_closed();
                    self.on_event(i, ev.is_writable() || failed, ev.is_readable() || failed)?;
                }
            }
            events.clear();
            if self.ring.is_some() {
                self.ring_turn(if connecting { Duration::ZERO } else { wait })?;
            }
            self.role.after_events();
        }
    }

    /// Waits up to `wait` on the ring and feeds what it received.
    fn ring_turn(&mut self, wait: Duration) -> Result<()> {
        let SubLoop {
            ring,
            conns,
            role,
            cfg,
            ring_ends,
            ..
        } = self;
        let Some(r) = ring.as_mut() else {
            return Ok(());
        };
        r.wait(wait, |i, got| {
            let why = match got {
                Got::Data(d) => {
                    let c = &mut conns[i];
                    match c.feed(role, i, d, cfg.expect, now_us()) {
                        Err(e) => Some(End::Stream(e)),
                        Ok(()) if c.ended() => Some(End::Finished),
                        Ok(()) => None,
                    }
                }
                Got::End => Some(End::PeerClosed),
                Got::Error(e) => Some(End::Read(e)),
            };
            if let Some(why) = why {
                ring_ends.push((i, why));
            }
        })?;
        for (i, why) in std::mem::take(&mut self.ring_ends) {
            // A stream may end twice in one batch (an error, then the close): once counts.
            if self.conns[i].is_open() {
                if let Some(r) = self.ring.as_mut() {
                    r.stop(i)?;
                }
                self.end(i, why);
            }
        }
        Ok(())
    }
}

/// CLOCK_MONOTONIC microseconds, the clock of the messages' send times.
fn now_us() -> u64 {
    crate::tools::loadtest::host::proc::now_us()
}

/// Sets SO_LINGER 0, so that the close that follows (dropping `s`) resets the connection:
/// neither end keeps a TIME_WAIT socket.
pub(crate) fn set_linger_zero(s: &mio::net::TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}

#[cfg(test)]
mod tests;
