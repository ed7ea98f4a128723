//! The server's log, captured in memory so a test can check what it said about a connection.
//!
//! One subscriber per test process (tracing allows one global default); every test in the
//! binary shares it, so a test looks only at lines that name its own peer address or user.

#![allow(dead_code)] // each test file uses a different subset

use std::io;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// How long to wait for a line to be logged. Bounds a hang; never measures speed.
const PATIENCE: Duration = Duration::from_secs(20);

#[derive(Clone)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

struct Sink(Arc<Mutex<Vec<u8>>>);

impl io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Starts capturing (info and above) on first use; later calls share the same log.
pub fn capture() -> Logs {
    static LOGS: OnceLock<Logs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Logs(Arc::default());
        let buf = Arc::clone(&logs.0);
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Sink(Arc::clone(&buf)))
            .init();
        logs
    })
    .clone()
}

impl Logs {
    /// Every captured line containing all of `needles`.
    pub fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        let text = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8_lossy(&text)
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until a line containing all of `needles` is logged, and returns it.
    pub async fn wait_for(&self, needles: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(line) = self.lines_with(needles).into_iter().next() {
                return line;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nothing logged with {needles:?} within {PATIENCE:?}; the log:\n{}",
                self.lines_with(&[]).join("\n")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
