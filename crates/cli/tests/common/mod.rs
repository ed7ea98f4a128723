//! Shared helpers for the binary's integration tests: run `tcpchat` with a clean environment,
//! start `tcpchat serve` on a chosen address and learn where it listens, read a child's
//! output line by line with timeouts that report what did arrive.

#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// Words that only a protocol line contains: a chat client must never show one to its user.
pub const PROTOCOL_WORDS: &[&str] = &[
    "HELLO-FROM",
    "SEND ",
    "SEND-OK",
    "DELIVERY",
    "LIST-OK",
    "BAD-DEST-USER",
    "BAD-RQST",
    "IN-USE",
];

/// How long any single expectation may wait. It bounds a hang; it measures nothing.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The binary under test, with no stray `TCPCHAT_*` or `RUST_LOG` from the caller.
pub fn tcpchat() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tcpchat"));
    scrub(&mut cmd);
    cmd
}

/// Removes the settings a caller's environment could leak into a child, and points its
/// account database at this test binary's own directory under `target/`, never the user's
/// `~/.local/share/tcpchat`.
pub fn scrub(cmd: &mut Command) {
    for (key, _) in std::env::vars() {
        if key.starts_with("TCPCHAT_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.env("TCPCHAT_DATA_DIR", test_data_dir());
    cmd.env("TCPCHAT_STATE_DIR", test_data_dir().join("state"));
}

/// Lines of a child's stream, read on a thread.
pub fn lines_of(stream: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line that `matches`, keeping everything seen for the failure message.
pub fn wait_for(
    rx: &Receiver<String>,
    seen: &mut Vec<String>,
    what: &str,
    matches: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if matches(&line) {
                    return line;
                }
            }
            Err(_) => panic!("no {what:?} within {PATIENCE:?}; seen so far:\n{seen:#?}"),
        }
    }
}

/// The address in a `listening addr=...` log line (the plain listener; the TLS one logs
/// `listening tls addr=...`, see [`listening_tls_addr`]).
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening addr=") {
        return None;
    }
    line.split("addr=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
}

/// The address in a `listening tls addr=...` log line.
pub fn listening_tls_addr(line: &str) -> Option<SocketAddr> {
    line.split("listening tls addr=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
}

/// A running `tcpchat serve`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// Its log lines after the `listening` one.
    pub log: Receiver<String>,
}

impl Server {
    /// `tcpchat serve --listen LISTEN EXTRA...`, once it says where it listens.
    pub fn start(listen: &str, extra: &[&str]) -> Self {
        let mut cmd = tcpchat();
        cmd.args(["serve", "--listen", listen]).args(extra);
        Self::spawn(cmd)
    }

    /// Any command that ends up running `tcpchat serve` (e.g. through `sh -c` to set limits).
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcpchat serve");
        let log = lines_of(child.stderr.take().expect("piped stderr"));
        let mut seen = Vec::new();
        let line = wait_for(&log, &mut seen, "listening", |l| {
            listening_addr(l).is_some()
        });
        let addr = listening_addr(&line).expect("checked by wait_for");
        Self { child, addr, log }
    }

    /// Asks for a graceful shutdown.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to end.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `cmd` to its end with `stdin` as its input, failing the test if it outlives
/// [`PATIENCE`] (the child is killed first, so a hang cannot outlive the test).
pub fn run_to_end(mut cmd: Command, stdin: Vec<u8>) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tcpchat");
    let mut input = child.stdin.take().expect("piped stdin");
    // A write error means the child stopped reading, which its exit status then shows.
    std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let id = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(output) => output.expect("wait for tcpchat"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &id.to_string()])
                .status();
            panic!(
                "tcpchat {:?} did not finish within {PATIENCE:?}",
                cmd.get_args()
            );
        }
    }
}

/// A child's output as text, for messages and comparisons.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the exit code, showing both streams when it is not the one expected.
pub fn assert_exit(output: &std::process::Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit status; stdout:\n{}\nstderr:\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// `tcpchat connect --plain` as a script drives it: lines typed in, lines read out.
pub struct PlainClient {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Receiver<String>,
    err: Receiver<String>,
    seen: Vec<String>,
}

impl PlainClient {
    /// `tcpchat connect --plain ARGS`, its input and output piped.
    pub fn start(args: &[&str]) -> Self {
        let mut cmd = tcpchat();
        cmd.args(["connect", "--plain"]).args(args);
        Self::spawn(cmd)
    }

    /// Any command that runs `tcpchat connect --plain` (through `sh -c` to open a descriptor,
    /// with an environment variable set...), its input and output piped.
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcpchat connect");
        let stdin = child.stdin.take();
        let out = lines_of(child.stdout.take().expect("piped stdout"));
        let err = lines_of(child.stderr.take().expect("piped stderr"));
        Self {
            child,
            stdin,
            out,
            err,
            seen: Vec::new(),
        }
    }

    pub fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("client reads its input");
    }

    pub fn expect(&mut self, want: &str) {
        wait_for(&self.out, &mut self.seen, want, |l| l == want);
    }

    /// Waits for a line that `matches`; returns it.
    pub fn expect_line(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        wait_for(&self.out, &mut self.seen, what, matches)
    }

    pub fn expect_prefix(&mut self, prefix: &str) -> String {
        wait_for(&self.out, &mut self.seen, prefix, |l| l.starts_with(prefix))
    }

    /// Closes stdin and waits for the exit; returns the status, all stdout and all stderr.
    pub fn finish(mut self) -> (ExitStatus, Vec<String>, Vec<String>) {
        self.stdin = None;
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for the client") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "client still running after its input ended; said {:#?}",
                    self.seen
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = std::mem::take(&mut self.seen);
        out.extend(self.out.try_iter());
        // The reader threads end with the streams; give stderr's a moment to deliver.
        let err: Vec<String> = self
            .err
            .recv_timeout(Duration::from_secs(2))
            .into_iter()
            .chain(self.err.try_iter())
            .collect();
        (status, out, err)
    }
}

impl Drop for PlainClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A data directory for this test process: under cargo's per-target temp dir.
pub fn test_data_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("data-{}", std::process::id()))
}
