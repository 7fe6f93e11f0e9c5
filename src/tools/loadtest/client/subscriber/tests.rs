//! The loop against a small blocking server on 127.0.0.1:0: each connection's request, head,
//! units and end reach the role, in that order, in both request modes.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::{Duration, Instant};

use super::{run, End, LoopConfig, Role, Turn};
use crate::tools::loadtest::wire::chunk::{Expect, Unit};
use crate::tools::loadtest::wire::url::UrlTemplate;

/// Records what the loop tells it, by connection.
#[derive(Default)]
struct Recorder {
    heads: Vec<usize>,
    units: Vec<(usize, Vec<u8>)>,
    ends: Vec<(usize, bool, String)>,
}

impl Role for Recorder {
    type Per = u32;
    fn id(&self, i: usize) -> u64 {
        100 + i as u64
    }
    fn source(&self, _: usize) -> Option<Ipv4Addr> {
        None
    }
    fn tick(&mut self, _: &mut Turn<'_, u32>, _: Instant) -> Duration {
        Duration::from_millis(10)
    }
    fn on_unit(&mut self, i: usize, per: &mut u32, unit: Unit<'_>, _: u64) {
        match unit {
            Unit::Data(d) => {
                *per += 1;
                self.units.push((i, d.to_vec()));
            }
            // The head comes first, once.
            Unit::Head(h) => {
                assert_eq!(*per, 0);
                assert!(h.starts_with(b"HTTP/1.1 200 ") && h.ends_with(b"\r\n\r\n"));
            }
            Unit::Ping => {}
        }
    }
    fn on_head(&mut self, i: usize, _: u64) {
        self.heads.push(i);
    }
    fn on_end(&mut self, i: usize, head: bool, why: &End) {
        self.ends.push((i, head, why.to_string()));
    }
}

/// A server that answers `n` subscribers: reads each request head, checks its request line
/// names `/test/<id>`, sends a chunked head, one chunk `<id>` and the last chunk.
fn serve(n: usize) -> (std::net::SocketAddr, thread::JoinHandle<Vec<String>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = thread::spawn(move || {
        let mut lines = Vec::new();
        for _ in 0..n {
            let (mut s, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut b = [0u8; 1];
            while !req.ends_with(b"\r\n\r\n") {
                assert_eq!(s.read(&mut b).unwrap(), 1);
                req.push(b[0]);
            }
            let line = String::from_utf8(req).unwrap();
            let id = line.split(['/', ' ']).nth(3).unwrap().to_string();
            let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
            let body = format!("{:x}\r\n{id}\r\n0\r\n\r\n", id.len());
            s.write_all(format!("{head}{body}").as_bytes()).unwrap();
            lines.push(line.lines().next().unwrap().to_string());
        }
        lines
    });
    (addr, h)
}

fn config(addr: std::net::SocketAddr, count: usize, eager: bool) -> LoopConfig {
    LoopConfig {
        url: UrlTemplate::local(addr, "/test/{id}").unwrap(),
        headers: "",
        expect: Expect::Chunked,
        count,
        connect_rate: 1000.0,
        max_connecting: 2,
        until: Some(Duration::from_secs(10)),
        stop_when_all_ended: true,
        eager_request: eager,
        short_read_drains: false,
        reset_on_end: eager,
        reset_at_finish: false,
    }
}

#[test]
fn request_head_units_and_end_reach_the_role() {
    for eager in [false, true] {
        let (addr, server) = serve(3);
        let stop = AtomicBool::new(false);
        let end = run(config(addr, 3, eager), Recorder::default(), None, &stop).unwrap();
        let mut lines = server.join().unwrap();
        lines.sort();
        assert_eq!(
            lines,
            [
                "GET /test/100 HTTP/1.1",
                "GET /test/101 HTTP/1.1",
                "GET /test/102 HTTP/1.1"
            ]
        );
        let mut r = end.role;
        r.heads.sort();
        r.units.sort();
        r.ends.sort();
        assert_eq!(r.heads, [0, 1, 2], "eager {eager}");
        let units: Vec<(usize, Vec<u8>)> = (0..3)
            .map(|i| (i, format!("{}", 100 + i).into_bytes()))
            .collect();
        assert_eq!(r.units, units);
        let finished = End::Finished.to_string();
        let ends: Vec<(usize, bool, String)> =
            (0..3).map(|i| (i, true, finished.clone())).collect();
        assert_eq!(r.ends, ends);
        assert_eq!(end.pers, [1, 1, 1]);
        assert_eq!(end.io_used, "epoll");
    }
}

#[test]
fn a_refused_connect_ends_before_its_head() {
    // Bound then dropped: nothing listens there.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let stop = AtomicBool::new(false);
    let end = run(config(addr, 2, false), Recorder::default(), None, &stop).unwrap();
    let r = end.role;
    assert!(r.heads.is_empty());
    assert_eq!(r.ends.len(), 2);
    assert!(r
        .ends
        .iter()
        .all(|(_, head, why)| !head && why.starts_with("connect: ")));
}
