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

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::core::{CoreGuard, CoreLock, Event, JoinFuture, PeerInfo, PeerSink, RoomStats, Rooms};
use super::protocol::{HubError, PeerId, RoomName, json_string};

/// How often a node refreshes its alive key and looks for dead nodes.
pub const BEAT: Duration = Duration::from_secs(1);
/// A node silent this long is dead: its peers leave their rooms.
pub const ALIVE_TTL: Duration = Duration::from_secs(4);
/// Longest wait for Redis on a join before this process decides alone.
const JOIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Connection and response timeout of the command connection.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Writes sent in one pipeline.
const PIPELINE_OPS: usize = 256;
/// Writes queued while Redis is unreachable before the oldest are dropped.
const MAX_QUEUED_OPS: usize = 100_000;
/// Key prefix.
const PREFIX: &str = "rtcdev:";

/// Lua shared by the scripts: `tell(room_key, skip_node, msg)` publishes `msg` to every
/// node with a peer in the room except `skip_node`.
const LUA_TELL: &str = r#"
local prefix = 'rtcdev:'
local function tell(rkey, skip, msg)
  local seen = {}
  for _, v in ipairs(redis.call('HVALS', rkey)) do
    local n = string.match(v, '"node":"([^"]*)"')
    if n and n ~= skip and not seen[n] then
      seen[n] = true
      redis.call('PUBLISH', prefix .. 'node:' .. n, msg)
    end
  end
end
local function leave(node, room, id)
  local rkey = prefix .. 'room:' .. room
  if redis.call('HDEL', rkey, id) == 1 then
    tell(rkey, node, '{"k":"l","r":"' .. room .. '","id":"' .. id .. '"}')
  end
end
"#;

/// KEYS: room hash, node's peers hash, seq counter. ARGV: id, node, meta JSON, max,
/// room, old room or "". Returns {0} when full, else {1, HGETALL room}.
const LUA_JOIN: &str = r#"
local rkey, mine, seqkey = KEYS[1], KEYS[2], KEYS[3]
local id, node, meta, max, room, old = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
if redis.call('HEXISTS', rkey, id) == 0 and redis.call('HLEN', rkey) >= max then
  return {0}
end
if old ~= '' then leave(node, old, id) end
local seq = redis.call('INCR', seqkey)
local entry = '{"node":"' .. node .. '","seq":' .. seq .. ',"meta":' .. meta .. '}'
redis.call('HSET', rkey, id, entry)
redis.call('HSET', mine, id, room)
tell(rkey, node, '{"k":"j","r":"' .. room .. '","id":"' .. id .. '","e":' .. entry .. '}')
return {1, redis.call('HGETALL', rkey)}
"#;

/// KEYS: node's peers hash. ARGV: id, node, room.
const LUA_LEAVE: &str = r#"
redis.call('HDEL', KEYS[1], ARGV[1])
leave(ARGV[2], ARGV[3], ARGV[1])
return 1
"#;

/// Puts a peer back after Redis lost it (restart). KEYS: room hash, node's peers hash.
/// ARGV: id, node, room, entry JSON.
const LUA_REGISTER: &str = r#"
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[4]) == 1 then
  tell(KEYS[1], ARGV[2], '{"k":"j","r":"' .. ARGV[3] .. '","id":"' .. ARGV[1] .. '","e":' .. ARGV[4] .. '}')
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
"#;

/// Removes a dead node once. KEYS: its alive key, its peers hash, the nodes set.
/// ARGV: the node. Returns the number of peers dropped, or -1 if it is alive.
const LUA_REAP: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local peers = redis.call('HGETALL', KEYS[2])
for i = 1, #peers, 2 do leave(ARGV[1], peers[i + 1], peers[i]) end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
return #peers / 2
"#;

/// The scripts, built (and hashed) once.
static JOIN: LazyLock<redis::Script> = LazyLock::new(|| script(LUA_JOIN));
static REGISTER: LazyLock<redis::Script> = LazyLock::new(|| script(LUA_REGISTER));
static REAP: LazyLock<redis::Script> = LazyLock::new(|| script(LUA_REAP));
/// The leave script's source: it goes into pipelines as EVAL.
static LEAVE_SRC: LazyLock<String> = LazyLock::new(|| format!("{LUA_TELL}{LUA_LEAVE}"));

fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{LUA_TELL}{body}"))
}

/// Takes `id` (a peer of `node`) out of `room`, telling the room's other processes.
fn leave_cmd(node: &str, id: &str, room: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(LEAVE_SRC.as_str())
        .arg(1)
        .arg(peers_key(node))
        .arg(id)
        .arg(node)
        .arg(room);
    cmd
}

