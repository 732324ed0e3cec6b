//! The echo peer: test a call with one device. `rtcdev serve` joins the room as one more
//! participant, a webrtc-rs peer that sends every page its own audio and video back, so
//! a single phone sees its picture come back through the whole real path: its camera,
//! its uplink, rtcdev, its downlink (and, with the page's `&relay`, rtcdev's TURN).
//!
//! The echo speaks the calling page's own signaling (see `web/js/peers.js`): it joins
//! the room through the hub like any newcomer and offers to the pages already there,
//! answers pages that join after it, echoes chat messages and the mute state, and
//! follows a page's ICE restarts and new sessions. Its connections are in
//! [`peer`].
//!
//! Bounded: one echo per room, at most [`MAX_ECHOES`] at once, each for at most
//! [`TIME_LIMIT`]; it leaves as soon as no page is left in its room, and at shutdown.

mod peer;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use webrtc::api::API;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::policy::ice_transport_policy::RTCIceTransportPolicy;

use crate::hub::Hub;
use crate::hub::core::{Event, PeerSink};
use crate::hub::protocol::{HubError, PeerId, RoomName};
use crate::hub::queue::{QueueTx, out_queue};

/// How long the echo's goodbye in the chat has to reach the page before its `bye`.
const GOODBYE_GRACE: Duration = Duration::from_millis(500);
/// How long an echo stays in a room.
pub const TIME_LIMIT: Duration = Duration::from_secs(10 * 60);
/// Echo peers one `serve` runs at once (each encodes nothing, but relays every page's
/// media back).
pub const MAX_ECHOES: usize = 4;
/// Pages one echo connects to: a room of one device, or a few testing side by side.
pub const MAX_PAGES: usize = 4;
/// Bytes of signaling queued for an echo before it gives up (as a hub peer would).
const QUEUE_BYTES: usize = 1024 * 1024;
/// The name the pages show on the echo's tile.
pub const NAME: &str = "Echo (rtcdev)";

/// Which addresses the echo gathers ICE candidates on: those `serve` listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gather {
    /// Every address but loopback (`serve` on 0.0.0.0 or ::), as a browser does.
    Any,
    /// Loopback only (`serve --bind 127.0.0.1`).
    Loopback,
    /// One address (`serve --bind ADDR`).
    Only(IpAddr),
}

impl Gather {
    /// The addresses a server bound to `bind` is reached on.
    pub fn for_bind(bind: IpAddr) -> Self {
        if bind.is_unspecified() {
            Gather::Any
        } else if bind.is_loopback() {
            Gather::Loopback
        } else {
            Gather::Only(bind)
        }
    }
}

/// Why no echo joined.
#[derive(Debug)]
pub enum Refused {
    /// Not a room name.
    BadRoom(HubError),
    /// Nobody is in the room.
    Empty(String),
    /// The room holds no one more.
    Full(usize),
    /// [`MAX_ECHOES`] are running.
    Busy(usize),
    /// webrtc-rs could not be set up.
    Failed(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::BadRoom(e) => write!(f, "{e}"),
            Refused::Empty(room) => write!(
                f,
                "nobody is in room {room}: the echo joins a call a page is in"
            ),
            Refused::Full(n) => write!(f, "the room is full ({n} peers)"),
            Refused::Busy(n) => write!(
                f,
                "rtcdev runs at most {n} echo peers at once; leave another echo's room first"
            ),
            Refused::Failed(e) => write!(f, "the echo peer could not start: {e}"),
        }
    }
}

/// An echo that joined.
#[derive(Debug, Clone)]
pub struct Started {
    /// Its hub id.
    pub id: String,
    /// It was already in the room (nothing new started).
    pub already: bool,
}

/// Why an echo left its room, in the words `serve` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// No page was left.
    Empty,
    /// [`TIME_LIMIT`] (or the test hook's) passed.
    TimeLimit(Duration),
    /// `serve` is stopping.
    Shutdown,
    /// The hub stopped delivering to it.
    Dropped,
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Empty => write!(f, "no page is left in the room"),
            Ended::TimeLimit(d) => write!(f, "its {} were up", minutes(*d)),
            Ended::Shutdown => write!(f, "rtcdev is stopping"),
            Ended::Dropped => write!(f, "the hub dropped it"),
        }
    }
}

