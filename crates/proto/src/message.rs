//! Typed protocol messages: parsing lines into them and encoding them back into lines.
//!
//! Parsing here is purely syntactic. Whether a well-formed request is *allowed* in the
//! connection's current state (before or after login) is decided by the server's session
//! machine, which turns every failure into `BAD-RQST-HDR` or `BAD-RQST-BODY`.

use crate::ext::{self, Extension, Password, PasswordError, Stream};
use crate::name::{NameError, RoomName, RoomNameError, Username};

const HELLO_FROM: &[u8] = b"HELLO-FROM";
const LIST: &[u8] = b"LIST";
const WHO: &[u8] = b"WHO";
const SEND: &[u8] = b"SEND";
const EXT: &[u8] = b"EXT";
const PING: &[u8] = b"PING";
const PONG: &[u8] = b"PONG";
const LOGIN: &[u8] = b"LOGIN";
const REGISTER: &[u8] = b"REGISTER";
const PASSWORD: &[u8] = b"PASSWORD";
const UNREGISTER: &[u8] = b"UNREGISTER";
const JOIN: &[u8] = b"JOIN";
const PART: &[u8] = b"PART";
const ROOMS: &[u8] = b"ROOMS";
const MEMBERS: &[u8] = b"MEMBERS";
const SAY: &[u8] = b"SAY";
const TOPIC: &[u8] = b"TOPIC";
const KICK: &[u8] = b"KICK";
const HISTORY: &[u8] = b"HISTORY";
const RESUME: &[u8] = b"RESUME";
const BEFORE: &[u8] = b"BEFORE";

const HELLO: &[u8] = b"HELLO";
const IN_USE: &[u8] = b"IN-USE";
const BUSY: &[u8] = b"BUSY";
const LIST_OK: &[u8] = b"LIST-OK";
const WHO_OK: &[u8] = b"WHO-OK";
const UNKNOWN: &[u8] = b"UNKNOWN";
const SEND_OK: &[u8] = b"SEND-OK";
const BAD_DEST_USER: &[u8] = b"BAD-DEST-USER";
const DELIVERY: &[u8] = b"DELIVERY";
const BAD_RQST_HDR: &[u8] = b"BAD-RQST-HDR";
const BAD_RQST_BODY: &[u8] = b"BAD-RQST-BODY";
const EXT_OK: &[u8] = b"EXT-OK";
const ONLINE: &[u8] = b"ONLINE";
const ONLINE_DONE: &[u8] = b"ONLINE-DONE";
const OFFLINE: &[u8] = b"OFFLINE";
const REGISTER_OK: &[u8] = b"REGISTER-OK";
const PASSWORD_OK: &[u8] = b"PASSWORD-OK";
const UNREGISTER_OK: &[u8] = b"UNREGISTER-OK";
const NAME_REGISTERED: &[u8] = b"NAME-REGISTERED";
const NO_ACCOUNT: &[u8] = b"NO-ACCOUNT";
const BAD_PASSWORD: &[u8] = b"BAD-PASSWORD";
const LOCKED: &[u8] = b"LOCKED";
const THROTTLED: &[u8] = b"THROTTLED";
const NEEDS_TLS: &[u8] = b"NEEDS-TLS";
const JOINED: &[u8] = b"JOINED";
const PARTED: &[u8] = b"PARTED";
const KICKED: &[u8] = b"KICKED";
const TOPIC_IS: &[u8] = b"TOPIC-IS";
const SAID: &[u8] = b"SAID";
const ROOMS_OK: &[u8] = b"ROOMS-OK";
const MEMBERS_OK: &[u8] = b"MEMBERS-OK";
const NOT_MEMBER: &[u8] = b"NOT-MEMBER";
const NOT_OWNER: &[u8] = b"NOT-OWNER";
const ROOM_LIMIT: &[u8] = b"ROOM-LIMIT";
const ROOM_FULL: &[u8] = b"ROOM-FULL";
const ROOM_UNAVAILABLE: &[u8] = b"ROOM-UNAVAILABLE";
const DELIVERY_AT: &[u8] = b"DELIVERY-AT";
const SAID_AT: &[u8] = b"SAID-AT";
const SEND_QUEUED: &[u8] = b"SEND-QUEUED";
const HISTORY_OK: &[u8] = b"HISTORY-OK";
const RESUME_OK: &[u8] = b"RESUME-OK";
const RESUME_EXPIRED: &[u8] = b"RESUME-EXPIRED";
const RESUME_EPOCH: &[u8] = b"RESUME-EPOCH";
const NO_HISTORY: &[u8] = b"NO-HISTORY";

/// The command word of a client line, before its body is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    HelloFrom,
    List,
    /// `WHO`: the previous generation's `LIST`.
    Who,
    Send,
    /// `EXT`: negotiation, understood by every tcpchat server that has extensions on.
    Ext,
    Ping,
    Pong,
    Login,
    Register,
    Password,
    Unregister,
    Join,
    Part,
    Rooms,
    Members,
    Say,
    Topic,
    Kick,
    History,
    Resume,
}

impl Command {
    /// The command a line starts with: its first word, matched exactly (commands are
    /// case-sensitive). `None` for anything else, an empty line included.
    pub fn of_line(line: &[u8]) -> Option<Self> {
        let word = split_word(line).0;
        match word {
            HELLO_FROM => Some(Self::HelloFrom),
            LIST => Some(Self::List),
            WHO => Some(Self::Who),
            SEND => Some(Self::Send),
            EXT => Some(Self::Ext),
            PING => Some(Self::Ping),
            PONG => Some(Self::Pong),
            LOGIN => Some(Self::Login),
            REGISTER => Some(Self::Register),
            PASSWORD => Some(Self::Password),
            UNREGISTER => Some(Self::Unregister),
            JOIN => Some(Self::Join),
            PART => Some(Self::Part),
            ROOMS => Some(Self::Rooms),
            MEMBERS => Some(Self::Members),
            SAY => Some(Self::Say),
            TOPIC => Some(Self::Topic),
            KICK => Some(Self::Kick),
            HISTORY => Some(Self::History),
            RESUME => Some(Self::Resume),
            _ => None,
        }
    }

    /// The command as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HelloFrom => "HELLO-FROM",
            Self::List => "LIST",
            Self::Who => "WHO",
            Self::Send => "SEND",
            Self::Ext => "EXT",
            Self::Ping => "PING",
            Self::Pong => "PONG",
            Self::Login => "LOGIN",
            Self::Register => "REGISTER",
            Self::Password => "PASSWORD",
            Self::Unregister => "UNREGISTER",
            Self::Join => "JOIN",
            Self::Part => "PART",
            Self::Rooms => "ROOMS",
            Self::Members => "MEMBERS",
            Self::Say => "SAY",
            Self::Topic => "TOPIC",
            Self::Kick => "KICK",
            Self::History => "HISTORY",
            Self::Resume => "RESUME",
        }
    }

    /// The extension a connection must have negotiated for this command to be understood;
    /// `None` for the classic commands and for `EXT` itself (a server with extensions on
    /// understands it before anything is negotiated). On a connection without that extension
    /// the command is unknown, exactly as on a classic server.
    pub fn extension(self) -> Option<Extension> {
        match self {
            Self::HelloFrom | Self::List | Self::Who | Self::Send | Self::Ext => None,
            Self::Ping | Self::Pong => Some(Extension::Keepalive),
            Self::Login | Self::Register | Self::Password | Self::Unregister => {
                Some(Extension::Accounts)
            }
            Self::Join
            | Self::Part
            | Self::Rooms
            | Self::Members
            | Self::Say
            | Self::Topic
            | Self::Kick => Some(Extension::Rooms),
            Self::History | Self::Resume => Some(Extension::History),
        }
    }
}

