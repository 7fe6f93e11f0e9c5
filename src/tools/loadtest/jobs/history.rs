//! `loadtest history`: what history costs the server in memory. Starts a server (history
//! on), reads its RSS once stable, publishes `--per-id` messages of `--msg-bytes` to each of
//! `--ids` ids (nobody subscribed: every byte that stays is history), reads the RSS again,
//! and divides the growth by the messages `/stats` says are held: bytes per held message,
//! against the bound of payload + 48 B.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::tools::loadtest::cli::ServerFlags;
use crate::tools::loadtest::host::child::ServerGuard;
use crate::tools::loadtest::host::proc::wait_rss_stable;
use crate::tools::loadtest::wire::answer::{fetch_stats_keys, parse_answer};

/// Flags of `uring-comet loadtest history`.
#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Ids published to (ids 1..=ids).
    #[arg(long, default_value_t = 10_000)]
    pub ids: u64,
    /// Messages per id (also the server's `--history`, so each id holds all of them).
    #[arg(long, default_value_t = 32)]
    pub per_id: u64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 100)]
    pub msg_bytes: usize,
    /// Data-plane backend for the server (its `--backend`); default: the server's own.
    #[arg(long, value_enum)]
    pub backend: Option<crate::config::Backend>,
    /// The server under test.
    #[command(flatten)]
    pub server: ServerFlags,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `loadtest history`; see the module doc. Errors: the server does not start, a
/// publish is not answered 200, or fewer messages are held than published.
pub(crate) fn run(a: HistoryArgs) -> Result<()> {
    let head = vec!["--history".to_string(), a.per_id.to_string()];
    let (bin, args) = a.server.command(head, a.backend)?;
    let server = ServerGuard::start(&bin, &args, a.server.server_log.as_ref())?;
    let (before, _) = wait_rss_stable(server.pid, Duration::from_secs(5))?;
    let body = vec![b'h'; a.msg_bytes];
    let mut publisher = TcpStream::connect(server.pub_addr).context("connecting to publish")?;
    for round in 0..a.per_id {
        publish_round(&mut publisher, a.ids, &body).with_context(|| format!("round {round}"))?;
    }
    let (after, stable) = wait_rss_stable(server.pid, Duration::from_secs(10))?;
    let held = stat(server.pub_addr, "history_messages")?;
    let counted = stat(server.pub_addr, "history_bytes")?;
    let published = a.ids * a.per_id;
    if held != published {
        bail!("{held} messages held of {published} published (see --history-memory)");
    }
    let per_msg = after.saturating_sub(before) as f64 / held as f64;
    let over = per_msg - a.msg_bytes as f64;
    if a.json {
        println!(
            "{{\"ids\":{},\"per_id\":{},\"msg_bytes\":{},\"held\":{held},\"rss_before\":{before},\"rss_after\":{after},\"rss_stable\":{stable},\"bytes_per_held_message\":{per_msg:.1},\"overhead_per_message\":{over:.1},\"history_bytes\":{counted}}}",
            a.ids, a.per_id, a.msg_bytes
        );
    } else {
        println!(
            "history: {} ids x {} messages of {} B held ({held} messages)",
            a.ids, a.per_id, a.msg_bytes
        );
        println!(
            "server RSS: {:.1} MiB -> {:.1} MiB{}",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            if stable {
                ""
            } else {
                " (not stable after 10 s)"
            }
        );
        println!(
            "per held message: {per_msg:.1} B = payload + {over:.1} B (bound: payload + 48 B)"
        );
        println!("counted against --history-memory: {counted} B");
    }
    Ok(())
}

/// One message to each of ids 1..=ids, pipelined 256 at a time; every answer must be 200.
fn publish_round(s: &mut TcpStream, ids: u64, body: &[u8]) -> Result<()> {
    let mut id = 1;
    let mut inbuf = Vec::new();
    while id <= ids {
        let batch = (ids - id + 1).min(256);
        let mut out = Vec::new();
        for k in id..id + batch {
            let _ = write!(
                out,
                "POST /send/{k} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            out.extend_from_slice(body);
        }
        s.write_all(&out)?;
        let mut answered = 0;
        let mut piece = [0u8; 16 * 1024];
        while answered < batch {
            while let Some(ans) = parse_answer(&inbuf)? {
                if ans.status != 200 {
                    bail!("publish answered {}", ans.status);
                }
                inbuf.drain(..ans.len);
                answered += 1;
            }
            if answered < batch {
                let n = s.read(&mut piece)?;
                if n == 0 {
                    bail!("publish connection closed");
                }
                inbuf.extend_from_slice(&piece[..n]);
            }
        }
        id += batch;
    }
    Ok(())
}

/// One `/stats` key of the server at `addr`.
fn stat(addr: SocketAddr, key: &str) -> Result<u64> {
    let v = fetch_stats_keys(addr, &[key])?;
    v.first().map(|(_, n)| *n).context("stats key missing")
}
