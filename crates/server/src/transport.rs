//! The byte stream under a connection: plain TCP, or TLS over TCP.
//!
//! The connection loop is readiness-based (wait, then `try_read` / `try_write` until
//! `WouldBlock`) so that an idle connection holds no buffer and no pending I/O future.
//! [`Transport`] keeps that surface for TLS too: rustls's [`ServerConnection`] is sans-I/O
//! (ciphertext in with `read_tls`, plaintext out with `reader()`, the reverse with
//! `writer()` and `write_tls`), so it is driven here with the socket's own non-blocking
//! calls, and the session, the framer and the hub never know which transport they are on.
//!
//! The TLS handshake happens inside [`Transport::try_read`]: each read feeds rustls and
//! writes what it wants to send. It therefore runs in the connection loop like any other
//! input and counts against the session's handshake (login) deadline with no timer of its
//! own: a client that stalls mid-handshake is closed when that deadline passes.
//!
//! Practice mode (`serve --practice SEED`, [`crate::config::Practice`]) shapes what a plain
//! connection writes the way a real network may deliver it: each write takes a random prefix
//! of the pending bytes (so lines are cut at random points), and a short random pause follows
//! it (so the replies queued meanwhile go out together). It lives here, under the connection
//! loop, because the loop's flush already copes with short writes and `WouldBlock`: a pause
//! is a `WouldBlock` from [`Transport::try_write`] and a [`Transport::ready`] that reports
//! writable when the pause ends. With the mode off the only cost is the `shape: None` branch.
//!
//! A WebSocket from the web listener (`tcpchat-web`) arrives as [`Transport::Web`]: one end
//! of a Unix socket pair whose other end that crate's pump feeds with the lines of the
//! WebSocket's text messages (an LF after each) and drains into text messages. The pair has
//! the same readiness surface as a TCP socket, so the loop, the framer and the outbox stay
//! exactly as they are; see `docs/architecture.md`, "The web listener".
//!
//! Wrong-port mistakes end at once with one debug line rather than a slot held until the
//! deadline: a TLS record (`0x16 0x03`, a ClientHello) as the first bytes on the plain port,
//! and anything rustls cannot parse as TLS (a plain-text client) on the TLS port.

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::server::{ServerConfig, ServerConnection};
use tokio::io::{AsyncWriteExt, Interest, Ready};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;

/// The first byte of a TLS handshake record, and of the version that follows it (TLS 1.0 to
/// 1.3 all write 3 here).
const TLS_HANDSHAKE: u8 = 0x16;
const TLS_MAJOR_VERSION: u8 = 0x03;

/// A connection's byte stream.
pub(crate) enum Transport {
    /// Plain TCP. `first` is true until the first bytes have been read and checked for a
    /// TLS record. `shape` is set in practice mode only (boxed: the normal path carries a
    /// null pointer, nothing more).
    Plain {
        stream: TcpStream,
        first: bool,
        shape: Option<Box<Shape>>,
    },
    /// TLS. Boxed: rustls's state is large and the plain variant should not carry it.
    Tls(Box<Tls>),
    /// A WebSocket's lines through a socket pair (see the module docs). `tls`: the
    /// WebSocket itself arrived over TLS (`wss://`), which counts as TLS for passwords.
    Web { stream: UnixStream, tls: bool },
}

pub(crate) struct Tls {
    stream: TcpStream,
    conn: ServerConnection,
    /// Decrypted bytes rustls holds that have not been read yet. While there are any, the
    /// connection is readable whatever the socket says: they arrived with earlier records.
    plaintext: usize,
}

/// `io::Read` / `io::Write` over a tokio socket's non-blocking calls, for rustls's
/// `read_tls` / `write_tls`: `WouldBlock` passes through, and clears tokio's readiness as
/// `try_read` always does.
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

/// The practice mode's state for one connection: its random numbers and the pause in force.
pub(crate) struct Shape {
    rng: SplitMix64,
    paused_until: Option<Instant>,
}

/// Longest pause after a practice-mode write. Short enough that a person never notices,
/// long enough that what is queued meanwhile leaves in one segment and that the pieces of a
/// line arrive in separate reads.
pub(crate) const PRACTICE_MAX_PAUSE_MS: u64 = 20;

