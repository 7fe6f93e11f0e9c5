//! SIGTERM's drain (issue 16): the listeners close at once and `/readyz` turns 503, the
//! streams end spread over `--drain-period` (measured by the clients: no second sees more
//! than twice the even share), each with its transport's exact end, held polls are
//! answered, a second SIGTERM or a SIGINT ends the drain at once, and the process exits 0.
//! Every body runs on io_uring and on epoll.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;

/// Streams the spread test ends.
const N: usize = 80;
/// Its `--drain-period`, seconds.
const PERIOD_S: u64 = 4;

/// `n` streams on the server at `s`, cycling through every kind, each under its own id.
fn open_streams(s: SocketAddr, n: usize) -> Vec<Stream> {
    (0..n)
        .map(|i| Stream::open(s, KINDS[i % KINDS.len()], &format!("d{i}")))
        .collect()
}

/// How one stream ended: when its client saw the close, its kind, the bytes after its
/// messages, and how the connection closed.
type Ended = (Instant, Kind, Vec<u8>, Closed);

/// Reads every stream to its close, each in its own thread (the read may wait `limit`).
fn watch(streams: Vec<Stream>, limit: Duration) -> Vec<JoinHandle<Ended>> {
    streams
        .into_iter()
        .map(|mut st| {
            st.c.stream.set_read_timeout(Some(limit)).unwrap();
            std::thread::spawn(move || {
                let (rest, how) = st.c.read_to_close();
                (Instant::now(), st.kind, rest, how)
            })
        })
        .collect()
}

/// Asserts `rest` is exactly the proper end of a `kind` stream at a drain: WebSocket close
/// 1001; SSE a chunk `retry: N\n\n` (N in 1,000-10,000 ms) then the last chunk; the others
/// the last chunk.
fn check_end(kind: Kind, rest: &[u8], what: &str) {
    let want: Vec<u8> = match kind {
        Kind::Ws => vec![0x88, 0x02, 0x03, 0xe9],
        Kind::Sse => {
            let text = String::from_utf8_lossy(rest);
            let ms: u32 = text
                .split_once("retry: ")
                .and_then(|(_, r)| r.split_once('\n'))
                .and_then(|(n, _)| n.parse().ok())
                .unwrap_or_else(|| panic!("{what}: no SSE retry in {text:?}"));
            assert!((1_000..=10_000).contains(&ms), "{what}: SSE retry {ms}");
            let mut w = chunk(format!("retry: {ms}\n\n").as_bytes());
            w.extend_from_slice(b"0\r\n\r\n");
            w
        }
        _ => b"0\r\n\r\n".to_vec(),
    };
    assert_eq!(
        String::from_utf8_lossy(rest),
        String::from_utf8_lossy(&want),
        "{what}: {kind:?} end of stream"
    );
}

/// Waits until the listener at `addr` refuses connections (the drain has closed it).
fn wait_refused(addr: SocketAddr) {
    let refused = wait_until(Duration::from_secs(5), || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err()
    });
    assert!(refused, "{addr} still accepts 5 s after SIGTERM");
}

/// Waits for the exit and asserts status 0.
fn expect_exit_0(srv: &mut ChildServer, limit: Duration, what: &str) {
    let status = srv
        .wait_exit(limit)
        .unwrap_or_else(|| panic!("{what}: still running after {limit:?}"));
    assert_eq!(status.code(), Some(0), "{what}; stderr: {}", srv.stderr());
}

