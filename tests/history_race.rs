//! No gap and no duplicate across a reconnect (issue 14), on both backends: a publisher
//! racing the replay of reconnecting subscribers (1,000 rounds each over SSE, WebSocket, raw and
//! long-polling), and a slow consumer cut on a message boundary that resumes with every
//! message once.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// Subscribers reconnecting at once, and rounds each (1,000 each; 2,000 in all).
const SUBS: usize = 2;
const ROUNDS: u64 = 1000;
/// Most messages the publisher runs ahead of the slowest subscriber (under the default
/// `--history` of 32 per id, so no position is lost).
const AHEAD: u64 = 16;

/// One round: resume `t` on SSE (by header), WebSocket or raw (cursor mode, by query) or a
/// poll, checking the verdict and the opening; read `k` messages (a poll: its one answer).
fn round(s: SocketAddr, t: &mut Track, transport: u64, k: u64) {
    let (cur, ids) = (t.cur.to_string(), t.ids.join(","));
    let what = format!("round on transport {transport} from {cur}");
    let resumed = |head: &Head| {
        assert_eq!(
            history_headers(head, Some(true)),
            Cursor::parse(&cur, &what)
        )
    };
    match transport {
        0 => {
            let (mut c, head) = sse_open(s, &ids, &lei(&cur));
            resumed(&head);
            c.expect_bytes(&sse_opening(&t.cur), &what);
            (0..k).for_each(|_| t.sse(&mut c, &what));
        }
        1 => {
            let (mut c, head) = ws_open(s, &format!("{ids}?cursors=1&last_event_id={cur}"), "");
            resumed(&head);
            c.expect_bytes(&ws_opening(&t.cur, true, &[]), &what);
            (0..k).for_each(|_| t.ws(&mut c, &what));
        }
        2 => {
            let (mut c, head) = raw_open(s, &format!("{ids}?cursors=1&last_event_id={cur}"), "");
            resumed(&head);
            c.expect_bytes(&raw_opening(&t.cur, true, &[]), &what);
            (0..k).for_each(|_| t.raw(&mut c, &what));
        }
        _ => {
            let (head, body) = poll(s, &format!("{ids}?last_event_id={cur}"));
            // The poll's Comet-Last-Event-ID is poll_at_once_and_held's rule; here the
            // verdict and the messages count.
            history_headers(&head, Some(true));
            assert!(
                t.poll(&body, true, &[]) >= 1,
                "{what}: an empty poll answer"
            );
        }
    }
}

/// The race on `ids` (comma-separated): a publisher sends to each id in turn without pause
/// (never more than [`AHEAD`] messages ahead of the slowest subscriber) while [`SUBS`]
/// subscribers each reconnect [`ROUNDS`] times with their last cursor.
fn race(ids: &'static str) {
    let srv = serve_history(&[]);
    let (s, p) = (srv.subscriber, srv.publish);
    let (_, cur0) = sse_fresh(s, ids);
    let names: Vec<&'static str> = ids.split(',').collect();
    let done = Arc::new(AtomicBool::new(false));
    let progress: Arc<Vec<AtomicU64>> = Arc::new((0..SUBS).map(|_| AtomicU64::new(0)).collect());
    let publisher = {
        let (done, progress, names) = (done.clone(), progress.clone(), names.clone());
        std::thread::spawn(move || {
            let mut publ = Publisher::connect(p);
            let mut sent = vec![0u64; names.len()];
            while !done.load(Ordering::Relaxed) {
                let slowest = progress
                    .iter()
                    .map(|a| a.load(Ordering::Relaxed))
                    .min()
                    .unwrap();
                let total: u64 = sent.iter().sum();
                if total >= slowest.saturating_add(AHEAD) {
                    std::thread::sleep(Duration::from_micros(100));
                    continue;
                }
                let i = (total % names.len() as u64) as usize;
                sent[i] += 1;
                publ.send(names[i], &numbered(names[i], sent[i]));
            }
            sent
        })
    };
    let subs: Vec<_> = (0..SUBS)
        .map(|j| {
            let (progress, cur0) = (progress.clone(), cur0.clone());
            std::thread::spawn(move || {
                let mut t = Track::new(ids, cur0);
                for r in 0..ROUNDS {
                    round(s, &mut t, (r + j as u64) % 4, 1 + r % 3);
                    let read = (0..t.ids.len()).map(|i| t.cur.off(i)).sum();
                    progress[j].store(read, Ordering::Relaxed);
                }
                // Done: no longer the slowest, or the publisher would stop for good at
                // this subscriber's last count while another one still reads on.
                progress[j].store(u64::MAX, Ordering::Relaxed);
                t.cur
            })
        })
        .collect();
    let ends: Vec<_> = subs.into_iter().map(|h| h.join()).collect();
    done.store(true, Ordering::Relaxed);
    let sent = publisher.join().expect("publisher");
    for end in ends {
        let end = end.expect("a racing subscriber failed (its panic is above)");
        let read: u64 = (0..names.len()).map(|i| end.off(i)).sum();
        assert!(
            (0..names.len()).all(|i| end.off(i) <= sent[i]),
            "{end} beyond {sent:?}"
        );
        assert!(read >= ROUNDS, "{end}: fewer messages than rounds");
    }
}

both_backends! {
/// The hard race of resuming: a publisher sends to one id without pause (never more than
/// 16 messages ahead of the slowest subscriber) while two subscribers each reconnect 1,000
/// times with their last cursor, on SSE, WebSocket, raw and `/poll/` in turn, reading 1-3
/// messages a round. Every round recovers, and each subscriber sees every message exactly
/// once and in order (each cursor one message on from the last). B12 for the replay: see
/// tests/CASES.md#b12.
fn b12_replay_race_once_in_order() {
    race("ra");
}
}

