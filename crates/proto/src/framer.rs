//! Cutting a byte stream into lines, with a hard bound on what is held.
//!
//! The framer keeps only the unfinished tail of the stream, never more than the line limit.
//! A line that grows past the limit is reported once, the moment it crosses the limit, and the
//! rest of it is skipped up to its `\n` without being stored (compare httparse's warning on
//! unbounded buffering). Lines are handed out as slices of the caller's input when they arrive
//! whole in one read, so the common case copies nothing.

use memchr::memchr;

/// How many leading bytes of an overlong line [`FrameError::LineTooLong`] keeps: enough for any
/// command word, so the caller can tell an overlong `SEND` from overlong garbage.
pub const OVERLONG_HEAD_BYTES: usize = 16;

/// A framing failure. The stream stays usable: the next line starts after the offending `\n`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A line longer than the limit. `head` holds its first bytes (at most
    /// [`OVERLONG_HEAD_BYTES`], and at most `limit + 1`); the rest was or will be discarded.
    #[error("line longer than {limit} bytes")]
    LineTooLong { limit: usize, head: Vec<u8> },
}

/// An incremental line framer: feed it each read's bytes, take lines out.
///
/// ```
/// use tcpchat_proto::Framer;
/// let mut framer = Framer::new(64);
/// let mut input: &[u8] = b"LIST\r\nSEND bo";
/// assert_eq!(framer.next_line(&mut input), Ok(Some(&b"LIST"[..])));
/// assert_eq!(framer.next_line(&mut input), Ok(None)); // "SEND bo" is kept
/// let mut more: &[u8] = b"b hi\n";
/// assert_eq!(framer.next_line(&mut more), Ok(Some(&b"SEND bob hi"[..])));
/// ```
#[derive(Debug)]
pub struct Framer {
    /// The unfinished line, or the finished line handed out by the last call.
    partial: Vec<u8>,
    /// `partial` holds a line already returned; clear it on the next call.
    returned_partial: bool,
    /// Skipping the rest of an overlong line.
    discarding: bool,
    max_line_bytes: usize,
}

/// Above this, the partial-line buffer is released instead of kept for reuse, so an idle
/// connection that once sent a long line does not hold its memory.
const KEEP_CAPACITY_BYTES: usize = 256;

impl Framer {
    /// A framer for lines of at most `max_line_bytes` bytes, not counting the `\n`.
    pub fn new(max_line_bytes: usize) -> Self {
        Self {
            partial: Vec::new(),
            returned_partial: false,
            discarding: false,
            max_line_bytes,
        }
    }

    /// The line limit this framer enforces.
    pub fn max_line_bytes(&self) -> usize {
        self.max_line_bytes
    }

    /// Bytes of an unfinished line currently held (never more than the limit).
    pub fn buffered_bytes(&self) -> usize {
        if self.returned_partial {
            0
        } else {
            self.partial.len()
        }
    }

    /// Bytes the framer stores right now: the unfinished line, or the line the last call
    /// returned out of the framer's own buffer (it lives there until the next call).
    ///
    /// Never more than the limit, after any call: this is the bound on what a peer can make the
    /// framer hold, whatever it sends. Unlike [`buffered_bytes`](Self::buffered_bytes) it counts
    /// a returned line, so tests and the fuzz target assert it after every call.
    pub fn held_bytes(&self) -> usize {
        self.partial.len()
    }

    /// True when the stream ended in the middle of a line (bytes after the last `\n`).
    pub fn has_partial_line(&self) -> bool {
        self.buffered_bytes() > 0 || self.discarding
    }

