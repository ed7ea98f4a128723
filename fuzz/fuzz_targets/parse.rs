//! Request and reply parsers on arbitrary lines: whatever parses re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcpchat_proto::{Command, Reply, Request};

fuzz_target!(|line: &[u8]| {
    match Request::parse(line) {
        Ok(req) => {
            let encoded = req.to_line();
            assert_eq!(&encoded[..encoded.len() - 1], line);
        }
        Err(e) => assert_eq!(e.command(), Command::of_line(line)),
    }
    if let Ok(reply) = Reply::parse(line) {
        // Reply parsing is lenient about LIST-OK with no names ("LIST-OK" and "LIST-OK ");
        // everything else must round-trip exactly.
        let encoded = reply.to_line();
        let encoded = &encoded[..encoded.len() - 1];
        if !matches!(&reply, Reply::ListOk(names) if names.is_empty()) {
            assert_eq!(encoded, line);
        }
        assert_eq!(Reply::parse(encoded).as_ref(), Ok(&reply));
    }
});
