//! One connection's command rate: a burst, then a steady rate; over it, lines wait.
//!
//! Waiting instead of refusing keeps the classic protocol intact: a client over the rate gets
//! the same replies, in the same order, only later. While the connection loop waits it reads
//! nothing more from that socket, so the flooder's own TCP window closes and it costs the
//! server no memory. A connection that keeps the bucket empty for the flood timeout is
//! flooding, not bursting, and is told to go (InspIRCd's "Excess Flood"; Ergo's fakelag only
//! ever waits).

use std::time::{Duration, Instant};

use super::gcra::Gcra;
use super::CommandRate;

/// What the connection loop does with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Handle the line now.
    Now,
    /// Sleep this long, then handle the line. Reading the next line waits too; other work
    /// (writing replies and deliveries, timeouts, shutdown) goes on.
    After(Duration),
    /// The connection has been flooding for the flood timeout: close it without handling the
    /// line. Every later call says the same.
    Disconnect,
}

/// The command-rate state of one connection. Call [`TokenBucket::handle_request`] once per
/// line, in order, before handling it.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    gcra: Gcra,
    flood_timeout: Duration,
    /// When the current run of delayed lines began: every line since has had to wait.
    empty_since: Option<Instant>,
    flooded: bool,
}

impl TokenBucket {
    /// A full bucket at `now` (a new connection may send its whole burst at once).
    pub fn new(settings: CommandRate, now: Instant) -> Self {
        Self {
            gcra: Gcra::new(settings.rate, now),
            flood_timeout: settings.flood_timeout,
            empty_since: None,
            flooded: false,
        }
    }

