//! The two protocols the bench speaks: tcpchat's classic protocol and IRC.
//!
//! Each dialect turns the bench's few intentions (log in as a name, send a body to a name,
//! answer a keepalive) into lines, and a server's line into an [`Event`]. Classic lines are
//! built and parsed only through `tcpchat_proto`, which spells the protocol once. IRC is
//! here only as the peer servers speak it (RFC 2812 client registration, `PRIVMSG`,
//! `PING`/`PONG`); this is not an IRC client library.

use tcpchat_proto::{Reply, Request, RoomName, Username};

/// Which protocol to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// `HELLO-FROM` / `SEND` / `DELIVERY`: tcpchat and every course server.
    Classic,
    /// `NICK` + `USER`, `001`, `PRIVMSG`, `PING`: ngircd, InspIRCd and other IRC servers.
    Irc,
}

/// Why a server turned a login away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `BUSY`, an IRC `ERROR` (closing link) or an IRC error numeric.
    Busy,
    /// `IN-USE` / IRC 433: the name is taken.
    InUse,
}

/// What one server line means to the bench.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// Login accepted (`HELLO`, IRC `001`).
    LoggedIn,
    /// Login refused.
    Refused(Refusal),
    /// A message for us.
    Delivery { from: &'a str, body: &'a [u8] },
    /// Our message was accepted (`SEND-OK`, or our own `SAID` in a room; IRC has no such
    /// reply).
    SendOk,
    /// We are in the room (`JOINED <room> <us>`, IRC `JOIN` with our nick).
    Joined,
    /// Our message could not be delivered (`BAD-DEST-USER`, IRC 401).
    SendFailed,
    /// A keepalive to answer with [`Codec::pong`]; carries its token.
    Ping(&'a [u8]),
    /// Who is logged in (`LIST-OK`), parsed by `tcpchat_proto`.
    ListOk(Vec<Username>),
    /// The server says our request was wrong (`BAD-RQST-*`, unparseable reply).
    ProtocolError,
    /// Anything the bench does not care about (IRC notices, MOTD).
    Other,
}

/// Encodes the bench's requests for one client, and decodes what the server sends it.
///
/// The send framing around a body is computed once per recipient by encoding a request
/// with a marker body and splitting at the marker, so the hot path is two `memcpy`s while
/// the wire format still comes from `tcpchat_proto`.
#[derive(Debug, Clone)]
pub struct Codec {
    dialect: Dialect,
    send_prefix: Vec<u8>,
    send_suffix: Vec<u8>,
    /// In a room: the room, and our own name (to tell our lines from the others').
    room: Option<(String, String)>,
    /// Classic, in a room: `SAID <room> `, the start of every room message's line.
    said_prefix: Vec<u8>,
}

/// The start of a classic direct message's line.
const DELIVERY_PREFIX: &[u8] = b"DELIVERY ";

/// Cannot appear in a valid name or in a bench body.
const MARKER: &str = "\u{1}";

impl Codec {
    /// A codec whose [`Codec::send`] addresses `to`.
    ///
    /// # Panics
    /// If `to` is not a valid classic name (the bench generates names, so it always is).
    pub fn new(dialect: Dialect, to: &str) -> Self {
        let line = match dialect {
            Dialect::Classic => {
                let to = Username::parse(to).expect("bench names are valid");
                Request::Send { to, body: MARKER }.to_line()
            }
            Dialect::Irc => format!("PRIVMSG {to} :{MARKER}\r\n").into_bytes(),
        };
        // The marker is in the line because it was just written there.
        let at = line
            .windows(MARKER.len())
            .position(|w| w == MARKER.as_bytes())
            .expect("marker present");
        Self {
            dialect,
            send_prefix: line[..at].to_vec(),
            send_suffix: line[at + MARKER.len()..].to_vec(),
            room: None,
            said_prefix: Vec::new(),
        }
    }

