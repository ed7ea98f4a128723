//! The full-screen client in a real terminal: tmux runs `tcpchat connect`, `send-keys`
//! types, `capture-pane` reads the screen. Two people chat, the server goes away and comes
//! back, a message arriving elsewhere is named at once, a registered name logs in with a
//! masked password, and no protocol line ever appears on screen.
//!
//! Needs tmux (`scripts/test.sh` installs it); without it the tests fail and say so.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod common;

use common::{Server, PATIENCE, PROTOCOL_WORDS};

fn require_tmux() {
    let found = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "tmux is not installed: run the suite with ./scripts/test.sh, which installs it"
    );
}

/// A private tmux server (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(test: &str) -> Self {
        Self {
            socket: format!("tcpchat-{test}-{}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .env_remove("TMUX")
            .output()
            .expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Starts `tcpchat connect ARGS` in a new 100×24 window named `session`. When the client
    /// exits, the shell prints its exit status on the (restored) screen.
    fn start_client(&self, session: &str, args: &str) {
        // tmux's server has the test runner's environment, not `common::scrub`'s: the state
        // files go under target/ too, never into the user's ~/.local/state.
        let state = common::test_data_dir().join("state");
        let command = format!(
            "TCPCHAT_STATE_DIR='{}' {} connect {args}; echo \"[exited $?]\"; sleep 600",
            state.display(),
            env!("CARGO_BIN_EXE_tcpchat")
        );
        self.run(&[
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "100",
            "-y",
            "24",
            "sh",
            "-c",
            &command,
        ]);
    }

    fn keys(&self, session: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", session];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Types `text` literally, then Enter.
    fn type_line(&self, session: &str, text: &str) {
        self.keys(session, &["-l", text]);
        self.keys(session, &["Enter"]);
    }

    fn screen(&self, session: &str) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", session]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls the screen until `ready` holds; fails with the last screen. Every screen seen is
    /// checked for protocol lines on the way.
    fn wait_for(&self, session: &str, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let screen = self.screen(session);
            for wire in PROTOCOL_WORDS {
                assert!(
                    !screen.contains(wire),
                    "protocol text {wire:?} on {session}'s screen:\n{screen}"
                );
            }
            if ready(&screen) {
                return screen;
            }
            if Instant::now() > deadline {
                panic!("{session}: no {what} within {PATIENCE:?}; the screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

#[test]
fn two_people_chat_in_full_screen() {
    require_tmux();
    let server = Server::start("127.0.0.1:0", &[]);
    let tmux = Tmux::new("chat");
    tmux.start_client("alice", &format!("--name alice {}", server.addr));
    tmux.start_client("bob", &server.addr.to_string());

    tmux.wait_for("alice", "status bar", |s| s.contains("│ alice │ online"));
    // Bob gave no name: the UI asks for one.
    tmux.wait_for("bob", "name prompt", |s| s.contains("name:"));
    tmux.type_line("bob", "alice");
    tmux.wait_for("bob", "taken-name notice", |s| {
        s.contains("the name alice is taken; type another name")
    });
    tmux.type_line("bob", "bob");
    tmux.wait_for("bob", "login", |s| s.contains("│ bob │ online"));
    tmux.wait_for("alice", "bob in the online list", |s| {
        s.contains("online (2)") && s.contains("│ bob")
    });

    tmux.type_line("alice", "@bob hello from alice 👋");
    tmux.wait_for("alice", "delivery mark", |s| {
        s.contains("<alice> hello from alice 👋 ✓")
    });
    // bob had no conversation open: alice's first message opens hers. Tab completes names.
    tmux.wait_for("bob", "alice's message", |s| {
        s.contains("<alice> hello from alice 👋")
            && s.contains("[alice]")
            && !s.contains("alice (1)")
    });
    tmux.keys("bob", &["-l", "/query al"]);
    tmux.keys("bob", &["Tab", "Enter"]);
    tmux.type_line("bob", "hi alice, 日本語 works too");
    tmux.wait_for("alice", "bob's reply", |s| {
        s.contains("<bob> hi alice, 日本語 works too")
    });

    tmux.type_line("alice", "@nobody hello?");
    tmux.wait_for("alice", "not delivered", |s| {
        s.contains("not delivered: user offline")
    });

    tmux.keys("alice", &["F1"]);
    tmux.wait_for("alice", "help", |s| s.contains("Ctrl-W Ctrl-U Ctrl-K"));
    tmux.keys("alice", &["Escape"]);
    tmux.wait_for("alice", "help closed", |s| {
        !s.contains("Ctrl-W Ctrl-U Ctrl-K")
    });

    tmux.type_line("alice", "/quit");
    let screen = tmux.wait_for("alice", "exit", |s| s.contains("[exited 0]"));
    assert!(
        !screen.contains("│"),
        "the terminal was not restored after /quit:\n{screen}"
    );
    tmux.keys("bob", &["C-c"]);
    tmux.wait_for("bob", "exit on Ctrl-C", |s| s.contains("[exited 0]"));
}

#[test]
fn the_server_going_away_keeps_the_screen_and_reconnects() {
    require_tmux();
    let mut server = Server::start("127.0.0.1:0", &[]);
    let addr = server.addr;
    let tmux = Tmux::new("reconnect");
    tmux.start_client("alice", &format!("--name alice {addr}"));
    tmux.start_client("bob", &format!("--name bob {addr}"));
    tmux.wait_for("bob", "login", |s| s.contains("│ bob │ online"));
    tmux.wait_for("alice", "login", |s| s.contains("│ alice │ online"));
    tmux.type_line("alice", "@bob before the outage");
    tmux.wait_for("alice", "delivery", |s| {
        s.contains("<alice> before the outage ✓")
    });
    tmux.wait_for(
        "bob",
        "the conversation, opened by its first message",
        |s| s.contains("<alice> before the outage"),
    );

    server.kill();
    tmux.wait_for("alice", "offline status", |s| {
        s.contains("offline, retrying in")
    });
    tmux.type_line("alice", "typed while offline");
    let screen = tmux.wait_for("alice", "queued message", |s| {
        s.contains("typed while offline (waiting for the connection…)")
    });
    assert!(screen.contains("<alice> before the outage ✓"), "{screen}");

    let _server = Server::start(&addr.to_string(), &[]);
    tmux.wait_for("alice", "reconnection", |s| {
        s.contains("reconnected as alice")
    });
    tmux.wait_for("bob", "reconnection", |s| s.contains("reconnected as bob"));
    // The queued message went out on login; bob may not have been back yet.
    let screen = tmux.wait_for("alice", "an answer for the queued message", |s| {
        s.contains("typed while offline ✓") || s.contains("typed while offline ✗")
    });
    assert!(
        screen.contains("<alice> before the outage ✓"),
        "history lost:\n{screen}"
    );
    tmux.type_line("alice", "after the outage");
    tmux.wait_for("bob", "the message after the outage", |s| {
        s.contains("<alice> after the outage")
    });
}

#[test]
fn two_people_chat_in_a_room_in_full_screen() {
    // See: #14
    require_tmux();
    let server = Server::start("127.0.0.1:0", &[]);
    let tmux = Tmux::new("room");
    tmux.start_client("alice", &format!("--name alice {}", server.addr));
    tmux.start_client("bob", &format!("--name bob {}", server.addr));
    tmux.wait_for("alice", "login", |s| s.contains("│ alice │ online"));
    tmux.wait_for("bob", "login", |s| s.contains("│ bob │ online"));

    tmux.type_line("alice", "/join #tea");
    tmux.wait_for("alice", "the room's header", |s| {
        s.contains("#tea │ 1 member │ no topic")
    });
    tmux.type_line("alice", "/topic green or black?");
    tmux.wait_for("alice", "the topic in the header", |s| {
        s.contains("#tea │ 1 member │ green or black?")
    });
    tmux.type_line("bob", "/join #tea");
    tmux.wait_for("bob", "the header with both and the topic", |s| {
        s.contains("#tea │ 2 members │ green or black?") && s.contains("members (2)")
    });
    tmux.wait_for("alice", "bob joining", |s| {
        s.contains("bob joined #tea") && s.contains("#tea │ 2 members")
    });

    tmux.type_line("alice", "green, obviously 🍵");
    tmux.wait_for("alice", "her message confirmed by the room", |s| {
        s.contains("<alice> green, obviously 🍵 ✓")
    });
    tmux.wait_for("bob", "alice's message", |s| {
        s.contains("<alice> green, obviously 🍵")
    });
    tmux.type_line("bob", "black, with milk");
    tmux.wait_for("alice", "bob's message", |s| {
        s.contains("<bob> black, with milk")
    });
    tmux.wait_for("bob", "his message confirmed", |s| {
        s.contains("<bob> black, with milk ✓")
    });

    // Elsewhere, the room's messages count as unread.
    tmux.keys("bob", &["M-1"]);
    tmux.type_line("alice", "are you still there?");
    tmux.wait_for("bob", "an unread count on the room", |s| {
        s.contains("#tea (1)")
    });

    tmux.keys("bob", &["M-2"]);
    tmux.wait_for("bob", "the room read", |s| {
        s.contains("<alice> are you still there?") && !s.contains("#tea (1)")
    });
    tmux.type_line("alice", "/part");
    tmux.wait_for("bob", "alice leaving", |s| {
        s.contains("alice left #tea") && s.contains("#tea │ 1 member")
    });
    for wire in ["JOINED", "SAID", "MEMBERS-OK", "TOPIC-IS", "PARTED"] {
        assert!(!tmux.screen("bob").contains(wire), "{wire} on bob's screen");
        assert!(
            !tmux.screen("alice").contains(wire),
            "{wire} on alice's screen"
        );
    }
}

/// Logs `name` in over a raw connection (a script, not a screen) and returns it.
fn raw_user(addr: std::net::SocketAddr, name: &str) -> std::net::TcpStream {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect as a raw user");
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("a read timeout");
    writeln!(stream, "HELLO-FROM {name}").expect("write the login");
    let mut reply = String::new();
    BufReader::new(stream.try_clone().expect("clone the stream"))
        .read_line(&mut reply)
        .expect("read the login's answer");
    assert_eq!(reply.trim_end(), format!("HELLO {name}"));
    stream
}

#[test]
fn a_message_in_another_conversation_is_named_at_once() {
    // See: #11. alice talks to bob; carol writes: alice sees who and what on the status line.
    use std::io::Write;
    require_tmux();
    let server = Server::start("127.0.0.1:0", &[]);
    let tmux = Tmux::new("arrival");
    tmux.start_client("alice", &format!("--name alice {}", server.addr));
    tmux.wait_for("alice", "login", |s| s.contains("│ alice │ online"));
    tmux.type_line("alice", "/query bob");
    tmux.wait_for("alice", "bob's conversation", |s| s.contains("[bob]"));

    let mut carol = raw_user(server.addr, "carol");
    writeln!(carol, "SEND alice lunch at noon?").expect("carol writes");
    let screen = tmux.wait_for("alice", "the arrival notice", |s| {
        s.contains("[3] carol: lunch at noon?")
    });
    assert!(screen.contains("carol (1)"), "no unread count:\n{screen}");
    assert!(
        screen.contains("[bob]"),
        "the open conversation changed:\n{screen}"
    );

    tmux.keys("alice", &["M-3"]);
    tmux.wait_for("alice", "carol's conversation, notice gone", |s| {
        s.contains("<carol> lunch at noon?") && !s.contains("carol: lunch") && s.contains("[carol]")
    });
}

/// A scripted extended server on one connection, for the UI's side of #13 before `tcpchat
/// serve` offers the extensions: each step waits for the line the client must send, then
/// writes the answer. Ends with the first line that differs, reporting it.
fn scripted_peer(
    listener: std::net::TcpListener,
    steps: Vec<(&'static str, &'static str)>,
) -> std::thread::JoinHandle<Result<(), String>> {
    use std::io::{BufRead, BufReader, Write};
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(PATIENCE))
            .map_err(|e| e.to_string())?;
        let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream);
        for (want, answer) in steps {
            let mut line = String::new();
            reader.read_line(&mut line).map_err(|e| e.to_string())?;
            // The client's keepalive on a slow machine: answered, not part of the script.
            while let Some(token) = line.trim_end().strip_prefix("PING ") {
                writeln!(writer, "PONG {token}").map_err(|e| e.to_string())?;
                line.clear();
                reader.read_line(&mut line).map_err(|e| e.to_string())?;
            }
            if line.trim_end() != want {
                return Err(format!("expected {want:?}, the client sent {line:?}"));
            }
            writer
                .write_all(answer.as_bytes())
                .map_err(|e| e.to_string())?;
        }
        // Hold the connection until the client leaves.
        let mut rest = String::new();
        while reader.read_line(&mut rest).is_ok_and(|n| n > 0) {
            rest.clear();
        }
        Ok(())
    })
}

#[test]
fn a_registered_name_logs_in_with_a_masked_password_and_changes_it() {
    // See: #13
    require_tmux();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local address");
    let peer = scripted_peer(
        listener,
        vec![
            (
                "EXT keepalive,presence,accounts,rooms,history",
                "EXT-OK keepalive,presence,accounts\n",
            ),
            ("HELLO-FROM alice", "NAME-REGISTERED\n"),
            (
                "LOGIN alice correct-horse",
                "HELLO alice\nONLINE alice,bob\nONLINE-DONE\n",
            ),
            (
                "PASSWORD correct-horse better-horse",
                "PASSWORD-OK\nOFFLINE bob\n",
            ),
        ],
    );
    let tmux = Tmux::new("password");
    tmux.start_client("alice", &format!("--name alice {addr}"));
    tmux.wait_for("alice", "password prompt", |s| {
        s.contains("password for alice:")
    });
    tmux.keys("alice", &["-l", "correct-horse"]);
    let screen = tmux.wait_for("alice", "masked input", |s| {
        s.contains("password for alice: *************")
    });
    assert!(!screen.contains("correct-horse"), "{screen}");
    tmux.keys("alice", &["Enter"]);
    tmux.wait_for("alice", "login and presence", |s| {
        s.contains("│ alice │ online") && s.contains("online (2)") && s.contains("│ bob")
    });
    tmux.type_line("alice", "/password");
    tmux.wait_for("alice", "current password prompt", |s| {
        s.contains("current password:")
    });
    tmux.type_line("alice", "correct-horse");
    tmux.wait_for("alice", "new password prompt", |s| {
        s.contains("new password:")
    });
    tmux.type_line("alice", "better-horse");
    tmux.wait_for("alice", "again prompt", |s| {
        s.contains("new password again:")
    });
    tmux.type_line("alice", "better-horse");
    let screen = tmux.wait_for("alice", "changed, and bob gone", |s| {
        s.contains("your password is changed") && s.contains("online (1)")
    });
    assert!(
        !screen.contains("correct-horse") && !screen.contains("better-horse"),
        "{screen}"
    );
    tmux.type_line("alice", "/quit");
    tmux.wait_for("alice", "exit", |s| s.contains("[exited 0]"));
    let result = peer.join().expect("the peer thread");
    assert_eq!(result, Ok(()));
}

/// Issue 13's "done when", end to end against the real server: alice registers her name from
/// the full-screen client; after a restart of the server (same data directory) the name asks
/// for its password, which logs her in; a classic client can no longer be alice.
#[test]
fn alice_registers_in_the_tui_and_gets_her_name_back_after_a_restart_with_her_password() {
    // See: #13
    require_tmux();
    let data = common::test_data_dir().join("register-restart");
    let _ = std::fs::remove_dir_all(&data);
    let data_arg = data.display().to_string();
    let server = Server::start("127.0.0.1:0", &["--data-dir", &data_arg]);
    let addr = server.addr;
    let tmux = Tmux::new("register");
    tmux.start_client("alice", &format!("--name alice {addr}"));
    tmux.wait_for("alice", "logged in", |s| s.contains("│ alice │ online"));
    tmux.type_line("alice", "/register");
    tmux.wait_for("alice", "new password prompt", |s| {
        s.contains("new password:")
    });
    tmux.type_line("alice", "correct-horse-9");
    tmux.wait_for("alice", "again prompt", |s| {
        s.contains("new password again:")
    });
    tmux.type_line("alice", "correct-horse-9");
    let screen = tmux.wait_for("alice", "registered", |s| {
        s.contains("your name is registered")
    });
    assert!(!screen.contains("correct-horse-9"), "{screen}");
    tmux.type_line("alice", "/quit");
    tmux.wait_for("alice", "exit", |s| s.contains("[exited 0]"));

    // The server goes away and comes back on the same data directory, on another port.
    drop(server);
    let server = Server::start("127.0.0.1:0", &["--data-dir", &data_arg]);
    let addr = server.addr;

    // A classic client cannot be alice any more: the name is simply taken to it.
    let mut classic = common::tcpchat();
    classic.args([
        "connect",
        "--plain",
        "--classic",
        "--name",
        "alice",
        &addr.to_string(),
    ]);
    let out = common::run_to_end(classic, Vec::new());
    assert!(
        !out.status.success(),
        "a classic client became alice: {out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("taken"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Alice, in the full-screen client, is asked for her password and gets her name.
    tmux.start_client("alice2", &format!("--name alice {addr}"));
    tmux.wait_for("alice2", "password prompt", |s| {
        s.contains("password for alice:")
    });
    tmux.type_line("alice2", "correct-horse-9");
    let screen = tmux.wait_for("alice2", "logged in again", |s| {
        s.contains("│ alice │ online")
    });
    assert!(!screen.contains("correct-horse-9"), "{screen}");
    tmux.type_line("alice2", "/quit");
    tmux.wait_for("alice2", "exit", |s| s.contains("[exited 0]"));
}

/// Issue 14: alice closes the full-screen client; what bob says meanwhile, in their room and
/// to her directly, is on her screen when she starts it again (the state file brings the
/// room and the resume point back; the server the missed messages).
#[test]
fn after_a_restart_of_the_tui_the_messages_sent_while_it_was_closed_are_there() {
    // See: #14
    require_tmux();
    let server = Server::start("127.0.0.1:0", &[]);
    let addr = server.addr;
    let state = common::test_data_dir().join("tui-state");
    let _ = std::fs::remove_dir_all(&state);
    let args = format!("--name alice --state-dir {} {addr}", state.display());
    let tmux = Tmux::new("history");
    tmux.start_client("alice", &args);
    tmux.wait_for("alice", "login", |s| s.contains("│ alice │ online"));
    tmux.type_line("alice", "/register");
    tmux.wait_for("alice", "new password prompt", |s| {
        s.contains("new password:")
    });
    tmux.type_line("alice", "correct-horse");
    tmux.wait_for("alice", "again prompt", |s| {
        s.contains("new password again:")
    });
    tmux.type_line("alice", "correct-horse");
    tmux.wait_for("alice", "registered", |s| {
        s.contains("your name is registered")
    });
    tmux.type_line("alice", "/join #tui");
    tmux.wait_for("alice", "joined", |s| s.contains("you joined #tui"));

    let mut bob = common::PlainClient::start(&["--name", "bob", &addr.to_string()]);
    bob.expect(&format!("logged in to {addr} as bob"));
    bob.type_line("/join #tui");
    bob.expect("you joined #tui");
    bob.type_line("before the restart");
    tmux.wait_for("alice", "bob's first line", |s| {
        s.contains("<bob> before the restart")
    });
    tmux.type_line("alice", "/quit");
    tmux.wait_for("alice", "exit", |s| s.contains("[exited 0]"));

    bob.type_line("while alice was away");
    bob.expect("[#tui] <bob> while alice was away");
    bob.type_line("@alice psst, direct");
    bob.expect("queued for alice (offline; delivered at their next login): psst, direct");

    tmux.start_client("alice2", &args);
    tmux.wait_for("alice2", "password prompt", |s| {
        s.contains("password for alice:")
    });
    tmux.type_line("alice2", "correct-horse");
    // The room and the direct conversation are back, each with one unread line.
    tmux.wait_for("alice2", "conversations with unread counts", |s| {
        s.contains("#tui (1)") && s.contains("bob (1)")
    });
    tmux.keys("alice2", &["M-2"]);
    let screen = tmux.wait_for("alice2", "the missed room line", |s| {
        s.contains("<bob> while alice was away")
    });
    assert!(
        !screen.contains("before the restart"),
        "only what was missed is shown:\n{screen}"
    );
    tmux.keys("alice2", &["M-3"]);
    tmux.wait_for("alice2", "the missed direct line", |s| {
        s.contains("<bob> psst, direct")
    });
    tmux.type_line("alice2", "/quit");
    tmux.wait_for("alice2", "exit", |s| s.contains("[exited 0]"));
}
