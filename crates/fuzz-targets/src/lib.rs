//! The bodies of the fuzz targets in `fuzz/`, as ordinary functions.
//!
//! Each function takes the raw bytes a fuzzer generates, runs them through one entry point of
//! the protocol or trace libraries and asserts an invariant (a panic is a finding). The
//! cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`, nightly only) are one-line calls into this
//! crate; the test in `tests/seeds.rs` runs the same functions over the seed inputs committed
//! in `fuzz/seeds/`, so the normal test suite builds and exercises them on stable.
//!
//! It is a crate of its own, not a module of `proto` or `trace`, so that neither library
//! carries fuzzing code in its API, and so the trace target can use both. Searching for new
//! inputs remains cargo-fuzz's job; this crate only replays known ones.

mod framing;
mod parsing;
mod trace_reading;

pub use framing::framer;
pub use parsing::parse;
pub use trace_reading::trace_reader;
