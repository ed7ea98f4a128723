//! Rooms on the client side (`docs/protocol.md`, "rooms"): what the user asks of a room
//! ([`RoomOp`]) and what the session reports about rooms ([`RoomEvent`]).
//!
//! The server answers a request that changes a room with the room's own line, the one every
//! member gets (`JOIN` with `JOINED <room> <you>`, `SAY` with `SAID <room> <you> ...`), and
//! those lines also arrive unasked whenever someone else acts. So a room line is always an
//! event, and it *also* answers the oldest waiting request when it is that request's own
//! line ([`RoomOp::answered_by`]); everything else (lists, refusals) answers in order like
//! any reply. Pure: no I/O, no clock.

use std::fmt;

use tcpchat_proto::{Reply, Request, RoomName, Username};

/// The most rooms the session remembers being in (to join them again after a reconnection).
/// The server allows 20 by default; this only bounds a hostile server's `JOINED` lines.
pub const MAX_JOINED_ROOMS: usize = 100;

/// A request about rooms, as the user asked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomOp {
    Join(RoomName),
    Part(RoomName),
    /// Which rooms exist.
    List,
    Members(RoomName),
    Say {
        room: RoomName,
        text: String,
    },
    /// Set the topic, or clear it (`None`).
    Topic {
        room: RoomName,
        text: Option<String>,
    },
    Kick {
        room: RoomName,
        name: Username,
    },
}

impl RoomOp {
    /// The protocol request.
    pub fn request(&self) -> Request<'_> {
        match self {
            Self::Join(room) => Request::Join(room.clone()),
            Self::Part(room) => Request::Part(room.clone()),
            Self::List => Request::Rooms,
            Self::Members(room) => Request::Members(room.clone()),
            Self::Say { room, text } => Request::Say {
                room: room.clone(),
                body: text,
            },
            Self::Topic { room, text } => Request::Topic {
                room: room.clone(),
                text: text.as_deref(),
            },
            Self::Kick { room, name } => Request::Kick {
                room: room.clone(),
                name: name.clone(),
            },
        }
    }

    /// The room it is about, if one.
    pub fn room(&self) -> Option<&RoomName> {
        match self {
            Self::List => None,
            Self::Join(room)
            | Self::Part(room)
            | Self::Members(room)
            | Self::Say { room, .. }
            | Self::Topic { room, .. }
            | Self::Kick { room, .. } => Some(room),
        }
    }

    /// Whether `event` is this request's own room line, the way the server answers it: the
    /// same kind, the same room, done by `me`.
    pub fn answered_by(&self, event: &RoomEvent, me: &Username) -> bool {
        match (self, event) {
            (Self::Join(r), RoomEvent::Joined { room, name })
            | (Self::Part(r), RoomEvent::Parted { room, name }) => r == room && name == me,
            (Self::Say { room: r, .. }, RoomEvent::Said { room, from, .. }) => {
                r == room && from == me
            }
            (Self::Topic { room: r, .. }, RoomEvent::Topic { room, by, .. }) => {
                r == room && by == me
            }
            (Self::Kick { room: r, name: n }, RoomEvent::Kicked { room, name, by }) => {
                r == room && n == name && by == me
            }
            _ => false,
        }
    }
}

impl fmt::Display for RoomOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Join(room) => write!(f, "joining {room}"),
            Self::Part(room) => write!(f, "leaving {room}"),
            Self::List => f.write_str("the room list"),
            Self::Members(room) => write!(f, "the members of {room}"),
            Self::Say { room, .. } => write!(f, "the message to {room}"),
            Self::Topic { room, .. } => write!(f, "the topic of {room}"),
            Self::Kick { room, name } => write!(f, "removing {name} from {room}"),
        }
    }
}

/// Something that happened in a room, or the answer to a [`RoomOp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    Joined {
        room: RoomName,
        name: Username,
    },
    Parted {
        room: RoomName,
        name: Username,
    },
    /// The owner `by` removed `name`.
    Kicked {
        room: RoomName,
        name: Username,
        by: Username,
    },
    /// `by` set the topic, or cleared it (`None`).
    Topic {
        room: RoomName,
        by: Username,
        text: Option<String>,
    },
    /// A message in the room; the user's own come back this way too, in the room's order.
    /// `at`: its place in the room's stream and its server time (`history`).
    Said {
        room: RoomName,
        from: Username,
        text: String,
        at: Option<crate::history::Stamp>,
    },
    /// The answer to `/rooms`: every room, sorted.
    Rooms(Vec<RoomName>),
    /// The answer to `/members`: the owner first, then in join order.
    Members {
        room: RoomName,
        names: Vec<Username>,
    },
    /// The request was not done.
    Refused {
        op: RoomOp,
        why: RoomRefusal,
    },
}

