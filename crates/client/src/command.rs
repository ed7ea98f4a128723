//! What the user typed, as a typed command.
//!
//! Two vocabularies are understood side by side: the classic one of the course clients
//! (`@user message`, `!who`, `!quit`) and the IRC-style slash commands that weechat and irssi
//! users reach for (`/msg`, `/query`, `/who`, `/quit`, `/help`). Anything else is text for the
//! open conversation. Parsing here knows nothing about the connection; [`crate::Client`] decides
//! what a command means in the current state.

use tcpchat_proto::{NameError, RoomName, RoomNameError, Username};

/// One line of user input, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    /// Text for the open conversation.
    Say(String),
    /// `@user text` or `/msg user text`: send `text` to `to` (and open that conversation).
    Msg { to: Username, text: String },
    /// `/query user` or a lone `@user`: open the conversation with `user`.
    Query(Username),
    /// `/close`: close the open conversation.
    Close,
    /// `!who` or `/who`: ask who is online.
    Who,
    /// `!quit` or `/quit`: leave.
    Quit,
    /// `/help`.
    Help,
    /// `/register`: make the name an account (the password is asked for, without echo).
    Register,
    /// `/password`: change the account's password.
    ChangePassword,
    /// `/unregister`: delete the account.
    Unregister,
    /// `/join #room`: join (or create) a room and open its conversation.
    Join(RoomName),
    /// `/part [#room]`: leave the room (the open one without an argument).
    Part(Option<RoomName>),
    /// `/rooms`: which rooms exist.
    Rooms,
    /// `/members [#room]`: who is in the room (the open one without an argument).
    Members(Option<RoomName>),
    /// `/topic [text]` in a room's conversation: show the topic, set it, or clear it (`-`).
    Topic(TopicArg),
    /// `/kick name` in a room's conversation: remove a member (the owner only).
    Kick(Username),
    /// An empty line.
    Nothing,
}

/// What `/topic` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicArg {
    /// `/topic` alone: show the topic last seen.
    Show,
    /// `/topic text`.
    Set(String),
    /// `/topic -`.
    Clear,
}

/// Why a line could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("unknown command {0} (type /help for the list)")]
    UnknownCommand(String),
    #[error("usage: {0}")]
    Usage(&'static str),
    #[error("{name:?} is not a user name: {err}")]
    BadName { name: String, err: NameError },
    #[error("type {0} alone: the password is asked for next, without echo")]
    PasswordArgument(String),
    #[error("{name:?} is not a room name: {err}")]
    BadRoom { name: String, err: RoomNameError },
}

/// The commands, for `/help` and the plain mode's `--help`: (what to type, what it does).
pub const HELP: &[(&str, &str)] = &[
    ("text", "send to the open conversation"),
    ("@user text", "send to user, open that conversation"),
    ("/msg user text", "the same"),
    ("/query user", "open the conversation with user"),
    ("/close", "close the open conversation"),
    ("!who  /who", "who is online"),
    // One line for each group, so that the help still fits a 14-row terminal side by side.
    ("/join #room", "a room; /part /rooms /members /topic"),
    ("/register", "own your name (/password, /unregister)"),
    ("/help", "this help"),
    ("!quit  /quit", "leave"),
    ("//text", "send text that starts with a /"),
];

/// What a user name may be, in words, for prompts and errors.
pub const NAME_RULES: &str =
    "a name is 1 to 32 bytes, with no spaces, commas or control characters";

/// Parses one line of input (without its newline).
///
/// # Errors
/// An unknown `/command`, a command without its arguments, or a recipient that cannot be a
/// user name.
pub fn parse(line: &str) -> Result<UserCommand, InputError> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Ok(UserCommand::Nothing);
    }
    if let Some(rest) = line.strip_prefix("//") {
        return Ok(UserCommand::Say(format!("/{rest}")));
    }
    if let Some(rest) = line.strip_prefix('@') {
        let (to, text) = split_word(rest);
        if to.is_empty() {
            return Err(InputError::Usage("@user message"));
        }
        let to = peer(to)?;
        return Ok(match text {
            Some(text) if !text.is_empty() => UserCommand::Msg {
                to,
                text: text.to_owned(),
            },
            _ => UserCommand::Query(to),
        });
    }
    match line.trim_end() {
        "!who" => return Ok(UserCommand::Who),
        "!quit" => return Ok(UserCommand::Quit),
        _ => {}
    }
    let Some(slash) = line.strip_prefix('/') else {
        return Ok(UserCommand::Say(line.to_owned()));
    };
    let (word, rest) = split_word(slash);
    let rest = rest.unwrap_or_default();
    match word {
        "msg" | "m" => {
            let (to, text) = split_word(rest.trim_start());
            match (to, text) {
                ("", _) | (_, None | Some("")) => Err(InputError::Usage("/msg user message")),
                (to, Some(text)) => Ok(UserCommand::Msg {
                    to: peer(to)?,
                    text: text.to_owned(),
                }),
            }
        }
        "query" | "q" => match rest.trim() {
            "" => Err(InputError::Usage("/query user")),
            to => Ok(UserCommand::Query(peer(to)?)),
        },
        "close" => Ok(UserCommand::Close),
        "who" | "list" => Ok(UserCommand::Who),
        "quit" | "exit" => Ok(UserCommand::Quit),
        "help" | "?" => Ok(UserCommand::Help),
        // Never a password on the command line, where the screen and the history keep it.
        "register" | "password" | "unregister" if !rest.trim().is_empty() => {
            Err(InputError::PasswordArgument(format!("/{word}")))
        }
        "register" => Ok(UserCommand::Register),
        "password" => Ok(UserCommand::ChangePassword),
        "unregister" => Ok(UserCommand::Unregister),
        "join" | "j" => match rest.trim() {
            "" => Err(InputError::Usage("/join #room")),
            r => Ok(UserCommand::Join(room(r)?)),
        },
        "part" | "leave" => match rest.trim() {
            "" => Ok(UserCommand::Part(None)),
            r => Ok(UserCommand::Part(Some(room(r)?))),
        },
        "rooms" => Ok(UserCommand::Rooms),
        "members" | "names" => match rest.trim() {
            "" => Ok(UserCommand::Members(None)),
            r => Ok(UserCommand::Members(Some(room(r)?))),
        },
        "topic" => Ok(UserCommand::Topic(match rest.trim() {
            "" => TopicArg::Show,
            "-" => TopicArg::Clear,
            _ => TopicArg::Set(rest.trim_start().to_owned()),
        })),
        "kick" => match rest.trim() {
            "" => Err(InputError::Usage("/kick name")),
            n => Ok(UserCommand::Kick(peer(n)?)),
        },
        _ => Err(InputError::UnknownCommand(format!("/{word}"))),
    }
}

