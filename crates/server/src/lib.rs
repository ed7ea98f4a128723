//! The tcpchat server.
//!
//! Three layers, each replaceable without touching the others:
//!
//! - [`session`]: the per-connection protocol machine. Pure logic: it takes lines and the time
//!   and says what to reply, what to ask the hub, and when to give up on the peer. It decides
//!   every `BAD-RQST-HDR` / `BAD-RQST-BODY`; nothing else does.
//! - [`hub`]: presence (who is logged in) and routing (deliver a line to a name), behind the
//!   narrow [`Hub`] trait. [`MemoryHub`] is the single-process implementation; the cluster
//!   backend implements the same trait in its own crate, so connection handling never changes.
//! - [`run`] and the connection driver: tokio I/O around the two, with a bounded [`Outbox`] per
//!   connection, admission control (`BUSY`), timeouts, TCP keepalive and graceful shutdown.
//!
//! The normative protocol, with every limit and its default, is `docs/protocol.md`.

pub mod accounts;
mod admission;
mod config;
mod connection;
pub mod entry;
pub mod history;
pub mod hub;
pub mod latency;
pub mod limits;
mod listener;
pub mod metrics;
mod outbox;
mod rooms;
pub mod session;
mod transport;

pub use accounts::{AccountSettings, StoreHandle};
pub use config::{
    Config, ConfigError, GenerationPolicy, Keepalive, Practice, MAX_LINE_LIMIT_BYTES,
};
pub use entry::{Entry, Refused};
pub use history::{History, HistorySettings, Page, SharedHistory};
pub use hub::{Delivery, DirectResult, Hub, LoginError, MemoryHub, Roster, Sent};
pub use limits::Limits;
pub use listener::{
    bind, run, run_listeners, run_observed, run_with_hub, Listeners, WebServer, LISTEN_BACKLOG,
};
pub use metrics::Metrics;
pub use outbox::{Outbox, PushError};
pub use rooms::{RoomError, RoomLimits, RoomRequest};
