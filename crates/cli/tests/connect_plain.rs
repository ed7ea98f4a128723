//! `tcpchat connect --plain` as the real binary against `tcpchat serve`: what a script sees.
//!
//! Every wait has a timeout that reports what did arrive; nothing is timed.

mod common;

use std::process::Stdio;

use common::{tcpchat, PlainClient, Server, PROTOCOL_WORDS};

fn no_protocol_lines(lines: &[String]) {
    for line in lines {
        assert!(
            !PROTOCOL_WORDS.iter().any(|w| line.contains(w)),
            "a protocol line reached the user: {line:?}"
        );
    }
}

#[test]
fn two_scripts_chat_through_the_server() {
    let server = Server::start("127.0.0.1:0", &[]);
    let addr = server.addr;
    let mut alice = PlainClient::start(&["--name", "alice", &addr.to_string()]);
    alice.expect(&format!("logged in to {addr} as alice"));
    let mut bob = PlainClient::start(&["--name", "bob", &addr.to_string()]);
    bob.expect(&format!("logged in to {addr} as bob"));

    alice.type_line("@bob hi bob, 👋 żółw");
    bob.expect("<alice> hi bob, 👋 żółw");
    alice.expect("delivered to bob: hi bob, 👋 żółw");
    bob.type_line("/msg alice  spaces   kept ");
    alice.expect("<bob>  spaces   kept ");
    bob.type_line("!who");
    bob.expect("online: alice, bob");

    alice.type_line("!quit");
    let (status, out, err) = alice.finish();
    assert!(status.success(), "alice: {status}; stderr {err:#?}");
    no_protocol_lines(&out);
    let (status, out, _) = bob.finish();
    assert!(status.success());
    no_protocol_lines(&out);
}

#[test]
fn an_unknown_recipient_is_reported() {
    let server = Server::start("127.0.0.1:0", &[]);
    let mut alice = PlainClient::start(&["--name", "alice", &server.addr.to_string()]);
    alice.type_line("@ghost boo");
    alice.expect("not delivered to ghost (user offline): boo");
}

#[test]
fn a_piped_message_reports_its_delivery_and_exits() {
    // printf '@bob hi\n' | tcpchat connect --plain --name carol
    let server = Server::start("127.0.0.1:0", &[]);
    let mut bob = PlainClient::start(&["--name", "bob", &server.addr.to_string()]);
    bob.expect(&format!("logged in to {} as bob", server.addr));
    let mut carol = PlainClient::start(&["--name", "carol", &server.addr.to_string()]);
    carol.type_line("@bob hi");
    let (status, out, err) = carol.finish();
    assert!(status.success(), "{status}; stderr {err:#?}");
    assert!(out.contains(&"delivered to bob: hi".to_owned()), "{out:#?}");
    bob.expect("<carol> hi");
}

#[test]
fn a_taken_name_exits_non_zero_and_says_why() {
    let server = Server::start("127.0.0.1:0", &[]);
    let mut first = PlainClient::start(&["--name", "dave", &server.addr.to_string()]);
    first.expect(&format!("logged in to {} as dave", server.addr));
    let second = PlainClient::start(&["--name", "dave", &server.addr.to_string()]);
    let (status, _, err) = second.finish();
    assert_eq!(status.code(), Some(1), "stderr {err:#?}");
    assert!(
        err.iter()
            .any(|l| l.contains("the name dave is taken (choose another with --name)")),
        "stderr {err:#?}"
    );
}

#[test]
fn no_server_exits_non_zero_and_says_what_to_try() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let client = PlainClient::start(&["--name", "erin", &port.to_string()]);
    let (status, _, err) = client.finish();
    assert_eq!(status.code(), Some(1));
    assert!(
        err.iter()
            .any(|l| l.contains("refused the connection") && l.contains("tcpchat serve")),
        "stderr {err:#?}"
    );
}

#[test]
fn an_invalid_name_is_a_usage_error() {
    let out = tcpchat()
        .args(["connect", "--plain", "--name", "two words", "127.0.0.1:1"])
        .stdin(Stdio::null())
        .output()
        .expect("run tcpchat connect");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no spaces, commas or control characters"),
        "{err}"
    );
}

