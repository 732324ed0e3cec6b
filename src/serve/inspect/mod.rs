//! The room inspector: every calling page reports how its peer connections live (state
//! changes, candidates, candidate errors, a stats summary); the inspector joins the two
//! sides of each connection, keeps a bounded timeline of each, serves it to the laptop
//! (`/inspect`), and prints one line saying why when a connection fails.
//!
//! Pages report what they like, so everything is bounded: rooms, pages per room,
//! connections per page, the timeline (a ring), the text of each entry; pages that
//! stop reporting are forgotten.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

mod verdict;
#[cfg(test)]
use super::ice_report::MAX_TEXT;
use super::ice_report::clean;
use verdict::Facts;

/// Largest report body accepted, in bytes.
pub const MAX_BODY: usize = 64 * 1024;
const MAX_ROOMS: usize = 64;
const MAX_PAGES: usize = 32;
const MAX_SIDES: usize = 32;
/// Timeline entries kept per side of a connection.
const TIMELINE: usize = 200;
/// Summaries kept per side for the graphs (one a report: two minutes).
const HISTORY: usize = 60;
const MAX_ERRORS: usize = 20;
/// What a relay candidate may be allocated over (`RTCIceCandidate.relayProtocol`).
const RELAY_TRANSPORTS: [&str; 3] = ["udp", "tcp", "tls"];
/// `RTCPeerConnection.signalingState`'s values.
const SIGNALING_STATES: [&str; 6] = [
    "stable",
    "have-local-offer",
    "have-remote-offer",
    "have-local-pranswer",
    "have-remote-pranswer",
    "closed",
];
/// A connection connected this long with nothing arriving gets a verdict.
const NO_MEDIA: Duration = Duration::from_secs(5);
/// A connection not connected this long after its first news gets a verdict.
const SLOW: Duration = Duration::from_secs(10);
/// A page that has not reported for this long is gone.
const FORGET_AFTER: Duration = Duration::from_secs(30);

/// A report as the page sends it every 2 s.
#[derive(Debug, Deserialize)]
pub struct Report {
    room: String,
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    events: Vec<Event>,
    #[serde(default)]
    peers: Vec<Summary>,
}

#[derive(Debug, Deserialize)]
struct Event {
    peer: String,
    /// Milliseconds since the epoch, by the page's clock.
    at: u64,
    kind: String,
    #[serde(default)]
    detail: String,
}

/// The page's stats summary of one connection.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    peer: String,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    rtt_ms: Option<u64>,
    #[serde(default)]
    kbps_in: Option<u64>,
    #[serde(default)]
    kbps_out: Option<u64>,
    #[serde(default)]
    loss_pct: Option<f64>,
    #[serde(default)]
    frames_decoded: Option<u64>,
    #[serde(default)]
    fps: Option<u64>,
    #[serde(default)]
    resolution: Option<String>,
}

/// Candidates seen over the connection's life, by type ("host", "srflx", "prflx", "relay").
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts(BTreeMap<String, u32>);

impl Counts {
    fn add(&mut self, detail: &str) {
        let kind = detail.split(' ').next().unwrap_or("");
        if ["host", "srflx", "prflx", "relay"].contains(&kind) {
            *self.0.entry(kind.to_string()).or_default() += 1;
        }
    }

    fn has(&self, kind: &str) -> bool {
        self.0.get(kind).is_some_and(|n| *n > 0)
    }

    fn total(&self) -> u32 {
        self.0.values().sum()
    }

    /// The types seen, e.g. "host, srflx, relay" (counts grow with every ICE restart,
    /// so they are left out of the verdict).
    fn describe(&self) -> String {
        let kinds: Vec<&str> = ["host", "srflx", "prflx", "relay"]
            .into_iter()
            .filter(|k| self.has(k))
            .collect();
        if kinds.is_empty() {
            "none".to_string()
        } else {
            kinds.join(", ")
        }
    }
}