/// A line a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// `HELLO-FROM <name>`: log in.
    HelloFrom(Username),
    /// `LIST`: who is online?
    List,
    /// `WHO`: who is online? (the previous generation's `LIST`; see [`Generation`]).
    Who,
    /// `SEND <to> <body>`: relay `body` (the rest of the line, byte for byte) to `to`.
    Send { to: Username, body: &'a str },
    /// `EXT <ext>,<ext>,...`: the extensions the client speaks, as it spelled them (names
    /// tcpchat does not know included; see [`crate::ExtensionSet::answer`]).
    Ext(Vec<&'a str>),
    /// `PING [<token>]`: are you there?
    Ping(Option<&'a str>),
    /// `PONG [<token>]`: the client's answer to the server's `PING`.
    Pong(Option<&'a str>),
    /// `LOGIN <name> <password>`: log in to an account.
    Login {
        name: Username,
        password: Password<'a>,
    },
    /// `REGISTER <password>`: make the name this connection is logged in as an account.
    Register(Password<'a>),
    /// `PASSWORD <old> <new>`: change the account's password.
    ChangePassword {
        old: Password<'a>,
        new: Password<'a>,
    },
    /// `UNREGISTER <password>`: delete the account.
    Unregister(Password<'a>),
    /// `JOIN <room>`: join the room, creating it if it has no members.
    Join(RoomName),
    /// `PART <room>`: leave the room.
    Part(RoomName),
    /// `ROOMS`: which rooms exist?
    Rooms,
    /// `MEMBERS <room>`: who is in the room?
    Members(RoomName),
    /// `SAY <room> <body>`: relay `body` (the rest of the line) to every member.
    Say { room: RoomName, body: &'a str },
    /// `TOPIC <room> [<text>]`: set the topic, or clear it without a text.
    Topic {
        room: RoomName,
        text: Option<&'a str>,
    },
    /// `KICK <room> <name>`: remove a member.
    Kick { room: RoomName, name: Username },
    /// `HISTORY <stream> [BEFORE <offset>] <count>`: a page of stored messages.
    History {
        stream: Stream,
        before: Option<u64>,
        count: u32,
    },
    /// `RESUME <epoch> <offset>`: where the client stopped in its direct stream.
    Resume { epoch: &'a str, offset: u64 },
}

/// Why a client line is not a valid request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The first word is not a command (`BAD-RQST-HDR`).
    #[error("unknown command")]
    UnknownCommand,
    /// `HELLO-FROM` with a name that breaks the rules (`BAD-RQST-BODY`).
    #[error("invalid name: {0}")]
    BadName(NameError),
    /// `SEND` without a recipient, with an invalid one, or with an empty message
    /// (`BAD-RQST-BODY`).
    #[error("SEND needs a user and a non-empty message")]
    BadSend,
    /// The message is not valid UTF-8 (`BAD-RQST-BODY`).
    #[error("message is not valid UTF-8")]
    NotUtf8,
    /// `LIST` followed by anything (`BAD-RQST-BODY`).
    #[error("LIST takes no arguments")]
    ListWithBody,
    /// `WHO` followed by anything (`BAD-RQST-BODY`).
    #[error("WHO takes no arguments")]
    WhoWithBody,
    /// `EXT` without a well-formed list of extension names (`BAD-RQST-BODY`).
    #[error("EXT needs 1 to 32 comma-separated names of a-z, 0-9 and -")]
    BadExt,
    /// `PING` or `PONG` with a token that is not 1 to 64 printable ASCII bytes.
    #[error("a keepalive token is 1 to 64 printable ASCII bytes")]
    BadToken(Command),
    /// `LOGIN` whose name breaks the name rules.
    #[error("invalid name: {0}")]
    BadLoginName(NameError),
    /// A password command whose password is missing or breaks the rules.
    #[error("{cmd}: {err}", cmd = .0.as_str(), err = .1)]
    BadPassword(Command, PasswordError),
    /// A room command whose room name breaks the rules (`BAD-RQST-BODY`).
    #[error("{cmd}: {err}", cmd = .0.as_str(), err = .1)]
    BadRoom(Command, RoomNameError),
    /// A room command with missing, extra or invalid arguments besides the room name: `ROOMS
    /// x`, `SAY #r` (no message), `KICK #r` (no name), a text that is not UTF-8.
    #[error("{cmd}: missing or invalid arguments", cmd = .0.as_str())]
    BadRoomArgs(Command),
    /// `HISTORY` or `RESUME` with missing, extra or invalid arguments: a stream that is
    /// neither `@` nor a room, a count of 0 or over the page limit, a bad offset or epoch.
    #[error("{cmd}: missing or invalid arguments", cmd = .0.as_str())]
    BadHistoryArgs(Command),
}

impl RequestError {
    /// The command the line started with, if it was one.
    pub fn command(&self) -> Option<Command> {
        match self {
            Self::UnknownCommand => None,
            Self::BadName(_) => Some(Command::HelloFrom),
            Self::BadSend | Self::NotUtf8 => Some(Command::Send),
            Self::ListWithBody => Some(Command::List),
            Self::WhoWithBody => Some(Command::Who),
            Self::BadExt => Some(Command::Ext),
            Self::BadLoginName(_) => Some(Command::Login),
            Self::BadToken(command)
            | Self::BadPassword(command, _)
            | Self::BadRoom(command, _)
            | Self::BadRoomArgs(command)
            | Self::BadHistoryArgs(command) => Some(*command),
        }
    }
}

impl<'a> Request<'a> {
    /// Parses one line (without its `\n`; see [`crate::Framer`]).
    ///
    /// # Errors
    /// What is wrong with the line; see [`RequestError`].
    pub fn parse(line: &'a [u8]) -> Result<Self, RequestError> {
        let (word, rest) = split_word(line);
        match word {
            HELLO_FROM => {
                let name = rest.unwrap_or_default();
                Username::from_bytes(name)
                    .map(Request::HelloFrom)
                    .map_err(RequestError::BadName)
            }
            LIST => match rest {
                None => Ok(Request::List),
                Some(_) => Err(RequestError::ListWithBody),
            },
            WHO => match rest {
                None => Ok(Request::Who),
                Some(_) => Err(RequestError::WhoWithBody),
            },
            SEND => {
                let rest = rest.ok_or(RequestError::BadSend)?;
                let (to, body) = split_word(rest);
                let body = body
                    .filter(|b| !b.is_empty())
                    .ok_or(RequestError::BadSend)?;
                let to = Username::from_bytes(to).map_err(|_| RequestError::BadSend)?;
                let body = std::str::from_utf8(body).map_err(|_| RequestError::NotUtf8)?;
                Ok(Request::Send { to, body })
            }
            EXT => rest
                .and_then(ext::parse_ext_list)
                .map(Request::Ext)
                .ok_or(RequestError::BadExt),
            PING => token(rest, Command::Ping).map(Request::Ping),
            PONG => token(rest, Command::Pong).map(Request::Pong),
            LOGIN => {
                let (name, password) = split_word(rest.unwrap_or_default());
                let name = Username::from_bytes(name).map_err(RequestError::BadLoginName)?;
                let password = password_arg(password, Command::Login)?;
                Ok(Request::Login { name, password })
            }
            REGISTER => password_arg(rest, Command::Register).map(Request::Register),
            PASSWORD => {
                let (old, new) = split_word(rest.unwrap_or_default());
                let old = password_arg(Some(old), Command::Password)?;
                let new = password_arg(new, Command::Password)?;
                Ok(Request::ChangePassword { old, new })
            }
            UNREGISTER => password_arg(rest, Command::Unregister).map(Request::Unregister),
            JOIN => room_arg(rest, Command::Join).map(Request::Join),
            PART => room_arg(rest, Command::Part).map(Request::Part),
            ROOMS => match rest {
                None => Ok(Request::Rooms),
                Some(_) => Err(RequestError::BadRoomArgs(Command::Rooms)),
            },
            MEMBERS => room_arg(rest, Command::Members).map(Request::Members),
            SAY => {
                let (room, body) = split_word(rest.unwrap_or_default());
                let room = room_arg(Some(room), Command::Say)?;
                let body = body
                    .filter(|b| !b.is_empty())
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .ok_or(RequestError::BadRoomArgs(Command::Say))?;
                Ok(Request::Say { room, body })
            }
            TOPIC => {
                let (room, text) = split_word(rest.unwrap_or_default());
                let room = room_arg(Some(room), Command::Topic)?;
                let text = match text {
                    None => None,
                    // `TOPIC #r ` would be a second spelling of clearing it.
                    Some(t) => Some(
                        Some(t)
                            .filter(|t| !t.is_empty())
                            .and_then(|t| std::str::from_utf8(t).ok())
                            .ok_or(RequestError::BadRoomArgs(Command::Topic))?,
                    ),
                };
                Ok(Request::Topic { room, text })
            }
            KICK => {
                let (room, name) = split_word(rest.unwrap_or_default());
                let room = room_arg(Some(room), Command::Kick)?;
                let name = name
                    .and_then(|n| Username::from_bytes(n).ok())
                    .ok_or(RequestError::BadRoomArgs(Command::Kick))?;
                Ok(Request::Kick { room, name })
            }
            HISTORY => parse_history(rest).ok_or(RequestError::BadHistoryArgs(Command::History)),
            RESUME => {
                let bad = RequestError::BadHistoryArgs(Command::Resume);
                let (epoch, offset) = split_word(rest.ok_or(bad.clone())?);
                let offset = offset.and_then(number).ok_or(bad.clone())?;
                if !ext::is_epoch(epoch) {
                    return Err(bad);
                }
                // Checked to be ASCII just above.
                let epoch = std::str::from_utf8(epoch).map_err(|_| bad)?;
                Ok(Request::Resume { epoch, offset })
            }
            _ => Err(RequestError::UnknownCommand),
        }
    }

    /// The command this request is.
    pub fn command(&self) -> Command {
        match self {
            Request::HelloFrom(_) => Command::HelloFrom,
            Request::List => Command::List,
            Request::Who => Command::Who,
            Request::Send { .. } => Command::Send,
            Request::Ext(_) => Command::Ext,
            Request::Ping(_) => Command::Ping,
            Request::Pong(_) => Command::Pong,
            Request::Login { .. } => Command::Login,
            Request::Register(_) => Command::Register,
            Request::ChangePassword { .. } => Command::Password,
            Request::Unregister(_) => Command::Unregister,
            Request::Join(_) => Command::Join,
            Request::Part(_) => Command::Part,
            Request::Rooms => Command::Rooms,
            Request::Members(_) => Command::Members,
            Request::Say { .. } => Command::Say,
            Request::Topic { .. } => Command::Topic,
            Request::Kick { .. } => Command::Kick,
            Request::History { .. } => Command::History,
            Request::Resume { .. } => Command::Resume,
        }
    }

    /// Appends the request as one line, `\n` included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Request::HelloFrom(name) => line2(out, HELLO_FROM, name.as_str().as_bytes()),
            Request::List => line1(out, LIST),
            Request::Who => line1(out, WHO),
            Request::Send { to, body } => line3(out, SEND, to.as_str(), body),
            Request::Ext(names) => list_line(out, EXT, names.iter().copied()),
            Request::Ping(token) => optional_arg(out, PING, *token),
            Request::Pong(token) => optional_arg(out, PONG, *token),
            Request::Login { name, password } => {
                line3(out, LOGIN, name.as_str(), password.expose())
            }
            Request::Register(password) => line2(out, REGISTER, password.expose().as_bytes()),
            Request::ChangePassword { old, new } => {
                line3(out, PASSWORD, old.expose(), new.expose())
            }
            Request::Unregister(password) => line2(out, UNREGISTER, password.expose().as_bytes()),
            Request::Join(room) => line2(out, JOIN, room.as_str().as_bytes()),
            Request::Part(room) => line2(out, PART, room.as_str().as_bytes()),
            Request::Rooms => line1(out, ROOMS),
            Request::Members(room) => line2(out, MEMBERS, room.as_str().as_bytes()),
            Request::Say { room, body } => line3(out, SAY, room.as_str(), body),
            Request::Topic { room, text: None } => line2(out, TOPIC, room.as_str().as_bytes()),
            Request::Topic {
                room,
                text: Some(text),
            } => line3(out, TOPIC, room.as_str(), text),
            Request::Kick { room, name } => line3(out, KICK, room.as_str(), name.as_str()),
            Request::History {
                stream,
                before,
                count,
            } => {
                out.extend_from_slice(HISTORY);
                out.push(b' ');
                out.extend_from_slice(stream.as_str().as_bytes());
                if let Some(before) = before {
                    out.push(b' ');
                    out.extend_from_slice(BEFORE);
                    out.push(b' ');
                    out.extend_from_slice(before.to_string().as_bytes());
                }
                out.push(b' ');
                out.extend_from_slice(count.to_string().as_bytes());
                out.push(b'\n');
            }
            Request::Resume { epoch, offset } => {
                line3(out, RESUME, epoch, &offset.to_string());
            }
        }
    }

    /// The request as one line, `\n` included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// The two generations of the classic protocol. The previous one (2014–2021 course
/// material) differs in three tokens only: `WHO` for `LIST`, `WHO-OK` for `LIST-OK` and
/// `UNKNOWN` for `BAD-DEST-USER` (`docs/protocol.md`, "Protocol generations").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Generation {
    /// `LIST` / `LIST-OK` / `BAD-DEST-USER`.
    #[default]
    Current,
    /// `WHO` / `WHO-OK` / `UNKNOWN`.
    Old,
}

impl Generation {
    /// Who is online?, in this generation.
    pub fn list_request(self) -> Request<'static> {
        match self {
            Generation::Current => Request::List,
            Generation::Old => Request::Who,
        }
    }

    /// Everyone logged in, in this generation.
    pub fn list_reply(self, names: Vec<Username>) -> Reply<'static> {
        match self {
            Generation::Current => Reply::ListOk(names),
            Generation::Old => Reply::WhoOk(names),
        }
    }

    /// The recipient is not logged in, in this generation.
    pub fn bad_dest(self) -> Reply<'static> {
        match self {
            Generation::Current => Reply::BadDestUser,
            Generation::Old => Reply::Unknown,
        }
    }

    /// The generation's name in settings and reports: `current` or `old`.
    pub fn name(self) -> &'static str {
        match self {
            Generation::Current => "current",
            Generation::Old => "old",
        }
    }
}

