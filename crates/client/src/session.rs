//! The protocol session: server bytes and the user's requests in, effects out.
//!
//! [`Session`] knows the protocol and nothing about conversations: the login, which request
//! each reply answers (the protocol promises replies in request order, so a queue of what was
//! sent is enough), the messages not yet answered (a store keyed by [`MsgId`] that owns their
//! text), who is online, and when to reconnect. What happens is reported as [`Event`]s inside
//! [`Effect::Show`]; the conversation model ([`crate::Conversations`]) and the plain mode turn
//! them into what the user reads. It does no I/O and reads no clock: every `handle_*` method
//! takes `now` and returns the [`Effect`]s the caller must carry out.
//!
//! Everything it holds is bounded, whatever the server does: lines by the framer
//! ([`MAX_SERVER_LINE_BYTES`]), requests awaiting an answer by [`MAX_PENDING_REQUESTS`]
//! (messages beyond it wait in the store and go out as answers come back), and the store by
//! [`MAX_UNSETTLED_MESSAGES`]. A `DELIVERY` is passed on, never kept here.
//!
//! **Extensions** (`docs/protocol.md`, "Extensions"). With [`Config::extensions`] set, each
//! connection starts with `EXT`; the session keeps what the server's `EXT-OK` named
//! ([`Session::extensions`]) and anything else (a classic server's `BAD-RQST-HDR`) leaves the
//! connection classic, exactly as before. `HELLO-FROM` is pipelined behind `EXT`, but a
//! `LOGIN` waits for `EXT-OK`, so no password is written before the server said it knows
//! accounts. With `keepalive` it answers the server's `PING` and pings a server silent for
//! [`Config::ping_after`]; with `presence` the online list follows `ONLINE`/`OFFLINE` as a set
//! instead of polling `LIST`; with `accounts` a registered name logs in with `LOGIN` and the
//! account requests are available; with `rooms` the room requests are
//! ([`Session::room_request`], `rooms.rs`), a join is followed by a `MEMBERS`, and the rooms
//! the user is in are joined again after a reconnection. Passwords are [`Secret`]s, and the
//! `Debug` of an [`Effect::Send`] that carries one shows only its command.
//!
//! A misbehaving server is logged at `debug`, not `warn`: under the full-screen UI stderr is
//! the screen, and what the user needs to know is shown as an event instead.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use tcpchat_proto::{
    Extension, ExtensionSet, Framer, NameError, Reply, Request, RoomName, Stream, Username,
    DEFAULT_MAX_LINE_BYTES,
};

use crate::account::{carries_password, AccountOp, AccountReply, PasswordPrompt, Secret};
use crate::command::NAME_RULES;
use crate::history::{PageIn, PageRequest, Positions, Purpose, Stamp, PAGE};
use crate::rooms::{RoomEvent, RoomOp, RoomRefusal, MAX_JOINED_ROOMS};

/// The longest server line the client accepts. The longest line a server sends is `LIST-OK`:
/// 19,000 users with 32-byte names (one server at this machine's file limit) make about
/// 630 KB. The framer only holds what actually arrives, so a generous bound costs nothing.
pub const MAX_SERVER_LINE_BYTES: usize = 1024 * 1024;

/// How long the end of the plain mode's input waits for the login and for the answers to
/// messages still on their way before leaving anyway. `/quit` does not wait.
pub const QUIT_GRACE: Duration = Duration::from_secs(5);

/// The most requests written and not yet answered on one connection. More messages wait in
/// the store (as [`Delivery::Queued`]) and are written as answers come back, so a server that
/// never answers holds at most this many entries in the queue, and the tokio layer's write
/// queue never needs to hold more lines than this.
pub const MAX_PENDING_REQUESTS: usize = 256;

/// The most messages the user sent that have no final answer yet (queued while offline or
/// awaiting `SEND-OK`). A message beyond it is refused on the spot
/// ([`Undelivered::Backlog`]) rather than held without limit.
pub const MAX_UNSETTLED_MESSAGES: usize = 1024;

/// The most names the online list holds when the server keeps it (`presence`): what the
/// largest `LIST-OK` the client accepts ([`MAX_SERVER_LINE_BYTES`]) could carry, about ten
/// bytes a name. Beyond it a hostile server's `ONLINE` lines are ignored (said once), so the
/// list cannot grow without limit.
pub const MAX_ONLINE_NAMES: usize = 100_000;

/// How long the server may be silent before a keepalive connection pings it. Half the
/// server's own 60 s (`--ping-interval`), so that our ping, not the server's, usually keeps
/// an idle connection's NAT state alive.
pub const PING_AFTER: Duration = Duration::from_secs(30);

/// How long after our ping a silent server counts as gone: a dead server is noticed within
/// [`PING_AFTER`] + this, one minute.
pub const PING_TIMEOUT: Duration = Duration::from_secs(30);

/// The extensions this client speaks and asks for.
pub const SPOKEN: ExtensionSet = ExtensionSet::NONE
    .with(Extension::Keepalive)
    .with(Extension::Presence)
    .with(Extension::Accounts)
    .with(Extension::Rooms)
    .with(Extension::History);

