//! One benchmark client's connection, plain, TLS or WebSocket, behind the readiness interface
//! the share loop drives (`readable`, `try_read`, `writable`, `try_write`). WebSocket is
//! [`crate::ws`]: lines in, one text message each, lines out.
//!
//! Plain is the socket itself. TLS keeps the same shape so that the loop, and what it
//! measures, stays the same: the handshake runs once at connect time (tokio-rustls), then the
//! rustls connection is driven by hand over the non-blocking socket: ciphertext read when the
//! socket is readable, plaintext written into rustls and its records pushed out when the
//! socket takes them. Plaintext rustls already holds counts as readable without waiting for
//! the socket, and records it still holds keep the loop waiting for writability.

use std::io::{self, Read, Write};

use rustls::ClientConnection;
use tcpchat_tls::client::{Connector, HandshakeError};
use tokio::net::TcpStream;

use crate::plan::WsTarget;
use crate::ws::{UpgradeError, Ws};

pub(crate) struct Conn {
    tcp: TcpStream,
    tls: Option<Box<Tls>>,
    ws: Option<Box<Ws>>,
}

struct Tls {
    conn: ClientConnection,
    /// Plaintext rustls holds that has not been handed out yet.
    plaintext: usize,
    /// The peer closed the TLS session (close_notify) or the socket.
    eof: bool,
}

impl Conn {
    pub(crate) fn plain(tcp: TcpStream) -> Self {
        Self {
            tcp,
            tls: None,
            ws: None,
        }
    }

    /// Upgrades `tcp` to a WebSocket (`read_buffer`: the codec's read buffer size).
    ///
    /// # Errors
    /// As [`crate::ws::upgrade`].
    pub(crate) async fn ws(
        mut tcp: TcpStream,
        target: &WsTarget,
        read_buffer: usize,
    ) -> Result<Self, UpgradeError> {
        let ws = crate::ws::upgrade(&mut tcp, target, read_buffer).await?;
        Ok(Self {
            tcp,
            tls: None,
            ws: Some(Box::new(ws)),
        })
    }

    /// Runs the TLS handshake for `host` on `tcp`.
    ///
    /// # Errors
    /// As [`Connector::connect`].
    pub(crate) async fn tls(
        tcp: TcpStream,
        host: &str,
        connector: &Connector,
    ) -> Result<Self, HandshakeError> {
        let stream = connector.connect(tcp, host).await?;
        let (tcp, conn) = stream.into_inner();
        let plaintext = 0;
        let mut c = Self {
            tcp,
            tls: Some(Box::new(Tls {
                conn,
                plaintext,
                eof: false,
            })),
            ws: None,
        };
        // Records received with the handshake's last flight may hold plaintext already.
        if let Some(tls) = c.tls.as_mut() {
            let state = tls
                .conn
                .process_new_packets()
                .map_err(|e| HandshakeError::Tls(tcpchat_tls::client::explain(&e)))?;
            tls.plaintext = state.plaintext_bytes_to_read();
        }
        Ok(c)
    }

