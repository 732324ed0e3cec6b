//! The native front-end: `GET /ws`, one JSON object per text frame (docs/PROTOCOL.md).

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::WebSocketUpgrade;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::response::Response;
use axum::routing::get;
use futures_util::SinkExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Hub;
use super::core::{Event, Payload, PeerSink};
use super::limits::ConnGuard;
use super::protocol::{self, ClientFrame, HubError, PeerId, json_string};
use super::queue::Outbox;
use super::ratelimit::{FrameLimit, Verdict};

/// Close code: going away (server shutdown).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: policy violation (a peer that does not read its queue).
pub const CLOSE_POLICY: u16 = 1008;
/// Close code: message too big.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code (application range): a newer connection of the same client resumed this
/// peer's place.
pub const CLOSE_REPLACED: u16 = 4001;
/// The close of a connection whose place a resume elsewhere took.
const REPLACED: (u16, &str) = (CLOSE_REPLACED, "resumed by a newer connection");
/// The close reason for a peer whose queue overflowed.
const QUEUE_FULL: &str = "send queue full: the peer does not read";
/// How long a close frame may take to go out before the connection is just dropped.
const CLOSE_SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// Most frames written with one flush.
const WRITE_BATCH_FRAMES: usize = 64;
/// Bytes tungstenite gathers before writing to the socket; `flush` writes sooner.
const WS_WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// The `/ws` route.
pub fn routes(hub: Hub) -> Router {
    Router::new().route(
        "/ws",
        get(move |req: axum::extract::Request| {
            let hub = hub.clone();
            async move {
                use axum::extract::FromRequestParts;
                use axum::response::IntoResponse;
                let ip = super::client_ip(&req);
                let (mut parts, _) = req.into_parts();
                let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
                    Ok(ws) => ws,
                    Err(e) => return e.into_response(),
                };
                // The middleware admitted it; the place is taken here, for the life of
                // the connection.
                match hub.limits().acquire(ip) {
                    Ok(guard) => upgrade(hub, ws, guard),
                    Err(refusal) => refusal.into_response(),
                }
            }
        }),
    )
}

fn upgrade(hub: Hub, ws: WebSocketUpgrade, guard: ConnGuard) -> Response {
    let max = hub.config().max_frame_bytes;
    ws.read_buffer_size(super::WS_READ_BUFFER_BYTES)
        .write_buffer_size(WS_WRITE_BUFFER_BYTES)
        // Frames up to twice the limit are read and answered with 1009 by us; larger
        // ones are cut off by tungstenite before they are buffered.
        .max_message_size(max.saturating_mul(2))
        .max_frame_size(max.saturating_mul(2))
        .on_upgrade(move |socket| {
            let tasks = hub.tasks().clone();
            tasks.track_future(async move {
                run(hub, socket, guard.ip()).await;
                drop(guard);
            })
        })
}

/// A native peer's sink: frames queue for the connection's task, bounded in bytes, and
/// wake it (the task, which owns the socket, is the only one that empties the queue); a
/// resume elsewhere marks it `replaced` and cancels `stop`, which the task acts on.
struct NativeSink {
    outbox: Outbox<Utf8Bytes>,
    /// Cancelled at the hub's shutdown (its child) or by a resume elsewhere.
    stop: CancellationToken,
    /// Set before `stop` is cancelled for a resume elsewhere.
    replaced: AtomicBool,
    /// The test hook's: this peer's candidates are dropped.
    drops_candidates: AtomicBool,
}

impl NativeSink {
    fn push(&self, text: String) {
        self.push_frame(Utf8Bytes::from(text));
    }

    fn push_frame(&self, frame: Utf8Bytes) {
        let n = frame.len();
        if self.outbox.push(frame, n) {
            self.outbox.wake();
        }
    }
}

impl PeerSink for NativeSink {
    fn deliver(&self, event: &Event) {
        match event {
            Event::Replaced => {
                self.replaced.store(true, Ordering::Release);
                self.stop.cancel();
            }
            // A native sender's frame, written once for every native recipient.
            Event::Signal { from, data } => match data.native_frame(from) {
                Some(frame) => self.push_frame(frame.clone()),
                None => self.push(encode(event)),
            },
            _ => self.push(encode(event)),
        }
    }
}

