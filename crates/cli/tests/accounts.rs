//! Accounts through the real binary: an account survives a restart of `tcpchat serve` on the
//! same `--data-dir`, and `tcpchat accounts list|lock|unlock|remove` acts on the store a
//! running server uses (a locked account gets `LOCKED` over the wire; a removed one is free).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

mod common;

use common::{assert_exit, tcpchat, text, Server, PATIENCE};

const PW: &str = "correct-horse";

struct Line {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Line {
    fn connect(addr: SocketAddr) -> Self {
        let w = TcpStream::connect(addr).expect("connect");
        w.set_read_timeout(Some(PATIENCE)).expect("timeout");
        Self {
            r: BufReader::new(w.try_clone().expect("clone")),
            w,
        }
    }

    /// Sends `line`, returns the reply line (without `\n`).
    fn ask(&mut self, line: &str) -> String {
        self.w
            .write_all(format!("{line}\n").as_bytes())
            .expect("write");
        let mut reply = String::new();
        self.r.read_line(&mut reply).expect("read a reply");
        reply.trim_end().to_owned()
    }

    /// An accounts connection.
    fn accounts(addr: SocketAddr) -> Self {
        let mut c = Self::connect(addr);
        assert_eq!(c.ask("EXT accounts"), "EXT-OK accounts");
        c
    }
}

fn serve(data: &Path) -> Server {
    Server::start(
        "127.0.0.1:0",
        &["--data-dir", data.to_str().expect("utf-8 path")],
    )
}

fn accounts_cmd(data: &Path, args: &[&str]) -> std::process::Output {
    tcpchat()
        .arg("accounts")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("run tcpchat accounts")
}

fn fresh_dir(what: &str) -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("accounts-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn an_account_survives_a_server_restart() {
    let data = fresh_dir("restart");
    let mut server = serve(&data);
    let mut alice = Line::accounts(server.addr);
    assert_eq!(alice.ask("HELLO-FROM alice"), "HELLO alice");
    assert_eq!(alice.ask(&format!("REGISTER {PW}")), "REGISTER-OK");
    drop(alice);
    server.sigterm();
    assert!(server.wait_exit().success());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&data)
            .expect("data dir")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "created private");
    }

    let server = serve(&data);
    let mut classic = Line::connect(server.addr);
    assert_eq!(classic.ask("HELLO-FROM alice"), "IN-USE");
    let mut other = Line::accounts(server.addr);
    assert_eq!(other.ask("HELLO-FROM alice"), "NAME-REGISTERED");
    assert_eq!(other.ask("LOGIN alice wrong-password"), "BAD-PASSWORD");
    assert_eq!(other.ask(&format!("LOGIN alice {PW}")), "HELLO alice");
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn the_operator_lists_locks_unlocks_and_removes_accounts_beside_a_running_server() {
    let data = fresh_dir("operator");
    let server = serve(&data);
    let out = accounts_cmd(&data, &["list"]);
    assert_exit(&out, 0);
    assert_eq!(text(&out.stdout).trim(), "no accounts");

    let mut alice = Line::accounts(server.addr);
    assert_eq!(alice.ask("HELLO-FROM alice"), "HELLO alice");
    assert_eq!(alice.ask(&format!("REGISTER {PW}")), "REGISTER-OK");
    drop(alice);
    let out = accounts_cmd(&data, &["list"]);
    assert_exit(&out, 0);
    let listed = text(&out.stdout);
    assert!(listed.starts_with("alice\tactive\tregistered "), "{listed}");
    assert!(!listed.contains("argon2"), "no hash shown: {listed}");

    assert_exit(&accounts_cmd(&data, &["lock", "alice"]), 0);
    assert!(text(&accounts_cmd(&data, &["list"]).stdout).starts_with("alice\tlocked"));
    let mut c = Line::accounts(server.addr);
    assert_eq!(c.ask(&format!("LOGIN alice {PW}")), "LOCKED");
    assert_exit(&accounts_cmd(&data, &["unlock", "alice"]), 0);
    assert_eq!(c.ask(&format!("LOGIN alice {PW}")), "HELLO alice");
    drop(c);

    assert_exit(&accounts_cmd(&data, &["remove", "alice"]), 0);
    // Free again, for anyone; her connection is gone, the name may take a moment to free.
    let mut classic = Line::connect(server.addr);
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        match classic.ask("HELLO-FROM alice").as_str() {
            "HELLO alice" => break,
            "IN-USE" if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => panic!("HELLO-FROM a removed account's name: {other}"),
        }
    }

    let out = accounts_cmd(&data, &["remove", "alice"]);
    assert_exit(&out, 1);
    assert!(
        text(&out.stderr).contains("no account \"alice\""),
        "{}",
        text(&out.stderr)
    );
    let out = accounts_cmd(&data, &["lock", "not a name"]);
    assert_exit(&out, 2);
    let _ = std::fs::remove_dir_all(&data);
}

