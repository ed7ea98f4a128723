//! The result of a run: built from the merged share outcomes, printed as a table, written
//! as JSON, drawn as SVG.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::dialect::Dialect;
use crate::plan::{Plan, Scenario};
use crate::share::{Failures, LoginOutcome, RunOutcome};
use crate::stats::Summary;

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    pub dialect: Dialect,
    pub scenario: Scenario,
    pub clients: usize,
    /// Processes the clients were spread over.
    pub processes: usize,
    pub message_bytes: usize,
    pub login: LoginReport,
    pub messages: Option<MessageReport>,
    pub memory: Option<MemoryReport>,
    /// Delivered messages/s, sampled every 250 ms: (seconds into the run, rate).
    pub timeline: Vec<(f64, f64)>,
    /// Latency percentile curve: (percentile, µs).
    pub latency_curve: Vec<(f64, u64)>,
    /// What went wrong: lost, reordered or altered messages, errors, dropped connections.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoginReport {
    pub logged_in: u64,
    pub failures: Failures,
    /// From the first connect to the last successful login.
    pub seconds_until_all_in: f64,
    pub logins_per_sec: f64,
    /// Connect-to-login time per client.
    pub latency: Summary,
}

#[derive(Debug, Clone, Serialize)]
pub struct MessageReport {
    pub measured_secs: f64,
    pub sent: u64,
    pub delivered: u64,
    /// Sent but never received, after the drain timeout.
    pub lost: u64,
    pub delivered_per_sec: f64,
    /// The offered rate (latency scenario).
    pub offered_per_sec: Option<f64>,
    pub acknowledged: u64,
    pub send_failed: u64,
    pub order_violations: u64,
    pub content_errors: u64,
    pub protocol_errors: u64,
    pub disconnected: u64,
    /// From intended send time to receipt.
    pub latency: Summary,
    /// Fan-in: fewest and most messages one sender got through.
    pub per_sender_min: Option<u64>,
    pub per_sender_max: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    pub server_pid: u32,
    pub before_bytes: Option<u64>,
    pub logged_in_bytes: Option<u64>,
    pub end_bytes: Option<u64>,
    pub peak_bytes: Option<u64>,
    /// (logged in − before) / clients logged in.
    pub bytes_per_client: Option<f64>,
}

pub(crate) struct Inputs<'a> {
    pub plan: &'a Plan,
    pub server_pid: Option<u32>,
    pub login: LoginOutcome,
    pub login_secs: f64,
    pub run: RunOutcome,
    pub measured_secs: f64,
    pub timeline: Vec<(f64, f64)>,
    pub rss_start: Option<u64>,
    pub rss_logged_in: Option<u64>,
    pub rss_end: Option<u64>,
    pub rss_peak: Option<u64>,
    pub processes: usize,
}

const CURVE: [f64; 14] = [
    0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999, 99.9999, 100.0,
];

pub(crate) fn build(i: Inputs<'_>) -> Report {
    let plan = i.plan;
    let all_in = if i.login.all_in_us > 0 {
        i.login.all_in_us as f64 / 1e6
    } else {
        i.login_secs
    };
    let login = LoginReport {
        logged_in: i.login.logged_in,
        failures: i.login.failures,
        seconds_until_all_in: all_in,
        logins_per_sec: i.login.logged_in as f64 / all_in.max(1e-9),
        latency: i.login.latency.summary(),
    };
    let mut problems = Vec::new();
    let messages = plan.scenario.sends().then(|| {
        let r = &i.run;
        let lost = r.sent.saturating_sub(r.delivered);
        let m = MessageReport {
            measured_secs: i.measured_secs,
            sent: r.sent,
            delivered: r.delivered,
            lost,
            delivered_per_sec: r.delivered_in_window as f64 / i.measured_secs.max(1e-9),
            offered_per_sec: match plan.scenario {
                Scenario::Latency { rate } => Some(rate),
                _ => None,
            },
            acknowledged: r.acknowledged,
            send_failed: r.send_failed,
            order_violations: r.order_violations,
            content_errors: r.content_errors,
            protocol_errors: r.protocol_errors,
            disconnected: r.disconnected,
            latency: r.latency.summary(),
            per_sender_min: r.per_sender_min,
            per_sender_max: r.per_sender_max,
        };
        let mut say = |n: u64, what: &str| {
            if n > 0 {
                problems.push(format!("{n} {what}"));
            }
        };
        say(lost, "messages lost (sent, never received)");
        say(m.order_violations, "messages out of per-sender order");
        say(m.content_errors, "message bodies altered or misaddressed");
        say(m.send_failed, "messages refused (recipient not logged in)");
        say(m.protocol_errors, "unexpected lines from the server");
        if plan.dialect == Dialect::Classic {
            say(
                r.sent.saturating_sub(r.acknowledged + r.send_failed),
                "messages never acknowledged (SEND-OK)",
            );
        }
        m
    });
    if i.run.disconnected > 0 {
        problems.push(format!(
            "{} clients lost their connection during the run",
            i.run.disconnected
        ));
    }
    if let (Some(p), true) = (&i.run.first_problem, !problems.is_empty()) {
        problems.push(format!("first problem: {p}"));
    }
    let memory = i.server_pid.map(|pid| MemoryReport {
        server_pid: pid,
        before_bytes: i.rss_start,
        logged_in_bytes: i.rss_logged_in,
        end_bytes: i.rss_end,
        peak_bytes: i.rss_peak,
        bytes_per_client: match (i.rss_start, i.rss_logged_in) {
            (Some(a), Some(b)) if i.login.logged_in > 0 => {
                Some((b as f64 - a as f64) / i.login.logged_in as f64)
            }
            _ => None,
        },
    });
    let latency_curve = if i.run.latency.is_empty() {
        Vec::new()
    } else {
        CURVE
            .iter()
            .map(|p| (*p, i.run.latency.quantile(p / 100.0)))
            .collect()
    };
    Report {
        target: plan.target.to_string(),
        dialect: plan.dialect,
        scenario: plan.scenario,
        clients: plan.clients,
        processes: i.processes,
        message_bytes: plan.size,
        login,
        messages,
        memory,
        timeline: i.timeline,
        latency_curve,
        problems,
    }
}

