//! Protocol lines out of one direction's reassembled byte stream, and what they mean.
//!
//! Cutting is `tcpchat_proto::Framer`'s and parsing is `Request::parse` / `Reply::parse`, so
//! the trace reads the wire exactly as the server does; this module adds only what a reader of
//! a capture needs: how many segments carried each line, what happens to a line that a hole in
//! the capture cuts, and a sentence for each message.

use tcpchat_proto::{Command, Framer, Reply, ReplyError, Request, RequestError};

use crate::model::LineStatus;

/// A line cut from the stream, not yet decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLine {
    /// Without `\n` and one `\r` before it; for an overlong line, its first bytes.
    pub bytes: Vec<u8>,
    /// Bytes on the wire, terminator included (for an overlong line, as far as seen).
    pub wire_bytes: u64,
    pub segments: u32,
    pub status: LineStatus,
}

/// Cuts one direction's stream into lines, remembering how many pushes (segments) each
/// line spans.
#[derive(Debug)]
pub struct LineSplitter {
    framer: Framer,
    /// Segments that contributed to the unfinished line.
    carry_segments: u32,
    /// Bytes of the unfinished line seen so far (including a discarded overlong part).
    carry_bytes: u64,
    /// The next line may have lost its beginning.
    after_gap: bool,
}

impl LineSplitter {
    /// A splitter for lines of at most `max_line_bytes`; `mid_stream` when the capture
    /// starts inside the connection (the first line may be a tail).
    pub fn new(max_line_bytes: usize, mid_stream: bool) -> Self {
        Self {
            framer: Framer::new(max_line_bytes),
            carry_segments: 0,
            carry_bytes: 0,
            after_gap: mid_stream,
        }
    }

    /// Feeds one segment's in-order bytes; complete lines go to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<RawLine>) {
        if data.is_empty() {
            return;
        }
        let mut segments = self.carry_segments + 1;
        loop {
            let before = data.len();
            let result = self.framer.next_line(&mut data);
            let used = (before - data.len()) as u64;
            match result {
                Ok(Some(line)) => {
                    let status = if std::mem::take(&mut self.after_gap) {
                        LineStatus::AfterGap
                    } else {
                        LineStatus::Complete
                    };
                    out.push(RawLine {
                        bytes: line.to_vec(),
                        wire_bytes: self.carry_bytes + used,
                        segments,
                        status,
                    });
                    self.carry_bytes = 0;
                    segments = 1;
                }
                Ok(None) => {
                    self.carry_bytes += used;
                    break;
                }
                Err(tcpchat_proto::FrameError::LineTooLong { head, .. }) => {
                    self.after_gap = false;
                    out.push(RawLine {
                        bytes: head,
                        wire_bytes: self.carry_bytes + used,
                        segments,
                        status: LineStatus::Overlong,
                    });
                    // The rest of the line is skipped by the framer; its bytes are not counted.
                    self.carry_bytes = 0;
                    segments = 1;
                }
            }
        }
        self.carry_segments = if self.framer.has_partial_line() {
            segments
        } else {
            0
        };
    }

    /// Bytes are missing here: an unfinished line is handed out as cut, and the next line
    /// may lack its start.
    pub fn gap(&mut self, out: &mut Vec<RawLine>) {
        self.flush(LineStatus::CutByGap, out);
        self.after_gap = true;
    }

    /// The stream ended: an unfinished line is handed out as unterminated.
    pub fn finish(&mut self, out: &mut Vec<RawLine>) {
        self.flush(LineStatus::Unterminated, out);
    }

    fn flush(&mut self, status: LineStatus, out: &mut Vec<RawLine>) {
        if self.framer.buffered_bytes() > 0 {
            // The framer does not expose its partial line; ending it with a newline hands it
            // out unchanged (the framer never holds more than its limit).
            let mut newline: &[u8] = b"\n";
            if let Ok(Some(line)) = self.framer.next_line(&mut newline) {
                out.push(RawLine {
                    bytes: line.to_vec(),
                    wire_bytes: self.carry_bytes,
                    segments: self.carry_segments.max(1),
                    status,
                });
            }
        } else if self.framer.has_partial_line() {
            // Inside the discarded tail of an overlong line: already reported.
            let mut newline: &[u8] = b"\n";
            let _ = self.framer.next_line(&mut newline);
        }
        self.carry_segments = 0;
        self.carry_bytes = 0;
    }
}

