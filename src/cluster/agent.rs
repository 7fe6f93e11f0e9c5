//! The node's Redis agent: one task on shard 0's runtime (tokio-uring's runtime is a tokio
//! current-thread runtime, so the `redis` crate's tokio sockets run on it unchanged; the
//! epoll backend's shards run on a tokio runtime too). It holds the node's Redis
//! connections (`conn`): on one Redis a multiplexed one for `PUBLISH` and a pub/sub
//! one for `SUBSCRIBE` and the messages; on Redis Cluster one per Redis node for both
//! (`SPUBLISH`, `SSUBSCRIBE`). The protocol is in the [`super`] module doc.
//!
//! Session: connect both, drop whatever was queued while down (counted), subscribe every
//! wanted bucket, mark the node up and release held heads; then loop: take messages from
//! Redis and hand them to the owner shards, subscribe newly wanted buckets, publish the
//! queue as one pipelined batch, ping when idle for a second. Any error ends the session;
//! [`run`] marks the node down and starts another after a backoff.

use std::collections::HashMap;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::backlog;
use super::conn::{self, Conn, Events, Sub};
use super::control::CtlAgent;
use super::inbound::Inbound;
use super::presence_agent::PresenceAgent;
use super::receive::Batch;
use super::sequencer::{self, Sequencer};
use super::slots::SlotWatch;
use super::wire::{self, Kind};
use super::{redact, Cluster, Forward};
use crate::mesh::Msg;

/// First reconnect delay; doubles per failed attempt up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest reconnect delay (so a restarted Redis is found within about a second).
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Connect and response timeout of both Redis connections.
pub(super) const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// A quiet pub/sub connection is pinged this often (finds a peer that vanished silently).
const PING_EVERY: Duration = Duration::from_secs(1);
/// Most payload bytes per bucket channel in one PUBLISH.
const MAX_PAYLOAD: usize = 512 * 1024;
/// Most bytes of messages taken from the queue for one pipelined batch.
const MAX_BATCH: usize = 4 * 1024 * 1024;

/// Why a session ended.
type SessionError = String;