/// The `signal` frame from `from` carrying `data` (JSON text), and where `data` lies in
/// it.
pub fn signal_frame(from: &str, data: &str) -> (String, Range<usize>) {
    const HEAD: &str = r#"{"type":"signal","from":"#;
    const MID: &str = r#","data":"#;
    // Sized once: `format!` would grow the buffer by doubling through a kilobyte of
    // data, copying it each time. Ids need no escape but for a test's odd one.
    let plain = !from.bytes().any(|c| c == b'"' || c == b'\\' || c < 0x20);
    let from_len = if plain {
        from.len() + 2
    } else {
        json_string(from).len()
    };
    let mut out = String::with_capacity(HEAD.len() + from_len + MID.len() + data.len() + 1);
    out.push_str(HEAD);
    if plain {
        out.push('"');
        out.push_str(from);
        out.push('"');
    } else {
        out.push_str(&json_string(from));
    }
    out.push_str(MID);
    let start = out.len();
    out.push_str(data);
    let end = out.len();
    out.push('}');
    (out, start..end)
}

/// The native frame for a core event.
pub fn encode(event: &Event) -> String {
    match event {
        Event::PeerJoined { id, meta } => {
            format!(
                r#"{{"type":"peer-joined","id":{},"meta":{}}}"#,
                json_string(id.as_str()),
                meta
            )
        }
        Event::Joined {
            id,
            room,
            peers,
            resumed,
        } => {
            let mut v = serde_json::json!({
                "type": "joined",
                "room": room.as_str(),
                "id": id.as_str(),
                "peers": &**peers,
            });
            if *resumed {
                v["resumed"] = true.into();
            }
            v.to_string()
        }
        // Never queued: the sink acts on it (see `NativeSink::deliver`).
        Event::Replaced => r#"{"type":"replaced"}"#.to_string(),
        Event::PeerLeft { id } => format!(
            r#"{{"type":"peer-left","id":{}}}"#,
            json_string(id.as_str())
        ),
        Event::Signal { from, data } => match data.native_frame(from) {
            Some(frame) => frame.as_str().to_string(),
            None => signal_frame(from.as_str(), data.text()).0,
        },
    }
}

async fn run(hub: Hub, socket: WebSocket, ip: Option<std::net::IpAddr>) {
    let id = PeerId::random();
    let span = tracing::debug_span!("ws", peer = %id);
    serve_peer(hub, socket, id, ip).instrument(span).await
}

/// The `welcome` frame for peer `id`.
fn welcome(hub: &Hub, id: &PeerId) -> String {
    let cfg = hub.config();
    serde_json::json!({
        "type": "welcome",
        "id": id.as_str(),
        "iceServers": cfg.ice.servers(id.as_str()),
        "roomSize": cfg.max_peers_per_room,
        "resume": hub.resume_token(id),
    })
    .to_string()
}