/// A decoded line: its type, whether it is valid, and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub kind: String,
    pub valid: bool,
    pub explanation: String,
}

/// The message type of a valid line: its first word, as the peer wrote it (the parser has just
/// matched it against the protocol's spelling, so it is not spelled again here).
fn first_word(line: &[u8]) -> String {
    let word = line.split(|b| *b == b' ').next().unwrap_or_default();
    String::from_utf8_lossy(word).into_owned()
}

/// Decodes a line sent by the client (`from_client`) or the server.
pub fn decode(line: &[u8], from_client: bool) -> Decoded {
    if from_client {
        decode_request(line)
    } else {
        decode_reply(line)
    }
}

fn decode_request(line: &[u8]) -> Decoded {
    match Request::parse(line) {
        Ok(req) => {
            let explanation = match &req {
                Request::HelloFrom(name) => format!("client asks to log in as {name}"),
                Request::List => "client asks who is online".to_string(),
                Request::Who => {
                    "client asks who is online (WHO: the previous protocol generation's LIST)"
                        .to_string()
                }
                Request::Send { to, body } => {
                    format!(
                        "client sends {to} the message \"{}\"",
                        printable(body.as_bytes())
                    )
                }
                Request::Ext(names) => format!(
                    "client asks for the extensions {} (a classic server answers BAD-RQST-HDR)",
                    names.join(", ")
                ),
                Request::Ping(token) => with_token("client asks whether the server is there", *token),
                Request::Pong(token) => with_token("client answers the server's PING", *token),
                Request::Login { name, password } => format!(
                    "client logs in to the account {name} with a password ({} bytes, readable by anyone who sees these packets unless they are TLS)",
                    password.expose().len()
                ),
                Request::Register(_) => {
                    "client registers its name as an account, with a password".to_string()
                }
                Request::ChangePassword { .. } => {
                    "client changes its account's password".to_string()
                }
                Request::Unregister(_) => "client deletes its account".to_string(),
                Request::Join(room) => format!("client joins the room {room}"),
                Request::Part(room) => format!("client leaves the room {room}"),
                Request::Rooms => "client asks which rooms exist".to_string(),
                Request::Members(room) => format!("client asks who is in {room}"),
                Request::Say { room, body } => format!(
                    "client says to the room {room}: \"{}\"",
                    printable(body.as_bytes())
                ),
                Request::Topic { room, text: None } => {
                    format!("client clears the topic of {room}")
                }
                Request::Topic {
                    room,
                    text: Some(text),
                } => format!(
                    "client sets the topic of {room} to \"{}\"",
                    printable(text.as_bytes())
                ),
                Request::Kick { room, name } => format!("client removes {name} from {room}"),
                Request::History {
                    stream,
                    before: None,
                    count,
                } => format!("client asks for the newest {count} stored messages of {}", stream_words(stream)),
                Request::History {
                    stream,
                    before: Some(before),
                    count,
                } => format!(
                    "client asks for {count} stored messages of {} older than offset {before}",
                    stream_words(stream)
                ),
                Request::Resume { epoch, offset } => format!(
                    "client says it has its direct messages up to offset {offset} of epoch {epoch} (resume at login)"
                ),
            };
            Decoded {
                kind: first_word(line),
                valid: true,
                explanation,
            }
        }
        Err(err) => {
            let (kind, explanation) = match (&err, err.command()) {
                (RequestError::UnknownCommand, _) if line.is_empty() => (
                    "empty line".to_string(),
                    "client sends an empty line (not a request; a server answers BAD-RQST-HDR)"
                        .to_string(),
                ),
                (RequestError::UnknownCommand, _) => (
                    "not protocol".to_string(),
                    "client sends something that is not a request (a server answers BAD-RQST-HDR)"
                        .to_string(),
                ),
                (_, Some(cmd)) => (
                    format!("invalid {}", cmd.as_str()),
                    format!(
                        "client sends an invalid {}: {err} (a server answers BAD-RQST-BODY)",
                        cmd.as_str()
                    ),
                ),
                (_, None) => ("not protocol".to_string(), format!("client: {err}")),
            };
            Decoded {
                kind,
                valid: false,
                explanation,
            }
        }
    }
}

