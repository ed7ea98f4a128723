//! `tcpchat bench`: a load generator for chat servers, with measurements you can trust.
//!
//! Six scenarios ([`Scenario`]) drive many real TCP clients against any server speaking
//! the classic protocol or IRC ([`Dialect`]), so the same load runs against tcpchat and
//! against the IRC servers people would otherwise pick. Every delivered message is checked
//! (sender, per-sender order, body); latency is taken from each message's intended send
//! time into an HdrHistogram; clients beyond one process's descriptor limit run in worker
//! processes whose results are merged exactly. [`run`] returns a [`Report`], which prints
//! as a table, serializes as JSON and draws as SVG.
//!
//! A seventh, [`abuse`], runs on its own: one flooder and a canary pair, for what the
//! server's flood control buys everyone else. An eighth, [`accounts`], too: password logins
//! per second, and a canary pair's latency during a login burst.
//!
//! This crate measures; it asserts nothing about speed. Pass/fail tests check counts (sent
//! equals delivered, no errors), never timings. It is not a conformance checker either
//! (`tcpchat check` is): it assumes the server basically works and reports what it sees.

pub mod abuse;
pub mod accounts;
mod conn;
mod counters;
mod dialect;
mod message;
mod pacing;
mod plan;
mod plot;
mod report;
mod run;
pub mod server_side;
mod share;
mod stats;
mod ws;

use std::net::SocketAddr;

pub use counters::{Counters, Failure, Failures};
pub use dialect::{Codec, Dialect, Event, Refusal};
pub use message::{BodyError, Header, OrderCheck, MIN_BODY_BYTES};
pub use pacing::Pacer;
pub use plan::{
    Choices, Defaults, Plan, Scenario, ScenarioKind, Share, TlsTarget, WsTarget, DEFAULT_PACE_TICK,
};
pub use report::{LoginReport, MemoryReport, MessageReport, Report};
pub use run::{resident_bytes, run, run_worker, Options};
pub use server_side::{MetricsUrl, ServerLatency};
pub use stats::{Latency, Summary};

/// Why a benchmark could not run or complete.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The options do not make sense.
    #[error("{0}")]
    Usage(String),
    /// The target is not there, or is not the server it was said to be.
    #[error("{target}: {why}")]
    Target { target: SocketAddr, why: String },
    /// Some clients could not log in, so the message scenario cannot be measured.
    #[error("{failed} of {clients} clients could not log in (first: {first}); is the server's client limit high enough? (a tcpchat server's abuse limits answer BUSY too: run it with --limits off or --exempt 127.0.0.0/8 for load tests)")]
    Login {
        failed: u64,
        clients: usize,
        first: String,
    },
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// A worker process could not be started or failed.
    #[error("worker process failed")]
    Worker(#[source] std::io::Error),
}
