//! Rooms across nodes (`docs/cluster.md`, "Rooms"): Redis holds each room (members in join
//! order, which node each is on, the topic) in the room's own slot, and one script per
//! request changes it and publishes the room's line on the room's channel, in the same step;
//! every node with members in the room subscribes to that channel, and fans each line out to
//! its own members as the single process does (encoded once, one push each, under a lock).
//!
//! Redis runs one script at a time on the room's shard and delivers a channel's messages in
//! publish order, so every node, and so every member, gets one room's lines in one order,
//! whichever node ran each script. A joiner is added here *pending* (and the node subscribed
//! to the room's channel) before its script runs: it is handed nothing of the room until its
//! own `JOINED` arrives on the channel, which is exactly where it entered the room's order. A
//! member leaves this node's list when the line of its departure (`PARTED`, `KICKED`) has
//! been handed to it, or at once when its connection ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tcpchat_proto::{Reply, RoomName, Username};
use tcpchat_server::Outbox;
use tracing::warn;

#[derive(Debug)]
struct Member {
    name: Username,
    token: u64,
    outbox: Arc<Outbox>,
    /// Its own `JOINED` has arrived: from here on it gets the room's lines.
    joined: bool,
}

/// This node's members of every room.
#[derive(Debug, Default)]
pub(crate) struct LocalRooms {
    rooms: Mutex<HashMap<RoomName, Vec<Member>>>,
}

/// One room line as published: `{kind} {rest}`.
fn room_line<'a>(room: &RoomName, event: &'a str) -> Option<(Reply<'a>, Option<Username>)> {
    let (kind, rest) = event.split_once(' ').unwrap_or((event, ""));
    let name = |s: &str| Username::parse_with_limit(s, usize::MAX).ok();
    let room = room.clone();
    Some(match kind {
        // `R`: joined again after Redis lost the membership (a re-sync); a `JOINED` for the
        // others, nothing for its own node (see `handle_room_line`).
        "J" | "R" => {
            let who = name(rest)?;
            (
                Reply::Joined {
                    room,
                    name: who.clone(),
                },
                Some(who),
            )
        }
        "P" => {
            let who = name(rest)?;
            (
                Reply::Parted {
                    room,
                    name: who.clone(),
                },
                Some(who),
            )
        }
        "K" => {
            let (who, by) = rest.split_once(' ')?;
            let who = name(who)?;
            (
                Reply::Kicked {
                    room,
                    name: who.clone(),
                    by: name(by)?,
                },
                Some(who),
            )
        }
        "T" => {
            let (by, text) = match rest.split_once(' ') {
                Some((by, text)) => (by, Some(text)),
                None => (rest, None),
            };
            (
                Reply::TopicIs {
                    room,
                    by: name(by)?,
                    text,
                },
                None,
            )
        }
        // `A`: said and kept in the room's history; here its classic line.
        "A" => {
            let (_, _, from, body) = stamped(rest)?;
            (
                Reply::Said {
                    room,
                    from: name(from)?,
                    body,
                },
                None,
            )
        }
        "S" => {
            let (from, body) = rest.split_once(' ')?;
            (
                Reply::Said {
                    room,
                    from: name(from)?,
                    body,
                },
                None,
            )
        }
        "M" => {
            let names = if rest.is_empty() {
                Vec::new()
            } else {
                rest.split(',').map(name).collect::<Option<Vec<_>>>()?
            };
            (Reply::MembersOk { room, names }, None)
        }
        _ => return None,
    })
}

/// `{offset} {time} {from} {body}` of an `A` line.
fn stamped(rest: &str) -> Option<(u64, u64, &str, &str)> {
    let (offset, rest) = rest.split_once(' ')?;
    let (time, rest) = rest.split_once(' ')?;
    let (from, body) = rest.split_once(' ')?;
    Some((offset.parse().ok()?, time.parse().ok()?, from, body))
}

impl LocalRooms {
    fn lock(&self) -> MutexGuard<'_, HashMap<RoomName, Vec<Member>>> {
        // Only vector operations and memcpys happen under this lock.
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a joiner, pending until its `JOINED` arrives. False if it is already a member
    /// here (then nothing is added).
    pub(crate) fn add_pending(
        &self,
        room: &RoomName,
        name: &Username,
        token: u64,
        outbox: &Arc<Outbox>,
    ) -> bool {
        let mut rooms = self.lock();
        let members = rooms.entry(room.clone()).or_default();
        if members.iter().any(|m| m.token == token) {
            return false;
        }
        members.push(Member {
            name: name.clone(),
            token,
            outbox: Arc::clone(outbox),
            joined: false,
        });
        true
    }