async fn serve_peer(hub: Hub, mut socket: WebSocket, mut id: PeerId, ip: Option<std::net::IpAddr>) {
    let cfg = hub.config().clone();
    let (outbox, mut overflow) = Outbox::new(cfg.max_queue_bytes);
    // Cancelled by the hub's shutdown (a child token: polling the hub's own token would
    // take the one lock that every connection shares) or by a resume elsewhere; which
    // of the two is read once it fires. One wait for both, registered once for the life
    // of the connection, not once per frame.
    let stop = hub.shutdown_token().child_token();
    let sink = Arc::new(NativeSink {
        outbox,
        stop: stop.clone(),
        replaced: AtomicBool::new(false),
        drops_candidates: AtomicBool::new(false),
    });
    let registered: Arc<dyn PeerSink> = sink.clone();
    let rooms = hub.rooms().clone();
    rooms.connect(id.clone(), registered.clone());
    tracing::debug!("connected");
    sink.push(welcome(&hub, &id));

    let mut limit = FrameLimit::new(cfg.rate_per_sec, cfg.rate_burst);
    let counters = &hub.limits().counters;
    let mut last_seen = Instant::now();
    let mut heartbeat = tokio::time::interval(cfg.heartbeat_timeout / 3);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    // Made and pinned once: a fresh wait every turn of the loop would lock the token's
    // state to register and again to drop, for every frame.
    let stopping = stop.cancelled();
    tokio::pin!(stopping);
    // The wait for queued frames, made anew only once it has fired.
    let mut queued = std::pin::pin!(sink.outbox.woken());

    let close: Option<(u16, &str)> = loop {
        tokio::select! {
            biased;
            _ = &mut overflow => break Some((CLOSE_POLICY, QUEUE_FULL)),
            _ = &mut stopping => break Some(if sink.replaced.load(Ordering::Acquire) {
                REPLACED
            } else {
                (CLOSE_GOING_AWAY, "server shutting down")
            }),
            _ = &mut queued => {
                queued.set(sink.outbox.woken());
                // Whatever is queued goes out in the same write: one flush (one
                // syscall) for a burst instead of one per frame.
                let write = async {
                    let mut frames = 0;
                    while frames < WRITE_BATCH_FRAMES {
                        let Some(text) = sink.outbox.pop() else { break };
                        socket.feed(Message::Text(text)).await?;
                        frames += 1;
                    }
                    if frames == WRITE_BATCH_FRAMES {
                        // Maybe more is queued: look again once the stop, overflow and
                        // replace branches have been checked.
                        sink.outbox.wake();
                    }
                    socket.flush().await
                };
                tokio::pin!(write);
                // A peer that stops reading blocks this write; the kick ends the wait,
                // and so does the shutdown. A resume elsewhere lets it finish first.
                tokio::select! {
                    r = &mut write => if r.is_err() { break None },
                    _ = &mut overflow => break Some((CLOSE_POLICY, QUEUE_FULL)),
                    _ = &mut stopping => {
                        if !sink.replaced.load(Ordering::Acquire) {
                            break None;
                        }
                        match tokio::time::timeout(CLOSE_SEND_TIMEOUT, &mut write).await {
                            Ok(Ok(())) => break Some(REPLACED),
                            _ => break None,
                        }
                    }
                }
            }
            msg = socket.recv() => {
                let now = Instant::now();
                last_seen = now;
                match msg {
                    None => break None,
                    Some(Err(e)) => {
                        let text = e.to_string();
                        tracing::debug!(%text, "read error");
                        if text.contains("too long") || text.contains("too big") || text.contains("Space limit") {
                            break Some((CLOSE_TOO_BIG, "frame too large"));
                        }
                        break None;
                    }
                    Some(Ok(msg)) => {
                        if let Message::Close(_) = msg {
                            break None;
                        }
                        if let Message::Text(text) = &msg
                            && text.len() > cfg.max_frame_bytes
                        {
                            sink.push(HubError::TooLarge(cfg.max_frame_bytes).frame());
                            break Some((CLOSE_TOO_BIG, "frame too large"));
                        }
                        // Every frame a client sends spends a token, pings and binary
                        // frames too.
                        match limit.check(now) {
                            Verdict::Pass => {}
                            Verdict::Refused { tell } => {
                                counters.rate_limited_frames.fetch_add(1, Ordering::Relaxed);
                                if tell {
                                    sink.push(HubError::RateLimited(cfg.rate_per_sec).frame());
                                }
                                continue;
                            }
                            Verdict::Flooding => {
                                counters.rate_limited_frames.fetch_add(1, Ordering::Relaxed);
                                counters.closed_for_flooding.fetch_add(1, Ordering::Relaxed);
                                crate::info_limited!("closed for flooding", peer = %id, "peer keeps sending past its rate limit; closing");
                                break Some((CLOSE_POLICY, "rate limit exceeded"));
                            }
                        }
                        match msg {
                            Message::Text(text) => {
                                if let Some(resumed) = handle(&hub, &id, &sink, text.as_str(), ip).await {
                                    id = resumed;
                                    tracing::debug!(peer = %id, "resumed");
                                    sink.push(welcome(&hub, &id));
                                }
                            }
                            Message::Binary(_) => {
                                sink.push(HubError::BadRequest("binary frames are not part of the protocol; send JSON text".into()).frame());
                            }
                            _ => {}
                        }
                    }
                }
            }
            _ = heartbeat.tick() => {
                if last_seen.elapsed() >= cfg.heartbeat_timeout {
                    tracing::info!(peer = %id, "no frame or pong within the heartbeat timeout; dropping");
                    break None;
                }
                let ping = socket.send(Message::Ping(Default::default()));
                if !matches!(tokio::time::timeout(cfg.heartbeat_timeout, ping).await, Ok(Ok(()))) {
                    break None;
                }
            }
        }
    };
    // Counted before the room is told the peer left (as the socket.io front-end does):
    // whoever sees `peer-left` and then reads `/healthz` finds the overflow counted.
    if close.is_some_and(|(_, reason)| reason == QUEUE_FULL) {
        counters.queue_overflows.fetch_add(1, Ordering::Relaxed);
        crate::info_limited!("peer does not read", peer = %id, "peer does not read its messages; disconnected");
    }
    rooms.disconnect_sink(&id, &registered);
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        };
        let _ = tokio::time::timeout(CLOSE_SEND_TIMEOUT, async {
            // What was queued (an error frame saying why, say) goes out before the
            // close, except to a peer that is being closed for not reading.
            if code != CLOSE_POLICY {
                while let Some(text) = sink.outbox.pop() {
                    socket.send(Message::Text(text)).await?;
                }
            }
            socket.send(Message::Close(Some(frame))).await
        })
        .await;
    }
    tracing::debug!("disconnected");
}

