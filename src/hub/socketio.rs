//! The socket.io front-end at `/socket.io/`: the usual call events (`join`, `joined`,
//! `newUserJoined`, `leave`, `userLeft`, `message`) over the same room core, so
//! socket.io and native peers share rooms. Engine.IO and socket.io framing are
//! socketioxide's.

use std::borrow::Cow;
use std::future::{Future, Ready};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::OriginalUri;
use futures_util::future::Either;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue, SEC_WEBSOCKET_KEY};
use http::{Request, Uri};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use socketioxide::SocketIo;
use socketioxide::adapter::LocalAdapter;
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::message::FromMessageParts;
use socketioxide::handler::{ConnectHandler, MessageHandler};
use socketioxide::socket::{DisconnectReason, Socket};
use socketioxide::{SendError, SocketError};
use socketioxide_core::Value as SioValue;
use tokio::sync::oneshot;

use super::Hub;
use super::core::{Event, Payload, PeerSink};
use super::limits::{ConnGuard, Refusal};
use super::protocol::{HubError, PeerId, RoomName};
use super::queue::{Drained, Outbox, Overflow, Step};
use super::ratelimit::{FrameLimit, Verdict};

/// Packets socketioxide holds for one peer (on top of rtcdev's own queue, which is
/// bounded in bytes by `--max-queue` as the native front-end's is). When they are all
/// taken the peer's queue waits; it overflows when the peer does not read.
pub const SOCKETIO_MAX_BUFFERED_PACKETS: usize = 64;
/// How long a peer disconnected for flooding keeps its connection for the error that
/// says why to go out.
const FLUSH_BEFORE_DISCONNECT: Duration = Duration::from_millis(250);
/// How often a peer's queue retries while socketioxide's buffer for it is full.
const FULL_RETRY: Duration = Duration::from_millis(5);
/// How often a peer being disconnected is retried while socketioxide's buffer for it is
/// full.
const DISCONNECT_RETRY: Duration = Duration::from_millis(250);
/// Binary attachments one event may announce (each refused; see `routes`).
const MAX_ATTACHMENTS: usize = 16;
/// A client must connect to the namespace this soon after its Engine.IO handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The place under the connection caps of one Engine.IO session, taken by its handshake
/// (in the hub's admission) and carried in the handshake request's extensions, which
/// engineioxide keeps for as long as the session lives: the place is held from the
/// handshake until the session ends, whatever its namespace connections do. (A client
/// that disconnects from `/` and keeps answering pings keeps a session open that
/// socketioxide gives no way to close; it keeps its place too.)
#[derive(Clone)]
pub struct SessionPlace {
    /// Given back when the last holder (the session, a peer's task) drops it.
    _held: Arc<ConnGuard>,
    /// The session's frame rate limit: a client disconnected for flooding that connects
    /// to `/` again on the same session finds its bucket as it left it.
    limit: Arc<Mutex<FrameLimit>>,
}

impl SessionPlace {
    /// Holds `place` for a session, with the hub's per-connection rate limit.
    pub fn new(place: ConnGuard, cfg: &super::HubConfig) -> Self {
        SessionPlace {
            _held: Arc::new(place),
            limit: Arc::new(Mutex::new(FrameLimit::new(
                cfg.rate_per_sec,
                cfg.rate_burst,
            ))),
        }
    }
}

/// The `/socket.io/` routes (websocket and long-polling transports, EIO 4 and 3).
pub fn routes(hub: Hub) -> Router {
    let cfg = hub.config();
    // Engine.IO pings every interval and drops a peer whose pong is late by the
    // timeout; together they match the native heartbeat timeout.
    let interval = cfg.heartbeat_timeout.mul_f64(5.0 / 6.0);
    let timeout = cfg.heartbeat_timeout.saturating_sub(interval);
    let (svc, io) = SocketIo::builder()
        .ping_interval(interval)
        .ping_timeout(timeout)
        .max_payload(cfg.max_frame_bytes as u64)
        .ws_max_message_size(cfg.max_frame_bytes)
        .ws_max_frame_size(cfg.max_frame_bytes)
        .ws_read_buffer_size(super::WS_READ_BUFFER_BYTES)
        .max_buffer_size(SOCKETIO_MAX_BUFFERED_PACKETS)
        .connect_timeout(CONNECT_TIMEOUT)
        // The protocol is JSON: an event with binary attachments is refused in words
        // (see `message`), but socketioxide gathers them first, up to 10 MB per session
        // by default. Here at most one frame's worth; past it the session is closed.
        .with_parser(
            socketioxide::ParserConfig::common()
                .max_incoming_binaries(MAX_ATTACHMENTS)
                .max_incoming_binary_buf_size(cfg.max_frame_bytes)
                .packet_completion_timeout(CONNECT_TIMEOUT),
        )
        .build_svc();
    let register_hub = hub.clone();
    // Everything is set up in a connect middleware: socketioxide awaits it before it
    // answers the client's connect, while a connect handler runs as a separate task
    // after the answer has gone out. A client that emits `join` the moment it is
    // connected (typical call pages do) could otherwise have its event arrive before
    // the handler had registered `join`, and the event would be dropped.
    let handler = async || {};
    io.ns(
        "/",
        handler.with(move |socket: SocketRef| {
            let result = register(register_hub.clone(), socket);
            async move { result }
        }),
    );
    hub.set_socketio(io);
    Router::new().route_service(
        "/socket.io/",
        tower::ServiceExt::map_request(svc, detach_head),
    )
}

