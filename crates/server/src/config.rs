//! Server settings. Parsing them (flags, environment, file) is the binary's job; this is the
//! result, its documented defaults, and the rules a usable configuration obeys
//! ([`Config::validate`]). The rules live here, not in the binary, because they are the
//! server's own: [`crate::run`] refuses a configuration that breaks one, whoever built it.

use std::time::Duration;

use tcpchat_proto::ExtensionSet;

use crate::accounts::{AccountSettings, StoreHandle};
use crate::limits::Limits;

/// Longest `max_line_bytes` accepted: a line is buffered whole, so this bounds the memory one
/// connection can make the server hold while it reads.
pub const MAX_LINE_LIMIT_BYTES: usize = 1 << 24;

/// Longest keepalive idle time or probe interval, in seconds: Linux refuses larger values
/// (`MAX_TCP_KEEPIDLE`, `MAX_TCP_KEEPINTVL`).
const MAX_KEEPALIVE_SECS: u64 = 32_767;

/// Most keepalive probes: Linux refuses more (`MAX_TCP_KEEPCNT`).
const MAX_KEEPALIVE_PROBES: u32 = 127;

/// Everything the server can be tuned with. [`Config::default`] is what `tcpchat serve` uses
/// when nothing is set; `docs/protocol.md` lists the same values.
///
/// [`ConfigError`] names each setting as `tcpchat serve` and `docs/protocol.md` do (given in
/// parentheses below), since that is the name an operator changes it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Connections served at once, logged in or not. One more gets `BUSY` and is closed
    /// (`max-clients`).
    pub max_clients: usize,
    /// Longest accepted line in bytes, not counting `\n` (`max-line`).
    pub max_line_bytes: usize,
    /// A connection that has not logged in this long after connecting is closed
    /// (`handshake-timeout`).
    pub handshake_timeout: Duration,
    /// A logged-in connection that sends no valid request this long is closed
    /// (`idle-timeout`). `None` (the default): never, because classic clients have no way to
    /// say "still here" while idle; dead peers are found by TCP keepalive instead.
    pub idle_timeout: Option<Duration>,
    /// TCP keepalive probing, to find peers that vanished without a FIN or RST.
    pub keepalive: Option<Keepalive>,
    /// Bytes a connection may have queued for it and not yet written (`max-outbox`). A peer
    /// that stops reading reaches this and is dropped, so it never slows anyone else down.
    pub outbox_limit_bytes: usize,
    /// On shutdown, how long connections get to flush what is queued for them
    /// (`shutdown-grace`).
    pub shutdown_grace: Duration,
    /// The abuse limits: per-address connections, connect and command rates, the pre-login
    /// cap and exempt networks (`docs/security.md`). On by default; [`Limits::off`] for load
    /// tests.
    pub limits: Limits,
    /// The extensions offered to a connection that asks (`extensions`, `docs/protocol.md`);
    /// empty makes the server classic: `EXT` is then an unknown command.
    pub extensions: ExtensionSet,
    /// A `keepalive` connection silent this long is sent `PING` (`ping-interval`).
    pub ping_interval: Duration,
    /// ... and closed if still silent this long after it (`ping-timeout`).
    pub ping_timeout: Duration,
    /// The accounts settings: plain-text passwords, the throttle, the hashing pool.
    pub accounts: AccountSettings,
    /// Where accounts live. `None` (the default of the library): `accounts` is not offered
    /// and `HELLO-FROM` checks nothing; `tcpchat serve` opens one under `--data-dir`.
    pub account_store: Option<StoreHandle>,
    /// Practice mode (`practice`): plain connections are written the way a real network
    /// may deliver, lines cut at random points and replies coalesced, reproducibly from the
    /// seed. `None` (the default): every write goes out as it is.
    pub practice: Option<Practice>,
    /// Which protocol generation connections speak (`protocol-generation`): both, each
    /// connection answered in its own from its first `WHO` on (the default), or one for all.
    pub generation: GenerationPolicy,
    /// The `rooms` extension's limits (`max-rooms-per-user`, `max-room-members`,
    /// `max-topic`).
    pub rooms: crate::rooms::RoomLimits,
    /// The `history` extension's limits (`history-direct-cap`, `history-room-cap`,
    /// `history-retention`, `history-queue`); used where the hub keeps history.
    pub history: crate::history::HistorySettings,
}

