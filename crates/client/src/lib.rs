//! The tcpchat client, as two machines without I/O and the shells around them.
//!
//! - [`Session`] (module `session`): the protocol. Login, matching each `SEND-OK` /
//!   `BAD-DEST-USER` to its message (replies come in request order), the store of messages
//!   not yet answered, reconnection with back-off. Server bytes and the user's requests in,
//!   [`Effect`]s out (lines to write, [`Event`]s, when to connect).
//! - [`Conversations`] (module `conversations`): what the user reads. The status buffer and
//!   one conversation per peer and per room, their histories and unread counts, a room's
//!   topic and members, the open one, the notice for a message that arrived elsewhere. It knows nothing of the protocol.
//! - [`Client`] (module `client`): the glue. It parses what the user typed
//!   ([`command`]) into session calls, and records the session's events in the conversations.
//! - [`rooms`]: room requests and room events, and which room line answers which request.
//! - [`net`]: the tokio side: one TCP connection at a time, bytes in, lines out, through
//!   bounded channels.
//! - [`plain`]: the line mode for pipes and scripts: commands from stdin, one friendly line
//!   per event on stdout.
//!
//! The machines take the time as `now` and are tested directly, without sockets. Everything
//! they hold is bounded against a hostile or broken server (see each module). The full-screen
//! UI is a separate crate (`tcpchat-tui`) that draws [`Client`]'s state. No layer here prints
//! a protocol line: the user's words are `@bob hi`, never `SEND bob hi`.

mod account;
mod client;
pub mod command;
mod conversations;
pub mod history;
pub mod net;
pub mod plain;
pub mod rooms;
mod session;
pub mod state;

pub use account::{AccountOp, AccountReply, PasswordPrompt, Secret};
pub use client::Client;
pub use command::{InputError, UserCommand, HELP, NAME_RULES};
pub use conversations::{
    Arrival, Buffer, Conversations, Entry, EntryKind, Older, Target, MAX_CONVERSATIONS,
    MAX_HISTORY_BYTES, MAX_HISTORY_ENTRIES, MAX_KNOWN_MEMBERS, PREVIEW_CHARS,
};
pub use rooms::{RoomEvent, RoomOp, RoomRefusal, MAX_JOINED_ROOMS};
pub use session::{
    one_line, Config, Delivery, Effect, Event, HistoryNote, LoginError, MsgId, NameProblem,
    Offline, Outgoing, Phase, Session, Undelivered, MAX_ONLINE_NAMES, MAX_PENDING_REQUESTS,
    MAX_SERVER_LINE_BYTES, MAX_UNSETTLED_MESSAGES, PING_AFTER, PING_TIMEOUT, QUIT_GRACE,
};
