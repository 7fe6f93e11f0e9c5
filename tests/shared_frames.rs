//! Shared frames (issue 18): one message fanned out to many subscribers of one id is built
//! once per transport and sent from that one buffer to every subscriber idle at the time;
//! the others get it written into their own output as before. Either way each subscriber's
//! bytes must be exactly the per-subscriber formatting the shared frame replaces:
//! `http::stream::message` (history off) or `http::resume::message` with the message's own
//! cursor (history on), for its protocol and transfer coding. A room mixes every transport
//! (SSE, raw, WebSocket, the seed's `/test/` whose `Recvd msg #N` prefix is each
//! connection's own; chunked and HTTP/1.0), so one fan-out builds several frames; the
//! messages cover an empty body, lines for SSE, bytes that are not UTF-8 (a binary
//! WebSocket frame), 65,536 bytes (the largest body: a 64-bit WebSocket length, more than one send) and a
//! pipelined burst, which finds subscribers busy and takes the copying path for them.

mod common;

use common::*;
use uring_comet::http::stream::Proto;

/// One subscriber of the room, and how its bytes are framed.
struct Sub {
    c: Client,
    proto: Proto,
    chunked: bool,
    /// With history on: the stream's cursor before the first message.
    cursor: Option<Cursor>,
    what: &'static str,
}

/// The messages published, in order: the first few one by one, then a pipelined burst.
fn messages() -> Vec<Vec<u8>> {
    let mut m: Vec<Vec<u8>> = vec![
        b"hello room".to_vec(),
        b"two\nlines\r\nand a CR\rend".to_vec(),
        Vec::new(),
        vec![0xff, 0xfe, 0x00, 0x80],
        (0..65_536u32).map(|k| b'a' + (k % 26) as u8).collect(),
    ];
    m.extend((0..30).map(|k| format!("burst {k}").into_bytes()));
    m
}

/// The bytes `s` must receive for `msgs`: each message formatted for it alone.
fn expected(s: &Sub, msgs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, msg) in msgs.iter().enumerate() {
        match &s.cursor {
            Some(cur) => {
                let at = cur.at(0, cur.off(0) + k as u64 + 1).to_string();
                uring_comet::http::resume::message(
                    &mut out,
                    s.proto,
                    s.chunked,
                    at.as_bytes(),
                    msg,
                );
            }
            None => {
                // `/test/` numbers every message on its connection from 1.
                let n = k as u32 + 1;
                uring_comet::http::stream::message(&mut out, s.proto, s.chunked, n, msg);
            }
        }
    }
    out
}

