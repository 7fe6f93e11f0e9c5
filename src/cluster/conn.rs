//! The agent's two faces of Redis, for one Redis or a Redis Cluster ([`super::ClusterConfig`]):
//! [`Conn`] for commands and [`Sub`] for subscriptions, with the messages as [`Event`]s.
//!
//! - One Redis (`redis://`): a multiplexed connection for commands and a pub/sub connection
//!   (RESP2) for `SUBSCRIBE` and the messages, as before Redis Cluster support.
//! - Redis Cluster (`redis-cluster://`): the `redis` crate's async cluster connection, RESP3,
//!   one connection per Redis node for both commands and sharded subscriptions
//!   (`SSUBSCRIBE`, Redis 7 sharded pub/sub: a message reaches only the shard owning its
//!   channel's slot). The crate follows `MOVED`/`ASK` for commands, refreshes its slot map
//!   on them, and moves tracked subscriptions to the slots' new owners when it does. Two
//!   things it leaves to us: a slot that migrates makes its old owner drop the subscriptions
//!   of its channels (`sunsubscribe` push, Redis 7.0 `CLUSTER SETSLOT ... NODE`): [`Event::Lost`],
//!   subscribed again by the agent; and a node connection that drops (its master may be
//!   failing over): [`Event::Disconnected`], which ends the agent's session, so everything is
//!   subscribed again on a fresh connection and slot map.
//!
//! A pipeline (many commands for many buckets) is one round trip on one Redis; on a cluster
//! its commands go out grouped by hash slot, the groups concurrently and each group in order
//! (so the records of one bucket keep their order), since one pipeline may not cross slots.

use std::collections::HashMap;
use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use redis::aio::{ConnectionLike, MultiplexedConnection, PubSubSink};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{Arg, Cmd, Pipeline, PushKind, RedisFuture, Value};

use super::{Cluster, ClusterConfig};

/// Commands: one multiplexed Redis connection, or a cluster connection.
#[derive(Clone)]
pub(super) enum Conn {
    /// `redis://`.
    Single(MultiplexedConnection),
    /// `redis-cluster://`.
    Cluster(ClusterConnection),
}

/// Subscriptions: a RESP2 pub/sub sink, or the same cluster connection as [`Conn`].
#[derive(Clone)]
pub(super) enum Sub {
    /// `redis://`: `SUBSCRIBE` on the pub/sub connection.
    Single(PubSubSink),
    /// `redis-cluster://`: `SSUBSCRIBE`, routed by the channel's slot.
    Cluster(ClusterConnection),
}

/// What arrives on the subscriptions.
pub(super) enum Event {
    /// A message on a subscribed channel.
    Msg(redis::Msg),
    /// Redis Cluster: the named channel's subscription was dropped by the server (its slot
    /// moved); it must be subscribed again, at the slot's new owner.
    Lost(Vec<u8>),
    /// Redis Cluster: a node connection dropped.
    Disconnected,
}

/// The messages of a session, in arrival order.
pub(super) type Events = Pin<Box<dyn Stream<Item = Event> + Send>>;

/// Connects a session: commands, subscriptions and their events.
///
/// Errors: a line naming what failed (connect, timeout), for the agent's log.
pub(super) async fn connect(
    cfg: &ClusterConfig,
    timeout: std::time::Duration,
) -> Result<(Conn, Sub, Events), String> {
    if cfg.nodes.is_empty() {
        return connect_single(cfg, timeout).await;
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<redis::PushInfo>();
    let client = redis::cluster::ClusterClientBuilder::new(cfg.nodes.clone())
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(tx)
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .retries(4)
        .build()
        .map_err(|e| format!("cluster client: {e}"))?;
    let conn = match tokio::time::timeout(timeout, client.get_async_connection()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(format!("cluster connection: {e}")),
        Err(_) => return Err("cluster connection: timed out".to_string()),
    };
    let events = tokio_stream_from(rx).filter_map(|p| async move { event(p) });
    Ok((
        Conn::Cluster(conn.clone()),
        Sub::Cluster(conn),
        Box::pin(events),
    ))
}

async fn connect_single(
    cfg: &ClusterConfig,
    timeout: std::time::Duration,
) -> Result<(Conn, Sub, Events), String> {
    let client = redis::Client::open(cfg.url.as_str()).map_err(|e| format!("Redis URL: {e}"))?;
    let conf = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let publ = client
        .get_multiplexed_async_connection_with_config(&conf)
        .await
        .map_err(|e| format!("publish connection: {e}"))?;
    let pubsub = match tokio::time::timeout(timeout, client.get_async_pubsub()).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Err(format!("pub/sub connection: {e}")),
        Err(_) => return Err("pub/sub connection: timed out".to_string()),
    };
    let (sink, stream) = pubsub.split();
    Ok((
        Conn::Single(publ),
        Sub::Single(sink),
        Box::pin(stream.map(Event::Msg)),
    ))
}

