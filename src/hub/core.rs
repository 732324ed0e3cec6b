//! The room core: who is in which room, and delivery to one peer or the rest of a room.
//! Transport-agnostic: front-ends register a [`PeerSink`] per connection.
//!
//! [`Rooms`] is the seam for scaling out: [`MemoryRooms`] keeps everything in this
//! process; [`super::redis::RedisRooms`] keeps membership in Redis and fans events
//! out to the hub processes that hold the recipients, with the front-ends unchanged.
//!
//! # The locking rule
//!
//! A room core delivers while it holds its state lock: that is what keeps per-pair
//! order and keeps a message from reaching a peer after it left the room. So nothing
//! that runs under that lock may take it again or call out into code that can:
//!
//! - [`PeerSink::deliver`] and [`PeerSink::stage`] only queue (see [`super::queue`]).
//!   They never write to a socket, never disconnect, never call into a library. A peer
//!   whose queue overflows is closed later by its connection's own task, outside the
//!   lock.
//! - What a relay staged is handed on by [`PeerSink::flush`], after the lock is let
//!   go: the queue's order was fixed under the lock, and the sender's task sends it.
//! - A sink's `Drop` does nothing more than drop its queue (and the socket.io sink's
//!   handle on its socket, which never closes it).
//! - Nothing under the lock awaits.
//!
//! [`CoreLock`] enforces the rule: a second lock of any room core on a thread that
//! already holds one panics with a message instead of deadlocking the hub for good.

use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::ops::{Deref, DerefMut, Range};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::protocol::{HubError, PeerId, RoomName};

/// What the core tells a peer.
#[derive(Debug, Clone)]
pub enum Event {
    /// Another peer entered the room.
    PeerJoined {
        /// Its id.
        id: PeerId,
        /// Its metadata.
        meta: Arc<Value>,
    },
    /// A peer left the room.
    PeerLeft {
        /// Its id.
        id: PeerId,
    },
    /// This peer is now in `room`, with `peers` already there (oldest first). Delivered
    /// to the joiner itself, under the same lock that put it in the room, so it comes
    /// before anything the room sends it afterwards.
    Joined {
        /// The joiner.
        id: PeerId,
        /// The room.
        room: RoomName,
        /// The peers already there.
        peers: Arc<Vec<PeerInfo>>,
        /// The joiner resumed a place it never lost: the others were told nothing, and
        /// their connections to it still stand.
        resumed: bool,
    },
    /// A newer connection of the same client resumed this peer's place; this
    /// connection is to close without leaving (the place is no longer its own).
    Replaced,
    /// A relayed message.
    Signal {
        /// The sender, set by the hub.
        from: PeerId,
        /// What the sender sent.
        data: Payload,
    },
}

/// A relayed message as the sender sent it: its JSON text, which native peers get as
/// `data`. Each front-end builds its own recipients' form on the way in, once for every
/// recipient: a socket.io sender the socket.io form (the object with the hub's `from`
/// set, [`Payload::with_from`]), so a socket.io recipient's delivery reads nothing
/// again, and the text is cut from that form the first time something asks for it; a
/// native sender the whole native frame ([`Payload::native_frame`]), which every native
/// recipient is handed as it is, the text being the `data` inside it.
#[derive(Debug, Clone)]
pub struct Payload(Arc<Forms>);

#[derive(Debug)]
struct Forms {
    text: OnceLock<Box<str>>,
    /// The socket.io form, `{...,"from":"id"}`, and where its members end: the text
    /// is the form up to there, closed with `}`.
    with_from: Option<(Box<RawValue>, usize)>,
    native: Option<NativeFrame>,
    /// The socket.io form of a message that did not come with one, built once for all
    /// socket.io recipients (and every retry of a full socket).
    built_with_from: OnceLock<Box<RawValue>>,
}

/// A native `signal` frame, whose `from` it names and where its `data` lies.
#[derive(Debug)]
struct NativeFrame {
    frame: Utf8Bytes,
    from: PeerId,
    data: Range<usize>,
}

