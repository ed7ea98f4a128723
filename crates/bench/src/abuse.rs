//! The `abuse` scenario: what one flooder costs everyone else.
//!
//! Four clients in one process, classic protocol only: a *flooder* writes `SEND`s to a *sink*
//! as fast as the socket takes them, and a *canary* pair exchanges messages at a human or
//! bot pace (`--rate`, 10/s by default) meanwhile. The report is the canary's latency (from
//! each message's intended send time, as in `latency`), and what became of the flood: lines
//! written, answered, relayed, and whether the server dropped the flooder. Run it against a
//! server with its abuse limits on and again with `--limits off` to see what the limits buy
//! (`docs/performance.md`, "Abuse limits").
//!
//! Self-contained rather than a [`crate::Scenario`] run through the shares: it needs four
//! clients with different roles, never more than one process, and its own report.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::stats::{Latency, Summary};
use crate::BenchError;

/// Lines the flooder writes per `write` call.
const FLOOD_BATCH: usize = 256;
/// After the measured phase, how long the canary's last messages may take to arrive.
const DRAIN: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Debug, Clone)]
pub struct AbusePlan {
    pub target: SocketAddr,
    /// Length of the measured phase.
    pub duration: Duration,
    /// The canary's messages per second.
    pub canary_rate: f64,
    /// Body size of every message, flood and canary.
    pub size: usize,
    /// How long one client may take to connect and log in.
    pub login_timeout: Duration,
    /// Prefix of the four clients' names.
    pub tag: String,
}

/// What the run saw.
#[derive(Debug, Clone, Serialize)]
pub struct AbuseReport {
    pub target: SocketAddr,
    pub measured_secs: f64,
    pub canary_rate: f64,
    pub canary_sent: u64,
    pub canary_delivered: u64,
    /// Canary latency, from each message's intended send time to its delivery.
    pub canary_latency: Summary,
    /// `SEND` lines the flooder got into its socket.
    pub flood_written: u64,
    /// Its `SEND-OK`s: lines the server handled and relayed.
    pub flood_acknowledged: u64,
    /// Its other replies (`BAD-DEST-USER` once the sink is gone).
    pub flood_refused: u64,
    /// Its messages the sink received.
    pub flood_delivered: u64,
    /// Seconds into the run when the server closed the flooder's connection, if it did.
    pub flooder_dropped_after_secs: Option<f64>,
    /// Seconds into the run when the server closed the sink's connection, if it did (its
    /// outgoing queue filled: the flood came faster than it could read).
    pub sink_dropped_after_secs: Option<f64>,
    pub problems: Vec<String>,
}

/// Runs the scenario on its own runtime.
///
/// # Errors
/// A client cannot connect or log in (the error says if the server answered `BUSY`).
pub fn run_abuse(plan: &AbusePlan) -> Result<AbuseReport, BenchError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)?;
    runtime.block_on(abuse(plan))
}

type Reader = BufReader<OwnedReadHalf>;

async fn login(plan: &AbusePlan, name: &str) -> Result<(Reader, OwnedWriteHalf), BenchError> {
    let target = plan.target;
    let bad = |why: String| BenchError::Target { target, why };
    let attempt = async {
        let stream = TcpStream::connect(target)
            .await
            .map_err(|e| bad(format!("cannot connect: {e}")))?;
        stream.set_nodelay(true).ok();
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        w.write_all(format!("HELLO-FROM {name}\n").as_bytes())
            .await
            .map_err(|e| bad(format!("cannot send the login: {e}")))?;
        let mut line = String::new();
        r.read_line(&mut line)
            .await
            .map_err(|e| bad(format!("connection lost during login: {e}")))?;
        match line.trim_end() {
            l if l == format!("HELLO {name}") => Ok((r, w)),
            "BUSY" => Err(bad(
                "answered BUSY: the server is full or its abuse limits refused this address".into(),
            )),
            other => Err(bad(format!(
                "answered the login with {other:?} (abuse speaks the classic protocol only)"
            ))),
        }
    };
    tokio::time::timeout(plan.login_timeout, attempt)
        .await
        .map_err(|_| bad(format!("no login within {:?}", plan.login_timeout)))?
}

