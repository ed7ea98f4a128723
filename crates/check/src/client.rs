//! A scripted connection to the server under test.
//!
//! It writes exactly the bytes a case asks for and reads the server's lines exactly as they
//! arrive: unlike [`tcpchat_proto::Framer`] it does not strip a trailing `\r`, because a server
//! that keeps the client's `\r` (or ends its own lines with `\r\n`) is one of the defects the
//! checker looks for. Everything sent and received goes into the case's [`Transcript`], so a
//! failure can show the conversation that led to it.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tcpchat_proto::{Reply, Request, Username};
use tcpchat_tls::client::{Connector, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::time::{timeout, timeout_at, Instant};

use crate::failure::{escape, quoted, Failure};

/// Longest server line the checker keeps. A longer one is reported, not stored: a server that
/// relays an overlong line must not make the checker allocate without bound either. Large
/// enough for the `LIST-OK` of a busy public server (10,000 names of 32 bytes is 330 KB), and
/// well under the 1 MiB line `overlong-line` sends, so relaying that line is always caught.
pub(crate) const MAX_REPLY_BYTES: usize = 512 * 1024;

/// Bytes asked of the socket per read.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// What came back when the checker waited for a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Got {
    /// A complete line, without its `\n` (a `\r` before it is kept).
    Line(Vec<u8>),
    /// The server closed the connection (FIN) with nothing left unread.
    Closed,
    /// The server closed the connection in the middle of a line.
    ClosedMidLine(Vec<u8>),
    /// The connection failed: reset by the server, or another socket error.
    Error(String),
    /// Nothing arrived in time.
    Timeout(Duration),
    /// A line longer than [`MAX_REPLY_BYTES`] arrived.
    TooLong,
}

impl Got {
    /// True when this is exactly the line a correct server sends for `reply`.
    pub(crate) fn is(&self, reply: &Reply<'_>) -> bool {
        matches!(self, Got::Line(line) if *line == reply_line(reply))
    }

    /// True when the connection is over (closed or failed).
    pub(crate) fn is_closed(&self) -> bool {
        matches!(self, Got::Closed | Got::ClosedMidLine(_) | Got::Error(_))
    }
}

impl fmt::Display for Got {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Got::Line(line) => f.write_str(&quoted(line)),
            Got::Closed => f.write_str("(the server closed the connection)"),
            Got::ClosedMidLine(rest) => write!(
                f,
                "(the server closed the connection after an unfinished line: {})",
                quoted(rest)
            ),
            Got::Error(e) => write!(f, "(the connection failed: {e})"),
            Got::Timeout(t) => write!(f, "(nothing within {})", seconds(*t)),
            Got::TooLong => write!(
                f,
                "(a line longer than {MAX_REPLY_BYTES} bytes; the checker stopped reading it)"
            ),
        }
    }
}

/// `reply` as the protocol crate encodes it, without its `\n`: the exact line expected.
pub(crate) fn reply_line(reply: &Reply<'_>) -> Vec<u8> {
    let mut line = reply.to_line();
    line.pop();
    line
}

/// `request` as the protocol crate encodes it, without its `\n`, for a case that changes
/// it on purpose (a command word in lower case, bytes that are not UTF-8 appended).
pub(crate) fn request_line(request: &Request<'_>) -> Vec<u8> {
    let mut line = request.to_line();
    line.pop();
    line
}

/// A duration as people write it in a report: `5s`, `0.5s`.
pub(crate) fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}s")
    } else {
        format!("{s}s")
    }
}

/// The conversation of one case, in order, across all its connections.
#[derive(Debug, Clone, Default)]
pub(crate) struct Transcript(Arc<Mutex<Vec<String>>>);

impl Transcript {
    pub(crate) fn push(&self, entry: String) {
        // A poisoned lock means a case panicked while logging; the lines are still useful.
        let mut entries = self.0.lock().unwrap_or_else(|e| e.into_inner());
        entries.push(entry);
    }

    /// Takes everything recorded so far.
    pub(crate) fn take(&self) -> Vec<String> {
        let mut entries = self.0.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *entries)
    }
}