impl Shape {
    fn new(seed: u64, conn_id: u64) -> Self {
        // One stream of numbers per connection, the same for the same seed and accept order.
        Self {
            rng: SplitMix64(seed ^ conn_id.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            paused_until: None,
        }
    }

    fn paused_until(&self) -> Option<Instant> {
        self.paused_until.filter(|&until| until > Instant::now())
    }

    /// Writes a random prefix of `buf` (at least one byte), then pauses; during a pause,
    /// `WouldBlock`.
    fn try_write(&mut self, stream: &TcpStream, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.paused_until().is_some() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let len = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        let take = usize::try_from(1 + self.rng.next() % len).unwrap_or(buf.len());
        let n = stream.try_write(&buf[..take.min(buf.len())])?;
        let pause = std::time::Duration::from_millis(self.rng.next() % (PRACTICE_MAX_PAUSE_MS + 1));
        self.paused_until = Some(Instant::now() + pause);
        Ok(n)
    }
}

/// SplitMix64 (Steele, Lea and Flood, 2014): a few lines, statistically fine for cutting
/// writes, and reproducible from a seed; no crate needed for that.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl Transport {
    pub(crate) fn plain(stream: TcpStream) -> Self {
        Self::Plain {
            stream,
            first: true,
            shape: None,
        }
    }

    /// Plain TCP written the practice mode's way, from `seed` and the connection's number.
    pub(crate) fn practice(stream: TcpStream, seed: u64, conn_id: u64) -> Self {
        Self::Plain {
            stream,
            first: true,
            shape: Some(Box::new(Shape::new(seed, conn_id))),
        }
    }

    /// A TLS server side on `stream` with the configuration in force at accept.
    ///
    /// # Errors
    /// rustls refuses the configuration (not expected: it was built by `tcpchat_tls`).
    pub(crate) fn tls(stream: TcpStream, config: Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        let conn = ServerConnection::new(config)?;
        Ok(Self::Tls(Box::new(Tls {
            stream,
            conn,
            plaintext: 0,
        })))
    }

    /// A WebSocket's end of its socket pair (see the module docs).
    pub(crate) fn web(stream: UnixStream, tls: bool) -> Self {
        Self::Web { stream, tls }
    }

