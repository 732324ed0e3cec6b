//! This process's replica of the rooms its own peers are in: pure data, no Redis, no I/O.
//!
//! Kept current by the join snapshots and the notifications of other nodes; every
//! method runs under the room core's lock and only queues to sinks (see `hub::core`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::scripts::{Entry, Message};
use crate::hub::core::{Event, PeerInfo, PeerSink};
use crate::hub::protocol::{PeerId, RoomName};

/// A member of a replicated room, on this node or another.
#[derive(Clone)]
pub(super) struct Member {
    /// The peer.
    pub(super) id: PeerId,
    /// The node (hub process) it is connected to.
    pub(super) node: Arc<str>,
    /// Its place in join order.
    pub(super) seq: u64,
    /// Its metadata.
    pub(super) meta: Arc<Value>,
}

/// A room as this node sees it (only rooms its own peers are in).
#[derive(Default)]
pub(super) struct Replica {
    /// Oldest first.
    pub(super) members: Vec<Member>,
}

impl Replica {
    /// Adds a member unless present; true if it was new.
    fn insert(&mut self, m: Member) -> bool {
        if self.members.iter().any(|x| x.id == m.id) {
            return false;
        }
        let at = self.members.partition_point(|x| x.seq <= m.seq);
        self.members.insert(at, m);
        true
    }

    fn remove(&mut self, id: &str) -> Option<Member> {
        let at = self.members.iter().position(|m| m.id.as_str() == id)?;
        Some(self.members.remove(at))
    }

    /// The member with this id, if it is in the room.
    pub(super) fn get(&self, id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.id.as_str() == id)
    }
}

/// A peer connected to this process.
pub(super) struct LocalPeer {
    /// Where its events go.
    pub(super) sink: Arc<dyn PeerSink>,
    /// Its room, if it joined one.
    pub(super) room: Option<RoomName>,
    /// Its place in join order in that room.
    pub(super) seq: u64,
    /// Its metadata.
    pub(super) meta: Arc<Value>,
}

/// Everything this node knows: its peers, its rooms' replicas, and when the nodes it
/// shares rooms with were last seen alive.
#[derive(Default)]
pub(super) struct Local {
    /// The peers connected here.
    pub(super) peers: HashMap<PeerId, LocalPeer>,
    /// The rooms they are in.
    pub(super) rooms: HashMap<RoomName, Replica>,
    /// When each remote node that shares a room with us was last seen alive.
    pub(super) seen: HashMap<Arc<str>, Instant>,
}

impl Local {
    /// Delivers to this node's members of `room`, except `skip`; returns how many.
    pub(super) fn tell_local(
        &self,
        node: &str,
        room: &RoomName,
        skip: Option<&str>,
        event: &Event,
    ) -> u64 {
        let Some(r) = self.rooms.get(room) else {
            return 0;
        };
        let mut n = 0;
        for m in r.members.iter().filter(|m| &*m.node == node) {
            if Some(m.id.as_str()) == skip {
                continue;
            }
            if let Some(p) = self.peers.get(&m.id) {
                p.sink.deliver(event);
                n += 1;
            }
        }
        n
    }

