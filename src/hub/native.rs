//! The native front-end: `GET /ws`, one JSON object per text frame (shared/PROTOCOL.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::WebSocketUpgrade;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use axum::response::Response;
use axum::routing::get;
use futures_util::SinkExt;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::Hub;
use super::core::{Event, PeerSink};
use super::protocol::{self, ClientFrame, HubError, PeerId, json_string};
use super::ratelimit::TokenBucket;

/// Close code: going away (server shutdown).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: policy violation (a peer that does not read its queue).
pub const CLOSE_POLICY: u16 = 1008;
/// Close code: message too big.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: unsupported data (binary frames).
pub const CLOSE_PROTOCOL: u16 = 1002;
/// How long a close frame may take to go out before the connection is just dropped.
const CLOSE_SEND_TIMEOUT: Duration = Duration::from_secs(1);
/// Most frames written with one flush.
const WRITE_BATCH_FRAMES: usize = 64;
/// Bytes tungstenite gathers before writing to the socket; `flush` writes sooner.
const WS_WRITE_BUFFER_BYTES: usize = 16 * 1024;
/// At most one `rate-limited` error frame per this interval, so a flood does not
/// turn into a flood of errors.
const RATE_ERROR_INTERVAL: Duration = Duration::from_secs(1);

/// The `/ws` route.
pub fn routes(hub: Hub) -> Router {
    Router::new().route(
        "/ws",
        get(move |ws: WebSocketUpgrade| {
            let hub = hub.clone();
            async move { upgrade(hub, ws) }
        }),
    )
}

fn upgrade(hub: Hub, ws: WebSocketUpgrade) -> Response {
    let max = hub.config().max_frame_bytes;
    ws.read_buffer_size(super::WS_READ_BUFFER_BYTES)
        .write_buffer_size(WS_WRITE_BUFFER_BYTES)
        // Frames up to twice the limit are read and answered with 1009 by us; larger
        // ones are cut off by tungstenite before they are buffered.
        .max_message_size(max.saturating_mul(2))
        .max_frame_size(max.saturating_mul(2))
        .on_upgrade(move |socket| {
            let tasks = hub.tasks().clone();
            tasks.track_future(run(hub, socket))
        })
}

/// Outgoing queue of one connection, bounded in bytes.
struct NativeSink {
    tx: mpsc::UnboundedSender<Utf8Bytes>,
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
    overflowed: AtomicBool,
    /// Fired once, when the queue overflows: ends the connection even while its
    /// writer is blocked on a peer that does not read. (A oneshot, not a `Notify`:
    /// polling it takes no lock, and the connection polls it for every frame.)
    kick: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

impl NativeSink {
    fn push(&self, text: String) {
        if self.overflowed.load(Ordering::Relaxed) {
            return;
        }
        let n = text.len();
        if self.queued.fetch_add(n, Ordering::AcqRel) + n > self.max_bytes {
            self.overflowed.store(true, Ordering::Relaxed);
            let kick = self.kick.lock().map(|mut k| k.take());
            if let Ok(Some(kick)) = kick {
                let _ = kick.send(());
            }
            return;
        }
        let _ = self.tx.send(Utf8Bytes::from(text));
    }
}

impl PeerSink for NativeSink {
    fn deliver(&self, event: &Event) {
        self.push(encode(event));
    }
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
        Event::PeerLeft { id } => format!(
            r#"{{"type":"peer-left","id":{}}}"#,
            json_string(id.as_str())
        ),
        Event::Signal { from, data } => {
            // Sized once: `format!` would grow the buffer by doubling through a
            // kilobyte of data, copying it each time.
            const HEAD: &str = r#"{"type":"signal","from":"#;
            const MID: &str = r#","data":"#;
            let from = json_string(from.as_str());
            let mut out =
                String::with_capacity(HEAD.len() + from.len() + MID.len() + data.len() + 1);
            out.push_str(HEAD);
            out.push_str(&from);
            out.push_str(MID);
            out.push_str(data);
            out.push('}');
            out
        }
    }
}

async fn run(hub: Hub, socket: WebSocket) {
    let id = PeerId::random();
    let span = tracing::debug_span!("ws", peer = %id);
    serve_peer(hub, socket, id).instrument(span).await
}

