//! Coordinating a run: probe the target, spread the clients over processes, move every
//! share through the phases together, merge what they report.
//!
//! One process can hold only so many sockets (20,000 descriptors here), so clients beyond
//! [`Options::clients_per_process`] run in worker processes: the same binary started with
//! a worker command line, given its [`Share`] as one JSON line on stdin, then each new
//! [`Phase`] as a line; it answers with [`ShareEvent`]s as JSON lines on stdout. Histograms
//! travel as bucket lists and are merged exactly.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};

use crate::counters::Counters;
use crate::dialect::{Codec, Dialect, Event, Refusal};
use crate::message::MIN_BODY_BYTES;
use crate::plan::{Plan, Scenario, Share};
use crate::report::{self, Report};
use crate::share::{run_share, Phase, ShareEvent};
use crate::BenchError;

/// How to run a benchmark.
#[derive(Debug, Clone)]
pub struct Options {
    pub plan: Plan,
    /// The server's process id, to read its resident memory from `/proc`.
    pub server_pid: Option<u32>,
    /// Most clients one process holds; more are spread over worker processes.
    pub clients_per_process: usize,
    /// Program and arguments that start a worker (see [`run_worker`]). Needed only when
    /// the clients do not fit in one process.
    pub worker_command: Option<(PathBuf, Vec<OsString>)>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// A tcpchat server's metrics endpoint: its delivery histogram is scraped before and
    /// after the measured phase and reported beside the bench's latency.
    pub metrics: Option<crate::server_side::MetricsUrl>,
}

/// Runs the benchmark and returns its report.
///
/// # Errors
/// Invalid options, an unreachable or wrong target, clients that could not log in for a
/// message scenario, or a worker process that failed.
pub fn run(options: Options) -> Result<Report, BenchError> {
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)?;
    runtime.block_on(coordinate(options))
}

/// The worker side: reads a [`Share`] and then phases from stdin, writes events to stdout.
///
/// # Errors
/// The runtime cannot start, or stdin does not carry a share.
pub fn run_worker() -> Result<(), BenchError> {
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)?;
    let result = runtime.block_on(async {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        let first = lines.next_line().await.map_err(BenchError::Worker)?;
        let share: Share = first
            .as_deref()
            .and_then(|l| serde_json::from_str(l).ok())
            .ok_or_else(|| {
                BenchError::Usage("a worker expects its share as JSON on stdin".into())
            })?;
        let (phase_tx, phase_rx) = watch::channel(Phase::Wait);
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(p) = serde_json::from_str::<Phase>(&line) {
                    let _ = phase_tx.send(p);
                }
            }
            // Stop was sent, or the coordinator went away: either way, stop, and keep the
            // sender alive so the share drains instead of seeing a closed channel.
            let _ = phase_tx.send(Phase::Stop);
            std::future::pending::<()>().await;
        });
        tokio::spawn(run_share(share, phase_rx, tx));
        let mut out = tokio::io::stdout();
        while let Some(event) = rx.recv().await {
            let done = matches!(event, ShareEvent::Done(_));
            // Serializing plain data cannot fail.
            let mut line = serde_json::to_vec(&event).expect("serializable");
            line.push(b'\n');
            if out.write_all(&line).await.is_err() {
                break;
            }
            let _ = out.flush().await;
            if done {
                break;
            }
        }
        Ok(())
    });
    // The stdin reader may still be blocked in a read; do not wait for it.
    runtime.shutdown_background();
    result
}

/// Every client is a socket, and the common default soft limit (1024) would cap a process
/// far below [`Options::clients_per_process`]: raise the soft limit to the hard one, the same
/// way `tcpchat serve` does (the `rlimit` crate). A failure is not fatal: clients beyond the
/// limit fail to connect and are counted as such.
fn raise_fd_limit() {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(error = %e, "cannot raise the open-file limit");
    }
}

