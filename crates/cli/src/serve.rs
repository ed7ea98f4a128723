//! `tcpchat serve`: settings from flags, environment and an optional TOML file, then the
//! server until SIGINT or SIGTERM.
//!
//! Every setting is declared once, in [`Settings`]: its flag, environment variable, file key
//! (the field name), help text and type. The same struct is what clap fills from flags and
//! environment and what serde fills from the file, each field an `Option` that is `None` when
//! that source leaves it unset. Precedence, highest first: command-line flag, environment
//! variable, config file, default. Clap already prefers a flag to its environment variable,
//! so the two arrive as one value and the file fills only what is still unset.
//!
//! Defaults are the server's own, [`Config::default`]; `--help` shows them from there, so
//! neither the help text nor this module repeats a number. The rules a value must obey are
//! the server's too ([`Config::validate`]); this module only parses text into values.

use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use tcpchat_proto::{Extension, ExtensionSet};
use tcpchat_redis::{ClusterConfig, NodeId, RedisHub};
use tcpchat_server::limits::{parse_networks, CommandRate, IpNet, LoginRate, Rate};
use tcpchat_server::{
    AccountSettings, Config, Keepalive, Limits, Listeners, MemoryHub, Metrics, RoomLimits,
    StoreHandle,
};
use tcpchat_tls::server::Reloadable;
use tracing::{debug, info, warn};

use crate::UsageError;

/// Default listen address: every interface, the protocol's port. The one default that is
/// the binary's rather than the server's (the server is handed a bound listener).
const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    tcpchat_proto::DEFAULT_PORT,
);

/// Default TLS listen address, used when a certificate is given without `--tls-listen`.
const DEFAULT_TLS_LISTEN: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    tcpchat_tls::DEFAULT_TLS_PORT,
);