/// A line a server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `HELLO <name>`: login accepted.
    Hello(Username),
    /// `IN-USE`: the name is taken.
    InUse,
    /// `BUSY`: the server is full; it closes the connection.
    Busy,
    /// `LIST-OK <name>,<name>,...`: everyone logged in.
    ListOk(Vec<Username>),
    /// `WHO-OK <name>,<name>,...`: the previous generation's `LIST-OK`.
    WhoOk(Vec<Username>),
    /// `SEND-OK`: the message was handed to the recipient.
    SendOk,
    /// `BAD-DEST-USER`: the recipient is not logged in.
    BadDestUser,
    /// `UNKNOWN`: the previous generation's `BAD-DEST-USER`.
    Unknown,
    /// `DELIVERY <from> <body>`: a message for this client.
    Delivery { from: Username, body: &'a str },
    /// `BAD-RQST-HDR`: unknown command, or not allowed now.
    BadRqstHdr,
    /// `BAD-RQST-BODY`: known command, invalid body.
    BadRqstBody,
    /// `EXT-OK [<ext>,...]`: the extensions this connection uses from now on.
    ExtOk(Vec<&'a str>),
    /// `PING [<token>]`: the server asks whether the client is there.
    Ping(Option<&'a str>),
    /// `PONG [<token>]`: the answer to the client's `PING`.
    Pong(Option<&'a str>),
    /// `ONLINE <name>,...`: these users are online (the first list, or one login).
    Online(Vec<Username>),
    /// `ONLINE-DONE`: the first list is complete.
    OnlineDone,
    /// `OFFLINE <name>`: this user left.
    Offline(Username),
    /// `REGISTER-OK`: the name is now an account.
    RegisterOk,
    /// `PASSWORD-OK`: the password was changed.
    PasswordOk,
    /// `UNREGISTER-OK`: the account was deleted.
    UnregisterOk,
    /// `NAME-REGISTERED`: the name is an account (log in with `LOGIN`), or already was one.
    NameRegistered,
    /// `NO-ACCOUNT`: the name is not an account.
    NoAccount,
    /// `BAD-PASSWORD`: wrong password.
    BadPassword,
    /// `LOCKED`: the operator locked the account.
    Locked,
    /// `THROTTLED <seconds>`: too many attempts; retry after that many seconds.
    Throttled(u32),
    /// `NEEDS-TLS`: passwords are refused on this plain, non-loopback connection.
    NeedsTls,
    /// `JOINED <room> <name>`: `name` joined the room (the answer to your own `JOIN` too).
    Joined { room: RoomName, name: Username },
    /// `PARTED <room> <name>`: `name` left the room.
    Parted { room: RoomName, name: Username },
    /// `KICKED <room> <name> <by>`: the owner `by` removed `name`.
    Kicked {
        room: RoomName,
        name: Username,
        by: Username,
    },
    /// `TOPIC-IS <room> <by> [<text>]`: `by` set the topic, or cleared it.
    TopicIs {
        room: RoomName,
        by: Username,
        text: Option<&'a str>,
    },
    /// `SAID <room> <from> <body>`: a room message (your own `SAY` echoed too).
    Said {
        room: RoomName,
        from: Username,
        body: &'a str,
    },
    /// `ROOMS-OK [<room>,...]`: every room.
    RoomsOk(Vec<RoomName>),
    /// `MEMBERS-OK <room> [<name>,...]`: the members, owner first, in join order.
    MembersOk {
        room: RoomName,
        names: Vec<Username>,
    },
    /// `NOT-MEMBER`: you are not in that room.
    NotMember,
    /// `NOT-OWNER`: only the room's owner may do that.
    NotOwner,
    /// `ROOM-LIMIT`: you are in as many rooms as a user may be.
    RoomLimit,
    /// `ROOM-FULL`: the room has as many members as it may have.
    RoomFull,
    /// `ROOM-UNAVAILABLE`: the server cannot reach the room's state right now (a cluster
    /// node cut off from its store); nothing changed, try again.
    RoomUnavailable,
    /// `DELIVERY-AT <offset> <time> <from> <body>`: a direct message, with its place in your
    /// direct stream and the time it was sent (ms since the Unix epoch).
    DeliveryAt {
        offset: u64,
        time: u64,
        from: Username,
        body: &'a str,
    },
    /// `SAID-AT <room> <offset> <time> <from> <body>`: a room message with its place in the
    /// room's stream and its time.
    SaidAt {
        room: RoomName,
        offset: u64,
        time: u64,
        from: Username,
        body: &'a str,
    },
    /// `SEND-QUEUED`: the recipient is offline; the message is kept for their next login.
    SendQueued,
    /// `HISTORY-OK <stream> <epoch> <top> <n>`: `n` stored lines follow.
    HistoryOk {
        stream: Stream,
        epoch: &'a str,
        top: u64,
        n: u32,
    },
    /// `RESUME-OK <epoch> <top>`: the catch-up is complete.
    ResumeOk { epoch: &'a str, top: u64 },
    /// `RESUME-EXPIRED <epoch> <top>`: messages after the client's position were removed.
    ResumeExpired { epoch: &'a str, top: u64 },
    /// `RESUME-EPOCH <epoch> <top>`: the client's epoch is not the stream's.
    ResumeEpoch { epoch: &'a str, top: u64 },
    /// `NO-HISTORY`: you may not read that stream.
    NoHistory,
}

/// Why a server line is not a valid reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("unknown reply")]
    Unknown,
    #[error("reply has an invalid name: {0}")]
    BadName(NameError),
    #[error("{0} takes no arguments")]
    UnexpectedBody(&'static str),
    #[error("DELIVERY needs a sender and a message")]
    BadDelivery,
    #[error("reply is not valid UTF-8")]
    NotUtf8,
    #[error("{0} has an invalid argument")]
    BadArgument(&'static str),
}

impl<'a> Reply<'a> {
    /// Parses one server line (without its `\n`). Names are checked against the protocol's
    /// character rules but not its length limit, since another server may allow longer ones.
    ///
    /// # Errors
    /// What is wrong with the line; see [`ReplyError`].
    pub fn parse(line: &'a [u8]) -> Result<Self, ReplyError> {
        let (word, rest) = split_word(line);
        let no_body = |reply: Reply<'a>, what: &'static str| match rest {
            None => Ok(reply),
            Some(_) => Err(ReplyError::UnexpectedBody(what)),
        };
        match word {
            HELLO => peer_name(rest.unwrap_or_default()).map(Reply::Hello),
            IN_USE => no_body(Reply::InUse, "IN-USE"),
            BUSY => no_body(Reply::Busy, "BUSY"),
            SEND_OK => no_body(Reply::SendOk, "SEND-OK"),
            BAD_DEST_USER => no_body(Reply::BadDestUser, "BAD-DEST-USER"),
            UNKNOWN => no_body(Reply::Unknown, "UNKNOWN"),
            BAD_RQST_HDR => no_body(Reply::BadRqstHdr, "BAD-RQST-HDR"),
            BAD_RQST_BODY => no_body(Reply::BadRqstBody, "BAD-RQST-BODY"),
            LIST_OK | WHO_OK => {
                let names = rest.unwrap_or_default();
                let names = if names.is_empty() {
                    Vec::new()
                } else {
                    names
                        .split(|b| *b == b',')
                        .map(peer_name)
                        .collect::<Result<Vec<_>, _>>()?
                };
                Ok(if word == WHO_OK {
                    Reply::WhoOk(names)
                } else {
                    Reply::ListOk(names)
                })
            }
            DELIVERY => {
                let (from, body) = split_word(rest.ok_or(ReplyError::BadDelivery)?);
                let body = body.ok_or(ReplyError::BadDelivery)?;
                let from = peer_name(from)?;
                let body = std::str::from_utf8(body).map_err(|_| ReplyError::NotUtf8)?;
                Ok(Reply::Delivery { from, body })
            }
            EXT_OK => match rest {
                None => Ok(Reply::ExtOk(Vec::new())),
                Some(list) => ext::parse_ext_list(list)
                    .map(Reply::ExtOk)
                    .ok_or(ReplyError::BadArgument("EXT-OK")),
            },
            PING => token(rest, Command::Ping)
                .map(Reply::Ping)
                .map_err(|_| ReplyError::BadArgument("PING")),
            PONG => token(rest, Command::Pong)
                .map(Reply::Pong)
                .map_err(|_| ReplyError::BadArgument("PONG")),
            ONLINE => {
                let names = rest.ok_or(ReplyError::BadArgument("ONLINE"))?;
                names
                    .split(|b| *b == b',')
                    .map(peer_name)
                    .collect::<Result<Vec<_>, _>>()
                    .map(Reply::Online)
            }
            ONLINE_DONE => no_body(Reply::OnlineDone, "ONLINE-DONE"),
            OFFLINE => {
                peer_name(rest.ok_or(ReplyError::BadArgument("OFFLINE"))?).map(Reply::Offline)
            }
            REGISTER_OK => no_body(Reply::RegisterOk, "REGISTER-OK"),
            PASSWORD_OK => no_body(Reply::PasswordOk, "PASSWORD-OK"),
            UNREGISTER_OK => no_body(Reply::UnregisterOk, "UNREGISTER-OK"),
            NAME_REGISTERED => no_body(Reply::NameRegistered, "NAME-REGISTERED"),
            NO_ACCOUNT => no_body(Reply::NoAccount, "NO-ACCOUNT"),
            BAD_PASSWORD => no_body(Reply::BadPassword, "BAD-PASSWORD"),
            LOCKED => no_body(Reply::Locked, "LOCKED"),
            NEEDS_TLS => no_body(Reply::NeedsTls, "NEEDS-TLS"),
            THROTTLED => rest
                .and_then(seconds)
                .map(Reply::Throttled)
                .ok_or(ReplyError::BadArgument("THROTTLED")),
            JOINED => {
                room_and_name(rest, "JOINED").map(|(room, name)| Reply::Joined { room, name })
            }
            PARTED => {
                room_and_name(rest, "PARTED").map(|(room, name)| Reply::Parted { room, name })
            }
            KICKED => {
                let (room, rest) = split_word(rest.ok_or(ReplyError::BadArgument("KICKED"))?);
                let (name, by) = split_word(rest.ok_or(ReplyError::BadArgument("KICKED"))?);
                let by = by.ok_or(ReplyError::BadArgument("KICKED"))?;
                Ok(Reply::Kicked {
                    room: peer_room(room, "KICKED")?,
                    name: peer_name(name)?,
                    by: peer_name(by)?,
                })
            }
            TOPIC_IS => {
                let (room, rest) = split_word(rest.ok_or(ReplyError::BadArgument("TOPIC-IS"))?);
                let (by, text) = split_word(rest.ok_or(ReplyError::BadArgument("TOPIC-IS"))?);
                let text = match text {
                    None => None,
                    Some([]) => return Err(ReplyError::BadArgument("TOPIC-IS")),
                    Some(t) => Some(std::str::from_utf8(t).map_err(|_| ReplyError::NotUtf8)?),
                };
                Ok(Reply::TopicIs {
                    room: peer_room(room, "TOPIC-IS")?,
                    by: peer_name(by)?,
                    text,
                })
            }
            SAID => {
                let (room, rest) = split_word(rest.ok_or(ReplyError::BadArgument("SAID"))?);
                let (from, body) = split_word(rest.ok_or(ReplyError::BadArgument("SAID"))?);
                let body = body
                    .filter(|b| !b.is_empty())
                    .ok_or(ReplyError::BadArgument("SAID"))?;
                Ok(Reply::Said {
                    room: peer_room(room, "SAID")?,
                    from: peer_name(from)?,
                    body: std::str::from_utf8(body).map_err(|_| ReplyError::NotUtf8)?,
                })
            }
            ROOMS_OK => match rest {
                None => Ok(Reply::RoomsOk(Vec::new())),
                Some(list) => list
                    .split(|b| *b == b',')
                    .map(|r| peer_room(r, "ROOMS-OK"))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Reply::RoomsOk),
            },
            MEMBERS_OK => {
                let (room, names) = split_word(rest.ok_or(ReplyError::BadArgument("MEMBERS-OK"))?);
                let room = peer_room(room, "MEMBERS-OK")?;
                let names = match names {
                    None => Vec::new(),
                    Some(list) => list
                        .split(|b| *b == b',')
                        .map(peer_name)
                        .collect::<Result<Vec<_>, _>>()?,
                };
                Ok(Reply::MembersOk { room, names })
            }
            NOT_MEMBER => no_body(Reply::NotMember, "NOT-MEMBER"),
            NOT_OWNER => no_body(Reply::NotOwner, "NOT-OWNER"),
            ROOM_LIMIT => no_body(Reply::RoomLimit, "ROOM-LIMIT"),
            ROOM_FULL => no_body(Reply::RoomFull, "ROOM-FULL"),
            ROOM_UNAVAILABLE => no_body(Reply::RoomUnavailable, "ROOM-UNAVAILABLE"),
            DELIVERY_AT => {
                let bad = ReplyError::BadArgument("DELIVERY-AT");
                let (offset, rest) = split_word(rest.ok_or(bad.clone())?);
                let (time, rest) = split_word(rest.ok_or(bad.clone())?);
                let (from, body) = split_word(rest.ok_or(bad.clone())?);
                let body = body.filter(|b| !b.is_empty()).ok_or(bad.clone())?;
                Ok(Reply::DeliveryAt {
                    offset: number(offset).ok_or(bad.clone())?,
                    time: number(time).ok_or(bad)?,
                    from: peer_name(from)?,
                    body: std::str::from_utf8(body).map_err(|_| ReplyError::NotUtf8)?,
                })
            }
            SAID_AT => {
                let bad = ReplyError::BadArgument("SAID-AT");
                let (room, rest) = split_word(rest.ok_or(bad.clone())?);
                let (offset, rest) = split_word(rest.ok_or(bad.clone())?);
                let (time, rest) = split_word(rest.ok_or(bad.clone())?);
                let (from, body) = split_word(rest.ok_or(bad.clone())?);
                let body = body.filter(|b| !b.is_empty()).ok_or(bad.clone())?;
                Ok(Reply::SaidAt {
                    room: peer_room(room, "SAID-AT")?,
                    offset: number(offset).ok_or(bad.clone())?,
                    time: number(time).ok_or(bad)?,
                    from: peer_name(from)?,
                    body: std::str::from_utf8(body).map_err(|_| ReplyError::NotUtf8)?,
                })
            }
            SEND_QUEUED => no_body(Reply::SendQueued, "SEND-QUEUED"),
            HISTORY_OK => {
                let bad = ReplyError::BadArgument("HISTORY-OK");
                let (stream, rest) = split_word(rest.ok_or(bad.clone())?);
                let (epoch, rest) = split_word(rest.ok_or(bad.clone())?);
                let (top, n) = split_word(rest.ok_or(bad.clone())?);
                let stream = if stream == b"@" {
                    Stream::Direct
                } else {
                    Stream::Room(peer_room(stream, "HISTORY-OK")?)
                };
                Ok(Reply::HistoryOk {
                    stream,
                    epoch: peer_epoch(epoch).ok_or(bad.clone())?,
                    top: number(top).ok_or(bad.clone())?,
                    n: n.and_then(number)
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or(bad)?,
                })
            }
            RESUME_OK => {
                epoch_and_top(rest, "RESUME-OK").map(|(epoch, top)| Reply::ResumeOk { epoch, top })
            }
            RESUME_EXPIRED => epoch_and_top(rest, "RESUME-EXPIRED")
                .map(|(epoch, top)| Reply::ResumeExpired { epoch, top }),
            RESUME_EPOCH => epoch_and_top(rest, "RESUME-EPOCH")
                .map(|(epoch, top)| Reply::ResumeEpoch { epoch, top }),
            NO_HISTORY => no_body(Reply::NoHistory, "NO-HISTORY"),
            _ => Err(ReplyError::Unknown),
        }
    }

    /// Appends the reply as one line, `\n` included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Hello(name) => line2(out, HELLO, name.as_str().as_bytes()),
            Reply::InUse => line1(out, IN_USE),
            Reply::Busy => line1(out, BUSY),
            Reply::ListOk(names) | Reply::WhoOk(names) => {
                out.extend_from_slice(if matches!(self, Reply::WhoOk(_)) {
                    WHO_OK
                } else {
                    LIST_OK
                });
                out.push(b' ');
                for (i, name) in names.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(name.as_str().as_bytes());
                }
                out.push(b'\n');
            }
            Reply::SendOk => line1(out, SEND_OK),
            Reply::BadDestUser => line1(out, BAD_DEST_USER),
            Reply::Unknown => line1(out, UNKNOWN),
            Reply::Delivery { from, body } => line3(out, DELIVERY, from.as_str(), body),
            Reply::BadRqstHdr => line1(out, BAD_RQST_HDR),
            Reply::BadRqstBody => line1(out, BAD_RQST_BODY),
            Reply::ExtOk(names) if names.is_empty() => line1(out, EXT_OK),
            Reply::ExtOk(names) => list_line(out, EXT_OK, names.iter().copied()),
            Reply::Ping(token) => optional_arg(out, PING, *token),
            Reply::Pong(token) => optional_arg(out, PONG, *token),
            Reply::Online(names) => list_line(out, ONLINE, names.iter().map(|n| n.as_str())),
            Reply::OnlineDone => line1(out, ONLINE_DONE),
            Reply::Offline(name) => line2(out, OFFLINE, name.as_str().as_bytes()),
            Reply::RegisterOk => line1(out, REGISTER_OK),
            Reply::PasswordOk => line1(out, PASSWORD_OK),
            Reply::UnregisterOk => line1(out, UNREGISTER_OK),
            Reply::NameRegistered => line1(out, NAME_REGISTERED),
            Reply::NoAccount => line1(out, NO_ACCOUNT),
            Reply::BadPassword => line1(out, BAD_PASSWORD),
            Reply::Locked => line1(out, LOCKED),
            Reply::Throttled(secs) => line2(out, THROTTLED, secs.to_string().as_bytes()),
            Reply::NeedsTls => line1(out, NEEDS_TLS),
            Reply::Joined { room, name } => line3(out, JOINED, room.as_str(), name.as_str()),
            Reply::Parted { room, name } => line3(out, PARTED, room.as_str(), name.as_str()),
            Reply::Kicked { room, name, by } => {
                line3(out, KICKED, room.as_str(), name.as_str());
                out.pop();
                out.push(b' ');
                out.extend_from_slice(by.as_str().as_bytes());
                out.push(b'\n');
            }
            Reply::TopicIs { room, by, text } => {
                line3(out, TOPIC_IS, room.as_str(), by.as_str());
                if let Some(text) = text {
                    out.pop();
                    out.push(b' ');
                    out.extend_from_slice(text.as_bytes());
                    out.push(b'\n');
                }
            }
            Reply::Said { room, from, body } => {
                Self::encode_said(out, room.as_str(), from.as_str(), body);
            }
            Reply::RoomsOk(rooms) if rooms.is_empty() => line1(out, ROOMS_OK),
            Reply::RoomsOk(rooms) => list_line(out, ROOMS_OK, rooms.iter().map(|r| r.as_str())),
            Reply::MembersOk { room, names } => {
                Self::encode_members(out, room.as_str(), names.iter().map(Username::as_str));
            }
            Reply::NotMember => line1(out, NOT_MEMBER),
            Reply::NotOwner => line1(out, NOT_OWNER),
            Reply::RoomLimit => line1(out, ROOM_LIMIT),
            Reply::RoomFull => line1(out, ROOM_FULL),
            Reply::RoomUnavailable => line1(out, ROOM_UNAVAILABLE),
            Reply::DeliveryAt {
                offset,
                time,
                from,
                body,
            } => Self::encode_delivery_at(out, *offset, *time, from.as_str(), body),
            Reply::SaidAt {
                room,
                offset,
                time,
                from,
                body,
            } => Self::encode_said_at(out, room.as_str(), *offset, *time, from.as_str(), body),
            Reply::SendQueued => line1(out, SEND_QUEUED),
            Reply::HistoryOk {
                stream,
                epoch,
                top,
                n,
            } => {
                Self::encode_history_ok(out, stream.as_str(), epoch, *top, *n);
            }
            Reply::ResumeOk { epoch, top } => line3(out, RESUME_OK, epoch, &top.to_string()),
            Reply::ResumeExpired { epoch, top } => {
                line3(out, RESUME_EXPIRED, epoch, &top.to_string());
            }
            Reply::ResumeEpoch { epoch, top } => {
                line3(out, RESUME_EPOCH, epoch, &top.to_string());
            }
            Reply::NoHistory => line1(out, NO_HISTORY),
        }
    }

    /// The reply as one line, `\n` included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Appends a `DELIVERY` line without building a [`Reply`] (the server's hot path).
    pub fn encode_delivery(out: &mut Vec<u8>, from: &str, body: &str) {
        line3(out, DELIVERY, from, body);
    }

    /// Appends one presence change, `ONLINE <name>` or `OFFLINE <name>`, without building a
    /// [`Reply`] (sent to every presence connection on each login and departure).
    pub fn encode_presence(out: &mut Vec<u8>, name: &str, online: bool) {
        line2(out, if online { ONLINE } else { OFFLINE }, name.as_bytes());
    }

    /// Appends the first presence list: `ONLINE` lines of at most
    /// [`crate::MAX_ONLINE_NAMES_PER_LINE`] names each, then `ONLINE-DONE`. An empty list is
    /// only `ONLINE-DONE` (a server always lists the user itself, so it never sends that).
    pub fn encode_online_list<'n>(out: &mut Vec<u8>, names: impl IntoIterator<Item = &'n str>) {
        let mut in_line = 0;
        for name in names {
            if in_line == ext::MAX_ONLINE_NAMES_PER_LINE {
                out.push(b'\n');
                in_line = 0;
            }
            out.extend_from_slice(if in_line == 0 { b"ONLINE " } else { b"," });
            out.extend_from_slice(name.as_bytes());
            in_line += 1;
        }
        if in_line > 0 {
            out.push(b'\n');
        }
        line1(out, ONLINE_DONE);
    }

    /// Appends `SAID <room> <from> <body>` without building a [`Reply`] (a room's hot path:
    /// encoded once, copied to every member).
    pub fn encode_said(out: &mut Vec<u8>, room: &str, from: &str, body: &str) {
        out.reserve(SAID.len() + room.len() + from.len() + body.len() + 4);
        out.extend_from_slice(SAID);
        out.push(b' ');
        out.extend_from_slice(room.as_bytes());
        line3(out, b"", from, body);
    }

    /// Appends `DELIVERY-AT <offset> <time> <from> <body>` without building a [`Reply`].
    pub fn encode_delivery_at(out: &mut Vec<u8>, offset: u64, time: u64, from: &str, body: &str) {
        out.extend_from_slice(DELIVERY_AT);
        push_number(out, offset);
        push_number(out, time);
        line3(out, b"", from, body);
    }

    /// Appends `SAID-AT <room> <offset> <time> <from> <body>` without building a [`Reply`]
    /// (encoded once per room message, copied to every `history` member).
    pub fn encode_said_at(
        out: &mut Vec<u8>,
        room: &str,
        offset: u64,
        time: u64,
        from: &str,
        body: &str,
    ) {
        out.reserve(SAID_AT.len() + room.len() + from.len() + body.len() + 48);
        out.extend_from_slice(SAID_AT);
        out.push(b' ');
        out.extend_from_slice(room.as_bytes());
        push_number(out, offset);
        push_number(out, time);
        line3(out, b"", from, body);
    }

    /// Appends `HISTORY-OK <stream> <epoch> <top> <n>`.
    pub fn encode_history_ok(out: &mut Vec<u8>, stream: &str, epoch: &str, top: u64, n: u32) {
        out.extend_from_slice(HISTORY_OK);
        out.push(b' ');
        out.extend_from_slice(stream.as_bytes());
        out.push(b' ');
        out.extend_from_slice(epoch.as_bytes());
        push_number(out, top);
        push_number(out, u64::from(n));
        out.push(b'\n');
    }

    /// Appends `MEMBERS-OK <room> <name>,...` (`MEMBERS-OK <room>` for none) from borrowed
    /// names, without building a [`Reply`].
    pub fn encode_members<'n>(
        out: &mut Vec<u8>,
        room: &str,
        names: impl IntoIterator<Item = &'n str>,
    ) {
        out.extend_from_slice(MEMBERS_OK);
        out.push(b' ');
        out.extend_from_slice(room.as_bytes());
        for (i, name) in names.into_iter().enumerate() {
            out.push(if i == 0 { b' ' } else { b',' });
            out.extend_from_slice(name.as_bytes());
        }
        out.push(b'\n');
    }

    /// Appends `ROOMS-OK <room>,...` (`ROOMS-OK` for none) from borrowed names.
    pub fn encode_rooms<'n>(out: &mut Vec<u8>, rooms: impl IntoIterator<Item = &'n str>) {
        out.extend_from_slice(ROOMS_OK);
        for (i, room) in rooms.into_iter().enumerate() {
            out.push(if i == 0 { b' ' } else { b',' });
            out.extend_from_slice(room.as_bytes());
        }
        out.push(b'\n');
    }

    /// Whether this line is one the classic protocol has (what a classic client may receive).
    pub fn is_classic(&self) -> bool {
        matches!(
            self,
            Reply::Hello(_)
                | Reply::InUse
                | Reply::Busy
                | Reply::ListOk(_)
                | Reply::SendOk
                | Reply::BadDestUser
                | Reply::Delivery { .. }
                | Reply::BadRqstHdr
                | Reply::BadRqstBody
        )
    }
}

