//! The room core shared across hub processes through Redis (`--redis URL`).
//!
//! Design: membership lives in Redis, delivery goes through **one pub/sub channel per
//! hub process** (node), not one per room.
//!
//! - `rtcdev:room:{room}` is a hash, peer id -> `{"node","seq","meta"}`: who is in the
//!   room, on which process, in join order. `rtcdev:peers:{node}` maps a node's peers to
//!   their rooms (for clean-up), `rtcdev:alive:{node}` is the node's heartbeat key (TTL
//!   [`ALIVE_TTL`]), `rtcdev:nodes` the set of nodes.
//! - Joins and leaves are Lua scripts: the room-size check, the membership change and
//!   the notification of every other node with peers in the room happen atomically, and
//!   the join returns the membership snapshot in the same step. So a node never needs
//!   to subscribe before it reads (no subscribe/snapshot race), and room limits hold
//!   across processes.
//! - Every node keeps a replica of the rooms its own peers are in (kept current by those
//!   notifications). A signal is checked against it (`to` must be in the sender's room)
//!   and published only to the nodes that hold recipients: to exactly one node for a
//!   `to` message, and to nobody when the whole room is local. Per-pair order holds
//!   because a node publishes through one connection in order and Redis delivers a
//!   channel's messages in order.
//! - Presence: each node refreshes its alive key every [`BEAT`]; a node whose key
//!   expired is reaped by whichever node sees it first (a script, so exactly once): its
//!   peers leave their rooms and the other nodes tell `peer-left`.
//! - Redis down: local peers keep being served (local delivery needs no Redis; joins
//!   fall back to this process's view), the connections retry with backoff, and on
//!   return the node registers its peers again and reconciles its replicas.
//!
//! Standalone Redis only (the scripts touch keys they compute).
//!
//! The parts: `scripts` (key names, the Lua scripts, the messages nodes publish to each
//! other), `replica` (this node's view of its rooms, pure data), `sync` (the background
//! tasks: writer, subscriber, heartbeat, resync). Here: [`RedisRooms`], the [`Rooms`]
//! the front-ends call.

mod replica;
mod scripts;
mod sync;

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use redis::aio::ConnectionManager;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use self::replica::{Local, LocalPeer};
use self::scripts::{Entry, Message, alive_key, reap_node};
use self::sync::{Op, beat, heartbeat, subscriber, writer};
use super::core::{CoreGuard, CoreLock, Event, JoinFuture, Payload, PeerSink, RoomStats, Rooms};
use super::protocol::{HubError, PeerId, RoomName};

/// How often a node refreshes its alive key and looks for dead nodes.
pub const BEAT: Duration = Duration::from_secs(1);
/// A node silent this long is dead: its peers leave their rooms.
pub const ALIVE_TTL: Duration = Duration::from_secs(4);
/// Longest wait for Redis on a join before this process decides alone.
const JOIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Connection and response timeout of the command connection.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Shortest reconnect backoff.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest reconnect backoff.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Writes queued while Redis is unreachable before new ones are dropped.
const MAX_QUEUED_OPS: usize = 100_000;
/// Join order of a peer placed while Redis did not answer: after any Redis hands out.
const LOCAL_SEQ_BASE: u64 = u64::MAX / 2;

/// The URL without its password, for logs and `/healthz`: neither the user and
/// password before `@` nor a `pass`/`password` in the query (where `redis+unix://` URLs
/// carry it). A URL that does not parse is shown by its scheme alone.
pub fn redacted(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        let scheme = url.split_once("://").map_or("", |(s, _)| s);
        return format!("{scheme}://(a URL that does not parse)");
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        let _ = parsed.set_password(None);
        let _ = parsed.set_username("***");
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let secret = k.eq_ignore_ascii_case("pass") || k.eq_ignore_ascii_case("password");
                let v = if secret { "***".into() } else { v.into_owned() };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.into()
}

/// What [`RedisRooms`] shares with its background tasks.
struct Inner {
    /// This process's node id.
    node: Arc<str>,
    /// The Redis URL, without password.
    url: String,
    /// Room size limit (the join script enforces it across processes).
    max_peers_per_room: usize,
    /// The replica and the local peers: the room core's lock.
    local: CoreLock<Local>,
    /// Signals delivered by this process.
    relayed: AtomicU64,
    /// The writer task's queue.
    ops: mpsc::UnboundedSender<Op>,
    /// Writes in that queue.
    queued: AtomicU64,
    /// Whether the subscriber is on this node's channel.
    subscribed: AtomicBool,
    /// Whether the last command reached Redis.
    commands_ok: AtomicBool,
    /// Stops the background tasks (at close).
    cancel: CancellationToken,
    /// Join order of the joins decided without Redis.
    local_seq: AtomicU64,
}

/// Rooms shared with other hub processes through Redis.
pub struct RedisRooms {
    inner: Arc<Inner>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    con: ConnectionManager,
}

