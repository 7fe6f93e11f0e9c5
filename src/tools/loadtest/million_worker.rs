//! One client process of `loadtest million` (the hidden `loadtest million-worker`): holds up to
//! ~19,500 subscriber streams (RLIMIT_NOFILE is 20,000 per process here and cannot be raised)
//! from one source address, and talks to the parent over a line protocol.
//!
//! The loop is the flood loop cut down to what a million needs: one thread, one mio (epoll,
//! edge-triggered) loop, one slab of 32-byte [`Conn`] records indexed by token, one shared
//! 64 KiB read buffer, a per-connection buffer only while a head or chunk is split across
//! reads. Connects are non-blocking, bound round-robin to the `--source` addresses with
//! IP_BIND_ADDRESS_NO_PORT (the 4-tuple picks the port), started at `--rate` per second with
//! at most `--max-connecting` between connect and `200` head.
//!
//! Every stream expects exactly one message, `Recvd msg #1: '<id>:<id>:<t_us>'<br/>\n` (the
//! parent publishes sequence number = id); a record counts the good messages of its
//! connection, anything else is counted as bad at once.
//!
//! Protocol. Stdout, one line each:
//! - `P <connected> <failed> <closed> <received> <bad>` every `--report-ms` (cumulative:
//!   streams with a `200` head, connects that never got one, streams that ended after their
//!   head, good messages, bad chunks);
//! - `R key=value ...` once at the end, the verdict over every connection ([`Verdict`]).
//!
//! Stdin: `close` (or end of input, e.g. the parent died) makes the worker check every
//! connection, close all of them with SO_LINGER 0 (a reset: no TIME_WAIT left behind on
//! either side), print `R` and exit.

use std::io::{self, BufRead, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use mio::net::TcpStream;
use mio::{Events, Poll, Token};

use super::check::{parse_body, parse_chunk};
use super::chunk::{Carry, ChunkParser};
use super::flood::{connect_from, watch_connect};
use super::proc::{now_us, raise_nofile_limit};

/// Flags of the hidden `uring-comet loadtest million-worker` (started by `loadtest million`).
#[derive(Args, Debug, Clone)]
pub struct WorkerArgs {
    /// The server's subscriber listener.
    #[arg(long)]
    pub connect: SocketAddr,
    /// Source addresses (127.0.0.2, ...), repeatable: connection `i` uses the `i % n`-th.
    #[arg(long, required = true)]
    pub source: Vec<Ipv4Addr>,
    /// First id; connection `i` subscribes to `/test/<first-id + i>`.
    #[arg(long)]
    pub first_id: u64,
    /// Connections.
    #[arg(long)]
    pub count: u64,
    /// Connects started per second.
    #[arg(long)]
    pub rate: f64,
    /// Most connects between connect and `200` head at once.
    #[arg(long, default_value_t = 64)]
    pub max_connecting: u64,
    /// Milliseconds between progress lines.
    #[arg(long, default_value_t = 250)]
    pub report_ms: u64,
}

/// Where one connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotStarted,
    Connecting,
    /// Connected; `Conn::sent` bytes of the request written.
    Sending,
    /// Request written; reading the head, then chunks.
    Streaming,
    /// Ended before its `200` head.
    Failed,
    /// Ended after its head (the server closed it, or a bad stream).
    Closed,
}

/// One subscriber connection; its id is `first_id` + its slab index.
struct Conn {
    stream: Option<TcpStream>,
    /// A head or chunk split across reads; `None` otherwise.
    partial: Option<Carry>,
    parser: ChunkParser,
    /// Good messages received on this connection (exactly 1 is right).
    good: u32,
    /// Request bytes written so far.
    sent: u16,
    state: State,
}

impl Conn {
    fn new() -> Conn {
        Conn {
            stream: None,
            partial: None,
            parser: ChunkParser::new(),
            good: 0,
            sent: 0,
            state: State::NotStarted,
        }
    }
}

/// Bytes of client state per connection (the brief: at most 64).
pub const RECORD_BYTES: usize = std::mem::size_of::<Conn>();

/// Upper bounds (us) of the latency buckets: bucket `b` holds latencies in `[2^(b-1), 2^b)`.
pub const LAT_BUCKETS: usize = 32;