    /// Consumes bytes from the front of `input` until one line is complete, and returns it
    /// without its `\n` and without one trailing `\r`.
    ///
    /// Returns `Ok(None)` when `input` is used up without completing a line (the unfinished
    /// part is kept for the next call). Call again with the remaining `input` until it does.
    ///
    /// # Errors
    /// [`FrameError::LineTooLong`] once per line that exceeds the limit, as soon as it does.
    pub fn next_line<'s, 'i: 's>(
        &'s mut self,
        input: &mut &'i [u8],
    ) -> Result<Option<&'s [u8]>, FrameError> {
        if self.returned_partial {
            self.returned_partial = false;
            self.release_partial();
        }
        loop {
            if input.is_empty() {
                return Ok(None);
            }
            if self.discarding {
                match memchr(b'\n', input) {
                    Some(i) => {
                        *input = &input[i + 1..];
                        self.discarding = false;
                        continue;
                    }
                    None => {
                        *input = &[];
                        return Ok(None);
                    }
                }
            }
            let data: &'i [u8] = input;
            return match memchr(b'\n', data) {
                Some(i) => {
                    *input = &data[i + 1..];
                    let line = &data[..i];
                    if self.partial.len() + line.len() > self.max_line_bytes {
                        let head = self.overlong_head(line);
                        self.release_partial();
                        return Err(self.too_long(head));
                    }
                    if self.partial.is_empty() {
                        Ok(Some(strip_cr(line)))
                    } else {
                        self.partial.extend_from_slice(line);
                        self.returned_partial = true;
                        Ok(Some(strip_cr(&self.partial)))
                    }
                }
                None => {
                    *input = &[];
                    if self.partial.len() + data.len() > self.max_line_bytes {
                        let head = self.overlong_head(data);
                        self.release_partial();
                        self.discarding = true;
                        Err(self.too_long(head))
                    } else {
                        self.partial.extend_from_slice(data);
                        Ok(None)
                    }
                }
            };
        }
    }

    fn overlong_head(&self, rest: &[u8]) -> Vec<u8> {
        // Never more than limit + 1 bytes, which is all that is certain to be at hand when a
        // line crosses the limit: the head is then the same however the input was chunked.
        let want = OVERLONG_HEAD_BYTES.min(self.max_line_bytes + 1);
        let mut head = Vec::with_capacity(want);
        let from_partial = self.partial.len().min(want);
        head.extend_from_slice(&self.partial[..from_partial]);
        let from_rest = (want - from_partial).min(rest.len());
        head.extend_from_slice(&rest[..from_rest]);
        head
    }

    fn too_long(&self, head: Vec<u8>) -> FrameError {
        FrameError::LineTooLong {
            limit: self.max_line_bytes,
            head,
        }
    }

    fn release_partial(&mut self) {
        if self.partial.capacity() > KEEP_CAPACITY_BYTES {
            self.partial = Vec::new();
        } else {
            self.partial.clear();
        }
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Everything the framer yields for `chunks`, overlong lines as `Err(head)`.
    fn run(max: usize, chunks: &[&[u8]]) -> Vec<Result<Vec<u8>, Vec<u8>>> {
        let mut framer = Framer::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            let mut input = *chunk;
            loop {
                let event = match framer.next_line(&mut input) {
                    Ok(Some(line)) => Some(Ok(line.to_vec())),
                    Ok(None) => None,
                    Err(FrameError::LineTooLong { head, .. }) => Some(Err(head)),
                };
                // After every call, including the `Ok(None)` that keeps a tail: that is when
                // the framer holds the most.
                assert!(
                    framer.held_bytes() <= max,
                    "framer holds {} bytes, limit {max}",
                    framer.held_bytes()
                );
                match event {
                    Some(event) => out.push(event),
                    None => break,
                }
            }
        }
        out
    }

    fn ok(s: &str) -> Result<Vec<u8>, Vec<u8>> {
        Ok(s.as_bytes().to_vec())
    }

    #[test]
    fn splits_lines_and_strips_one_cr() {
        assert_eq!(
            run(100, &[b"a\nb\r\n\r\nc\r\r\n"]),
            vec![ok("a"), ok("b"), ok(""), ok("c\r")]
        );
    }

    #[test]
    fn joins_lines_split_over_reads() {
        assert_eq!(
            run(100, &[b"SEN", b"D bob h", b"i\r", b"\nLIST\n"]),
            vec![ok("SEND bob hi"), ok("LIST")]
        );
    }

    #[test]
    fn keeps_unfinished_tail() {
        let mut framer = Framer::new(10);
        let mut input: &[u8] = b"abc";
        assert_eq!(framer.next_line(&mut input), Ok(None));
        assert!(framer.has_partial_line());
        assert_eq!(framer.buffered_bytes(), 3);
        assert_eq!(framer.held_bytes(), 3);
        let mut end: &[u8] = b"de\n";
        assert_eq!(framer.next_line(&mut end), Ok(Some(&b"abcde"[..])));
        assert_eq!(framer.buffered_bytes(), 0, "nothing unfinished");
        assert_eq!(
            framer.held_bytes(),
            5,
            "the returned line lives in the framer"
        );
    }

    #[test]
    fn line_at_limit_passes_one_over_fails() {
        assert_eq!(run(4, &[b"abcd\n"]), vec![ok("abcd")]);
        assert_eq!(
            run(4, &[b"abcde\nok\n"]),
            vec![Err(b"abcde".to_vec()), ok("ok")]
        );
    }

    #[test]
    fn overlong_line_reported_once_and_skipped() {
        let big = vec![b'x'; 1000];
        let got = run(8, &[b"SEND bob ", &big, &big, b"tail\nLIST\n"]);
        assert_eq!(
            got,
            vec![Err(b"SEND bob ".to_vec()), ok("LIST")],
            "reported once, as soon as it crossed the limit, and the next line survives"
        );
    }

    #[test]
    fn overlong_head_spans_partial_and_input() {
        let got = run(15, &[b"SE", b"ND bob hello, world\n"]);
        assert_eq!(got, vec![Err(b"SEND bob hello, ".to_vec())]);
    }

    #[test]
    fn big_partial_buffer_is_released() {
        let mut framer = Framer::new(10_000);
        let mut input: &[u8] = &[b'y'; 5000];
        assert_eq!(framer.next_line(&mut input), Ok(None));
        let mut end: &[u8] = b"\n";
        assert_eq!(
            framer.next_line(&mut end).map(|l| l.map(<[u8]>::len)),
            Ok(Some(5000))
        );
        let mut nothing: &[u8] = b"";
        assert_eq!(framer.next_line(&mut nothing), Ok(None));
        assert_eq!(framer.partial.capacity(), 0);
    }

    fn chunked(data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        points.sort_unstable();
        let mut out = Vec::new();
        let mut last = 0;
        for p in points {
            out.push(data[last..p].to_vec());
            last = p;
        }
        out.push(data[last..].to_vec());
        out
    }

    proptest! {
        #[test]
        fn same_events_however_chunked(
            data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>()], 0..400),
            cuts in proptest::collection::vec(any::<usize>(), 0..20),
            max in 1usize..40,
        ) {
            let whole = run(max, &[&data]);
            let pieces = chunked(&data, &cuts);
            let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(run(max, &refs), whole);
        }

        #[test]
        fn byte_by_byte_equals_whole(data in proptest::collection::vec(any::<u8>(), 0..300), max in 1usize..50) {
            let whole = run(max, &[&data]);
            let bytes: Vec<[u8; 1]> = data.iter().map(|b| [*b]).collect();
            let refs: Vec<&[u8]> = bytes.iter().map(|b| &b[..]).collect();
            prop_assert_eq!(run(max, &refs), whole);
        }

        #[test]
        fn lines_match_split_and_respect_limit(
            lines in proptest::collection::vec(proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..30), 0..20),
            max in 1usize..30,
        ) {
            let mut data = Vec::new();
            for line in &lines {
                data.extend_from_slice(line);
                data.push(b'\n');
            }
            let got = run(max, &[&data]);
            prop_assert_eq!(got.len(), lines.len());
            for (g, want) in got.iter().zip(&lines) {
                if want.len() > max {
                    let head_len = want.len().min(OVERLONG_HEAD_BYTES).min(max + 1);
                    prop_assert_eq!(g, &Err(want[..head_len].to_vec()));
                } else {
                    prop_assert_eq!(g, &Ok(strip_cr(want).to_vec()));
                }
            }
        }
    }
}
