//! Request and reply parsers on arbitrary lines; the body and its invariants are
//! `tcpchat_fuzz_targets::parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|line: &[u8]| tcpchat_fuzz_targets::parse(line));