/// What a worker found at the end, over all its connections.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Connections asked for.
    pub count: u64,
    /// Streams that got their `200` head.
    pub connected: u64,
    /// Connects that never got a head.
    pub failed: u64,
    /// Streams that ended after their head, before the close.
    pub closed: u64,
    /// Connections that got exactly one good message.
    pub exact: u64,
    /// Connections that got none.
    pub missing: u64,
    /// Connections that got more than one (a duplicate).
    pub extra: u64,
    /// Chunks that were not the expected message (garbled, wrong id or seq, wrong `#N`).
    pub bad: u64,
    /// Heartbeat chunks (`\n`), if the server sends them.
    pub heartbeats: u64,
    /// This process's CPU time, user + system, seconds x 1000.
    pub cpu_ms: u64,
    /// Peak RSS of this process (VmHWM), bytes.
    pub hwm: u64,
    /// Publish-to-receive latency histogram, log2 buckets of microseconds.
    pub lat: Vec<u64>,
    /// The first few problems, described (spaces replaced by `_`).
    pub notes: Vec<String>,
}

impl Verdict {
    /// The `R ...` line (without the newline).
    pub fn line(&self) -> String {
        let lat: Vec<String> = self.lat.iter().map(u64::to_string).collect();
        let mut s = format!(
            "R count={} connected={} failed={} closed={} exact={} missing={} extra={} bad={} heartbeats={} cpu_ms={} hwm={} lat={}",
            self.count, self.connected, self.failed, self.closed, self.exact, self.missing,
            self.extra, self.bad, self.heartbeats, self.cpu_ms, self.hwm, lat.join(",")
        );
        for n in &self.notes {
            s.push_str(" note=");
            s.push_str(&n.replace(char::is_whitespace, "_"));
        }
        s
    }

    /// Parses an `R ...` line.
    pub fn parse(line: &str) -> Option<Verdict> {
        let mut v = Verdict::default();
        let mut words = line.split_whitespace();
        if words.next()? != "R" {
            return None;
        }
        for w in words {
            let (k, val) = w.split_once('=')?;
            let num = || val.parse::<u64>().ok();
            match k {
                "count" => v.count = num()?,
                "connected" => v.connected = num()?,
                "failed" => v.failed = num()?,
                "closed" => v.closed = num()?,
                "exact" => v.exact = num()?,
                "missing" => v.missing = num()?,
                "extra" => v.extra = num()?,
                "bad" => v.bad = num()?,
                "heartbeats" => v.heartbeats = num()?,
                "cpu_ms" => v.cpu_ms = num()?,
                "hwm" => v.hwm = num()?,
                "lat" => {
                    v.lat = val
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(|s| s.parse().ok())
                        .collect::<Option<_>>()?
                }
                "note" => v.notes.push(val.to_string()),
                _ => {}
            }
        }
        Some(v)
    }
}

/// A `P ...` progress line's numbers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Streams with a `200` head.
    pub connected: u64,
    /// Connects that never got a head.
    pub failed: u64,
    /// Streams that ended after their head.
    pub closed: u64,
    /// Good messages.
    pub received: u64,
    /// Bad chunks.
    pub bad: u64,
}

impl Progress {
    /// The `P ...` line (without the newline).
    pub fn line(&self) -> String {
        format!(
            "P {} {} {} {} {}",
            self.connected, self.failed, self.closed, self.received, self.bad
        )
    }

    /// Parses a `P ...` line.
    pub fn parse(line: &str) -> Option<Progress> {
        let mut w = line.split_whitespace();
        if w.next()? != "P" {
            return None;
        }
        let mut n = || w.next()?.parse::<u64>().ok();
        Some(Progress {
            connected: n()?,
            failed: n()?,
            closed: n()?,
            received: n()?,
            bad: n()?,
        })
    }
}

/// Most problem notes kept.
const MAX_NOTES: usize = 3;

