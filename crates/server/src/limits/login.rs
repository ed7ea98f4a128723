//! [`LoginThrottle`]: password attempts per address and wrong passwords per name.
//!
//! Two token buckets (the same [`Gcra`] as the command and connection rates), decided in
//! `docs/protocol.md`, "accounts":
//!
//! - every password check costs one token from the connection's address (an IPv4 address or
//!   an IPv6 /64, as the other per-address limits count): **20** at once, then one per **3 s**;
//! - every *wrong* password costs one from the name: **5** at once, then one per **30 s**.
//!
//! An attempt over either budget is refused before anything is hashed, with the wait until
//! a token is back (`THROTTLED <s>`). The name's budget is only *checked* before the hash and
//! *spent* after a wrong answer, so alice logging in with her right password never spends it;
//! but while someone guesses, her own logins wait too (written down in `docs/security.md`).
//!
//! Memory: entries whose bucket has refilled carry no history and are forgotten when the
//! table has doubled since the last sweep, so the cost per attempt stays O(1) on average.
//! Names only get an entry on a wrong password for an existing account, so that table is
//! bounded by the accounts under attack; the address table by the addresses that tried.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::gcra::Gcra;
use super::AddressKey;

/// Password attempts per address: at once.
pub const DEFAULT_LOGIN_BURST: u32 = 20;
/// Password attempts per address: then one per this long.
pub const DEFAULT_LOGIN_EVERY: Duration = Duration::from_secs(3);
/// Wrong passwords per name: at once.
pub const DEFAULT_LOGIN_NAME_BURST: u32 = 5;
/// Wrong passwords per name: then one per this long.
pub const DEFAULT_LOGIN_NAME_EVERY: Duration = Duration::from_secs(30);

/// Entries kept before the first sweep.
const FIRST_SWEEP_AT: usize = 1_024;

/// A slow token bucket's shape: `burst` at once, then one every `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginRate {
    pub burst: NonZeroU32,
    pub every: Duration,
}

impl LoginRate {
    /// `None` if `burst` is zero.
    pub const fn new(burst: u32, every: Duration) -> Option<Self> {
        match NonZeroU32::new(burst) {
            Some(burst) => Some(Self { burst, every }),
            None => None,
        }
    }
}

/// The two budgets, shared by every connection of a server.
#[derive(Debug)]
pub struct LoginThrottle {
    per_address: LoginRate,
    per_name: LoginRate,
    addresses: Mutex<Table<AddressKey>>,
    names: Mutex<Table<String>>,
}

#[derive(Debug)]
struct Table<K> {
    buckets: HashMap<K, Gcra>,
    next_sweep_at: usize,
}

impl<K: Hash + Eq> Table<K> {
    fn new() -> Self {
        Self {
            buckets: HashMap::new(),
            next_sweep_at: FIRST_SWEEP_AT,
        }
    }

    fn sweep_if_due(&mut self, now: Instant) {
        if self.buckets.len() >= self.next_sweep_at {
            self.buckets.retain(|_, g| !g.is_full(now));
            self.next_sweep_at = (self.buckets.len() * 2).max(FIRST_SWEEP_AT);
        }
    }

    /// How long until `key` has a token (zero: it has one now).
    fn wait(&self, key: &K, now: Instant) -> Duration {
        self.buckets.get(key).map_or(Duration::ZERO, |g| {
            g.earliest(now).saturating_duration_since(now)
        })
    }

    fn take(&mut self, key: K, rate: LoginRate, now: Instant) {
        self.sweep_if_due(now);
        self.buckets
            .entry(key)
            .or_insert_with(|| Gcra::with_interval(rate.burst, rate.every, now))
            .take(now);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Map operations only under these locks; a poisoned table is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new(
            LoginRate {
                burst: NonZeroU32::new(DEFAULT_LOGIN_BURST).unwrap_or(NonZeroU32::MIN),
                every: DEFAULT_LOGIN_EVERY,
            },
            LoginRate {
                burst: NonZeroU32::new(DEFAULT_LOGIN_NAME_BURST).unwrap_or(NonZeroU32::MIN),
                every: DEFAULT_LOGIN_NAME_EVERY,
            },
        )
    }
}

impl LoginThrottle {
    /// Budgets of `per_address` password checks and `per_name` wrong passwords.
    pub fn new(per_address: LoginRate, per_name: LoginRate) -> Self {
        Self {
            per_address,
            per_name,
            addresses: Mutex::new(Table::new()),
            names: Mutex::new(Table::new()),
        }
    }

    /// A password check from `ip`, for the account `name` if it has one (`REGISTER` checks
    /// nothing against a name). `Ok`: go ahead, the address's token is spent. `Err(wait)`:
    /// refuse it, nothing spent; a token is back after `wait`.
    pub fn attempt(&self, ip: IpAddr, name: Option<&str>, now: Instant) -> Result<(), Duration> {
        if let Some(name) = name {
            let wait = lock(&self.names).wait(&name.to_owned(), now);
            if !wait.is_zero() {
                return Err(wait);
            }
        }
        let key = AddressKey::of(ip);
        let mut addresses = lock(&self.addresses);
        let wait = addresses.wait(&key, now);
        if !wait.is_zero() {
            return Err(wait);
        }
        addresses.take(key, self.per_address, now);
        Ok(())
    }

