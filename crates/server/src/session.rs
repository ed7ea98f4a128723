//! The per-connection protocol machine, without I/O.
//!
//! A [`Session`] is fed each line (or overlong-line report) with the current time and answers
//! with a [`Step`]: a reply to send, or an operation for the hub whose outcome is fed back with
//! [`Session::handle_login`] / [`Session::handle_delivery`]. It also owns the connection's
//! deadlines ([`Session::poll_timeout`], [`Session::handle_timeout`]), the `keepalive`
//! extension's server pings included: a timeout says "send this `PING`" or "close". Because it
//! never touches a socket or a clock, every rule of `docs/protocol.md` is tested here directly.

use std::time::{Duration, Instant};

use tcpchat_proto::{
    Command, Extension, ExtensionSet, Password, Reply, Request, RequestError, Stream, Username,
};

use crate::hub::{Delivery, LoginError};
use crate::rooms::{RoomError, RoomRequest};

/// What the connection should do with one line.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// Send this reply; nothing else happens. It may borrow from the line (`PONG <token>`).
    Reply(Reply<'a>),
    /// Nothing to send (a client's `PONG`: it answers, it does not ask).
    Nothing,
    /// Ask the hub to log this name in, then call [`Session::handle_login`].
    Login(Username),
    /// Ask the hub who is online and send `LIST-OK`.
    List,
    /// Ask the hub who is online and send `WHO-OK` (the previous generation's `LIST`).
    Who,
    /// Ask the hub to deliver `body` to `to`, then call [`Session::handle_delivery`].
    Send { to: Username, body: &'a str },
    /// `LOGIN` (accounts): check the password, then take the name over (closing an earlier
    /// session of the account), then call [`Session::handle_login`].
    AccountLogin {
        name: Username,
        password: Password<'a>,
    },
    /// `REGISTER`: make the logged-in name an account; the answer is the reply.
    Register(Password<'a>),
    /// `PASSWORD`: change the logged-in account's password; the answer is the reply.
    ChangePassword {
        old: Password<'a>,
        new: Password<'a>,
    },
    /// `UNREGISTER`: delete the logged-in account; the answer is the reply.
    Unregister(Password<'a>),
    /// Ask the hub to do this room request (it queues the answer), then call
    /// [`Session::handle_room`].
    Room(RoomRequest<'a>),
    /// `HISTORY`: read a page of `stream` (who may read it is the connection's to check)
    /// and send it.
    History {
        stream: Stream,
        before: Option<u64>,
        count: u32,
    },
}

/// Why a session gave up on its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    /// Connected but never logged in within the handshake timeout.
    Handshake,
    /// Logged in but silent for longer than the idle timeout.
    Idle,
    /// A keepalive connection that answered nothing to the server's `PING` within the ping
    /// timeout (`docs/protocol.md`, "keepalive").
    Silent,
}

/// What [`Session::handle_timeout`] asks the connection to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// Send `PING <token>`; the session now waits for any line.
    Ping(String),
    /// Close the connection, without a line.
    Close(Timeout),
}

/// The server's side of the `keepalive` extension: ping after `interval` of silence, close
/// `timeout` after that ping if still silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingSettings {
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for PingSettings {
    /// 60 s and 60 s: a dead peer is found within 120 s (`docs/protocol.md`).
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(60),
        }
    }
}

/// What the connection does after a login attempt.
#[derive(Debug, PartialEq, Eq)]
pub struct LoginStep {
    pub reply: Reply<'static>,
    /// Close the connection after sending `reply` (`BUSY`).
    pub close: bool,
}

#[derive(Debug)]
enum State {
    AwaitingLogin,
    LoggedIn(Username),
}

/// The extensions this server build serves. Offering one outside this set would promise lines
/// the session cannot answer, so the connection offers what is configured *and* served.
pub const SERVED: ExtensionSet = ExtensionSet::NONE
    .with(Extension::Keepalive)
    .with(Extension::Presence)
    .with(Extension::Accounts)
    .with(Extension::Rooms)
    .with(Extension::History);