    /// A codec for `me`, a member of `room`: [`Codec::send`] says to the room, the login
    /// asks for the `rooms` extension (classic), and [`Codec::join`] joins it.
    ///
    /// # Panics
    /// If `room` or `me` is not valid (the bench chooses both, so they always are).
    pub fn room(dialect: Dialect, room: &str, me: &str) -> Self {
        let line = match dialect {
            Dialect::Classic => {
                let room = RoomName::parse(room).expect("the bench's room is valid");
                Request::Say { room, body: MARKER }.to_line()
            }
            Dialect::Irc => format!("PRIVMSG {room} :{MARKER}\r\n").into_bytes(),
        };
        let at = line
            .windows(MARKER.len())
            .position(|w| w == MARKER.as_bytes())
            .expect("marker present");
        Self {
            dialect,
            send_prefix: line[..at].to_vec(),
            send_suffix: line[at + MARKER.len()..].to_vec(),
            room: Some((room.to_owned(), me.to_owned())),
            said_prefix: format!("SAID {room} ").into_bytes(),
        }
    }

    /// Appends the request to join the room (after the login is answered: IRC servers
    /// take no `JOIN` before registration).
    pub fn join(&self, out: &mut Vec<u8>) {
        let Some((room, _)) = &self.room else {
            return;
        };
        match self.dialect {
            Dialect::Classic => {
                let room = RoomName::parse(room).expect("the bench's room is valid");
                Request::Join(room).encode(out);
            }
            Dialect::Irc => out.extend_from_slice(format!("JOIN {room}\r\n").as_bytes()),
        }
    }

    /// Whether this codec's client is in a room.
    pub fn in_room(&self) -> bool {
        self.room.is_some()
    }

    /// The dialect spoken.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Appends the login lines for `name`.
    pub fn login(&self, out: &mut Vec<u8>, name: &str) {
        match self.dialect {
            Dialect::Classic => {
                if self.room.is_some() {
                    Request::Ext(vec!["rooms"]).encode(out);
                }
                let name = Username::parse(name).expect("bench names are valid");
                Request::HelloFrom(name).encode(out);
            }
            Dialect::Irc => {
                out.extend_from_slice(
                    format!("NICK {name}\r\nUSER {name} 0 * :{name}\r\n").as_bytes(),
                );
            }
        }
    }

    /// Appends a request for who is logged in (classic only: the bench refuses list-send
    /// against IRC before it starts).
    pub fn list(&self, out: &mut Vec<u8>) {
        Request::List.encode(out);
    }

    /// Appends one message; `body` writes the body (no newline) into the vector.
    pub fn send(&self, out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
        out.extend_from_slice(&self.send_prefix);
        body(out);
        out.extend_from_slice(&self.send_suffix);
    }

    /// Appends the answer to a [`Event::Ping`] (classic has none).
    pub fn pong(&self, out: &mut Vec<u8>, token: &[u8]) {
        if self.dialect == Dialect::Irc {
            out.extend_from_slice(b"PONG :");
            out.extend_from_slice(token);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// What a server line (without its line ending) means.
    ///
    /// A classic message line (`DELIVERY <from> <body>`, or `SAID <room> <from> <body>` in
    /// the room) is split where its words end instead of being parsed by `tcpchat_proto`:
    /// the bench reads millions of them a second, and what it checks of one is its sender
    /// (named by the body and by `<from>`, compared by the caller) and its body, compared
    /// byte for byte ([`crate::message::decode`]). A line that does not split so is parsed
    /// in full, as every other line is.
    pub fn parse<'a>(&self, line: &'a [u8]) -> Event<'a> {
        let me = self.room.as_ref().map(|(_, me)| me.as_str());
        match self.dialect {
            Dialect::Classic => {
                let prefix = match me {
                    Some(_) => &self.said_prefix[..],
                    None => DELIVERY_PREFIX,
                };
                if let Some((from, body)) = line.strip_prefix(prefix).and_then(split_message) {
                    return match me {
                        Some(me) if me == from => Event::SendOk,
                        _ => Event::Delivery { from, body },
                    };
                }
                parse_classic(line, me)
            }
            Dialect::Irc => parse_irc(line, me),
        }
    }
}

/// `<from> <body>`: a name of printable ASCII without spaces, and a non-empty rest.
fn split_message(rest: &[u8]) -> Option<(&str, &[u8])> {
    let space = rest.iter().position(|b| *b == b' ')?;
    let (from, body) = (&rest[..space], &rest[space + 1..]);
    if from.is_empty() || body.is_empty() || !from.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    // Printable ASCII is UTF-8.
    Some((std::str::from_utf8(from).ok()?, body))
}