impl Payload {
    /// A message whose socket.io form is `with_from`: an object whose last member is
    /// the hub's `"from":` with `from`, as the socket.io front-end writes it. The text
    /// for native peers is the object without that member. `None` if the form does not
    /// end with it.
    pub fn with_from_last(with_from: Box<RawValue>, from: &str) -> Option<Self> {
        let form = with_from.get();
        let body = form.strip_suffix('}')?;
        // The id as a JSON string, without writing it out when it needs no escape.
        let body = if from.bytes().any(|c| c == b'"' || c == b'\\' || c < 0x20) {
            body.strip_suffix(super::protocol::json_string(from).as_str())?
        } else {
            body.strip_suffix('"')?
                .strip_suffix(from)?
                .strip_suffix('"')?
        };
        let members = body.strip_suffix(r#""from":"#)?;
        let members_end = match members.strip_suffix(',') {
            Some(members) if members.len() > 1 => members.len(),
            Some(_) => return None,
            None => 1,
        };
        (members.starts_with('{') && (members_end > 1 || members == "{")).then(|| {
            Payload(Arc::new(Forms {
                text: OnceLock::new(),
                with_from: Some((with_from, members_end)),
                native: None,
                built_with_from: OnceLock::new(),
            }))
        })
    }

    /// A message whose native form is `frame`, the `signal` frame from `from` with the
    /// text at `data`, as the native front-end writes it. `None` if `data` is not in the
    /// frame.
    pub fn native(frame: Utf8Bytes, from: PeerId, data: Range<usize>) -> Option<Self> {
        frame.get(data.clone())?;
        Some(Payload(Arc::new(Forms {
            text: OnceLock::new(),
            with_from: None,
            native: Some(NativeFrame { frame, from, data }),
            built_with_from: OnceLock::new(),
        })))
    }

    /// The native frame for this message from `from`, if the sender's front-end built
    /// it (and built it for that sender).
    pub fn native_frame(&self, from: &PeerId) -> Option<&Utf8Bytes> {
        self.0
            .native
            .as_ref()
            .filter(|n| n.from == *from)
            .map(|n| &n.frame)
    }

    /// The socket.io form: the object with the hub's `from`, if it was built.
    pub fn with_from(&self) -> Option<&RawValue> {
        self.0.with_from.as_ref().map(|(raw, _)| &**raw)
    }

    /// The socket.io form, as the sender's front-end built it, or else as `build` makes
    /// it the first time a recipient asks, kept for the others.
    pub fn with_from_or(&self, build: impl FnOnce() -> Box<RawValue>) -> &RawValue {
        match self.with_from() {
            Some(raw) => raw,
            None => self.0.built_with_from.get_or_init(build),
        }
    }

    /// The JSON text.
    pub fn text(&self) -> &str {
        if let Some(n) = &self.0.native {
            return &n.frame[n.data.clone()];
        }
        self.0.text.get_or_init(|| match &self.0.with_from {
            Some((raw, end)) => format!("{}}}", &raw.get()[..*end]).into(),
            None => Box::from("null"),
        })
    }

    /// Appends the text to `out`, without keeping a cut of its own.
    pub fn push_text(&self, out: &mut String) {
        match (self.0.text.get(), &self.0.with_from) {
            (None, Some((raw, end))) => {
                out.push_str(&raw.get()[..*end]);
                out.push('}');
            }
            _ => out.push_str(self.text()),
        }
    }

    /// The text's length in bytes, without cutting it.
    pub fn len(&self) -> usize {
        if let Some(n) = &self.0.native {
            return n.data.len();
        }
        match (self.0.text.get(), &self.0.with_from) {
            (Some(text), _) => text.len(),
            (None, Some((_, end))) => end + 1,
            (None, None) => 0,
        }
    }

    /// Whether the text is empty (it never is: it is JSON).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Box<str>> for Payload {
    fn from(text: Box<str>) -> Self {
        Payload(Arc::new(Forms {
            text: OnceLock::from(text),
            with_from: None,
            native: None,
            built_with_from: OnceLock::new(),
        }))
    }
}

impl From<String> for Payload {
    fn from(text: String) -> Self {
        text.into_boxed_str().into()
    }
}

impl From<&str> for Payload {
    fn from(text: &str) -> Self {
        Box::<str>::from(text).into()
    }
}

impl Deref for Payload {
    type Target = str;
    fn deref(&self) -> &str {
        self.text()
    }
}

impl std::fmt::Display for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text())
    }
}