    /// Whether this is a TLS connection (passwords are accepted on it from anywhere).
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_) | Self::Web { tls: true, .. })
    }

    /// Whether encrypted bytes wait for the socket (TLS records it refused earlier). Always
    /// `false` for plain TCP, whose bytes wait in the outbox's batch instead.
    pub(crate) fn wants_write(&self) -> bool {
        match self {
            Self::Plain { .. } | Self::Web { .. } => false,
            Self::Tls(tls) => tls.conn.wants_write(),
        }
    }

    /// The TCP socket underneath (for socket options); `None` for a WebSocket, whose TCP
    /// socket the web listener holds and configures.
    pub(crate) fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Self::Plain { stream, .. } => Some(stream),
            Self::Tls(tls) => Some(&tls.stream),
            Self::Web { .. } => None,
        }
    }

    /// Waits until `interest` may make progress. For TLS, write interest is added while
    /// rustls has records to send (handshake messages, alerts, data the socket refused),
    /// and buffered plaintext counts as readable at once.
    pub(crate) async fn ready(&self, interest: Interest) -> io::Result<Ready> {
        match self {
            Self::Plain {
                stream,
                shape: Some(shape),
                ..
            } if interest.is_writable() => match shape.paused_until() {
                Some(until) => match interest.remove(Interest::WRITABLE) {
                    Some(rest) => tokio::select! {
                        ready = stream.ready(rest) => ready,
                        () = tokio::time::sleep_until(until) => Ok(Ready::WRITABLE),
                    },
                    None => {
                        tokio::time::sleep_until(until).await;
                        Ok(Ready::WRITABLE)
                    }
                },
                None => stream.ready(interest).await,
            },
            Self::Plain { stream, .. } => stream.ready(interest).await,
            Self::Web { stream, .. } => stream.ready(interest).await,
            Self::Tls(tls) => {
                // tokio would usually report readable here too (its readiness is cleared
                // only by a WouldBlock, and rustls is fed only once its plaintext is
                // drained), but correctness should not rest on that coincidence.
                // Only when the caller wants to read: a connection that is not reading (its
                // lines wait for the command rate) would otherwise be woken at once, forever,
                // without making progress, and never reach its timers.
                if tls.plaintext > 0 && interest.is_readable() {
                    return Ok(Ready::READABLE);
                }
                let interest = if tls.conn.wants_write() {
                    interest | Interest::WRITABLE
                } else {
                    interest
                };
                tls.stream.ready(interest).await
            }
        }
    }

    /// Reads what is available without waiting, as `TcpStream::try_read`: `Ok(0)` is the
    /// peer's end of stream, `WouldBlock` means nothing more for now. A TLS record on the
    /// plain port, or a TLS failure, is an `InvalidData` error saying what happened.
    pub(crate) fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain { stream, first, .. } => {
                let n = stream.try_read(buf)?;
                if *first && n > 0 {
                    *first = false;
                    if buf[0] == TLS_HANDSHAKE && (n == 1 || buf[1] == TLS_MAJOR_VERSION) {
                        return Err(invalid(
                            "a TLS handshake on the plain port (the client wants the TLS port)"
                                .to_owned(),
                        ));
                    }
                }
                Ok(n)
            }
            Self::Web { stream, .. } => stream.try_read(buf),
            Self::Tls(tls) => tls.try_read(buf),
        }
    }

    /// Writes what the socket takes now, as `TcpStream::try_write`. For TLS, `Ok(n)` means
    /// rustls took `n` bytes; they leave as the socket allows ([`Transport::try_flush`]).
    pub(crate) fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain {
                stream,
                shape: None,
                ..
            } => stream.try_write(buf),
            Self::Plain {
                stream,
                shape: Some(shape),
                ..
            } => shape.try_write(stream, buf),
            Self::Web { stream, .. } => stream.try_write(buf),
            Self::Tls(tls) => tls.try_write(buf),
        }
    }

    /// Sends TLS records rustls still holds, as far as the socket takes them now. Nothing
    /// to do for plain TCP, which holds nothing.
    pub(crate) fn try_flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain { .. } | Self::Web { .. } => Ok(()),
            Self::Tls(tls) => tls.try_flush(),
        }
    }

    /// Writes all of `buf`, waiting for the socket (the final flush). Before a TLS
    /// handshake has completed nothing can be sent, and `buf` is dropped.
    pub(crate) async fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        match self {
            Self::Plain { stream, .. } => stream.write_all(buf).await,
            Self::Web { stream, .. } => stream.write_all(buf).await,
            Self::Tls(tls) => {
                if tls.conn.is_handshaking() {
                    return Ok(());
                }
                while !buf.is_empty() {
                    let n = tls.conn.writer().write(buf)?;
                    buf = &buf[n..];
                    if n == 0 && !tls.conn.wants_write() {
                        // rustls neither takes nor sends: nothing more can go out.
                        return Err(io::Error::new(
                            io::ErrorKind::WriteZero,
                            "TLS session takes no more data",
                        ));
                    }
                    tls.flush_all().await?;
                }
                Ok(())
            }
        }
    }

    /// Ends the sending side: for TLS a `close_notify` alert first, then the TCP
    /// half-close, so the peer reads everything before its end of stream.
    pub(crate) async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Self::Plain { stream, .. } => stream.shutdown().await,
            Self::Web { stream, .. } => stream.shutdown().await,
            Self::Tls(tls) => {
                tls.conn.send_close_notify();
                tls.flush_all().await?;
                tls.stream.shutdown().await
            }
        }
    }
}

