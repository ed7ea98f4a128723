//! Results of a run and their two renderings: a table for people, JSON for machines.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use crate::cases::Case;
use crate::client::seconds;
use crate::failure::Failure;

/// How one case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// What went wrong, for the author to fix.
    Fail(Box<Failure>),
    /// Not run; the reason says what it needs (e.g. `--capacity`).
    Skip(String),
    /// Ran, but the server's behaviour lies past what the probe tried: neither a pass nor a
    /// failure. The reason says how far it went and how to push further. Not a failure for
    /// the exit status.
    Inconclusive(String),
}

/// One case's result.
#[derive(Debug, Clone)]
pub struct CaseReport {
    pub case: &'static Case,
    pub outcome: Outcome,
    /// For a pass: what the case found where the protocol leaves a choice to the server
    /// (the longest name accepted, when the slow reader was dropped).
    pub finding: Option<String>,
    /// Wall-clock time the case took, for the table; never part of a verdict.
    pub duration: Duration,
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct Report {
    /// What the user asked for (`HOST[:PORT]`).
    pub target: String,
    /// The address it resolved to and the checker connected to.
    pub address: SocketAddr,
    pub cases: Vec<CaseReport>,
    pub duration: Duration,
}

/// What happens while a run goes on, for a progress display.
#[derive(Debug)]
pub enum Progress<'a> {
    /// The target is resolved and reachable; `cases` cases will run.
    Begin {
        target: &'a str,
        address: SocketAddr,
        cases: usize,
        timeout: Duration,
    },
    /// A case starts.
    Started(&'static Case),
    /// A case ended.
    Finished(&'a CaseReport),
}

impl Report {
    /// Cases that passed.
    pub fn passed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Pass))
    }

    /// Cases that failed.
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Fail(_)))
    }

    /// Cases that did not run (see [`Outcome::Skip`]).
    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skip(_)))
    }

    /// Cases that could not tell (see [`Outcome::Inconclusive`]).
    pub fn inconclusive(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Inconclusive(_)))
    }

    /// True when no case failed (an inconclusive one is not a failure): the run's exit
    /// status.
    pub fn success(&self) -> bool {
        self.failed() == 0
    }

    /// Names of the failed cases, in run order.
    pub fn failed_names(&self) -> Vec<&'static str> {
        self.cases
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Fail(_)))
            .map(|c| c.case.name)
            .collect()
    }

    fn count(&self, pick: impl Fn(&Outcome) -> bool) -> usize {
        self.cases.iter().filter(|c| pick(&c.outcome)).count()
    }

    /// The report as JSON (what `--json` prints).
    pub fn to_json(&self) -> Value {
        let cases: Vec<Value> = self.cases.iter().map(CaseReport::to_json).collect();
        json!({
            "target": self.target,
            "address": self.address.to_string(),
            "passed": self.passed(),
            "failed": self.failed(),
            "skipped": self.skipped(),
            "inconclusive": self.inconclusive(),
            "duration_ms": millis(self.duration),
            "cases": cases,
        })
    }
}

impl CaseReport {
    fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.case.name,
            "description": self.case.description,
            "duration_ms": millis(self.duration),
        });
        let fields = match &self.outcome {
            Outcome::Pass => match &self.finding {
                Some(finding) => json!({ "outcome": "pass", "finding": finding }),
                None => json!({ "outcome": "pass" }),
            },
            Outcome::Skip(reason) => json!({ "outcome": "skip", "reason": reason }),
            Outcome::Inconclusive(reason) => json!({
                "outcome": "inconclusive",
                "rule": self.case.rule,
                "reason": reason,
            }),
            Outcome::Fail(failure) => json!({
                "outcome": "fail",
                "rule": self.case.rule,
                "failure": failure,
            }),
        };
        if let (Value::Object(v), Value::Object(fields)) = (&mut v, fields) {
            v.extend(fields);
        }
        v
    }
}

