//! The tcpchat conformance checker: runs the protocol's decided behaviour, as named cases, over
//! real connections against *any* server, and says what each case expected and what came back.
//!
//! Each case in [`CASES`] is one rule of the protocol (`docs/protocol.md`, and the edge cases
//! decided in the product brief), explained for server authors in `docs/check.md`. Cases run
//! one after another, each with its own connections, names unique to the run, and a time
//! bound, so a server that hangs or closes fails that case and the run goes on. The checker
//! assumes nothing about who else is online, and only what the protocol decides: where it is
//! silent, a case either accepts every reasonable answer or does not ask.
//!
//! It deliberately does not use [`tcpchat_proto::Framer`] to read replies: a checker must see
//! a stray `\r` the server sends, which the framer would strip. Requests and expected replies
//! are built with the protocol crate, so no wire string is spelled here.
//!
//! The `tcpchat check` subcommand is a thin wrapper: it builds a [`Config`], calls [`run`] and
//! prints the [`Report`] with [`report::text`] or [`Report::to_json`].

mod cases;
mod client;
mod failure;
pub mod report;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

pub use cases::{find, Case, CASES};
pub use failure::{escape, Failure};
pub use report::{CaseReport, Outcome, Progress, Report};

/// How long the checker waits for any one reply unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A whole case may take this many reply timeouts before it is stopped and failed.
pub const CASE_TIMEOUTS: u32 = 12;

/// What to check and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The server, as `HOST`, `HOST:PORT`, `[IPv6]:PORT` or a bare IP address. The port
    /// defaults to [`tcpchat_proto::DEFAULT_PORT`]. Several nodes of one cluster are separated
    /// by commas: each case opens its connections on them in turn, so its first two users sit
    /// on different nodes.
    pub target: String,
    /// The server's client limit, if known; the `busy` case needs it and is skipped without.
    pub capacity: Option<usize>,
    /// Run only these cases (by name); empty runs them all.
    pub only: Vec<String>,
    /// How long to wait for any one reply.
    pub timeout: Duration,
}

impl Config {
    /// Every case against `target`, default timeout, capacity unknown.
    pub fn new(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            capacity: None,
            only: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// Why a run could not start. Failed cases are not errors; they are in the [`Report`].
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("unknown case {0:?} (`tcpchat check --list` shows every case)")]
    UnknownCase(String),
    #[error(transparent)]
    BadTarget(#[from] tcpchat_proto::AddressError),
    #[error("cannot resolve {target}: {source}")]
    Resolve {
        target: String,
        source: std::io::Error,
    },
    #[error("{0} resolves to no address")]
    NoAddress(String),
    #[error(
        "cannot connect to {address}: {reason} (is the server running? start one with \
         `tcpchat serve --listen {address}`)"
    )]
    Connect { address: SocketAddr, reason: String },
    #[error("the timeout must be more than zero")]
    ZeroTimeout,
}

/// Picks the cases `only` names, in table order; all of them when `only` is empty.
///
/// # Errors
/// [`CheckError::UnknownCase`] for a name that is not a case.
pub fn select(only: &[String]) -> Result<Vec<&'static Case>, CheckError> {
    if let Some(unknown) = only.iter().find(|n| find(n).is_none()) {
        return Err(CheckError::UnknownCase(unknown.clone()));
    }
    Ok(CASES
        .iter()
        .filter(|c| only.is_empty() || only.iter().any(|n| n == c.name))
        .collect())
}

/// Runs the selected cases against the server, one at a time, calling `progress` as they
/// start and finish.
///
/// # Errors
/// When the run cannot start: an unknown case, an address that does not resolve, or a
/// server that refuses the first connection. Failed cases are reported, not returned as
/// errors.
pub async fn run(
    config: &Config,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<Report, CheckError> {
    if config.timeout.is_zero() {
        return Err(CheckError::ZeroTimeout);
    }
    let selected = select(&config.only)?;
    let mut nodes = Vec::new();
    for target in config.target.split(',') {
        let address = resolve(target.trim()).await?;
        probe(address, config.timeout).await?;
        nodes.push(address);
    }
    let address = nodes[0];

    progress(Progress::Begin {
        target: &config.target,
        address,
        cases: selected.len(),
        timeout: config.timeout,
    });
    let started = Instant::now();
    let mut cx = cases::Ctx::new(address, config.timeout, config.capacity);
    cx.spread_over(nodes);
    let case_limit = config.timeout * CASE_TIMEOUTS;
    let mut reports = Vec::with_capacity(selected.len());
    for case in selected {
        progress(Progress::Started(case));
        cx.begin_case();
        let case_started = Instant::now();
        let result = timeout(case_limit, (case.run)(&mut cx)).await;
        let outcome = match result {
            Ok(Ok(cases::Done::Passed)) => Outcome::Pass,
            Ok(Ok(cases::Done::Skipped(reason))) => Outcome::Skip(reason),
            Ok(Err(failure)) => {
                Outcome::Fail(Box::new(failure.with_transcript(cx.take_transcript())))
            }
            Err(_) => Outcome::Fail(Box::new(
                Failure::new(
                    "the whole case",
                    format!("to finish within {}", client::seconds(case_limit)),
                    "(still going: the server answers too slowly, or not at all)",
                )
                .with_transcript(cx.take_transcript()),
            )),
        };
        reports.push(CaseReport {
            case,
            outcome,
            duration: case_started.elapsed(),
        });
        if let Some(last) = reports.last() {
            progress(Progress::Finished(last));
        }
    }
    Ok(Report {
        target: config.target.clone(),
        address,
        cases: reports,
        duration: started.elapsed(),
    })
}

/// Resolves `HOST[:PORT]` to the first address it names.
async fn resolve(target: &str) -> Result<SocketAddr, CheckError> {
    let target_addr = tcpchat_proto::HostPort::parse(target)?;
    let mut addrs = tokio::net::lookup_host((target_addr.host(), target_addr.port()))
        .await
        .map_err(|source| CheckError::Resolve {
            target: target.to_string(),
            source,
        })?;
    addrs
        .next()
        .ok_or_else(|| CheckError::NoAddress(target.to_string()))
}

/// Connects once, so an unreachable server is one clear error instead of every case failing.
async fn probe(address: SocketAddr, wait: Duration) -> Result<(), CheckError> {
    match timeout(wait, TcpStream::connect(address)).await {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(e)) => Err(CheckError::Connect {
            address,
            reason: e.to_string(),
        }),
        Err(_) => Err(CheckError::Connect {
            address,
            reason: format!("no answer within {}", client::seconds(wait)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_keeps_table_order_and_refuses_unknown_names() {
        let picked = select(&["list".into(), "login".into()]).expect("both are cases");
        let names: Vec<_> = picked.iter().map(|c| c.name).collect();
        assert_eq!(names, ["login", "list"]);
        assert_eq!(select(&[]).expect("all").len(), CASES.len());
        assert!(matches!(
            select(&["nope".into()]),
            Err(CheckError::UnknownCase(n)) if n == "nope"
        ));
    }
}
