//! Per-address limits: connections open at once, and new connections over time.
//!
//! An "address" is what one party can cheaply have many of: one IPv4 address, or one IPv6
//! /64, the prefix an ISP hands a single customer (the grouping Ergo uses; per-/128 limits
//! would be no limit at all). An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack
//! socket reports for IPv4 peers) counts as the IPv4 address it carries.
//!
//! Shared by the accept loop (which admits) and every connection task (whose
//! [`AddressTicket`] gives the slot back however the task ends), so the state sits behind a
//! `std::sync::Mutex`: each operation is a hash-map lookup, never held across an `.await`.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use ipnet::IpNet;

use super::gcra::Gcra;
use super::log_once::RefusalLog;
use super::{Limits, Rate, REFUSAL_LOG_INTERVAL};

/// IPv6 addresses sharing this many leading bits count as one address.
pub const IPV6_PREFIX_BITS: u8 = 64;

/// Table size at which the first sweep of idle entries runs; later sweeps run each time the
/// table has doubled since the last one, so sweeping costs O(1) per admission on average.
const FIRST_SWEEP_AT: usize = 1_024;

/// The unit the per-address limits count by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddressKey {
    /// One IPv4 address (mapped IPv6 addresses included).
    V4(Ipv4Addr),
    /// One IPv6 /64: the address with its last 64 bits zeroed.
    V6(Ipv6Addr),
}

impl AddressKey {
    /// The key `ip` counts under.
    pub fn of(ip: IpAddr) -> Self {
        match normalize(ip) {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => {
                let mask = u128::MAX << (128 - u32::from(IPV6_PREFIX_BITS));
                Self::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        }
    }
}

impl fmt::Display for AddressKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(v4) => write!(f, "{v4}"),
            Self::V6(prefix) => write!(f, "{prefix}/{IPV6_PREFIX_BITS}"),
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is; anything else unchanged.
fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Why an address was refused. The caller answers `BUSY` and closes either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefusalReason {
    #[error("{limit} connections already open from there")]
    TooManyConnections { limit: u32 },
    #[error("more than {burst} new connections from there, then {per_second} a second")]
    TooManyNewConnections { burst: u32, per_second: u32 },
}

/// A refused connection: from where, why, and whether this refusal should be logged (the
/// first for its address in a minute; the rest are counted, not logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("refused a connection from {key}: {reason}")]
pub struct Refused {
    pub key: AddressKey,
    pub reason: RefusalReason,
    /// Log this one (at info): no refusal of this address was logged in the last minute.
    pub log: bool,
}

/// A CIDR list could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{input:?} is not a network: write an address with a prefix length, such as 10.0.0.0/8 \
     or 2001:db8::/32, or a single address"
)]
pub struct NetworkError {
    pub input: String,
}

/// Reads a comma-separated list of networks (`--exempt 10.0.0.0/8,2001:db8::/32`). A bare
/// address means that address alone (/32 or /128); spaces around entries are ignored; an
/// empty string is an empty list.
///
/// # Errors
/// The first entry that is neither a network nor an address.
pub fn parse_networks(list: &str) -> Result<Vec<IpNet>, NetworkError> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            IpNet::from_str(s)
                .or_else(|_| IpAddr::from_str(s).map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| NetworkError {
                    input: s.to_string(),
                })
        })
        .collect()
}

/// The per-address limits, shared by cloning. See the module docs for what an address is.
///
/// Memory is bounded: an address is tracked while it has a connection open or its rate
/// history still matters (its bucket has not refilled), at most `max_tracked_addresses` at a
/// time. When the table is full even after forgetting idle entries, the rate history of
/// addresses with nothing open is forgotten too (lenient: they get a fresh burst); if every
/// tracked address has a connection open, a new address is admitted *untracked* (fail open):
/// the client limit still bounds the server, and refusing every newcomer would turn a memory
/// bound into a lockout. The default bound is far above the default client limit, so this
/// only happens when `max_clients` is raised past it.
#[derive(Debug, Clone)]
pub struct AddressLimiter {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    max_per_address: Option<NonZeroU32>,
    connect_rate: Option<Rate>,
    exempt: Vec<IpNet>,
    max_tracked: NonZeroUsize,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    entries: HashMap<AddressKey, Entry>,
    next_sweep_at: usize,
    log: RefusalLog<AddressKey>,
}

