//! Real parts for the cluster tests: a `redis-server` on a free loopback port, `tcpchat serve`
//! processes in cluster mode (the built binary), HAProxy, and a raw-line client whose
//! expectations report what did arrive.
//!
//! Programs are found on `PATH`; a missing one fails the test with what to install
//! (`scripts/test.sh` installs them). Every wait polls under [`PATIENCE`]; nothing is timed.

#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead, BufReader as StdBufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// How long any single expectation may wait. Generous: it bounds a hang on a slow shared
/// machine; it does not measure anything.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Fails the test, saying what to install, if `program` is not on `PATH`.
pub fn require(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "{program} not found on PATH: the cluster tests drive a real {program}. \
         Install the Debian package `{package}` (scripts/test.sh does it for you)"
    );
}

/// The `tcpchat` binary, built once per test process so the nodes run the current code.
pub fn tcpchat_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("TCPCHAT_BIN") {
            return PathBuf::from(p);
        }
        // Tests live in target/<profile>/deps/; the binary in target/<profile>/.
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test executable under target/<profile>/deps");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "tcpchat", "--bin", "tcpchat"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build
            .env(
                "CARGO_TARGET_DIR",
                profile_dir.parent().expect("target dir"),
            )
            .status()
            .expect("run cargo to build the tcpchat binary");
        assert!(status.success(), "building the tcpchat binary failed");
        let bin = profile_dir.join("tcpchat");
        assert!(bin.is_file(), "{} was not built", bin.display());
        bin
    })
}

/// A loopback port that was free a moment ago, for a program that takes a port number.
///
/// Drawn at random below Linux's ephemeral range (32768 and up), where every `bind` to port
/// 0 of the many tests running at once lands, so another test cannot take it in the moment
/// between this check and the program's own `bind`.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    for attempt in 0u64.. {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(attempt);
        h.write_u32(std::process::id());
        let port = 20_000 + (h.finish() % 12_000) as u16;
        if StdListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
        assert!(
            attempt < 1000,
            "no free loopback port between 20000 and 32000"
        );
    }
    unreachable!("the loop returns or panics")
}

