//! `tcpchat check-client` end to end: the real binary checks our own plain-mode client (which
//! must pass every case), lists its cases, and refuses a command line without `{port}`.

use std::process::Command;

fn tcpchat() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tcpchat"))
}

#[test]
fn our_plain_client_passes_every_case() {
    let out = tcpchat()
        .args(["check-client", "--json", "--"])
        .arg(env!("CARGO_BIN_EXE_tcpchat"))
        .args(["connect", "--plain", "{host}:{port}"])
        .output()
        .expect("tcpchat runs");
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("--json prints one JSON object");
    assert!(
        out.status.success(),
        "{:#}\n{}",
        report,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["failed"], 0, "{report:#}");
    let cases = report["cases"].as_array().expect("cases");
    assert!(cases.iter().all(|c| c["outcome"] == "pass"), "{report:#}");
    assert!(cases.len() >= 14, "{report:#}");
}

#[test]
fn our_plain_client_passes_on_a_pty() {
    let out = tcpchat()
        .args(["check-client", "--pty", "--"])
        .arg(env!("CARGO_BIN_EXE_tcpchat"))
        .args(["connect", "--plain", "{host}:{port}"])
        .output()
        .expect("tcpchat runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

#[test]
fn list_names_the_cases() {
    let out = tcpchat()
        .args(["check-client", "--list"])
        .output()
        .expect("tcpchat runs");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for case in [
        "login",
        "byte-by-byte",
        "delivery-before-send-ok",
        "long-list",
        "quit",
    ] {
        assert!(stdout.contains(case), "{case} missing:\n{stdout}");
    }
}

#[test]
fn a_command_without_port_is_a_usage_error() {
    let out = tcpchat()
        .args(["check-client", "--", "python3", "client.py"])
        .output()
        .expect("tcpchat runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("{port}"));
}

#[test]
fn a_program_that_cannot_start_is_an_error() {
    let out = tcpchat()
        .args(["check-client", "--", "/nonexistent/client", "{port}"])
        .output()
        .expect("tcpchat runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot start /nonexistent/client"));
}