    /// A line arrived (or was taken from the read buffer) at `now`: handle it now, after a
    /// wait, or disconnect.
    ///
    /// Lines come out in the order they go in, with non-decreasing handling times, however
    /// the caller interleaves calls and sleeps; a line that finds a token left resets the
    /// flood clock. [`Admit::Disconnect`] comes when a line would be handled more than the
    /// flood timeout after the run of waiting lines began, which also bounds the delay a
    /// caller that schedules a whole batch at once can build up.
    pub fn handle_request(&mut self, now: Instant) -> Admit {
        if self.flooded {
            return Admit::Disconnect;
        }
        let at = self.gcra.earliest(now);
        if at <= now {
            self.empty_since = None;
            self.gcra.take(now);
            return Admit::Now;
        }
        let since = *self.empty_since.get_or_insert(now);
        if at.saturating_duration_since(since) > self.flood_timeout {
            self.flooded = true;
            return Admit::Disconnect;
        }
        self.gcra.take(now);
        Admit::After(at - now)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::limits::Rate;

    fn bucket(burst: u32, per_second: u32, flood_timeout_ms: u64, now: Instant) -> TokenBucket {
        TokenBucket::new(
            CommandRate {
                rate: Rate::new(burst, per_second).expect("non-zero"),
                flood_timeout: Duration::from_millis(flood_timeout_ms),
            },
            now,
        )
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A connection loop that sleeps for every `After`: each line's arrival is `max(when the
    /// peer sent it, when the previous line was handled)`. Returns each line's outcome and
    /// the time it was handled.
    fn drive(bucket: &mut TokenBucket, t0: Instant, sent: &[Duration]) -> Vec<(Admit, Instant)> {
        let mut free_at = t0;
        let mut out = Vec::new();
        for &offset in sent {
            let now = (t0 + offset).max(free_at);
            let admit = bucket.handle_request(now);
            let handled = match admit {
                Admit::Now => now,
                Admit::After(d) => now + d,
                Admit::Disconnect => {
                    out.push((admit, now));
                    break;
                }
            };
            free_at = handled;
            out.push((admit, handled));
        }
        out
    }

    #[test]
    fn outcomes_for_arrival_patterns() {
        use Admit::*;
        struct Case {
            name: &'static str,
            burst: u32,
            per_second: u32,
            flood_timeout_ms: u64,
            sent_ms: &'static [u64],
            want: Vec<Admit>,
        }
        let cases = [
            Case {
                name: "a burst within the bucket goes at once",
                burst: 3,
                per_second: 10,
                flood_timeout_ms: 1_000,
                sent_ms: &[0, 0, 0],
                want: vec![Now, Now, Now],
            },
            Case {
                name: "past the burst, lines wait one interval each",
                burst: 2,
                per_second: 10,
                flood_timeout_ms: 1_000,
                sent_ms: &[0, 0, 0, 0],
                want: vec![Now, Now, After(ms(100)), After(ms(100))],
            },
            Case {
                name: "a line sent halfway through an interval waits the rest",
                burst: 1,
                per_second: 10,
                flood_timeout_ms: 1_000,
                sent_ms: &[0, 50],
                want: vec![Now, After(ms(50))],
            },
            Case {
                name: "a pause refills the bucket",
                burst: 2,
                per_second: 10,
                flood_timeout_ms: 1_000,
                sent_ms: &[0, 0, 200, 200],
                want: vec![Now, Now, Now, Now],
            },
            Case {
                name: "lines at exactly the steady rate never wait",
                burst: 1,
                per_second: 10,
                flood_timeout_ms: 1_000,
                sent_ms: &[0, 100, 200, 300, 400],
                want: vec![Now, Now, Now, Now, Now],
            },
            Case {
                name: "a flood is disconnected once it has waited for the flood timeout",
                burst: 1,
                per_second: 10,
                flood_timeout_ms: 250,
                sent_ms: &[0, 0, 0, 0, 0],
                // Waiting began at 0; the 4th line would go at 300 ms > 250 ms.
                want: vec![Now, After(ms(100)), After(ms(100)), Disconnect],
            },
            Case {
                name: "a line that finds a token resets the flood clock",
                burst: 1,
                per_second: 10,
                flood_timeout_ms: 150,
                // Without the reset, the 4th line would be 500 ms into the run and go.
                sent_ms: &[0, 0, 400, 400, 400],
                want: vec![Now, After(ms(100)), Now, After(ms(100)), Disconnect],
            },
        ];
        for case in cases {
            let t0 = Instant::now();
            let mut b = bucket(case.burst, case.per_second, case.flood_timeout_ms, t0);
            let sent: Vec<_> = case.sent_ms.iter().map(|&m| ms(m)).collect();
            let got: Vec<Admit> = drive(&mut b, t0, &sent)
                .into_iter()
                .map(|(a, _)| a)
                .collect();
            assert_eq!(got, case.want, "{}", case.name);
        }
    }

    #[test]
    fn a_flooder_gets_its_burst_plus_the_rate_for_the_flood_timeout_then_goes() {
        let t0 = Instant::now();
        let mut b = bucket(10, 10, 1_000, t0);
        let out = drive(&mut b, t0, &[Duration::ZERO; 100]);
        let handled = out.iter().filter(|(a, _)| *a != Admit::Disconnect).count();
        // 10 at once, then one every 100 ms for the 1 s flood timeout.
        assert_eq!(handled, 20);
        assert_eq!(out.last().map(|(a, _)| *a), Some(Admit::Disconnect));
        assert_eq!(
            b.handle_request(t0 + ms(60_000)),
            Admit::Disconnect,
            "sticky"
        );
    }

    #[test]
    fn a_batch_scheduled_at_once_is_cut_off_at_the_flood_timeout() {
        // A caller that asks for every buffered line at the same instant, without sleeping.
        let t0 = Instant::now();
        let mut b = bucket(1, 10, 1_000, t0);
        let mut last = Admit::Now;
        let mut handled = 0;
        for _ in 0..100 {
            last = b.handle_request(t0);
            if last == Admit::Disconnect {
                break;
            }
            handled += 1;
        }
        assert_eq!(last, Admit::Disconnect);
        assert_eq!(
            handled, 11,
            "the first at once, then 10 scheduled within 1 s"
        );
    }

    #[test]
    fn the_defaults_let_check_s_bursts_and_a_fast_typist_through_untouched() {
        let t0 = Instant::now();
        let settings = crate::limits::Limits::default()
            .command_rate
            .expect("on by default");
        // `tcpchat check`'s message-order case: a login and 100 SENDs in one write.
        let mut b = TokenBucket::new(settings, t0);
        for i in 0..101 {
            assert_eq!(b.handle_request(t0), Admit::Now, "line {i}");
        }
        // A typist sending a line a second for an hour, with a pasted 150 lines every minute.
        let mut b = TokenBucket::new(settings, t0);
        for s in 0..3_600u64 {
            let now = t0 + Duration::from_secs(s);
            let lines = if s % 60 == 0 { 150 } else { 1 };
            for _ in 0..lines {
                assert_eq!(b.handle_request(now), Admit::Now, "second {s}");
            }
        }
    }

    proptest! {
        /// However lines arrive, at most `burst + per_second × t` are handled in any window of
        /// length `t`, in order, and never after a disconnect.
        #[test]
        fn never_more_than_the_burst_plus_the_rate(
            burst in 1u32..20,
            per_second in 1u32..50,
            flood_timeout_ms in 0u64..5_000,
            gaps_ms in proptest::collection::vec(0u64..300, 1..200),
        ) {
            let t0 = Instant::now();
            let mut b = bucket(burst, per_second, flood_timeout_ms, t0);
            let mut sent = Vec::new();
            let mut at = Duration::ZERO;
            for gap in gaps_ms {
                at += ms(gap);
                sent.push(at);
            }
            let handled: Vec<Instant> = drive(&mut b, t0, &sent)
                .into_iter()
                .filter(|(a, _)| *a != Admit::Disconnect)
                .map(|(_, t)| t)
                .collect();
            for w in handled.windows(2) {
                prop_assert!(w[0] <= w[1], "out of order");
            }
            for i in 0..handled.len() {
                for j in i..handled.len() {
                    let n = (j - i + 1) as u128;
                    let window = (handled[j] - handled[i]).as_nanos();
                    // n ≤ burst + per_second × window, in integers.
                    prop_assert!(
                        n.saturating_sub(u128::from(burst)) * 1_000_000_000
                            <= window * u128::from(per_second),
                        "{n} lines in {window} ns with burst {burst}, {per_second}/s"
                    );
                }
            }
        }

        /// A sender that never exceeds the steady rate never waits and is never disconnected.
        #[test]
        fn a_paced_sender_is_never_touched(
            burst in 1u32..20,
            per_second in 1u32..50,
            slack_ms in proptest::collection::vec(0u64..100, 1..200),
        ) {
            let t0 = Instant::now();
            let interval = Rate::new(burst, per_second).expect("non-zero").interval();
            let mut b = bucket(burst, per_second, 0, t0);
            let mut now = t0;
            for slack in slack_ms {
                prop_assert_eq!(b.handle_request(now), Admit::Now);
                now += interval + ms(slack);
            }
        }
    }
}