#[derive(Debug)]
struct Entry {
    open: u32,
    /// `None` when the connection rate is off.
    rate: Option<Gcra>,
}

impl Entry {
    fn idle(&self, now: Instant) -> bool {
        self.open == 0 && self.rate.as_ref().is_none_or(|g| g.is_full(now))
    }
}

impl AddressLimiter {
    /// A limiter enforcing `limits`' per-address settings (the others are not its business).
    pub fn new(limits: &Limits) -> Self {
        let max_tracked = limits.max_tracked_addresses;
        Self {
            shared: Arc::new(Shared {
                max_per_address: limits.max_per_address,
                connect_rate: limits.connect_rate,
                exempt: limits.exempt.clone(),
                max_tracked,
                state: Mutex::new(State {
                    entries: HashMap::new(),
                    next_sweep_at: FIRST_SWEEP_AT.min(max_tracked.get()),
                    log: RefusalLog::new(REFUSAL_LOG_INTERVAL, max_tracked.get()),
                }),
            }),
        }
    }

    /// A connection from `ip` arrived at `now`. On success, keep the ticket for as long as
    /// the connection lives; dropping it gives the slot back.
    ///
    /// # Errors
    /// [`Refused`] when `ip`'s address already has `max_per_address` connections open, or has
    /// opened connections faster than `connect_rate`. A refusal does not count against the
    /// rate: an address that hammers gets back in as soon as its rate allows.
    pub fn try_admit(&self, ip: IpAddr, now: Instant) -> Result<AddressTicket, Refused> {
        if is_exempt(&self.shared.exempt, ip) {
            return Ok(AddressTicket {
                slot: None,
                exempt: true,
            });
        }
        let key = AddressKey::of(ip);
        let shared = &self.shared;
        let mut state = shared.lock();
        let State {
            entries,
            next_sweep_at,
            log,
        } = &mut *state;
        if !entries.contains_key(&key)
            && !make_room(entries, next_sweep_at, shared.max_tracked, now)
        {
            return Ok(AddressTicket::untracked());
        }
        let entry = entries.entry(key).or_insert_with(|| Entry {
            open: 0,
            rate: shared.connect_rate.map(|rate| Gcra::new(rate, now)),
        });
        let reason = if let Some(limit) = shared.max_per_address.filter(|l| entry.open >= l.get()) {
            Some(RefusalReason::TooManyConnections { limit: limit.get() })
        } else {
            match (&mut entry.rate, shared.connect_rate) {
                (Some(g), Some(rate)) if g.earliest(now) > now => {
                    Some(RefusalReason::TooManyNewConnections {
                        burst: rate.burst.get(),
                        per_second: rate.per_second.get(),
                    })
                }
                (Some(g), _) => {
                    g.take(now);
                    None
                }
                (None, _) => None,
            }
        };
        if let Some(reason) = reason {
            return Err(Refused {
                key,
                reason,
                log: log.should_log(key, now),
            });
        }
        entry.open += 1;
        Ok(AddressTicket {
            slot: Some((Arc::clone(&self.shared), key)),
            exempt: false,
        })
    }

    /// Forgets every address with nothing open whose rate history no longer matters. Runs by
    /// itself as the table grows; a caller may also run it on a timer to give memory back
    /// sooner after a storm.
    pub fn sweep(&self, now: Instant) {
        let mut state = self.shared.lock();
        state.entries.retain(|_, e| !e.idle(now));
    }