/// `me`: our name, when in a room (whose lines are then understood).
fn parse_classic<'a>(line: &'a [u8], me: Option<&str>) -> Event<'a> {
    if let Some(me) = me {
        match Reply::parse(line) {
            Ok(Reply::ExtOk(_)) => return Event::Other,
            Ok(Reply::Joined { name, .. }) if name.as_str() == me => return Event::Joined,
            Ok(Reply::Joined { .. } | Reply::Parted { .. } | Reply::TopicIs { .. }) => {
                return Event::Other
            }
            Ok(Reply::Said { from, .. }) if from.as_str() == me => return Event::SendOk,
            Ok(Reply::Said { from, body, .. }) => {
                // As for DELIVERY below: slices of the line, not the parsed copies.
                let body_at = line.len() - body.len();
                let from_at = body_at - 1 - from.as_str().len();
                let from = std::str::from_utf8(&line[from_at..body_at - 1]).unwrap_or_default();
                return Event::Delivery {
                    from,
                    body: &line[body_at..],
                };
            }
            _ => {}
        }
    }
    match Reply::parse(line) {
        Ok(Reply::Hello(_)) => Event::LoggedIn,
        Ok(Reply::Busy) => Event::Refused(Refusal::Busy),
        Ok(Reply::InUse) => Event::Refused(Refusal::InUse),
        Ok(Reply::SendOk) => Event::SendOk,
        Ok(Reply::BadDestUser) => Event::SendFailed,
        Ok(Reply::Delivery { from, body }) => {
            // `body` is a suffix of `line`, and the sender name is the word before it; take
            // both as slices of the line instead of the parsed copy.
            let body_at = line.len() - body.len();
            let from_at = body_at - 1 - from.as_str().len();
            let from = std::str::from_utf8(&line[from_at..body_at - 1]).unwrap_or_default();
            Event::Delivery {
                from,
                body: &line[body_at..],
            }
        }
        Ok(Reply::ListOk(names)) => Event::ListOk(names),
        // The bench speaks the classic protocol: an extension line is as wrong as an error.
        Ok(Reply::BadRqstHdr | Reply::BadRqstBody) | Ok(_) | Err(_) => Event::ProtocolError,
    }
}

/// Splits an IRC line into prefix, command and the parameters after it.
fn irc_parts(line: &[u8]) -> (Option<&[u8]>, &[u8], &[u8]) {
    let (prefix, rest) = match line.strip_prefix(b":") {
        Some(after) => match after.iter().position(|b| *b == b' ') {
            Some(i) => (Some(&after[..i]), &after[i + 1..]),
            None => (Some(after), &b""[..]),
        },
        None => (None, line),
    };
    match rest.iter().position(|b| *b == b' ') {
        Some(i) => (prefix, &rest[..i], &rest[i + 1..]),
        None => (prefix, rest, &b""[..]),
    }
}

/// The trailing parameter (after ` :`, or the last word).
fn irc_trailing(params: &[u8]) -> &[u8] {
    if let Some(t) = params.strip_prefix(b":") {
        return t;
    }
    match params.windows(2).position(|w| w == b" :") {
        Some(i) => &params[i + 2..],
        None => params.rsplit(|b| *b == b' ').next().unwrap_or_default(),
    }
}

