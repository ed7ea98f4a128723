//! Framer + parser on arbitrary bytes, cut at arbitrary points; the body and its invariants are
//! `tcpchat_fuzz_targets::framer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tcpchat_fuzz_targets::framer(data));