/// Why a room request was not done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomRefusal {
    /// Not logged in yet, or the server does not offer `rooms`.
    NotOffered,
    /// Too many requests are waiting for the server.
    Busy,
    /// Too long for a protocol line.
    TooLong,
    NotMember,
    NotOwner,
    RoomLimit,
    RoomFull,
    /// `ROOM-UNAVAILABLE`: try again.
    Unavailable,
    /// `BAD-DEST-USER` to a `KICK`: that name is not in the room.
    NoSuchMember,
    /// The server did not accept the line (`BAD-RQST-BODY`: e.g. a topic too long).
    Refused,
    /// The connection ended before the answer.
    Unanswered,
}

impl RoomRefusal {
    /// The refusal a reply means.
    pub fn of(reply: &Reply<'_>) -> Self {
        match reply {
            Reply::NotMember => Self::NotMember,
            Reply::NotOwner => Self::NotOwner,
            Reply::RoomLimit => Self::RoomLimit,
            Reply::RoomFull => Self::RoomFull,
            Reply::RoomUnavailable => Self::Unavailable,
            Reply::BadDestUser => Self::NoSuchMember,
            _ => Self::Refused,
        }
    }
}

impl fmt::Display for RoomRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotOffered => "this server has no rooms (or you are not logged in yet)",
            Self::Busy => "too many requests are waiting for the server; try again",
            Self::TooLong => "too long for one line of the protocol",
            Self::NotMember => "you are not in that room (/join it first)",
            Self::NotOwner => "only the room's owner (its longest member) may do that",
            Self::RoomLimit => "you are in as many rooms as the server allows; /part one first",
            Self::RoomFull => "the room is full",
            Self::Unavailable => "the server cannot reach the room right now; try again",
            Self::NoSuchMember => "nobody of that name is in the room",
            Self::Refused => "the server refused it (too long?)",
            Self::Unanswered => "the connection ended before the server answered",
        })
    }
}

/// A room line (`JOINED`, `PARTED`, `KICKED`, `TOPIC-IS`, `SAID`) as an event; `None` for
/// any other reply.
pub fn room_line(reply: &Reply<'_>) -> Option<RoomEvent> {
    Some(match reply {
        Reply::Joined { room, name } => RoomEvent::Joined {
            room: room.clone(),
            name: name.clone(),
        },
        Reply::Parted { room, name } => RoomEvent::Parted {
            room: room.clone(),
            name: name.clone(),
        },
        Reply::Kicked { room, name, by } => RoomEvent::Kicked {
            room: room.clone(),
            name: name.clone(),
            by: by.clone(),
        },
        Reply::TopicIs { room, by, text } => RoomEvent::Topic {
            room: room.clone(),
            by: by.clone(),
            text: text.map(crate::session::one_line),
        },
        Reply::Said { room, from, body } => RoomEvent::Said {
            room: room.clone(),
            from: from.clone(),
            text: (*body).to_owned(),
            at: None,
        },
        _ => return None,
    })
}

/// The answer to a waiting room request that is not a room line.
pub fn answer(op: RoomOp, reply: Reply<'_>) -> RoomEvent {
    match (op, reply) {
        (RoomOp::List, Reply::RoomsOk(rooms)) => RoomEvent::Rooms(rooms),
        (RoomOp::Members(_), Reply::MembersOk { room, names }) => {
            RoomEvent::Members { room, names }
        }
        (op, other) => RoomEvent::Refused {
            op,
            why: RoomRefusal::of(&other),
        },
    }
}