    /// Addresses tracked now (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.shared.lock().entries.len()
    }

    /// Connections open from `ip`'s address, as this limiter counts them (0 if exempt or
    /// untracked).
    pub fn open_from(&self, ip: IpAddr) -> u32 {
        let key = AddressKey::of(ip);
        self.shared.lock().entries.get(&key).map_or(0, |e| e.open)
    }
}

/// Whether `ip` (normalized) falls in one of `exempt`.
pub(super) fn is_exempt(exempt: &[IpNet], ip: IpAddr) -> bool {
    let ip = normalize(ip);
    exempt.iter().any(|net| net.contains(&ip))
}

/// Ensures there is room for one more entry. Returns `false` if there is none even after
/// forgetting everything with nothing open.
fn make_room(
    entries: &mut HashMap<AddressKey, Entry>,
    next_sweep_at: &mut usize,
    max_tracked: NonZeroUsize,
    now: Instant,
) -> bool {
    let max = max_tracked.get();
    if entries.len() >= *next_sweep_at || entries.len() >= max {
        entries.retain(|_, e| !e.idle(now));
        if entries.len() >= max {
            // Full of live rate histories: give up the ones with nothing open.
            entries.retain(|_, e| e.open > 0);
        }
        *next_sweep_at = entries
            .len()
            .saturating_mul(2)
            .clamp(FIRST_SWEEP_AT.min(max), max);
    }
    entries.len() < max
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock, and every update leaves the state whole, so
        // a poisoned lock's data is still good.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn release(&self, key: AddressKey, now: Option<Instant>) {
        let mut state = self.lock();
        if let Some(entry) = state.entries.get_mut(&key) {
            entry.open = entry.open.saturating_sub(1);
            let idle = match now {
                Some(now) => entry.idle(now),
                // Without the time, only an entry with no rate history can go at once; the
                // rest wait for a sweep.
                None => entry.open == 0 && entry.rate.is_none(),
            };
            if idle {
                state.entries.remove(&key);
            }
        }
    }
}

/// One admitted connection's slot in its address's count. Dropping it gives the slot back;
/// [`AddressTicket::release`] does the same and, given the time, forgets the address at once
/// if nothing else is left to remember.
#[derive(Debug)]
#[must_use = "dropping the ticket gives the slot back at once"]
pub struct AddressTicket {
    /// `None` for exempt and untracked connections, which hold no slot.
    slot: Option<(Arc<Shared>, AddressKey)>,
    exempt: bool,
}

impl AddressTicket {
    fn untracked() -> Self {
        Self {
            slot: None,
            exempt: false,
        }
    }

    /// Whether the connection comes from an exempt network: the caller skips its command
    /// rate and the pre-login cap too. (An untracked connection, admitted because the table
    /// was full, is *not* exempt.)
    pub fn is_exempt(&self) -> bool {
        self.exempt
    }

    /// The address this ticket counts against; `None` if it is exempt or untracked.
    pub fn key(&self) -> Option<AddressKey> {
        self.slot.as_ref().map(|(_, key)| *key)
    }

    /// Gives the slot back at `now`.
    pub fn release(mut self, now: Instant) {
        if let Some((shared, key)) = self.slot.take() {
            shared.release(key, Some(now));
        }
    }
}

