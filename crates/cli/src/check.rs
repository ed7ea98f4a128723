//! `tcpchat check`: arguments, progress and exit codes; the cases and their verdicts are
//! `tcpchat_check`.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tcpchat_check::report::text;
use tcpchat_check::{CheckError, Config, Progress, DEFAULT_FLOOD_LIMIT_BYTES, DEFAULT_TIMEOUT};

use crate::UsageError;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    tcpchat check 127.0.0.1:5378\n  \
    tcpchat check chat.example.org --capacity 100 --only busy,slow-reader\n  \
    tcpchat check tls://localhost --ca cert.pem\n\n\
    Exit status: 0 when no case failed (inconclusive ones included), 1 when one failed or the\n\
    server cannot be reached, 2 for invalid arguments. What each case checks and why, and what\n\
    each verdict means: docs/check.md")]
pub struct CheckArgs {
    /// The server to check: [tls://]HOST, HOST:PORT or [IPv6]:PORT; the port defaults to 5378
    /// (5379 for tls://). For a cluster, its nodes separated by commas: each case's
    /// connections go to them in turn
    #[arg(
        value_name = "[tls://]HOST[:PORT][,...]",
        required_unless_present = "list"
    )]
    target: Option<String>,

    /// For tls://: trust the certificates in this PEM file (such as the cert.pem `tcpchat
    /// cert` wrote) instead of the system's roots
    #[arg(long, value_name = "FILE", env = "TCPCHAT_CA")]
    ca: Option<std::path::PathBuf>,

    /// The server's client limit (its --max-clients); enables the `busy` case, which opens
    /// that many connections plus one. Without it, `busy` is skipped
    #[arg(long, value_name = "N")]
    capacity: Option<usize>,

    /// Run only this case; repeat the flag or separate names with commas (see --list)
    #[arg(long, value_name = "CASE", value_delimiter = ',')]
    only: Vec<String>,

    /// List the cases with what each one checks, and exit
    #[arg(long)]
    list: bool,

    /// Print one JSON object when done instead of the table (format: docs/check.md)
    #[arg(long)]
    json: bool,

    /// Bytes `slow-reader` pushes at a client that reads nothing before calling the case
    /// inconclusive (the server's queue bound, if any, is above it)
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_FLOOD_LIMIT_BYTES)]
    flood_limit: usize,

    /// The protocol generation to check: "current" (LIST, LIST-OK, BAD-DEST-USER) or "old"
    /// (WHO, WHO-OK, UNKNOWN: 2014-2021 course material)
    #[arg(long, value_name = "current|old", default_value = "current", value_parser = parse_generation)]
    generation: tcpchat_proto::Generation,

    /// Seconds to wait for each expected reply; a whole case may take 12 times this
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT.as_secs_f64())]
    timeout: f64,
}

/// `--generation`: `current` or `old`.
pub fn parse_generation(s: &str) -> Result<tcpchat_proto::Generation, String> {
    match s {
        "current" => Ok(tcpchat_proto::Generation::Current),
        "old" => Ok(tcpchat_proto::Generation::Old),
        _ => Err(format!("{s:?} is not a generation: current or old")),
    }
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.list {
        if args.json {
            writeln!(out, "{:#}", tcpchat_check::report::cases_json())?;
        } else {
            write!(out, "{}", text::case_list())?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Some(target) = args.target else {
        return Err(UsageError(
            "give the server to check, e.g. tcpchat check 127.0.0.1:5378".into(),
        )
        .into());
    };
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| {
            UsageError(format!(
                "invalid --timeout {}: give a number of seconds above zero, e.g. 5 or 0.5",
                args.timeout
            ))
        })?;
    let config = Config {
        target,
        capacity: args.capacity,
        only: args.only,
        timeout,
        ca: args.ca,
        flood_limit: args.flood_limit,
        generation: args.generation,
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let live = !args.json;
    let tty = stdout.is_terminal();
    let mut write_error = None;
    let result = runtime.block_on(tcpchat_check::run(&config, |event| {
        if !live || write_error.is_some() {
            return;
        }
        let written = match event {
            Progress::Begin {
                target,
                address,
                cases,
                timeout,
            } => {
                write!(out, "{}", text::header(target, address, cases, timeout))
            }
            Progress::Started(case) if tty => write!(out, "{}", text::running(case)),
            Progress::Started(_) => Ok(()),
            Progress::Finished(report) => {
                let erase = if tty { "\r" } else { "" };
                write!(out, "{erase}{}", text::row(report))
            }
        };
        if let Err(e) = written.and_then(|()| out.flush()) {
            write_error = Some(e);
        }
    }));
    if let Some(e) = write_error {
        return Err(e).context("cannot write the report");
    }
    let report = match result {
        Ok(report) => report,
        Err(
            e @ (CheckError::UnknownCase(_)
            | CheckError::BadTarget(_)
            | CheckError::ZeroTimeout
            | CheckError::Tls(_)
            | CheckError::MixedTransports(_)
            | CheckError::CaWithoutTls(_)),
        ) => return Err(UsageError(e.to_string()).into()),
        Err(e) => return Err(e.into()),
    };
    if args.json {
        writeln!(out, "{:#}", report.to_json())?;
    } else {
        write!(out, "{}{}", text::failures(&report), text::summary(&report))?;
    }
    out.flush()?;
    Ok(if report.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
