//! Child processes for tests: found on `PATH` or in the build's target directory, their output
//! kept for failure messages, killed when dropped.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::PATIENCE;

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

/// The `tcpchat` binary of this build, for tests that run it as real processes.
///
/// It is not built here: building from inside a test used its own feature set, so the
/// workspace was compiled twice. `cargo nextest run --workspace` (and `cargo test
/// --workspace`) build it beside the test executables, in `<target>/<profile>/`, which is
/// where this looks, whatever `CARGO_TARGET_DIR` or `--target` put that directory.
/// `TCPCHAT_BIN` overrides the search.
///
/// # Panics
/// If the binary is missing, or older than a source file it is built from (it would run old
/// code), with the command that builds it.
pub fn tcpchat_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| locate_tcpchat().unwrap_or_else(|e| panic!("{e}")))
}

fn locate_tcpchat() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("TCPCHAT_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the test executable: {e}"))?;
    // Integration tests run from <profile>/deps/; the binary is uplifted into <profile>/.
    let dir = exe.parent().ok_or("test executable has no directory")?;
    let profile_dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().ok_or("deps/ has no parent")?
    } else {
        dir
    };
    let bin = profile_dir.join(format!("tcpchat{}", std::env::consts::EXE_SUFFIX));
    let build = "build it with `cargo build -p tcpchat` (or run the workspace's tests, \
                 `cargo nextest run --workspace`, which build it), or point TCPCHAT_BIN at one";
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .map_err(|_| {
            format!(
                "the tcpchat binary is not at {}: these tests run it as real processes; {build}",
                bin.display()
            )
        })?;
    if let Some(newer) = newest_source_after(built) {
        return Err(format!(
            "the tcpchat binary at {} is older than {}: it would run old code; {build}",
            bin.display(),
            newer.display()
        ));
    }
    Ok(bin)
}

/// A source file of the binary's crates modified after `built`, if any. The workspace is
/// found from this crate's own manifest (crates/testkit), so the check needs no setup.
fn newest_source_after(built: SystemTime) -> Option<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.parent()?;
    let mut pending = vec![workspace.join("Cargo.lock"), workspace.join("Cargo.toml")];
    let crates = std::fs::read_dir(workspace.join("crates")).ok()?;
    for krate in crates.flatten() {
        // Tests (and this crate) are not part of the binary.
        if krate.file_name() == "testkit" {
            continue;
        }
        pending.push(krate.path().join("Cargo.toml"));
        pending.push(krate.path().join("src"));
    }
    while let Some(path) = pending.pop() {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                pending.extend(entries.flatten().map(|e| e.path()));
            }
        } else if meta.modified().is_ok_and(|m| m > built) {
            return Some(path);
        }
    }
    None
}

/// A loopback port that was free a moment ago, for a program that takes a port number.
///
/// Drawn at random below Linux's ephemeral range (32768 and up), where every `bind` to port
/// 0 of the many tests running at once lands, so another test cannot take it in the moment
/// between this check and the program's own `bind`.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    for attempt in 0u64..1000 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(attempt);
        h.write_u32(std::process::id());
        let port = 20_000 + (h.finish() % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between 20000 and 32000");
}

/// A child process killed when dropped, whose stderr and stdout lines are kept.
pub struct Process {
    child: Mutex<Child>,
    pid: u32,
    pub name: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `cmd` with stdin closed and its output captured.
    pub fn spawn(name: &str, mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let outputs = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ];
        for out in outputs.into_iter().flatten() {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        Self {
            pid: child.id(),
            child: Mutex::new(child),
            name: name.to_owned(),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
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
            if let Some(status) = self.exited() {
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

    /// The exit status if the process has ended (reaping it), else `None`.
    pub fn exited(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child.try_wait().ok().flatten()
    }

    /// SIGKILL: no goodbye, no cleanup. Returns once the process is gone.
    pub fn kill9(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends a signal by name (`STOP`, `CONT`, `TERM`).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid.to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} {} failed", self.name);
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {PATIENCE:?}; its log:\n{}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}
