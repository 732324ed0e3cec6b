//! What hub processes share in Redis: key names, the Lua scripts, and the messages they publish.
//!
//! Everything another rtcdev process reads is defined here, once: the key prefix and key
//! names, the Lua that changes membership atomically, the record kept per room member
//! ([`Entry`]) and the messages published on a node's channel ([`Message`]). Joins and
//! leaves are published by the scripts (so they happen in the same step as the change);
//! their Lua writes exactly what [`Message::to_json`] writes, with the kind tags and key
//! prefixes handed to it from here.

use std::sync::{Arc, LazyLock};

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::hub::protocol::RoomName;

/// Expands to the prefix of every key and channel: a macro, so that `concat!` can build
/// the key names below from it at compile time.
macro_rules! key_prefix {
    () => {
        "rtcdev:"
    };
}

/// The set of node ids that registered (each node adds itself on every heartbeat).
pub(super) const NODES_KEY: &str = concat!(key_prefix!(), "nodes");
/// The counter that orders joins across processes (`seq` of an [`Entry`]).
pub(super) const SEQ_KEY: &str = concat!(key_prefix!(), "seq");
/// Before a room name: the room's hash, peer id -> [`Entry`] JSON.
const ROOM_PREFIX: &str = concat!(key_prefix!(), "room:");
/// Before a node id: the hash of the node's peers, peer id -> room.
const PEERS_PREFIX: &str = concat!(key_prefix!(), "peers:");
/// Before a node id: the node's heartbeat key, which expires when the node goes silent.
const ALIVE_PREFIX: &str = concat!(key_prefix!(), "alive:");
/// Before a node id: the pub/sub channel the node receives [`Message`]s on.
const CHANNEL_PREFIX: &str = concat!(key_prefix!(), "node:");

/// The key of `room`'s membership hash.
pub(super) fn room_key(room: &str) -> String {
    format!("{ROOM_PREFIX}{room}")
}

/// The key of the hash of `node`'s peers and their rooms (for clean-up).
pub(super) fn peers_key(node: &str) -> String {
    format!("{PEERS_PREFIX}{node}")
}

/// The key whose existence says `node` is alive.
pub(super) fn alive_key(node: &str) -> String {
    format!("{ALIVE_PREFIX}{node}")
}

/// The channel `node` subscribes to.
pub(super) fn channel(node: &str) -> String {
    format!("{CHANNEL_PREFIX}{node}")
}

/// Lua shared by the scripts, after [`PRELUDE`]'s constants: `join_msg` and `leave_msg`
/// write [`Message::Join`] and [`Message::Leave`]; `tell(room_key, skip_node, msg)`
/// publishes `msg` to every node with a peer in the room except `skip_node`;
/// `leave(node, room, id)` takes `id` out of `room` and tells the room's other nodes.
const LUA_SHARED: &str = r#"
local function join_msg(room, id, entry)
  return '{"k":"' .. KIND_JOIN .. '","r":"' .. room .. '","id":"' .. id .. '","e":' .. entry .. '}'
end
local function leave_msg(room, id)
  return '{"k":"' .. KIND_LEAVE .. '","r":"' .. room .. '","id":"' .. id .. '"}'
end
local function tell(rkey, skip, msg)
  local seen = {}
  for _, v in ipairs(redis.call('HVALS', rkey)) do
    local n = string.match(v, '"node":"([^"]*)"')
    if n and n ~= skip and not seen[n] then
      seen[n] = true
      redis.call('PUBLISH', CHANNEL_PREFIX .. n, msg)
    end
  end
end
local function leave(node, room, id)
  local rkey = ROOM_PREFIX .. room
  if redis.call('HDEL', rkey, id) == 1 then
    tell(rkey, node, leave_msg(room, id))
  end
end
"#;

