//! One function per fuzz target: it feeds `data` to the server's code and panics when an
//! invariant does not hold. Used by `fuzz/fuzz_targets/*.rs` and, through `#[path]`, by
//! `tests/fuzz_corpus.rs` (so only `std` and `uring_comet` may be used here).

use std::fmt::Debug;

use uring_comet::http::request::{
    parse_publish, parse_subscribe, ChunkedBody, Head, Progress, PubRequest, SubRequest,
    MAX_CHUNK_LINE,
};
use uring_comet::http::stream::{self, Proto};
use uring_comet::http::ws::{self, Input};
use uring_comet::http::{Status, MAX_BODY, MAX_HEAD};
use uring_comet::id::{Id, IdError, MAX_IDS_PER_CONN, MAX_ID_LEN};

/// The publish token of the `parse_publish(.., Some(TOKEN))` runs (also in `fuzz/http.dict`).
pub const TOKEN: &[u8] = b"s3cret-token";

/// A cheap hash of the input, to pick split points that differ from input to input.
fn pick(data: &[u8], below: usize) -> usize {
    if below == 0 {
        return 0;
    }
    let h = data.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    h as usize % below
}

// ---------------------------------------------------------------------------------------------
// Request heads

/// `parse_subscribe`, `parse_publish` without a token and with [`TOKEN`]:
/// - a complete head is at most [`MAX_HEAD`] bytes, ends with its blank line, and parses the
///   same with nothing after it (a body or a pipelined request never changes it);
/// - every shorter prefix of a complete head is `Incomplete` (the server's answer does not
///   depend on how the head was split across reads) — checked at three cut points;
/// - `Incomplete` only below [`MAX_HEAD`] bytes (the server never buffers more);
/// - a refusal is never 200; the results are well-formed (ids valid, unique, 1 to 64; a
///   WebSocket key exactly on WebSocket streams; a publish body at most [`MAX_BODY`]);
/// - the token only ever turns a result into 401, a request accepted with the token
///   carries `Authorization: Bearer <token>` (the scheme in any case), and without a token
///   nothing is 401.
pub fn request_head(data: &[u8]) {
    let sub = parse_subscribe(data);
    check_head(data, &sub, parse_subscribe);
    if let Head::Done(req, n) = &sub {
        check_sub(req, &data[..*n]);
    }
    let open = parse_publish(data, None);
    check_head(data, &open, |d| parse_publish(d, None));
    if let Head::Done(req, _) = &open {
        check_pub(req);
    }
    assert_ne!(
        open,
        Head::Refuse(Status::Unauthorized),
        "401 without a token"
    );
    let locked = parse_publish(data, Some(TOKEN));
    check_head(data, &locked, |d| parse_publish(d, Some(TOKEN)));
    if locked != Head::Refuse(Status::Unauthorized) {
        assert_eq!(
            locked, open,
            "the token changed a result into something else than 401"
        );
    }
    if let Head::Done(
        PubRequest::Send { .. } | PubRequest::Stats { .. } | PubRequest::Edit { .. },
        n,
    ) = &locked
    {
        let head = &data[..*n];
        let carries = head
            .windows(7 + TOKEN.len())
            .any(|w| w[..7].eq_ignore_ascii_case(b"bearer ") && &w[7..] == TOKEN);
        assert!(
            carries,
            "accepted with a token without the token: {locked:?}"
        );
    }
}

fn check_head<T: PartialEq + Debug>(data: &[u8], r: &Head<T>, parse: impl Fn(&[u8]) -> Head<T>) {
    match r {
        Head::Incomplete => assert!(
            data.len() < MAX_HEAD,
            "Incomplete at {} bytes: the head limit is {MAX_HEAD}",
            data.len()
        ),
        Head::Done(_, n) => {
            let n = *n;
            assert!(n <= data.len(), "head length {n} past the input");
            assert!(n <= MAX_HEAD, "head of {n} bytes accepted");
            assert!(
                data[..n].ends_with(b"\n"),
                "head does not end with a line end"
            );
            assert_eq!(
                &parse(&data[..n]),
                r,
                "the bytes after the head changed the result"
            );
            for cut in [n - 1, n / 2, pick(data, n)] {
                assert_eq!(
                    parse(&data[..cut]),
                    Head::Incomplete,
                    "prefix of {cut} of a complete {n}-byte head is not Incomplete"
                );
            }
        }
        Head::Refuse(s) => assert_ne!(*s, Status::Ok),
    }
}