/// One side of a connection: what the page at one end reported about it.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Side {
    state: String,
    summary: Option<Summary>,
    local: Counts,
    remote: Counts,
    /// What the local relay candidates were allocated over ("udp", "tcp", "tls").
    relay_over: BTreeSet<String>,
    /// Signaling states this end went through.
    signaling: BTreeSet<String>,
    /// The ICE connection state last reported.
    #[serde(skip)]
    ice: String,
    /// The ICE connection state when the connection last failed ("" since it last
    /// connected): a failure on a path ICE had found is DTLS's.
    #[serde(skip)]
    ice_when_failed: String,
    errors: Vec<String>,
    timeline: VecDeque<Entry>,
    /// The last summaries' figures, oldest first, for the view's graphs.
    history: VecDeque<Point>,
    /// The last verdict said about this connection (shown on `/inspect` too).
    verdict: Option<String>,
    #[serde(skip)]
    failed_said: bool,
    #[serde(skip)]
    connected_said: bool,
    #[serde(skip)]
    slow_said: bool,
    #[serde(skip)]
    since: Option<Instant>,
    #[serde(skip)]
    connected_at: Option<Instant>,
    #[serde(skip)]
    media_said: bool,
}

/// One summary's figures, for a graph.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    kbps_in: u64,
    kbps_out: u64,
    rtt_ms: Option<u64>,
    /// Packets lost of those expected, in %, over the last second.
    loss_pct: f64,
}

/// A timeline entry.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    at: u64,
    kind: String,
    detail: String,
}

#[derive(Debug)]
struct Page {
    name: String,
    browser: String,
    from: String,
    seen: Instant,
    sides: HashMap<String, Side>,
}

/// The inspector's state; one per `serve`.
#[derive(Debug, Default)]
pub struct Inspector {
    rooms: Mutex<HashMap<String, HashMap<String, Page>>>,
}

/// Why a report was not taken.
#[derive(Debug)]
pub enum Refused {
    /// It is not a report (400).
    Invalid(String),
    /// The inspector follows as many rooms or pages as it will (429).
    Full(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Invalid(s) | Refused::Full(s) => f.write_str(s),
        }
    }
}

/// What happened to a connection, worth a line.
enum News {
    Failed,
    Slow,
    Connected,
    NoMedia,
}

/// Who a page is, as the connection tells it (not the page).
pub struct Origin<'a> {
    /// The device, from its user agent.
    pub browser: &'a str,
    /// Its address.
    pub from: &'a str,
}

