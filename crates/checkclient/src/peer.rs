//! The checker's side of one connection from the student's client: the scripted server.
//!
//! It reads the client's lines itself rather than through [`tcpchat_proto::Framer`]: a report
//! must show exactly what the client sent, a stray `\r` or a missing newline included. Writes
//! are byte-level on purpose: a case decides whether a reply goes out whole, byte by byte, or
//! together with others in one segment.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::report::{shown, Failure};

/// Pause between the pieces of a split write: long enough that each piece leaves in a
/// segment of its own (Nagle is off) and is usually read on its own. It shapes the input, it
/// is never part of a verdict.
pub const SPLIT_PAUSE: Duration = Duration::from_millis(3);

/// Longest line the checker keeps from a client before calling it runaway.
const MAX_CLIENT_LINE_BYTES: usize = 64 * 1024;

/// The conversation of one case, shared by its connections: `client: ...`, `server: ...`,
/// `typed: ...`, in order.
#[derive(Debug, Clone, Default)]
pub struct Transcript(Arc<Mutex<Vec<String>>>);

impl Transcript {
    pub fn log(&self, line: String) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push(line);
        }
    }

    pub fn take(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default()
    }
}

/// What reading a line from the client gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    /// One line, without its `\n` (a `\r` before it is still there).
    Line(Vec<u8>),
    /// The client closed the connection (bytes after the last `\n` with it, if any).
    Closed(Vec<u8>),
    /// Nothing complete within the timeout (the partial line, if any).
    Timeout(Vec<u8>),
}

impl Got {
    /// How a report shows it.
    pub fn describe(&self, wait: Duration) -> String {
        match self {
            Got::Line(line) => shown(line),
            Got::Closed(rest) if rest.is_empty() => "the client closed the connection".into(),
            Got::Closed(rest) => format!(
                "{} and then the connection closed, without a newline",
                shown(rest)
            ),
            Got::Timeout(rest) if rest.is_empty() => {
                format!("nothing within {}", crate::seconds(wait))
            }
            Got::Timeout(rest) => format!(
                "{} but no newline within {}",
                shown(rest),
                crate::seconds(wait)
            ),
        }
    }
}

/// One accepted connection.
pub struct Peer {
    stream: TcpStream,
    buf: Vec<u8>,
    timeout: Duration,
    transcript: Transcript,
    /// Lines the client sent, in order, for cases that look back.
    pub received: Vec<Vec<u8>>,
}

impl Peer {
    pub fn new(stream: TcpStream, timeout: Duration, transcript: Transcript) -> Self {
        // Splitting a reply byte by byte only works with Nagle off.
        let _ = stream.set_nodelay(true);
        Self {
            stream,
            buf: Vec::new(),
            timeout,
            transcript,
            received: Vec::new(),
        }
    }

    /// The next line the client sends, waiting up to the timeout.
    pub async fn recv(&mut self) -> Got {
        self.recv_within(self.timeout).await
    }

    /// The next line, waiting up to `wait`.
    pub async fn recv_within(&mut self, wait: Duration) -> Got {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).take(end).collect();
                self.transcript.log(format!("client: {}", shown(&line)));
                self.received.push(line.clone());
                return Got::Line(line);
            }
            if self.buf.len() > MAX_CLIENT_LINE_BYTES {
                let line = std::mem::take(&mut self.buf);
                self.transcript
                    .log(format!("client: {} (no newline)", shown(&line)));
                return Got::Timeout(line);
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    let rest = std::mem::take(&mut self.buf);
                    self.transcript
                        .log("client: (closed the connection)".into());
                    return Got::Closed(rest);
                }
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return Got::Timeout(self.buf.clone()),
            }
        }
    }

    /// Requires the next line to be `want` (a `\n`-terminated line from the protocol crate);
    /// a `\r` before the newline is allowed, as the protocol allows it.
    pub async fn expect(&mut self, step: &str, want: &[u8]) -> Result<(), Failure> {
        let got = self.recv().await;
        let want = want.strip_suffix(b"\n").unwrap_or(want);
        match &got {
            Got::Line(line) if line.strip_suffix(b"\r").unwrap_or(line) == want => Ok(()),
            _ => Err(Failure::new(step, shown(want), got.describe(self.timeout))),
        }
    }

    /// [`Peer::expect`] for the login line, answering an extension request before it the way
    /// a classic server does: `BAD-RQST-HDR`, which tells the client to stay classic
    /// (`docs/protocol.md`, Extensions). The scripted server is a classic one.
    pub async fn expect_login(&mut self, step: &str, want: &[u8]) -> Result<(), Failure> {
        let got = self.recv().await;
        let want_line = want.strip_suffix(b"\n").unwrap_or(want);
        let got = match &got {
            Got::Line(line)
                if matches!(
                    tcpchat_proto::Request::parse(line.strip_suffix(b"\r").unwrap_or(line)),
                    Ok(tcpchat_proto::Request::Ext(_))
                ) =>
            {
                self.write(&tcpchat_proto::Reply::BadRqstHdr.to_line())
                    .await;
                self.recv().await
            }
            _ => got,
        };
        match &got {
            Got::Line(line) if line.strip_suffix(b"\r").unwrap_or(line) == want_line => Ok(()),
            _ => Err(Failure::new(
                step,
                shown(want_line),
                got.describe(self.timeout),
            )),
        }
    }

    /// Writes `bytes` in one go.
    pub async fn write(&mut self, bytes: &[u8]) {
        self.log_sent(bytes, "");
        let _ = self.stream.write_all(bytes).await;
    }

    /// Writes `bytes` one byte per segment.
    pub async fn write_bytewise(&mut self, bytes: &[u8]) {
        self.log_sent(bytes, " (one byte per segment)");
        for b in bytes {
            if self
                .stream
                .write_all(std::slice::from_ref(b))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(SPLIT_PAUSE).await;
        }
    }

    fn log_sent(&self, bytes: &[u8], how: &str) {
        let lines: Vec<&[u8]> = bytes
            .split_inclusive(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\n").unwrap_or(l))
            .collect();
        let together = if lines.len() > 1 {
            " (in one segment with the next)"
        } else {
            ""
        };
        for (i, line) in lines.iter().enumerate() {
            let how = if i + 1 < lines.len() { together } else { how };
            self.transcript.log(format!("server: {}{how}", shown(line)));
        }
    }

    /// Closes the connection (both directions).
    pub async fn close(mut self) {
        self.transcript
            .log("server: (closes the connection)".into());
        let _ = self.stream.shutdown().await;
    }
}