/// How the session behaves; see [`Config::interactive`] and [`Config::script`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The name to log in with; `None` asks for one first ([`Event::NameNeeded`]).
    pub name: Option<Username>,
    /// A person is at the keyboard: a taken or refused name asks for another, and failures
    /// before the first login (cannot connect, server full) are retried with back-off. When
    /// false they end the session with a [`LoginError`], which is what a script wants; a name
    /// typed at the prompt (no [`Config::name`]) is still asked for again.
    pub interactive: bool,
    /// Ask the server who is online this often, so the list stays fresh without the user
    /// asking. `None`: only when the user asks.
    pub refresh_every: Option<Duration>,
    /// A request unanswered for this long means the connection is dead (a pulled cable sends
    /// no reset, a broken server's answer cannot be read): drop it and reconnect.
    pub reply_timeout: Duration,
    /// The first reconnection delay; it doubles with each failure up to `backoff_max`.
    pub backoff_first: Duration,
    pub backoff_max: Duration,
    /// The longest `SEND` line we write. Longer messages are refused locally with an
    /// explanation rather than sent to be cut off by the server.
    pub max_send_line_bytes: usize,
    /// The extensions to ask for with `EXT` on each connection. [`ExtensionSet::NONE`] (what
    /// [`Config::interactive`] and [`Config::script`] start with) never sends `EXT`: the
    /// classic client, byte for byte. `tcpchat connect` asks for all ([`Config::extended`]).
    pub extensions: ExtensionSet,
    /// With `keepalive`: ping a server silent this long.
    pub ping_after: Duration,
    /// With `keepalive`: a server still silent this long after our ping is gone.
    pub ping_timeout: Duration,
    /// Log in with this password (`LOGIN`) rather than `HELLO-FROM`, once the server has
    /// said it speaks `accounts`.
    pub password: Option<Secret>,
    /// Ask for the password ([`Event::PasswordNeeded`]) before logging in, when
    /// [`Config::password`] is not given (`tcpchat connect --login`).
    pub ask_password: bool,
    /// Keep a state file for an account's login (`crate::state`; the run loops do it):
    /// `tcpchat connect` sets it unless `--classic`.
    pub keep_state: bool,
    /// The state file's directory (`--state-dir`); `None`: [`crate::state::default_dir`].
    pub state_dir: Option<std::path::PathBuf>,
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
            extensions: ExtensionSet::NONE,
            ping_after: PING_AFTER,
            ping_timeout: PING_TIMEOUT,
            password: None,
            ask_password: false,
            keep_state: false,
            state_dir: None,
        }
    }

    /// The same, asking every server for every extension this client speaks
    /// ([`SPOKEN`]).
    #[must_use]
    pub fn extended(mut self) -> Self {
        self.extensions = SPOKEN;
        self
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

/// What the caller must do. Its `Debug` never shows a password (see [`Secret`]).
#[derive(Clone, PartialEq, Eq)]
pub enum Effect {
    /// Open a connection to the server, then report `handle_connected` or
    /// `handle_connect_failed`.
    Connect,
    /// Write this line (`\n` included) to the current connection.
    Send(Vec<u8>),
    /// Close the current connection; no `handle_closed` is expected for it.
    Disconnect,
    /// Tell the user (the plain mode prints it; the UI draws from the state instead).
    Show(Event),
    /// The session is over: `Ok` after `/quit`, an error when logging in is impossible.
    Exit(Result<(), LoginError>),
}

impl fmt::Debug for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect => f.write_str("Connect"),
            Self::Send(line) if carries_password(line) => {
                let command = line.split(|b| *b == b' ').next().unwrap_or_default();
                let command = String::from_utf8_lossy(command);
                write!(f, "Send({command} <hidden>)")
            }
            Self::Send(line) => write!(f, "Send({:?})", String::from_utf8_lossy(line)),
            Self::Disconnect => f.write_str("Disconnect"),
            Self::Show(event) => f.debug_tuple("Show").field(event).finish(),
            Self::Exit(result) => f.debug_tuple("Exit").field(result).finish(),
        }
    }
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
        /// Its place in the direct stream and its server time (`history`).
        at: Option<Stamp>,
    },
    /// The recipient is offline: the server keeps the message and delivers it at their
    /// next login (`SEND-QUEUED`; its state is now [`Delivery::Kept`]).
    Kept {
        id: MsgId,
        to: Username,
        text: String,
    },
    /// About stored messages (`history`).
    History(HistoryNote),
    /// A queued message was written to the server (its state is now [`Delivery::Sending`]).
    Sending {
        id: MsgId,
        to: Username,
    },
    Delivered {
        id: MsgId,
        to: Username,
        text: String,
    },
    NotDelivered {
        id: MsgId,
        to: Username,
        text: String,
        why: Undelivered,
    },
    /// The answer to the user's `!who`.
    Online(Vec<Username>),
    /// Someone came online or left (seen by the periodic refresh).
    Joined(Username),
    Left(Username),
    /// The connection is gone or could not be made; the next try is in `retry_in`. `first`:
    /// the first failure of a streak (the retries that follow say the same again).
    Offline {
        reason: Offline,
        retry_in: Duration,
        first: bool,
    },
    /// The conversation with this peer is now the open one.
    Opened(Username),
    /// A one-line remark: a command error, a hint, a server line that was not understood.
    Notice(String),
    /// The user asked for help.
    Help,
    /// The extensions the server agreed to on this connection (only said when some were
    /// asked for).
    Extensions(ExtensionSet),
    /// The next input is a password; the UI masks it. Empty input cancels.
    PasswordNeeded(PasswordPrompt),
    /// The answer to `/register`, `/password` or `/unregister`.
    Account {
        op: AccountOp,
        reply: AccountReply,
    },
    /// A room's line, or the answer to a room request.
    Room(RoomEvent),
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
    /// The name is an account and no password was given (or the prompt was cancelled).
    Registered(Username),
    /// Logging in to the account is impossible here (`LOCKED`, `NEEDS-TLS`).
    Account {
        name: Username,
        reply: AccountReply,
    },
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Taken(name) => write!(f, "the name {name} is taken"),
            Self::Invalid { name, err } => {
                write!(f, "{name:?} cannot be used: {err}; {NAME_RULES}")
            }
            Self::Refused(name) => write!(f, "the server does not accept the name {name}"),
            Self::Registered(name) => {
                write!(f, "the name {name} is registered and needs its password")
            }
            Self::Account { name, reply } => write!(f, "cannot log in as {name}: {reply}"),
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
    /// A keepalive connection heard nothing for this long, a ping included.
    Silent(Duration),
}

impl fmt::Display for Offline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CannotConnect(why) => write!(f, "cannot connect: {why}"),
            Self::Lost(why) => write!(f, "connection lost: {why}"),
            Self::Busy => f.write_str("the server is full"),
            Self::NoReply(after) => write!(f, "no answer from the server for {}s", after.as_secs()),
            Self::NameStillTaken(name) => write!(f, "the name {name} is still in use"),
            Self::Silent(after) => write!(
                f,
                "the server has been silent for {}s, a ping unanswered",
                after.as_secs()
            ),
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
    #[error(
        "the name {0} is registered: give its password with --password-fd N or \
         TCPCHAT_PASSWORD (or choose another name with --name)"
    )]
    NameRegistered(Username),
    #[error("cannot log in as {name}: {reply}")]
    Account { name: Username, reply: AccountReply },
}

impl From<NameProblem> for LoginError {
    fn from(problem: NameProblem) -> Self {
        match problem {
            NameProblem::Taken(name) => Self::NameTaken(name),
            NameProblem::Invalid { name, err } => Self::InvalidName { name, err },
            NameProblem::Refused(name) => Self::NameRefused(name),
            NameProblem::Registered(name) => Self::NameRegistered(name),
            NameProblem::Account { name, reply } => Self::Account { name, reply },
        }
    }
}

/// Identifies one message the user sent, for the whole session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgId(u64);

/// What became of a message the user sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Not written yet: typed while offline, or more requests are unanswered than
    /// [`MAX_PENDING_REQUESTS`].
    Queued,
    /// Written to the server, no answer yet.
    Sending,
    /// `SEND-OK`.
    Delivered,
    /// `SEND-QUEUED`: the recipient is offline; the server keeps it for their next login.
    Kept,
    NotDelivered(Undelivered),
}

/// What the session says about stored messages (`docs/protocol.md`, "history").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryNote {
    /// The login's catch-up of the direct messages is complete (`RESUME-OK`).
    CaughtUp,
    /// Some direct messages sent while away were removed by the server's limits before
    /// they could be read (`RESUME-EXPIRED`).
    Expired,
    /// The server's direct stream was reset (`RESUME-EPOCH`): what was kept before is gone.
    Reset,
    /// Older lines of this stream are being fetched.
    Loading(Stream),
    /// An older page arrived; `beginning`: nothing older is kept.
    Loaded { stream: Stream, beginning: bool },
    /// The room's catch-up stopped after this many pages; older missed messages were not
    /// fetched.
    CatchUpCut { room: RoomName, pages: u32 },
    /// The server would not give this stream's history (`NO-HISTORY`, or no `history`).
    Unavailable(Stream),
}

impl fmt::Display for HistoryNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CaughtUp => f.write_str("caught up with the messages sent while you were away"),
            Self::Expired => f.write_str(
                "some messages sent while you were away have expired on the server; older \
                 messages are gone",
            ),
            Self::Reset => f.write_str(
                "the server's store of your messages was reset; what it kept before is gone",
            ),
            Self::Loading(_) => f.write_str("loading older messages…"),
            Self::Loaded {
                beginning: true, ..
            } => f.write_str("beginning of history"),
            Self::Loaded { .. } => f.write_str("older messages loaded"),
            Self::CatchUpCut { room, pages } => write!(
                f,
                "{room}: fetched {pages} pages of missed messages; older ones were not fetched"
            ),
            Self::Unavailable(stream) => write!(f, "no history for {stream} on this server"),
        }
    }
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
    /// The user left before the server answered: it may or may not have arrived.
    LeftUnanswered,
    /// [`MAX_UNSETTLED_MESSAGES`] messages are already waiting.
    Backlog,
}

impl fmt::Display for Undelivered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::UserOffline => "user offline",
            Self::Refused => "refused by the server",
            Self::Unconfirmed => "connection lost before the server confirmed it",
            Self::TooLong => "message too long",
            Self::NotSent => "not sent before leaving",
            Self::LeftUnanswered => "left before the server answered",
            Self::Backlog => "too many messages are waiting for the server",
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
    /// Waiting for the user to type the password of this account.
    NeedPassword(Username),
    /// `HELLO-FROM` or `LOGIN` sent (or `LOGIN` waiting for `EXT-OK`), no answer yet.
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

/// A message in the store: sent by the user, no final answer yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub to: Username,
    pub text: String,
    pub state: Delivery,
}