fn ms(us: u64) -> String {
    format!("{:.3} ms", us as f64 / 1000.0)
}

fn mib(b: Option<u64>) -> String {
    b.map_or("-".into(), |b| {
        format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
    })
}

impl Report {
    /// The human-readable result table.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = Vec::new();
        let mut row = |k: &str, v: String| rows.push((k.to_owned(), v));
        let params = match self.scenario {
            Scenario::Throughput { window } | Scenario::Fanin { window } => {
                format!(", window {window}")
            }
            Scenario::Latency { rate } => format!(", {rate} msg/s offered"),
            _ => String::new(),
        };
        row(
            "scenario",
            format!(
                "{} ({:?} dialect{params})",
                self.scenario.name(),
                self.dialect
            )
            .to_lowercase(),
        );
        row("target", self.target.clone());
        row(
            "clients",
            format!("{} in {} process(es)", self.clients, self.processes),
        );
        let l = &self.login;
        row("logged in", format!("{} of {}", l.logged_in, self.clients));
        let f = &l.failures;
        if f.total() > 0 {
            row(
                "login failures",
                format!(
                    "{} refused, {} busy/error, {} in use, {} timed out, {} closed, {} wrong protocol, {} other",
                    f.refused, f.busy, f.in_use, f.timeout, f.closed, f.protocol, f.other
                ),
            );
        }
        row("all in after", format!("{:.3} s", l.seconds_until_all_in));
        row("logins/s", format!("{:.0}", l.logins_per_sec));
        row(
            "login time",
            format!(
                "p50 {}  p99 {}  max {}",
                ms(l.latency.p50_us),
                ms(l.latency.p99_us),
                ms(l.latency.max_us)
            ),
        );
        if let Some(m) = &self.messages {
            row("measured", format!("{:.2} s", m.measured_secs));
            if let Some(r) = m.offered_per_sec {
                row("offered", format!("{r:.0} msg/s"));
            }
            row("delivered/s", format!("{:.0}", m.delivered_per_sec));
            row(
                "sent / delivered",
                format!("{} / {} ({} lost)", m.sent, m.delivered, m.lost),
            );
            row(
                "errors",
                format!(
                    "{} out of order, {} altered, {} refused, {} protocol, {} disconnected",
                    m.order_violations,
                    m.content_errors,
                    m.send_failed,
                    m.protocol_errors,
                    m.disconnected
                ),
            );
            let s = &m.latency;
            row(
                "latency",
                format!(
                    "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                    ms(s.p50_us),
                    ms(s.p90_us),
                    ms(s.p99_us),
                    ms(s.p999_us),
                    ms(s.max_us)
                ),
            );
            if let (Some(lo), Some(hi)) = (m.per_sender_min, m.per_sender_max) {
                row("per sender", format!("min {lo}, max {hi} messages"));
            }
        }
        if let Some(mem) = &self.memory {
            row(
                "server memory",
                format!(
                    "{} before, {} logged in, {} at end, {} peak",
                    mib(mem.before_bytes),
                    mib(mem.logged_in_bytes),
                    mib(mem.end_bytes),
                    mib(mem.peak_bytes)
                ),
            );
            if let Some(b) = mem.bytes_per_client {
                row(
                    "per client",
                    format!("{b:.0} bytes ({:.2} KiB)", b / 1024.0),
                );
            }
        }
        for p in &self.problems {
            row("PROBLEM", p.clone());
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
        out
    }

    /// The report as pretty-printed JSON, newline-terminated.
    pub fn json(&self) -> String {
        // Plain data with string keys: serialization cannot fail.
        let mut s = serde_json::to_string_pretty(self).expect("serializable");
        s.push('\n');
        s
    }

    /// Draws the latency percentile curve and/or delivered messages/s over time as SVG.
    ///
    /// # Errors
    /// The file cannot be written, or the report has nothing to plot.
    pub fn plot(&self, path: &Path) -> Result<(), String> {
        crate::plot::draw(self, path)
    }
}