impl Inspector {
    /// Takes a page's report; returns the verdict lines for connections that failed
    /// since its last one (the caller prints them, outside the lock).
    pub fn report(&self, r: Report, origin: Origin<'_>) -> Result<Vec<String>, Refused> {
        let (room, id) = (clean(&r.room), clean(&r.id));
        if room.is_empty() || id.is_empty() {
            return Err(Refused::Invalid(
                "a report needs its room and the page's id".into(),
            ));
        }
        let now = Instant::now();
        let mut verdicts = Vec::new();
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        forget_stale(&mut rooms, now);
        if !rooms.contains_key(&room) && rooms.len() >= MAX_ROOMS {
            return Err(Refused::Full(format!(
                "the inspector follows at most {MAX_ROOMS} rooms"
            )));
        }
        let pages = rooms.entry(room.clone()).or_default();
        if !pages.contains_key(&id) && pages.len() >= MAX_PAGES {
            return Err(Refused::Full(format!(
                "the inspector follows at most {MAX_PAGES} pages a room"
            )));
        }
        let page = pages.entry(id.clone()).or_insert_with(|| Page {
            name: String::new(),
            browser: String::new(),
            from: String::new(),
            seen: now,
            sides: HashMap::new(),
        });
        page.name = clean(&r.name);
        page.browser = clean(origin.browser);
        page.from = clean(origin.from);
        page.seen = now;
        let mut failed = Vec::new();
        let mut connected = Vec::new();
        for e in r.events {
            let peer = clean(&e.peer);
            let Some(side) = side_of(page, &peer) else {
                continue;
            };
            let detail = clean(&e.detail);
            side.since.get_or_insert(now);
            match e.kind.as_str() {
                "local-candidate" => {
                    side.local.add(&detail);
                    // Only the names a browser gives: a page cannot grow the sets.
                    if let Some(over) = detail.split(" over ").nth(1)
                        && RELAY_TRANSPORTS.contains(&over)
                    {
                        side.relay_over.insert(over.to_string());
                    }
                }
                "signaling" if SIGNALING_STATES.contains(&detail.as_str()) => {
                    side.signaling.insert(detail.clone());
                }
                "ice" => side.ice = detail.clone(),
                "remote-candidate" => side.remote.add(&detail),
                "candidate-error" if side.errors.len() < MAX_ERRORS => {
                    side.errors.push(detail.clone())
                }
                "connection" => {
                    side.state = detail.clone();
                    if detail == "failed" {
                        side.ice_when_failed = side.ice.clone();
                    } else if detail == "connected" {
                        side.ice_when_failed.clear();
                    }
                    // Said once a failure: the ICE restarts that follow fail again
                    // without news, until the connection has worked in between.
                    if detail == "failed" && !side.failed_said {
                        side.failed_said = true;
                        side.connected_said = false;
                        failed.push(peer.clone());
                    } else if detail == "connected" {
                        side.failed_said = false;
                        side.slow_said = true;
                        side.connected_at.get_or_insert(now);
                        connected.push(peer.clone());
                    }
                    if detail != "connected" {
                        side.connected_at = None;
                    }
                }
                _ => {}
            }
            if side.timeline.len() >= TIMELINE {
                side.timeline.pop_front();
            }
            side.timeline.push_back(Entry {
                at: e.at,
                kind: clean(&e.kind),
                detail,
            });
        }
        for mut s in r.peers {
            let peer = clean(&s.peer);
            for t in [&mut s.state, &mut s.path, &mut s.resolution]
                .into_iter()
                .flatten()
            {
                *t = clean(t);
            }
            if let Some(side) = side_of(page, &peer) {
                if side.history.len() >= HISTORY {
                    side.history.pop_front();
                }
                side.history.push_back(Point {
                    kbps_in: s.kbps_in.unwrap_or(0),
                    kbps_out: s.kbps_out.unwrap_or(0),
                    rtt_ms: s.rtt_ms,
                    loss_pct: s
                        .loss_pct
                        .filter(|l| l.is_finite())
                        .unwrap_or(0.0)
                        .clamp(0.0, 100.0),
                });
                side.summary = Some(s);
            }
        }
        // Not connected a while after its first news, and not failed either: said once.
        let mut slow = Vec::new();
        for (peer, side) in &mut page.sides {
            let waiting = !matches!(side.state.as_str(), "connected" | "failed" | "closed");
            if waiting
                && !side.slow_said
                && side.since.is_some_and(|t| now.duration_since(t) >= SLOW)
            {
                side.slow_said = true;
                slow.push(peer.clone());
            }
        }
        // Connected a while, and nothing at all arrives: said once.
        let mut silent = Vec::new();
        for (peer, side) in &mut page.sides {
            let quiet = side
                .summary
                .as_ref()
                .is_some_and(|s| s.kbps_in == Some(0) && s.frames_decoded.unwrap_or(0) == 0);
            if quiet
                && !side.media_said
                && side
                    .connected_at
                    .is_some_and(|t| now.duration_since(t) >= NO_MEDIA)
            {
                side.media_said = true;
                silent.push(peer.clone());
            }
        }
        // A connection that works is news only when a rule finds how it got through
        // worth saying; its path may come in a later report than the state.
        for (peer, side) in &page.sides {
            if side.state == "connected"
                && !side.connected_said
                && side.summary.as_ref().is_some_and(|s| s.path.is_some())
                && !connected.contains(peer)
            {
                connected.push(peer.clone());
            }
        }
        let news = failed
            .into_iter()
            .map(|p| (p, News::Failed))
            .chain(slow.into_iter().map(|p| (p, News::Slow)))
            .chain(connected.into_iter().map(|p| (p, News::Connected)))
            .chain(silent.into_iter().map(|p| (p, News::NoMedia)));
        for (peer, what) in news {
            let here = &pages[&id].sides[&peer];
            let there = pages.get(&peer).and_then(|p| p.sides.get(&id));
            let (a, b) = (short(pages.get(&id), &id), short(pages.get(&peer), &peer));
            let facts = Facts {
                here,
                there,
                here_name: &a,
                there_name: &b,
            };
            let who = format!(
                "{} <-> {}",
                display(&pages[&id], &id),
                pages
                    .get(&peer)
                    .map_or_else(|| peer.clone(), |p| display(p, &peer))
            );
            let line = match what {
                // Said already, from the other end.
                News::Failed if there.is_some_and(|t| t.failed_said) => None,
                News::Failed => Some(format!(
                    "  call failed in room {room}: {who}: {}",
                    verdict::failure(&facts)
                )),
                News::Slow if there.is_some_and(|t| t.slow_said && t.state != "connected") => None,
                News::Slow => Some(format!(
                    "  not connected after {} s in room {room}: {who}: {}",
                    SLOW.as_secs(),
                    verdict::failure(&facts)
                )),
                News::NoMedia => Some(format!(
                    "  no media in room {room}: {who}: connected for {} s and nothing arrives at {a} from {b}: {b} sends no audio or video (no camera or microphone, or no track added to the connection)",
                    NO_MEDIA.as_secs()
                )),
                News::Connected => {
                    let has_path = |s: &Side| s.summary.as_ref().is_some_and(|s| s.path.is_some());
                    let line = verdict::success(&facts)
                        .filter(|_| !there.is_some_and(|t| t.connected_said))
                        .map(|v| format!("  call connected in room {room}: {who}: {v}"));
                    // Judged once both ends' paths were known (a rule may need the far
                    // end's, which can come in a later report), or once said.
                    let said = has_path(here) && (line.is_some() || there.is_some_and(has_path));
                    if said
                        && let Some(side) = pages.get_mut(&id).and_then(|p| p.sides.get_mut(&peer))
                    {
                        side.connected_said = true;
                    }
                    line
                }
            };
            if let Some(line) = line {
                if let Some(side) = pages.get_mut(&id).and_then(|p| p.sides.get_mut(&peer)) {
                    side.verdict = Some(line.trim().to_string());
                }
                verdicts.push(line);
            }
        }
        Ok(verdicts)
    }

