//! What a run is asked to do, in a form that can be handed to a worker process.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::dialect::Dialect;

/// The load to generate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Scenario {
    /// Log every client in as fast as the server allows, then leave.
    Connect,
    /// Clients in pairs, each keeping `window` messages in flight to its partner.
    Throughput { window: u64 },
    /// Clients in pairs, together offering `rate` messages/s on a fixed schedule.
    Latency { rate: f64 },
    /// Every client but one sends to client 0, each keeping `window` messages in flight.
    Fanin { window: u64 },
    /// Log every client in and hold the connections open, sending nothing.
    Idle,
}

impl Scenario {
    /// The scenario's name on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Connect => "connect",
            Scenario::Throughput { .. } => "throughput",
            Scenario::Latency { .. } => "latency",
            Scenario::Fanin { .. } => "fanin",
            Scenario::Idle => "idle",
        }
    }

    /// Whether clients send messages after logging in.
    pub fn sends(&self) -> bool {
        matches!(
            self,
            Scenario::Throughput { .. } | Scenario::Latency { .. } | Scenario::Fanin { .. }
        )
    }

    /// Whom client `index` (of `clients`) sends to, if anyone.
    pub fn partner(&self, index: usize, clients: usize) -> Option<usize> {
        match self {
            Scenario::Throughput { .. } | Scenario::Latency { .. } => {
                let p = index ^ 1;
                (p < clients).then_some(p)
            }
            Scenario::Fanin { .. } => (index != 0).then_some(0),
            Scenario::Connect | Scenario::Idle => None,
        }
    }
}

/// Everything every share of the clients needs to know.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub target: SocketAddr,
    /// More nodes of the same cluster: client `i` connects to `[target, more_targets..][i % n]`,
    /// so partners (`i`, `i ^ 1`) sit on different nodes.
    #[serde(default)]
    pub more_targets: Vec<SocketAddr>,
    pub dialect: Dialect,
    pub scenario: Scenario,
    /// Clients in the whole run.
    pub clients: usize,
    /// Message body size in bytes.
    pub size: usize,
    /// How long the measured phase lasts (message scenarios; hold time for `idle`).
    pub duration: Duration,
    /// How long one client may take to connect and log in.
    pub login_timeout: Duration,
    /// Logins in progress at once, per process.
    pub login_concurrency: usize,
    /// After the measured phase, how long to wait for messages still in flight.
    pub drain_timeout: Duration,
    /// Prefix of every client name in this run, so runs never collide on names.
    pub tag: String,
    /// Spread client source addresses over 127.0.0.0/8 when the target is loopback.
    pub spread_sources: bool,
}

impl Plan {
    /// Where client `index` connects: the targets in turn.
    pub fn target_of(&self, index: usize) -> SocketAddr {
        match index % (1 + self.more_targets.len()) {
            0 => self.target,
            i => self.more_targets[i - 1],
        }
    }

    /// The name of client `index`.
    pub fn name(&self, index: usize) -> String {
        format!("{}{index}", self.tag)
    }

    /// The client index a name belongs to, if it is one of this run's.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        name.strip_prefix(&self.tag)?.parse().ok()
    }
}

/// One process's part of a run: clients `first..first + count`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Share {
    pub plan: Plan,
    pub first: usize,
    pub count: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partners() {
        let t = Scenario::Throughput { window: 1 };
        assert_eq!(t.partner(0, 4), Some(1));
        assert_eq!(t.partner(3, 4), Some(2));
        assert_eq!(t.partner(4, 5), None);
        let f = Scenario::Fanin { window: 1 };
        assert_eq!(f.partner(0, 4), None);
        assert_eq!(f.partner(3, 4), Some(0));
        assert_eq!(Scenario::Idle.partner(1, 4), None);
    }
}