/// Request headers the Engine.IO session reads: the WebSocket key for the handshake
/// answer, the content type of a polling POST.
const SESSION_HEADERS: [http::header::HeaderName; 2] = [SEC_WEBSOCKET_KEY, CONTENT_TYPE];

/// hyper parses a request head into slices of its connection's read buffer (8 to 16 KB),
/// and engineioxide keeps every session's request head for the session's life, so each
/// held socket.io connection would pin that whole buffer: 16 KB of a ~40 KB
/// connection, measured with heaptrack. The session gets owned copies of the URI and
/// of the headers it reads instead (CORS and logging have seen the full request by
/// then), and the buffer is freed once the handshake is done.
fn detach_head<B>(mut req: Request<B>) -> Request<B> {
    let mut headers = HeaderMap::with_capacity(SESSION_HEADERS.len());
    for name in SESSION_HEADERS {
        if let Some(value) = req.headers().get(&name)
            && let Ok(copy) = HeaderValue::from_bytes(value.as_bytes())
        {
            headers.insert(name, copy);
        }
    }
    *req.headers_mut() = headers;
    // `Uri::from_str` copies; the parsed one shares the read buffer, and so does the
    // copy axum keeps as `OriginalUri`.
    if let Ok(uri) = req.uri().to_string().parse::<Uri>() {
        req.extensions_mut().insert(OriginalUri(uri.clone()));
        *req.uri_mut() = uri;
    }
    req
}

/// What goes out to a socket.io peer, in one queue so it arrives in the order it was
/// queued: room events from the core, and the answers to the peer's own events.
enum Out {
    /// A room event.
    Room(Event),
    /// `joined` or `error`, already built.
    Emit(&'static str, Value),
    /// Disconnect the peer once what was queued before has gone out (a flooding peer
    /// still learns why).
    Disconnect,
}

/// A socket.io peer's sink: a queue bounded in bytes, handed on to socketioxide by
/// whichever task gets to it first with no lock held. The sender of a relayed message
/// hands it on itself after the room core let go of its lock ([`PeerSink::flush`]);
/// what the core delivers under its lock wakes the peer's own task
/// ([`forward`]), which also retries while socketioxide's buffer is full and
/// disconnects a peer that does not read.
struct SioSink {
    outbox: Outbox<Out>,
    /// The peer's socket, until its task ends (a socket's handlers hold this sink: the
    /// task's end breaks that cycle).
    socket: Mutex<Option<SocketRef>>,
}

/// What a queued event counts against `--max-queue`: its data plus the envelope.
const ENVELOPE_BYTES: usize = 64;

impl SioSink {
    /// An answer to the peer's own event, sent from the handler's task.
    fn emit(&self, event: &'static str, data: Value) {
        if self.outbox.push(Out::Emit(event, data), ENVELOPE_BYTES) {
            self.flush();
        }
    }

    fn error(&self, e: &HubError) {
        self.emit(
            "error",
            serde_json::json!({"code": e.code(), "message": e.to_string()}),
        );
    }

