//! `tcpchat bench`: load scenarios against any chat server, with a table, JSON and plots.
//!
//! Parsing lives here; the scenarios, their defaults (shown in `--help` from
//! `tcpchat_bench::ScenarioKind::defaults`) and the load itself are the library's. When the
//! clients do not fit in one process, the library re-runs this binary as
//! `tcpchat bench --worker` (a hidden flag) for each extra share of them.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, ValueEnum};
use tcpchat_bench::{BenchError, Choices, Defaults, Dialect, Options, Plan, ScenarioKind};

use crate::UsageError;

/// The IRC port, used when `--dialect irc` is given without one.
const IRC_PORT: u16 = 6667;

/// A scenario: one of the library's [`ScenarioKind`]s, or `abuse`, which runs on its own
/// ([`tcpchat_bench::abuse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScenarioArg {
    Load(ScenarioKind),
    Abuse,
    Accounts,
}

/// `accounts`' accounts when `--clients` is not given: each costs the server two hashes.
const ACCOUNTS_CLIENTS: usize = 200;
/// `accounts`' registrations and logins at once when `--login-concurrency` is not given.
const ACCOUNTS_CONCURRENCY: usize = 64;

/// `abuse`'s canary rate when `--rate` is not given: a bot's pace, under any command rate.
const ABUSE_CANARY_RATE: f64 = 10.0;
/// `abuse`'s measured phase when `--duration` is not given: short, so a run with limits on
/// and one with limits off fit in a minute on a shared machine.
const ABUSE_DURATION: Duration = Duration::from_secs(10);

/// The IRC-over-TLS port (RFC 7194), for `--dialect irc` and a `tls://` target without one.
const IRC_TLS_PORT: u16 = 6697;

/// The scenario names and one-line help, from the library.
fn scenario_parser() -> impl TypedValueParser<Value = ScenarioArg> {
    let abuse = PossibleValue::new("abuse").help(
        "One client floods SENDs while a canary pair chats at --rate (default 10/s): the \
         canary's latency and what became of the flood; run it with the server's limits on \
         and off",
    );
    let accounts = PossibleValue::new("accounts").help(
        "Register --clients accounts, then log them all in at once with LOGIN while a canary \
         pair chats at --rate: password logins/s and the canary's latency before and during \
         the burst (run the server with --login-burst 1000000)",
    );
    PossibleValuesParser::new(
        ScenarioKind::ALL
            .map(|k| PossibleValue::new(k.name()).help(k.about()))
            .into_iter()
            .chain([abuse, accounts]),
    )
    // The parser accepts only the names listed above.
    .map(|name| match ScenarioKind::from_name(&name) {
        Some(kind) => ScenarioArg::Load(kind),
        None if name == "accounts" => ScenarioArg::Accounts,
        None => ScenarioArg::Abuse,
    })
}

/// `what`, then the scenarios' defaults for it, e.g. "Clients [default: connect 2000, ...]".
fn with_defaults(what: &str, value: impl Fn(&Defaults) -> Option<String>) -> String {
    format!("{what} [default: {}]", ScenarioKind::defaults_text(value))
}

