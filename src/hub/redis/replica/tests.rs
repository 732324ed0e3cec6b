//! Unit tests of the replica without Redis: joins, leaves, full rooms, other nodes' messages.

use std::sync::Mutex;

use super::*;

/// This node's id in the tests.
const HERE: &str = "here";
/// Remote peer `x` joins room `r`, as the join script publishes it.
const X_JOINS: &str = r#"{"k":"j","r":"r","id":"x","e":{"node":"there","seq":3,"meta":{}}}"#;

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl PeerSink for Recorder {
    fn deliver(&self, event: &Event) {
        let line = match event {
            Event::PeerJoined { id, .. } => format!("joined {id}"),
            Event::PeerLeft { id } => format!("left {id}"),
            Event::Signal { from, data } => format!("signal {from} {data}"),
            Event::Joined { room, peers, .. } => format!("in {room} with {}", peers.len()),
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

fn peer(id: &str) -> PeerId {
    PeerId::from_string(id.into())
}

fn room(name: &str) -> RoomName {
    RoomName::parse(name).unwrap()
}

fn meta() -> Arc<Value> {
    Arc::new(serde_json::json!({}))
}

/// Node [`HERE`] with these peers connected and, with `in_r`, in room `r` in this
/// order (and their sinks emptied).
fn local_with(ids: &[&str], in_r: bool) -> (Local, Arc<str>, Vec<Arc<Recorder>>) {
    let here: Arc<str> = Arc::from(HERE);
    let mut local = Local::default();
    let mut sinks = Vec::new();
    for id in ids {
        let sink = Arc::new(Recorder::default());
        let p = LocalPeer {
            sink: sink.clone(),
            room: None,
            seq: 0,
            meta: meta(),
        };
        local.peers.insert(peer(id), p);
        sinks.push(sink);
    }
    if in_r {
        for (seq, id) in (1..).zip(ids) {
            local.enter(&here, &peer(id), room("r"), meta(), seq, None);
        }
        for s in &sinks {
            s.take();
        }
    }
    (local, here, sinks)
}

fn message(text: &str) -> Message<'_> {
    Message::parse(text).unwrap().unwrap()
}

/// An [`Entry`] as the join script writes it.
fn entry(node: &str, seq: u64) -> String {
    format!(r#"{{"node":"{node}","seq":{seq},"meta":{{}}}}"#)
}

#[test]
fn replicas_keep_join_order_and_ignore_repeats() {
    let member = |id: &str, seq| Member {
        id: peer(id),
        node: "n".into(),
        seq,
        meta: Arc::new(Value::Null),
    };
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
fn a_join_tells_the_room_and_lists_it_oldest_first() {
    let (mut local, here, sinks) = local_with(&["a", "b"], false);
    let others = local.enter(&here, &peer("a"), room("r"), meta(), 1, None);
    assert!(others.is_empty());
    // Redis's snapshot holds a remote member that joined between the two.
    let snapshot = [("x".to_string(), entry("there", 2))];
    let others = local.enter(&here, &peer("b"), room("r"), meta(), 3, Some(&snapshot));
    let ids: Vec<&str> = others.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["a", "x"]);
    assert_eq!(sinks[0].take(), vec!["in r with 0", "joined x", "joined b"]);
    assert_eq!(sinks[1].take(), vec!["in r with 2"]);
    assert_eq!(local.peers[&peer("b")].room, Some(room("r")));
    assert_eq!(local.peers[&peer("b")].seq, 3);
}

#[test]
fn a_leave_tells_the_room_and_drops_rooms_without_local_peers() {
    let (mut local, here, sinks) = local_with(&["a", "b"], true);
    // Joining another room leaves the first.
    local.enter(&here, &peer("b"), room("r2"), meta(), 3, None);
    assert_eq!(sinks[0].take(), vec!["left b"]);
    assert_eq!(local.leave_local(&here, &peer("b")), Some(room("r2")));
    assert!(!local.rooms.contains_key(&room("r2")));
    assert_eq!(local.leave_local(&here, &peer("b")), None);
    assert_eq!(local.leave_local(&here, &peer("a")), Some(room("r")));
    assert!(local.rooms.is_empty());
}

#[test]
fn without_redis_a_full_room_takes_no_newcomer() {
    let (local, _, _) = local_with(&["a", "b"], true);
    assert!(!local.has_room_for(&room("r"), &peer("c"), 2));
    // A member may join again.
    assert!(local.has_room_for(&room("r"), &peer("b"), 2));
    assert!(local.has_room_for(&room("r"), &peer("c"), 3));
    assert!(local.has_room_for(&room("other"), &peer("c"), 2));
}

#[test]
fn remote_joins_and_leaves_reach_local_members() {
    let (mut local, here, sinks) = local_with(&["a", "b"], true);
    assert_eq!(local.apply(&here, message(X_JOINS)), 0);
    assert_eq!(sinks[0].take(), vec!["joined x"]);
    assert_eq!(sinks[1].take(), vec!["joined x"]);
    // The same join again (snapshot, then notification) changes nothing.
    local.apply(&here, message(X_JOINS));
    assert!(sinks[0].take().is_empty());
    let there = BTreeSet::from([Arc::<str>::from("there")]);
    assert_eq!(local.remote_nodes(&here, &room("r")), there);
    // A join for a room no local peer is in is not ours to keep.
    local.apply(&here, message(&X_JOINS.replace(r#""r":"r""#, r#""r":"q""#)));
    assert!(!local.rooms.contains_key(&room("q")));
    // Our own peers leave through us, not through a notification.
    local.apply(&here, message(r#"{"k":"l","r":"r","id":"a"}"#));
    assert!(sinks[1].take().is_empty());
    local.apply(&here, message(r#"{"k":"l","r":"r","id":"x"}"#));
    assert_eq!(sinks[0].take(), vec!["left x"]);
    assert_eq!(sinks[1].take(), vec!["left x"]);
    assert!(local.remote_nodes(&here, &room("r")).is_empty());
}

#[test]
fn remote_signals_reach_their_local_recipients() {
    let (mut local, here, sinks) = local_with(&["a", "b"], true);
    local.apply(&here, message(X_JOINS));
    sinks[0].take();
    sinks[1].take();
    let to_all = r#"{"k":"s","r":"r","f":"x","t":null,"d":{"sdp":1}}"#;
    assert_eq!(local.apply(&here, message(to_all)), 2);
    assert_eq!(sinks[0].take(), vec![r#"signal x {"sdp":1}"#]);
    assert_eq!(sinks[1].take(), vec![r#"signal x {"sdp":1}"#]);
    let to_b = r#"{"k":"s","r":"r","f":"x","t":"b","d":2}"#;
    assert_eq!(local.apply(&here, message(to_b)), 1);
    assert!(sinks[0].take().is_empty());
    assert_eq!(sinks[1].take(), vec!["signal x 2"]);
    // Not to a remote member, nor into a room no local peer is in.
    let to_x = r#"{"k":"s","r":"r","f":"b","t":"x","d":3}"#;
    assert_eq!(local.apply(&here, message(to_x)), 0);
    let elsewhere = r#"{"k":"s","r":"q","f":"x","t":null,"d":4}"#;
    assert_eq!(local.apply(&here, message(elsewhere)), 0);
    assert!(sinks[0].take().is_empty());
    assert!(sinks[1].take().is_empty());
}

#[test]
fn a_pruning_snapshot_forgets_remote_members_redis_no_longer_has() {
    let (mut local, here, sinks) = local_with(&["a"], true);
    let own = ("a".to_string(), entry(HERE, 1));
    let x = ("x".to_string(), entry("there", 2));
    let y = ("y".to_string(), entry("there", 3));
    local.merge_snapshot(&here, &room("r"), &[own.clone(), x, y.clone()], false);
    assert_eq!(sinks[0].take(), vec!["joined x", "joined y"]);
    local.merge_snapshot(&here, &room("r"), &[own, y], true);
    assert_eq!(sinks[0].take(), vec!["left x"]);
    let replica = &local.rooms[&room("r")];
    let ids: Vec<&str> = replica.members.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["a", "y"]);
}
