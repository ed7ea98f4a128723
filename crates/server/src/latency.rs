//! Server-side delivery latency: from the read that brought a `SEND` to the write that puts
//! its `DELIVERY` on the recipient's socket.
//!
//! A load generator's latency includes its own lateness (timers, its scheduler, its reads).
//! This figure is the server's share alone, so the two can be told apart
//! (`docs/performance.md`, "Where the tail comes from").
//!
//! How it is carried, and what it costs:
//!
//! - The connection reads the clock once per read batch anyway (`connection::read_some`);
//!   that instant is put in a task-local ([`scope`]) while the batch's lines are handled. A
//!   task-local, not a thread-local, because handling may await (a cluster hub, accounts)
//!   and resume on another worker thread.
//! - [`crate::MemoryHub::deliver_to`] passes [`read_at`] to the recipient's outbox, which
//!   keeps only the *oldest* stamp of what it holds and a count of stamped lines
//!   ([`Stamp`]): a compare and an add under the lock it already takes. Nothing is
//!   allocated per message.
//! - When the write that completes a batch returns, its connection reads the clock once and
//!   records the batch in [`DeliveryLatency`]: every stamped line in it counted at the
//!   oldest one's wait (an upper bound for the others). Atomics only; no lock.
//!
//! With metrics off nothing is stamped, and the only cost left is the task-local's swap per
//! read batch. Deliveries that arrive from another node (cluster) carry no stamp: their
//! read happened elsewhere; the figure covers local deliveries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

tokio::task_local! {
    static READ_AT: Option<Instant>;
}

/// Runs `handle` (the handling of one read batch) with `read_at` as the batch's stamp.
///
/// A plain function returning tokio's scope future, not an `async fn`: an `async fn` would
/// keep its moved `handle` argument beside the scope future holding it, doubling the space
/// the connection task reserves for line handling (768 B more per idle connection, measured).
pub(crate) fn scope<F: std::future::Future>(
    read_at: Option<Instant>,
    handle: F,
) -> impl std::future::Future<Output = F::Output> {
    READ_AT.scope(read_at, handle)
}

/// The stamp of the read batch being handled on this task, if any.
pub(crate) fn read_at() -> Option<Instant> {
    READ_AT.try_with(|at| *at).ok().flatten()
}

/// The oldest read stamp among an outbox's lines, and how many stamped lines it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub oldest: Instant,
    pub lines: u32,
}

impl Stamp {
    /// `stamp` with one more line, read at `at`.
    pub(crate) fn with(stamp: Option<Stamp>, at: Instant) -> Stamp {
        match stamp {
            None => Stamp {
                oldest: at,
                lines: 1,
            },
            Some(s) => Stamp {
                oldest: s.oldest.min(at),
                lines: s.lines.saturating_add(1),
            },
        }
    }
}

/// Upper bounds of the buckets, in microseconds: fine enough around 0.1–5 ms to place a
/// p99.9 at chat rates, up to a second. One more bucket, `+Inf`, follows.
pub const BUCKET_BOUNDS_US: [u64; 25] = [
    5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1_000, 1_500, 2_000, 3_000, 5_000,
    7_500, 10_000, 20_000, 50_000, 100_000, 250_000, 1_000_000,
];
const BUCKETS: usize = BUCKET_BOUNDS_US.len() + 1;

/// A histogram of delivery latency made of plain atomics, so recording from every worker
/// thread takes no lock (prometheus-client's own `Histogram` takes a write lock per
/// observation). Encodes as an OpenMetrics histogram in seconds. Clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct DeliveryLatency(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl DeliveryLatency {
    /// `lines` deliveries written after waiting `wait` (the oldest's).
    pub fn record(&self, wait: Duration, lines: u32) {
        let us = u64::try_from(wait.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKET_BOUNDS_US.partition_point(|&bound| bound < us);
        let n = u64::from(lines);
        let c = &self.0;
        c.buckets[i].fetch_add(n, Ordering::Relaxed);
        c.count.fetch_add(n, Ordering::Relaxed);
        let ns = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
        c.sum_ns.fetch_add(ns.saturating_mul(n), Ordering::Relaxed);
    }

    /// Deliveries recorded so far.
    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }
}

impl TypedMetric for DeliveryLatency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for DeliveryLatency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = [(0.0, 0); BUCKETS];
        for (i, slot) in buckets.iter_mut().enumerate() {
            let bound = BUCKET_BOUNDS_US
                .get(i)
                .map_or(f64::MAX, |&us| us as f64 / 1e6);
            *slot = (bound, self.0.buckets[i].load(Ordering::Relaxed));
        }
        // The count as the buckets' sum, so a scrape racing a record stays consistent.
        let count = buckets.iter().map(|b| b.1).sum();
        let sum = self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_inclusive_upper_bounds() {
        let h = DeliveryLatency::default();
        h.record(Duration::from_micros(5), 1);
        h.record(Duration::from_micros(6), 2);
        h.record(Duration::from_secs(5), 1);
        assert_eq!(h.0.buckets[0].load(Ordering::Relaxed), 1);
        assert_eq!(h.0.buckets[1].load(Ordering::Relaxed), 2);
        assert_eq!(h.0.buckets[BUCKETS - 1].load(Ordering::Relaxed), 1);
        assert_eq!(h.count(), 4);
    }

    #[test]
    fn stamps_keep_the_oldest() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(1);
        let s = Stamp::with(Some(Stamp::with(None, t1)), t0);
        assert_eq!(
            s,
            Stamp {
                oldest: t0,
                lines: 2
            }
        );
    }

    #[tokio::test]
    async fn the_stamp_is_seen_only_inside_its_scope() {
        let t0 = Instant::now();
        assert_eq!(read_at(), None);
        let inside = scope(Some(t0), async {
            tokio::task::yield_now().await;
            read_at()
        })
        .await;
        assert_eq!(inside, Some(t0));
        assert_eq!(read_at(), None);
    }
}
