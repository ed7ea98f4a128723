//! Rooms in one process: the state behind the `rooms` extension (`docs/protocol.md`, "rooms")
//! for [`crate::MemoryHub`], and the request and error types every hub shares.
//!
//! Two levels of locks. The directory (room name → room, and each login's rooms) is taken by
//! what creates, empties or lists rooms; a room's own lock by everything that sends its lines.
//! A room line is encoded once and copied into each member's outbox *under the room's lock*:
//! that one critical section is what gives every member the same order, and it is N memcpys
//! of a short line, never a wait (a full outbox refuses the push, and its own task drops that
//! connection as any slow reader; the room goes on). The order of locks is always directory,
//! then room; nothing takes the directory while holding a room.
//!
//! A room's members are a `Vec` in join order, so the owner is the first (the protocol's
//! rule: whoever has been in the longest). Membership checks scan it: O(N), as the fan-out
//! that follows is anyway.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use tcpchat_proto::{Reply, RoomName, Username};

use crate::outbox::Outbox;

/// The limits of the `rooms` extension (`docs/protocol.md`, "rooms").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomLimits {
    /// Rooms one login may be in at once (`max-rooms-per-user`).
    pub rooms_per_user: usize,
    /// Members one room may have (`max-room-members`).
    pub members_per_room: usize,
    /// Longest topic, in bytes (`max-topic`).
    pub topic_bytes: usize,
}

impl Default for RoomLimits {
    /// 20 rooms per user (InspIRCd's `maxchans`), 1,000 members, 390-byte topics (Ergo's).
    fn default() -> Self {
        Self {
            rooms_per_user: 20,
            members_per_room: 1_000,
            topic_bytes: 390,
        }
    }
}

/// One request of the `rooms` extension, as the session checked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomRequest<'a> {
    Join(RoomName),
    Part(RoomName),
    Rooms,
    Members(RoomName),
    Say {
        room: RoomName,
        body: &'a str,
    },
    Topic {
        room: RoomName,
        text: Option<&'a str>,
    },
    Kick {
        room: RoomName,
        name: Username,
    },
}

/// Why a room request was refused; each is one reply line (see `Session::handle_room`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RoomError {
    /// `NOT-MEMBER`: the asker is not in the room, or the room does not exist.
    #[error("not a member of that room")]
    NotMember,
    /// `NOT-OWNER`: only the owner may set the topic or remove members.
    #[error("not the room's owner")]
    NotOwner,
    /// `ROOM-LIMIT`: the asker is in as many rooms as it may be.
    #[error("in too many rooms")]
    RoomLimit,
    /// `ROOM-FULL`: the room has as many members as it may have.
    #[error("room full")]
    RoomFull,
    /// `BAD-DEST-USER`: the member to remove is not in the room.
    #[error("no such member")]
    NoSuchMember,
    /// `ROOM-UNAVAILABLE`: the hub cannot reach the rooms' state now (a cluster node cut off
    /// from its store).
    #[error("rooms unavailable")]
    Unavailable,
    /// The hub does not serve rooms (never reached: such a hub is not offered them).
    #[error("rooms not served")]
    Unserved,
}

/// Who asks: the login's id (unique while it lives), its name and its outbox.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asker<'a> {
    pub(crate) id: u64,
    pub(crate) name: &'a Username,
    pub(crate) outbox: &'a Arc<Outbox>,
}

#[derive(Debug)]
struct Member {
    id: u64,
    name: Username,
    outbox: Arc<Outbox>,
}

#[derive(Debug, Default)]
struct Room {
    /// In join order: the first is the owner.
    members: Vec<Member>,
    /// Who set it, and the text.
    topic: Option<(Username, Box<str>)>,
}

impl Room {
    fn position(&self, id: u64) -> Option<usize> {
        self.members.iter().position(|m| m.id == id)
    }

    /// Queues one line, encoded once, on every member: the room's order is the order of
    /// these calls, which all happen under the room's lock.
    fn fan_out(&self, line: &[u8]) {
        for member in &self.members {
            // A refused push marks that outbox; its task drops the connection, whose lease
            // then parts it from here. The room never waits for it.
            let _ = member.outbox.push_with(|buf| buf.extend_from_slice(line));
        }
    }

    /// [`Room::fan_out`] of a stored message: `history` members get `extended` (`SAID-AT`,
    /// with its offset), the others `classic` (`SAID`). Each encoded once.
    fn fan_out_stored(&self, classic: &[u8], extended: &[u8]) {
        for member in &self.members {
            let line = if member.outbox.history() {
                extended
            } else {
                classic
            };
            let _ = member.outbox.push_with(|buf| buf.extend_from_slice(line));
        }
    }
}

