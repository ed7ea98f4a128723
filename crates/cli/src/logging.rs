//! The one logging setup: `tracing` to stderr, filtered by `RUST_LOG` or `--log-level`, as
//! text for people or as JSON lines (`--log-format json`) for a log shipper. Both formats
//! carry the same fields: the JSON object holds `timestamp`, `level`, the event's fields
//! (`message` among them) flattened beside them, and `span` with the connection's span
//! fields when one is entered.

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

    /// Log line format: text (for people) or json (one object per line, for journald
    /// forwarding, Loki, Elasticsearch...)
    #[arg(
        long,
        global = true,
        env = "TCPCHAT_LOG_FORMAT",
        default_value = "text",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,
}

/// How each log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
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
    let to_file = |file| {
        install(
            args.log_format,
            filter.clone(),
            std::sync::Mutex::new(file),
            false,
        )
    };
    if let Some(path) = &args.log_file {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(file) => {
                to_file(file);
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
    install(
        args.log_format,
        filter,
        || QuietStderr,
        std::io::stderr().is_terminal(),
    );
}

/// Installs the global subscriber writing `format` to `writer`.
fn install<W>(format: LogFormat, filter: EnvFilter, writer: W, ansi: bool)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.with_ansi(ansi).init(),
        // Fields flattened beside `message`, as the text format prints them; no colours.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .init(),
    }
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
