//! The capture reader and the analysis on arbitrary files; the body and its invariants are
//! `tcpchat_fuzz_targets::trace_reader`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tcpchat_fuzz_targets::trace_reader(data));