    /// Every room, page and connection, for `/inspect/state.json`.
    pub fn snapshot(&self) -> serde_json::Value {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        forget_stale(&mut rooms, Instant::now());
        let rooms: BTreeMap<&String, serde_json::Value> = rooms
            .iter()
            .map(|(room, pages)| {
                let pages: BTreeMap<&String, serde_json::Value> = pages
                    .iter()
                    .map(|(id, p)| {
                        (
                            id,
                            serde_json::json!({
                                "name": p.name,
                                "browser": p.browser,
                                "from": p.from,
                                "connections": p.sides,
                            }),
                        )
                    })
                    .collect();
                (room, serde_json::json!(pages))
            })
            .collect();
        serde_json::json!({ "rooms": rooms })
    }
}

fn side_of<'a>(page: &'a mut Page, peer: &str) -> Option<&'a mut Side> {
    if peer.is_empty() || (!page.sides.contains_key(peer) && page.sides.len() >= MAX_SIDES) {
        return None;
    }
    Some(page.sides.entry(peer.to_string()).or_default())
}

/// A page's name, or the start of its id.
fn short(page: Option<&Page>, id: &str) -> String {
    match page {
        Some(p) if !p.name.is_empty() => p.name.clone(),
        _ => id.chars().take(8).collect(),
    }
}

fn display(page: &Page, id: &str) -> String {
    format!("{} ({})", short(Some(page), id), page.browser)
}