fn duration_text(d: Duration) -> String {
    humantime::format_duration(d).to_string()
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
    /// Server to load, [tls://]HOST[:PORT]; the port defaults to 5378 (classic) or 6667 (irc),
    /// 5379 or 6697 with tls://. For a cluster, its nodes separated by commas: clients connect
    /// to them in turn (all tls:// or all plain, verified as the first node's host). Or a
    /// server's web listener, ws://HOST:PORT[/PATH] (path /ws by default): every client
    /// upgrades to a WebSocket and sends one line per text message
    #[arg(
        value_name = "[tls://]HOST[:PORT][,...] | ws://HOST:PORT[/PATH]",
        required_unless_present = "worker"
    )]
    target: Option<String>,

    /// For tls://: trust the certificates in this PEM file instead of the system's roots
    #[arg(long, value_name = "FILE", env = "TCPCHAT_CA")]
    ca: Option<std::path::PathBuf>,

    /// What load to generate
    #[arg(value_parser = scenario_parser(), required_unless_present = "worker")]
    scenario: Option<ScenarioArg>,

    /// Protocol to speak
    #[arg(long, value_enum, default_value = "classic")]
    dialect: DialectArg,

    #[arg(long, short = 'n', value_name = "N",
          help = with_defaults("Clients (users online)", |d| Some(d.clients.to_string())))]
    clients: Option<usize>,

    #[arg(long, short = 'w', value_name = "W",
          help = with_defaults("Messages each sender keeps in flight", |d| d.window.map(|w| w.to_string())))]
    window: Option<u64>,

    #[arg(long, short = 'r', value_name = "R",
          help = with_defaults("Messages per second offered over all senders", |d| d.rate.map(|r| r.to_string())))]
    rate: Option<f64>,

    #[arg(long, value_name = "N",
          help = with_defaults("Clients sending LIST", |d| d.listers.map(|l| l.to_string())))]
    listers: Option<usize>,

    /// LISTs per second offered over all listers, each its share on a fixed schedule; a
    /// lister whose last LIST is unanswered skips its slot (reported as skipped). Without
    /// it the listers run a closed loop, the next LIST as soon as the last is answered:
    /// that finds the most LISTs/s the server can answer, but a faster server then gets
    /// more LISTs, so compare two servers' SEND latency with --list-rate
    #[arg(long, value_name = "R")]
    list_rate: Option<f64>,

    #[arg(long, value_name = "N",
          help = with_defaults("Room members sending to the room", |d| d.senders.map(|s| s.to_string())))]
    senders: Option<usize>,

    #[arg(long, short = 'd', value_name = "DURATION",
          help = with_defaults("Length of the measured phase, e.g. 10s (hold time for idle)", |d| Some(duration_text(d.duration))))]
    duration: Option<humantime::Duration>,

    #[arg(long, value_name = "BYTES",
          help = with_defaults("Message body size in bytes (at least 48)", |d| Some(d.size.to_string())))]
    size: Option<usize>,

    /// The server's process id: report its resident memory before, during and after
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,

    /// A tcpchat server's metrics endpoint (http://HOST:PORT/metrics, its
    /// --metrics-listen): report its own read-to-write delivery latency over the run beside
    /// the bench's
    #[arg(long, value_name = "URL")]
    metrics: Option<tcpchat_bench::MetricsUrl>,

    /// Print the report as JSON instead of a table
    #[arg(long)]
    json: bool,

    /// Draw the latency percentile curve and delivered messages/s over time into this SVG
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,

    #[arg(long, value_name = "DURATION",
          help = with_defaults("How long one client may take to connect and log in", |d| Some(duration_text(d.login_timeout))))]
    login_timeout: Option<humantime::Duration>,

    #[arg(long, value_name = "N",
          help = with_defaults("Logins in progress at once per process", |d| Some(match d.login_concurrency {
              usize::MAX => "all".to_owned(),
              n => n.to_string(),
          })))]
    login_concurrency: Option<usize>,

    #[arg(long, value_name = "DURATION",
          help = with_defaults("After the measured phase, how long to wait for messages still in flight", |d| Some(duration_text(d.drain_timeout))))]
    drain_timeout: Option<humantime::Duration>,

    /// Open-loop runs: the pacing thread's shortest sleep. It wakes at the next message's
    /// time or this long after its last wakeup, whichever is later, and sends all that is
    /// due: fewer wakeups (each costs the bench CPU) for at most this much of its own lag.
    /// 0: a wakeup per message
    #[arg(long, value_name = "DURATION", default_value = "100us")]
    pace_tick: humantime::Duration,

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

