//! What a run counts, in one type with one merge.
//!
//! A client counts into its own [`Counters`]; a share merges its clients' into one; a worker
//! process ships its share's as JSON; the coordinator merges the shares' and builds the
//! [`crate::Report`] from the result. Every step is the same [`Counters::merge`], so a run
//! spread over processes adds up to exactly what one process would have counted. Merging is
//! associative and commutative (sums, maxima, minima, histogram additions; the only
//! order-dependent parts are the first failure and first problem, kept from whichever side
//! already has one, which is still associative), so shares can be merged in any grouping.

use serde::{Deserialize, Serialize};

use crate::stats::Latency;

/// Logins that did not succeed, by what went wrong.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failures {
    /// The connection was refused (nothing listening, or the backlog overflowed).
    pub refused: u64,
    /// `BUSY`, an IRC `ERROR` or error numeric.
    pub busy: u64,
    /// The name was taken.
    pub in_use: u64,
    /// No login reply within the login timeout.
    pub timeout: u64,
    /// The server closed or reset the connection before the login reply.
    pub closed: u64,
    /// The reply was not the expected protocol.
    pub protocol: u64,
    /// Anything else (e.g. out of local ports or descriptors).
    pub other: u64,
}

/// One kind of [`Failures`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Refused,
    Busy,
    InUse,
    Timeout,
    Closed,
    Protocol,
    Other,
}

impl Failures {
    /// All failures.
    pub fn total(&self) -> u64 {
        self.refused
            + self.busy
            + self.in_use
            + self.timeout
            + self.closed
            + self.protocol
            + self.other
    }

    /// Counts one failure of `kind`.
    pub fn record(&mut self, kind: Failure) {
        *match kind {
            Failure::Refused => &mut self.refused,
            Failure::Busy => &mut self.busy,
            Failure::InUse => &mut self.in_use,
            Failure::Timeout => &mut self.timeout,
            Failure::Closed => &mut self.closed,
            Failure::Protocol => &mut self.protocol,
            Failure::Other => &mut self.other,
        } += 1;
    }
}

/// Everything counted by one client, one share, or a whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Clients that logged in.
    pub logged_in: u64,
    /// Clients that did not, by why.
    pub failures: Failures,
    /// Connect-to-login time of each client that got in, µs.
    pub login_latency: Latency,
    /// From the start of the login phase to the last successful login, µs.
    pub all_in_us: u64,
    /// The first login failure, described, for the error message.
    pub first_failure: Option<String>,

    /// Messages sent.
    pub sent: u64,
    /// Messages received by their recipients.
    pub delivered: u64,
    /// Delivered before the measured phase ended (the rate's numerator).
    pub delivered_in_window: u64,
    /// `SEND-OK`s (classic only).
    pub acknowledged: u64,
    /// `BAD-DEST-USER` / IRC 401.
    pub send_failed: u64,
    /// Messages out of per-sender order.
    pub order_violations: u64,
    /// Bodies that were altered, truncated, or not from the expected sender.
    pub content_errors: u64,
    /// `BAD-RQST-*`, unparseable or unexpected lines.
    pub protocol_errors: u64,
    /// Clients whose connection ended during the run.
    pub disconnected: u64,
    /// Send-to-receive latency (from the intended send time), µs.
    pub latency: Latency,
    /// Open loop: how late each message was written into its sender's buffer after its
    /// intended send time, µs. The bench's own scheduling lag (its timer thread, the wakeup
    /// of the sending task), which every latency above includes.
    #[serde(default)]
    pub send_lag: Latency,
    /// Fewest and most messages received from one sender (fan-in fairness).
    pub per_sender_min: Option<u64>,
    pub per_sender_max: Option<u64>,

    /// `LIST-OK`s received during the measured phase that named exactly the run's clients.
    pub lists: u64,
    /// `LIST-OK`s that did not parse or named other than the run's clients.
    pub list_errors: u64,
    /// `LIST` to `LIST-OK` round trip, µs.
    pub list_latency: Latency,
    /// Open-loop `LIST` slots not used because the lister's last `LIST` was unanswered.
    pub list_skipped: u64,

    /// The first problem seen during the run, described.
    pub first_problem: Option<String>,
}

impl Counters {
    /// Adds `other`'s counts to these: sums, the wider of the extremes, both histograms'
    /// values, and the first failure and problem of whichever side has one (ours first).
    pub fn merge(&mut self, other: &Counters) {
        let o = other;
        self.logged_in += o.logged_in;
        let (f, g) = (&mut self.failures, &o.failures);
        f.refused += g.refused;
        f.busy += g.busy;
        f.in_use += g.in_use;
        f.timeout += g.timeout;
        f.closed += g.closed;
        f.protocol += g.protocol;
        f.other += g.other;
        self.login_latency.merge(&o.login_latency);
        self.all_in_us = self.all_in_us.max(o.all_in_us);
        first(&mut self.first_failure, &o.first_failure);

        self.sent += o.sent;
        self.delivered += o.delivered;
        self.delivered_in_window += o.delivered_in_window;
        self.acknowledged += o.acknowledged;
        self.send_failed += o.send_failed;
        self.order_violations += o.order_violations;
        self.content_errors += o.content_errors;
        self.protocol_errors += o.protocol_errors;
        self.disconnected += o.disconnected;
        self.latency.merge(&o.latency);
        self.send_lag.merge(&o.send_lag);
        self.per_sender_min = match (self.per_sender_min, o.per_sender_min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.per_sender_max = self.per_sender_max.max(o.per_sender_max);

        self.lists += o.lists;
        self.list_errors += o.list_errors;
        self.list_latency.merge(&o.list_latency);
        self.list_skipped += o.list_skipped;
        first(&mut self.first_problem, &o.first_problem);
    }

    /// The merge of all of `parts`.
    pub fn sum<'a>(parts: impl IntoIterator<Item = &'a Counters>) -> Counters {
        let mut total = Counters::default();
        for p in parts {
            total.merge(p);
        }
        total
    }

