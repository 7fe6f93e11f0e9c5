//! Tests of the chunked stream decoder, chiefly that every way of splitting the input across
//! reads gives the same chunks.

use super::{ChunkParser, State, StreamError, MAX_HEAD};

const HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n";

/// A stream of `msgs`, each one chunk, optionally ended by the last chunk.
fn stream(msgs: &[&[u8]], end: bool) -> Vec<u8> {
    let mut s = HEAD.to_vec();
    for m in msgs {
        s.extend_from_slice(format!("{:x}\r\n", m.len()).as_bytes());
        s.extend_from_slice(m);
        s.extend_from_slice(b"\r\n");
    }
    if end {
        s.extend_from_slice(b"0\r\n\r\n");
    }
    s
}

/// Feeds `pieces` one after another; returns the chunks, the result and the parser.
fn run(pieces: &[&[u8]]) -> (Vec<Vec<u8>>, Result<(), StreamError>, ChunkParser) {
    let mut p = ChunkParser::new();
    let mut partial = None;
    let mut out = Vec::new();
    for piece in pieces {
        let r = p.feed(piece, &mut partial, |c| out.push(c.to_vec()));
        if r.is_err() {
            return (out, r, p);
        }
    }
    // Nothing may stay buffered between complete chunks.
    if p.head_done() && !matches!(p.state, State::Data) {
        assert!(
            partial.is_none(),
            "partial buffer kept after a complete chunk"
        );
    }
    (out, Ok(()), p)
}

fn msgs() -> Vec<&'static [u8]> {
    vec![
        b"Recvd msg #1: '5:0:12345'<br/>\n",
        b"Recvd msg #2: 'x'<br/>\n",
        b"",
        b"Recvd msg #3: '5:2:99999999999'<br/>\n",
    ]
}

#[test]
fn whole_stream_in_one_read() {
    let m: Vec<&[u8]> = msgs().into_iter().filter(|m| !m.is_empty()).collect();
    let s = stream(&m, true);
    let (out, r, p) = run(&[&s]);
    r.unwrap();
    assert_eq!(out, m.iter().map(|x| x.to_vec()).collect::<Vec<_>>());
    assert!(p.ended());
}

#[test]
fn every_two_and_three_way_split() {
    let m: Vec<&[u8]> = msgs().into_iter().filter(|m| !m.is_empty()).collect();
    let want: Vec<Vec<u8>> = m.iter().map(|x| x.to_vec()).collect();
    let s = stream(&m, true);
    for a in 0..=s.len() {
        let (out, r, p) = run(&[&s[..a], &s[a..]]);
        r.unwrap();
        assert_eq!(out, want, "split at {a}");
        assert!(p.ended());
    }
    for a in (0..=s.len()).step_by(3) {
        for b in a..=s.len() {
            let (out, r, _) = run(&[&s[..a], &s[a..b], &s[b..]]);
            r.unwrap();
            assert_eq!(out, want, "split at {a},{b}");
        }
    }
}

#[test]
fn byte_at_a_time() {
    let m: Vec<&[u8]> = msgs().into_iter().filter(|m| !m.is_empty()).collect();
    let s = stream(&m, false);
    let pieces: Vec<&[u8]> = s.chunks(1).collect();
    let (out, r, p) = run(&pieces);
    r.unwrap();
    assert_eq!(out.len(), m.len());
    assert!(!p.ended());
    assert!(p.head_done());
}

#[test]
fn head_split_keeps_then_frees_partial() {
    let mut p = ChunkParser::new();
    let mut partial = None;
    p.feed(&HEAD[..10], &mut partial, |_| panic!("no chunk yet"))
        .unwrap();
    assert!(!p.head_done());
    assert!(partial.is_some());
    p.feed(&HEAD[10..], &mut partial, |_| panic!("no chunk yet"))
        .unwrap();
    assert!(p.head_done());
    assert!(partial.is_none());
}

#[test]
fn extensions_uppercase_hex_and_trailers() {
    let mut s = HEAD.to_vec();
    let data = [b'a'; 26];
    s.extend_from_slice(b"1A;name=value\r\n");
    s.extend_from_slice(&data);
    s.extend_from_slice(b"\r\n0\r\nX-Trailer: 1\r\n\r\n");
    for a in 0..=s.len() {
        let (out, r, p) = run(&[&s[..a], &s[a..]]);
        r.unwrap();
        assert_eq!(out, vec![data.to_vec()]);
        assert!(p.ended());
    }
}

#[test]
fn bad_heads() {
    let not_ok = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert!(matches!(run(&[not_ok]).1, Err(StreamError::BadHead(_))));
    let not_chunked = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    assert!(matches!(
        run(&[not_chunked]).1,
        Err(StreamError::BadHead(_))
    ));
    let garbage = b"\x00\x01garbage\r\n\r\n";
    assert!(matches!(run(&[garbage]).1, Err(StreamError::BadHead(_))));
    let endless = vec![b'a'; MAX_HEAD + 10];
    assert!(matches!(run(&[&endless]).1, Err(StreamError::BadHead(_))));
}

#[test]
fn bad_framing() {
    let cases: &[&[u8]] = &[
        b"zz\r\nabc\r\n", // not hex
        b"\r\n",          // empty size
        b"3\nabc\r\n",    // bare LF after size
        b"3\r\nabcd\r\n", // data longer than the size
        b"3\r\nabc\n",    // no CR after data
        b"fffffffff\r\n", // too large
        b"0\r\n\r\nmore", // bytes after the end
    ];
    for case in cases {
        let mut s = HEAD.to_vec();
        s.extend_from_slice(case);
        let (_, r, _) = run(&[&s]);
        assert!(
            matches!(r, Err(StreamError::BadFraming(_))),
            "{:?} gave {r:?}",
            String::from_utf8_lossy(case)
        );
    }
}

#[test]
fn large_chunk_across_many_reads() {
    let data: Vec<u8> = (0..70_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let s = stream(&[&data], false);
    let pieces: Vec<&[u8]> = s.chunks(4096).collect();
    let (out, r, _) = run(&pieces);
    r.unwrap();
    assert_eq!(out, vec![data]);
}

#[test]
fn unchunked_body_is_split_into_lines_at_every_cut() {
    let s: &[u8] = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n: hi\n\ndata: 1:0:5\r\nid: 7\n\n";
    let want: Vec<Vec<u8>> = [&b": hi"[..], b"", b"data: 1:0:5", b"id: 7", b""]
        .iter()
        .map(|l| l.to_vec())
        .collect();
    for cut in 0..s.len() {
        let mut p = ChunkParser::new();
        let mut partial = None;
        let mut out = Vec::new();
        for piece in [&s[..cut], &s[cut..]] {
            p.feed_any(piece, &mut partial, true, |l| out.push(l.to_vec()))
                .unwrap();
        }
        assert_eq!(out, want, "cut at {cut}");
        assert!(
            partial.is_none(),
            "cut at {cut}: a complete line left buffered"
        );
    }
    // Strict mode (the seed's stream) still insists on chunked coding.
    let mut p = ChunkParser::new();
    assert!(p.feed(s, &mut None, |_| {}).is_err());
    // A chunked head in lenient mode is decoded as chunks.
    let (mut p, mut out) = (ChunkParser::new(), Vec::new());
    p.feed_any(&stream(&[b"a\nb"], false), &mut None, true, |c| {
        out.push(c.to_vec())
    })
    .unwrap();
    assert_eq!(out, vec![b"a\nb".to_vec()]);
}
