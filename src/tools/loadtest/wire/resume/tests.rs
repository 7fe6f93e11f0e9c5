//! The per-connection decoder against the spec's bytes, for each transport, split across
//! units every way.

use super::{ConnDecoder, Event, Transport};

/// Events as text: `open <cursor> [reset <reason>]`, `msg <cursor|-> <payload>`, `ping`.
fn events(t: Transport, units: &[&[u8]]) -> Result<Vec<String>, &'static str> {
    let mut d = ConnDecoder::new(t).unwrap();
    let mut out = Vec::new();
    for u in units {
        d.feed(u, &mut |e| {
            let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            out.push(match e {
                Event::Opening { cursor, reset } => match reset {
                    None => format!("open {}", s(cursor)),
                    Some(r) => format!("open {} reset {r}", s(cursor)),
                },
                Event::Message { cursor, payload } => {
                    format!("msg {} {}", cursor.map_or("-".into(), s), s(payload))
                }
                Event::Heartbeat => "ping".into(),
            })
        })?;
    }
    Ok(out)
}

const C3: &str = "00000000000000ab-3";

#[test]
fn sse_opening_messages_and_heartbeat_across_any_chunking() {
    let s = b": hi\nid: 00000000000000ab-3\n\nid: 00000000000000ab-4\ndata: 7:1:100\n\n: ping\n\nid: 00000000000000ab-5\ndata: 7:2:101\n\n";
    let want = [
        format!("open {C3}"),
        "msg 00000000000000ab-4 7:1:100".into(),
        "ping".into(),
        "msg 00000000000000ab-5 7:2:101".into(),
    ];
    for a in 0..=s.len() {
        assert_eq!(
            events(Transport::Sse, &[&s[..a], &s[a..]]).unwrap(),
            want,
            "{a}"
        );
    }
}

#[test]
fn sse_reset_opening_and_history_off() {
    let s = b": hi\n\nevent: reset\nid: 00000000000000ac-9\ndata: {\"reason\":\"unknown-epoch\",\"id\":\"7\"}\n\n";
    assert_eq!(
        events(Transport::Sse, &[s]).unwrap(),
        ["open 00000000000000ac-9 reset unknown-epoch"]
    );
    // History off: today's bytes, no ids.
    let off = b": hi\n\ndata: 7:1:100\n\n";
    assert_eq!(events(Transport::Sse, &[off]).unwrap(), ["msg - 7:1:100"]);
    assert!(events(Transport::Sse, &[b"event: other\ndata: x\n\n"]).is_err());
    assert!(events(Transport::Sse, &[b"event: reset\nid: x\ndata: nope\n\n"]).is_err());
}

#[test]
fn ws_opening_frame_then_cursor_frames() {
    let open = br#"{"last_event_id":"00000000000000ab-3","recovered":true,"resets":[]}"#;
    let got = events(
        Transport::Ws,
        &[
            open,
            b"00000000000000ab-4\n7:1:100",
            b"00000000000000ab-5\n",
        ],
    )
    .unwrap();
    assert_eq!(
        got,
        [
            format!("open {C3}"),
            "msg 00000000000000ab-4 7:1:100".into(),
            "msg 00000000000000ab-5 ".into()
        ]
    );
    let reset = br#"{"last_event_id":"00000000000000ac-0","recovered":false,"resets":[{"id":"7","reason":"expired"}]}"#;
    assert_eq!(
        events(Transport::Ws, &[reset]).unwrap(),
        ["open 00000000000000ac-0 reset expired"]
    );
    assert!(events(Transport::Ws, &[b"7:1:100"]).is_err());
    assert!(events(Transport::Ws, &[open, b"no newline"]).is_err());
}

