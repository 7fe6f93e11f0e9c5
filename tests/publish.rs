//! The publish listener: keep-alive and pipelined POST /send/<id>, the 64 KiB body limit's
//! accepted side, and GET /stats.

mod common;

use std::time::Duration;

use common::*;

both_backends! {
/// 100 POSTs to one id in a single write: 100 replies in order, and the subscriber gets
/// #1..#100 with the messages in order.
fn pipelined_publishes_one_id() {
    let server = start(2);
    let mut sub = Subscriber::connect(server.subscriber_addr(), "pipe");
    let mut p = Publisher::connect(server.publish_addr());
    let msgs: Vec<String> = (0..100).map(|i| format!("pipelined message {i} {}", "x".repeat(i % 7))).collect();
    let mut batch = Vec::new();
    for m in &msgs {
        batch.extend_from_slice(&send_request("pipe", m.as_bytes()));
    }
    p.client.send(&batch);
    for i in 0..100 {
        let n = p.read_reply();
        assert_eq!(n, 1, "reply {i} to a pipelined send");
    }
    for m in &msgs {
        sub.expect_msg(m.as_bytes());
    }
    sub.client.expect_silence(Duration::from_millis(200), "after #100");
    // The connection is still usable afterwards.
    assert_eq!(p.send("pipe", b"after the batch"), 1);
    sub.expect_msg(b"after the batch");
}
}

both_backends! {
/// Pipelined POSTs to ids with 1, 2 and 0 subscribers, so the replies' order is visible in
/// their values; also a GET /stats in the middle of the batch.
fn pipelined_replies_keep_request_order() {
    let server = start(2);
    let mut one = Subscriber::connect(server.subscriber_addr(), "p-one");
    let mut two_a = Subscriber::connect(server.subscriber_addr(), "p-two");
    let mut two_b = Subscriber::connect(server.subscriber_addr(), "p-two,p-one");
    let mut p = Publisher::connect(server.publish_addr());
    // Batch targets: p-only has 1 subscriber, p-two 2, p-none 0. p-one (2) gets nothing in the
    // batch and is checked afterwards.
    let mut only = Subscriber::connect(server.subscriber_addr(), "p-only");
    let targets = ["p-only", "p-two", "p-none"];
    let expect = [1u64, 2, 0];
    let mut batch = Vec::new();
    for i in 0..99 {
        batch.extend_from_slice(&send_request(targets[i % 3], format!("m{i}").as_bytes()));
        if i == 50 {
            batch.extend_from_slice(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n");
        }
    }
    p.client.send(&batch);
    for i in 0..99 {
        assert_eq!(p.read_reply(), expect[i % 3], "reply {i} (to {})", targets[i % 3]);
        if i == 50 {
            let head = p.client.read_head();
            head.expect_200();
            let body = p.client.read_body(&head);
            json_number(std::str::from_utf8(&body).unwrap(), "connections");
        }
    }
    for i in 0..99 {
        let m = format!("m{i}");
        match i % 3 {
            0 => only.expect_msg(m.as_bytes()),
            1 => {
                two_a.expect_msg(m.as_bytes());
                two_b.expect_msg(m.as_bytes());
            }
            _ => {}
        }
    }
    one.client.expect_silence(Duration::from_millis(100), "p-one got nothing");
    assert_eq!(p.send("p-one", b"now"), 2);
    one.expect_msg(b"now");
    two_b.expect_msg(b"now");
}
}

both_backends! {
/// Many sequential keep-alive sends on one connection, and one-shot connections too.
fn keep_alive_publisher() {
    let server = start(2);
    let mut sub = Subscriber::connect(server.subscriber_addr(), "ka");
    let mut p = Publisher::connect(server.publish_addr());
    for i in 0..300 {
        let m = format!("ka {i}");
        assert_eq!(p.send("ka", m.as_bytes()), 1);
        sub.expect_msg(m.as_bytes());
    }
    for i in 0..20 {
        let m = format!("fresh {i}");
        assert_eq!(publish(server.publish_addr(), "ka", m.as_bytes()), 1);
        sub.expect_msg(m.as_bytes());
    }
}
}

both_backends! {
/// A body of exactly 64 KiB (65536 bytes) is accepted and delivered whole.
fn body_of_exactly_64k_is_accepted() {
    let mut cfg = common::server::local(2);
    cfg.max_pending_bytes = 1 << 20; // room for the whole chunk in the subscriber's queue
    let server = start_with(cfg);
    let mut sub = Subscriber::connect(server.subscriber_addr(), "big");
    let mut p = Publisher::connect(server.publish_addr());
    let msg: Vec<u8> = (0..65536).map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[i % 36]).collect();
    assert_eq!(p.send("big", &msg), 1);
    sub.expect_msg(&msg);
    // The connection is still fine for a small one afterwards.
    assert_eq!(p.send("big", b"small"), 1);
    sub.expect_msg(b"small");
}
}

both_backends! {
/// GET /stats: the keys are there and are numbers; "connections" counts open subscribers;
/// message counters grow after deliveries.
fn stats() {
    let server = start(2);
    let mut p = Publisher::connect(server.publish_addr());
    let s0 = p.stats();
    for key in ["connections", "ids", "messages_sent", "messages_delivered", "rss_bytes"] {
        json_number(&s0, key);
    }
    assert!(json_number(&s0, "rss_bytes") > 0.0, "rss_bytes of a running process is > 0: {s0}");
    let c0 = json_number(&s0, "connections");
    let sent0 = json_number(&s0, "messages_sent");
    let deliv0 = json_number(&s0, "messages_delivered");

    let mut a = Subscriber::connect(server.subscriber_addr(), "st-1");
    let mut b = Subscriber::connect(server.subscriber_addr(), "st-1,st-2");
    let c = Subscriber::connect(server.subscriber_addr(), "st-3");
    assert!(
        wait_until(Duration::from_secs(1), || json_number(&p.stats(), "connections") == c0 + 3.0),
        "3 subscribers opened on top of {c0}: {}",
        p.stats()
    );
    let ids = json_number(&p.stats(), "ids");
    assert!(ids >= 3.0, "3 distinct ids are subscribed, stats ids = {ids}");

    assert_eq!(p.send("st-1", b"hello"), 2);
    a.expect_msg(b"hello");
    b.expect_msg(b"hello");
    assert!(
        wait_until(Duration::from_secs(1), || {
            let s = p.stats();
            json_number(&s, "messages_sent") > sent0 && json_number(&s, "messages_delivered") >= deliv0 + 2.0
        }),
        "after a send delivered to 2 connections, counters did not grow from sent={sent0} delivered={deliv0}: {}",
        p.stats()
    );

    a.close();
    c.close();
    assert!(
        wait_until(Duration::from_secs(1), || json_number(&p.stats(), "connections") == c0 + 1.0),
        "2 of 3 subscribers closed (no send since): {}",
        p.stats()
    );
    drop(b);
}
}