fn resolve(
    target: &str,
    dialect: DialectArg,
) -> anyhow::Result<(SocketAddr, tcpchat_proto::ServerAddress)> {
    let (port, tls_port) = match dialect {
        DialectArg::Classic => (tcpchat_proto::DEFAULT_PORT, tcpchat_proto::DEFAULT_TLS_PORT),
        DialectArg::Irc => (IRC_PORT, IRC_TLS_PORT),
    };
    let server = tcpchat_proto::ServerAddress::parse_with_defaults(target, port, tls_port)
        .map_err(|e| usage(e.to_string()))?;
    let addr = (server.host(), server.port())
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {target:?}"))?
        .next()
        .ok_or_else(|| usage(format!("{target:?} resolves to no address")))?;
    Ok((addr, server))
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
    if let Some(url) = strip_scheme(target, "ws://") {
        let (ws, addr) = resolve_ws(url)?;
        return run_load(&args, scenario, addr, Vec::new(), None, Some(ws));
    }
    if strip_scheme(target, "wss://").is_some() {
        return Err(usage(
            "bench speaks ws:// only (plain WebSocket); for TLS, load the tls:// listener",
        ));
    }
    let resolved = target
        .split(',')
        .map(|t| resolve(t.trim(), args.dialect))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let tls = resolved[0].1.is_tls();
    if resolved.iter().any(|(_, a)| a.is_tls() != tls) {
        return Err(usage(format!(
            "the nodes must all be tls:// or all plain: {target}"
        )));
    }
    if !tls && args.ca.is_some() {
        return Err(usage(format!(
            "--ca is for TLS servers: write the address as tls://{}",
            resolved[0].1
        )));
    }
    let tls = tls.then(|| tcpchat_bench::TlsTarget {
        host: resolved[0].1.host().to_owned(),
        ca: args.ca.clone(),
    });
    let mut targets: Vec<SocketAddr> = resolved.iter().map(|(a, _)| *a).collect();
    let target = targets.remove(0);
    run_load(&args, scenario, target, targets, tls, None)
}

/// `text` without its URL scheme `scheme` (any case), if it starts with it.
fn strip_scheme<'t>(text: &'t str, scheme: &str) -> Option<&'t str> {
    let head = text.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme)
        .then(|| &text[scheme.len()..])
}

/// A `ws://` URL without its scheme: `HOST[:PORT][/PATH]`, port 80 and path `/ws` when not
/// given.
fn resolve_ws(url: &str) -> anyhow::Result<(tcpchat_bench::WsTarget, SocketAddr)> {
    let (authority, path) = match url.find('/') {
        Some(at) => (&url[..at], &url[at..]),
        None => (url, "/ws"),
    };
    if authority.is_empty() || authority.contains(',') {
        return Err(usage(format!(
            "ws://{url}: a ws:// target is one web listener, ws://HOST:PORT[/PATH]"
        )));
    }
    let host_port = tcpchat_proto::HostPort::parse_with_default(authority, 80)
        .map_err(|e| usage(format!("ws://{url}: {e}")))?;
    let addr = (host_port.host(), host_port.port())
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {authority:?}"))?
        .next()
        .ok_or_else(|| usage(format!("{authority:?} resolves to no address")))?;
    let ws = tcpchat_bench::WsTarget {
        host: authority.to_owned(),
        path: path.to_owned(),
    };
    Ok((ws, addr))
}

