//! The background tasks: writer, channel subscriber, heartbeat and reaping, resync.
//!
//! The writer applies this node's writes ([`Op`]) in the order it made them, pipelining
//! runs of them; the subscriber applies other nodes' messages to the replicas; the
//! heartbeat keeps this node alive in Redis and reaps dead ones; after Redis comes
//! back, the writer resyncs. Each takes the room core's lock only between awaits.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};

use super::scripts::{
    Entry, JOIN, Message, NODES_KEY, REGISTER, SEQ_KEY, alive_key, channel, leave_cmd, parse_join,
    peers_key, reap_node, room_key,
};
use super::{ALIVE_TTL, BACKOFF_MAX, BACKOFF_MIN, BEAT, Inner, REDIS_TIMEOUT};
use crate::hub::protocol::{PeerId, RoomName};

/// Writes sent in one pipeline.
const PIPELINE_OPS: usize = 256;

/// A write for the writer task, in the order the node made it.
pub(super) enum Op {
    /// Moves a local peer into a room (out of `old`) through the join script.
    Join {
        /// The peer.
        id: PeerId,
        /// The room it joins.
        room: RoomName,
        /// The room it leaves, if any.
        old: Option<RoomName>,
        /// Its metadata, JSON.
        meta: String,
        /// The script's answer, the room's members (empty: full). `None`: Redis did not
        /// answer.
        reply: oneshot::Sender<Option<Vec<(String, String)>>>,
    },
    /// Takes a local peer out of its room.
    Leave {
        /// The peer.
        id: PeerId,
        /// Its room.
        room: RoomName,
    },
    /// Publishes a [`Message`] on a node's channel.
    Publish {
        /// The node.
        node: Arc<str>,
        /// The message, JSON.
        payload: String,
    },
    /// Redis is back: register our peers again (`lost`: Redis forgot them) and
    /// reconcile the replicas.
    Resync {
        /// Whether Redis lost this node's keys.
        lost: bool,
    },
}

impl Inner {
    /// Notes whether the last command reached Redis, logging (and resyncing on) changes.
    fn set_commands_ok(&self, ok: bool, err: Option<&redis::RedisError>) {
        let was = self.commands_ok.swap(ok, Ordering::AcqRel);
        match (was, ok) {
            (true, false) => tracing::warn!(
                redis = %self.url,
                error = %err.map(ToString::to_string).unwrap_or_default(),
                "Redis unreachable: serving this process's peers alone, retrying"
            ),
            (false, true) => {
                tracing::info!(redis = %self.url, "Redis reachable again");
                // Writes dropped while it was away (leaves, signals): reconcile.
                self.push(Op::Resync { lost: false });
            }
            _ => {}
        }
    }

    /// A message from another node.
    fn on_message(&self, payload: &str) {
        let message = match Message::parse(payload) {
            Ok(Some(message)) => message,
            Ok(None) => return,
            Err(_) => {
                tracing::debug!(%payload, "ignoring a malformed notification");
                return;
            }
        };
        let mut local = self.lock();
        let delivered = local.apply(&self.node, message);
        self.relayed.fetch_add(delivered, Ordering::Relaxed);
    }
}

/// Refreshes this node's alive key; true if Redis had lost it (restart, or we were
/// silent past the TTL).
pub(super) async fn beat(inner: &Inner, con: &mut ConnectionManager) -> Option<bool> {
    let node = &*inner.node;
    let mut pipe = redis::pipe();
    pipe.cmd("SET")
        .arg(alive_key(node))
        .arg(1)
        .arg("PX")
        .arg(ALIVE_TTL.as_millis() as u64)
        .arg("GET")
        .cmd("SADD")
        .arg(NODES_KEY)
        .arg(node)
        .ignore();
    match pipe.query_async::<(Option<String>,)>(con).await {
        Ok((prev,)) => {
            inner.set_commands_ok(true, None);
            Some(prev.is_none())
        }
        Err(e) => {
            inner.set_commands_ok(false, Some(&e));
            None
        }
    }
}

/// Heartbeat, dead-node reaping and replica pruning, every [`BEAT`].
pub(super) async fn heartbeat(inner: Arc<Inner>, mut con: ConnectionManager) {
    let mut tick = tokio::time::interval(BEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    let mut up_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(lost) = beat(&inner, &mut con).await else {
            up_since = None;
            continue;
        };
        let up = *up_since.get_or_insert_with(Instant::now);
        if lost && !first {
            inner.push(Op::Resync { lost: true });
        }
        first = false;
        reap(&inner, &mut con, up).await;
    }
}