fn validate(o: &Options) -> Result<(), BenchError> {
    let p = &o.plan;
    let usage = |m: String| Err(BenchError::Usage(m));
    if p.clients == 0 {
        return usage("--clients must be at least 1".into());
    }
    if p.size < MIN_BODY_BYTES {
        return usage(format!("--size must be at least {MIN_BODY_BYTES} bytes (room for the sequence number and time stamp)"));
    }
    if o.clients_per_process < 2 {
        return usage("--clients-per-process must be at least 2".into());
    }
    match p.scenario {
        Scenario::Throughput { window } | Scenario::Fanin { window } if window == 0 => {
            return usage("--window must be at least 1".into());
        }
        Scenario::Latency { rate }
        | Scenario::ListSend { rate, .. }
        | Scenario::Room { rate, .. }
            if !(rate > 0.0 && rate.is_finite()) =>
        {
            return usage("--rate must be a positive number of messages per second".into());
        }
        Scenario::ListSend {
            list_rate: Some(r), ..
        } if !(r > 0.0 && r.is_finite()) => {
            return usage("--list-rate must be a positive number of LISTs per second".into());
        }
        Scenario::ListSend { .. } if p.dialect != Dialect::Classic => {
            return usage(
                "list-send speaks the classic protocol only (IRC has no LIST of users)".into(),
            );
        }
        Scenario::ListSend { listers, .. } if listers == 0 || listers >= p.clients => {
            return usage(format!(
                "--listers must be at least 1 and fewer than --clients ({})",
                p.clients
            ));
        }
        Scenario::ListSend { .. } if p.scenario.senders(p.clients) < 2 => {
            return usage(
                "list-send needs at least one sending pair besides the listers: raise --clients or lower --listers".into(),
            );
        }
        _ => {}
    }
    match p.scenario {
        Scenario::Throughput { .. } | Scenario::Latency { .. }
            if p.clients < 2 || p.clients % 2 == 1 =>
        {
            usage(format!(
                "{} runs clients in pairs: --clients must be even and at least 2",
                p.scenario.name()
            ))
        }
        Scenario::Room { senders, .. } if p.clients < 2 || senders == 0 || senders > p.clients => {
            usage(format!(
                "room needs at least 2 clients and --senders from 1 to --clients ({})",
                p.clients
            ))
        }
        Scenario::Room { .. } if p.clients > o.clients_per_process => usage(format!(
            "room keeps all its members in one process: at most --clients-per-process ({})",
            o.clients_per_process
        )),
        Scenario::Fanin { .. } if p.clients < 2 => usage("fanin needs at least 2 clients".into()),
        Scenario::Fanin { .. } if p.clients > o.clients_per_process => usage(format!(
            "fanin keeps all its clients in one process: at most --clients-per-process ({})",
            o.clients_per_process
        )),
        _ => Ok(()),
    }
}

/// Logs one client in and out, to turn a bad target into one clear message before
/// thousands of clients hit it.
async fn probe(plan: &Plan) -> Result<(), BenchError> {
    let target = plan.target;
    let bad = |why: String| BenchError::Target { target, why };
    let tcp = match tokio::time::timeout(plan.login_timeout, tokio::net::TcpStream::connect(target))
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(bad(
                "connection refused (is the server running, and on this port?)".into(),
            ));
        }
        Ok(Err(e)) => return Err(bad(format!("cannot connect: {e}"))),
        Err(_) => {
            return Err(bad(format!(
                "no connection within {:?} (firewall? wrong host?)",
                plan.login_timeout
            )))
        }
    };
    if let Some(ws) = &plan.ws {
        let conn =
            match tokio::time::timeout(plan.login_timeout, crate::conn::Conn::ws(tcp, ws, 1 << 16))
                .await
            {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return Err(bad(e.to_string())),
                Err(_) => {
                    return Err(bad(format!(
                        "no WebSocket upgrade within {:?}",
                        plan.login_timeout
                    )))
                }
            };
        return probe_login(plan, ProbeStream::Ws(conn)).await;
    }
    let stream = match &plan.tls {
        None => tcpchat_tls::client::Stream::Plain(tcp),
        Some(tls) => {
            let connector = tcpchat_tls::client::Connector::new(tls.ca.as_deref())
                .map_err(|e| bad(e.to_string()))?;
            match tokio::time::timeout(plan.login_timeout, connector.connect(tcp, &tls.host)).await
            {
                Ok(Ok(s)) => tcpchat_tls::client::Stream::Tls(Box::new(s)),
                Ok(Err(e)) => return Err(bad(e.to_string())),
                Err(_) => {
                    return Err(bad(format!(
                        "no TLS handshake within {:?}",
                        plan.login_timeout
                    )))
                }
            }
        }
    };
    probe_login(plan, ProbeStream::Stream(stream)).await
}

