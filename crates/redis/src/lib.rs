//! Cluster mode for the tcpchat server: several `tcpchat serve` nodes that behave as one,
//! coordinated through one Redis.
//!
//! [`RedisHub`] implements the server's [`tcpchat_server::Hub`] (presence and routing), so
//! connection handling is exactly the single-process code; only where a name lives and how a
//! line reaches it change. In short (the full design, every fault and the cost per message are
//! in `docs/cluster.md`):
//!
//! - a name is claimed atomically in Redis and belongs to its node while the node's lease is
//!   renewed; a dead node's names are free once its lease expires;
//! - `LIST` reads every live node's names from Redis;
//! - `SEND` to a user on this node never touches Redis; to another node it is pipelined:
//!   cached routes, one `PUBLISH` per destination node per round, and `SEND-OK` only when the
//!   recipient's node answers that it queued the message;
//! - when Redis is unreachable, users on one node keep chatting and new logins get `BUSY`;
//!   when it returns, even empty, each node re-registers its users by itself.
//!
//! This crate is not a general Redis layer. The cluster state it keeps in Redis is rebuilt
//! from the nodes' live connections; the one exception is the accounts ([`RedisAccounts`]),
//! which is why accounts are offered only when Redis persists its data.

mod accounts;
mod hub;
pub mod keys;
mod metrics;
mod rooms;
mod scripts;
mod store;

use std::fmt;
use std::time::Duration;

pub use accounts::{Persistence, RedisAccounts};
pub use hub::{RedisHub, RedisLease};
pub use metrics::ClusterMetrics;

/// Longest node id, in bytes.
pub const MAX_NODE_ID_BYTES: usize = 64;

/// A node's name in the cluster: 1 to [`MAX_NODE_ID_BYTES`] ASCII letters, digits, `.`, `_`
/// or `-`. It appears in Redis keys and channel names, so it is restricted to characters that
/// need no quoting anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeId(String);

/// Why a node id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid node id {0:?}: use 1 to {MAX_NODE_ID_BYTES} letters, digits, '.', '_' or '-'")]
pub struct InvalidNodeId(pub String);

impl NodeId {
    /// Validates a node id.
    ///
    /// # Errors
    /// [`InvalidNodeId`] if it is empty, too long or has another character.
    pub fn parse(s: &str) -> Result<Self, InvalidNodeId> {
        let ok = !s.is_empty()
            && s.len() <= MAX_NODE_ID_BYTES
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidNodeId(s.to_owned()))
        }
    }

    /// A fresh random id (`node-` and 8 hex digits), for nodes not given one.
    pub fn random() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded from the OS per process; mixing in the pid and the time
        // keeps two nodes started in the same instant apart.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        Self(format!("node-{:08x}", h.finish() as u32))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The Redis address is not a `redis://` or `rediss://` URL the client understands.
    /// `url` is already redacted: it never holds a password.
    #[error("invalid cluster address {url:?}: {reason} (write redis://HOST:PORT, redis://HOST:PORT/DB or rediss://HOST:PORT for TLS; redis+cluster://HOST:PORT,HOST:PORT,... for a Redis Cluster)")]
    InvalidUrl { url: String, reason: String },
    /// Two timings break a rule they must keep between them; the message says the rule.
    #[error("invalid cluster timings: {0}")]
    Timing(String),
    /// TLS settings that cannot work (a CA for a plain URL, a CA file that is no PEM).
    #[error("invalid cluster TLS: {0}")]
    Tls(String),
}