/// Runs the agent forever (until the runtime it runs on is dropped at shutdown).
pub async fn run(cluster: Arc<Cluster>) {
    let url = redact(&cluster.config().url);
    let mut backoff = BACKOFF_MIN;
    // Start of the current outage and the drop count then (one log line per episode).
    let mut outage: Option<(Instant, u64)> = None;
    loop {
        let why = session(&cluster, &url, &mut outage, &mut backoff).await;
        set_down(&cluster);
        if outage.is_none() {
            cluster.stats.outages.fetch_add(1, Relaxed);
            if cluster.sequenced() {
                tracing::warn!(
                    "cluster: Redis {url} unreachable ({why}); publishes and new streams answered 503 (history lives in Redis), counted in /stats cluster_forward_dropped; reconnecting with backoff"
                );
            } else {
                tracing::warn!(
                    "cluster: Redis {url} unreachable ({why}); serving local traffic only, forwards dropped and counted in /stats cluster_forward_dropped; reconnecting with backoff"
                );
            }
            outage = Some((Instant::now(), cluster.stats.dropped.load(Relaxed)));
        } else {
            tracing::debug!("cluster: reconnect to {url} failed: {why}");
        }
        tokio::time::sleep(backoff).await;
        cluster.ctl_refuse_queued();
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Marks the node down: no more forwards queued, held heads released, queue dropped.
fn set_down(c: &Cluster) {
    c.up.store(false, SeqCst);
    for s in c.subscribed.iter() {
        s.store(false, Relaxed);
    }
    c.broadcast_ready();
    drop_queue(c);
    sequencer::refuse(c, c.take_fetches());
    c.ctl_refuse_queued();
}

fn drop_queue(c: &Cluster) {
    let mut n = 0;
    while let Some(f) = c.pop() {
        n += 1;
        // History on: the publish waits for its number; it was never sent, so it is refused.
        if f.reply != crate::mesh::ReplyTo::NOBODY {
            let m = Msg::PublishFailed {
                token: f.reply.token,
                sent: false,
            };
            c.mesh.push(usize::from(f.reply.shard), vec![m]);
        }
    }
    c.stats.dropped.fetch_add(n, Relaxed);
}

async fn session(
    c: &Cluster,
    url: &str,
    outage: &mut Option<(Instant, u64)>,
    backoff: &mut Duration,
) -> SessionError {
    let (mut publ, mut sink, mut stream) = match conn::connect(c.config(), REDIS_TIMEOUT).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    // Forwards queued in the instant before the node was marked down would be stale now.
    drop_queue(c);
    if c.config().is_redis_cluster() {
        match backlog::load(c, &mut publ).await {
            Ok(sha) => c.set_pub_sha(sha),
            Err(e) => return e,
        }
    }
    if let Err(e) = subscribe_wanted(c, &mut publ, &sink).await {
        return e;
    }
    c.ctl_refuse_queued();
    if let Err(e) = super::control::subscribe(c, &mut sink).await {
        return e;
    }
    if let Err(e) = super::affine_lease::claim(c, &mut publ).await {
        return e;
    }
    let mut seq = match Sequencer::load(c, &mut publ).await {
        Ok(s) => s,
        Err(e) => return e,
    };
    let mut pres = match PresenceAgent::start(c, &mut publ, &mut sink).await {
        Ok(p) => p,
        Err(e) => return e,
    };
    c.up.store(true, SeqCst);
    c.broadcast_ready();
    *backoff = BACKOFF_MIN;
    match outage.take() {
        Some((since, dropped)) => tracing::warn!(
            "cluster: Redis {url} back after {:.1} s, subscriptions restored; {} forwards dropped meanwhile",
            since.elapsed().as_secs_f64(),
            c.stats.dropped.load(Relaxed).saturating_sub(dropped)
        ),
        None => tracing::info!(
            node = format_args!("{:016x}", c.node),
            buckets = c.config().buckets,
            "cluster: connected to Redis {url}"
        ),
    }
    let mut ctl = CtlAgent::default();
    // After `up`: from here on the hub queues its edges, and the resync sees the rest.
    if let Some(p) = pres.as_mut() {
        if let Err(e) = p.join(c, &mut publ).await {
            return e;
        }
    }
    let why = pump(
        c,
        &mut publ,
        &mut sink,
        &mut stream,
        &mut seq,
        &mut ctl,
        &mut pres,
    )
    .await;
    ctl.settle(c, true);
    if let Some(s) = seq.as_mut() {
        s.fail_all(c);
    }
    why
}

/// A session's loop, until an error ends it.
async fn pump(
    c: &Cluster,
    publ: &mut Conn,
    sink: &mut Sub,
    stream: &mut Events,
    seq: &mut Option<Sequencer>,
    ctl: &mut CtlAgent,
    pres: &mut Option<PresenceAgent>,
) -> SessionError {
    let mut inbound = Inbound::new(c.mesh.shards());
    let mut last_heard = Instant::now();
    let mut watch = SlotWatch::new(c);
    loop {
        let mut batch = Batch {
            inbound: &mut inbound,
            seq,
            ctl,
        };
        if let Err(e) = batch.refill(c, publ).await {
            return e;
        }
        tokio::select! {
            m = stream.next() => {
                let Some(m) = m else {
                    return "pub/sub connection closed".to_string();
                };
                // Everything already read goes in the same batches.
                let mut batch = Batch { inbound: &mut inbound, seq, ctl };
                if let Err(e) = batch.run(c, m, stream, publ, sink).await {
                    return e;
                }
                last_heard = Instant::now();
            }
            _ = c.wake.notified() => {}
            _ = watch.due() => {
                if let Err(e) = watch.check(c, publ, sink).await {
                    return e;
                }
            }
            _ = ctl_deadline(ctl.deadline()) => {}
            _ = ctl_deadline(pres.as_ref().map(PresenceAgent::deadline)) => {}
            _ = tokio::time::sleep(PING_EVERY) => {
                if last_heard.elapsed() >= PING_EVERY {
                    if let Err(e) = ping(sink).await {
                        return e;
                    }
                    last_heard = Instant::now();
                }
            }
        }
        // Cleared before the queue is drained: a forward pushed after this wakes us again.
        c.woken.store(false, SeqCst);
        if let Err(e) = subscribe_wanted(c, publ, sink).await {
            return e;
        }
        if let Err(e) = publish_queued(c, publ, seq).await {
            return e;
        }
        if let Some(s) = seq {
            if let Err(e) = answer_fetches(c, publ, sink, s).await {
                return e;
            }
        }
        if let Err(e) = ctl.step(c, publ).await {
            return e;
        }
        if let Some(p) = pres.as_mut() {
            if let Err(e) = p.step(c, publ).await {
                return e;
            }
        }
    }
}

/// Sleeps until `at` (forever if none).
async fn ctl_deadline(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Answers the queued resume reads, after subscribing the buckets they need (each was
/// wanted before its read was queued): what is published after a read arrives live.
async fn answer_fetches(
    c: &Cluster,
    publ: &mut Conn,
    sink: &Sub,
    s: &Sequencer,
) -> Result<(), SessionError> {
    let fetches = c.take_fetches();
    if fetches.is_empty() {
        return Ok(());
    }
    if let Err(e) = subscribe_wanted(c, publ, sink).await {
        sequencer::refuse(c, fetches);
        return Err(e);
    }
    s.answer(c, publ, fetches).await
}

async fn ping(sink: &mut Sub) -> Result<(), SessionError> {
    match tokio::time::timeout(REDIS_TIMEOUT, sink.ping()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("ping: {e}")),
        Err(_) => Err("ping: no answer within 2 s".to_string()),
    }
}

/// Subscribes every wanted bucket not subscribed yet, one SUBSCRIBE per channel, pipelined
/// (the client matches one confirmation to each command, so a command per channel keeps
/// its bookkeeping exact); then marks them subscribed and tells the shards.
async fn subscribe_wanted(c: &Cluster, publ: &mut Conn, sink: &Sub) -> Result<(), SessionError> {
    let new: Vec<u32> = (0..=c.friends_bucket())
        .filter(|&b| c.wanted[b as usize].load(Relaxed) && !c.subscribed[b as usize].load(Relaxed))
        .filter(|&b| c.owns(b))
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    if c.config().is_redis_cluster() {
        backlog::read_starts(c, publ, &new).await?;
    }
    let subs = new.iter().map(|&b| {
        let mut s = sink.clone();
        let ch = c.channel(b);
        async move { s.subscribe(ch).await }
    });
    match tokio::time::timeout(REDIS_TIMEOUT, futures_util::future::join_all(subs)).await {
        Ok(rs) => {
            if let Some(Err(e)) = rs.into_iter().find(Result::is_err) {
                return Err(format!("SUBSCRIBE: {e}"));
            }
        }
        Err(_) => return Err("SUBSCRIBE: no answer within 2 s".to_string()),
    }
    for &b in &new {
        c.subscribed[b as usize].store(true, SeqCst);
    }
    c.broadcast_ready();
    Ok(())
}

/// Sends the queue as one pipeline: one PUBLISH per bucket channel (or per 512 KiB of it).
async fn publish_queued(
    c: &Cluster,
    publ: &mut Conn,
    seq: &mut Option<Sequencer>,
) -> Result<(), SessionError> {
    loop {
        let mut payloads: HashMap<u32, Vec<u8>> = HashMap::new();
        let mut numbered: HashMap<u32, Vec<Forward>> = HashMap::new();
        let mut full: Vec<(u32, Vec<u8>)> = Vec::new();
        let (mut taken, mut count) = (0usize, 0u64);
        while taken < MAX_BATCH {
            let Some(f) = c.pop() else { break };
            taken += f.msg.len() + wire::RECORD_OVERHEAD;
            count += 1;
            if f.kind == Kind::Positioned {
                numbered.entry(f.bucket).or_default().push(f);
                continue;
            }
            let p = payloads.entry(f.bucket).or_insert_with(|| {
                let mut p = Vec::with_capacity(256);
                wire::begin(&mut p, c.node);
                p
            });
            wire::push(p, f.kind, f.key.to_string().as_bytes(), &f.msg);
            if p.len() >= MAX_PAYLOAD {
                let p = payloads.remove(&f.bucket).unwrap_or_default();
                full.push((f.bucket, p));
            }
        }
        if count == 0 {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        let pub_sha = c.pub_sha();
        for (b, p) in full.into_iter().chain(payloads) {
            if let Some(sha) = &pub_sha {
                // Redis Cluster: numbered and kept with the SPUBLISH (backlog.rs).
                let ch = c.channel(b);
                pipe.cmd("EVALSHA")
                    .arg(sha)
                    .arg(1)
                    .arg(format!("{ch}:s"))
                    .arg(ch);
                pipe.arg(p).ignore();
            } else {
                pipe.cmd("PUBLISH").arg(c.channel(b)).arg(p).ignore();
            }
        }
        // History on: Redis numbers, keeps and publishes these (shard/cluster.rs sends
        // nothing positioned without a sequencer).
        if let Some(s) = seq {
            for (b, fs) in numbered {
                s.add(&mut pipe, c, b, fs);
            }
        }
        let answers = pipe.query_async::<Vec<redis::Value>>(publ).await;
        if let Some(s) = seq {
            s.returned(c, answers.as_deref().map_err(|_| ()));
        }
        match answers {
            Ok(_) => {
                c.stats.forwarded.fetch_add(count, Relaxed);
                c.stats.batches.fetch_add(1, Relaxed);
            }
            Err(e) => {
                c.stats.dropped.fetch_add(count, Relaxed);
                return Err(format!("PUBLISH: {e}"));
            }
        }
    }
}