/// Every case's name, description and rule as JSON (what `--list --json` prints).
pub fn cases_json() -> Value {
    let cases: Vec<Value> = crate::cases::CASES
        .iter()
        .map(|c| json!({ "name": c.name, "description": c.description, "rule": c.rule }))
        .collect();
    Value::Array(cases)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The plain-text rendering: a header, a row per case as it finishes, the failures in detail
/// and a summary line.
pub mod text {
    use super::*;

    /// Width of the case-name column: the longest name.
    fn name_width() -> usize {
        crate::cases::CASES
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(0)
    }

    /// Every case with its one-line description (what `--list` prints).
    pub fn case_list() -> String {
        let mut out = String::new();
        for case in crate::cases::CASES {
            let _ = writeln!(
                out,
                "{:w$}  {}",
                case.name,
                case.description,
                w = name_width()
            );
        }
        out
    }

    /// The line printed before the first case.
    pub fn header(target: &str, address: SocketAddr, cases: usize, timeout: Duration) -> String {
        let shown = if target == address.to_string() {
            target.to_string()
        } else {
            format!("{target} ({address})")
        };
        format!(
            "checking {shown}: {cases} case{}, {} per reply\n",
            if cases == 1 { "" } else { "s" },
            seconds(timeout)
        )
    }

    /// What is shown while a case runs (a terminal overwrites it with the row).
    pub fn running(case: &Case) -> String {
        format!("  ....  {:w$}", case.name, w = name_width())
    }

    /// One row of the table.
    pub fn row(report: &CaseReport) -> String {
        let (status, time, text) = match &report.outcome {
            Outcome::Pass => (
                "pass",
                duration(report.duration),
                match &report.finding {
                    Some(finding) => format!("{}: {finding}", report.case.description),
                    None => report.case.description.to_string(),
                },
            ),
            Outcome::Inconclusive(_) => (
                "????",
                duration(report.duration),
                format!("inconclusive: {}", report.case.description),
            ),
            Outcome::Fail(_) => (
                "FAIL",
                duration(report.duration),
                report.case.description.to_string(),
            ),
            Outcome::Skip(reason) => ("skip", String::new(), format!("skipped: {reason}")),
        };
        format!(
            "  {status}  {:nw$}  {time:>7}  {text}\n",
            report.case.name,
            nw = name_width()
        )
    }

    fn duration(d: Duration) -> String {
        if d < Duration::from_secs(1) {
            format!("{} ms", d.as_millis())
        } else {
            format!("{:.2} s", d.as_secs_f64())
        }
    }

    /// Every failure in detail: the rule, the step, expected against got, the conversation;
    /// and every inconclusive case with what it tried.
    pub fn failures(report: &Report) -> String {
        let mut out = String::new();
        for case in &report.cases {
            if let Outcome::Inconclusive(why) = &case.outcome {
                let _ = writeln!(out, "\n{}: inconclusive", case.case.name);
                let _ = writeln!(out, "  rule:     {}", case.case.rule);
                let _ = writeln!(out, "  tried:    {why}");
                continue;
            }
            let Outcome::Fail(f) = &case.outcome else {
                continue;
            };
            let _ = writeln!(out, "\n{}: {}", case.case.name, case.case.description);
            let _ = writeln!(out, "  rule:     {}", case.case.rule);
            let _ = writeln!(out, "  step:     {}", f.step);
            let _ = writeln!(out, "  expected: {}", f.expected);
            let _ = writeln!(out, "  got:      {}", f.got);
            if let Some(note) = &f.note {
                let _ = writeln!(out, "  hint:     {note}");
            }
            if !f.transcript.is_empty() {
                let _ = writeln!(out, "  conversation (-> sent, <- received):");
                for line in &f.transcript {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
        out
    }

    /// The closing lines: time taken, then the counts.
    pub fn summary(report: &Report) -> String {
        format!(
            "\nfinished in {:.2}s against {}\ncheck: {} passed, {} failed, {} skipped{}\n",
            report.duration.as_secs_f64(),
            report.address,
            report.passed(),
            report.failed(),
            report.skipped(),
            match report.inconclusive() {
                0 => String::new(),
                n => format!(", {n} inconclusive"),
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::find;

    fn case(name: &str) -> &'static Case {
        find(name).expect("a case in the table")
    }

    fn sample() -> Report {
        let failure = Failure::new("A: log in", "\"HELLO x\"", "\"HELLO x\\r\"")
            .note("strip the \\r")
            .with_transcript(vec!["A -> HELLO-FROM x".into(), "A <- HELLO x\\r".into()]);
        Report {
            target: "localhost:5378".into(),
            address: "127.0.0.1:5378".parse().expect("literal address"),
            cases: vec![
                CaseReport {
                    case: case("login"),
                    outcome: Outcome::Pass,
                    finding: None,
                    duration: Duration::from_millis(3),
                },
                CaseReport {
                    case: case("crlf"),
                    outcome: Outcome::Fail(Box::new(failure)),
                    finding: None,
                    duration: Duration::from_millis(4),
                },
                CaseReport {
                    case: case("busy"),
                    outcome: Outcome::Skip("give --capacity N".into()),
                    finding: None,
                    duration: Duration::ZERO,
                },
                CaseReport {
                    case: case("name-too-long"),
                    outcome: Outcome::Pass,
                    finding: Some("names up to 32 bytes are accepted".into()),
                    duration: Duration::from_millis(5),
                },
                CaseReport {
                    case: case("slow-reader"),
                    outcome: Outcome::Inconclusive("16.0 MiB pushed".into()),
                    finding: None,
                    duration: Duration::from_millis(6),
                },
            ],
            duration: Duration::from_millis(1500),
        }
    }

    #[test]
    fn counts_and_verdict() {
        let report = sample();
        assert_eq!(
            (
                report.passed(),
                report.failed(),
                report.skipped(),
                report.inconclusive()
            ),
            (2, 1, 1, 1)
        );
        assert!(!report.success());
        assert_eq!(report.failed_names(), ["crlf"]);
        let mut no_failure = report.clone();
        no_failure.cases.remove(1);
        assert!(
            no_failure.success(),
            "an inconclusive case does not fail the run"
        );
    }

    #[test]
    fn json_shape() {
        let v = sample().to_json();
        assert_eq!(v["passed"], 2);
        assert_eq!(v["failed"], 1);
        assert_eq!(v["skipped"], 1);
        assert_eq!(v["inconclusive"], 1);
        assert_eq!(v["duration_ms"], 1500);
        assert_eq!(v["address"], "127.0.0.1:5378");
        let cases = v["cases"].as_array().expect("cases is an array");
        assert_eq!(cases[0]["outcome"], "pass");
        assert!(cases[0].get("failure").is_none());
        assert_eq!(cases[1]["outcome"], "fail");
        assert_eq!(cases[1]["failure"]["expected"], "\"HELLO x\"");
        assert_eq!(cases[1]["failure"]["note"], "strip the \\r");
        assert_eq!(cases[1]["failure"]["transcript"][1], "A <- HELLO x\\r");
        assert_eq!(cases[1]["rule"], case("crlf").rule);
        assert_eq!(cases[2]["outcome"], "skip");
        assert_eq!(cases[2]["reason"], "give --capacity N");
        assert_eq!(cases[3]["outcome"], "pass");
        assert_eq!(cases[3]["finding"], "names up to 32 bytes are accepted");
        assert_eq!(cases[4]["outcome"], "inconclusive");
        assert_eq!(cases[4]["reason"], "16.0 MiB pushed");
    }

    #[test]
    fn text_rows_failures_and_summary() {
        let report = sample();
        let rows: Vec<String> = report.cases.iter().map(text::row).collect();
        assert!(rows[0].starts_with("  pass  login "), "{}", rows[0]);
        assert!(rows[0].contains("3 ms"), "{}", rows[0]);
        assert!(rows[1].starts_with("  FAIL  crlf "), "{}", rows[1]);
        assert!(
            rows[2].contains("skipped: give --capacity N"),
            "{}",
            rows[2]
        );

        let failures = text::failures(&report);
        for want in [
            "crlf: ",
            "  rule:     A trailing",
            "  step:     A: log in",
            "  expected: \"HELLO x\"",
            "  got:      \"HELLO x\\r\"",
            "  hint:     strip the \\r",
            "    A <- HELLO x\\r",
        ] {
            assert!(
                failures.contains(want),
                "{want:?} missing from:\n{failures}"
            );
        }
        assert!(!failures.contains("login:"), "passed cases have no details");
        assert!(
            rows[3].contains("names up to 32 bytes are accepted"),
            "{}",
            rows[3]
        );
        assert!(rows[4].contains("inconclusive: "), "{}", rows[4]);
        assert!(failures.contains("slow-reader: inconclusive"), "{failures}");
        assert!(
            failures.contains("  tried:    16.0 MiB pushed"),
            "{failures}"
        );
        assert!(text::summary(&report)
            .ends_with("check: 2 passed, 1 failed, 1 skipped, 1 inconclusive\n"));
    }

    #[test]
    fn case_list_names_every_case() {
        let list = text::case_list();
        assert_eq!(list.lines().count(), crate::cases::CASES.len());
        assert!(list.lines().all(|l| !l.trim().is_empty()));
    }
}
