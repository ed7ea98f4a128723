//! The `accounts` scenario: password logins per second, and what a login burst costs the chat.
//!
//! Against a server offering the `accounts` extension (`docs/protocol.md`). First it
//! registers `clients` fresh accounts (`HELLO-FROM`, `REGISTER`; each is an argon2id hash on
//! the server), then starts a canary pair chatting at `--rate` (classic `SEND`s), waits a
//! baseline second, and logs every account in at once with `LOGIN` (`concurrency` at a time):
//! the logins/s of that burst is the figure, with how many were answered `THROTTLED 1` (the
//! hashing queue was full; retried after a short pause). The canary's latency is reported
//! twice: for messages due before the burst and for those due during it. Finally every
//! account is deleted again (`UNREGISTER`), so the server's store is left as it was.
//!
//! tcpchat's per-address password throttle (20, then 1 per 3 s) would stop a bench from one
//! address at once: run the server with `--login-burst 1000000` for it (the scenario says so
//! when it meets `THROTTLED` with more than 1 second). Self-contained like [`crate::abuse`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use crate::stats::{Latency, Summary};
use crate::BenchError;

/// The password every bench account gets.
const PASSWORD: &str = "bench-password-1";
/// Canary messages before the burst: its baseline.
const BASELINE: Duration = Duration::from_secs(1);
/// Pause before retrying an attempt answered `THROTTLED 1`.
const RETRY: Duration = Duration::from_millis(20);
/// After the burst, how long the canary's last messages may take to arrive.
const DRAIN: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Debug, Clone)]
pub struct AccountsPlan {
    pub target: SocketAddr,
    /// Accounts registered, then logged in in the burst.
    pub clients: usize,
    /// Registrations and logins in progress at once.
    pub concurrency: usize,
    /// The canary's messages per second.
    pub canary_rate: f64,
    /// How long one attempt may take, retries included.
    pub login_timeout: Duration,
    /// Prefix of every name.
    pub tag: String,
}

/// What the run saw.
#[derive(Debug, Clone, Serialize)]
pub struct AccountsReport {
    pub target: SocketAddr,
    pub accounts: usize,
    /// Seconds the registrations took, and their `THROTTLED 1` retries.
    pub register_secs: f64,
    pub register_retries: u64,
    /// Seconds the login burst took, logins per second, and `THROTTLED 1` retries.
    pub login_secs: f64,
    pub logins_per_sec: f64,
    pub login_retries: u64,
    pub canary_rate: f64,
    /// Canary latency for messages due before the burst, and during it.
    pub canary_before: Summary,
    pub canary_during: Summary,
    pub canary_sent: u64,
    pub canary_delivered: u64,
    pub problems: Vec<String>,
}

/// Runs the scenario on its own runtime.
///
/// # Errors
/// The target does not offer accounts, refuses a registration or login, or throttles this
/// address (the error says which setting to raise).
pub fn run_accounts(plan: &AccountsPlan) -> Result<AccountsReport, BenchError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)?;
    runtime.block_on(accounts(plan))
}

type Reader = BufReader<OwnedReadHalf>;

struct Conn {
    r: Reader,
    w: OwnedWriteHalf,
    target: SocketAddr,
}

impl Conn {
    async fn open(target: SocketAddr) -> Result<Self, BenchError> {
        let stream = TcpStream::connect(target)
            .await
            .map_err(|e| BenchError::Target {
                target,
                why: format!("cannot connect: {e}"),
            })?;
        stream.set_nodelay(true).ok();
        let (r, w) = stream.into_split();
        Ok(Self {
            r: BufReader::new(r),
            w,
            target,
        })
    }

    fn bad(&self, why: String) -> BenchError {
        BenchError::Target {
            target: self.target,
            why,
        }
    }

    /// Sends `line` and returns the reply.
    async fn ask(&mut self, line: &str) -> Result<String, BenchError> {
        self.w
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| self.bad(format!("cannot send: {e}")))?;
        let mut reply = String::new();
        match self.r.read_line(&mut reply).await {
            Ok(0) => Err(self.bad(format!("closed the connection after {line:?}"))),
            Ok(_) => Ok(reply.trim_end().to_owned()),
            Err(e) => Err(self.bad(format!("connection lost: {e}"))),
        }
    }

    /// [`Conn::ask`], again after a pause while the answer is `THROTTLED 1` (a full hashing
    /// queue), counting the retries. A longer throttle is the per-address or per-name budget:
    /// an error saying which setting to raise.
    async fn ask_hashed(&mut self, line: &str, retries: &AtomicU64) -> Result<String, BenchError> {
        loop {
            let reply = self.ask(line).await?;
            match reply.strip_prefix("THROTTLED ") {
                Some("1") => {
                    retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(RETRY).await;
                }
                Some(_) => {
                    return Err(self.bad(format!(
                        "answered {reply:?}: the server's password throttle stops a bench from one address; run it with --login-burst 1000000"
                    )))
                }
                None => return Ok(reply),
            }
        }
    }

    async fn negotiate(&mut self) -> Result<(), BenchError> {
        match self.ask("EXT accounts").await?.as_str() {
            "EXT-OK accounts" => Ok(()),
            other => Err(self.bad(format!(
                "answered EXT accounts with {other:?}: it does not offer the accounts extension"
            ))),
        }
    }
}