both_backends! {
/// `--drain-period 4s` with 80 streams of every kind: the listeners refuse at once, an idle
/// publisher is closed at once, each stream gets its exact end, and in no second after the
/// SIGTERM do the clients see more than 2 * 80 / 4 = 40 of the ends (all at once would be
/// 80 in one); exit 0, and no accept failure logged for the closed listeners.
fn drain_spreads_the_ends() {
    let period = format!("{PERIOD_S}s");
    let mut srv = Serve::new()
        .shards(2)
        .args(["--history", "0", "--drain-period", &period])
        .spawn();
    let (s, p) = (srv.subscriber, srv.publish);
    let streams = open_streams(s, N);
    let mut idle_pub = Publisher::connect(p);
    assert_eq!(json_number(&idle_pub.stats(), "connections"), N as f64);
    let watchers = watch(streams, Duration::from_secs(PERIOD_S + 20));
    let t0 = Instant::now();
    srv.signal(libc::SIGTERM);
    let (rest, _) = idle_pub.client.read_to_close();
    assert!(rest.is_empty(), "idle publisher got {rest:?}");
    wait_refused(s);
    wait_refused(p);
    let mut per_second = vec![0usize; 64];
    for (k, w) in watchers.into_iter().enumerate() {
        let (at, kind, rest, _) = w.join().expect("a stream reader panicked");
        check_end(kind, &rest, &format!("stream {k}"));
        per_second[(at - t0).as_secs().min(63) as usize] += 1;
    }
    let most = *per_second.iter().max().unwrap();
    let bound = 2 * N / PERIOD_S as usize;
    assert!(
        most <= bound,
        "{most} ends in one second, more than 2N/period = {bound}; per second: {:?}",
        &per_second[..PERIOD_S as usize + 3]
    );
    expect_exit_0(&mut srv, Duration::from_secs(20), "exit after the drain");
    let err = srv.stderr();
    assert!(
        !err.contains("accept failed"),
        "the drain's listener shutdown was logged as an accept failure: {err}"
    );
}

/// A second SIGTERM during a 120 s drain ends every stream at once, each with its exact
/// end, and the process exits 0 long before the period is over.
fn second_sigterm_ends_the_drain() {
    second_signal_ends_the_drain(libc::SIGTERM);
}

/// The same with SIGINT as the second signal.
fn sigint_ends_the_drain() {
    second_signal_ends_the_drain(libc::SIGINT);
}

/// A poll held when the drain starts is answered (no message, its cursor), then closed.
fn drain_answers_held_polls() {
    let mut srv = serve_history(&["--drain-period", "1s"]);
    let (s, p) = (srv.subscriber, srv.publish);
    let (_keeper, cur) = sse_fresh(s, "dp");
    assert_eq!(publish(p, "dp", b"dp#1"), 1);
    let now = cur.at(0, 1);
    let mut held = poll_send(s, &format!("dp?last_event_id={now}"), "");
    held.expect_silence(QUIET, "a poll with nothing new is held");
    srv.signal(libc::SIGTERM);
    let (head, body) = poll_answer(&mut held);
    assert_eq!(history_headers(&head, Some(true)), now);
    assert_eq!(body, poll_body(&[], &now, true, &[]));
    expect_exit_0(&mut srv, Duration::from_secs(20), "exit after the drain");
}
}

/// Opens a few streams, starts a 120 s drain, checks `/readyz` on `--metrics-listen` (200
/// before, 503 `not ready: draining` during), sends `sig` once the listener refuses, and
/// checks every stream's exact end and exit 0 well inside the period.
fn second_signal_ends_the_drain(sig: i32) {
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut srv = Serve::new()
        .shards(2)
        .args(["--history", "0", "--drain-period", "120s"])
        .args(["--metrics-listen", &metrics.to_string()])
        .spawn();
    let watchers = watch(open_streams(srv.subscriber, 8), Duration::from_secs(60));
    let ready = wait_until(Duration::from_secs(5), || {
        probe(metrics, "/readyz").0 == 200
    });
    assert!(
        ready,
        "/readyz before the drain: {:?}",
        probe(metrics, "/readyz")
    );
    srv.signal(libc::SIGTERM);
    wait_refused(srv.subscriber);
    assert_eq!(
        probe(metrics, "/readyz"),
        (503, "not ready: draining\n".to_string()),
        "/readyz during the drain"
    );
    srv.signal(sig);
    for (k, w) in watchers.into_iter().enumerate() {
        let (_, kind, rest, _) = w.join().expect("a stream reader panicked");
        check_end(kind, &rest, &format!("stream {k} after signal {sig}"));
    }
    expect_exit_0(
        &mut srv,
        Duration::from_secs(30),
        "exit after the second signal",
    );
}