/// How a node takes part in the cluster. [`ClusterConfig::new`] gives the documented
/// defaults; the timings are fields so tests can shorten them. `Debug` redacts the URL's
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `redis://[USER:PASSWORD@]HOST:PORT[/DB]`, or `rediss://...` for TLS; for a Redis
    /// Cluster `redis+cluster://[USER:PASSWORD@]HOST:PORT,HOST:PORT,...` (`rediss+cluster://`
    /// for TLS), any of its nodes: the client finds the others.
    pub url: String,
    /// The Redis password (or an ACL user's, with the user name in the URL), when it is not
    /// in the URL; it wins over one that is. Never logged.
    pub password: Option<Password>,
    /// For `rediss://`: the CA certificates (PEM) that sign the Redis server's certificate,
    /// instead of the system's roots.
    pub tls_ca: Option<Vec<u8>>,
    /// This node's id: unique among the nodes sharing the Redis.
    pub node_id: NodeId,
    /// How long a node's lease lasts without renewal: a node that dies loses its names at
    /// most this long after its last renewal.
    pub node_lease: Duration,
    /// How often a live node renews its lease (and notices a Redis that lost its state).
    pub renew_interval: Duration,
    /// After Redis lost its state, how long logins are refused while live nodes re-register.
    /// Must exceed `renew_interval` plus the time a node needs to reconnect.
    pub settle: Duration,
    /// Longest wait for one Redis call before it counts as a failure.
    pub call_timeout: Duration,
    /// Keep history (`docs/cluster.md`, "History") with these caps and retention: room
    /// streams in Redis, numbered by the room's script. `None`: no history.
    pub history: Option<tcpchat_server::HistorySettings>,
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("url", &redact(&self.url))
            .field("node_id", &self.node_id)
            .field("password", &self.password)
            .field("tls_ca", &self.tls_ca.as_ref().map(|pem| pem.len()))
            .field("node_lease", &self.node_lease)
            .field("renew_interval", &self.renew_interval)
            .field("settle", &self.settle)
            .field("call_timeout", &self.call_timeout)
            .field("history", &self.history)
            .finish()
    }
}

/// Default for [`ClusterConfig::node_lease`].
pub const NODE_LEASE: Duration = Duration::from_secs(5);
/// Default for [`ClusterConfig::renew_interval`].
pub const RENEW_INTERVAL: Duration = Duration::from_secs(1);
/// Default for [`ClusterConfig::settle`].
pub const SETTLE: Duration = Duration::from_secs(3);
/// Default for [`ClusterConfig::call_timeout`].
pub const CALL_TIMEOUT: Duration = Duration::from_secs(2);

impl ClusterConfig {
    /// Defaults for the Redis at `url`, with node id `node_id`.
    pub fn new(url: impl Into<String>, node_id: NodeId) -> Self {
        Self {
            url: url.into(),
            password: None,
            tls_ca: None,
            node_id,
            node_lease: NODE_LEASE,
            renew_interval: RENEW_INTERVAL,
            settle: SETTLE,
            call_timeout: CALL_TIMEOUT,
            history: None,
        }
    }
}

impl ClusterConfig {
    /// Checks the rules between the timings, saying the rule that is broken.
    ///
    /// - Each is longer than zero.
    /// - The renewal interval is at most a third of the lease: two renewals in a row may
    ///   fail (a blip) before the node loses its names.
    /// - A renewal that waits its whole call timeout still lands within the lease:
    ///   `renew + call timeout < lease`.
    /// - Settling lasts at least one renewal and its call, so every live node re-registers
    ///   before logins resume: `settle >= renew + call timeout`.
    ///
    /// # Errors
    /// [`ClusterError::Timing`] naming the settings, their values and the rule.
    pub fn validate(&self) -> Result<(), ClusterError> {
        let show = |d: Duration| format!("{d:?}");
        let (lease, renew, settle, call) = (
            self.node_lease,
            self.renew_interval,
            self.settle,
            self.call_timeout,
        );
        for (name, d) in [
            ("cluster-lease", lease),
            ("cluster-renew", renew),
            ("cluster-settle", settle),
            ("cluster-call-timeout", call),
        ] {
            if d.is_zero() {
                return Err(ClusterError::Timing(format!(
                    "{name} {}: must be longer than zero",
                    show(d)
                )));
            }
        }
        if renew.saturating_mul(3) > lease {
            return Err(ClusterError::Timing(format!(
                "cluster-renew {} must be at most a third of cluster-lease {} (so two failed renewals in a row do not lose the node's names): lower the renewal or lengthen the lease",
                show(renew),
                show(lease)
            )));
        }
        if renew + call >= lease {
            return Err(ClusterError::Timing(format!(
                "cluster-renew {} plus cluster-call-timeout {} must be shorter than cluster-lease {} (a slow renewal must land before the lease lapses)",
                show(renew),
                show(call),
                show(lease)
            )));
        }
        if settle < renew + call {
            return Err(ClusterError::Timing(format!(
                "cluster-settle {} must be at least cluster-renew {} plus cluster-call-timeout {} (every live node re-registers before logins resume)",
                show(settle),
                show(renew),
                show(call)
            )));
        }
        Ok(())
    }