fn token(rest: Option<&[u8]>, command: Command) -> Result<Option<&str>, RequestError> {
    match rest {
        None => Ok(None),
        Some(t) if ext::is_token(t) => std::str::from_utf8(t)
            .map(Some)
            .map_err(|_| RequestError::BadToken(command)),
        Some(_) => Err(RequestError::BadToken(command)),
    }
}

/// `<stream> [BEFORE <offset>] <count>`.
fn parse_history(rest: Option<&[u8]>) -> Option<Request<'static>> {
    let (stream, rest) = split_word(rest?);
    let stream = if stream == b"@" {
        Stream::Direct
    } else {
        Stream::Room(RoomName::from_bytes(stream).ok()?)
    };
    let (word, rest) = split_word(rest?);
    let (before, count) = if word == BEFORE {
        let (offset, count) = split_word(rest?);
        (Some(number(offset)?), count?)
    } else if rest.is_none() {
        (None, word)
    } else {
        return None;
    };
    let count = u32::try_from(number(count)?).ok()?;
    if !(1..=ext::MAX_HISTORY_PAGE).contains(&count) {
        return None;
    }
    Some(Request::History {
        stream,
        before,
        count,
    })
}

/// A decimal number: 1 to 20 digits, no sign, no leading zero (one spelling per number).
fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty()
        || digits.len() > 20
        || (digits.len() > 1 && digits[0] == b'0')
        || !digits.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn push_number(out: &mut Vec<u8>, n: u64) {
    out.push(b' ');
    out.extend_from_slice(n.to_string().as_bytes());
}

