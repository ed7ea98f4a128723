//! `tcpchat serve`: settings from flags, environment and an optional TOML file, then the
//! server until SIGINT or SIGTERM.
//!
//! Precedence, highest first: command-line flag, environment variable, config file, built-in
//! default. Clap fills a flag's value from its environment variable when the flag is absent,
//! so "flag or env" arrives here as one `Option`, and the file only fills what is still unset.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use tcpchat_redis::{ClusterConfig, NodeId, RedisHub};
use tcpchat_server::{Config, Keepalive};
use tracing::{info, warn};

use crate::UsageError;

/// Default listen address: every interface, the course server's port.
const DEFAULT_LISTEN: &str = "0.0.0.0:5378";

#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// Address to listen on, e.g. 0.0.0.0:5378, 127.0.0.1:6000 or [::]:5378
    /// [default: 0.0.0.0:5378]
    #[arg(long, env = "TCPCHAT_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Connections served at once, logged in or not; one more is answered BUSY and closed
    /// [default: 10000]
    #[arg(long, env = "TCPCHAT_MAX_CLIENTS", value_name = "N")]
    max_clients: Option<usize>,

    /// Longest accepted line in bytes, not counting the newline; longer lines get an error
    /// reply and are discarded [default: 4096]
    #[arg(long, env = "TCPCHAT_MAX_LINE", value_name = "BYTES")]
    max_line: Option<usize>,

    /// Close connections that have not logged in after this long, e.g. 30s [default: 30s]
    #[arg(long, env = "TCPCHAT_HANDSHAKE_TIMEOUT", value_name = "DURATION")]
    handshake_timeout: Option<String>,

    /// Close logged-in connections silent for this long; "off" never does (classic clients
    /// cannot send keepalives, so dead peers are found by TCP keepalive) [default: off]
    #[arg(long, env = "TCPCHAT_IDLE_TIMEOUT", value_name = "DURATION")]
    idle_timeout: Option<String>,

    /// TCP keepalive: silence before probing a peer; "off" disables probing [default: 60s]
    #[arg(long, env = "TCPCHAT_KEEPALIVE", value_name = "DURATION")]
    keepalive: Option<String>,

    /// TCP keepalive: time between probes [default: 10s]
    #[arg(long, env = "TCPCHAT_KEEPALIVE_INTERVAL", value_name = "DURATION")]
    keepalive_interval: Option<String>,

    /// TCP keepalive: unanswered probes before a peer is declared dead [default: 3]
    #[arg(long, env = "TCPCHAT_KEEPALIVE_PROBES", value_name = "N")]
    keepalive_probes: Option<u32>,

    /// Bytes that may wait unsent for one connection; a peer that stops reading is dropped
    /// when it has this much queued [default: 262144]
    #[arg(long, env = "TCPCHAT_MAX_OUTBOX", value_name = "BYTES")]
    max_outbox: Option<usize>,

    /// On shutdown, how long connections get to receive what is queued for them [default: 5s]
    #[arg(long, env = "TCPCHAT_SHUTDOWN_GRACE", value_name = "DURATION")]
    shutdown_grace: Option<String>,

    /// Cluster mode: share names and messages with every node using this Redis, e.g.
    /// redis://10.0.0.5:6379 or redis://127.0.0.1:6379/2 (see docs/cluster.md)
    /// [default: off, everything in this process]
    #[arg(long, env = "TCPCHAT_CLUSTER", value_name = "URL")]
    cluster: Option<String>,

    /// Cluster mode: this node's id, unique among the nodes (letters, digits, '.', '_', '-')
    /// [default: a random one, shown in the log]
    #[arg(long, env = "TCPCHAT_NODE_ID", value_name = "ID")]
    node_id: Option<String>,

    /// Read settings from this TOML file (keys as the flags, with underscores:
    /// listen, max_clients, max_line, handshake_timeout, ...); flags and environment win
    #[arg(long, env = "TCPCHAT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

/// The config file: the same settings as the flags, every one optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<String>,
    max_clients: Option<usize>,
    max_line: Option<usize>,
    handshake_timeout: Option<String>,
    idle_timeout: Option<String>,
    keepalive: Option<String>,
    keepalive_interval: Option<String>,
    keepalive_probes: Option<u32>,
    max_outbox: Option<usize>,
    shutdown_grace: Option<String>,
    cluster: Option<String>,
    node_id: Option<String>,
}

/// Resolved settings: where to listen and how to serve.
#[derive(Debug, PartialEq, Eq)]
pub struct Settings {
    pub listen: SocketAddr,
    pub config: Config,
    /// `Some` in cluster mode.
    pub cluster: Option<Cluster>,
}

