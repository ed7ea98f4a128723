//! The bench's message bodies: what each one carries and how a recipient checks it.
//!
//! A body is `<sender> <seq> <intended-ns> ` padded with `.` to the requested size. The
//! sender index and sequence number let the recipient check per-sender order and notice
//! losses; the intended send time (nanoseconds since the run's clock origin, see
//! [`crate::pacing`]) lets it measure latency without coordinated omission. The padding is
//! regenerated and compared, so a server that mangles or truncates a body is caught.

/// Smallest body that holds the header fields with room for the widest values.
pub const MIN_BODY_BYTES: usize = 48;

/// What a received body said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Global index of the sending client.
    pub sender: u32,
    /// The sender's message number, from 0.
    pub seq: u64,
    /// When the message was meant to be sent, in ns since the clock origin.
    pub intended_ns: u64,
}

/// Why a body is not one the bench sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body does not start with sender, sequence and time")]
    Header,
    #[error("body is {got} bytes, expected {want}")]
    Length { got: usize, want: usize },
    #[error("body padding was altered")]
    Padding,
}

/// Appends a body of exactly `size` bytes (at least [`MIN_BODY_BYTES`]).
pub fn encode(out: &mut Vec<u8>, size: usize, header: Header) {
    use std::io::Write;
    let start = out.len();
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "{} {} {} ",
        header.sender, header.seq, header.intended_ns
    );
    let used = out.len() - start;
    out.resize(start + size.max(used), b'.');
}

/// Parses and checks a body produced by [`encode`] with the same `size`.
///
/// # Errors
/// The body is not well formed, has the wrong length, or its padding changed.
pub fn decode(body: &[u8], size: usize) -> Result<Header, BodyError> {
    let mut fields = body.splitn(4, |b| *b == b' ');
    let mut num = || -> Result<u64, BodyError> {
        let f = fields.next().ok_or(BodyError::Header)?;
        decimal(f).ok_or(BodyError::Header)
    };
    let sender = u32::try_from(num()?).map_err(|_| BodyError::Header)?;
    let seq = num()?;
    let intended_ns = num()?;
    let padding = fields.next().ok_or(BodyError::Header)?;
    if body.len() != size {
        return Err(BodyError::Length {
            got: body.len(),
            want: size,
        });
    }
    if padding.iter().any(|b| *b != b'.') {
        return Err(BodyError::Padding);
    }
    Ok(Header {
        sender,
        seq,
        intended_ns,
    })
}

/// A decimal number as [`encode`] writes one: 1 to 20 ASCII digits, no sign, no overflow.
/// (The bench reads millions a second; `str::parse` would first check UTF-8.)
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        let d = d.wrapping_sub(b'0');
        (d < 10).then_some(())?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Per-sender order check: each sender's messages must arrive as 0, 1, 2, ...
#[derive(Debug, Default, Clone)]
pub struct OrderCheck {
    next: u64,
    /// Messages that arrived out of sequence (a gap, a repeat or a reordering).
    pub violations: u64,
}

impl OrderCheck {
    /// Records message `seq`; returns false if it was not the next one expected.
    pub fn observe(&mut self, seq: u64) -> bool {
        let ok = seq == self.next;
        if !ok {
            self.violations += 1;
        }
        self.next = self.next.max(seq + 1);
        ok
    }

    /// How many messages in sequence have arrived (the next expected number).
    pub fn received(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_at_sizes() {
        for size in [MIN_BODY_BYTES, 64, 100, 512] {
            let h = Header {
                sender: 19_999,
                seq: 1 << 40,
                intended_ns: u64::MAX / 3,
            };
            let mut out = b"prefix".to_vec();
            encode(&mut out, size, h);
            assert_eq!(out.len(), 6 + size);
            assert_eq!(decode(&out[6..], size), Ok(h));
        }
    }

    #[test]
    fn altered_bodies_are_caught() {
        let mut out = Vec::new();
        encode(
            &mut out,
            64,
            Header {
                sender: 1,
                seq: 2,
                intended_ns: 3,
            },
        );
        let mut padded = out.clone();
        *padded.last_mut().expect("non-empty") = b'x';
        assert_eq!(decode(&padded, 64), Err(BodyError::Padding));
        assert_eq!(
            decode(&out[..63], 64),
            Err(BodyError::Length { got: 63, want: 64 })
        );
        assert_eq!(decode(b"hello world", 64), Err(BodyError::Header));
        assert_eq!(decode(b"", 64), Err(BodyError::Header));
    }

    proptest::proptest! {
        /// The hand-written number parser agrees with `str::parse` on digit strings, and
        /// refuses everything `encode` never writes (signs, spaces, overflow, nothing).
        #[test]
        fn decimal_is_str_parse_on_what_encode_writes(field in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24)) {
            let std = std::str::from_utf8(&field).ok().filter(|s| !s.starts_with('+')).and_then(|s| s.parse::<u64>().ok());
            proptest::prop_assert_eq!(decimal(&field), std);
        }

        #[test]
        fn any_header_round_trips(sender in proptest::prelude::any::<u32>(), seq in proptest::prelude::any::<u64>(), intended_ns in proptest::prelude::any::<u64>(), extra in 0usize..64) {
            let h = Header { sender, seq, intended_ns };
            let size = 64 + extra;
            let mut out = Vec::new();
            encode(&mut out, size, h);
            proptest::prop_assert_eq!(decode(&out, size), Ok(h));
        }
    }

    #[test]
    fn decimal_edges() {
        assert_eq!(decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(decimal(b"18446744073709551616"), None);
        assert_eq!(decimal(b"00000000000000000000"), Some(0));
        assert_eq!(decimal(b"000000000000000000001"), None);
        for bad in [&b""[..], b"+1", b"-1", b"1 ", b"1.", b"x"] {
            assert_eq!(decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn order_check_counts_gaps_repeats_and_reorders() {
        let cases: &[(&[u64], u64, u64)] = &[
            (&[0, 1, 2, 3], 0, 4),
            (&[0, 2, 3], 1, 4),
            (&[0, 1, 1, 2], 1, 3),
            (&[1, 0, 2], 2, 3),
            (&[], 0, 0),
        ];
        for (seqs, violations, received) in cases {
            let mut c = OrderCheck::default();
            for s in *seqs {
                c.observe(*s);
            }
            assert_eq!(
                (c.violations, c.received()),
                (*violations, *received),
                "{seqs:?}"
            );
        }
    }
}