/// Removes `node` from Redis unless its alive key exists: its peers leave their rooms.
/// The number of peers dropped, or -1 if the node is alive.
async fn reap_node(con: &mut ConnectionManager, node: &str) -> redis::RedisResult<i64> {
    REAP.key(alive_key(node))
        .key(peers_key(node))
        .key(NODES_KEY)
        .arg(node)
        .invoke_async(con)
        .await
}

fn room_key(room: &str) -> String {
    format!("{PREFIX}room:{room}")
}

fn peers_key(node: &str) -> String {
    format!("{PREFIX}peers:{node}")
}

fn alive_key(node: &str) -> String {
    format!("{PREFIX}alive:{node}")
}

fn channel(node: &str) -> String {
    format!("{PREFIX}node:{node}")
}

const NODES_KEY: &str = "rtcdev:nodes";
const SEQ_KEY: &str = "rtcdev:seq";

/// The URL without its password, for logs and `/healthz`.
pub fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// A member of a replicated room.
#[derive(Clone)]
struct Member {
    id: PeerId,
    node: Arc<str>,
    seq: u64,
    meta: Arc<Value>,
}

/// A room as this node sees it (only rooms its own peers are in).
#[derive(Default)]
struct Replica {
    /// Oldest first.
    members: Vec<Member>,
}

impl Replica {
    /// Adds a member unless present; true if it was new.
    fn insert(&mut self, m: Member) -> bool {
        if self.members.iter().any(|x| x.id == m.id) {
            return false;
        }
        let at = self.members.partition_point(|x| x.seq <= m.seq);
        self.members.insert(at, m);
        true
    }

    fn remove(&mut self, id: &str) -> Option<Member> {
        let at = self.members.iter().position(|m| m.id.as_str() == id)?;
        Some(self.members.remove(at))
    }

    fn get(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id.as_str() == id)
    }
}

struct LocalPeer {
    sink: Arc<dyn PeerSink>,
    room: Option<RoomName>,
    seq: u64,
    meta: Arc<Value>,
}

#[derive(Default)]
struct Local {
    peers: HashMap<PeerId, LocalPeer>,
    rooms: HashMap<RoomName, Replica>,
    /// When each remote node that shares a room with us was last seen alive.
    seen: HashMap<Arc<str>, Instant>,
}

impl Local {
    /// Delivers to this node's members of `room`, except `skip`.
    fn tell_local(&self, node: &str, room: &RoomName, skip: Option<&str>, event: &Event) -> u64 {
        let Some(r) = self.rooms.get(room) else {
            return 0;
        };
        let mut n = 0;
        for m in r.members.iter().filter(|m| &*m.node == node) {
            if Some(m.id.as_str()) == skip {
                continue;
            }
            if let Some(p) = self.peers.get(&m.id) {
                p.sink.deliver(event);
                n += 1;
            }
        }
        n
    }