/// Where the core delivers a peer's events. `deliver` must not block: a front-end
/// queues the event, and a peer whose queue overflows is the front-end's to disconnect.
pub trait PeerSink: Send + Sync {
    /// Queues an event for the peer; the peer's connection is woken to send it.
    fn deliver(&self, event: &Event);
    /// Queues a relayed message that the core hands on itself with [`PeerSink::flush`]
    /// once it has let go of its lock, from the sender's task (no wake of the
    /// recipient's). True when the sink wants that flush; a sink that does not stages
    /// by delivering.
    fn stage(&self, event: &Event) -> bool {
        self.deliver(event);
        false
    }
    /// Sends what [`PeerSink::stage`] queued. Called with no lock of the core held.
    fn flush(&self) {}
}

/// The sinks a relay staged into, flushed once the core's lock is let go. One
/// recipient (a call of two) needs no allocation.
#[derive(Default)]
struct Staged {
    one: Option<Arc<dyn PeerSink>>,
    more: Vec<Arc<dyn PeerSink>>,
}

impl Staged {
    fn stage(&mut self, sink: &Arc<dyn PeerSink>, event: &Event) {
        if sink.stage(event) {
            match self.one {
                None => self.one = Some(sink.clone()),
                Some(_) => self.more.push(sink.clone()),
            }
        }
    }

    /// Call after the lock is let go.
    fn flush(self) {
        debug_assert!(!CORE_LOCK_HELD.get(), "flushed under a room core's lock");
        for sink in self.one.iter().chain(&self.more) {
            sink.flush();
        }
    }
}

/// A peer as others see it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerInfo {
    /// Its id.
    pub id: PeerId,
    /// Its metadata.
    pub meta: Arc<Value>,
}

impl Serialize for PeerId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Counts for `/healthz`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RoomStats {
    /// Rooms with at least one peer.
    pub rooms: usize,
    /// Connected peers (in a room or not).
    pub peers: usize,
    /// Messages relayed (one per recipient).
    pub messages_relayed: u64,
}

/// What [`Rooms::join`] returns: a future, because a shared core (Redis) asks its store.
pub type JoinFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<PeerInfo>, HubError>> + Send + 'a>>;

/// The seam between the front-ends and room state: [`MemoryRooms`] in this process,
/// [`super::redis::RedisRooms`] across processes. Every method but `join` is quick and
/// never waits on the network (a shared core queues its writes in order).
pub trait Rooms: Send + Sync + 'static {
    /// Registers a connected peer (in no room yet).
    fn connect(&self, id: PeerId, sink: Arc<dyn PeerSink>);
    /// Moves the peer into `room` (leaving its current room first); returns the peers
    /// already there, oldest first. Room full: error, and the peer stays where it was.
    fn join<'a>(&'a self, id: &'a PeerId, room: RoomName, meta: Arc<Value>) -> JoinFuture<'a>;
    /// Takes the peer out of its room.
    fn leave(&self, id: &PeerId) -> Result<(), HubError>;
    /// Relays `data` from a peer to `to`, or to the rest of its room. Never crosses rooms.
    fn signal(&self, from: &PeerId, to: Option<&str>, data: Payload) -> Result<(), HubError>;
    /// Forgets a peer (closed connection); its room is told.
    fn disconnect(&self, id: &PeerId);
    /// [`Rooms::disconnect`], but only while `sink` is still the peer's: a connection
    /// whose place a resume took forgets nothing on its way out.
    fn disconnect_sink(&self, id: &PeerId, sink: &Arc<dyn PeerSink>) {
        let _ = sink;
        self.disconnect(id);
    }
    /// Hands the place of `old` to the connection registered as `new` (which has joined
    /// nothing yet): the client proved with its resume token that it is `old` coming
    /// back. When `old` is still here (its old connection not yet noticed dead), `new`
    /// takes its room silently and the old connection is told [`Event::Replaced`];
    /// otherwise `new` is simply known as `old` from now on. Cores that cannot do this
    /// refuse.
    fn resume(&self, new: &PeerId, old: &PeerId) -> Result<(), HubError> {
        let _ = (new, old);
        Err(HubError::ResumeRefused(
            "this hub shares its rooms through Redis, where a place cannot be resumed yet".into(),
        ))
    }
    /// The room a peer is in.
    fn room_of(&self, id: &PeerId) -> Option<RoomName>;
    /// Counts.
    fn stats(&self) -> RoomStats;
    /// The shared store's state for `/healthz`; `None` for an in-process core.
    fn backend(&self) -> Option<Value> {
        None
    }
    /// Called once at shutdown, after every connection closed: a shared core flushes its
    /// writes and withdraws this process.
    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }
}