/// Reaps nodes whose alive key expired and forgets, locally, remote members whose node
/// has not been seen alive for a while (a node that died while Redis was away).
async fn reap(inner: &Inner, con: &mut ConnectionManager, up_since: Instant) {
    let node = &*inner.node;
    let Ok(nodes) = redis::cmd("SMEMBERS")
        .arg(NODES_KEY)
        .query_async::<Vec<String>>(con)
        .await
    else {
        return;
    };
    let replica_nodes: BTreeSet<Arc<str>> = {
        let local = inner.lock();
        local
            .rooms
            .values()
            .flat_map(|r| r.members.iter().map(|m| m.node.clone()))
            .filter(|n| &**n != node)
            .collect()
    };
    let mut all: BTreeSet<Arc<str>> = nodes.iter().map(|n| Arc::from(n.as_str())).collect();
    all.extend(replica_nodes.iter().cloned());
    all.remove(node);
    if all.is_empty() {
        return;
    }
    let mut pipe = redis::pipe();
    for n in &all {
        pipe.cmd("EXISTS").arg(alive_key(n));
    }
    let Ok(alive) = pipe.query_async::<Vec<bool>>(con).await else {
        return;
    };
    let now = Instant::now();
    let mut dead_here = Vec::new();
    {
        let mut local = inner.lock();
        for (n, is_alive) in all.iter().zip(&alive) {
            if *is_alive {
                local.seen.insert(n.clone(), now);
            } else if replica_nodes.contains(n) {
                let seen = *local.seen.entry(n.clone()).or_insert(now);
                // Gone for twice the TTL while we were connected: it is dead even if
                // nobody could reap it in Redis.
                if now.duration_since(seen) > ALIVE_TTL * 2
                    && now.duration_since(up_since) > ALIVE_TTL * 2
                {
                    dead_here.push(n.clone());
                }
            }
        }
        local.seen.retain(|n, _| all.contains(n));
        for dead in &dead_here {
            let gone: Vec<(RoomName, String)> = local
                .rooms
                .iter()
                .flat_map(|(room, r)| {
                    r.members
                        .iter()
                        .filter(|m| &m.node == dead)
                        .map(|m| (room.clone(), m.id.to_string()))
                        .collect::<Vec<_>>()
                })
                .collect();
            for (room, id) in gone {
                local.remove_member(node, &room, &id);
            }
        }
    }
    for (n, is_alive) in all.iter().zip(alive) {
        if is_alive || !nodes.iter().any(|x| **x == **n) {
            continue;
        }
        if let Ok(count) = reap_node(con, n).await
            && count >= 0
        {
            tracing::info!(node = %n, peers = count, "hub process gone: its peers left their rooms");
        }
    }
}