/// KEYS: room hash, node's peers hash, seq counter. ARGV: id, node, meta JSON, max,
/// room, old room or "". Returns {0} when full, else {1, HGETALL room}. The entry it
/// stores is an [`Entry`].
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
tell(rkey, node, join_msg(room, id, entry))
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
  tell(KEYS[1], ARGV[2], join_msg(ARGV[3], ARGV[1], ARGV[4]))
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

/// The start of every script: the key prefixes and message kind tags the Lua needs,
/// taken from the Rust definitions above, then [`LUA_SHARED`].
static PRELUDE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "local ROOM_PREFIX, CHANNEL_PREFIX = '{ROOM_PREFIX}', '{CHANNEL_PREFIX}'\n\
         local KIND_JOIN, KIND_LEAVE = '{}', '{}'\n{LUA_SHARED}",
        Kind::Join.tag(),
        Kind::Leave.tag()
    )
});

/// The join script ([`LUA_JOIN`]), built (and hashed) once.
pub(super) static JOIN: LazyLock<redis::Script> = LazyLock::new(|| script(LUA_JOIN));
/// The script that registers a peer again after Redis lost it ([`LUA_REGISTER`]).
pub(super) static REGISTER: LazyLock<redis::Script> = LazyLock::new(|| script(LUA_REGISTER));
/// The script that removes a dead node ([`LUA_REAP`]).
static REAP: LazyLock<redis::Script> = LazyLock::new(|| script(LUA_REAP));
/// The leave script's source: it goes into pipelines as EVAL.
static LEAVE_SRC: LazyLock<String> = LazyLock::new(|| format!("{}{LUA_LEAVE}", PRELUDE.as_str()));

fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{}{body}", PRELUDE.as_str()))
}

/// Takes `id` (a peer of `node`) out of `room`, telling the room's other processes.
pub(super) fn leave_cmd(node: &str, id: &str, room: &str) -> redis::Cmd {
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
pub(super) async fn reap_node(con: &mut ConnectionManager, node: &str) -> redis::RedisResult<i64> {
    REAP.key(alive_key(node))
        .key(peers_key(node))
        .key(NODES_KEY)
        .arg(node)
        .invoke_async(con)
        .await
}

/// The join script's answer: `{0}` (full) becomes an empty list; `{1, HGETALL}` the
/// member pairs, peer id and [`Entry`] JSON.
pub(super) fn parse_join(v: Vec<redis::Value>) -> redis::RedisResult<Vec<(String, String)>> {
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

/// The kind of a [`Message`]: its `k` field on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Kind {
    /// A peer entered a room.
    #[serde(rename = "j")]
    Join,
    /// A peer left a room.
    #[serde(rename = "l")]
    Leave,
    /// A signal for the receiving node's peers.
    #[serde(rename = "s")]
    Signal,
    /// A kind this version does not know: read, then ignored.
    #[serde(other, skip_serializing)]
    Unknown,
}

impl Kind {
    /// The tag serde writes for this kind, for the Lua that writes messages itself.
    const fn tag(self) -> &'static str {
        match self {
            Kind::Join => "j",
            Kind::Leave => "l",
            Kind::Signal => "s",
            Kind::Unknown => "",
        }
    }
}

/// A [`Message`] as JSON: one flat object; the fields its kind does not use are absent.
#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    /// The kind.
    k: Kind,
    /// The room.
    r: &'a str,
    /// Join and leave: the peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    /// Join: the peer's [`Entry`].
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    e: Option<&'a RawValue>,
    /// Signal: the sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    f: Option<&'a str>,
    /// Signal: the recipient, `null` for the rest of the room. A signal always carries
    /// the field (`Some`); other kinds leave it out (`None`). Read back, `null` and
    /// absent are both `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<Option<&'a str>>,
    /// Signal: the data the sender sent, raw JSON.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    d: Option<&'a RawValue>,
}

impl<'a> Wire<'a> {
    /// A message of kind `k` about `room`, no other field set.
    fn bare(k: Kind, room: &'a RoomName) -> Self {
        Wire {
            k,
            r: room.as_str(),
            id: None,
            e: None,
            f: None,
            t: None,
            d: None,
        }
    }
}

