//! Results of a run and their two renderings, in the style of `tcpchat check`: a table for
//! people, JSON for grading scripts.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};

use crate::cases::Case;

/// Lines of the program's output kept in a failure: the end, where it went wrong.
const OUTPUT_TAIL_LINES: usize = 12;
/// Transcript lines kept in a failure.
const TRANSCRIPT_TAIL_LINES: usize = 24;

/// Bytes as a report shows them: escaped (`\r`, control characters, bytes that are not UTF-8)
/// and in double quotes, so spaces at the ends are visible.
pub fn shown(bytes: &[u8]) -> String {
    format!("\"{}\"", tcpchat_check::escape(bytes))
}

/// Why a case failed, in terms a student can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// What the checker was doing, e.g. `type "@bob hi" and read the SEND`.
    pub step: String,
    /// What a correct client does at that point.
    pub expected: String,
    /// What this client did instead.
    pub got: String,
    /// What probably went wrong and what to change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The end of the conversation: `client: ...`, `server: ...`, `typed: ...`.
    pub transcript: Vec<String>,
    /// The end of what the program showed (stdout and stderr).
    pub output: Vec<String>,
}

impl Failure {
    pub(crate) fn new(
        step: impl Into<String>,
        expected: impl Into<String>,
        got: impl Into<String>,
    ) -> Self {
        Self {
            step: step.into(),
            expected: expected.into(),
            got: got.into(),
            hint: None,
            transcript: Vec::new(),
            output: Vec::new(),
        }
    }

    /// Sets the hint unless a more specific one is there already.
    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        if self.hint.is_none() {
            self.hint = Some(hint.into());
        }
        self
    }

    /// Puts `hint` before any hint already there: it says more.
    pub(crate) fn hint_first(mut self, hint: impl Into<String>) -> Self {
        let hint = hint.into();
        self.hint = Some(match self.hint.take() {
            Some(later) => format!("{hint}; {later}"),
            None => hint,
        });
        self
    }

    pub(crate) fn with_context(mut self, mut transcript: Vec<String>, output: &[u8]) -> Self {
        if transcript.len() > TRANSCRIPT_TAIL_LINES {
            let dropped = transcript.len() - TRANSCRIPT_TAIL_LINES;
            transcript.drain(..dropped);
            transcript.insert(0, format!("({dropped} earlier lines not shown)"));
        }
        self.transcript = transcript;
        let text = String::from_utf8_lossy(output);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let skip = lines.len().saturating_sub(OUTPUT_TAIL_LINES);
        self.output = lines[skip..]
            .iter()
            .map(|l| tcpchat_check::escape(l.trim_end_matches('\r').as_bytes()))
            .collect();
        self
    }
}

/// How one case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(Box<Failure>),
    /// Not run; the reason says why (e.g. the name is a command-line argument).
    Skip(String),
}

/// One case's result.
#[derive(Debug, Clone)]
pub struct CaseReport {
    pub case: &'static Case,
    pub outcome: Outcome,
    /// Wall-clock time the case took, for the table; never part of a verdict.
    pub duration: Duration,
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct Report {
    /// The program, as given.
    pub program: Vec<String>,
    pub cases: Vec<CaseReport>,
    pub duration: Duration,
}

/// What happens while a run goes on, for a progress display.
#[derive(Debug)]
pub enum Progress<'a> {
    Begin { cases: usize, timeout: Duration },
    Started(&'static Case),
    Finished(&'a CaseReport),
}

impl Report {
    pub fn passed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Pass))
    }

    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Fail(_)))
    }

    pub fn skipped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Skip(_)))
    }

    /// True when every case that ran passed: the run's exit status.
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

    /// The report as JSON (what `--json` prints; docs/check-client.md describes it).
    pub fn to_json(&self) -> Value {
        let cases: Vec<Value> = self
            .cases
            .iter()
            .map(|c| {
                let mut v = json!({
                    "name": c.case.name,
                    "description": c.case.description,
                    "duration_ms": millis(c.duration),
                });
                let fields = match &c.outcome {
                    Outcome::Pass => json!({ "outcome": "pass" }),
                    Outcome::Skip(reason) => json!({ "outcome": "skip", "reason": reason }),
                    Outcome::Fail(f) => {
                        json!({ "outcome": "fail", "rule": c.case.rule, "failure": f })
                    }
                };
                if let (Value::Object(v), Value::Object(fields)) = (&mut v, fields) {
                    v.extend(fields);
                }
                v
            })
            .collect();
        json!({
            "program": self.program,
            "passed": self.passed(),
            "failed": self.failed(),
            "skipped": self.skipped(),
            "duration_ms": millis(self.duration),
            "cases": cases,
        })
    }
}

/// Every case's name, description and rule as JSON (what `--list --json` prints).
pub fn cases_json() -> Value {
    Value::Array(
        crate::cases::CASES
            .iter()
            .map(|c| json!({ "name": c.name, "description": c.description, "rule": c.rule }))
            .collect(),
    )
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The plain-text rendering: a row per case as it finishes, the failures in detail, a summary.
pub mod text {
    use super::*;

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
    pub fn header(program: &[String], cases: usize, timeout: Duration) -> String {
        format!(
            "checking the client `{}`: {cases} case{}, {} per step\n",
            program.join(" "),
            if cases == 1 { "" } else { "s" },
            crate::seconds(timeout)
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
                report.case.description.into(),
            ),
            Outcome::Fail(_) => (
                "FAIL",
                duration(report.duration),
                report.case.description.into(),
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

    /// Every failure in detail: the rule, the step, expected against got, the hint, the
    /// conversation and what the program showed.
    pub fn failures(report: &Report) -> String {
        let mut out = String::new();
        for case in &report.cases {
            let Outcome::Fail(f) = &case.outcome else {
                continue;
            };
            let _ = writeln!(out, "\n{}: {}", case.case.name, case.case.description);
            let _ = writeln!(out, "  rule:     {}", case.case.rule);
            let _ = writeln!(out, "  step:     {}", f.step);
            let _ = writeln!(out, "  expected: {}", f.expected);
            let _ = writeln!(out, "  got:      {}", f.got);
            if let Some(hint) = &f.hint {
                let _ = writeln!(out, "  hint:     {hint}");
            }
            if !f.transcript.is_empty() {
                let _ = writeln!(out, "  conversation:");
                for line in &f.transcript {
                    let _ = writeln!(out, "    {line}");
                }
            }
            if !f.output.is_empty() {
                let _ = writeln!(out, "  your program showed (last lines):");
                for line in &f.output {
                    let _ = writeln!(out, "    | {line}");
                }
            }
        }
        out
    }

    /// The closing lines.
    pub fn summary(report: &Report) -> String {
        format!(
            "\nfinished in {:.2}s\ncheck-client: {} passed, {} failed, {} skipped\n",
            report.duration.as_secs_f64(),
            report.passed(),
            report.failed(),
            report.skipped()
        )
    }
}