#[derive(Debug)]
enum Pending {
    Hello(Username),
    /// `asked`: the user typed `!who` (show the answer), rather than the periodic refresh.
    List {
        asked: bool,
    },
    Send(MsgId),
    /// `EXT`: the answer says which extensions this connection has.
    Ext,
    Login(Username),
    /// An account request; `then` is the password to log in with from now on, if it
    /// succeeds (`None` for `UNREGISTER`, which leaves none).
    Account {
        op: AccountOp,
        then: Option<Secret>,
    },
    /// A room request not answered by its own room line yet.
    Room(RoomOp),
    /// `HISTORY`: answered by `HISTORY-OK` and its lines, or `NO-HISTORY`.
    History(PageRequest),
}

/// The protocol session. See the module documentation.
#[derive(Debug)]
pub struct Session {
    config: Config,
    phase: Phase,
    /// The name to log in with, once known; the server's spelling after login.
    name: Option<Username>,
    /// The name came from the prompt, so a problem with it asks again even in a script.
    name_from_prompt: bool,
    connected: bool,
    logged_in_once: bool,
    framer: Framer,
    /// Requests written on the current connection and not yet answered, oldest first, with
    /// when they were written. At most [`MAX_PENDING_REQUESTS`].
    pending: VecDeque<(Pending, Instant)>,
    /// Messages without a final answer, owned here (not by their conversation, which the
    /// user may close meanwhile). At most [`MAX_UNSETTLED_MESSAGES`].
    store: BTreeMap<MsgId, Outgoing>,
    /// The store's [`Delivery::Queued`] messages, in the order they were typed.
    outbox: VecDeque<MsgId>,
    online: Option<Vec<Username>>,
    next_refresh: Option<Instant>,
    failures: u32,
    quit_by: Option<Instant>,
    /// The user asked who is online while that could not be asked yet.
    who_wanted: bool,
    /// The protocol generation the server speaks: current until it answers `LIST` with
    /// `BAD-RQST-HDR`, then the previous one (`WHO`), kept across reconnections.
    generation: tcpchat_proto::Generation,
    /// A line that is not a reply was already reported on this connection.
    told_unknown: bool,
    /// The online list reached [`MAX_ONLINE_NAMES`] on this connection, and that was said.
    told_list_full: bool,
    /// The password to log in with (given, typed, or set by `/register` or `/password`).
    password: Option<Secret>,
    /// What this connection's `EXT-OK` named.
    extensions: ExtensionSet,
    /// The rooms we are in, in the order joined: joined again after a reconnection (the
    /// server parts a connection that ends). At most [`MAX_JOINED_ROOMS`].
    joined: Vec<RoomName>,
    /// A `LOGIN` waits for the answer to `EXT`.
    login_after_ext: bool,
    /// The server closed a connection while our `EXT` was unanswered: a server that drops
    /// unknown lines instead of answering them. Later connections do not ask again.
    ext_dropped: bool,
    /// With `presence`: the first `ONLINE` list, until its `ONLINE-DONE`.
    snapshot: Option<Vec<Username>>,
    /// With `keepalive`: when the server was last heard, and when we pinged it since.
    last_heard: Instant,
    ping_sent: Option<Instant>,
    pings: u64,
    next_id: u64,
    /// With `history`: where the client stands in each stream (`history.rs`).
    positions: Positions,
    /// A `HISTORY` page whose lines are arriving.
    page_in: Option<PageIn>,
    /// Between an account's login and its `RESUME-OK`: direct lines are the catch-up.
    catching_up: bool,
    /// The current login is an account's (`LOGIN`).
    account: bool,
    out: Vec<Effect>,
}

impl Session {
    /// A session that has not started yet; call [`Session::start`].
    pub fn new(config: Config) -> Self {
        Self {
            name: config.name.clone(),
            password: config.password.clone(),
            name_from_prompt: config.name.is_none(),
            config,
            phase: Phase::NeedName(None),
            connected: false,
            logged_in_once: false,
            framer: Framer::new(MAX_SERVER_LINE_BYTES),
            pending: VecDeque::new(),
            store: BTreeMap::new(),
            outbox: VecDeque::new(),
            online: None,
            next_refresh: None,
            failures: 0,
            quit_by: None,
            who_wanted: false,
            generation: tcpchat_proto::Generation::Current,
            told_unknown: false,
            told_list_full: false,
            extensions: ExtensionSet::NONE,
            joined: Vec::new(),
            login_after_ext: false,
            ext_dropped: false,
            snapshot: None,
            last_heard: Instant::now(),
            ping_sent: None,
            pings: 0,
            next_id: 0,
            positions: Positions::default(),
            page_in: None,
            catching_up: false,
            account: false,
            out: Vec::new(),
        }
    }

    /// Begins: connects when the name is known, asks for it otherwise.
    pub fn start(&mut self) -> Vec<Effect> {
        match self.name.clone() {
            Some(name) if self.config.ask_password && self.password.is_none() => {
                self.need_password(name);
            }
            Some(_) => self.connect(),
            None => self.need_name(None),
        }
        self.take()
    }

    // ---- inputs -------------------------------------------------------------------------

