//! What a failed case reports: the step, what was expected, what came back, the conversation.

use serde::Serialize;

/// Transcript lines kept in a failure: the end of the conversation, where it went wrong.
const TRANSCRIPT_TAIL_LINES: usize = 24;

/// Longest rendering of one line in a report, in characters.
const MAX_SHOWN_CHARS: usize = 160;

/// Why a case failed, in terms a server author can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// What the checker was doing, e.g. `B: log in with a name that is taken`.
    pub step: String,
    /// What a correct server sends (or does) at that point.
    pub expected: String,
    /// What this server did instead.
    pub got: String,
    /// A more specific hint when the checker can tell what went wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The end of the case's conversation: `A -> line` sent, `A <- line` received.
    pub transcript: Vec<String>,
}

impl Failure {
    pub(crate) fn new(
        step: impl Into<String>,
        expected: impl Into<String>,
        got: impl Into<String>,
    ) -> Self {
        Self {
            step: step.into(),
            expected: expected.into(),
            got: got.into(),
            note: None,
            transcript: Vec::new(),
        }
    }

    /// Adds a hint (after any hint already there).
    pub(crate) fn note(mut self, note: impl Into<String>) -> Self {
        let note = note.into();
        self.note = Some(match self.note.take() {
            Some(earlier) => format!("{earlier}; {note}"),
            None => note,
        });
        self
    }

    /// Attaches the tail of the conversation.
    pub(crate) fn with_transcript(mut self, mut transcript: Vec<String>) -> Self {
        if transcript.len() > TRANSCRIPT_TAIL_LINES {
            let dropped = transcript.len() - TRANSCRIPT_TAIL_LINES;
            transcript.drain(..dropped);
            transcript.insert(0, format!("({dropped} earlier lines not shown)"));
        }
        self.transcript = transcript;
        self
    }
}

/// A line as a report shows it in `expected` and `got`: escaped and in double quotes, so leading
/// and trailing spaces are visible.
pub fn quoted(bytes: &[u8]) -> String {
    format!("\"{}\"", escape(bytes))
}

/// Shows protocol bytes unambiguously on one line: `\r`, `\t`, other control characters and
/// bytes that are not UTF-8 as escapes, a backslash as `\\`, long lines shortened.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut chars = 0;
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if chars >= MAX_SHOWN_CHARS {
                out.push_str(&format!("... ({} bytes in all)", bytes.len()));
                return out;
            }
            match c {
                '\r' => out.push_str("\\r"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
            chars += 1;
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
            chars += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_table() {
        let cases: &[(&[u8], &str)] = &[
            (b"HELLO alice", "HELLO alice"),
            (b"HELLO alice\r", "HELLO alice\\r"),
            (b"a\tb\\c", "a\\tb\\\\c"),
            (b"bad \xff\xfe", "bad \\xff\\xfe"),
            ("żółw 👋".as_bytes(), "żółw 👋"),
            (b"\x1b[31m", "\\u{1b}[31m"),
            (b"", ""),
        ];
        for (input, want) in cases {
            assert_eq!(&escape(input), want, "input {input:?}");
        }
    }

    #[test]
    fn escape_shortens_long_lines() {
        let long = vec![b'x'; 10_000];
        let shown = escape(&long);
        assert!(shown.ends_with("... (10000 bytes in all)"), "{shown}");
        assert!(shown.len() < 200);
    }

    #[test]
    fn transcript_keeps_the_tail() {
        let lines: Vec<String> = (0..30).map(|i| i.to_string()).collect();
        let f = Failure::new("s", "e", "g").with_transcript(lines);
        assert_eq!(f.transcript.len(), TRANSCRIPT_TAIL_LINES + 1);
        assert_eq!(f.transcript[0], "(6 earlier lines not shown)");
        assert_eq!(f.transcript.last().map(String::as_str), Some("29"));
    }
}
