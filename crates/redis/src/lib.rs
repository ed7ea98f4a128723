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
//! - `SEND` to a user on this node never touches Redis; to another node it is one script call
//!   that publishes on the owner node's channel, and `SEND-OK` means that node's subscriber
//!   received it;
//! - when Redis is unreachable, users on one node keep chatting and new logins get `BUSY`;
//!   when it returns, even empty, each node re-registers its users by itself.
//!
//! This crate is not a general Redis layer and keeps no state in Redis that outlives the
//! nodes: everything there is rebuilt from the nodes' live connections.

mod hub;
mod rooms;
mod scripts;
mod store;

use std::fmt;
use std::time::Duration;

pub use hub::{RedisHub, RedisLease};

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
    /// The Redis address is not a `redis://` URL the client understands.
    #[error("invalid cluster address {url:?}: {reason} (write redis://HOST:PORT or redis://HOST:PORT/DB)")]
    InvalidUrl { url: String, reason: String },
}

/// How a node takes part in the cluster. [`ClusterConfig::new`] gives the documented
/// defaults; the timings are fields so tests can shorten them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
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
            node_id,
            node_lease: NODE_LEASE,
            renew_interval: RENEW_INTERVAL,
            settle: SETTLE,
            call_timeout: CALL_TIMEOUT,
        }
    }
}

/// Checks a cluster address without connecting, and returns it without any password, for
/// logs and messages (`redis://HOST:PORT/DB`).
///
/// # Errors
/// [`ClusterError::InvalidUrl`] if it is not a `redis://` URL.
pub fn check_url(url: &str) -> Result<String, ClusterError> {
    let invalid = |reason: &str| ClusterError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    if !url.starts_with("redis://") {
        return Err(invalid("only redis:// addresses are supported"));
    }
    let client = redis::Client::open(url).map_err(|e| invalid(&e.to_string()))?;
    let info = client.get_connection_info();
    Ok(format!(
        "redis://{}/{}",
        info.addr(),
        info.redis_settings().db()
    ))
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
        for bad in ["127.0.0.1:6379", "http://x", "redis://"] {
            assert!(check_url(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