/// A push from a cluster node, as an [`Event`]; `None` for confirmations and the like.
fn event(p: redis::PushInfo) -> Option<Event> {
    match p.kind {
        PushKind::SMessage | PushKind::Message => redis::Msg::from_push_info(p).map(Event::Msg),
        PushKind::SUnsubscribe => match p.data.first() {
            Some(Value::BulkString(ch)) => Some(Event::Lost(ch.clone())),
            _ => None,
        },
        PushKind::Disconnection => Some(Event::Disconnected),
        _ => None,
    }
}

/// The receiver as a stream (tokio's receiver has no `Stream` impl without tokio-stream).
fn tokio_stream_from(
    rx: tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
) -> impl Stream<Item = redis::PushInfo> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move {
        let p = rx.recv().await?;
        Some((p, rx))
    })
}

impl Sub {
    /// Subscribes `ch`: `SUBSCRIBE` on one Redis, `SSUBSCRIBE` on a cluster.
    pub(super) async fn subscribe(&mut self, ch: String) -> redis::RedisResult<()> {
        match self {
            Sub::Single(s) => s.subscribe(ch).await,
            Sub::Cluster(c) => c.ssubscribe(ch).await,
        }
    }

    /// A `PING` (on the pub/sub connection, or a random cluster node).
    pub(super) async fn ping(&mut self) -> redis::RedisResult<()> {
        match self {
            Sub::Single(s) => s.ping::<Value>().await.map(drop),
            Sub::Cluster(c) => redis::cmd("PING").query_async::<Value>(c).await.map(drop),
        }
    }
}

/// The hash slot a command of ours goes to: its channel (`SPUBLISH`) or first key
/// (`EVALSHA` with keys); `None` for one without (the client picks a node).
fn slot_of(cmd: &Cmd) -> Option<Slot> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .map(|a| match a {
            Arg::Simple(a) => a,
            _ => &[][..],
        })
        .collect();
    let key = match args.first()?.to_ascii_uppercase().as_slice() {
        b"EVALSHA" | b"EVAL" => {
            let n: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            (n > 0).then(|| args.get(3)).flatten()?
        }
        _ => args.get(1)?,
    };
    Some(Slot::for_key(key))
}

/// Sends `cmds` on a cluster: grouped by slot, the groups at once, each in order. One value
/// per command, in the order given.
async fn run_grouped(conn: &ClusterConnection, cmds: Vec<&Cmd>) -> redis::RedisResult<Vec<Value>> {
    let mut groups: HashMap<Option<Slot>, Vec<usize>> = HashMap::new();
    for (i, cmd) in cmds.iter().enumerate() {
        groups.entry(slot_of(cmd)).or_default().push(i);
    }
    let runs = groups.into_values().map(|idx| {
        let mut conn = conn.clone();
        let cmds = &cmds;
        async move {
            let mut out = Vec::with_capacity(idx.len());
            for i in idx {
                let v = conn.req_packed_command(cmds[i]).await?;
                out.push((i, v));
            }
            redis::RedisResult::Ok(out)
        }
    });
    let mut values = vec![Value::Nil; cmds.len()];
    for run in futures_util::future::join_all(runs).await {
        for (i, v) in run? {
            values[i] = v;
        }
    }
    Ok(values)
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            // Our pipelines are never atomic: offset 0, one answer per command.
            Conn::Cluster(c) => {
                let cmds: Vec<&Cmd> = pipeline.cmd_iter().skip(offset).take(count).collect();
                Box::pin(async move { run_grouped(c, cmds).await })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(_) => 0,
        }
    }
}

/// Redis Cluster: subscribes again the channels whose slot moved (the old owner dropped
/// them); the client routes each `SSUBSCRIBE` to the slot's new owner (`MOVED` refreshes its
/// slot map). Messages published there before this lands are not seen (DESIGN.md measures
/// the gap).
pub(super) async fn resubscribe(
    c: &Cluster,
    sink: &mut Sub,
    lost: Vec<Vec<u8>>,
) -> Result<(), String> {
    for ch in lost {
        let ch = String::from_utf8_lossy(&ch).into_owned();
        c.stats
            .resubscribed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(channel = %ch, "cluster: Redis Cluster moved a channel's slot; subscribing it at its new owner");
        match tokio::time::timeout(super::agent::REDIS_TIMEOUT, sink.subscribe(ch)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("SSUBSCRIBE after a slot move: {e}")),
            Err(_) => return Err("SSUBSCRIBE after a slot move: no answer within 2 s".to_string()),
        }
    }
    Ok(())
}
