//! The client's state machine: user input and server bytes in, effects out.
//!
//! [`Client`] owns everything a chat session knows: the login, which request each reply answers
//! (the protocol promises replies in request order, so a queue of what was sent is enough),
//! the conversations with each message's delivery state, who is online, and when to reconnect.
//! It does no I/O and reads no clock: every `handle_*` method takes `now` and returns the
//! [`Effect`]s the caller must carry out (open a connection, write a line, show an event, exit).
//! The tokio runner ([`crate::net`]), the plain mode and the full-screen UI are all thin shells
//! around it, and the tests below drive it directly, without sockets or a runtime.
//!
//! A misbehaving server is logged at `debug`, not `warn`: under the full-screen UI stderr is
//! the screen, and what the user needs to know is shown as state instead.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use tcpchat_proto::{Framer, NameError, Reply, Request, Username, DEFAULT_MAX_LINE_BYTES};

use crate::command::{self, InputError, UserCommand, NAME_RULES};

/// The longest server line the client accepts. The longest line a server sends is `LIST-OK`:
/// 19,000 users with 32-byte names (one server at this machine's file limit) make about
/// 630 KB. The framer only holds what actually arrives, so a generous bound costs nothing.
pub const MAX_SERVER_LINE_BYTES: usize = 1024 * 1024;

/// How long `/quit` (or the end of the plain mode's input) waits for the answers to messages
/// still on their way before leaving anyway.
pub const QUIT_GRACE: Duration = Duration::from_secs(5);

/// How the session behaves; see [`Config::interactive`] and [`Config::script`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The name to log in with; `None` asks for one first ([`Event::NameNeeded`]).
    pub name: Option<Username>,
    /// A person is at the keyboard: a taken or refused name asks for another, and failures
    /// before the first login (cannot connect, server full) are retried with back-off. When
    /// false they end the session with a [`LoginError`], which is what a script wants.
    pub interactive: bool,
    /// Ask the server who is online this often, so the list stays fresh without the user
    /// asking. `None`: only when the user asks.
    pub refresh_every: Option<Duration>,
    /// A request unanswered for this long means the connection is dead (a pulled cable sends
    /// no reset): drop it and reconnect.
    pub reply_timeout: Duration,
    /// The first reconnection delay; it doubles with each failure up to `backoff_max`.
    pub backoff_first: Duration,
    pub backoff_max: Duration,
    /// The longest `SEND` line we write. Longer messages are refused locally with an
    /// explanation rather than sent to be cut off by the server.
    pub max_send_line_bytes: usize,
}

impl Config {
    /// The full-screen UI's settings: retries everything, keeps the online list fresh.
    pub fn interactive(name: Option<Username>) -> Self {
        Self {
            name,
            interactive: true,
            refresh_every: Some(Duration::from_secs(5)),
            reply_timeout: Duration::from_secs(20),
            backoff_first: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            max_send_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }

    /// The plain mode's settings: login failures are fatal, no unrequested output.
    pub fn script(name: Option<Username>) -> Self {
        Self {
            interactive: false,
            refresh_every: None,
            ..Self::interactive(name)
        }
    }
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Open a connection to the server, then report [`Client::handle_connected`] or
    /// [`Client::handle_connect_failed`].
    Connect,
    /// Write this line (`\n` included) to the current connection.
    Send(Vec<u8>),
    /// Close the current connection; no [`Client::handle_closed`] is expected for it.
    Disconnect,
    /// Tell the user (the plain mode prints it; the UI draws from the state instead).
    Show(Event),
    /// The session is over: `Ok` after `/quit`, an error when logging in is impossible.
    Exit(Result<(), LoginError>),
}

/// Something the user should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The next input line is taken as the name to log in with.
    NameNeeded(Option<NameProblem>),
    /// Logged in; `again` after a reconnection.
    LoggedIn {
        name: Username,
        again: bool,
    },
    Message {
        from: Username,
        text: String,
    },
    Delivered {
        to: Username,
        text: String,
    },
    NotDelivered {
        to: Username,
        text: String,
        why: Undelivered,
    },
    /// The answer to the user's `!who`.
    Online(Vec<Username>),
    /// Someone came online or left (seen by the periodic refresh).
    Joined(Username),
    Left(Username),
    /// The connection is gone or could not be made; the next try is in `retry_in`.
    Offline {
        reason: Offline,
        retry_in: Duration,
    },
    /// The conversation with this peer is now the open one.
    Opened(Username),
    /// A one-line remark: a command error, a hint.
    Notice(String),
    /// The user asked for help.
    Help,
}