/// What one hub process publishes on another's channel: the join and leave scripts
/// publish [`Message::Join`] and [`Message::Leave`], a node publishes
/// [`Message::Signal`] to the nodes holding a signal's recipients.
pub(super) enum Message<'a> {
    /// `id`, a peer of another node, entered `room`.
    Join {
        /// The room.
        room: RoomName,
        /// The peer.
        id: &'a str,
        /// Its [`Entry`], as the script stored it (parsed by whoever applies it).
        entry: &'a RawValue,
    },
    /// `id` left `room`.
    Leave {
        /// The room.
        room: RoomName,
        /// The peer.
        id: &'a str,
    },
    /// A signal from `from` in `room`, to `to` or to the rest of the room.
    Signal {
        /// The sender's room.
        room: RoomName,
        /// The sender.
        from: &'a str,
        /// The recipient; `None`: every member but the sender.
        to: Option<&'a str>,
        /// The sender's data, raw JSON.
        data: &'a RawValue,
    },
}

impl<'a> Message<'a> {
    /// Reads a message. `Err`: not a message at all (malformed JSON); `Ok(None)`: a
    /// message with nothing to act on (bad room name, a field its kind needs missing,
    /// a kind this version does not know).
    pub(super) fn parse(payload: &'a str) -> serde_json::Result<Option<Self>> {
        let w: Wire<'a> = serde_json::from_str(payload)?;
        let Ok(room) = RoomName::parse(w.r) else {
            return Ok(None);
        };
        Ok(match w.k {
            Kind::Join => match (w.id, w.e) {
                (Some(id), Some(entry)) => Some(Message::Join { room, id, entry }),
                _ => None,
            },
            Kind::Leave => w.id.map(|id| Message::Leave { room, id }),
            Kind::Signal => match (w.f, w.d) {
                (Some(from), Some(data)) => Some(Message::Signal {
                    room,
                    from,
                    to: w.t.flatten(),
                    data,
                }),
                _ => None,
            },
            Kind::Unknown => None,
        })
    }

    /// The message as published: `{"k":"j","r":ROOM,"id":ID,"e":ENTRY}`,
    /// `{"k":"l","r":ROOM,"id":ID}` or `{"k":"s","r":ROOM,"f":FROM,"t":TO|null,"d":DATA}`.
    pub(super) fn to_json(&self) -> serde_json::Result<String> {
        let wire = match self {
            Message::Join { room, id, entry } => Wire {
                id: Some(*id),
                e: Some(*entry),
                ..Wire::bare(Kind::Join, room)
            },
            Message::Leave { room, id } => Wire {
                id: Some(*id),
                ..Wire::bare(Kind::Leave, room)
            },
            Message::Signal {
                room,
                from,
                to,
                data,
            } => Wire {
                f: Some(*from),
                t: Some(*to),
                d: Some(*data),
                ..Wire::bare(Kind::Signal, room)
            },
        };
        serde_json::to_string(&wire)
    }
}

/// A room member's record: the value in the room's hash, and the `e` of a join message.
#[derive(Serialize, Deserialize)]
pub(super) struct Entry {
    /// The node (hub process) the peer is connected to.
    pub(super) node: String,
    /// The peer's place in join order across processes (from [`SEQ_KEY`]).
    pub(super) seq: u64,
    /// The peer's metadata.
    pub(super) meta: Arc<Value>,
}

impl Entry {
    /// Reads an entry; `None` if `text` is not one.
    pub(super) fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    /// The entry as stored: `{"node":NODE,"seq":SEQ,"meta":META}`.
    pub(super) fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::protocol::json_string;

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