    /// A wrong password was given for `name`: spends one of its tokens.
    pub fn wrong_password(&self, name: &str, now: Instant) {
        lock(&self.names).take(name.to_owned(), self.per_name, now);
    }
}

/// The whole seconds to announce in `THROTTLED <s>` for a wait: rounded up, at least 1.
pub fn throttled_seconds(wait: Duration) -> u32 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(addr: (u32, u64), name: (u32, u64)) -> LoginThrottle {
        let rate = |(b, s): (u32, u64)| LoginRate::new(b, Duration::from_secs(s)).expect("burst");
        LoginThrottle::new(rate(addr), rate(name))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn an_address_gets_its_burst_then_one_attempt_per_interval() {
        let t0 = Instant::now();
        let t = throttle((3, 3), (5, 30));
        for _ in 0..3 {
            assert_eq!(t.attempt(ip("192.0.2.1"), Some("alice"), t0), Ok(()));
        }
        let wait = t
            .attempt(ip("192.0.2.1"), Some("alice"), t0)
            .expect_err("over");
        assert_eq!(wait, Duration::from_secs(3));
        assert_eq!(throttled_seconds(wait), 3);
        // Another address is not affected.
        assert_eq!(t.attempt(ip("192.0.2.2"), Some("alice"), t0), Ok(()));
        // One token back after one interval, not two.
        let t1 = t0 + Duration::from_secs(3);
        assert_eq!(t.attempt(ip("192.0.2.1"), None, t1), Ok(()));
        assert!(t.attempt(ip("192.0.2.1"), None, t1).is_err());
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_v4_as_v4() {
        let t0 = Instant::now();
        let t = throttle((1, 3), (5, 30));
        assert_eq!(t.attempt(ip("2001:db8::1"), None, t0), Ok(()));
        assert!(
            t.attempt(ip("2001:db8::ffff:2"), None, t0).is_err(),
            "same /64"
        );
        assert_eq!(
            t.attempt(ip("2001:db8:0:1::1"), None, t0),
            Ok(()),
            "other /64"
        );
        assert_eq!(t.attempt(ip("198.51.100.7"), None, t0), Ok(()));
        assert!(t.attempt(ip("::ffff:198.51.100.7"), None, t0).is_err());
    }

    #[test]
    fn only_wrong_passwords_spend_the_names_budget() {
        let t0 = Instant::now();
        let t = throttle((100, 1), (2, 30));
        // Right passwords: the name's budget is never spent.
        for i in 0..10 {
            assert_eq!(
                t.attempt(ip(&format!("10.0.0.{i}")), Some("alice"), t0),
                Ok(())
            );
        }
        t.wrong_password("alice", t0);
        t.wrong_password("alice", t0);
        // From any address now, alice's checks wait; bob's do not.
        let wait = t
            .attempt(ip("10.9.9.9"), Some("alice"), t0)
            .expect_err("name over");
        assert_eq!(throttled_seconds(wait), 30);
        assert_eq!(t.attempt(ip("10.9.9.9"), Some("bob"), t0), Ok(()));
        assert_eq!(
            t.attempt(ip("10.9.9.9"), Some("alice"), t0 + Duration::from_secs(30)),
            Ok(())
        );
    }

    #[test]
    fn a_refused_attempt_spends_nothing() {
        let t0 = Instant::now();
        let t = throttle((1, 3), (1, 30));
        t.wrong_password("alice", t0);
        for _ in 0..5 {
            assert!(t.attempt(ip("10.0.0.1"), Some("alice"), t0).is_err());
        }
        // The address's one token is still there.
        assert_eq!(t.attempt(ip("10.0.0.1"), Some("bob"), t0), Ok(()));
    }

    #[test]
    fn refilled_entries_are_forgotten() {
        let t0 = Instant::now();
        let t = throttle((1, 1), (1, 1));
        for i in 0..u32::try_from(FIRST_SWEEP_AT).expect("small") {
            let a = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            assert_eq!(t.attempt(IpAddr::V4(a), None, t0), Ok(()));
        }
        let later = t0 + Duration::from_secs(5);
        assert_eq!(t.attempt(ip("192.0.2.1"), None, later), Ok(()));
        assert_eq!(
            lock(&t.addresses).buckets.len(),
            1,
            "the refilled ones swept"
        );
    }

    #[test]
    fn throttled_seconds_rounds_up_and_is_at_least_one() {
        assert_eq!(throttled_seconds(Duration::ZERO), 1);
        assert_eq!(throttled_seconds(Duration::from_millis(1)), 1);
        assert_eq!(throttled_seconds(Duration::from_millis(2_001)), 3);
        assert_eq!(throttled_seconds(Duration::from_secs(30)), 30);
    }
}