/// Cluster mode settings: which Redis, and this node's id.
#[derive(Debug, PartialEq, Eq)]
pub struct Cluster {
    pub url: String,
    pub node_id: NodeId,
}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// Parses "30s", "1m 30s", "500ms"; `allow_off` also accepts "off"/"0" as `None`.
fn duration(name: &str, value: &str, allow_off: bool) -> anyhow::Result<Option<Duration>> {
    let v = value.trim();
    if allow_off && (v.eq_ignore_ascii_case("off") || v == "0") {
        return Ok(None);
    }
    let d = humantime::parse_duration(v).map_err(|e| {
        usage(format!(
            "invalid {name} {value:?}: {e} (write a duration such as 30s, 2m or 500ms{})",
            if allow_off { ", or off" } else { "" }
        ))
    })?;
    if d.is_zero() {
        return Err(usage(format!(
            "invalid {name} {value:?}: must be longer than zero"
        )));
    }
    Ok(Some(d))
}

impl ServeArgs {
    /// Merges flags/env, the config file and the defaults, and validates the result.
    ///
    /// # Errors
    /// A [`UsageError`] naming the setting, the bad value and what would be accepted.
    pub fn resolve(self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    usage(format!("cannot read config file {}: {e}", path.display()))
                })?;
                toml::from_str::<FileSettings>(&text)
                    .map_err(|e| usage(format!("invalid config file {}: {e}", path.display())))?
            }
            None => FileSettings::default(),
        };
        let defaults = Config::default();

        let listen = match self.listen {
            Some(addr) => addr,
            None => {
                let text = file.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
                text.parse().map_err(|e| {
                    usage(format!(
                        "invalid listen address {text:?}: {e} (write HOST:PORT, e.g. 0.0.0.0:5378 or [::]:5378)"
                    ))
                })?
            }
        };

        let max_clients = self
            .max_clients
            .or(file.max_clients)
            .unwrap_or(defaults.max_clients);
        if max_clients == 0 {
            return Err(usage("invalid max-clients 0: must be at least 1"));
        }
        let max_line_bytes = self
            .max_line
            .or(file.max_line)
            .unwrap_or(defaults.max_line_bytes);
        // The longest valid login line must fit, or nobody could log in.
        let min_line = "HELLO-FROM ".len() + tcpchat_proto::MAX_NAME_BYTES;
        if !(min_line..=1 << 24).contains(&max_line_bytes) {
            return Err(usage(format!(
                "invalid max-line {max_line_bytes}: must be between {min_line} (a login with the longest name) and 16777216"
            )));
        }
        let outbox_limit_bytes = self
            .max_outbox
            .or(file.max_outbox)
            .unwrap_or(defaults.outbox_limit_bytes);
        if outbox_limit_bytes < max_line_bytes {
            return Err(usage(format!(
                "invalid max-outbox {outbox_limit_bytes}: must be at least max-line ({max_line_bytes}), or no full line could ever be queued"
            )));
        }

        let handshake_timeout = match self.handshake_timeout.or(file.handshake_timeout) {
            Some(v) => {
                duration("handshake-timeout", &v, false)?.unwrap_or(defaults.handshake_timeout)
            }
            None => defaults.handshake_timeout,
        };
        let idle_timeout = match self.idle_timeout.or(file.idle_timeout) {
            Some(v) => duration("idle-timeout", &v, true)?,
            None => defaults.idle_timeout,
        };
        let base = Keepalive::default();
        let keepalive_idle = match self.keepalive.or(file.keepalive) {
            Some(v) => duration("keepalive", &v, true)?,
            None => Some(base.idle),
        };
        let interval = match self.keepalive_interval.or(file.keepalive_interval) {
            Some(v) => duration("keepalive-interval", &v, false)?.unwrap_or(base.interval),
            None => base.interval,
        };
        let probes = self
            .keepalive_probes
            .or(file.keepalive_probes)
            .unwrap_or(base.probes);
        if probes == 0 {
            return Err(usage("invalid keepalive-probes 0: must be at least 1"));
        }
        let keepalive = keepalive_idle.map(|idle| Keepalive {
            idle,
            interval,
            probes,
        });
        let shutdown_grace = match self.shutdown_grace.or(file.shutdown_grace) {
            Some(v) => duration("shutdown-grace", &v, true)?.unwrap_or(Duration::ZERO),
            None => defaults.shutdown_grace,
        };

        let node_id = match self.node_id.or(file.node_id) {
            Some(id) => Some(NodeId::parse(&id).map_err(|e| usage(e.to_string()))?),
            None => None,
        };
        let cluster = match self.cluster.or(file.cluster) {
            Some(url) => {
                tcpchat_redis::check_url(&url).map_err(|e| usage(e.to_string()))?;
                Some(Cluster {
                    url,
                    node_id: node_id.unwrap_or_else(NodeId::random),
                })
            }
            None if node_id.is_some() => {
                return Err(usage(
                    "node-id is only used in cluster mode: add --cluster redis://HOST:PORT",
                ))
            }
            None => None,
        };

        Ok(Settings {
            listen,
            cluster,
            config: Config {
                max_clients,
                max_line_bytes,
                handshake_timeout,
                idle_timeout,
                keepalive,
                outbox_limit_bytes,
                shutdown_grace,
            },
        })
    }
}