fn check_id(id: &Id) {
    let s = id.to_string();
    assert_eq!(
        Id::parse(s.as_bytes()).as_ref(),
        Ok(id),
        "id {s:?} does not round-trip"
    );
}

/// The value of the first header field `name` in a complete head (OWS trimmed).
fn header_value<'a>(head: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon]
            .eq_ignore_ascii_case(name)
            .then(|| line[colon + 1..].trim_ascii())
    })
}

fn check_sub(req: &SubRequest, head: &[u8]) {
    assert!(!(req.head_only && req.preflight));
    if req.preflight {
        assert!(req.ids.is_empty() && req.ws_accept.is_none() && req.proto == Proto::Raw);
        return;
    }
    assert!(
        (1..=MAX_IDS_PER_CONN).contains(&req.ids.len()),
        "{} ids",
        req.ids.len()
    );
    for (i, id) in req.ids.iter().enumerate() {
        check_id(id);
        assert!(!req.ids[..i].contains(id), "duplicate id {id:?}");
    }
    assert_eq!(req.ws_accept.is_some(), req.proto == Proto::Ws, "{req:?}");
    if let Some(a) = &req.ws_accept {
        assert!(!req.http10 && !req.head_only);
        assert!(
            a[27] == b'='
                && a[..27]
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/'),
            "Sec-WebSocket-Accept {:?} is not 28 bytes of base64",
            String::from_utf8_lossy(a)
        );
        let key = header_value(head, b"sec-websocket-key").expect("WebSocket without a key");
        assert!(!key.is_empty() && key.len() <= 64, "key {key:?}");
        assert_eq!(
            a,
            &ws::accept_key(key),
            "accept value not derived from the key"
        );
    }
}

fn check_pub(req: &PubRequest) {
    if let PubRequest::Send { id, len, .. } = req {
        check_id(id);
        assert!(*len <= MAX_BODY, "body of {len} accepted");
    }
    if let PubRequest::Edit { a, b, len, .. } = req {
        check_id(a);
        check_id(b);
        assert!(*len <= MAX_BODY, "body of {len} accepted");
    }
}

// ---------------------------------------------------------------------------------------------
// Ids

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-')
}

