//! `tcpchat bench` as the real binary: worker processes, JSON, plots, exit codes. Counts
//! only, never timings.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn tcpchat() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tcpchat"));
    for (key, _) in std::env::vars() {
        if key.starts_with("TCPCHAT_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    // Never the user's own account database.
    let data = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    cmd.env(
        "TCPCHAT_DATA_DIR",
        data.join(format!("data-{}", std::process::id())),
    );
    cmd
}

struct Server(Child, SocketAddr);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve() -> Server {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let child = tcpchat()
        .args(["serve", "--listen", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tcpchat serve");
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Server(child, addr)
}

/// The number after `"key": ` in pretty-printed JSON (keys used here occur once).
fn json_number(json: &str, key: &str) -> u64 {
    let at = json
        .find(&format!("\"{key}\": "))
        .unwrap_or_else(|| panic!("no {key} in:\n{json}"));
    let rest = &json[at + key.len() + 4..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end]
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in:\n{json}"))
}

/// Clients spread over worker processes behave as one run: every message of every pair
/// arrives, and the report says how many processes there were.
#[test]
fn workers_share_a_run() {
    let server = serve();
    let out = tcpchat()
        .args([
            "bench",
            &server.1.to_string(),
            "throughput",
            "-n",
            "12",
            "-w",
            "8",
        ])
        .args(["-d", "300ms", "--clients-per-process", "4", "--json"])
        .output()
        .expect("run bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}\nstdout: {stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_number(&stdout, "processes"), 3);
    assert_eq!(json_number(&stdout, "logged_in"), 12);
    let sent = json_number(&stdout, "sent");
    assert!(sent > 0);
    assert_eq!(json_number(&stdout, "delivered"), sent);
    assert_eq!(json_number(&stdout, "lost"), 0);
}

/// list-send over three processes: every LIST-OK, wherever its lister runs, names all 40
/// users, and every message arrives. See: #11
#[test]
fn list_send_over_workers() {
    let server = serve();
    let out = tcpchat()
        .args(["bench", &server.1.to_string(), "list-send", "-n", "40"])
        .args(["--listers", "4", "-r", "400", "-d", "500ms"])
        .args(["--clients-per-process", "16", "--json"])
        .output()
        .expect("run bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}\nstdout: {stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_number(&stdout, "processes"), 3);
    assert_eq!(json_number(&stdout, "logged_in"), 40);
    assert!(json_number(&stdout, "answered") > 0, "{stdout}");
    assert_eq!(json_number(&stdout, "errors"), 0);
    let sent = json_number(&stdout, "sent");
    assert!(sent > 0);
    assert_eq!(json_number(&stdout, "delivered"), sent);
}

/// The scenarios' defaults in `--help` are the library's, not a copy.
#[test]
fn help_shows_the_library_defaults() {
    let out = tcpchat()
        .args(["bench", "--help"])
        .output()
        .expect("run bench --help");
    assert!(out.status.success());
    // clap wraps lines: compare with the whitespace flattened.
    let help = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for kind in tcpchat_bench::ScenarioKind::ALL {
        let d = kind.defaults();
        assert!(help.contains(kind.name()), "{help}");
        let clients = format!("{} {}", kind.name(), d.clients);
        assert!(help.contains(&clients), "no {clients:?} in:\n{help}");
    }
}

#[test]
fn plot_and_table() {
    let server = serve();
    let svg = std::env::temp_dir().join(format!("tcpchat-bench-{}.svg", std::process::id()));
    let out = tcpchat()
        .args([
            "bench",
            &server.1.to_string(),
            "latency",
            "-n",
            "10",
            "-r",
            "500",
            "-d",
            "300ms",
        ])
        .arg("--plot")
        .arg(&svg)
        .output()
        .expect("run bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in ["scenario", "delivered/s", "latency", "sent / delivered"] {
        assert!(stdout.contains(row), "table has {row}:\n{stdout}");
    }
    let drawn = std::fs::read_to_string(&svg).expect("plot written");
    let _ = std::fs::remove_file(&svg);
    assert!(drawn.contains("<svg") && drawn.contains("percentile"));
}

#[test]
fn bad_target_exits_non_zero_with_a_message() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let out = tcpchat()
        .args(["bench", &addr.to_string(), "connect", "-n", "3"])
        .output()
        .expect("run bench");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("connection refused"), "stderr: {stderr}");
}

/// The same run inside TLS (through testkit's TLS relay in front of the plain server), over
/// worker processes: every message arrives; an untrusted certificate is one clear error.
#[test]
fn throughput_over_tls_through_workers() {
    use tcpchat_testkit::{TestCa, TlsRelay};
    let server = serve();
    let ca = TestCa::new();
    let relay = TlsRelay::start(server.1, &ca.leaf(&["localhost"]));
    let dir = std::env::temp_dir().join(format!("tcpchat-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca_file = ca.write(&dir, "ca.pem");
    let target = format!("tls://localhost:{}", relay.addr.port());
    let out = tcpchat()
        .args(["bench", &target, "throughput", "-n", "12", "-w", "8"])
        .args([
            "-d",
            "300ms",
            "--clients-per-process",
            "4",
            "--json",
            "--ca",
        ])
        .arg(&ca_file)
        .output()
        .expect("run bench");
    let untrusted = tcpchat()
        .args(["bench", &target, "connect", "-n", "2"])
        .output()
        .expect("run bench");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}\nstdout: {stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"tls://127.0.0.1:"), "{stdout}");
    assert_eq!(json_number(&stdout, "processes"), 3);
    assert_eq!(json_number(&stdout, "logged_in"), 12);
    let sent = json_number(&stdout, "sent");
    assert!(sent > 0);
    assert_eq!(json_number(&stdout, "delivered"), sent);
    assert_eq!(json_number(&stdout, "lost"), 0);

    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(!untrusted.status.success(), "{stderr}");
    assert!(stderr.contains("--ca cert.pem"), "{stderr}");
}

/// `accounts`: every account registered, logged in in one burst and deleted again, every
/// canary message delivered; counts only. The server's own data directory (the helper's)
/// is left without bench accounts.
#[test]
fn accounts_registers_logs_in_and_cleans_up() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let data = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-accounts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let child = tcpchat()
        .args([
            "serve",
            "--listen",
            &addr.to_string(),
            "--login-burst",
            "1000000",
        ])
        .arg("--data-dir")
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tcpchat serve");
    let server = Server(child, addr);
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = tcpchat()
        .args([
            "bench",
            &server.1.to_string(),
            "accounts",
            "--clients",
            "6",
            "--json",
        ])
        .output()
        .expect("run bench");
    let json = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{json}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json_number(&json, "accounts"), 6);
    assert_eq!(
        json_number(&json, "canary_sent"),
        json_number(&json, "canary_delivered"),
        "{json}"
    );
    let list = tcpchat()
        .args(["accounts", "list", "--data-dir"])
        .arg(&data)
        .output()
        .expect("run accounts list");
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "no accounts");
    drop(server);
    let _ = std::fs::remove_dir_all(&data);
}
