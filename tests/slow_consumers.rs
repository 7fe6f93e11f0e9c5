//! Backpressure on subscribers: a reader that falls behind is cut once the output queued
//! for it passes `max_pending_bytes` behind a stuck send (`slow_consumers_closed`), while a
//! reader that keeps reading is never cut for a burst, and `sndbuf` bounds what the kernel
//! holds for a stalled one. Every body runs on io_uring and on epoll.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::*;

both_backends! {
/// `max_pending_bytes`: one message larger than the bound may always wait (a subscriber
/// that has not read a 60 KiB message yet is not cut), but output queued behind an
/// incomplete send past the bound disconnects it (`slow_consumers_closed`); a fast
/// subscriber on the same id gets every message meanwhile.
fn slow_consumer_cut_fast_one_served() {
    let mut cfg = common::server::local(2);
    cfg.max_pending_bytes = 16 * 1024;
    let server = start_with(cfg);
    let (s, p) = (server.subscriber_addr(), server.publish_addr());
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&s.into()).unwrap();
    let slow_stream: TcpStream = sock.into();
    slow_stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut slow = Client { stream: slow_stream, buf: Vec::new() };
    slow.send(b"GET /test/slow1 HTTP/1.1\r\nHost: x\r\n\r\n");
    check_stream_head(&slow.read_head());
    let mut fast = Subscriber::connect(s, "slow1");
    let big = vec![b'x'; 60 * 1024];
    assert_eq!(publish(p, "slow1", &big), 2);
    fast.expect_msg(&big);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(stat(p, "slow_consumers_closed"), 0, "one message must be allowed to wait");
    // Read the one big message slowly: it arrives whole.
    let want = msg_chunk(1, &big);
    slow.expect_bytes(&want, "the big message to the slow reader");
    // Now stop reading: 7 MiB of messages fill the kernel's send buffer (up to tcp_wmem's
    // 4 MiB) and pile up behind an incomplete send.
    let mut publ = Publisher::connect(p);
    for i in 0..120 {
        let m = format!("{i:04}").repeat(15 * 1024);
        publ.send("slow1", m.as_bytes());
        fast.expect_msg(m.as_bytes());
    }
    assert!(
        wait_until(Duration::from_secs(3), || stat(p, "slow_consumers_closed") == 1),
        "the slow consumer was not cut: {}",
        stats(p)
    );
    // The slow one sees its stream end (after whatever was sent before the cut).
    let (_, _) = slow.read_to_close();
    assert_eq!(publ.send("slow1", b"after"), 1);
    fast.expect_msg(b"after");
}
}

both_backends! {
/// A reader that keeps reading is never cut for a burst: 1,000 pipelined 1 KiB publishes in
/// one write, 20 publishers sending 8 KiB at once, and 10 pipelined 64 KiB messages (each
/// burst far over the 64 KiB bound) all arrive, in order, with no slow consumer counted.
/// Each burst starts once the reader has read the previous one (a reader that stays behind
/// a stream of bursts is a slow reader).
fn bursts_do_not_cut_a_reading_subscriber() {
    let server = start(2);
    let (s, p) = (server.subscriber_addr(), server.publish_addr());
    let mut plan: Vec<Vec<u8>> = Vec::new();
    plan.extend((0..1000).map(|k| format!("{k:04}").repeat(256).into_bytes()));
    plan.extend((0..20).map(|k| vec![b'a' + k as u8; 8 * 1024]));
    plan.extend((0..10).map(|k| vec![b'A' + k as u8; 64 * 1024]));
    let mut sub = Subscriber::connect(s, "burst");
    let want = plan.clone();
    let (done, phase) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        for m in &want[..1000] {
            sub.expect_msg(m);
        }
        done.send(()).unwrap();
        // The 20 parallel ones may arrive in any order among themselves.
        let mut got: Vec<Vec<u8>> = (0..20).map(|_| sub.next_msg()).collect();
        got.sort();
        assert_eq!(got, want[1000..1020].to_vec(), "the 20 parallel messages");
        done.send(()).unwrap();
        for m in &want[1020..] {
            sub.expect_msg(m);
        }
        sub
    });
    let wait_phase = || {
        phase
            .recv_timeout(Duration::from_secs(10))
            .expect("the reader did not get the burst")
    };
    // 1,000 in one write.
    let mut pipelined = Vec::new();
    for m in &plan[..1000] {
        pipelined.extend_from_slice(&send_request("burst", m));
    }
    let mut publ = Publisher::connect(p);
    publ.client.send(&pipelined);
    for _ in 0..1000 {
        assert_eq!(publ.read_reply(), 1);
    }
    wait_phase();
    // 20 at once from 20 connections.
    let mut many: Vec<Publisher> = (0..20).map(|_| Publisher::connect(p)).collect();
    for (k, pb) in many.iter_mut().enumerate() {
        pb.client.send(&send_request("burst", &plan[1000 + k]));
    }
    for pb in &mut many {
        assert_eq!(pb.read_reply(), 1);
    }
    wait_phase();
    // 10 x 64 KiB pipelined.
    let mut big = Vec::new();
    for m in &plan[1020..] {
        big.extend_from_slice(&send_request("burst", m));
    }
    publ.client.send(&big);
    for _ in 0..10 {
        assert_eq!(publ.read_reply(), 1);
    }
    let sub = reader.join().expect("the reader saw every message");
    assert_eq!(stat(p, "slow_consumers_closed"), 0);
    drop(sub);
}
}

both_backends! {
/// `sndbuf`: with the subscriber sockets' kernel send buffer set to 16 KiB, a subscriber
/// that stops reading right after its head, sent 8 KiB every 10 ms, is cut once 16 KiB more
/// have piled up in the server behind a send stuck for the 500 ms grace: after well under
/// 1 MiB in all (its own receive buffer, the 32 KiB the kernel makes of a 16 KiB SO_SNDBUF,
/// ~400 KiB during the grace, and the bound). With the kernel's autotuning the same reader
/// absorbs over 1 MiB first, so this fails if the option is ignored.
fn sndbuf_bounds_what_a_stalled_reader_holds() {
    let mut cfg = common::server::local(2);
    cfg.max_pending_bytes = 16 * 1024;
    cfg.sndbuf = 16 * 1024;
    let server = start_with(cfg);
    let (s, p) = (server.subscriber_addr(), server.publish_addr());
    let mut stalled = Client::connect(s);
    stalled.send(b"GET /test/stall HTTP/1.1\r\nHost: x\r\n\r\n");
    check_stream_head(&stalled.read_head());
    let mut publ = Publisher::connect(p);
    let m = vec![b'y'; 8 * 1024];
    let mut sent = 0usize;
    while sent < 1024 * 1024 && publ.send("stall", &m) == 1 {
        sent += m.len();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        sent < 1024 * 1024,
        "a reader that stopped was still logged in after 1 MiB: {}",
        stats(p)
    );
    assert!(wait_until(Duration::from_secs(3), || stat(p, "slow_consumers_closed") == 1));
    eprintln!("cut after {sent} bytes");
    drop(stalled);
}
}
