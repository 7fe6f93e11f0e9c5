//! Friends fan-out (issue 7): `serve --friends FILE`, `POST /publish/<user>` delivered to the
//! logged-in connections of every friend (several connections, every shard, both
//! placements, SSE and WebSocket), an edit pipelined before a publish, directed graphs, and
//! the errors. The graph file itself (journal, restart, bad lines, locks, `gen-friends`) is
//! tests/friends_graph.rs.

mod common;

use std::time::Duration;

use common::*;
use uring_comet::config::Placement;

both_backends! {
/// User 1's friends 2 and 3 get 1's event, exactly once, with the sender named; 4 (a friend
/// of 2 only) and 1 itself get nothing; the reply counts friends and connections.
fn friends_get_the_event_others_do_not() {
    let dir = temp_dir("basic");
    let server = start_with(friends_config(&dir, 2, "# friends\n1\t2\n3 1\n2 4\n"));
    let addr = server.subscriber_addr();
    let mut s1 = Subscriber::connect(addr, "1");
    let mut s2 = Subscriber::connect(addr, "2");
    let mut s3 = Subscriber::connect(addr, "3");
    let mut s4 = Subscriber::connect(addr, "4");
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(publish_friends(&mut p, "1", b"at the <beach> & 'sea'"), r#"{"friends":2,"delivered":2}"#);
    expect_friend(&mut s2, 1, b"at the <beach> & 'sea'");
    expect_friend(&mut s3, 1, b"at the <beach> & 'sea'");
    s4.client.expect_silence(Duration::from_millis(150), "4 is no friend of 1");
    s1.client.expect_silence(Duration::from_millis(10), "1 does not get its own event");
    // 2's friends are 1 and 4; the numbering goes on per connection, across /send too.
    assert_eq!(p.send("2", b"direct"), 1);
    s2.expect_msg(b"direct");
    assert_eq!(publish_friends(&mut p, "2", b"second"), r#"{"friends":2,"delivered":2}"#);
    expect_friend(&mut s1, 2, b"second");
    expect_friend(&mut s4, 2, b"second");
    s3.client.expect_silence(Duration::from_millis(100), "3 is no friend of 2");
    // A user with no friends, one not in the graph, one that is no graph id.
    assert_eq!(publish_friends(&mut p, "99", b"x"), r#"{"friends":0,"delivered":0}"#);
    assert_eq!(publish_friends(&mut p, "alice", b"x"), r#"{"friends":0,"delivered":0}"#);
    // Friends not logged in count as friends, not deliveries.
    s3.close();
    assert!(wait_until(Duration::from_secs(2), || {
        publish_friends(&mut p, "1", b"") == r#"{"friends":2,"delivered":1}"#
    }), "after 3 left, 1's event reaches 2 only");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
}

both_backends! {
/// Several connections per friend, on both shards, some under several ids (they stay where
/// they were accepted and are found through the owner's directory): every connection gets
/// the event once per friend id it is logged in under.
fn several_connections_per_friend_across_shards() {
    let (same, other, other2) = ids_around_1();
    let dir = temp_dir("several");
    let server = start_with(friends_config(&dir, 2, &format!("1 {same}\n1 {other}\n{other2} 5\n")));
    let addr = server.subscriber_addr();
    let mut subs: Vec<Subscriber> = Vec::new();
    for _ in 0..3 {
        subs.push(Subscriber::connect(addr, &same.to_string()));
        subs.push(Subscriber::connect(addr, &other.to_string()));
    }
    // Multi-id connections: one friend id plus unrelated ids, and both friend ids at once.
    subs.push(Subscriber::connect(addr, &format!("{other},{other2}")));
    subs.push(Subscriber::connect(addr, &format!("77,{same}")));
    let mut both = Subscriber::connect(addr, &format!("{same},{other}"));
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(publish_friends(&mut p, "1", b"party"), r#"{"friends":2,"delivered":10}"#);
    for s in &mut subs {
        expect_friend(s, 1, b"party");
        s.client.expect_silence(Duration::from_millis(20), "one event, once");
    }
    expect_friend(&mut both, 1, b"party");
    expect_friend(&mut both, 1, b"party");
    // In order, per connection, under a burst of pipelined publishes.
    let mut batch = Vec::new();
    for i in 0..50 {
        let m = format!("burst {i}");
        batch.extend_from_slice(
            format!("POST /publish/1 HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{m}", m.len()).as_bytes(),
        );
    }
    p.client.send(&batch);
    for i in 0..50 {
        let head = p.client.read_head();
        let body = p.client.read_body(&head);
        assert_eq!(body, br#"{"friends":2,"delivered":10}"#, "reply {i}");
    }
    for s in &mut subs {
        for i in 0..50 {
            expect_friend(s, 1, format!("burst {i}").as_bytes());
        }
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
}

both_backends! {
/// `--placement accept`: single-id subscribers stay on the accepting shard, so friends are
/// reached through the directory of their owner (the holder hop).
fn friends_on_other_shards_with_placement_accept() {
    let (same, other, _) = ids_around_1();
    let dir = temp_dir("accept");
    let mut cfg = friends_config(&dir, 2, &format!("1 {same}\n{other} 1\n"));
    cfg.placement = Placement::Accept;
    let server = start_with(cfg);
    let addr = server.subscriber_addr();
    let mut subs: Vec<(u64, Subscriber)> = Vec::new();
    for i in 0..8 {
        let id = if i % 2 == 0 { same } else { other };
        subs.push((id, Subscriber::connect(addr, &id.to_string())));
    }
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(publish_friends(&mut p, "1", b"hi"), r#"{"friends":2,"delivered":8}"#);
    for (_, s) in &mut subs {
        expect_friend(s, 1, b"hi");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
}

both_backends! {
/// SSE gets an event of type `friend`, WebSocket a text frame, both carrying the JSON
/// `{"from":"<user>","msg":"..."}` (escaped); a raw `/sub/` stream gets the JSON as a chunk.
fn sse_and_websocket_formats() {
    let dir = temp_dir("formats");
    let server = start_with(friends_config(&dir, 2, "1 2\n1 3\n1 4\n"));
    let addr = server.subscriber_addr();
    let mut sse = sse_connect(addr, "2");
    let mut ws = ws_connect(addr, "3");
    let mut raw = raw_connect(addr, "4");
    let mut p = Publisher::connect(server.publish_addr());
    let msg = "say \"hi\"\nnew line \\ é";
    assert_eq!(publish_friends(&mut p, "1", msg.as_bytes()), r#"{"friends":3,"delivered":3}"#);
    let json = r#"{"from":"1","msg":"say \"hi\"\nnew line \\ é"}"#;
    let event = format!("event: friend\ndata: {json}\n\n");
    sse.expect_bytes(&chunk(event.as_bytes()), "SSE friend event");
    let (op, payload) = ws.read_ws_frame();
    assert_eq!((op, payload.as_slice()), (0x81, json.as_bytes()), "WebSocket text frame");
    raw.expect_bytes(&chunk(json.as_bytes()), "raw chunk");
    // The JSON parses back to the same strings.
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!((v["from"].as_str(), v["msg"].as_str()), (Some("1"), Some(msg)));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
}

both_backends! {
/// An edit pipelined before a publish on one connection is applied before the publish is
/// fanned out (read-your-writes): unfriend-then-post never reaches the removed friend, and
/// friend-then-post always reaches the new one. The edit and the publish are handled on
/// different shards (the pair's coordinator, the publisher's owner), so without the wait
/// the publish often overtook the edit (15 of 40 rounds on io_uring in a review).
fn pipelined_edit_then_publish_sees_the_edit() {
    let dir = temp_dir("pipelined");
    // Users 1000.. have no friends in the file: each round uses a fresh pair.
    let server = start_with(friends_config(&dir, 2, "1 2\n"));
    let addr = server.subscriber_addr();
    let mut p = Publisher::connect(server.publish_addr());
    for round in 0..40u64 {
        let (x, a) = (1000 + 2 * round, 1001 + 2 * round);
        let mut sx = Subscriber::connect(addr, &x.to_string());
        // DELETE then publish, pipelined: x must not get a's event.
        assert_eq!(edit(&mut p, "PUT", x, a), r#"{"changed":true}"#);
        let mut two = raw_request("DELETE", &format!("/friends/{x}/{a}"), b"");
        two.extend(raw_request("POST", &format!("/publish/{a}"), b"after unfriending"));
        p.client.send(&two);
        assert_eq!(read_reply(&mut p), (200, r#"{"changed":true}"#.to_string()), "round {round}");
        assert_eq!(
            read_reply(&mut p),
            (200, r#"{"friends":0,"delivered":0}"#.to_string()),
            "round {round}: the publish overtook the DELETE"
        );
        // PUT then publish, pipelined: x must get it, once.
        let mut two = raw_request("PUT", &format!("/friends/{x}/{a}"), b"");
        two.extend(raw_request("POST", &format!("/publish/{a}"), b"after friending"));
        p.client.send(&two);
        assert_eq!(read_reply(&mut p), (200, r#"{"changed":true}"#.to_string()), "round {round}");
        assert_eq!(
            read_reply(&mut p),
            (200, r#"{"friends":1,"delivered":1}"#.to_string()),
            "round {round}: the publish overtook the PUT"
        );
        expect_friend(&mut sx, a, b"after friending");
        sx.client.expect_silence(Duration::from_millis(5), "nothing else");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
}

both_backends! {
/// `--directed`: a line `u v` means u follows v, and `PUT /friends/a/b` makes a follow b.
fn directed_graph() {
    let dir = temp_dir("directed");
    let mut cfg = friends_config(&dir, 2, "2 1\n3 1\n1 4\n");
    cfg.friends_directed = true;
    let server = start_with(cfg);
    let addr = server.subscriber_addr();
    let (mut s1, mut s2, mut s4) = (
        Subscriber::connect(addr, "1"),
        Subscriber::connect(addr, "2"),
        Subscriber::connect(addr, "4"),
    );
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(publish_friends(&mut p, "1", b"from 1"), r#"{"friends":2,"delivered":1}"#);
    expect_friend(&mut s2, 1, b"from 1");
    s4.client.expect_silence(Duration::from_millis(100), "1 follows 4, not the other way");
    assert_eq!(publish_friends(&mut p, "4", b"from 4"), r#"{"friends":1,"delivered":1}"#);
    expect_friend(&mut s1, 4, b"from 4");
    assert_eq!(edit(&mut p, "PUT", 4, 1), r#"{"changed":true}"#);
    assert_eq!(publish_friends(&mut p, "1", b"again"), r#"{"friends":3,"delivered":2}"#);
    expect_friend(&mut s2, 1, b"again");
    expect_friend(&mut s4, 1, b"again");
    s1.client.expect_silence(Duration::from_millis(50), "4 follows 1 now; 1 still follows 4 only");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
}

both_backends! {
/// Errors: bad ids are 400 with a text body, like `/send`; an edit of two equal or
/// non-numeric ids is 400; without `--friends` both paths are 404 saying why.
fn errors_and_no_graph() {
    let dir = temp_dir("errors");
    let server = start_with(friends_config(&dir, 2, "1 2\n"));
    let pa = server.publish_addr();
    expect_error(pa, b"POST /publish/a%20b HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx", 400, "bad id");
    expect_error(pa, b"PUT /friends/1/a,b HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad id");
    for (path, what) in [("/friends/1/1", "self"), ("/friends/1/alice", "not numeric"), ("/friends/1/4294967296", "over 32 bits")] {
        let mut p = Publisher::connect(pa);
        let (status, body) = request(&mut p, "PUT", path, b"");
        assert_eq!((status, body.as_str()), (400, "friends ids are two different decimal numbers, 0 to 4294967295\n"), "{what}");
    }
    drop(server);
    let server = start(2);
    for (m, path) in [("POST", "/publish/1"), ("PUT", "/friends/1/2"), ("DELETE", "/friends/1/2")] {
        let mut p = Publisher::connect(server.publish_addr());
        let (status, body) = request(&mut p, m, path, b"x");
        assert_eq!((status, body.as_str()), (404, "no friends graph: start the server with --friends FILE\n"), "{m} {path}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
}
