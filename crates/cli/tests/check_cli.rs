//! `tcpchat check` as a user runs it: the real binary, its output modes and its exit codes
//! (0 every case that ran passed, 1 a case failed or the server cannot be reached, 2 invalid
//! arguments), against our real server, a server that answers wrongly and no server at all.
//! See: #11 (point 5).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Output;

use common::{assert_exit, run_to_end, tcpchat, text, Server};
use serde_json::Value;
use tcpchat_proto::{Reply, Username};

fn check(args: &[&str]) -> Output {
    let mut cmd = tcpchat();
    cmd.arg("check").args(args);
    run_to_end(cmd, Vec::new())
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON value ({e}):\n{}",
            text(&output.stdout)
        )
    })
}

fn names(cases: &Value) -> Vec<String> {
    cases
        .as_array()
        .expect("cases is an array")
        .iter()
        .map(|c| {
            c["name"]
                .as_str()
                .expect("each case has a name")
                .to_string()
        })
        .collect()
}

fn all_case_names() -> Vec<String> {
    tcpchat_check::CASES
        .iter()
        .map(|c| c.name.to_string())
        .collect()
}

/// A port on loopback where nothing listens (bound, then released).
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("bound address").port()
}

/// A server that welcomes everyone as somebody else: every line gets `HELLO someone-else`.
/// Its threads end with the test process.
fn wrong_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let addr = listener.local_addr().expect("bound address");
    let wrong = Reply::Hello(Username::parse("someone-else").expect("valid name")).to_line();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let wrong = wrong.clone();
            std::thread::spawn(move || answer_every_line(stream, &wrong));
        }
    });
    addr
}

fn answer_every_line(stream: TcpStream, reply: &[u8]) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    for _ in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
        if writer.write_all(reply).is_err() {
            return;
        }
    }
}

#[test]
fn list_names_every_case_and_exits_0() {
    let out = check(&["--list"]);
    assert_exit(&out, 0);
    let listed: Vec<String> = text(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert_eq!(
        listed,
        all_case_names(),
        "one line per case, in table order"
    );

    let out = check(&["--list", "--json"]);
    assert_exit(&out, 0);
    let cases = json(&out);
    assert_eq!(names(&cases), all_case_names());
    for case in cases.as_array().expect("an array of cases") {
        for key in ["description", "rule"] {
            assert!(
                case[key].as_str().is_some_and(|s| !s.is_empty()),
                "{key} of {case}"
            );
        }
    }
}

#[test]
fn json_against_our_server_has_a_result_per_case() {
    let server = Server::start("127.0.0.1:0", &[]);
    let target = server.addr.to_string();
    let out = check(&[&target, "--only", "login,send,list", "--json"]);
    assert_exit(&out, 0);
    let report = json(&out);
    assert_eq!(report["target"], target.as_str());
    assert_eq!(report["address"], target.as_str());
    assert_eq!(
        names(&report["cases"]),
        ["login", "list", "send"],
        "the chosen cases, in table order"
    );
    for case in report["cases"].as_array().expect("cases") {
        assert_eq!(case["outcome"], "pass", "{case}");
        assert!(case["duration_ms"].is_u64(), "{case}");
    }
    assert_eq!(
        (&report["passed"], &report["failed"], &report["skipped"]),
        (&Value::from(3), &Value::from(0), &Value::from(0))
    );
}

#[test]
fn only_runs_just_that_case() {
    let server = Server::start("127.0.0.1:0", &[]);
    let target = server.addr.to_string();
    let out = check(&[&target, "--only", "crlf"]);
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("  pass  ") || l.starts_with("  FAIL  "))
        .collect();
    assert_eq!(rows.len(), 1, "one row:\n{stdout}");
    assert_eq!(rows[0].split_whitespace().nth(1), Some("crlf"), "{stdout}");
    assert!(
        stdout.contains(": 1 case, "),
        "the header counts one case:\n{stdout}"
    );
    assert!(
        stdout.contains("check: 1 passed, 0 failed, 0 skipped"),
        "{stdout}"
    );
}

#[test]
fn an_unknown_case_is_a_usage_error() {
    // The name is refused before any connection, so no server is needed.
    let target = format!("127.0.0.1:{}", closed_port());
    let out = check(&[&target, "--only", "login,no-such-case"]);
    assert_exit(&out, 2);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("unknown case \"no-such-case\"") && stderr.contains("--list"),
        "names the case and where the list is: {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        text(&out.stdout)
    );
}

#[test]
fn invalid_arguments_are_usage_errors() {
    for args in [&["a b:1"][..], &["127.0.0.1:1", "--timeout", "0"]] {
        let out = check(args);
        assert_exit(&out, 2);
        assert!(out.stdout.is_empty(), "{args:?}: {}", text(&out.stdout));
        assert!(
            text(&out.stderr).starts_with("tcpchat: invalid"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn an_unreachable_server_is_one_clear_error() {
    let address = format!("127.0.0.1:{}", closed_port());
    for mode in [&[][..], &["--json"]] {
        let mut args = vec![address.as_str()];
        args.extend_from_slice(mode);
        let out = check(&args);
        assert_exit(&out, 1);
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("cannot connect to {address}")),
            "{mode:?}: names the address: {stderr}"
        );
        assert!(
            out.stdout.is_empty(),
            "{mode:?}: no table or JSON when nothing ran: {}",
            text(&out.stdout)
        );
    }
}

#[test]
fn a_wrong_server_fails_with_exit_1_and_says_what_it_expected() {
    let addr = wrong_server();
    let target = addr.to_string();
    let out = check(&[&target, "--only", "login", "--timeout", "5"]);
    assert_exit(&out, 1);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("  FAIL  login"), "{stdout}");
    assert!(
        stdout.contains("expected: \"HELLO ")
            && stdout.contains("got:      \"HELLO someone-else\""),
        "expected and got, as lines:\n{stdout}"
    );
    assert!(
        stdout.contains("check: 0 passed, 1 failed, 0 skipped"),
        "{stdout}"
    );

    let out = check(&[&target, "--only", "login", "--json"]);
    assert_exit(&out, 1);
    let report = json(&out);
    let case = &report["cases"][0];
    assert_eq!(case["name"], "login");
    assert_eq!(case["outcome"], "fail");
    assert_eq!(case["failure"]["got"], "\"HELLO someone-else\"", "{case}");
}