/// Declares [`Settings`]: each field once, with its clap and serde attributes and the
/// default `--help` shows for it (computed from [`Config::default`] by `|c| ...`). It also
/// writes the two functions that would otherwise repeat the list of fields, so adding a
/// setting is one entry here plus the code that uses the value.
macro_rules! settings {
    ($(
        $(#[$attr:meta])*
        $field:ident: $ty:ty = |$c:ident| $shown:expr;
    )*) => {
        // Plain comments, not `///`: clap would make a doc comment the subcommand's about.
        // Every field optional: `None` means "this source does not set it".
        #[derive(Debug, Default, Args, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[command(mut_args = show_default)]
        pub struct Settings {
            $( $(#[$attr])* $field: Option<$ty>, )*
        }

        impl Settings {
            /// Each setting from `self`, or from `lower` where `self` leaves it unset.
            fn or(self, lower: Self) -> Self {
                Self { $( $field: self.$field.or(lower.$field), )* }
            }

            /// The default `--help` shows for the setting with clap id `id`.
            fn shown_default(id: &str) -> Option<String> {
                let defaults = Config::default();
                $(
                    if id == stringify!($field) {
                        let $c = &defaults;
                        return Some($shown.to_string());
                    }
                )*
                None
            }
        }
    };
}

settings! {
    /// Address to listen on, e.g. 0.0.0.0:5378, 127.0.0.1:6000 or [::]:5378; "off" for
    /// TLS only
    #[arg(long, env = "TCPCHAT_LISTEN", value_name = "ADDR")]
    listen: Listen = |_c| DEFAULT_LISTEN;

    /// Address to listen on for the protocol inside TLS, e.g. 0.0.0.0:5379; needs
    /// --tls-cert and --tls-key
    #[arg(long, env = "TCPCHAT_TLS_LISTEN", value_name = "ADDR")]
    tls_listen: Listen = |_c| "off; 0.0.0.0:5379 when --tls-cert is given";

    /// TLS certificate: PEM, the full chain (server certificate first); re-read on SIGHUP
    #[arg(long, env = "TCPCHAT_TLS_CERT", value_name = "FILE")]
    tls_cert: PathBuf = |_c| "none";

    /// TLS private key of --tls-cert: PEM (PKCS#8, RSA or EC); re-read on SIGHUP
    #[arg(long, env = "TCPCHAT_TLS_KEY", value_name = "FILE")]
    tls_key: PathBuf = |_c| "none";

    /// Serve the browser page at http://ADDR/ and the chat over WebSocket at /ws (https://
    /// and wss:// when --tls-cert is given), e.g. 0.0.0.0:8080; "off" for none
    #[arg(long, env = "TCPCHAT_WEB_LISTEN", value_name = "ADDR")]
    web_listen: Listen = |_c| "off";

    /// Web: page origins allowed to open a WebSocket, e.g. https://chat.example.org; "same"
    /// (the Origin's host:port is the Host header's) or "*" for any
    #[arg(long, env = "TCPCHAT_WEB_ORIGINS", value_name = "ORIGIN,...")]
    web_origins: WebOrigins = |_c| "same";

    /// Web: proxies whose X-Forwarded-For names the client (that address then counts for
    /// the per-address limits and the logs) and whose X-Forwarded-Proto: https makes the
    /// WebSocket count as TLS for passwords, e.g. 127.0.0.1,10.0.0.0/8; "none" for none
    #[arg(long, env = "TCPCHAT_TRUSTED_PROXIES", value_name = "CIDR,...")]
    trusted_proxies: Networks = |_c| "none";

    /// Connections served at once, logged in or not; one more is answered BUSY and closed
    #[arg(long, env = "TCPCHAT_MAX_CLIENTS", value_name = "N")]
    max_clients: usize = |c| c.max_clients;

    /// Longest accepted line in bytes, not counting the newline; longer lines get an error
    /// reply and are discarded
    #[arg(long, env = "TCPCHAT_MAX_LINE", value_name = "BYTES")]
    max_line: usize = |c| c.max_line_bytes;

    /// Close connections that have not logged in after this long, e.g. 30s
    #[arg(long, env = "TCPCHAT_HANDSHAKE_TIMEOUT", value_name = "DURATION")]
    handshake_timeout: Span = |c| Span(c.handshake_timeout);

    /// Close logged-in connections silent for this long; "off" never does (classic clients
    /// cannot send keepalives, so dead peers are found by TCP keepalive)
    #[arg(long, env = "TCPCHAT_IDLE_TIMEOUT", value_name = "DURATION")]
    idle_timeout: SpanOrOff = |c| SpanOrOff(c.idle_timeout);

    /// TCP keepalive: silence before probing a peer, in whole seconds; "off" disables probing
    #[arg(long, env = "TCPCHAT_KEEPALIVE", value_name = "DURATION")]
    keepalive: SpanOrOff = |c| SpanOrOff(c.keepalive.map(|k| k.idle));

    /// TCP keepalive: time between probes, in whole seconds
    #[arg(long, env = "TCPCHAT_KEEPALIVE_INTERVAL", value_name = "DURATION")]
    keepalive_interval: Span = |c| Span(c.keepalive.unwrap_or_default().interval);

    /// TCP keepalive: unanswered probes before a peer is declared dead
    #[arg(long, env = "TCPCHAT_KEEPALIVE_PROBES", value_name = "N")]
    keepalive_probes: u32 = |c| c.keepalive.unwrap_or_default().probes;

    /// Bytes that may wait unsent for one connection; a peer that stops reading is dropped
    /// when it has this much queued
    #[arg(long, env = "TCPCHAT_MAX_OUTBOX", value_name = "BYTES")]
    max_outbox: usize = |c| c.outbox_limit_bytes;

    /// On shutdown, how long connections get to receive what is queued for them; "off" or 0
    /// closes them at once
    #[arg(long, env = "TCPCHAT_SHUTDOWN_GRACE", value_name = "DURATION")]
    shutdown_grace: SpanOrOff = |c| SpanOrOff(Some(c.shutdown_grace));

    /// Abuse limits (docs/security.md): "off" turns every one off (load tests, trusted
    /// networks); limits set one by one below still apply on top
    #[arg(long, env = "TCPCHAT_LIMITS", value_name = "on|off")]
    limits: Switch = |_c| Switch(true);

    /// Connections open at once from one address (an IPv4 address or an IPv6 /64); one more
    /// is answered BUSY and closed; "off" for no limit
    #[arg(long, env = "TCPCHAT_MAX_PER_ADDRESS", value_name = "N")]
    max_per_address: CountOrOff = |c| CountOrOff(c.limits.max_per_address);

    /// New connections one address may open at once, before --connect-rate applies
    #[arg(long, env = "TCPCHAT_CONNECT_BURST", value_name = "N")]
    connect_burst: NonZeroU32 = |c| shown_burst(c.limits.connect_rate);

    /// New connections per second per address once the burst is spent; more are answered
    /// BUSY and closed; "off" for no limit
    #[arg(long, env = "TCPCHAT_CONNECT_RATE", value_name = "N")]
    connect_rate: CountOrOff = |c| CountOrOff(c.limits.connect_rate.map(|r| r.per_second));

    /// Lines one connection may send at once, before --command-rate applies
    #[arg(long, env = "TCPCHAT_COMMAND_BURST", value_name = "N")]
    command_burst: NonZeroU32 = |c| shown_burst(c.limits.command_rate.map(|r| r.rate));

    /// Lines per second per connection once the burst is spent; more wait (they are handled
    /// later, in order); "off" for no limit
    #[arg(long, env = "TCPCHAT_COMMAND_RATE", value_name = "N")]
    command_rate: CountOrOff = |c| CountOrOff(c.limits.command_rate.map(|r| r.rate.per_second));

    /// A connection whose lines have all had to wait for this long is disconnected
    #[arg(long, env = "TCPCHAT_FLOOD_TIMEOUT", value_name = "DURATION")]
    flood_timeout: Span = |c| Span(
        c.limits.command_rate.map_or(tcpchat_server::limits::DEFAULT_FLOOD_TIMEOUT, |r| r.flood_timeout)
    );

    /// Connections not logged in yet, all addresses together; at the cap a new connection
    /// displaces the oldest waiting one; "off" for no cap
    #[arg(long, env = "TCPCHAT_MAX_PRELOGIN", value_name = "N")]
    max_prelogin: CountOrOff = |c| CountOrOff(
        c.limits.max_prelogin.and_then(|n| u32::try_from(n.get()).ok()).and_then(NonZeroU32::new)
    );

    /// Networks no abuse limit applies to (gateways, monitoring, load tests), e.g.
    /// 127.0.0.0/8,10.1.2.3,2001:db8::/32; "none" for none
    #[arg(long, env = "TCPCHAT_EXEMPT", value_name = "CIDR,...")]
    exempt: Networks = |c| Networks(c.limits.exempt.clone());

    /// Protocol extensions offered to clients that ask for them (docs/protocol.md), e.g.
    /// keepalive,presence; "none" makes the server classic (EXT is then an unknown command)
    #[arg(long, env = "TCPCHAT_EXTENSIONS", value_name = "EXT,...")]
    extensions: Extensions = |c| Extensions(c.extensions);

    /// Keepalive extension: PING a connection that negotiated it once silent this long
    #[arg(long, env = "TCPCHAT_PING_INTERVAL", value_name = "DURATION")]
    ping_interval: Span = |c| Span(c.ping_interval);

    /// Keepalive extension: close that connection if still silent this long after the PING
    #[arg(long, env = "TCPCHAT_PING_TIMEOUT", value_name = "DURATION")]
    ping_timeout: Span = |c| Span(c.ping_timeout);
    /// Accounts and history: the directory of the database (tcpchat.db), created with mode
    /// 0700 if missing; unused in cluster mode (accounts are kept in Redis)
    #[arg(long, env = "TCPCHAT_DATA_DIR", value_name = "DIR")]
    data_dir: PathBuf = |_c| DATA_DIR_SHOWN;

    /// Accounts: accept passwords on plain TCP from non-loopback addresses (anyone on the
    /// path reads them; TLS and loopback are always accepted)
    #[arg(long, env = "TCPCHAT_ALLOW_PLAIN_PASSWORDS", value_name = "on|off",
          num_args = 0..=1, default_missing_value = "on")]
    allow_plain_passwords: Switch = |c| Switch(c.accounts.allow_plain_passwords);

    /// Accounts: password checks one address may make at once, before --login-rate applies
    #[arg(long, env = "TCPCHAT_LOGIN_BURST", value_name = "N")]
    login_burst: NonZeroU32 = |c| c.accounts.per_address.burst;

    /// Accounts: then one password check per address per this long, e.g. 3s
    #[arg(long, env = "TCPCHAT_LOGIN_RATE", value_name = "DURATION")]
    login_rate: Span = |c| Span(c.accounts.per_address.every);

    /// Accounts: wrong passwords one name may be given at once, before --login-name-rate
    #[arg(long, env = "TCPCHAT_LOGIN_NAME_BURST", value_name = "N")]
    login_name_burst: NonZeroU32 = |c| c.accounts.per_name.burst;

    /// Accounts: then one wrong password per name per this long, e.g. 30s
    #[arg(long, env = "TCPCHAT_LOGIN_NAME_RATE", value_name = "DURATION")]
    login_name_rate: Span = |c| Span(c.accounts.per_name.every);

    /// Accounts: password checks that may wait for a hashing thread; one more is answered
    /// THROTTLED 1
    #[arg(long, env = "TCPCHAT_HASH_QUEUE", value_name = "N")]
    hash_queue: usize = |c| c.accounts.hash_queue;

    /// Accounts: threads hashing passwords (argon2id, 19 MiB each); default the number of
    /// cores, at most 4
    #[arg(long, env = "TCPCHAT_HASH_THREADS", value_name = "N")]
    hash_threads: NonZeroUsize = |c| c.accounts.hash_threads;

    /// Practice mode for a class: plain connections get their lines cut at random points,
    /// replies coalesced and short random pauses, as a real network can deliver them, so a
    /// client's framing bugs show on a student's own machine; reproducible from SEED (any
    /// number); "off" writes normally (docs/teaching.md)
    #[arg(long, env = "TCPCHAT_PRACTICE", value_name = "SEED")]
    practice: SeedOrOff = |_c| "off";

    /// Protocol generation: "auto" answers each connection in its own (the previous one's
    /// WHO / WHO-OK / UNKNOWN from its first WHO on), "current" or "old" fixes one for all
    #[arg(long, env = "TCPCHAT_PROTOCOL_GENERATION", value_name = "auto|current|old")]
    protocol_generation: GenerationArg = |c| GenerationArg(c.generation).name();

    /// Rooms extension: rooms one user may be in at once; one more JOIN is ROOM-LIMIT
    #[arg(long, env = "TCPCHAT_MAX_ROOMS_PER_USER", value_name = "N")]
    max_rooms_per_user: usize = |c| c.rooms.rooms_per_user;

    /// Rooms extension: members one room may have; one more JOIN is ROOM-FULL
    #[arg(long, env = "TCPCHAT_MAX_ROOM_MEMBERS", value_name = "N")]
    max_room_members: usize = |c| c.rooms.members_per_room;

    /// Rooms extension: longest room topic, in bytes
    #[arg(long, env = "TCPCHAT_MAX_TOPIC", value_name = "BYTES")]
    max_topic: usize = |c| c.rooms.topic_bytes;

    /// History extension: messages kept per user's direct stream; the oldest go first
    #[arg(long, env = "TCPCHAT_HISTORY_DIRECT_CAP", value_name = "N")]
    history_direct_cap: NonZeroU32 = |c| NonZeroU32::new(c.history.direct_cap).unwrap_or(NonZeroU32::MIN);

    /// History extension: messages kept per room; the oldest go first
    #[arg(long, env = "TCPCHAT_HISTORY_ROOM_CAP", value_name = "N")]
    history_room_cap: NonZeroU32 = |c| NonZeroU32::new(c.history.room_cap).unwrap_or(NonZeroU32::MIN);

    /// History extension: messages older than this are removed, delivered or not; "off"
    /// keeps them until the caps remove them
    #[arg(long, env = "TCPCHAT_HISTORY_RETENTION", value_name = "DURATION")]
    history_retention: SpanOrOff = |c| SpanOrOff((!c.history.retention.is_zero()).then_some(c.history.retention));

    /// History extension: messages waiting for the disk writer at most; past it messages
    /// are delivered but not stored (counted, logged)
    #[arg(long, env = "TCPCHAT_HISTORY_QUEUE", value_name = "N")]
    history_queue: NonZeroUsize = |c| NonZeroUsize::new(c.history.queue).unwrap_or(NonZeroUsize::MIN);

    /// Cluster mode: share names and messages with every node using this Redis, e.g.
    /// redis://10.0.0.5:6379, redis://127.0.0.1:6379/2, or rediss://USER@HOST:6380 for TLS;
    /// a Redis Cluster: redis+cluster://HOST:PORT,HOST:PORT,... (see docs/cluster.md)
    #[arg(long, env = "TCPCHAT_CLUSTER", value_name = "URL")]
    cluster: String = |_c| "off, everything in this process";

    /// Cluster mode: this node's id, unique among the nodes (letters, digits, '.', '_', '-')
    #[arg(long, env = "TCPCHAT_NODE_ID", value_name = "ID")]
    node_id: String = |_c| "a random one, shown in the log";

    /// Cluster mode: how long this node's names outlive its last lease renewal (how soon a
    /// dead node's users may log in elsewhere)
    #[arg(long, env = "TCPCHAT_CLUSTER_LEASE", value_name = "DURATION")]
    cluster_lease: Span = |_c| Span(tcpchat_redis::NODE_LEASE);

    /// Cluster mode: how often the lease is renewed; at most a third of --cluster-lease
    #[arg(long, env = "TCPCHAT_CLUSTER_RENEW", value_name = "DURATION")]
    cluster_renew: Span = |_c| Span(tcpchat_redis::RENEW_INTERVAL);

    /// Cluster mode: after Redis lost its state, how long logins wait while nodes
    /// re-register; at least --cluster-renew plus --cluster-call-timeout
    #[arg(long, env = "TCPCHAT_CLUSTER_SETTLE", value_name = "DURATION")]
    cluster_settle: Span = |_c| Span(tcpchat_redis::SETTLE);

    /// Cluster mode: longest wait for one Redis call before it counts as failed (the login
    /// is answered BUSY)
    #[arg(long, env = "TCPCHAT_CLUSTER_CALL_TIMEOUT", value_name = "DURATION")]
    cluster_call_timeout: Span = |_c| Span(tcpchat_redis::CALL_TIMEOUT);

    /// Cluster mode over TLS (rediss://): the CA certificate(s), PEM, that sign Redis's
    /// certificate
    #[arg(long, env = "TCPCHAT_CLUSTER_CA", value_name = "FILE")]
    cluster_ca: PathBuf = |_c| "the system's trusted roots";

    /// Cluster mode: read the Redis password (of the URL's ACL user, if it names one) from
    /// this file instead of the URL
    #[arg(long, env = "TCPCHAT_CLUSTER_PASSWORD_FILE", value_name = "FILE")]
    cluster_password_file: PathBuf = |_c| "none; the URL's, if it has one";

    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9378 (keep it on
    /// loopback or a private network: it is unauthenticated); "off" for none
    #[arg(long, env = "TCPCHAT_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Listen = |_c| "off";

    // How often an info line sums up users and messages/s; "off" for never. Hidden: the
    // minute is what operators want; tests shorten it.
    #[arg(long, env = "TCPCHAT_LOG_SUMMARY", value_name = "DURATION", hide = true)]
    log_summary: SpanOrOff = |_c| SpanOrOff(Some(DEFAULT_LOG_SUMMARY));
}

/// How often the log sums up the load, by default.
const DEFAULT_LOG_SUMMARY: Duration = Duration::from_secs(60);
/// What `--help` shows for `--data-dir`'s default ([`default_data_dir`]).
const DATA_DIR_SHOWN: &str =
    "$XDG_DATA_HOME/tcpchat, else ~/.local/share/tcpchat, else ./tcpchat-data";

/// The data directory when none is given: `$XDG_DATA_HOME/tcpchat` (the XDG base directory
/// rule: only an absolute value counts), else `~/.local/share/tcpchat`, else
/// `./tcpchat-data` (no home: a service account).
pub fn default_data_dir() -> PathBuf {
    let var = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(xdg) = var("XDG_DATA_HOME") {
        return xdg.join("tcpchat");
    }
    if let Some(home) = var("HOME") {
        return home.join(".local/share/tcpchat");
    }
    PathBuf::from("tcpchat-data")
}

/// The burst `--help` shows: the default's, also when that rate is off.
fn shown_burst(rate: Option<Rate>) -> NonZeroU32 {
    rate.map_or(NonZeroU32::MIN, |r| r.burst)
}

/// Appends "[default: ...]" to the help of each setting, from [`Settings::shown_default`].
fn show_default(arg: clap::Arg) -> clap::Arg {
    let Some(default) = Settings::shown_default(arg.get_id().as_str()) else {
        return arg;
    };
    let with_default = |help: &clap::builder::StyledStr| format!("{help} [default: {default}]");
    let help = arg.get_help().map(with_default);
    let long_help = arg.get_long_help().map(with_default);
    let arg = match help {
        Some(help) => arg.help(help),
        None => arg,
    };
    match long_help {
        Some(long_help) => arg.long_help(long_help),
        None => arg,
    }
}

#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    settings: Settings,

    /// Read settings from this TOML file (keys as the flags, with underscores:
    /// listen, max_clients, max_line, handshake_timeout, ...); flags and environment win
    #[arg(long, env = "TCPCHAT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

/// An address to listen on: an IP address and a port (no name: the server binds, it does
/// not resolve), or "off" (`None`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
struct Listen(Option<SocketAddr>);

impl FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        s.trim().parse().map(|a| Self(Some(a))).map_err(|e| {
            format!(
                "invalid listen address {s:?}: {e} (write IP:PORT, e.g. 0.0.0.0:5378 or [::]:5378, or off)"
            )
        })
    }
}

