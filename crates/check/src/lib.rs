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
use std::path::PathBuf;
use std::time::Duration;

use tcpchat_tls::client::{Connector, HandshakeError, Stream};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

pub use cases::{find, Case, CASES};
pub use failure::{escape, Failure};
pub use report::{CaseReport, Outcome, Progress, Report};

/// How long the checker waits for any one reply unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A whole case may take this many reply timeouts before it is stopped and failed.
pub const CASE_TIMEOUTS: u32 = 12;

/// How much `slow-reader` pushes at a client that reads nothing before it calls the case
/// inconclusive: a server whose queue is bounded has dropped the reader long before (kernel
/// buffers hold a few MiB at most; on loopback about 2.8 MiB).
pub const DEFAULT_FLOOD_LIMIT_BYTES: usize = 16 * 1024 * 1024;

/// What to check and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The server, as `[tls://]HOST`, `HOST:PORT`, `[IPv6]:PORT` or a bare IP address. The
    /// port defaults to [`tcpchat_proto::DEFAULT_PORT`] (`DEFAULT_TLS_PORT` for `tls://`).
    /// With `tls://` every connection is inside TLS; the nodes of a cluster are all TLS or
    /// all plain. Several nodes of one cluster are separated
    /// by commas: each case opens its connections on them in turn, so its first two users sit
    /// on different nodes.
    pub target: String,
    /// The server's client limit, if known; the `busy` case needs it and is skipped without.
    pub capacity: Option<usize>,
    /// Run only these cases (by name); empty runs them all.
    pub only: Vec<String>,
    /// How long to wait for any one reply.
    pub timeout: Duration,
    /// For `tls://`: trust the certificates in this PEM file instead of the system's roots.
    pub ca: Option<PathBuf>,
    /// How many bytes `slow-reader` pushes at a reader that reads nothing before it calls
    /// the case inconclusive ([`DEFAULT_FLOOD_LIMIT_BYTES`]).
    pub flood_limit: usize,
    /// The protocol generation to speak: `WHO` / `WHO-OK` / `UNKNOWN` with
    /// [`tcpchat_proto::Generation::Old`].
    pub generation: tcpchat_proto::Generation,
}

impl Config {
    /// Every case against `target`, default timeout, capacity unknown.
    pub fn new(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            capacity: None,
            only: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            ca: None,
            flood_limit: DEFAULT_FLOOD_LIMIT_BYTES,
            generation: tcpchat_proto::Generation::Current,
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
    #[error(transparent)]
    Tls(#[from] tcpchat_tls::client::ConfigError),
    #[error("cannot check {address} over TLS: {reason}")]
    Handshake { address: SocketAddr, reason: String },
    #[error("the nodes must all be tls:// or all plain: {0}")]
    MixedTransports(String),
    #[error("--ca is for TLS servers: write the address as tls://{0}")]
    CaWithoutTls(String),
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
    let mut targets = Vec::new();
    for target in config.target.split(',') {
        targets.push(tcpchat_proto::ServerAddress::parse(target.trim())?);
    }
    let tls = targets[0].is_tls();
    if targets.iter().any(|t| t.is_tls() != tls) {
        return Err(CheckError::MixedTransports(config.target.clone()));
    }
    let connector = match (tls, &config.ca) {
        (true, ca) => Some(Connector::new(ca.as_deref())?),
        (false, None) => None,
        (false, Some(_)) => return Err(CheckError::CaWithoutTls(targets[0].to_string())),
    };
    let mut nodes = Vec::new();
    for target in &targets {
        let address = resolve(target).await?;
        probe(address, target.host(), connector.as_ref(), config.timeout).await?;
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
    cx.flood_limit = config.flood_limit;
    cx.generation = config.generation;
    cx.spread_over(nodes);
    if let Some(connector) = connector {
        cx.use_tls(
            connector,
            targets.iter().map(|t| t.host().to_owned()).collect(),
        );
    }
    let case_limit = config.timeout * CASE_TIMEOUTS;
    let mut reports = Vec::with_capacity(selected.len());
    for case in selected {
        progress(Progress::Started(case));
        cx.begin_case();
        let case_started = Instant::now();
        // Extensions are negotiated on top of the current generation (docs/protocol.md).
        let result = if config.generation == tcpchat_proto::Generation::Old
            && case.name.starts_with("ext-")
        {
            Ok(Ok(cases::Done::Skipped(
                "extensions are part of the current protocol generation".to_string(),
            )))
        } else {
            timeout(case_limit, (case.run)(&mut cx)).await
        };
        let mut finding = None;
        let outcome = match result {
            Ok(Ok(cases::Done::Passed)) => Outcome::Pass,
            Ok(Ok(cases::Done::Found(what))) => {
                finding = Some(what);
                Outcome::Pass
            }
            Ok(Ok(cases::Done::Skipped(reason))) => Outcome::Skip(reason),
            Ok(Ok(cases::Done::Inconclusive(why))) => Outcome::Inconclusive(why),
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
            finding,
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

/// Resolves the target to the first address it names.
async fn resolve(target: &tcpchat_proto::ServerAddress) -> Result<SocketAddr, CheckError> {
    let target_addr = target;
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

/// Connects once (and for TLS shakes hands), so an unreachable server or a refused
/// certificate is one clear error instead of every case failing.
async fn probe(
    address: SocketAddr,
    host: &str,
    tls: Option<&Connector>,
    wait: Duration,
) -> Result<(), CheckError> {
    match timeout(wait, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => match timeout(wait, Stream::open(stream, host, tls)).await {
            Ok(Ok(_stream)) => Ok(()),
            Ok(Err(HandshakeError::Io(e))) => Err(CheckError::Connect {
                address,
                reason: e.to_string(),
            }),
            Ok(Err(e)) => Err(CheckError::Handshake {
                address,
                reason: e.to_string(),
            }),
            Err(_) => Err(CheckError::Handshake {
                address,
                reason: format!("no TLS handshake within {}", client::seconds(wait)),
            }),
        },
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
