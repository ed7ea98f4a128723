//! `tcpchat serve` as the real binary: startup, chatting, signals, settings errors.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(20);

fn tcpchat() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tcpchat"));
    // The tests own the environment: no stray TCPCHAT_* or RUST_LOG from the caller.
    for (key, _) in std::env::vars() {
        if key.starts_with("TCPCHAT_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd
}

struct Running {
    child: Child,
    addr: SocketAddr,
    log: std::sync::mpsc::Receiver<String>,
}

/// Starts `tcpchat serve` on a free loopback port and reads the bound address from its log.
fn serve(extra: &[&str]) -> Running {
    let mut child = tcpchat()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tcpchat serve");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let addr = loop {
        let line = rx
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("no 'listening' log line; stderr so far: {seen:#?}"));
        if let Some(rest) = line
            .split("addr=")
            .nth(1)
            .filter(|_| line.contains("listening"))
        {
            let addr = rest.split_whitespace().next().expect("address after addr=");
            break addr.parse().expect("a socket address");
        }
        seen.push(line);
    };
    Running {
        child,
        addr,
        log: rx,
    }
}

fn line_client(addr: SocketAddr) -> (BufReader<TcpStream>, TcpStream) {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    (BufReader::new(stream.try_clone().expect("clone")), stream)
}

fn read_line(r: &mut BufReader<TcpStream>) -> String {
    let mut s = String::new();
    r.read_line(&mut s).expect("read a line");
    s
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn binary_serves_chat_and_exits_zero_on_sigterm() {
    let mut server = serve(&[]);
    let (mut ra, mut wa) = line_client(server.addr);
    let (mut rb, mut wb) = line_client(server.addr);
    wa.write_all(b"HELLO-FROM alice\n").expect("write");
    assert_eq!(read_line(&mut ra), "HELLO alice\n");
    wb.write_all(b"HELLO-FROM bob\r\n").expect("write");
    assert_eq!(read_line(&mut rb), "HELLO bob\n");
    wa.write_all("SEND bob hi 👋\n".as_bytes()).expect("write");
    assert_eq!(read_line(&mut ra), "SEND-OK\n");
    assert_eq!(read_line(&mut rb), "DELIVERY alice hi 👋\n");

    sigterm(&server.child);
    let status = wait_exit(&mut server.child);
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0");
    // The connections were closed by the server, not left hanging.
    let mut rest = Vec::new();
    ra.read_to_end(&mut rest).expect("EOF after shutdown");
    let logs: Vec<String> = server.log.try_iter().collect();
    assert!(
        logs.iter()
            .any(|l| l.contains("logged in") && l.contains("name=alice")),
        "login logged at info: {logs:#?}"
    );
}

#[test]
fn busy_beyond_max_clients() {
    let mut server = serve(&["--max-clients", "1"]);
    let (mut ra, mut wa) = line_client(server.addr);
    wa.write_all(b"HELLO-FROM only\n").expect("write");
    assert_eq!(read_line(&mut ra), "HELLO only\n");
    let (mut rb, mut wb) = line_client(server.addr);
    let _ = wb.write_all(b"HELLO-FROM second\n");
    assert_eq!(read_line(&mut rb), "BUSY\n");
    assert_eq!(read_line(&mut rb), "", "closed after BUSY");
    sigterm(&server.child);
    assert_eq!(wait_exit(&mut server.child).code(), Some(0));
}

#[test]
fn settings_errors_exit_2_with_a_message() {
    let cases: &[&[&str]] = &[
        &["serve", "--max-clients", "0"],
        &["serve", "--listen", "nonsense"],
        &["serve", "--handshake-timeout", "later"],
        &["serve", "--config", "/nonexistent/tcpchat.toml"],
        &["serve", "--no-such-flag"],
    ];
    for argv in cases {
        let out = tcpchat().args(*argv).output().expect("run tcpchat");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{argv:?}: stderr {stderr}");
        assert!(!stderr.trim().is_empty(), "{argv:?} printed no explanation");
    }
    let out = tcpchat()
        .args(["serve"])
        .env("TCPCHAT_MAX_CLIENTS", "zero")
        .output()
        .expect("run tcpchat");
    assert_eq!(out.status.code(), Some(2), "invalid environment value");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("TCPCHAT_MAX_CLIENTS")
            || String::from_utf8_lossy(&out.stderr).contains("max-clients")
    );
}

#[test]
fn address_in_use_exits_1_with_a_hint() {
    let mut server = serve(&[]);
    let out = tcpchat()
        .args(["serve", "--listen", &server.addr.to_string()])
        .output()
        .expect("run tcpchat");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("cannot listen on") && stderr.contains("try --listen"),
        "{stderr}"
    );
    sigterm(&server.child);
    wait_exit(&mut server.child);
}

#[test]
fn environment_and_config_file_are_read() {
    let dir = std::env::temp_dir().join(format!("tcpchat-serve-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("tcpchat.toml");
    std::fs::write(&path, "max_clients = 1\n").expect("write config");
    // The file sets max_clients = 1; the environment sets the config path.
    let mut child = tcpchat()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("TCPCHAT_CONFIG", &path)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut first = String::new();
    BufReader::new(stderr)
        .read_line(&mut first)
        .expect("log line");
    assert!(
        first.contains("listening") && first.contains("max_clients=1"),
        "{first}"
    );
    sigterm(&child);
    assert_eq!(wait_exit(&mut child).code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Out of file descriptors: accept fails with EMFILE. The server must log it, back off
/// (not spin, not exit) and serve again once descriptors are free.
#[test]
fn accept_errors_back_off_and_recover() {
    let bin = env!("CARGO_BIN_EXE_tcpchat");
    // A hard limit of 40 descriptors: the server cannot raise it, and runs out after ~30
    // connections (the runtime and the listener use the rest).
    let mut child = tcpchat_sh(&format!(
        "ulimit -n 40 && exec {bin} serve --listen 127.0.0.1:0 --max-clients 1000"
    ));
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr: SocketAddr = loop {
        let line = rx.recv_timeout(PATIENCE).expect("listening line");
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .expect("addr")
                .parse()
                .expect("addr");
        }
    };
    // More connections than descriptors: the kernel completes them, the server cannot
    // accept them all.
    let mut held = Vec::new();
    for i in 0..60 {
        let (mut r, mut w) = line_client(addr);
        w.write_all(format!("HELLO-FROM c{i}\n").as_bytes())
            .expect("write");
        held.push((r.get_mut().try_clone().expect("clone"), w));
    }
    let saw_backoff = loop {
        match rx.recv_timeout(PATIENCE) {
            Ok(line) if line.contains("accept failed") => break true,
            Ok(_) => {}
            Err(_) => break false,
        }
    };
    assert!(saw_backoff, "EMFILE was not logged as an accept failure");
    assert!(
        child.try_wait().expect("wait").is_none(),
        "server exited on EMFILE"
    );
    drop(held);
    // Descriptors are free again: a new client is served (after the back-off ends and the
    // backlog of closed connections drains).
    let (mut r, mut w) = line_client(addr);
    w.write_all(b"HELLO-FROM after\n").expect("write");
    assert_eq!(read_line(&mut r), "HELLO after\n");
    sigterm(&child);
    assert_eq!(wait_exit(&mut child).code(), Some(0));
}

fn tcpchat_sh(script: &str) -> Child {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]);
    for (key, _) in std::env::vars() {
        if key.starts_with("TCPCHAT_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sh")
}
