//! Open-loop pacing: when each message is *meant* to be sent.
//!
//! At a fixed offered rate a client's k-th message has an intended send time fixed in
//! advance, `start + offset + k × interval`, whatever the server does. Latency is measured
//! from that time, not from when the message actually left: a server that stalls delays the
//! messages queued behind the stall, and their latencies show it (Gil Tene's coordinated
//! omission). A sender that falls behind sends everything that is due at once.

use std::time::Duration;

/// The schedule of one open-loop sender. Times are durations since a shared origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacer {
    offset: Duration,
    interval: Duration,
}

impl Pacer {
    /// `clients` senders sharing `rate` messages/s; this is sender number `index`. Senders
    /// are staggered evenly across one interval so the offered load is smooth.
    ///
    /// # Panics
    /// If `rate` is zero or not finite, or `clients` is zero (the caller validates both).
    pub fn new(rate: f64, clients: usize, index: usize) -> Self {
        assert!(
            rate > 0.0 && rate.is_finite() && clients > 0,
            "validated by the caller"
        );
        let interval = Duration::from_secs_f64(clients as f64 / rate);
        let offset = interval.mul_f64((index % clients) as f64 / clients as f64);
        Self { offset, interval }
    }

    /// Time between two of this sender's messages.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The intended send time of message `k`, measured from `start`.
    pub fn intended(&self, start: Duration, k: u64) -> Duration {
        start
            + self.offset
            + self
                .interval
                .saturating_mul(u32::try_from(k).unwrap_or(u32::MAX))
    }

    /// How many messages are due by `now` (all those whose intended time is at or before it).
    pub fn due(&self, start: Duration, now: Duration) -> u64 {
        let first = start + self.offset;
        if now < first {
            return 0;
        }
        let elapsed = (now - first).as_nanos();
        (elapsed / self.interval.as_nanos().max(1)) as u64 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn fixed_rate_schedule() {
        // 1000 msg/s over 10 clients: each sends every 10 ms, staggered 1 ms apart.
        let p = Pacer::new(1000.0, 10, 3);
        assert_eq!(p.interval(), 10 * MS);
        let start = 100 * MS;
        assert_eq!(p.intended(start, 0), 103 * MS);
        assert_eq!(p.intended(start, 5), 153 * MS);
        let cases = [(0, 0), (102, 0), (103, 1), (112, 1), (113, 2), (153, 6)];
        for (now_ms, due) in cases {
            assert_eq!(p.due(start, now_ms * MS), due, "at {now_ms} ms");
        }
    }

    #[test]
    fn a_late_sender_owes_everything_due() {
        let p = Pacer::new(100.0, 1, 0);
        // Stalled for one second: 101 messages are due (t = 0, 10 ms, ..., 1000 ms).
        assert_eq!(p.due(Duration::ZERO, Duration::from_secs(1)), 101);
    }

    #[test]
    fn offered_rate_is_exact_over_all_clients() {
        let clients = 200;
        let rate = 20_000.0;
        let horizon = Duration::from_secs(3);
        let total: u64 = (0..clients)
            .map(|i| {
                Pacer::new(rate, clients, i).due(Duration::ZERO, horizon - Duration::from_nanos(1))
            })
            .sum();
        assert_eq!(total, 60_000);
    }
}