/// Whether `line` is one of the account commands, which must never be remembered: typed with
/// an argument by mistake, that argument is a password.
pub fn mentions_password(line: &str) -> bool {
    let word = line.trim_start().split(' ').next().unwrap_or_default();
    matches!(word, "/register" | "/password" | "/unregister" | "/login")
}

/// A recipient: the protocol's character rules, but no length limit, since another server may
/// allow longer names than ours and will say so itself.
fn peer(name: &str) -> Result<Username, InputError> {
    Username::parse_with_limit(name, usize::MAX).map_err(|err| InputError::BadName {
        name: name.to_owned(),
        err,
    })
}

/// A room: `#` and the name rules; the length is left to the server, as for user names.
fn room(name: &str) -> Result<RoomName, InputError> {
    RoomName::parse_with_limit(name, usize::MAX).map_err(|err| InputError::BadRoom {
        name: name.to_owned(),
        err,
    })
}

fn split_word(s: &str) -> (&str, Option<&str>) {
    match s.split_once(' ') {
        Some((word, rest)) => (word, Some(rest)),
        None => (s, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Username {
        Username::parse(s).expect("test name is valid")
    }

    fn msg(to: &str, text: &str) -> Result<UserCommand, InputError> {
        Ok(UserCommand::Msg {
            to: name(to),
            text: text.to_owned(),
        })
    }

    #[test]
    fn table() {
        use UserCommand::*;
        let cases: Vec<(&str, Result<UserCommand, InputError>)> = vec![
            ("", Ok(Nothing)),
            ("   ", Ok(Nothing)),
            ("hello there", Ok(Say("hello there".into()))),
            (
                "  leading spaces kept",
                Ok(Say("  leading spaces kept".into())),
            ),
            ("@bob hi", msg("bob", "hi")),
            ("@bob  two  spaces ", msg("bob", " two  spaces ")),
            ("@bob 👋 日本", msg("bob", "👋 日本")),
            ("@bob", Ok(Query(name("bob")))),
            ("@bob ", Ok(Query(name("bob")))),
            ("@", Err(InputError::Usage("@user message"))),
            ("@ hi", Err(InputError::Usage("@user message"))),
            (
                "@a,b hi",
                Err(InputError::BadName {
                    name: "a,b".into(),
                    err: NameError::Comma,
                }),
            ),
            ("!who", Ok(Who)),
            ("!quit", Ok(Quit)),
            ("!quit ", Ok(Quit)),
            ("!other", Ok(Say("!other".into()))),
            ("/who", Ok(Who)),
            ("/quit", Ok(Quit)),
            ("/help", Ok(Help)),
            ("/close", Ok(Close)),
            ("/msg bob hi there", msg("bob", "hi there")),
            ("/msg  bob hi", msg("bob", "hi")),
            ("/msg bob", Err(InputError::Usage("/msg user message"))),
            ("/msg", Err(InputError::Usage("/msg user message"))),
            ("/query carol", Ok(Query(name("carol")))),
            ("/query carol ", Ok(Query(name("carol")))),
            ("/query", Err(InputError::Usage("/query user"))),
            ("/frob x", Err(InputError::UnknownCommand("/frob".into()))),
            ("/register", Ok(Register)),
            ("/password ", Ok(ChangePassword)),
            ("/unregister", Ok(Unregister)),
            (
                "/register hunter22",
                Err(InputError::PasswordArgument("/register".into())),
            ),
            ("//not a command", Ok(Say("/not a command".into()))),
            ("/join #r", Ok(Join(RoomName::parse("#r").expect("valid")))),
            ("/join", Err(InputError::Usage("/join #room"))),
            ("/part", Ok(Part(None))),
            (
                "/part #r",
                Ok(Part(Some(RoomName::parse("#r").expect("valid")))),
            ),
            ("/rooms", Ok(Rooms)),
            ("/members", Ok(Members(None))),
            ("/topic", Ok(Topic(TopicArg::Show))),
            ("/topic -", Ok(Topic(TopicArg::Clear))),
            (
                "/topic  a  topic",
                Ok(Topic(TopicArg::Set("a  topic".into()))),
            ),
            ("/kick bob", Ok(Kick(name("bob")))),
            ("/kick", Err(InputError::Usage("/kick name"))),
            ("text\r", Ok(Say("text".into()))),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line), want, "input {line:?}");
        }
    }

    #[test]
    fn long_recipient_names_are_left_to_the_server() {
        let long = "x".repeat(100);
        assert!(matches!(
            parse(&format!("@{long} hi")),
            Ok(UserCommand::Msg { .. })
        ));
    }
}
