//! The `uring-comet serve` binary as a child process (killed by pid on drop).

mod common;

use std::time::Duration;

use common::*;

both_backends! {
/// `serve` prints exactly one `LISTEN subscriber=127.0.0.1:P publish=127.0.0.1:Q` line once
/// bound, and the seed's session works against it.
fn binary_listen_line_and_seed_session() {
    let server = ChildServer::spawn(2);
    assert!(
        server.subscriber.ip().is_loopback() && server.subscriber.port() != 0,
        "bad subscriber address in {:?}",
        server.listen_line
    );
    assert!(server.publish.ip().is_loopback() && server.publish.port() != 0, "{:?}", server.listen_line);
    assert_ne!(server.subscriber.port(), server.publish.port(), "{:?}", server.listen_line);
    assert_eq!(
        server.listen_line,
        format!("LISTEN subscriber={} publish={}", server.subscriber, server.publish)
    );

    let mut sub = Subscriber::connect(server.subscriber, "123");
    let mut p = Publisher::connect(server.publish);
    assert_eq!(p.send("123", b"Hello World"), 1);
    sub.client.expect_bytes(b"21\r\nRecvd msg #1: 'Hello World'<br/>\n\r\n", "first message");
    sub.received = 1;
    assert_eq!(p.send("456", b"nobody"), 0);
    assert_eq!(p.send("123", b"it's <2>"), 1);
    sub.expect_msg(b"it's <2>");
    // Publishing is impossible on the subscriber listener.
    expect_error(server.subscriber, &send_request("123", b"x"), 501, "POST on subscriber listener");
    sub.client.expect_silence(Duration::from_millis(200), "after #2");
}
}

both_backends! {
/// The binary with one shard: /stats counts subscribers, and a client close logs out.
fn binary_one_shard_stats_and_logout() {
    let server = ChildServer::spawn(1);
    let mut p = Publisher::connect(server.publish);
    let c0 = json_number(&p.stats(), "connections");
    let mut subs: Vec<Subscriber> =
        (0..5).map(|i| Subscriber::connect(server.subscriber, &format!("bin{i},bin-all"))).collect();
    assert!(
        wait_until(Duration::from_secs(1), || json_number(&p.stats(), "connections") == c0 + 5.0),
        "{}",
        p.stats()
    );
    assert_eq!(p.send("bin-all", b"all"), 5);
    for s in &mut subs {
        s.expect_msg(b"all");
    }
    subs.pop().unwrap().close();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(p.send("bin-all", b"four"), 4, "200 ms after one of 5 subscribers closed");
    assert_eq!(p.send("bin4", b"gone"), 0);
    for s in &mut subs {
        s.expect_msg(b"four");
    }
}
}
