//! Framer + parser on arbitrary bytes, cut at arbitrary points.
//!
//! Invariants checked, not just "no panic": lines never contain `\n`, never exceed the limit,
//! the framer never holds more than the limit, and chunking does not change the events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcpchat_proto::{FrameError, Framer, Request};

fn events(max: usize, chunks: &[&[u8]]) -> Vec<Result<Vec<u8>, Vec<u8>>> {
    let mut framer = Framer::new(max);
    let mut out = Vec::new();
    for chunk in chunks {
        let mut input = *chunk;
        loop {
            match framer.next_line(&mut input) {
                Ok(Some(line)) => {
                    assert!(!line.contains(&b'\n'), "line holds a newline");
                    assert!(line.len() <= max, "line of {} bytes past limit {max}", line.len());
                    if let Ok(req) = Request::parse(line) {
                        let encoded = req.to_line();
                        assert_eq!(&encoded[..encoded.len() - 1], line, "parse/encode roundtrip");
                    }
                    out.push(Ok(line.to_vec()));
                }
                Ok(None) => break,
                Err(FrameError::LineTooLong { limit, head }) => {
                    assert_eq!(limit, max);
                    assert!(head.len() <= max + 1);
                    out.push(Err(head));
                }
            }
            assert!(framer.buffered_bytes() <= max, "framer holds more than the limit");
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let max = 1 + usize::from(first % 64);
    // The second byte picks a chunk size for the split run.
    let Some((&step, payload)) = rest.split_first() else { return };
    let step = 1 + usize::from(step % 17);
    let whole = events(max, &[payload]);
    let chunks: Vec<&[u8]> = payload.chunks(step).collect();
    assert_eq!(events(max, &chunks), whole, "chunking changed the events");
});
