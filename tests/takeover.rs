//! Safe restarts (issue 16): a second `serve` on ports that already have a listener exits
//! non-zero naming the port and the process holding it, and the first keeps all traffic;
//! `serve --takeover` starts beside the running one, which then drains into it on SIGTERM
//! while a publisher publishes without pause: every subscriber, reconnecting with its
//! cursor, gets every message exactly once. Every body runs on io_uring and on epoll.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// Runs `serve` on `listen` and `publish` to completion; asserts it is refused naming
/// `port` and the pid of `holder`.
fn expect_refused(listen: &str, publish: &str, port: u16, holder: &ChildServer) {
    let out = Serve::new()
        .listen(listen)
        .publish_listen(publish)
        .command()
        .output()
        .expect("run a second serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second serve started: {err}");
    assert!(
        out.stdout.is_empty(),
        "a refused serve printed a LISTEN line"
    );
    assert!(
        err.contains(&format!("port {port} is already in use")),
        "the error does not name port {port}: {err}"
    );
    assert!(
        err.contains(&format!("pid {} (uring-comet)", holder.pid())),
        "the error does not name the holder: {err}"
    );
}

/// A loopback port nobody listens on (bound, then released).
fn free_port() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

both_backends! {
/// Both ports used, or only the publish one: `serve` exits non-zero naming the port and
/// `pid <first> (uring-comet)`; then the first server still gets every publish made on a
/// fresh connection and delivers it to every subscriber (nothing went to a second process).
fn second_serve_on_used_ports_is_refused() {
    let a = Serve::new().shards(2).spawn();
    let (s, p) = (a.subscriber, a.publish);
    expect_refused(&s.to_string(), &p.to_string(), s.port(), &a);
    expect_refused(&free_port(), &p.to_string(), p.port(), &a);
    let mut subs: Vec<Subscriber> = (0..4).map(|_| Subscriber::connect(s, "kept")).collect();
    for k in 0..20 {
        let msg = format!("kept#{k}");
        assert_eq!(publish(p, "kept", msg.as_bytes()), 4, "publish {k}");
        for sub in &mut subs {
            sub.expect_msg(msg.as_bytes());
        }
    }
}

/// A hand-over: subscribers (SSE, history on) on the old server, a publisher sending to
/// each id every 20 ms; a `--takeover` server starts on the same ports, the old one gets
/// SIGTERM and drains into it (exit 0). The drained subscribers reconnect with their cursor
/// (a cursor from the old process is `unknown-epoch` on the new one: they then ask for
/// `earliest`, everything the new one holds); the publisher retries a request whose
/// connection closed unanswered. Every subscriber gets every message once, in order.
fn takeover_hands_over_without_loss() {
    hand_over(&[], true);
}

/// The same in cluster mode, where Redis keeps the history: every drained subscriber
/// resumes on the new node with its cursor alone (`Comet-Recovered: true`, never a reset).
fn takeover_in_cluster_mode_resumes_every_cursor() {
    let redis = Redis::start();
    hand_over(&["--cluster", &redis.url()], false);
}
}

/// Runs a hand-over with `extra` server flags (see the tests above); `resets`: whether a
/// reconnecting subscriber may be told `unknown-epoch` (and then ask for `earliest`).
fn hand_over(extra: &[&str], resets: bool) {
    let flags = ["--history", "1000", "--drain-period", "2s"];
    let mut old = Serve::new().shards(2).args(flags).args(extra).spawn();
    let (s, p) = (old.subscriber, old.publish);
    let (last, open) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicUsize::new(0)));
    let ids: Vec<String> = (0..6).map(|i| format!("h{i}")).collect();
    let subs: Vec<_> = ids
        .iter()
        .map(|id| {
            let (id, last, open) = (id.clone(), last.clone(), open.clone());
            std::thread::spawn(move || follow(s, &id, &last, &open, resets))
        })
        .collect();
    // Every stream has its head (so it is subscribed) before the first publish.
    assert!(wait_until(Duration::from_secs(5), || open.load(SeqCst) == 6));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (ids, stop) = (ids.clone(), stop.clone());
        std::thread::spawn(move || publish_until(p, &ids, &stop))
    };
    std::thread::sleep(Duration::from_millis(300));
    let _new = Serve::new()
        .listen(&s.to_string())
        .publish_listen(&p.to_string())
        .shards(2)
        .args(flags)
        .args(extra)
        .args(["--takeover"])
        .spawn();
    old.signal(libc::SIGTERM);
    let status = old
        .wait_exit(Duration::from_secs(20))
        .expect("old server still running");
    assert_eq!(status.code(), Some(0), "old server: {}", old.stderr());
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, SeqCst);
    // One last message, once every subscriber knows it is the last.
    let n = publisher.join().expect("publisher panicked") + 1;
    last.store(n, SeqCst);
    for id in &ids {
        let req = send_request(id, n.to_string().as_bytes());
        publish_once(&mut connect_publisher(p), &req).expect("the last publish");
    }
    for (id, t) in ids.iter().zip(subs) {
        let got = t.join().expect("subscriber panicked");
        let want: Vec<u64> = (1..=n).collect();
        assert_eq!(got, want, "subscriber of {id}: messages received");
    }
}