/// A duration, written as "30s", "1m 30s" or "500ms".
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
struct Span(Duration);

impl FromStr for Span {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim()).map(Self).map_err(|e| {
            format!("invalid duration {s:?}: {e} (write one such as 30s, 2m or 500ms)")
        })
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

/// A duration or "off" (`None`); any zero duration ("0", "0s") is off too.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
struct SpanOrOff(Option<Duration>);

impl FromStr for SpanOrOff {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let v = s.trim();
        if v.eq_ignore_ascii_case("off") || v == "0" {
            return Ok(Self(None));
        }
        humantime::parse_duration(v)
            .map(|d| Self((!d.is_zero()).then_some(d)))
            .map_err(|e| {
                format!("invalid duration {s:?}: {e} (write one such as 30s, 2m or 500ms, or off)")
            })
    }
}

impl fmt::Display for SpanOrOff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) if !d.is_zero() => Span(d).fmt(f),
            _ => f.write_str("off"),
        }
    }
}

/// Serde's `try_from = "String"` for the value types: the same parser as the flags, so a
/// value means the same and is refused with the same words from every source.
macro_rules! from_string {
    ($($ty:ty),*) => {$(
        impl TryFrom<String> for $ty {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                s.parse()
            }
        }
    )*};
}
from_string!(Listen, Span, SpanOrOff, Switch, Networks, WebOrigins);

/// `--web-origins`: "same", "*" or a comma-separated list of origins.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
struct WebOrigins(tcpchat_web::Origins);

impl FromStr for WebOrigins {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        tcpchat_web::Origins::parse(s).map(Self)
    }
}

/// "on" or "off".
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
struct Switch(bool);

impl FromStr for Switch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "on" => Ok(Self(true)),
            "off" => Ok(Self(false)),
            _ => Err(format!("invalid value {s:?}: write on or off")),
        }
    }
}

impl fmt::Display for Switch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0 { "on" } else { "off" })
    }
}

/// A count of at least 1, or "off" (`None`). In the file, a number or a string.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "NumberOrText")]
struct CountOrOff(Option<NonZeroU32>);

/// `auto`, `current` or `old`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
struct GenerationArg(tcpchat_server::GenerationPolicy);

impl GenerationArg {
    fn name(self) -> &'static str {
        match self.0 {
            tcpchat_server::GenerationPolicy::Auto => "auto",
            tcpchat_server::GenerationPolicy::Current => "current",
            tcpchat_server::GenerationPolicy::Old => "old",
        }
    }
}

impl TryFrom<String> for GenerationArg {
    type Error = String;
    fn try_from(v: String) -> Result<Self, String> {
        v.parse()
    }
}

impl FromStr for GenerationArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        use tcpchat_server::GenerationPolicy as G;
        match s.trim() {
            "auto" => Ok(Self(G::Auto)),
            "current" => Ok(Self(G::Current)),
            "old" => Ok(Self(G::Old)),
            _ => Err(format!(
                "invalid protocol generation {s:?}: auto, current or old"
            )),
        }
    }
}

/// Practice mode's seed, or "off" (`None`). In the file, a number or a string.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "NumberOrText")]
struct SeedOrOff(Option<u64>);

impl TryFrom<NumberOrText> for SeedOrOff {
    type Error = String;
    fn try_from(v: NumberOrText) -> Result<Self, String> {
        match v {
            NumberOrText::Number(n) => Ok(Self(Some(n))),
            NumberOrText::Text(s) => s.parse(),
        }
    }
}

impl FromStr for SeedOrOff {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let v = s.trim();
        if v.eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        v.parse::<u64>()
            .map(|n| Self(Some(n)))
            .map_err(|_| format!("invalid seed {s:?}: give a whole number, e.g. 42 (or off)"))
    }
}

/// What a file may hold for a count: `1000` or `"off"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(u64),
    Text(String),
}

impl TryFrom<NumberOrText> for CountOrOff {
    type Error = String;
    fn try_from(v: NumberOrText) -> Result<Self, String> {
        match v {
            NumberOrText::Number(n) => n.to_string().parse(),
            NumberOrText::Text(s) => s.parse(),
        }
    }
}

impl FromStr for CountOrOff {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let v = s.trim();
        if v.eq_ignore_ascii_case("off") {
            return Ok(Self(None));
        }
        match v.parse::<u32>() {
            Ok(n) => NonZeroU32::new(n)
                .map(|n| Self(Some(n)))
                .ok_or_else(|| format!("invalid count {s:?}: must be at least 1 (or off)")),
            Err(e) => Err(format!(
                "invalid count {s:?}: {e} (write a number such as 100, or off)"
            )),
        }
    }
}

impl fmt::Display for CountOrOff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => n.fmt(f),
            None => f.write_str("off"),
        }
    }
}

/// A comma-separated list of networks, or "none".
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
struct Networks(Vec<IpNet>);