fn minutes(d: Duration) -> String {
    match d.as_secs() {
        s if s % 60 == 0 && s >= 120 => format!("{} minutes", s / 60),
        60 => "minute".into(),
        s => format!("{s} seconds"),
    }
}

/// The echo peers of one `serve`.
pub struct Echoes {
    hub: Hub,
    gather: Mutex<Gather>,
    time_limit: Duration,
    running: Mutex<HashMap<String, String>>,
    /// Where the echo's comings and goings are told (the terminal).
    say: Arc<dyn Fn(String) + Send + Sync>,
}

impl Echoes {
    /// Echo peers joining `hub`'s rooms, gathering on `gather`, telling `say` when one
    /// leaves. `RTCDEV_TEST_ECHO_LIMIT_SECS` shortens the time limit for tests.
    pub fn new(hub: Hub, gather: Gather, say: Arc<dyn Fn(String) + Send + Sync>) -> Self {
        let time_limit = std::env::var("RTCDEV_TEST_ECHO_LIMIT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map_or(TIME_LIMIT, Duration::from_secs);
        Echoes {
            hub,
            gather: Mutex::new(gather),
            time_limit,
            running: Mutex::new(HashMap::new()),
            say,
        }
    }

    /// Gathers on `gather` from now on (`serve` knows its address once it listens).
    pub fn set_gather(&self, gather: Gather) {
        *self.gather.lock().unwrap_or_else(|p| p.into_inner()) = gather;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the echo's comings and goings are told.
    pub fn say(&self) -> &Arc<dyn Fn(String) + Send + Sync> {
        &self.say
    }

    /// Joins an echo to `room` (one per room: a second ask gets the first); with
    /// `relay`, it takes relay candidates only, so the call goes through TURN.
    pub async fn start(self: &Arc<Self>, room: &str, relay: bool) -> Result<Started, Refused> {
        let room = RoomName::parse(room).map_err(Refused::BadRoom)?;
        let id = PeerId::random();
        {
            let mut running = self.lock();
            if let Some(existing) = running.get(room.as_str()) {
                return Ok(Started {
                    id: existing.clone(),
                    already: true,
                });
            }
            if running.len() >= MAX_ECHOES {
                return Err(Refused::Busy(MAX_ECHOES));
            }
            running.insert(room.as_str().to_string(), id.as_str().to_string());
        }
        match self.join(room.clone(), id.clone(), relay).await {
            Ok(()) => Ok(Started {
                id: id.as_str().to_string(),
                already: false,
            }),
            Err(refused) => {
                self.forget(&room, &id);
                Err(refused)
            }
        }
    }

    fn forget(&self, room: &RoomName, id: &PeerId) {
        let mut running = self.lock();
        if running.get(room.as_str()).map(String::as_str) == Some(id.as_str()) {
            running.remove(room.as_str());
        }
    }

    async fn join(
        self: &Arc<Self>,
        room: RoomName,
        id: PeerId,
        relay: bool,
    ) -> Result<(), Refused> {
        let gather = *self.gather.lock().unwrap_or_else(|p| p.into_inner());
        let api = peer::api(gather).map_err(|e| Refused::Failed(e.to_string()))?;
        let config = self.rtc_config(&id, relay);
        let rooms = self.hub.rooms().clone();
        let (tx, rx, overflow) = out_queue(QUEUE_BYTES);
        let sink: Arc<dyn PeerSink> = Arc::new(EchoSink(tx));
        rooms.connect(id.clone(), sink);
        let meta = Arc::new(serde_json::json!({ "name": NAME, "echo": true }));
        let pages = match rooms.join(&id, room.clone(), meta).await {
            Ok(pages) => pages,
            Err(e) => {
                rooms.disconnect(&id);
                return Err(match e {
                    HubError::RoomFull(n) => Refused::Full(n),
                    other => Refused::Failed(other.to_string()),
                });
            }
        };
        if pages.is_empty() {
            rooms.disconnect(&id);
            return Err(Refused::Empty(room.as_str().to_string()));
        }
        let echo = Echo {
            id: id.clone(),
            room: room.clone(),
            api,
            config,
            hub: self.hub.clone(),
            conns: HashMap::new(),
            present: pages.iter().map(|p| p.id.clone()).collect(),
        };
        let echoes = self.clone();
        let limit = self.time_limit;
        let shutdown = self.hub.shutdown_token().clone();
        self.hub.tasks().spawn(async move {
            let ended = echo.run(rx, overflow, limit, shutdown).await;
            echoes.forget(&room, &id);
            (echoes.say)(format!("echo: left room {} ({ended})", room.as_str()));
        });
        Ok(())
    }

    /// The page's ICE servers (those webrtc-rs can use: STUN, TURN over UDP), and
    /// relay-only when asked.
    fn rtc_config(&self, id: &PeerId, relay: bool) -> RTCConfiguration {
        let ice_servers = self
            .hub
            .config()
            .ice
            .servers(id.as_str())
            .into_iter()
            .filter_map(|s| {
                let urls: Vec<String> = s
                    .urls
                    .into_iter()
                    .filter(|u| {
                        u.starts_with("stun:")
                            || (u.starts_with("turn:") && !u.contains("transport=tcp"))
                    })
                    .collect();
                (!urls.is_empty()).then(|| webrtc::ice_transport::ice_server::RTCIceServer {
                    urls,
                    username: s.username.unwrap_or_default(),
                    credential: s.credential.unwrap_or_default(),
                })
            })
            .collect();
        RTCConfiguration {
            ice_servers,
            ice_transport_policy: if relay {
                RTCIceTransportPolicy::Relay
            } else {
                RTCIceTransportPolicy::All
            },
            ..Default::default()
        }
    }
}

/// The hub delivers the echo's events into a queue its task drains (the room core's
/// rule: a sink only queues).
struct EchoSink(QueueTx<Event>);

impl PeerSink for EchoSink {
    fn deliver(&self, event: &Event) {
        let bytes = match event {
            Event::Signal { data, .. } => data.len(),
            _ => 0,
        } + 64;
        self.0.push(event.clone(), bytes);
    }
}

/// One echo in one room.
struct Echo {
    id: PeerId,
    room: RoomName,
    api: API,
    config: RTCConfiguration,
    hub: Hub,
    /// Its connection to each page, by the page's hub id.
    conns: HashMap<PeerId, peer::Conn>,
    /// The pages in the room.
    present: Vec<PeerId>,
}

impl Echo {
    async fn run(
        mut self,
        mut rx: crate::hub::queue::QueueRx<Event>,
        mut overflow: crate::hub::queue::Overflow,
        limit: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Ended {
        // The newcomer offers to the pages already there.
        for page in self.present.clone().into_iter().take(MAX_PAGES) {
            self.connect(page, true).await;
        }
        let deadline = tokio::time::sleep(limit);
        tokio::pin!(deadline);
        let ended = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break Ended::Shutdown,
                _ = &mut deadline => break Ended::TimeLimit(limit),
                _ = &mut overflow => break Ended::Dropped,
                event = rx.recv() => match event {
                    None => break Ended::Dropped,
                    Some(event) => {
                        if let Some(ended) = self.on_event(event).await {
                            break ended;
                        }
                    }
                },
            }
        };
        if matches!(ended, Ended::TimeLimit(_)) {
            let text = format!(
                "The echo's {} are up; it leaves the call. Reload with the test again for more.",
                minutes(limit)
            );
            for conn in self.conns.values() {
                conn.chat(&text).await;
            }
            // The goodbye goes over the data channel, `bye` over the hub, which is
            // faster: a page that drops the echo at `bye` would lose the goodbye.
            tokio::time::sleep(GOODBYE_GRACE).await;
        }
        for (page, conn) in std::mem::take(&mut self.conns) {
            self.signal_to(&page, serde_json::json!({ "kind": "bye" }));
            conn.close().await;
        }
        self.hub.rooms().disconnect(&self.id);
        ended
    }

    fn signal_to(&self, page: &PeerId, data: Value) {
        let _ = self
            .hub
            .rooms()
            .signal(&self.id, Some(page.as_str()), data.to_string().into());
    }

    /// A connection to `page`; `offer`: the echo offers (it is the newcomer), else it
    /// waits for the page's offer.
    async fn connect(&mut self, page: PeerId, offer: bool) -> bool {
        let rooms = self.hub.rooms().clone();
        let (from, to) = (self.id.clone(), page.clone());
        let send: peer::Send = Arc::new(move |data: Value| {
            let _ = rooms.signal(&from, Some(to.as_str()), data.to_string().into());
        });
        let polite = self.id.as_str() < page.as_str();
        match peer::Conn::new(&self.api, self.config.clone(), send, polite).await {
            Ok(conn) => {
                if offer && let Err(e) = conn.offer().await {
                    tracing::warn!(room = self.room.as_str(), error = %e, "echo: offer failed");
                }
                if let Some(old) = self.conns.insert(page, conn) {
                    old.close().await;
                }
                true
            }
            Err(e) => {
                tracing::warn!(room = self.room.as_str(), error = %e, "echo: no connection");
                false
            }
        }
    }

    async fn on_event(&mut self, event: Event) -> Option<Ended> {
        match event {
            Event::PeerJoined { id, .. } => {
                // The newcomer offers; the echo answers then.
                if !self.present.contains(&id) {
                    self.present.push(id);
                }
            }
            Event::PeerLeft { id } => {
                self.present.retain(|p| p != &id);
                if let Some(conn) = self.conns.remove(&id) {
                    conn.close().await;
                }
                if self.present.is_empty() {
                    return Some(Ended::Empty);
                }
            }
            Event::Signal { from, data } => {
                let Ok(data) = serde_json::from_str::<Value>(&data) else {
                    return None;
                };
                self.on_signal(from, data).await;
            }
            Event::Replaced => return Some(Ended::Dropped),
            Event::Joined { .. } => {}
        }
        None
    }

    async fn on_signal(&mut self, from: PeerId, data: Value) {
        let kind = data.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind == "bye" {
            if let Some(conn) = self.conns.remove(&from) {
                conn.close().await;
            }
            return;
        }
        let offer = kind == "sdp" && data.pointer("/description/type") == Some(&"offer".into());
        let session = data.get("session").and_then(Value::as_str);
        // Another session of the page: a new connection replaces the old one.
        let stale = match (self.conns.get(&from), session) {
            (Some(conn), Some(s)) => conn.remote_session().is_some_and(|r| r != s),
            _ => false,
        };
        if stale && !offer {
            return;
        }
        if (stale || !self.conns.contains_key(&from)) && offer {
            if !self.present.contains(&from) || self.conns.len() >= MAX_PAGES && !stale {
                return;
            }
            if !self.connect(from.clone(), false).await {
                return;
            }
        }
        let Some(conn) = self.conns.get_mut(&from) else {
            return;
        };
        if let Err(e) = conn.on_signal(&data).await {
            tracing::debug!(room = self.room.as_str(), error = ?e.to_string(), "echo: a signal failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_where_serve_listens() {
        assert_eq!(Gather::for_bind("0.0.0.0".parse().unwrap()), Gather::Any);
        assert_eq!(Gather::for_bind("::".parse().unwrap()), Gather::Any);
        assert_eq!(
            Gather::for_bind("127.0.0.1".parse().unwrap()),
            Gather::Loopback
        );
        let lan: IpAddr = "192.168.1.20".parse().unwrap();
        assert_eq!(Gather::for_bind(lan), Gather::Only(lan));
    }

    #[test]
    fn says_why_it_left_in_words() {
        assert_eq!(
            Ended::TimeLimit(Duration::from_secs(600)).to_string(),
            "its 10 minutes were up"
        );
        assert_eq!(
            Ended::TimeLimit(Duration::from_secs(5)).to_string(),
            "its 5 seconds were up"
        );
        assert_eq!(Ended::Empty.to_string(), "no page is left in the room");
    }
}
