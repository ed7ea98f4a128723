//! `tcpchat bench`: load scenarios against any chat server, with a table, JSON and plots.
//!
//! Parsing and defaults live here; the load itself is `tcpchat_bench::run`. When the
//! clients do not fit in one process, the library re-runs this binary as
//! `tcpchat bench --worker` (a hidden flag) for each extra share of them.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use tcpchat_bench::{BenchError, Dialect, Options, Plan, Scenario};

use crate::UsageError;

/// The IRC port, used when `--dialect irc` is given without one.
const IRC_PORT: u16 = 6667;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ScenarioArg {
    /// Log in N clients as fast as the server allows: logins/s, time until all are in,
    /// failures by kind
    Connect,
    /// Clients in pairs, each keeping --window messages in flight: delivered messages/s
    Throughput,
    /// Open loop at --rate messages/s over all clients: latency percentiles from each
    /// message's intended send time
    Latency,
    /// Every client sends to one hot recipient, each with --window in flight: queueing and
    /// backpressure
    Fanin,
    /// Hold N logged-in idle clients; with --server-pid, the server's memory per client
    Idle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DialectArg {
    /// tcpchat's line protocol: HELLO-FROM, SEND, DELIVERY
    Classic,
    /// IRC: NICK/USER, wait for 001, PRIVMSG, answer PING
    Irc,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Server to load, HOST[:PORT]; the port defaults to 5378 (classic) or 6667 (irc). For a
    /// cluster, its nodes separated by commas: clients connect to them in turn
    #[arg(value_name = "HOST[:PORT][,...]", required_unless_present = "worker")]
    target: Option<String>,

    /// What load to generate
    #[arg(value_enum, required_unless_present = "worker")]
    scenario: Option<ScenarioArg>,

    /// Protocol to speak
    #[arg(long, value_enum, default_value = "classic")]
    dialect: DialectArg,

    /// Clients [default: connect 2000, throughput 100, latency 200, fanin 100, idle 1000]
    #[arg(long, short = 'n', value_name = "N")]
    clients: Option<usize>,

    /// Messages each sender keeps in flight [default: throughput 64, fanin 8]
    #[arg(long, short = 'w', value_name = "W")]
    window: Option<u64>,

    /// Messages per second offered over all clients (latency)
    #[arg(long, short = 'r', value_name = "R", default_value_t = 20_000.0)]
    rate: f64,

    /// Length of the measured phase, e.g. 10s (throughput, latency, fanin; hold time for idle)
    #[arg(long, short = 'd', value_name = "DURATION", default_value = "10s")]
    duration: humantime::Duration,

    /// Message body size in bytes (at least 48)
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    size: usize,

    /// The server's process id: report its resident memory before, during and after
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,

    /// Print the report as JSON instead of a table
    #[arg(long)]
    json: bool,

    /// Draw the latency percentile curve and delivered messages/s over time into this SVG
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,

    /// How long one client may take to connect and log in
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    login_timeout: humantime::Duration,

    /// Logins in progress at once per process [default: all for connect, 500 otherwise]
    #[arg(long, value_name = "N")]
    login_concurrency: Option<usize>,

    /// After the measured phase, how long to wait for messages still in flight
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    drain_timeout: humantime::Duration,

    /// Most clients per process; more are spread over worker processes (each process can
    /// open only so many sockets)
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    clients_per_process: usize,

    /// Connect from 127.0.0.1 only, instead of spreading source addresses over
    /// 127.0.0.0/8 (which keeps local ports from running out on loopback)
    #[arg(long)]
    no_spread: bool,

    /// No progress bar
    #[arg(long, short = 'q')]
    quiet: bool,

    /// Internal: run one share of a bench's clients, driven over stdin/stdout
    #[arg(long, hide = true)]
    worker: bool,
}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

fn resolve(target: &str, dialect: DialectArg) -> anyhow::Result<SocketAddr> {
    let port = match dialect {
        DialectArg::Classic => tcpchat_proto::DEFAULT_PORT,
        DialectArg::Irc => IRC_PORT,
    };
    let server = tcpchat_proto::HostPort::parse_with_default(target, port)
        .map_err(|e| usage(e.to_string()))?;
    (server.host(), server.port())
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {target:?}"))?
        .next()
        .ok_or_else(|| usage(format!("{target:?} resolves to no address")))
}

/// A short tag unique to this run, so its client names never collide with another run's
/// (names stay within IRC's usual 9-character nick limit up to 99,999 clients).
fn run_tag() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize ^ d.as_secs() as usize);
    let n = (nanos ^ std::process::id() as usize) % (26 * 36);
    let digits = b"abcdefghijklmnopqrstuvwxyz0123456789";
    format!("b{}{}", digits[n / 36] as char, digits[n % 36] as char)
}

/// Runs `tcpchat bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.worker {
        tcpchat_bench::run_worker().context("bench worker")?;
        return Ok(ExitCode::SUCCESS);
    }
    // clap enforces both when --worker is absent.
    let (Some(target), Some(scenario)) = (args.target.as_deref(), args.scenario) else {
        return Err(usage("HOST[:PORT] and SCENARIO are required"));
    };
    let mut targets = target
        .split(',')
        .map(|t| resolve(t.trim(), args.dialect))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let target = targets.remove(0);
    let scenario_kind = scenario;
    let scenario = match scenario {
        ScenarioArg::Connect => Scenario::Connect,
        ScenarioArg::Throughput => Scenario::Throughput {
            window: args.window.unwrap_or(64),
        },
        ScenarioArg::Latency => Scenario::Latency { rate: args.rate },
        ScenarioArg::Fanin => Scenario::Fanin {
            window: args.window.unwrap_or(8),
        },
        ScenarioArg::Idle => Scenario::Idle,
    };
    let clients = args.clients.unwrap_or(match scenario_kind {
        ScenarioArg::Connect => 2000,
        ScenarioArg::Throughput | ScenarioArg::Fanin => 100,
        ScenarioArg::Latency => 200,
        ScenarioArg::Idle => 1000,
    });
    let login_concurrency = args.login_concurrency.unwrap_or(match scenario_kind {
        ScenarioArg::Connect => usize::MAX,
        _ => 500,
    });
    let plan = Plan {
        target,
        more_targets: targets,
        dialect: match args.dialect {
            DialectArg::Classic => Dialect::Classic,
            DialectArg::Irc => Dialect::Irc,
        },
        scenario,
        clients,
        size: args.size,
        duration: Duration::from(args.duration),
        login_timeout: Duration::from(args.login_timeout),
        login_concurrency,
        drain_timeout: Duration::from(args.drain_timeout),
        tag: run_tag(),
        spread_sources: !args.no_spread,
    };
    let exe = std::env::current_exe().context("cannot find this program to start bench workers")?;
    let options = Options {
        plan,
        server_pid: args.server_pid,
        clients_per_process: args.clients_per_process,
        worker_command: Some((exe, vec!["bench".into(), "--worker".into()])),
        progress: !args.quiet && !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let report = match tcpchat_bench::run(options) {
        Ok(r) => r,
        Err(e @ BenchError::Usage(_)) => return Err(usage(e.to_string())),
        Err(e) => return Err(anyhow::Error::new(e).context("bench failed")),
    };
    if let Some(path) = &args.plot {
        report
            .plot(path)
            .map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", path.display()))?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        std::io::Write::write_all(&mut out, report.json().as_bytes())
            .context("cannot write the report")?;
    } else {
        std::io::Write::write_all(&mut out, report.table().as_bytes())
            .context("cannot write the report")?;
    }
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