/// One connection to the server under test.
pub(crate) struct Client {
    /// Short tag in the transcript: `A`, `B`, ...
    label: String,
    /// The name this connection logged in with, once it did.
    name: Option<Username>,
    /// Plain or TLS (`tls://`): the cases do not know which.
    stream: Stream,
    /// Bytes read and not yet handed out as lines.
    unread: Vec<u8>,
    /// The server sent FIN.
    eof: bool,
    /// A line exceeded [`MAX_REPLY_BYTES`]; the stream is no longer in step.
    overrun: bool,
    timeout: Duration,
    transcript: Transcript,
    /// Lines written so far: many, and a close or a silence may be the server's flood
    /// control rather than a bug (see [`LIMITS_NOTE`]).
    lines_sent: usize,
}

/// Lines one connection may have sent before a close or a silence is worth the
/// [`LIMITS_NOTE`]: above what most cases send, below any command burst that lets
/// `message-order` (100 lines at once) through.
const LINES_BEFORE_LIMITS_NOTE: usize = 50;

/// What a report says when the server's abuse limits, not a bug, may have stopped a case.
pub(crate) const LIMITS_NOTE: &str = "the server's abuse limits refused this (rate/connection \
     limit), not a protocol bug; rerun against a server with --exempt 127.0.0.1/32 or \
     --limits off";