    /// Adds a member to a replica and tells the local peers if it is new.
    fn add_member(&mut self, node: &str, room: &RoomName, m: Member) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let event = Event::PeerJoined {
            id: m.id.clone(),
            meta: m.meta.clone(),
        };
        let id = m.id.clone();
        if r.insert(m) {
            self.tell_local(node, room, Some(id.as_str()), &event);
        }
    }

    /// Removes a member from a replica and tells the local peers if it was there; a
    /// replica left without local members is dropped.
    pub(super) fn remove_member(&mut self, node: &str, room: &RoomName, id: &str) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        if let Some(m) = r.remove(id) {
            self.tell_local(node, room, None, &Event::PeerLeft { id: m.id });
        }
        if self
            .rooms
            .get(room)
            .is_some_and(|r| !r.members.iter().any(|m| &*m.node == node))
        {
            self.rooms.remove(room);
        }
    }

    /// Takes a local peer out of its room here; returns the room.
    pub(super) fn leave_local(&mut self, node: &str, id: &PeerId) -> Option<RoomName> {
        let room = self.peers.get_mut(id)?.room.take()?;
        self.remove_member(node, &room, id.as_str());
        Some(room)
    }

    /// The other nodes with members in `room`.
    pub(super) fn remote_nodes(&self, node: &str, room: &RoomName) -> BTreeSet<Arc<str>> {
        self.rooms
            .get(room)
            .map(|r| {
                r.members
                    .iter()
                    .filter(|m| &*m.node != node)
                    .map(|m| m.node.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `room` has a place for `id` as far as this process knows (it is there
    /// already, or the room holds fewer than `max`): the decision while Redis is away.
    pub(super) fn has_room_for(&self, room: &RoomName, id: &PeerId, max: usize) -> bool {
        let size = self.rooms.get(room).map_or(0, |r| r.members.len());
        let here = self
            .rooms
            .get(room)
            .is_some_and(|r| r.get(id.as_str()).is_some());
        here || size < max
    }

    /// Puts local peer `id` into `room` at `seq`, after taking it out of its old room
    /// and merging Redis's `snapshot` of the room (if Redis answered). Tells the room's
    /// local members, delivers `Joined` to the joiner and returns the others, oldest
    /// first.
    pub(super) fn enter(
        &mut self,
        node: &Arc<str>,
        id: &PeerId,
        room: RoomName,
        meta: Arc<Value>,
        seq: u64,
        snapshot: Option<&[(String, String)]>,
    ) -> Vec<PeerInfo> {
        self.leave_local(node, id);
        self.rooms.entry(room.clone()).or_default();
        if let Some(s) = snapshot {
            self.merge_snapshot(node, &room, s, false);
        }
        let me = Member {
            id: id.clone(),
            node: node.clone(),
            seq,
            meta: meta.clone(),
        };
        let event = Event::PeerJoined {
            id: id.clone(),
            meta: meta.clone(),
        };
        if let Some(r) = self.rooms.get_mut(&room) {
            r.insert(me);
        }
        self.tell_local(node, &room, Some(id.as_str()), &event);
        if let Some(p) = self.peers.get_mut(id) {
            p.room = Some(room.clone());
            p.seq = seq;
            p.meta = meta;
        }
        let others: Vec<PeerInfo> = self
            .rooms
            .get(&room)
            .map(|r| {
                r.members
                    .iter()
                    .filter(|m| m.id != *id)
                    .map(|m| PeerInfo {
                        id: m.id.clone(),
                        meta: m.meta.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let others = Arc::new(others);
        if let Some(p) = self.peers.get(id) {
            p.sink.deliver(&Event::Joined {
                id: id.clone(),
                room,
                peers: others.clone(),
                resumed: false,
            });
        }
        Arc::unwrap_or_clone(others)
    }

    /// Merges a membership snapshot (`HGETALL room`) into the replica; with `prune`,
    /// remote members missing from it are gone.
    pub(super) fn merge_snapshot(
        &mut self,
        node: &str,
        room: &RoomName,
        pairs: &[(String, String)],
        prune: bool,
    ) {
        let mut present = BTreeSet::new();
        for (id, entry) in pairs {
            let Some(e) = Entry::parse(entry) else {
                continue;
            };
            present.insert(id.clone());
            if e.node == node {
                continue;
            }
            let m = Member {
                id: PeerId::from_string(id.clone()),
                node: e.node.into(),
                seq: e.seq,
                meta: e.meta,
            };
            self.add_member(node, room, m);
        }
        if prune {
            let gone: Vec<String> = self
                .rooms
                .get(room)
                .map(|r| {
                    r.members
                        .iter()
                        .filter(|m| &*m.node != node && !present.contains(m.id.as_str()))
                        .map(|m| m.id.to_string())
                        .collect()
                })
                .unwrap_or_default();
            for id in gone {
                self.remove_member(node, room, &id);
            }
        }
    }

    /// Applies a notification from another node; returns the signals delivered here.
    pub(super) fn apply(&mut self, node: &str, message: Message<'_>) -> u64 {
        match message {
            Message::Join { room, id, entry } => {
                let Some(e) = Entry::parse(entry.get()) else {
                    return 0;
                };
                let m = Member {
                    id: PeerId::from_string(id.to_string()),
                    node: e.node.into(),
                    seq: e.seq,
                    meta: e.meta,
                };
                self.add_member(node, &room, m);
                0
            }
            Message::Leave { room, id } => {
                // Only remote members: our own peers leave through us.
                if self
                    .rooms
                    .get(&room)
                    .and_then(|r| r.get(id))
                    .is_some_and(|m| &*m.node != node)
                {
                    self.remove_member(node, &room, id);
                }
                0
            }
            Message::Signal {
                room,
                from,
                to,
                data,
            } => {
                let event = Event::Signal {
                    from: PeerId::from_string(from.to_string()),
                    data: data.get().into(),
                };
                match to {
                    Some(to) => {
                        let is_local_member = self
                            .rooms
                            .get(&room)
                            .and_then(|r| r.get(to))
                            .is_some_and(|m| &*m.node == node);
                        match self.peers.get(&PeerId::from_string(to.to_string())) {
                            Some(p) if is_local_member => {
                                p.sink.deliver(&event);
                                1
                            }
                            _ => 0,
                        }
                    }
                    None => self.tell_local(node, &room, Some(from), &event),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