    /// Adds a member to a replica and tells the local peers if it is new.
    fn add_member(&mut self, node: &str, room: &RoomName, m: Member) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let event = Event::PeerJoined {
            id: m.id.clone(),
            meta: m.meta.clone(),
        };
        let id = m.id.clone();
        if r.insert(m) {
            self.tell_local(node, room, Some(id.as_str()), &event);
        }
    }

    /// Removes a member from a replica and tells the local peers if it was there.
    fn remove_member(&mut self, node: &str, room: &RoomName, id: &str) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        if let Some(m) = r.remove(id) {
            self.tell_local(node, room, None, &Event::PeerLeft { id: m.id });
        }
        if self
            .rooms
            .get(room)
            .is_some_and(|r| !r.members.iter().any(|m| &*m.node == node))
        {
            self.rooms.remove(room);
        }
    }

    /// Takes a local peer out of its room here; returns the room.
    fn leave_local(&mut self, node: &str, id: &PeerId) -> Option<RoomName> {
        let room = self.peers.get_mut(id)?.room.take()?;
        self.remove_member(node, &room, id.as_str());
        Some(room)
    }

    fn remote_nodes(&self, node: &str, room: &RoomName) -> BTreeSet<Arc<str>> {
        self.rooms
            .get(room)
            .map(|r| {
                r.members
                    .iter()
                    .filter(|m| &*m.node != node)
                    .map(|m| m.node.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A write for the writer task, in the order the node made it.
enum Op {
    Join {
        id: PeerId,
        room: RoomName,
        old: Option<RoomName>,
        meta: String,
        /// `None`: Redis did not answer.
        reply: oneshot::Sender<Option<Vec<(String, String)>>>,
    },
    Leave {
        id: PeerId,
        room: RoomName,
    },
    Publish {
        node: Arc<str>,
        payload: String,
    },
    /// Redis is back: register our peers again (`lost`: Redis forgot them) and
    /// reconcile the replicas.
    Resync {
        lost: bool,
    },
}

/// A notification on a node's channel.
#[derive(Deserialize)]
struct Wire<'a> {
    k: &'a str,
    r: &'a str,
    #[serde(default)]
    id: Option<&'a str>,
    #[serde(default, borrow)]
    e: Option<&'a RawValue>,
    #[serde(default)]
    f: Option<&'a str>,
    #[serde(default)]
    t: Option<&'a str>,
    #[serde(default, borrow)]
    d: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Entry {
    node: String,
    seq: u64,
    meta: Arc<Value>,
}

struct Inner {
    node: Arc<str>,
    url: String,
    max_peers_per_room: usize,
    local: CoreLock<Local>,
    relayed: AtomicU64,
    ops: mpsc::UnboundedSender<Op>,
    queued: AtomicU64,
    subscribed: AtomicBool,
    commands_ok: AtomicBool,
    cancel: CancellationToken,
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

    fn push(&self, op: Op) {
        if self.queued.load(Ordering::Relaxed) >= MAX_QUEUED_OPS as u64 {
            // Redis has been away long enough for a backlog: drop rather than grow.
            return;
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        let _ = self.ops.send(op);
    }

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

    /// A notification from another node.
    fn on_message(&self, payload: &str) {
        let Ok(w) = serde_json::from_str::<Wire>(payload) else {
            tracing::debug!(%payload, "ignoring a malformed notification");
            return;
        };
        let Ok(room) = RoomName::parse(w.r) else {
            return;
        };
        let node = &*self.node;
        let mut local = self.lock();
        match w.k {
            "j" => {
                let (Some(id), Some(e)) = (w.id, w.e) else {
                    return;
                };
                let Ok(e) = serde_json::from_str::<Entry>(e.get()) else {
                    return;
                };
                let m = Member {
                    id: PeerId::from_string(id.to_string()),
                    node: e.node.into(),
                    seq: e.seq,
                    meta: e.meta,
                };
                local.add_member(node, &room, m);
            }
            "l" => {
                let Some(id) = w.id else { return };
                // Only remote members: our own peers leave through us.
                if local
                    .rooms
                    .get(&room)
                    .and_then(|r| r.get(id))
                    .is_some_and(|m| &*m.node != node)
                {
                    local.remove_member(node, &room, id);
                }
            }
            "s" => {
                let (Some(from), Some(d)) = (w.f, w.d) else {
                    return;
                };
                let event = Event::Signal {
                    from: PeerId::from_string(from.to_string()),
                    data: d.get().into(),
                };
                let n = match w.t {
                    Some(to) => {
                        let is_local_member = local
                            .rooms
                            .get(&room)
                            .and_then(|r| r.get(to))
                            .is_some_and(|m| &*m.node == node);
                        match local.peers.get(&PeerId::from_string(to.to_string())) {
                            Some(p) if is_local_member => {
                                p.sink.deliver(&event);
                                1
                            }
                            _ => 0,
                        }
                    }
                    None => local.tell_local(node, &room, Some(from), &event),
                };
                self.relayed.fetch_add(n, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// Merges a membership snapshot (`HGETALL room`) into the replica; with `prune`,
    /// remote members missing from it are gone.
    fn merge_snapshot(
        &self,
        local: &mut Local,
        room: &RoomName,
        pairs: &[(String, String)],
        prune: bool,
    ) {
        let node = &*self.node;
        let mut present = BTreeSet::new();
        for (id, entry) in pairs {
            let Ok(e) = serde_json::from_str::<Entry>(entry) else {
                continue;
            };
            present.insert(id.clone());
            if e.node == node {
                continue;
            }
            let m = Member {
                id: PeerId::from_string(id.clone()),
                node: e.node.into(),
                seq: e.seq,
                meta: e.meta,
            };
            local.add_member(node, room, m);
        }
        if prune {
            let gone: Vec<String> = local
                .rooms
                .get(room)
                .map(|r| {
                    r.members
                        .iter()
                        .filter(|m| &*m.node != node && !present.contains(m.id.as_str()))
                        .map(|m| m.id.to_string())
                        .collect()
                })
                .unwrap_or_default();
            for id in gone {
                local.remove_member(node, room, &id);
            }
        }
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
        let payload = format!(
            r#"{{"k":"s","r":{},"f":{},"t":{},"d":{}}}"#,
            json_string(room.as_str()),
            json_string(from.as_str()),
            to.map(json_string).unwrap_or_else(|| "null".into()),
            data
        );
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
            let node = &*inner.node;
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
                    .and_then(|(_, e)| serde_json::from_str::<Entry>(e).ok())
                    .map_or(0, |e| e.seq),
                None => {
                    // Redis did not answer: decide with what this process knows.
                    let size = local.rooms.get(&room).map_or(0, |r| r.members.len());
                    let here = local
                        .rooms
                        .get(&room)
                        .is_some_and(|r| r.get(id.as_str()).is_some());
                    if !here && size >= inner.max_peers_per_room {
                        return Err(HubError::RoomFull(inner.max_peers_per_room));
                    }
                    tracing::debug!(peer = %id, "join decided without Redis");
                    u64::MAX / 2 + inner.local_seq.fetch_add(1, Ordering::Relaxed)
                }
            };
            local.leave_local(node, id);
            local.rooms.entry(room.clone()).or_default();
            if let Some(s) = &snapshot {
                inner.merge_snapshot(&mut local, &room, s, false);
            }
            let me = Member {
                id: id.clone(),
                node: inner.node.clone(),
                seq,
                meta: meta.clone(),
            };
            let event = Event::PeerJoined {
                id: id.clone(),
                meta: meta.clone(),
            };
            if let Some(r) = local.rooms.get_mut(&room) {
                r.insert(me);
            }
            local.tell_local(node, &room, Some(id.as_str()), &event);
            if let Some(p) = local.peers.get_mut(id) {
                p.room = Some(room.clone());
                p.seq = seq;
                p.meta = meta;
            }
            let others: Vec<PeerInfo> = local
                .rooms
                .get(&room)
                .map(|r| {
                    r.members
                        .iter()
                        .filter(|m| m.id != *id)
                        .map(|m| PeerInfo {
                            id: m.id.clone(),
                            meta: m.meta.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let others = Arc::new(others);
            if let Some(p) = local.peers.get(id) {
                p.sink.deliver(&Event::Joined {
                    id: id.clone(),
                    room: room.clone(),
                    peers: others.clone(),
                });
            }
            Ok(Arc::unwrap_or_clone(others))
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

    fn signal(&self, from: &PeerId, to: Option<&str>, data: Arc<str>) -> Result<(), HubError> {
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

/// Refreshes this node's alive key; true if Redis had lost it (restart, or we were
/// silent past the TTL).
async fn beat(inner: &Inner, con: &mut ConnectionManager) -> Option<bool> {
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
async fn heartbeat(inner: Arc<Inner>, mut con: ConnectionManager) {
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
async fn subscriber(
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
async fn writer(
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

/// `{0}` (full) becomes an empty list; `{1, HGETALL}` the member pairs.
fn parse_join(v: Vec<redis::Value>) -> redis::RedisResult<Vec<(String, String)>> {
    let mut it = v.into_iter();
    let ok: i64 = match it.next() {
        Some(v) => redis::from_redis_value(v)?,
        None => 0,
    };
    if ok == 0 {
        return Ok(Vec::new());
    }
    let pairs: Vec<String> = match it.next() {
        Some(v) => redis::from_redis_value(v)?,
        None => Vec::new(),
    };
    Ok(pairs
        .chunks_exact(2)
        .map(|c| (c[0].clone(), c[1].clone()))
        .collect())
}

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
                let entry = format!(r#"{{"node":"{node}","seq":{},"meta":{}}}"#, p.seq, p.meta);
                Some((id.clone(), room, entry))
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
        inner.merge_snapshot(&mut local, &room, &pairs, !lost);
    }
    tracing::info!(peers = mine.len(), lost, "rooms resynchronised with Redis");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, seq: u64) -> Member {
        Member {
            id: PeerId::from_string(id.into()),
            node: "n".into(),
            seq,
            meta: Arc::new(Value::Null),
        }
    }

    #[test]
    fn replicas_keep_join_order_and_ignore_repeats() {
        let mut r = Replica::default();
        assert!(r.insert(member("b", 5)));
        assert!(r.insert(member("a", 2)));
        assert!(r.insert(member("c", 9)));
        // A notification that arrives twice (snapshot, then event) changes nothing.
        assert!(!r.insert(member("a", 2)));
        let ids: Vec<&str> = r.members.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(r.remove("b").map(|m| m.seq), Some(5));
        assert!(r.remove("b").is_none());
    }

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(
            redacted("redis://:s3cret@10.0.0.5:6379/2"),
            "redis://***@10.0.0.5:6379/2"
        );
        assert_eq!(redacted("redis://user:pw@h:1"), "redis://***@h:1");
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn join_replies_parse() {
        use redis::Value as V;
        assert!(parse_join(vec![V::Int(0)]).unwrap().is_empty());
        let pairs = parse_join(vec![
            V::Int(1),
            V::Array(vec![
                V::BulkString(b"p1".to_vec()),
                V::BulkString(br#"{"node":"n","seq":1,"meta":{}}"#.to_vec()),
            ]),
        ])
        .unwrap();
        assert_eq!(pairs.len(), 1);
        assert_eq!(pairs[0].0, "p1");
    }
}
