//! Every fuzz target over its committed seeds (`fuzz/seeds/<target>/`), and over prefixes of
//! each seed (a truncated read, a capture cut short), on the stable toolchain.
//!
//! cargo-fuzz uses the same directories as starting points (see the README); it is what finds
//! new inputs. A seed that once crashed a target belongs here, named for what it exercises.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// Prefixes tried per seed, spread evenly, so a large capture costs a bounded number of runs.
const PREFIXES_PER_SEED: usize = 64;

/// The seeds of `target`, by file name, sorted.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the seeds in {}: {e}", dir.display()));
    let mut seeds: Vec<(String, Vec<u8>)> = entries
        .map(|entry| {
            let path = entry.expect("list a seed directory").path();
            let data = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("cannot read seed {}: {e}", path.display()));
            (
                path.file_name().expect("a file").to_string_lossy().into(),
                data,
            )
        })
        .collect();
    seeds.sort();
    seeds
}

/// Runs `body` on every seed of `target` and on prefixes of it; fails listing every input that
/// panicked (each panic's message is printed above by the panic hook).
fn replay(target: &str, min_seeds: usize, body: fn(&[u8])) {
    let seeds = seeds(target);
    assert!(
        seeds.len() >= min_seeds,
        "fuzz/seeds/{target} holds {} seeds, expected at least {min_seeds}",
        seeds.len()
    );
    let mut failed = Vec::new();
    let mut runs = 0;
    for (name, data) in &seeds {
        let step = (data.len() / PREFIXES_PER_SEED).max(1);
        let mut cuts: Vec<usize> = (0..data.len()).step_by(step).collect();
        cuts.push(data.len());
        for cut in cuts {
            runs += 1;
            if catch_unwind(AssertUnwindSafe(|| body(&data[..cut]))).is_err() {
                failed.push(format!("{name} (first {cut} of {} bytes)", data.len()));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {runs} inputs broke an invariant:\n  {}",
        failed.len(),
        failed.join("\n  ")
    );
}

#[test]
fn framer_seeds() {
    replay("framer", 20, tcpchat_fuzz_targets::framer);
}

#[test]
fn parse_seeds() {
    replay("parse", 30, tcpchat_fuzz_targets::parse);
}

#[test]
fn trace_reader_seeds() {
    replay("trace_reader", 20, tcpchat_fuzz_targets::trace_reader);
}
