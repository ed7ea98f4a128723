//! The `tcpchat` binary: command-line parsing, logging, exit codes. Nothing else lives here;
//! each subcommand's work is one call into its library crate.
//!
//! Exit codes: 0 success, 1 the work failed (or, for checkers, found problems), 2 invalid
//! usage or settings.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod accounts;
mod bench;
mod cert;
mod check;
mod check_client;
mod connect;
mod logging;
mod manual;
mod serve;
mod trace;

/// A chat system for the classic line protocol over TCP: server, client, conformance
/// checker, packet-trace analyzer and load generator.
#[derive(Debug, Parser)]
#[command(
    name = "tcpchat",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(flatten)]
    log: logging::LogArgs,
    #[command(subcommand)]
    command: Command,
}

// Built once per run from the arguments, never moved in a loop: boxing the large variant
// would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the chat server (default 0.0.0.0:5378, everything in one process).
    Serve(Box<serve::ServeArgs>),
    /// Chat: a full-screen terminal client, or a plain line mode for scripts and pipes.
    Connect(connect::ConnectArgs),
    /// Load any chat server (classic or IRC): connections, throughput, latency, memory.
    Bench(bench::BenchArgs),
    /// Check any server against the protocol: named cases, pass/fail table, what to fix.
    Check(check::CheckArgs),
    /// Check anyone's chat client program: plays the server, types the user's side, says
    /// what the client gets wrong.
    CheckClient(check_client::CheckClientArgs),
    /// Explain a pcap/pcapng capture of the chat protocol: handshake, messages, teardown.
    Trace(trace::TraceArgs),
    /// Write a self-signed TLS certificate and key for trying TLS without a CA.
    Cert(cert::CertArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to stdout.
    Completions(manual::CompletionsArgs),
    /// Print the man page, tcpchat(1), in roff to stdout.
    Man(manual::ManArgs),
    /// List, lock, unlock and remove accounts in a server's (or a cluster's) account store.
    Accounts(accounts::AccountsArgs),
}

/// An error in what the user asked for (settings, arguments, files): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The full-screen client owns the terminal: logs drawn over it would wreck the screen,
    // so there they go to --log-file or nowhere.
    let screen_busy = matches!(&cli.command, Command::Connect(args) if connect::full_screen(args));
    logging::init(&cli.log, screen_busy);
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Connect(args) => connect::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Check(args) => check::run(args),
        Command::CheckClient(args) => check_client::run(args),
        Command::Trace(args) => trace::run(args),
        Command::Cert(args) => cert::run(args),
        Command::Completions(args) => manual::completions::<Cli>(&args),
        Command::Man(args) => manual::man::<Cli>(&args),
        Command::Accounts(args) => accounts::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => report(&err),
    }
}

fn report(err: &anyhow::Error) -> ExitCode {
    // A closed stdout (`tcpchat trace x.pcap | head`) is not an error worth a message.
    let broken_pipe = err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return ExitCode::SUCCESS;
    }
    eprintln!("tcpchat: {err:#}");
    if err.chain().any(|e| e.is::<UsageError>()) {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}
