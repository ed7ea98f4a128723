//! The result of a run: built from the merged share outcomes, printed as a table, written
//! as JSON, drawn as SVG.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::counters::{Counters, Failures};
use crate::dialect::Dialect;
use crate::plan::{Plan, Scenario};
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
    /// The `LIST` loop (list-send).
    pub lists: Option<ListReport>,
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
    /// Open loop: how late the bench wrote each message after its intended send time (its
    /// own scheduling lag, part of `latency`).
    pub send_lag: Option<Summary>,
    /// The server's own share (`--metrics`): from its read of each `SEND` to its write of
    /// the `DELIVERY`, from its histogram.
    pub server_latency: Option<crate::server_side::ServerLatency>,
    /// The bench's own CPU over the measured phase, in cores (1.0: one core busy all the
    /// time), when every client ran in one process. Near its cores' count the load
    /// generator is saturated and its own queueing owns the tail.
    pub bench_cpu: Option<f64>,
    /// Fan-in: fewest and most messages one sender got through.
    pub per_sender_min: Option<u64>,
    pub per_sender_max: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ListReport {
    /// Clients sending `LIST`.
    pub listers: usize,
    /// `LIST`s/s offered over all listers (`None`: closed loop).
    pub offered_per_sec: Option<f64>,
    /// Open-loop slots skipped because the lister's last `LIST` was still unanswered.
    pub skipped: u64,
    /// `LIST-OK`s received in the measured phase, each naming every client of the run.
    pub answered: u64,
    pub lists_per_sec: f64,
    /// `LIST-OK`s that did not parse or did not name exactly the run's clients.
    pub errors: u64,
    /// `LIST` to `LIST-OK`.
    pub latency: Summary,
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
    /// The merge of every share's counters.
    pub totals: Counters,
    pub login_secs: f64,
    pub measured_secs: f64,
    pub timeline: Vec<(f64, f64)>,
    pub rss_start: Option<u64>,
    pub rss_logged_in: Option<u64>,
    pub rss_end: Option<u64>,
    pub rss_peak: Option<u64>,
    pub processes: usize,
    /// The server's histogram over the run, when its metrics were given.
    pub server_latency: Option<crate::server_side::ServerLatency>,
    /// The bench's CPU over the measured phase, in cores.
    pub bench_cpu: Option<f64>,
}

const CURVE: [f64; 14] = [
    0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999, 99.9999, 100.0,
];