/// Set in tests only, to a display name: the ICE candidates a peer of that name sends
/// are dropped (a signaling path that loses them), so the inspector's verdict for lost
/// candidates can be checked with real browsers.
pub const TEST_HOOK_DROP_CANDIDATES_FROM: &str = "RTCDEV_TEST_HOOK_DROP_CANDIDATES_FROM";

fn drop_candidates_from() -> Option<&'static str> {
    static NAME: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    NAME.get_or_init(|| std::env::var(TEST_HOOK_DROP_CANDIDATES_FROM).ok())
        .as_deref()
}

/// Acts on one client frame; `Some(id)` when the connection now speaks as peer `id`
/// (a granted resume).
async fn handle(
    hub: &Hub,
    id: &PeerId,
    sink: &NativeSink,
    text: &str,
    ip: Option<std::net::IpAddr>,
) -> Option<PeerId> {
    let rooms = hub.rooms();
    let result = match protocol::decode(text) {
        Err(e) => Err(e),
        Ok(ClientFrame::Resume { id: old, token }) => {
            if !hub.resume_token_valid(&old, &token) {
                Err(HubError::ResumeRefused(
                    "the token is not the one this hub gave that peer".into(),
                ))
            } else {
                let old = PeerId::from_string(old);
                match rooms.resume(id, &old) {
                    Ok(()) => return Some(old),
                    Err(e) => Err(e),
                }
            }
        }
        Ok(ClientFrame::Ping) => {
            sink.push(r#"{"type":"pong"}"#.to_string());
            Ok(())
        }
        Ok(ClientFrame::Join { .. }) if !hub.limits().join_allowed(ip) => {
            Err(HubError::JoinsRateLimited(hub.limits().join_rate()))
        }
        // The room core queues `joined` itself, ahead of anything the room says next.
        Ok(ClientFrame::Join { room, meta }) => {
            if let Some(name) = drop_candidates_from() {
                sink.drops_candidates.store(
                    meta.get("name").and_then(|n| n.as_str()) == Some(name),
                    Ordering::Relaxed,
                );
            }
            rooms.join(id, room, meta).await.map(|_| ())
        }
        Ok(ClientFrame::Leave) => rooms.leave(id),
        // The test hook's lost candidates: dropped without a word.
        Ok(ClientFrame::Signal { data, .. })
            if sink.drops_candidates.load(Ordering::Relaxed)
                && data.contains(r#""kind":"ice""#) =>
        {
            Ok(())
        }
        Ok(ClientFrame::Signal { to, data }) => {
            // Written here once in the form native recipients get, and shared by them.
            let (frame, at) = signal_frame(id.as_str(), data);
            let payload = Payload::native(Utf8Bytes::from(frame), id.clone(), at)
                .unwrap_or_else(|| data.into());
            rooms.signal(id, to.as_deref(), payload)
        }
    };
    if let Err(e) = result {
        // Quoted: the message may hold what the client sent (an unknown `to`).
        tracing::debug!(code = e.code(), error = ?e.to_string(), "refused frame");
        sink.push(e.frame());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_frames_are_json_with_the_hubs_from() {
        let from = PeerId::from_string("a\"b".into());
        let text = encode(&Event::Signal {
            from,
            data: r#"{"sdp":"v=0\r\n","n":[1,2]}"#.into(),
        });
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "signal", "from": "a\"b", "data": {"sdp": "v=0\r\n", "n": [1, 2]}})
        );
    }
}
