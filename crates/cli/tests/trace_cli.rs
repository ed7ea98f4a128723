//! `tcpchat trace` as a user runs it: the real binary on the committed captures, whole, cut
//! short and asked for a connection they do not hold, with the exit codes `docs/trace.md`
//! gives (0 the whole file was read, 1 it could not be, 2 no such `--stream` or no such file).
//! See: #11 (point 5).

mod common;

use std::process::Output;

use common::{assert_exit, run_to_end, tcpchat, text};
use serde_json::Value;

/// A capture of three chat connections (`crates/trace/tests/captures`).
const SESSION: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../trace/tests/captures/session.pcap"
);

/// Runs `tcpchat trace ARGS`, writing `stdin` to it, failing the test after [`PATIENCE`].
fn trace(args: &[&str], stdin: Vec<u8>) -> Output {
    let mut cmd = tcpchat();
    cmd.arg("trace").args(args).args(["--color", "never"]);
    run_to_end(cmd, stdin)
}

fn session() -> Vec<u8> {
    std::fs::read(SESSION).expect("the committed capture")
}

/// Every stdout line as JSON; the last must be the summary.
fn json_lines(output: &Output) -> Vec<Value> {
    let lines: Vec<Value> = text(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let last = lines.last().expect("at least the summary");
    assert_eq!(last["type"], "summary", "the last line is the summary");
    lines
}

#[test]
fn whole_capture_reads_to_the_end_with_exit_0() {
    let out = trace(&[SESSION], Vec::new());
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("connection #"))
            .count(),
        3,
        "{stdout}"
    );
    assert!(!stdout.contains("reading stopped early"), "{stdout}");
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[test]
fn json_is_one_object_per_line_ending_in_the_summary() {
    let out = trace(&["-", "--json"], session());
    assert_exit(&out, 0);
    let lines = json_lines(&out);
    let summary = lines.last().expect("checked by json_lines");
    assert_eq!(summary["chat_streams"], serde_json::json!([0, 1, 2]));
    assert_eq!(summary["error"], Value::Null);
    let starts = lines
        .iter()
        .filter(|l| l["type"] == "connection_start")
        .count();
    assert_eq!(starts, 3);

    let out = trace(&[SESSION, "--json", "--stream", "1"], Vec::new());
    assert_exit(&out, 0);
    let lines = json_lines(&out);
    for line in &lines[..lines.len() - 1] {
        assert_eq!(line["stream"], 1, "only stream 1: {line}");
    }
}

#[test]
fn a_truncated_capture_reports_what_it_read_then_fails_with_exit_1() {
    let mut bytes = session();
    bytes.truncate(bytes.len() - 10);
    let out = trace(&["-"], bytes.clone());
    assert_exit(&out, 1);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("connection #") && stdout.contains("reading stopped early"),
        "the report of what came before, then why it stopped:\n{stdout}"
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("reading -:") && stderr.contains("truncated capture"),
        "says what and where: {stderr}"
    );
    assert!(stderr.contains(" at byte "), "{stderr}");

    let out = trace(&["-", "--json"], bytes);
    assert_exit(&out, 1);
    let lines = json_lines(&out);
    let error = &lines.last().expect("checked by json_lines")["error"];
    assert!(
        error.as_str().is_some_and(|e| e.contains("truncated")),
        "the summary says why reading stopped: {error}"
    );
}

#[test]
fn a_stream_that_is_not_there_is_a_usage_error() {
    let out = trace(&[SESSION, "--stream", "99"], Vec::new());
    assert_exit(&out, 2);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("stream 99 is not in this capture") && stderr.contains("3 TCP connections"),
        "names the stream and how many there are: {stderr}"
    );
}

#[test]
fn a_missing_file_is_a_usage_error_and_not_a_capture_a_failure() {
    let missing = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/no-such-capture.pcap");
    let out = trace(&[missing], Vec::new());
    assert_exit(&out, 2);
    assert!(
        text(&out.stderr).contains("cannot open"),
        "{}",
        text(&out.stderr)
    );

    let out = trace(&["-"], b"HELLO-FROM alice\n".to_vec());
    assert_exit(&out, 1);
    assert!(
        text(&out.stderr).contains("not a pcap or pcapng file"),
        "{}",
        text(&out.stderr)
    );
}

/// A capture of three TLS connections on port 5379 (`scripts/record-tls-capture.sh`).
const TLS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../trace/tests/captures/tls.pcap"
);

#[test]
fn tls_connections_are_found_on_the_tls_port_and_said_to_be_encrypted() {
    let out = trace(&[TLS], Vec::new());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("TLS ClientHello  a TLS client asks for chat.example")
            && text.contains("3 TCP connections, 3 chat connections")
            && text.contains("3 of them TLS: their content is encrypted"),
        "{text}"
    );
    // Told the TLS port is elsewhere, the same capture holds no chat connection.
    let out = trace(&[TLS, "--tls-port", "6697"], Vec::new());
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("3 TCP connections, 0 chat connections"),
        "{text}"
    );
}