thread_local! {
    /// Whether this thread holds a room core's lock.
    static CORE_LOCK_HELD: Cell<bool> = const { Cell::new(false) };
}

/// A room core's state lock; see the module doc for the rule it enforces.
pub struct CoreLock<T>(Mutex<T>);

/// A held [`CoreLock`].
pub struct CoreGuard<'a, T>(MutexGuard<'a, T>);

impl<T> CoreLock<T> {
    /// Wraps `state`.
    pub fn new(state: T) -> Self {
        CoreLock(Mutex::new(state))
    }

    /// Locks the state. Panics (instead of deadlocking) when this thread already holds
    /// a room core's lock: code under the lock called back into a core.
    pub fn lock(&self) -> CoreGuard<'_, T> {
        assert!(
            !CORE_LOCK_HELD.get(),
            "a room core's lock was taken again by code running under it; \
             a sink or callback called back into the rooms (see hub::core's locking rule)"
        );
        // A panic elsewhere must not take the hub down with it.
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        CORE_LOCK_HELD.set(true);
        CoreGuard(guard)
    }
}

impl<T> Drop for CoreGuard<'_, T> {
    fn drop(&mut self) {
        CORE_LOCK_HELD.set(false);
    }
}

impl<T> Deref for CoreGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for CoreGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

struct PeerEntry {
    sink: Arc<dyn PeerSink>,
    room: Option<RoomName>,
    meta: Arc<Value>,
    /// Set by a resume that took over a place in `room`: the next join of that room is
    /// silent for the others.
    resumed: bool,
}

#[derive(Default)]
struct State {
    peers: HashMap<PeerId, PeerEntry>,
    /// Members oldest first.
    rooms: HashMap<RoomName, Vec<PeerId>>,
}

/// All rooms in this process, behind one short-held lock: deliveries are queue pushes,
/// so holding the lock while delivering keeps per-pair order at little cost.
pub struct MemoryRooms {
    state: CoreLock<State>,
    max_peers_per_room: usize,
    relayed: AtomicU64,
}

impl MemoryRooms {
    /// Rooms of at most `max_peers_per_room` peers.
    pub fn new(max_peers_per_room: usize) -> Self {
        MemoryRooms {
            state: CoreLock::new(State::default()),
            max_peers_per_room: max_peers_per_room.max(1),
            relayed: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> CoreGuard<'_, State> {
        self.state.lock()
    }

    /// Takes peer `id` out of its room and forgets it, if `whose` says the entry is the
    /// caller's to remove.
    fn forget(&self, id: &PeerId, whose: impl FnOnce(&PeerEntry) -> bool) {
        let removed = {
            let mut st = self.lock();
            if !st.peers.get(id).is_some_and(whose) {
                return;
            }
            st.leave_room(id);
            st.peers.remove(id)
        };
        // The sink is dropped after the lock is released.
        drop(removed);
    }

    fn join_now(
        &self,
        id: &PeerId,
        room: RoomName,
        meta: Arc<Value>,
    ) -> Result<Vec<PeerInfo>, HubError> {
        let mut st = self.lock();
        if !st.peers.contains_key(id) {
            return Err(HubError::BadRequest("unknown connection".into()));
        }
        let already_there = st.peers.get(id).and_then(|p| p.room.as_ref()) == Some(&room);
        let size = st.rooms.get(&room).map_or(0, Vec::len);
        if !already_there && size >= self.max_peers_per_room {
            return Err(HubError::RoomFull(self.max_peers_per_room));
        }
        let resumed = st
            .peers
            .get_mut(id)
            .is_some_and(|p| std::mem::take(&mut p.resumed));
        if already_there && resumed {
            // Back in the room it never left as far as the others know: only the joiner
            // hears of it.
            let others: Vec<PeerInfo> = st.rooms[&room]
                .iter()
                .filter(|m| *m != id)
                .filter_map(|m| {
                    st.peers.get(m).map(|p| PeerInfo {
                        id: m.clone(),
                        meta: p.meta.clone(),
                    })
                })
                .collect();
            let infos = Arc::new(others);
            if let Some(p) = st.peers.get_mut(id) {
                p.meta = meta;
                p.sink.deliver(&Event::Joined {
                    id: id.clone(),
                    room,
                    peers: infos.clone(),
                    resumed: true,
                });
            }
            return Ok(Arc::unwrap_or_clone(infos));
        }
        st.leave_room(id);
        let members = st.rooms.entry(room.clone()).or_default();
        let others: Vec<PeerId> = members.clone();
        members.push(id.clone());
        if let Some(p) = st.peers.get_mut(id) {
            p.room = Some(room.clone());
            p.meta = meta.clone();
        }
        let event = Event::PeerJoined {
            id: id.clone(),
            meta,
        };
        let mut infos = Vec::with_capacity(others.len());
        for other in &others {
            if let Some(p) = st.peers.get(other) {
                p.sink.deliver(&event);
                infos.push(PeerInfo {
                    id: other.clone(),
                    meta: p.meta.clone(),
                });
            }
        }
        let infos = Arc::new(infos);
        if let Some(p) = st.peers.get(id) {
            p.sink.deliver(&Event::Joined {
                id: id.clone(),
                room,
                peers: infos.clone(),
                resumed: false,
            });
        }
        Ok(Arc::unwrap_or_clone(infos))
    }
}

impl State {
    /// Removes `id` from its room and tells the others.
    fn leave_room(&mut self, id: &PeerId) -> Option<RoomName> {
        let room = self.peers.get_mut(id)?.room.take()?;
        if let Some(members) = self.rooms.get_mut(&room) {
            members.retain(|m| m != id);
            if members.is_empty() {
                self.rooms.remove(&room);
            } else {
                let event = Event::PeerLeft { id: id.clone() };
                for m in members.iter() {
                    if let Some(p) = self.peers.get(m) {
                        p.sink.deliver(&event);
                    }
                }
            }
        }
        Some(room)
    }
}

impl Rooms for MemoryRooms {
    fn connect(&self, id: PeerId, sink: Arc<dyn PeerSink>) {
        self.lock().peers.insert(
            id,
            PeerEntry {
                sink,
                room: None,
                meta: Arc::new(Value::Object(Default::default())),
                resumed: false,
            },
        );
    }