type Shared = Arc<Mutex<Room>>;

#[derive(Debug, Default)]
struct Directory {
    /// Sorted, so `ROOMS-OK` is in byte order without sorting.
    rooms: BTreeMap<RoomName, Shared>,
    /// Each login's rooms, by its id: for the per-user limit and for parting them all when
    /// it ends.
    joined: HashMap<u64, Vec<RoomName>>,
}

/// Every room of one process.
#[derive(Debug, Default)]
pub(crate) struct Rooms {
    directory: Mutex<Directory>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only map and vector operations and memcpys happen under these locks; a panic there
    // leaves the state consistent, so poisoning is ignored.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn encode(reply: &Reply<'_>) -> Vec<u8> {
    reply.to_line()
}

impl Rooms {
    /// Does `request` for `asker`, queuing its answer (the room's own line, or a list) on the
    /// asker's outbox in the room's order.
    ///
    /// # Errors
    /// The refusal to answer with instead; nothing was queued or changed.
    #[cfg(test)]
    pub(crate) fn handle(
        &self,
        asker: Asker<'_>,
        request: RoomRequest<'_>,
        limits: RoomLimits,
    ) -> Result<(), RoomError> {
        self.handle_with(asker, request, limits, None)
    }

    /// [`Rooms::handle`], numbering and storing `SAY` messages in `history` if there is one.
    ///
    /// # Errors
    /// The refusal to answer with instead; nothing was queued or changed.
    pub(crate) fn handle_with(
        &self,
        asker: Asker<'_>,
        request: RoomRequest<'_>,
        limits: RoomLimits,
        history: Option<&crate::history::History>,
    ) -> Result<(), RoomError> {
        match request {
            RoomRequest::Join(room) => self.join(asker, room, limits),
            RoomRequest::Part(room) => self.part(asker, &room),
            RoomRequest::Rooms => {
                let directory = lock(&self.directory);
                let _ = asker.outbox.push_with(|buf| {
                    Reply::encode_rooms(buf, directory.rooms.keys().map(RoomName::as_str));
                });
                Ok(())
            }
            RoomRequest::Members(room) => {
                let Some(shared) = self.find(&room) else {
                    let _ = asker
                        .outbox
                        .push_with(|buf| Reply::encode_members(buf, room.as_str(), []));
                    return Ok(());
                };
                // Under the room's lock, so the list is exactly the state between the room
                // lines queued before it and those queued after.
                let guard = lock(&shared);
                let _ = asker.outbox.push_with(|buf| {
                    Reply::encode_members(
                        buf,
                        room.as_str(),
                        guard.members.iter().map(|m| m.name.as_str()),
                    );
                });
                Ok(())
            }
            RoomRequest::Say { room, body } => {
                let shared = self.find(&room).ok_or(RoomError::NotMember)?;
                let guard = lock(&shared);
                guard.position(asker.id).ok_or(RoomError::NotMember)?;
                let mut line = Vec::with_capacity(room.as_str().len() + body.len() + 40);
                Reply::encode_said(&mut line, room.as_str(), asker.name.as_str(), body);
                // Numbered under the room's lock: the stream's order is the room's order.
                match history.and_then(|h| h.room(room.as_str(), asker.name.as_str(), body)) {
                    Some(stamp) => {
                        let mut extended = Vec::with_capacity(line.len() + 48);
                        Reply::encode_said_at(
                            &mut extended,
                            room.as_str(),
                            stamp.offset,
                            stamp.time,
                            asker.name.as_str(),
                            body,
                        );
                        guard.fan_out_stored(&line, &extended);
                    }
                    None => guard.fan_out(&line),
                }
                Ok(())
            }
            RoomRequest::Topic { room, text } => {
                let shared = self.find(&room).ok_or(RoomError::NotMember)?;
                let mut guard = lock(&shared);
                match guard.position(asker.id) {
                    None => return Err(RoomError::NotMember),
                    Some(0) => {}
                    Some(_) => return Err(RoomError::NotOwner),
                }
                guard.topic = text.map(|t| (asker.name.clone(), t.into()));
                guard.fan_out(&encode(&Reply::TopicIs {
                    room,
                    by: asker.name.clone(),
                    text,
                }));
                Ok(())
            }
            RoomRequest::Kick { room, name } => self.kick(asker, room, &name),
        }
    }

