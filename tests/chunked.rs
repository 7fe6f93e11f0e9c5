//! Chunked publish bodies (RFC 9112 section 7.1), as streaming clients send them: every form
//! a client may use is delivered exactly, every malformed or refused one gets its status and
//! a closed connection and is never delivered, and real clients (Python's `http.client`
//! with a generator body, `curl -T -`) publish. Every body runs on io_uring and on epoll.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// A chunked `POST <path>` head with `extra` header lines.
fn chunked_head(path: &str, extra: &str) -> Vec<u8> {
    format!("POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n{extra}\r\n")
        .into_bytes()
}

/// `body` in chunks of `size` bytes, sizes in lower-case hex, then the last chunk.
fn chunks_of(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in body.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

both_backends! {
/// Each form: one byte per chunk, chunk extensions, a trailer section, upper-case hex with
/// leading zeros, an empty body, a body of exactly 64 KiB: `{"delivered":1}` and the
/// subscriber gets exactly the message; `/publish` and a friends edit take chunked bodies
/// too.
fn chunked_forms_delivered() {
    let server = start(2);
    let mut sub = Subscriber::connect(server.subscriber_addr(), "ck");
    let mut p = Publisher::connect(server.publish_addr());
    let big = vec![b'b'; 64 * 1024];
    let forms: Vec<(&str, Vec<u8>, &[u8])> = vec![
        ("one byte per chunk", chunks_of(b"hello chunks", 1), b"hello chunks"),
        ("extensions", b"5;a=1;b=\"x\"\r\nhello\r\n1 ;c\r\n!\r\n0;z\r\n\r\n".to_vec(), b"hello!"),
        ("trailers", b"3\r\nabc\r\n0\r\nX-Checksum: 1\r\nX-More: 2\r\n\r\n".to_vec(), b"abc"),
        ("upper-case hex", b"00A\r\n0123456789\r\n0000\r\n\r\n".to_vec(), b"0123456789"),
        ("64 KiB", chunks_of(&big, 5000), &big),
    ];
    for (what, body, msg) in &forms {
        let mut req = chunked_head("/send/ck", "");
        req.extend_from_slice(body);
        p.client.send(&req);
        assert_eq!(p.read_reply(), 1, "{what}");
        sub.expect_msg(msg);
    }
    // An empty body is a message too (the seed frames it like any other).
    let mut req = chunked_head("/send/ck", "");
    req.extend_from_slice(b"0\r\n\r\n");
    p.client.send(&req);
    assert_eq!(p.read_reply(), 1, "empty body");
    sub.expect_msg(b"");
    // A friends edit is a PUT (a POST there is 405 with `Allow: PUT, DELETE`).
    let mut req = b"PUT /friends/1/2 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(b"2\r\n{}\r\n0\r\n\r\n");
    p.client.send(&req);
    let head = p.client.read_head();
    assert!(head.status == 200 || head.status == 404, "chunked edit: {:?}", head.status_line);
    p.client.read_body(&head);
}
}

both_backends! {
/// `Expect: 100-continue` with a chunked body: `100 Continue` first, then the reply; and a
/// request pipelined after a chunked body (in the same write, and split across writes at
/// every 3rd byte) is read and answered in order.
fn chunked_expect_and_pipelining() {
    let server = start(2);
    let mut sub = Subscriber::connect(server.subscriber_addr(), "ck2");
    let mut p = Publisher::connect(server.publish_addr());
    p.client.send(&chunked_head("/send/ck2", "Expect: 100-continue\r\n"));
    p.client.expect_bytes(b"HTTP/1.1 100 Continue\r\n\r\n", "interim reply");
    p.client.send(b"4\r\nwait\r\n0\r\n\r\n");
    assert_eq!(p.read_reply(), 1);
    sub.expect_msg(b"wait");
    let mut req = chunked_head("/send/ck2", "");
    req.extend_from_slice(&chunks_of(b"first", 2));
    req.extend_from_slice(&send_request("ck2", b"second"));
    req.extend_from_slice(&chunked_head("/send/ck2", ""));
    req.extend_from_slice(&chunks_of(b"third", 4));
    p.client.send(&req);
    for _ in 0..3 {
        assert_eq!(p.read_reply(), 1);
    }
    for piece in req.chunks(3) {
        p.client.send(piece);
    }
    for _ in 0..3 {
        assert_eq!(p.read_reply(), 1);
    }
    for m in [&b"first"[..], b"second", b"third", b"first", b"second", b"third"] {
        sub.expect_msg(m);
    }
}
}

both_backends! {
/// Each refusal gets its status and a closed connection, and nothing of it reaches the
/// subscriber: a malformed size (bad hex, a sign, a space, an overflow), a missing CRLF
/// after the size or the data, a trailer without a colon: 400; a body over 64 KiB, told by
/// one size or by the sum: 413; a coding other than chunked: 501; `Transfer-Encoding` with
/// `Content-Length` (the smuggling case) or on HTTP/1.0: 400.
fn chunked_refusals_close() {
    let server = start(2);
    let mut sub = Subscriber::connect(server.subscriber_addr(), "ck3");
    let p = server.publish_addr();
    let over = chunks_of(&vec![b'o'; 64 * 1024 + 1], 4096);
    let bodies: [(&[u8], u16, &str); 10] = [
        (b"x\r\nbad\r\n0\r\n\r\n", 400, "bad hex"),
        (b"+3\r\nbad\r\n0\r\n\r\n", 400, "a sign"),
        (b"3 3\r\nbad\r\n0\r\n\r\n", 400, "a space"),
        (b"10000000000000003\r\nbad\r\n0\r\n\r\n", 400, "overflow"),
        (b"3\nbad\r\n0\r\n\r\n", 400, "LF without CR after the size"),
        (b"3\r\nbadX\r\n0\r\n\r\n", 400, "no CRLF after the data"),
        (b"3\r\nbad\r\n0\r\nno colon\r\n\r\n", 400, "bad trailer"),
        (b"10001\r\n", 413, "one size over 64 KiB"),
        (&over, 413, "sum over 64 KiB"),
        (b"fffffffffffffff\r\n", 413, "huge size"),
    ];
    for (body, code, what) in bodies {
        let mut req = chunked_head("/send/ck3", "");
        req.extend_from_slice(body);
        expect_error(p, &req, code, what);
    }
    let heads: [(&str, u16, &str); 4] = [
        ("POST /send/ck3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, "gzip"),
        ("POST /send/ck3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 501, "chunked not last"),
        ("POST /send/ck3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400, "with Content-Length"),
        ("POST /send/ck3 HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "HTTP/1.0"),
    ];
    for (head, code, what) in heads {
        let mut req = head.as_bytes().to_vec();
        req.extend_from_slice(b"3\r\nbad\r\n0\r\n\r\n");
        expect_error(p, &req, code, what);
    }
    sub.client.expect_silence(Duration::from_millis(200), "a refused body was delivered");
    assert_eq!(publish(p, "ck3", b"good"), 1);
    sub.expect_msg(b"good");
}
}

/// Runs `cmd` with `stdin` fed in; its stdout. `None` (after saying so) if the program is
/// missing.
fn run_with_input(mut cmd: Command, stdin: &[u8]) -> Option<String> {
    let prog = cmd.get_program().to_string_lossy().into_owned();
    let mut child = match cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED: {prog} is not installed (scripts/test-deps.sh installs it)");
            return None;
        }
        Err(e) => panic!("{prog}: {e}"),
    };
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{prog} failed: {:?}", out.status);
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Python's `http.client` posting a generator body (which it sends chunked).
fn python_generator_post(p: SocketAddr, id: &str) -> Option<String> {
    let script = format!(
        "import http.client\n\
         c = http.client.HTTPConnection('127.0.0.1', {port}, timeout=10)\n\
         def gen():\n    yield b'from '\n    yield b'a '\n    yield b'generator'\n\
         c.request('POST', '/send/{id}', body=gen())\n\
         r = c.getresponse(); print(r.status, r.read().decode())\n",
        port = p.port()
    );
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script);
    run_with_input(cmd, b"")
}

both_backends! {
/// Real clients: Python's `http.client` with a generator body and `curl -T -` (stdin, so
/// no length is known) both send `Transfer-Encoding: chunked`; each publish is delivered.
/// Skipped, saying so, where python3 or curl is missing.
fn chunked_real_clients() {
    let server = start(2);
    let mut sub = Subscriber::connect(server.subscriber_addr(), "ck4");
    let p = server.publish_addr();
    if let Some(out) = python_generator_post(p, "ck4") {
        assert_eq!(out.trim(), "200 {\"delivered\":1}", "python3 http.client");
        sub.expect_msg(b"from a generator");
    }
    // `curl -T -` as is (a PUT with `Expect: 100-continue`), and as a POST without `Expect`.
    for (args, msg) in [
        (&["-s", "-S", "-T", "-"][..], &b"from curl -T -"[..]),
        (&["-s", "-S", "-X", "POST", "-T", "-", "-H", "Expect:"][..], b"from curl -X POST"),
    ] {
        let mut curl = Command::new("curl");
        curl.args(args).arg(format!("http://{p}/send/ck4"));
        if let Some(out) = run_with_input(curl, msg) {
            assert_eq!(out.trim(), "{\"delivered\":1}", "curl {args:?}");
            sub.expect_msg(msg);
        }
    }
}
}
