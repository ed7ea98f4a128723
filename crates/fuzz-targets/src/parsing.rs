//! Request and reply parsers on arbitrary lines.

use tcpchat_proto::{Command, Reply, Request};

/// The `parse` fuzz target: `line` is one line without its `\n`.
///
/// # Panics
/// When a request that parses does not re-encode to the same bytes, a request error names a
/// different command than the line starts with, or a reply that parses does not re-encode to
/// the same bytes (except `LIST-OK` with no names, which parsing accepts in two spellings) or
/// does not parse back to itself.
pub fn parse(line: &[u8]) {
    match Request::parse(line) {
        Ok(req) => {
            let encoded = req.to_line();
            assert_eq!(&encoded[..encoded.len() - 1], line, "request roundtrip");
        }
        Err(e) => assert_eq!(
            e.command(),
            Command::of_line(line),
            "error names the command"
        ),
    }
    if let Ok(reply) = Reply::parse(line) {
        // Reply parsing is lenient about LIST-OK with no names ("LIST-OK" and "LIST-OK ");
        // everything else must round-trip exactly.
        let encoded = reply.to_line();
        let encoded = &encoded[..encoded.len() - 1];
        if !matches!(&reply, Reply::ListOk(names) if names.is_empty()) {
            assert_eq!(encoded, line, "reply roundtrip");
        }
        assert_eq!(Reply::parse(encoded).as_ref(), Ok(&reply), "reply reparse");
    }
}