impl FromStr for Networks {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().eq_ignore_ascii_case("none") {
            return Ok(Self(Vec::new()));
        }
        parse_networks(s)
            .map(Self)
            .map_err(|e| format!("invalid exempt list: {e}"))
    }
}

impl fmt::Display for Networks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let list: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&list.join(","))
    }
}

/// A comma-separated list of extension names, or "none".
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
struct Extensions(ExtensionSet);

impl FromStr for Extensions {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().eq_ignore_ascii_case("none") {
            return Ok(Self(ExtensionSet::NONE));
        }
        let known = || ExtensionSet::all().to_string();
        s.split(',')
            .map(|name| {
                Extension::from_name(name.trim()).ok_or_else(|| {
                    format!(
                        "unknown extension {:?} in {s:?}: write a comma-separated list of {}, or none",
                        name.trim(),
                        known()
                    )
                })
            })
            .collect::<Result<ExtensionSet, String>>()
            .map(Self)
    }
}

impl TryFrom<String> for Extensions {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A rate from its settings: `switch` is the rate flag ("off" or per second), `burst` the
/// burst flag, `base` what is in force without them (the default, or off under `--limits
/// off`). A burst or a rate given alone turns the limit on, with the default for the other.
fn resolve_rate(
    switch: Option<CountOrOff>,
    burst: Option<NonZeroU32>,
    base: Option<Rate>,
    default: Option<Rate>,
) -> Option<Rate> {
    let shape = base.or(default)?;
    match (switch, burst) {
        (Some(CountOrOff(None)), _) => None,
        (Some(CountOrOff(Some(per_second))), burst) => Some(Rate {
            burst: burst.unwrap_or(shape.burst),
            per_second,
        }),
        (None, Some(burst)) => Some(Rate { burst, ..shape }),
        (None, None) => base,
    }
}

/// The abuse limits from their settings; see [`resolve_rate`] for how they combine.
fn resolve_limits(s: &Settings) -> Limits {
    let defaults = Limits::default();
    let base = match s.limits {
        Some(Switch(false)) => Limits::off(),
        _ => Limits::default(),
    };
    let default_command = defaults.command_rate.map(|c| c.rate);
    let command = resolve_rate(
        s.command_rate,
        s.command_burst,
        base.command_rate.map(|c| c.rate),
        default_command,
    )
    .map(|rate| CommandRate {
        rate,
        flood_timeout: s
            .flood_timeout
            .map_or(tcpchat_server::limits::DEFAULT_FLOOD_TIMEOUT, |v| v.0),
    });
    // A flood timeout given alone turns the command rate on.
    let command = command.or_else(|| {
        s.flood_timeout.and_then(|t| {
            default_command.map(|rate| CommandRate {
                rate,
                flood_timeout: t.0,
            })
        })
    });
    Limits {
        max_per_address: s.max_per_address.map_or(base.max_per_address, |v| v.0),
        connect_rate: resolve_rate(
            s.connect_rate,
            s.connect_burst,
            base.connect_rate,
            defaults.connect_rate,
        ),
        command_rate: command,
        max_prelogin: s.max_prelogin.map_or(base.max_prelogin, |v| {
            v.0.and_then(|n| NonZeroUsize::new(n.get() as usize))
        }),
        exempt: s.exempt.clone().map_or(base.exempt, |v| v.0),
        max_tracked_addresses: base.max_tracked_addresses,
    }
}

/// Resolved settings: where to listen and how to serve.
#[derive(Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The plain listener; `None` with `--listen off`.
    pub listen: Option<SocketAddr>,
    /// The TLS listener and its files; `None` unless a certificate is given.
    pub tls: Option<Tls>,
    /// The web listener (over TLS when `tls` is set); `None` unless `--web-listen` is given.
    pub web: Option<Web>,
    pub config: Config,
    /// `Some` in cluster mode.
    pub cluster: Option<Cluster>,
    /// Where `/metrics` is served; `None` when off.
    pub metrics_listen: Option<SocketAddr>,
    /// How often the load summary is logged; `None` when off.
    pub log_summary: Option<Duration>,
    /// Where the account database lives (one process; a cluster keeps accounts in Redis).
    pub data_dir: PathBuf,
}

/// Where to serve TLS and with which certificate and key.
#[derive(Debug, PartialEq, Eq)]
pub struct Tls {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where to serve the page and WebSockets, and the web listener's own settings.
#[derive(Debug, PartialEq, Eq)]
pub struct Web {
    pub listen: SocketAddr,
    pub settings: tcpchat_web::Settings,
}

/// Cluster mode settings: which Redis, this node's id, the timings and the credentials.
#[derive(Debug, PartialEq, Eq)]
pub struct Cluster {
    /// The URL without its password, for logs.
    pub shown: String,
    pub config: ClusterConfig,
}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

impl ServeArgs {
    /// Merges flags/env, the config file and the defaults, and validates the result.
    ///
    /// # Errors
    /// A [`UsageError`] naming the setting, the bad value and what would be accepted.
    pub fn resolve(self) -> anyhow::Result<Resolved> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    usage(format!("cannot read config file {}: {e}", path.display()))
                })?;
                toml::from_str::<Settings>(&text)
                    .map_err(|e| usage(format!("invalid config file {}: {e}", path.display())))?
            }
            None => Settings::default(),
        };
        let s = self.settings.or(file);

        let defaults = Config::default();
        let base = defaults.keepalive.unwrap_or_default();
        let keepalive_idle = s
            .keepalive
            .map_or(defaults.keepalive.map(|k| k.idle), |v| v.0);
        let config = Config {
            max_clients: s.max_clients.unwrap_or(defaults.max_clients),
            max_line_bytes: s.max_line.unwrap_or(defaults.max_line_bytes),
            handshake_timeout: s
                .handshake_timeout
                .map_or(defaults.handshake_timeout, |v| v.0),
            idle_timeout: s.idle_timeout.map_or(defaults.idle_timeout, |v| v.0),
            keepalive: keepalive_idle.map(|idle| Keepalive {
                idle,
                interval: s.keepalive_interval.map_or(base.interval, |v| v.0),
                probes: s.keepalive_probes.unwrap_or(base.probes),
            }),
            outbox_limit_bytes: s.max_outbox.unwrap_or(defaults.outbox_limit_bytes),
            shutdown_grace: s
                .shutdown_grace
                .map_or(defaults.shutdown_grace, |v| v.0.unwrap_or_default()),
            limits: resolve_limits(&s),
            extensions: s.extensions.map_or(defaults.extensions, |v| v.0),
            ping_interval: s.ping_interval.map_or(defaults.ping_interval, |v| v.0),
            ping_timeout: s.ping_timeout.map_or(defaults.ping_timeout, |v| v.0),
            accounts: AccountSettings {
                allow_plain_passwords: s
                    .allow_plain_passwords
                    .map_or(defaults.accounts.allow_plain_passwords, |v| v.0),
                per_address: LoginRate {
                    burst: s.login_burst.unwrap_or(defaults.accounts.per_address.burst),
                    every: s
                        .login_rate
                        .map_or(defaults.accounts.per_address.every, |v| v.0),
                },
                per_name: LoginRate {
                    burst: s
                        .login_name_burst
                        .unwrap_or(defaults.accounts.per_name.burst),
                    every: s
                        .login_name_rate
                        .map_or(defaults.accounts.per_name.every, |v| v.0),
                },
                hash_queue: s.hash_queue.unwrap_or(defaults.accounts.hash_queue),
                hash_threads: s.hash_threads.unwrap_or(defaults.accounts.hash_threads),
            },
            // Opened by `run`, not here: resolving settings touches no file.
            account_store: None,
            practice: s
                .practice
                .and_then(|p| p.0)
                .map(|seed| tcpchat_server::Practice { seed }),
            generation: s.protocol_generation.map_or(defaults.generation, |g| g.0),
            rooms: RoomLimits {
                rooms_per_user: s
                    .max_rooms_per_user
                    .unwrap_or(defaults.rooms.rooms_per_user),
                members_per_room: s
                    .max_room_members
                    .unwrap_or(defaults.rooms.members_per_room),
                topic_bytes: s.max_topic.unwrap_or(defaults.rooms.topic_bytes),
            },
            history: tcpchat_server::HistorySettings {
                direct_cap: s
                    .history_direct_cap
                    .map_or(defaults.history.direct_cap, NonZeroU32::get),
                room_cap: s
                    .history_room_cap
                    .map_or(defaults.history.room_cap, NonZeroU32::get),
                retention: s
                    .history_retention
                    .map_or(defaults.history.retention, |r| r.0.unwrap_or_default()),
                queue: s
                    .history_queue
                    .map_or(defaults.history.queue, NonZeroUsize::get),
            },
        };
        config.validate().map_err(|e| usage(e.to_string()))?;

        let node_id = match s.node_id {
            Some(id) => Some(NodeId::parse(&id).map_err(|e| usage(e.to_string()))?),
            None => None,
        };
        let cluster_only = [
            ("node-id", node_id.is_some()),
            ("cluster-lease", s.cluster_lease.is_some()),
            ("cluster-renew", s.cluster_renew.is_some()),
            ("cluster-settle", s.cluster_settle.is_some()),
            ("cluster-call-timeout", s.cluster_call_timeout.is_some()),
            ("cluster-ca", s.cluster_ca.is_some()),
            ("cluster-password-file", s.cluster_password_file.is_some()),
        ];
        let cluster = match s.cluster {
            Some(url) => {
                let shown = tcpchat_redis::check_url(&url).map_err(|e| usage(e.to_string()))?;
                let mut config = ClusterConfig::new(url, node_id.unwrap_or_else(NodeId::random));
                config.node_lease = s.cluster_lease.map_or(config.node_lease, |v| v.0);
                config.renew_interval = s.cluster_renew.map_or(config.renew_interval, |v| v.0);
                config.settle = s.cluster_settle.map_or(config.settle, |v| v.0);
                config.call_timeout = s.cluster_call_timeout.map_or(config.call_timeout, |v| v.0);
                config.validate().map_err(|e| usage(e.to_string()))?;
                if let Some(path) = &s.cluster_ca {
                    let pem = std::fs::read(path).map_err(|e| {
                        usage(format!("cannot read cluster-ca {}: {e}", path.display()))
                    })?;
                    config.tls_ca = Some(pem);
                }
                if let Some(path) = &s.cluster_password_file {
                    config.password = Some(read_password(path)?);
                }
                Some(Cluster { shown, config })
            }
            None => {
                if let Some((name, _)) = cluster_only.iter().find(|(_, set)| *set) {
                    return Err(usage(format!(
                        "{name} is only used in cluster mode: add --cluster redis://HOST:PORT"
                    )));
                }
                None
            }
        };

        let listen = s.listen.map_or(Some(DEFAULT_LISTEN), |l| l.0);
        let tls = match (s.tls_listen.map(|l| l.0), s.tls_cert, s.tls_key) {
            (Some(None) | None, None, None) => None,
            (Some(None), Some(_), _) | (Some(None), _, Some(_)) => {
                return Err(usage(
                    "tls-listen is off but a TLS certificate or key is given: drop --tls-cert and --tls-key, or give --tls-listen ADDR",
                ))
            }
            (Some(Some(_)), None, _) => {
                return Err(usage(
                    "tls-listen needs a certificate: add --tls-cert FILE --tls-key FILE (try `tcpchat cert` for a self-signed one)",
                ))
            }
            (_, Some(cert), None) => {
                return Err(usage(format!(
                    "tls-cert {} is given without its key: add --tls-key FILE",
                    cert.display()
                )))
            }
            (_, None, Some(key)) => {
                return Err(usage(format!(
                    "tls-key {} is given without its certificate: add --tls-cert FILE",
                    key.display()
                )))
            }
            (addr, Some(cert), Some(key)) => Some(Tls {
                listen: addr.flatten().unwrap_or(DEFAULT_TLS_LISTEN),
                cert,
                key,
            }),
        };
        if listen.is_none() && tls.is_none() {
            return Err(usage(
                "listen is off and no TLS listener is set: nothing to serve (give --listen ADDR, or --tls-cert and --tls-key)",
            ));
        }

        let web = s.web_listen.and_then(|l| l.0).map(|listen| Web {
            listen,
            settings: tcpchat_web::Settings {
                origins: s.web_origins.map(|o| o.0).unwrap_or_default(),
                trusted_proxies: s.trusted_proxies.map(|n| n.0).unwrap_or_default(),
            },
        });

        Ok(Resolved {
            listen,
            tls,
            web,
            cluster,
            config,
            metrics_listen: s.metrics_listen.and_then(|l| l.0),
            log_summary: s.log_summary.map_or(Some(DEFAULT_LOG_SUMMARY), |v| v.0),
            data_dir: s.data_dir.unwrap_or_else(default_data_dir),
        })
    }
}

