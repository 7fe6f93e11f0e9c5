//! The ends of a publisher's connection, on the fake driver: a half-closed publisher's reply
//! still goes out before the close; an error reply is followed by the lingering close (FIN,
//! reads that discard until the client's FIN, then a close with nothing unread), bounded in
//! bytes.

use crate::driver::fake::{Call, Kind};

use super::harness::{config, delivered_reply, id_owned_by, send_request, Harness};

/// An error reply: FIN at once (`shutdown_write`), then a poll; each poll is answered by a
/// non-blocking read; a full read reads again; the client's FIN (a read of 0) closes,
/// without the driver's own linger (nothing is left unread).
#[test]
fn error_reply_then_bounded_discard() {
    let mut h = Harness::new(config(1, |_| {}));
    let fd = 20_001;
    h.publisher(0, fd);
    h.write(
        0,
        fd,
        b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nxx",
    );
    let reply = h.read(0, fd);
    assert!(
        reply.starts_with(b"HTTP/1.1 404 Not Found\r\n"),
        "{reply:?}"
    );
    assert!(
        h.io[0].calls().contains(&Call::Shutdown { fd }),
        "no FIN after the reply"
    );
    assert_eq!(h.io[0].in_flight(fd), vec![Kind::Poll]);
    h.io[0].complete(fd, Kind::Poll, i32::from(libc::POLLIN));
    h.turn(0);
    h.io[0].complete(fd, Kind::RecvNow, 16 * 1024);
    h.turn(0);
    assert_eq!(
        h.io[0].in_flight(fd),
        vec![Kind::RecvNow],
        "a full read reads on"
    );
    h.io[0].complete(fd, Kind::RecvNow, -libc::EAGAIN);
    h.turn(0);
    assert_eq!(
        h.io[0].in_flight(fd),
        vec![Kind::Poll],
        "nothing more: wait"
    );
    h.io[0].complete(fd, Kind::Poll, i32::from(libc::POLLIN | libc::POLLRDHUP));
    h.turn(0);
    h.io[0].complete(fd, Kind::RecvNow, 0);
    h.turn(0);
    assert!(h.io[0].calls().contains(&Call::Close { fd, linger: false }));

    // A client that keeps sending is cut after 16 MiB.
    let fd = 20_002;
    h.publisher(0, fd);
    h.write(
        0,
        fd,
        b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n",
    );
    assert!(h.read(0, fd).starts_with(b"HTTP/1.1 404"));
    h.io[0].complete(fd, Kind::Poll, i32::from(libc::POLLIN));
    h.turn(0);
    for _ in 0..(16 << 20) / (16 * 1024) {
        h.io[0].complete(fd, Kind::RecvNow, 16 * 1024);
        h.turn(0);
    }
    assert!(
        h.io[0].calls().contains(&Call::Close { fd, linger: false }),
        "not cut"
    );
    assert!(h.io[0].in_flight(fd).is_empty());
}

/// A publisher's send to an id owned by the other shard, then its FIN: the FIN closes
/// nothing while the reply is owed; the reply goes out once the owner answers, and the
/// connection closes after it.
#[test]
fn half_closed_publisher_gets_the_reply_owed() {
    let mut h = Harness::new(config(2, |_| {}));
    let fd = 20_003;
    h.publisher(0, fd);
    h.write(0, fd, &send_request(&id_owned_by(1, 2), b"m"));
    h.io[0].complete(fd, Kind::Recv, 0); // the FIN
    h.turn(0);
    assert!(
        !h.io[0]
            .calls()
            .iter()
            .any(|c| matches!(c, Call::Close { fd: f, .. } if *f == fd)),
        "closed with a reply owed"
    );
    h.drive();
    assert_eq!(h.read(0, fd), delivered_reply(0));
    h.turn(0);
    if h.io[0].in_flight(fd) == vec![Kind::Recv] {
        h.io[0].complete(fd, Kind::Recv, 0); // the FIN, seen again
        h.turn(0);
    }
    assert!(h.io[0]
        .calls()
        .iter()
        .any(|c| matches!(c, Call::Close { fd: f, .. } if *f == fd)));
}