    /// Takes back a joiner whose `JOIN` was refused (still pending).
    pub(crate) fn remove_pending(&self, room: &RoomName, token: u64) {
        let mut rooms = self.lock();
        if let Some(members) = rooms.get_mut(room) {
            members.retain(|m| m.token != token || m.joined);
            if members.is_empty() {
                rooms.remove(room);
            }
        }
    }

    /// Whether the login `token` is in `room` here (joined or joining).
    pub(crate) fn is_in(&self, room: &RoomName, token: u64) -> bool {
        self.lock()
            .get(room)
            .is_some_and(|members| members.iter().any(|m| m.token == token))
    }

    /// How many rooms the login `token` is in or joining (the per-user limit: a user is on
    /// one node, so its node knows them all).
    pub(crate) fn rooms_of(&self, token: u64) -> usize {
        self.lock()
            .values()
            .filter(|members| members.iter().any(|m| m.token == token))
            .count()
    }

    /// Whether any member of `room` (joined or joining) is here: the node must listen to it.
    pub(crate) fn has_room(&self, room: &RoomName) -> bool {
        self.lock().contains_key(room)
    }

    /// Every room with members here (the channels to listen to).
    pub(crate) fn rooms(&self) -> Vec<RoomName> {
        self.lock().keys().cloned().collect()
    }

    /// Every `(room, member)` whose `JOINED` has arrived: what a re-sync writes back.
    pub(crate) fn memberships(&self) -> Vec<(RoomName, Username)> {
        self.lock()
            .iter()
            .flat_map(|(room, members)| {
                members
                    .iter()
                    .filter(|m| m.joined)
                    .map(|m| (room.clone(), m.name.clone()))
            })
            .collect()
    }

    /// Every `(room, member)` here, joining ones included.
    pub(crate) fn memberships_with_joining(&self) -> Vec<(RoomName, Username)> {
        self.lock()
            .iter()
            .flat_map(|(room, members)| members.iter().map(|m| (room.clone(), m.name.clone())))
            .collect()
    }

    /// A connection ended: it is in no room here any more. Returns the rooms it was in or
    /// joining (to leave in Redis).
    pub(crate) fn drop_member(&self, token: u64) -> Vec<RoomName> {
        let mut rooms = self.lock();
        let mut was = Vec::new();
        rooms.retain(|room, members| {
            let before = members.len();
            members.retain(|m| m.token != token);
            if members.len() != before {
                was.push(room.clone());
            }
            !members.is_empty()
        });
        was
    }

    /// `{room} {kind} {rest}` published for the room: encoded once, queued on every local
    /// member in the order it arrived. Returns the room if it has no members here any more
    /// (the node stops listening to it).
    pub(crate) fn handle_room_line(&self, payload: &str) -> Option<RoomName> {
        let Some((room, event)) = payload.split_once(' ') else {
            warn!("ignoring a malformed cluster room line");
            return None;
        };
        let Ok(room) = RoomName::parse_with_limit(room, usize::MAX) else {
            warn!("ignoring a cluster room line with an invalid room");
            return None;
        };
        let Some((reply, who)) = room_line(&room, event) else {
            warn!("ignoring a malformed cluster room line");
            return None;
        };
        let line = reply.to_line();
        // A kept message: `SAID-AT` for `history` members, encoded once as the other.
        let with_offset = event
            .strip_prefix("A ")
            .and_then(stamped)
            .map(|(o, t, from, body)| {
                let mut buf = Vec::new();
                Reply::encode_said_at(&mut buf, room.as_str(), o, t, from, body);
                buf
            });
        let joined = matches!(reply, Reply::Joined { .. });
        let left = matches!(reply, Reply::Parted { .. } | Reply::Kicked { .. });
        let mut rooms = self.lock();
        let members = rooms.get_mut(&room)?;
        if event.starts_with("R ")
            && members
                .iter()
                .any(|m| m.joined && Some(&m.name) == who.as_ref())
        {
            // Its own node never saw it leave: nothing changed for the members here.
            return None;
        }
        for m in members.iter_mut() {
            if !m.joined {
                // Its own JOINED is where it entered the room's order.
                if !(joined && Some(&m.name) == who.as_ref()) {
                    continue;
                }
                m.joined = true;
            }
            let line = match &with_offset {
                Some(stamped) if m.outbox.history() => stamped,
                _ => &line,
            };
            // A full queue marks that connection for dropping; the room goes on.
            let _ = m.outbox.push_with(|buf| buf.extend_from_slice(line));
        }
        if left {
            members.retain(|m| !(m.joined && Some(&m.name) == who.as_ref()));
            if members.is_empty() {
                rooms.remove(&room);
                return Some(room);
            }
        }
        None
    }
}

