//! Friends fan-out (issue 7): `serve --friends FILE`, `POST /publish/<user>` delivered to the
//! logged-in connections of every friend, `PUT|DELETE /friends/<a>/<b>` effective at once
//! and after a restart (journal), bad edge-list lines reported with their number.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use uring_comet::config::{Placement, ServerConfig};
use uring_comet::id::Id;

/// A fresh directory for one test body (removed first if left by an earlier run).
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "uc-friends-{}-{name}-{}",
        std::process::id(),
        backend()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A server with `shards` shards over the edge list `edges`, written to `dir/graph.tsv`.
fn config(dir: &Path, shards: usize, edges: &str) -> ServerConfig {
    let file = dir.join("graph.tsv");
    std::fs::write(&file, edges).unwrap();
    let mut cfg = ServerConfig::local(shards);
    cfg.friends = Some(file);
    cfg
}

/// Sends a request with `body` on the publish connection; returns (status, body).
fn request(p: &mut Publisher, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    p.client.send(&r);
    let head = p.client.read_head();
    let body = p.client.read_body(&head);
    (head.status, String::from_utf8(body).unwrap())
}

/// `POST /publish/<user>`; asserts a 200 JSON reply and returns its body.
fn publish_friends(p: &mut Publisher, user: &str, msg: &[u8]) -> String {
    let (status, body) = request(p, "POST", &format!("/publish/{user}"), msg);
    assert_eq!(status, 200, "POST /publish/{user}: {body}");
    body
}

fn edit(p: &mut Publisher, method: &str, a: u64, b: u64) -> String {
    let (status, body) = request(p, method, &format!("/friends/{a}/{b}"), b"");
    assert_eq!(status, 200, "{method} /friends/{a}/{b}: {body}");
    body
}

/// The exact chunk of friends event `msg` from `from`, the `n`th message on its connection.
fn friend_chunk(n: u64, from: u64, msg: &[u8]) -> Vec<u8> {
    let mut d = format!("Recvd msg #{n} from {from}: '").into_bytes();
    d.extend_from_slice(&html_escape(msg));
    d.extend_from_slice(b"'<br/>\n");
    chunk(&d)
}

fn expect_friend(sub: &mut Subscriber, from: u64, msg: &[u8]) {
    sub.received += 1;
    let want = friend_chunk(sub.received, from, msg);
    sub.client
        .expect_bytes(&want, &format!("event from {from} #{}", sub.received));
}

/// The first ids above 1 whose owner among 2 shards is (`same`) and is not (`other`) the
/// owner of user 1.
fn ids_around_1() -> (u64, u64, u64) {
    let o1 = Id::Num(1).owner(2);
    let mut same = (2..).filter(|&i| Id::Num(i).owner(2) == o1);
    let other: Vec<u64> = (2..)
        .filter(|&i| Id::Num(i).owner(2) != o1)
        .take(2)
        .collect();
    (same.next().unwrap(), other[0], other[1])
}