#[test]
fn raw_opening_line_then_messages_across_any_chunking() {
    let s = b"{\"last_event_id\":\"00000000000000ab-3\",\"recovered\":true,\"resets\":[]}\n00000000000000ab-4 7\n7:1:100\n00000000000000ab-5 0\n\n";
    let want = [
        format!("open {C3}"),
        "msg 00000000000000ab-4 7:1:100".into(),
        "msg 00000000000000ab-5 ".into(),
    ];
    for a in 0..=s.len() {
        assert_eq!(
            events(Transport::Raw, &[&s[..a], &s[a..]]).unwrap(),
            want,
            "{a}"
        );
    }
    assert!(events(Transport::Raw, &[b"not json\n"]).is_err());
}

#[test]
fn requests_per_transport() {
    assert_eq!(Transport::Test.path(), "/test/{id}");
    assert!(!Transport::Test.resumes());
    assert!(ConnDecoder::new(Transport::Test).is_none());
    let mut q = Vec::new();
    Transport::Raw.write_cursor_query(C3, &mut q);
    Transport::Sse.write_cursor_query(C3, &mut q);
    assert_eq!(q, b"&last_event_id=00000000000000ab-3");
    let mut h = Vec::new();
    Transport::Sse.write_cursor_header(C3, &mut h);
    Transport::Ws.write_cursor_header(C3, &mut h);
    assert_eq!(h, b"Last-Event-ID: 00000000000000ab-3\r\n");
}

/// The server's own bytes (`http::resume`, after a head from `http::stream::head` plus
/// `http::resume::head_lines`) decoded as a subscriber reads them: a response, split at
/// every byte, through the chunk decoder and the transport's decoder.
#[test]
fn the_servers_own_streams_decode_at_every_split() {
    use crate::history::Reason;
    use crate::http::resume::{head_lines, message, opening};
    use crate::http::stream::{head, Proto};
    use crate::id::Id;
    use crate::tools::loadtest::wire::chunk::{ChunkParser, Unit};

    let id = Id::parse(b"7").unwrap();
    for (t, proto) in [
        (Transport::Sse, Proto::Sse),
        (Transport::Raw, Proto::Raw),
        (Transport::Ws, Proto::Ws),
    ] {
        let mut s = if t == Transport::Ws {
            let mut h = Vec::new();
            let key = crate::http::ws::accept_key(b"dGhlIHNhbXBsZSBub25jZQ==");
            let mut extra = Vec::new();
            head_lines(&mut extra, C3.as_bytes(), Some(false));
            crate::http::ws::handshake(&mut h, &key, &extra);
            h
        } else {
            let mut h = head(proto, false, b"", false);
            h.truncate(h.len() - 2);
            head_lines(&mut h, C3.as_bytes(), Some(false));
            h.extend_from_slice(b"\r\n");
            h
        };
        opening(
            &mut s,
            proto,
            true,
            C3.as_bytes(),
            &[(&id, Reason::Expired)],
        );
        message(&mut s, proto, true, b"00000000000000ab-4", b"7:1:100");
        message(&mut s, proto, true, b"00000000000000ab-5", b"");
        let want = [
            format!("open {C3} reset expired"),
            "msg 00000000000000ab-4 7:1:100".into(),
            "msg 00000000000000ab-5 ".into(),
        ];
        for a in 0..=s.len() {
            let (mut p, mut partial, mut units) = (ChunkParser::new(), None, Vec::new());
            for piece in [&s[..a], &s[a..]] {
                p.feed_stream(piece, &mut partial, t.expect(), |u| match u {
                    Unit::Head(h) => {
                        assert!(ConnDecoder::for_head(t, h).is_some());
                        assert_eq!(super::header(h, "comet-recovered"), Some(&b"false"[..]));
                    }
                    Unit::Data(d) => units.push(d.to_vec()),
                    Unit::Ping => {}
                })
                .unwrap();
            }
            let units: Vec<&[u8]> = units.iter().map(Vec::as_slice).collect();
            assert_eq!(events(t, &units).unwrap(), want, "{t:?} split at {a}");
        }
    }
}
