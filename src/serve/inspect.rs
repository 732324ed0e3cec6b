//! The room inspector: every calling page reports how its peer connections live (state
//! changes, candidates, candidate errors, a stats summary); the inspector joins the two
//! sides of each connection, keeps a bounded timeline of each, serves it to the laptop
//! (`/inspect`), and prints one line saying why when a connection fails.
//!
//! Pages report what they like, so everything is bounded: rooms, pages per room,
//! connections per page, the timeline (a ring), the text of each entry; pages that
//! stop reporting are forgotten.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Largest report body accepted, in bytes.
pub const MAX_BODY: usize = 64 * 1024;
const MAX_ROOMS: usize = 64;
const MAX_PAGES: usize = 32;
const MAX_SIDES: usize = 32;
/// Timeline entries kept per side of a connection.
const TIMELINE: usize = 200;
const MAX_TEXT: usize = 200;
const MAX_ERRORS: usize = 20;
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

/// Text safe to keep and print: no control characters, at most [`MAX_TEXT`] characters.
fn clean(s: &str) -> String {
    s.chars()
        .take(MAX_TEXT)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
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
    errors: Vec<String>,
    timeline: VecDeque<Entry>,
    #[serde(skip)]
    failed_said: bool,
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
        for e in r.events {
            let peer = clean(&e.peer);
            let Some(side) = side_of(page, &peer) else {
                continue;
            };
            let detail = clean(&e.detail);
            match e.kind.as_str() {
                "local-candidate" => side.local.add(&detail),
                "remote-candidate" => side.remote.add(&detail),
                "candidate-error" if side.errors.len() < MAX_ERRORS => {
                    side.errors.push(detail.clone())
                }
                "connection" => {
                    side.state = detail.clone();
                    // Said once a failure: the ICE restarts that follow fail again
                    // without news, until the connection has worked in between.
                    if detail == "failed" && !side.failed_said {
                        side.failed_said = true;
                        failed.push(peer.clone());
                    } else if detail == "connected" {
                        side.failed_said = false;
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
        for s in r.peers {
            let peer = clean(&s.peer);
            if let Some(side) = side_of(page, &peer) {
                side.summary = Some(s);
            }
        }
        let me = display(page, &id);
        for peer in failed {
            let this = &pages[&id].sides[&peer];
            let (other, other_name) = match pages.get(&peer) {
                Some(p) => (p.sides.get(&id), display(p, &peer)),
                None => (None, peer.clone()),
            };
            if other.is_some_and(|o| o.failed_said) {
                continue; // said already, from the other end
            }
            let (a, b) = (short(pages.get(&id), &id), short(pages.get(&peer), &peer));
            verdicts.push(format!(
                "  call failed in room {room}: {me} <-> {other_name}: {}",
                verdict(this, other, &a, &b)
            ));
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

/// Why a connection failed, in one line, from what both ends reported (`other` is
/// `None` when the far page reported nothing).
fn verdict(this: &Side, other: Option<&Side>, me: &str, them: &str) -> String {
    let unreachable_turn = |s: &Side| {
        s.errors
            .iter()
            .find(|e| e.starts_with("701") && e.contains("turn"))
            .cloned()
    };
    if this.remote.total() == 0 {
        return format!(
            "no ICE candidate from {them} reached {me}: it gathered none, or signaling lost them"
        );
    }
    let relay_here = this.local.has("relay");
    let relay_there = other.is_some_and(|o| o.local.has("relay")) || this.remote.has("relay");
    let reflexive = |c: &Counts| c.has("srflx") || c.has("relay");
    if !reflexive(&this.local) && !reflexive(&this.remote) {
        return format!(
            "only host candidates on both sides ({me}: {}; {them}: {}), and no STUN or TURN server: \
             the devices cannot reach each other directly (different networks, or Wi-Fi that \
             isolates clients); a TURN server relays around this (rtcdev serve --turn)",
            this.local.describe(),
            this.remote.describe()
        );
    }
    if let Some(e) = unreachable_turn(this) {
        return format!(
            "{me} could not reach the TURN server ({e}): its network blocks it (UDP and TCP to the TURN port)"
        );
    }
    if let Some(e) = other.and_then(unreachable_turn) {
        return format!(
            "{them} could not reach the TURN server ({e}): its network blocks it (UDP and TCP to the TURN port)"
        );
    }
    if !relay_here && !relay_there {
        return format!(
            "no pair of candidates worked and neither side has a relay ({me}: {}; {them}: {}): \
             a TURN server relays around this (rtcdev serve --turn)",
            this.local.describe(),
            this.remote.describe()
        );
    }
    let without = if relay_here { them } else { me };
    format!(
        "no pair of candidates worked, the relay included ({me}: {}; {them}: {}); {without} has no relay \
         candidate: its network may block the TURN server",
        this.local.describe(),
        this.remote.describe()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(local: &[&str], remote: &[&str], errors: &[&str]) -> Side {
        let mut s = Side::default();
        for c in local {
            s.local.add(c);
        }
        for c in remote {
            s.remote.add(c);
        }
        s.errors = errors.iter().map(|e| e.to_string()).collect();
        s
    }

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
    fn verdicts_name_the_likely_cause() {
        let v = verdict(&side(&["host udp"], &[], &[]), None, "Ann", "Bob");
        assert!(
            v.starts_with("no ICE candidate from Bob reached Ann"),
            "{v}"
        );
        let v = verdict(&side(&["host udp"], &["host udp"], &[]), None, "Ann", "Bob");
        assert!(v.starts_with("only host candidates on both sides"), "{v}");
        assert!(v.contains("rtcdev serve --turn"), "{v}");
        let blocked = side(
            &["host udp", "srflx udp"],
            &["host udp", "relay udp"],
            &["701 Failed to establish connection turn:10.0.0.1:3478?transport=tcp"],
        );
        let v = verdict(&blocked, None, "Ann", "Bob");
        assert!(
            v.starts_with("Ann could not reach the TURN server (701"),
            "{v}"
        );
        let v = verdict(
            &side(&["host udp", "srflx udp"], &["host udp", "srflx udp"], &[]),
            None,
            "Ann",
            "Bob",
        );
        assert!(v.contains("neither side has a relay"), "{v}");
        let v = verdict(
            &side(&["host udp", "relay udp"], &["host udp", "srflx udp"], &[]),
            Some(&side(&["host udp", "srflx udp"], &[], &[])),
            "Ann",
            "Bob",
        );
        assert!(
            v.ends_with("Bob has no relay candidate: its network may block the TURN server"),
            "{v}"
        );
    }

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
        assert_eq!(side["local"]["host"], 1);
        assert_eq!(side["timeline"].as_array().unwrap().len(), 7);
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
