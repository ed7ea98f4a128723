//! Typed protocol messages: parsing lines into them and encoding them back into lines.
//!
//! Parsing here is purely syntactic. Whether a well-formed request is *allowed* in the
//! connection's current state (before or after login) is decided by the server's session
//! machine, which turns every failure into `BAD-RQST-HDR` or `BAD-RQST-BODY`.

use crate::name::{NameError, Username};

const HELLO_FROM: &[u8] = b"HELLO-FROM";
const LIST: &[u8] = b"LIST";
const SEND: &[u8] = b"SEND";

const HELLO: &[u8] = b"HELLO";
const IN_USE: &[u8] = b"IN-USE";
const BUSY: &[u8] = b"BUSY";
const LIST_OK: &[u8] = b"LIST-OK";
const SEND_OK: &[u8] = b"SEND-OK";
const BAD_DEST_USER: &[u8] = b"BAD-DEST-USER";
const DELIVERY: &[u8] = b"DELIVERY";
const BAD_RQST_HDR: &[u8] = b"BAD-RQST-HDR";
const BAD_RQST_BODY: &[u8] = b"BAD-RQST-BODY";

/// The command word of a client line, before its body is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    HelloFrom,
    List,
    Send,
}

impl Command {
    /// The command a line starts with: its first word, matched exactly (commands are
    /// case-sensitive). `None` for anything else, an empty line included.
    pub fn of_line(line: &[u8]) -> Option<Self> {
        let word = split_word(line).0;
        match word {
            HELLO_FROM => Some(Self::HelloFrom),
            LIST => Some(Self::List),
            SEND => Some(Self::Send),
            _ => None,
        }
    }

    /// The command as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HelloFrom => "HELLO-FROM",
            Self::List => "LIST",
            Self::Send => "SEND",
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
    /// `SEND <to> <body>`: relay `body` (the rest of the line, byte for byte) to `to`.
    Send { to: Username, body: &'a str },
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
}

impl RequestError {
    /// The command the line started with, if it was one.
    pub fn command(&self) -> Option<Command> {
        match self {
            Self::UnknownCommand => None,
            Self::BadName(_) => Some(Command::HelloFrom),
            Self::BadSend | Self::NotUtf8 => Some(Command::Send),
            Self::ListWithBody => Some(Command::List),
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
            _ => Err(RequestError::UnknownCommand),
        }
    }

    /// Appends the request as one line, `\n` included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Request::HelloFrom(name) => line2(out, HELLO_FROM, name.as_str().as_bytes()),
            Request::List => line1(out, LIST),
            Request::Send { to, body } => line3(out, SEND, to.as_str(), body),
        }
    }

    /// The request as one line, `\n` included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
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
    /// `SEND-OK`: the message was handed to the recipient.
    SendOk,
    /// `BAD-DEST-USER`: the recipient is not logged in.
    BadDestUser,
    /// `DELIVERY <from> <body>`: a message for this client.
    Delivery { from: Username, body: &'a str },
    /// `BAD-RQST-HDR`: unknown command, or not allowed now.
    BadRqstHdr,
    /// `BAD-RQST-BODY`: known command, invalid body.
    BadRqstBody,
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
            BAD_RQST_HDR => no_body(Reply::BadRqstHdr, "BAD-RQST-HDR"),
            BAD_RQST_BODY => no_body(Reply::BadRqstBody, "BAD-RQST-BODY"),
            LIST_OK => {
                let names = rest.unwrap_or_default();
                if names.is_empty() {
                    return Ok(Reply::ListOk(Vec::new()));
                }
                names
                    .split(|b| *b == b',')
                    .map(peer_name)
                    .collect::<Result<Vec<_>, _>>()
                    .map(Reply::ListOk)
            }
            DELIVERY => {
                let (from, body) = split_word(rest.ok_or(ReplyError::BadDelivery)?);
                let body = body.ok_or(ReplyError::BadDelivery)?;
                let from = peer_name(from)?;
                let body = std::str::from_utf8(body).map_err(|_| ReplyError::NotUtf8)?;
                Ok(Reply::Delivery { from, body })
            }
            _ => Err(ReplyError::Unknown),
        }
    }

    /// Appends the reply as one line, `\n` included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Hello(name) => line2(out, HELLO, name.as_str().as_bytes()),
            Reply::InUse => line1(out, IN_USE),
            Reply::Busy => line1(out, BUSY),
            Reply::ListOk(names) => {
                out.extend_from_slice(LIST_OK);
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
            Reply::Delivery { from, body } => line3(out, DELIVERY, from.as_str(), body),
            Reply::BadRqstHdr => line1(out, BAD_RQST_HDR),
            Reply::BadRqstBody => line1(out, BAD_RQST_BODY),
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
    }

    fn arb_name() -> impl Strategy<Value = Username> {
        "[^\\s,\\p{Cc}]{1,8}".prop_filter_map("fits the limit", |s| Username::parse(&s).ok())
    }

    fn arb_body() -> impl Strategy<Value = String> {
        // Anything but a newline; a trailing \r would be eaten by the framer, not the parser.
        "[^\n]{1,40}"
    }

    proptest! {
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