/// The probe's connection: the clients' own [`crate::conn::Conn`] for WebSocket, tokio's
/// streams otherwise.
enum ProbeStream {
    Stream(tcpchat_tls::client::Stream),
    Ws(crate::conn::Conn),
}

impl ProbeStream {
    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            ProbeStream::Stream(s) => tokio::io::AsyncWriteExt::write_all(s, data).await,
            ProbeStream::Ws(c) => c.write_all(data).await,
        }
    }

    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            ProbeStream::Stream(s) => tokio::io::AsyncReadExt::read(s, buf).await,
            ProbeStream::Ws(c) => c.read(buf).await,
        }
    }
}

/// The probe's login on an open connection.
async fn probe_login(plan: &Plan, mut stream: ProbeStream) -> Result<(), BenchError> {
    use tcpchat_proto::Framer;
    let target = plan.target;
    let bad = |why: String| BenchError::Target { target, why };
    let name = format!("{}p", plan.tag);
    let codec = Codec::new(plan.dialect, &name);
    let mut out = Vec::new();
    codec.login(&mut out, &name);
    let other = match plan.dialect {
        Dialect::Classic => "irc",
        Dialect::Irc => "classic",
    };
    let wrong = |line: &[u8]| {
        bad(format!(
            "answered the login with {:?}, not the {:?} protocol (try --dialect {other})",
            String::from_utf8_lossy(line),
            plan.dialect
        ))
    };
    stream
        .write_all(&out)
        .await
        .map_err(|e| bad(format!("cannot send the login: {e}")))?;
    let mut framer = Framer::new(1 << 16);
    let mut buf = vec![0u8; 1 << 16];
    let deadline = tokio::time::Instant::now() + plan.login_timeout;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => {
                return Err(bad(format!(
                    "no login reply within {:?} (is it a chat server speaking the {:?} protocol? try --dialect {other})",
                    plan.login_timeout, plan.dialect
                )))
            }
            Ok(Err(e)) => return Err(bad(format!("connection lost during login: {e}"))),
            Ok(Ok(0)) => return Err(bad("closed the connection during login".into())),
            Ok(Ok(n)) => n,
        };
        let mut input = &buf[..n];
        while let Ok(Some(line)) = framer.next_line(&mut input) {
            match codec.parse(line) {
                Event::LoggedIn => return Ok(()),
                Event::Refused(Refusal::Busy) => {
                    return Err(bad(format!(
                        "refused the login: {}",
                        String::from_utf8_lossy(line)
                    )))
                }
                Event::Refused(Refusal::InUse) => {
                    return Err(bad(
                        "says the probe's name is in use (another bench still running?)".into(),
                    ))
                }
                Event::Ping(token) => {
                    let mut pong = Vec::new();
                    codec.pong(&mut pong, token);
                    let _ = stream.write_all(&pong).await;
                }
                Event::ProtocolError => return Err(wrong(line)),
                Event::Other if plan.dialect == Dialect::Classic => return Err(wrong(line)),
                _ => {}
            }
        }
    }
}

/// Resident memory of a process in bytes, from `/proc/PID/status`.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time (user + system) this process has used so far, from `getrusage`.
fn process_cpu() -> Option<Duration> {
    // SAFETY: a zeroed rusage is a valid value, and getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF and a pointer to a live rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).ok()?)
            .checked_add(Duration::from_micros(u64::try_from(t.tv_usec).ok()?))
    };
    time(usage.ru_utime)?.checked_add(time(usage.ru_stime)?)
}

struct Shares {
    phase: watch::Sender<Phase>,
    events: mpsc::UnboundedReceiver<(usize, ShareEvent)>,
    children: Vec<tokio::process::Child>,
    count: usize,
}