impl Drop for AddressTicket {
    fn drop(&mut self) {
        if let Some((shared, key)) = self.slot.take() {
            shared.release(key, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn limits(max: Option<u32>, rate: Option<(u32, u32)>) -> Limits {
        Limits {
            max_per_address: max.and_then(NonZeroU32::new),
            connect_rate: rate.and_then(|(b, r)| Rate::new(b, r)),
            ..Limits::off()
        }
    }

    #[test]
    fn addresses_are_grouped_by_ipv4_address_and_ipv6_slash_64() {
        let cases = [
            ("192.0.2.1", "192.0.2.1", true),
            ("192.0.2.1", "192.0.2.2", false),
            ("2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:ffff", true),
            ("2001:db8:1:2::1", "2001:db8:1:3::1", false),
            ("::ffff:192.0.2.1", "192.0.2.1", true),
            ("::ffff:192.0.2.1", "::ffff:192.0.2.2", false),
            // Only the mapped form is IPv4; the deprecated compatible form and NAT64 are not.
            ("::192.0.2.1", "192.0.2.1", false),
            ("64:ff9b::192.0.2.1", "192.0.2.1", false),
        ];
        for (a, b, same) in cases {
            assert_eq!(
                AddressKey::of(ip(a)) == AddressKey::of(ip(b)),
                same,
                "{a} vs {b}"
            );
        }
    }

    #[test]
    fn keys_display_as_an_address_or_a_prefix() {
        let cases = [
            ("192.0.2.1", "192.0.2.1"),
            ("::ffff:192.0.2.1", "192.0.2.1"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ];
        for (input, want) in cases {
            assert_eq!(AddressKey::of(ip(input)).to_string(), want);
        }
    }

    #[test]
    fn at_the_limit_an_address_is_refused_until_a_slot_is_given_back() {
        let t0 = Instant::now();
        let limiter = AddressLimiter::new(&limits(Some(3), None));
        let a = ip("192.0.2.1");
        let mut tickets: Vec<_> = (0..3)
            .map(|_| limiter.try_admit(a, t0).expect("under the limit"))
            .collect();
        let refused = limiter.try_admit(a, t0).expect_err("at the limit");
        assert_eq!(
            refused.reason,
            RefusalReason::TooManyConnections { limit: 3 }
        );
        assert_eq!(refused.key, AddressKey::of(a));
        assert!(
            limiter.try_admit(ip("192.0.2.2"), t0).is_ok(),
            "another address is not affected"
        );
        tickets.pop();
        assert_eq!(limiter.open_from(a), 2);
        let again = limiter.try_admit(a, t0).expect("a slot was given back");
        again.release(t0);
        assert_eq!(limiter.open_from(a), 2);
    }

    #[test]
    fn the_ipv6_limit_covers_the_whole_slash_64() {
        let t0 = Instant::now();
        let limiter = AddressLimiter::new(&limits(Some(2), None));
        let _a = limiter.try_admit(ip("2001:db8::1"), t0).expect("first");
        let _b = limiter.try_admit(ip("2001:db8::2"), t0).expect("second");
        assert!(limiter.try_admit(ip("2001:db8::3"), t0).is_err());
        assert!(limiter.try_admit(ip("2001:db8:0:1::3"), t0).is_ok());
    }

    #[test]
    fn new_connections_are_limited_to_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let limiter = AddressLimiter::new(&limits(None, Some((5, 2))));
        let a = ip("192.0.2.1");
        for i in 0..5 {
            // Each connection closes at once: only the rate can refuse.
            assert!(limiter.try_admit(a, t0).is_ok(), "connection {i}");
        }
        let refused = limiter.try_admit(a, t0).expect_err("burst spent");
        assert_eq!(
            refused.reason,
            RefusalReason::TooManyNewConnections {
                burst: 5,
                per_second: 2
            }
        );
        assert!(limiter
            .try_admit(a, t0 + Duration::from_millis(499))
            .is_err());
        assert!(limiter
            .try_admit(a, t0 + Duration::from_millis(500))
            .is_ok());
        assert!(
            limiter.try_admit(ip("192.0.2.2"), t0).is_ok(),
            "another address has its own burst"
        );
    }

    #[test]
    fn exempt_networks_are_never_limited_nor_tracked() {
        let t0 = Instant::now();
        let limiter = AddressLimiter::new(&Limits {
            exempt: parse_networks("10.0.0.0/8, 2001:db8::/32").expect("valid"),
            ..limits(Some(1), Some((1, 1)))
        });
        for addr in ["10.1.2.3", "::ffff:10.9.9.9", "2001:db8:5::1"] {
            let tickets: Vec<_> = (0..10)
                .map(|_| limiter.try_admit(ip(addr), t0))
                .collect::<Result<_, _>>()
                .unwrap_or_else(|e| panic!("{addr}: {e}"));
            assert!(tickets.iter().all(|t| t.key().is_none() && t.is_exempt()));
        }
        assert_eq!(limiter.tracked(), 0);
        let _one = limiter.try_admit(ip("192.0.2.1"), t0).expect("first");
        assert!(
            limiter.try_admit(ip("192.0.2.1"), t0).is_err(),
            "not exempt"
        );
    }

    #[test]
    fn refusals_are_logged_once_per_address_per_minute() {
        let t0 = Instant::now();
        let limiter = AddressLimiter::new(&limits(Some(1), None));
        let a = ip("192.0.2.1");
        let _held = limiter.try_admit(a, t0).expect("first");
        let logged = |at: Duration| limiter.try_admit(a, t0 + at).expect_err("at the limit").log;
        assert!(logged(Duration::ZERO));
        for s in 1..60 {
            assert!(!logged(Duration::from_secs(s)), "second {s}");
        }
        assert!(logged(Duration::from_secs(60)));
        let _other = limiter.try_admit(ip("192.0.2.2"), t0).expect("first");
        assert!(
            limiter
                .try_admit(ip("192.0.2.2"), t0)
                .expect_err("full")
                .log,
            "another address gets its own line"
        );
    }

    #[test]
    fn an_address_is_forgotten_once_nothing_is_open_and_its_bucket_is_full() {
        let t0 = Instant::now();
        // Rate off: the last ticket's drop forgets the address at once.
        let limiter = AddressLimiter::new(&limits(Some(5), None));
        drop(limiter.try_admit(ip("192.0.2.1"), t0).expect("ok"));
        assert_eq!(limiter.tracked(), 0);

        // Rate on: remembered while the bucket refills, then swept.
        let limiter = AddressLimiter::new(&limits(Some(5), Some((2, 1))));
        let ticket = limiter.try_admit(ip("192.0.2.1"), t0).expect("ok");
        ticket.release(t0);
        assert_eq!(limiter.tracked(), 1, "its rate history still matters");
        limiter.sweep(t0 + Duration::from_millis(999));
        assert_eq!(limiter.tracked(), 1);
        limiter.sweep(t0 + Duration::from_secs(1));
        assert_eq!(limiter.tracked(), 0);

        // An explicit release with the time forgets at once when the bucket is already full.
        let ticket = limiter.try_admit(ip("192.0.2.1"), t0).expect("ok");
        ticket.release(t0 + Duration::from_secs(10));
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn at_the_tracking_cap_new_addresses_are_admitted_untracked() {
        let t0 = Instant::now();
        let limiter = AddressLimiter::new(&Limits {
            max_tracked_addresses: NonZeroUsize::new(4).expect("non-zero"),
            ..limits(Some(1), Some((1, 1)))
        });
        let held: Vec<_> = (1..=10)
            .map(|i| {
                limiter
                    .try_admit(ip(&format!("192.0.2.{i}")), t0)
                    .expect("fail open")
            })
            .collect();
        assert_eq!(limiter.tracked(), 4);
        assert_eq!(held.iter().filter(|t| t.key().is_some()).count(), 4);
        assert!(
            held.iter().all(|t| !t.is_exempt()),
            "untracked is not exempt"
        );
        // Tracked addresses keep their limits.
        assert!(limiter.try_admit(ip("192.0.2.1"), t0).is_err());
        drop(held);
        // Rate histories with nothing open are given up when room is needed.
        let t = limiter.try_admit(ip("192.0.2.99"), t0).expect("room made");
        assert!(t.key().is_some());
        assert!(limiter.tracked() <= 4);
    }

    #[test]
    fn the_defaults_host_a_class_and_check_from_one_address_and_stop_a_storm() {
        let t0 = Instant::now();
        let limiter = AddressLimiter::new(&Limits::default());
        let nat = ip("198.51.100.7");
        // 200 students arriving within one second, and staying.
        let mut class: Vec<_> = (0..200)
            .map(|i| {
                limiter
                    .try_admit(nat, t0 + Duration::from_millis(5 * i))
                    .expect("a student")
            })
            .collect();
        // Then `tcpchat check` from the same address: about 120 connections in half a
        // second, at most 70 open at once.
        let t1 = t0 + Duration::from_secs(1);
        let mut open = Vec::new();
        for i in 0..121u64 {
            open.push(
                limiter
                    .try_admit(nat, t1 + Duration::from_millis(4 * i))
                    .expect("a check connection"),
            );
            if open.len() > 70 {
                drop(open.remove(0));
            }
        }
        drop(open);
        // A storm: 10,000 connection attempts within one second, each closed at once.
        let t2 = t0 + Duration::from_secs(60);
        let storm = AddressLimiter::new(&Limits::default());
        let admitted = (0..10_000u64)
            .filter(|i| {
                storm
                    .try_admit(nat, t2 + Duration::from_micros(100 * i))
                    .is_ok()
            })
            .count();
        let burst = super::super::DEFAULT_CONNECT_BURST as usize;
        let rate = super::super::DEFAULT_CONNECTS_PER_SECOND as usize;
        assert!(
            (burst..=burst + rate).contains(&admitted),
            "{admitted} of 10,000"
        );
        class.clear();
    }

    #[test]
    fn network_lists_parse() {
        let ok = [
            ("", vec![]),
            (" , ", vec![]),
            ("10.0.0.0/8", vec!["10.0.0.0/8"]),
            ("10.1.2.3/8", vec!["10.0.0.0/8"]),
            ("192.0.2.7", vec!["192.0.2.7/32"]),
            ("2001:db8::/32, ::1", vec!["2001:db8::/32", "::1/128"]),
        ];
        for (input, want) in ok {
            let got: Vec<String> = parse_networks(input)
                .unwrap_or_else(|e| panic!("{input:?}: {e}"))
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(got, want, "{input:?}");
        }
        for bad in ["nonsense", "10.0.0.0/33", "10.0.0.0/8,,x", "10.0.0.0/8;"] {
            assert!(parse_networks(bad).is_err(), "{bad:?}");
        }
        let err = parse_networks("10.0.0.0/8,campus").expect_err("bad entry");
        assert_eq!(err.input, "campus");
    }

    proptest! {
        /// Whatever the sequence of arrivals and departures: no address ever has more than the
        /// limit open, the counts match the tickets held, and the table stays within its cap.
        #[test]
        fn counts_match_tickets_and_memory_stays_bounded(
            ops in proptest::collection::vec((0u8..16, any::<bool>(), 0u64..50), 1..400),
        ) {
            let t0 = Instant::now();
            let cap = 6;
            let limiter = AddressLimiter::new(&Limits {
                max_tracked_addresses: NonZeroUsize::new(cap).expect("non-zero"),
                ..limits(Some(3), Some((4, 10)))
            });
            let mut held: Vec<(IpAddr, AddressTicket)> = Vec::new();
            let mut now = t0;
            for (host, arrive, gap_ms) in ops {
                now += Duration::from_millis(gap_ms);
                let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, host));
                if arrive {
                    if let Ok(t) = limiter.try_admit(a, now) {
                        held.push((a, t));
                    }
                } else if let Some(i) = held.iter().position(|(h, _)| *h == a) {
                    let (_, t) = held.remove(i);
                    t.release(now);
                }
                prop_assert!(limiter.tracked() <= cap);
                for host in 0u8..16 {
                    let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, host));
                    let tracked_tickets = held
                        .iter()
                        .filter(|(h, t)| *h == a && t.key().is_some())
                        .count() as u32;
                    prop_assert!(tracked_tickets <= 3);
                    prop_assert_eq!(limiter.open_from(a), tracked_tickets);
                }
            }
            drop(held);
            limiter.sweep(now + Duration::from_secs(1));
            prop_assert_eq!(limiter.tracked(), 0);
        }
    }
}
