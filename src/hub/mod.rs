//! The signaling hub: one room core ([`core`]) with two wire front-ends, the native
//! WebSocket protocol at `/ws` ([`native`]) and socket.io at `/socket.io/`
//! ([`socketio`]). It knows nothing about TLS or serving files: `rtcdev serve` and
//! `rtcdev signal` mount [`Hub::routes`].

pub mod core;
pub mod limits;
pub mod native;
pub mod protocol;
pub mod queue;
pub mod ratelimit;
pub mod redis;
pub mod socketio;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::core::{MemoryRooms, Rooms};
use self::limits::{ConnLimits, LimitsReport};
use crate::ice::IceConfig;

/// Largest frame a peer may send (larger: close 1009).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;
/// Peers a room holds.
pub const DEFAULT_MAX_PEERS_PER_ROOM: usize = 16;
/// Sustained frames a second per connection.
pub const DEFAULT_RATE_PER_SEC: u32 = 100;
/// Frames a connection may send in a burst.
pub const DEFAULT_RATE_BURST: u32 = 200;
/// Bytes queued for one peer before it counts as not reading (close 1008).
pub const DEFAULT_MAX_QUEUE_BYTES: usize = 1024 * 1024;
/// Silence (no frame, no pong) after which a connection is dropped.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);
/// Hub connections one client address may hold (both front-ends together).
pub const DEFAULT_MAX_CONNS_PER_IP: usize = 32;
/// Hub connections in all.
pub const DEFAULT_MAX_CONNS: usize = 2048;
/// New hub connections a second from one address, sustained.
pub const DEFAULT_CONN_RATE_PER_SEC: u32 = 10;
/// New hub connections from one address in a burst.
pub const DEFAULT_CONN_RATE_BURST: u32 = 4 * DEFAULT_CONN_RATE_PER_SEC;
/// Joins a second one client address may make, sustained (bursts of six times that).
pub const DEFAULT_JOIN_RATE: u32 = 5;
/// How long shutdown waits for connections to close.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// WebSocket read buffer, held by every idle connection. Signaling frames are small (a
/// larger one grows it to the frame's size, for the rest of the connection); the 128 KiB
/// default would cost that much per idle connection. 2 KiB against 4: native 10.1 KB per
/// idle connection instead of 12.3 (`benches/hub.rs --idle 1000`), server CPU per
/// relayed message the same.
pub const WS_READ_BUFFER_BYTES: usize = 2 * 1024;

/// The hub's limits and ICE servers.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Largest frame in bytes.
    pub max_frame_bytes: usize,
    /// Peers per room.
    pub max_peers_per_room: usize,
    /// Sustained frames a second per connection.
    pub rate_per_sec: u32,
    /// Burst of frames per connection.
    pub rate_burst: u32,
    /// Bytes queued for a peer before it is disconnected.
    pub max_queue_bytes: usize,
    /// Silence after which a connection is dropped.
    pub heartbeat_timeout: Duration,
    /// ICE servers sent in `welcome`.
    pub ice: IceConfig,
    /// Share rooms with other hub processes through this Redis (`redis://HOST:PORT/DB`).
    pub redis: Option<String>,
    /// Hub connections one client address may hold.
    pub max_conns_per_ip: usize,
    /// Hub connections in all.
    pub max_conns: usize,
    /// New connections a second from one address (sustained, burst).
    pub conn_rate: (u32, u32),
    /// Joins a second from one address (sustained, burst).
    pub join_rate: (u32, u32),
    /// The key resume tokens are signed with; `None`: a random one for this process
    /// (tokens then die with it). serve derives one from its CA, so a restarted serve
    /// still grants the resumes of the pages that were in a call.
    pub resume_secret: Option<[u8; 32]>,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_peers_per_room: DEFAULT_MAX_PEERS_PER_ROOM,
            rate_per_sec: DEFAULT_RATE_PER_SEC,
            rate_burst: DEFAULT_RATE_BURST,
            max_queue_bytes: DEFAULT_MAX_QUEUE_BYTES,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            ice: IceConfig::default(),
            redis: None,
            max_conns_per_ip: DEFAULT_MAX_CONNS_PER_IP,
            max_conns: DEFAULT_MAX_CONNS,
            conn_rate: (DEFAULT_CONN_RATE_PER_SEC, DEFAULT_CONN_RATE_BURST),
            join_rate: (DEFAULT_JOIN_RATE, 6 * DEFAULT_JOIN_RATE),
            resume_secret: None,
        }
    }
}

/// A running hub; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    config: HubConfig,
    rooms: Arc<dyn Rooms>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    started: Instant,
    socketio: OnceLock<socketioxide::SocketIo>,
    limits: Arc<ConnLimits>,
    turn_report: OnceLock<TurnReport>,
    /// Signs the resume tokens `welcome` hands out (random per hub process).
    resume_key: ring::hmac::Key,
}

type TurnReport = Box<dyn Fn() -> serde_json::Value + Send + Sync>;

/// `/healthz` figures.
#[derive(Debug, Clone, Serialize)]
pub struct HubStats {
    /// rtcdev's version.
    pub version: &'static str,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Rooms with peers.
    pub rooms: usize,
    /// Connected peers (both front-ends).
    pub peers: usize,
    /// Messages relayed, one per recipient (by this process).
    pub messages_relayed: u64,
    /// The shared store (`--redis`): URL without password, state, this process's node id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<serde_json::Value>,
    /// Open connections, the limits, and how often each was hit.
    pub limits: LimitsReport,
    /// The embedded TURN server's allocations and refusals (`serve --turn`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn: Option<serde_json::Value>,
}