/// Opens the room's subscribers: `per` of each kind on `path` (history off: `r`; on, the
/// raw and WebSocket kinds ask for cursors).
fn open_room(addr: std::net::SocketAddr, per: usize, history: bool) -> Vec<Sub> {
    let q = if history { "r?cursors=1" } else { "r" };
    let mut subs = Vec::new();
    for _ in 0..per {
        let (mut c, head) = sse_open(addr, "r", "");
        let cursor = history.then(|| history_headers(&head, None));
        match &cursor {
            Some(cur) => c.expect_bytes(&sse_opening(cur), "SSE opening"),
            None => c.expect_bytes(SSE_HI, "SSE opening"),
        }
        subs.push(Sub {
            c,
            proto: Proto::Sse,
            chunked: true,
            cursor,
            what: "SSE",
        });
        let (mut c, head) = get10(addr, "/sub/r", SSE_HEADERS);
        let cursor = history.then(|| history_headers(&head, None));
        let opening = match &cursor {
            Some(cur) => format!(": hi\nid: {cur}\n\n"),
            None => ": hi\n\n".to_string(),
        };
        c.expect_bytes(opening.as_bytes(), "SSE/1.0 opening");
        subs.push(Sub {
            c,
            proto: Proto::Sse,
            chunked: false,
            cursor,
            what: "SSE/1.0",
        });
        let (mut c, head) = raw_open(addr, q, "");
        let cursor = history.then(|| history_headers(&head, None));
        if let Some(cur) = &cursor {
            c.expect_bytes(&raw_opening(cur, true, &[]), "raw opening");
        }
        subs.push(Sub {
            c,
            proto: Proto::Raw,
            chunked: true,
            cursor,
            what: "raw",
        });
        let (mut c, head) = ws_open(addr, q, "");
        let cursor = history.then(|| history_headers(&head, None));
        if let Some(cur) = &cursor {
            c.expect_bytes(&ws_opening(cur, true, &[]), "WebSocket opening");
        }
        subs.push(Sub {
            c,
            proto: Proto::Ws,
            chunked: false,
            cursor,
            what: "WebSocket",
        });
    }
    if !history {
        for _ in 0..per {
            let c = Subscriber::connect(addr, "r").client;
            subs.push(Sub {
                c,
                proto: Proto::Seed,
                chunked: true,
                cursor: None,
                what: "/test/",
            });
            let (c, _) = get10(addr, "/test/r", "");
            subs.push(Sub {
                c,
                proto: Proto::Seed,
                chunked: false,
                cursor: None,
                what: "/test/ 1.0",
            });
            let (c, _) = get10(addr, "/sub/r", "");
            subs.push(Sub {
                c,
                proto: Proto::Raw,
                chunked: false,
                cursor: None,
                what: "raw/1.0",
            });
        }
    }
    subs
}

/// Subscribers for whom message `m` has bytes (a raw stream without cursors sends nothing
/// for an empty message): the reply's `delivered`.
fn delivered_to(subs: &[Sub], m: &[u8]) -> u64 {
    let one = [m.to_vec()];
    subs.iter()
        .filter(|s| !expected(s, &one).is_empty())
        .count() as u64
}

/// Publishes every message to `r` (the last 30 pipelined in one write), each delivered to
/// every subscriber it has bytes for, then checks every subscriber's bytes exactly.
fn publish_and_check(p: std::net::SocketAddr, mut subs: Vec<Sub>) {
    let msgs = messages();
    let mut publ = Publisher::connect(p);
    for m in &msgs[..5] {
        assert_eq!(publ.send("r", m), delivered_to(&subs, m));
    }
    let burst: Vec<u8> = msgs[5..]
        .iter()
        .flat_map(|m| send_request("r", m))
        .collect();
    publ.client.send(&burst);
    for m in &msgs[5..] {
        assert_eq!(publ.read_reply(), delivered_to(&subs, m));
    }
    for s in &mut subs {
        let want = expected(s, &msgs);
        let got = s.c.read_exact_bytes(want.len());
        assert!(
            got == want,
            "{}: bytes differ from the per-subscriber formatting at byte {:?}",
            s.what,
            got.iter().zip(&want).position(|(a, b)| a != b)
        );
        s.c.expect_nothing_pending(s.what);
    }
}

both_backends! {
/// History off: 3 subscribers of each of SSE, SSE/1.0, raw, raw/1.0, WebSocket, `/test/`
/// and `/test/` 1.0 (the seed's, numbered per connection: a shared body after a prefix of
/// its own) in one room get exactly the per-subscriber formatting of every message.
fn shared_frames_match_per_subscriber_bytes() {
    let server = start(2);
    let subs = open_room(server.subscriber_addr(), 3, false);
    publish_and_check(server.publish_addr(), subs);
}

/// History on: 3 subscribers of each of SSE, SSE/1.0, raw and WebSocket in cursor mode get
/// exactly the per-subscriber formatting with each message's own cursor.
fn shared_frames_match_per_subscriber_bytes_with_cursors() {
    let mut cfg = local(2);
    cfg.history.max_msgs = 64;
    let server = start_with(cfg);
    let subs = open_room(server.subscriber_addr(), 3, true);
    publish_and_check(server.publish_addr(), subs);
}
}