/// Which generation of the classic protocol the server speaks (`docs/protocol.md`,
/// "Protocol generations").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GenerationPolicy {
    /// Both: `LIST` and `WHO` are understood, and a connection that sends `WHO` is answered
    /// in the previous generation (`WHO-OK`, `UNKNOWN`) from then on.
    #[default]
    Auto,
    /// Only the current one: `WHO` is an unknown command.
    Current,
    /// Only the previous one, for every connection from the start: `LIST` is unknown.
    Old,
}

/// Practice mode's settings: see `docs/teaching.md` and `transport`'s module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Practice {
    /// Where the random cuts and pauses come from: the same seed, the same cuts for the
    /// same connections in the same order.
    pub seed: u64,
}

/// TCP keepalive settings (`SO_KEEPALIVE`, `TCP_KEEPIDLE`, `TCP_KEEPINTVL`, `TCP_KEEPCNT`),
/// and the matching `TCP_USER_TIMEOUT` so a peer that vanishes with data unacknowledged is
/// found in the same time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Silence before the first probe (`keepalive`). Whole seconds: the kernel counts in them.
    pub idle: Duration,
    /// Time between probes (`keepalive-interval`). Whole seconds, as `idle`.
    pub interval: Duration,
    /// Unanswered probes before the connection is declared dead (`keepalive-probes`).
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
            limits: Limits::default(),
            extensions: ExtensionSet::all(),
            ping_interval: Duration::from_secs(60),
            ping_timeout: Duration::from_secs(60),
            accounts: AccountSettings::default(),
            account_store: None,
            practice: None,
            generation: GenerationPolicy::Auto,
            rooms: crate::rooms::RoomLimits::default(),
            history: crate::history::HistorySettings::default(),
        }
    }
}

/// A rule of [`Config`] that a configuration breaks. Each message names the setting, the
/// value given and what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `max_clients` is 0: every connection would be answered `BUSY`.
    #[error("invalid max-clients 0: must be at least 1")]
    NoClients,
    /// `max_line_bytes` is too short for the longest login line, or longer than
    /// [`MAX_LINE_LIMIT_BYTES`].
    #[error(
        "invalid max-line {given}: must be between {min} (a login with the longest name) and {max}"
    )]
    LineLimit {
        /// The value given.
        given: usize,
        /// `HELLO-FROM ` and a name of [`tcpchat_proto::MAX_NAME_BYTES`].
        min: usize,
        /// [`MAX_LINE_LIMIT_BYTES`].
        max: usize,
    },
    /// `outbox_limit_bytes` is below `max_line_bytes`.
    #[error(
        "invalid max-outbox {given}: must be at least max-line ({max_line}), or no full line could ever be queued"
    )]
    OutboxBelowLine {
        /// The value given.
        given: usize,
        /// The configuration's `max_line_bytes`.
        max_line: usize,
    },
    /// A timeout that is set is zero: it would fire at once.
    #[error("invalid {setting} 0s: must be longer than zero (or off, where that is allowed)")]
    ZeroTimeout {
        /// `handshake-timeout`, `idle-timeout`, `ping-interval` or `ping-timeout`.
        setting: &'static str,
    },
    /// A keepalive time is not a whole number of seconds from 1 to 32767, the kernel's range.
    #[error(
        "invalid {setting} {given:?}: must be whole seconds from 1s to {MAX_KEEPALIVE_SECS}s (the kernel counts keepalive time in seconds)"
    )]
    KeepaliveTime {
        /// `keepalive` or `keepalive-interval`.
        setting: &'static str,
        /// The value given.
        given: Duration,
    },
    /// A flood timeout of zero: the first line over the burst would disconnect, so the
    /// command rate would refuse lines instead of delaying them.
    #[error("invalid flood-timeout 0s: must be longer than zero (or turn the command rate off)")]
    ZeroFloodTimeout,
    /// The pre-login cap is above the client limit.
    #[error(
        "invalid max-prelogin {given}: must be at most max-clients ({max_clients}), or it never applies"
    )]
    PreloginAboveClients {
        /// The value given.
        given: usize,
        /// The configuration's `max_clients`.
        max_clients: usize,
    },
    /// A password throttle's interval is zero (no throttle at all) or over a day.
    #[error("invalid {setting} {given:?}: must be from 1ms to 1 day")]
    LoginRate {
        /// `login-rate` or `login-name-rate`.
        setting: &'static str,
        /// The value given.
        given: Duration,
    },
    /// `keepalive.probes` is outside 1 to 127, the kernel's range.
    #[error("invalid keepalive-probes {given}: must be from 1 to {MAX_KEEPALIVE_PROBES}")]
    KeepaliveProbes {
        /// The value given.
        given: u32,
    },
    /// A `rooms` limit of zero: nobody could join a room, or no topic could be set.
    #[error("invalid {setting} 0: must be at least 1 (or leave rooms out of --extensions)")]
    ZeroRoomLimit {
        /// `max-rooms-per-user`, `max-room-members` or `max-topic`.
        setting: &'static str,
    },
}

