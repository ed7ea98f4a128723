//! `tcpchat check-client`: arguments, progress and exit codes; the cases and their verdicts
//! are `tcpchat_check_client`.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tcpchat_check_client::report::text;
use tcpchat_check_client::{
    CheckClientError, Config, Conventions, Progress, Terminal, DEFAULT_NAME, DEFAULT_TIMEOUT,
};

use crate::UsageError;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    tcpchat check-client -- python3 client.py {host} {port}\n  \
    tcpchat check-client --pty -- ./client --server {host}:{port} --name {name}\n  \
    tcpchat check-client --only byte-by-byte,long-list -- java Client {host} {port}\n\n\
    The program runs once per case; {host}, {port} and {name} in its arguments are replaced.\n\
    Without {name}, the name is typed as the first input line, as the course clients ask for\n\
    it. Exit status: 0 when every case that ran passed, 1 when one failed or the program cannot\n\
    be started, 2 for invalid arguments. What each case checks: docs/check-client.md")]
pub struct CheckClientArgs {
    /// The client program and its arguments, after `--`; {host}, {port} and {name} are
    /// replaced in each argument
    #[arg(
        value_name = "PROGRAM [ARGS...]",
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required_unless_present = "list"
    )]
    command: Vec<String>,

    /// Run the program on a pseudo-terminal instead of pipes (as in a student's terminal:
    /// line-buffered output, isatty() true)
    #[arg(long)]
    pty: bool,

    /// The name the user logs in with
    #[arg(long, value_name = "NAME", default_value = DEFAULT_NAME)]
    name: String,

    /// How a message is typed; {user} and {message} are replaced
    #[arg(
        long = "send",
        value_name = "FORMAT",
        default_value = "@{user} {message}"
    )]
    send_format: String,

    /// What the user types to ask who is online
    #[arg(long, value_name = "LINE", default_value = "!who")]
    who: String,

    /// What the user types to leave
    #[arg(long, value_name = "LINE", default_value = "!quit")]
    quit: String,

    /// The protocol generation the scripted server speaks: "current" (LIST, LIST-OK,
    /// BAD-DEST-USER) or "old" (WHO, WHO-OK, UNKNOWN: 2014-2021 course material)
    #[arg(long, value_name = "current|old", default_value = "current", value_parser = crate::check::parse_generation)]
    generation: tcpchat_proto::Generation,

    /// Run only this case; repeat the flag or separate names with commas (see --list)
    #[arg(long, value_name = "CASE", value_delimiter = ',')]
    only: Vec<String>,

    /// List the cases with what each one checks, and exit
    #[arg(long)]
    list: bool,

    /// Print one JSON object when done instead of the table (format: docs/check-client.md)
    #[arg(long)]
    json: bool,

    /// Seconds to wait for each thing the client should do; a whole case may take 6 times this
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_TIMEOUT.as_secs_f64())]
    timeout: f64,
}

pub fn run(args: CheckClientArgs) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.list {
        if args.json {
            writeln!(out, "{:#}", tcpchat_check_client::report::cases_json())?;
        } else {
            write!(out, "{}", text::case_list())?;
        }
        return Ok(ExitCode::SUCCESS);
    }
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
        command: args.command,
        terminal: if args.pty {
            Terminal::Pty
        } else {
            Terminal::Pipes
        },
        only: args.only,
        timeout,
        name: args.name,
        conventions: Conventions {
            send: args.send_format,
            who: args.who,
            quit: args.quit,
        },
        generation: args.generation,
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let live = !args.json;
    let tty = stdout.is_terminal();
    let mut write_error = None;
    let program = config.command.clone();
    let result = runtime.block_on(tcpchat_check_client::run(&config, |event| {
        if !live || write_error.is_some() {
            return;
        }
        let written = match event {
            Progress::Begin { cases, timeout } => {
                write!(out, "{}", text::header(&program, cases, timeout))
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
            e @ (CheckClientError::UnknownCase(_)
            | CheckClientError::NoProgram
            | CheckClientError::NoPort
            | CheckClientError::ZeroTimeout
            | CheckClientError::BadName(_)
            | CheckClientError::BadSendConvention(_)),
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