both_backends! {
/// User 1's friends 2 and 3 get 1's event, exactly once, with the sender named; 4 (a friend
/// of 2 only) and 1 itself get nothing; the reply counts friends and connections.
fn friends_get_the_event_others_do_not() {
    let dir = temp_dir("basic");
    let server = start_with(config(&dir, 2, "# friends\n1\t2\n3 1\n2 4\n"));
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
    let server = start_with(config(&dir, 2, &format!("1 {same}\n1 {other}\n{other2} 5\n")));
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
    let mut cfg = config(&dir, 2, &format!("1 {same}\n{other} 1\n"));
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
    let server = start_with(config(&dir, 2, "1 2\n1 3\n1 4\n"));
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
/// PUT and DELETE take effect at once, and again after a restart (replayed from the
/// journal, which the restart compacts).
fn edits_at_once_and_after_restart() {
    let dir = temp_dir("edits");
    let cfg = config(&dir, 2, "1 2\n1 3\n");
    let server = start_with(cfg.clone());
    let addr = server.subscriber_addr();
    let mut s2 = Subscriber::connect(addr, "2");
    let mut s4 = Subscriber::connect(addr, "4");
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(edit(&mut p, "PUT", 4, 1), r#"{"changed":true}"#);
    assert_eq!(edit(&mut p, "PUT", 1, 4), r#"{"changed":false}"#, "symmetric: already friends");
    assert_eq!(edit(&mut p, "DELETE", 2, 1), r#"{"changed":true}"#);
    assert_eq!(edit(&mut p, "DELETE", 2, 1), r#"{"changed":false}"#);
    assert_eq!(edit(&mut p, "PUT", 7, 8), r#"{"changed":true}"#);
    assert_eq!(edit(&mut p, "DELETE", 8, 7), r#"{"changed":true}"#);
    assert_eq!(publish_friends(&mut p, "1", b"after edits"), r#"{"friends":2,"delivered":1}"#);
    expect_friend(&mut s4, 1, b"after edits");
    s2.client.expect_silence(Duration::from_millis(100), "2 is no friend of 1 any more");
    // 4 now has friend 1 (symmetric), and 4's events reach 1.
    let mut s1 = Subscriber::connect(addr, "1");
    assert_eq!(publish_friends(&mut p, "4", b"back"), r#"{"friends":1,"delivered":1}"#);
    expect_friend(&mut s1, 4, b"back");
    let journal = std::fs::read_to_string(dir.join("graph.tsv.journal")).unwrap();
    assert_eq!(journal, "+ 4 1\n+ 1 4\n- 2 1\n- 2 1\n+ 7 8\n- 8 7\n", "one line per edit, in order");
    drop((s1, s2, s4, p));
    server.shutdown().unwrap();

    let server = start_with(cfg);
    let addr = server.subscriber_addr();
    let mut s2 = Subscriber::connect(addr, "2");
    let mut s3 = Subscriber::connect(addr, "3");
    let mut s4 = Subscriber::connect(addr, "4");
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(publish_friends(&mut p, "1", b"restarted"), r#"{"friends":2,"delivered":2}"#);
    expect_friend(&mut s3, 1, b"restarted");
    expect_friend(&mut s4, 1, b"restarted");
    s2.client.expect_silence(Duration::from_millis(100), "the DELETE survived the restart");
    let mut lines: Vec<String> = std::fs::read_to_string(dir.join("graph.tsv.journal"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    assert_eq!(lines, vec!["+ 1 4", "- 1 2"], "compacted: the net change against the file");
    // The compacted journal is appended to as before.
    assert_eq!(edit(&mut p, "PUT", 2, 1), r#"{"changed":true}"#);
    assert_eq!(publish_friends(&mut p, "1", b"again"), r#"{"friends":3,"delivered":3}"#);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
}

/// A request's raw bytes (for pipelining several on one connection).
fn raw_request(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Reads one reply on the publish connection: (status, body).
fn read_reply(p: &mut Publisher) -> (u16, String) {
    let head = p.client.read_head();
    let body = p.client.read_body(&head);
    (head.status, String::from_utf8(body).unwrap())
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
    let server = start_with(config(&dir, 2, "1 2\n"));
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
    let mut cfg = config(&dir, 2, "2 1\n3 1\n1 4\n");
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
    let server = start_with(config(&dir, 2, "1 2\n"));
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

both_backends! {
/// A bad line in the edge file is reported with its line number and skipped; `--strict`
/// stops the start at it instead, naming it too.
fn bad_edge_line_reported_with_its_number() {
    let dir = temp_dir("badline");
    let file = dir.join("bad.tsv");
    std::fs::write(&file, "# header\n1 2\n1 two\n\n1 3 4\n1 3\n").unwrap();
    let run = |strict: bool| {
        let mut serve = Serve::new().shards(2).args(["--friends".as_ref(), file.as_os_str()]);
        if strict {
            serve = serve.args(["--strict"]);
        }
        let (srv, listening) = serve.try_spawn();
        let (status, err) = srv.stop();
        (listening, status, err)
    };
    let (listening, _, err) = run(false);
    assert!(listening, "a bad line does not stop the start: {err}");
    let path = file.display();
    assert!(err.contains(&format!("{path}:3: expected a decimal id: \"1 two\"; line skipped")), "line 3 reported: {err}");
    assert!(err.contains(&format!("{path}:5: expected two ids: \"1 3 4\"; line skipped")), "line 5 reported: {err}");
    assert!(!err.contains(":2:") && !err.contains(":6:"), "good lines are not reported: {err}");
    let (listening, status, err) = run(true);
    assert!(!listening && !status.success(), "--strict stops at the bad line");
    assert!(err.contains(&format!("{path}:3: expected a decimal id: \"1 two\" (--strict")), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
}

both_backends! {
/// `--friends FILE` naming a file that does not exist: an empty graph that edits build up,
/// kept across a restart by the journal alone.
fn missing_file_is_an_empty_graph_built_by_edits() {
    let dir = temp_dir("missing");
    let mut cfg = ServerConfig::local(2);
    cfg.friends = Some(dir.join("none.tsv"));
    let server = start_with(cfg.clone());
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(publish_friends(&mut p, "1", b"alone"), r#"{"friends":0,"delivered":0}"#);
    assert_eq!(edit(&mut p, "PUT", 2, 1), r#"{"changed":true}"#);
    drop(p);
    server.shutdown().unwrap();
    assert!(!dir.join("none.tsv").exists(), "the edge file is never written");
    let server = start_with(cfg);
    let mut s2 = Subscriber::connect(server.subscriber_addr(), "2");
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(publish_friends(&mut p, "1", b"hello 2"), r#"{"friends":1,"delivered":1}"#);
    expect_friend(&mut s2, 1, b"hello 2");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
}

both_backends! {
/// `--friends DIR/FILE` whose directory does not exist: the start fails with one error
/// naming the directory, before anything is loaded (no "empty graph" warning first, no
/// journal error after), and nothing is created.
fn missing_directory_is_one_clear_error() {
    let dir = temp_dir("nodir");
    let file = dir.join("nodir").join("x.tsv");
    let out = Serve::new()
        .shards(2)
        .args(["--friends".as_ref(), file.as_os_str()])
        .command()
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && out.stdout.is_empty(), "the start fails: {err}");
    let want = format!("--friends {}: the directory {} does not exist", file.display(), dir.join("nodir").display());
    assert!(err.contains(&want), "{want:?} in {err}");
    assert!(!err.contains("empty graph") && !err.contains("journal"), "one error only: {err}");
    assert!(!dir.join("nodir").exists(), "the directory is not created");
    // In process too: server::start returns the error.
    let mut cfg = ServerConfig::local(2);
    cfg.backend = backend();
    cfg.friends = Some(file);
    let e = uring_comet::server::start(cfg).err().expect("start fails").to_string();
    assert!(e.contains(&want), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
}

both_backends! {
/// A second server on the same `--friends FILE` (in this process too: flock locks are per
/// open file description) fails to start, naming the file and saying another server uses
/// it; the first keeps its journal and goes on working. The load tester's read-only replay
/// still reads the journal meanwhile. Once the first stops, the file is free again.
fn second_server_on_the_same_file_fails_to_start() {
    let dir = temp_dir("twice");
    let cfg = config(&dir, 2, "1 2\n");
    let file = dir.join("graph.tsv");
    let server = start_with(cfg.clone());
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(edit(&mut p, "PUT", 3, 1), r#"{"changed":true}"#);
    let mut second = cfg.clone();
    second.backend = backend();
    let e = uring_comet::server::start(second).err().expect("a second server on the file fails to start");
    let e = format!("{e:#}");
    let want = format!("--friends {}: another uring-comet server (pid {}) uses this graph file", file.display(), std::process::id());
    assert!(e.contains(&want) && e.contains("its own copy"), "{e}");
    // The first server's journal was neither compacted nor replaced: edits go on to it.
    let mut s3 = Subscriber::connect(server.subscriber_addr(), "3");
    assert_eq!(edit(&mut p, "PUT", 4, 1), r#"{"changed":true}"#);
    assert_eq!(std::fs::read_to_string(dir.join("graph.tsv.journal")).unwrap(), "+ 3 1\n+ 4 1\n");
    assert_eq!(publish_friends(&mut p, "1", b"still here"), r#"{"friends":3,"delivered":1}"#);
    expect_friend(&mut s3, 1, b"still here");
    // What `loadtest friends --graph FILE` does: load and replay, read only, no lock.
    let opts = uring_comet::friends::load::LoadOptions { shards: 1, directed: false, strict: false };
    let (mut gs, _) = uring_comet::friends::load::load(&file, opts).unwrap();
    let rep = uring_comet::friends::journal::replay(&dir.join("graph.tsv.journal"), &mut gs, false).unwrap();
    assert_eq!((rep.edits, rep.bad_lines), (2, 0));
    drop((p, s3));
    server.shutdown().unwrap();
    // Free again: a restart replays both edits.
    let server = start_with(cfg);
    let mut p = Publisher::connect(server.publish_addr());
    assert_eq!(publish_friends(&mut p, "1", b"x"), r#"{"friends":3,"delivered":0}"#);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
}

/// `gen-friends` cut off half way (here by RLIMIT_FSIZE, a deterministic stand-in for a full
/// disk or a Ctrl-C mid-write): no cut-off graph under the output name for a later run (or
/// `loadtest friends`, which reuses any file there) to take as complete, no temporary file
/// left, and a complete file already there is kept as it was.
#[test]
fn gen_friends_cut_off_leaves_no_partial_graph() {
    use std::os::unix::process::CommandExt;
    let dir = std::env::temp_dir().join(format!("uc-friends-{}-gencut", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("g.tsv");
    let gen = |limit: Option<u64>| {
        let mut cmd = binary();
        cmd.args([
            "gen-friends",
            "--users",
            "20000",
            "--avg-friends",
            "10",
            "--seed",
            "2",
            "-o",
        ])
        .arg(&out)
        .stdin(Stdio::null());
        if let Some(bytes) = limit {
            // SAFETY: setrlimit and signal are async-signal-safe; the child only sets its
            // own file size limit, with SIGXFSZ ignored so the write fails with EFBIG.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: bytes,
                        rlim_max: bytes,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    Ok(())
                });
            }
        }
        cmd.output().unwrap()
    };
    let files = || {
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let cut = gen(Some(64 << 10));
    assert!(!cut.status.success(), "the write past 64 KiB fails");
    let err = String::from_utf8_lossy(&cut.stderr);
    assert!(err.contains("File too large"), "{err}");
    assert!(
        files().is_empty(),
        "no partial graph, no temporary file: {:?}",
        files()
    );
    let whole = gen(None);
    assert!(
        whole.status.success(),
        "{}",
        String::from_utf8_lossy(&whole.stderr)
    );
    let complete = std::fs::read(&out).unwrap();
    assert!(complete.len() > 64 << 10 && complete.ends_with(b"\n"));
    assert_eq!(files(), vec!["g.tsv"]);
    assert!(!gen(Some(64 << 10)).status.success());
    assert_eq!(
        std::fs::read(&out).unwrap(),
        complete,
        "the complete file is kept"
    );
    assert_eq!(files(), vec!["g.tsv"]);
    let _ = std::fs::remove_dir_all(&dir);
}