    /// Whether the login `id` is in `room`.
    pub(crate) fn is_member(&self, room: &RoomName, id: u64) -> bool {
        self.find(room)
            .is_some_and(|shared| lock(&shared).position(id).is_some())
    }

    fn find(&self, room: &RoomName) -> Option<Shared> {
        lock(&self.directory).rooms.get(room).cloned()
    }

    fn join(&self, asker: Asker<'_>, room: RoomName, limits: RoomLimits) -> Result<(), RoomError> {
        let mut directory = lock(&self.directory);
        let Directory { rooms, joined } = &mut *directory;
        let mine = joined.get(&asker.id).map_or(&[][..], Vec::as_slice);
        if mine.contains(&room) {
            // Already in: the answer, to the asker alone; nothing changes.
            let shared = rooms.get(&room).cloned().ok_or(RoomError::NotMember)?;
            let guard = lock(&shared);
            let _ = asker.outbox.push_with(|buf| {
                joined_lines(buf, &room, asker.name, guard.topic.as_ref());
            });
            return Ok(());
        }
        if mine.len() >= limits.rooms_per_user {
            return Err(RoomError::RoomLimit);
        }
        let shared = match rooms.get(&room) {
            Some(shared) => Arc::clone(shared),
            None if limits.members_per_room == 0 => return Err(RoomError::RoomFull),
            None => Arc::clone(rooms.entry(room.clone()).or_default()),
        };
        let mut guard = lock(&shared);
        if guard.members.len() >= limits.members_per_room {
            return Err(RoomError::RoomFull);
        }
        guard.members.push(Member {
            id: asker.id,
            name: asker.name.clone(),
            outbox: Arc::clone(asker.outbox),
        });
        let line = encode(&Reply::Joined {
            room: room.clone(),
            name: asker.name.clone(),
        });
        // Everyone, the joiner included (its answer), then the topic for the joiner alone:
        // both under the room's lock, so nothing of the room falls between them.
        guard.fan_out(&line);
        if let Some((by, text)) = &guard.topic {
            let _ = asker.outbox.push_with(|buf| {
                Reply::TopicIs {
                    room: room.clone(),
                    by: by.clone(),
                    text: Some(text),
                }
                .encode(buf);
            });
        }
        drop(guard);
        joined.entry(asker.id).or_default().push(room);
        Ok(())
    }

    fn part(&self, asker: Asker<'_>, room: &RoomName) -> Result<(), RoomError> {
        let mut directory = lock(&self.directory);
        if !directory
            .joined
            .get(&asker.id)
            .is_some_and(|rooms| rooms.contains(room))
        {
            return Err(RoomError::NotMember);
        }
        Self::remove(&mut directory, room, asker.id, true, |name| Reply::Parted {
            room: room.clone(),
            name: name.clone(),
        });
        Ok(())
    }

    fn kick(&self, asker: Asker<'_>, room: RoomName, name: &Username) -> Result<(), RoomError> {
        let mut directory = lock(&self.directory);
        let shared = directory
            .rooms
            .get(&room)
            .cloned()
            .ok_or(RoomError::NotMember)?;
        let target = {
            let guard = lock(&shared);
            match guard.position(asker.id) {
                None => return Err(RoomError::NotMember),
                Some(0) => {}
                Some(_) => return Err(RoomError::NotOwner),
            }
            guard
                .members
                .iter()
                .find(|m| &m.name == name)
                .map(|m| m.id)
                .ok_or(RoomError::NoSuchMember)?
        };
        Self::remove(&mut directory, &room, target, true, |name| Reply::Kicked {
            room: room.clone(),
            name: name.clone(),
            by: asker.name.clone(),
        });
        Ok(())
    }

    /// Takes member `id` out of `room`: `line` (built from its name) goes to every member,
    /// the leaving one included when `tell_leaver` (a `PART`, a `KICK`), then it is gone; an
    /// emptied room disappears.
    fn remove(
        directory: &mut Directory,
        room: &RoomName,
        id: u64,
        tell_leaver: bool,
        line: impl FnOnce(&Username) -> Reply<'static>,
    ) {
        if let Some(rooms) = directory.joined.get_mut(&id) {
            rooms.retain(|r| r != room);
            if rooms.is_empty() {
                directory.joined.remove(&id);
            }
        }
        let Some(shared) = directory.rooms.get(room).cloned() else {
            return;
        };
        let mut guard = lock(&shared);
        let Some(at) = guard.position(id) else {
            return;
        };
        if tell_leaver {
            guard.fan_out(&encode(&line(&guard.members[at].name)));
            guard.members.remove(at);
        } else {
            let gone = guard.members.remove(at);
            guard.fan_out(&encode(&line(&gone.name)));
        }
        if guard.members.is_empty() {
            drop(guard);
            directory.rooms.remove(room);
        }
    }

