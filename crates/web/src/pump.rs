//! One WebSocket's lines to and from its connection: the adapter between WebSocket messages
//! and the byte stream the server's connection loop reads and writes.
//!
//! The server serves the WebSocket as any TCP connection, on one end of a Unix socket pair
//! ([`tcpchat_server::Entry`]); this pump holds the other end and moves lines both ways:
//!
//! - in: each text message is one line; it goes into the pair with an LF after it. A binary
//!   message (1003), a text message with a CR or LF in it (1007: it would be two lines, or a
//!   different one), invalid UTF-8 (1007) or a message over the line limit (1009; the
//!   library refuses it as it arrives, before holding more than the limit) ends the
//!   WebSocket with that close code. The code is sent after the replies to the lines before
//!   it: the pump half-closes the pair, the connection ends as it does at a TCP end of
//!   stream, flushing what it queued, and the close frame follows the last line.
//! - out: what the connection writes is cut at each LF; each line is one text message
//!   without its LF, sent as soon as it is complete.
//!
//! Ping and pong frames are the library's (it answers pings); the chat's own keepalive
//! (`PING` / `PONG` lines) passes through as lines like any other.
//!
//! Either direction ending starts the end of the other: once the connection has closed and
//! the close frame is out, the peer has [`CLOSE_LINGER`] to answer it before the socket is
//! dropped (at once when the server is shutting down).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

/// How long the peer has to answer our close frame, or to close after its own.
pub const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// Bytes read from the pair at once (the connection's batches are usually smaller).
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Why the WebSocket ended on the client's side, as the close frame says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InEnd {
    /// It closed, or its connection went away.
    Closed,
    /// It broke a rule of the transport: close with this code and reason.
    Violation(CloseCode, &'static str),
}

/// Runs the pump until both directions are done (see the module docs).
pub(crate) async fn run<S>(ws: WebSocketStream<S>, pair: UnixStream, entry: tcpchat_server::Entry)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (pair_rx, mut pair_tx) = pair.into_split();
    let (end_tx, mut end_rx) = tokio::sync::oneshot::channel::<InEnd>();

    let inbound = async move {
        let end = inbound(&mut ws_rx, &mut pair_tx).await;
        // Before the half-close, so outbound knows the code by the time the connection,
        // told by the half-close, has ended.
        let _ = end_tx.send(end);
        // The connection sees an end of stream, as from a TCP peer, and finishes.
        let _ = pair_tx.shutdown().await;
        ws_rx
    };
    let outbound = async move {
        outbound(&pair_rx, &mut ws_tx).await;
        // Nothing yet: the connection ended by itself, the client is still there.
        let frame = match end_rx.try_recv() {
            Ok(InEnd::Violation(code, reason)) => Some(CloseFrame {
                code,
                reason: reason.into(),
            }),
            // The connection ended by itself (logout, timeout, shutdown) or the client
            // closed: a normal close.
            _ => Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }),
        };
        if ws_tx.send(Message::Close(frame)).await.is_err() {
            // The client closed first: the library has queued the answer to its close frame
            // (its code echoed, RFC 6455 5.5.1) and refuses another; a flush sends it.
            let _ = ws_tx.flush().await;
        }
        ws_tx
    };
    // The inbound side may never end by itself (a peer that neither sends nor closes after
    // the connection ended): once outbound is done, it gets CLOSE_LINGER.
    tokio::pin!(inbound);
    tokio::pin!(outbound);
    let (rx, tx) = tokio::select! {
        rx = &mut inbound => {
            // The connection is told; outbound ends when it has flushed and closed.
            let tx = tokio::time::timeout(CLOSE_LINGER * 2, &mut outbound).await.ok();
            (Some(rx), tx)
        }
        tx = &mut outbound => {
            // Not at shutdown: the server has stopped waiting for its connections by then.
            let rx = tokio::select! {
                rx = tokio::time::timeout(CLOSE_LINGER, &mut inbound) => rx.ok(),
                () = entry.shutdown() => None,
            };
            (rx, Some(tx))
        }
    };
    if let (Some(rx), Some(tx)) = (rx, tx) {
        if let Ok(ws) = rx.reunite(tx) {
            tokio::select! {
                () = linger(ws.into_inner()) => {}
                () = entry.shutdown() => {}
            }
        }
    }
}

/// Our close frame is out: half-close, then read and discard until the client closes, for
/// at most [`CLOSE_LINGER`]. Closing a socket with unread input (the rest of a message that
/// was refused as too long) makes the kernel send a reset, which can destroy the close
/// frame before the client reads it; the client would see 1006 instead of the code.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let _ = stream.shutdown().await;
    let drain = async {
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    };
    let _ = tokio::time::timeout(CLOSE_LINGER, drain).await;
}

/// WebSocket messages -> lines into the pair, until the client closes or breaks a rule.
async fn inbound<S>(
    ws_rx: &mut futures_util::stream::SplitStream<WebSocketStream<S>>,
    pair_tx: &mut tokio::net::unix::OwnedWriteHalf,
) -> InEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut line = Vec::new();
    while let Some(msg) = ws_rx.next().await {
        match msg {
            Ok(Message::Text(text)) => {
                if text.as_bytes().iter().any(|&b| b == b'\n' || b == b'\r') {
                    debug!("websocket: a CR or LF inside a message");
                    return InEnd::Violation(
                        CloseCode::Invalid,
                        "one line per message, no CR or LF",
                    );
                }
                line.clear();
                line.extend_from_slice(text.as_bytes());
                line.push(b'\n');
                if pair_tx.write_all(&line).await.is_err() {
                    return InEnd::Closed; // the connection has ended
                }
            }
            Ok(Message::Binary(_)) => {
                debug!("websocket: a binary message");
                return InEnd::Violation(CloseCode::Unsupported, "text messages only");
            }
            Ok(Message::Close(_)) => return InEnd::Closed,
            // Answered by the library; nothing for the chat.
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
            Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size })) => {
                debug!(size, max_size, "websocket: a message over the line limit");
                return InEnd::Violation(CloseCode::Size, "longer than the line limit");
            }
            Err(WsError::Utf8(_)) => {
                return InEnd::Violation(CloseCode::Invalid, "text that is not UTF-8");
            }
            Err(e) => {
                debug!(error = %e, "websocket: read failed");
                return InEnd::Closed;
            }
        }
    }
    InEnd::Closed
}

/// Bytes from the pair -> one text message per line, until the connection closes its end.
async fn outbound<W>(pair_rx: &tokio::net::unix::OwnedReadHalf, ws_tx: &mut W)
where
    W: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    // The unfinished tail of the last read; empty (no allocation) while idle.
    let mut partial: Vec<u8> = Vec::new();
    loop {
        if pair_rx.readable().await.is_err() {
            return;
        }
        // Only while reading: an idle WebSocket holds no buffer.
        let mut buf = vec![0u8; READ_CHUNK_BYTES];
        let n = match pair_rx.try_read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return,
        };
        let mut rest = &buf[..n];
        let mut sent = false;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let text = if partial.is_empty() {
                String::from_utf8_lossy(&rest[..i]).into_owned()
            } else {
                partial.extend_from_slice(&rest[..i]);
                let text = String::from_utf8_lossy(&partial).into_owned();
                partial = Vec::new();
                text
            };
            rest = &rest[i + 1..];
            // Fed, not sent: one flush per read sends the whole batch together.
            if ws_tx.feed(Message::text(text)).await.is_err() {
                return;
            }
            sent = true;
        }
        partial.extend_from_slice(rest);
        if sent && ws_tx.flush().await.is_err() {
            return;
        }
    }
}
