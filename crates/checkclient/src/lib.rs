//! The tcpchat client checker: plays the server for anyone's chat client and says what the
//! client gets wrong.
//!
//! `tcpchat check` helps the authors of servers; this crate helps the authors of clients. Each
//! case in [`CASES`] starts the student's program afresh (on pipes, or a pseudo-terminal with
//! [`Terminal::Pty`]), listens on a fresh port on `127.0.0.1` that the program's command line
//! is given through `{host}` and `{port}`, types the user's side on the program's input with
//! the classic conventions (the name first, then `@user message`, `!who`, `!quit`), and plays
//! a small scripted server. It is not the real server on purpose: the cases need byte-level
//! control over what the client receives — a reply split byte by byte, several in one
//! segment, a `DELIVERY` between a `SEND` and its `SEND-OK`, a `LIST-OK` of thousands of names.
//!
//! A case is judged by what the client *sends* (exactly, byte for byte) and what it *shows*
//! (the text of a message present in its output, no crash, no hang). Every wait is bounded,
//! and the program's whole process group is killed when a case ends.
//!
//! Lines are built and recognised with [`tcpchat_proto`], so no wire string is spelled here.
//! The `tcpchat check-client` subcommand is a thin wrapper around [`run`].

mod cases;
mod child;
mod peer;
pub mod report;

use std::time::Duration;

use tokio::time::Instant;

pub use cases::{find, Case, CASES};
pub use child::{Exit, SpawnError, Terminal};
pub use report::{CaseReport, Failure, Outcome, Progress, Report};

/// How long a case waits for any one thing the client should do.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// A whole case may take this many step timeouts before it is stopped and failed.
pub const CASE_TIMEOUTS: u32 = 6;

/// The name typed at the client's prompt (or put for `{name}`), unless told otherwise.
pub const DEFAULT_NAME: &str = "ada";

/// What the user types, in the classic course clients' conventions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conventions {
    /// How a message is typed: `{user}` and `{message}` are replaced.
    pub send: String,
    /// What asks who is online.
    pub who: String,
    /// What leaves.
    pub quit: String,
}

impl Default for Conventions {
    fn default() -> Self {
        Self {
            send: "@{user} {message}".into(),
            who: "!who".into(),
            quit: "!quit".into(),
        }
    }
}

/// What to check and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The program and its arguments; `{host}`, `{port}` and `{name}` are replaced in each.
    pub command: Vec<String>,
    pub terminal: Terminal,
    /// Run only these cases (by name); empty runs them all.
    pub only: Vec<String>,
    /// How long to wait for any one thing the client should do.
    pub timeout: Duration,
    /// The name the user logs in with.
    pub name: String,
    pub conventions: Conventions,
    /// The protocol generation the scripted server speaks: `WHO` / `WHO-OK` / `UNKNOWN`
    /// with [`tcpchat_proto::Generation::Old`].
    pub generation: tcpchat_proto::Generation,
}

impl Config {
    /// Every case for `command`, default timeout and conventions, on pipes.
    pub fn new(command: Vec<String>) -> Self {
        Self {
            command,
            terminal: Terminal::Pipes,
            only: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            name: DEFAULT_NAME.into(),
            conventions: Conventions::default(),
            generation: tcpchat_proto::Generation::Current,
        }
    }

    /// Whether the program takes the name on its command line instead of asking for it.
    pub fn name_in_args(&self) -> bool {
        self.command.iter().any(|a| a.contains("{name}"))
    }
}

/// Why a run could not start. Failed cases are not errors; they are in the [`Report`].
#[derive(Debug, thiserror::Error)]
pub enum CheckClientError {
    #[error("unknown case {0:?} (`tcpchat check-client --list` shows every case)")]
    UnknownCase(String),
    #[error("give the client program to check after `--`, e.g. `-- python3 client.py {{host}} {{port}}`")]
    NoProgram,
    #[error(
        "the command line never mentions {{port}}: write it where your client takes the \
         server's port, e.g. `-- python3 client.py {{host}} {{port}}`"
    )]
    NoPort,
    #[error("the timeout must be more than zero")]
    ZeroTimeout,
    #[error("{0:?} is not a name the protocol allows (1 to 32 bytes, no spaces, commas or control characters)")]
    BadName(String),
    #[error("--send must contain {{user}} and {{message}}: {0:?}")]
    BadSendConvention(String),
    #[error("cannot listen on 127.0.0.1 for the client: {0}")]
    Listen(std::io::Error),
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

/// Picks the cases `only` names, in table order; all of them when `only` is empty.
///
/// # Errors
/// [`CheckClientError::UnknownCase`] for a name that is not a case.
pub fn select(only: &[String]) -> Result<Vec<&'static Case>, CheckClientError> {
    if let Some(unknown) = only.iter().find(|n| find(n).is_none()) {
        return Err(CheckClientError::UnknownCase(unknown.clone()));
    }
    Ok(CASES
        .iter()
        .filter(|c| only.is_empty() || only.iter().any(|n| n == c.name))
        .collect())
}

/// Runs the selected cases against the program, one at a time, calling `progress` as they
/// start and finish.
///
/// # Errors
/// When the run cannot start: bad settings, no port to listen on, or a program that cannot
/// be started at all. Failed cases are reported, not returned as errors.
pub async fn run(
    config: &Config,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<Report, CheckClientError> {
    if config.command.is_empty() {
        return Err(CheckClientError::NoProgram);
    }
    if !config.command.iter().any(|a| a.contains("{port}")) {
        return Err(CheckClientError::NoPort);
    }
    if config.timeout.is_zero() {
        return Err(CheckClientError::ZeroTimeout);
    }
    if tcpchat_proto::Username::parse(&config.name).is_err() {
        return Err(CheckClientError::BadName(config.name.clone()));
    }
    let send = &config.conventions.send;
    if !(send.contains("{user}") && send.contains("{message}")) {
        return Err(CheckClientError::BadSendConvention(send.clone()));
    }
    let selected = select(&config.only)?;
    progress(Progress::Begin {
        cases: selected.len(),
        timeout: config.timeout,
    });
    let started = Instant::now();
    let mut reports = Vec::with_capacity(selected.len());
    for case in selected {
        progress(Progress::Started(case));
        let case_started = Instant::now();
        let outcome = cases::run_case(case, config).await?;
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
        program: config.command.clone(),
        cases: reports,
        duration: started.elapsed(),
    })
}

/// A duration as reports say it: `5s`, `0.5s`.
pub(crate) fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}s")
    } else {
        format!("{s}s")
    }
}