/// Runs the worker until `close` on stdin (or its end); prints the verdict.
pub fn run(a: WorkerArgs) -> Result<()> {
    if a.count == 0 || !(a.rate.is_finite() && a.rate > 0.0) {
        bail!("--count and --rate must be positive");
    }
    let limit = raise_nofile_limit();
    if a.count + 32 > limit {
        bail!(
            "{} connections need an fd limit of {}; RLIMIT_NOFILE is {limit}",
            a.count,
            a.count + 32
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    // Stdin: `close`, or its end (the parent is gone), ends the run.
    std::thread::Builder::new()
        .name("stdin".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            for line in io::stdin().lock().lines() {
                match line {
                    Ok(l) if l.trim() == "close" => break,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            s.store(true, Relaxed);
        })?;
    let mut w = Worker {
        poll: Poll::new()?,
        conns: (0..a.count).map(|_| Conn::new()).collect(),
        buf: vec![0; 64 * 1024],
        req: Vec::with_capacity(128),
        launched: 0,
        in_flight: 0,
        p: Progress::default(),
        v: Verdict {
            count: a.count,
            lat: vec![0; LAT_BUCKETS],
            ..Verdict::default()
        },
        a,
    };
    w.event_loop(&stop)?;
    w.finish();
    let mut out = io::stdout().lock();
    writeln!(out, "{}", w.v.line())?;
    out.flush()?;
    Ok(())
}

struct Worker {
    a: WorkerArgs,
    poll: Poll,
    conns: Vec<Conn>,
    /// The one read buffer all connections share.
    buf: Vec<u8>,
    /// Scratch space for a request.
    req: Vec<u8>,
    launched: u64,
    in_flight: u64,
    p: Progress,
    v: Verdict,
}

impl Worker {
    fn event_loop(&mut self, stop: &AtomicBool) -> Result<()> {
        let mut events = Events::with_capacity(1024);
        let start = Instant::now();
        let every = Duration::from_millis(self.a.report_ms.max(10));
        let mut next_report = start;
        while !stop.load(Relaxed) {
            let now = Instant::now();
            let due = (now.duration_since(start).as_secs_f64() * self.a.rate) as u64 + 1;
            while self.launched < self.a.count.min(due) && self.in_flight < self.a.max_connecting {
                self.launch(self.launched as usize);
                self.launched += 1;
            }
            if now >= next_report {
                self.report();
                next_report += every;
            }
            let mut timeout = next_report.saturating_duration_since(now);
            if self.launched < self.a.count && self.in_flight < self.a.max_connecting {
                let next = start + Duration::from_secs_f64(due as f64 / self.a.rate);
                timeout = timeout.min(next.saturating_duration_since(now));
            }
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            for ev in events.iter() {
                let i = ev.token().0;
                if self.conns.get(i).is_some_and(|c| c.stream.is_some()) {
                    let failed = ev.is_error() || ev.is_read_closed();
                    self.on_event(i, ev.is_writable() || failed, ev.is_readable() || failed);
                }
            }
        }
        self.report();
        Ok(())
    }

    fn report(&self) {
        // A closed stdout (the parent is gone) must not stop the worker: stdin ends it.
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{}", self.p.line()).and_then(|_| out.flush());
    }

    fn note(&mut self, what: String) {
        if self.v.notes.len() < MAX_NOTES {
            self.v.notes.push(what);
        }
    }

    fn id(&self, i: usize) -> u64 {
        self.a.first_id + i as u64
    }

    /// Starts the non-blocking connect of connection `i`.
    fn launch(&mut self, i: usize) {
        self.in_flight += 1;
        self.conns[i].state = State::Connecting;
        let src = self.a.source[i % self.a.source.len()];
        match watch_connect(
            connect_from(src, self.a.connect),
            self.poll.registry(),
            Token(i),
        ) {
            Ok(s) => self.conns[i].stream = Some(s),
            Err(e) => return self.end(i, &format!("connect: {e}")),
        }
        // On loopback the handshake has usually completed inside connect(): write the request
        // at once, saving the writable wake-up and the SO_ERROR / getpeername checks. A socket
        // still in SYN_SENT answers EAGAIN and waits for its writable event as usual.
        self.conns[i].state = State::Sending;
        match self.send_request(i) {
            Ok(()) if self.conns[i].sent == 0 => self.conns[i].state = State::Connecting,
            Ok(()) => {}
            Err(e) => self.end(i, &format!("connect: {e}")),
        }
    }

    fn on_event(&mut self, i: usize, writable: bool, readable: bool) {
        let c = &mut self.conns[i];
        let Some(stream) = c.stream.as_mut() else {
            return;
        };
        if c.state == State::Connecting {
            if !writable {
                return;
            }
            match stream.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => return self.end(i, &format!("connect: {e}")),
            }
            match stream.peer_addr() {
                Ok(_) => c.state = State::Sending,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.end(i, &format!("connect: {e}")),
            }
        }
        if self.conns[i].state == State::Sending && writable {
            if let Err(e) = self.send_request(i) {
                return self.end(i, &format!("sending request: {e}"));
            }
        }
        if readable && self.conns[i].state != State::Connecting {
            self.read(i);
        }
    }

    /// Writes (the rest of) connection `i`'s `GET` request.
    fn send_request(&mut self, i: usize) -> io::Result<()> {
        use std::io::Write as _;
        self.req.clear();
        let id = self.id(i);
        let _ = write!(
            self.req,
            "GET /test/{id} HTTP/1.1\r\nHost: {}\r\n\r\n",
            self.a.connect
        );
        let c = &mut self.conns[i];
        let Some(stream) = c.stream.as_mut() else {
            return Ok(());
        };
        while (c.sent as usize) < self.req.len() {
            match stream.write(&self.req[c.sent as usize..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => c.sent += n as u16,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        c.state = State::Streaming;
        Ok(())
    }

    /// Reads connection `i` until it would block, checking every chunk.
    fn read(&mut self, i: usize) {
        let id = self.id(i);
        let Worker {
            conns, buf, p, v, ..
        } = self;
        let c = &mut conns[i];
        let mut notes: Vec<String> = Vec::new();
        let ending = loop {
            let Some(stream) = c.stream.as_mut() else {
                return;
            };
            let n = match stream.read(buf) {
                Ok(0) => break "server closed the connection".to_string(),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break String::new(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break format!("read: {e}"),
            };
            let had_head = c.parser.head_done();
            let now = now_us();
            let good = &mut c.good;
            let fed =
                c.parser
                    .feed_any(&buf[..n], &mut c.partial, false, |chunk| match check_chunk(
                        id, *good, chunk, now,
                    ) {
                        Check::Good(lat) => {
                            *good += 1;
                            p.received += 1;
                            v.lat[lat_bucket(lat)] += 1;
                        }
                        Check::Heartbeat => v.heartbeats += 1,
                        Check::Bad(why) => {
                            p.bad += 1;
                            if notes.len() < MAX_NOTES {
                                let shown = String::from_utf8_lossy(chunk);
                                notes.push(format!("id {id}: {why}: {shown:?}"));
                            }
                        }
                    });
            if !had_head && c.parser.head_done() {
                p.connected += 1;
                self.in_flight -= 1;
            }
            if let Err(e) = fed {
                p.bad += 1;
                break e.to_string();
            }
            if c.parser.ended() {
                break "server ended the stream".to_string();
            }
        };
        for n in notes {
            self.note(n);
        }
        if !ending.is_empty() {
            self.end(i, &ending);
        }
    }

    /// Ends connection `i` early (failed connect, server close, bad stream).
    fn end(&mut self, i: usize, why: &str) {
        let id = self.id(i);
        let c = &mut self.conns[i];
        if let Some(mut s) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
            set_linger_zero(&s);
        }
        c.partial = None;
        if c.parser.head_done() {
            c.state = State::Closed;
            self.p.closed += 1;
        } else {
            c.state = State::Failed;
            self.in_flight -= 1;
            self.p.failed += 1;
        }
        self.note(format!("id {id}: {why}"));
    }

    /// Checks every connection and closes the open ones with a reset.
    fn finish(&mut self) {
        let v = &mut self.v;
        for c in self.conns.iter_mut() {
            match c.good {
                0 => v.missing += 1,
                1 => v.exact += 1,
                _ => v.extra += 1,
            }
            if let Some(s) = c.stream.take() {
                set_linger_zero(&s);
            }
        }
        v.connected = self.p.connected;
        v.failed = self.p.failed;
        v.closed = self.p.closed;
        v.bad = self.p.bad;
        v.cpu_ms = own_cpu_ms();
        v.hwm = own_hwm();
    }
}

/// What a chunk was.
#[derive(Debug, PartialEq, Eq)]
enum Check {
    /// The expected message; its publish-to-receive latency, us.
    Good(u64),
    /// A heartbeat (`\n`).
    Heartbeat,
    /// Anything else, and why.
    Bad(&'static str),
}

/// Checks one chunk on the connection of `id` that has had `good` good messages so far: the
/// only right chunk is `Recvd msg #<good+1>: '<id>:<id>:<t_us>'<br/>\n` with `t_us <= now`.
fn check_chunk(id: u64, good: u32, chunk: &[u8], now: u64) -> Check {
    if chunk == b"\n" {
        return Check::Heartbeat;
    }
    let Some((n, msg)) = parse_chunk(chunk) else {
        return Check::Bad("garbled chunk");
    };
    let Some((mid, seq, t)) = parse_body(msg) else {
        return Check::Bad("message not in the test format");
    };
    if mid != id || seq != id {
        return Check::Bad("message for another id");
    }
    if t > now {
        return Check::Bad("send time in the future");
    }
    if n != u64::from(good) + 1 {
        return Check::Bad("wrong message number");
    }
    Check::Good(now - t)
}

/// The log2 bucket of a latency in microseconds.
pub fn lat_bucket(us: u64) -> usize {
    ((64 - us.leading_zeros()) as usize).min(LAT_BUCKETS - 1)
}

/// Sets SO_LINGER 0, so that the close that follows (dropping `s`) resets the connection:
/// neither end keeps a TIME_WAIT socket.
fn set_linger_zero(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}

/// This process's CPU time (user + system), milliseconds.
fn own_cpu_ms() -> u64 {
    // SAFETY: getrusage writes one rusage through a valid pointer.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
    ms(ru.ru_utime) + ms(ru.ru_stime)
}

/// This process's peak RSS (VmHWM), bytes.
fn own_hwm() -> u64 {
    let t = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    t.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        .map_or(0, |k| k * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_stays_small() {
        // The brief: at most 64 bytes of client state per connection. mio's sockets carry a
        // registration check (8 more bytes) in debug builds only.
        let limit = if cfg!(debug_assertions) { 48 } else { 32 };
        assert!(std::mem::size_of::<Conn>() <= limit);
    }

    #[test]
    fn chunks_checked() {
        let ok = b"Recvd msg #1: '7:7:100'<br/>\n";
        assert_eq!(check_chunk(7, 0, ok, 150), Check::Good(50));
        assert_eq!(
            check_chunk(7, 1, ok, 150),
            Check::Bad("wrong message number")
        );
        assert_eq!(
            check_chunk(8, 0, ok, 150),
            Check::Bad("message for another id")
        );
        let wrong_seq = b"Recvd msg #1: '7:6:100'<br/>\n";
        assert_eq!(
            check_chunk(7, 0, wrong_seq, 150),
            Check::Bad("message for another id")
        );
        assert_eq!(
            check_chunk(7, 0, ok, 50),
            Check::Bad("send time in the future")
        );
        assert_eq!(check_chunk(7, 0, b"\n", 1), Check::Heartbeat);
        assert_eq!(check_chunk(7, 0, b"hello", 1), Check::Bad("garbled chunk"));
    }

    #[test]
    fn lines_round_trip() {
        let p = Progress {
            connected: 5,
            failed: 1,
            closed: 2,
            received: 4,
            bad: 0,
        };
        assert_eq!(Progress::parse(&p.line()), Some(p));
        assert_eq!(Progress::parse("P 1 2"), None);
        let v = Verdict {
            count: 10,
            connected: 9,
            exact: 8,
            missing: 2,
            lat: vec![0, 3, 5],
            notes: vec!["id 3: connect: refused (os error 111)".into()],
            ..Verdict::default()
        };
        let back = Verdict::parse(&v.line()).unwrap();
        assert_eq!(back.exact, 8);
        assert_eq!(back.lat, vec![0, 3, 5]);
        assert_eq!(back.notes, vec!["id_3:_connect:_refused_(os_error_111)"]);
        assert_eq!(lat_bucket(0), 0);
        assert_eq!(lat_bucket(1), 1);
        assert_eq!(lat_bucket(1000), 10);
        assert_eq!(lat_bucket(u64::MAX), LAT_BUCKETS - 1);
    }
}
