//! Request head -> login -> response head -> delivery: a subscriber's head arrives in a
//! provided buffer, the exact response head goes out, and a publish to its id puts exactly
//! the expected chunk on its connection; on one shard, and handed to the id's owner shard.

use crate::driver::fake::{Call, Kind, FIXED};

use super::harness::{config, delivered_reply, id_owned_by, send_request, Harness, SUB};

/// The head of a seed stream (`/test/`, HTTP/1.1, `--cors-origin *`), written out by hand.
const SEED_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\nAccess-Control-Allow-Origin: *\r\n\
Transfer-Encoding: chunked\r\n\r\n";

/// The head of a raw stream (`/sub/`, HTTP/1.1, `--cors-origin *`), written out by hand.
const RAW_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\
Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\nAccess-Control-Allow-Origin: *\r\n\
Transfer-Encoding: chunked\r\n\r\n";

/// The group the shard's head buffers were provided to (its first `provide_buffers`).
fn head_group(calls: &[Call]) -> u16 {
    calls
        .iter()
        .find_map(|c| match c {
            Call::Provide { group, .. } => Some(*group),
            _ => None,
        })
        .expect("the shard provides its head buffers at start")
}

/// The seed's session on one shard: the head is read from a provided buffer (given back
/// after), the stream is installed as a direct descriptor, its head goes out in one send,
/// an idle stream holds only its poll, and `POST /send/123` puts `#1` on it and answers
/// `{"delivered":1}`.
#[test]
fn head_login_response_head_delivery() {
    let mut h = Harness::new(config(1, |_| {}));
    let group = head_group(&h.io[0].calls());
    let lent = h.io[0].provided(group);
    assert!(lent > 0, "no head buffer lent");

    h.accept(0, SUB, 10_001);
    // Waiting for its head, a subscriber holds no buffer: only a buffer-select recv.
    assert_eq!(h.io[0].in_flight(10_001), [Kind::RecvSelect]);
    let bid = h.io[0].recv_select(10_001, b"GET /test/123 HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(bid.is_some(), "a head buffer is there");
    h.turn(0);
    assert_eq!(
        h.io[0].provided(group),
        lent,
        "the head buffer was given back"
    );

    let s = h.io[0].handle_of(10_001);
    assert_ne!(s & FIXED, 0, "a stream is installed as a direct descriptor");
    assert_eq!(h.io[0].sends(s), [SEED_HEAD], "exactly the response head");
    assert_eq!(h.read(0, s), SEED_HEAD);
    assert_eq!(
        h.io[0].in_flight(s),
        [Kind::Poll],
        "an idle stream holds its poll only"
    );

    h.publisher(0, 10_002);
    h.write(0, 10_002, &send_request("123", b"Hello World"));
    // 33 = 0x21 bytes of data.
    assert_eq!(
        h.read(0, s),
        b"21\r\nRecvd msg #1: 'Hello World'<br/>\n\r\n"
    );
    assert_eq!(h.io[0].sends(s).len(), 2, "the head, then one chunk");
    let reply: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
Content-Length: 15\r\n\r\n{\"delivered\":1}";
    assert_eq!(
        delivered_reply(1),
        reply,
        "helper disagrees with hand-written bytes"
    );
    assert_eq!(h.read(0, 10_002), reply);
}

/// Placement by owner across two shards: a subscriber accepted on shard 0 under an id
/// owned by shard 1 is released by shard 0 and installed on shard 1, which sends its head;
/// a publish from shard 0 goes over the mesh and reaches it as exactly one chunk.
#[test]
fn handed_off_subscriber_gets_a_publish_from_the_other_shard() {
    let mut h = Harness::new(config(2, |_| {}));
    let id = id_owned_by(1, 2);
    let (home, s) = h.subscribe(0, 10_001, &format!("/sub/{id}"));
    assert_eq!(home, 1, "the id's owner holds the subscriber");
    assert!(h.io[0].calls().contains(&Call::Release { fd: 10_001 }));
    assert_eq!(h.read(1, s), RAW_HEAD);

    h.publisher(0, 10_002);
    h.write(0, 10_002, &send_request(&id, b"hello"));
    assert_eq!(
        h.io[1].sends(s).len(),
        1,
        "no chunk before the owner shard has turned"
    );
    h.drive();
    assert_eq!(h.read(1, s), b"5\r\nhello\r\n");
    assert_eq!(h.read(0, 10_002), delivered_reply(1));
}