    /// Logins answered either way.
    pub fn logins_done(&self) -> u64 {
        self.logged_in + self.failures.total()
    }

    /// Notes `what` as the first problem unless there already is one.
    pub fn problem(&mut self, what: impl FnOnce() -> String) {
        self.first_problem.get_or_insert_with(what);
    }
}

fn first(ours: &mut Option<String>, theirs: &Option<String>) {
    if ours.is_none() {
        ours.clone_from(theirs);
    }
}

/// Generated counters for property tests here and in the report's.
#[cfg(test)]
pub(crate) mod strategy {
    use super::*;
    use proptest::prelude::*;

    /// Counters with every field set from the generated values, histograms included.
    pub(crate) fn counters() -> impl Strategy<Value = Counters> {
        let small = || 0u64..1_000_000;
        let samples = || proptest::collection::vec(1u64..10_000_000, 0..20);
        let text = || proptest::option::of("[a-c]{1,3}");
        (
            (
                proptest::array::uniform7(small()),
                small(),
                small(),
                samples(),
                text(),
            ),
            (proptest::array::uniform9(small()), samples()),
            (proptest::option::of(small()), proptest::option::of(small())),
            (proptest::array::uniform3(small()), samples(), text()),
        )
            .prop_map(|(login, msgs, fairness, lists)| {
                let (f, logged_in, all_in_us, login_samples, first_failure) = login;
                let mut c = Counters {
                    logged_in,
                    failures: Failures {
                        refused: f[0],
                        busy: f[1],
                        in_use: f[2],
                        timeout: f[3],
                        closed: f[4],
                        protocol: f[5],
                        other: f[6],
                    },
                    all_in_us,
                    first_failure,
                    sent: msgs.0[0],
                    delivered: msgs.0[1],
                    delivered_in_window: msgs.0[2],
                    acknowledged: msgs.0[3],
                    send_failed: msgs.0[4],
                    order_violations: msgs.0[5],
                    content_errors: msgs.0[6],
                    protocol_errors: msgs.0[7],
                    disconnected: msgs.0[8],
                    per_sender_min: fairness.0,
                    per_sender_max: fairness.1,
                    lists: lists.0[0],
                    list_errors: lists.0[1],
                    list_skipped: lists.0[2],
                    first_problem: lists.2,
                    ..Counters::default()
                };
                for s in login_samples {
                    c.login_latency.record_micros(s);
                }
                for s in msgs.1 {
                    c.latency.record_micros(s);
                    c.send_lag.record_micros(s / 3);
                }
                for s in lists.1 {
                    c.list_latency.record_micros(s);
                }
                c
            })
    }
}

#[cfg(test)]
mod tests {
    use super::strategy::counters;
    use super::*;
    use proptest::prelude::*;

    fn merged(a: &Counters, b: &Counters) -> Counters {
        let mut m = a.clone();
        m.merge(b);
        m
    }

    proptest! {
        // Each case allocates histograms of ~190 KB: fewer cases keep the debug build quick.
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn merge_is_associative(a in counters(), b in counters(), c in counters()) {
            prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        }

        #[test]
        fn the_empty_counters_change_nothing(a in counters()) {
            prop_assert_eq!(&merged(&a, &Counters::default()), &a);
            prop_assert_eq!(&merged(&Counters::default(), &a), &a);
        }

        /// A worker's counters cross the process boundary as JSON unchanged.
        #[test]
        fn json_round_trip(a in counters()) {
            let json = serde_json::to_string(&a).expect("serializes");
            let back: Counters = serde_json::from_str(&json).expect("deserializes");
            prop_assert_eq!(back, a);
        }
    }

    #[test]
    fn merge_adds_and_keeps_extremes() {
        let mut a = Counters {
            sent: 3,
            per_sender_min: Some(5),
            per_sender_max: Some(5),
            all_in_us: 10,
            ..Counters::default()
        };
        a.failures.record(Failure::Busy);
        let mut b = Counters {
            sent: 4,
            per_sender_min: Some(2),
            per_sender_max: Some(9),
            all_in_us: 7,
            first_problem: Some("late".into()),
            ..Counters::default()
        };
        b.failures.record(Failure::Timeout);
        b.latency.record_micros(100);
        a.merge(&b);
        assert_eq!(a.sent, 7);
        assert_eq!((a.per_sender_min, a.per_sender_max), (Some(2), Some(9)));
        assert_eq!(a.all_in_us, 10);
        assert_eq!(
            (a.failures.busy, a.failures.timeout, a.failures.total()),
            (1, 1, 2)
        );
        assert_eq!(a.latency.len(), 1);
        assert_eq!(a.first_problem.as_deref(), Some("late"));
    }
}