fn parse_irc<'a>(line: &'a [u8], me: Option<&str>) -> Event<'a> {
    let (prefix, command, params) = irc_parts(line);
    let nick = || {
        prefix
            .and_then(|p| p.split(|b| *b == b'!').next())
            .and_then(|n| std::str::from_utf8(n).ok())
    };
    match command {
        b"JOIN" if me.is_some() && nick() == me => Event::Joined,
        b"PRIVMSG" => {
            let nick = prefix
                .and_then(|p| p.split(|b| *b == b'!').next())
                .and_then(|n| std::str::from_utf8(n).ok());
            match (nick, params.windows(2).position(|w| w == b" :")) {
                (Some(from), Some(i)) => Event::Delivery {
                    from,
                    body: &params[i + 2..],
                },
                _ => Event::ProtocolError,
            }
        }
        b"PING" => Event::Ping(irc_trailing(params)),
        b"001" => Event::LoggedIn,
        b"433" => Event::Refused(Refusal::InUse),
        b"401" => Event::SendFailed,
        b"ERROR" => Event::Refused(Refusal::Busy),
        [b'4' | b'5', b'0'..=b'9', b'0'..=b'9'] => Event::ProtocolError,
        _ => Event::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(codec: &Codec, f: impl FnOnce(&Codec, &mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(codec, &mut out);
        String::from_utf8(out).expect("ascii")
    }

    proptest::proptest! {
        /// The split of a message line gives what the full parse gives, whenever the
        /// full parse takes the line as a message; a line it refuses the split refuses too
        /// or hands over as a message from a sender the caller then does not know.
        #[test]
        fn message_split_agrees_with_the_full_parse(
            from in "[a-z0-9]{1,12}",
            body in "[ -~]{1,40}",
            room_member in proptest::prelude::any::<bool>(),
            mine in proptest::prelude::any::<bool>(),
        ) {
            let me = if mine { from.clone() } else { "zz9".to_owned() };
            let (codec, line) = if room_member {
                (Codec::room(Dialect::Classic, "#bench", &me), format!("SAID #bench {from} {body}"))
            } else {
                (Codec::new(Dialect::Classic, "bob"), format!("DELIVERY {from} {body}"))
            };
            let fast = codec.parse(line.as_bytes());
            let me = codec.room.as_ref().map(|(_, me)| me.as_str());
            let full = parse_classic(line.as_bytes(), me);
            if matches!(full, Event::Delivery { .. } | Event::SendOk) {
                proptest::prop_assert_eq!(fast, full);
            }
        }
    }

    #[test]
    fn message_lines_that_do_not_split_are_parsed_in_full() {
        let c = Codec::new(Dialect::Classic, "bob");
        assert_eq!(
            c.parse(b"DELIVERY ann"),
            parse_classic(b"DELIVERY ann", None)
        );
        assert_eq!(c.parse(b"DELIVERY  x"), parse_classic(b"DELIVERY  x", None));
        assert_eq!(c.parse(b"SEND-OK"), Event::SendOk);
        let r = Codec::room(Dialect::Classic, "#bench", "ann");
        assert_eq!(r.parse(b"SAID #bench ann hi"), Event::SendOk);
        assert_eq!(
            r.parse(b"SAID #bench bob hi there"),
            Event::Delivery {
                from: "bob",
                body: b"hi there"
            }
        );
        // Another room's line is not ours to split.
        assert_eq!(
            r.parse(b"SAID #other bob hi"),
            parse_classic(b"SAID #other bob hi", Some("ann"))
        );
    }

    #[test]
    fn classic_encoding() {
        let c = Codec::new(Dialect::Classic, "bob");
        assert_eq!(lines(&c, |c, o| c.login(o, "ann")), "HELLO-FROM ann\n");
        assert_eq!(
            lines(&c, |c, o| c.send(o, |b| b.extend_from_slice(b"hi  there"))),
            "SEND bob hi  there\n"
        );
        assert_eq!(lines(&c, |c, o| c.pong(o, b"x")), "");
        assert_eq!(lines(&c, |c, o| c.list(o)), "LIST\n");
    }

    #[test]
    fn irc_encoding() {
        let c = Codec::new(Dialect::Irc, "bob");
        assert_eq!(
            lines(&c, |c, o| c.login(o, "ann")),
            "NICK ann\r\nUSER ann 0 * :ann\r\n"
        );
        assert_eq!(
            lines(&c, |c, o| c.send(o, |b| b.extend_from_slice(b"hi  there"))),
            "PRIVMSG bob :hi  there\r\n"
        );
        assert_eq!(lines(&c, |c, o| c.pong(o, b"srv.x")), "PONG :srv.x\r\n");
    }

    #[test]
    fn classic_events() {
        let c = Codec::new(Dialect::Classic, "bob");
        let cases: &[(&[u8], Event<'_>)] = &[
            (b"HELLO ann", Event::LoggedIn),
            (b"BUSY", Event::Refused(Refusal::Busy)),
            (b"IN-USE", Event::Refused(Refusal::InUse)),
            (b"SEND-OK", Event::SendOk),
            (b"BAD-DEST-USER", Event::SendFailed),
            (
                b"DELIVERY bob 1  2 ..",
                Event::Delivery {
                    from: "bob",
                    body: b"1  2 ..",
                },
            ),
            (
                b"LIST-OK ann,bob",
                Event::ListOk(vec![
                    Username::parse("ann").expect("valid"),
                    Username::parse("bob").expect("valid"),
                ]),
            ),
            (b"BAD-RQST-HDR", Event::ProtocolError),
            (b"BAD-RQST-BODY", Event::ProtocolError),
            (b"garbage", Event::ProtocolError),
        ];
        for (line, want) in cases {
            assert_eq!(&c.parse(line), want, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn room_lines() {
        let c = Codec::room(Dialect::Classic, "#bench", "ann");
        assert_eq!(
            lines(&c, |c, o| c.login(o, "ann")),
            "EXT rooms\nHELLO-FROM ann\n"
        );
        assert_eq!(lines(&c, |c, o| c.join(o)), "JOIN #bench\n");
        assert_eq!(
            lines(&c, |c, o| c.send(o, |b| b.extend_from_slice(b"1  2"))),
            "SAY #bench 1  2\n"
        );
        let cases: &[(&[u8], Event<'_>)] = &[
            (b"EXT-OK rooms", Event::Other),
            (b"JOINED #bench ann", Event::Joined),
            (b"JOINED #bench bob", Event::Other),
            (b"PARTED #bench bob", Event::Other),
            (b"SAID #bench ann 1 2", Event::SendOk),
            (
                b"SAID #bench bob 1  2 ",
                Event::Delivery {
                    from: "bob",
                    body: b"1  2 ",
                },
            ),
            (b"NOT-MEMBER", Event::ProtocolError),
            (b"HELLO ann", Event::LoggedIn),
        ];
        for (line, want) in cases {
            assert_eq!(&c.parse(line), want, "{}", String::from_utf8_lossy(line));
        }
        let i = Codec::room(Dialect::Irc, "#bench", "ann");
        assert_eq!(lines(&i, |c, o| c.join(o)), "JOIN #bench\r\n");
        assert_eq!(
            lines(&i, |c, o| c.send(o, |b| b.extend_from_slice(b"x"))),
            "PRIVMSG #bench :x\r\n"
        );
        let cases: &[(&[u8], Event<'_>)] = &[
            (b":ann!ann@127.0.0.1 JOIN :#bench", Event::Joined),
            (b":ann!~ann@localhost JOIN #bench", Event::Joined),
            (b":bob!bob@127.0.0.1 JOIN :#bench", Event::Other),
            (b":irc.local 353 ann = #bench :ann bob", Event::Other),
            (
                b":bob!bob@127.0.0.1 PRIVMSG #bench :1 2",
                Event::Delivery {
                    from: "bob",
                    body: b"1 2",
                },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(&i.parse(line), want, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn irc_events() {
        let c = Codec::new(Dialect::Irc, "bob");
        let cases: &[(&[u8], Event<'_>)] = &[
            (
                b":irc.local 001 ann :Welcome to the network",
                Event::LoggedIn,
            ),
            (
                b":irc.local 433 * ann :Nickname is already in use",
                Event::Refused(Refusal::InUse),
            ),
            (
                b"ERROR :Closing connection: too many",
                Event::Refused(Refusal::Busy),
            ),
            (
                b":bob!bob@127.0.0.1 PRIVMSG ann :1 2 3 .. : x",
                Event::Delivery {
                    from: "bob",
                    body: b"1 2 3 .. : x",
                },
            ),
            (b"PING :irc.local", Event::Ping(b"irc.local")),
            (b"PING irc.local", Event::Ping(b"irc.local")),
            (b":irc.local 401 ann bob :No such nick", Event::SendFailed),
            (
                b":irc.local 421 ann FOO :Unknown command",
                Event::ProtocolError,
            ),
            (b":irc.local 375 ann :- message of the day", Event::Other),
            (
                b":irc.local NOTICE * :*** Looking up your hostname",
                Event::Other,
            ),
        ];
        for (line, want) in cases {
            assert_eq!(&c.parse(line), want, "{}", String::from_utf8_lossy(line));
        }
    }
}