    fn socket(&self) -> Option<SocketRef> {
        self.socket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl PeerSink for SioSink {
    fn deliver(&self, event: &Event) {
        if self.stage(event) {
            self.outbox.wake();
        }
    }

    fn stage(&self, event: &Event) -> bool {
        let bytes = match event {
            Event::Signal { data, .. } => data.len() + ENVELOPE_BYTES,
            _ => ENVELOPE_BYTES,
        };
        self.outbox.push(Out::Room(event.clone()), bytes)
    }

    fn flush(&self) {
        let Some(socket) = self.socket() else { return };
        // Stopped: socketioxide's buffer is full, or a disconnect waits at the head;
        // the peer's task takes over.
        if self.outbox.drain(|out| send(&socket, out)) == Drained::Stopped {
            self.outbox.wake();
        }
    }
}

/// Hands one queued item to socketioxide. `Stop` leaves it queued: socketioxide's
/// buffer for the peer is full, or it is the disconnect, which only the peer's task
/// carries out.
fn send(socket: &SocketRef, out: &Out) -> Step {
    let r = match out {
        Out::Room(Event::PeerJoined { id, .. }) => socket.emit("newUserJoined", id.as_str()),
        Out::Room(Event::PeerLeft { id }) => socket.emit("userLeft", id.as_str()),
        Out::Room(Event::Joined { id, peers, .. }) => {
            let mut ids: Vec<&str> = peers.iter().map(|p| p.id.as_str()).collect();
            ids.push(id.as_str());
            socket.emit("joined", &ids.join(","))
        }
        Out::Room(Event::Signal { from, data }) => {
            socket.emit("message", data.with_from_or(|| from_native(data, from)))
        }
        // socket.io peers cannot resume, so their place is never taken over.
        Out::Room(Event::Replaced) => Ok(()),
        Out::Emit(event, data) => socket.emit(*event, data),
        Out::Disconnect => return Step::Stop,
    };
    match r {
        Err(SendError::Socket(SocketError::InternalChannelFull)) => Step::Stop,
        // Gone (its task ends on the disconnect), or an event that cannot be encoded:
        // skipped.
        _ => Step::Sent,
    }
}

/// The peer's own task: hands on what the room core delivered under its lock, retries
/// while socketioxide's buffer is full, carries out a queued disconnect, and
/// disconnects a peer whose queue overflowed; ends when the peer is gone.
async fn forward(
    hub: Hub,
    (id, socket): (PeerId, SocketRef),
    (sink, mut overflow): (Arc<SioSink>, Overflow),
    guard: SessionPlace,
    gone: tokio_util::sync::CancellationToken,
) {
    // Made and pinned once: a fresh wait for every event would lock the token's state
    // to register and again to drop.
    let gone = gone.cancelled();
    tokio::pin!(gone);
    let overflowed = 'task: loop {
        tokio::select! {
            biased;
            _ = &mut gone => break None,
            _ = &mut overflow => break Some(true),
            _ = sink.outbox.woken() => {}
        }
        loop {
            let mut disconnect = false;
            let drained = sink.outbox.drain(|out| {
                disconnect = matches!(out, Out::Disconnect);
                send(&socket, out)
            });
            if disconnect {
                // socketioxide drops what it still holds for a socket it disconnects,
                // and says nothing when that is written: give the error a moment to go
                // out.
                tokio::time::sleep(FLUSH_BEFORE_DISCONNECT).await;
                break 'task Some(false);
            }
            if drained != Drained::Stopped {
                break;
            }
            tokio::select! {
                biased;
                _ = &mut gone => break 'task None,
                _ = &mut overflow => break 'task Some(true),
                _ = tokio::time::sleep(FULL_RETRY) => {}
            }
        }
    };
    sink.socket.lock().unwrap_or_else(|p| p.into_inner()).take();
    let Some(overflowed) = overflowed else {
        return drop(guard);
    };
    if overflowed {
        hub.limits()
            .counters
            .queue_overflows
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::info_limited!("peer does not read", peer = %socket.id, "socket.io peer does not read its messages; disconnecting");
    }
    // socketioxide refuses to disconnect a socket whose buffer is full (the disconnect
    // packet does not fit), which is where a peer that reads nothing ends up. Its room
    // forgets it at once then, and the socket is closed as soon as socketioxide can, or
    // by its heartbeat (a peer that reads nothing answers no ping).
    let mut forgotten = false;
    while let Err(SocketError::InternalChannelFull) = socket.clone().disconnect() {
        if !forgotten {
            let registered: Arc<dyn PeerSink> = sink.clone();
            hub.rooms().disconnect_sink(&id, &registered);
            forgotten = true;
        }
        tokio::select! {
            biased;
            _ = &mut gone => break,
            _ = tokio::time::sleep(DISCONNECT_RETRY) => {}
        }
    }
    drop(guard);
}

/// The socket.io `message` for a native peer's message (a socket.io sender's comes
/// with it built): an object is read as a socket.io sender's is ([`relayed`]), its
/// `from` replaced by the hub's; `Err` holds anything else, wrapped by [`with_from`].
fn from_native(data: &str, from: &PeerId) -> Box<RawValue> {
    if let Ok((_, built)) = relayed(data, from)
        && let Some(raw) = built.with_from()
    {
        return raw.to_owned();
    }
    with_from(data, from)
}

/// The `message` payload for socket.io: the relayed object with `from` set by the hub; a
/// non-object from a native peer is wrapped as `{data, from}`, and so is JSON that is
/// valid but that serde will not build a tree of (`1e999`, a lone `\ud800`), as it is.
fn with_from(data: &str, from: &PeerId) -> Box<RawValue> {
    let tree = match serde_json::from_str::<Value>(data) {
        Ok(Value::Object(mut obj)) => {
            obj.insert("from".into(), Value::String(from.to_string()));
            Some(Value::Object(obj))
        }
        Ok(other) => {
            let mut obj = Map::new();
            obj.insert("data".into(), other);
            obj.insert("from".into(), Value::String(from.to_string()));
            Some(Value::Object(obj))
        }
        Err(_) => None,
    };
    let from_json = super::protocol::json_string(from.as_str());
    tree.and_then(|t| serde_json::value::to_raw_value(&t).ok())
        .or_else(|| RawValue::from_string(format!(r#"{{"data":{data},"from":{from_json}}}"#)).ok())
        .unwrap_or_else(|| {
            RawValue::from_string(format!(r#"{{"from":{from_json}}}"#))
                .unwrap_or_else(|_| RawValue::NULL.to_owned())
        })
}

/// Runs one socket's event handlers one after another, in the order its events arrived.
/// socketioxide calls a handler when the event arrives but runs the future it returns
/// as a task of its own, and tokio may run two such tasks in either order (the newest
/// spawn runs first on its thread): a burst of `message`s, a peer's ICE candidates,
/// was relayed out of order. Work is done in the handler call itself, which
/// socketioxide makes in arrival order, unless earlier asynchronous work (a join
/// through Redis) is still running; then it waits for that.
#[derive(Clone, Default)]
struct InOrder(Arc<Mutex<Option<oneshot::Receiver<()>>>>);

impl InOrder {
    /// Runs `work` now if everything that arrived before it is done, else queues it
    /// behind that. Call it in the handler itself, not in the future it returns.
    fn now<W>(&self, work: W) -> Either<Ready<()>, impl Future<Output = ()> + Send + use<W>>
    where
        W: FnOnce() + Send,
    {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let busy = last
            .as_mut()
            .is_some_and(|t| matches!(t.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
        if !busy {
            *last = None;
            drop(last);
            work();
            return Either::Left(std::future::ready(()));
        }
        Either::Right(Self::behind(&mut last, async move { work() }))
    }

    /// `work` to run after the work of every event that arrived before this one. Call
    /// it in the handler itself, not in the future it returns.
    fn then<F>(&self, work: F) -> impl Future<Output = ()> + Send + use<F>
    where
        F: Future<Output = ()> + Send,
    {
        Self::behind(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()), work)
    }

    /// Takes the last ticket: `work` waits for the holder of the one before it.
    fn behind<F>(
        last: &mut Option<oneshot::Receiver<()>>,
        work: F,
    ) -> impl Future<Output = ()> + Send + use<F>
    where
        F: Future<Output = ()> + Send,
    {
        let (done, ticket) = oneshot::channel();
        let before = last.replace(ticket);
        async move {
            if let Some(before) = before {
                // An error means the earlier work ended without sending (a panic);
                // its turn is over either way.
                let _ = before.await;
            }
            work.await;
            let _ = done.send(());
        }
    }
}

/// A handler socketioxide calls in arrival order and that runs right there, in the
/// call: socketioxide runs the future of each of its closure handlers as a task of its
/// own, a spawn for every relayed message. Only work that must wait ([`InOrder`]) is
/// spawned.
struct Inline<F>(F);

/// [`Inline`]'s place in socketioxide's handler types.
struct InlineCall;

impl<F, Fut> MessageHandler<LocalAdapter, InlineCall> for Inline<F>
where
    F: Fn(SocketRef, SioValue) -> Either<Ready<()>, Fut> + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn call(&self, s: Arc<Socket>, mut v: SioValue, ack: Option<i64>) {
        let Ok(socket) = SocketRef::from_message_parts(&s, &mut v, &ack);
        if let Either::Right(later) = (self.0)(socket, v) {
            tokio::spawn(later);
        }
    }
}

/// An event's first argument as the sender wrote it, read from socket.io's text
/// `["event", arg, ...]` without building it. `None` when it has none.
fn first_arg(text: &str) -> Option<&RawValue> {
    struct First<'a>(Option<&'a RawValue>);
    impl<'de> serde::Deserialize<'de> for First<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Seq;
            impl<'de> serde::de::Visitor<'de> for Seq {
                type Value = First<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("[event, args...]")
                }
                fn visit_seq<A: serde::de::SeqAccess<'de>>(
                    self,
                    mut seq: A,
                ) -> Result<First<'de>, A::Error> {
                    let _event: Option<serde::de::IgnoredAny> = seq.next_element()?;
                    let first = seq.next_element()?;
                    while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                    Ok(First(first))
                }
            }
            d.deserialize_seq(Seq)
        }
    }
    serde_json::from_str::<First>(text).ok()?.0
}

/// What the `message` event's text `["message", arg, ...]` asks of the hub (see
/// [`relayed`]); `None` when it has no argument.
fn message(text: &str, from: &PeerId) -> Option<Result<(Option<String>, Payload), HubError>> {
    if let Some(asked) = sole_object(text).and_then(|object| relayed(object, from).ok()) {
        return Some(Ok(asked));
    }
    first_arg(text).map(|raw| relayed(raw.get(), from))
}

/// What a `message` asks of the hub: to whom (`None`: the whole room) and what to
/// relay. The object is read once, into its members as they were written, and written
/// out once as the socket.io form, with the hub's `from` in place of any the sender
/// put there: a socket.io recipient's delivery reads nothing again, and the text for
/// native peers is cut from it (see [`Payload`]).
fn relayed(text: &str, from: &PeerId) -> Result<(Option<String>, Payload), HubError> {
    match compact::relayed(text, from) {
        Some(asked) => asked,
        None => relayed_by_members(text, from),
    }
}

/// [`relayed`] through serde: any object, keys written with escapes too.
fn relayed_by_members(text: &str, from: &PeerId) -> Result<(Option<String>, Payload), HubError> {
    let Ok(Members(members)) = serde_json::from_str::<Members>(text) else {
        return Err(HubError::BadRequest("message takes an object".into()));
    };
    // As in a tree, the last `to` counts.
    let mut to = None;
    for (key, value) in &members {
        if key == "to" {
            to = Some(*value);
        }
    }
    let to = match to {
        Some(raw) if raw.get() != "null" => {
            Some(serde_json::from_str::<String>(raw.get()).map_err(|_| bad_to())?)
        }
        _ => None,
    };
    let with_from = Object {
        members: &members,
        from: Some(from.as_str()),
    };
    let payload = serde_json::value::to_raw_value(&with_from)
        .ok()
        .and_then(|raw| Payload::with_from_last(raw, from.as_str()))
        .ok_or_else(|| HubError::BadRequest("message takes an object".into()))?;
    Ok((to, payload))
}

/// [`relayed`] for the objects clients send, whose keys have no escapes: the members are
/// found by their delimiters and copied once into the socket.io form, sized up front,
/// which serde then checks as JSON (the one full reading). What serde writes is what
/// this writes, byte for byte. `None` sends the text the serde way: a key with an
/// escape, or a text not shaped as an object (the serde way says what is wrong).
mod compact {
    use super::{HubError, Payload, PeerId, RawValue, bad_to};

