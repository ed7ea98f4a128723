//! Framer + parser on arbitrary bytes, cut at arbitrary points.

use tcpchat_proto::{FrameError, Framer, Request};

/// The `framer` fuzz target.
///
/// Input: the first byte picks the line limit (1 to 64), the second a chunk size (1 to 17), the
/// rest is the stream. Shorter inputs do nothing.
///
/// # Panics
/// When an invariant breaks: a line contains `\n` or exceeds the limit, the framer holds more
/// than the limit after any call, an overlong head is longer than `limit + 1`, a request that
/// parses does not re-encode to its line, or cutting the stream into chunks changes the events.
pub fn framer(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let max = 1 + usize::from(first % 64);
    let Some((&step, payload)) = rest.split_first() else {
        return;
    };
    let step = 1 + usize::from(step % 17);
    let whole = events(max, &[payload]);
    let chunks: Vec<&[u8]> = payload.chunks(step).collect();
    assert_eq!(events(max, &chunks), whole, "chunking changed the events");
}

/// Everything the framer yields for `chunks`, overlong lines as `Err(head)`, checking each.
fn events(max: usize, chunks: &[&[u8]]) -> Vec<Result<Vec<u8>, Vec<u8>>> {
    let mut framer = Framer::new(max);
    let mut out = Vec::new();
    for chunk in chunks {
        let mut input = *chunk;
        loop {
            let event = match framer.next_line(&mut input) {
                Ok(Some(line)) => {
                    assert!(!line.contains(&b'\n'), "line holds a newline");
                    assert!(
                        line.len() <= max,
                        "line of {} bytes past limit {max}",
                        line.len()
                    );
                    if let Ok(req) = Request::parse(line) {
                        let encoded = req.to_line();
                        assert_eq!(
                            &encoded[..encoded.len() - 1],
                            line,
                            "parse/encode roundtrip"
                        );
                    }
                    Some(Ok(line.to_vec()))
                }
                Ok(None) => None,
                Err(FrameError::LineTooLong { limit, head }) => {
                    assert_eq!(limit, max);
                    assert!(
                        head.len() <= max + 1,
                        "overlong head of {} bytes",
                        head.len()
                    );
                    Some(Err(head))
                }
            };
            // After every call, including the `Ok(None)` that keeps an unfinished tail.
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