/// What a server configured to offer `configured` offers: the part this build [`SERVED`],
/// without `rooms` on a hub that does not serve them ([`crate::Hub::serves_rooms`]).
pub fn offered(configured: ExtensionSet, hub_serves_rooms: bool) -> ExtensionSet {
    configured
        .iter()
        .filter(|e| SERVED.contains(*e))
        .filter(|e| *e != Extension::Rooms || hub_serves_rooms)
        .collect()
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Session {
    state: State,
    /// What this server offers; empty makes it a classic server (`EXT` is unknown).
    offered: ExtensionSet,
    /// `None` until the client sends `EXT`; then what it was answered. A connection that
    /// never asks stays classic, byte for byte.
    negotiated: Option<ExtensionSet>,
    connected_at: Instant,
    last_activity: Instant,
    handshake_timeout: Duration,
    idle_timeout: Option<Duration>,
    pings: PingSettings,
    /// When the last line of any kind arrived: the keepalive clock, which unlike
    /// `last_activity` every line moves (`PING`, `PONG` and refused lines too).
    last_heard: Instant,
    /// A server `PING` is out and unanswered (sent at `last_heard + pings.interval`).
    pinged: bool,
    /// Which generations the server speaks, and the one this connection is answered in.
    policy: crate::config::GenerationPolicy,
    generation: tcpchat_proto::Generation,
    /// Longest topic accepted (`rooms`); a longer one is a body error.
    max_topic: usize,
    /// `history`: the client's `RESUME` position (epoch, offset), given before login and
    /// taken by the connection at login; `resumed` once one was given (at most once).
    resume: Option<(String, u64)>,
    resumed: bool,
}

impl Session {
    /// A session for a connection accepted at `now`, on a server offering `offered` to it.
    pub fn new(
        now: Instant,
        handshake_timeout: Duration,
        idle_timeout: Option<Duration>,
        offered: ExtensionSet,
    ) -> Self {
        Self {
            state: State::AwaitingLogin,
            offered,
            negotiated: None,
            connected_at: now,
            last_activity: now,
            handshake_timeout,
            idle_timeout,
            pings: PingSettings::default(),
            last_heard: now,
            pinged: false,
            policy: crate::config::GenerationPolicy::Auto,
            generation: tcpchat_proto::Generation::Current,
            max_topic: crate::rooms::RoomLimits::default().topic_bytes,
            resume: None,
            resumed: false,
        }
    }

    /// The `RESUME` position the client gave before login, taken once (by the login).
    pub fn take_resume(&mut self) -> Option<(String, u64)> {
        self.resume.take()
    }

    /// The same session with this topic limit (used only if the connection negotiates
    /// `rooms`).
    #[must_use]
    pub fn with_max_topic(mut self, bytes: usize) -> Self {
        self.max_topic = bytes;
        self
    }

    /// The same session speaking the protocol generations `policy` allows: with `Old`, the
    /// previous generation from the start.
    #[must_use]
    pub fn with_generation(mut self, policy: crate::config::GenerationPolicy) -> Self {
        self.policy = policy;
        if policy == crate::config::GenerationPolicy::Old {
            self.generation = tcpchat_proto::Generation::Old;
        }
        self
    }

    /// The generation this connection is answered in.
    pub fn generation(&self) -> tcpchat_proto::Generation {
        self.generation
    }

    /// The same session with these server ping settings (used only if the connection
    /// negotiates `keepalive`).
    #[must_use]
    pub fn with_pings(mut self, pings: PingSettings) -> Self {
        self.pings = pings;
        self
    }

    /// The logged-in name, if any.
    pub fn name(&self) -> Option<&Username> {
        match &self.state {
            State::LoggedIn(name) => Some(name),
            State::AwaitingLogin => None,
        }
    }

    /// The extensions this connection negotiated; empty for a classic connection.
    pub fn extensions(&self) -> ExtensionSet {
        self.negotiated.unwrap_or(ExtensionSet::NONE)
    }

    /// Whether this connection negotiated `ext`.
    pub fn has(&self, ext: Extension) -> bool {
        self.extensions().contains(ext)
    }

    /// Decides what one complete line means in the current state.
    ///
    /// Before login only `HELLO-FROM` is allowed; after it, `HELLO-FROM` is not. A command
    /// that is not allowed now is a header error whatever its body; a command allowed now
    /// with a bad body is a body error.
    ///
    /// Only a request that is acted on counts as activity for the idle timeout: a line
    /// answered `BAD-RQST-HDR` / `BAD-RQST-BODY` does not move it, as it does not move the
    /// login timeout, so junk cannot hold a slot forever (`docs/protocol.md`).
    pub fn handle_line<'a>(&mut self, line: &'a [u8], now: Instant) -> Step<'a> {
        self.heard(now);
        let parsed = Request::parse(line);
        let command = match &parsed {
            Ok(request) => Some(request.command()),
            Err(e) => e.command(),
        };
        if !self.allows(command) {
            return Step::Reply(Reply::BadRqstHdr);
        }
        let step = match parsed {
            Ok(Request::HelloFrom(name)) => Step::Login(name),
            Ok(Request::List) => Step::List,
            // From its first `WHO` on, the connection is answered in the previous
            // generation (`docs/protocol.md`, "Protocol generations").
            Ok(Request::Who) => {
                self.generation = tcpchat_proto::Generation::Old;
                Step::Who
            }
            Ok(Request::Send { to, body }) => Step::Send { to, body },
            Ok(Request::Ext(asked)) => {
                let (chosen, _) = self.offered.answer(&asked);
                self.negotiated = Some(chosen);
                // Spelled from the known names, so the reply borrows nothing from the line.
                let names = asked
                    .iter()
                    .filter_map(|n| Extension::from_name(n))
                    .filter(|e| chosen.contains(*e))
                    .fold(Vec::new(), |mut names, e| {
                        if !names.contains(&e.name()) {
                            names.push(e.name());
                        }
                        names
                    });
                return Step::Reply(Reply::ExtOk(names));
            }
            // Answered at once, in order with the other replies; neither counts as activity
            // for the idle timeout, which measures what a user does.
            Ok(Request::Ping(token)) => return Step::Reply(Reply::Pong(token)),
            Ok(Request::Pong(_)) => return Step::Nothing,
            Ok(Request::Login { name, password }) => Step::AccountLogin { name, password },
            Ok(Request::Register(password)) => Step::Register(password),
            Ok(Request::ChangePassword { old, new }) => Step::ChangePassword { old, new },
            Ok(Request::Unregister(password)) => Step::Unregister(password),
            Ok(Request::Join(room)) => Step::Room(RoomRequest::Join(room)),
            Ok(Request::Part(room)) => Step::Room(RoomRequest::Part(room)),
            Ok(Request::Rooms) => Step::Room(RoomRequest::Rooms),
            Ok(Request::Members(room)) => Step::Room(RoomRequest::Members(room)),
            Ok(Request::Say { room, body }) => Step::Room(RoomRequest::Say { room, body }),
            Ok(Request::Topic { room, text }) => {
                if text.is_some_and(|t| t.len() > self.max_topic) {
                    return Step::Reply(Reply::BadRqstBody);
                }
                Step::Room(RoomRequest::Topic { room, text })
            }
            Ok(Request::Kick { room, name }) => Step::Room(RoomRequest::Kick { room, name }),
            Ok(Request::History {
                stream,
                before,
                count,
            }) => Step::History {
                stream,
                before,
                count,
            },
            // Kept for the login; it has no reply of its own (`docs/protocol.md`, "Resume").
            Ok(Request::Resume { epoch, offset }) => {
                self.resume = Some((epoch.to_owned(), offset));
                self.resumed = true;
                return Step::Nothing;
            }
            Err(RequestError::UnknownCommand) => return Step::Reply(Reply::BadRqstHdr),
            Err(_) => return Step::Reply(Reply::BadRqstBody),
        };
        self.last_activity = now;
        step
    }

    /// The reply to a line that exceeded the line limit, from its first bytes: a body error
    /// if it starts with a command allowed now (an overlong name or message), else a header
    /// error. The line itself is gone and is never acted on, so it is not activity either;
    /// it is still a sign of life for keepalive.
    pub fn handle_overlong(&mut self, head: &[u8], now: Instant) -> Reply<'static> {
        self.heard(now);
        if self.allows(Command::of_line(head)) {
            Reply::BadRqstBody
        } else {
            Reply::BadRqstHdr
        }
    }

    /// Whether `command` is understood and allowed now. An extension's command is understood
    /// only on a connection that negotiated the extension; anywhere else it is as unknown as
    /// on a classic server.
    fn allows(&self, command: Option<Command>) -> bool {
        let Some(command) = command else {
            return false;
        };
        if let Some(ext) = command.extension() {
            if !self.has(ext) {
                return false;
            }
        }
        let logged_in = matches!(self.state, State::LoggedIn(_));
        match command {
            Command::HelloFrom | Command::Login => !logged_in,
            Command::Send => logged_in,
            Command::List => logged_in && self.policy != crate::config::GenerationPolicy::Old,
            Command::Who => logged_in && self.policy != crate::config::GenerationPolicy::Current,
            Command::Register | Command::Password | Command::Unregister => logged_in,
            Command::Join
            | Command::Part
            | Command::Rooms
            | Command::Members
            | Command::Say
            | Command::Topic
            | Command::Kick => logged_in,
            Command::Ping | Command::Pong => true,
            Command::History => logged_in,
            Command::Resume => !logged_in && !self.resumed,
            Command::Ext => !logged_in && self.negotiated.is_none() && !self.offered.is_empty(),
        }
    }

    /// Records the hub's answer to [`Step::Login`] and says what to reply.
    pub fn handle_login(&mut self, name: Username, outcome: Result<(), LoginError>) -> LoginStep {
        match outcome {
            Ok(()) => {
                let reply = Reply::Hello(name.clone());
                self.state = State::LoggedIn(name);
                LoginStep {
                    reply,
                    close: false,
                }
            }
            // The connection stays open: the client may try another name.
            Err(LoginError::InUse) => LoginStep {
                reply: Reply::InUse,
                close: false,
            },
            // A classic client cannot tell a registered name from a taken one, and needs not.
            Err(LoginError::Registered) => LoginStep {
                reply: if self.has(Extension::Accounts) {
                    Reply::NameRegistered
                } else {
                    Reply::InUse
                },
                close: false,
            },
            Err(LoginError::Unavailable) => LoginStep {
                reply: Reply::Busy,
                close: true,
            },
        }
    }

    /// The reply to [`Step::Send`] given what the hub did with the message.
    pub fn handle_delivery(&self, outcome: Delivery) -> Reply<'static> {
        match outcome {
            Delivery::Delivered => Reply::SendOk,
            Delivery::NoSuchUser => self.generation.bad_dest(),
        }
    }

    /// The reply to [`Step::Room`] given the hub's outcome: nothing when the hub queued the
    /// answer itself (the room's own line, in the room's order), else the refusal.
    pub fn handle_room(&self, outcome: Result<(), RoomError>) -> Option<Reply<'static>> {
        match outcome {
            Ok(()) => None,
            Err(RoomError::NotMember) => Some(Reply::NotMember),
            Err(RoomError::NotOwner) => Some(Reply::NotOwner),
            Err(RoomError::RoomLimit) => Some(Reply::RoomLimit),
            Err(RoomError::RoomFull) => Some(Reply::RoomFull),
            Err(RoomError::NoSuchMember) => Some(Reply::BadDestUser),
            Err(RoomError::Unavailable) => Some(Reply::RoomUnavailable),
            // Not offered by such a hub, so not reachable; unknown, as on a classic server.
            Err(RoomError::Unserved) => Some(Reply::BadRqstHdr),
        }
    }

    /// Any line is a sign of life: it answers an outstanding server `PING`.
    fn heard(&mut self, now: Instant) {
        self.last_heard = now;
        self.pinged = false;
    }

    /// The deadline that closes the connection, without keepalive.
    fn close_deadline(&self) -> Option<(Instant, Timeout)> {
        match self.state {
            State::AwaitingLogin => Some((
                self.connected_at + self.handshake_timeout,
                Timeout::Handshake,
            )),
            State::LoggedIn(_) => self
                .idle_timeout
                .map(|t| (self.last_activity + t, Timeout::Idle)),
        }
    }

    /// The keepalive deadline, on a connection that negotiated it: the next server `PING`,
    /// or, with one out, the close. `None` for a classic connection: never pinged.
    fn ping_deadline(&self) -> Option<Instant> {
        if !self.has(Extension::Keepalive) {
            return None;
        }
        let ping_at = self.last_heard + self.pings.interval;
        Some(if self.pinged {
            ping_at + self.pings.timeout
        } else {
            ping_at
        })
    }

    /// The next instant at which [`Session::handle_timeout`] should be called, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let close = self.close_deadline().map(|(at, _)| at);
        match (close, self.ping_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Checks the deadlines at `now`: `None` (nothing is due), [`Wake::Ping`] (send it and
    /// carry on) or [`Wake::Close`].
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Wake> {
        if let Some((at, why)) = self.close_deadline() {
            if now >= at {
                return Some(Wake::Close(why));
            }
        }
        let at = self.ping_deadline()?;
        if now < at {
            return None;
        }
        if self.pinged {
            return Some(Wake::Close(Timeout::Silent));
        }
        self.pinged = true;
        // Milliseconds since the connection opened: distinct for every ping of a connection
        // (they are at least a ping interval apart; only an interval under a millisecond could
        // repeat one, harmlessly), and no counter to keep.
        let token = now.saturating_duration_since(self.connected_at).as_millis();
        Some(Wake::Ping(token.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HANDSHAKE: Duration = Duration::from_secs(30);

    fn name(s: &str) -> Username {
        Username::parse(s).expect("valid test name")
    }

    fn extended(now: Instant, offered: ExtensionSet) -> Session {
        Session::new(now, HANDSHAKE, None, offered)
    }

    #[test]
    fn a_classic_server_answers_ext_as_an_unknown_command() {
        let now = Instant::now();
        let mut s = extended(now, ExtensionSet::NONE);
        assert_eq!(
            s.handle_line(b"EXT keepalive", now),
            Step::Reply(Reply::BadRqstHdr)
        );
        assert_eq!(s.extensions(), ExtensionSet::NONE);
    }

    #[test]
    fn ext_is_answered_with_the_known_offered_subset_in_the_clients_order() {
        let now = Instant::now();
        let mut offered = ExtensionSet::all();
        offered.remove(Extension::Accounts);
        let mut s = extended(now, offered);
        assert_eq!(
            s.handle_line(b"EXT resume,presence,accounts,keepalive,presence", now),
            Step::Reply(Reply::ExtOk(vec!["presence", "keepalive"]))
        );
        assert!(s.has(Extension::Presence) && s.has(Extension::Keepalive));
        assert!(!s.has(Extension::Accounts));
        // Once per connection.
        assert_eq!(
            s.handle_line(b"EXT keepalive", now),
            Step::Reply(Reply::BadRqstHdr)
        );
    }

    #[test]
    fn a_malformed_ext_is_a_body_error_and_leaves_the_connection_classic() {
        let now = Instant::now();
        let mut s = extended(now, ExtensionSet::all());
        for bad in [&b"EXT"[..], b"EXT ", b"EXT a,,b", b"EXT Keepalive"] {
            assert_eq!(s.handle_line(bad, now), Step::Reply(Reply::BadRqstBody));
            assert_eq!(s.extensions(), ExtensionSet::NONE);
        }
        // Nothing known: an empty answer, and the connection is classic from then on.
        assert_eq!(
            s.handle_line(b"EXT resume", now),
            Step::Reply(Reply::ExtOk(vec![]))
        );
        assert_eq!(s.handle_line(b"PING", now), Step::Reply(Reply::BadRqstHdr));
    }

    #[test]
    fn history_lines_become_steps_where_negotiated() {
        let now = Instant::now();
        let mut s = extended(now, ExtensionSet::all());
        assert_eq!(
            s.handle_line(b"EXT accounts,history", now),
            Step::Reply(Reply::ExtOk(vec!["accounts", "history"]))
        );
        assert_eq!(
            s.handle_line(b"HISTORY @ 5", now),
            Step::Reply(Reply::BadRqstHdr),
            "only once logged in"
        );
        assert_eq!(
            s.handle_line(b"RESUME ab 3", now),
            Step::Nothing,
            "kept, no reply"
        );
        assert_eq!(
            s.handle_line(b"RESUME ab 4", now),
            Step::Reply(Reply::BadRqstHdr),
            "once"
        );
        s.handle_login(name("me"), Ok(()));
        assert_eq!(s.take_resume(), Some(("ab".to_owned(), 3)));
        assert_eq!(s.take_resume(), None);
        assert_eq!(
            s.handle_line(b"HISTORY @ BEFORE 9 5", now),
            Step::History {
                stream: Stream::Direct,
                before: Some(9),
                count: 5
            }
        );
        assert_eq!(
            s.handle_line(b"HISTORY @ 0", now),
            Step::Reply(Reply::BadRqstBody)
        );
        assert_eq!(
            s.handle_line(b"RESUME ab 3", now),
            Step::Reply(Reply::BadRqstHdr),
            "not after login"
        );
        // Elsewhere both are unknown commands.
        let mut classic = logged_in(now);
        for line in [&b"HISTORY @ 5"[..], b"RESUME ab 3"] {
            assert_eq!(
                classic.handle_line(line, now),
                Step::Reply(Reply::BadRqstHdr)
            );
        }
    }

    #[test]
    fn extension_lines_are_unknown_where_not_negotiated() {
        let now = Instant::now();
        let mut s = extended(now, ExtensionSet::all());
        for line in [
            &b"PING"[..],
            b"PING a b",
            b"PONG 1",
            b"LOGIN alice correct-horse",
            b"LOGIN alice x",
            b"REGISTER correct-horse",
        ] {
            assert_eq!(
                s.handle_line(line, now),
                Step::Reply(Reply::BadRqstHdr),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(s.handle_overlong(b"PING xxxx", now), Reply::BadRqstHdr);
        assert_eq!(s.handle_overlong(b"EXT keepalive", now), Reply::BadRqstBody);
    }

    #[test]
    fn ext_after_login_is_not_allowed() {
        let now = Instant::now();
        let mut s = extended(now, ExtensionSet::all());
        assert_eq!(
            s.handle_line(b"HELLO-FROM me", now),
            Step::Login(name("me"))
        );
        s.handle_login(name("me"), Ok(()));
        assert_eq!(
            s.handle_line(b"EXT keepalive", now),
            Step::Reply(Reply::BadRqstHdr)
        );
    }

    #[test]
    fn accounts_lines_become_steps_where_negotiated() {
        let now = Instant::now();
        let mut s = extended(now, ExtensionSet::all());
        assert_eq!(
            s.handle_line(b"EXT accounts", now),
            Step::Reply(Reply::ExtOk(vec!["accounts"]))
        );
        let Step::AccountLogin { name: n, password } =
            s.handle_line(b"LOGIN alice correct-horse", now)
        else {
            panic!("LOGIN is a step before login");
        };
        assert_eq!((n, password.expose()), (name("alice"), "correct-horse"));
        assert_eq!(
            s.handle_line(b"LOGIN alice short", now),
            Step::Reply(Reply::BadRqstBody)
        );
        assert_eq!(
            s.handle_line(b"REGISTER correct-horse", now),
            Step::Reply(Reply::BadRqstHdr),
            "only once logged in"
        );
        // A registered name: NAME-REGISTERED here, where the client can act on it.
        let step = s.handle_login(name("alice"), Err(LoginError::Registered));
        assert_eq!(step.reply, Reply::NameRegistered);
        assert_eq!(s.name(), None);
        s.handle_login(name("alice"), Ok(()));
        assert!(matches!(
            s.handle_line(b"REGISTER correct-horse", now),
            Step::Register(p) if p.expose() == "correct-horse"
        ));
        assert!(matches!(
            s.handle_line(b"PASSWORD correct-horse battery-staple", now),
            Step::ChangePassword { old, new }
                if old.expose() == "correct-horse" && new.expose() == "battery-staple"
        ));
        assert!(matches!(
            s.handle_line(b"UNREGISTER correct-horse", now),
            Step::Unregister(_)
        ));
        assert_eq!(
            s.handle_line(b"LOGIN alice correct-horse", now),
            Step::Reply(Reply::BadRqstHdr),
            "not after login"
        );
    }

    #[test]
    fn a_registered_name_is_simply_in_use_to_a_classic_client() {
        let now = Instant::now();
        let mut s = extended(now, ExtensionSet::all());
        let step = s.handle_login(name("alice"), Err(LoginError::Registered));
        assert_eq!(
            step,
            LoginStep {
                reply: Reply::InUse,
                close: false
            }
        );
        // Negotiated without accounts: the same.
        let mut s = extended(now, ExtensionSet::all());
        s.handle_line(b"EXT keepalive", now);
        assert_eq!(
            s.handle_login(name("alice"), Err(LoginError::Registered))
                .reply,
            Reply::InUse
        );
    }

    fn logged_in(now: Instant) -> Session {
        let mut s = Session::new(now, HANDSHAKE, None, ExtensionSet::NONE);
        assert_eq!(
            s.handle_line(b"HELLO-FROM me", now),
            Step::Login(name("me"))
        );
        s.handle_login(name("me"), Ok(()));
        s
    }

    #[test]
    fn before_login() {
        let now = Instant::now();
        let cases: &[(&[u8], Step<'_>)] = &[
            (b"HELLO-FROM alice", Step::Login(name("alice"))),
            (b"HELLO-FROM", Step::Reply(Reply::BadRqstBody)),
            (b"HELLO-FROM a b", Step::Reply(Reply::BadRqstBody)),
            (b"HELLO-FROM a,b", Step::Reply(Reply::BadRqstBody)),
            (b"LIST", Step::Reply(Reply::BadRqstHdr)),
            (b"SEND bob hi", Step::Reply(Reply::BadRqstHdr)),
            (b"SEND", Step::Reply(Reply::BadRqstHdr)),
            (b"", Step::Reply(Reply::BadRqstHdr)),
            (b"hello-from alice", Step::Reply(Reply::BadRqstHdr)),
            (b"\xff", Step::Reply(Reply::BadRqstHdr)),
        ];
        for (line, want) in cases {
            let mut s = Session::new(now, HANDSHAKE, None, ExtensionSet::NONE);
            assert_eq!(
                &s.handle_line(line, now),
                want,
                "{:?}",
                String::from_utf8_lossy(line)
            );
            assert_eq!(s.name(), None);
        }
    }

    #[test]
    fn after_login() {
        let now = Instant::now();
        let cases: &[(&[u8], Step<'_>)] = &[
            (b"LIST", Step::List),
            (b"LIST x", Step::Reply(Reply::BadRqstBody)),
            (
                b"SEND bob hi  there",
                Step::Send {
                    to: name("bob"),
                    body: "hi  there",
                },
            ),
            (
                b"SEND me x",
                Step::Send {
                    to: name("me"),
                    body: "x",
                },
            ),
            (b"SEND", Step::Reply(Reply::BadRqstBody)),
            (b"SEND bob", Step::Reply(Reply::BadRqstBody)),
            (b"SEND bob ", Step::Reply(Reply::BadRqstBody)),
            (b"SEND bob \xc3\x28", Step::Reply(Reply::BadRqstBody)),
            (b"HELLO-FROM other", Step::Reply(Reply::BadRqstHdr)),
            (b"HELLO-FROM", Step::Reply(Reply::BadRqstHdr)),
            (b"", Step::Reply(Reply::BadRqstHdr)),
            (b"WHO", Step::Who),
            (b"send bob hi", Step::Reply(Reply::BadRqstHdr)),
        ];
        for (line, want) in cases {
            let mut s = logged_in(now);
            assert_eq!(
                &s.handle_line(line, now),
                want,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn overlong_lines() {
        let now = Instant::now();
        let mut s = Session::new(now, HANDSHAKE, None, ExtensionSet::NONE);
        assert_eq!(
            s.handle_overlong(b"HELLO-FROM xxxxx", now),
            Reply::BadRqstBody
        );
        assert_eq!(
            s.handle_overlong(b"SEND bob xxxxxxx", now),
            Reply::BadRqstHdr
        );
        let mut s = logged_in(now);
        assert_eq!(
            s.handle_overlong(b"SEND bob xxxxxxx", now),
            Reply::BadRqstBody
        );
        assert_eq!(
            s.handle_overlong(b"HELLO-FROM xxxxx", now),
            Reply::BadRqstHdr
        );
        assert_eq!(
            s.handle_overlong(b"xxxxxxxxxxxxxxxx", now),
            Reply::BadRqstHdr
        );
    }

    #[test]
    fn login_outcomes() {
        let now = Instant::now();
        let mut s = Session::new(now, HANDSHAKE, None, ExtensionSet::NONE);
        let step = s.handle_login(name("bob"), Err(LoginError::InUse));
        assert_eq!(
            step,
            LoginStep {
                reply: Reply::InUse,
                close: false
            }
        );
        assert_eq!(
            s.name(),
            None,
            "a taken name leaves the session able to retry"
        );
        let step = s.handle_login(name("bob"), Err(LoginError::Unavailable));
        assert_eq!(
            step,
            LoginStep {
                reply: Reply::Busy,
                close: true
            }
        );
        let step = s.handle_login(name("bobby"), Ok(()));
        assert_eq!(step.reply, Reply::Hello(name("bobby")));
        assert_eq!(s.name(), Some(&name("bobby")));
    }

    #[test]
    fn delivery_outcomes() {
        let s = logged_in(Instant::now());
        assert_eq!(s.handle_delivery(Delivery::Delivered), Reply::SendOk);
        assert_eq!(s.handle_delivery(Delivery::NoSuchUser), Reply::BadDestUser);
    }

    #[test]
    fn handshake_deadline() {
        let t0 = Instant::now();
        let mut s = Session::new(t0, HANDSHAKE, None, ExtensionSet::NONE);
        assert_eq!(s.poll_timeout(), Some(t0 + HANDSHAKE));
        // Activity does not extend the handshake: junk lines cannot hold a slot forever.
        s.handle_line(b"LIST", t0 + Duration::from_secs(29));
        assert_eq!(s.handle_timeout(t0 + Duration::from_secs(29)), None);
        assert_eq!(
            s.handle_timeout(t0 + HANDSHAKE),
            Some(Wake::Close(Timeout::Handshake))
        );
    }

    #[test]
    fn no_deadline_after_login_without_idle_timeout() {
        let s = logged_in(Instant::now());
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn idle_deadline_moves_with_activity() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(100);
        let mut s = Session::new(t0, HANDSHAKE, Some(idle), ExtensionSet::NONE);
        s.handle_line(b"HELLO-FROM me", t0);
        s.handle_login(name("me"), Ok(()));
        let t1 = t0 + Duration::from_secs(90);
        s.handle_line(b"LIST", t1);
        assert_eq!(
            s.handle_timeout(t0 + idle),
            None,
            "activity at t1 moved the deadline"
        );
        assert_eq!(s.poll_timeout(), Some(t1 + idle));
        assert_eq!(
            s.handle_timeout(t1 + idle),
            Some(Wake::Close(Timeout::Idle))
        );
    }

    #[test]
    fn rejected_lines_are_not_activity() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(100);
        let mut s = Session::new(t0, HANDSHAKE, Some(idle), ExtensionSet::NONE);
        s.handle_line(b"HELLO-FROM me", t0);
        s.handle_login(name("me"), Ok(()));
        let t1 = t0 + Duration::from_secs(90);
        for junk in [&b"WHOM"[..], b"", b"LIST x", b"SEND", b"HELLO-FROM again"] {
            assert!(matches!(s.handle_line(junk, t1), Step::Reply(_)));
        }
        assert_eq!(
            s.handle_overlong(b"SEND bob xxxxxxx", t1),
            Reply::BadRqstBody
        );
        assert_eq!(
            s.poll_timeout(),
            Some(t0 + idle),
            "junk did not move the deadline"
        );
        assert_eq!(
            s.handle_timeout(t0 + idle),
            Some(Wake::Close(Timeout::Idle))
        );
        // A request that is acted on does, whatever its outcome (BAD-DEST-USER included).
        assert!(matches!(
            s.handle_line(b"SEND nobody x", t1),
            Step::Send { .. }
        ));
        assert_eq!(s.poll_timeout(), Some(t1 + idle));
    }

    const PINGS: PingSettings = PingSettings {
        interval: Duration::from_secs(60),
        timeout: Duration::from_secs(20),
    };

    /// A keepalive connection, logged in as `me` at `t0`, with `idle` as its idle timeout.
    fn keepalive(t0: Instant, idle: Option<Duration>) -> Session {
        let mut s = Session::new(t0, HANDSHAKE, idle, ExtensionSet::all()).with_pings(PINGS);
        assert_eq!(
            s.handle_line(b"EXT keepalive", t0),
            Step::Reply(Reply::ExtOk(vec!["keepalive"]))
        );
        assert_eq!(s.handle_line(b"HELLO-FROM me", t0), Step::Login(name("me")));
        s.handle_login(name("me"), Ok(()));
        s
    }

    #[test]
    fn ping_is_answered_with_its_token_in_both_states() {
        let now = Instant::now();
        let mut s = Session::new(now, HANDSHAKE, None, ExtensionSet::all());
        s.handle_line(b"EXT keepalive", now);
        assert_eq!(
            s.handle_line(b"PING abc", now),
            Step::Reply(Reply::Pong(Some("abc")))
        );
        assert_eq!(s.handle_line(b"PING", now), Step::Reply(Reply::Pong(None)));
        assert_eq!(s.handle_line(b"PONG 7", now), Step::Nothing);
        assert_eq!(
            s.handle_line(b"PING a b", now),
            Step::Reply(Reply::BadRqstBody)
        );
        assert_eq!(
            s.handle_line(b"PONG \x01", now),
            Step::Reply(Reply::BadRqstBody)
        );
        assert_eq!(
            s.handle_line(b"HELLO-FROM me", now),
            Step::Login(name("me"))
        );
        s.handle_login(name("me"), Ok(()));
        assert_eq!(
            s.handle_line(b"PING ~!", now),
            Step::Reply(Reply::Pong(Some("~!")))
        );
        assert_eq!(s.handle_line(b"PONG", now), Step::Nothing);
    }

    #[test]
    fn a_silent_keepalive_connection_is_pinged_then_closed() {
        let t0 = Instant::now();
        let mut s = keepalive(t0, None);
        assert_eq!(s.poll_timeout(), Some(t0 + PINGS.interval));
        assert_eq!(
            s.handle_timeout(t0 + PINGS.interval - Duration::from_secs(1)),
            None
        );
        let t1 = t0 + PINGS.interval;
        assert_eq!(s.handle_timeout(t1), Some(Wake::Ping("60000".into())));
        assert_eq!(
            s.poll_timeout(),
            Some(t1 + PINGS.timeout),
            "one ping, then the close"
        );
        assert_eq!(s.handle_timeout(t1 + Duration::from_secs(1)), None);
        assert_eq!(
            s.handle_timeout(t1 + PINGS.timeout),
            Some(Wake::Close(Timeout::Silent))
        );
    }

    #[test]
    fn any_line_answers_a_ping() {
        let t0 = Instant::now();
        for line in [&b"PONG 60000"[..], b"PING", b"LIST", b"WHOM", b""] {
            let mut s = keepalive(t0, None);
            let t1 = t0 + PINGS.interval;
            assert!(matches!(s.handle_timeout(t1), Some(Wake::Ping(_))));
            let t2 = t1 + Duration::from_secs(5);
            s.handle_line(line, t2);
            assert_eq!(
                s.poll_timeout(),
                Some(t2 + PINGS.interval),
                "{}",
                String::from_utf8_lossy(line)
            );
            assert_eq!(s.handle_timeout(t1 + PINGS.timeout), None);
        }
        let mut s = keepalive(t0, None);
        let t1 = t0 + PINGS.interval;
        assert!(matches!(s.handle_timeout(t1), Some(Wake::Ping(_))));
        s.handle_overlong(b"SEND bob xxxx", t1);
        assert_eq!(
            s.handle_timeout(t1 + PINGS.timeout),
            None,
            "an overlong line is life too"
        );
    }

    #[test]
    fn ping_and_pong_are_not_activity_for_the_idle_timeout() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(100);
        let mut s = keepalive(t0, Some(idle));
        let t1 = t0 + Duration::from_secs(50);
        s.handle_line(b"PING", t1);
        s.handle_line(b"PONG x", t1);
        // Next: the ping at t1 + 60 s would come after the idle close at t0 + 100 s.
        assert_eq!(s.poll_timeout(), Some(t0 + idle));
        assert_eq!(
            s.handle_timeout(t0 + idle),
            Some(Wake::Close(Timeout::Idle))
        );
    }

    #[test]
    fn a_classic_connection_is_never_pinged() {
        let t0 = Instant::now();
        let mut s = logged_in(t0).with_pings(PINGS);
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(s.handle_timeout(t0 + Duration::from_secs(3600)), None);
        // Negotiating something else is not keepalive either.
        let mut s = Session::new(t0, HANDSHAKE, None, ExtensionSet::all()).with_pings(PINGS);
        s.handle_line(b"EXT presence", t0);
        s.handle_line(b"HELLO-FROM me", t0);
        s.handle_login(name("me"), Ok(()));
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(s.handle_line(b"PING", t0), Step::Reply(Reply::BadRqstHdr));
    }

    #[test]
    fn room_lines_need_the_extension_and_a_login() {
        let now = Instant::now();
        let room = |s| tcpchat_proto::RoomName::parse(s).expect("valid room");
        let mut s = Session::new(now, HANDSHAKE, None, ExtensionSet::all()).with_max_topic(5);
        s.handle_line(b"EXT rooms", now);
        assert_eq!(
            s.handle_line(b"JOIN #r", now),
            Step::Reply(Reply::BadRqstHdr)
        );
        s.handle_line(b"HELLO-FROM me", now);
        s.handle_login(name("me"), Ok(()));
        assert_eq!(
            s.handle_line(b"JOIN #r", now),
            Step::Room(RoomRequest::Join(room("#r")))
        );
        assert_eq!(
            s.handle_line(b"SAY #r  a ", now),
            Step::Room(RoomRequest::Say {
                room: room("#r"),
                body: " a "
            })
        );
        assert_eq!(
            s.handle_line(b"TOPIC #r 12345", now),
            Step::Room(RoomRequest::Topic {
                room: room("#r"),
                text: Some("12345")
            })
        );
        for bad in [&b"TOPIC #r 123456"[..], b"JOIN r", b"SAY #r", b"ROOMS x"] {
            assert_eq!(s.handle_line(bad, now), Step::Reply(Reply::BadRqstBody));
        }
        assert_eq!(s.handle_overlong(b"SAY #r xxxx", now), Reply::BadRqstBody);
        assert_eq!(
            s.handle_room(Err(RoomError::NotOwner)),
            Some(Reply::NotOwner)
        );
        assert_eq!(s.handle_room(Ok(())), None);
        // Elsewhere the room lines are unknown, as on a classic server.
        let mut classic = logged_in(now);
        for line in [&b"JOIN #r"[..], b"ROOMS", b"SAY #r hi", b"JOIN"] {
            assert_eq!(
                classic.handle_line(line, now),
                Step::Reply(Reply::BadRqstHdr)
            );
        }
        assert!(!offered(ExtensionSet::all(), false).contains(Extension::Rooms));
        assert!(offered(ExtensionSet::all(), true).contains(Extension::Rooms));
    }

    #[test]
    fn the_handshake_deadline_still_wins_before_login() {
        let t0 = Instant::now();
        let mut s = Session::new(t0, HANDSHAKE, None, ExtensionSet::all()).with_pings(PINGS);
        s.handle_line(b"EXT keepalive", t0);
        assert_eq!(s.poll_timeout(), Some(t0 + HANDSHAKE));
        assert_eq!(
            s.handle_timeout(t0 + HANDSHAKE),
            Some(Wake::Close(Timeout::Handshake))
        );
    }
}