/// A child process killed when dropped, whose stderr and stdout lines are kept.
pub struct Process {
    child: Child,
    pub name: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    fn spawn(name: &str, mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        for out in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in StdBufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        Self {
            child,
            name: name.to_owned(),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn log_text(&self) -> String {
        self.log().join("\n")
    }

    /// Waits for a log line containing `needle` and returns it.
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(line) = self.log().into_iter().find(|l| l.contains(needle)) {
                return line;
            }
            if let Ok(Some(status)) = self.child_status() {
                panic!(
                    "{} exited ({status}) before logging {needle:?}; its log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not log {needle:?} within {PATIENCE:?}; its log:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn child_status(&self) -> std::io::Result<Option<std::process::ExitStatus>> {
        // try_wait needs &mut; a zero-signal kill tells liveness without reaping.
        let alive = Command::new("kill")
            .args(["-0", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status()?
            .success();
        Ok(if alive {
            None
        } else {
            Some(std::process::ExitStatus::default())
        })
    }

    /// SIGKILL: no goodbye, no cleanup.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} {} failed", self.name);
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {PATIENCE:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private `redis-server`: loopback only, no persistence, so a restart comes back empty.
pub struct Redis {
    pub port: u16,
    process: Option<Process>,
    dir: PathBuf,
}

impl Redis {
    pub fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("tcpchat-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("redis work dir");
        let mut r = Self {
            port,
            process: None,
            dir,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        let bin = require("redis-server", "redis-server");
        let mut cmd = Command::new(bin);
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
        ])
        .arg(&self.dir);
        let p = Process::spawn("redis-server", cmd);
        let deadline = Instant::now() + PATIENCE;
        // Ready when it answers, and the answer comes from this process, not another
        // program that took the port.
        let want = format!("process_id:{}", p.pid());
        while !self.info("server").lines().any(|l| l.trim() == want) {
            assert!(
                Instant::now() < deadline,
                "redis-server (pid {}) did not answer on port {}; its log:\n{}",
                p.pid(),
                self.port,
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.process = Some(p);
    }

    /// Kills the server (as a crash would): everything in it is gone.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill9();
        }
    }

    /// Sends one command (inline form) and returns the first reply line, or `None` if
    /// Redis cannot be reached.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut s = StdStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut line = String::new();
        StdBufReader::new(s).read_line(&mut line).ok()?;
        Some(line.trim_end().to_owned())
    }

    /// `INFO section`, or an empty string if Redis cannot be reached.
    pub fn info(&self, section: &str) -> String {
        let read = || -> std::io::Result<String> {
            let mut s = StdStream::connect(("127.0.0.1", self.port))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(
                format!("*2\r\n$4\r\nINFO\r\n${}\r\n{section}\r\n", section.len()).as_bytes(),
            )?;
            let mut r = StdBufReader::new(s);
            let mut header = String::new();
            r.read_line(&mut header)?;
            let len: usize = header.trim_start_matches('$').trim().parse().unwrap_or(0);
            let mut body = vec![0u8; len];
            r.read_exact(&mut body)?;
            Ok(String::from_utf8_lossy(&body).into_owned())
        };
        read().unwrap_or_default()
    }

    /// `INFO commandstats` as (command, calls) pairs.
    pub fn command_calls(&self) -> std::collections::HashMap<String, u64> {
        let body = self.info("commandstats");
        assert!(!body.is_empty(), "no INFO commandstats from redis");
        body.lines()
            .filter_map(|l| {
                let l = l.strip_prefix("cmdstat_")?;
                let (cmd, rest) = l.split_once(':')?;
                let calls = rest
                    .strip_prefix("calls=")?
                    .split(',')
                    .next()?
                    .parse()
                    .ok()?;
                Some((cmd.to_owned(), calls))
            })
            .collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One `tcpchat serve --cluster` process.
pub struct Node {
    pub id: String,
    pub addr: SocketAddr,
    pub process: Process,
}

impl Node {
    /// Starts a node on a free loopback port and waits until it listens.
    pub fn start(redis_url: &str, id: &str) -> Self {
        Self::start_with(redis_url, id, &[])
    }

    pub fn start_with(redis_url: &str, id: &str, extra: &[&str]) -> Self {
        let mut cmd = Command::new(tcpchat_bin());
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cluster",
            redis_url,
            "--node-id",
            id,
        ])
        .args(extra)
        .env_remove("RUST_LOG")
        .env("TCPCHAT_LOG_LEVEL", "info");
        let process = Process::spawn(&format!("node {id}"), cmd);
        let line = process.wait_log("listening addr=");
        let addr = line
            .split("addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Self {
            id: id.to_owned(),
            addr,
            process,
        }
    }

    pub async fn connect(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// A client logged in as `name` on this node, retrying while the cluster answers `BUSY`
    /// (Redis just started or came back: nodes are re-registering).
    pub async fn login(&self, name: &str) -> Client {
        login_at(self.addr, name).await
    }
}

/// Logs `name` in at `addr`, retrying on `BUSY` until [`PATIENCE`].
pub async fn login_at(addr: SocketAddr, name: &str) -> Client {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut c = Client::connect(addr).await;
        c.send(&format!("HELLO-FROM {name}")).await;
        let got = c
            .next_line()
            .await
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        match got.as_deref() {
            Some(l) if l == format!("HELLO {name}") => return c,
            Some("BUSY") if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => panic!("login of {name} at {addr}: expected HELLO {name}, got {other:?}"),
        }
    }
}

pub struct Client {
    pub reader: BufReader<OwnedReadHalf>,
    pub writer: OwnedWriteHalf,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        let (r, w) = stream.into_split();
        Self {
            reader: BufReader::new(r),
            writer: w,
        }
    }

    pub async fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to server");
    }

    /// The next line without `\n`; `None` on EOF or reset. Panics after [`PATIENCE`].
    pub async fn next_line(&mut self) -> Option<Vec<u8>> {
        self.next_line_within(PATIENCE)
            .await
            .unwrap_or_else(|partial| {
                panic!(
                    "no complete line within {PATIENCE:?}; partial: {:?}",
                    String::from_utf8_lossy(&partial)
                )
            })
    }

    /// Like [`Client::next_line`], but `Err(partial)` after `wait` instead of panicking.
    pub async fn next_line_within(&mut self, wait: Duration) -> Result<Option<Vec<u8>>, Vec<u8>> {
        let mut buf = Vec::new();
        match tokio::time::timeout(wait, self.reader.read_until(b'\n', &mut buf)).await {
            Err(_) => Err(buf),
            Ok(Err(_)) | Ok(Ok(0)) => Ok(None),
            Ok(Ok(_)) => {
                assert_eq!(buf.pop(), Some(b'\n'), "line cut short by EOF: {buf:?}");
                Ok(Some(buf))
            }
        }
    }

    pub async fn expect(&mut self, want: &str) {
        match self.next_line().await {
            Some(got) => assert!(
                got == want.as_bytes(),
                "\nexpected:\n    {want:?}\ngot:\n    {:?}\n",
                String::from_utf8_lossy(&got)
            ),
            None => panic!("\nexpected:\n    {want:?}\ngot: end of stream\n"),
        }
    }

    /// Reads `want.len()` lines and checks they are `want` in any order (a reply to this
    /// client and a message from someone else have no order between them).
    pub async fn expect_unordered(&mut self, want: &[String]) {
        let mut got = Vec::new();
        for _ in want {
            match self.next_line().await {
                Some(line) => got.push(String::from_utf8_lossy(&line).into_owned()),
                None => panic!("expected {want:?} in any order; got {got:?} then end of stream"),
            }
        }
        let mut want = want.to_vec();
        want.sort();
        got.sort();
        assert_eq!(got, want, "lines in any order");
    }

    pub async fn expect_closed(&mut self) {
        if let Some(line) = self.next_line().await {
            panic!(
                "expected the connection to close, got {:?}",
                String::from_utf8_lossy(&line)
            );
        }
    }

    /// `LIST` and the names it returns, sorted.
    pub async fn list(&mut self) -> Vec<String> {
        self.send("LIST").await;
        let line = self.next_line().await.expect("LIST-OK, got end of stream");
        let line = String::from_utf8(line).expect("LIST-OK is UTF-8");
        let names = line
            .strip_prefix("LIST-OK ")
            .unwrap_or_else(|| panic!("expected LIST-OK, got {line:?}"));
        let mut names: Vec<String> = names.split(',').map(str::to_owned).collect();
        names.sort();
        names
    }

    /// Polls `LIST` until it equals `want` (sorted), reporting the last answer on failure.
    pub async fn wait_list(&mut self, want: &[&str]) {
        let mut want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
        want.sort();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let got = self.list().await;
            if got == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "LIST did not become {want:?} within {PATIENCE:?}; last: {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends `SEND to body` until it is answered `SEND-OK` (cross-node routing may take a
    /// moment to heal after a fault), and returns how many tries it took.
    pub async fn send_until_ok(&mut self, to: &str, body: &str) -> usize {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut tries = 0;
        loop {
            tries += 1;
            self.send(&format!("SEND {to} {body}")).await;
            let got = self
                .next_line()
                .await
                .map(|l| String::from_utf8_lossy(&l).into_owned());
            match got.as_deref() {
                Some("SEND-OK") => return tries,
                Some("BAD-DEST-USER") if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => panic!("SEND {to} {body}: expected SEND-OK, last got {other:?}"),
            }
        }
    }
}

/// HAProxy in TCP mode in front of `backends`, round-robin, with the configuration
/// `docs/cluster.md` recommends.
pub struct Haproxy {
    pub addr: SocketAddr,
    pub config: String,
    _process: Process,
    dir: PathBuf,
}

impl Haproxy {
    pub fn start(backends: &[SocketAddr]) -> Self {
        let bin = require("haproxy", "haproxy");
        let port = free_port();
        let mut config = format!(
            "global\n    maxconn 4000\n\n\
             defaults\n    mode tcp\n    timeout connect 5s\n    \
             # chat connections are long and often silent: never cut them for idleness\n    \
             timeout client 24h\n    timeout server 24h\n\n\
             frontend chat\n    bind 127.0.0.1:{port}\n    default_backend nodes\n\n\
             backend nodes\n    balance roundrobin\n"
        );
        for (i, b) in backends.iter().enumerate() {
            config.push_str(&format!("    server node{} {b} check inter 1s\n", i + 1));
        }
        let dir =
            std::env::temp_dir().join(format!("tcpchat-haproxy-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("haproxy dir");
        let cfg_path = dir.join("haproxy.cfg");
        std::fs::write(&cfg_path, &config).expect("write haproxy.cfg");
        let mut cmd = Command::new(bin);
        cmd.arg("-db").arg("-f").arg(&cfg_path);
        let process = Process::spawn("haproxy", cmd);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + PATIENCE;
        while StdStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "haproxy did not listen on {addr}; its log:\n{}",
                process.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            addr,
            config,
            _process: process,
            dir,
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
