//! `tcpchat connect`: picks the full-screen UI or the plain line mode and hands over to the
//! client crates, with the passwords it was given. Nothing else lives here.
//!
//! Passwords come from `--password-fd N` (read once, at start) or `TCPCHAT_PASSWORD` /
//! `TCPCHAT_NEW_PASSWORD`, never from a flag's value, which every user of the machine can
//! read in `ps`; the UI also asks for them without echo. See docs/client.md, "Accounts".

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use tcpchat_client::net::Server;
use tcpchat_client::plain::{self, Passwords};
use tcpchat_client::{Config, Secret, NAME_RULES};
use tcpchat_proto::Username;

/// The environment variable holding the account's password.
pub const PASSWORD_ENV: &str = "TCPCHAT_PASSWORD";
/// The environment variable holding `/password`'s new password (plain mode).
pub const NEW_PASSWORD_ENV: &str = "TCPCHAT_NEW_PASSWORD";
/// The most `--password-fd` reads: two passwords of at most 128 bytes fit many times over.
const PASSWORD_FD_BYTES: u64 = 4096;

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The server: [tls://]HOST[:PORT] (port 5378 when left out, 5379 for tls://), e.g.
    /// localhost, chat.example.org:6000, [::1]:5378, tls://chat.example.org
    #[arg(
        value_name = "[tls://]HOST[:PORT]",
        env = "TCPCHAT_SERVER",
        default_value = "localhost:5378"
    )]
    server: String,

    /// For tls://: trust the certificates in this PEM file (such as the cert.pem `tcpchat
    /// cert` wrote) instead of the system's roots
    #[arg(long, value_name = "FILE", env = "TCPCHAT_CA")]
    ca: Option<PathBuf>,

    /// The name to chat as (1 to 32 bytes, no spaces, commas or control characters); the UI
    /// asks for one when it is missing, the plain mode reads it from the first input line
    #[arg(long, short, env = "TCPCHAT_NAME", value_parser = parse_name)]
    name: Option<Username>,

    /// Plain line mode: commands from stdin, one line per event on stdout, for scripts and
    /// pipes. Chosen automatically when stdin or stdout is not a terminal
    #[arg(long)]
    plain: bool,

    /// Log in to a registered name with its password: the UI asks for it (without echo)
    /// before connecting. Without it the password is asked for only when the server says the
    /// name is registered. Implied by --password-fd and TCPCHAT_PASSWORD
    #[arg(long)]
    login: bool,

    /// Read the password from this file descriptor (its first line; a second line is the
    /// new password for /password), e.g. `--password-fd 3 3<secret.txt`. TCPCHAT_PASSWORD
    /// (and TCPCHAT_NEW_PASSWORD) in the environment do the same. Never on the command line
    #[arg(long, value_name = "N")]
    password_fd: Option<u32>,

    /// Never ask the server for extensions: the classic protocol only, as older clients
    #[arg(long)]
    classic: bool,

    /// Where the state file of an account's login is kept (rooms, resume points, unread
    /// counts; one file per server and account, mode 0600). Default:
    /// $XDG_STATE_HOME/tcpchat, else ~/.local/state/tcpchat
    #[arg(long, value_name = "DIR", env = "TCPCHAT_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

fn parse_name(name: &str) -> Result<Username, String> {
    Username::parse(name).map_err(|err| format!("{err} ({NAME_RULES})"))
}

/// Whether this run takes over the terminal: not asked for `--plain`, and both stdin and
/// stdout are terminals.
pub fn full_screen(args: &ConnectArgs) -> bool {
    !args.plain && std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// Runs the client until the user quits.
///
/// # Errors
/// When connecting or logging in is impossible in plain mode, or the terminal fails.
pub fn run(args: ConnectArgs) -> anyhow::Result<ExitCode> {
    // A CA file that cannot be read is a problem with the input, as a wrong address is.
    let server = Server::new(&args.server, args.ca.as_deref())
        .map_err(|e| crate::UsageError(e.to_string()))?;
    let plain = !full_screen(&args);
    let passwords = passwords(args.password_fd)?;
    if plain && args.login && passwords.current.is_none() {
        return Err(crate::UsageError(format!(
            "--login in plain mode needs the password: give it with {}",
            plain::PASSWORD_SOURCES
        ))
        .into());
    }
    let mut config = if plain {
        Config::script(args.name)
    } else {
        Config::interactive(args.name)
    };
    if !args.classic {
        config = config.extended();
    }
    config.ask_password = args.login;
    config.keep_state = !args.classic;
    config.state_dir = args.state_dir;
    config.password = passwords.current.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        if plain {
            let input = plain::stdin_lines();
            let mut stdout = std::io::stdout().lock();
            plain::run_with_passwords(&server, config, passwords, input, &mut stdout).await?;
        } else {
            tcpchat_tui::run(&server, config).await?;
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The passwords given for this run: from `--password-fd`, else from the environment. Each is
/// checked against the protocol's rules here, so that a bad one is a usage error before
/// anything is sent.
fn passwords(fd: Option<u32>) -> anyhow::Result<Passwords> {
    let (current, new) = match fd {
        Some(fd) => {
            let text = read_fd(fd)?;
            let mut lines = text.lines();
            let current = lines.next().map(str::to_owned);
            (current, lines.next().map(str::to_owned))
        }
        None => (env(PASSWORD_ENV)?, env(NEW_PASSWORD_ENV)?),
    };
    let check = |text: Option<String>, what: &str| -> anyhow::Result<Option<Secret>> {
        text.filter(|t| !t.is_empty())
            .map(|t| Secret::parse(&t))
            .transpose()
            .map_err(|err| crate::UsageError(format!("{what}: {err}")).into())
    };
    Ok(Passwords {
        current: check(current, "the password")?,
        new: check(new, "the new password")?,
    })
}

fn env(key: &str) -> anyhow::Result<Option<String>> {
    match std::env::var(key) {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(crate::UsageError(format!("{key} is not UTF-8")).into())
        }
    }
}

/// Everything on file descriptor `fd` (up to a few KiB), through `/dev/fd` rather than
/// adopting the descriptor, which would need `unsafe`.
fn read_fd(fd: u32) -> anyhow::Result<String> {
    let path = format!("/dev/fd/{fd}");
    let file = std::fs::File::open(&path).map_err(|err| {
        crate::UsageError(format!("--password-fd {fd}: cannot open {path}: {err}"))
    })?;
    let mut text = String::new();
    file.take(PASSWORD_FD_BYTES)
        .read_to_string(&mut text)
        .map_err(|err| crate::UsageError(format!("--password-fd {fd}: {err}")))?;
    Ok(text)
}