    /// A login ended (its lease dropped): it leaves every room, each other member seeing
    /// `PARTED`, after everything it said there. The leaver is not sent its own: it asked
    /// for nothing, and on a server's shutdown its connection is still open while its queue
    /// drains, where a `PARTED` would tell its client it had left (and not to rejoin).
    pub(crate) fn leave_all(&self, id: u64) {
        let mut directory = lock(&self.directory);
        let Some(rooms) = directory.joined.remove(&id) else {
            return;
        };
        for room in &rooms {
            Self::remove(&mut directory, room, id, false, |name| Reply::Parted {
                room: room.clone(),
                name: name.clone(),
            });
        }
    }
}

/// The answer to a `JOIN` of a room the asker is already in: `JOINED`, then the topic.
fn joined_lines(
    buf: &mut Vec<u8>,
    room: &RoomName,
    name: &Username,
    topic: Option<&(Username, Box<str>)>,
) {
    Reply::Joined {
        room: room.clone(),
        name: name.clone(),
    }
    .encode(buf);
    if let Some((by, text)) = topic {
        Reply::TopicIs {
            room: room.clone(),
            by: by.clone(),
            text: Some(text),
        }
        .encode(buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Username {
        Username::parse(s).expect("valid test name")
    }

    fn room(s: &str) -> RoomName {
        RoomName::parse(s).expect("valid test room")
    }

    struct User {
        id: u64,
        name: Username,
        outbox: Arc<Outbox>,
    }

    impl User {
        fn new(id: u64, n: &str) -> Self {
            Self {
                id,
                name: name(n),
                outbox: Arc::new(Outbox::new(1 << 20)),
            }
        }

        fn asker(&self) -> Asker<'_> {
            Asker {
                id: self.id,
                name: &self.name,
                outbox: &self.outbox,
            }
        }

        fn take(&self) -> String {
            String::from_utf8(self.outbox.take().0).expect("utf-8")
        }
    }

    const LIMITS: RoomLimits = RoomLimits {
        rooms_per_user: 2,
        members_per_room: 3,
        topic_bytes: 390,
    };

    #[test]
    fn a_room_lives_from_its_first_join_to_its_last_part() {
        let rooms = Rooms::default();
        let (ann, bob) = (User::new(1, "ann"), User::new(2, "bob"));
        let r = || room("#r");
        rooms
            .handle(ann.asker(), RoomRequest::Join(r()), LIMITS)
            .unwrap();
        rooms
            .handle(bob.asker(), RoomRequest::Join(r()), LIMITS)
            .unwrap();
        rooms
            .handle(
                bob.asker(),
                RoomRequest::Say {
                    room: r(),
                    body: " hi ",
                },
                LIMITS,
            )
            .unwrap();
        rooms
            .handle(ann.asker(), RoomRequest::Rooms, LIMITS)
            .unwrap();
        rooms
            .handle(ann.asker(), RoomRequest::Part(r()), LIMITS)
            .unwrap();
        assert_eq!(
            ann.take(),
            "JOINED #r ann\nJOINED #r bob\nSAID #r bob  hi \nROOMS-OK #r\nPARTED #r ann\n"
        );
        assert_eq!(
            bob.take(),
            "JOINED #r bob\nSAID #r bob  hi \nPARTED #r ann\n"
        );
        assert_eq!(
            rooms.handle(
                ann.asker(),
                RoomRequest::Say {
                    room: r(),
                    body: "x"
                },
                LIMITS
            ),
            Err(RoomError::NotMember)
        );
        rooms.leave_all(bob.id);
        assert_eq!(bob.take(), "", "a login that ends is not told it left");
        rooms
            .handle(ann.asker(), RoomRequest::Rooms, LIMITS)
            .unwrap();
        rooms
            .handle(ann.asker(), RoomRequest::Members(r()), LIMITS)
            .unwrap();
        assert_eq!(ann.take(), "ROOMS-OK\nMEMBERS-OK #r\n", "the room is gone");
    }

    #[test]
    fn the_owner_is_the_longest_member_and_alone_sets_topics_and_kicks() {
        let rooms = Rooms::default();
        let (ann, bob, cy) = (User::new(1, "ann"), User::new(2, "bob"), User::new(3, "cy"));
        let r = || room("#r");
        for u in [&ann, &bob, &cy] {
            rooms
                .handle(u.asker(), RoomRequest::Join(r()), LIMITS)
                .unwrap();
        }
        let topic = |text| RoomRequest::Topic { room: r(), text };
        assert_eq!(
            rooms.handle(bob.asker(), topic(Some("x")), LIMITS),
            Err(RoomError::NotOwner)
        );
        assert_eq!(
            rooms.handle(
                bob.asker(),
                RoomRequest::Kick {
                    room: r(),
                    name: name("cy")
                },
                LIMITS
            ),
            Err(RoomError::NotOwner)
        );
        rooms
            .handle(ann.asker(), topic(Some("t 1")), LIMITS)
            .unwrap();
        assert_eq!(
            rooms.handle(
                ann.asker(),
                RoomRequest::Kick {
                    room: r(),
                    name: name("zed")
                },
                LIMITS
            ),
            Err(RoomError::NoSuchMember)
        );
        rooms
            .handle(
                ann.asker(),
                RoomRequest::Kick {
                    room: r(),
                    name: name("cy"),
                },
                LIMITS,
            )
            .unwrap();
        assert!(cy
            .take()
            .ends_with("TOPIC-IS #r ann t 1\nKICKED #r cy ann\n"));
        rooms
            .handle(ann.asker(), RoomRequest::Part(r()), LIMITS)
            .unwrap();
        // bob is the owner now, and a newcomer gets the topic after its JOINED.
        rooms.handle(bob.asker(), topic(None), LIMITS).unwrap();
        rooms
            .handle(bob.asker(), topic(Some("new")), LIMITS)
            .unwrap();
        rooms
            .handle(cy.asker(), RoomRequest::Join(r()), LIMITS)
            .unwrap();
        assert_eq!(cy.take(), "JOINED #r cy\nTOPIC-IS #r bob new\n");
        rooms
            .handle(cy.asker(), RoomRequest::Members(r()), LIMITS)
            .unwrap();
        assert_eq!(cy.take(), "MEMBERS-OK #r bob,cy\n");
    }

    #[test]
    fn limits_refuse_without_changing_anything() {
        let rooms = Rooms::default();
        let users: Vec<User> = (0..4).map(|i| User::new(i, &format!("u{i}"))).collect();
        for u in &users[..3] {
            rooms
                .handle(u.asker(), RoomRequest::Join(room("#a")), LIMITS)
                .unwrap();
        }
        assert_eq!(
            rooms.handle(users[3].asker(), RoomRequest::Join(room("#a")), LIMITS),
            Err(RoomError::RoomFull)
        );
        rooms
            .handle(users[0].asker(), RoomRequest::Join(room("#b")), LIMITS)
            .unwrap();
        assert_eq!(
            rooms.handle(users[0].asker(), RoomRequest::Join(room("#c")), LIMITS),
            Err(RoomError::RoomLimit)
        );
        // A join of a room one is in is answered to the joiner alone and counts nothing.
        users[1].take();
        rooms
            .handle(users[0].asker(), RoomRequest::Join(room("#a")), LIMITS)
            .unwrap();
        assert_eq!(users[1].take(), "");
        assert!(users[0].take().ends_with("JOINED #b u0\nJOINED #a u0\n"));
        rooms
            .handle(users[0].asker(), RoomRequest::Members(room("#a")), LIMITS)
            .unwrap();
        assert_eq!(users[0].take(), "MEMBERS-OK #a u0,u1,u2\n");
    }

    #[test]
    fn a_full_member_is_refused_and_the_room_goes_on() {
        let rooms = Rooms::default();
        let ann = User::new(1, "ann");
        let slow = User {
            id: 2,
            name: name("slow"),
            outbox: Arc::new(Outbox::new(16)),
        };
        rooms
            .handle(ann.asker(), RoomRequest::Join(room("#r")), LIMITS)
            .unwrap();
        rooms
            .handle(slow.asker(), RoomRequest::Join(room("#r")), LIMITS)
            .unwrap();
        for i in 0..10 {
            let body = format!("m{i}");
            rooms
                .handle(
                    ann.asker(),
                    RoomRequest::Say {
                        room: room("#r"),
                        body: &body,
                    },
                    LIMITS,
                )
                .unwrap();
        }
        assert_eq!(slow.outbox.take().1, Some(crate::outbox::PushError::Full));
        assert_eq!(ann.take().matches("SAID").count(), 10);
    }
}
