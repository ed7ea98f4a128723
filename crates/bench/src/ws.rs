//! A benchmark client's WebSocket (`ws://`): the upgrade, then one protocol line per text
//! message, both ways, as `docs/protocol.md` specifies for the server's web listener.
//!
//! The share loop reads and writes lines through [`crate::conn::Conn`]'s readiness interface,
//! the same for TCP, TLS and WebSocket, so the load and what it measures stay the same. Here
//! that interface is kept with tungstenite's sans-I/O [`WebSocketContext`] driven over the
//! non-blocking socket: lines written are framed (masked, as a client must) and pushed out as
//! far as the socket takes them; frames read are turned back into `\n`-terminated lines. The
//! upgrade is written by hand (one request, one response) so that bytes the server sends right
//! after its `101` are handed to the codec rather than lost in a handshake buffer.

use std::io::{self, Read, Write};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::plan::WsTarget;

/// The longest upgrade response read before giving up on it.
const MAX_RESPONSE_HEAD_BYTES: usize = 16 * 1024;

/// Framed bytes held for a slow socket before writers are told to wait (backpressure, as
/// a full socket buffer gives a TCP client).
const MAX_WRITE_BUFFER_BYTES: usize = 4 << 20;

/// Why the upgrade failed.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("upgrade to WebSocket failed: {0}")]
    Io(#[from] io::Error),
    #[error("the server closed the connection before answering the WebSocket upgrade")]
    Closed,
    #[error("the upgrade response is longer than {MAX_RESPONSE_HEAD_BYTES} bytes")]
    TooLong,
    #[error("the server answered the WebSocket upgrade with {0:?}, not 101 Switching Protocols (is the path right? is this the web listener?)")]
    Refused(String),
    #[error("the server's Sec-WebSocket-Accept does not match the key sent")]
    BadAccept,
}

/// One client's WebSocket state over its socket.
pub(crate) struct Ws {
    ctx: WebSocketContext,
    /// Lines decoded from text messages, `\n`-terminated, not yet handed out.
    inbox: Vec<u8>,
    inbox_pos: usize,
    /// A line written without its `\n` yet.
    partial: Vec<u8>,
    /// Framed bytes wait in the codec for the socket.
    unflushed: bool,
    /// The server closed the WebSocket or the socket.
    eof: bool,
}

/// Upgrades `tcp` to a WebSocket as `target` says; `read_buffer` sizes the codec's read
/// buffer (small for clients that only log in and idle: it is allocated up front).
///
/// # Errors
/// The server does not answer, answers something but `101`, or answers with the wrong key.
pub(crate) async fn upgrade(
    tcp: &mut TcpStream,
    target: &WsTarget,
    read_buffer: usize,
) -> Result<Ws, UpgradeError> {
    let key = generate_key();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: tcpchat\r\n\r\n",
        target.path, target.host
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let end = loop {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Err(UpgradeError::Closed);
        }
        head.extend_from_slice(&chunk[..n]);
        if head.len() >= 5 && !head.starts_with(b"HTTP/") {
            // Not an HTTP server at all (a chat port answers the request's lines).
            let first = head.split(|b| *b == b'\n').next().unwrap_or_default();
            return Err(UpgradeError::Refused(
                String::from_utf8_lossy(first).trim_end().to_owned(),
            ));
        }
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if head.len() > MAX_RESPONSE_HEAD_BYTES {
            return Err(UpgradeError::TooLong);
        }
    };
    let rest = head.split_off(end);
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("101") {
        return Err(UpgradeError::Refused(status.to_owned()));
    }
    let accept = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|(_, v)| v.trim().to_owned());
    if accept.as_deref() != Some(derive_accept_key(key.as_bytes()).as_str()) {
        return Err(UpgradeError::BadAccept);
    }
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES);
    Ok(Ws {
        ctx: WebSocketContext::from_partially_read(rest, Role::Client, Some(config)),
        inbox: Vec::new(),
        inbox_pos: 0,
        partial: Vec::new(),
        unflushed: false,
        eof: false,
    })
}