async fn serve_peer(hub: Hub, mut socket: WebSocket, id: PeerId) {
    let cfg = hub.config().clone();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (kick_tx, mut kick) = oneshot::channel();
    let sink = Arc::new(NativeSink {
        tx,
        queued: Arc::new(AtomicUsize::new(0)),
        max_bytes: cfg.max_queue_bytes,
        overflowed: AtomicBool::new(false),
        kick: std::sync::Mutex::new(Some(kick_tx)),
    });
    let rooms = hub.rooms().clone();
    rooms.connect(id.clone(), sink.clone());
    tracing::debug!("connected");

    let welcome = serde_json::json!({
        "type": "welcome",
        "id": id.as_str(),
        "iceServers": cfg.ice.servers(id.as_str()),
    });
    sink.push(welcome.to_string());

    let mut bucket = TokenBucket::new(cfg.rate_per_sec, cfg.rate_burst);
    let mut last_rate_error: Option<Instant> = None;
    let mut last_seen = Instant::now();
    let mut heartbeat = tokio::time::interval(cfg.heartbeat_timeout / 3);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    // A child token: polling the hub's own token would take the one lock that every
    // connection shares, once per frame. Registered once for the life of the
    // connection, not once per frame.
    let shutdown = hub.shutdown_token().child_token();
    let stopping = shutdown.cancelled();
    tokio::pin!(stopping);

    let close: Option<(u16, &str)> = loop {
        tokio::select! {
            biased;
            _ = &mut stopping => break Some((CLOSE_GOING_AWAY, "server shutting down")),
            _ = &mut kick => {
                tracing::info!(peer = %id, "peer does not read its messages; disconnecting");
                break Some((CLOSE_POLICY, "send queue full: the peer does not read"));
            }
            out = rx.recv() => {
                let Some(text) = out else { break None };
                // Whatever else is queued goes out in the same write: one flush (one
                // syscall) for a burst instead of one per frame.
                let write = async {
                    let mut next = Some(text);
                    let mut frames = 0;
                    while let Some(text) = next.take() {
                        sink.queued.fetch_sub(text.len(), Ordering::AcqRel);
                        socket.feed(Message::Text(text)).await?;
                        frames += 1;
                        if frames < WRITE_BATCH_FRAMES {
                            next = rx.try_recv().ok();
                        }
                    }
                    socket.flush().await
                };
                // A peer that stops reading blocks this write; the kick ends the wait.
                tokio::select! {
                    r = write => if r.is_err() { break None },
                    _ = &mut kick => break Some((CLOSE_POLICY, "send queue full: the peer does not read")),
                    _ = &mut stopping => break None,
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
                    Some(Ok(Message::Text(text))) => {
                        if text.len() > cfg.max_frame_bytes {
                            sink.push(HubError::TooLarge(cfg.max_frame_bytes).frame());
                            break Some((CLOSE_TOO_BIG, "frame too large"));
                        }
                        if !bucket.take_at(now) {
                            if last_rate_error.is_none_or(|t| now.duration_since(t) >= RATE_ERROR_INTERVAL) {
                                last_rate_error = Some(now);
                                sink.push(HubError::RateLimited(cfg.rate_per_sec).frame());
                            }
                            continue;
                        }
                        handle(&hub, &id, &sink, text.as_str()).await;
                    }
                    Some(Ok(Message::Binary(_))) => {
                        sink.push(HubError::BadRequest("binary frames are not part of the protocol; send JSON text".into()).frame());
                    }
                    Some(Ok(Message::Close(_))) => break None,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
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
    rooms.disconnect(&id);
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        };
        let _ = tokio::time::timeout(CLOSE_SEND_TIMEOUT, async {
            // What was queued (an error frame saying why, say) goes out before the
            // close, except to a peer that is being closed for not reading.
            if code != CLOSE_POLICY {
                while let Ok(text) = rx.try_recv() {
                    socket.send(Message::Text(text)).await?;
                }
            }
            socket.send(Message::Close(Some(frame))).await
        })
        .await;
    }
    tracing::debug!("disconnected");
}

async fn handle(hub: &Hub, id: &PeerId, sink: &NativeSink, text: &str) {
    let rooms = hub.rooms();
    let result = match protocol::decode(text) {
        Err(e) => Err(e),
        Ok(ClientFrame::Ping) => {
            sink.push(r#"{"type":"pong"}"#.to_string());
            Ok(())
        }
        Ok(ClientFrame::Join { room, meta }) => {
            rooms.join(id, room.clone(), meta).await.map(|peers| {
                let frame = serde_json::json!({
                    "type": "joined",
                    "room": room.as_str(),
                    "id": id.as_str(),
                    "peers": peers,
                });
                sink.push(frame.to_string());
            })
        }
        Ok(ClientFrame::Leave) => rooms.leave(id),
        Ok(ClientFrame::Signal { to, data }) => rooms.signal(id, to.as_deref(), data),
    };
    if let Err(e) = result {
        tracing::debug!(code = e.code(), %e, "refused frame");
        sink.push(e.frame());
    }
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