    fn skip_ws(b: &[u8], mut i: usize) -> usize {
        while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            i += 1;
        }
        i
    }

    /// The end (past the closing quote) of the string that opens at `b[i]`.
    fn string_end(b: &[u8], i: usize) -> Option<usize> {
        let mut j = i + 1;
        loop {
            let k = j + memchr::memchr2(b'"', b'\\', b.get(j..)?)?;
            if b[k] == b'"' {
                return Some(k + 1);
            }
            // An escape: the next byte is escaped (a `\u` sequence's hex digits need
            // no care: they hold no quote).
            j = k + 2;
        }
    }

    /// The end of the value that begins at `b[i]`.
    fn value_end(b: &[u8], i: usize) -> Option<usize> {
        match *b.get(i)? {
            b'"' => string_end(b, i),
            b'{' | b'[' => {
                let mut depth = 0usize;
                let mut j = i;
                loop {
                    match *b.get(j)? {
                        b'"' => {
                            j = string_end(b, j)?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return Some(j + 1);
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
            }
            _ => {
                let end = i + b[i..]
                    .iter()
                    .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                    .unwrap_or(b.len() - i);
                (end > i).then_some(end)
            }
        }
    }

    pub(super) fn relayed(
        text: &str,
        from: &PeerId,
    ) -> Option<Result<(Option<String>, Payload), HubError>> {
        let b = text.as_bytes();
        let mut i = skip_ws(b, 0);
        if b.get(i) != Some(&b'{') {
            return None;
        }
        let from_json = crate::hub::protocol::json_string(from.as_str());
        let mut out = String::with_capacity(text.len() + from_json.len() + 9);
        out.push('{');
        let mut to = None;
        i = skip_ws(b, i + 1);
        if b.get(i) == Some(&b'}') {
            i += 1;
        } else {
            loop {
                if b.get(i) != Some(&b'"') {
                    return None;
                }
                let key_end = string_end(b, i)?;
                let key = &text[i..key_end];
                if memchr::memchr(b'\\', key.as_bytes()).is_some() {
                    return None;
                }
                i = skip_ws(b, key_end);
                if b.get(i) != Some(&b':') {
                    return None;
                }
                i = skip_ws(b, i + 1);
                let value_end = value_end(b, i)?;
                let value = &text[i..value_end];
                // The sender's `from` is dropped (the hub's is written last), once it
                // is seen to be JSON: serde checks only what is copied.
                if key == r#""from""# {
                    serde_json::from_str::<&RawValue>(value).ok()?;
                } else {
                    if key == r#""to""# {
                        to = Some(value);
                    }
                    if out.len() > 1 {
                        out.push(',');
                    }
                    out.push_str(key);
                    out.push(':');
                    out.push_str(value);
                }
                i = skip_ws(b, value_end);
                match b.get(i) {
                    Some(b',') => i = skip_ws(b, i + 1),
                    Some(b'}') => {
                        i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        if skip_ws(b, i) != b.len() {
            return None;
        }
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(r#""from":"#);
        out.push_str(&from_json);
        out.push('}');
        // The one full reading: what was copied is JSON, or the serde way says why not.
        let raw = RawValue::from_string(out).ok()?;
        let to = match to {
            None | Some("null") => None,
            Some(to) => match serde_json::from_str::<String>(to) {
                Ok(to) => Some(to),
                Err(_) => return Some(Err(bad_to())),
            },
        };
        Some(
            Payload::with_from_last(raw, from.as_str())
                .map(|payload| (to, payload))
                .ok_or_else(|| HubError::BadRequest("message takes an object".into())),
        )
    }
}

fn bad_to() -> HubError {
    HubError::BadRequest("\"to\" must be a string".into())
}

/// A JSON object's members in the order they were written, each value as its text.
/// Keys are read unescaped, so a key spelled with escapes is the key it spells.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Key;
        impl<'de> serde::de::DeserializeSeed<'de> for Key {
            type Value = Cow<'de, str>;
            fn deserialize<D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> Result<Self::Value, D::Error> {
                d.deserialize_str(self)
            }
        }
        impl<'de> serde::de::Visitor<'de> for Key {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(s))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(s.to_owned()))
            }
        }
        struct Map;
        impl<'de> serde::de::Visitor<'de> for Map {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some(key) = map.next_key_seed(Key)? {
                    members.push((key, map.next_value::<&RawValue>()?));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Map)
    }
}

/// [`Members`] written out again, without any `from` of the sender's, with the hub's
/// `from` last when there is one: each value is copied as it was written.
struct Object<'a, 'b> {
    members: &'b [(Cow<'a, str>, &'a RawValue)],
    from: Option<&'b str>,
}

impl serde::Serialize for Object<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        for (key, value) in self.members.iter().filter(|(k, _)| k != "from") {
            map.serialize_entry(key.as_ref(), value)?;
        }
        if let Some(from) = self.from {
            map.serialize_entry("from", from)?;
        }
        map.end()
    }
}

