//! The one logging setup: `tracing` to stderr, filtered by `RUST_LOG` or `--log-level`.

use std::io::IsTerminal;

use clap::Args;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log level for tcpchat's own messages: error, warn, info, debug (each protocol line)
    /// or trace. RUST_LOG, if set, takes precedence and allows per-module filters.
    #[arg(
        long,
        global = true,
        env = "TCPCHAT_LOG_LEVEL",
        default_value = "info",
        value_name = "LEVEL"
    )]
    pub log_level: tracing::Level,

    /// Append logs to this file instead of stderr (the full-screen client logs nowhere else)
    #[arg(long, global = true, env = "TCPCHAT_LOG_FILE", value_name = "FILE")]
    pub log_file: Option<std::path::PathBuf>,
}

/// Installs the global subscriber. Logs go to stderr, or to `--log-file`; reports go to
/// stdout. With `screen_busy` (a full-screen UI owns the terminal) and no log file, logging
/// is off.
pub fn init(args: &LogArgs, screen_busy: bool) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::new(spec),
        // A target directive matches every target it prefixes: `tcpchat` covers the binary
        // and all `tcpchat_*` crates; dependencies stay at warn.
        _ => EnvFilter::new(format!("warn,tcpchat={}", args.log_level)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    if let Some(path) = &args.log_file {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(file) => {
                builder
                    .with_writer(std::sync::Mutex::new(file))
                    .with_ansi(false)
                    .init();
                return;
            }
            Err(e) if !screen_busy => {
                eprintln!(
                    "tcpchat: cannot open log file {}: {e}; logging to stderr",
                    path.display()
                );
            }
            Err(_) => return,
        }
    }
    if screen_busy {
        return;
    }
    builder
        .with_writer(|| QuietStderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Stderr that never fails: once whoever read our logs has gone (a closed pipe), logging
/// must not take the process down with it.
struct QuietStderr;

impl std::io::Write for QuietStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