/// Runs a scenario (or `abuse`/`accounts`, which speak TCP only) against resolved targets.
fn run_load(
    args: &BenchArgs,
    scenario: ScenarioArg,
    target: SocketAddr,
    targets: Vec<SocketAddr>,
    tls: Option<tcpchat_bench::TlsTarget>,
    ws: Option<tcpchat_bench::WsTarget>,
) -> anyhow::Result<ExitCode> {
    let scenario = match (scenario, &ws) {
        (ScenarioArg::Load(kind), _) => kind,
        (ScenarioArg::Abuse | ScenarioArg::Accounts, Some(_)) => {
            return Err(usage(
                "abuse and accounts run over TCP only; give the server's TCP address",
            ))
        }
        (ScenarioArg::Abuse, None) => return run_abuse(args, target),
        (ScenarioArg::Accounts, None) => return run_accounts(args, target),
    };
    if ws.is_some() && args.dialect == DialectArg::Irc {
        return Err(usage("a ws:// target speaks the classic protocol only"));
    }
    let choices = Choices {
        clients: args.clients,
        window: args.window,
        rate: args.rate,
        listers: args.listers,
        list_rate: args.list_rate,
        senders: args.senders,
        duration: args.duration.map(Duration::from),
        size: args.size,
        login_timeout: args.login_timeout.map(Duration::from),
        login_concurrency: args.login_concurrency,
        drain_timeout: args.drain_timeout.map(Duration::from),
    };
    let mut plan = Plan::new(target, scenario, &choices, run_tag());
    plan.more_targets = targets;
    plan.tls = tls;
    plan.ws = ws;
    plan.dialect = match args.dialect {
        DialectArg::Classic => Dialect::Classic,
        DialectArg::Irc => Dialect::Irc,
    };
    plan.spread_sources = !args.no_spread;
    plan.pace_tick = args.pace_tick.into();
    let exe = std::env::current_exe().context("cannot find this program to start bench workers")?;
    let options = Options {
        plan,
        server_pid: args.server_pid,
        clients_per_process: args.clients_per_process,
        worker_command: Some((exe, vec!["bench".into(), "--worker".into()])),
        metrics: args.metrics.clone(),
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

/// Runs the `accounts` scenario and prints its report.
fn run_accounts(args: &BenchArgs, target: SocketAddr) -> anyhow::Result<ExitCode> {
    if args.dialect != DialectArg::Classic {
        return Err(usage("accounts speaks tcpchat's protocol only"));
    }
    if args.plot.is_some() {
        return Err(usage("accounts draws no plot: leave out --plot"));
    }
    let canary_rate = args.rate.unwrap_or(ABUSE_CANARY_RATE);
    if !(canary_rate > 0.0 && canary_rate.is_finite()) {
        return Err(usage(
            "--rate must be a positive number of messages per second",
        ));
    }
    let plan = tcpchat_bench::accounts::AccountsPlan {
        target,
        clients: args.clients.unwrap_or(ACCOUNTS_CLIENTS).max(1),
        concurrency: args
            .login_concurrency
            .unwrap_or(ACCOUNTS_CONCURRENCY)
            .max(1),
        canary_rate,
        login_timeout: args
            .login_timeout
            .map_or(Duration::from_secs(10), Duration::from),
        tag: run_tag(),
    };
    let report = tcpchat_bench::accounts::run_accounts(&plan)
        .map_err(|e| anyhow::Error::new(e).context("bench failed"))?;
    let text = if args.json {
        report.json()
    } else {
        report.table()
    };
    std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes())
        .context("cannot write the report")?;
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs the `abuse` scenario and prints its report.
fn run_abuse(args: &BenchArgs, target: SocketAddr) -> anyhow::Result<ExitCode> {
    if args.dialect != DialectArg::Classic {
        return Err(usage("abuse speaks the classic protocol only"));
    }
    if args.plot.is_some() {
        return Err(usage("abuse draws no plot: leave out --plot"));
    }
    let canary_rate = args.rate.unwrap_or(ABUSE_CANARY_RATE);
    if !(canary_rate > 0.0 && canary_rate.is_finite()) {
        return Err(usage(
            "--rate must be a positive number of messages per second",
        ));
    }
    let size = args.size.unwrap_or(64);
    if size < tcpchat_bench::MIN_BODY_BYTES {
        return Err(usage(format!(
            "--size must be at least {} bytes",
            tcpchat_bench::MIN_BODY_BYTES
        )));
    }
    let plan = tcpchat_bench::abuse::AbusePlan {
        target,
        duration: args.duration.map_or(ABUSE_DURATION, Duration::from),
        canary_rate,
        size,
        login_timeout: args
            .login_timeout
            .map_or(Duration::from_secs(10), Duration::from),
        tag: run_tag(),
    };
    let report = tcpchat_bench::abuse::run_abuse(&plan)
        .map_err(|e| anyhow::Error::new(e).context("bench failed"))?;
    let text = if args.json {
        report.json()
    } else {
        report.table()
    };
    std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes())
        .context("cannot write the report")?;
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
