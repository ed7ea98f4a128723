//! Abuse limits, as pure logic: what to admit, delay, refuse or displace, given the time.
//!
//! Five pieces, each fed `now` by its caller and never reading a clock, spawning a task or
//! touching a socket, so every rule is tested here with a fake clock (the same split as
//! [`crate::session`]; Ergo's `irc/fakelag.go` injects its clock for the same reason):
//!
//! - [`TokenBucket`]: one connection's command rate. A burst, then a steady rate; a line over
//!   the rate is *delayed*, never refused, so a classic client sees nothing new, and a
//!   connection that keeps the bucket empty for the flood timeout is told to go.
//! - [`AddressLimiter`]: connections open at once per source address (IPv6 grouped by /64) and
//!   new connections per address over time, with exempt networks. Over a limit the caller
//!   answers `BUSY` and closes; [`Refused::log`] says whether this refusal is the one a minute
//!   that is worth a log line.
//! - [`PreLoginCap`]: a cap on connections that have not logged in yet. At the cap a new
//!   connection displaces the oldest waiting one, so junk connections from many addresses
//!   cannot keep a real user, who logs in promptly, out.
//! - [`RefusalLog`]: "log this once per key per minute", with bounded memory.
//! - [`LoginThrottle`]: password attempts per address and wrong passwords per name
//!   (accounts); the same token bucket, at rates of one per several seconds.
//!
//! [`Limits`] gathers the settings with their defaults; `docs/security.md` gives the reasoning
//! behind every number, next to what ngircd, InspIRCd and Ergo use.
//!
//! What this module deliberately is not: the wiring. The connection loop sleeps for
//! [`Admit::After`], the listener holds an [`AddressTicket`] for each connection's lifetime and
//! closes what [`PreLoginCap::handle_connect`] displaces; flags and config keys are the binary's.

mod address;
mod command;
mod gcra;
mod log_once;
mod login;
mod prelogin;

use std::net::IpAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

pub use address::{
    parse_networks, AddressKey, AddressLimiter, AddressTicket, NetworkError, RefusalReason,
    Refused, IPV6_PREFIX_BITS,
};
pub use command::{Admit, TokenBucket};
pub use ipnet::IpNet;
pub use log_once::RefusalLog;
pub use login::{
    throttled_seconds, LoginRate, LoginThrottle, DEFAULT_LOGIN_BURST, DEFAULT_LOGIN_EVERY,
    DEFAULT_LOGIN_NAME_BURST, DEFAULT_LOGIN_NAME_EVERY,
};
pub use prelogin::PreLoginCap;

/// Connections open at once from one address (an IPv4 address or an IPv6 /64): a tenth of the
/// default client limit, so one address cannot take the server, yet five times a class of 200
/// behind one campus NAT.
pub const DEFAULT_MAX_PER_ADDRESS: u32 = 1_000;
/// New connections one address may open at once before its steady rate applies: as many as it
/// may hold open, so a class of 200 arriving together and two full `tcpchat check --capacity
/// 200` runs back to back (about 400 connections each) both fit.
pub const DEFAULT_CONNECT_BURST: u32 = 1_000;
/// New connections per second per address once its burst is spent (1,200 a minute).
pub const DEFAULT_CONNECTS_PER_SECOND: u32 = 20;
/// Lines one connection may send at once before its steady rate applies: a pasted screenful,
/// and `check`'s bursts (100 `SEND`s in one write; windows of 128).
pub const DEFAULT_COMMAND_BURST: u32 = 200;
/// Lines per second per connection once its burst is spent: far above a fast typist (a line
/// every few seconds) or a bot that paces itself.
pub const DEFAULT_COMMANDS_PER_SECOND: u32 = 20;
/// A connection whose every line has had to wait for this long is disconnected.
pub const DEFAULT_FLOOD_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections not yet logged in, from all addresses together.
pub const DEFAULT_MAX_PRELOGIN: usize = 1_000;
/// Addresses the [`AddressLimiter`] keeps state for (about 100 bytes each in the table, so a few MiB at
/// most). Above the default client limit, so every open connection's address fits.
pub const DEFAULT_MAX_TRACKED_ADDRESSES: usize = 65_536;
/// How often [`RefusalLog`] lets one key's refusals through to the log.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// A token bucket's shape: `burst` events at once, then `per_second` events a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Events allowed back to back when the bucket is full.
    pub burst: NonZeroU32,
    /// Events a second once the burst is spent; also the refill speed.
    pub per_second: NonZeroU32,
}

impl Rate {
    /// A rate of `burst` at once, then `per_second` a second. `None` if either is zero (a rate
    /// that admits nothing is not a rate; turn the limit off instead).
    pub const fn new(burst: u32, per_second: u32) -> Option<Self> {
        match (NonZeroU32::new(burst), NonZeroU32::new(per_second)) {
            (Some(burst), Some(per_second)) => Some(Self { burst, per_second }),
            _ => None,
        }
    }

    /// The time one token takes to come back, rounded *up* to the nanosecond so the steady
    /// rate never exceeds `per_second`.
    pub fn interval(&self) -> Duration {
        const NANOS_PER_SECOND: u64 = 1_000_000_000;
        Duration::from_nanos(NANOS_PER_SECOND.div_ceil(u64::from(self.per_second.get())))
    }
}