fn start_shares(o: &Options) -> Result<Shares, BenchError> {
    let plan = &o.plan;
    // Pairs never straddle two processes.
    let per = o.clients_per_process - o.clients_per_process % 2;
    let (phase, _) = watch::channel(Phase::Wait);
    let (tx, events) = mpsc::unbounded_channel();
    let mut children = Vec::new();
    let mut first = 0;
    let mut index = 0;
    while first < plan.clients {
        let count = per.min(plan.clients - first);
        let share = Share {
            plan: plan.clone(),
            first,
            count,
        };
        if index == 0 {
            let (stx, mut srx) = mpsc::unbounded_channel();
            tokio::spawn(run_share(share, phase.subscribe(), stx));
            let tx = tx.clone();
            tokio::spawn(async move {
                while let Some(e) = srx.recv().await {
                    let _ = tx.send((0, e));
                }
            });
        } else {
            let (program, args) = o.worker_command.clone().ok_or_else(|| {
                BenchError::Usage(format!(
                    "{} clients do not fit in one process (at most {per}); worker processes are not available here",
                    plan.clients
                ))
            })?;
            let mut child = tokio::process::Command::new(&program)
                .args(&args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(BenchError::Worker)?;
            let mut stdin = child
                .stdin
                .take()
                .ok_or_else(|| BenchError::Usage("worker stdin".into()))?;
            let stdout = child
                .stdout
                .take()
                .ok_or_else(|| BenchError::Usage("worker stdout".into()))?;
            let mut phases = phase.subscribe();
            tokio::spawn(async move {
                let mut line = serde_json::to_vec(&share).expect("serializable");
                line.push(b'\n');
                if stdin.write_all(&line).await.is_err() {
                    return;
                }
                loop {
                    let p = *phases.borrow_and_update();
                    let mut line = serde_json::to_vec(&p).expect("serializable");
                    line.push(b'\n');
                    if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
                        return;
                    }
                    // Stop is the last phase; closing stdin lets the worker exit.
                    if p == Phase::Stop || phases.changed().await.is_err() {
                        return;
                    }
                }
            });
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                let mut done = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<ShareEvent>(&line) {
                        Ok(e) => {
                            done |= matches!(e, ShareEvent::Done(_));
                            let _ = tx.send((index, e));
                        }
                        Err(_) => {
                            let _ = tx.send((
                                index,
                                ShareEvent::Failed(format!("worker {index} wrote {line:?}")),
                            ));
                        }
                    }
                }
                if !done {
                    let _ = tx.send((
                        index,
                        ShareEvent::Failed(format!("worker {index} ended early")),
                    ));
                }
            });
            children.push(child);
        }
        first += count;
        index += 1;
    }
    Ok(Shares {
        phase,
        events,
        children,
        count: index,
    })
}

fn bar(o: &Options) -> ProgressBar {
    if !o.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(o.plan.clients as u64);
    // The template is a constant that indicatif accepts.
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix:>8} [{elapsed_precise}] {wide_bar} {msg}")
            .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

