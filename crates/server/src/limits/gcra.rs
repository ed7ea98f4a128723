//! The token bucket's arithmetic, shared by the command rate (which delays) and the
//! per-address connection rate (which refuses).
//!
//! Kept as a "theoretical arrival time" (the generic cell rate algorithm of ATM networks)
//! rather than a token count: one `Instant` of state, no floating point, no refill step, and
//! the bound "never more than `burst + per_second × t` events in any window of length `t`"
//! follows directly (`tests` in `command.rs` check it with proptest).

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use super::Rate;

#[derive(Debug, Clone)]
pub(super) struct Gcra {
    /// Time one token takes to come back.
    interval: Duration,
    /// How far ahead of `now` the schedule may run and still conform: `(burst - 1) × interval`.
    tolerance: Duration,
    /// When the bucket would be full again if nothing more came; `<= now` means it is full.
    full_at: Instant,
}

impl Gcra {
    /// A full bucket.
    pub(super) fn new(rate: Rate, now: Instant) -> Self {
        Self::with_interval(rate.burst, rate.interval(), now)
    }

    /// A full bucket of `burst` tokens, one coming back every `interval` (for rates slower
    /// than one a second, such as password attempts).
    pub(super) fn with_interval(burst: NonZeroU32, interval: Duration, now: Instant) -> Self {
        // Saturating: a silly interval gives a bucket that never refills, not a panic.
        let tolerance = interval.saturating_mul(burst.get() - 1);
        Self {
            interval,
            tolerance,
            full_at: now,
        }
    }

    /// The earliest time an event arriving at `now` may happen: `now` itself when a token is
    /// left, otherwise when the next one comes back. Does not take the token.
    pub(super) fn earliest(&self, now: Instant) -> Instant {
        let full_at = self.full_at.max(now);
        // Underflow means the schedule is far behind `now`: a token is there.
        full_at
            .checked_sub(self.tolerance)
            .map_or(now, |t| t.max(now))
    }

    /// Takes a token for an event that arrived at `now` (and happens at `earliest(now)`).
    pub(super) fn take(&mut self, now: Instant) {
        self.full_at = self.full_at.max(now) + self.interval;
    }

    /// Whether the bucket has refilled completely by `now`: its history no longer matters.
    pub(super) fn is_full(&self, now: Instant) -> bool {
        self.full_at <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_gives_its_burst_then_one_token_per_interval() {
        let t0 = Instant::now();
        let rate = Rate::new(3, 10).expect("non-zero");
        let mut g = Gcra::new(rate, t0);
        for _ in 0..3 {
            assert_eq!(g.earliest(t0), t0);
            g.take(t0);
        }
        assert_eq!(g.earliest(t0), t0 + Duration::from_millis(100));
        assert!(!g.is_full(t0));
        // Idle for burst × interval: full again.
        assert!(g.is_full(t0 + Duration::from_millis(300)));
        assert_eq!(
            g.earliest(t0 + Duration::from_millis(300)),
            t0 + Duration::from_millis(300)
        );
    }
}