#[test]
fn the_server_going_away_and_coming_back() {
    let mut server = Server::start("127.0.0.1:0", &[]);
    let addr = server.addr;
    let mut alice = PlainClient::start(&["--name", "alice", &addr.to_string()]);
    alice.expect(&format!("logged in to {addr} as alice"));
    let mut bob = PlainClient::start(&["--name", "bob", &addr.to_string()]);
    bob.expect(&format!("logged in to {addr} as bob"));

    server.kill();
    alice.expect_prefix("connection lost");
    bob.expect_prefix("connection lost");

    let _server = Server::start(&addr.to_string(), &[]);
    alice.expect(&format!("reconnected to {addr} as alice"));
    bob.expect(&format!("reconnected to {addr} as bob"));
    alice.type_line("@bob still here?");
    bob.expect("<alice> still here?");
    alice.expect("delivered to bob: still here?");
}

#[test]
fn a_name_typed_at_the_prompt_that_cannot_be_used_asks_again() {
    // See: #11. Without --name the first input line is the name; a bad one asks again.
    let server = Server::start("127.0.0.1:0", &[]);
    let addr = server.addr;
    let mut dave = PlainClient::start(&["--name", "dave", &addr.to_string()]);
    dave.expect(&format!("logged in to {addr} as dave"));

    let mut prompt = PlainClient::start(&[&addr.to_string()]);
    prompt.expect("type your name");
    prompt.type_line("two words");
    prompt.expect_prefix("\"two words\" cannot be used");
    prompt.type_line("dave");
    prompt.expect("the name dave is taken; type another name");
    prompt.type_line("dave2");
    prompt.expect(&format!("logged in to {addr} as dave2"));
    prompt.type_line("/quit");
    let (status, out, err) = prompt.finish();
    assert!(status.success(), "{status}; stderr {err:#?}");
    no_protocol_lines(&out);
}

// ---- passwords (#13) ----------------------------------------------------------------------