pub(crate) fn build(i: Inputs<'_>) -> Report {
    let plan = i.plan;
    let t = &i.totals;
    let all_in = if t.all_in_us > 0 {
        t.all_in_us as f64 / 1e6
    } else {
        i.login_secs
    };
    let login = LoginReport {
        logged_in: t.logged_in,
        failures: t.failures,
        seconds_until_all_in: all_in,
        logins_per_sec: t.logged_in as f64 / all_in.max(1e-9),
        latency: t.login_latency.summary(),
    };
    let mut problems = Vec::new();
    let messages = plan.scenario.sends().then(|| {
        let r = t;
        // A room message is delivered to every member but its sender.
        let lost = (r.sent * plan.scenario.fanout(plan.clients)).saturating_sub(r.delivered);
        let m = MessageReport {
            measured_secs: i.measured_secs,
            sent: r.sent,
            delivered: r.delivered,
            lost,
            delivered_per_sec: r.delivered_in_window as f64 / i.measured_secs.max(1e-9),
            offered_per_sec: plan.scenario.rate(),
            acknowledged: r.acknowledged,
            send_failed: r.send_failed,
            order_violations: r.order_violations,
            content_errors: r.content_errors,
            protocol_errors: r.protocol_errors,
            disconnected: r.disconnected,
            latency: r.latency.summary(),
            send_lag: (!r.send_lag.is_empty()).then(|| r.send_lag.summary()),
            server_latency: i.server_latency.clone(),
            bench_cpu: i.bench_cpu,
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
    let lists = match plan.scenario {
        Scenario::ListSend {
            listers, list_rate, ..
        } => {
            if t.list_errors > 0 {
                problems.push(format!(
                    "{} LIST-OKs did not name exactly the run's clients",
                    t.list_errors
                ));
            }
            if t.lists == 0 {
                problems.push("no LIST was answered during the measured phase".into());
            }
            Some(ListReport {
                listers,
                offered_per_sec: list_rate,
                skipped: t.list_skipped,
                answered: t.lists,
                lists_per_sec: t.lists as f64 / i.measured_secs.max(1e-9),
                errors: t.list_errors,
                latency: t.list_latency.summary(),
            })
        }
        _ => None,
    };
    if t.failures.busy > 0 {
        problems.push(format!(
            "{} clients were answered BUSY: the server is full, or its abuse limits (per \
             address, not logged in yet) refused them; run a tcpchat server for load tests \
             with --limits off or --exempt 127.0.0.0/8",
            t.failures.busy
        ));
    }
    if t.disconnected > 0 {
        problems.push(format!(
            "{} clients lost their connection during the run (a tcpchat server drops a \
             client that floods past its command rate: --limits off for load tests)",
            t.disconnected
        ));
    }
    if let (Some(p), true) = (&t.first_problem, !problems.is_empty()) {
        problems.push(format!("first problem: {p}"));
    }
    let memory = i.server_pid.map(|pid| MemoryReport {
        server_pid: pid,
        before_bytes: i.rss_start,
        logged_in_bytes: i.rss_logged_in,
        end_bytes: i.rss_end,
        peak_bytes: i.rss_peak,
        bytes_per_client: match (i.rss_start, i.rss_logged_in) {
            (Some(a), Some(b)) if t.logged_in > 0 => {
                Some((b as f64 - a as f64) / t.logged_in as f64)
            }
            _ => None,
        },
    });
    let latency_curve = if t.latency.is_empty() {
        Vec::new()
    } else {
        CURVE
            .iter()
            .map(|p| (*p, t.latency.quantile(p / 100.0)))
            .collect()
    };
    Report {
        target: match (&plan.tls, &plan.ws) {
            (_, Some(ws)) => format!("ws://{}{}", ws.host, ws.path),
            (Some(_), None) => format!("tls://{}", plan.target),
            (None, None) => plan.target.to_string(),
        },
        dialect: plan.dialect,
        scenario: plan.scenario,
        clients: plan.clients,
        processes: i.processes,
        message_bytes: plan.size,
        login,
        messages,
        lists,
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
            Scenario::Room { senders, rate } => {
                format!(", {senders} senders, {rate} msg/s offered to the room")
            }
            Scenario::ListSend {
                listers,
                rate,
                list_rate,
            } => {
                let lists = match list_rate {
                    Some(r) => format!("{r} LIST/s offered"),
                    None => "LIST in a closed loop".into(),
                };
                format!(", {listers} listers, {lists}, {rate} msg/s offered")
            }
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
            if let Some(s) = &m.send_lag {
                row(
                    "bench lag",
                    format!(
                        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (send timer vs schedule)",
                        ms(s.p50_us),
                        ms(s.p90_us),
                        ms(s.p99_us),
                        ms(s.p999_us),
                        ms(s.max_us)
                    ),
                );
            }
            if let Some(cpu) = m.bench_cpu {
                row(
                    "bench CPU",
                    format!("{cpu:.2} cores over the run (near its cores' count, the bench's own queueing owns the tail)"),
                );
            }
            if let Some(s) = &m.server_latency {
                let le = |us: Option<u64>| {
                    us.map_or_else(|| "> 1 s".to_owned(), |us| format!("≤ {}", ms(us)))
                };
                row(
                    "server",
                    format!(
                        "p50 {}  p90 {}  p99 {}  p99.9 {}  ({} deliveries, read to write)",
                        le(s.p50_us),
                        le(s.p90_us),
                        le(s.p99_us),
                        le(s.p999_us),
                        s.count
                    ),
                );
            }
            if let (Some(lo), Some(hi)) = (m.per_sender_min, m.per_sender_max) {
                row("per sender", format!("min {lo}, max {hi} messages"));
            }
        }
        if let Some(l) = &self.lists {
            row(
                "LIST-OK/s",
                format!(
                    "{:.0} ({} from {} listers)",
                    l.lists_per_sec, l.answered, l.listers
                ),
            );
            let s = &l.latency;
            row(
                "LIST time",
                format!(
                    "p50 {}  p99 {}  p99.9 {}  max {}",
                    ms(s.p50_us),
                    ms(s.p99_us),
                    ms(s.p999_us),
                    ms(s.max_us)
                ),
            );
            if l.errors > 0 {
                row("LIST errors", l.errors.to_string());
            }
            if l.offered_per_sec.is_some() {
                // Slots a lister gave up because its last LIST was unanswered: the server
                // did not keep up with the offered LIST rate.
                row("LIST skipped", l.skipped.to_string());
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;
    use crate::counters::strategy::counters;

    fn plan(scenario: Scenario) -> Plan {
        Plan {
            target: "127.0.0.1:5378".parse().expect("literal"),
            more_targets: Vec::new(),
            dialect: Dialect::Classic,
            scenario,
            clients: 10,
            size: 64,
            duration: Duration::from_secs(1),
            login_timeout: Duration::from_secs(1),
            login_concurrency: 1,
            drain_timeout: Duration::from_secs(1),
            tag: "t".into(),
            spread_sources: true,
            pace_tick: crate::plan::DEFAULT_PACE_TICK,
            tls: None,
            ws: None,
        }
    }

    proptest! {
        // Each case allocates histograms of ~190 KB: fewer cases keep the debug build quick.
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// The coordinator merges the workers' counters and builds the report from the
        /// result; whatever the workers counted, the report's totals are their sums.
        #[test]
        fn report_totals_are_the_sum_of_the_workers(
            workers in proptest::collection::vec(counters(), 1..5)
        ) {
            let plan = plan(Scenario::Latency { rate: 100.0 });
            let r = build(Inputs {
                plan: &plan,
                server_pid: None,
                totals: Counters::sum(&workers),
                login_secs: 1.0,
                measured_secs: 1.0,
                timeline: Vec::new(),
                rss_start: None,
                rss_logged_in: None,
                rss_end: None,
                rss_peak: None,
                processes: workers.len(),
                server_latency: None,
                bench_cpu: None,
            });
            let sum = |f: fn(&Counters) -> u64| workers.iter().map(f).sum::<u64>();
            prop_assert_eq!(r.login.logged_in, sum(|c| c.logged_in));
            prop_assert_eq!(r.login.failures.total(), sum(|c| c.failures.total()));
            prop_assert_eq!(r.login.failures.busy, sum(|c| c.failures.busy));
            prop_assert_eq!(r.login.latency.count, sum(|c| c.login_latency.len()));
            let m = r.messages.expect("latency sends");
            prop_assert_eq!(m.sent, sum(|c| c.sent));
            prop_assert_eq!(m.delivered, sum(|c| c.delivered));
            prop_assert_eq!(m.acknowledged, sum(|c| c.acknowledged));
            prop_assert_eq!(m.order_violations, sum(|c| c.order_violations));
            prop_assert_eq!(m.content_errors, sum(|c| c.content_errors));
            prop_assert_eq!(m.disconnected, sum(|c| c.disconnected));
            prop_assert_eq!(m.latency.count, sum(|c| c.latency.len()));
            prop_assert_eq!(
                m.send_lag.map_or(0, |s| s.count),
                sum(|c| c.send_lag.len())
            );
            let max = workers.iter().map(|c| c.latency.summary().max_us).max().unwrap_or(0);
            prop_assert_eq!(m.latency.max_us, max);
            prop_assert_eq!(m.per_sender_max, workers.iter().filter_map(|c| c.per_sender_max).max());
            prop_assert_eq!(m.per_sender_min, workers.iter().filter_map(|c| c.per_sender_min).min());
        }
    }
}