/// The Redis password from its file: the first line, without its line ending. A file
/// anyone may read is refused, as ssh refuses such a key: the password would not be secret.
fn read_password(path: &std::path::Path) -> anyhow::Result<tcpchat_redis::Password> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read cluster-password-file {shown}: {e}")))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| usage(format!("cannot read cluster-password-file {shown}: {e}")))?
            .permissions()
            .mode();
        if mode & 0o004 != 0 {
            return Err(usage(format!(
                "cluster-password-file {shown} is readable by every user: chmod o-r {shown}"
            )));
        }
    }
    let password = text.lines().next().unwrap_or_default();
    if password.is_empty() {
        return Err(usage(format!(
            "cluster-password-file {shown} is empty: write the password on its first line"
        )));
    }
    Ok(tcpchat_redis::Password::new(password))
}

/// Runs `tcpchat serve` to completion.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let Resolved {
        listen,
        tls,
        web,
        mut config,
        cluster,
        metrics_listen,
        log_summary,
        data_dir,
    } = args.resolve()?;
    // Every value in force, whichever source it came from: what an operator checks first.
    let off = |a: Option<SocketAddr>| a.map_or_else(|| "off".to_owned(), |a| a.to_string());
    debug!(
        listen = %off(listen),
        tls_listen = %off(tls.as_ref().map(|t| t.listen)),
        tls_cert = ?tls.as_ref().map(|t| &t.cert),
        web_listen = %off(web.as_ref().map(|w| w.listen)),
        web = ?web.as_ref().map(|w| &w.settings),
        ?config,
        // Redacted: the URL may carry a password.
        cluster = cluster.as_ref().map(|c| c.shown.as_str()),
        cluster_timings = ?cluster.as_ref().map(|c| {
            let c = &c.config;
            (c.node_lease, c.renew_interval, c.settle, c.call_timeout)
        }),
        metrics_listen = %off(metrics_listen),
        data_dir = %data_dir.display(),
        "settings"
    );
    let mut sqlite = None;
    if cluster.is_none() && config.extensions.contains(Extension::Accounts) {
        let (handle, store) = open_accounts(&data_dir)?;
        config.account_store = Some(handle);
        sqlite = Some(store);
    }
    // History: in one process in the same file; in a cluster in Redis (docs/cluster.md,
    // "History").
    let mut cluster = cluster;
    let history = match (&mut cluster, config.extensions.contains(Extension::History)) {
        (None, true) => Some(open_history(&data_dir, config.history, sqlite)?),
        (Some(c), true) => {
            c.config.history = Some(config.history);
            None
        }
        _ => None,
    };
    // Read before anything is bound: a wrong file is a usage error, said at once.
    let certs = match &tls {
        Some(t) => Some(Arc::new(
            Reloadable::load(&t.cert, &t.key).map_err(|e| usage(e.to_string()))?,
        )),
        None => None,
    };
    if let Some(practice) = config.practice {
        info!(
            seed = practice.seed,
            "practice mode: lines are cut at random points and replies coalesced, as a real network may deliver them"
        );
    }
    raise_fd_limit(config.max_clients);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = shutdown_signal();
        let mut listeners = Listeners::default();
        if let Some(addr) = listen {
            listeners.plain =
                Some(tcpchat_server::bind(addr).map_err(|e| bind_error(addr, "--listen", &e))?);
        }
        if let Some(w) = web {
            let listener = tcpchat_server::bind(w.listen)
                .map_err(|e| bind_error(w.listen, "--web-listen", &e))?;
            // The same certificate as the TLS listener, reloaded with it on SIGHUP.
            listeners.web = Some(tcpchat_web::server(listener, certs.clone(), w.settings));
        }
        if let (Some(t), Some(certs)) = (&tls, certs) {
            let listener = tcpchat_server::bind(t.listen)
                .map_err(|e| bind_error(t.listen, "--tls-listen", &e))?;
            listeners.tls = Some((listener, certs));
        }
        // Installed before "listening" is logged, like the shutdown signals, and also
        // without TLS: SIGHUP's default action would end the process, and `systemctl
        // reload` (the unit's ExecReload) sends it whatever the settings.
        reload_on_sighup(listeners.tls.as_ref().map(|(_, certs)| Arc::clone(certs)))?;
        let mut cluster_metrics = tcpchat_redis::ClusterMetrics::off();
        // Counting only when someone looks: the endpoint or the summary. Off, every count
        // is one branch (docs/performance.md measures both).
        let metrics = if metrics_listen.is_some() || log_summary.is_some() {
            Metrics::on_with(|registry| {
                if cluster.is_some() {
                    cluster_metrics = tcpchat_redis::ClusterMetrics::register(registry);
                }
                if let Some(history) = &history {
                    history.register(registry);
                }
            })
        } else {
            Metrics::off()
        };
        if let Some(addr) = metrics_listen {
            let listener =
                tcpchat_server::bind(addr).map_err(|e| bind_error(addr, "--metrics-listen", &e))?;
            tokio::spawn(tcpchat_server::metrics::serve(listener, metrics.clone()));
        }
        if let Some(every) = log_summary {
            tokio::spawn(log_summaries(metrics.clone(), every));
        }
        match cluster {
            None => {
                let hub = match &history {
                    Some(history) => MemoryHub::with_history(history.clone()),
                    None => MemoryHub::new(),
                };
                tcpchat_server::run_observed(listeners, config, hub, metrics, shutdown).await?;
                // What was numbered is on disk before the process ends.
                if let Some(history) = &history {
                    history.flushed().await;
                }
            }
            Some(Cluster {
                config: cluster, ..
            }) => {
                let mut config = config;
                if config.extensions.contains(Extension::Accounts) {
                    // The cluster's accounts live in its Redis (docs/cluster.md), offered
                    // once Redis is seen to persist them.
                    let accounts = tcpchat_redis::RedisAccounts::connect(&cluster)
                        .await
                        .map_err(|e| usage(e.to_string()))?;
                    accounts.watch_persistence().await;
                    config.account_store = Some(StoreHandle::new(accounts));
                }
                let hub = RedisHub::start_observed(cluster, cluster_metrics)
                    .await
                    .map_err(|e| usage(e.to_string()))?;
                tcpchat_server::run_observed(listeners, config, hub.clone(), metrics, shutdown)
                    .await?;
                hub.leave().await;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Logs one info line every `every` summing up the load: users, connections, and messages
/// per second since the last line. Skips the line while nothing at all happens, so an idle
/// server's log stays quiet; never one line per message.
async fn log_summaries(metrics: Metrics, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is now
    let mut last = metrics.snapshot();
    let mut last_at = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let (Some(now), Some(before)) = (metrics.snapshot(), last) else {
            return;
        };
        let at = tokio::time::Instant::now();
        let messages = now.deliveries.saturating_sub(before.deliveries);
        let quiet = messages == 0 && now == before && now.connections == 0;
        if !quiet {
            let secs = at.duration_since(last_at).as_secs_f64().max(f64::EPSILON);
            info!(
                users = now.users,
                connections = now.connections,
                messages,
                messages_per_second = format_args!("{:.1}", messages as f64 / secs),
                "summary"
            );
        }
        last = Some(now);
        last_at = at;
    }
}

/// The single-process account store, `<data_dir>/tcpchat.db`. A store that cannot be opened
/// stops the server: starting without it would silently let anyone take registered names.
fn open_accounts(
    data_dir: &std::path::Path,
) -> anyhow::Result<(StoreHandle, tcpchat_accounts::SqliteStore)> {
    let store = tcpchat_accounts::SqliteStore::open(data_dir).map_err(|e| {
        usage(format!(
            "cannot open the account database in {}: {e} (set --data-dir, or --extensions without accounts)",
            data_dir.display()
        ))
    })?;
    info!(path = %store.path().display(), "accounts: database open");
    Ok((StoreHandle::new(store.clone()), store))
}

/// The single-process history, in the same `<data_dir>/tcpchat.db`. Direct streams belong to
/// the accounts of `accounts` (none without it: then only rooms keep history).
fn open_history(
    data_dir: &std::path::Path,
    settings: tcpchat_server::HistorySettings,
    accounts: Option<tcpchat_accounts::SqliteStore>,
) -> anyhow::Result<tcpchat_server::History> {
    let is_registered: tcpchat_server::history::IsRegistered = match accounts {
        Some(store) => Arc::new(move |name: &str| store.is_registered_cached(name)),
        None => Arc::new(|_: &str| false),
    };
    let history =
        tcpchat_server::History::open(data_dir, settings, is_registered).map_err(|e| {
            usage(format!(
                "cannot open the history database in {}: {e} (set --data-dir, or --extensions without history)",
                data_dir.display()
            ))
        })?;
    info!(
        direct_cap = settings.direct_cap,
        room_cap = settings.room_cap,
        retention = %humantime::format_duration(settings.retention),
        "history: database open"
    );
    Ok(history)
}

/// Re-reads the TLS certificate and key on every SIGHUP (what certbot's deploy hook or
/// `systemctl reload` sends). New connections get the new certificate; established ones
/// keep their session. A pair that does not load is logged and the old one stays.
#[cfg(unix)]
fn reload_on_sighup(certs: Option<Arc<Reloadable>>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let Some(certs) = &certs else {
                info!("SIGHUP: nothing to reload (no TLS certificate); settings need a restart");
                continue;
            };
            let (cert, key) = (certs.cert_path().display(), certs.key_path().display());
            // Reading files blocks: off the runtime's workers, which serve the connections.
            let reloading = Arc::clone(certs);
            match tokio::task::spawn_blocking(move || reloading.reload()).await {
                Ok(Ok(())) => info!(%cert, %key, "SIGHUP: TLS certificate and key reloaded"),
                Ok(Err(e)) => warn!(
                    error = %e,
                    "SIGHUP: TLS reload failed; the certificate in force stays"
                ),
                Err(e) => warn!(
                    error = %e,
                    "SIGHUP: TLS reload did not finish; the certificate in force stays"
                ),
            }
        }
    });
    Ok(())
}