/// Publishes `n` to every id, for n = 1, 2, ... every 20 ms until `stop`, on one keep-alive
/// connection to `p`, reconnecting and resending when a request is not answered (the old
/// server closed the connection before reading it). Returns the last n published.
fn publish_until(p: SocketAddr, ids: &[String], stop: &AtomicBool) -> u64 {
    let mut conn: Option<TcpStream> = None;
    let mut n = 0;
    while !stop.load(SeqCst) {
        n += 1;
        for id in ids {
            let req = send_request(id, n.to_string().as_bytes());
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let c = conn.get_or_insert_with(|| connect_publisher(p));
                if publish_once(c, &req).is_ok() {
                    break;
                }
                conn = None;
                assert!(
                    Instant::now() < deadline,
                    "publish {id} #{n}: no answer for 10 s"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    n
}

/// A connection to the publish port (whichever server listens there).
fn connect_publisher(p: SocketAddr) -> TcpStream {
    let c = TcpStream::connect_timeout(&p, Duration::from_secs(5)).expect("connect publisher");
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.set_nodelay(true).unwrap();
    c
}

/// Sends one publish request and reads its `200` answer (head and Content-Length body).
/// Errors: the connection closed or failed first, or the answer is not 200.
fn publish_once(c: &mut TcpStream, req: &[u8]) -> std::io::Result<()> {
    c.write_all(req)?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 1024];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let k = c.read(&mut tmp)?;
        if k == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&tmp[..k]);
    };
    let head = parse_head(&buf[..end]);
    if head.status != 200 {
        return Err(std::io::Error::other(format!("status {}", head.status)));
    }
    let len: usize = head
        .header("content-length")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut body = buf.split_off(end);
    while body.len() < len {
        let k = c.read(&mut tmp)?;
        if k == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&tmp[..k]);
    }
    Ok(())
}

/// Follows `id` over SSE at `s` until it has received message `last` (once known): on each
/// end of stream it reconnects with its cursor (`Last-Event-ID`), and after an
/// `unknown-epoch` reset (a cursor of the other process; a failure unless `resets`) with
/// `last_event_id=earliest`. Counts its first stream's head in `open`. Returns the payloads
/// received, in order.
fn follow(s: SocketAddr, id: &str, last: &AtomicU64, open: &AtomicUsize, resets: bool) -> Vec<u64> {
    let mut got: Vec<u64> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut earliest = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (path, extra) = match (&cursor, earliest) {
            (_, true) => (format!("{id}?last_event_id=earliest"), String::new()),
            (Some(c), false) => (id.to_string(), lei(c)),
            (None, false) => (id.to_string(), String::new()),
        };
        earliest = false;
        let (mut c, _) = sse_open(s, &path, &extra);
        if cursor.is_none() {
            open.fetch_add(1, SeqCst);
        }
        c.stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        loop {
            let n = last.load(SeqCst);
            if n > 0 && got.last() == Some(&n) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{id}: got {got:?}, want up to {n}"
            );
            let data = c.read_chunk();
            if data.is_empty() {
                break; // the stream's end: reconnect with the cursor
            }
            if read_events(&data, &mut got, &mut cursor, id) {
                assert!(resets, "{id}: a cursor was not resumed on the new node");
                earliest = true;
                break;
            }
        }
    }
}

/// Reads the SSE events of one chunk: a message appends its payload to `got`, every `id:`
/// moves `cursor`. Returns whether an `unknown-epoch` reset came (any other reset fails).
fn read_events(data: &[u8], got: &mut Vec<u64>, cursor: &mut Option<String>, id: &str) -> bool {
    let text = std::str::from_utf8(data).expect("SSE is UTF-8");
    let mut lost = false;
    for ev in text.split("\n\n").filter(|e| !e.is_empty()) {
        let (mut event, mut payload) = (None, None);
        for line in ev.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                *cursor = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("event: ") {
                event = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ") {
                payload = Some(v.to_string());
            }
        }
        match (event.as_deref(), payload) {
            (Some("reset"), Some(d)) => {
                assert!(d.contains("\"unknown-epoch\""), "{id}: reset {d}");
                lost = true;
            }
            (None, Some(d)) => got.push(d.parse().unwrap_or_else(|_| panic!("{id}: data {d:?}"))),
            _ => {} // the opening, a retry, a heartbeat
        }
    }
    lost
}
