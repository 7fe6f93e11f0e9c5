//! Presence (issue 15): `GET /presence/<id>` and `POST /presence` exact across shards under
//! random connects and closes of every stream kind (checked against a model), the
//! `/events/presence` feed (online/offline per id in order, the debounce, resuming by
//! `Last-Event-ID`, resets), `--friends-presence`, and the refusals. Every body runs on both
//! backends.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use uring_comet::presence::PresenceConfig;

/// Presence on with `debounce_ms`, 2 shards, a log of `log` events.
fn presence_config(debounce_ms: u32, log: usize) -> uring_comet::config::ServerConfig {
    let mut cfg = local(2);
    cfg.presence = PresenceConfig {
        events: true,
        debounce_ms,
        log,
        friends: false,
    };
    cfg
}

/// `GET /presence/<id>`: the count in `{"id":"<id>","connections":N}`.
fn count(p: &mut Publisher, id: &str) -> u64 {
    let (code, body) = request(p, "GET", &format!("/presence/{id}"), b"");
    assert_eq!(code, 200, "{body}");
    let prefix = format!("{{\"id\":\"{id}\",\"connections\":");
    assert!(body.starts_with(&prefix) && body.ends_with('}'), "{body}");
    body[prefix.len()..body.len() - 1].parse().unwrap()
}

/// A small xorshift: the same random steps on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