    /// The redis client for these settings: the URL, the password from the file if one is
    /// given, TLS with `tls_ca` as the roots for `rediss://` (and `rediss+cluster://`).
    pub(crate) fn client(&self) -> Result<store::Backend, ClusterError> {
        use redis::IntoConnectionInfo;
        let shown = check_url(&self.url)?;
        let invalid = |e: redis::RedisError| ClusterError::InvalidUrl {
            url: shown.clone(),
            reason: e.to_string(),
        };
        let (urls, is_cluster) = match cluster_seeds(&self.url) {
            Some(seeds) => (seeds, true),
            None => (vec![self.url.clone()], false),
        };
        let mut infos = Vec::with_capacity(urls.len());
        for url in &urls {
            let mut info = url.as_str().into_connection_info().map_err(invalid)?;
            if let Some(password) = &self.password {
                let settings = info
                    .redis_settings()
                    .clone()
                    .set_password(password.expose());
                info = info.set_redis_settings(settings);
            }
            infos.push(info);
        }
        let tls = infos
            .iter()
            .any(|i| matches!(i.addr(), redis::ConnectionAddr::TcpTls { .. }));
        let certs = match (&self.tls_ca, tls) {
            (Some(_), false) => {
                return Err(ClusterError::Tls(
                    "a CA is given but the address is not rediss://: write rediss://HOST:PORT, or drop the CA".to_owned(),
                ))
            }
            (Some(pem), true) => {
                if !String::from_utf8_lossy(pem).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(ClusterError::Tls(
                        "the CA file holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned(),
                    ));
                }
                Some(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                })
            }
            (None, _) => None,
        };
        if is_cluster {
            let commands =
                store::ClusterSeeds::client(infos.clone(), certs.clone(), self.call_timeout, None)
                    .map_err(invalid)?;
            return Ok(store::Backend::Cluster(store::ClusterSeeds {
                commands,
                nodes: infos,
                certs,
                timeout: self.call_timeout,
            }));
        }
        let Some(info) = infos.pop() else {
            return Err(ClusterError::InvalidUrl {
                url: shown,
                reason: "no address".to_owned(),
            });
        };
        match certs {
            Some(certs) => redis::Client::build_with_tls(info, certs)
                .map(store::Backend::Single)
                .map_err(|e| ClusterError::Tls(e.to_string())),
            None => redis::Client::open(info)
                .map(store::Backend::Single)
                .map_err(invalid),
        }
    }
}

/// For `redis+cluster://[USERINFO@]H1:P1,H2:P2,...[/]` (or `rediss+cluster://`): one plain
/// `redis://[USERINFO@]H:P` (or `rediss://`) URL per seed node. `None` for any other URL.
fn cluster_seeds(url: &str) -> Option<Vec<String>> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
        ("redis", rest)
    } else {
        ("rediss", url.strip_prefix("rediss+cluster://")?)
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    Some(
        hosts
            .split(',')
            .map(|h| format!("{scheme}://{userinfo}{h}{path}"))
            .collect(),
    )
}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Checks a cluster address without connecting, and returns it without any password, for
/// logs and messages (`redis://HOST:PORT/DB`).
///
/// # Errors
/// [`ClusterError::InvalidUrl`] if it is not a `redis://` or `rediss://` URL; the URL in
/// the error is redacted as well.
pub fn check_url(url: &str) -> Result<String, ClusterError> {
    let invalid = |reason: &str| ClusterError::InvalidUrl {
        url: redact(url),
        reason: reason.to_owned(),
    };
    if let Some(seeds) = cluster_seeds(url) {
        let scheme = if url.starts_with("rediss") {
            "rediss+cluster"
        } else {
            "redis+cluster"
        };
        let mut user = String::new();
        let mut addrs = Vec::with_capacity(seeds.len());
        for seed in &seeds {
            // Each seed as a one-node URL: the same checks, the same redaction.
            let one = check_url(seed).map_err(|_| invalid("each node must be HOST:PORT"))?;
            let (db, rest) = one
                .rsplit_once('/')
                .map(|(rest, db)| (db.to_owned(), rest.to_owned()))
                .unwrap_or_default();
            if db != "0" {
                return Err(invalid("a Redis Cluster has only database 0"));
            }
            let rest = rest.split_once("://").map_or(rest.as_str(), |(_, r)| r);
            let addr = match rest.rsplit_once('@') {
                Some((u, a)) => {
                    user = format!("{u}@");
                    a
                }
                None => rest,
            };
            addrs.push(addr.to_owned());
        }
        return Ok(format!("{scheme}://{user}{}", addrs.join(",")));
    }
    let scheme = if url.starts_with("redis://") {
        "redis"
    } else if url.starts_with("rediss://") {
        "rediss"
    } else {
        return Err(invalid(
            "only redis://, rediss://, redis+cluster:// and rediss+cluster:// addresses are supported",
        ));
    };
    let client = redis::Client::open(url).map_err(|e| invalid(&e.to_string()))?;
    let info = client.get_connection_info();
    let addr = match info.addr() {
        redis::ConnectionAddr::Tcp(host, port)
        | redis::ConnectionAddr::TcpTls { host, port, .. } => {
            if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            }
        }
        other => other.to_string(),
    };
    let user = info
        .redis_settings()
        .username()
        .map_or_else(String::new, |u| format!("{u}@"));
    Ok(format!(
        "{scheme}://{user}{addr}/{}",
        info.redis_settings().db()
    ))
}