fn decode_reply(line: &[u8]) -> Decoded {
    match Reply::parse(line) {
        Ok(reply) => {
            let explanation = match &reply {
                Reply::Hello(name) => format!("server: welcome, you are logged in as {name}"),
                Reply::InUse => "server: that name is taken, try another".to_string(),
                Reply::Busy => "server: full (at its client limit), closing".to_string(),
                Reply::ListOk(names) if names.is_empty() => "server: nobody is online".to_string(),
                Reply::ListOk(names) => {
                    let names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
                    format!("server: {} online: {}", names.len(), names.join(", "))
                }
                Reply::WhoOk(names) => {
                    let names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
                    format!(
                        "server: {} online: {} (WHO-OK: the previous generation's LIST-OK)",
                        names.len(),
                        names.join(", ")
                    )
                }
                Reply::SendOk => "server: message accepted and handed on".to_string(),
                Reply::BadDestUser => "server: that user is not logged in".to_string(),
                Reply::Unknown => {
                    "server: that user is not logged in (UNKNOWN: the previous generation's \
                     BAD-DEST-USER)"
                        .to_string()
                }
                Reply::Delivery { from, body } => format!(
                    "server delivers a message from {from}: \"{}\"",
                    printable(body.as_bytes())
                ),
                Reply::BadRqstHdr => {
                    "server: unknown command, or not allowed now (log in first?)".to_string()
                }
                Reply::BadRqstBody => "server: the command's arguments are invalid".to_string(),
                Reply::ExtOk(names) if names.is_empty() => {
                    "server: no extension; this connection stays classic".to_string()
                }
                Reply::ExtOk(names) => {
                    format!(
                        "server: this connection uses the extensions {}",
                        names.join(", ")
                    )
                }
                Reply::Ping(token) => with_token("server asks whether the client is there", *token),
                Reply::Pong(token) => with_token("server answers the client's PING", *token),
                Reply::Online(names) => {
                    let names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
                    format!("server: online: {}", names.join(", "))
                }
                Reply::OnlineDone => "server: that is everyone online; changes follow".to_string(),
                Reply::Offline(name) => format!("server: {name} left"),
                Reply::RegisterOk => "server: the name is now an account".to_string(),
                Reply::PasswordOk => "server: the password is changed".to_string(),
                Reply::UnregisterOk => "server: the account is deleted".to_string(),
                Reply::NameRegistered => {
                    "server: that name is an account; log in with its password".to_string()
                }
                Reply::NoAccount => "server: that name is not an account".to_string(),
                Reply::BadPassword => "server: wrong password".to_string(),
                Reply::Locked => "server: the operator locked this account".to_string(),
                Reply::Throttled(secs) => {
                    format!("server: too many attempts, try again in {secs} s")
                }
                Reply::NeedsTls => {
                    "server: refuses passwords on this plain-text connection; use TLS".to_string()
                }
                Reply::Joined { room, name } => format!("server: {name} joined {room}"),
                Reply::Parted { room, name } => format!("server: {name} left {room}"),
                Reply::Kicked { room, name, by } => {
                    format!("server: {by} removed {name} from {room}")
                }
                Reply::TopicIs {
                    room,
                    by,
                    text: None,
                } => format!("server: {by} cleared the topic of {room}"),
                Reply::TopicIs {
                    room,
                    by,
                    text: Some(text),
                } => format!(
                    "server: the topic of {room}, set by {by}: \"{}\"",
                    printable(text.as_bytes())
                ),
                Reply::Said { room, from, body } => format!(
                    "server delivers {from}'s message to {room}: \"{}\"",
                    printable(body.as_bytes())
                ),
                Reply::RoomsOk(rooms) if rooms.is_empty() => "server: no room exists".to_string(),
                Reply::RoomsOk(rooms) => {
                    let rooms: Vec<&str> = rooms.iter().map(|r| r.as_str()).collect();
                    format!("server: {} rooms: {}", rooms.len(), rooms.join(", "))
                }
                Reply::MembersOk { room, names } if names.is_empty() => {
                    format!("server: {room} does not exist (nobody is in it)")
                }
                Reply::MembersOk { room, names } => {
                    let names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
                    format!("server: in {room}, owner first: {}", names.join(", "))
                }
                Reply::NotMember => "server: you are not in that room".to_string(),
                Reply::NotOwner => "server: only the room's owner may do that".to_string(),
                Reply::RoomLimit => "server: you are in as many rooms as allowed".to_string(),
                Reply::RoomFull => "server: that room is full".to_string(),
                Reply::RoomUnavailable => {
                    "server: cannot reach the room right now; nothing changed, try again"
                        .to_string()
                }
                Reply::DeliveryAt {
                    offset,
                    time,
                    from,
                    body,
                } => format!(
                    "server delivers direct message {offset} (sent {time} ms after the Unix epoch) from {from}: \"{}\"",
                    printable(body.as_bytes())
                ),
                Reply::SaidAt {
                    room,
                    offset,
                    time,
                    from,
                    body,
                } => format!(
                    "server relays message {offset} of {room} (sent {time} ms after the Unix epoch) from {from}: \"{}\"",
                    printable(body.as_bytes())
                ),
                Reply::SendQueued => {
                    "server: the recipient is offline; the message is kept for their next login"
                        .to_string()
                }
                Reply::HistoryOk {
                    stream,
                    epoch,
                    top,
                    n,
                } => format!(
                    "server: {n} stored messages of {} follow, oldest first (epoch {epoch}, newest offset {top})",
                    stream_words(stream)
                ),
                Reply::ResumeOk { epoch, top } => format!(
                    "server: caught up; you have your direct messages up to offset {top} of epoch {epoch}, live from here"
                ),
                Reply::ResumeExpired { epoch, top } => format!(
                    "server: some messages after your position have expired; what is kept follows (epoch {epoch}, newest {top})"
                ),
                Reply::ResumeEpoch { epoch, top } => format!(
                    "server: your epoch is not the stream's (it was reset; now {epoch}, newest {top}); undelivered messages follow"
                ),
                Reply::NoHistory => "server: you may not read that stream".to_string(),
            };
            Decoded {
                kind: first_word(line),
                valid: true,
                explanation,
            }
        }
        Err(err) => {
            let explanation = match &err {
                ReplyError::Unknown if line.is_empty() => {
                    "server sends an empty line (not a reply)".to_string()
                }
                ReplyError::Unknown => "server sends something that is not a reply".to_string(),
                other => format!("server sends a malformed reply: {other}"),
            };
            let kind = match &err {
                ReplyError::Unknown => "not protocol".to_string(),
                _ => format!("invalid {}", first_word(line)),
            };
            Decoded {
                kind,
                valid: false,
                explanation,
            }
        }
    }
}