/// One line describing `event`, for the plain mode and the conversations (`me`: whose view).
pub fn describe(event: &RoomEvent, me: Option<&Username>) -> String {
    let you = |n: &Username| me == Some(n);
    match event {
        RoomEvent::Joined { room, name } if you(name) => format!("you joined {room}"),
        RoomEvent::Joined { room, name } => format!("{name} joined {room}"),
        RoomEvent::Parted { room, name } if you(name) => format!("you left {room}"),
        RoomEvent::Parted { room, name } => format!("{name} left {room}"),
        RoomEvent::Kicked { room, name, by } if you(name) => {
            format!("{by} removed you from {room}")
        }
        RoomEvent::Kicked { room, name, by } => format!("{by} removed {name} from {room}"),
        RoomEvent::Topic {
            room,
            by,
            text: Some(text),
        } if you(by) => format!("you set the topic of {room}: {text}"),
        RoomEvent::Topic {
            room,
            by,
            text: None,
        } if you(by) => format!("you cleared the topic of {room}"),
        RoomEvent::Topic {
            room,
            by,
            text: Some(text),
        } => format!("{by} set the topic of {room}: {text}"),
        RoomEvent::Topic {
            room,
            by,
            text: None,
        } => format!("{by} cleared the topic of {room}"),
        RoomEvent::Said {
            room,
            from,
            text,
            at: Some(at),
        } if !at.live => format!(
            "{} [{room}] <{from}> {text}",
            crate::history::clock(at.time)
        ),
        RoomEvent::Said {
            room, from, text, ..
        } => format!("[{room}] <{from}> {text}"),
        RoomEvent::Rooms(rooms) if rooms.is_empty() => {
            "no rooms yet (/join #name makes one)".into()
        }
        RoomEvent::Rooms(rooms) => {
            let list: Vec<&str> = rooms.iter().map(RoomName::as_str).collect();
            format!("rooms ({}): {}", rooms.len(), list.join(", "))
        }
        RoomEvent::Members { room, names } if names.is_empty() => {
            format!("{room} has no members (it does not exist)")
        }
        RoomEvent::Members { room, names } => {
            let list: Vec<&str> = names.iter().map(Username::as_str).collect();
            format!(
                "members of {room} ({}, the owner first): {}",
                names.len(),
                list.join(", ")
            )
        }
        RoomEvent::Refused { op, why } => format!("{op}: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(s: &str) -> RoomName {
        RoomName::parse(s).expect("valid room")
    }

    fn name(s: &str) -> Username {
        Username::parse(s).expect("valid name")
    }

    #[test]
    fn a_request_is_answered_only_by_its_own_line() {
        let me = name("ann");
        let join = RoomOp::Join(room("#r"));
        let joined = |r: &str, n: &str| RoomEvent::Joined {
            room: room(r),
            name: name(n),
        };
        assert!(join.answered_by(&joined("#r", "ann"), &me));
        assert!(!join.answered_by(&joined("#r", "bob"), &me), "someone else");
        assert!(!join.answered_by(&joined("#s", "ann"), &me), "another room");
        let say = RoomOp::Say {
            room: room("#r"),
            text: "hi".into(),
        };
        let said = |from: &str| RoomEvent::Said {
            room: room("#r"),
            from: name(from),
            text: "x".into(),
            at: None,
        };
        assert!(say.answered_by(&said("ann"), &me));
        assert!(!say.answered_by(&said("bob"), &me));
        assert!(!join.answered_by(&said("ann"), &me), "another kind");
        let kick = RoomOp::Kick {
            room: room("#r"),
            name: name("bob"),
        };
        let kicked = RoomEvent::Kicked {
            room: room("#r"),
            name: name("bob"),
            by: name("ann"),
        };
        assert!(kick.answered_by(&kicked, &me));
        assert!(!kick.answered_by(&kicked, &name("bob")));
    }

    #[test]
    fn answers_and_refusals() {
        assert_eq!(
            answer(RoomOp::List, Reply::RoomsOk(vec![room("#a")])),
            RoomEvent::Rooms(vec![room("#a")])
        );
        assert_eq!(
            answer(RoomOp::Part(room("#a")), Reply::NotMember),
            RoomEvent::Refused {
                op: RoomOp::Part(room("#a")),
                why: RoomRefusal::NotMember
            }
        );
        let kick = RoomOp::Kick {
            room: room("#a"),
            name: name("zed"),
        };
        assert!(matches!(
            answer(kick, Reply::BadDestUser),
            RoomEvent::Refused {
                why: RoomRefusal::NoSuchMember,
                ..
            }
        ));
        assert_eq!(room_line(&Reply::SendOk), None);
    }
}
