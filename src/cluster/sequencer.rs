//! The agent's side of history in cluster mode ([`super::history`]): the scripts loaded per
//! Redis session, the publishes waiting for their own numbered record, the resume reads.
//!
//! A publish queued with [`super::Cluster::forward_positioned`] gets a tag (a counter of this
//! node) that its record carries through Redis; when the record comes back on the pub/sub
//! connection, the tag finds the publish's reply, which the owner shard completes with its
//! local deliveries. A session that ends (Redis lost) fails every publish still waiting
//! (`503`: it may or may not have been kept) and every resume read still waiting (the
//! connection gets `503`, and reconnects).

use bytes::Bytes;
use redis::Value;

use super::conn::Conn;
use super::history::{self, Entry, Fetch, Outstanding};
use super::{wire, Cluster, Forward};
use crate::history::{Pos, Reason};
use crate::id::Id;
use crate::mesh::{Msg, ReplyTo};

/// The history scripts of one Redis session and what waits for Redis.
pub(super) struct Sequencer {
    publish_sha: String,
    read_sha: String,
    /// Publishes whose record has not come back, by tag.
    outstanding: Outstanding,
    next_tag: u64,
    /// Per `EVALSHA` in the pipeline being sent: its records (id, message, tag) if the
    /// bucket was not subscribed (no echo will come: answered from the returned positions).
    sent: Vec<Option<Vec<(Id, Bytes, u64)>>>,
}

impl Sequencer {
    /// Loads both scripts (`SCRIPT LOAD`) on a new session; `None` with history off.
    pub(super) async fn load(c: &Cluster, publ: &mut Conn) -> Result<Option<Sequencer>, String> {
        if !c.sequenced() {
            return Ok(None);
        }
        let load = |src: &str| {
            let mut cmd = redis::cmd("SCRIPT");
            cmd.arg("LOAD").arg(src);
            let mut p = publ.clone();
            async move { cmd.query_async::<String>(&mut p).await }
        };
        let publish = c.script(history::PUBLISH_LUA);
        let publish_sha = load(&publish)
            .await
            .map_err(|e| format!("SCRIPT LOAD: {e}"))?;
        let read_sha = load(history::READ_LUA)
            .await
            .map_err(|e| format!("SCRIPT LOAD: {e}"))?;
        Ok(Some(Sequencer {
            publish_sha,
            read_sha,
            outstanding: Outstanding::new(),
            next_tag: 0,
            sent: Vec::new(),
        }))
    }

    /// Adds one `EVALSHA` of the publish script for `forwards` (all of bucket `b`) to `pipe`.
    pub(super) fn add(
        &mut self,
        pipe: &mut redis::Pipeline,
        c: &Cluster,
        b: u32,
        fs: Vec<Forward>,
    ) {
        let cfg = c.config();
        let mut header = Vec::with_capacity(wire::HEADER_LEN);
        wire::begin(&mut header, c.node);
        let cmd = pipe.cmd("EVALSHA").arg(&self.publish_sha).arg(2 * fs.len());
        let mut args: Vec<Vec<u8>> = Vec::with_capacity(4 * fs.len());
        let echoed = c.subscribed[b as usize].load(std::sync::atomic::Ordering::Relaxed);
        let mut records = Vec::new();
        for f in &fs {
            let id = f.key.to_string();
            let (ek, sk) = c.history_keys(&f.key);
            cmd.arg(ek).arg(sk);
            self.next_tag = self.next_tag.wrapping_add(1);
            if f.reply != ReplyTo::NOBODY {
                self.outstanding.insert(self.next_tag, f.reply);
            }
            args.push(id.into_bytes());
            args.push(f.msg.to_vec());
            args.push(history::new_epoch().to_vec());
            args.push(self.next_tag.to_be_bytes().to_vec());
            if !echoed {
                records.push((f.key.clone(), f.msg.clone(), self.next_tag));
            }
        }
        self.sent.push((!echoed).then_some(records));
        cmd.arg(c.channel(b))
            .arg(cfg.history_max)
            .arg(cfg.history_ttl_ms)
            .arg(header);
        for a in args {
            cmd.arg(a);
        }
    }

