//! Implicit epochs stay put while subscribed (issue 14's epoch rule), against the real
//! server on both backends. An id nobody published to is at offset 0 of an epoch computed
//! from a generation its hash bucket shares with other ids; dropping another id's expired
//! stream moves that generation on. Ids with subscribers are pinned, so that drop must not
//! change the epoch their subscribers were given: neither on the next live message nor for
//! a resume from the position given at the start.

mod common;

use common::*;

/// Subscribed ids (64 per connection, the most one connection takes).
const SUBSCRIBED: usize = 2_048;
/// Subscribed ids with a stream of their own each (the owner decides their start locally).
const SINGLE: usize = 512;
/// Other ids, each published once and left to expire: with 65,536 generation buckets,
/// about a quarter of the subscribed ids share a bucket with one of them, so the test
/// fails without pins (all 2,048 keeping their epoch by chance: about e^-600).
const DROPPED: usize = 20_000;

both_backends! {
/// 32 SSE streams of 64 ids each and 512 streams of one id are opened fresh (every id at
/// offset 0); 20,000 other ids
/// get one message each, which expires after 1 s and whose stream is then dropped; each
/// subscribed id's next live message carries the epoch given at the start, with offset 1;
/// a resume of each stream from its starting cursor is `Comet-Recovered: true`, replays
/// exactly that message, and names the same epochs.
fn subscribed_ids_keep_their_epoch_when_bucket_mates_are_dropped() {
    let srv = serve_history(&["--history-ttl", "1s"]);
    let (s, p) = (srv.subscriber, srv.publish);
    let mut streams = Vec::new();
    for c in 0..SUBSCRIBED / 64 {
        let ids: Vec<String> = (0..64).map(|k| format!("e{}", c * 64 + k)).collect();
        let (client, cur) = sse_fresh(s, &ids.join(","));
        streams.push((ids, client, cur));
    }
    // And streams of one id each: decided on the id's owner, before its login.
    for k in 0..SINGLE {
        let ids = vec![format!("s{k}")];
        let (client, cur) = sse_fresh(s, &ids[0]);
        streams.push((ids, client, cur));
    }
    let mut publ = Publisher::connect(p);
    for n in 0..DROPPED {
        assert_eq!(publ.send(&format!("x{n}"), b"x"), 0, "nobody is subscribed to x{n}");
    }
    // 1 s of TTL, then drops at 1,024 streams per 100 ms per shard.
    std::thread::sleep(std::time::Duration::from_millis(3_500));
    assert_eq!(stat(p, "history_ids"), 0, "every x stream expired and was dropped");
    for (ids, client, start) in &mut streams {
        // A stream under several ids carries its whole cursor with each message.
        let mut cur = start.clone();
        for (k, id) in ids.iter().enumerate() {
            assert_eq!(publ.send(id, b"m"), 1);
            cur = cur.at(k, 1);
            let what = format!("{id}'s first message, under the epoch given at the start");
            client.expect_bytes(&sse_msg(&cur, b"m"), &what);
        }
    }
    for (ids, client, start) in streams {
        client.close();
        let (mut c, head) = sse_open(s, &ids.join(","), &lei(&start.to_string()));
        assert_eq!(history_headers(&head, Some(true)), start);
        c.expect_bytes(&sse_opening(&start), "opening of the resumed stream: no reset");
        let mut cur = start.clone();
        for k in 0..ids.len() {
            cur = cur.at(k, 1);
            c.expect_bytes(&sse_msg(&cur, b"m"), "the replayed message");
        }
        c.close();
    }
}
}
