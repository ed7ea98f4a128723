//! Test support shared by the server's and the cluster's integration tests: real parts only.
//!
//! - [`Server`]: the server in this process on a loopback port (port 0), stopped on request;
//! - [`Client`]: a raw-line client whose expectations wait under [`PATIENCE`] and report what
//!   did arrive;
//! - [`Process`], [`Redis`], [`Node`], [`Haproxy`]: real programs (`redis-server`, `tcpchat
//!   serve --cluster`, `haproxy`) started on free ports and killed when dropped;
//! - [`RedisCluster`]: a real Redis Cluster (three masters, three replicas), whose masters
//!   a test can kill to watch a replica take over;
//! - [`CutProxy`]: a TCP relay whose link can be cut and healed, for a network partition
//!   between one node and Redis;
//! - [`TlsRelay`], [`TestCa`]: a TLS-terminating relay in front of a plain server, and
//!   certificates made for a test (any names, any validity), for the clients' TLS tests.
//!
//! It is a crate of its own so the two test suites share one copy of these helpers instead of
//! two drifting ones. It is a dev-dependency only: nothing here ships in the binary, and its
//! panics are test failures, which is why it may `expect` on what a test set up itself.
//!
//! Nothing here measures time: every wait polls under [`PATIENCE`], a bound on a hang.

mod cluster;
mod line;
mod process;
mod proxy;
mod redis;
mod redis_cluster;
mod server;
mod tls;

use std::time::Duration;

pub use cluster::{login_at, Haproxy, Node};
pub use line::{wait_presence, Client};
pub use process::{free_port, require, tcpchat_bin, Process};
pub use proxy::CutProxy;
pub use redis::Redis;
pub use redis_cluster::{Master, RedisCluster};
pub use server::Server;
pub use tls::{server_config, Leaf, TestCa, TlsRelay};

/// How long any single expectation may wait. Generous: it bounds a hang on a slow shared
/// machine; it does not measure anything.
pub const PATIENCE: Duration = Duration::from_secs(30);