/// Receives this node's channel; reconnects with backoff.
pub(super) async fn subscriber(
    inner: Arc<Inner>,
    client: redis::Client,
    mut ready: Option<oneshot::Sender<()>>,
) {
    let chan = channel(&inner.node);
    let mut backoff = BACKOFF_MIN;
    let mut connected_before = false;
    loop {
        let attempt = async {
            let mut ps = client.get_async_pubsub().await?;
            ps.subscribe(&chan).await?;
            redis::RedisResult::Ok(ps)
        };
        match tokio::time::timeout(REDIS_TIMEOUT, attempt).await {
            Ok(Ok(ps)) => {
                backoff = BACKOFF_MIN;
                inner.subscribed.store(true, Ordering::Release);
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
                if connected_before {
                    tracing::info!("Redis subscription back");
                    // Notifications may have been missed: reconcile.
                    inner.push(Op::Resync { lost: false });
                }
                connected_before = true;
                let mut stream = ps.into_on_message();
                loop {
                    tokio::select! {
                        _ = inner.cancel.cancelled() => return,
                        msg = stream.next() => match msg {
                            Some(msg) => {
                                if let Ok(payload) = msg.get_payload::<String>() {
                                    inner.on_message(&payload);
                                }
                            }
                            None => break,
                        }
                    }
                }
                inner.subscribed.store(false, Ordering::Release);
                tracing::warn!(
                    "Redis subscription lost: serving this process's peers alone, reconnecting"
                );
            }
            Ok(Err(e)) => tracing::debug!(%e, "Redis subscribe failed"),
            Err(_) => tracing::debug!("Redis subscribe timed out"),
        }
        tokio::select! {
            _ = inner.cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Applies the node's writes in order, pipelining runs of them.
pub(super) async fn writer(
    inner: Arc<Inner>,
    mut con: ConnectionManager,
    mut rx: mpsc::UnboundedReceiver<Op>,
) {
    let node = inner.node.clone();
    let mut batch = Vec::with_capacity(PIPELINE_OPS);
    loop {
        let first = tokio::select! {
            op = rx.recv() => op,
            _ = inner.cancel.cancelled() => {
                // Shutdown: what is queued still goes out.
                match rx.try_recv() {
                    Ok(op) => Some(op),
                    Err(_) => return,
                }
            }
        };
        let Some(first) = first else { return };
        batch.push(first);
        while batch.len() < PIPELINE_OPS {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        inner
            .queued
            .fetch_sub(batch.len() as u64, Ordering::Relaxed);
        let mut pipe = redis::pipe();
        let mut pending = 0usize;
        // While Redis is away, signals are dropped (late offers and candidates do more
        // harm than lost ones), leaves too (the resync on return removes them), and
        // joins are answered at once so the front-end decides locally.
        let up = inner.commands_ok.load(Ordering::Acquire);
        for op in batch.drain(..) {
            match op {
                Op::Publish { .. } | Op::Leave { .. } if !up => {}
                Op::Join { reply, .. } if !up => {
                    let _ = reply.send(None);
                }
                Op::Publish { node: to, payload } => {
                    pipe.cmd("PUBLISH").arg(channel(&to)).arg(payload).ignore();
                    pending += 1;
                }
                Op::Leave { id, room } => {
                    pipe.add_command(leave_cmd(&node, id.as_str(), room.as_str()))
                        .ignore();
                    pending += 1;
                }
                Op::Join {
                    id,
                    room,
                    old,
                    meta,
                    reply,
                } => {
                    flush(&inner, &mut con, &mut pipe, &mut pending).await;
                    let r: redis::RedisResult<Vec<redis::Value>> = JOIN
                        .key(room_key(room.as_str()))
                        .key(peers_key(&node))
                        .key(SEQ_KEY)
                        .arg(id.as_str())
                        .arg(&*node)
                        .arg(&meta)
                        .arg(inner.max_peers_per_room)
                        .arg(room.as_str())
                        .arg(old.as_ref().map_or("", |r| r.as_str()))
                        .invoke_async(&mut con)
                        .await;
                    let r = r.and_then(parse_join);
                    match &r {
                        Ok(_) => inner.set_commands_ok(true, None),
                        Err(e) => inner.set_commands_ok(false, Some(e)),
                    }
                    let _ = reply.send(r.ok());
                }
                Op::Resync { lost } => {
                    flush(&inner, &mut con, &mut pipe, &mut pending).await;
                    resync(&inner, &mut con, lost).await;
                }
            }
        }
        flush(&inner, &mut con, &mut pipe, &mut pending).await;
    }
}

/// Sends the pipelined writes, if any, and notes whether Redis answered.
async fn flush(
    inner: &Inner,
    con: &mut ConnectionManager,
    pipe: &mut redis::Pipeline,
    pending: &mut usize,
) {
    if *pending == 0 {
        return;
    }
    match pipe.query_async::<()>(con).await {
        Ok(()) => inner.set_commands_ok(true, None),
        Err(e) => inner.set_commands_ok(false, Some(&e)),
    }
    pipe.clear();
    *pending = 0;
}

/// After Redis came back: register this node's peers again if Redis lost them, then
/// bring each replica in line with Redis.
async fn resync(inner: &Inner, con: &mut ConnectionManager, lost: bool) {
    let node = &*inner.node;
    let mine: Vec<(PeerId, RoomName, String)> = {
        let local = inner.lock();
        local
            .peers
            .iter()
            .filter_map(|(id, p)| {
                let room = p.room.clone()?;
                let entry = Entry {
                    node: node.to_string(),
                    seq: p.seq,
                    meta: p.meta.clone(),
                };
                // A string, a number and JSON: writing them cannot fail.
                Some((id.clone(), room, entry.to_json().ok()?))
            })
            .collect()
    };
    // Entries of ours that Redis still has but we no longer do (leaves dropped while
    // Redis was away): remove them, telling the rooms.
    let Ok(listed) = redis::cmd("HGETALL")
        .arg(peers_key(node))
        .query_async::<Vec<(String, String)>>(con)
        .await
    else {
        return;
    };
    for (id, room) in listed {
        let current = mine
            .iter()
            .any(|(p, r, _)| p.as_str() == id && r.as_str() == room);
        if !current {
            let _: redis::RedisResult<i64> = leave_cmd(node, &id, &room).query_async(con).await;
        }
    }
    for (id, room, entry) in &mine {
        let r: redis::RedisResult<i64> = REGISTER
            .key(room_key(room.as_str()))
            .key(peers_key(node))
            .arg(id.as_str())
            .arg(node)
            .arg(room.as_str())
            .arg(entry)
            .invoke_async(con)
            .await;
        if let Err(e) = r {
            inner.set_commands_ok(false, Some(&e));
            return;
        }
    }
    let rooms: Vec<RoomName> = inner.lock().rooms.keys().cloned().collect();
    for room in rooms {
        let Ok(pairs) = redis::cmd("HGETALL")
            .arg(room_key(room.as_str()))
            .query_async::<Vec<(String, String)>>(con)
            .await
        else {
            return;
        };
        let mut local = inner.lock();
        // After a loss, others are still registering again: add, do not prune.
        local.merge_snapshot(node, &room, &pairs, !lost);
    }
    tracing::info!(peers = mine.len(), lost, "rooms resynchronised with Redis");
}