async fn coordinate(o: Options) -> Result<Report, BenchError> {
    validate(&o)?;
    probe(&o.plan).await?;
    let plan = &o.plan;
    let rss_start = o.server_pid.and_then(resident_bytes);
    let mut shares = start_shares(&o)?;
    let bar = bar(&o);
    // Each share's latest progress; their merge is the run's.
    let mut counts = vec![Counters::default(); shares.count];
    let sum = |counts: &[Counters]| Counters::sum(counts);

    // Login phase.
    bar.set_prefix("login");
    let login_started = Instant::now();
    let _ = shares.phase.send(Phase::Login);
    let mut login = Counters::default();
    let mut logged_shares = 0;
    while logged_shares < shares.count {
        let (i, event) = recv(&mut shares.events).await?;
        match event {
            ShareEvent::Progress(c) => {
                counts[i] = c;
                let t = sum(&counts);
                bar.set_position(t.logins_done());
                bar.set_message(format!("{} in, {} failed", t.logged_in, t.failures.total()));
            }
            ShareEvent::LoggedIn(l) => {
                logged_shares += 1;
                login.merge(&l);
            }
            ShareEvent::Done(_) => {}
            ShareEvent::Failed(why) => return Err(BenchError::Worker(std::io::Error::other(why))),
        }
    }
    let login_secs = login_started.elapsed().as_secs_f64();
    let failed = login.failures.total();
    if login.logged_in == 0 {
        let _ = shares.phase.send(Phase::Stop);
        return Err(BenchError::Target {
            target: plan.target,
            why: format!(
                "no client could log in; first failure: {}",
                login.first_failure.as_deref().unwrap_or("unknown")
            ),
        });
    }
    if plan.scenario.sends() && failed > 0 {
        let _ = shares.phase.send(Phase::Stop);
        return Err(BenchError::Login {
            failed,
            clients: plan.clients,
            first: login.first_failure.clone().unwrap_or_default(),
        });
    }
    let rss_logged_in = o.server_pid.and_then(resident_bytes);

    // Measured phase.
    let duration = match plan.scenario {
        Scenario::Connect => Duration::ZERO,
        _ => plan.duration,
    };
    bar.set_prefix(plan.scenario.name());
    bar.set_length(duration.as_millis().max(1) as u64);
    bar.set_position(0);
    let scraped_before = match &o.metrics {
        Some(url) => Some(
            crate::server_side::scrape(url)
                .await
                .map_err(|why| BenchError::Usage(format!("--metrics: {why}")))?,
        ),
        None => None,
    };
    // The bench's own CPU over the measured phase, when every client runs in this process.
    let cpu_before = shares.children.is_empty().then(process_cpu).flatten();
    let run_started = Instant::now();
    let _ = shares.phase.send(Phase::Run);
    let mut timeline = Vec::new();
    let mut last = (0.0, sum(&counts).delivered);
    let mut rss_peak = rss_logged_in;
    let mut sample = tokio::time::interval(Duration::from_millis(250));
    sample.tick().await;
    let end = tokio::time::Instant::now() + duration;
    loop {
        tokio::select! {
            received = recv(&mut shares.events) => {
                let (i, event) = received?;
                match event {
                    ShareEvent::Progress(c) => counts[i] = c,
                    ShareEvent::Failed(why) => return Err(BenchError::Worker(std::io::Error::other(why))),
                    _ => {}
                }
            }
            _ = sample.tick() => {
                let t = run_started.elapsed().as_secs_f64();
                let d = sum(&counts).delivered;
                timeline.push((t, (d - last.1) as f64 / (t - last.0)));
                last = (t, d);
                if let Some(pid) = o.server_pid {
                    rss_peak = rss_peak.max(resident_bytes(pid));
                }
                let total = sum(&counts);
                bar.set_position(run_started.elapsed().as_millis() as u64);
                bar.set_message(format!("{} sent, {} delivered", total.sent, total.delivered));
            }
            () = tokio::time::sleep_until(end) => break,
        }
    }
    let measured_secs = run_started.elapsed().as_secs_f64();
    let bench_cpu = cpu_before
        .zip(process_cpu())
        .map(|(before, after)| after.saturating_sub(before).as_secs_f64() / measured_secs);
    let rss_end = o.server_pid.and_then(resident_bytes);
    rss_peak = rss_peak.max(rss_end);

    // Stop and drain.
    bar.set_prefix("drain");
    let _ = shares.phase.send(Phase::Stop);
    // What the shares counted, login included: the report's totals are exactly their sum.
    let mut totals = Counters::default();
    let mut done = 0;
    let patience = plan.drain_timeout + Duration::from_secs(10);
    while done < shares.count {
        let (i, event) = match tokio::time::timeout(patience, recv(&mut shares.events)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(BenchError::Worker(std::io::Error::other(
                    "clients did not finish after the run",
                )))
            }
        };
        match event {
            ShareEvent::Progress(c) => counts[i] = c,
            ShareEvent::Done(r) => {
                done += 1;
                totals.merge(&r);
            }
            ShareEvent::Failed(why) => return Err(BenchError::Worker(std::io::Error::other(why))),
            ShareEvent::LoggedIn(_) => {}
        }
    }
    bar.finish_and_clear();
    for mut child in shares.children {
        let _ = child.wait().await;
    }
    // After the drain: every delivery of the run has been written by then.
    let server_latency = match (&o.metrics, &scraped_before) {
        (Some(url), Some(before)) => match crate::server_side::scrape(url).await {
            Ok(after) => Some(crate::server_side::ServerLatency::between(before, &after)),
            Err(why) => {
                tracing::warn!(%why, "--metrics: the scrape after the run failed");
                None
            }
        },
        _ => None,
    };
    Ok(report::build(report::Inputs {
        plan,
        server_pid: o.server_pid,
        totals,
        login_secs,
        measured_secs,
        timeline,
        rss_start,
        rss_logged_in,
        rss_end,
        rss_peak,
        processes: shares.count,
        server_latency,
        bench_cpu,
    }))
}

async fn recv(
    events: &mut mpsc::UnboundedReceiver<(usize, ShareEvent)>,
) -> Result<(usize, ShareEvent), BenchError> {
    events
        .recv()
        .await
        .ok_or_else(|| BenchError::Worker(std::io::Error::other("all clients ended unexpectedly")))
}
