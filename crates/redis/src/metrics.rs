//! The cluster's own series for `/metrics`, registered beside the server's (see
//! `tcpchat_server::metrics`): Redis call latency and failures, and whether this node hears
//! the other nodes (its subscription is up).
//!
//! Off ([`ClusterMetrics::off`]) every record is one branch. A Redis call is a network round
//! trip, so the histogram's own lock (prometheus-client keeps buckets behind one) is far
//! below what it measures; the in-process hot path never touches these.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

struct Inner {
    call_seconds: Histogram,
    errors: Counter,
    subscribed: Gauge,
    nodes_alive: Gauge,
}

/// A handle on the cluster's series; clones share them.
#[derive(Clone, Default)]
pub struct ClusterMetrics(Option<Arc<Inner>>);

impl std::fmt::Debug for ClusterMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "ClusterMetrics(on)"
        } else {
            "ClusterMetrics(off)"
        })
    }
}

impl ClusterMetrics {
    /// Records nothing.
    pub fn off() -> Self {
        Self(None)
    }

    /// Registers the series in `registry` (the server's, prefixed `tcpchat_`).
    pub fn register(registry: &mut Registry) -> Self {
        // 0.25 ms to ~4 s: a loopback Redis answers in well under a millisecond, a call
        // timeout is seconds.
        let call_seconds = Histogram::new(exponential_buckets(0.000_25, 2.0, 15));
        registry.register(
            "cluster_redis_call_duration_seconds",
            "Time for one Redis call (script) to answer or fail",
            call_seconds.clone(),
        );
        let errors = Counter::default();
        registry.register(
            "cluster_redis_errors",
            "Redis calls that failed or timed out",
            errors.clone(),
        );
        let subscribed = Gauge::default();
        registry.register(
            "cluster_subscribed",
            "1 while this node's subscription to its Redis channel is up (messages from other nodes can arrive), else 0",
            subscribed.clone(),
        );
        let nodes_alive = Gauge::default();
        registry.register(
            "cluster_nodes_alive",
            "Nodes holding a live lease in Redis, this one included (read every few renewals)",
            nodes_alive.clone(),
        );
        Self(Some(Arc::new(Inner {
            call_seconds,
            errors,
            subscribed,
            nodes_alive,
        })))
    }

    pub(crate) fn call(&self, took: Duration, ok: bool) {
        if let Some(m) = &self.0 {
            m.call_seconds.observe(took.as_secs_f64());
            if !ok {
                m.errors.inc();
            }
        }
    }

    /// Whether anyone reads these series: the keeper asks Redis for the live nodes only then.
    pub(crate) fn is_on(&self) -> bool {
        self.0.is_some()
    }

    pub(crate) fn nodes_alive(&self, n: i64) {
        if let Some(m) = &self.0 {
            m.nodes_alive.set(n);
        }
    }

    pub(crate) fn subscribed(&self, up: bool) {
        if let Some(m) = &self.0 {
            m.subscribed.set(i64::from(up));
        }
    }
}
