//! Subscriber streams: the seed's session, multi-id connections, several connections under one
//! id, logout on client close, HTML escaping, and "a send after the headers always arrives"
//! (case B12, also over every stream kind and both placements).

mod common;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::*;
use uring_comet::config::Placement;

both_backends! {
/// The seed's session: a subscriber on 123 gets #1 and #2; a send to 456 (nobody) reports 0.
fn seed_session() {
    let server = start(2);
    let mut sub = Subscriber::connect(server.subscriber_addr(), "123");
    // Headers come at once and nothing follows them until a message is sent.
    sub.client.expect_silence(Duration::from_millis(100), "stream before any message");

    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(p.send("123", b"Hello World"), 1, "send to 123 with one subscriber");
    // The exact bytes, written out by hand: 33 = 0x21 bytes of data.
    let expected: &[u8] = b"21\r\nRecvd msg #1: 'Hello World'<br/>\n\r\n";
    assert_eq!(msg_chunk(1, b"Hello World"), expected, "helper disagrees with hand-written bytes");
    sub.client.expect_bytes(expected, "first message");
    sub.received = 1;

    assert_eq!(p.send("456", b"nobody listens"), 0, "send to 456 with no subscriber");
    assert_eq!(p.send("123", b"Second message"), 1, "second send to 123");
    sub.client.expect_bytes(b"24\r\nRecvd msg #2: 'Second message'<br/>\n\r\n", "second message");
    sub.received = 2;
    // The message to 456 must not have leaked to 123.
    sub.client.expect_silence(Duration::from_millis(200), "after #2");
    server.shutdown().expect("shutdown");
}
}

both_backends! {
/// One connection under three ids: a send to each arrives once, numbered #1, #2, #3.
fn one_connection_three_ids() {
    let server = start(2);
    let mut sub = Subscriber::connect(server.subscriber_addr(), "1,2,3");
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(p.send("1", b"to one"), 1);
    assert_eq!(p.send("2", b"to two"), 1);
    assert_eq!(p.send("3", b"to three"), 1);
    assert_eq!(p.send("4", b"to four"), 0, "id 4 was not subscribed");
    sub.expect_msg(b"to one");
    sub.expect_msg(b"to two");
    sub.expect_msg(b"to three");
    sub.client.expect_silence(Duration::from_millis(200), "after #3 (each send arrives once)");
    // And again, so numbering continues per connection, not per id.
    assert_eq!(p.send("2", b"two again"), 1);
    sub.expect_msg(b"two again");
}
}

