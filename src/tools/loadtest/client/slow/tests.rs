//! A slow reader against a small blocking server on 127.0.0.1:0 speaking the raw and SSE
//! cursor modes: cut mid-message, it comes back with its last cursor and gets the rest.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;

use super::comeback::{finish, Watch};
use super::{ComebackFigures, SlowReader};
use crate::tools::loadtest::wire::resume::Transport;

/// Reads one request head; returns it.
fn request(s: &mut std::net::TcpStream) -> String {
    let mut req = Vec::new();
    let mut b = [0u8; 1];
    while !req.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1);
        req.push(b[0]);
    }
    String::from_utf8(req).unwrap()
}

/// Serves `bodies[k]` (already chunked) to the k-th connection after a head with `heads[k]`
/// extra lines, then closes; returns the request heads.
fn serve(
    answers: Vec<(&'static str, Vec<u8>)>,
) -> (std::net::SocketAddr, thread::JoinHandle<Vec<String>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = thread::spawn(move || {
        let mut reqs = Vec::new();
        for (extra, body) in answers {
            let (mut s, _) = l.accept().unwrap();
            reqs.push(request(&mut s));
            let head = format!("HTTP/1.1 200 OK\r\n{extra}Transfer-Encoding: chunked\r\n\r\n");
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(&body).unwrap();
        }
        reqs
    });
    (addr, h)
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

const OPEN0: &[u8] =
    b"{\"last_event_id\":\"00000000000000ab-0\",\"recovered\":true,\"resets\":[]}\n";
const OPEN2: &[u8] =
    b"{\"last_event_id\":\"00000000000000ab-2\",\"recovered\":true,\"resets\":[]}\n";

#[test]
fn raw_reader_cut_mid_message_comes_back_and_gets_everything() {
    // First stream: opening, messages 1 and 2, half of 3, then the close (a cut).
    let mut first = chunk(OPEN0);
    first.extend(chunk(
        b"00000000000000ab-1 5\naaaaa\n00000000000000ab-2 5\nbbbbb\n00000000000000ab-3 5\nc",
    ));
    let mut second = chunk(OPEN2);
    second.extend(chunk(
        b"00000000000000ab-3 5\nccccc\n00000000000000ab-4 5\nddddd\n",
    ));
    let answers = vec![
        ("Comet-Last-Event-ID: 00000000000000ab-0\r\n", first),
        (
            "Comet-Recovered: true\r\nComet-Last-Event-ID: 00000000000000ab-2\r\n",
            second,
        ),
    ];
    let (addr, server) = serve(answers);
    let r = SlowReader::open(addr, 7, Transport::Raw).unwrap();
    let w = Watch {
        sub: addr,
        publish: addr,
        msg_bytes: 5,
    };
    let fig = finish(vec![r], ComebackFigures::default(), &[4], w);
    let reqs = server.join().unwrap();
    assert!(
        reqs[0].starts_with("GET /sub/7?cursors=1 HTTP/1.1\r\n"),
        "{}",
        reqs[0]
    );
    assert!(
        reqs[1].starts_with("GET /sub/7?cursors=1&last_event_id=00000000000000ab-2 HTTP/1.1\r\n"),
        "{}",
        reqs[1]
    );
    assert_eq!(
        (fig.cut, fig.resumed, fig.recovered, fig.reset),
        (1, 1, 1, 0)
    );
    assert_eq!(
        (fig.expected, fig.received, fig.bad),
        (4, 4, 0),
        "{:?}",
        fig.notes
    );
}

#[test]
fn sse_reader_reset_is_counted_and_its_gap_shows() {
    let mut first = chunk(b": hi\nid: 00000000000000ab-0\n\n");
    first.extend(chunk(b"id: 00000000000000ab-1\ndata: aaaaa\n\n"));
    first.extend(b"0\r\n\r\n");
    // The position was lost: a new epoch, and message 2 never comes.
    let mut second = chunk(b": hi\n\nevent: reset\nid: 00000000000000cd-5\ndata: {\"reason\":\"expired\",\"id\":\"7\"}\n\n");
    second.extend(chunk(b"id: 00000000000000cd-6\ndata: ccccc\n\n"));
    let answers = vec![("", first), ("Comet-Recovered: false\r\n", second)];
    let (addr, server) = serve(answers);
    let r = SlowReader::open(addr, 7, Transport::Sse).unwrap();
    let w = Watch {
        sub: addr,
        publish: addr,
        msg_bytes: 5,
    };
    let mut fig = finish(vec![r], ComebackFigures::default(), &[3], w);
    let reqs = server.join().unwrap();
    assert!(reqs[0].contains("\r\nAccept: text/event-stream\r\n"));
    assert!(
        reqs[1].contains("\r\nLast-Event-ID: 00000000000000ab-1\r\n"),
        "{}",
        reqs[1]
    );
    assert_eq!(
        (fig.resumed, fig.recovered, fig.reset, fig.header_false),
        (1, 0, 1, 1)
    );
    // Two of three: the reset's gap is missing, and nothing is bad.
    fig.notes.clear();
    assert_eq!((fig.expected, fig.received, fig.bad), (3, 2, 0));
}