impl RedisRooms {
    /// Connects to Redis (failing clearly if it cannot be reached now) and starts the
    /// subscriber, writer and heartbeat tasks.
    pub async fn connect(url: &str, max_peers_per_room: usize) -> anyhow::Result<Self> {
        let shown = redacted(url);
        let client = redis::Client::open(url).with_context(|| {
            format!("--redis {shown} is not a Redis URL (redis://HOST:PORT[/DB])")
        })?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1)
            .set_min_delay(BACKOFF_MIN)
            .set_max_delay(BACKOFF_MAX);
        let mut con = tokio::time::timeout(
            REDIS_TIMEOUT * 2,
            client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| {
            format!("cannot reach Redis at {shown}: start redis-server there or fix --redis")
        })?;
        let _: String = redis::cmd("PING")
            .query_async(&mut con)
            .await
            .with_context(|| format!("Redis at {shown} does not answer PING"))?;

        let node: Arc<str> = {
            let bytes: [u8; 8] = rand::random();
            bytes
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .into()
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            node: node.clone(),
            url: shown.clone(),
            max_peers_per_room: max_peers_per_room.max(1),
            local: CoreLock::new(Local::default()),
            relayed: AtomicU64::new(0),
            ops: tx,
            queued: AtomicU64::new(0),
            subscribed: AtomicBool::new(false),
            commands_ok: AtomicBool::new(true),
            cancel: CancellationToken::new(),
            local_seq: AtomicU64::new(0),
        });
        // Announce ourselves before anyone can join through us.
        beat(&inner, &mut con).await;
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(subscriber(inner.clone(), client, Some(ready_tx)));
        // The first subscription must be in place before peers can join here.
        let _ = tokio::time::timeout(REDIS_TIMEOUT * 2, ready_rx).await;
        let writer = tokio::spawn(writer(inner.clone(), con.clone(), rx));
        tokio::spawn(heartbeat(inner.clone(), con.clone()));
        tracing::info!(node = %node, redis = %shown, "rooms shared through Redis");
        Ok(RedisRooms {
            inner,
            writer: Mutex::new(Some(writer)),
            con,
        })
    }

    /// This process's node id.
    pub fn node(&self) -> &str {
        &self.inner.node
    }
}

impl Inner {
    fn lock(&self) -> CoreGuard<'_, Local> {
        self.local.lock()
    }

    /// Queues a write for the writer task (dropped if the queue is full).
    fn push(&self, op: Op) {
        if self.queued.load(Ordering::Relaxed) >= MAX_QUEUED_OPS as u64 {
            // Redis has been away long enough for a backlog: drop rather than grow.
            return;
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        let _ = self.ops.send(op);
    }

    /// Publishes a signal to the nodes that hold its recipients.
    fn publish_signal(
        &self,
        nodes: BTreeSet<Arc<str>>,
        room: &RoomName,
        from: &PeerId,
        to: Option<&str>,
        data: &str,
    ) {
        if nodes.is_empty() {
            return;
        }
        // `data` is JSON the front-end checked; it goes out as is.
        let Ok(data) = serde_json::from_str::<&RawValue>(data) else {
            tracing::debug!("not publishing a signal whose data is not JSON");
            return;
        };
        let message = Message::Signal {
            room: room.clone(),
            from: from.as_str(),
            to,
            data,
        };
        // Strings and JSON text: writing them cannot fail.
        let Ok(payload) = message.to_json() else {
            return;
        };
        for node in nodes {
            self.push(Op::Publish {
                node,
                payload: payload.clone(),
            });
        }
    }
}

impl Rooms for RedisRooms {
    fn connect(&self, id: PeerId, sink: Arc<dyn PeerSink>) {
        self.inner.lock().peers.insert(
            id,
            LocalPeer {
                sink,
                room: None,
                seq: 0,
                meta: Arc::new(Value::Object(Default::default())),
            },
        );
    }

    fn join<'a>(&'a self, id: &'a PeerId, room: RoomName, meta: Arc<Value>) -> JoinFuture<'a> {
        Box::pin(async move {
            let inner = &self.inner;
            let old = {
                let local = inner.lock();
                let Some(p) = local.peers.get(id) else {
                    return Err(HubError::BadRequest("unknown connection".into()));
                };
                p.room.clone()
            };
            let (reply, answer) = oneshot::channel();
            inner.push(Op::Join {
                id: id.clone(),
                room: room.clone(),
                old: old.clone(),
                meta: meta.to_string(),
                reply,
            });
            let snapshot = match tokio::time::timeout(JOIN_TIMEOUT, answer).await {
                Ok(Ok(Some(s))) => Some(s),
                _ => None,
            };
            let mut local = inner.lock();
            if !local.peers.contains_key(id) {
                // Gone while we waited; its disconnect cleans up Redis.
                return Err(HubError::BadRequest("unknown connection".into()));
            }
            let seq = match &snapshot {
                // The script said the room is full.
                Some(s) if s.is_empty() => {
                    return Err(HubError::RoomFull(inner.max_peers_per_room));
                }
                Some(s) => s
                    .iter()
                    .find(|(pid, _)| pid == id.as_str())
                    .and_then(|(_, e)| Entry::parse(e))
                    .map_or(0, |e| e.seq),
                None => {
                    // Redis did not answer: decide with what this process knows.
                    if !local.has_room_for(&room, id, inner.max_peers_per_room) {
                        return Err(HubError::RoomFull(inner.max_peers_per_room));
                    }
                    tracing::debug!(peer = %id, "join decided without Redis");
                    LOCAL_SEQ_BASE + inner.local_seq.fetch_add(1, Ordering::Relaxed)
                }
            };
            Ok(local.enter(&inner.node, id, room, meta, seq, snapshot.as_deref()))
        })
    }