fn peer_epoch(bytes: &[u8]) -> Option<&str> {
    if ext::is_epoch(bytes) {
        std::str::from_utf8(bytes).ok()
    } else {
        None
    }
}

fn epoch_and_top<'a>(
    rest: Option<&'a [u8]>,
    what: &'static str,
) -> Result<(&'a str, u64), ReplyError> {
    let bad = ReplyError::BadArgument(what);
    let (epoch, top) = split_word(rest.ok_or(bad.clone())?);
    let epoch = peer_epoch(epoch).ok_or(bad.clone())?;
    Ok((epoch, top.and_then(number).ok_or(bad)?))
}

fn room_arg(rest: Option<&[u8]>, command: Command) -> Result<RoomName, RequestError> {
    RoomName::from_bytes(rest.unwrap_or_default()).map_err(|e| RequestError::BadRoom(command, e))
}

fn peer_room(bytes: &[u8], what: &'static str) -> Result<RoomName, ReplyError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ReplyError::NotUtf8)?;
    RoomName::parse_with_limit(text, usize::MAX).map_err(|_| ReplyError::BadArgument(what))
}

fn room_and_name(
    rest: Option<&[u8]>,
    what: &'static str,
) -> Result<(RoomName, Username), ReplyError> {
    let (room, name) = split_word(rest.ok_or(ReplyError::BadArgument(what))?);
    let name = name.ok_or(ReplyError::BadArgument(what))?;
    Ok((peer_room(room, what)?, peer_name(name)?))
}

