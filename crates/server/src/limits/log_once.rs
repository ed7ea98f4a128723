//! "Log this once per key per interval": a refused address is worth one info line a minute,
//! not one per attempt, or a connect storm becomes a disk-filling log storm.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Decides which events get a log line: the first for a key, then the first after each
/// `interval`. Remembers at most `capacity` keys; when full it forgets keys whose interval has
/// passed, and if every remembered key is still recent, says "don't log" for new keys, because
/// the point is a bounded log (the caller may count what it suppressed).
#[derive(Debug, Clone)]
pub struct RefusalLog<K> {
    interval: Duration,
    capacity: usize,
    last_logged: HashMap<K, Instant>,
}

impl<K: Copy + Eq + Hash> RefusalLog<K> {
    /// Lets one event per key through every `interval`, tracking at most `capacity` keys.
    pub fn new(interval: Duration, capacity: usize) -> Self {
        Self {
            interval,
            capacity,
            last_logged: HashMap::new(),
        }
    }

    /// Whether an event for `key` at `now` should be logged. Returns `true` at most once per
    /// key per interval.
    pub fn should_log(&mut self, key: K, now: Instant) -> bool {
        if let Some(last) = self.last_logged.get_mut(&key) {
            if now.saturating_duration_since(*last) < self.interval {
                return false;
            }
            *last = now;
            return true;
        }
        if self.last_logged.len() >= self.capacity {
            let interval = self.interval;
            self.last_logged
                .retain(|_, last| now.saturating_duration_since(*last) < interval);
            if self.last_logged.len() >= self.capacity {
                return false;
            }
        }
        self.last_logged.insert(key, now);
        true
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.last_logged.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.last_logged.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn once_per_key_per_interval() {
        let t0 = Instant::now();
        let mut log = RefusalLog::new(MINUTE, 100);
        let s = Duration::from_secs;
        let cases = [
            (1, s(0), true, "first for a key"),
            (1, s(0), false, "same key, same instant"),
            (1, s(59), false, "within the minute"),
            (2, s(59), true, "another key"),
            (1, s(60), true, "a minute after the last line"),
            (1, s(100), false, "within the minute of that line"),
            (1, s(120), true, "and a minute after it"),
        ];
        for (key, at, want, why) in cases {
            assert_eq!(log.should_log(key, t0 + at), want, "{why}");
        }
    }

    #[test]
    fn memory_is_bounded_and_stale_keys_are_forgotten() {
        let t0 = Instant::now();
        let mut log = RefusalLog::new(MINUTE, 3);
        for key in 0..3 {
            assert!(log.should_log(key, t0));
        }
        assert!(!log.should_log(3, t0), "full of recent keys: suppressed");
        assert_eq!(log.len(), 3);
        assert!(log.should_log(3, t0 + MINUTE), "stale keys make room");
        assert_eq!(log.len(), 1);
    }
}