/// `url` with any password (the text between `:` and `@` after the scheme) replaced by
/// `***`, for messages about a URL that may not even parse.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids() {
        for ok in ["a", "node-1", "eu.west_2", &"x".repeat(MAX_NODE_ID_BYTES)] {
            assert_eq!(NodeId::parse(ok).expect("valid").as_str(), ok);
        }
        for bad in ["", "a b", "a:b", "é", &"x".repeat(MAX_NODE_ID_BYTES + 1)] {
            assert!(NodeId::parse(bad).is_err(), "{bad:?} must be refused");
        }
        let r = NodeId::random();
        assert!(NodeId::parse(r.as_str()).is_ok(), "{r} is itself valid");
    }

    #[test]
    fn urls() {
        assert_eq!(
            check_url("redis://127.0.0.1:6400/2").expect("valid"),
            "redis://127.0.0.1:6400/2"
        );
        assert_eq!(
            check_url("redis://:secret@db.example:6379").expect("valid"),
            "redis://db.example:6379/0",
            "no password in what is logged"
        );
        assert_eq!(
            check_url("rediss://app:secret@db.example:6380/1").expect("valid"),
            "rediss://app@db.example:6380/1",
            "TLS, the ACL user kept, the password gone"
        );
        assert_eq!(
            check_url("redis+cluster://:secret@10.0.0.1:7000,10.0.0.2:7001").expect("valid"),
            "redis+cluster://10.0.0.1:7000,10.0.0.2:7001",
            "every seed node, no password"
        );
        assert_eq!(
            check_url("rediss+cluster://app:pw@h1:7000").expect("valid"),
            "rediss+cluster://app@h1:7000"
        );
        for bad in [
            "127.0.0.1:6379",
            "http://x",
            "redis://",
            "redis+cluster://h1:7000/2",
            "redis+cluster://h1:7000,,h2:7001",
        ] {
            assert!(check_url(bad).is_err(), "{bad:?} must be refused");
        }
        let err = check_url("http://u:hunter2@x")
            .expect_err("refused")
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(redact("redis://:pw@h:1/2"), "redis://:***@h:1/2");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn timings() {
        let base = ClusterConfig::new("redis://127.0.0.1:6379", NodeId::random());
        base.validate().expect("the defaults keep every rule");
        type Change = fn(&mut ClusterConfig);
        let cases: [(Change, &str); 4] = [
            (
                |c| c.renew_interval = Duration::from_secs(2),
                "at most a third of cluster-lease",
            ),
            (
                |c| c.call_timeout = Duration::from_secs(4),
                "must be shorter than cluster-lease",
            ),
            (
                |c| c.settle = Duration::from_secs(2),
                "cluster-settle 2s must be at least",
            ),
            (
                |c| c.node_lease = Duration::ZERO,
                "cluster-lease 0ns: must be longer than zero",
            ),
        ];
        for (change, rule) in cases {
            let mut c = base.clone();
            change(&mut c);
            let err = c.validate().expect_err(rule).to_string();
            assert!(err.contains(rule), "{err:?} lacks {rule:?}");
        }
    }

    #[test]
    fn passwords_do_not_show() {
        let mut c = ClusterConfig::new("redis://127.0.0.1:6379", NodeId::random());
        c.password = Some(Password::new("hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
        c.url = "redis://:hunter3@127.0.0.1:6379".into();
        assert!(!format!("{c:?}").contains("hunter3"));
        c.url = "redis://127.0.0.1:6379".into();
        c.tls_ca = Some(b"not pem".to_vec());
        assert!(
            matches!(c.client(), Err(ClusterError::Tls(_))),
            "a CA for a plain URL"
        );
        c.url = "rediss://127.0.0.1:6379".into();
        assert!(
            matches!(c.client(), Err(ClusterError::Tls(_))),
            "a CA that is no PEM"
        );
    }
}