#[cfg(not(unix))]
fn reload_on_sighup(_certs: Option<Arc<Reloadable>>) -> anyhow::Result<()> {
    Ok(())
}

fn bind_error(addr: SocketAddr, flag: &str, e: &std::io::Error) -> anyhow::Error {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            let mut next = addr;
            next.set_port(addr.port().wrapping_add(1));
            format!(" (another server running? try {flag} {next})")
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

    fn resolve(argv: &[&str]) -> anyhow::Result<Resolved> {
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

    /// The limits `everything_set(_, n)` sets.
    fn limits_from(n: u32) -> Limits {
        let rate = |b: u32, r: u32| Rate::new(b, r).expect("non-zero");
        Limits {
            max_per_address: NonZeroU32::new(n + 4),
            connect_rate: Some(rate(n + 5, n + 6)),
            command_rate: Some(CommandRate {
                rate: rate(n + 7, n + 8),
                flood_timeout: Duration::from_secs(u64::from(n + 9)),
            }),
            max_prelogin: NonZeroUsize::new(n as usize),
            exempt: parse_networks(&format!("10.0.{n}.0/24,2001:db8::{n}")).expect("networks"),
            ..Limits::default()
        }
    }

    /// The accounts settings `everything_set(_, n)` sets.
    fn accounts_from(n: u32) -> AccountSettings {
        let rate = |b: u32, s: u32| {
            LoginRate::new(b, Duration::from_secs(u64::from(s))).expect("non-zero")
        };
        AccountSettings {
            allow_plain_passwords: true,
            per_address: rate(n + 10, n + 11),
            per_name: rate(n + 12, n + 13),
            hash_queue: n as usize + 14,
            hash_threads: NonZeroUsize::new(n as usize + 15).expect("non-zero"),
        }
    }

    #[test]
    fn limits_off_and_one_by_one() {
        let s = resolve(&["--limits", "off"]).expect("off");
        assert_eq!(s.config.limits, Limits::off());
        let s = resolve(&["--limits", "off", "--max-per-address", "5"]).expect("one on");
        assert_eq!(
            s.config.limits,
            Limits {
                max_per_address: NonZeroU32::new(5),
                ..Limits::off()
            }
        );
        let s = resolve(&["--command-rate", "off", "--connect-rate", "off"]).expect("two off");
        assert_eq!(s.config.limits.command_rate, None);
        assert_eq!(s.config.limits.connect_rate, None);
        assert_eq!(
            s.config.limits.max_per_address,
            Limits::default().max_per_address
        );
        let s = resolve(&["--limits", "off", "--command-burst", "3"]).expect("burst alone");
        let default_rate = Limits::default().command_rate.expect("on");
        assert_eq!(
            s.config.limits.command_rate,
            Some(CommandRate {
                rate: Rate {
                    burst: NonZeroU32::new(3).expect("3"),
                    ..default_rate.rate
                },
                ..default_rate
            })
        );
        let s = resolve(&["--exempt", "127.0.0.1, 10.0.0.0/8"]).expect("exempt");
        assert_eq!(
            s.config.limits.exempt,
            parse_networks("127.0.0.1/32,10.0.0.0/8").expect("networks")
        );
        for (bad, what) in [
            (vec!["--max-per-address", "0"], "at least 1"),
            (vec!["--connect-rate", "lots"], "invalid count"),
            (vec!["--exempt", "10.0.0.300/8"], "not a network"),
            (vec!["--limits", "maybe"], "on or off"),
            (vec!["--flood-timeout", "0s"], "flood-timeout"),
            (
                vec!["--max-clients", "10", "--max-prelogin", "11"],
                "max-prelogin",
            ),
        ] {
            let err = resolve(&bad).expect_err("refused").to_string();
            assert!(err.contains(what), "{bad:?}: {err}");
        }
    }

    /// Every setting but the cluster ones, as flags and as file lines, with values derived
    /// from `n` (so two calls differ in every one), and the `Config` they mean.
    fn everything_set(listen: &str, n: u32) -> (Vec<String>, String, Option<SocketAddr>, Config) {
        let values = [
            ("listen", listen.to_owned()),
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
            (
                "extensions",
                Extension::ALL[n as usize % 3].name().to_owned(),
            ),
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
                ["current", "old"][n as usize % 2].to_owned(),
            ),
            ("max_rooms_per_user", (n + 12).to_string()),
            ("max_room_members", (n + 13).to_string()),
            ("max_topic", (n + 14).to_string()),
            ("history_direct_cap", (n + 16).to_string()),
            ("history_room_cap", (n + 17).to_string()),
            ("history_retention", format!("{}h", n + 18)),
            ("history_queue", (n + 19).to_string()),
        ];
        let flags = values
            .iter()
            .flat_map(|(key, v)| [format!("--{}", key.replace('_', "-")), v.clone()])
            .collect();
        let file = values
            .iter()
            .map(|(key, v)| match v.parse::<u64>() {
                Ok(_) => format!("{key} = {v}\n"),
                Err(_) => format!("{key} = {v:?}\n"),
            })
            .collect();
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
            extensions: [Extension::ALL[n as usize % 3]].into_iter().collect(),
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
        (flags, file, Some(listen.parse().expect("addr")), config)
    }

    #[test]
    fn each_source_sets_every_setting_and_flags_win_over_the_file() {
        let (flags, _, flag_listen, flag_config) = everything_set("127.0.0.2:6001", 7);
        let (_, file_text, file_listen, file_config) = everything_set("127.0.0.3:6002", 8);
        let f = file(&file_text);
        let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();

        let s = resolve(&flag_refs).expect("flags alone");
        assert_eq!((s.listen, &s.config), (flag_listen, &flag_config), "flags");
        let s = resolve(&["--config", &f.arg()]).expect("file alone");
        assert_eq!((s.listen, &s.config), (file_listen, &file_config), "file");
        let mut both = vec!["--config", f.0.to_str().expect("utf-8 temp path")];
        both.extend_from_slice(&flag_refs);
        let s = resolve(&both).expect("flags and file");
        assert_eq!(
            (s.listen, &s.config),
            (flag_listen, &flag_config),
            "flags win"
        );
    }

    /// `--help` shows each default, and those shown values, given back as flags, are exactly
    /// [`Config::default`]: the help cannot drift from the defaults in force.
    #[test]
    fn help_shows_the_defaults_in_force() {
        use clap::CommandFactory;
        let mut cmd = T::command();
        cmd.build();
        let mut argv = Vec::new();
        let mut described = Vec::new();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            // log_summary is hidden (no help): a test setting, shown nowhere.
            if matches!(id, "config" | "help" | "log_summary") {
                continue;
            }
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            let shown = help
                .rsplit_once("[default: ")
                .and_then(|(_, rest)| rest.strip_suffix(']'))
                .unwrap_or_else(|| panic!("--help of {id} shows no default: {help:?}"))
                .to_owned();
            if matches!(
                id,
                "cluster"
                    | "node_id"
                    | "tls_listen"
                    | "tls_cert"
                    | "tls_key"
                    | "cluster_lease"
                    | "cluster_renew"
                    | "cluster_settle"
                    | "cluster_call_timeout"
                    | "cluster_ca"
                    | "cluster_password_file"
                    | "metrics_listen"
                    | "data_dir"
            ) {
                described.push(shown);
                continue;
            }
            argv.push(format!(
                "--{}",
                arg.get_long().expect("every setting is a long flag")
            ));
            argv.push(shown);
        }
        assert_eq!(
            argv.len(),
            2 * 41,
            "every setting shows its default: {argv:?}"
        );
        assert_eq!(
            described,
            [
                "off; 0.0.0.0:5379 when --tls-cert is given",
                "none",
                "none",
                DATA_DIR_SHOWN,
                "off, everything in this process",
                "a random one, shown in the log",
                "5s",
                "1s",
                "3s",
                "2s",
                "the system's trusted roots",
                "none; the URL's, if it has one",
                "off",
            ]
        );
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        let s = resolve(&refs).expect("the shown defaults are valid");
        assert_eq!(s.config, Config::default(), "shown: {argv:?}");
        assert_eq!(s.listen, Some(DEFAULT_LISTEN));
    }

    #[test]
    fn durations_and_off() {
        let s = resolve(&[
            "--idle-timeout",
            "0s",
            "--keepalive",
            "OFF",
            "--shutdown-grace",
            "off",
        ])
        .expect("off values");
        assert_eq!(s.config.idle_timeout, None);
        assert_eq!(s.config.keepalive, None);
        assert_eq!(s.config.shutdown_grace, Duration::ZERO);
        let s = resolve(&["--idle-timeout", "1m 30s", "--handshake-timeout", "500ms"])
            .expect("compound durations");
        assert_eq!(s.config.idle_timeout, Some(Duration::from_secs(90)));
        assert_eq!(s.config.handshake_timeout, Duration::from_millis(500));
    }

    #[test]
    fn defaults() {
        let s = resolve(&[]).expect("defaults are valid");
        assert_eq!(s.listen, Some(DEFAULT_LISTEN));
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
        assert_eq!(s.listen, Some("[::1]:6000".parse().expect("addr")));
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
        assert_eq!(s.listen, Some("127.0.0.1:7000".parse().expect("addr")));
        assert_eq!(s.config.max_clients, 9, "flag wins over file");
        let ka = s.config.keepalive.expect("keepalive on");
        assert_eq!((ka.idle, ka.probes), (Duration::from_secs(20), 2));
    }

    #[test]
    fn web_settings() {
        assert_eq!(resolve(&[]).expect("valid").web, None, "off by default");
        let s = resolve(&["--web-listen", "127.0.0.1:8080"]).expect("valid");
        assert_eq!(
            s.web,
            Some(Web {
                listen: "127.0.0.1:8080".parse().expect("addr"),
                settings: tcpchat_web::Settings::default(),
            }),
            "same origin and no trusted proxy by default"
        );
        let f = file("web_listen = \"127.0.0.1:8081\"\nweb_origins = \"*\"\ntrusted_proxies = \"10.0.0.0/8\"\n");
        let s = resolve(&[
            "--config",
            &f.arg(),
            "--web-origins",
            "https://chat.example",
        ])
        .expect("valid");
        let web = s.web.expect("web from the file");
        assert_eq!(web.listen, "127.0.0.1:8081".parse().expect("addr"));
        assert_eq!(
            web.settings.origins,
            tcpchat_web::Origins::parse("https://chat.example").expect("origins"),
            "flag wins over file"
        );
        assert_eq!(
            web.settings.trusted_proxies,
            parse_networks("10.0.0.0/8").expect("networks")
        );
        let s = resolve(&["--config", &f.arg(), "--web-listen", "off"]).expect("valid");
        assert_eq!(s.web, None, "a flag turns the file's listener off");
        for (bad, what) in [
            (vec!["--web-origins", "chat.example"], "scheme://host"),
            (vec!["--trusted-proxies", "10.0.0.300"], "not a network"),
            (
                vec!["--web-listen", "localhost:8080"],
                "invalid listen address",
            ),
        ] {
            let err = resolve(&bad).expect_err("refused").to_string();
            assert!(err.contains(what), "{bad:?}: {err}");
        }
    }

    #[test]
    fn tls_settings() {
        assert_eq!(resolve(&[]).expect("valid").tls, None, "off by default");
        let s = resolve(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).expect("valid");
        let want = Tls {
            listen: DEFAULT_TLS_LISTEN,
            cert: "c.pem".into(),
            key: "k.pem".into(),
        };
        assert_eq!(
            s.tls.as_ref(),
            Some(&want),
            "the default TLS port with a cert"
        );
        assert_eq!(s.listen, Some(DEFAULT_LISTEN), "plain stays on beside TLS");
        let f = file("listen = \"off\"\ntls_listen = \"127.0.0.1:7001\"\ntls_cert = \"file-c.pem\"\ntls_key = \"file-k.pem\"\n");
        let s = resolve(&["--config", &f.arg(), "--tls-cert", "flag-c.pem"]).expect("valid");
        assert_eq!(s.listen, None, "TLS only");
        let tls = s.tls.expect("TLS from the file");
        assert_eq!(tls.listen, "127.0.0.1:7001".parse().expect("addr"));
        assert_eq!(tls.cert, PathBuf::from("flag-c.pem"), "flag wins over file");
        assert_eq!(tls.key, PathBuf::from("file-k.pem"));
    }

    #[test]
    fn cluster_settings() {
        assert_eq!(resolve(&[]).expect("valid").cluster, None, "off by default");
        let s =
            resolve(&["--cluster", "redis://127.0.0.1:6400/1", "--node-id", "n1"]).expect("valid");
        let c = s.cluster.expect("cluster mode");
        assert_eq!(c.config.url, "redis://127.0.0.1:6400/1");
        assert_eq!(c.config.node_id.as_str(), "n1");
        let f = file("cluster = \"redis://10.1.2.3:6379\"\nnode_id = \"from-file\"\n");
        let s = resolve(&["--config", &f.arg(), "--node-id", "flag"]).expect("valid");
        let c = s.cluster.expect("cluster mode from the file");
        assert_eq!(c.config.url, "redis://10.1.2.3:6379");
        assert_eq!(c.config.node_id.as_str(), "flag", "flag wins over file");
        let s = resolve(&["--cluster", "redis://127.0.0.1:6379"]).expect("valid");
        assert!(
            s.cluster
                .expect("cluster")
                .config
                .node_id
                .as_str()
                .starts_with("node-"),
            "a random id when none is given"
        );
    }

    /// The cluster's timings from flags and the file, checked against each other; TLS and
    /// password settings read; none of them outside cluster mode.
    #[test]
    fn cluster_timings_and_credentials() {
        let s = resolve(&["--cluster", "redis://127.0.0.1:6379"]).expect("defaults");
        let c = s.cluster.expect("cluster").config;
        assert_eq!(
            (c.node_lease, c.renew_interval, c.settle, c.call_timeout),
            (
                tcpchat_redis::NODE_LEASE,
                tcpchat_redis::RENEW_INTERVAL,
                tcpchat_redis::SETTLE,
                tcpchat_redis::CALL_TIMEOUT
            )
        );
        let f = file("cluster = \"redis://127.0.0.1:6379\"\ncluster_lease = \"30s\"\ncluster_renew = \"5s\"\n");
        let s = resolve(&["--config", &f.arg(), "--cluster-settle", "10s"]).expect("valid");
        let c = s.cluster.expect("cluster").config;
        assert_eq!(c.node_lease, Duration::from_secs(30), "from the file");
        assert_eq!(c.renew_interval, Duration::from_secs(5), "from the file");
        assert_eq!(c.settle, Duration::from_secs(10), "from the flag");

        let secret = file("s3cret\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&secret.0, std::fs::Permissions::from_mode(0o600))
                .expect("chmod");
        }
        let s = resolve(&[
            "--cluster",
            "redis://app:in-url@127.0.0.1:6379",
            "--cluster-password-file",
            &secret.arg(),
        ])
        .expect("valid");
        let c = s.cluster.expect("cluster");
        assert_eq!(
            c.config.password,
            Some(tcpchat_redis::Password::new("s3cret"))
        );
        assert_eq!(c.shown, "redis://app@127.0.0.1:6379/0", "no password shown");
        assert!(!format!("{c:?}").contains("s3cret") && !format!("{c:?}").contains("in-url"));

        let redis = ["--cluster", "redis://127.0.0.1:6379"];
        let with = |extra: &[&str]| {
            let mut v = redis.to_vec();
            v.extend_from_slice(extra);
            resolve(&v)
        };
        for (extra, needle) in [
            (
                vec!["--cluster-renew", "3s"],
                "cluster-renew 3s must be at most a third of cluster-lease 5s",
            ),
            (
                vec!["--cluster-call-timeout", "4s"],
                "must be shorter than cluster-lease",
            ),
            (
                vec!["--cluster-settle", "1s"],
                "cluster-settle 1s must be at least cluster-renew 1s plus cluster-call-timeout 2s",
            ),
            (vec!["--cluster-lease", "0s"], "must be longer than zero"),
            (
                vec!["--cluster-ca", "/nonexistent/ca.pem"],
                "cannot read cluster-ca",
            ),
            (
                vec!["--cluster-password-file", "/nonexistent/pw"],
                "cannot read cluster-password-file",
            ),
        ] {
            let err = with(&extra).expect_err("refused");
            assert!(err.is::<UsageError>(), "{extra:?}: {err:#}");
            let msg = format!("{err:#}");
            assert!(msg.contains(needle), "{extra:?}: {msg:?} lacks {needle:?}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&secret.0, std::fs::Permissions::from_mode(0o644))
                .expect("chmod");
            let err = with(&["--cluster-password-file", &secret.arg()]).expect_err("refused");
            assert!(
                format!("{err:#}").contains("readable by every user"),
                "{err:#}"
            );
        }
        for flag in [
            "--cluster-lease",
            "--cluster-renew",
            "--cluster-settle",
            "--cluster-call-timeout",
        ] {
            let err = resolve(&[flag, "10s"]).expect_err("outside cluster mode");
            assert!(
                format!("{err:#}").contains("only used in cluster mode"),
                "{flag}: {err:#}"
            );
        }
    }

    /// The commented config file the Debian package installs as /etc/tcpchat/tcpchat.toml
    /// names every setting once, at its default: uncommented, it changes nothing.
    #[test]
    fn the_packaged_config_file_lists_every_setting_at_its_default() {
        use clap::CommandFactory;
        let text = include_str!("../../../packaging/tcpchat.toml");
        let entries: Vec<(&str, &str)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# ")?.split_once(" = "))
            .filter(|(key, _)| key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            .collect();
        let mut keys: Vec<&str> = entries.iter().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        let mut settings: Vec<String> = T::command()
            .get_arguments()
            .map(|a| a.get_id().to_string())
            .filter(|id| !matches!(id.as_str(), "config" | "help" | "log_summary"))
            .collect();
        settings.sort_unstable();
        assert_eq!(
            keys, settings,
            "each setting once in packaging/tcpchat.toml"
        );

        // Paths name files that need not exist here; tls_listen needs a certificate; the
        // data directory and the hashing threads show the service's values, not this
        // machine's defaults.
        let needs_files = [
            "tls_listen",
            "tls_cert",
            "tls_key",
            "cluster_ca",
            "cluster_password_file",
            "data_dir",
            "hash_threads",
        ];
        let uncommented: String = entries
            .iter()
            .filter(|(k, _)| !needs_files.contains(k))
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect();
        let f = file(&uncommented);
        let s = resolve(&["--config", &f.arg()]).expect("the uncommented file is valid");
        assert_eq!(s.config, Config::default(), "every value is the default");
        assert_eq!(s.listen, Some(DEFAULT_LISTEN));
        let c = s.cluster.expect("the example cluster").config;
        assert_eq!(
            (c.node_lease, c.renew_interval, c.settle, c.call_timeout),
            (
                tcpchat_redis::NODE_LEASE,
                tcpchat_redis::RENEW_INTERVAL,
                tcpchat_redis::SETTLE,
                tcpchat_redis::CALL_TIMEOUT
            )
        );
    }

    #[test]
    fn metrics_and_summary_settings() {
        let s = resolve(&[]).expect("defaults");
        assert_eq!(s.metrics_listen, None, "metrics off by default");
        assert_eq!(
            s.log_summary,
            Some(Duration::from_secs(60)),
            "a summary a minute"
        );
        let s = resolve(&["--metrics-listen", "127.0.0.1:9378", "--log-summary", "off"])
            .expect("valid");
        assert_eq!(
            s.metrics_listen,
            Some("127.0.0.1:9378".parse().expect("addr"))
        );
        assert_eq!(s.log_summary, None);
        let err = resolve(&["--metrics-listen", "localhost:9"]).expect_err("no names");
        assert!(
            format!("{err:#}").contains("invalid listen address"),
            "{err:#}"
        );
    }

    #[test]
    fn invalid_settings_are_usage_errors() {
        let unknown_key = file("max_client = 3\n");
        let bad_toml = file("max_clients = \n");
        let bad_value = file("keepalive_interval = \"soon\"\n");
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
            (
                vec!["--keepalive".into(), "1500ms".into()],
                "invalid keepalive 1.5s: must be whole seconds",
            ),
            (
                vec!["--keepalive-probes".into(), "200".into()],
                "keepalive-probes",
            ),
            (
                vec!["--config".into(), bad_value.arg()],
                "invalid duration \"soon\"",
            ),
            (vec!["--listen".into(), "localhost".into()], "listen"),
            (vec!["--listen".into(), "off".into()], "nothing to serve"),
            (
                vec!["--tls-cert".into(), "c.pem".into()],
                "given without its key",
            ),
            (
                vec!["--tls-key".into(), "k.pem".into()],
                "given without its certificate",
            ),
            (
                vec!["--tls-listen".into(), "0.0.0.0:5379".into()],
                "tls-listen needs a certificate",
            ),
            (
                vec![
                    "--tls-listen".into(),
                    "off".into(),
                    "--tls-cert".into(),
                    "c.pem".into(),
                ],
                "tls-listen is off",
            ),
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

    #[test]
    fn extensions_setting() {
        let s = resolve(&[]).expect("defaults resolve");
        assert_eq!(s.config.extensions, ExtensionSet::all());
        let s = resolve(&["--extensions", "none"]).expect("none resolves");
        assert_eq!(s.config.extensions, ExtensionSet::NONE);
        let s = resolve(&["--extensions", "presence, keepalive"]).expect("a list resolves");
        assert_eq!(
            s.config.extensions,
            [Extension::Presence, Extension::Keepalive]
                .into_iter()
                .collect()
        );
        let err = resolve(&["--extensions", "keepalive,resume"])
            .expect_err("an unknown extension is refused")
            .to_string();
        assert!(
            err.contains("\"resume\"") && err.contains("keepalive,presence,accounts,rooms,history"),
            "{err}"
        );
    }
}