/// `tcpchat connect --plain ARGS` with descriptor 3 reading `file`, through `sh`.
fn with_fd3(file: &std::path::Path, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new("sh");
    common::scrub(&mut cmd);
    cmd.arg("-c")
        .arg(r#"exec "$0" connect --plain --password-fd 3 "$@" 3<"$PWFILE""#)
        .arg(env!("CARGO_BIN_EXE_tcpchat"))
        .args(args)
        .env("PWFILE", file);
    cmd
}

#[test]
fn a_password_against_the_rules_is_a_usage_error_before_connecting() {
    // The environment variable.
    let out = tcpchat()
        .args(["connect", "--plain", "--name", "dora", "127.0.0.1:1"])
        .env("TCPCHAT_PASSWORD", "short")
        .stdin(Stdio::null())
        .output()
        .expect("run tcpchat connect");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 8 bytes"), "{err}");
    assert!(!err.contains("short"), "the password was echoed: {err}");
    // The descriptor: its first line is the password.
    let dir = std::env::temp_dir().join(format!("tcpchat-pwfd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("pw");
    std::fs::write(&file, "has space in it\n").expect("write the password file");
    let out = with_fd3(&file, &["--name", "dora", "127.0.0.1:1"])
        .stdin(Stdio::null())
        .output()
        .expect("run tcpchat connect");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no spaces"), "{err}");
}

#[test]
fn a_password_from_a_descriptor_logs_in_and_is_never_shown() {
    // Against a server without accounts the client logs in without it (and says so); against
    // one with accounts and no such account, NO-ACCOUNT does the same. Either way: logged in,
    // and the password appears nowhere.
    let server = Server::start("127.0.0.1:0", &[]);
    let addr = server.addr.to_string();
    let dir = std::env::temp_dir().join(format!("tcpchat-pwfd2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("pw");
    std::fs::write(&file, "correct-horse-77\n").expect("write the password file");
    let mut dora = PlainClient::spawn(with_fd3(&file, &["--name", "dora", &addr]));
    dora.expect(&format!("logged in to {addr} as dora"));
    dora.type_line("/quit");
    let (status, out, err) = dora.finish();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "{status}; stderr {err:#?}");
    assert!(
        !out.iter().chain(&err).any(|l| l.contains("correct-horse")),
        "the password was shown: {out:#?} {err:#?}"
    );
    no_protocol_lines(&out);
}

#[test]
fn login_in_plain_mode_without_a_password_is_a_usage_error() {
    let out = tcpchat()
        .args([
            "connect",
            "--plain",
            "--login",
            "--name",
            "dora",
            "127.0.0.1:1",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run tcpchat connect");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--password-fd N"), "{err}");
}

#[test]
fn two_scripts_talk_in_a_room() {
    // See: #14
    let server = Server::start("127.0.0.1:0", &[]);
    let addr = server.addr;
    let mut alice = PlainClient::start(&["--name", "alice", &addr.to_string()]);
    alice.expect(&format!("logged in to {addr} as alice"));
    let mut bob = PlainClient::start(&["--name", "bob", &addr.to_string()]);
    bob.expect(&format!("logged in to {addr} as bob"));

    alice.type_line("/join #plain");
    alice.expect("you joined #plain");
    alice.expect("members of #plain (1, the owner first): alice");
    alice.type_line("/topic scripts only");
    alice.expect("you set the topic of #plain: scripts only");
    bob.type_line("/join #plain");
    bob.expect("you joined #plain");
    bob.expect("alice set the topic of #plain: scripts only");
    bob.expect("members of #plain (2, the owner first): alice, bob");
    alice.expect("bob joined #plain");
    // Plain text goes to the room joined last; both see it once, in the room's order.
    bob.type_line("hello  room 👋");
    alice.expect("[#plain] <bob> hello  room 👋");
    bob.expect("[#plain] <bob> hello  room 👋");
    alice.type_line("/rooms");
    alice.expect("rooms (1): #plain");
    alice.type_line("/kick bob");
    bob.expect("alice removed you from #plain");
    alice.expect("alice removed bob from #plain");
    bob.type_line("still here?");
    bob.expect("the message to #plain: you are not in that room (/join it first)");

    alice.type_line("!quit");
    let (status, out, err) = alice.finish();
    assert!(status.success(), "alice: {status}; stderr {err:#?}");
    no_protocol_lines(&out);
    bob.type_line("!quit");
    let (status, out, _) = bob.finish();
    assert!(status.success());
    no_protocol_lines(&out);
    for line in out {
        for wire in [
            "JOINED",
            "SAID",
            "MEMBERS-OK",
            "TOPIC-IS",
            "KICKED",
            "NOT-MEMBER",
        ] {
            assert!(!line.contains(wire), "{wire} reached the user: {line:?}");
        }
    }
}

// ---- history (#14) ------------------------------------------------------------------------

const PW: &str = "correct-horse-77";

/// `tcpchat connect --plain --name NAME ADDR` with the account's password in the environment.
fn with_password(name: &str, addr: &str) -> PlainClient {
    let mut cmd = tcpchat();
    cmd.args(["connect", "--plain", "--name", name, addr])
        .env("TCPCHAT_PASSWORD", PW)
        .env("TZ", "UTC");
    PlainClient::spawn(cmd)
}

/// `2026-12-02 05:30:12 <from> text`: a missed message with its server time.
fn is_missed(line: &str, tail: &str) -> bool {
    line.ends_with(tail)
        && line.len() == 19 + tail.len()
        && line.as_bytes()[4] == b'-'
        && line.as_bytes()[13] == b':'
}

#[test]
fn a_message_sent_while_offline_is_printed_once_with_its_time_and_never_again() {
    let mut server = Server::start("127.0.0.1:0", &[]);
    let addr = server.addr.to_string();
    let mut alice = with_password("alice", &addr);
    alice.expect(&format!("logged in to {addr} as alice"));
    alice.type_line("/register");
    alice.expect("your name is registered: from now on it can only be used with your password");
    alice.type_line("/quit");
    let (status, _, err) = alice.finish();
    assert!(status.success(), "{status}; stderr {err:#?}");

    let mut bob = PlainClient::start(&["--name", "bob", &addr]);
    bob.expect(&format!("logged in to {addr} as bob"));
    bob.type_line("@alice first  while away");
    bob.expect("queued for alice (offline; delivered at their next login): first  while away");
    bob.type_line("@alice second");
    bob.expect("queued for alice (offline; delivered at their next login): second");

    // Back: the missed messages, in order, each with its time, then live lines.
    let mut alice = with_password("alice", &addr);
    alice.expect(&format!("logged in to {addr} as alice"));
    alice.expect_line("the first missed message", |l| {
        is_missed(l, " <bob> first  while away")
    });
    alice.expect_line("the second", |l| is_missed(l, " <bob> second"));
    bob.type_line("@alice live now");
    alice.expect("<bob> live now");

    // A dropped connection (the server killed and started again on its database): the
    // client resumes where it stopped; nothing is printed twice.
    server.kill();
    alice.expect_prefix("connection lost");
    let _server = Server::start(&addr, &[]);
    alice.expect(&format!("reconnected to {addr} as alice"));
    bob.expect(&format!("reconnected to {addr} as bob"));
    bob.type_line("@alice after the restart");
    alice.expect("<bob> after the restart");
    alice.type_line("/quit");
    let (status, out, err) = alice.finish();
    assert!(status.success(), "{status}; stderr {err:#?}");
    no_protocol_lines(&out);
    for tail in [
        "first  while away",
        "<bob> second",
        "live now",
        "after the restart",
    ] {
        let n = out.iter().filter(|l| l.ends_with(tail)).count();
        assert_eq!(n, 1, "{tail:?} printed {n} times: {out:#?}");
    }
    let first = out.iter().position(|l| l.ends_with("first  while away"));
    let second = out.iter().position(|l| l.ends_with("<bob> second"));
    assert!(first < second, "in order: {out:#?}");
}

#[test]
fn without_history_on_the_server_nothing_is_kept_as_before() {
    for extensions in ["keepalive,presence,accounts,rooms", "none"] {
        let server = Server::start("127.0.0.1:0", &["--extensions", extensions]);
        let addr = server.addr.to_string();
        let mut bob = PlainClient::start(&["--name", "bob", &addr]);
        bob.expect(&format!("logged in to {addr} as bob"));
        bob.type_line("@alice are you there");
        bob.expect("not delivered to alice (user offline): are you there");
        let mut alice = PlainClient::start(&["--name", "alice", &addr]);
        alice.expect(&format!("logged in to {addr} as alice"));
        bob.type_line("@alice now");
        alice.expect("<bob> now");
        alice.type_line("/quit");
        let (status, out, _) = alice.finish();
        assert!(status.success());
        assert!(
            !out.iter().any(|l| l.contains("are you there")),
            "{extensions}: {out:#?}"
        );
    }
}

#[test]
fn after_a_restart_the_rooms_and_what_was_missed_come_back_from_the_state_file() {
    let server = Server::start("127.0.0.1:0", &[]);
    let addr = server.addr.to_string();
    let mut alice = with_password("alice", &addr);
    alice.expect(&format!("logged in to {addr} as alice"));
    alice.type_line("/register");
    alice.expect("your name is registered: from now on it can only be used with your password");
    alice.type_line("/join #state");
    alice.expect("you joined #state");
    let mut bob = PlainClient::start(&["--name", "bob", &addr]);
    bob.expect(&format!("logged in to {addr} as bob"));
    bob.type_line("/join #state");
    bob.expect("you joined #state");
    bob.type_line("seen by both");
    alice.expect("[#state] <bob> seen by both");
    alice.type_line("/quit");
    let (status, _, err) = alice.finish();
    assert!(status.success(), "{status}; stderr {err:#?}");
    let state = common::test_data_dir().join("state");
    let file = std::fs::read_dir(&state)
        .expect("a state directory")
        .map(|e| e.expect("entry").path())
        .find(|p| p.to_string_lossy().ends_with("--alice.json"))
        .expect("alice's state file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }

    bob.type_line("said while alice was away");
    bob.expect("[#state] <bob> said while alice was away");
    bob.type_line("@alice a direct one");
    bob.expect("queued for alice (offline; delivered at their next login): a direct one");

    // The next run joins #state again by itself and shows only what it missed.
    let mut alice = with_password("alice", &addr);
    alice.expect(&format!("logged in to {addr} as alice"));
    alice.expect_line("the missed direct message", |l| {
        is_missed(l, " <bob> a direct one")
    });
    alice.expect("you joined #state");
    alice.expect_line("the missed room message", |l| {
        is_missed(l, " [#state] <bob> said while alice was away")
    });
    // bob's plain text goes to the conversation he used last: back to the room.
    bob.type_line("/join #state");
    bob.expect("you joined #state");
    bob.type_line("live again");
    alice.expect("[#state] <bob> live again");
    alice.type_line("/quit");
    let (status, out, err) = alice.finish();
    assert!(status.success(), "{status}; stderr {err:#?}");
    assert!(
        !out.iter().any(|l| l.contains("seen by both")),
        "what the first run saw is not shown again: {out:#?}"
    );

    // A corrupt state file is a warning, and the run goes on.
    std::fs::write(&file, b"{ not json").expect("corrupt it");
    let mut alice = with_password("alice", &addr);
    alice.expect_line("a warning", |l| {
        l.contains("is not valid") && l.contains("ignored")
    });
    alice.expect(&format!("logged in to {addr} as alice"));
}