/// Why a name could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameProblem {
    Taken(Username),
    /// Against the protocol's rules; checked before anything is sent.
    Invalid {
        name: String,
        err: NameError,
    },
    /// The server said `BAD-RQST-BODY` (its rules are stricter than ours).
    Refused(Username),
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Taken(name) => write!(f, "the name {name} is taken"),
            Self::Invalid { name, err } => {
                write!(f, "{name:?} cannot be used: {err}; {NAME_RULES}")
            }
            Self::Refused(name) => write!(f, "the server does not accept the name {name}"),
        }
    }
}

/// Why the client is not connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offline {
    CannotConnect(String),
    Lost(String),
    Busy,
    NoReply(Duration),
    /// After a reconnection our own name was still taken (the server has not yet noticed
    /// that the old connection is gone).
    NameStillTaken(Username),
}

impl fmt::Display for Offline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CannotConnect(why) => write!(f, "cannot connect: {why}"),
            Self::Lost(why) => write!(f, "connection lost: {why}"),
            Self::Busy => f.write_str("the server is full"),
            Self::NoReply(after) => write!(f, "no answer from the server for {}s", after.as_secs()),
            Self::NameStillTaken(name) => write!(f, "the name {name} is still in use"),
        }
    }
}

/// Why a session ends without the user asking (only when not [`Config::interactive`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("cannot connect: {0}")]
    CannotConnect(String),
    #[error("the name {0} is taken (choose another with --name)")]
    NameTaken(Username),
    #[error("{name:?} cannot be used: {err}; {NAME_RULES}")]
    InvalidName { name: String, err: NameError },
    #[error("the server does not accept the name {0} (choose another with --name)")]
    NameRefused(Username),
    #[error("the server is full (try again later)")]
    ServerFull,
    #[error("connection lost before logging in: {0}")]
    Lost(String),
    #[error("no answer from the server for {}s", .0.as_secs())]
    NoReply(Duration),
    #[error("no name given")]
    NoName,
}

/// Identifies one outgoing message in its conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MsgId(u64);

/// What became of a message the user sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Typed while offline; sent once logged in again.
    Queued,
    /// Written to the server, no answer yet.
    Sending,
    /// `SEND-OK`.
    Delivered,
    NotDelivered(Undelivered),
}

/// Why a message was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undelivered {
    /// `BAD-DEST-USER`.
    UserOffline,
    /// `BAD-RQST-BODY` or `BAD-RQST-HDR`: the server would not take the message.
    Refused,
    /// The connection dropped before the answer came: it may or may not have arrived.
    Unconfirmed,
    /// Too long for a protocol line.
    TooLong,
    /// The session ended before it could be sent.
    NotSent,
}

impl fmt::Display for Undelivered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UserOffline => "user offline",
            Self::Refused => "refused by the server",
            Self::Unconfirmed => "connection lost before the server confirmed it",
            Self::TooLong => "message too long",
            Self::NotSent => "not sent before leaving",
        })
    }
}

/// Where the session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the user to type a name.
    NeedName(Option<NameProblem>),
    /// A connection is being opened.
    Connecting,
    /// `HELLO-FROM` sent, no answer yet.
    LoggingIn,
    Online,
    /// Not connected; the next try is at `until`.
    Waiting {
        until: Instant,
        reason: Offline,
    },
    /// The session is over.
    Done,
}

/// A conversation: with a peer, or the status buffer for everything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Status,
    Peer(Username),
}

/// One conversation's history and unread count.
#[derive(Debug, Clone)]
pub struct Buffer {
    pub target: Target,
    pub entries: Vec<Entry>,
    /// Messages received while another conversation was open.
    pub unread: usize,
}