both_backends! {
/// The same race on a connection under two ids (their owners may be two shards), the
/// publisher alternating between them: each id's messages exactly once and in order.
fn replay_race_two_ids() {
    race("ra,rb");
}
}

/// A subscriber connection with a 4 KiB receive buffer, to stall with little in flight.
fn slow_client(addr: SocketAddr) -> Client {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    let stream: TcpStream = sock.into();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    Client {
        stream,
        buf: Vec::new(),
    }
}

/// 1,000-byte payloads: `<id>#<n>` and padding.
fn kilo(id: &str, n: u64) -> Vec<u8> {
    let mut m = numbered(id, n);
    m.resize(1000, b'.');
    m
}

/// Reads a cut stream of `kind` to its end: whole messages (checked by `t`), then the
/// transport's end (last-chunk; WebSocket close 1008), then the close. Returns how many.
fn read_to_cut_end(c: &mut Client, t: &mut Track, kind: Kind) -> u64 {
    let what = format!("{kind:?} stream cut as a slow consumer");
    let mut n = 0;
    loop {
        match kind {
            Kind::Ws => {
                let (b0, d) = c.read_ws_frame();
                if b0 == 0x88 {
                    assert_eq!(d, [0x03, 0xf0], "{what}: close frame 1008 with no reason");
                    break;
                }
                t.ws_unit(b0, &d, &what);
            }
            _ => {
                let d = c.read_chunk();
                if d.is_empty() {
                    break; // the last-chunk
                }
                match kind {
                    Kind::Sse => t.sse_unit(&d, &what),
                    _ => t.raw_unit(&d, &what),
                }
            }
        }
        n += 1;
    }
    let (rest, _) = c.read_to_close();
    assert!(
        rest.is_empty(),
        "{what}: bytes after the end: {:?}",
        truncate(&rest)
    );
    n
}

both_backends! {
/// `--max-pending-bytes 16384 --sndbuf 4096`, a subscriber (SSE, WebSocket and raw in
/// cursor mode) with a 4 KiB receive buffer that stops reading while 1,000-byte messages
/// are published until it is cut (a publish delivers to nobody): read afterwards, its
/// stream is whole messages then the transport's end (last-chunk, close 1008); resumed
/// from its last cursor it gets every later message once, in order, then live ones.
fn slow_consumer_cut_then_resume() {
    let flags = ["--max-pending-bytes", "16384", "--sndbuf", "4096", "--history", "100000"];
    let srv = serve_history(&flags);
    let (s, p) = (srv.subscriber, srv.publish);
    for (k, kind) in [Kind::Sse, Kind::Ws, Kind::Raw].into_iter().enumerate() {
        let id = format!("cut{k}");
        let mut c = slow_client(s);
        let (path, extra) = match kind {
            Kind::Sse => (id.clone(), SSE_HEADERS.to_string()),
            Kind::Ws => (format!("{id}?cursors=1"), ws_headers()),
            _ => (format!("{id}?cursors=1"), String::new()),
        };
        c.send(&sub_get(&path, &extra));
        let head = c.read_head();
        let mut t = Track::new(&id, history_headers(&head, None));
        t.payload = kilo;
        let opening = match kind {
            Kind::Sse => sse_opening(&t.cur),
            Kind::Ws => ws_opening(&t.cur, true, &[]),
            _ => raw_opening(&t.cur, true, &[]),
        };
        c.expect_bytes(&opening, "opening of the slow stream");
        let mut publ = Publisher::connect(p);
        let mut sent = 0;
        loop {
            sent += 1;
            if publ.send(&id, &kilo(&id, sent)) == 0 {
                break;
            }
            assert!(sent < 5000, "{kind:?}: a stalled reader was never cut");
        }
        let got = read_to_cut_end(&mut c, &mut t, kind);
        assert!(got < sent, "{kind:?}: {got} of {sent} before the cut");
        assert!(
            wait_until(Duration::from_secs(2), || stat(p, "slow_consumers_closed") == k as u64 + 1),
            "{kind:?}: slow_consumers_closed: {}",
            stats(p)
        );
        publ.send(&id, &kilo(&id, sent + 1));
        resume_after_cut(s, &mut t, kind, sent + 1);
    }
}
}

/// Resumes `t` on `kind` from its cursor (query form) and reads every message up to `last`
/// exactly once, then silence.
fn resume_after_cut(s: SocketAddr, t: &mut Track, kind: Kind, last: u64) {
    let id = t.ids[0].clone();
    let what = format!("{kind:?} resumed after the cut from {}", t.cur);
    let (mut c, head) = match kind {
        Kind::Sse => sse_open(s, &format!("{id}?last_event_id={}", t.cur), ""),
        Kind::Ws => ws_open(s, &format!("{id}?cursors=1&last_event_id={}", t.cur), ""),
        _ => raw_open(s, &format!("{id}?cursors=1&last_event_id={}", t.cur), ""),
    };
    assert_eq!(history_headers(&head, Some(true)), t.cur, "{what}");
    let opening = match kind {
        Kind::Sse => sse_opening(&t.cur),
        Kind::Ws => ws_opening(&t.cur, true, &[]),
        _ => raw_opening(&t.cur, true, &[]),
    };
    c.expect_bytes(&opening, &what);
    while t.cur.off(0) < last {
        match kind {
            Kind::Sse => t.sse(&mut c, &what),
            Kind::Ws => t.ws(&mut c, &what),
            _ => t.raw(&mut c, &what),
        }
    }
    c.expect_silence(QUIET, &format!("{what}: after the last message"));
}