    fn join<'a>(&'a self, id: &'a PeerId, room: RoomName, meta: Arc<Value>) -> JoinFuture<'a> {
        Box::pin(std::future::ready(self.join_now(id, room, meta)))
    }

    fn leave(&self, id: &PeerId) -> Result<(), HubError> {
        self.lock()
            .leave_room(id)
            .map(|_| ())
            .ok_or(HubError::NotInRoom)
    }

    fn signal(&self, from: &PeerId, to: Option<&str>, data: Payload) -> Result<(), HubError> {
        let mut staged = Staged::default();
        let st = self.lock();
        let room = st
            .peers
            .get(from)
            .and_then(|p| p.room.as_ref())
            .ok_or(HubError::NotInRoom)?;
        let members = st.rooms.get(room).ok_or(HubError::NotInRoom)?;
        let event = Event::Signal {
            from: from.clone(),
            data,
        };
        // Queued under the lock, in the room's order; handed on after it.
        match to {
            Some(to) => {
                // Only a member of the sender's room is a valid target; an id from
                // another room is as unknown as one that does not exist.
                let target = members
                    .iter()
                    .find(|m| m.as_str() == to && *m != from)
                    .ok_or_else(|| HubError::UnknownPeer(to.to_string()))?;
                if let Some(p) = st.peers.get(target) {
                    staged.stage(&p.sink, &event);
                    self.relayed.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                for m in members.iter().filter(|m| *m != from) {
                    if let Some(p) = st.peers.get(m) {
                        staged.stage(&p.sink, &event);
                        self.relayed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        drop(st);
        staged.flush();
        Ok(())
    }

    fn disconnect(&self, id: &PeerId) {
        self.forget(id, |_| true);
    }

    fn disconnect_sink(&self, id: &PeerId, sink: &Arc<dyn PeerSink>) {
        self.forget(id, |p| Arc::ptr_eq(&p.sink, sink));
    }

    fn resume(&self, new: &PeerId, old: &PeerId) -> Result<(), HubError> {
        let replaced = {
            let mut st = self.lock();
            match st.peers.get(new) {
                None => return Err(HubError::BadRequest("unknown connection".into())),
                Some(p) if p.room.is_some() => {
                    return Err(HubError::ResumeRefused(
                        "resume comes before any join".into(),
                    ));
                }
                Some(_) => {}
            }
            if new == old {
                return Ok(());
            }
            let Some(entry) = st.peers.remove(new) else {
                return Ok(());
            };
            match st.peers.get_mut(old) {
                Some(place) => {
                    let old_sink = std::mem::replace(&mut place.sink, entry.sink);
                    place.resumed = place.room.is_some();
                    Some(old_sink)
                }
                None => {
                    st.peers.insert(old.clone(), entry);
                    None
                }
            }
        };
        // Told after the lock: the old connection's task closes it.
        if let Some(sink) = replaced {
            sink.deliver(&Event::Replaced);
        }
        Ok(())
    }

    fn room_of(&self, id: &PeerId) -> Option<RoomName> {
        self.lock().peers.get(id).and_then(|p| p.room.clone())
    }

    fn stats(&self) -> RoomStats {
        let st = self.lock();
        RoomStats {
            rooms: st.rooms.len(),
            peers: st.peers.len(),
            messages_relayed: self.relayed.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text cut from a socket.io form is the object without the hub's `from`, the
    /// same whether it is kept or written out; a form that does not end with the hub's
    /// `from` is refused.
    /// A message without a socket.io form gets one built once, for every socket.io
    /// recipient.
    #[test]
    fn a_built_socketio_form_is_kept() {
        let p = Payload::from(r#"{"a":1}"#);
        let built = std::sync::atomic::AtomicUsize::new(0);
        for _ in 0..3 {
            let form = p.with_from_or(|| {
                built.fetch_add(1, Ordering::Relaxed);
                RawValue::from_string(r#"{"a":1,"from":"x"}"#.into()).unwrap()
            });
            assert_eq!(form.get(), r#"{"a":1,"from":"x"}"#);
        }
        assert_eq!(built.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_payload_cuts_its_text_from_the_socketio_form() {
        let raw = |s: &str| RawValue::from_string(s.to_string()).unwrap();
        for (form, from, text) in [
            (r#"{"a":1,"b":[2],"from":"x"}"#, "x", r#"{"a":1,"b":[2]}"#),
            (r#"{"from":"x"}"#, "x", "{}"),
            (
                r#"{"a":{"from":1},"from":"q\"\\"}"#,
                "q\"\\",
                r#"{"a":{"from":1}}"#,
            ),
        ] {
            let p = Payload::with_from_last(raw(form), from).expect(form);
            assert_eq!(p.len(), text.len());
            let mut out = String::new();
            p.push_text(&mut out);
            assert_eq!(out, text);
            assert_eq!(p.text(), text);
            assert_eq!(p.with_from().map(RawValue::get), Some(form));
            assert_eq!(p.len(), text.len());
        }
        for (form, from) in [
            (r#"{"a":1,"from":"x"}"#, "y"),
            (r#"{"a":1,"from":"x"}"#, "\"x"),
            (r#"{"a":1,"b":"x"}"#, "x"),
            (r#"{"from":"x","a":1}"#, "x"),
            (r#"[{"from":"x"}]"#, "x"),
            (r#"{"x":"\"from\":\"x"}"#, "x"),
        ] {
            assert!(
                Payload::with_from_last(raw(form), from).is_none(),
                "{form} {from}"
            );
        }
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl PeerSink for Recorder {
        fn deliver(&self, event: &Event) {
            let line = match event {
                Event::PeerJoined { id, .. } => format!("joined {id}"),
                Event::PeerLeft { id } => format!("left {id}"),
                Event::Signal { from, data } => format!("signal {from} {data}"),
                Event::Joined { .. } => return,
                Event::Replaced => "replaced".to_string(),
            };
            self.0.lock().unwrap().push(line);
        }
    }

    impl Recorder {
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut self.0.lock().unwrap())
        }
    }

    fn peer(rooms: &MemoryRooms, name: &str) -> (PeerId, Arc<Recorder>) {
        let id = PeerId::from_string(name.into());
        let rec = Arc::new(Recorder::default());
        rooms.connect(id.clone(), rec.clone());
        (id, rec)
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    fn meta() -> Arc<Value> {
        Arc::new(serde_json::json!({}))
    }

    #[test]
    fn join_lists_others_oldest_first_and_tells_them() {
        let rooms = MemoryRooms::new(16);
        let (a, ra) = peer(&rooms, "a");
        let (b, rb) = peer(&rooms, "b");
        let (c, _) = peer(&rooms, "c");
        assert!(rooms.join_now(&a, room("r"), meta()).unwrap().is_empty());
        let seen: Vec<_> = rooms
            .join_now(&b, room("r"), meta())
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(seen, vec![a.clone()]);
        let seen: Vec<_> = rooms
            .join_now(&c, room("r"), meta())
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(seen, vec![a.clone(), b.clone()]);
        assert_eq!(ra.take(), vec!["joined b", "joined c"]);
        assert_eq!(rb.take(), vec!["joined c"]);
        assert_eq!(rooms.stats().rooms, 1);
        assert_eq!(rooms.stats().peers, 3);
    }

    /// The joiner hears `Joined` before anything the room says to it afterwards.
    #[test]
    fn the_joiner_hears_joined_first() {
        #[derive(Default)]
        struct All(Mutex<Vec<String>>);
        impl PeerSink for All {
            fn deliver(&self, event: &Event) {
                let line = match event {
                    Event::Joined { room, peers, .. } => format!("in {room} with {}", peers.len()),
                    Event::PeerJoined { id, .. } => format!("joined {id}"),
                    _ => "other".into(),
                };
                self.0.lock().unwrap().push(line);
            }
        }
        let rooms = MemoryRooms::new(16);
        let (a, _) = peer(&rooms, "a");
        rooms.join_now(&a, room("r"), meta()).unwrap();
        let b = PeerId::from_string("b".into());
        let rb = Arc::new(All::default());
        rooms.connect(b.clone(), rb.clone());
        rooms.join_now(&b, room("r"), meta()).unwrap();
        let (c, _) = peer(&rooms, "c");
        rooms.join_now(&c, room("r"), meta()).unwrap();
        assert_eq!(*rb.0.lock().unwrap(), vec!["in r with 1", "joined c"]);
    }

    #[test]
    fn signals_stay_in_their_room() {
        let rooms = MemoryRooms::new(16);
        let (a, _) = peer(&rooms, "a");
        let (b, rb) = peer(&rooms, "b");
        let (x, rx) = peer(&rooms, "x");
        rooms.join_now(&a, room("r1"), meta()).unwrap();
        rooms.join_now(&b, room("r1"), meta()).unwrap();
        rooms.join_now(&x, room("r2"), meta()).unwrap();
        rb.take();
        rooms.signal(&a, None, "1".into()).unwrap();
        rooms.signal(&a, Some("b"), "2".into()).unwrap();
        assert_eq!(
            rooms.signal(&a, Some("x"), "3".into()),
            Err(HubError::UnknownPeer("x".into()))
        );
        assert_eq!(
            rooms.signal(&a, Some("a"), "4".into()),
            Err(HubError::UnknownPeer("a".into()))
        );
        assert_eq!(rb.take(), vec!["signal a 1", "signal a 2"]);
        assert!(rx.take().is_empty());
        assert_eq!(rooms.stats().messages_relayed, 2);
    }

    #[test]
    fn not_in_room_and_full_rooms() {
        let rooms = MemoryRooms::new(2);
        let (a, _) = peer(&rooms, "a");
        let (b, _) = peer(&rooms, "b");
        let (c, _) = peer(&rooms, "c");
        assert_eq!(rooms.signal(&a, None, "1".into()), Err(HubError::NotInRoom));
        assert_eq!(rooms.leave(&a), Err(HubError::NotInRoom));
        rooms.join_now(&a, room("r"), meta()).unwrap();
        rooms.join_now(&b, room("r"), meta()).unwrap();
        rooms.join_now(&c, room("other"), meta()).unwrap();
        assert_eq!(
            rooms.join_now(&c, room("r"), meta()).unwrap_err(),
            HubError::RoomFull(2)
        );
        assert_eq!(
            rooms.room_of(&c),
            Some(room("other")),
            "a refused join keeps the old room"
        );
        // Re-joining one's own full room is allowed.
        assert!(rooms.join_now(&b, room("r"), meta()).is_ok());
    }

    #[test]
    fn leave_and_disconnect_tell_the_room() {
        let rooms = MemoryRooms::new(16);
        let (a, ra) = peer(&rooms, "a");
        let (b, _) = peer(&rooms, "b");
        let (c, _) = peer(&rooms, "c");
        for p in [&a, &b, &c] {
            rooms.join_now(p, room("r"), meta()).unwrap();
        }
        ra.take();
        rooms.leave(&b).unwrap();
        rooms.disconnect(&c);
        assert_eq!(ra.take(), vec!["left b", "left c"]);
        rooms.disconnect(&a);
        assert_eq!(rooms.stats().rooms, 0, "empty rooms are dropped");
        assert_eq!(rooms.stats().peers, 1);
    }

    /// A sink that calls back into the rooms, as the socket.io sink once did on a full
    /// buffer (it disconnected inline): the core must say so, not hang.
    struct Reentrant(Arc<MemoryRooms>, PeerId);

    impl PeerSink for Reentrant {
        fn deliver(&self, event: &Event) {
            if let Event::PeerJoined { .. } = event {
                self.0.disconnect(&self.1);
            }
        }
    }

    #[test]
    fn a_sink_that_calls_back_is_caught_not_deadlocked() {
        let rooms = Arc::new(MemoryRooms::new(16));
        let (a, _) = peer(&rooms, "a");
        let b = PeerId::from_string("b".into());
        rooms.connect(b.clone(), Arc::new(Reentrant(rooms.clone(), b.clone())));
        rooms.join_now(&b, room("r"), meta()).unwrap();
        let r2 = rooms.clone();
        let joined = std::thread::spawn(move || r2.join_now(&a, room("r"), meta()));
        let err = joined.join().expect_err("re-entry panics");
        let text = err
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| err.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        assert!(text.contains("taken again"), "{text}");
        // The core is usable afterwards.
        assert_eq!(rooms.stats().peers, 2);
    }

    /// A sink that takes relayed messages through `stage` and sends them in `flush`,
    /// where it looks into the rooms (which would panic under the core's lock).
    struct Staging {
        rooms: std::sync::Weak<MemoryRooms>,
        staged: Mutex<Vec<String>>,
        sent: Mutex<Vec<String>>,
    }

    impl PeerSink for Staging {
        fn deliver(&self, event: &Event) {
            if let Event::PeerJoined { id, .. } = event {
                self.sent.lock().unwrap().push(format!("joined {id}"));
            }
        }
        fn stage(&self, event: &Event) -> bool {
            if let Event::Signal { data, .. } = event {
                self.staged.lock().unwrap().push(data.to_string());
            }
            true
        }
        fn flush(&self) {
            let rooms = self.rooms.upgrade().unwrap();
            assert_eq!(
                rooms.stats().peers,
                3,
                "the core can be read: its lock is let go"
            );
            let staged = std::mem::take(&mut *self.staged.lock().unwrap());
            self.sent.lock().unwrap().extend(staged);
        }
    }

    #[test]
    fn a_relay_is_staged_under_the_lock_and_flushed_after_it() {
        let rooms = Arc::new(MemoryRooms::new(16));
        let staging = |rooms: &Arc<MemoryRooms>| {
            Arc::new(Staging {
                rooms: Arc::downgrade(rooms),
                staged: Mutex::default(),
                sent: Mutex::default(),
            })
        };
        let (b, c) = (staging(&rooms), staging(&rooms));
        let (a, _) = peer(&rooms, "a");
        rooms.join_now(&a, room("r"), meta()).unwrap();
        for (name, sink) in [("b", &b), ("c", &c)] {
            let id = PeerId::from_string(name.into());
            rooms.connect(id.clone(), sink.clone());
            rooms.join_now(&id, room("r"), meta()).unwrap();
        }
        rooms.signal(&a, Some("b"), r#"{"n":1}"#.into()).unwrap();
        rooms.signal(&a, None, r#"{"n":2}"#.into()).unwrap();
        assert_eq!(
            *b.sent.lock().unwrap(),
            ["joined c", r#"{"n":1}"#, r#"{"n":2}"#]
        );
        assert_eq!(*c.sent.lock().unwrap(), [r#"{"n":2}"#]);
        assert!(
            b.staged.lock().unwrap().is_empty(),
            "every staged message was flushed"
        );
    }

    #[test]
    fn joining_another_room_leaves_the_first() {
        let rooms = MemoryRooms::new(16);
        let (a, ra) = peer(&rooms, "a");
        let (b, _) = peer(&rooms, "b");
        rooms.join_now(&a, room("r1"), meta()).unwrap();
        rooms.join_now(&b, room("r1"), meta()).unwrap();
        ra.take();
        rooms.join_now(&b, room("r2"), meta()).unwrap();
        assert_eq!(ra.take(), vec!["left b"]);
        assert_eq!(rooms.room_of(&b), Some(room("r2")));
    }
}