impl Hub {
    /// A hub with the room core the configuration asks for: shared through Redis with
    /// `redis` set (connecting now, and failing clearly if Redis cannot be reached),
    /// in memory otherwise.
    pub async fn start(config: HubConfig) -> anyhow::Result<Self> {
        match config.redis.clone() {
            Some(url) => {
                let rooms = redis::RedisRooms::connect(&url, config.max_peers_per_room).await?;
                Ok(Hub::with_rooms(config, Arc::new(rooms)))
            }
            None => Ok(Hub::new(config)),
        }
    }

    /// A hub with in-memory rooms.
    pub fn new(config: HubConfig) -> Self {
        let rooms = Arc::new(MemoryRooms::new(config.max_peers_per_room));
        Hub::with_rooms(config, rooms)
    }

    /// A hub over any room core implementation.
    pub fn with_rooms(config: HubConfig, rooms: Arc<dyn Rooms>) -> Self {
        let limits = Arc::new(ConnLimits::new(
            config.max_conns_per_ip,
            config.max_conns,
            config.conn_rate.0,
            config.conn_rate.1,
            config.join_rate,
        ));
        let resume_key = match config.resume_secret {
            Some(secret) => ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
            None => {
                ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
                    .expect("the system's random source")
            }
        };
        Hub {
            inner: Arc::new(HubInner {
                limits,
                turn_report: OnceLock::new(),
                config,
                rooms,
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
                started: Instant::now(),
                socketio: OnceLock::new(),
                resume_key,
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// The room core.
    pub fn rooms(&self) -> &Arc<dyn Rooms> {
        &self.inner.rooms
    }

    /// `/ws` and `/socket.io/`, to merge into a server's router. A new connection
    /// (a WebSocket upgrade, a socket.io handshake) past the per-address or total cap
    /// is answered 429 or 503 before anything is set up for it.
    pub fn routes(&self) -> Router {
        let hub = self.clone();
        native::routes(self.clone())
            .merge(socketio::routes(self.clone()))
            .layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    let hub = hub.clone();
                    async move { admit(&hub, req, next).await }
                },
            ))
    }

    /// Adds the embedded TURN server's figures to `/healthz`.
    pub fn attach_turn_report(
        &self,
        report: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) {
        let _ = self.inner.turn_report.set(Box::new(report));
    }

    /// The resume token for peer `id`: given to that connection only (in `welcome`), it
    /// lets the same client take its place back from a new connection.
    pub fn resume_token(&self, id: &protocol::PeerId) -> String {
        use base64::Engine;
        let tag = ring::hmac::sign(&self.inner.resume_key, id.as_str().as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// Whether `token` is the resume token of peer `id` (compared in constant time).
    pub fn resume_token_valid(&self, id: &str, token: &str) -> bool {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .is_ok_and(|tag| {
                ring::hmac::verify(&self.inner.resume_key, id.as_bytes(), &tag).is_ok()
            })
    }

    /// The connection caps and the counts of refusals.
    pub fn limits(&self) -> &Arc<ConnLimits> {
        &self.inner.limits
    }

    /// Figures for `/healthz`.
    pub fn stats(&self) -> HubStats {
        let s = self.inner.rooms.stats();
        HubStats {
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: self.inner.started.elapsed().as_secs(),
            rooms: s.rooms,
            peers: s.peers,
            messages_relayed: s.messages_relayed,
            redis: self.inner.rooms.backend(),
            limits: self.inner.limits.report(),
            turn: self.inner.turn_report.get().map(|f| f()),
        }
    }

    /// Closes every connection (WebSocket close 1001, socket.io disconnect) and waits
    /// for them, at most [`SHUTDOWN_GRACE`].
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        if let Some(io) = self.inner.socketio.get() {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, io.close()).await;
        }
        self.inner.tasks.close();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.inner.tasks.wait()).await;
        self.inner.rooms.close().await;
    }

    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }

    pub(crate) fn set_socketio(&self, io: socketioxide::SocketIo) {
        let _ = self.inner.socketio.set(io);
    }
}

/// The client's address, when the server records it (every rtcdev server does).
pub fn client_ip<B>(req: &http::Request<B>) -> Option<std::net::IpAddr> {
    client_ip_parts(req.extensions())
}

/// [`client_ip`] from a request's extensions.
pub fn client_ip_parts(ext: &http::Extensions) -> Option<std::net::IpAddr> {
    ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Lets a request that opens a hub connection through only while its address and the
/// hub are under their caps. Requests within a socket.io session (`sid=`) are not new
/// connections and pass (a move to WebSocket spends a token). A socket.io handshake
/// takes its place here, for the life of
/// the Engine.IO session it opens (see [`socketio::SessionPlace`]); `/ws` takes its
/// place once the upgrade is checked.
async fn admit(
    hub: &Hub,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let native = req.uri().path() == "/ws";
    let opens = native
        || !req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv.starts_with("sid=")));
    let ip = client_ip(&req);
    if !opens {
        // A session's move to WebSocket opens a connection (held until the upgrade is
        // done or refused) but takes no new place: it spends a token.
        let upgrade = req.headers().contains_key(http::header::UPGRADE);
        if upgrade && let Err(refusal) = hub.limits().spend_rate(ip) {
            crate::info_limited!("hub connection refused", %refusal, "refusing a hub connection");
            return refusal.into_response();
        }
        return next.run(req).await;
    }
    let admitted = hub.limits().admit(ip).and_then(|()| {
        if native {
            return Ok(());
        }
        let place = hub.limits().acquire(ip)?;
        req.extensions_mut()
            .insert(socketio::SessionPlace::new(place, hub.config()));
        Ok(())
    });
    if let Err(refusal) = admitted {
        crate::info_limited!("hub connection refused", %refusal, "refusing a hub connection");
        return refusal.into_response();
    }
    next.run(req).await
}