    /// The connection asked for by [`Effect::Connect`] is open.
    pub fn handle_connected(&mut self, now: Instant) -> Vec<Effect> {
        if self.phase == Phase::Connecting {
            self.connected = true;
            self.told_unknown = false;
            self.told_list_full = false;
            self.framer = Framer::new(MAX_SERVER_LINE_BYTES);
            self.extensions = ExtensionSet::NONE;
            self.login_after_ext = false;
            self.snapshot = None;
            self.page_in = None;
            self.catching_up = false;
            self.last_heard = now;
            self.ping_sent = None;
            if !self.config.extensions.is_empty() && !self.ext_dropped {
                let names: Vec<&str> = self.config.extensions.iter().map(Extension::name).collect();
                self.request(Request::Ext(names), Pending::Ext, now);
            }
            match self.name.clone() {
                Some(name) => self.log_in(name, now),
                None => self.need_name(None),
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
        if self.connected && !bytes.is_empty() {
            // Any sign of life will do, not only a `PONG` (docs/protocol.md, "keepalive").
            self.last_heard = now;
            self.ping_sent = None;
        }
        while self.connected && !bytes.is_empty() {
            match self.framer.next_line(&mut bytes) {
                Ok(Some(line)) => {
                    let line = line.to_vec();
                    self.handle_line(&line, now);
                }
                Ok(None) => break,
                Err(err) => {
                    tracing::debug!(%err, "server line ignored");
                    self.unknown_line();
                }
            }
        }
        self.take()
    }

    /// The server closed the connection, or it broke.
    pub fn handle_closed(&mut self, reason: &str, now: Instant) -> Vec<Effect> {
        if self.connected {
            self.connected = false;
            if self.pending.iter().any(|(p, _)| matches!(p, Pending::Ext)) {
                tracing::debug!("connection closed before EXT was answered; staying classic");
                self.ext_dropped = true;
            }
            self.lost(
                Offline::Lost(reason.to_owned()),
                LoginError::Lost(reason.to_owned()),
                now,
            );
        }
        self.take()
    }

    /// The user leaves (`/quit`, Ctrl-C): at once, whatever is pending. Messages without an
    /// answer are reported as such.
    pub fn handle_quit(&mut self) -> Vec<Effect> {
        self.finish(Ok(()));
        self.take()
    }

    /// The plain mode's input ended: leave once the login and the answers to what was sent
    /// are in, at most [`QUIT_GRACE`] from now, so that `echo '@bob hi' | tcpchat connect`
    /// can report whether bob got it.
    pub fn handle_end_of_input(&mut self, now: Instant) -> Vec<Effect> {
        if self.phase == Phase::Done || self.quit_by.is_some() {
            return self.take();
        }
        let can_still_send = matches!(
            self.phase,
            Phase::Connecting | Phase::LoggingIn | Phase::Online
        );
        // A script also waits for the login's outcome, so that it can fail if there is none.
        let login_pending = !self.config.interactive && !self.logged_in_once;
        if let Phase::NeedName(Some(problem)) = &self.phase {
            if !self.config.interactive {
                // The input ended with the name still unusable: that is the script's failure.
                let problem = problem.clone();
                self.finish(Err(problem.into()));
                return self.take();
            }
        }
        if can_still_send && (self.has_unanswered() || login_pending) {
            self.quit_by = Some(now + QUIT_GRACE);
        } else {
            self.finish(Ok(()));
        }
        self.take()
    }

    /// Time passed; call at [`Session::poll_timeout`].
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
        if self.connected && self.extensions.contains(Extension::Keepalive) {
            match self.ping_sent {
                Some(at) if now >= at + self.config.ping_timeout => {
                    let silent = now.saturating_duration_since(self.last_heard);
                    self.out.push(Effect::Disconnect);
                    self.connected = false;
                    self.lost(Offline::Silent(silent), LoginError::NoReply(silent), now);
                    return self.take();
                }
                None if now >= self.last_heard + self.config.ping_after => {
                    self.pings += 1;
                    let token = format!("c{}", self.pings);
                    self.out
                        .push(Effect::Send(Request::Ping(Some(&token)).to_line()));
                    self.ping_sent = Some(now);
                }
                _ => {}
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
                        if !refreshing && self.room() {
                            self.request(
                                self.generation.list_request(),
                                Pending::List { asked: false },
                                now,
                            );
                        }
                    }
                }
            }
            _ => {}
        }
        self.take()
    }

    /// When [`Session::handle_timeout`] wants to be called next, if ever.
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
        let keepalive =
            (self.connected && self.extensions.contains(Extension::Keepalive)).then(|| match self
                .ping_sent
            {
                Some(at) => at + self.config.ping_timeout,
                None => self.last_heard + self.config.ping_after,
            });
        [waiting, reply, self.quit_by, keepalive]
            .into_iter()
            .flatten()
            .min()
    }

    /// The name the user typed at the prompt ([`Phase::NeedName`]).
    pub fn handle_name(&mut self, typed: &str, now: Instant) -> Vec<Effect> {
        if !matches!(self.phase, Phase::NeedName(_)) {
            return self.take();
        }
        self.name_from_prompt = true;
        match Username::parse(typed) {
            Ok(name) => {
                self.name = Some(name.clone());
                if self.config.ask_password && self.password.is_none() {
                    self.need_password(name);
                } else if self.connected {
                    self.log_in(name, now);
                } else {
                    self.connect();
                }
            }
            Err(err) => {
                let name = typed.to_owned();
                self.name_problem(NameProblem::Invalid { name, err });
            }
        }
        self.take()
    }

    /// The password the user typed at the login prompt ([`Phase::NeedPassword`]). It is
    /// checked against the protocol's rules first; a bad one is explained and asked again.
    /// Empty input gives up this name ([`Session::cancel_password`]).
    pub fn handle_password(&mut self, typed: &str, now: Instant) -> Vec<Effect> {
        let Phase::NeedPassword(name) = &self.phase else {
            return self.take();
        };
        let name = name.clone();
        if typed.is_empty() {
            return self.cancel_password();
        }
        match Secret::parse(typed) {
            Ok(secret) => self.use_password(name, secret, now),
            Err(err) => {
                self.notice(format!("not sent: {err}"));
                self.need_password(name);
            }
        }
        self.take()
    }

    /// A password for the login prompt from elsewhere (the plain mode's `--password-fd`).
    pub fn handle_secret(&mut self, secret: Secret, now: Instant) -> Vec<Effect> {
        if let Phase::NeedPassword(name) = &self.phase {
            let name = name.clone();
            self.use_password(name, secret, now);
        }
        self.take()
    }

    /// The login prompt is given up: the name cannot be used without its password, so a
    /// person is asked for another name and a script given `--name` ends.
    pub fn cancel_password(&mut self) -> Vec<Effect> {
        if let Phase::NeedPassword(name) = &self.phase {
            let name = name.clone();
            self.name_problem(NameProblem::Registered(name));
        }
        self.take()
    }

    /// `/register`: makes our name an account with this password.
    pub fn register(&mut self, password: Secret, now: Instant) -> Vec<Effect> {
        let line = Request::Register(password.password()).to_line();
        self.account_request(AccountOp::Register, line, Some(password), now)
    }

    /// `/password`: changes the account's password.
    pub fn change_password(&mut self, old: &Secret, new: Secret, now: Instant) -> Vec<Effect> {
        let line = Request::ChangePassword {
            old: old.password(),
            new: new.password(),
        }
        .to_line();
        self.account_request(AccountOp::ChangePassword, line, Some(new), now)
    }

    /// `/unregister`: deletes the account (we stay logged in).
    pub fn unregister(&mut self, password: &Secret, now: Instant) -> Vec<Effect> {
        let line = Request::Unregister(password.password()).to_line();
        self.account_request(AccountOp::Unregister, line, None, now)
    }

    /// Sends `text` to `to` now, or once logged in. Returns the message's id (its state is
    /// [`Delivery::Queued`] until an [`Event::Sending`] or a final event says otherwise) and
    /// the effects.
    pub fn send(&mut self, to: Username, text: &str, now: Instant) -> (MsgId, Vec<Effect>) {
        let text = one_line(text);
        let id = MsgId(self.next_id);
        self.next_id += 1;
        let line_bytes = Request::Send {
            to: to.clone(),
            body: &text,
        }
        .to_line()
        .len()
            - 1;
        let refused = if line_bytes > self.config.max_send_line_bytes {
            let limit = self.config.max_send_line_bytes;
            self.notice(format!(
                "message not sent: it is {line_bytes} bytes on the wire, the limit is {limit}"
            ));
            Some(Undelivered::TooLong)
        } else if self.store.len() >= MAX_UNSETTLED_MESSAGES || self.phase == Phase::Done {
            Some(Undelivered::Backlog)
        } else {
            None
        };
        match refused {
            Some(why) => self
                .out
                .push(Effect::Show(Event::NotDelivered { id, to, text, why })),
            None => {
                self.store.insert(
                    id,
                    Outgoing {
                        to,
                        text,
                        state: Delivery::Queued,
                    },
                );
                self.outbox.push_back(id);
                self.pump(now);
            }
        }
        (id, self.take())
    }

    /// A room request: sent now if logged in with `rooms`, refused on the spot otherwise
    /// ([`RoomRefusal::NotOffered`]); the outcome is an [`Event::Room`].
    pub fn room_request(&mut self, op: RoomOp, now: Instant) -> Vec<Effect> {
        let line_bytes = op.request().to_line().len() - 1;
        let refused = if self.phase != Phase::Online || !self.has(Extension::Rooms) {
            Some(RoomRefusal::NotOffered)
        } else if line_bytes > self.config.max_send_line_bytes {
            Some(RoomRefusal::TooLong)
        } else if !self.room() {
            Some(RoomRefusal::Busy)
        } else {
            None
        };
        match refused {
            Some(why) => self
                .out
                .push(Effect::Show(Event::Room(RoomEvent::Refused { op, why }))),
            None => {
                self.out.push(Effect::Send(op.request().to_line()));
                self.pending.push_back((Pending::Room(op), now));
            }
        }
        self.take()
    }

    /// A fresh message id, for a room message the conversations show before its echo.
    pub(crate) fn next_msg_id(&mut self) -> MsgId {
        let id = MsgId(self.next_id);
        self.next_id += 1;
        id
    }

    /// The rooms we are in, in the order joined.
    pub fn joined_rooms(&self) -> &[RoomName] {
        &self.joined
    }

    /// The user asked who is online: asked now, or once logged in.
    pub fn who(&mut self, now: Instant) -> Vec<Effect> {
        if self.has(Extension::Presence) {
            // The list is kept up to date by the server: answered here, or at the end of
            // the first list.
            match (&self.phase, &self.snapshot, &self.online) {
                (Phase::Online, None, Some(names)) => {
                    let names = names.clone();
                    self.out.push(Effect::Show(Event::Online(names)));
                }
                _ => self.who_wanted = true,
            }
        } else if self.phase == Phase::Online && self.room() {
            self.request(
                self.generation.list_request(),
                Pending::List { asked: true },
                now,
            );
        } else {
            // Answered once logged in (or once answers make room), like a message.
            self.who_wanted = true;
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

    /// Whether a login has succeeded in this session (so losses are reconnections).
    pub fn logged_in_once(&self) -> bool {
        self.logged_in_once
    }

    /// Who is online, sorted: as of the last answer to `LIST`, or kept up to date by the
    /// `presence` lines. `None` before the first list.
    pub fn online(&self) -> Option<&[Username]> {
        self.online.as_deref()
    }

    /// The extensions the current (or last) connection negotiated; empty on a classic one.
    pub fn extensions(&self) -> ExtensionSet {
        self.extensions
    }

    /// Whether the current connection negotiated `ext`.
    pub fn has(&self, ext: Extension) -> bool {
        self.extensions.contains(ext)
    }

    pub fn is_quitting(&self) -> bool {
        self.quit_by.is_some()
    }

    /// A message without its final answer yet.
    pub fn message(&self, id: MsgId) -> Option<&Outgoing> {
        self.store.get(&id)
    }

    /// How many messages have no final answer (the store's size).
    pub fn unsettled(&self) -> usize {
        self.store.len()
    }

    /// How many requests were written and not answered yet.
    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    // ---- internals ----------------------------------------------------------------------

    fn take(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.out)
    }

    fn notice(&mut self, text: String) {
        self.out.push(Effect::Show(Event::Notice(text)));
    }

    fn connect(&mut self) {
        self.phase = Phase::Connecting;
        self.out.push(Effect::Connect);
    }

    fn hello(&mut self, name: Username, now: Instant) {
        self.phase = Phase::LoggingIn;
        self.request(Request::HelloFrom(name.clone()), Pending::Hello(name), now);
    }

    /// Logs in as `name`: with `LOGIN` when we have its password and the server speaks
    /// `accounts` (waiting for `EXT-OK` first), else with `HELLO-FROM`.
    fn log_in(&mut self, name: Username, now: Instant) {
        let Some(secret) = self.password.clone() else {
            return self.hello(name, now);
        };
        self.phase = Phase::LoggingIn;
        if self.pending.iter().any(|(p, _)| matches!(p, Pending::Ext)) {
            // Never a password before the server said it knows accounts.
            self.login_after_ext = true;
        } else if self.has(Extension::Accounts) {
            if let Some(pos) = self
                .positions
                .direct
                .as_ref()
                .filter(|_| self.has(Extension::History))
            {
                if tcpchat_proto::is_epoch(pos.epoch.as_bytes()) {
                    let line = Request::Resume {
                        epoch: &pos.epoch,
                        offset: pos.top,
                    }
                    .to_line();
                    self.out.push(Effect::Send(line));
                }
            }
            let line = Request::Login {
                name: name.clone(),
                password: secret.password(),
            }
            .to_line();
            self.out.push(Effect::Send(line));
            self.pending.push_back((Pending::Login(name), now));
        } else {
            // Nothing to protect a name with here: it is first come, first served.
            self.notice(format!(
                "this server has no accounts: logging in as {name} without a password"
            ));
            self.hello(name, now);
        }
    }

    fn need_password(&mut self, name: Username) {
        self.phase = Phase::NeedPassword(name.clone());
        self.out
            .push(Effect::Show(Event::PasswordNeeded(PasswordPrompt::Login(
                name,
            ))));
    }

    fn use_password(&mut self, name: Username, secret: Secret, now: Instant) {
        self.password = Some(secret);
        if self.connected {
            self.log_in(name, now);
        } else {
            // The server gave up waiting while the password was typed (its login timeout).
            self.connect();
        }
    }

    fn account_request(
        &mut self,
        op: AccountOp,
        line: Vec<u8>,
        then: Option<Secret>,
        now: Instant,
    ) -> Vec<Effect> {
        if self.phase != Phase::Online || !self.has(Extension::Accounts) {
            let reply = AccountReply::Unavailable;
            self.out.push(Effect::Show(Event::Account { op, reply }));
        } else if !self.room() {
            self.notice(format!(
                "{op} not sent: too many requests are waiting for the server; try again"
            ));
        } else {
            self.out.push(Effect::Send(line));
            self.pending.push_back((Pending::Account { op, then }, now));
        }
        self.take()
    }

    /// The answer to `EXT` is in: log in if that waited for it.
    fn after_ext(&mut self, now: Instant) {
        if std::mem::take(&mut self.login_after_ext) && self.phase == Phase::LoggingIn {
            if let Some(name) = self.name.clone() {
                self.log_in(name, now);
            }
        }
    }

    /// `LOGIN` was refused.
    fn login_refused(&mut self, name: Username, reply: AccountReply) {
        self.password = None;
        match reply {
            AccountReply::BadPassword | AccountReply::Throttled(_) | AccountReply::Refused
                if self.config.interactive =>
            {
                self.notice(format!("cannot log in as {name}: {reply}"));
                self.need_password(name);
            }
            _ => self.name_problem(NameProblem::Account { name, reply }),
        }
    }

    fn presence_line(&mut self, reply: Reply<'_>) {
        match reply {
            Reply::Online(names) => match &mut self.snapshot {
                Some(snapshot) => {
                    // Duplicates are removed at ONLINE-DONE, so count as they arrive.
                    let room = MAX_ONLINE_NAMES.saturating_sub(snapshot.len());
                    if names.len() > room {
                        self.list_full();
                    }
                    if let Some(snapshot) = &mut self.snapshot {
                        snapshot.extend(names.into_iter().take(room));
                    }
                }
                None => {
                    for name in names {
                        self.came_online(name);
                    }
                }
            },
            Reply::Offline(name) => match &mut self.snapshot {
                Some(snapshot) => snapshot.retain(|n| *n != name),
                None => {
                    if let Some(online) = &mut self.online {
                        if let Ok(i) = online.binary_search(&name) {
                            online.remove(i);
                            self.out.push(Effect::Show(Event::Left(name)));
                        }
                    }
                }
            },
            Reply::OnlineDone => {
                if let Some(mut names) = self.snapshot.take() {
                    names.sort();
                    names.dedup();
                    let asked = std::mem::take(&mut self.who_wanted);
                    self.presence(names, asked);
                    if self.quit_by.is_some() && !self.has_unanswered() {
                        self.finish(Ok(()));
                    }
                }
            }
            _ => {}
        }
    }

    fn list_full(&mut self) {
        if !self.told_list_full {
            self.told_list_full = true;
            self.notice(format!(
                "the server lists more than {MAX_ONLINE_NAMES} users online; the others are \
                 not shown"
            ));
        }
    }

    /// An `ONLINE` event: a set insert, so a repeated one changes nothing.
    fn came_online(&mut self, name: Username) {
        let online = self.online.get_or_insert_with(Vec::new);
        if online.len() >= MAX_ONLINE_NAMES {
            return self.list_full();
        }
        if let Err(i) = online.binary_search(&name) {
            online.insert(i, name.clone());
            self.out.push(Effect::Show(Event::Joined(name)));
        }
    }

    /// Whether another request may be written (see [`MAX_PENDING_REQUESTS`]).
    fn room(&self) -> bool {
        self.pending.len() < MAX_PENDING_REQUESTS
    }

    fn request(&mut self, request: Request<'_>, pending: Pending, now: Instant) {
        self.out.push(Effect::Send(request.to_line()));
        self.pending.push_back((pending, now));
    }

    /// Writes what waits, as far as there is room: a `!who` typed meanwhile, then messages.
    fn pump(&mut self, now: Instant) {
        if self.phase != Phase::Online {
            return;
        }
        if self.who_wanted && self.room() && !self.has(Extension::Presence) {
            self.who_wanted = false;
            self.request(
                self.generation.list_request(),
                Pending::List { asked: true },
                now,
            );
        }
        while self.room() {
            let Some(id) = self.outbox.pop_front() else {
                break;
            };
            let Some(message) = self.store.get_mut(&id) else {
                continue;
            };
            message.state = Delivery::Sending;
            let to = message.to.clone();
            let line = Request::Send {
                to: to.clone(),
                body: &message.text,
            }
            .to_line();
            self.out.push(Effect::Send(line));
            self.pending.push_back((Pending::Send(id), now));
            self.out.push(Effect::Show(Event::Sending { id, to }));
        }
    }

    fn need_name(&mut self, problem: Option<NameProblem>) {
        self.phase = Phase::NeedName(problem.clone());
        self.out.push(Effect::Show(Event::NameNeeded(problem)));
    }

    /// A name cannot be used: ask again, unless a script gave it with `--name`.
    fn name_problem(&mut self, problem: NameProblem) {
        if self.config.interactive || self.name_from_prompt {
            self.need_name(Some(problem));
        } else {
            self.finish(Err(problem.into()));
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
            Phase::NeedName(_) | Phase::NeedPassword(_) | Phase::Done | Phase::Waiting { .. } => {
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
        let first = self.failures == 0;
        self.failures = self.failures.saturating_add(1);
        self.out.push(Effect::Show(Event::Offline {
            reason: reason.clone(),
            retry_in: delay,
            first,
        }));
        self.phase = Phase::Waiting {
            until: now + delay,
            reason,
        };
    }

    /// Every request still waiting for an answer will never get one.
    fn abandon_pending(&mut self, why: Undelivered) {
        while let Some((pending, _)) = self.pending.pop_front() {
            match pending {
                Pending::Send(id) => self.settle(id, Delivery::NotDelivered(why)),
                Pending::Account { op, .. } => self.notice(format!(
                    "{op}: the connection ended before the server answered; check and try again"
                )),
                Pending::Room(op) => self.out.push(Effect::Show(Event::Room(RoomEvent::Refused {
                    op,
                    why: RoomRefusal::Unanswered,
                }))),
                Pending::History(PageRequest {
                    stream: Stream::Room(room),
                    ..
                }) => self.positions.catch_up_abandoned(&room),
                _ => {}
            }
        }
        self.login_after_ext = false;
    }

    fn finish(&mut self, result: Result<(), LoginError>) {
        if self.phase == Phase::Done {
            return;
        }
        self.abandon_pending(Undelivered::LeftUnanswered);
        while let Some(id) = self.outbox.pop_front() {
            self.settle(id, Delivery::NotDelivered(Undelivered::NotSent));
        }
        if self.connected {
            self.connected = false;
            self.out.push(Effect::Disconnect);
        }
        self.phase = Phase::Done;
        self.quit_by = None;
        self.out.push(Effect::Exit(result));
    }

    /// Still on the way to a login: the answer to `EXT` is not the end of it.
    fn logging_in(&self) -> bool {
        matches!(
            self.phase,
            Phase::Connecting | Phase::LoggingIn | Phase::NeedPassword(_)
        )
    }

    fn has_unanswered(&self) -> bool {
        !self.outbox.is_empty()
            || self.who_wanted
            || self.pending.iter().any(|(p, _)| {
                matches!(
                    p,
                    Pending::Send(_) | Pending::List { asked: true } | Pending::Room(_)
                )
            })
    }

    /// A line that is not a reply this client knows. Said once per connection, in words:
    /// the raw line may be anything, escape sequences included. Whatever request it may have
    /// answered is given up by the reply timeout.
    fn unknown_line(&mut self) {
        if !self.told_unknown {
            self.told_unknown = true;
            self.notice(
                "the server sent a line this client does not understand; it was ignored \
                 (further ones on this connection are ignored silently)"
                    .to_owned(),
            );
        }
    }

    fn handle_line(&mut self, line: &[u8], now: Instant) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return; // a blank line says nothing; some servers end a reply with one
        }
        let parsed = match Reply::parse(line) {
            Ok(reply) => Ok(reply),
            Err(err) => match self.pending.front() {
                // `a, b`: some servers put a space after each comma of the name list.
                Some((Pending::List { .. }, _)) => {
                    let tidy = tidy_list(line);
                    match Reply::parse(&tidy) {
                        Ok(Reply::ListOk(names)) => Ok(Reply::ListOk(names)),
                        Ok(Reply::WhoOk(names)) => Ok(Reply::WhoOk(names)),
                        _ => Err(err),
                    }
                }
                _ => Err(err),
            },
        };
        let reply = match parsed {
            Ok(reply) => reply,
            Err(err) => {
                tracing::debug!(%err, "unexpected line from the server ignored");
                return self.unknown_line();
            }
        };
        match reply {
            Reply::Delivery { from, body } => return self.incoming(from, body, None),
            Reply::DeliveryAt {
                offset,
                time,
                from,
                body,
            } if self.has(Extension::History) => {
                return self.delivery_at(offset, time, from, body, now);
            }
            Reply::SaidAt {
                room,
                offset,
                time,
                from,
                body,
            } if self.has(Extension::History) => {
                return self.said_at(room, offset, time, from, body, now);
            }
            Reply::ResumeOk { epoch, top }
            | Reply::ResumeExpired { epoch, top }
            | Reply::ResumeEpoch { epoch, top }
                if self.has(Extension::History) =>
            {
                let note = match reply {
                    Reply::ResumeOk { .. } => {
                        self.catching_up = false;
                        self.positions.direct_caught_up(epoch, top);
                        HistoryNote::CaughtUp
                    }
                    Reply::ResumeExpired { .. } => HistoryNote::Expired,
                    _ => {
                        self.positions.direct_reset(epoch);
                        HistoryNote::Reset
                    }
                };
                self.out.push(Effect::Show(Event::History(note)));
                return;
            }
            Reply::DeliveryAt { .. }
            | Reply::SaidAt { .. }
            | Reply::ResumeOk { .. }
            | Reply::ResumeExpired { .. }
            | Reply::ResumeEpoch { .. } => {
                tracing::debug!(?reply, "history line on a connection without it ignored");
                return self.unknown_line();
            }
            // Unsolicited: no request waits for these (a PONG answers our PING, which is
            // not a request the queue tracks; any line counts as life anyway).
            Reply::Ping(token) if self.has(Extension::Keepalive) => {
                self.out.push(Effect::Send(Request::Pong(token).to_line()));
                return;
            }
            Reply::Pong(_) if self.has(Extension::Keepalive) => return,
            Reply::Online(_) | Reply::OnlineDone | Reply::Offline(_)
                if self.has(Extension::Presence) =>
            {
                return self.presence_line(reply);
            }
            Reply::Ping(_)
            | Reply::Pong(_)
            | Reply::Online(_)
            | Reply::OnlineDone
            | Reply::Offline(_) => {
                tracing::debug!(?reply, "extension line on a connection without it ignored");
                return self.unknown_line();
            }
            Reply::Joined { .. }
            | Reply::Parted { .. }
            | Reply::Kicked { .. }
            | Reply::TopicIs { .. }
            | Reply::Said { .. } => {
                return self.room_line(&reply, now);
            }
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
            (Pending::Ext, Reply::ExtOk(names)) => {
                let offered = ExtensionSet::from_names(names);
                self.extensions = self
                    .config
                    .extensions
                    .iter()
                    .filter(|e| offered.contains(*e))
                    .collect();
                self.out
                    .push(Effect::Show(Event::Extensions(self.extensions)));
                self.after_ext(now);
            }
            (Pending::Ext, other) => {
                // A classic server: `BAD-RQST-HDR`, as for any line it does not know.
                tracing::debug!(reply = ?other, "EXT not understood; staying classic");
                self.extensions = ExtensionSet::NONE;
                self.out
                    .push(Effect::Show(Event::Extensions(self.extensions)));
                self.after_ext(now);
            }
            (Pending::Login(_), Reply::Hello(name)) => {
                // An account's login is followed by its direct stream's catch-up.
                self.catching_up = self.has(Extension::History);
                self.account = true;
                self.logged_in(name, now);
            }
            (Pending::Hello(_), Reply::Hello(name)) => {
                self.account = false;
                self.logged_in(name, now);
            }
            (Pending::Hello(name), Reply::NameRegistered) => {
                if self.password.is_some() && self.has(Extension::Accounts) {
                    self.log_in(name, now);
                } else {
                    self.need_password(name);
                }
            }
            (Pending::Login(name), Reply::NoAccount) => {
                self.password = None;
                self.notice(format!(
                    "{name} is not a registered name: logging in without a password"
                ));
                self.hello(name, now);
            }
            (Pending::Login(name), other) => {
                let reply = account_reply(&other);
                self.login_refused(name, reply);
            }
            (Pending::Account { op, then }, reply) => {
                let reply = match reply {
                    Reply::RegisterOk | Reply::PasswordOk | Reply::UnregisterOk => {
                        AccountReply::Done
                    }
                    other => account_reply(&other),
                };
                if reply == AccountReply::Done {
                    // Reconnections log in with the password the account has now.
                    self.password = then;
                    match op {
                        AccountOp::Register => self.account = true,
                        AccountOp::Unregister => self.account = false,
                        AccountOp::ChangePassword => {}
                    }
                }
                self.out.push(Effect::Show(Event::Account { op, reply }));
            }
            (Pending::Hello(name), Reply::InUse) => {
                if self.logged_in_once {
                    self.retry_later(Offline::NameStillTaken(name), now);
                } else {
                    self.name_problem(NameProblem::Taken(name));
                }
            }
            (Pending::Hello(name), _) => self.name_problem(NameProblem::Refused(name)),
            // A server of the previous generation does not know `LIST`: ask again with `WHO`,
            // and speak that generation from now on (docs/protocol.md).
            (Pending::List { asked }, Reply::BadRqstHdr)
                if self.generation == tcpchat_proto::Generation::Current =>
            {
                self.generation = tcpchat_proto::Generation::Old;
                tracing::info!(
                    "the server does not know LIST; using WHO (the previous protocol generation)"
                );
                self.request(self.generation.list_request(), Pending::List { asked }, now);
            }
            (Pending::List { asked }, Reply::ListOk(mut names) | Reply::WhoOk(mut names)) => {
                names.sort();
                names.dedup();
                self.presence(names, asked);
            }
            (Pending::List { .. }, other) => {
                tracing::debug!(reply = ?other, "unexpected answer to LIST");
            }
            (Pending::Send(id), Reply::SendOk) => {
                if let Some(to) = self.store.get(&id).map(|m| m.to.clone()) {
                    self.seen_online(&to);
                }
                self.settle(id, Delivery::Delivered);
            }
            (Pending::Send(id), Reply::SendQueued) => self.settle(id, Delivery::Kept),
            (
                Pending::History(request),
                Reply::HistoryOk {
                    stream, epoch, n, ..
                },
            ) if stream == request.stream => {
                let page = self.positions.page_start(request, epoch, n);
                if page.left == 0 {
                    self.page_complete(page, now);
                } else {
                    self.page_in = Some(page);
                }
            }
            (Pending::History(request), other) => {
                tracing::debug!(reply = ?other, "HISTORY not answered with its page");
                if let Stream::Room(room) = &request.stream {
                    self.positions.catch_up_abandoned(room);
                }
                if request.purpose == Purpose::Older {
                    self.out
                        .push(Effect::Show(Event::History(HistoryNote::Unavailable(
                            request.stream,
                        ))));
                }
            }
            (Pending::Send(id), Reply::BadDestUser | Reply::Unknown) => {
                if let (Some(online), Some(m)) = (&mut self.online, self.store.get(&id)) {
                    online.retain(|n| *n != m.to);
                }
                self.settle(id, Delivery::NotDelivered(Undelivered::UserOffline));
            }
            (Pending::Send(id), other) => {
                tracing::debug!(reply = ?other, "server refused a message");
                self.settle(id, Delivery::NotDelivered(Undelivered::Refused));
            }
            (Pending::Room(op), reply) => {
                if let RoomOp::Join(room) = &op {
                    // Refused (full, or too many rooms): not joined again next time either.
                    self.joined.retain(|r| r != room);
                }
                let event = crate::rooms::answer(op, reply);
                self.out.push(Effect::Show(Event::Room(event)));
            }
        }
        self.answered(now);
    }

    /// After an answer: write what waited for room in the queue, and end a quit that only
    /// waited for it.
    fn answered(&mut self, now: Instant) {
        self.pump(now);
        if self.quit_by.is_some() && !self.has_unanswered() && !self.logging_in() {
            self.finish(Ok(()));
        }
    }

    /// A room line: always an event; also the answer to the oldest waiting request when it
    /// is that request's own line (`rooms.rs`).
    fn room_line(&mut self, reply: &Reply<'_>, now: Instant) {
        self.room_line_at(reply, None, now);
    }

    /// [`Session::room_line`], for a `SAID-AT` with its stamp.
    fn room_line_at(&mut self, reply: &Reply<'_>, at: Option<Stamp>, now: Instant) {
        let Some(mut event) = crate::rooms::room_line(reply) else {
            return;
        };
        if let RoomEvent::Said { at: stamp, .. } = &mut event {
            *stamp = at;
        }
        if !self.has(Extension::Rooms) {
            tracing::debug!(?reply, "room line on a connection without rooms ignored");
            return self.unknown_line();
        }
        let answers = match (self.pending.front(), &self.name) {
            (Some((Pending::Room(op), _)), Some(me)) => op.answered_by(&event, me),
            _ => false,
        };
        if let Some(me) = &self.name {
            match &event {
                RoomEvent::Joined { room, name }
                    if name == me
                        && !self.joined.contains(room)
                        && self.joined.len() < MAX_JOINED_ROOMS =>
                {
                    self.joined.push(room.clone());
                }
                RoomEvent::Parted { room, name } | RoomEvent::Kicked { room, name, .. }
                    if name == me =>
                {
                    self.joined.retain(|r| r != room);
                }
                _ => {}
            }
        }
        let joined_now = match &event {
            RoomEvent::Joined { room, .. } if answers => Some(room.clone()),
            _ => None,
        };
        self.out.push(Effect::Show(Event::Room(event)));
        if answers {
            self.pending.pop_front();
            // `JOINED` tells nobody who else is there: ask, as IRC's `NAMES` follows a join.
            if let Some(room) = joined_now {
                if self.room() {
                    let request = Request::Members(room.clone());
                    self.request(request, Pending::Room(RoomOp::Members(room.clone())), now);
                }
                // Back in a room we had lines of: fetch what was said meanwhile.
                if self.has(Extension::History) {
                    if let Some(request) = self.positions.rejoined(&room) {
                        self.history_request(request, now);
                    }
                }
            }
            self.answered(now);
        }
    }

    /// After a reconnection: the server parted the old connection from its rooms, so join
    /// them again (or forget them, on a server that no longer offers rooms).
    fn rejoin_rooms(&mut self, now: Instant) {
        if !self.has(Extension::Rooms) {
            if !self.joined.is_empty() {
                self.joined.clear();
                self.notice("this server no longer offers rooms: you are in none".to_owned());
            }
            return;
        }
        for room in self.joined.clone() {
            if !self.room() {
                break;
            }
            self.request(
                Request::Join(room.clone()),
                Pending::Room(RoomOp::Join(room)),
                now,
            );
        }
    }

    fn logged_in(&mut self, name: Username, now: Instant) {
        let again = self.logged_in_once;
        self.logged_in_once = true;
        self.failures = 0;
        self.phase = Phase::Online;
        self.name = Some(name.clone());
        self.out.push(Effect::Show(Event::LoggedIn { name, again }));
        if self.has(Extension::Presence) {
            // The server sends the list, then each change: nothing to poll.
            self.snapshot = Some(Vec::new());
            self.next_refresh = None;
        } else if let Some(every) = self.config.refresh_every {
            self.next_refresh = Some(now + every);
            // One LIST serves both the user's `!who` and the refresh.
            let asked = std::mem::take(&mut self.who_wanted);
            self.request(self.generation.list_request(), Pending::List { asked }, now);
        }
        self.rejoin_rooms(now);
        self.pump(now);
        if self.quit_by.is_some() && !self.has_unanswered() {
            self.finish(Ok(()));
        }
    }

    fn presence(&mut self, names: Vec<Username>, asked: bool) {
        if let Some(before) = self.online.take() {
            for joined in names.iter().filter(|n| before.binary_search(n).is_err()) {
                self.out.push(Effect::Show(Event::Joined(joined.clone())));
            }
            for left in before.iter().filter(|n| names.binary_search(n).is_err()) {
                self.out.push(Effect::Show(Event::Left(left.clone())));
            }
        }
        if asked {
            self.out.push(Effect::Show(Event::Online(names.clone())));
        }
        self.online = Some(names);
    }

    fn incoming(&mut self, from: Username, text: &str, at: Option<Stamp>) {
        self.seen_online(&from);
        self.out.push(Effect::Show(Event::Message {
            from,
            text: text.to_owned(),
            at,
        }));
    }

    /// A stored direct message: live, the login's catch-up, or a line of a page.
    fn delivery_at(&mut self, offset: u64, time: u64, from: Username, body: &str, now: Instant) {
        let in_page = matches!(&self.page_in, Some(p) if p.request.stream == Stream::Direct);
        let new = if in_page {
            match self.page_in.as_mut() {
                Some(page) => self.positions.page_line(page, offset),
                None => false,
            }
        } else {
            self.positions.direct_line(offset)
        };
        if new {
            let live = !in_page && !self.catching_up;
            let older = self
                .page_in
                .as_ref()
                .is_some_and(|p| in_page && p.request.purpose == Purpose::Older);
            if live {
                self.seen_online(&from);
            }
            self.out.push(Effect::Show(Event::Message {
                from,
                text: body.to_owned(),
                at: Some(Stamp {
                    offset,
                    time,
                    live,
                    older,
                }),
            }));
        }
        if in_page {
            self.page_line_done(now);
        }
    }

    /// A stored room message: live (the echo of our own `SAY` included), or a page's line.
    fn said_at(
        &mut self,
        room: RoomName,
        offset: u64,
        time: u64,
        from: Username,
        body: &str,
        now: Instant,
    ) {
        let in_page =
            matches!(&self.page_in, Some(p) if p.request.stream == Stream::Room(room.clone()));
        if !in_page {
            let new = self.positions.room_live(&room, offset);
            let at = Some(Stamp {
                offset,
                time,
                live: true,
                older: false,
            });
            if new {
                let reply = Reply::Said { room, from, body };
                return self.room_line_at(&reply, at, now);
            }
            return;
        }
        let new = match self.page_in.as_mut() {
            Some(page) => self.positions.page_line(page, offset),
            None => false,
        };
        let older = self
            .page_in
            .as_ref()
            .is_some_and(|p| p.request.purpose == Purpose::Older);
        if new {
            self.out.push(Effect::Show(Event::Room(RoomEvent::Said {
                room,
                from,
                text: body.to_owned(),
                at: Some(Stamp {
                    offset,
                    time,
                    live: false,
                    older,
                }),
            })));
        }
        self.page_line_done(now);
    }

    /// A page's line was taken: the page is complete when none is left.
    fn page_line_done(&mut self, now: Instant) {
        if self.page_in.as_ref().is_some_and(|p| p.left == 0) {
            if let Some(page) = self.page_in.take() {
                self.page_complete(page, now);
            }
        }
    }

    fn page_complete(&mut self, page: PageIn, now: Instant) {
        match self.positions.page_done(&page) {
            Ok(Some(next)) => self.history_request(next, now),
            Ok(None) => {}
            Err(pages) => {
                if let Stream::Room(room) = &page.request.stream {
                    let note = HistoryNote::CatchUpCut {
                        room: room.clone(),
                        pages,
                    };
                    self.out.push(Effect::Show(Event::History(note)));
                }
            }
        }
        if page.request.purpose == Purpose::Older {
            let note = HistoryNote::Loaded {
                stream: page.request.stream.clone(),
                beginning: page.got < PAGE,
            };
            self.out.push(Effect::Show(Event::History(note)));
        }
        self.answered(now);
    }

    fn history_request(&mut self, request: PageRequest, now: Instant) {
        if !self.room() {
            if let Stream::Room(room) = &request.stream {
                self.positions.catch_up_abandoned(room);
            }
            return;
        }
        let line = Request::History {
            stream: request.stream.clone(),
            before: request.before,
            count: PAGE,
        }
        .to_line();
        self.out.push(Effect::Send(line));
        self.pending.push_back((Pending::History(request), now));
    }

    /// The user scrolled past the top of `stream`'s conversation: fetch the page before
    /// the oldest line held. Says [`HistoryNote::Loading`], or why not.
    pub fn load_older(&mut self, stream: Stream, now: Instant) -> Vec<Effect> {
        let loading = self
            .pending
            .iter()
            .any(|(p, _)| matches!(p, Pending::History(r) if r.stream == stream))
            || self
                .page_in
                .as_ref()
                .is_some_and(|p| p.request.stream == stream);
        if loading {
            return self.take();
        }
        if self.phase != Phase::Online || !self.has(Extension::History) {
            self.out
                .push(Effect::Show(Event::History(HistoryNote::Unavailable(
                    stream,
                ))));
            return self.take();
        }
        match self.positions.older(&stream) {
            Some(request) => {
                self.out
                    .push(Effect::Show(Event::History(HistoryNote::Loading(stream))));
                self.history_request(request, now);
            }
            None => self
                .out
                .push(Effect::Show(Event::History(HistoryNote::Loaded {
                    stream,
                    beginning: true,
                }))),
        }
        self.take()
    }

    /// Whether the current (or last) login was to an account, with its password.
    pub fn is_account(&self) -> bool {
        self.account
    }

    /// Where the client stands in its streams (for the state file).
    pub fn positions(&self) -> &Positions {
        &self.positions
    }

    /// Restores what a previous run knew (the state file): the positions, and the rooms
    /// to join at the login. Call before [`Session::start`].
    pub fn restore(&mut self, positions: Positions, rooms: Vec<RoomName>) {
        self.positions = positions;
        for room in rooms {
            if !self.joined.contains(&room) && self.joined.len() < MAX_JOINED_ROOMS {
                self.joined.push(room);
            }
        }
    }

    /// `name` just proved to be online: list it now rather than at the next refresh.
    fn seen_online(&mut self, name: &Username) {
        if let Some(online) = &mut self.online {
            if let Err(i) = online.binary_search(name) {
                online.insert(i, name.clone());
            }
        }
    }

    /// Records the final state of a message, takes it out of the store, and tells the user.
    fn settle(&mut self, id: MsgId, state: Delivery) {
        let Some(Outgoing { to, text, .. }) = self.store.remove(&id) else {
            return;
        };
        let event = match state {
            Delivery::Delivered => Event::Delivered { id, to, text },
            Delivery::Kept => Event::Kept { id, to, text },
            Delivery::NotDelivered(why) => Event::NotDelivered { id, to, text, why },
            Delivery::Queued | Delivery::Sending => return,
        };
        self.out.push(Effect::Show(event));
    }
}

/// A server's answer to a password request, as the user hears it.
fn account_reply(reply: &Reply<'_>) -> AccountReply {
    match reply {
        Reply::NameRegistered => AccountReply::NameRegistered,
        Reply::NoAccount => AccountReply::NoAccount,
        Reply::BadPassword => AccountReply::BadPassword,
        Reply::Locked => AccountReply::Locked,
        Reply::Throttled(s) => AccountReply::Throttled(*s),
        Reply::NeedsTls => AccountReply::NeedsTls,
        other => {
            tracing::debug!(reply = ?other, "unexpected answer to a password request");
            AccountReply::Refused
        }
    }
}

/// `text` as a message body goes out: line breaks become spaces. A line break would end the
/// protocol line early, and a trailing `\r` is eaten by the server's framer
/// (docs/protocol.md), so neither can be relayed faithfully.
pub fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// The line with the spaces after its commas removed (`a, b` → `a,b`).
fn tidy_list(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len());
    let mut after_comma = false;
    for &b in line {
        if after_comma && b == b' ' {
            continue;
        }
        after_comma = b == b',';
        out.push(b);
    }
    while out.last() == Some(&b' ') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests;