both_backends! {
/// Two connections under one id both get a send (delivered 2); after one closes, the other
/// still gets the next (delivered 1).
fn two_connections_one_id() {
    let server = start(2);
    let mut a = Subscriber::connect(server.subscriber_addr(), "shared");
    let mut b = Subscriber::connect(server.subscriber_addr(), "shared");
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(p.send("shared", b"for both"), 2);
    a.expect_msg(b"for both");
    b.expect_msg(b"for both");

    a.close();
    // The close must be noticed without a send; allow 1 s, each reply 1 or 2 meanwhile.
    let start = Instant::now();
    let mut i = 0;
    loop {
        i += 1;
        let msg = format!("after close {i}");
        let n = p.send("shared", msg.as_bytes());
        assert!(n == 1 || n == 2, "delivered {n} with one or two subscribers");
        b.expect_msg(msg.as_bytes());
        if n == 1 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(1), "closed subscriber still counted after 1 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(p.send("shared", b"last"), 1);
    b.expect_msg(b"last");
}
}

/// Sends `probe` messages to `id` for up to 1 s after a failing first probe, for the failure
/// message: how long the server took to log the connection out, if it ever did.
fn diagnose_logout(p: &mut Publisher, id: &str) -> String {
    let start = Instant::now();
    let mut replies = Vec::new();
    while start.elapsed() < Duration::from_secs(1) {
        let n = p.send(id, b"probe");
        assert!(n <= 1, "delivered {n} to an id that had one subscriber");
        replies.push(n);
        if n == 0 {
            return format!("went to 0 after {} more sends ({replies:?}): the close is only noticed when writing", replies.len());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    format!("never went to 0 within 1 s of further sends ({replies:?})")
}

both_backends! {
/// Logout on client close, detected by reading (not by a failed write): 200 ms after the client
/// closes, the very first send to its id must report 0, and `/stats` must already count one
/// connection less before any send was made to it.
fn logout_on_client_close() {
    let server = start(2);
    let mut p = Publisher::connect(server.publish_addr());
    let c0 = json_number(&p.stats(), "connections");

    // Plain close (FIN).
    let mut sub = Subscriber::connect(server.subscriber_addr(), "gone-1");
    assert_eq!(p.send("gone-1", b"before close"), 1);
    sub.expect_msg(b"before close");
    assert!(
        wait_until(Duration::from_secs(1), || json_number(&p.stats(), "connections") == c0 + 1.0),
        "stats connections should be {} with one subscriber open: {}",
        c0 + 1.0,
        p.stats()
    );
    sub.close();
    let closed_at = Instant::now();
    // No send to gone-1 is made until the stats show the connection gone: a server that only
    // notices the close when a write fails never gets there.
    assert!(
        wait_until(Duration::from_secs(1), || json_number(&p.stats(), "connections") == c0),
        "1 s after the subscriber closed (and no send to it), stats still show: {}",
        p.stats()
    );
    std::thread::sleep(Duration::from_millis(200).saturating_sub(closed_at.elapsed()));
    let first = p.send("gone-1", b"after close");
    assert!(first <= 1, "delivered {first} to an id that had one subscriber");
    if first != 0 {
        panic!("first send 200 ms after the close reported {first}; {}", diagnose_logout(&mut p, "gone-1"));
    }

    // A connection under several ids is logged out under all of them.
    let mut sub = Subscriber::connect(server.subscriber_addr(), "gone-a,gone-b,gone-c");
    assert_eq!(p.send("gone-b", b"x"), 1);
    sub.expect_msg(b"x");
    sub.close();
    std::thread::sleep(Duration::from_millis(200));
    for id in ["gone-a", "gone-b", "gone-c"] {
        let n = p.send(id, b"after close");
        if n != 0 {
            panic!("first send to {id} 200 ms after the close reported {n}; {}", diagnose_logout(&mut p, id));
        }
    }

    // Abortive close (RST, SO_LINGER 0): read sees ECONNRESET.
    let mut sub = Subscriber::connect(server.subscriber_addr(), "gone-rst");
    assert_eq!(p.send("gone-rst", b"y"), 1);
    sub.expect_msg(b"y");
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: valid fd and a pointer to a local struct of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            sub.client.stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    drop(sub);
    std::thread::sleep(Duration::from_millis(200));
    let n = p.send("gone-rst", b"after reset");
    if n != 0 {
        panic!("first send 200 ms after a reset reported {n}; {}", diagnose_logout(&mut p, "gone-rst"));
    }
    assert!(
        wait_until(Duration::from_secs(1), || json_number(&p.stats(), "connections") == c0),
        "all subscribers closed but stats show: {}",
        p.stats()
    );
}
}

both_backends! {
/// `& < > " '` are escaped exactly; everything else (including UTF-8 and an existing entity)
/// passes through as is.
fn html_escaping() {
    let server = start(2);
    let mut sub = Subscriber::connect(server.subscriber_addr(), "esc");
    let mut p = Publisher::connect(server.publish_addr());

    let msg = b"a & b < c > d \" e ' f";
    assert_eq!(p.send("esc", msg), 1);
    let expected: &[u8] =
        b"3e\r\nRecvd msg #1: 'a &amp; b &lt; c &gt; d &quot; e &#39; f'<br/>\n\r\n";
    assert_eq!(msg_chunk(1, msg), expected, "helper disagrees with hand-written bytes");
    sub.client.expect_bytes(expected, "escaped message");
    sub.received = 1;

    let msg = "<script>alert('x&y')</script> &amp; caf\u{e9} \u{2713}".as_bytes();
    assert_eq!(p.send("esc", msg), 1);
    let data = "Recvd msg #2: '&lt;script&gt;alert(&#39;x&amp;y&#39;)&lt;/script&gt; &amp;amp; caf\u{e9} \u{2713}'<br/>\n";
    sub.client.expect_bytes(&chunk(data.as_bytes()), "escaped message with UTF-8");
    sub.received = 2;

    // Only special characters: every byte expands.
    let msg = b"&&<<>>\"\"''";
    assert_eq!(p.send("esc", msg), 1);
    sub.expect_msg(msg);
}
}

both_backends! {
/// The B12 case (tests/CASES.md#b12): a subscriber that has read its headers is logged in, so a send made right
/// after (on a fresh publish connection) reaches it. 200 rounds, new subscriber each time.
fn send_right_after_headers_is_never_lost() {
    let server = start(2);
    let mut subs = Vec::new();
    for i in 0..200 {
        let ids = if i % 3 == 0 { format!("b12-{i}") } else { format!("b12-x{i},b12-{i}") };
        let mut sub = Subscriber::connect(server.subscriber_addr(), &ids);
        let msg = format!("round {i}");
        let n = publish(server.publish_addr(), &format!("b12-{i}"), msg.as_bytes());
        assert_eq!(n, 1, "round {i}: send right after the headers reported {n}");
        sub.expect_msg(msg.as_bytes());
        subs.push(sub);
    }
    // All still connected and logged in: one more message each, numbered #2.
    let mut p = Publisher::connect(server.publish_addr());
    for (i, sub) in subs.iter_mut().enumerate() {
        assert_eq!(p.send(&format!("b12-{i}"), b"again"), 1);
        sub.expect_msg(b"again");
    }
}
}

both_backends! {
/// A request head that arrives in pieces is still parsed (the server must buffer).
fn request_head_split_across_writes() {
    let server = start(2);
    let mut c = Client::connect(server.subscriber_addr());
    for piece in [&b"GE"[..], b"T /test/sp", b"lit HTTP/1.1\r\nHo", b"st: x\r\n", b"\r", b"\n"] {
        c.send(piece);
        std::thread::sleep(Duration::from_millis(30));
    }
    let head = c.read_head();
    check_stream_head(&head);
    let mut sub = Subscriber { client: c, head, received: 0 };

    // Same for a publish request, split inside the head and inside the body.
    let mut p = Publisher::connect(server.publish_addr());
    let req = send_request("split", b"split body & more");
    for part in [&req[..5], &req[5..30], &req[30..req.len() - 4], &req[req.len() - 4..]] {
        p.client.stream.write_all(part).unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(p.read_reply(), 1);
    sub.expect_msg(b"split body & more");
}
}

both_backends! {
/// Many messages to one subscriber in a row arrive numbered 1..=N, in order.
fn numbering_counts_per_connection() {
    let server = start(2);
    let mut a = Subscriber::connect(server.subscriber_addr(), "n-a");
    let mut ab = Subscriber::connect(server.subscriber_addr(), "n-a,n-b");
    let mut p = Publisher::connect(server.publish_addr());
    for i in 0..50 {
        let id = if i % 2 == 0 { "n-a" } else { "n-b" };
        let msg = format!("m{i}");
        assert_eq!(p.send(id, msg.as_bytes()), if id == "n-a" { 2 } else { 1 });
    }
    for i in 0..50 {
        let msg = format!("m{i}");
        if i % 2 == 0 {
            a.expect_msg(msg.as_bytes());
        }
        ab.expect_msg(msg.as_bytes());
    }
    assert_eq!(a.received, 25);
    assert_eq!(ab.received, 50);
}
}

both_backends! {
/// shutdown() returns (joins the shards) even with subscribers and publishers still connected,
/// and their connections are then closed.
fn shutdown_with_open_connections() {
    let server = start(2);
    let mut sub = Subscriber::connect(server.subscriber_addr(), "sd");
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(p.send("sd", b"x"), 1);
    sub.expect_msg(b"x");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(server.shutdown().map_err(|e| format!("{e:#}")));
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("shutdown() did not return within 5 s")
        .expect("shutdown() returned an error");
    // The stream ends (EOF or reset); a final `0\r\n\r\n` chunk is allowed but nothing else.
    let (rest, _) = sub.client.read_to_close();
    assert!(rest.is_empty() || rest == b"0\r\n\r\n", "bytes after shutdown: {:?}", String::from_utf8_lossy(&rest));
}
}

both_backends! {
/// `start()` must leave nothing pending on the calling thread: an io_uring created (and closed)
/// on the caller's thread makes the kernel queue task work to it, and the caller's next blocking
/// socket read fails with EINTR (seen in an earlier version that probed io_uring on the caller's
/// thread). Raw reads here, no EINTR retry.
fn start_does_not_interrupt_the_calling_thread() {
    use std::io::{ErrorKind, Read};
    for round in 0..5 {
        let server = start(2);
        let mut s = std::net::TcpStream::connect(server.subscriber_addr()).unwrap();
        s.write_all(b"GET /test/eintr HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        loop {
            match s.read(&mut b) {
                Ok(0) => panic!("round {round}: stream closed"),
                Ok(n) => got.extend_from_slice(&b[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {
                    panic!("round {round}: a blocking read on the thread that called start() got EINTR")
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        check_stream_head(&parse_head(&got));
    }
}
}

both_backends! {
/// B12 generalised: once a subscribe's response head is out, a publish to its id reaches
/// it — for every stream kind, for single ids (handed to the owner shard) and several ids
/// (Join acknowledged by the remote owners), with `placement owner` and `accept`: 600
/// subscribe-then-publish rounds, none lost.
/// See tests/CASES.md#b12.
fn b12_no_publish_lost_while_registering() {
    for placement in [Placement::Owner, Placement::Accept] {
        let mut cfg = common::server::local(2);
        cfg.placement = placement;
        let server = start_with(cfg);
        let (s, p) = (server.subscriber_addr(), server.publish_addr());
        let mut publ = Publisher::connect(p);
        let mut lost = Vec::new();
        for i in 0..300 {
            let kind = KINDS[i % 4];
            let id = format!("b12-{}", i % 7);
            let ids = if i % 3 == 0 { format!("{id},b12-other-{i}") } else { id.clone() };
            let mut st = Stream::open(s, kind, &ids);
            let m = format!("m{i}");
            let n = publ.send(&id, m.as_bytes());
            if n != 1 {
                lost.push(format!("{placement:?} {kind:?} {ids}: delivered {n}"));
            } else {
                st.expect(m.as_bytes());
            }
            rst_close(st.c.stream);
            // The closed one must be gone before the next round reuses the id.
            if !wait_until(Duration::from_secs(2), || publ.send(&id, b"") == 0) {
                lost.push(format!("{ids}: still logged in after close"));
            }
        }
        assert!(lost.is_empty(), "{} lost: {lost:?}", lost.len());
    }
}
}