/// The one argument of a `message` written as clients write it, `["message",{...}]`,
/// found without reading it; `None` for any other writing ([`first_arg`] reads those).
/// It may still hold more than one argument, `{...},{...}`: [`relayed`] refuses that,
/// and the caller then takes the long way.
fn sole_object(text: &str) -> Option<&str> {
    let object = text.strip_prefix(r#"["message","#)?.strip_suffix(']')?;
    (object.starts_with('{') && object.ends_with('}')).then_some(object)
}

/// What every event handler of one socket works with.
#[derive(Clone)]
struct Peer {
    hub: Hub,
    id: PeerId,
    sink: Arc<SioSink>,
    /// Spends a rate token; false (with an `error` queued) when over the limit.
    allowed: Arc<dyn Fn(&SocketRef) -> bool + Send + Sync>,
}

/// How long after its connect middleware a socket must be connected; one that is not
/// failed its connect answer and is forgotten.
const CONNECT_ANSWER_GRACE: Duration = Duration::from_secs(1);

/// Registers the peer and its event handlers, before the client is told it is
/// connected; refuses it past the connection caps.
fn register(hub: Hub, socket: SocketRef) -> Result<(), Refusal> {
    let ip = super::client_ip_parts(&socket.req_parts().extensions);
    let guard = match socket.req_parts().extensions.get::<SessionPlace>() {
        Some(place) => place.clone(),
        // A session opened without the hub's routes in front (none in rtcdev).
        None => SessionPlace::new(hub.limits().acquire(ip)?, hub.config()),
    };
    let limit = guard.limit.clone();
    let id = PeerId::from_string(socket.id.to_string());
    tracing::debug!(peer = %id, transport = ?socket.transport_type(), "socket.io connected");
    let (outbox, overflow) = Outbox::new(hub.config().max_queue_bytes);
    let sink = Arc::new(SioSink {
        outbox,
        socket: Mutex::new(Some(socket.clone())),
    });
    hub.rooms().connect(id.clone(), sink.clone());
    // Ends the peer's task (and frees its place under the connection caps) when the
    // socket goes away: the event handlers keep the sink alive for as long as
    // socketioxide keeps them, which is not bounded by the connection.
    let gone = tokio_util::sync::CancellationToken::new();
    hub.tasks().spawn(forward(
        hub.clone(),
        (id.clone(), socket.clone()),
        (sink.clone(), overflow),
        guard,
        gone.clone(),
    ));
    // If the connect answer cannot be sent (the client went away that instant),
    // socketioxide drops the socket without a disconnect event; the peer must not
    // stay registered.
    // Only this registration: a client that connects to `/` again on the same session
    // comes back under the same id.
    let registered: Arc<dyn PeerSink> = sink.clone();
    let (h, s, pid, g, r) = (
        hub.clone(),
        socket.clone(),
        id.clone(),
        gone.clone(),
        registered.clone(),
    );
    tokio::spawn(async move {
        tokio::time::sleep(CONNECT_ANSWER_GRACE).await;
        if !s.connected() {
            h.rooms().disconnect_sink(&pid, &r);
            g.cancel();
        }
    });
    let cfg = hub.config();
    let rate = cfg.rate_per_sec;
    let (err_sink, counted) = (sink.clone(), hub.clone());
    // Every event spends a token, whatever its name: the native front-end's rule
    // (`FrameLimit`), with a socket.io disconnect for a flood.
    let allowed = move |socket: &SocketRef| -> bool {
        let counters = &counted.limits().counters;
        let verdict = limit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .check(std::time::Instant::now());
        if verdict != Verdict::Pass {
            counters
                .rate_limited_frames
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if let Verdict::Refused { tell: true } = verdict {
            err_sink.error(&HubError::RateLimited(rate));
        }
        if verdict == Verdict::Flooding {
            counters
                .closed_for_flooding
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            crate::info_limited!("closed for flooding", peer = %socket.id, "socket.io peer keeps sending past its rate limit; disconnecting");
            // Through the peer's queue, behind the error that says why: the disconnect
            // runs handlers, and this runs inside one.
            if err_sink.outbox.push(Out::Disconnect, 0) {
                err_sink.outbox.wake();
            } else {
                let s = socket.clone();
                tokio::spawn(async move {
                    let _ = s.disconnect();
                });
            }
        }
        verdict == Verdict::Pass
    };

    let allowed: Arc<dyn Fn(&SocketRef) -> bool + Send + Sync> = Arc::new(allowed);
    // Events the hub does not know spend tokens too.
    let a = allowed.clone();
    socket.on_fallback(Inline(move |socket: SocketRef, _| {
        a(&socket);
        Either::<_, Ready<()>>::Left(std::future::ready(()))
    }));

    let order = InOrder::default();
    let peer = Peer {
        hub: hub.clone(),
        id: id.clone(),
        sink: sink.clone(),
        allowed,
    };
    let (p, o) = (peer.clone(), order.clone());
    socket.on("join", move |socket: SocketRef, TryData::<Value>(data)| {
        let Peer {
            hub,
            id,
            sink,
            allowed,
        } = p.clone();
        o.then(async move {
            if !allowed(&socket) {
                return;
            }
            // An argument that is not JSON is refused like one without a room.
            let room = match &data {
                Ok(Value::String(s)) => Some(s.as_str()),
                Ok(Value::Object(m)) => m.get("room").and_then(Value::as_str),
                _ => None,
            };
            let result = match room
                .ok_or_else(|| HubError::BadRequest("join takes a room name or {room}".into()))
                .and_then(RoomName::parse)
                .and_then(|r| {
                    if hub.limits().join_allowed(ip) {
                        Ok(r)
                    } else {
                        Err(HubError::JoinsRateLimited(hub.limits().join_rate()))
                    }
                }) {
                Ok(room) => {
                    hub.rooms()
                        .join(&id, room, Arc::new(Value::Object(Map::new())))
                        .await
                }
                Err(e) => Err(e),
            };
            // On success the room core has queued `joined` itself, ahead of the room's
            // next words.
            if let Err(e) = result {
                sink.error(&e);
            }
        })
    });

    let (p, o) = (peer.clone(), order.clone());
    socket.on(
        "leave",
        Inline(move |socket: SocketRef, _| {
            let Peer {
                hub,
                id,
                sink,
                allowed,
            } = p.clone();
            o.now(move || {
                if allowed(&socket)
                    && let Err(e) = hub.rooms().leave(&id)
                {
                    sink.error(&e);
                }
            })
        }),
    );

    let (p, o) = (peer, order.clone());
    socket.on(
        "message",
        Inline(move |socket: SocketRef, v: SioValue| {
            let Peer {
                hub,
                id,
                sink,
                allowed,
            } = p.clone();
            let asked = match &v {
                // Counted and answered like any refused frame.
                SioValue::Str(text, None) => message(text, &id).unwrap_or_else(|| {
                    Err(HubError::BadRequest(
                        "message takes one argument, the JSON data to relay".into(),
                    ))
                }),
                _ => Err(HubError::BadRequest(
                    "binary attachments are not relayed: send them as text (base64)".into(),
                )),
            };
            o.now(move || {
                if !allowed(&socket) {
                    return;
                }
                let (to, text) = match asked {
                    Ok(asked) => asked,
                    Err(e) => return sink.error(&e),
                };
                if let Err(e) = hub.rooms().signal(&id, to.as_deref(), text) {
                    sink.error(&e);
                }
            })
        }),
    );

    // Last in line too: what the peer sent before it went away is relayed first.
    let (h, pid) = (hub.clone(), id.clone());
    socket.on_disconnect(move |reason: DisconnectReason| {
        let (hub, id, gone, registered) =
            (h.clone(), pid.clone(), gone.clone(), registered.clone());
        order.now(move || {
            tracing::debug!(peer = %id, ?reason, "socket.io disconnected");
            hub.rooms().disconnect_sink(&id, &registered);
            gone.cancel();
        })
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message asks what it asks when read through a tree: the same `to`, the same
    /// object without a `from` of the sender's (however it is written) for native
    /// peers, and with the hub's `from` for socket.io peers; the same errors.
    #[test]
    fn a_message_reads_as_its_tree() {
        let sender = PeerId::from_string("abc\"d".into());
        let by_tree = |text: &str| -> Result<(Option<String>, Value, Value), String> {
            let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(text) else {
                return Err("message takes an object".into());
            };
            let to = match obj.get("to") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => return Err(bad_to().to_string()),
            };
            obj.remove("from");
            let mut sio = obj.clone();
            sio.insert("from".into(), sender.as_str().into());
            Ok((to, Value::Object(obj), Value::Object(sio)))
        };
        let read = |r: Result<(Option<String>, Payload), HubError>| {
            r.map(|(to, p)| {
                let sio = p.with_from().expect("the socket.io form is built").get();
                (
                    to,
                    serde_json::from_str::<Value>(&p).unwrap(),
                    serde_json::from_str::<Value>(sio).unwrap(),
                )
            })
            .map_err(|e| e.to_string())
        };
        let cases = [
            r#"{"to":"peer-1","sdp":{"type":"offer","sdp":"v=0\r\n"}}"#,
            r#"{"ice":{"candidate":"a"},"to":null}"#,
            r#"{"x":1}"#,
            "{}",
            " { \"a\" : [1, 2, {\"b\": null}] } ",
            r#"{"to":"a","to":"b"}"#,
            r#"{"to":5}"#,
            r#"{"to":["a"]}"#,
            r#"{"from":"someone-else","to":"p"}"#,
            r#"{"from":1,"x":2,"from":3}"#,
            r#"{"\u0066rom":"someone-else","\u0074o":"q"}"#,
            r#"{"nested":{"from":"x"}}"#,
            "[1,2]",
            r#""text""#,
            "null",
            // Delimiters inside strings, escaped quotes, nesting, every kind of value.
            r#"{"s":"a\"}{,:[\\","o":{"k":["}",{"x":"]"}]},"n":-1.5e3,"t":true,"f":false,"z":null}"#,
            " {\n\t\"to\" :\r \"p\" ,\"a\":[ 1 , [ ] , { } ] , \"from\" : { \"x\" : 1 } }\n",
            r#"{"from":"x"}"#,
            r#"{"to":"\u0070"}"#,
            r#"{"emoji":"\ud83d\ude00 é"}"#,
            // Not JSON, or not one object: refused, whichever way it is read.
            r#"{"a":1 "b":2}"#,
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            r#"{"a":"x"} {"b":1}"#,
            r#"{"a":[1,2}"#,
            r#"{"a":"unterminated}"#,
            r#"{"a":tru}"#,
            "{\"a\":\"\u{1}\"}",
            // ... in the sender's `from` too, which is not relayed.
            r#"{"from":1x,"a":1}"#,
            r#"{"from":[},"a":1}"#,
            "{\"from\":\"\u{1}\"}",
            r#"{"from":[1,"to":"B"},"to":"C"}"#,
            "{",
            "",
        ];
        for text in cases {
            let asked = read(relayed(text, &sender));
            assert_eq!(asked, by_tree(text), "{text}");
            if let Ok((_, native, _)) = &asked {
                assert!(native.get("from").is_none(), "{text}");
            }
            // The quick way writes what serde writes, to the byte, or leaves the text
            // to serde; it takes every object whose keys have no escapes.
            let quick = compact::relayed(text, &sender);
            let by_members = relayed_by_members(text, &sender);
            match (&quick, &by_members) {
                (Some(Ok((to, p))), Ok((to2, p2))) => {
                    assert_eq!(to, to2, "{text}");
                    assert_eq!(
                        p.with_from().unwrap().get(),
                        p2.with_from().unwrap().get(),
                        "{text}"
                    );
                    assert_eq!(&**p, &**p2, "{text}");
                }
                (Some(Err(e)), Err(e2)) => assert_eq!(e.to_string(), e2.to_string(), "{text}"),
                (None, _) => assert!(
                    text.contains(r#"{"\u"#) || by_members.is_err(),
                    "only escaped keys and refusals go the serde way: {text}"
                ),
                _ => panic!("the two ways disagree on {text}"),
            }
        }
        // Read from the event's text: as clients write it, with spaces, with more
        // than one argument (the first counts), with none.
        for (packet, object) in [
            (
                r#"["message",{"to":"p","x":1}]"#,
                Some(r#"{"to":"p","x":1}"#),
            ),
            (r#"[ "message" , {"to":"p"} ]"#, Some(r#"{"to":"p"}"#)),
            (
                r#"["message",{"to":"p"},{"to":"q"}]"#,
                Some(r#"{"to":"p"}"#),
            ),
            (r#"["message",{"to":5},{"to":"q"}]"#, Some(r#"{"to":5}"#)),
            (r#"["message","text"]"#, Some(r#""text""#)),
            (r#"["message"]"#, None),
        ] {
            let asked = message(packet, &sender).map(read);
            assert_eq!(asked, object.map(by_tree), "{packet}");
        }
    }

    /// A native peer's message reaches socket.io peers as its tree with the hub's
    /// `from` would: a `from` of the sender's (plain or spelled with escapes) never
    /// survives, a non-object is wrapped.
    #[test]
    fn a_native_message_reaches_socketio_as_its_tree() {
        let from = PeerId::from_string("abc\"d".into());
        for data in [
            r#"{"to":"x","sdp":{"type":"offer","sdp":"v=0\r\n"}}"#,
            "{}",
            " { \"a\" : [1, 2, {\"b\": null}] } ",
            r#"{"from":"someone-else","a":1}"#,
            r#"{"\u0066rom":"someone-else"}"#,
            r#"{"to":5,"nested":{"from":1}}"#,
            "[1,2]",
            r#""text""#,
            "{not json}",
        ] {
            let sent: Value = serde_json::from_str(from_native(data, &from).get()).unwrap();
            let tree: Value = serde_json::from_str(with_from(data, &from).get()).unwrap();
            assert_eq!(sent, tree, "{data}");
            assert_eq!(sent["from"], "abc\"d", "{data}");
        }
        // JSON serde builds no tree of still reaches socket.io peers, as it is.
        for (data, form) in [
            ("1e999", r#"{"data":1e999,"from":"abc\"d"}"#),
            (r#""\ud800""#, r#"{"data":"\ud800","from":"abc\"d"}"#),
            (r#"{"n":1e999}"#, r#"{"n":1e999,"from":"abc\"d"}"#),
        ] {
            assert_eq!(from_native(data, &from).get(), form, "{data}");
        }
    }
}