/// Runs `tcpchat serve` to completion.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let Settings {
        listen,
        config,
        cluster,
    } = args.resolve()?;
    raise_fd_limit(config.max_clients);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal();
        let listener = tcpchat_server::bind(listen).map_err(|e| bind_error(listen, &e))?;
        match cluster {
            None => tcpchat_server::run(listener, config, shutdown).await?,
            Some(Cluster { url, node_id }) => {
                let hub = RedisHub::start(ClusterConfig::new(url, node_id))
                    .await
                    .map_err(|e| usage(e.to_string()))?;
                tcpchat_server::run_with_hub(listener, config, hub.clone(), shutdown).await?;
                hub.leave().await;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn bind_error(addr: SocketAddr, e: &std::io::Error) -> anyhow::Error {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            let mut next = addr;
            next.set_port(addr.port().wrapping_add(1));
            format!(" (another server running? try --listen {next})")
        }
        std::io::ErrorKind::AddrNotAvailable => {
            " (that address is not on this machine; try 0.0.0.0 or 127.0.0.1)".to_owned()
        }
        std::io::ErrorKind::PermissionDenied => {
            " (ports below 1024 need privileges; try a port above 1024)".to_owned()
        }
        _ => String::new(),
    };
    anyhow::anyhow!("cannot listen on {addr}: {e}{hint}")
}

/// Each connection needs a file descriptor; the common default soft limit (1024) would cap
/// the server far below `--max-clients`. Raise the soft limit to the hard one and say so if
/// it is still too low.
fn raise_fd_limit(max_clients: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            // A few descriptors for the listener, logs and the runtime itself.
            let needed = max_clients as u64 + 32;
            if limit < needed {
                warn!(
                    limit,
                    max_clients,
                    "open-file limit is below max-clients; connections beyond it will be refused at accept (raise `ulimit -n` or lower --max-clients)"
                );
            }
        }
        Err(e) => warn!(error = %e, "cannot read or raise the open-file limit"),
    }
}