    /// The socket's descriptor when the connection is plain TCP: the pacing thread may then
    /// write a sender's messages to it itself (see `share::Direct`). `None` for TLS and
    /// WebSocket, whose bytes only their codec may write.
    pub(crate) fn plain_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        (self.tls.is_none() && self.ws.is_none()).then(|| self.tcp.as_raw_fd())
    }

    pub(crate) fn set_nodelay(&self) {
        let _ = self.tcp.set_nodelay(true);
    }

    /// Waits until [`Conn::try_read`] may return something.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        if let Some(ws) = &self.ws {
            if ws.has_input() {
                return Ok(());
            }
        }
        match &self.tls {
            Some(tls) if tls.plaintext > 0 || tls.eof => Ok(()),
            _ => self.tcp.readable().await,
        }
    }

    /// Waits until the socket takes bytes.
    pub(crate) async fn writable(&self) -> io::Result<()> {
        self.tcp.writable().await
    }

    /// True while TLS records wait to be written to the socket.
    pub(crate) fn wants_write(&self) -> bool {
        self.ws.as_ref().is_some_and(|w| w.wants_write())
            || self.tls.as_ref().is_some_and(|t| t.conn.wants_write())
    }

    /// Reads plaintext without waiting: `Ok(0)` at the end, `WouldBlock` when there is none.
    pub(crate) fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(ws) = self.ws.as_mut() {
            return ws.try_read(&self.tcp, buf);
        }
        let Some(tls) = self.tls.as_mut() else {
            return read_plain(&mut self.tcp, buf);
        };
        loop {
            if tls.plaintext > 0 {
                let n = tls.conn.reader().read(buf)?;
                tls.plaintext = tls.plaintext.saturating_sub(n);
                return Ok(n);
            }
            if tls.eof {
                return Ok(0);
            }
            // rustls reads from the socket itself, only while it holds no plaintext: fed a
            // whole socket read at once, it could be handed more than its received-plaintext
            // limit (a record completed by this read plus the next) and refuse the rest.
            let n = tls.conn.read_tls(&mut Sock(&self.tcp))?;
            if n == 0 {
                tls.eof = true;
                return Ok(0);
            }
            let state = tls
                .conn
                .process_new_packets()
                .map_err(|e| io::Error::other(tcpchat_tls::client::explain(&e)))?;
            tls.plaintext = state.plaintext_bytes_to_read();
            if state.peer_has_closed() && tls.plaintext == 0 {
                tls.eof = true;
            }
            // Key updates and alerts rustls answers on its own.
            push(&self.tcp, &mut tls.conn)?;
        }
    }

    /// Writes without waiting: how much was taken, or `WouldBlock`. With TLS the plaintext
    /// is taken into rustls, and its records go out as far as the socket takes them.
    pub(crate) fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(ws) = self.ws.as_mut() {
            return ws.try_write(&self.tcp, buf);
        }
        let Some(tls) = self.tls.as_mut() else {
            return self.tcp.try_write(buf);
        };
        push(&self.tcp, &mut tls.conn)?;
        // rustls bounds what it buffers; once full, the socket must drain it first.
        let n = tls.conn.writer().write(buf)?;
        push(&self.tcp, &mut tls.conn)?;
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    /// Pushes out TLS records rustls holds, as far as the socket takes them.
    pub(crate) fn push_pending(&mut self) -> io::Result<()> {
        if let Some(ws) = self.ws.as_mut() {
            return ws.push_pending(&self.tcp);
        }
        match self.tls.as_mut() {
            Some(tls) => push(&self.tcp, &mut tls.conn),
            None => Ok(()),
        }
    }
}

impl Conn {
    /// Writes all of `data`, waiting for the socket (the probe's one login, not the load).
    pub(crate) async fn write_all(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() || self.wants_write() {
            match self.try_write(data) {
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if !data.is_empty() || self.wants_write() {
                self.writable().await?;
                self.push_pending()?;
            }
        }
        Ok(())
    }

    /// Reads some bytes, waiting for them: `Ok(0)` at the end.
    pub(crate) async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.readable().await?;
            match self.try_read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
        }
    }
}

/// Reads from the socket without waiting. Unlike `TcpStream::try_read`, a read that does not
/// fill `buf` also tells tokio the socket is drained (its `AsyncRead` does so), so the next
/// wait goes to `epoll` directly instead of first trying one more `recv` that would block:
/// without it, every read with data cost a second, empty `recv` (bench/notes.md, "A cheaper
/// load generator"). No waker is kept: callers wait with [`Conn::readable`].
fn read_plain(tcp: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    use std::task::{Context, Poll, Waker};
    use tokio::io::{AsyncRead, ReadBuf};
    let mut cx = Context::from_waker(Waker::noop());
    let mut rb = ReadBuf::new(buf);
    match std::pin::Pin::new(tcp).poll_read(&mut cx, &mut rb) {
        Poll::Ready(Ok(())) => Ok(rb.filled().len()),
        Poll::Ready(Err(e)) => Err(e),
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

/// Writes records until rustls has none or the socket would block.
fn push(tcp: &TcpStream, conn: &mut ClientConnection) -> io::Result<()> {
    struct Socket<'a>(&'a TcpStream);
    impl Write for Socket<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.try_write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    while conn.wants_write() {
        match conn.write_tls(&mut Socket(tcp)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The socket as `std::io::Read` for rustls's `read_tls`: reads without waiting, so an empty
/// socket is `WouldBlock`, which the caller passes on.
struct Sock<'a>(&'a TcpStream);

impl Read for Sock<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}
