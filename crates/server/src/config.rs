//! Server settings. Parsing them (flags, environment, file) is the binary's job; this is only
//! the validated result with documented defaults.

use std::time::Duration;

/// Everything the server can be tuned with. [`Config::default`] is what `tcpchat serve` uses
/// when nothing is set; `docs/protocol.md` lists the same values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Connections served at once, logged in or not. One more gets `BUSY` and is closed.
    pub max_clients: usize,
    /// Longest accepted line in bytes, not counting `\n`.
    pub max_line_bytes: usize,
    /// A connection that has not logged in this long after connecting is closed.
    pub handshake_timeout: Duration,
    /// A logged-in connection that sends no valid request this long is closed. `None` (the default):
    /// never, because classic clients have no way to say "still here" while idle; dead peers
    /// are found by TCP keepalive instead.
    pub idle_timeout: Option<Duration>,
    /// TCP keepalive probing, to find peers that vanished without a FIN or RST.
    pub keepalive: Option<Keepalive>,
    /// Bytes a connection may have queued for it and not yet written. A peer that stops
    /// reading reaches this and is dropped, so it never slows anyone else down.
    pub outbox_limit_bytes: usize,
    /// On shutdown, how long connections get to flush what is queued for them.
    pub shutdown_grace: Duration,
}

/// TCP keepalive settings (`SO_KEEPALIVE`, `TCP_KEEPIDLE`, `TCP_KEEPINTVL`, `TCP_KEEPCNT`),
/// and the matching `TCP_USER_TIMEOUT` so a peer that vanishes with data unacknowledged is
/// found in the same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Silence before the first probe.
    pub idle: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is declared dead.
    pub probes: u32,
}

impl Keepalive {
    /// How long a dead peer can go unnoticed: idle + interval × probes.
    pub fn detection_time(&self) -> Duration {
        self.idle + self.interval * self.probes
    }
}

impl Default for Keepalive {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(60),
            interval: Duration::from_secs(10),
            probes: 3,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_clients: 10_000,
            max_line_bytes: tcpchat_proto::DEFAULT_MAX_LINE_BYTES,
            handshake_timeout: Duration::from_secs(30),
            idle_timeout: None,
            keepalive: Some(Keepalive::default()),
            outbox_limit_bytes: 256 * 1024,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}