both_backends! {
    /// 120 random steps over 6 ids on 2 shards: open a stream of a random kind under one or
    /// two ids, or close a random one. After each step a random id's count equals the model's,
    /// and at the end `POST /presence` gives every id's; the feed carries, per id, exactly the
    /// model's online/offline alternation, numbered without a gap.
    fn counts_follow_a_model() {
        let srv = start_with(presence_config(0, 1024));
        let (sub, publ) = (srv.subscriber_addr(), srv.publish_addr());
        let (mut feed, first) = open_feed(publ, None, None);
        let mut p = Publisher::connect(publ);
        let ids = ["1", "2", "3", "4", "a", "b"];
        let mut model: BTreeMap<&str, u64> = ids.iter().map(|&i| (i, 0)).collect();
        let mut want: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut open: Vec<(Stream, Vec<&str>)> = Vec::new();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..120 {
            if open.is_empty() || rng.below(10) < 6 {
                let a = ids[rng.below(ids.len())];
                let b = ids[rng.below(ids.len())];
                let mine: Vec<&str> = if a == b || rng.below(2) == 0 { vec![a] } else { vec![a, b] };
                let s = Stream::open(sub, KINDS[rng.below(KINDS.len())], &mine.join(","));
                for &id in &mine {
                    *model.get_mut(id).unwrap() += 1;
                    if model[id] == 1 {
                        want.entry(id).or_default().push("online");
                    }
                }
                open.push((s, mine));
            } else {
                let (s, mine) = open.swap_remove(rng.below(open.len()));
                drop(s);
                for &id in &mine {
                    *model.get_mut(id).unwrap() -= 1;
                    if model[id] == 0 {
                        want.entry(id).or_default().push("offline");
                    }
                }
            }
            let id = ids[rng.below(ids.len())];
            let ok = wait_until(Duration::from_secs(3), || count(&mut p, id) == model[id]);
            assert!(ok, "count of {id}: {} against the model's {}", count(&mut p, id), model[id]);
        }
        let body = ids.join("\n");
        let json: Vec<String> = ids.iter().map(|id| format!("\"{id}\":{}", model[id])).collect();
        let (code, got) = request(&mut p, "POST", "/presence", body.as_bytes());
        assert_eq!((code, got), (200, format!("{{{}}}", json.join(","))));
        let total: usize = want.values().map(Vec::len).sum();
        let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for k in 1..=total as u64 {
            let (at, kind, id) = next_event(&mut feed);
            assert_eq!(seq_of(&at), seq_of(&first) + k, "events are numbered without a gap");
            seen.entry(id).or_default().push(kind);
        }
        let want: BTreeMap<String, Vec<String>> = want
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
            .collect();
        assert_eq!(seen, want);
        feed.expect_silence(Duration::from_millis(100), "no event beyond the model's");
    }

    /// With a 2 s debounce: the first connection is reported at once; a close and a
    /// reconnect within the debounce (a flap) produce no event, even once it has passed; the
    /// last close is reported after it, once.
    fn online_offline_and_debounce() {
        let srv = start_with(presence_config(2_000, 1024));
        let (sub, publ) = (srv.subscriber_addr(), srv.publish_addr());
        let (mut feed, _) = open_feed(publ, None, None);
        let a = Subscriber::connect(sub, "alice");
        assert_eq!(next_event(&mut feed).1, "online");
        a.close();
        let a = Subscriber::connect(sub, "alice");
        std::thread::sleep(Duration::from_millis(2_500));
        let _b = Subscriber::connect(sub, "bob");
        let (_, kind, id) = next_event(&mut feed);
        assert_eq!((kind.as_str(), id.as_str()), ("online", "bob"), "alice's flap made no event");
        a.close();
        let (_, kind, id) = next_event(&mut feed);
        assert_eq!((kind.as_str(), id.as_str()), ("offline", "alice"));
        feed.expect_silence(Duration::from_millis(300), "one offline event only");
    }

    /// A feed that reconnects with its last cursor gets exactly the events it missed; a
    /// cursor from another process gets `reset` (`unknown-epoch`), one older than the log
    /// `reset` (`expired`), one ahead of the last event `reset` (`unknown-offset`), each then
    /// going on live from the newest event.
    fn feed_resumes_by_cursor() {
        let srv = start_with(presence_config(0, 3));
        let (sub, publ) = (srv.subscriber_addr(), srv.publish_addr());
        let (mut feed, _) = open_feed(publ, None, None);
        let s1 = Subscriber::connect(sub, "1");
        let (at1, ..) = next_event(&mut feed);
        drop(feed);
        let _s2 = Subscriber::connect(sub, "2");
        s1.close();
        let (mut again, from) = open_feed(publ, Some(&at1), None);
        assert_eq!(from, at1, "the opening names the client's own cursor");
        let e2 = next_event(&mut again);
        let e3 = next_event(&mut again);
        assert_eq!((e2.1.as_str(), e2.2.as_str(), seq_of(&e2.0)), ("online", "2", seq_of(&at1) + 1));
        assert_eq!((e3.1.as_str(), e3.2.as_str(), seq_of(&e3.0)), ("offline", "1", seq_of(&at1) + 2));
        let epoch = at1.split('-').next().unwrap();
        let other = if epoch == "0000000000000001" { "0000000000000002-1" } else { "0000000000000001-1" };
        let (_, live) = open_feed(publ, Some(other), Some("unknown-epoch"));
        assert_eq!(live, e3.0, "after a reset the feed goes on from the newest event");
        for k in 3..6 {
            let _s = Subscriber::connect(sub, &format!("x{k}"));
            next_event(&mut again);
        }
        let (_, live) = open_feed(publ, Some(&at1), Some("expired"));
        assert!(seq_of(&live) >= seq_of(&at1) + 5, "{live}");
        let ahead = format!("{epoch}-{}", seq_of(&live) + 1_000);
        let (_, now) = open_feed(publ, Some(&ahead), Some("unknown-offset"));
        assert!(seq_of(&now) >= seq_of(&live), "{now} {live}");
    }

    /// `--friends-presence` (debounce 0): user 1's friend 2 connecting and leaving reaches
    /// 1's stream as two friends events, `online` then `offline`; 3, no friend, gets nothing.
    fn friends_hear_online_and_offline() {
        let dir = temp_dir("presence");
        let mut cfg = friends_config(&dir, 2, "1 2\n");
        cfg.presence = PresenceConfig { events: false, debounce_ms: 0, log: 16, friends: true };
        let srv = start_with(cfg);
        let sub = srv.subscriber_addr();
        let mut s1 = Subscriber::connect(sub, "1");
        let mut s3 = Subscriber::connect(sub, "3");
        let s2 = Subscriber::connect(sub, "2");
        expect_friend(&mut s1, 2, b"online");
        s2.close();
        expect_friend(&mut s1, 2, b"offline");
        s3.client.expect_silence(Duration::from_millis(150), "3 is no friend of 2");
        drop(srv);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An HTTP/1.0 feed gets no chunked coding (RFC 9112 section 6.1): the same events
    /// unframed, the head saying `Connection: close`.
    fn http10_feed_is_not_chunked() {
        let srv = start_with(presence_config(0, 16));
        let mut c = Client::connect(srv.publish_addr());
        c.send(b"GET /events/presence HTTP/1.0\r\n\r\n");
        let head = c.read_head();
        head.expect_200();
        head.expect_no_header("transfer-encoding");
        head.expect_header("connection", "close");
        let open = c.read_exact_bytes(": presence\nid: 0000000000000000-0\n\n".len());
        assert!(open.starts_with(b": presence\nid: ") && open.ends_with(b"-0\n\n"), "{open:?}");
        let _s = Subscriber::connect(srv.subscriber_addr(), "9");
        let epoch = &open[15..31];
        let mut want = b"id: ".to_vec();
        want.extend_from_slice(epoch);
        want.extend_from_slice(b"-1\nevent: online\ndata: 9\n\n");
        c.expect_bytes(&want, "an unframed event");
    }

    /// `Last-Event-ID: earliest` (as on the history's routes) replays the whole log: with a
    /// log of 2, after three events, the opening names the position before the oldest kept
    /// and the two kept events follow, no reset.
    fn feed_from_earliest() {
        let srv = start_with(presence_config(0, 2));
        let (sub, publ) = (srv.subscriber_addr(), srv.publish_addr());
        let (mut live, _) = open_feed(publ, None, None);
        let _subs: Vec<_> = ["e1", "e2", "e3"].iter().map(|id| Subscriber::connect(sub, id)).collect();
        let seen: Vec<Event> = (0..3).map(|_| next_event(&mut live)).collect();
        let (mut all, from) = open_feed(publ, Some("earliest"), None);
        assert_eq!(seq_of(&from), seq_of(&seen[1].0) - 1, "{from}");
        assert_eq!(next_event(&mut all), seen[1]);
        assert_eq!(next_event(&mut all), seen[2]);
        all.expect_silence(Duration::from_millis(100), "the log's two events only");
    }

    /// At stop each feed gets a `retry:` of 1-10 s (so a million feeds do not come back in
    /// the same second) and its end: the last-chunk (HTTP/1.1), the close (HTTP/1.0).
    fn feeds_end_with_retry_at_stop() {
        let srv = start_with(presence_config(0, 16));
        let (mut chunked, _) = open_feed(srv.publish_addr(), None, None);
        let mut plain = Client::connect(srv.publish_addr());
        plain.send(b"GET /events/presence HTTP/1.0\r\n\r\n");
        plain.read_head().expect_200();
        plain.read_exact_bytes(": presence\nid: 0000000000000000-0\n\n".len());
        srv.shutdown().unwrap();
        let retry_ms = |ev: &str| -> u32 {
            let ms = ev.strip_prefix("retry: ").and_then(|r| r.strip_suffix("\n\n"));
            let ms: u32 = ms.and_then(|m| m.parse().ok()).unwrap_or_else(|| panic!("{ev:?}"));
            assert!((1_000..=10_000).contains(&ms), "{ms}");
            ms
        };
        retry_ms(&String::from_utf8(chunked.read_chunk()).unwrap());
        let (rest, _) = chunked.read_to_close();
        assert_eq!(rest, b"0\r\n\r\n", "the last-chunk, then the close");
        let (rest, _) = plain.read_to_close();
        retry_ms(&String::from_utf8(rest).unwrap());
    }

    /// `POST /presence` with `Expect: 100-continue` gets `100 Continue` before its body, as
    /// a publish does (curl sends it for large bodies).
    fn post_with_expect_continue() {
        let srv = start(2);
        let mut c = Client::connect(srv.publish_addr());
        c.send(b"POST /presence HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
        c.expect_bytes(b"HTTP/1.1 100 Continue\r\n\r\n", "100 Continue");
        c.send(b"1\n2");
        let head = c.read_head();
        head.expect_200();
        assert_eq!(c.read_body(&head), br#"{"1":0,"2":0}"#);
    }

    /// Refusals: a bad id 400, more than 10,000 ids 413, each body naming why, the feed with
    /// events off 404 naming the flag, a malformed cursor 400; none closes the server's other
    /// connections.
    fn refusals() {
        let srv = start(2);
        let publ = srv.publish_addr();
        let mut p = Publisher::connect(publ);
        assert_eq!(count(&mut p, "7"), 0);
        expect_error(publ, &raw_request("GET", "/presence/a%2Cb", b""), 400, "a bad id");
        let (head, body, _) = request_expect_close(publ, &raw_request("POST", "/presence", b"7\n 42 \n"));
        assert_eq!(head.status, 400);
        assert!(body.starts_with(b"presence: line 2: not an id"), "{}", String::from_utf8_lossy(&body));
        let many: String = (0..10_001).map(|i| format!("{i}\n")).collect();
        let (head, body, _) = request_expect_close(publ, &raw_request("POST", "/presence", many.as_bytes()));
        assert_eq!(head.status, 413, "{}", String::from_utf8_lossy(&body));
        assert_eq!(body, b"presence: more than 10000 ids (one per line)\n");
        let (head, body, _) = request_expect_close(publ, b"GET /events/presence HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(head.status, 404);
        assert_eq!(body, b"presence events are off: start the server with --presence-events\n");
        let srv2 = start_with(presence_config(0, 16));
        // The feed is GET only (RFC 9110 section 15.5.6): 405 with `Allow: GET`, exact bytes
        // for a POST; a HEAD gets the same status and `Allow`.
        let get_only = b"HTTP/1.1 405 Method Not Allowed\r\nAllow: GET\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 19\r\nConnection: close\r\n\r\nMethod Not Allowed\n";
        let post = b"POST /events/presence HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi";
        let mut c = Client::connect(srv2.publish_addr());
        c.send_lossy(post);
        assert_eq!(String::from_utf8_lossy(&c.read_to_close().0), String::from_utf8_lossy(get_only));
        let head = expect_error(srv2.publish_addr(), b"HEAD /events/presence HTTP/1.1\r\nHost: x\r\n\r\n", 405, "HEAD");
        head.expect_header_exact("allow", "GET");
        let bad = b"GET /events/presence HTTP/1.1\r\nHost: x\r\nLast-Event-ID: nope\r\n\r\n";
        expect_error(srv2.publish_addr(), bad, 400, "a malformed cursor");
        assert_eq!(count(&mut p, "7"), 0, "the first connection still answers");
    }

    /// Presence in `/stats` and `/metrics`: after two ids online, one offline, three count
    /// requests and two feeds of which one closed, every counter has exactly those values,
    /// the same in both.
    fn counters_in_stats_and_metrics() {
        let srv = start_with(presence_config(0, 64));
        let (sub, publ) = (srv.subscriber_addr(), srv.publish_addr());
        let (mut feed, _) = open_feed(publ, None, None);
        let (other, _) = open_feed(publ, None, None);
        let a = Subscriber::connect(sub, "alice");
        let _b = Subscriber::connect(sub, "bob");
        a.close();
        let mut seen: Vec<(String, String)> = (0..3)
            .map(|_| {
                let (_, kind, id) = next_event(&mut feed);
                (kind, id)
            })
            .collect();
        seen.sort();
        let pair = |k: &str, id: &str| (k.to_string(), id.to_string());
        assert_eq!(seen, [pair("offline", "alice"), pair("online", "alice"), pair("online", "bob")]);
        drop(other);
        let mut p = Publisher::connect(publ);
        for id in ["alice", "bob", "carol"] {
            count(&mut p, id);
        }
        let want = [
            ("presence_events_online", 2.0),
            ("presence_events_offline", 1.0),
            ("presence_feeds", 1.0),
            ("presence_feeds_cut", 0.0),
            ("presence_requests", 3.0),
        ];
        let settled = wait_until(Duration::from_secs(3), || {
            let st = p.stats();
            want.iter().all(|(k, v)| json_number(&st, k) == *v)
        });
        assert!(settled, "{}", p.stats());
        let text = metrics_text(publ, None);
        let m = parse_strict(&text);
        for (k, v) in want {
            let name = match k {
                "presence_feeds" => format!("uring_comet_{k}"),
                _ => format!("uring_comet_{k}_total"),
            };
            assert_eq!(sum(&m, &name, &[]), v, "{name}\n{text}");
        }
    }
}