/// One line of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub at: Instant,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Incoming {
        from: Username,
        text: String,
    },
    Outgoing {
        id: MsgId,
        text: String,
        state: Delivery,
    },
    Notice(String),
}

#[derive(Debug)]
enum Pending {
    Hello(Username),
    /// `asked`: the user typed `!who` (show the answer), rather than the periodic refresh.
    List {
        asked: bool,
    },
    Send {
        to: Username,
        id: MsgId,
    },
}

/// The client session. See the module documentation.
#[derive(Debug)]
pub struct Client {
    config: Config,
    phase: Phase,
    /// The name to log in with, once known; the server's spelling after login.
    name: Option<Username>,
    connected: bool,
    logged_in_once: bool,
    framer: Framer,
    /// Requests written on the current connection and not yet answered, oldest first, with
    /// when they were written.
    pending: VecDeque<(Pending, Instant)>,
    /// Messages typed while not logged in, to send after login.
    outbox: VecDeque<(Username, MsgId)>,
    buffers: Vec<Buffer>,
    open: usize,
    online: Option<Vec<Username>>,
    next_refresh: Option<Instant>,
    failures: u32,
    quit_by: Option<Instant>,
    /// The user asked who is online while not logged in.
    who_wanted: bool,
    next_id: u64,
    out: Vec<Effect>,
}

impl Client {
    /// A session that has not started yet; call [`Client::start`].
    pub fn new(config: Config) -> Self {
        Self {
            name: config.name.clone(),
            config,
            phase: Phase::NeedName(None),
            connected: false,
            logged_in_once: false,
            framer: Framer::new(MAX_SERVER_LINE_BYTES),
            pending: VecDeque::new(),
            outbox: VecDeque::new(),
            buffers: vec![Buffer {
                target: Target::Status,
                entries: Vec::new(),
                unread: 0,
            }],
            open: 0,
            online: None,
            next_refresh: None,
            failures: 0,
            quit_by: None,
            who_wanted: false,
            next_id: 0,
            out: Vec::new(),
        }
    }

    /// Begins: connects when the name is known, asks for it otherwise.
    pub fn start(&mut self, now: Instant) -> Vec<Effect> {
        match self.name.clone() {
            Some(_) => self.connect(),
            None => self.need_name(None, now),
        }
        self.take()
    }

    // ---- inputs -------------------------------------------------------------------------

    /// The connection asked for by [`Effect::Connect`] is open.
    pub fn handle_connected(&mut self, now: Instant) -> Vec<Effect> {
        if self.phase == Phase::Connecting {
            self.connected = true;
            self.framer = Framer::new(MAX_SERVER_LINE_BYTES);
            match self.name.clone() {
                Some(name) => self.hello(name, now),
                None => self.need_name(None, now),
            }
        } else {
            // Not wanted any more (the user quit meanwhile).
            self.out.push(Effect::Disconnect);
        }
        self.take()
    }

    /// The connection asked for by [`Effect::Connect`] could not be opened.
    pub fn handle_connect_failed(&mut self, reason: &str, now: Instant) -> Vec<Effect> {
        if self.phase == Phase::Connecting {
            self.connected = false;
            self.fail(
                Offline::CannotConnect(reason.to_owned()),
                LoginError::CannotConnect(reason.to_owned()),
                now,
            );
        }
        self.take()
    }

    /// Bytes from the server, cut anywhere.
    pub fn handle_bytes(&mut self, mut bytes: &[u8], now: Instant) -> Vec<Effect> {
        while self.connected && !bytes.is_empty() {
            match self.framer.next_line(&mut bytes) {
                Ok(Some(line)) => {
                    let line = line.to_vec();
                    self.handle_line(&line, now);
                }
                Ok(None) => break,
                Err(err) => tracing::debug!(%err, "server line ignored"),
            }
        }
        self.take()
    }

    /// The server closed the connection, or it broke.
    pub fn handle_closed(&mut self, reason: &str, now: Instant) -> Vec<Effect> {
        if self.connected {
            self.connected = false;
            self.lost(
                Offline::Lost(reason.to_owned()),
                LoginError::Lost(reason.to_owned()),
                now,
            );
        }
        self.take()
    }