    /// The pipeline's `EVALSHA` answers, in order (`Err`: the pipeline failed; what was
    /// sent is failed with the session): records of buckets this node did not hold go to
    /// their owners at the returned positions.
    pub(super) fn returned(&mut self, c: &Cluster, answers: Result<&[Value], ()>) {
        let sent = std::mem::take(&mut self.sent);
        let Ok(answers) = answers else { return };
        let shards = c.mesh.shards();
        for (records, answer) in sent.into_iter().zip(answers) {
            let (Some(records), Value::Array(positions)) = (records, answer) else {
                continue;
            };
            for ((id, msg, tag), p) in records.into_iter().zip(positions) {
                let Some(pos) = bulk(p.clone()).and_then(|p| parse_pos(&p)) else {
                    continue;
                };
                let owner = id.owner(shards);
                let m = self.record(true, id, msg, pos, tag);
                c.mesh.push(owner, vec![m]);
            }
        }
    }

    /// A numbered record came back: the owner of its id delivers it at its position (and
    /// completes the publish's reply if this node published it).
    pub(super) fn record(&mut self, mine: bool, id: Id, msg: Bytes, pos: Pos, tag: u64) -> Msg {
        let reply = if mine {
            self.outstanding.remove(&tag).unwrap_or(ReplyTo::NOBODY)
        } else {
            ReplyTo::NOBODY
        };
        Msg::RemoteAt {
            id,
            msg,
            pos,
            reply,
        }
    }

    /// The session ended: every publish still waiting is refused (`503`).
    pub(super) fn fail_all(&mut self, c: &Cluster) {
        for (_, to) in self.outstanding.drain() {
            let m = Msg::PublishFailed {
                token: to.token,
                sent: true,
            };
            c.mesh.push(usize::from(to.shard), vec![m]);
        }
    }

    /// Answers `fetches` (popped by the caller after the buckets they need were subscribed):
    /// one `EVALSHA` of the read script each, pipelined. On an error every one is answered
    /// `unavailable` and the error returned.
    pub(super) async fn answer(
        &self,
        c: &Cluster,
        publ: &mut Conn,
        fetches: Vec<Fetch>,
    ) -> Result<(), String> {
        let mut pipe = redis::pipe();
        for f in &fetches {
            let (ek, sk) = c.history_keys(&f.id);
            pipe.cmd("EVALSHA")
                .arg(&self.read_sha)
                .arg(2)
                .arg(ek)
                .arg(sk)
                .arg(history::read_after(f.start))
                .arg(history::new_epoch().to_vec())
                .arg(c.config().history_ttl_ms);
        }
        let answers = pipe.query_async::<Vec<Value>>(publ).await;
        let err = answers.as_ref().err().map(|e| format!("history read: {e}"));
        let mut answers = answers.unwrap_or_default().into_iter();
        for f in fetches {
            let verdict = match answers.next().and_then(parse_read) {
                Some((cur, now, entries)) => {
                    history::verdict(f.start, cur, now, c.config().history_ttl_ms, entries)
                }
                None => Err((Reason::Unavailable, Pos::default())),
            };
            let m = Msg::Replayed {
                conn: f.conn,
                token: f.token,
                k: f.k,
                verdict,
            };
            c.mesh.push(usize::from(f.from), vec![m]);
        }
        err.map_or(Ok(()), Err)
    }
}

/// Fails resume reads that cannot be answered (Redis down): each gets `unavailable`.
pub(super) fn refuse(c: &Cluster, fetches: Vec<Fetch>) {
    for f in fetches {
        let m = Msg::Replayed {
            conn: f.conn,
            token: f.token,
            k: f.k,
            verdict: Err((Reason::Unavailable, Pos::default())),
        };
        c.mesh.push(usize::from(f.from), vec![m]);
    }
}

/// The read script's answer: the position, Redis' clock (ms) and the entries.
fn parse_read(v: Value) -> Option<(Pos, u64, Vec<Entry>)> {
    let Value::Array(parts) = v else {
        return None;
    };
    let [cur, now, first, elements]: [Value; 4] = parts.try_into().ok()?;
    let cur = history::parse_epoch_value(&bulk(cur)?)?;
    let number = |v: Value| -> Option<u64> { std::str::from_utf8(&bulk(v)?).ok()?.parse().ok() };
    let (now, first) = (number(now)?, number(first)?);
    let Value::Array(elements) = elements else {
        return None;
    };
    let entries = elements
        .into_iter()
        .zip(first..)
        .map(|(e, o)| history::parse_element(o, bulk(e)?));
    Some((cur, now, entries.collect::<Option<Vec<_>>>()?))
}

/// A returned position: 16 bytes, epoch and offset big-endian.
fn parse_pos(p: &[u8]) -> Option<Pos> {
    let word = |i: usize| Some(u64::from_be_bytes(p.get(i..i + 8)?.try_into().ok()?));
    Some(Pos {
        epoch: word(0)?,
        offset: word(8)?,
    })
}

fn bulk(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}