fn password_arg(rest: Option<&[u8]>, command: Command) -> Result<Password<'_>, RequestError> {
    Password::from_bytes(rest.unwrap_or_default())
        .map_err(|e| RequestError::BadPassword(command, e))
}

/// Whole seconds, 1 to 10 digits, no sign and no leading zero (one spelling per number).
fn seconds(digits: &[u8]) -> Option<u32> {
    if digits.is_empty()
        || digits.len() > 10
        || (digits.len() > 1 && digits[0] == b'0')
        || !digits.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn peer_name(bytes: &[u8]) -> Result<Username, ReplyError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ReplyError::NotUtf8)?;
    Username::parse_with_limit(text, usize::MAX).map_err(ReplyError::BadName)
}

/// Splits at the first space: the word before it, and everything after it (if there was a
/// space at all). `b"LIST"` gives `(b"LIST", None)`; `b"LIST "` gives `(b"LIST", Some(b""))`.
fn split_word(line: &[u8]) -> (&[u8], Option<&[u8]>) {
    match memchr::memchr(b' ', line) {
        Some(i) => (&line[..i], Some(&line[i + 1..])),
        None => (line, None),
    }
}

fn list_line<'n>(out: &mut Vec<u8>, word: &[u8], items: impl Iterator<Item = &'n str>) {
    out.extend_from_slice(word);
    out.push(b' ');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item.as_bytes());
    }
    out.push(b'\n');
}

fn optional_arg(out: &mut Vec<u8>, word: &[u8], arg: Option<&str>) {
    match arg {
        Some(arg) => line2(out, word, arg.as_bytes()),
        None => line1(out, word),
    }
}

fn line1(out: &mut Vec<u8>, word: &[u8]) {
    out.extend_from_slice(word);
    out.push(b'\n');
}

fn line2(out: &mut Vec<u8>, word: &[u8], arg: &[u8]) {
    out.reserve(word.len() + arg.len() + 2);
    out.extend_from_slice(word);
    out.push(b' ');
    out.extend_from_slice(arg);
    out.push(b'\n');
}