impl Ws {
    /// Whether lines (or the end) can be handed out without reading the socket.
    pub(crate) fn has_input(&self) -> bool {
        self.inbox_pos < self.inbox.len() || self.eof
    }

    pub(crate) fn wants_write(&self) -> bool {
        self.unflushed
    }

    /// Reads lines without waiting: `Ok(0)` at the end, `WouldBlock` when there is none.
    pub(crate) fn try_read(&mut self, tcp: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        if self.inbox_pos == self.inbox.len() && !self.eof {
            self.inbox.clear();
            self.inbox_pos = 0;
            // Until the socket would block, or a buffer's worth is decoded: the codec may hold
            // more whole frames than the socket has left, and the socket is only reported
            // not readable once a read of it would block, so stopping early is safe.
            while self.inbox.len() < buf.len() {
                match self.ctx.read(&mut Sock(tcp)) {
                    Ok(Message::Text(text)) => {
                        self.inbox.extend_from_slice(text.as_bytes());
                        self.inbox.push(b'\n');
                    }
                    Ok(Message::Binary(data)) => {
                        self.inbox.extend_from_slice(&data);
                        self.inbox.push(b'\n');
                    }
                    // Pings are answered by the codec; pongs and raw frames carry no line.
                    Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                    Ok(Message::Close(_))
                    | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                        self.eof = true;
                        break;
                    }
                    Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(WsError::Io(e)) => return Err(e),
                    Err(e) => return Err(io::Error::other(e)),
                }
            }
        }
        let ready = &self.inbox[self.inbox_pos..];
        if ready.is_empty() {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = ready.len().min(buf.len());
        buf[..n].copy_from_slice(&ready[..n]);
        self.inbox_pos += n;
        Ok(n)
    }

    /// Takes `\n`-terminated lines from `buf`, one text message each, and pushes their frames
    /// out as far as the socket takes them: how much of `buf` was taken, or `WouldBlock`.
    pub(crate) fn try_write(&mut self, tcp: &TcpStream, buf: &[u8]) -> io::Result<usize> {
        let mut taken = 0;
        while let Some(end) = buf[taken..].iter().position(|b| *b == b'\n') {
            let line = &buf[taken..taken + end];
            let message = if self.partial.is_empty() {
                text(line)
            } else {
                text(&[self.partial.as_slice(), line].concat())
            };
            match self.ctx.write(&mut Sock(tcp), message) {
                Ok(()) => {
                    taken += end + 1;
                    self.partial.clear();
                }
                // Queued in the codec; the socket is full for now.
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    taken += end + 1;
                    self.partial.clear();
                    self.unflushed = true;
                    break;
                }
                Err(WsError::WriteBufferFull(_)) => break,
                Err(WsError::Io(e)) => return Err(e),
                Err(e) => return Err(io::Error::other(e)),
            }
        }
        if taken == 0 && !buf.is_empty() && !buf.contains(&b'\n') {
            self.partial.extend_from_slice(buf);
            taken = buf.len();
        }
        self.push_pending(tcp)?;
        if taken == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    /// Pushes out frames the codec holds, as far as the socket takes them.
    pub(crate) fn push_pending(&mut self, tcp: &TcpStream) -> io::Result<()> {
        match self.ctx.flush(&mut Sock(tcp)) {
            Ok(()) => {
                self.unflushed = false;
                Ok(())
            }
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                self.unflushed = true;
                Ok(())
            }
            // Closed by the server: the read side reports the end.
            Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                self.unflushed = false;
                Ok(())
            }
            Err(WsError::Io(e)) => Err(e),
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

/// A line as a text message (bench's lines are ASCII; anything else is replaced).
fn text(line: &[u8]) -> Message {
    Message::text(String::from_utf8_lossy(line).into_owned())
}

/// The socket as `std::io` for the codec: never waits, so a full or empty socket is
/// `WouldBlock`, which the caller passes on.
struct Sock<'a>(&'a TcpStream);

impl Read for Sock<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Sock<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