impl Config {
    /// Checks the rules a usable configuration obeys: at least one client; a login line with
    /// the longest name fits in a line; a full line fits in the outbox; timeouts that are set
    /// are longer than zero; keepalive values are within what the kernel accepts (otherwise
    /// setting them fails on every connection and dead peers go unnoticed).
    ///
    /// # Errors
    /// The first rule broken, as a [`ConfigError`] naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_clients == 0 {
            return Err(ConfigError::NoClients);
        }
        let min_line = "HELLO-FROM ".len() + tcpchat_proto::MAX_NAME_BYTES;
        if !(min_line..=MAX_LINE_LIMIT_BYTES).contains(&self.max_line_bytes) {
            return Err(ConfigError::LineLimit {
                given: self.max_line_bytes,
                min: min_line,
                max: MAX_LINE_LIMIT_BYTES,
            });
        }
        if self.outbox_limit_bytes < self.max_line_bytes {
            return Err(ConfigError::OutboxBelowLine {
                given: self.outbox_limit_bytes,
                max_line: self.max_line_bytes,
            });
        }
        if self.handshake_timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout {
                setting: "handshake-timeout",
            });
        }
        if self.idle_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::ZeroTimeout {
                setting: "idle-timeout",
            });
        }
        for (setting, given) in [
            ("ping-interval", self.ping_interval),
            ("ping-timeout", self.ping_timeout),
        ] {
            if given.is_zero() {
                return Err(ConfigError::ZeroTimeout { setting });
            }
        }
        if let Some(ka) = &self.keepalive {
            for (setting, given) in [("keepalive", ka.idle), ("keepalive-interval", ka.interval)] {
                let whole = given.subsec_nanos() == 0;
                if !whole || !(1..=MAX_KEEPALIVE_SECS).contains(&given.as_secs()) {
                    return Err(ConfigError::KeepaliveTime { setting, given });
                }
            }
            if !(1..=MAX_KEEPALIVE_PROBES).contains(&ka.probes) {
                return Err(ConfigError::KeepaliveProbes { given: ka.probes });
            }
        }
        for (setting, given) in [
            ("max-rooms-per-user", self.rooms.rooms_per_user),
            ("max-room-members", self.rooms.members_per_room),
            ("max-topic", self.rooms.topic_bytes),
        ] {
            if given == 0 {
                return Err(ConfigError::ZeroRoomLimit { setting });
            }
        }
        self.validate_limits()
    }

    /// The abuse limits' rules. A pre-login cap above the client limit is refused only when
    /// it is not the default one: the default cap (1,000) with a small client limit
    /// (a test server, a small box) is the common case and means "no more than the client
    /// limit", which [`Config::prelogin_cap`] applies.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        if let Some(cr) = &self.limits.command_rate {
            if cr.flood_timeout.is_zero() {
                return Err(ConfigError::ZeroFloodTimeout);
            }
        }
        if let Some(cap) = self.limits.max_prelogin {
            let default = Limits::default().max_prelogin;
            if Some(cap) != default && cap.get() > self.max_clients {
                return Err(ConfigError::PreloginAboveClients {
                    given: cap.get(),
                    max_clients: self.max_clients,
                });
            }
        }
        for (setting, rate) in [
            ("login-rate", self.accounts.per_address),
            ("login-name-rate", self.accounts.per_name),
        ] {
            let day = Duration::from_secs(24 * 3600);
            if !(Duration::from_millis(1)..=day).contains(&rate.every) {
                return Err(ConfigError::LoginRate {
                    setting,
                    given: rate.every,
                });
            }
        }
        Ok(())
    }

    /// The pre-login cap in force: the configured one, never above the client limit.
    pub fn prelogin_cap(&self) -> Option<std::num::NonZeroUsize> {
        self.limits
            .max_prelogin
            .map(|cap| std::num::NonZeroUsize::new(cap.get().min(self.max_clients)).unwrap_or(cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default configuration with one change.
    fn with(change: impl FnOnce(&mut Config)) -> Config {
        let mut config = Config::default();
        change(&mut config);
        config
    }

    /// The default configuration with one change to its keepalive.
    fn keepalive(change: impl FnOnce(&mut Keepalive)) -> Config {
        with(|c| change(c.keepalive.get_or_insert_with(Keepalive::default)))
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(Config::default().validate(), Ok(()));
    }

    #[test]
    fn each_rule_is_checked() {
        use ConfigError::*;
        let (secs, ms) = (Duration::from_secs, Duration::from_millis);
        // The longest login line: "HELLO-FROM " (11 bytes) and a 32-byte name.
        let (min, max) = (43, 1 << 24);
        let cases: Vec<(&str, Config, Result<(), ConfigError>)> = vec![
            ("no clients", with(|c| c.max_clients = 0), Err(NoClients)),
            ("one client", with(|c| c.max_clients = 1), Ok(())),
            (
                "a login does not fit",
                with(|c| c.max_line_bytes = min - 1),
                Err(LineLimit {
                    given: min - 1,
                    min,
                    max,
                }),
            ),
            (
                "a login just fits",
                with(|c| c.max_line_bytes = min),
                Ok(()),
            ),
            (
                "lines too long to buffer",
                with(|c| (c.max_line_bytes, c.outbox_limit_bytes) = (max + 1, 2 * max)),
                Err(LineLimit {
                    given: max + 1,
                    min,
                    max,
                }),
            ),
            (
                "outbox below a line",
                with(|c| (c.max_line_bytes, c.outbox_limit_bytes) = (100, 99)),
                Err(OutboxBelowLine {
                    given: 99,
                    max_line: 100,
                }),
            ),
            (
                "outbox of exactly a line",
                with(|c| (c.max_line_bytes, c.outbox_limit_bytes) = (100, 100)),
                Ok(()),
            ),
            (
                "zero handshake timeout",
                with(|c| c.handshake_timeout = Duration::ZERO),
                Err(ZeroTimeout {
                    setting: "handshake-timeout",
                }),
            ),
            (
                "zero ping interval",
                with(|c| c.ping_interval = Duration::ZERO),
                Err(ZeroTimeout {
                    setting: "ping-interval",
                }),
            ),
            (
                "no room members",
                with(|c| c.rooms.members_per_room = 0),
                Err(ZeroRoomLimit {
                    setting: "max-room-members",
                }),
            ),
            (
                "zero ping timeout",
                with(|c| c.ping_timeout = Duration::ZERO),
                Err(ZeroTimeout {
                    setting: "ping-timeout",
                }),
            ),
            (
                "zero idle timeout",
                with(|c| c.idle_timeout = Some(Duration::ZERO)),
                Err(ZeroTimeout {
                    setting: "idle-timeout",
                }),
            ),
            (
                "sub-second idle timeout",
                with(|c| c.idle_timeout = Some(ms(500))),
                Ok(()),
            ),
            ("keepalive off", with(|c| c.keepalive = None), Ok(())),
            (
                "zero flood timeout",
                with(|c| {
                    if let Some(cr) = c.limits.command_rate.as_mut() {
                        cr.flood_timeout = Duration::ZERO;
                    }
                }),
                Err(ZeroFloodTimeout),
            ),
            (
                "a pre-login cap above the client limit",
                with(|c| {
                    c.max_clients = 10;
                    c.limits.max_prelogin = std::num::NonZeroUsize::new(11);
                }),
                Err(PreloginAboveClients {
                    given: 11,
                    max_clients: 10,
                }),
            ),
            (
                "the default pre-login cap with a small client limit",
                with(|c| c.max_clients = 10),
                Ok(()),
            ),
            (
                "every limit off",
                with(|c| c.limits = Limits::off()),
                Ok(()),
            ),
            (
                "no probes",
                keepalive(|k| k.probes = 0),
                Err(KeepaliveProbes { given: 0 }),
            ),
            (
                "more probes than the kernel takes",
                keepalive(|k| k.probes = 128),
                Err(KeepaliveProbes { given: 128 }),
            ),
            ("the most probes", keepalive(|k| k.probes = 127), Ok(())),
            (
                "no password throttle interval",
                with(|c| c.accounts.per_address.every = Duration::ZERO),
                Err(LoginRate {
                    setting: "login-rate",
                    given: Duration::ZERO,
                }),
            ),
            (
                "a name throttle over a day",
                with(|c| c.accounts.per_name.every = Duration::from_secs(86_401)),
                Err(LoginRate {
                    setting: "login-name-rate",
                    given: Duration::from_secs(86_401),
                }),
            ),
            (
                "sub-second keepalive",
                keepalive(|k| k.idle = ms(500)),
                Err(KeepaliveTime {
                    setting: "keepalive",
                    given: ms(500),
                }),
            ),
            (
                "fractional keepalive interval",
                keepalive(|k| k.interval = ms(1500)),
                Err(KeepaliveTime {
                    setting: "keepalive-interval",
                    given: ms(1500),
                }),
            ),
            (
                "keepalive interval beyond the kernel's range",
                keepalive(|k| k.interval = secs(32_768)),
                Err(KeepaliveTime {
                    setting: "keepalive-interval",
                    given: secs(32_768),
                }),
            ),
            (
                "the longest keepalive, the shortest interval, one probe",
                keepalive(|k| {
                    *k = Keepalive {
                        idle: secs(32_767),
                        interval: secs(1),
                        probes: 1,
                    }
                }),
                Ok(()),
            ),
        ];
        for (what, config, want) in cases {
            assert_eq!(config.validate(), want, "{what}");
        }
    }

    #[test]
    fn messages_name_the_setting_and_the_bound() {
        let err = with(|c| c.max_line_bytes = 10)
            .validate()
            .expect_err("too short");
        assert_eq!(
            err.to_string(),
            "invalid max-line 10: must be between 43 (a login with the longest name) and 16777216"
        );
        let err = keepalive(|k| k.idle = Duration::from_millis(500))
            .validate()
            .expect_err("sub-second");
        assert!(
            err.to_string()
                .starts_with("invalid keepalive 500ms: must be whole seconds"),
            "{err}"
        );
    }
}