impl Tls {
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // Plaintext already decrypted first: rustls refuses more ciphertext while its
            // plaintext buffer is full.
            match self.conn.reader().read(buf) {
                // Ok(0) with a non-empty buf: the peer sent close_notify.
                Ok(n) => {
                    self.plaintext = self.plaintext.saturating_sub(n);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed TCP without close_notify: an end of stream all the same
                // (a truncation attack cannot forge a line: the framer drops partial lines).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            self.plaintext = 0;
            if self.conn.read_tls(&mut Sock(&self.stream))? == 0 {
                // End of stream; any plaintext before it was returned above.
                return Ok(0);
            }
            match self.conn.process_new_packets() {
                Ok(state) => self.plaintext = state.plaintext_bytes_to_read(),
                Err(e) => {
                    // rustls has queued an alert saying why: send it if the socket takes it
                    // now, without waiting for a peer that is not speaking TLS.
                    let _ = self.try_flush();
                    let hint = if self.conn.is_handshaking() {
                        " (not a TLS client, or one offering no TLS 1.3 or 1.2 setting we share?)"
                    } else {
                        ""
                    };
                    return Err(invalid(format!("TLS failed: {e}{hint}")));
                }
            }
            // Handshake replies, key updates: out now, or on the next writable wait.
            self.try_flush()?;
        }
    }

    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.try_flush()?;
        let n = self.conn.writer().write(buf)?;
        self.try_flush()?;
        if n == 0 && !buf.is_empty() {
            // rustls's send buffer is full and the socket refused it: wait for writable.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn try_flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut Sock(&self.stream)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn flush_all(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            self.stream.writable().await?;
            self.try_flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rustls::pki_types::{PrivateKeyDer, ServerName};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A TLS transport reports only the readiness it was asked for: plaintext that rustls holds
    /// wakes a reader, never a connection that only wants to write (one whose lines wait for
    /// the command rate). Waking that one at once, forever, kept its task from yielding and
    /// from reaching its timers. See: #12 (found in review).
    #[tokio::test]
    async fn buffered_plaintext_wakes_a_reader_not_a_writer() {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("rcgen");
        let der = ck.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let server_config = ServerConfig::builder_with_provider(tcpchat_tls::provider())
            .with_protocol_versions(tcpchat_tls::PROTOCOL_VERSIONS)
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![der.clone()], key)
            .expect("server config");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).expect("root");
        let client_config = rustls::ClientConfig::builder_with_provider(tcpchat_tls::provider())
            .with_protocol_versions(tcpchat_tls::PROTOCOL_VERSIONS)
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let client = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
            let name = ServerName::try_from("localhost").expect("name");
            let mut tls = connector.connect(name, tcp).await.expect("handshake");
            // One write, one record: the server decrypts both lines at once.
            tls.write_all(b"HELLO-FROM ann\nLIST\n")
                .await
                .expect("write");
            tls.flush().await.expect("flush");
            let _ = done_rx.await; // stay connected until the test is done
        });
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut transport = Transport::tls(tcp, Arc::new(server_config)).expect("transport");

        // Handshake, then one byte of the record: the rest stays in rustls.
        let mut byte = [0u8; 1];
        let patience = Duration::from_secs(30);
        tokio::time::timeout(patience, async {
            loop {
                transport.try_flush().expect("flush");
                match transport.try_read(&mut byte) {
                    Ok(1) => break,
                    Ok(_) => panic!("the client closed before sending"),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        transport.ready(Interest::READABLE).await.expect("ready");
                    }
                    Err(e) => panic!("read failed: {e}"),
                }
            }
        })
        .await
        .expect("handshake and first byte within the timeout");
        assert_eq!(&byte, b"H");

        let ready = tokio::time::timeout(patience, transport.ready(Interest::WRITABLE))
            .await
            .expect("an idle socket is writable")
            .expect("ready");
        assert!(
            ready.is_writable(),
            "asked for writability, got {ready:?} (buffered plaintext must not wake a writer)"
        );
        let ready = transport.ready(Interest::READABLE).await.expect("ready");
        assert!(
            ready.is_readable(),
            "buffered plaintext is readable at once"
        );
        let mut rest = [0u8; 64];
        let n = transport.try_read(&mut rest).expect("buffered plaintext");
        assert_eq!(&rest[..n], b"ELLO-FROM ann\nLIST\n");

        let _ = done_tx.send(());
        client.await.expect("client task");
    }
}