/// A future that completes on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed now,
/// before the server says it is listening, so a signal sent right after that line is never
/// met by the default action (instant death without a graceful shutdown).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    #[cfg(unix)]
    let int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    async move {
        #[cfg(unix)]
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = int.recv() => info!("SIGINT received"),
                _ = term.recv() => info!("SIGTERM received"),
            },
            (Err(e), _) | (_, Err(e)) => {
                warn!(error = %e, "cannot watch signals; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn resolve(argv: &[&str]) -> anyhow::Result<Settings> {
        let mut full = vec!["serve"];
        full.extend_from_slice(argv);
        T::try_parse_from(full)
            .map_err(|e| usage(e.to_string()))?
            .args
            .resolve()
    }

    fn file(contents: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(contents)
    }

    /// A tiny temp-file helper (tests only): a unique path under the target dir, removed on drop.
    mod tempfile_path {
        use std::path::PathBuf;
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        pub struct TempPath(pub PathBuf);
        impl TempPath {
            pub fn with(contents: &str) -> Self {
                let n = N.fetch_add(1, Ordering::Relaxed);
                let path = std::env::temp_dir()
                    .join(format!("tcpchat-test-{}-{n}.toml", std::process::id()));
                std::fs::write(&path, contents).expect("write temp config");
                Self(path)
            }
            pub fn arg(&self) -> String {
                self.0.display().to_string()
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn defaults() {
        let s = resolve(&[]).expect("defaults are valid");
        assert_eq!(s.listen, DEFAULT_LISTEN.parse().expect("addr"));
        assert_eq!(s.config, Config::default());
    }

    #[test]
    fn flags_parse() {
        let s = resolve(&[
            "--listen",
            "[::1]:6000",
            "--max-clients",
            "5",
            "--max-line",
            "100",
            "--handshake-timeout",
            "2s",
            "--idle-timeout",
            "5m",
            "--keepalive",
            "off",
            "--max-outbox",
            "1000",
            "--shutdown-grace",
            "0",
        ])
        .expect("valid flags");
        assert_eq!(s.listen, "[::1]:6000".parse().expect("addr"));
        assert_eq!(s.config.max_clients, 5);
        assert_eq!(s.config.max_line_bytes, 100);
        assert_eq!(s.config.handshake_timeout, Duration::from_secs(2));
        assert_eq!(s.config.idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(s.config.keepalive, None);
        assert_eq!(s.config.outbox_limit_bytes, 1000);
        assert_eq!(s.config.shutdown_grace, Duration::ZERO);
    }

    #[test]
    fn file_fills_what_flags_leave_unset() {
        let f = file("listen = \"127.0.0.1:7000\"\nmax_clients = 7\nkeepalive = \"20s\"\nkeepalive_probes = 2\n");
        let s = resolve(&["--config", &f.arg(), "--max-clients", "9"]).expect("valid");
        assert_eq!(s.listen, "127.0.0.1:7000".parse().expect("addr"));
        assert_eq!(s.config.max_clients, 9, "flag wins over file");
        let ka = s.config.keepalive.expect("keepalive on");
        assert_eq!((ka.idle, ka.probes), (Duration::from_secs(20), 2));
    }

    #[test]
    fn cluster_settings() {
        assert_eq!(resolve(&[]).expect("valid").cluster, None, "off by default");
        let s =
            resolve(&["--cluster", "redis://127.0.0.1:6400/1", "--node-id", "n1"]).expect("valid");
        let c = s.cluster.expect("cluster mode");
        assert_eq!(c.url, "redis://127.0.0.1:6400/1");
        assert_eq!(c.node_id.as_str(), "n1");
        let f = file("cluster = \"redis://10.1.2.3:6379\"\nnode_id = \"from-file\"\n");
        let s = resolve(&["--config", &f.arg(), "--node-id", "flag"]).expect("valid");
        let c = s.cluster.expect("cluster mode from the file");
        assert_eq!(c.url, "redis://10.1.2.3:6379");
        assert_eq!(c.node_id.as_str(), "flag", "flag wins over file");
        let s = resolve(&["--cluster", "redis://127.0.0.1:6379"]).expect("valid");
        assert!(
            s.cluster
                .expect("cluster")
                .node_id
                .as_str()
                .starts_with("node-"),
            "a random id when none is given"
        );
    }

    #[test]
    fn invalid_settings_are_usage_errors() {
        let unknown_key = file("max_client = 3\n");
        let bad_toml = file("max_clients = \n");
        let cases: Vec<(Vec<String>, &str)> = vec![
            (vec!["--max-clients".into(), "0".into()], "max-clients"),
            (vec!["--max-line".into(), "10".into()], "max-line"),
            (
                vec!["--handshake-timeout".into(), "soon".into()],
                "handshake-timeout",
            ),
            (
                vec!["--handshake-timeout".into(), "0s".into()],
                "handshake-timeout",
            ),
            (
                vec!["--keepalive-probes".into(), "0".into()],
                "keepalive-probes",
            ),
            (vec!["--max-outbox".into(), "10".into()], "max-outbox"),
            (vec!["--listen".into(), "localhost".into()], "listen"),
            (
                vec!["--cluster".into(), "127.0.0.1:6379".into()],
                "invalid cluster address",
            ),
            (
                vec![
                    "--cluster".into(),
                    "redis://127.0.0.1:6379".into(),
                    "--node-id".into(),
                    "a b".into(),
                ],
                "invalid node id",
            ),
            (vec!["--node-id".into(), "n1".into()], "--cluster"),
            (
                vec!["--config".into(), "/nonexistent/tcpchat.toml".into()],
                "cannot read config file",
            ),
            (vec!["--config".into(), unknown_key.arg()], "unknown field"),
            (
                vec!["--config".into(), bad_toml.arg()],
                "invalid config file",
            ),
        ];
        for (argv, needle) in cases {
            let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
            let err = resolve(&refs).expect_err(&format!("{argv:?} must be rejected"));
            assert!(
                err.is::<UsageError>(),
                "{argv:?}: not a usage error: {err:#}"
            );
            let msg = format!("{err:#}");
            assert!(
                msg.contains(needle),
                "{argv:?}: message {msg:?} lacks {needle:?}"
            );
        }
    }
}
