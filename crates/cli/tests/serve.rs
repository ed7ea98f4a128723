//! `tcpchat serve` as the real binary: startup, chatting, signals, settings errors.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::{lines_of, scrub, tcpchat, wait_for, Server, PATIENCE};
use tcpchat_server::{Config, Keepalive};

fn serve(extra: &[&str]) -> Server {
    Server::start("127.0.0.1:0", extra)
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

    server.sigterm();
    let status = server.wait_exit();
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

/// The binary applies the abuse limits from its settings: one connection per address means
/// the second gets BUSY (logged once at info); `--limits off` lifts it.
#[test]
fn the_per_address_limit_and_limits_off() {
    let mut server = serve(&["--max-per-address", "1"]);
    let (mut ra, mut wa) = line_client(server.addr);
    wa.write_all(b"HELLO-FROM first\n").expect("write");
    assert_eq!(read_line(&mut ra), "HELLO first\n");
    for _ in 0..3 {
        let (mut rb, mut wb) = line_client(server.addr);
        let _ = wb.write_all(b"HELLO-FROM second\n");
        assert_eq!(read_line(&mut rb), "BUSY\n");
        assert_eq!(read_line(&mut rb), "", "closed after BUSY");
    }
    server.sigterm();
    assert_eq!(server.wait_exit().code(), Some(0));
    let refusals = server
        .log
        .try_iter()
        .filter(|l| l.contains("refused a connection from 127.0.0.1"))
        .count();
    assert_eq!(refusals, 1, "three refusals, one log line a minute");

    let mut server = serve(&["--max-per-address", "1", "--limits", "off"]);
    let (mut ra, mut wa) = line_client(server.addr);
    wa.write_all(b"HELLO-FROM first\n").expect("write");
    assert_eq!(read_line(&mut ra), "HELLO first\n");
    let (mut rb, mut wb) = line_client(server.addr);
    wb.write_all(b"HELLO-FROM second\n").expect("write");
    assert_eq!(
        read_line(&mut rb),
        "BUSY\n",
        "a limit set by itself applies on top of --limits off"
    );
    server.sigterm();
    assert_eq!(server.wait_exit().code(), Some(0));

    // 1,000 lines in one write: with the default command rate (200, then 20/s, dropped
    // after 30 s of waiting) the sender would be cut off; with the limits off all are answered.
    let mut server = serve(&["--limits", "off"]);
    let (mut r, mut w) = line_client(server.addr);
    w.write_all(b"HELLO-FROM me\n").expect("write");
    assert_eq!(read_line(&mut r), "HELLO me\n");
    w.write_all("SEND nobody x\n".repeat(1_000).as_bytes())
        .expect("write");
    for _ in 0..1_000 {
        assert_eq!(read_line(&mut r), "BAD-DEST-USER\n");
    }
    server.sigterm();
    assert_eq!(server.wait_exit().code(), Some(0));
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
    server.sigterm();
    assert_eq!(server.wait_exit().code(), Some(0));
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
    server.sigterm();
    server.wait_exit();
}

#[test]
fn environment_and_config_file_are_read() {
    let dir = std::env::temp_dir().join(format!("tcpchat-serve-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("tcpchat.toml");
    std::fs::write(&path, "max_clients = 1\n").expect("write config");
    // The file sets max_clients = 1; the environment sets the config path.
    let mut cmd = tcpchat();
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .env("TCPCHAT_CONFIG", &path);
    let mut server = Server::spawn(cmd);
    let (mut ra, mut wa) = line_client(server.addr);
    wa.write_all(b"HELLO-FROM one\n").expect("write");
    assert_eq!(read_line(&mut ra), "HELLO one\n");
    let (mut rb, mut wb) = line_client(server.addr);
    let _ = wb.write_all(b"HELLO-FROM two\n");
    assert_eq!(
        read_line(&mut rb),
        "BUSY\n",
        "max_clients = 1 from the file"
    );
    server.sigterm();
    assert_eq!(server.wait_exit().code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Out of file descriptors: accept fails with EMFILE. The server must log it, back off
/// (not spin, not exit) and serve again once descriptors are free.
#[test]
fn accept_errors_back_off_and_recover() {
    let bin = env!("CARGO_BIN_EXE_tcpchat");
    // A hard limit of 40 descriptors: the server cannot raise it, and runs out after ~30
    // connections (the runtime and the listener use the rest).
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(format!(
        "ulimit -n 40 && exec {bin} serve --listen 127.0.0.1:0 --max-clients 1000"
    ));
    scrub(&mut sh);
    let mut server = Server::spawn(sh);
    let addr = server.addr;
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
        match server.log.recv_timeout(PATIENCE) {
            Ok(line) if line.contains("accept failed") => break true,
            Ok(_) => {}
            Err(_) => break false,
        }
    };
    assert!(saw_backoff, "EMFILE was not logged as an accept failure");
    assert!(
        server.child.try_wait().expect("wait").is_none(),
        "server exited on EMFILE"
    );
    drop(held);
    // Descriptors are free again: a new client is served (after the back-off ends and the
    // backlog of closed connections drains).
    let (mut r, mut w) = line_client(addr);
    w.write_all(b"HELLO-FROM after\n").expect("write");
    assert_eq!(read_line(&mut r), "HELLO after\n");
    server.sigterm();
    assert_eq!(server.wait_exit().code(), Some(0));
}

/// A value the server itself refuses (not one clap can tell is wrong) exits 2 with the
/// server's message naming the setting and the bound. See: #11
#[test]
fn values_the_server_refuses_exit_2_with_its_message() {
    let max_line = Config::default().max_line_bytes;
    let cases: &[(&[&str], String)] = &[
        (
            &["serve", "--max-outbox", "10"],
            format!("invalid max-outbox 10: must be at least max-line ({max_line})"),
        ),
        (
            &["serve", "--max-line", "20"],
            "invalid max-line 20: must be between 43".to_owned(),
        ),
        (
            &["serve", "--keepalive", "500ms"],
            "invalid keepalive 500ms: must be whole seconds".to_owned(),
        ),
        (
            &["serve", "--keepalive-probes", "0"],
            "invalid keepalive-probes 0: must be from 1 to 127".to_owned(),
        ),
    ];
    for (argv, want) in cases {
        let out = tcpchat().args(*argv).output().expect("run tcpchat");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{argv:?}: stderr {stderr}");
        assert!(
            stderr.contains(want.as_str()),
            "{argv:?}: want {want:?} in:\n{stderr}"
        );
    }
}

/// `--help` shows the defaults the server uses, taken from `Config::default()`.
#[test]
fn help_shows_the_server_defaults() {
    let out = tcpchat()
        .args(["serve", "--help"])
        .output()
        .expect("run tcpchat");
    assert_eq!(out.status.code(), Some(0));
    // Joined so a default wrapped onto the next line still reads as one phrase.
    let help = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let d = Config::default();
    let keepalive = d.keepalive.expect("keepalive on by default");
    for shown in [
        format!("[default: {}]", d.max_clients),
        format!("[default: {}]", d.max_line_bytes),
        format!("[default: {}]", d.outbox_limit_bytes),
        format!("[default: {}]", keepalive.probes),
        format!("[default: {}s]", d.handshake_timeout.as_secs()),
        format!("[default: {}s]", keepalive.interval.as_secs()),
        "[default: 0.0.0.0:5378]".to_owned(),
        "[default: off]".to_owned(),
    ] {
        assert!(help.contains(&shown), "{shown} missing from:\n{help}");
    }
}

/// Every setting but the cluster ones, with values derived from `n` (so two layers differ in
/// every one): as (file key, value) pairs, and the `Config` they mean.
fn layer(n: u32) -> (Vec<(&'static str, String)>, Config) {
    let values = vec![
        ("max_clients", n.to_string()),
        ("max_line", (100 + n).to_string()),
        ("handshake_timeout", format!("{n}s")),
        ("idle_timeout", format!("{n}m")),
        ("keepalive", format!("{}s", n + 1)),
        ("keepalive_interval", format!("{}s", n + 2)),
        ("keepalive_probes", (n + 3).to_string()),
        ("max_outbox", (1000 + n).to_string()),
        ("shutdown_grace", format!("{n}ms")),
        ("limits", "on".to_owned()),
        ("max_per_address", (n + 4).to_string()),
        ("connect_burst", (n + 5).to_string()),
        ("connect_rate", (n + 6).to_string()),
        ("command_burst", (n + 7).to_string()),
        ("command_rate", (n + 8).to_string()),
        ("flood_timeout", format!("{}s", n + 9)),
        ("max_prelogin", n.to_string()),
        ("exempt", format!("10.0.{n}.0/24,2001:db8::{n}")),
        ("extensions", one_extension(n).name().to_string()),
        ("ping_interval", format!("{}s", n + 10)),
        ("ping_timeout", format!("{}s", n + 11)),
        ("allow_plain_passwords", "on".to_owned()),
        ("login_burst", (n + 10).to_string()),
        ("login_rate", format!("{}s", n + 11)),
        ("login_name_burst", (n + 12).to_string()),
        ("login_name_rate", format!("{}s", n + 13)),
        ("hash_queue", (n + 14).to_string()),
        ("hash_threads", (n + 15).to_string()),
        ("practice", (n + 10).to_string()),
        (
            "protocol_generation",
            ["current", "old"][n as usize % 2].to_string(),
        ),
        ("max_rooms_per_user", (n + 12).to_string()),
        ("max_room_members", (n + 13).to_string()),
        ("max_topic", (n + 14).to_string()),
        ("history_direct_cap", (n + 16).to_string()),
        ("history_room_cap", (n + 17).to_string()),
        ("history_retention", format!("{}h", n + 18)),
        ("history_queue", (n + 19).to_string()),
    ];
    let secs = |s: u32| Duration::from_secs(u64::from(s));
    let config = Config {
        max_clients: n as usize,
        max_line_bytes: 100 + n as usize,
        handshake_timeout: secs(n),
        idle_timeout: Some(secs(60 * n)),
        keepalive: Some(Keepalive {
            idle: secs(n + 1),
            interval: secs(n + 2),
            probes: n + 3,
        }),
        outbox_limit_bytes: 1000 + n as usize,
        shutdown_grace: Duration::from_millis(u64::from(n)),
        limits: limits_from(n),
        extensions: [one_extension(n)].into_iter().collect(),
        ping_interval: secs(n + 10),
        ping_timeout: secs(n + 11),
        accounts: accounts_from(n),
        account_store: None,
        practice: Some(tcpchat_server::Practice {
            seed: u64::from(n + 10),
        }),
        generation: [
            tcpchat_server::GenerationPolicy::Current,
            tcpchat_server::GenerationPolicy::Old,
        ][n as usize % 2],
        rooms: tcpchat_server::RoomLimits {
            rooms_per_user: n as usize + 12,
            members_per_room: n as usize + 13,
            topic_bytes: n as usize + 14,
        },
        history: tcpchat_server::HistorySettings {
            direct_cap: n + 16,
            room_cap: n + 17,
            retention: secs(3600 * (n + 18)),
            queue: n as usize + 19,
        },
    };
    (values, config)
}

/// The accounts settings `layer(n)` sets.
fn accounts_from(n: u32) -> tcpchat_server::AccountSettings {
    let rate = |b: u32, s: u32| {
        tcpchat_server::limits::LoginRate::new(b, Duration::from_secs(u64::from(s)))
            .expect("non-zero")
    };
    tcpchat_server::AccountSettings {
        allow_plain_passwords: true,
        per_address: rate(n + 10, n + 11),
        per_name: rate(n + 12, n + 13),
        hash_queue: n as usize + 14,
        hash_threads: std::num::NonZeroUsize::new(n as usize + 15).expect("non-zero"),
    }
}

/// The extension `layer(n)` offers: a different one per layer.
fn one_extension(n: u32) -> tcpchat_proto::Extension {
    let all = tcpchat_proto::Extension::ALL;
    all[n as usize % all.len()]
}

/// The limits `layer(n)` sets.
fn limits_from(n: u32) -> tcpchat_server::Limits {
    use tcpchat_server::limits::{parse_networks, CommandRate, Rate};
    let rate = |b: u32, r: u32| Rate::new(b, r).expect("non-zero");
    tcpchat_server::Limits {
        max_per_address: std::num::NonZeroU32::new(n + 4),
        connect_rate: Some(rate(n + 5, n + 6)),
        command_rate: Some(CommandRate {
            rate: rate(n + 7, n + 8),
            flood_timeout: Duration::from_secs(u64::from(n + 9)),
        }),
        max_prelogin: std::num::NonZeroUsize::new(n as usize),
        exempt: parse_networks(&format!("10.0.{n}.0/24,2001:db8::{n}")).expect("networks"),
        ..tcpchat_server::Limits::default()
    }
}

/// Starts `cmd` (a `tcpchat serve` at debug level), returns its "settings" log line and
/// stops it.
fn settings_line(mut cmd: Command) -> String {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tcpchat serve");
    let log = lines_of(child.stderr.take().expect("piped stderr"));
    let mut seen = Vec::new();
    let line = wait_for(&log, &mut seen, "settings", |l| l.contains(" settings "));
    let _ = child.kill();
    let _ = child.wait();
    line
}

/// Precedence, each setting through each source: flag over environment over file over
/// default, with the resolved settings read from the binary's own debug log. See: #11
#[test]
fn flag_over_environment_over_file_over_default() {
    let dir = std::env::temp_dir().join(format!("tcpchat-layers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("tcpchat.toml");
    let (file_values, file_config) = layer(20);
    let (env_values, env_config) = layer(30);
    let (flag_values, flag_config) = layer(40);
    let mut text = String::from("listen = \"127.0.0.3:0\"\n");
    for (key, v) in &file_values {
        match v.parse::<u64>() {
            Ok(_) => text.push_str(&format!("{key} = {v}\n")),
            Err(_) => text.push_str(&format!("{key} = {v:?}\n")),
        }
    }
    std::fs::write(&path, text).expect("write config");

    let command = |env: bool, flags: bool| {
        let mut cmd = tcpchat();
        cmd.args(["--log-level", "debug", "serve", "--config"])
            .arg(&path);
        if env {
            cmd.env("TCPCHAT_LISTEN", "127.0.0.4:0");
            for (key, v) in &env_values {
                cmd.env(format!("TCPCHAT_{}", key.to_uppercase()), v);
            }
        }
        if flags {
            cmd.args(["--listen", "127.0.0.5:0"]);
            for (key, v) in &flag_values {
                cmd.arg(format!("--{}", key.replace('_', "-"))).arg(v);
            }
        }
        cmd
    };
    let cases = [
        ("file", command(false, false), "127.0.0.3:0", &file_config),
        (
            "env over file",
            command(true, false),
            "127.0.0.4:0",
            &env_config,
        ),
        (
            "flags over env",
            command(true, true),
            "127.0.0.5:0",
            &flag_config,
        ),
    ];
    for (what, cmd, listen, config) in cases {
        let line = settings_line(cmd);
        assert!(line.contains(&format!("listen={listen}")), "{what}: {line}");
        assert!(
            line.contains(&format!("config={config:?}")),
            "{what}: want {config:?} in\n{line}"
        );
    }
    let mut cmd = tcpchat();
    cmd.args(["--log-level", "debug", "serve", "--listen", "127.0.0.1:0"]);
    let line = settings_line(cmd);
    assert!(
        line.contains(&format!("config={:?}", Config::default())),
        "defaults: {line}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The web settings reach the binary from the environment and the file: the listener from
/// `TCPCHAT_WEB_LISTEN`, `web_origins = "*"` from the file (a foreign origin is let in),
/// and the page at `/` with its security headers.
#[test]
fn the_web_listener_from_the_environment_and_the_file() {
    let dir = std::env::temp_dir().join(format!("tcpchat-serve-web-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("tcpchat.toml");
    std::fs::write(&path, "web_origins = \"*\"\n").expect("write config");
    let mut cmd = tcpchat();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .env("TCPCHAT_WEB_LISTEN", "127.0.0.1:0");
    let mut server = Server::spawn(cmd);
    let mut seen = Vec::new();
    let line = wait_for(&server.log, &mut seen, "listening web", |l| {
        l.contains("listening web addr=")
    });
    let web: std::net::SocketAddr = line
        .split("listening web addr=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .expect("the web address");
    let exchange = |request: String| {
        let mut tcp = std::net::TcpStream::connect(web).expect("connect");
        tcp.set_read_timeout(Some(PATIENCE)).expect("timeout");
        tcp.write_all(request.as_bytes()).expect("write");
        let mut answer = vec![0u8; 4096];
        let n = std::io::Read::read(&mut tcp, &mut answer).expect("read");
        String::from_utf8_lossy(&answer[..n]).to_lowercase()
    };
    let page = exchange(format!(
        "GET / HTTP/1.1\r\nHost: {web}\r\nConnection: close\r\n\r\n"
    ));
    assert!(page.starts_with("http/1.1 200"), "{page}");
    assert!(
        page.contains("content-security-policy: default-src 'none'"),
        "{page}"
    );
    let upgrade = exchange(format!(
        "GET /ws HTTP/1.1\r\nHost: {web}\r\nOrigin: http://elsewhere.example\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    ));
    assert!(
        upgrade.starts_with("http/1.1 101"),
        "web_origins = \"*\" from the file: {upgrade}"
    );
    server.sigterm();
    assert_eq!(server.wait_exit().code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