async fn abuse(plan: &AbusePlan) -> Result<AbuseReport, BenchError> {
    let names = ["s", "f", "a", "b"].map(|role| format!("{}{role}", plan.tag));
    let [sink_name, flooder_name, a_name, b_name] = &names;
    let (sink_r, _sink_w) = login(plan, sink_name).await?;
    let (flood_r, mut flood_w) = login(plan, flooder_name).await?;
    let (a_r, mut a_w) = login(plan, a_name).await?;
    let (b_r, _b_w) = login(plan, b_name).await?;

    let (stop_tx, stop) = watch::channel(false);
    let start = Instant::now();
    let body = |prefix: String| {
        let mut b = prefix;
        while b.len() < plan.size {
            b.push('x');
        }
        b
    };

    // The flooder: as fast as the socket takes it, until the run ends or the server drops it.
    let flood_line = format!("SEND {sink_name} {}\n", body("flood ".into()));
    let batch = flood_line.repeat(FLOOD_BATCH);
    let mut stopped = stop.clone();
    let flood_writer = tokio::spawn(async move {
        let mut written = 0u64;
        loop {
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => break,
                r = flood_w.write_all(batch.as_bytes()) => match r {
                    Ok(()) => written += FLOOD_BATCH as u64,
                    Err(_) => break,
                },
            }
        }
        written
    });
    let mut stopped = stop.clone();
    let flood_reader = tokio::spawn(async move {
        let mut lines = flood_r.lines();
        let (mut acks, mut refused) = (0u64, 0u64);
        loop {
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => return (acks, refused, None),
                line = lines.next_line() => match line {
                    Ok(Some(l)) if l == "SEND-OK" => acks += 1,
                    Ok(Some(_)) => refused += 1,
                    Ok(None) | Err(_) => {
                        return (acks, refused, Some(start.elapsed().as_secs_f64()));
                    }
                },
            }
        }
    });
    let mut stopped = stop.clone();
    let from_flooder = format!("DELIVERY {flooder_name} ");
    let sink = tokio::spawn(async move {
        let mut lines = sink_r.lines();
        let mut delivered = 0u64;
        loop {
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => return (delivered, None),
                line = lines.next_line() => match line {
                    Ok(Some(l)) if l.starts_with(&from_flooder) => delivered += 1,
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => {
                        return (delivered, Some(start.elapsed().as_secs_f64()));
                    }
                },
            }
        }
    });

    // The canary's receiver: latency from the intended send time carried in each body.
    let from_a = format!("DELIVERY {a_name} c");
    let (sent_tx, sent_rx) = watch::channel(None::<u64>);
    let receiver = tokio::spawn(async move {
        let mut lines = b_r.lines();
        let mut latency = Latency::new();
        let mut delivered = 0u64;
        let mut sent_rx = sent_rx;
        loop {
            let all_in = sent_rx.borrow().is_some_and(|n| delivered >= n);
            if all_in {
                break;
            }
            tokio::select! {
                _ = sent_rx.changed() => {}
                line = lines.next_line() => match line {
                    Ok(Some(l)) => {
                        let Some(micros) = l
                            .strip_prefix(&from_a)
                            .and_then(|rest| rest.split(' ').next())
                            .and_then(|m| m.parse::<u64>().ok())
                        else {
                            continue;
                        };
                        let intended = start + Duration::from_micros(micros);
                        latency.record_micros(
                            Instant::now().saturating_duration_since(intended).as_micros() as u64,
                        );
                        delivered += 1;
                    }
                    Ok(None) | Err(_) => break,
                },
            }
        }
        (delivered, latency)
    });
    // The canary's own replies, read so they never back up.
    let mut stopped = stop.clone();
    let acks = tokio::spawn(async move {
        let mut lines = a_r.lines();
        loop {
            tokio::select! {
                _ = stopped.wait_for(|s| *s) => return,
                line = lines.next_line() => if !matches!(line, Ok(Some(_))) { return },
            }
        }
    });

    // The canary's sender, on a fixed schedule (open loop).
    let interval = Duration::from_secs_f64(1.0 / plan.canary_rate);
    let mut sent = 0u64;
    let mut problems = Vec::new();
    loop {
        let due = start + interval.mul_f64(sent as f64);
        if due >= start + plan.duration {
            break;
        }
        tokio::time::sleep_until(due).await;
        let micros = due.duration_since(start).as_micros();
        let line = format!("SEND {b_name} {}\n", body(format!("c{micros} ")));
        if let Err(e) = a_w.write_all(line.as_bytes()).await {
            problems.push(format!("the canary could not send: {e}"));
            break;
        }
        sent += 1;
    }
    let measured_secs = start.elapsed().as_secs_f64();
    let _ = sent_tx.send(Some(sent));
    let (canary_delivered, latency) = tokio::time::timeout(DRAIN, receiver)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let _ = stop_tx.send(true);
    let flood_written = flood_writer.await.unwrap_or_default();
    let (flood_acknowledged, flood_refused, dropped) = flood_reader.await.unwrap_or_default();
    let (flood_delivered, sink_dropped) = sink.await.unwrap_or_default();
    acks.abort();

    if canary_delivered < sent {
        problems.push(format!(
            "{} of the canary's {sent} messages were not delivered",
            sent - canary_delivered
        ));
    }
    Ok(AbuseReport {
        target: plan.target,
        measured_secs,
        canary_rate: plan.canary_rate,
        canary_sent: sent,
        canary_delivered,
        canary_latency: latency.summary(),
        flood_written,
        flood_acknowledged,
        flood_refused,
        flood_delivered,
        flooder_dropped_after_secs: dropped,
        sink_dropped_after_secs: sink_dropped,
        problems,
    })
}

impl AbuseReport {
    /// The report as a short table.
    pub fn table(&self) -> String {
        let l = &self.canary_latency;
        let ms = |us: u64| format!("{:.2} ms", us as f64 / 1000.0);
        let mut out = format!(
            "abuse against {}: {:.1} s, one flooder, a canary at {} msg/s\n",
            self.target, self.measured_secs, self.canary_rate
        );
        out.push_str(&format!(
            "  canary   {} sent, {} delivered; latency p50 {}, p99 {}, p99.9 {}, max {}\n",
            self.canary_sent,
            self.canary_delivered,
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us)
        ));
        let dropped = match self.flooder_dropped_after_secs {
            Some(s) => format!("dropped by the server after {s:.1} s"),
            None => "still connected at the end".to_owned(),
        };
        out.push_str(&format!(
            "  flooder  {} lines written, {} SEND-OK, {} refused, {} received by the sink; \
             {dropped}\n",
            self.flood_written, self.flood_acknowledged, self.flood_refused, self.flood_delivered
        ));
        if let Some(s) = self.sink_dropped_after_secs {
            out.push_str(&format!(
                "  sink     dropped by the server after {s:.1} s (its queue filled)\n"
            ));
        }
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