/// Reads lines until one that starts with `word`, returning it (without `\n`).
fn read_until(line: &mut Line, word: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let mut s = String::new();
        line.r.read_line(&mut s).expect("read a line");
        assert!(!s.is_empty(), "closed before {word}: {seen:?}");
        let s = s.trim_end().to_owned();
        let done = s.starts_with(word);
        seen.push(s);
        if done {
            return seen;
        }
    }
}

/// Drops the time field of `DELIVERY-AT <offset> <time> <from> <msg>` and the epoch of
/// `RESUME-OK <epoch> <top>`.
fn without_time(line: &str) -> String {
    let words: Vec<&str> = line.splitn(4, ' ').collect();
    match words.as_slice() {
        ["DELIVERY-AT", offset, rest @ ..] => {
            let rest = rest.join(" ");
            let (_, after) = rest.split_once(' ').expect("time then sender");
            format!("DELIVERY-AT {offset} {after}")
        }
        ["RESUME-OK", _, top] => format!("RESUME-OK {top}"),
        _ => line.to_owned(),
    }
}

/// A direct message to an offline account, kept by `tcpchat serve`, survives a restart of
/// the binary (SIGTERM writes what is numbered before it exits) and arrives once.
#[test]
fn an_offline_message_survives_a_restart_of_the_binary() {
    let data = fresh_dir("history");
    let mut server = serve(&data);
    let mut alice = Line::accounts(server.addr);
    assert_eq!(alice.ask("HELLO-FROM alice"), "HELLO alice");
    assert_eq!(alice.ask(&format!("REGISTER {PW}")), "REGISTER-OK");
    drop(alice);
    let mut bob = Line::connect(server.addr);
    assert_eq!(bob.ask("EXT history"), "EXT-OK history");
    assert_eq!(bob.ask("HELLO-FROM bob"), "HELLO bob");
    // Until alice's connection is seen closed.
    while bob.ask("LIST").split([' ', ',']).any(|n| n == "alice") {
        std::thread::yield_now();
    }
    assert_eq!(bob.ask("SEND alice kept for you"), "SEND-QUEUED");
    drop(bob);
    server.sigterm();
    assert!(server.wait_exit().success());

    let wants: [&[&str]; 2] = [
        &["DELIVERY-AT 1 bob kept for you", "RESUME-OK 1"],
        // Once: nothing again after a second restart.
        &["RESUME-OK 1"],
    ];
    for want in wants {
        let mut server = serve(&data);
        let mut alice = Line::connect(server.addr);
        assert_eq!(alice.ask("EXT accounts,history"), "EXT-OK accounts,history");
        assert_eq!(alice.ask(&format!("LOGIN alice {PW}")), "HELLO alice");
        let lines: Vec<String> = read_until(&mut alice, "RESUME-OK")
            .iter()
            .map(|l| without_time(l))
            .collect();
        assert_eq!(lines, want);
        drop(alice);
        server.sigterm();
        assert!(server.wait_exit().success());
    }
    let _ = std::fs::remove_dir_all(&data);
}
