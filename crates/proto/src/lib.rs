//! The tcpchat wire protocol, without I/O.
//!
//! This crate is the single place where the protocol's strings (`HELLO-FROM`, `SEND-OK`, ...)
//! are spelled, where lines are cut from a byte stream ([`Framer`]), where lines become typed
//! values ([`Request`], [`Reply`]) and back, where names are validated ([`Username`]), and where
//! a tool's `[tls://]HOST[:PORT]` argument is read ([`ServerAddress`], [`HostPort`]).
//! Everything that speaks the protocol (server, client, checker, trace analyzer, load
//! generator) goes through it.
//!
//! It deliberately does no I/O, reads no clock and keeps no session state: which request is
//! allowed *when* (before or after login) is the server's session machine's business. That
//! keeps this crate small enough to fuzz and to test exhaustively. The normative description
//! is `docs/protocol.md`.

mod address;
mod ext;
mod framer;
mod message;
mod name;

pub use address::{AddressError, HostPort, ServerAddress, Transport};
pub use ext::{
    is_epoch, is_ext_name, is_token, Extension, ExtensionSet, Password, PasswordError, Stream,
    MAX_EPOCH_BYTES, MAX_EXT_NAMES, MAX_EXT_NAME_BYTES, MAX_HISTORY_PAGE,
    MAX_ONLINE_NAMES_PER_LINE, MAX_PASSWORD_BYTES, MAX_TOKEN_BYTES, MIN_PASSWORD_BYTES,
};
pub use framer::{FrameError, Framer, OVERLONG_HEAD_BYTES};
pub use message::{Command, Generation, Reply, ReplyError, Request, RequestError};
pub use name::{NameError, RoomName, RoomNameError, Username, MAX_NAME_BYTES, MAX_ROOM_BYTES};

/// The TCP port the public course server used; existing clients default to it.
pub const DEFAULT_PORT: u16 = 5378;

/// The port `tls://HOST` defaults to and `tcpchat serve --tls-listen` suggests: the plain port
/// plus one, so the pair is easy to remember and to open in a firewall together. Spelled once,
/// here, for every tool.
pub const DEFAULT_TLS_PORT: u16 = DEFAULT_PORT + 1;

/// Default longest line, in bytes, not counting the terminating `\n` (a `\r` before it counts).
pub const DEFAULT_MAX_LINE_BYTES: usize = 4096;