/// The per-connection command rate: a [`Rate`] and how long a connection may keep its bucket
/// empty before it is disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandRate {
    pub rate: Rate,
    /// A connection whose lines have all had to wait for this long (or would wait longer than
    /// this) is disconnected: it is flooding, not bursting.
    pub flood_timeout: Duration,
}

/// Every abuse limit, each `None` (or empty) when off. [`Limits::default`] is what a server
/// started with no settings uses; [`Limits::off`] is for load tests and the `bench/compare`
/// runs, where the peer servers run with their limits off too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once per address (IPv4 address or IPv6 /64).
    pub max_per_address: Option<NonZeroU32>,
    /// New connections per address over time.
    pub connect_rate: Option<Rate>,
    /// Lines per connection over time.
    pub command_rate: Option<CommandRate>,
    /// Connections not logged in yet, all addresses together.
    pub max_prelogin: Option<NonZeroUsize>,
    /// Trusted networks (gateways, monitoring, load tests) that none of these limits apply
    /// to: no per-address counts, no command rate, not counted against the pre-login cap. The
    /// limits that keep the server itself safe (client limit, line length, outgoing queue,
    /// timeouts) still do. See [`Limits::is_exempt`].
    pub exempt: Vec<IpNet>,
    /// Addresses tracked at most; see [`AddressLimiter`] for what happens at the cap.
    pub max_tracked_addresses: NonZeroUsize,
}

impl Limits {
    /// Whether a connection from `ip` is exempt from every limit here. An IPv4-mapped IPv6
    /// address is matched as the IPv4 address it carries.
    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        address::is_exempt(&self.exempt, ip)
    }

    /// Every limit off: no per-address limits, no command rate, no pre-login cap.
    pub fn off() -> Self {
        Self {
            max_per_address: None,
            connect_rate: None,
            command_rate: None,
            max_prelogin: None,
            exempt: Vec::new(),
            max_tracked_addresses: default_max_tracked(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_per_address: NonZeroU32::new(DEFAULT_MAX_PER_ADDRESS),
            connect_rate: Rate::new(DEFAULT_CONNECT_BURST, DEFAULT_CONNECTS_PER_SECOND),
            command_rate: Rate::new(DEFAULT_COMMAND_BURST, DEFAULT_COMMANDS_PER_SECOND).map(
                |rate| CommandRate {
                    rate,
                    flood_timeout: DEFAULT_FLOOD_TIMEOUT,
                },
            ),
            max_prelogin: NonZeroUsize::new(DEFAULT_MAX_PRELOGIN),
            exempt: Vec::new(),
            max_tracked_addresses: default_max_tracked(),
        }
    }
}

fn default_max_tracked() -> NonZeroUsize {
    // The constant is not zero; `MIN` is only the unreachable fallback.
    NonZeroUsize::new(DEFAULT_MAX_TRACKED_ADDRESSES).unwrap_or(NonZeroUsize::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_default_limit_is_on() {
        let limits = Limits::default();
        assert!(limits.max_per_address.is_some());
        assert!(limits.connect_rate.is_some());
        assert!(limits.command_rate.is_some());
        assert!(limits.max_prelogin.is_some());
        assert!(limits.exempt.is_empty());
        assert_eq!(
            limits.max_tracked_addresses.get(),
            DEFAULT_MAX_TRACKED_ADDRESSES
        );
    }

    #[test]
    fn every_limit_can_be_off() {
        let limits = Limits::off();
        assert_eq!(limits.max_per_address, None);
        assert_eq!(limits.connect_rate, None);
        assert_eq!(limits.command_rate, None);
        assert_eq!(limits.max_prelogin, None);
    }

    #[test]
    fn exemption_matches_networks_and_mapped_addresses() {
        let limits = Limits {
            exempt: parse_networks("127.0.0.0/8,2001:db8::/32").expect("valid"),
            ..Limits::default()
        };
        let cases = [
            ("127.0.0.1", true),
            ("::ffff:127.0.0.1", true),
            ("2001:db8::1", true),
            ("::1", false),
            ("192.0.2.1", false),
        ];
        for (ip, want) in cases {
            let ip: IpAddr = ip.parse().expect("test address");
            assert_eq!(limits.is_exempt(ip), want, "{ip}");
        }
        assert!(!Limits::default().is_exempt("127.0.0.1".parse().expect("test address")));
    }

    #[test]
    fn a_rate_needs_a_burst_and_a_speed() {
        assert_eq!(Rate::new(0, 1), None);
        assert_eq!(Rate::new(1, 0), None);
        assert!(Rate::new(1, 1).is_some());
    }

    #[test]
    fn the_interval_rounds_up_so_the_rate_is_never_exceeded() {
        let cases = [
            (1, Duration::from_secs(1)),
            (20, Duration::from_millis(50)),
            // 1e9 / 3 = 333,333,333.3…: rounded up, three intervals are just over a second.
            (3, Duration::from_nanos(333_333_334)),
            (u32::MAX, Duration::from_nanos(1)),
        ];
        for (per_second, want) in cases {
            let rate = Rate::new(1, per_second).expect("non-zero");
            assert_eq!(rate.interval(), want, "{per_second}/s");
            assert!(rate.interval() * per_second >= Duration::from_secs(1));
        }
    }
}