fn line3(out: &mut Vec<u8>, word: &[u8], name: &str, body: &str) {
    out.reserve(word.len() + name.len() + body.len() + 3);
    out.extend_from_slice(word);
    out.push(b' ');
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(body.as_bytes());
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(s: &str) -> Username {
        Username::parse(s).expect("test name is valid")
    }

    fn room(s: &str) -> RoomName {
        RoomName::parse(s).expect("test room is valid")
    }

    #[test]
    fn room_request_table() {
        use RequestError::*;
        let cases: &[(&[u8], Result<Request<'_>, RequestError>)] = &[
            (b"JOIN #rust", Ok(Request::Join(room("#rust")))),
            (b"JOIN", Err(BadRoom(Command::Join, RoomNameError::NoHash))),
            (
                b"JOIN rust",
                Err(BadRoom(Command::Join, RoomNameError::NoHash)),
            ),
            (b"JOIN #", Err(BadRoom(Command::Join, RoomNameError::Empty))),
            (
                b"JOIN #a b",
                Err(BadRoom(
                    Command::Join,
                    RoomNameError::Rules(NameError::Whitespace),
                )),
            ),
            (b"PART #r", Ok(Request::Part(room("#r")))),
            (b"ROOMS", Ok(Request::Rooms)),
            (b"ROOMS ", Err(BadRoomArgs(Command::Rooms))),
            (b"MEMBERS #r", Ok(Request::Members(room("#r")))),
            (
                b"MEMBERS",
                Err(BadRoom(Command::Members, RoomNameError::NoHash)),
            ),
            (
                b"SAY #r  hi  there ",
                Ok(Request::Say {
                    room: room("#r"),
                    body: " hi  there ",
                }),
            ),
            (b"SAY #r", Err(BadRoomArgs(Command::Say))),
            (b"SAY #r ", Err(BadRoomArgs(Command::Say))),
            (b"SAY #r \xff", Err(BadRoomArgs(Command::Say))),
            (
                b"SAY bob hi",
                Err(BadRoom(Command::Say, RoomNameError::NoHash)),
            ),
            (
                b"TOPIC #r",
                Ok(Request::Topic {
                    room: room("#r"),
                    text: None,
                }),
            ),
            (
                b"TOPIC #r Rust, mostly",
                Ok(Request::Topic {
                    room: room("#r"),
                    text: Some("Rust, mostly"),
                }),
            ),
            (b"TOPIC #r ", Err(BadRoomArgs(Command::Topic))),
            (
                b"KICK #r bob",
                Ok(Request::Kick {
                    room: room("#r"),
                    name: name("bob"),
                }),
            ),
            (b"KICK #r", Err(BadRoomArgs(Command::Kick))),
            (b"KICK #r bob x", Err(BadRoomArgs(Command::Kick))),
            (b"join #r", Err(UnknownCommand)),
        ];
        for (line, want) in cases {
            assert_eq!(
                &Request::parse(line),
                want,
                "line {:?}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(Command::Say.extension(), Some(Extension::Rooms));
        assert_eq!(Command::of_line(b"KICK #r x"), Some(Command::Kick));
    }

    #[test]
    fn room_replies_on_the_wire() {
        let cases: Vec<(Reply<'_>, &str)> = vec![
            (
                Reply::Joined {
                    room: room("#r"),
                    name: name("al"),
                },
                "JOINED #r al\n",
            ),
            (
                Reply::Parted {
                    room: room("#r"),
                    name: name("al"),
                },
                "PARTED #r al\n",
            ),
            (
                Reply::Kicked {
                    room: room("#r"),
                    name: name("bo"),
                    by: name("al"),
                },
                "KICKED #r bo al\n",
            ),
            (
                Reply::TopicIs {
                    room: room("#r"),
                    by: name("al"),
                    text: Some(" a  b"),
                },
                "TOPIC-IS #r al  a  b\n",
            ),
            (
                Reply::TopicIs {
                    room: room("#r"),
                    by: name("al"),
                    text: None,
                },
                "TOPIC-IS #r al\n",
            ),
            (
                Reply::Said {
                    room: room("#r"),
                    from: name("al"),
                    body: " x ",
                },
                "SAID #r al  x \n",
            ),
            (Reply::RoomsOk(vec![]), "ROOMS-OK\n"),
            (
                Reply::RoomsOk(vec![room("#a"), room("#b")]),
                "ROOMS-OK #a,#b\n",
            ),
            (
                Reply::MembersOk {
                    room: room("#r"),
                    names: vec![],
                },
                "MEMBERS-OK #r\n",
            ),
            (
                Reply::MembersOk {
                    room: room("#r"),
                    names: vec![name("b"), name("a")],
                },
                "MEMBERS-OK #r b,a\n",
            ),
            (Reply::NotMember, "NOT-MEMBER\n"),
            (Reply::NotOwner, "NOT-OWNER\n"),
            (Reply::RoomLimit, "ROOM-LIMIT\n"),
            (Reply::RoomFull, "ROOM-FULL\n"),
            (Reply::RoomUnavailable, "ROOM-UNAVAILABLE\n"),
        ];
        for (reply, wire) in cases {
            assert!(!reply.is_classic());
            assert_eq!(String::from_utf8(reply.to_line()).unwrap(), wire);
        }
        for bad in [
            &b"JOINED #r"[..],
            b"JOINED r al",
            b"KICKED #r bo",
            b"TOPIC-IS #r",
            b"TOPIC-IS #r al ",
            b"SAID #r al",
            b"SAID #r al ",
            b"ROOMS-OK ",
            b"ROOMS-OK #a,b",
            b"MEMBERS-OK",
            b"MEMBERS-OK #r ",
            b"NOT-MEMBER x",
        ] {
            assert!(
                Reply::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn arb_room() -> impl Strategy<Value = RoomName> {
        "#[^\\s,\\p{Cc}]{1,8}".prop_filter_map("fits the limit", |s| RoomName::parse(&s).ok())
    }

    proptest! {
        #[test]
        fn room_lines_roundtrip(
            r in arb_room(),
            a in arb_name(),
            b in arb_name(),
            body in arb_body(),
            names in proptest::collection::vec(arb_name(), 0..5),
            rooms in proptest::collection::vec(arb_room(), 0..5),
        ) {
            let reqs = [
                Request::Join(r.clone()),
                Request::Part(r.clone()),
                Request::Rooms,
                Request::Members(r.clone()),
                Request::Say { room: r.clone(), body: &body },
                Request::Topic { room: r.clone(), text: None },
                Request::Topic { room: r.clone(), text: Some(&body) },
                Request::Kick { room: r.clone(), name: a.clone() },
            ];
            for req in reqs {
                let line = req.to_line();
                prop_assert_eq!(Request::parse(&line[..line.len() - 1]), Ok(req));
            }
            let replies = vec![
                Reply::Joined { room: r.clone(), name: a.clone() },
                Reply::Parted { room: r.clone(), name: a.clone() },
                Reply::Kicked { room: r.clone(), name: a.clone(), by: b.clone() },
                Reply::TopicIs { room: r.clone(), by: b.clone(), text: None },
                Reply::TopicIs { room: r.clone(), by: b.clone(), text: Some(&body) },
                Reply::Said { room: r.clone(), from: a.clone(), body: &body },
                Reply::RoomsOk(rooms),
                Reply::MembersOk { room: r.clone(), names },
                Reply::NotMember, Reply::NotOwner, Reply::RoomLimit, Reply::RoomFull,
                Reply::RoomUnavailable,
            ];
            for reply in replies {
                prop_assert!(!reply.is_classic());
                let line = reply.to_line();
                prop_assert_eq!(Reply::parse(&line[..line.len() - 1]), Ok(reply));
            }
        }
    }

    fn arb_epoch() -> impl Strategy<Value = String> {
        "[0-9a-z]{1,32}"
    }

    fn arb_stream() -> impl Strategy<Value = Stream> {
        prop_oneof![Just(Stream::Direct), arb_room().prop_map(Stream::Room)]
    }

    proptest! {
        #[test]
        fn history_lines_roundtrip(
            stream in arb_stream(),
            r in arb_room(),
            a in arb_name(),
            body in arb_body(),
            epoch in arb_epoch(),
            offset in any::<u64>(),
            time in any::<u64>(),
            before in proptest::option::of(any::<u64>()),
            count in 1..=crate::MAX_HISTORY_PAGE,
            n in any::<u32>(),
        ) {
            let reqs = [
                Request::History { stream: stream.clone(), before, count },
                Request::Resume { epoch: &epoch, offset },
            ];
            for req in reqs {
                prop_assert_eq!(req.command().extension(), Some(Extension::History));
                let line = req.to_line();
                prop_assert_eq!(Request::parse(&line[..line.len() - 1]), Ok(req));
            }
            let replies = vec![
                Reply::DeliveryAt { offset, time, from: a.clone(), body: &body },
                Reply::SaidAt { room: r.clone(), offset, time, from: a.clone(), body: &body },
                Reply::SendQueued,
                Reply::HistoryOk { stream: stream.clone(), epoch: &epoch, top: offset, n },
                Reply::ResumeOk { epoch: &epoch, top: offset },
                Reply::ResumeExpired { epoch: &epoch, top: offset },
                Reply::ResumeEpoch { epoch: &epoch, top: offset },
                Reply::NoHistory,
            ];
            for reply in replies {
                prop_assert!(!reply.is_classic());
                let line = reply.to_line();
                prop_assert_eq!(Reply::parse(&line[..line.len() - 1]), Ok(reply));
            }
        }
    }

    #[test]
    fn history_request_table() {
        use RequestError::BadHistoryArgs;
        let room = RoomName::parse("#rust").expect("room");
        let cases: &[(&[u8], Result<Request<'_>, RequestError>)] = &[
            (
                b"HISTORY @ 20",
                Ok(Request::History {
                    stream: Stream::Direct,
                    before: None,
                    count: 20,
                }),
            ),
            (
                b"HISTORY #rust BEFORE 57 50",
                Ok(Request::History {
                    stream: Stream::Room(room),
                    before: Some(57),
                    count: 50,
                }),
            ),
            (b"HISTORY @ 51", Err(BadHistoryArgs(Command::History))),
            (b"HISTORY @ 0", Err(BadHistoryArgs(Command::History))),
            (b"HISTORY @ 020", Err(BadHistoryArgs(Command::History))),
            (b"HISTORY @", Err(BadHistoryArgs(Command::History))),
            (b"HISTORY", Err(BadHistoryArgs(Command::History))),
            (b"HISTORY bob 5", Err(BadHistoryArgs(Command::History))),
            (b"HISTORY @ 5 x", Err(BadHistoryArgs(Command::History))),
            (b"HISTORY @ BEFORE 5", Err(BadHistoryArgs(Command::History))),
            (
                b"HISTORY @ before 5 5",
                Err(BadHistoryArgs(Command::History)),
            ),
            (
                b"HISTORY @ BEFORE -1 5",
                Err(BadHistoryArgs(Command::History)),
            ),
            (
                b"RESUME abc 0",
                Ok(Request::Resume {
                    epoch: "abc",
                    offset: 0,
                }),
            ),
            (b"RESUME abc", Err(BadHistoryArgs(Command::Resume))),
            (b"RESUME ABC 1", Err(BadHistoryArgs(Command::Resume))),
            (b"RESUME abc 1 2", Err(BadHistoryArgs(Command::Resume))),
            (b"RESUME", Err(BadHistoryArgs(Command::Resume))),
        ];
        for (line, want) in cases {
            assert_eq!(
                &Request::parse(line),
                want,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(
            Reply::DeliveryAt {
                offset: 7,
                time: 1_764_633_600_000,
                from: name("bob"),
                body: " hi"
            }
            .to_line(),
            b"DELIVERY-AT 7 1764633600000 bob  hi\n"
        );
        assert_eq!(
            Reply::parse(b"HISTORY-OK @ e 0 0"),
            Ok(Reply::HistoryOk {
                stream: Stream::Direct,
                epoch: "e",
                top: 0,
                n: 0
            })
        );
        for bad in [
            &b"DELIVERY-AT 7 1 bob"[..],
            b"DELIVERY-AT x 1 bob hi",
            b"RESUME-OK e",
            b"SEND-QUEUED x",
        ] {
            assert!(
                Reply::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn pw(s: &str) -> Password<'_> {
        Password::parse(s).expect("test password is valid")
    }

    #[test]
    fn request_table() {
        use RequestError::*;
        let cases: &[(&[u8], Result<Request<'_>, RequestError>)] = &[
            (b"HELLO-FROM alice", Ok(Request::HelloFrom(name("alice")))),
            (b"HELLO-FROM", Err(BadName(NameError::Empty))),
            (b"HELLO-FROM ", Err(BadName(NameError::Empty))),
            (b"HELLO-FROM a b", Err(BadName(NameError::Whitespace))),
            (b"HELLO-FROM a,b", Err(BadName(NameError::Comma))),
            (b"HELLO-FROM \xff", Err(BadName(NameError::NotUtf8))),
            (b"hello-from alice", Err(UnknownCommand)),
            (b"LIST", Ok(Request::List)),
            (b"LIST ", Err(ListWithBody)),
            (b"LIST x", Err(ListWithBody)),
            (b"list", Err(UnknownCommand)),
            (b"LISTX", Err(UnknownCommand)),
            (
                b"SEND bob hi",
                Ok(Request::Send {
                    to: name("bob"),
                    body: "hi",
                }),
            ),
            (
                b"SEND bob  two  spaces ",
                Ok(Request::Send {
                    to: name("bob"),
                    body: " two  spaces ",
                }),
            ),
            (
                b"SEND bob \xf0\x9f\x91\x8b",
                Ok(Request::Send {
                    to: name("bob"),
                    body: "👋",
                }),
            ),
            (b"SEND", Err(BadSend)),
            (b"SEND ", Err(BadSend)),
            (b"SEND bob", Err(BadSend)),
            (b"SEND bob ", Err(BadSend)),
            (b"SEND  bob hi", Err(BadSend)),
            (b"SEND bob \xff\xfe", Err(NotUtf8)),
            (
                b"EXT keepalive,presence",
                Ok(Request::Ext(vec!["keepalive", "presence"])),
            ),
            (b"EXT future-1", Ok(Request::Ext(vec!["future-1"]))),
            (b"EXT", Err(BadExt)),
            (b"EXT ", Err(BadExt)),
            (b"EXT a,,b", Err(BadExt)),
            (b"EXT Keepalive", Err(BadExt)),
            (b"EXT a, b", Err(BadExt)),
            (b"PING", Ok(Request::Ping(None))),
            (b"PING 42", Ok(Request::Ping(Some("42")))),
            (b"PING ", Err(BadToken(Command::Ping))),
            (b"PING a b", Err(BadToken(Command::Ping))),
            (b"PONG x", Ok(Request::Pong(Some("x")))),
            (b"PONG \xc3\xa9", Err(BadToken(Command::Pong))),
            (
                b"LOGIN alice correct-horse",
                Ok(Request::Login {
                    name: name("alice"),
                    password: pw("correct-horse"),
                }),
            ),
            (
                b"LOGIN alice",
                Err(BadPassword(Command::Login, PasswordError::TooShort)),
            ),
            (b"LOGIN", Err(BadLoginName(NameError::Empty))),
            (
                b"LOGIN a,b correct-horse",
                Err(BadLoginName(NameError::Comma)),
            ),
            (
                b"LOGIN alice correct horse",
                Err(BadPassword(Command::Login, PasswordError::Whitespace)),
            ),
            (
                b"REGISTER correct-horse",
                Ok(Request::Register(pw("correct-horse"))),
            ),
            (
                b"REGISTER short",
                Err(BadPassword(Command::Register, PasswordError::TooShort)),
            ),
            (
                b"PASSWORD old-password new-password",
                Ok(Request::ChangePassword {
                    old: pw("old-password"),
                    new: pw("new-password"),
                }),
            ),
            (
                b"PASSWORD old-password",
                Err(BadPassword(Command::Password, PasswordError::TooShort)),
            ),
            (
                b"PASSWORD old-password new password",
                Err(BadPassword(Command::Password, PasswordError::Whitespace)),
            ),
            (
                b"UNREGISTER correct-horse",
                Ok(Request::Unregister(pw("correct-horse"))),
            ),
            (b"ext keepalive", Err(UnknownCommand)),
            (b"", Err(UnknownCommand)),
            (b" LIST", Err(UnknownCommand)),
            (b"\xff\xfe", Err(UnknownCommand)),
        ];
        for (line, want) in cases {
            assert_eq!(
                &Request::parse(line),
                want,
                "line {:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn command_of_line() {
        assert_eq!(Command::of_line(b"SEND bob"), Some(Command::Send));
        assert_eq!(Command::of_line(b"HELLO-FROM"), Some(Command::HelloFrom));
        assert_eq!(Command::of_line(b"SENDER"), None);
        assert_eq!(Command::of_line(b""), None);
    }

    #[test]
    fn reply_encoding_is_the_wire_format() {
        let cases: Vec<(Reply<'_>, &str)> = vec![
            (Reply::Hello(name("al")), "HELLO al\n"),
            (Reply::InUse, "IN-USE\n"),
            (Reply::Busy, "BUSY\n"),
            (Reply::ListOk(vec![name("a"), name("b")]), "LIST-OK a,b\n"),
            (Reply::SendOk, "SEND-OK\n"),
            (Reply::BadDestUser, "BAD-DEST-USER\n"),
            (
                Reply::Delivery {
                    from: name("a"),
                    body: " x  y",
                },
                "DELIVERY a  x  y\n",
            ),
            (Reply::BadRqstHdr, "BAD-RQST-HDR\n"),
            (Reply::BadRqstBody, "BAD-RQST-BODY\n"),
            (Reply::ExtOk(vec![]), "EXT-OK\n"),
            (
                Reply::ExtOk(vec!["keepalive", "accounts"]),
                "EXT-OK keepalive,accounts\n",
            ),
            (Reply::Ping(Some("7")), "PING 7\n"),
            (Reply::Pong(None), "PONG\n"),
            (Reply::Online(vec![name("a"), name("b")]), "ONLINE a,b\n"),
            (Reply::OnlineDone, "ONLINE-DONE\n"),
            (Reply::Offline(name("a")), "OFFLINE a\n"),
            (Reply::RegisterOk, "REGISTER-OK\n"),
            (Reply::PasswordOk, "PASSWORD-OK\n"),
            (Reply::UnregisterOk, "UNREGISTER-OK\n"),
            (Reply::NameRegistered, "NAME-REGISTERED\n"),
            (Reply::NoAccount, "NO-ACCOUNT\n"),
            (Reply::BadPassword, "BAD-PASSWORD\n"),
            (Reply::Locked, "LOCKED\n"),
            (Reply::Throttled(30), "THROTTLED 30\n"),
            (Reply::NeedsTls, "NEEDS-TLS\n"),
        ];
        for (reply, wire) in cases {
            assert_eq!(String::from_utf8(reply.to_line()).unwrap(), wire);
        }
    }

    #[test]
    fn reply_parse_rejects_garbage() {
        assert_eq!(
            Reply::parse(b"SEND-OK x"),
            Err(ReplyError::UnexpectedBody("SEND-OK"))
        );
        assert_eq!(Reply::parse(b"WHAT"), Err(ReplyError::Unknown));
        assert_eq!(Reply::parse(b"DELIVERY bob"), Err(ReplyError::BadDelivery));
        assert_eq!(
            Reply::parse(b"LIST-OK a, b"),
            Err(ReplyError::BadName(NameError::Whitespace))
        );
        for bad in [
            &b"THROTTLED"[..],
            b"THROTTLED -1",
            b"THROTTLED 01",
            b"THROTTLED 99999999999",
            b"ONLINE",
            b"OFFLINE",
            b"EXT-OK ",
            b"ONLINE-DONE x",
        ] {
            assert!(
                Reply::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn command_extensions() {
        assert_eq!(Command::of_line(b"PING"), Some(Command::Ping));
        assert_eq!(Command::Ping.extension(), Some(Extension::Keepalive));
        assert_eq!(Command::Login.extension(), Some(Extension::Accounts));
        assert_eq!(Command::Ext.extension(), None);
        assert_eq!(Command::Send.extension(), None);
    }

    #[test]
    fn online_list_is_split_at_the_per_line_limit() {
        let names: Vec<String> = (0..250).map(|i| format!("u{i}")).collect();
        let mut out = Vec::new();
        Reply::encode_online_list(&mut out, names.iter().map(String::as_str));
        let lines: Vec<&[u8]> = out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 4, "three ONLINE lines and ONLINE-DONE");
        let mut seen = Vec::new();
        for line in &lines[..3] {
            match Reply::parse(line) {
                Ok(Reply::Online(list)) => {
                    assert!(list.len() <= crate::MAX_ONLINE_NAMES_PER_LINE);
                    seen.extend(list.into_iter().map(|n| n.as_str().to_owned()));
                }
                other => panic!("expected ONLINE, got {other:?}"),
            }
        }
        assert_eq!(Reply::parse(lines[3]), Ok(Reply::OnlineDone));
        assert_eq!(seen, names);
        let mut one = Vec::new();
        Reply::encode_presence(&mut one, "bob", false);
        assert_eq!(one, b"OFFLINE bob\n");
    }

    fn arb_name() -> impl Strategy<Value = Username> {
        "[^\\s,\\p{Cc}]{1,8}".prop_filter_map("fits the limit", |s| Username::parse(&s).ok())
    }

    fn arb_body() -> impl Strategy<Value = String> {
        // Anything but a newline; a trailing \r would be eaten by the framer, not the parser.
        "[^\n]{1,40}"
    }

    fn arb_password() -> impl Strategy<Value = String> {
        "[^\\s\\p{Cc}]{8,20}".prop_filter("fits the byte limits", |s| Password::parse(s).is_ok())
    }

    fn arb_token() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("[!-~]{1,64}")
    }

    proptest! {
        #[test]
        fn extension_request_roundtrip(
            login in arb_name(),
            a in arb_password(),
            b in arb_password(),
            token in arb_token(),
            exts in proptest::collection::vec("[a-z0-9-]{1,32}", 1..32),
        ) {
            let (a, b) = (pw(&a), pw(&b));
            let token = token.as_deref();
            let reqs = [
                Request::Ext(exts.iter().map(String::as_str).collect()),
                Request::Ping(token),
                Request::Pong(token),
                Request::Login { name: login, password: a },
                Request::Register(a),
                Request::ChangePassword { old: a, new: b },
                Request::Unregister(b),
            ];
            for req in reqs {
                let line = req.to_line();
                prop_assert_eq!(Request::parse(&line[..line.len() - 1]), Ok(req));
            }
        }

        #[test]
        fn extension_reply_roundtrip(
            names in proptest::collection::vec(arb_name(), 1..5),
            token in arb_token(),
            secs in any::<u32>(),
        ) {
            let token = token.as_deref();
            let replies = vec![
                Reply::ExtOk(vec![]), Reply::ExtOk(vec!["keepalive", "x-1"]),
                Reply::Ping(token), Reply::Pong(token),
                Reply::Online(names.clone()), Reply::OnlineDone, Reply::Offline(names[0].clone()),
                Reply::RegisterOk, Reply::PasswordOk, Reply::UnregisterOk, Reply::NameRegistered,
                Reply::NoAccount, Reply::BadPassword, Reply::Locked, Reply::Throttled(secs),
                Reply::NeedsTls,
            ];
            for reply in replies {
                prop_assert!(!reply.is_classic());
                let line = reply.to_line();
                prop_assert_eq!(Reply::parse(&line[..line.len() - 1]), Ok(reply));
            }
        }

        #[test]
        fn request_roundtrip(to in arb_name(), body in arb_body(), hello in arb_name()) {
            let send = Request::Send { to, body: &body };
            for req in [send, Request::List, Request::HelloFrom(hello)] {
                let line = req.to_line();
                prop_assert_eq!(line.last(), Some(&b'\n'));
                prop_assert_eq!(Request::parse(&line[..line.len() - 1]), Ok(req));
            }
        }

        #[test]
        fn reply_roundtrip(from in arb_name(), body in arb_body(), names in proptest::collection::vec(arb_name(), 0..5)) {
            let replies = vec![
                Reply::Hello(from.clone()),
                Reply::ListOk(names),
                Reply::Delivery { from, body: &body },
                Reply::InUse, Reply::Busy, Reply::SendOk, Reply::BadDestUser,
                Reply::BadRqstHdr, Reply::BadRqstBody,
            ];
            for reply in replies {
                let line = reply.to_line();
                prop_assert_eq!(Reply::parse(&line[..line.len() - 1]), Ok(reply));
            }
        }

        #[test]
        fn any_bytes_parse_without_panic(line in proptest::collection::vec(any::<u8>(), 0..200)) {
            let req = Request::parse(&line);
            if let Ok(r) = &req {
                // Whatever parses re-encodes to the same bytes.
                let encoded = r.to_line();
                prop_assert_eq!(&encoded[..encoded.len() - 1], &line[..]);
            }
            if let Err(e) = &req {
                prop_assert_eq!(e.command(), Command::of_line(&line));
            }
            let _ = Reply::parse(&line);
        }
    }
}

#[cfg(test)]
mod generation_tests {
    use super::*;

    fn name(s: &str) -> Username {
        Username::parse(s).expect("valid name")
    }

    /// The previous generation's three tokens parse and encode like their current
    /// counterparts. See: #16
    #[test]
    fn old_generation_lines_round_trip() {
        assert_eq!(Request::parse(b"WHO"), Ok(Request::Who));
        assert_eq!(Request::parse(b"WHO x"), Err(RequestError::WhoWithBody));
        assert_eq!(Request::parse(b"who"), Err(RequestError::UnknownCommand));
        assert_eq!(Request::Who.to_line(), b"WHO\n");
        assert_eq!(Command::of_line(b"WHO"), Some(Command::Who));
        assert_eq!(
            Reply::parse(b"WHO-OK a,b"),
            Ok(Reply::WhoOk(vec![name("a"), name("b")]))
        );
        assert_eq!(
            Reply::WhoOk(vec![name("a"), name("b")]).to_line(),
            b"WHO-OK a,b\n"
        );
        assert_eq!(Reply::parse(b"UNKNOWN"), Ok(Reply::Unknown));
        assert_eq!(
            Reply::parse(b"UNKNOWN x"),
            Err(ReplyError::UnexpectedBody("UNKNOWN"))
        );
        assert_eq!(Reply::Unknown.to_line(), b"UNKNOWN\n");
        // The current generation is unchanged.
        assert_eq!(
            Reply::parse(b"LIST-OK a"),
            Ok(Reply::ListOk(vec![name("a")]))
        );
    }

    #[test]
    fn each_generation_names_its_own_tokens() {
        let names = vec![name("a")];
        assert_eq!(Generation::Current.list_request().to_line(), b"LIST\n");
        assert_eq!(Generation::Old.list_request().to_line(), b"WHO\n");
        assert_eq!(
            Generation::Current.list_reply(names.clone()).to_line(),
            b"LIST-OK a\n"
        );
        assert_eq!(Generation::Old.list_reply(names).to_line(), b"WHO-OK a\n");
        assert_eq!(Generation::Current.bad_dest().to_line(), b"BAD-DEST-USER\n");
        assert_eq!(Generation::Old.bad_dest().to_line(), b"UNKNOWN\n");
    }
}
