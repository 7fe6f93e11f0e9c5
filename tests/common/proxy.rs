//! A TCP proxy in the test process, between a client (a browser) and the server: each
//! connection it accepts on 127.0.0.1 port 0 is carried to the upstream address byte for
//! byte, by two threads; [`Proxy::cut`] drops every connection it carries at once (both
//! sides shut down), a network drop as both ends see it, with the server process untouched.
//! It keeps what each client sent (up to 16 KiB a connection) for the test to check.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Most bytes kept of what one client sent.
const KEEP: usize = 16 * 1024;

/// What each client sent, one entry per connection in accept order.
type Sent = Arc<Mutex<Vec<Vec<u8>>>>;

/// A running proxy; stopped (and every connection cut) on drop.
pub(crate) struct Proxy {
    /// Where clients connect.
    pub(crate) addr: SocketAddr,
    /// Both sockets of every connection carried now.
    live: Arc<Mutex<Vec<TcpStream>>>,
    /// What each client sent.
    sent: Sent,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on 127.0.0.1 port 0 and carries each connection to `upstream`.
    pub(crate) fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let live = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s, st) = (live.clone(), sent.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let slot = {
                    let mut s = s.lock().unwrap();
                    s.push(Vec::new());
                    s.len() - 1
                };
                l.lock()
                    .unwrap()
                    .extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let keep = s.clone();
                std::thread::spawn(move || pump(client, server, Some((keep, slot))));
                std::thread::spawn(move || pump(s2, c2, None));
            }
        });
        Proxy {
            addr,
            live,
            sent,
            stop,
        }
    }

    /// Drops every connection carried now: both sides shut down in both directions.
    pub(crate) fn cut(&self) {
        for s in self.live.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// What each client sent so far, one entry per connection, as text.
    pub(crate) fn sent(&self) -> Vec<String> {
        let s = self.sent.lock().unwrap();
        s.iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut();
        // Wake the accept loop so that it sees `stop` and ends.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Copies `from` to `to` until either ends, keeping the first bytes in `keep`'s slot; then
/// shuts both down so that the other direction ends too.
fn pump(mut from: TcpStream, mut to: TcpStream, keep: Option<(Sent, usize)>) {
    let mut b = [0u8; 16 * 1024];
    loop {
        let n = match super::client::read_retrying(&mut from, &mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((k, slot)) = &keep {
            let mut k = k.lock().unwrap();
            let room = KEEP.saturating_sub(k[*slot].len()).min(n);
            k[*slot].extend_from_slice(&b[..room]);
        }
        if to.write_all(&b[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
