//! The tcpchat client, in three layers.
//!
//! - [`Client`] (module `state`): the whole session logic as a state machine without I/O. It
//!   takes what the user typed and what the server sent, with the time, and returns
//!   [`Effect`]s: what to send, what to show, when to connect. Everything protocol-related
//!   (login, matching each `SEND-OK` / `BAD-DEST-USER` to its message, reconnection with
//!   back-off) lives here, so it is tested without sockets.
//! - [`net`]: the tokio side: one TCP connection at a time, bytes in, lines out, and a loop
//!   helper that carries out effects.
//! - [`plain`]: the line mode for pipes and scripts: commands from stdin, one friendly line
//!   per event on stdout.
//!
//! The full-screen UI is a separate crate (`tcpchat-tui`) that draws [`Client`]'s state. No
//! layer here prints a protocol line: the user's words are `@bob hi`, never `SEND bob hi`.

pub mod command;
pub mod net;
pub mod plain;
mod state;

pub use command::{InputError, UserCommand, HELP, NAME_RULES};
pub use state::{
    Buffer, Client, Config, Delivery, Effect, Entry, EntryKind, Event, LoginError, MsgId,
    NameProblem, Offline, Phase, Target, Undelivered, MAX_SERVER_LINE_BYTES, QUIT_GRACE,
};
