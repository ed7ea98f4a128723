//! Latency histograms that can cross a process boundary and be merged.
//!
//! Values are microseconds in an HdrHistogram with three significant digits, from 1 µs to
//! one hour. A worker process ships its histogram as the list of recorded (value, count)
//! buckets; the parent adds them into its own. Merging bucket lists is exact: the merged
//! histogram is the one a single process would have recorded.
//!
//! The histogram is allocated on the first value (about 190 KB with these bounds), so an
//! empty [`Latency`] costs nothing: every client's and every progress report's counters
//! carry one.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest trackable latency: one hour, in µs.
const MAX_MICROS: u64 = 3_600_000_000;

/// A latency histogram in microseconds.
#[derive(Clone, Default)]
pub struct Latency {
    /// `None` until something is recorded or merged in.
    hist: Option<Box<Histogram<u64>>>,
}

/// The recorded buckets, not the histogram's thousands of counters.
impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latency")
            .field("buckets", &self.to_buckets())
            .finish()
    }
}

/// Two histograms are equal when they recorded the same values (as buckets).
impl PartialEq for Latency {
    fn eq(&self, other: &Self) -> bool {
        self.to_buckets() == other.to_buckets()
    }
}

/// Percentile summary of a [`Latency`], in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    fn hist_mut(&mut self) -> &mut Histogram<u64> {
        self.hist.get_or_insert_with(|| {
            // Bounds and precision are constants that hdrhistogram accepts.
            Box::new(Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid bounds"))
        })
    }

    /// Records one latency; values beyond the range are clamped to it.
    pub fn record_micros(&mut self, micros: u64) {
        self.hist_mut().saturating_record(micros.max(1));
    }

    /// Number of values recorded.
    pub fn len(&self) -> u64 {
        self.hist.as_ref().map_or(0, |h| h.len())
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds everything `other` recorded.
    pub fn merge(&mut self, other: &Latency) {
        if let Some(theirs) = other.hist.as_deref().filter(|h| !h.is_empty()) {
            // Same bounds on both sides, so adding cannot fail.
            self.hist_mut().add(theirs).expect("same bounds");
        }
    }

    /// The value at `quantile` (0.0–1.0), in µs; 0 when empty.
    pub fn quantile(&self, quantile: f64) -> u64 {
        self.hist
            .as_ref()
            .map_or(0, |h| h.value_at_quantile(quantile))
    }

    /// The standard percentiles (all 0 when empty).
    pub fn summary(&self) -> Summary {
        let Some(h) = self.hist.as_deref().filter(|h| !h.is_empty()) else {
            return Summary::default();
        };
        Summary {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }

    /// The recorded buckets, for shipping to another process.
    pub fn to_buckets(&self) -> Vec<(u64, u64)> {
        self.hist.as_ref().map_or_else(Vec::new, |h| {
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect()
        })
    }

    /// Rebuilds a histogram from [`Latency::to_buckets`].
    pub fn from_buckets(buckets: &[(u64, u64)]) -> Self {
        let mut l = Self::new();
        for &(value, count) in buckets {
            // Values came out of a histogram with the same bounds; a value from elsewhere
            // is clamped like a recorded one.
            let _ = l.hist_mut().record_n(value.clamp(1, MAX_MICROS), count);
        }
        l
    }
}

impl Serialize for Latency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_buckets().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Latency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let buckets = Vec::<(u64, u64)>::deserialize(d)?;
        Ok(Self::from_buckets(&buckets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_shipped_histograms_equals_recording_in_one() {
        let mut whole = Latency::new();
        let mut parts = vec![Latency::new(), Latency::new(), Latency::new()];
        for i in 0..30_000u64 {
            let v = (i * 7919) % 100_000 + 1;
            whole.record_micros(v);
            parts[(i % 3) as usize].record_micros(v);
        }
        let mut merged = Latency::new();
        for p in &parts {
            let json = serde_json::to_string(p).expect("serializes");
            let back: Latency = serde_json::from_str(&json).expect("deserializes");
            merged.merge(&back);
        }
        assert_eq!(merged.summary(), whole.summary());
        assert_eq!(merged.len(), 30_000);
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut l = Latency::new();
        for v in 1..=1000 {
            l.record_micros(v);
        }
        let s = l.summary();
        assert_eq!(
            (s.p50_us, s.p90_us, s.p99_us, s.max_us),
            (500, 900, 990, 1000)
        );
    }

    #[test]
    fn out_of_range_values_are_clamped() {
        let mut l = Latency::new();
        l.record_micros(0);
        l.record_micros(u64::MAX);
        assert_eq!(l.len(), 2);
        assert!(l.summary().max_us >= MAX_MICROS);
    }
}
