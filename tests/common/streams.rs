//! One open stream of any kind (`/test/` seed, SSE, WebSocket, raw `/sub/`), read with the
//! exact framing of its kind, for the tests that run the same rule over every kind.

use std::net::SocketAddr;

use super::client::{read_retrying, Client};
use super::comet::{chunk, msg_chunk, Subscriber};
use super::negotiated::{raw_connect, sse_connect, ws_connect, ws_server_frame};

/// The stream kinds of `/test/` and `/sub/`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Kind {
    /// `GET /test/<ids>`: the seed's numbered HTML chunks.
    Seed,
    /// `GET /sub/<ids>` with `Accept: text/event-stream`.
    Sse,
    /// `GET /sub/<ids>` upgraded to a WebSocket.
    Ws,
    /// `GET /sub/<ids>` without negotiation: each message as one chunk, verbatim.
    Raw,
}

/// Every stream kind, in a fixed order.
pub(crate) const KINDS: [Kind; 4] = [Kind::Seed, Kind::Sse, Kind::Ws, Kind::Raw];

/// An open stream of some kind whose head has been read.
pub(crate) struct Stream {
    /// Its kind.
    pub(crate) kind: Kind,
    /// The connection.
    pub(crate) c: Client,
    /// Messages read so far.
    pub(crate) n: u64,
}

impl Stream {
    /// Opens a stream of `kind` on `ids` and checks its head (and SSE's opening comment).
    pub(crate) fn open(addr: SocketAddr, kind: Kind, ids: &str) -> Stream {
        let c = match kind {
            Kind::Seed => Subscriber::connect(addr, ids).client,
            Kind::Sse => sse_connect(addr, ids),
            Kind::Ws => ws_connect(addr, ids),
            Kind::Raw => raw_connect(addr, ids),
        };
        Stream { kind, c, n: 0 }
    }

    /// Reads the next message and asserts it carries `msg` (exact framing per kind).
    pub(crate) fn expect(&mut self, msg: &[u8]) {
        self.n += 1;
        let what = format!(
            "{:?} message #{} {:?}",
            self.kind,
            self.n,
            String::from_utf8_lossy(msg)
        );
        match self.kind {
            Kind::Seed => self.c.expect_bytes(&msg_chunk(self.n, msg), &what),
            Kind::Sse => {
                let mut ev = b"data: ".to_vec();
                ev.extend_from_slice(msg);
                ev.extend_from_slice(b"\n\n");
                self.c.expect_bytes(&chunk(&ev), &what)
            }
            Kind::Ws => self.c.expect_bytes(&ws_server_frame(0x81, msg), &what),
            Kind::Raw => self.c.expect_bytes(&chunk(msg), &what),
        }
    }
}

/// Drops every leading copy of `beat` from what `c` receives next (messages are longer).
pub(crate) fn skip_beats(c: &mut Client, beat: &[u8]) {
    loop {
        while c.buf.len() < beat.len() && beat.starts_with(&c.buf) {
            let mut b = [0u8; 256];
            match read_retrying(&mut c.stream, &mut b) {
                Ok(n) if n > 0 => c.buf.extend_from_slice(&b[..n]),
                other => panic!("waiting past heartbeats: {other:?}"),
            }
        }
        if c.buf.starts_with(beat) {
            c.buf.drain(..beat.len());
        } else {
            return;
        }
    }
}