/// `Id::parse` and `Id::parse_list` against the documented rules (1 to 128 bytes of
/// `[A-Za-z0-9._~-]`; canonical decimals inline; lists of 1 to 64, duplicates folded, the
/// first bad member's error), Display round-trip, owner shard in range.
pub fn id(data: &[u8]) {
    let expected = if data.is_empty() {
        Err(IdError::Empty)
    } else if data.len() > MAX_ID_LEN {
        Err(IdError::TooLong)
    } else if !data.iter().all(|&b| is_id_byte(b)) {
        Err(IdError::BadByte)
    } else {
        Ok(())
    };
    let r = Id::parse(data);
    assert_eq!(r.as_ref().map(|_| ()).map_err(|e| *e), expected, "{data:?}");
    if let Ok(id) = &r {
        assert_eq!(
            id.to_string().as_bytes(),
            data,
            "Display is not the id's bytes"
        );
        let canonical = data.len() <= 18
            && data.iter().all(u8::is_ascii_digit)
            && (data[0] != b'0' || data.len() == 1);
        assert_eq!(matches!(id, Id::Num(_)), canonical, "{data:?} -> {id:?}");
        check_id(id);
        assert_eq!(id.stable_hash(), Id::parse(data).unwrap().stable_hash());
        for shards in [1, 2, 3, 7, 64] {
            assert!(id.owner(shards) < shards);
        }
    }

    let parts: Vec<&[u8]> = data.split(|&b| b == b',').collect();
    // The distinct ids of the parts before the first bad one, in first-seen order.
    let mut distinct: Vec<Id> = Vec::new();
    let mut first_bad = None;
    for (i, p) in parts.iter().enumerate() {
        match Id::parse(p) {
            Ok(id) => {
                if !distinct.contains(&id) {
                    distinct.push(id)
                }
            }
            Err(e) => {
                first_bad = Some((i, e));
                break;
            }
        }
    }
    match Id::parse_list(data) {
        Ok(ids) => {
            assert!(
                first_bad.is_none(),
                "list accepted with a bad member: {data:?}"
            );
            assert!(ids.len() <= MAX_IDS_PER_CONN && !ids.is_empty());
            assert_eq!(ids, distinct, "not the distinct members in order");
        }
        Err(IdError::TooMany) => {
            // 64 distinct ids were taken and another member followed.
            let mut seen: Vec<Id> = Vec::new();
            let mut at = None;
            for (i, p) in parts.iter().enumerate() {
                if seen.len() == MAX_IDS_PER_CONN {
                    at = Some(i);
                    break;
                }
                let id = Id::parse(p).expect("a bad member before the 65th distinct id");
                if !seen.contains(&id) {
                    seen.push(id)
                }
            }
            assert!(at.is_some(), "TooMany with at most 64 distinct ids");
        }
        Err(e) => {
            let (i, bad) = first_bad.expect("list refused with every member valid");
            assert_eq!(e, bad, "not the first bad member's error");
            let before: Vec<Id> =
                parts[..i]
                    .iter()
                    .map(|p| Id::parse(p).unwrap())
                    .fold(Vec::new(), |mut v, id| {
                        if !v.contains(&id) {
                            v.push(id)
                        }
                        v
                    });
            assert!(
                before.len() < MAX_IDS_PER_CONN,
                "{e:?} where TooMany was due"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Stream framing (server output)

/// Decodes `body` as exactly one chunk of chunked transfer coding (lowercase hex size, no
/// leading zero, CRLF, data, CRLF, nothing after) and returns its data, which is not empty.
pub fn one_chunk(body: &[u8]) -> &[u8] {
    let line = body
        .windows(2)
        .position(|w| w == b"\r\n")
        .expect("no chunk-size line");
    let size = &body[..line];
    assert!(
        !size.is_empty()
            && size.len() <= 8
            && size
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            && size[0] != b'0',
        "bad chunk-size line {:?}",
        String::from_utf8_lossy(size)
    );
    let n = usize::from_str_radix(std::str::from_utf8(size).unwrap(), 16).unwrap();
    let data = &body[line + 2..];
    assert_eq!(
        data.len(),
        n + 2,
        "chunk of size {n} has {} bytes",
        data.len()
    );
    assert!(data.ends_with(b"\r\n"), "chunk data not followed by CRLF");
    &data[..n]
}

fn html_escaped(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for &b in msg {
        match b {
            b'&' => out.extend_from_slice(b"&amp;"),
            b'<' => out.extend_from_slice(b"&lt;"),
            b'>' => out.extend_from_slice(b"&gt;"),
            b'"' => out.extend_from_slice(b"&quot;"),
            b'\'' => out.extend_from_slice(b"&#39;"),
            _ => out.push(b),
        }
    }
    out
}

/// The payload as an EventSource delivers it: CRLF, CR and LF each one LF.
fn sse_normalized(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < msg.len() {
        if msg[i] == b'\r' {
            out.push(b'\n');
            i += if msg.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
        } else {
            out.push(msg[i]);
            i += 1;
        }
    }
    out
}

/// Checks one SSE event: no CR anywhere, every line `data: ...`, exactly one blank line (its
/// end), and the data lines joined by LF give the payload as EventSource hands it over.
fn check_sse_event(event: &[u8], msg: &[u8]) {
    assert!(!event.contains(&b'\r'), "CR in an SSE event: {event:?}");
    assert!(
        event.ends_with(b"\n\n"),
        "SSE event does not end with a blank line"
    );
    let lines: Vec<&[u8]> = event[..event.len() - 2].split(|&b| b == b'\n').collect();
    let mut data = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        assert!(
            l.starts_with(b"data: "),
            "SSE line {i} does not start with `data: `: {:?}",
            String::from_utf8_lossy(l)
        );
        if i > 0 {
            data.push(b'\n');
        }
        data.extend_from_slice(&l[6..]);
    }
    assert_eq!(
        data,
        sse_normalized(msg),
        "the event's data is not the payload"
    );
}

/// Checks one server WebSocket frame: FIN, text if UTF-8 else binary, unmasked, the shortest
/// length encoding, the payload verbatim, nothing after.
fn check_ws_message(frame: &[u8], msg: &[u8]) {
    let kind = if std::str::from_utf8(msg).is_ok() {
        0x81
    } else {
        0x82
    };
    let (b0, payload) = ws_frame(frame).expect("incomplete WebSocket frame");
    assert_eq!(b0, kind, "first byte of a message frame");
    assert_eq!(
        payload.len() + header_len(payload.len()),
        frame.len(),
        "bytes after the frame"
    );
    assert_eq!(payload, msg);
}

fn header_len(n: usize) -> usize {
    if n < 126 {
        2
    } else if n < 65536 {
        4
    } else {
        10
    }
}

/// Reads one unmasked server frame at the start of `b` (panics on a masked one or a
/// non-minimal length): `(first byte, payload)`, or None if `b` is too short.
fn ws_frame(b: &[u8]) -> Option<(u8, &[u8])> {
    if b.len() < 2 {
        return None;
    }
    assert_eq!(b[1] & 0x80, 0, "server frame is masked");
    let (len, at) = match b[1] & 0x7f {
        126 => {
            let n = u16::from_be_bytes(b.get(2..4)?.try_into().unwrap()) as usize;
            assert!(n >= 126, "length {n} in a 16-bit field");
            (n, 4)
        }
        127 => {
            let n = u64::from_be_bytes(b.get(2..10)?.try_into().unwrap());
            assert!(n >= 65536 && n >> 63 == 0, "length {n} in a 64-bit field");
            (n as usize, 10)
        }
        n => (n as usize, 2),
    };
    Some((b[0], b.get(at..at + len)?))
}

/// `stream::message` for every protocol, chunked and not, after some bytes already queued:
/// it only appends; seed and raw chunks decode to exactly one non-empty chunk with the
/// documented data; an SSE event has only `data: ` lines and ends with its one blank line;
/// a WebSocket message is one well-formed frame. The input's first 4 bytes are the message
/// number, the rest the message. Heartbeats and stream ends are checked alongside.
pub fn stream_message(data: &[u8]) {
    let (n, msg) = match data {
        [a, b, c, d, rest @ ..] => (u32::from_le_bytes([*a, *b, *c, *d]), rest),
        _ => (1, data),
    };
    const QUEUED: &[u8] = b"7\r\nqueued!\r\n";
    for proto in [Proto::Seed, Proto::Raw, Proto::Sse, Proto::Ws] {
        for chunked in [true, false] {
            let mut out = QUEUED.to_vec();
            let sent = stream::message(&mut out, proto, chunked, n, msg);
            assert!(out.starts_with(QUEUED), "{proto:?}: queued bytes changed");
            let body = &out[QUEUED.len()..];
            if !sent {
                assert!(
                    proto == Proto::Raw && msg.is_empty(),
                    "{proto:?}: nothing sent"
                );
                assert!(
                    body.is_empty(),
                    "{proto:?}: bytes written for a message not sent"
                );
                continue;
            }
            if proto == Proto::Ws {
                check_ws_message(body, msg);
                continue;
            }
            let payload = if chunked { one_chunk(body) } else { body };
            assert!(!payload.is_empty(), "{proto:?}: empty message body");
            match proto {
                Proto::Seed => {
                    let mut want = format!("Recvd msg #{n}: '").into_bytes();
                    want.extend_from_slice(&html_escaped(msg));
                    want.extend_from_slice(b"'<br/>\n");
                    assert_eq!(payload, &want[..], "seed chunk");
                }
                Proto::Raw => assert_eq!(payload, msg, "raw chunk"),
                Proto::Sse => check_sse_event(payload, msg),
                // Not in the list iterated above: WebSocket returned earlier, and a poll's
                // answer is written whole by the shard.
                Proto::Ws | Proto::Poll => unreachable!(),
            }
        }
    }
    for proto in [Proto::Seed, Proto::Sse] {
        for chunked in [true, false] {
            let mut out = Vec::new();
            assert!(stream::heartbeat(&mut out, proto, chunked));
            let beat = if chunked { one_chunk(&out) } else { &out[..] };
            if proto == Proto::Sse {
                assert_eq!(beat, b": ping\n\n");
            }
        }
    }
    let mut out = Vec::new();
    stream::end(&mut out, Proto::Ws, false, 1001);
    assert_eq!(out, [0x88, 2, 0x03, 0xe9]);
}

// ---------------------------------------------------------------------------------------------
// WebSocket client frames (server input)

/// A client frame as an independent decoder reads it: first byte, unmasked payload.
struct ClientFrame {
    b0: u8,
    payload: Vec<u8>,
    /// Offset just past the frame.
    end: usize,
}

/// Decodes the complete frames at the start of `b` (stops at the first incomplete one).
fn client_frames(mut b: &[u8]) -> Vec<ClientFrame> {
    let mut frames = Vec::new();
    let mut pos = 0;
    loop {
        if b.len() < 2 {
            return frames;
        }
        let (len, mut at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u64::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()), 10),
            126 | 127 => return frames,
            n => (u64::from(n), 2),
        };
        let mask = if b[1] & 0x80 != 0 {
            let Some(m) = b.get(at..at + 4) else {
                return frames;
            };
            at += 4;
            [m[0], m[1], m[2], m[3]]
        } else {
            [0; 4]
        };
        let Some(end) = usize::try_from(len).ok().and_then(|l| l.checked_add(at)) else {
            return frames;
        };
        let Some(p) = b.get(at..end) else {
            return frames;
        };
        let payload = p.iter().enumerate().map(|(i, x)| x ^ mask[i % 4]).collect();
        pos += end;
        frames.push(ClientFrame {
            b0: b[0],
            payload,
            end: pos,
        });
        b = &b[end..];
    }
}

/// Close codes a server may send (RFC 6455 section 7.4: never 1005, 1006 or 1015, nothing
/// under 1000, nothing unassigned below 3000).
fn sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// `ws::read_frames`: never panics; consumes at most its input; only appends to `out`, and
/// what it appends is well-formed server frames: for `Reply` one pong echoing the last ping
/// read (section 5.5.3 allows answering only the latest), nothing for `More`, a close frame
/// last for `End` with no status or a status a server may send. The same bytes fed in two
/// reads (the rest kept, as the shard does) end the same way, consume the same and close
/// with the same frame.
pub fn ws_frames(data: &[u8]) {
    let mut out = b"X".to_vec();
    let (input, used) = ws::read_frames(data, &mut out, &mut ws::Fragments::default());
    assert!(
        used <= data.len(),
        "consumed {used} of {} bytes",
        data.len()
    );
    assert_eq!(out[0], b'X', "bytes already queued changed");
    let frames = server_frames(&out[1..]);
    for (_, p) in &frames {
        assert!(p.len() <= 125, "control frame over 125 bytes");
    }
    if input != Input::End {
        // Every consumed byte belongs to a complete, masked frame.
        let read = client_frames(&data[..used]);
        assert_eq!(
            read.last().map_or(0, |f| f.end),
            used,
            "consumed bytes that are not whole frames"
        );
        assert!(
            read.iter().all(|f| f.b0 & 0x70 == 0),
            "reserved bits accepted"
        );
        let last_ping = read.iter().rev().find(|f| f.b0 & 0x0f == 0x9);
        match input {
            Input::More => {
                assert!(frames.is_empty(), "More with an answer");
                assert!(last_ping.is_none(), "a ping read and not answered");
            }
            Input::Reply => {
                assert_eq!(frames.len(), 1, "Reply with {} frames", frames.len());
                assert_eq!(frames[0].0, 0x8a, "Reply with a non-pong");
                let ping = last_ping.expect("a pong without a ping");
                assert_eq!(
                    frames[0].1, ping.payload,
                    "the pong does not echo the last ping"
                );
            }
            Input::End => unreachable!(),
        }
    } else {
        let (last, rest) = frames.split_last().expect("End without a close frame");
        assert_eq!(last.0, 0x88, "End's last frame is not a close");
        assert!(
            last.1.is_empty() || last.1.len() == 2,
            "close frame payload {:?}",
            last.1
        );
        if last.1.len() == 2 {
            let code = u16::from_be_bytes([last.1[0], last.1[1]]);
            assert!(
                sendable_close_code(code),
                "the server sends close code {code}"
            );
        }
        assert!(rest.len() <= 1 && rest.iter().all(|(b0, _)| *b0 == 0x8a));
    }

    // Two reads: the first `k` bytes, then what was not consumed plus the rest.
    let k = pick(data, data.len() + 1);
    let (mut out2, mut frags) = (Vec::new(), ws::Fragments::default());
    let (first, c1) = ws::read_frames(&data[..k], &mut out2, &mut frags);
    assert!(c1 <= k);
    let (end2, used2) = if first == Input::End {
        (true, c1)
    } else {
        let (second, c2) = ws::read_frames(&data[c1..], &mut out2, &mut frags);
        (second == Input::End, c1 + c2)
    };
    assert_eq!(end2, input == Input::End, "split at {k}: ends differently");
    if input == Input::End {
        assert_eq!(
            server_frames(&out2).last(),
            frames.last(),
            "split at {k}: closed differently"
        );
    } else {
        assert_eq!(used2, used, "split at {k}: consumed differently");
    }
}

/// Parses `b` as a sequence of complete unmasked server frames.
fn server_frames(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while !b.is_empty() {
        let (b0, p) = ws_frame(b).expect("incomplete server frame in the answer");
        frames.push((b0, p.to_vec()));
        b = &b[header_len(p.len()) + p.len()..];
    }
    frames
}

// ---------------------------------------------------------------------------------------------
// Chunked request bodies

/// A plain reference decoder of a chunked body (RFC 9112 section 7.1), written apart from
/// the server's in-place one: the message and the input length it took, the refusal, or
/// `Ok(None)` for an incomplete body.
#[allow(clippy::type_complexity)]
fn reference_chunked(data: &[u8]) -> Result<Option<(Vec<u8>, usize)>, Status> {
    let mut msg = Vec::new();
    let mut at = 0;
    // One CRLF line from `at`, refused over `limit` bytes.
    let line = |at: usize, limit: usize, big: Status| -> Result<Option<(&[u8], usize)>, Status> {
        let rest = &data[at..];
        match rest.iter().position(|&b| b == b'\n') {
            None if rest.len() > limit + 1 => Err(big),
            None => Ok(None),
            Some(lf) if lf > limit + 1 => Err(big),
            Some(lf) if lf == 0 || rest[lf - 1] != b'\r' => Err(Status::BadRequest),
            Some(lf) if rest[..lf - 1].contains(&b'\r') => Err(Status::BadRequest),
            Some(lf) => Ok(Some((&rest[..lf - 1], at + lf + 1))),
        }
    };
    loop {
        let Some((l, next)) = line(at, MAX_CHUNK_LINE, Status::BadRequest)? else {
            return Ok(None);
        };
        let hex: Vec<u8> = l
            .iter()
            .copied()
            .take_while(u8::is_ascii_hexdigit)
            .collect();
        let after = &l[hex.len()..];
        if hex.is_empty() || !(after.is_empty() || after.trim_ascii_start().starts_with(b";")) {
            return Err(Status::BadRequest);
        }
        let digits = hex.iter().skip_while(|&&d| d == b'0').count();
        if digits > 16 {
            return Err(Status::BadRequest);
        }
        let size = u64::from_str_radix(std::str::from_utf8(&hex).unwrap(), 16).unwrap_or(u64::MAX);
        if size > (MAX_BODY - msg.len()) as u64 {
            return Err(Status::TooLarge);
        }
        at = next;
        if size == 0 {
            break;
        }
        let end = at + size as usize;
        if data.len() < end {
            return Ok(None);
        }
        msg.extend_from_slice(&data[at..end]);
        match data.get(end..end + 2) {
            Some(b"\r\n") => at = end + 2,
            None if data[end..] == *b"\r" || data.len() == end => return Ok(None),
            _ => return Err(Status::BadRequest),
        }
    }
    let start = at;
    loop {
        let room = MAX_HEAD.saturating_sub(at - start + 2);
        let Some((l, next)) = line(at, room, Status::HeadTooLarge)? else {
            return Ok(None);
        };
        at = next;
        if l.is_empty() {
            return Ok(Some((msg, at)));
        }
        if !l.contains(&b':') || l[0].is_ascii_whitespace() {
            return Err(Status::BadRequest);
        }
    }
}

/// Feeds `data` to [`ChunkedBody`] in pieces of `step` bytes, as the shard does (the
/// buffer truncated to `keep` after each `More`); the message and what follows it, the
/// refusal, or `Ok(None)`. Checks the buffer bound on the way.
#[allow(clippy::type_complexity)]
fn in_place_chunked(data: &[u8], step: usize) -> Result<Option<(Vec<u8>, Vec<u8>)>, Status> {
    let mut d = ChunkedBody::default();
    let (mut buf, mut fed) = (Vec::new(), 0);
    for piece in data.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        match d.advance(&mut buf) {
            Progress::More { keep } => {
                assert!(keep <= buf.len(), "keep {keep} past the buffer");
                assert!(
                    keep <= MAX_BODY + MAX_HEAD + MAX_CHUNK_LINE,
                    "buffer kept at {keep} bytes"
                );
                buf.truncate(keep);
            }
            Progress::Done { len, used } => {
                assert!(len <= MAX_BODY && len <= used && used <= buf.len());
                let mut rest = buf[used..].to_vec();
                rest.extend_from_slice(&data[fed..]);
                return Ok(Some((buf[..len].to_vec(), rest)));
            }
            Progress::Refuse(s) => return Err(s),
        }
    }
    Ok(None)
}

/// The in-place chunked decoder ([`ChunkedBody`]) against the reference decoder above, for
/// the whole input in one read and split into pieces at three sizes: the same message, the
/// same bytes left for the next request, or the same refusal (400, 413, 431); the buffer
/// never holds more than [`MAX_BODY`] plus a line and a trailer section.
pub fn chunked_body(data: &[u8]) {
    let want = reference_chunked(data).map(|r| r.map(|(m, used)| (m, data[used..].to_vec())));
    let whole = in_place_chunked(data, data.len());
    assert_eq!(whole, want, "in-place decoder differs from the reference");
    for step in [1 + pick(data, 7), 1 + pick(data, 300), 4096] {
        assert_eq!(
            in_place_chunked(data, step),
            whole,
            "pieces of {step} bytes"
        );
    }
}