    /// Other processes (older versions too) find the same keys.
    #[test]
    fn keys_keep_their_names() {
        assert_eq!(room_key("r1"), "rtcdev:room:r1");
        assert_eq!(peers_key("n1"), "rtcdev:peers:n1");
        assert_eq!(alive_key("n1"), "rtcdev:alive:n1");
        assert_eq!(channel("n1"), "rtcdev:node:n1");
        assert_eq!(NODES_KEY, "rtcdev:nodes");
        assert_eq!(SEQ_KEY, "rtcdev:seq");
        let head = "local ROOM_PREFIX, CHANNEL_PREFIX = 'rtcdev:room:', 'rtcdev:node:'\n\
                    local KIND_JOIN, KIND_LEAVE = 'j', 'l'\n";
        assert!(PRELUDE.starts_with(head));
    }

    /// The tags handed to the Lua are the ones serde writes and reads.
    #[test]
    fn kinds_match_their_tags() {
        for kind in [Kind::Join, Kind::Leave, Kind::Signal] {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.tag()));
            assert_eq!(serde_json::from_str::<Kind>(&json).unwrap(), kind);
        }
        let unknown: Kind = serde_json::from_str("\"x\"").unwrap();
        assert_eq!(unknown, Kind::Unknown);
        assert!(serde_json::to_string(&Kind::Unknown).is_err());
    }

    /// Each message reads back and is written again byte for byte: the shapes the Lua
    /// writes (join, leave) and the one the signal path wrote by hand before.
    #[test]
    fn messages_keep_their_wire_shape() {
        for text in [
            r#"{"k":"j","r":"room-1","id":"p1","e":{"node":"ab12","seq":7,"meta":{"n":"A"}}}"#,
            r#"{"k":"l","r":"room-1","id":"p1"}"#,
            r#"{"k":"s","r":"room-1","f":"p1","t":null,"d":{"sdp":"v=0"}}"#,
            r#"{"k":"s","r":"room-1","f":"p1","t":"p2","d":[1,"two"]}"#,
        ] {
            let message = Message::parse(text).unwrap().unwrap();
            assert_eq!(message.to_json().unwrap(), text);
        }
    }

    #[test]
    fn signals_are_written_as_before() {
        let data: &RawValue = serde_json::from_str(r#"{"candidate":"a \"b\""}"#).unwrap();
        for to in [None, Some("p2")] {
            let room = RoomName::parse("r.1").unwrap();
            let message = Message::Signal {
                room,
                from: "p1",
                to,
                data,
            };
            let before = format!(
                r#"{{"k":"s","r":{},"f":{},"t":{},"d":{}}}"#,
                json_string("r.1"),
                json_string("p1"),
                to.map(json_string).unwrap_or_else(|| "null".into()),
                data.get()
            );
            assert_eq!(message.to_json().unwrap(), before);
        }
    }

    #[test]
    fn entries_are_written_as_before() {
        let meta = serde_json::json!({"name": "Ann", "tags": [1, 2]});
        let entry = Entry {
            node: "ab12".into(),
            seq: 42,
            meta: Arc::new(meta.clone()),
        };
        let before = format!(r#"{{"node":"ab12","seq":42,"meta":{meta}}}"#);
        assert_eq!(entry.to_json().unwrap(), before);
        let back = Entry::parse(&before).unwrap();
        assert_eq!((back.node.as_str(), back.seq), ("ab12", 42));
        assert_eq!(*back.meta, meta);
    }

    #[test]
    fn what_cannot_be_acted_on_is_told_apart_from_garbage() {
        assert!(Message::parse("not json").is_err());
        for text in [
            r#"{"k":"j","r":"bad room","id":"p1","e":{}}"#,
            r#"{"k":"j","r":"r","id":"p1"}"#,
            r#"{"k":"l","r":"r"}"#,
            r#"{"k":"s","r":"r","f":"p1"}"#,
            r#"{"k":"zz","r":"r"}"#,
        ] {
            assert!(Message::parse(text).unwrap().is_none(), "{text}");
        }
    }
}