fn with_token(what: &str, token: Option<&str>) -> String {
    match token {
        Some(token) => format!("{what} (token {token})"),
        None => what.to_string(),
    }
}

/// Whether a line looks like the protocol from either side: a request's command word, or a
/// well-formed reply. Used to recognise a chat connection on an unexpected port.
/// Returns `Some(true)` for a client line, `Some(false)` for a server line.
pub fn recognise(line: &[u8]) -> Option<bool> {
    if Command::of_line(line).is_some() {
        Some(true)
    } else if Reply::parse(line).is_ok() {
        Some(false)
    } else {
        None
    }
}

/// The line as readable text: invalid UTF-8 replaced, control characters escaped.
pub fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

/// A history stream in words: `@` is the asker's own direct messages.
fn stream_words(stream: &tcpchat_proto::Stream) -> String {
    match stream {
        tcpchat_proto::Stream::Direct => "your direct messages (@)".to_string(),
        tcpchat_proto::Stream::Room(room) => format!("the room {room}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split(chunks: &[&[u8]]) -> Vec<RawLine> {
        let mut s = LineSplitter::new(64, false);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn room_lines_are_explained() {
        let cases: &[(&[u8], bool, &str, &str)] = &[
            (b"JOIN #rust", true, "JOIN", "client joins the room #rust"),
            (
                b"SAY #rust hi",
                true,
                "SAY",
                "client says to the room #rust: \"hi\"",
            ),
            (
                b"SAY #rust",
                true,
                "invalid SAY",
                "client sends an invalid SAY",
            ),
            (
                b"SAID #rust al hi",
                false,
                "SAID",
                "server delivers al's message to #rust: \"hi\"",
            ),
            (
                b"KICKED #r bo al",
                false,
                "KICKED",
                "server: al removed bo from #r",
            ),
            (
                b"MEMBERS-OK #r al,bo",
                false,
                "MEMBERS-OK",
                "server: in #r, owner first: al, bo",
            ),
            (
                b"NOT-OWNER",
                false,
                "NOT-OWNER",
                "server: only the room's owner may do that",
            ),
        ];
        for (line, from_client, kind, starts) in cases {
            let d = decode(line, *from_client);
            assert_eq!(&d.kind, kind, "{}", printable(line));
            assert!(d.explanation.starts_with(starts), "{}", d.explanation);
        }
    }

    #[test]
    fn counts_segments_per_line() {
        let got = split(&[b"HELLO-FROM al", b"ice\nLIST\nSEND b", b"ob h", b"i\n"]);
        let summary: Vec<(&[u8], u32, u64)> = got
            .iter()
            .map(|l| (l.bytes.as_slice(), l.segments, l.wire_bytes))
            .collect();
        assert_eq!(
            summary,
            vec![
                (&b"HELLO-FROM alice"[..], 2, 17),
                (&b"LIST"[..], 1, 5),
                (&b"SEND bob hi"[..], 3, 12),
            ]
        );
    }

    #[test]
    fn unterminated_and_gap_cut_lines_are_handed_out() {
        let mut s = LineSplitter::new(64, false);
        let mut out = Vec::new();
        s.push(b"LIST\nSEND bo", &mut out);
        s.gap(&mut out);
        s.push(b"b hi\nLIST\nHEL", &mut out);
        s.finish(&mut out);
        let got: Vec<(String, LineStatus)> = out
            .iter()
            .map(|l| (printable(&l.bytes), l.status))
            .collect();
        assert_eq!(
            got,
            vec![
                ("LIST".into(), LineStatus::Complete),
                ("SEND bo".into(), LineStatus::CutByGap),
                ("b hi".into(), LineStatus::AfterGap),
                ("LIST".into(), LineStatus::Complete),
                ("HEL".into(), LineStatus::Unterminated),
            ]
        );
    }

    #[test]
    fn overlong_lines_keep_only_their_head() {
        let mut s = LineSplitter::new(8, false);
        let mut out = Vec::new();
        s.push(b"SEND bob 0123456789", &mut out);
        s.push(b"abcdef\nLIST\n", &mut out);
        s.finish(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].status, LineStatus::Overlong);
        assert!(out[0].bytes.len() <= 9);
        assert_eq!(out[1].bytes, b"LIST");
    }

    #[test]
    fn decoding_table() {
        let cases: &[(&[u8], bool, &str, bool, &str)] = &[
            (
                b"HELLO-FROM alice",
                true,
                "HELLO-FROM",
                true,
                "client asks to log in as alice",
            ),
            (b"LIST", true, "LIST", true, "client asks who is online"),
            (
                b"SEND bob hi there",
                true,
                "SEND",
                true,
                "client sends bob the message \"hi there\"",
            ),
            (
                b"SEND bob",
                true,
                "invalid SEND",
                false,
                "client sends an invalid SEND",
            ),
            (b"hello", true, "not protocol", false, "not a request"),
            (b"HELLO alice", false, "HELLO", true, "logged in as alice"),
            (b"IN-USE", false, "IN-USE", true, "that name is taken"),
            (b"LIST-OK a,b", false, "LIST-OK", true, "2 online: a, b"),
            (
                b"DELIVERY al hey",
                false,
                "DELIVERY",
                true,
                "from al: \"hey\"",
            ),
            (
                b"BAD-RQST-HDR",
                false,
                "BAD-RQST-HDR",
                true,
                "unknown command",
            ),
            (b"SEND-OK x", false, "invalid SEND-OK", false, "malformed"),
            (b"\xff\xfe", false, "not protocol", false, "not a reply"),
        ];
        for (line, client, kind, valid, words) in cases {
            let d = decode(line, *client);
            assert_eq!(d.kind, *kind, "{line:?}");
            assert_eq!(d.valid, *valid, "{line:?}");
            assert!(
                d.explanation.contains(words),
                "{line:?}: {:?} lacks {words:?}",
                d.explanation
            );
        }
    }

    #[test]
    fn recognises_both_sides() {
        assert_eq!(recognise(b"HELLO-FROM x"), Some(true));
        assert_eq!(recognise(b"HELLO x"), Some(false));
        assert_eq!(recognise(b"GET / HTTP/1.1"), None);
    }

    #[test]
    fn printable_escapes_controls() {
        assert_eq!(printable(b"a\tb\x1b[0m\xff"), "a\\tb\\u{1b}[0m\u{fffd}");
    }

    proptest! {
        #[test]
        fn same_lines_however_segmented(
            data in proptest::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..10),
        ) {
            let whole: Vec<Vec<u8>> = split(&[&data]).into_iter().map(|l| l.bytes).collect();
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            points.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(&data[last..p]);
                last = p;
            }
            chunks.push(&data[last..]);
            let pieces: Vec<Vec<u8>> = split(&chunks).into_iter().map(|l| l.bytes).collect();
            prop_assert_eq!(pieces, whole);
        }
    }
}