fn forget_stale(rooms: &mut HashMap<String, HashMap<String, Page>>, now: Instant) {
    for pages in rooms.values_mut() {
        pages.retain(|_, p| now.duration_since(p.seen) < FORGET_AFTER);
    }
    rooms.retain(|_, pages| !pages.is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(room: &str, id: &str, events: serde_json::Value) -> Report {
        serde_json::from_value(serde_json::json!({
            "room": room, "id": id, "name": id, "events": events, "peers": []
        }))
        .unwrap()
    }

    const ORIGIN: Origin<'static> = Origin {
        browser: "Chrome 131 on Android 14",
        from: "10.0.0.9",
    };

    #[test]
    fn both_sides_join_and_a_failure_is_said_once() {
        let ins = Inspector::default();
        let ev = |kind: &str, detail: &str| serde_json::json!({"peer": "b", "at": 1, "kind": kind, "detail": detail});
        let first = report(
            "r",
            "a",
            serde_json::json!([
                ev("local-candidate", "host udp 10.0.0.9:5000"),
                ev("remote-candidate", "host udp 10.0.1.9:5000"),
                ev("connection", "failed")
            ]),
        );
        let lines = ins.report(first, ORIGIN).unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("room r: a (Chrome 131 on Android 14) <-> b: only host candidates"),
            "{lines:?}"
        );
        // Failed again after an ICE restart that did not help: not said twice.
        let again = report(
            "r",
            "a",
            serde_json::json!([ev("connection", "connecting"), ev("connection", "failed")]),
        );
        assert!(ins.report(again, ORIGIN).unwrap().is_empty());
        // From the other end: said already.
        let other =
            serde_json::json!([{"peer": "a", "at": 2, "kind": "connection", "detail": "failed"}]);
        assert!(
            ins.report(report("r", "b", other), ORIGIN)
                .unwrap()
                .is_empty()
        );
        // Worked in between (both ends say so), then failed: said again.
        let fine = serde_json::json!([{"peer": "a", "at": 3, "kind": "connection", "detail": "connected"}]);
        ins.report(report("r", "b", fine), ORIGIN).unwrap();
        let later = report(
            "r",
            "a",
            serde_json::json!([ev("connection", "connected"), ev("connection", "failed")]),
        );
        assert_eq!(ins.report(later, ORIGIN).unwrap().len(), 1);
        let snap = ins.snapshot();
        let side = &snap["rooms"]["r"]["a"]["connections"]["b"];
        assert_eq!(side["state"], "failed");
        assert!(
            side["verdict"]
                .as_str()
                .is_some_and(|v| v.starts_with("call failed in room r: a (")),
            "{side}"
        );
        assert_eq!(side["local"]["host"], 1);
        assert_eq!(side["timeline"].as_array().unwrap().len(), 7);
    }

    /// A connection's success verdict needs the end that went through TCP; the other
    /// end reporting its path first must not settle it without that.
    #[test]
    fn a_success_waits_for_the_far_end_path() {
        let ins = Inspector::default();
        let connected = |id: &str, peer: &str, local: &[&str], path: &str| -> Report {
            let mut events: Vec<serde_json::Value> = local
                .iter()
                .map(|c| serde_json::json!({"peer": peer, "at": 1, "kind": "local-candidate", "detail": c}))
                .collect();
            events.push(serde_json::json!({"peer": peer, "at": 2, "kind": "connection", "detail": "connected"}));
            serde_json::from_value(serde_json::json!({
                "room": "r", "id": id, "name": id, "events": events,
                "peers": [{"peer": peer, "state": "connected", "path": path, "kbpsIn": 500, "framesDecoded": 30}]
            }))
            .unwrap()
        };
        let ann = connected(
            "ann",
            "bob",
            &["host udp 10.0.0.2:1", "srflx udp 1.2.3.4:1"],
            "srflx → relay udp",
        );
        assert!(ins.report(ann, ORIGIN).unwrap().is_empty());
        let bob = connected(
            "bob",
            "ann",
            &["host udp 192.168.2.10:1", "relay udp 10.0.0.1:2 over tcp"],
            "relay → srflx udp/tcp",
        );
        let lines = ins.report(bob, ORIGIN).unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("UDP blocked on bob's network: connected through TURN over TCP"),
            "{lines:?}"
        );
    }

    #[test]
    fn connected_without_media_is_said_once() {
        let ins = Inspector::default();
        let up = serde_json::json!([{"peer": "b", "at": 1, "kind": "connection", "detail": "connected"}]);
        ins.report(report("r", "a", up), ORIGIN).unwrap();
        // Five seconds later by the inspector's clock.
        {
            let mut rooms = ins.rooms.lock().unwrap();
            let side = rooms.get_mut("r").unwrap().get_mut("a").unwrap();
            let side = side.sides.get_mut("b").unwrap();
            side.connected_at = Some(Instant::now() - NO_MEDIA - Duration::from_secs(1));
        }
        let quiet = || -> Report {
            serde_json::from_value(serde_json::json!({
                "room": "r", "id": "a", "name": "a",
                "peers": [{"peer": "b", "state": "connected", "kbpsIn": 0, "framesDecoded": 0}]
            }))
            .unwrap()
        };
        let lines = ins.report(quiet(), ORIGIN).unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("nothing arrives at a from b"),
            "{lines:?}"
        );
        assert!(ins.report(quiet(), ORIGIN).unwrap().is_empty(), "said once");
        // Media arriving is no news.
        let fine: Report = serde_json::from_value(serde_json::json!({
            "room": "r", "id": "c", "name": "c",
            "events": [{"peer": "d", "at": 1, "kind": "connection", "detail": "connected"}],
            "peers": [{"peer": "d", "state": "connected", "kbpsIn": 300, "framesDecoded": 90}]
        }))
        .unwrap();
        assert!(ins.report(fine, ORIGIN).unwrap().is_empty());
    }

    #[test]
    fn everything_is_bounded() {
        let ins = Inspector::default();
        let many: Vec<serde_json::Value> = (0..(TIMELINE + 50))
            .map(|i| serde_json::json!({"peer": "b", "at": i, "kind": "ice", "detail": "x\u{1b}[2J".repeat(100)}))
            .collect();
        ins.report(report("r", "a", serde_json::json!(many)), ORIGIN)
            .unwrap();
        let snap = ins.snapshot();
        let tl = snap["rooms"]["r"]["a"]["connections"]["b"]["timeline"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(tl.len(), TIMELINE);
        assert_eq!(tl[0]["at"], 50, "the oldest went first");
        let detail = tl[0]["detail"].as_str().unwrap();
        assert!(detail.chars().count() <= MAX_TEXT && !detail.contains('\u{1b}'));
        // What a page says of a connection's signaling and relays, and its stats
        // summary: kept only as a browser would say it, and cut to size.
        let odd: Vec<serde_json::Value> = (0..300)
            .flat_map(|i| {
                [
                    serde_json::json!({"peer": "b", "at": i, "kind": "signaling", "detail": format!("state-{i}")}),
                    serde_json::json!({"peer": "b", "at": i, "kind": "local-candidate", "detail": format!("relay udp 10.0.0.1:{i} over x{i}")}),
                ]
            })
            .chain([
                serde_json::json!({"peer": "b", "at": 1, "kind": "signaling", "detail": "have-local-offer"}),
                serde_json::json!({"peer": "b", "at": 1, "kind": "local-candidate", "detail": "relay udp 10.0.0.1:9 over tcp"}),
            ])
            .collect();
        let mut r = report("r", "a", serde_json::json!(odd));
        r.peers = vec![
            serde_json::from_value(serde_json::json!({
                "peer": "b", "state": "s".repeat(5000), "path": "p".repeat(5000), "resolution": "r".repeat(5000)
            }))
            .unwrap(),
        ];
        ins.report(r, ORIGIN).unwrap();
        let b = &ins.snapshot()["rooms"]["r"]["a"]["connections"]["b"];
        assert_eq!(b["signaling"], serde_json::json!(["have-local-offer"]));
        assert_eq!(b["relayOver"], serde_json::json!(["tcp"]));
        for field in ["state", "path", "resolution"] {
            let text = b["summary"][field].as_str().unwrap();
            assert_eq!(text.chars().count(), MAX_TEXT, "{field}");
        }
        for i in 1..MAX_ROOMS {
            ins.report(
                report(&format!("room{i}"), "a", serde_json::json!([])),
                ORIGIN,
            )
            .unwrap();
        }
        let err = ins
            .report(report("one-too-many", "a", serde_json::json!([])), ORIGIN)
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most 64 rooms"), "{err}");
        assert!(
            ins.report(report("", "a", serde_json::json!([])), ORIGIN)
                .is_err()
        );
    }
}
