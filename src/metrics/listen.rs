//! `--metrics-listen ADDR`: `/metrics`, `/healthz` and `/readyz` on a listener of their own,
//! served by one plain thread with blocking sockets, so a scrape never takes a shard's time
//! and a monitoring network can reach them without reaching the publish API. No bearer token
//! is asked there: bind it where only the monitoring system reaches.
//!
//! HTTP/1.1 (RFC 9112) at its simplest: one request per connection (`Connection: close` on
//! every reply), a head of at most 8 KiB read within 5 s, `GET` or `HEAD` only.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use super::View;
use crate::cluster::Cluster;
use crate::http::request::Probe;
use crate::mesh::Mesh;
use crate::stats::ShardStats;

/// Longest request head read, bytes.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its head (and to take the reply).
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// What the metrics thread reads: the same counters, cluster state and mesh as the shards.
pub struct Sources {
    /// Every shard's counters.
    pub stats: Arc<[ShardStats]>,
    /// Cluster mode's state, if on.
    pub cluster: Option<Arc<Cluster>>,
    /// The mesh (shutdown and draining flags).
    pub mesh: Arc<Mesh>,
}

/// Binds `addr` (port 0 picks a free port), before the shards start, so that an address in
/// use stops the start at once. Errors: the bind (the address is in use, or not this
/// host's), named with the flag.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("--metrics-listen {addr}: {e}")))
}

/// Starts thread `metrics`, which serves `listener` until the mesh shuts down. Returns the
/// bound address. Errors: the thread could not be spawned.
pub fn spawn(listener: TcpListener, src: Sources) -> io::Result<SocketAddr> {
    let bound = listener.local_addr()?;
    // The accept loop wakes every 200 ms to see whether the server stopped.
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || serve(listener, src))?;
    Ok(bound)
}

/// The accept loop: one connection at a time (scrapes are rare and small).
fn serve(listener: TcpListener, src: Sources) {
    while !src.mesh.is_shutdown() {
        match listener.accept() {
            Ok((s, _)) => {
                if let Err(e) = answer(s, &src) {
                    tracing::debug!("metrics listener: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                tracing::debug!("metrics listener accept: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Reads one request head from `s` and writes its reply. Errors: the socket's.
fn answer(mut s: TcpStream, src: &Sources) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    let reply = loop {
        let n = s.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => break route(&req, src),
            Ok(httparse::Status::Partial) if len < MAX_HEAD => continue,
            _ => break simple(400, "Bad Request"),
        }
    };
    s.write_all(&reply)?;
    let _ = s.shutdown(std::net::Shutdown::Write);
    Ok(())
}

/// The reply to a parsed request: a probe, 404 for other paths, 405 for other methods.
fn route(req: &httparse::Request<'_, '_>, src: &Sources) -> Vec<u8> {
    let path = req.path.unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    let head = match req.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return simple(405, "Method Not Allowed"),
    };
    match Probe::of_path(path.as_bytes()) {
        Some(probe) => View {
            shards: &src.stats,
            cluster: src.cluster.as_deref(),
            mesh: &src.mesh,
        }
        .reply(probe, head, true),
        None => simple(404, "Not Found"),
    }
}

/// A plain-text error reply whose body is its reason phrase.
fn simple(code: u16, reason: &str) -> Vec<u8> {
    let allow = if code == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {code} {reason}\r\n{allow}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reason}\n",
        reason.len() + 1
    )
    .into_bytes()
}