/// Runs `job(i)` for `0..n`, `concurrency` at a time; the first error wins.
async fn each<F, Fut, T>(n: usize, concurrency: usize, job: F) -> Result<Vec<T>, BenchError>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, BenchError>> + Send + 'static,
    T: Send + 'static,
{
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let gate = Arc::clone(&gate);
        let fut = job(i);
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            fut.await
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        match t.await {
            Ok(r) => out.push(r?),
            Err(e) => return Err(BenchError::Usage(format!("a bench task failed: {e}"))),
        }
    }
    Ok(out)
}

async fn classic_login(target: SocketAddr, name: &str) -> Result<Conn, BenchError> {
    let mut c = Conn::open(target).await?;
    let reply = c.ask(&format!("HELLO-FROM {name}")).await?;
    if reply != format!("HELLO {name}") {
        return Err(c.bad(format!("answered the canary's login with {reply:?}")));
    }
    Ok(c)
}

async fn accounts(plan: &AccountsPlan) -> Result<AccountsReport, BenchError> {
    let target = plan.target;
    let timeout = plan.login_timeout;
    let name = |i: usize| format!("{}u{i}", plan.tag);

    // 1. Register every account.
    let retries = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    each(plan.clients, plan.concurrency, |i| {
        let (name, retries) = (name(i), Arc::clone(&retries));
        async move {
            let mut c = Conn::open(target).await?;
            c.negotiate().await?;
            let attempt = async {
                let hello = c.ask(&format!("HELLO-FROM {name}")).await?;
                if hello != format!("HELLO {name}") {
                    return Err(c.bad(format!("answered HELLO-FROM {name} with {hello:?}")));
                }
                match c
                    .ask_hashed(&format!("REGISTER {PASSWORD}"), &retries)
                    .await?
                    .as_str()
                {
                    "REGISTER-OK" => Ok(()),
                    other => Err(c.bad(format!("answered REGISTER with {other:?}"))),
                }
            };
            tokio::time::timeout(timeout * 10, attempt)
                .await
                .map_err(|_| BenchError::Target {
                    target,
                    why: "a registration took too long".into(),
                })?
        }
    })
    .await?;
    let register_secs = started.elapsed().as_secs_f64();
    let register_retries = retries.swap(0, Ordering::Relaxed);

    // 2. The canary pair, on a fixed schedule from `start`.
    let mut a = classic_login(target, &format!("{}ca", plan.tag)).await?;
    let b_name = format!("{}cb", plan.tag);
    let b = classic_login(target, &b_name).await?;
    let start = Instant::now();
    let (stop_tx, stop) = watch::channel(false);
    let interval = Duration::from_secs_f64(1.0 / plan.canary_rate);
    let from_a = format!("DELIVERY {}ca c", plan.tag);
    let (burst_tx, burst_rx) = watch::channel(None::<(Duration, Duration)>);
    // Sent messages, once the sender has stopped: the receiver reads until it has them all.
    let (final_tx, mut final_rx) = watch::channel(None::<u64>);
    let receiver = tokio::spawn(async move {
        let mut lines = b.r.lines();
        let (mut before, mut during) = (Latency::new(), Latency::new());
        let mut delivered = 0u64;
        loop {
            if final_rx.borrow().is_some_and(|n| delivered >= n) {
                break;
            }
            tokio::select! {
                _ = final_rx.changed() => {}
                line = lines.next_line() => match line {
                    Ok(Some(l)) => {
                        let Some(micros) = l
                            .strip_prefix(&from_a)
                            .and_then(|m| m.parse::<u64>().ok())
                        else {
                            continue;
                        };
                        let due = Duration::from_micros(micros);
                        let late = Instant::now()
                            .saturating_duration_since(start + due)
                            .as_micros() as u64;
                        let in_burst = burst_rx
                            .borrow()
                            .is_none_or(|(from, to)| due >= from && due < to);
                        if due < BASELINE {
                            before.record_micros(late);
                        } else if in_burst {
                            during.record_micros(late);
                        }
                        delivered += 1;
                    }
                    Ok(None) | Err(_) => break,
                },
            }
        }
        (delivered, before, during)
    });
    let mut canary_stop = stop;
    let sender = tokio::spawn(async move {
        let mut sent = 0u64;
        let mut acks = a.r.lines();
        loop {
            let due = interval.mul_f64(sent as f64);
            tokio::select! {
                _ = canary_stop.wait_for(|s| *s) => break,
                () = tokio::time::sleep_until(start + due) => {}
                // Its SEND-OKs, read so they never back up.
                _ = acks.next_line() => continue,
            }
            let line = format!("SEND {b_name} c{}\n", due.as_micros());
            if a.w.write_all(line.as_bytes()).await.is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });

    // 3. The burst: every account logs in at once.
    tokio::time::sleep_until(start + BASELINE).await;
    let burst_from = start.elapsed();
    let burst_started = Instant::now();
    let logged_in = each(plan.clients, plan.concurrency, |i| {
        let (name, retries) = (name(i), Arc::clone(&retries));
        async move {
            let mut c = Conn::open(target).await?;
            c.negotiate().await?;
            let reply = c
                .ask_hashed(&format!("LOGIN {name} {PASSWORD}"), &retries)
                .await?;
            if reply != format!("HELLO {name}") {
                return Err(c.bad(format!("answered LOGIN {name} with {reply:?}")));
            }
            Ok(c)
        }
    })
    .await?;
    let login_secs = burst_started.elapsed().as_secs_f64();
    let _ = burst_tx.send(Some((burst_from, start.elapsed())));
    let login_retries = retries.swap(0, Ordering::Relaxed);

    // 4. Let the canary's last messages in, stop it, then clean up.
    tokio::time::sleep(interval.max(Duration::from_millis(50))).await;
    let _ = stop_tx.send(true);
    let canary_sent = sender.await.unwrap_or_default();
    let _ = final_tx.send(Some(canary_sent));
    let (canary_delivered, before, during) = tokio::time::timeout(DRAIN, receiver)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let mut problems = Vec::new();
    let cleanup = each(logged_in.len(), plan.concurrency, {
        let conns = Arc::new(std::sync::Mutex::new(
            logged_in.into_iter().map(Some).collect::<Vec<_>>(),
        ));
        let retries = Arc::clone(&retries);
        move |i| {
            let conn = conns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(i)
                .and_then(Option::take);
            let retries = Arc::clone(&retries);
            async move {
                let Some(mut c) = conn else { return Ok(()) };
                match c
                    .ask_hashed(&format!("UNREGISTER {PASSWORD}"), &retries)
                    .await?
                    .as_str()
                {
                    "UNREGISTER-OK" => Ok(()),
                    other => Err(c.bad(format!("answered UNREGISTER with {other:?}"))),
                }
            }
        }
    })
    .await;
    if let Err(e) = cleanup {
        problems.push(format!("could not delete every bench account: {e}"));
    }
    if canary_delivered < canary_sent {
        problems.push(format!(
            "{} of the canary's {canary_sent} messages were not delivered",
            canary_sent - canary_delivered
        ));
    }
    Ok(AccountsReport {
        target,
        accounts: plan.clients,
        register_secs,
        register_retries,
        login_secs,
        logins_per_sec: plan.clients as f64 / login_secs.max(f64::MIN_POSITIVE),
        login_retries,
        canary_rate: plan.canary_rate,
        canary_before: before.summary(),
        canary_during: during.summary(),
        canary_sent,
        canary_delivered,
        problems,
    })
}

impl AccountsReport {
    /// The report as a short table.
    pub fn table(&self) -> String {
        let ms = |us: u64| format!("{:.2} ms", us as f64 / 1000.0);
        let lat = |s: &Summary| {
            format!(
                "{} messages, p50 {}, p99 {}, max {}",
                s.count,
                ms(s.p50_us),
                ms(s.p99_us),
                ms(s.max_us)
            )
        };
        let mut out = format!(
            "accounts against {}: {} accounts\n",
            self.target, self.accounts
        );
        out.push_str(&format!(
            "  register  {:.2} s ({:.0}/s), {} THROTTLED 1 retries\n",
            self.register_secs,
            self.accounts as f64 / self.register_secs.max(f64::MIN_POSITIVE),
            self.register_retries
        ));
        out.push_str(&format!(
            "  logins/s  {:.0} (the burst took {:.2} s), {} THROTTLED 1 retries\n",
            self.logins_per_sec, self.login_secs, self.login_retries
        ));
        out.push_str(&format!(
            "  canary    at {} msg/s: before the burst {}; during it {}\n",
            self.canary_rate,
            lat(&self.canary_before),
            lat(&self.canary_during)
        ));
        for p in &self.problems {
            out.push_str(&format!("  problem: {p}\n"));
        }
        out
    }

    /// The report as JSON.
    pub fn json(&self) -> String {
        // Plain data: serializing cannot fail.
        let mut s = serde_json::to_string_pretty(self).expect("serializable");
        s.push('\n');
        s
    }
}