impl Client {
    /// Opens a connection, with `recv_buffer` as `SO_RCVBUF` when given (a slow reader wants a
    /// small one so the server's side fills up soon), and with `tls` (a connector and the host
    /// to verify) runs the TLS handshake inside the same time bound.
    pub(crate) async fn connect(
        addr: SocketAddr,
        tls: Option<(&Connector, &str)>,
        label: String,
        wait: Duration,
        recv_buffer: Option<u32>,
        transcript: Transcript,
    ) -> Result<Self, Failure> {
        let attempt = async {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            if let Some(bytes) = recv_buffer {
                socket.set_recv_buffer_size(bytes)?;
            }
            let stream = socket.connect(addr).await?;
            stream.set_nodelay(true)?;
            let stream = match tls {
                None => Stream::Plain(stream),
                Some((connector, host)) => Stream::Tls(Box::new(
                    connector
                        .connect(stream, host)
                        .await
                        .map_err(std::io::Error::other)?,
                )),
            };
            Ok::<_, std::io::Error>(stream)
        };
        let stream = match timeout(wait, attempt).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                transcript.push(format!("{label} cannot connect: {e}"));
                return Err(Failure::new(
                    format!("open connection {label}"),
                    format!("a TCP connection to {addr}"),
                    format!("(connect failed: {e})"),
                ));
            }
            Err(_) => {
                transcript.push(format!("{label} cannot connect: timed out"));
                return Err(Failure::new(
                    format!("open connection {label}"),
                    format!("a TCP connection to {addr}"),
                    format!("(no connection within {})", seconds(wait)),
                ));
            }
        };
        transcript.push(format!("{label} connected"));
        Ok(Self {
            label,
            name: None,
            stream,
            unread: Vec::new(),
            eof: false,
            overrun: false,
            timeout: wait,
            transcript,
            lines_sent: 0,
        })
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    /// The name this connection logged in with.
    ///
    /// # Panics
    /// If it has not logged in: cases only ask this of clients they logged in.
    pub(crate) fn name(&self) -> &Username {
        self.name
            .as_ref()
            .expect("cases only ask the name of a logged-in client")
    }

    pub(crate) fn set_name(&mut self, name: Username) {
        self.name = Some(name);
    }

    /// Writes `bytes` in one write. The transcript shows each line of it.
    ///
    /// # Errors
    /// The socket error, or a timeout if the server stopped reading.
    pub(crate) async fn write(&mut self, bytes: &[u8]) -> Result<(), Got> {
        self.log_sent(bytes);
        self.write_quietly(bytes).await
    }

    /// Writes without logging (the caller logs something shorter).
    pub(crate) async fn write_quietly(&mut self, bytes: &[u8]) -> Result<(), Got> {
        self.lines_sent += bytes.iter().filter(|&&b| b == b'\n').count();
        match timeout(self.timeout, self.stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Got::Error(e.to_string())),
            Err(_) => Err(Got::Timeout(self.timeout)),
        }
    }

    /// Writes `bytes` in one write and turns a failure into a case failure.
    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        match self.write(bytes).await {
            Ok(()) => Ok(()),
            Err(got) => {
                self.transcript
                    .push(format!("{} cannot write: {got}", self.label));
                let failure = Failure::new(
                    format!("{} sends {}", self.label, first_line(bytes)),
                    "the server to accept the bytes",
                    got.to_string(),
                );
                Err(self.with_limits_note(failure, &got))
            }
        }
    }

    /// Sends one request, encoded by the protocol crate.
    pub(crate) async fn send(&mut self, request: &Request<'_>) -> Result<(), Failure> {
        self.send_raw(&request.to_line()).await
    }

    /// Sends `line` followed by `\n`.
    pub(crate) async fn send_line(&mut self, line: &[u8]) -> Result<(), Failure> {
        let mut bytes = line.to_vec();
        bytes.push(b'\n');
        self.send_raw(&bytes).await
    }

    /// Sends `bytes` one byte per write, pausing `gap` between writes so each is likely to
    /// reach the server in its own segment.
    pub(crate) async fn send_bytewise(
        &mut self,
        bytes: &[u8],
        gap: Duration,
    ) -> Result<(), Failure> {
        self.transcript
            .push(format!("{} -> (one byte per write)", self.label));
        self.log_sent(bytes);
        for (i, byte) in bytes.iter().enumerate() {
            if let Err(got) = self.write_quietly(std::slice::from_ref(byte)).await {
                return Err(Failure::new(
                    format!("{} sends byte {i} of {}", self.label, escape(bytes)),
                    "the server to accept the bytes",
                    got.to_string(),
                ));
            }
            tokio::time::sleep(gap).await;
        }
        Ok(())
    }

    /// Waits for the next line (up to the timeout) and records what came.
    pub(crate) async fn recv(&mut self) -> Got {
        let got = self.read_line().await;
        self.log_received(&got);
        got
    }

    /// Waits for the next line without recording it (floods log a summary instead).
    pub(crate) async fn recv_quietly(&mut self) -> Got {
        self.read_line().await
    }

    /// Records a line received quietly, when it turns out to matter.
    pub(crate) fn log_received(&self, got: &Got) {
        let shown = match got {
            Got::Line(line) => escape(line),
            other => other.to_string(),
        };
        self.transcript.push(format!("{} <- {shown}", self.label));
    }

    /// Adds a free-form line to the transcript, tagged with this connection's label.
    pub(crate) fn log_note(&self, text: &str) {
        self.transcript.push(format!("{} {text}", self.label));
    }

    /// Waits for the next line and requires it to be exactly `want`.
    pub(crate) async fn expect(&mut self, step: &str, want: &Reply<'_>) -> Result<(), Failure> {
        self.expect_line(step, &reply_line(want)).await
    }

    /// Waits for the next line and requires it to be exactly `want` (without `\n`).
    pub(crate) async fn expect_line(&mut self, step: &str, want: &[u8]) -> Result<(), Failure> {
        let got = self.recv().await;
        if got == Got::Line(want.to_vec()) {
            return Ok(());
        }
        Err(self.mismatch(step, &quoted(want), &got))
    }

    /// Waits for the next line and requires it to be one of `wants`; returns which.
    pub(crate) async fn expect_one_of(
        &mut self,
        step: &str,
        wants: &[Reply<'_>],
    ) -> Result<usize, Failure> {
        let got = self.recv().await;
        let lines: Vec<Vec<u8>> = wants.iter().map(reply_line).collect();
        if let Got::Line(line) = &got {
            if let Some(i) = lines.iter().position(|l| l == line) {
                return Ok(i);
            }
        }
        let expected = lines
            .iter()
            .map(|l| quoted(l))
            .collect::<Vec<_>>()
            .join(" or ");
        Err(self.mismatch(step, &expected, &got))
    }

    /// Reads `wants.len()` lines and requires them to be `wants` in any order (for lines on one
    /// connection whose relative order the protocol leaves open, such as a `SEND-OK` and a
    /// `DELIVERY` from someone else).
    pub(crate) async fn expect_unordered(
        &mut self,
        step: &str,
        wants: &[Reply<'_>],
    ) -> Result<(), Failure> {
        let mut left: Vec<Vec<u8>> = wants.iter().map(reply_line).collect();
        while !left.is_empty() {
            let got = self.recv().await;
            if let Got::Line(line) = &got {
                if let Some(i) = left.iter().position(|l| l == line) {
                    left.swap_remove(i);
                    continue;
                }
            }
            let expected = left
                .iter()
                .map(|l| quoted(l))
                .collect::<Vec<_>>()
                .join(" and ");
            return Err(self.mismatch(step, &format!("{expected} (in any order)"), &got));
        }
        Ok(())
    }

    /// Requires the server to close the connection next, sending nothing more.
    pub(crate) async fn expect_closed(&mut self, step: &str) -> Result<(), Failure> {
        let got = self.recv().await;
        if got.is_closed() {
            return Ok(());
        }
        Err(self.mismatch(step, "the server to close the connection", &got))
    }

    /// A failure for `step` where `got` came instead of `expected`, with a hint for the
    /// commonest way of getting a line almost right.
    pub(crate) fn mismatch(&self, step: &str, expected: &str, got: &Got) -> Failure {
        let mut failure = Failure::new(
            format!("{}: {step}", self.label),
            expected.to_string(),
            got.to_string(),
        );
        failure = self.with_limits_note(failure, got);
        if let Got::Line(line) = got {
            if line.ends_with(b"\r") {
                failure = failure.note(
                    "the line ends in \\r: protocol lines end with \\n alone, and a client's \
                     trailing \\r is not part of what it sent (strip one \\r before \\n)",
                );
            }
        }
        failure
    }

    /// Adds [`LIMITS_NOTE`] when that is what probably happened: the server closed this
    /// connection, or stopped reading or answering it, after it had sent many lines (flood
    /// control disconnects such a client, or makes its lines wait).
    fn with_limits_note(&self, failure: Failure, got: &Got) -> Failure {
        let stopped = got.is_closed() || matches!(got, Got::Timeout(_));
        if stopped && self.lines_sent > LINES_BEFORE_LIMITS_NOTE {
            failure.note(format!(
                "{} had sent {} lines: if the server limits a client's command rate, {LIMITS_NOTE}",
                self.label, self.lines_sent
            ))
        } else {
            failure
        }
    }

    /// Closes the connection with a reset (`SO_LINGER` 0) instead of a FIN, as a crashed or
    /// killed client would.
    pub(crate) fn abort(self) {
        if let Err(e) = self.stream.tcp().set_zero_linger() {
            self.transcript
                .push(format!("{} cannot set SO_LINGER: {e}", self.label));
        }
        self.transcript
            .push(format!("{} closed the connection (reset)", self.label));
    }

    /// Closes the connection with a FIN.
    pub(crate) async fn close(mut self) {
        // Best effort: the server may already have closed its side.
        let _ = self.stream.shutdown().await;
        self.transcript
            .push(format!("{} closed the connection", self.label));
    }

    async fn read_line(&mut self) -> Got {
        if self.overrun {
            return Got::TooLong;
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            if let Some(i) = self.unread.iter().position(|&b| b == b'\n') {
                if i > MAX_REPLY_BYTES {
                    self.overrun = true;
                    self.unread = Vec::new();
                    return Got::TooLong;
                }
                let line = self.unread[..i].to_vec();
                self.unread.drain(..=i);
                return Got::Line(line);
            }
            if self.unread.len() > MAX_REPLY_BYTES {
                self.overrun = true;
                self.unread = Vec::new();
                return Got::TooLong;
            }
            if self.eof {
                return if self.unread.is_empty() {
                    Got::Closed
                } else {
                    Got::ClosedMidLine(std::mem::take(&mut self.unread))
                };
            }
            self.unread.reserve(READ_CHUNK_BYTES);
            match timeout_at(deadline, self.stream.read_buf(&mut self.unread)).await {
                Ok(Ok(0)) => self.eof = true,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Got::Error(e.to_string()),
                Err(_) => return Got::Timeout(self.timeout),
            }
        }
    }

    fn log_sent(&self, bytes: &[u8]) {
        let mut lines = bytes.split_inclusive(|&b| b == b'\n').peekable();
        let several = bytes.iter().filter(|&&b| b == b'\n').count() > 1;
        let mut shown = 0;
        while let Some(line) = lines.next() {
            if shown == MAX_LINES_SHOWN_PER_WRITE {
                let rest = 1 + lines.count();
                self.transcript.push(format!(
                    "{} -> ({rest} more lines in the same write)",
                    self.label
                ));
                break;
            }
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            let tag = if several { " (same write)" } else { "" };
            self.transcript
                .push(format!("{} -> {}{tag}", self.label, escape(line)));
            shown += 1;
        }
    }
}

/// A write of many lines shows this many in the transcript.
const MAX_LINES_SHOWN_PER_WRITE: usize = 12;

fn first_line(bytes: &[u8]) -> String {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    escape(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A client connected to a peer that writes `chunks` (one write each), then closes.
    /// The reads still see the bytes split wherever the kernel delivers them; the client must
    /// give the same lines whatever the split.
    async fn client_reading(chunks: Vec<Vec<u8>>, wait: Duration) -> Client {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener
            .local_addr()
            .expect("bound listener has an address");
        tokio::spawn(async move {
            let (mut peer, _) = listener.accept().await.expect("the client connects");
            for chunk in chunks {
                if peer.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        });
        Client::connect(addr, None, "A".into(), wait, None, Transcript::default())
            .await
            .expect("connects to the test peer")
    }

    #[tokio::test]
    async fn reads_lines_exactly_keeping_cr_across_chunks() {
        let chunks = vec![
            b"HEL".to_vec(),
            b"LO a\r\nLIST-OK a,".to_vec(),
            b"b\nBUSY".to_vec(),
        ];
        let mut c = client_reading(chunks, Duration::from_secs(5)).await;
        assert_eq!(c.recv().await, Got::Line(b"HELLO a\r".to_vec()));
        assert_eq!(c.recv().await, Got::Line(b"LIST-OK a,b".to_vec()));
        assert_eq!(c.recv().await, Got::ClosedMidLine(b"BUSY".to_vec()));
    }

    #[tokio::test]
    async fn reports_close_and_overlong_lines() {
        let mut c = client_reading(vec![b"SEND-OK\n".to_vec()], Duration::from_secs(5)).await;
        assert_eq!(c.recv().await, Got::Line(b"SEND-OK".to_vec()));
        assert_eq!(c.recv().await, Got::Closed);

        let long = vec![b'x'; MAX_REPLY_BYTES + 10];
        let mut c = client_reading(vec![long, b"\n".to_vec()], Duration::from_secs(5)).await;
        let got = c.recv().await;
        assert!(got == Got::TooLong, "got {got}");
        assert_eq!(
            c.recv().await,
            Got::TooLong,
            "the stream is out of step for good"
        );
    }

    #[tokio::test]
    async fn times_out_when_nothing_comes() {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener
            .local_addr()
            .expect("bound listener has an address");
        let wait = Duration::from_millis(50);
        let transcript = Transcript::default();
        let mut c = Client::connect(addr, None, "A".into(), wait, None, transcript.clone())
            .await
            .expect("the kernel accepts into the backlog");
        assert_eq!(c.recv().await, Got::Timeout(wait));
        assert_eq!(
            transcript.take(),
            ["A connected", "A <- (nothing within 0.05s)"]
        );
        drop(listener);
    }

    #[tokio::test]
    async fn mismatch_on_a_kept_cr_says_so() {
        let mut c = client_reading(vec![b"HELLO a\r\n".to_vec()], Duration::from_secs(5)).await;
        let want = Reply::Hello(Username::parse("a").expect("valid name"));
        let failure = c
            .expect("log in", &want)
            .await
            .expect_err("the \\r is kept");
        assert_eq!(failure.expected, "\"HELLO a\"");
        assert_eq!(failure.got, "\"HELLO a\\r\"");
        assert!(failure.note.is_some_and(|n| n.contains("\\r")));
    }

    #[test]
    fn seconds_reads_naturally() {
        assert_eq!(seconds(Duration::from_secs(5)), "5s");
        assert_eq!(seconds(Duration::from_millis(500)), "0.5s");
    }
}