    /// The user is done (end of input, Ctrl-C): like `/quit`.
    pub fn handle_quit(&mut self, now: Instant) -> Vec<Effect> {
        if self.phase != Phase::Done && self.quit_by.is_none() {
            self.quit(now);
        }
        self.take()
    }

    /// Time passed; call at [`Client::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Effect> {
        if let Some(by) = self.quit_by {
            if now >= by {
                if !self.config.interactive && !self.logged_in_once {
                    self.finish(Err(LoginError::NoReply(QUIT_GRACE)));
                } else {
                    self.finish(Ok(()));
                }
                return self.take();
            }
        }
        if let Some((_, sent)) = self.pending.front() {
            if now >= *sent + self.config.reply_timeout {
                let after = self.config.reply_timeout;
                self.out.push(Effect::Disconnect);
                self.connected = false;
                self.lost(Offline::NoReply(after), LoginError::NoReply(after), now);
                return self.take();
            }
        }
        match self.phase {
            Phase::Waiting { until, .. } if now >= until => self.connect(),
            Phase::Online => {
                if let (Some(at), Some(every)) = (self.next_refresh, self.config.refresh_every) {
                    if now >= at {
                        self.next_refresh = Some(now + every);
                        let refreshing = self
                            .pending
                            .iter()
                            .any(|(p, _)| matches!(p, Pending::List { .. }));
                        if !refreshing {
                            self.request(Request::List, Pending::List { asked: false }, now);
                        }
                    }
                }
            }
            _ => {}
        }
        self.take()
    }

    /// When [`Client::handle_timeout`] wants to be called next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let waiting = match &self.phase {
            Phase::Waiting { until, .. } => Some(*until),
            Phase::Online => self.next_refresh,
            _ => None,
        };
        let reply = self
            .pending
            .front()
            .map(|(_, sent)| *sent + self.config.reply_timeout);
        [waiting, reply, self.quit_by].into_iter().flatten().min()
    }

    /// A line the user typed.
    pub fn handle_input(&mut self, line: &str, now: Instant) -> Vec<Effect> {
        if self.phase == Phase::Done || self.quit_by.is_some() {
            return self.take();
        }
        let parsed = command::parse(line);
        if let Phase::NeedName(_) = self.phase {
            match parsed {
                Ok(UserCommand::Quit) => self.finish(Ok(())),
                Ok(UserCommand::Help) => self.out.push(Effect::Show(Event::Help)),
                Ok(UserCommand::Nothing) => {}
                _ => self.name_typed(line.trim(), now),
            }
            return self.take();
        }
        match parsed {
            Ok(UserCommand::Nothing) => {}
            Ok(UserCommand::Say(text)) => match &self.buffers[self.open].target {
                Target::Peer(to) => {
                    let to = to.clone();
                    self.send_message(to, text, now);
                }
                Target::Status => self.notice(
                    "no conversation is open: type @user message, or /query user first",
                    now,
                ),
            },
            Ok(UserCommand::Msg { to, text }) => {
                self.open_peer(&to, false);
                self.send_message(to, text, now);
            }
            Ok(UserCommand::Query(to)) => self.open_peer(&to, true),
            Ok(UserCommand::Close) => self.close_open(),
            Ok(UserCommand::Who) => {
                if self.phase == Phase::Online {
                    self.request(Request::List, Pending::List { asked: true }, now);
                } else {
                    // Answered once logged in, like a message typed meanwhile.
                    self.who_wanted = true;
                }
            }
            Ok(UserCommand::Quit) => self.quit(now),
            Ok(UserCommand::Help) => self.out.push(Effect::Show(Event::Help)),
            Err(err) => self.input_error(&err, now),
        }
        self.take()
    }

    // ---- the view's side ----------------------------------------------------------------

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The name we are (or will be) logged in as.
    pub fn name(&self) -> Option<&Username> {
        self.name.as_ref()
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// The conversations, the status buffer first, then in the order they were opened.
    pub fn buffers(&self) -> &[Buffer] {
        &self.buffers
    }

    /// The index in [`Client::buffers`] of the open conversation.
    pub fn open_index(&self) -> usize {
        self.open
    }

    pub fn open_buffer(&self) -> &Buffer {
        &self.buffers[self.open]
    }

    /// Opens conversation `index` (clamped) and clears its unread count.
    pub fn select(&mut self, index: usize) {
        self.open = index.min(self.buffers.len() - 1);
        self.buffers[self.open].unread = 0;
    }

    /// Who was online at the last answer to `LIST`, sorted; `None` before the first.
    pub fn online(&self) -> Option<&[Username]> {
        self.online.as_deref()
    }

    pub fn is_quitting(&self) -> bool {
        self.quit_by.is_some()
    }

    // ---- internals ----------------------------------------------------------------------

    fn take(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.out)
    }

    fn connect(&mut self) {
        self.phase = Phase::Connecting;
        self.out.push(Effect::Connect);
    }

    fn hello(&mut self, name: Username, now: Instant) {
        self.phase = Phase::LoggingIn;
        self.request(Request::HelloFrom(name.clone()), Pending::Hello(name), now);
    }

    fn request(&mut self, request: Request<'_>, pending: Pending, now: Instant) {
        self.out.push(Effect::Send(request.to_line()));
        self.pending.push_back((pending, now));
    }

    fn need_name(&mut self, problem: Option<NameProblem>, now: Instant) {
        if let Some(p) = &problem {
            self.status_notice(&format!("{p}; type another name"), now);
        }
        self.phase = Phase::NeedName(problem.clone());
        self.out.push(Effect::Show(Event::NameNeeded(problem)));
    }

    fn name_typed(&mut self, typed: &str, now: Instant) {
        match Username::parse(typed) {
            Ok(name) => {
                self.name = Some(name.clone());
                if self.connected {
                    self.hello(name, now);
                } else {
                    self.connect();
                }
            }
            Err(err) => {
                let name = typed.to_owned();
                if self.config.interactive {
                    self.need_name(Some(NameProblem::Invalid { name, err }), now);
                } else {
                    self.finish(Err(LoginError::InvalidName { name, err }));
                }
            }
        }
    }

    /// A login attempt failed: fatal for a script before its first login, else retried.
    fn fail(&mut self, reason: Offline, fatal: LoginError, now: Instant) {
        if !self.config.interactive && !self.logged_in_once {
            self.finish(Err(fatal));
        } else if self.quit_by.is_some() {
            self.finish(Ok(()));
        } else {
            self.retry_later(reason, now);
        }
    }

    /// The connection is gone (already marked closed): settle what was in flight, then retry.
    fn lost(&mut self, reason: Offline, fatal: LoginError, now: Instant) {
        self.abandon_pending(Undelivered::Unconfirmed);
        match self.phase {
            Phase::NeedName(_) | Phase::Done | Phase::Waiting { .. } => {
                if self.quit_by.is_some() {
                    self.finish(Ok(()));
                }
            }
            Phase::Connecting | Phase::LoggingIn | Phase::Online => self.fail(reason, fatal, now),
        }
    }

    fn retry_later(&mut self, reason: Offline, now: Instant) {
        if self.connected {
            self.connected = false;
            self.out.push(Effect::Disconnect);
        }
        self.abandon_pending(Undelivered::Unconfirmed);
        let shift = self.failures.min(16);
        let delay = self
            .config
            .backoff_first
            .saturating_mul(1 << shift)
            .min(self.config.backoff_max);
        // Only the first failure of a streak goes into the history; the retries that follow
        // would bury the conversation, and the UI's status line shows the latest anyway.
        let first = self.failures == 0;
        self.failures = self.failures.saturating_add(1);
        if first {
            let text = format!("{reason}; retrying in {}s", delay.as_secs_f32().ceil());
            self.status_notice(&text, now);
            if self.open != 0 && self.logged_in_once {
                self.push_entry(self.open, now, EntryKind::Notice(text));
            }
        }
        self.out.push(Effect::Show(Event::Offline {
            reason: reason.clone(),
            retry_in: delay,
        }));
        self.phase = Phase::Waiting {
            until: now + delay,
            reason,
        };
    }

    /// Every request still waiting for an answer will never get one.
    fn abandon_pending(&mut self, why: Undelivered) {
        while let Some((pending, _)) = self.pending.pop_front() {
            if let Pending::Send { to, id } = pending {
                self.settle(&to, id, Delivery::NotDelivered(why));
            }
        }
    }

    fn finish(&mut self, result: Result<(), LoginError>) {
        if self.phase == Phase::Done {
            return;
        }
        self.abandon_pending(Undelivered::Unconfirmed);
        while let Some((to, id)) = self.outbox.pop_front() {
            self.settle(&to, id, Delivery::NotDelivered(Undelivered::NotSent));
        }
        if self.connected {
            self.connected = false;
            self.out.push(Effect::Disconnect);
        }
        self.phase = Phase::Done;
        self.quit_by = None;
        self.out.push(Effect::Exit(result));
    }

    fn quit(&mut self, now: Instant) {
        let can_still_send = matches!(
            self.phase,
            Phase::Connecting | Phase::LoggingIn | Phase::Online
        );
        // A script also waits for the login's outcome, so that it can fail if there is none.
        let login_pending = !self.config.interactive && !self.logged_in_once;
        if can_still_send && (self.has_unanswered() || login_pending) {
            self.quit_by = Some(now + QUIT_GRACE);
        } else {
            self.finish(Ok(()));
        }
    }

    fn has_unanswered(&self) -> bool {
        !self.outbox.is_empty()
            || self.who_wanted
            || self
                .pending
                .iter()
                .any(|(p, _)| matches!(p, Pending::Send { .. } | Pending::List { asked: true }))
    }

    fn handle_line(&mut self, line: &[u8], now: Instant) {
        let reply = match Reply::parse(line) {
            Ok(reply) => reply,
            Err(err) => {
                tracing::debug!(%err, "unexpected line from the server ignored");
                return;
            }
        };
        match reply {
            Reply::Delivery { from, body } => return self.incoming(from, body, now),
            // Sent on accept when full, before any request is read; the server then closes.
            Reply::Busy => {
                self.connected = false;
                self.out.push(Effect::Disconnect);
                self.abandon_pending(Undelivered::Unconfirmed);
                return self.fail(Offline::Busy, LoginError::ServerFull, now);
            }
            _ => {}
        }
        let Some((pending, _)) = self.pending.pop_front() else {
            tracing::debug!(?reply, "reply to no request ignored");
            return;
        };
        match (pending, reply) {
            (Pending::Hello(_), Reply::Hello(name)) => self.logged_in(name, now),
            (Pending::Hello(name), Reply::InUse) => {
                if self.logged_in_once {
                    self.retry_later(Offline::NameStillTaken(name), now);
                } else if self.config.interactive {
                    self.need_name(Some(NameProblem::Taken(name)), now);
                } else {
                    self.finish(Err(LoginError::NameTaken(name)));
                }
            }
            (Pending::Hello(name), _) => {
                if self.config.interactive {
                    self.need_name(Some(NameProblem::Refused(name)), now);
                } else {
                    self.finish(Err(LoginError::NameRefused(name)));
                }
            }
            (Pending::List { asked }, Reply::ListOk(mut names)) => {
                names.sort();
                names.dedup();
                self.presence(names, asked, now);
            }
            (Pending::List { .. }, other) => {
                tracing::debug!(reply = ?other, "unexpected answer to LIST");
            }
            (Pending::Send { to, id }, Reply::SendOk) => {
                self.seen_online(&to);
                self.settle(&to, id, Delivery::Delivered);
            }
            (Pending::Send { to, id }, Reply::BadDestUser) => {
                if let Some(online) = &mut self.online {
                    online.retain(|n| *n != to);
                }
                self.settle(&to, id, Delivery::NotDelivered(Undelivered::UserOffline));
            }
            (Pending::Send { to, id }, other) => {
                tracing::debug!(reply = ?other, "server refused a message");
                self.settle(&to, id, Delivery::NotDelivered(Undelivered::Refused));
            }
        }
        if self.quit_by.is_some() && !self.has_unanswered() {
            self.finish(Ok(()));
        }
    }

    fn logged_in(&mut self, name: Username, now: Instant) {
        let again = self.logged_in_once;
        self.logged_in_once = true;
        self.failures = 0;
        self.phase = Phase::Online;
        self.name = Some(name.clone());
        let text = if again {
            format!("reconnected as {name}")
        } else {
            format!("logged in as {name}")
        };
        self.status_notice(&text, now);
        if again && self.open != 0 {
            self.push_entry(self.open, now, EntryKind::Notice(text));
        }
        self.out.push(Effect::Show(Event::LoggedIn { name, again }));
        // One LIST serves both the user's `!who` and the refresh.
        let asked = std::mem::take(&mut self.who_wanted);
        if let Some(every) = self.config.refresh_every {
            self.next_refresh = Some(now + every);
        }
        if asked || self.config.refresh_every.is_some() {
            self.request(Request::List, Pending::List { asked }, now);
        }
        while let Some((to, id)) = self.outbox.pop_front() {
            self.write_message(to, id, now);
        }
        if self.quit_by.is_some() && !self.has_unanswered() {
            self.finish(Ok(()));
        }
    }

    fn presence(&mut self, names: Vec<Username>, asked: bool, now: Instant) {
        if let Some(before) = self.online.take() {
            for joined in names.iter().filter(|n| before.binary_search(n).is_err()) {
                self.peer_notice(joined, &format!("{joined} is online"), now);
                self.out.push(Effect::Show(Event::Joined(joined.clone())));
            }
            for left in before.iter().filter(|n| names.binary_search(n).is_err()) {
                self.peer_notice(left, &format!("{left} went offline"), now);
                self.out.push(Effect::Show(Event::Left(left.clone())));
            }
        }
        if asked {
            let list: Vec<&str> = names.iter().map(Username::as_str).collect();
            let text = format!("online ({}): {}", names.len(), list.join(", "));
            self.push_entry(self.open, now, EntryKind::Notice(text));
            self.out.push(Effect::Show(Event::Online(names.clone())));
        }
        self.online = Some(names);
    }

    fn incoming(&mut self, from: Username, text: &str, now: Instant) {
        self.seen_online(&from);
        let index = self.peer_index(&from);
        self.push_entry(
            index,
            now,
            EntryKind::Incoming {
                from: from.clone(),
                text: text.to_owned(),
            },
        );
        if index != self.open {
            self.buffers[index].unread += 1;
        }
        self.out.push(Effect::Show(Event::Message {
            from,
            text: text.to_owned(),
        }));
    }

    /// `name` just proved to be online: list it now rather than at the next refresh.
    fn seen_online(&mut self, name: &Username) {
        if let Some(online) = &mut self.online {
            if let Err(i) = online.binary_search(name) {
                online.insert(i, name.clone());
            }
        }
    }

    fn send_message(&mut self, to: Username, text: String, now: Instant) {
        // A line break would end the protocol line early, and a trailing \r is eaten by the
        // server's framer (docs/protocol.md), so neither can be relayed faithfully.
        let text = text.replace(['\r', '\n'], " ");
        let id = MsgId(self.next_id);
        self.next_id += 1;
        let index = self.peer_index(&to);
        let line_bytes = Request::Send {
            to: to.clone(),
            body: &text,
        }
        .to_line()
        .len()
            - 1;
        let too_long = line_bytes > self.config.max_send_line_bytes;
        let state = if too_long {
            Delivery::NotDelivered(Undelivered::TooLong)
        } else {
            Delivery::Queued
        };
        self.push_entry(
            index,
            now,
            EntryKind::Outgoing {
                id,
                text: text.clone(),
                state,
            },
        );
        if too_long {
            let limit = self.config.max_send_line_bytes;
            self.notice(
                &format!(
                    "message not sent: it is {line_bytes} bytes on the wire, the limit is {limit}"
                ),
                now,
            );
            self.out.push(Effect::Show(Event::NotDelivered {
                to,
                text,
                why: Undelivered::TooLong,
            }));
        } else if self.phase == Phase::Online {
            self.write_message(to, id, now);
        } else {
            self.outbox.push_back((to, id));
        }
    }

    fn write_message(&mut self, to: Username, id: MsgId, now: Instant) {
        let Some(text) = self.outgoing_text(&to, id) else {
            return; // its conversation was closed meanwhile
        };
        let line = Request::Send {
            to: to.clone(),
            body: &text,
        }
        .to_line();
        self.out.push(Effect::Send(line));
        self.pending
            .push_back((Pending::Send { to: to.clone(), id }, now));
        self.set_state(&to, id, Delivery::Sending);
    }

    fn outgoing_text(&self, to: &Username, id: MsgId) -> Option<String> {
        let buffer = self
            .buffers
            .iter()
            .find(|b| b.target == Target::Peer(to.clone()))?;
        buffer.entries.iter().rev().find_map(|e| match &e.kind {
            EntryKind::Outgoing { id: i, text, .. } if *i == id => Some(text.clone()),
            _ => None,
        })
    }

    fn set_state(&mut self, to: &Username, id: MsgId, state: Delivery) -> Option<String> {
        let buffer = self
            .buffers
            .iter_mut()
            .find(|b| b.target == Target::Peer(to.clone()))?;
        buffer
            .entries
            .iter_mut()
            .rev()
            .find_map(|e| match &mut e.kind {
                EntryKind::Outgoing {
                    id: i,
                    text,
                    state: s,
                } if *i == id => {
                    *s = state;
                    Some(text.clone())
                }
                _ => None,
            })
    }

    /// Records the final state of a message and tells the user.
    fn settle(&mut self, to: &Username, id: MsgId, state: Delivery) {
        let Some(text) = self.set_state(to, id, state) else {
            return;
        };
        let to = to.clone();
        let event = match state {
            Delivery::Delivered => Event::Delivered { to, text },
            Delivery::NotDelivered(why) => Event::NotDelivered { to, text, why },
            Delivery::Queued | Delivery::Sending => return,
        };
        self.out.push(Effect::Show(event));
    }

    fn peer_index(&mut self, peer: &Username) -> usize {
        let target = Target::Peer(peer.clone());
        if let Some(i) = self.buffers.iter().position(|b| b.target == target) {
            return i;
        }
        self.buffers.push(Buffer {
            target,
            entries: Vec::new(),
            unread: 0,
        });
        self.buffers.len() - 1
    }

    /// Opens the conversation with `peer`; `tell`: say so (an explicit `/query`, rather than
    /// the switch that comes with sending).
    fn open_peer(&mut self, peer: &Username, tell: bool) {
        let index = self.peer_index(peer);
        self.select(index);
        if tell {
            self.out.push(Effect::Show(Event::Opened(peer.clone())));
        }
    }

    fn close_open(&mut self) {
        if self.open == 0 {
            return;
        }
        let closed = self.buffers.remove(self.open);
        if let Target::Peer(peer) = closed.target {
            self.outbox.retain(|(to, _)| *to != peer);
        }
        self.select(self.open - 1);
    }

    fn push_entry(&mut self, index: usize, at: Instant, kind: EntryKind) {
        self.buffers[index].entries.push(Entry { at, kind });
    }

    /// A remark in the open conversation, and for the plain mode.
    fn notice(&mut self, text: &str, now: Instant) {
        self.push_entry(self.open, now, EntryKind::Notice(text.to_owned()));
        self.out.push(Effect::Show(Event::Notice(text.to_owned())));
    }

    fn status_notice(&mut self, text: &str, now: Instant) {
        self.push_entry(0, now, EntryKind::Notice(text.to_owned()));
    }

    fn peer_notice(&mut self, peer: &Username, text: &str, now: Instant) {
        let target = Target::Peer(peer.clone());
        if let Some(i) = self.buffers.iter().position(|b| b.target == target) {
            self.push_entry(i, now, EntryKind::Notice(text.to_owned()));
        }
    }

    fn input_error(&mut self, err: &InputError, now: Instant) {
        self.notice(&err.to_string(), now);
    }
}

#[cfg(test)]
mod tests;