/// `{room} {kind} {rest}` meant for one user (the topic after its `JOIN`, a members list,
/// the answer to a `JOIN` of a room it is in), as a line to queue.
pub(crate) fn user_line(payload: &str) -> Option<Vec<u8>> {
    let (room, event) = payload.split_once(' ')?;
    let room = RoomName::parse_with_limit(room, usize::MAX).ok()?;
    room_line(&room, event).map(|(reply, _)| reply.to_line())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Username {
        Username::parse(s).expect("valid")
    }

    #[test]
    fn a_pending_joiner_gets_nothing_before_its_own_joined() {
        let rooms = LocalRooms::default();
        let room = RoomName::parse("#r").expect("valid");
        let (a, b) = (Arc::new(Outbox::new(1024)), Arc::new(Outbox::new(1024)));
        assert!(rooms.add_pending(&room, &name("ann"), 1, &a));
        rooms.handle_room_line("#r J ann");
        assert!(rooms.add_pending(&room, &name("bob"), 2, &b));
        assert!(!rooms.add_pending(&room, &name("bob"), 2, &b));
        rooms.handle_room_line("#r S ann before bob");
        rooms.handle_room_line("#r J bob");
        rooms.handle_room_line("#r T ann a  topic");
        rooms.handle_room_line("#r K bob ann");
        rooms.handle_room_line("#r R bob");
        rooms.handle_room_line("#r R ann");
        rooms.handle_room_line("#r S ann after");
        assert_eq!(
            String::from_utf8(a.take().0).expect("utf-8"),
            "JOINED #r ann\nSAID #r ann before bob\nJOINED #r bob\nTOPIC-IS #r ann a  topic\n\
             KICKED #r bob ann\nJOINED #r bob\nSAID #r ann after\n"
        );
        assert_eq!(
            String::from_utf8(b.take().0).expect("utf-8"),
            "JOINED #r bob\nTOPIC-IS #r ann a  topic\nKICKED #r bob ann\n"
        );
        assert_eq!(rooms.rooms_of(1), 1);
        assert_eq!(rooms.memberships(), vec![(room.clone(), name("ann"))]);
        assert_eq!(rooms.drop_member(1), vec![room.clone()]);
        assert!(rooms.drop_member(1).is_empty());
        assert!(!rooms.has_room(&room));
        assert_eq!(
            user_line("#r M ann,bob").as_deref(),
            Some(&b"MEMBERS-OK #r ann,bob\n"[..])
        );
        assert_eq!(user_line("#r M ").as_deref(), Some(&b"MEMBERS-OK #r\n"[..]));
        assert_eq!(user_line("#r X y"), None);
    }

    #[test]
    fn a_kept_message_is_said_at_to_history_members_and_said_to_the_others() {
        let rooms = LocalRooms::default();
        let room = RoomName::parse("#r").expect("valid");
        let (ext, plain) = (Arc::new(Outbox::new(1024)), Arc::new(Outbox::new(1024)));
        ext.set_history();
        assert!(rooms.add_pending(&room, &name("ann"), 1, &ext));
        assert!(rooms.add_pending(&room, &name("bob"), 2, &plain));
        rooms.handle_room_line("#r J ann");
        rooms.handle_room_line("#r J bob");
        rooms.handle_room_line("#r A 7 1700000000123 ann hi  there");
        rooms.handle_room_line("#r A x 1 ann malformed offset");
        rooms.handle_room_line("#r S bob not kept");
        assert_eq!(
            String::from_utf8(ext.take().0).expect("utf-8"),
            "JOINED #r ann\nJOINED #r bob\nSAID-AT #r 7 1700000000123 ann hi  there\n\
             SAID #r bob not kept\n"
        );
        assert_eq!(
            String::from_utf8(plain.take().0).expect("utf-8"),
            "JOINED #r bob\nSAID #r ann hi  there\nSAID #r bob not kept\n"
        );
    }
}