    fn leave(&self, id: &PeerId) -> Result<(), HubError> {
        let room = self.inner.lock().leave_local(&self.inner.node, id);
        let room = room.ok_or(HubError::NotInRoom)?;
        self.inner.push(Op::Leave {
            id: id.clone(),
            room,
        });
        Ok(())
    }

    fn signal(&self, from: &PeerId, to: Option<&str>, data: Payload) -> Result<(), HubError> {
        let inner = &self.inner;
        let node = &*inner.node;
        let local = inner.lock();
        let room = local
            .peers
            .get(from)
            .and_then(|p| p.room.clone())
            .ok_or(HubError::NotInRoom)?;
        let replica = local.rooms.get(&room).ok_or(HubError::NotInRoom)?;
        let event = Event::Signal {
            from: from.clone(),
            data: data.clone(),
        };
        match to {
            Some(to) => {
                let target = replica
                    .get(to)
                    .filter(|m| m.id != *from)
                    .ok_or_else(|| HubError::UnknownPeer(to.to_string()))?;
                if &*target.node == node {
                    if let Some(p) = local.peers.get(&target.id) {
                        p.sink.deliver(&event);
                        inner.relayed.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    let nodes = BTreeSet::from([target.node.clone()]);
                    inner.publish_signal(nodes, &room, from, Some(to), &data);
                }
            }
            None => {
                let n = local.tell_local(node, &room, Some(from.as_str()), &event);
                inner.relayed.fetch_add(n, Ordering::Relaxed);
                let nodes = local.remote_nodes(node, &room);
                inner.publish_signal(nodes, &room, from, None, &data);
            }
        }
        Ok(())
    }

    fn disconnect(&self, id: &PeerId) {
        let (room, _sink) = {
            let mut local = self.inner.lock();
            let room = local.leave_local(&self.inner.node, id);
            // The sink is dropped after the lock is released.
            (room, local.peers.remove(id))
        };
        if let Some(room) = room {
            self.inner.push(Op::Leave {
                id: id.clone(),
                room,
            });
        }
    }

    fn room_of(&self, id: &PeerId) -> Option<RoomName> {
        self.inner.lock().peers.get(id).and_then(|p| p.room.clone())
    }

    fn stats(&self) -> RoomStats {
        let local = self.inner.lock();
        RoomStats {
            rooms: local.rooms.len(),
            peers: local.peers.len(),
            messages_relayed: self.inner.relayed.load(Ordering::Relaxed),
        }
    }

    fn backend(&self) -> Option<Value> {
        let inner = &self.inner;
        let up =
            inner.subscribed.load(Ordering::Acquire) && inner.commands_ok.load(Ordering::Acquire);
        Some(serde_json::json!({
            "url": inner.url,
            "state": if up { "connected" } else { "disconnected" },
            "node": &*inner.node,
        }))
    }

    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let inner = &self.inner;
            // Every connection is closed by now, so every leave is queued: flush them,
            // then withdraw this node so others need not wait for its key to expire.
            inner.cancel.cancel();
            let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(w) = writer {
                let _ = tokio::time::timeout(REDIS_TIMEOUT, w).await;
            }
            let mut con = self.con.clone();
            let node = &*inner.node;
            let _ = tokio::time::timeout(REDIS_TIMEOUT, async {
                let _: redis::RedisResult<()> = redis::cmd("DEL")
                    .arg(alive_key(node))
                    .query_async(&mut con)
                    .await;
                let _ = reap_node(&mut con, node).await;
            })
            .await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redacted("redis://:s3cret@10.0.0.5:6379/2"),
            "redis://***@10.0.0.5:6379/2"
        );
        assert_eq!(redacted("redis://user:pw@h:1"), "redis://***@h:1");
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        // Unix-socket URLs carry the password in the query.
        assert_eq!(
            redacted("redis+unix:///run/redis.sock?db=2&pass=S3cret"),
            "redis+unix:///run/redis.sock?db=2&pass=***"
        );
        assert_eq!(
            redacted("unix:///run/redis.sock?user=u&password=S3cret"),
            "unix:///run/redis.sock?user=u&password=***"
        );
        assert_eq!(
            redacted("redis://:pw@h:1/0?protocol=resp3&PASS=x"),
            "redis://***@h:1/0?protocol=resp3&PASS=***"
        );
        // A password with a `?` in it is still cut.
        assert!(!redacted("redis://:s3?cr3t@h:1").contains("cr3t"));
        assert_eq!(
            redacted("redis://[pw"),
            "redis://(a URL that does not parse)"
        );
    }
}
