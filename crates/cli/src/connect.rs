//! `tcpchat connect`: picks the full-screen UI or the plain line mode and hands over to the
//! client crates. Nothing else lives here.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use tcpchat_client::net::Server;
use tcpchat_client::{plain, Config, NAME_RULES};
use tcpchat_proto::Username;

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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        if plain {
            let input = plain::stdin_lines();
            let mut stdout = std::io::stdout().lock();
            plain::run(&server, Config::script(args.name), input, &mut stdout).await?;
        } else {
            tcpchat_tui::run(&server, Config::interactive(args.name)).await?;
        }
        Ok(ExitCode::SUCCESS)
    })
}
