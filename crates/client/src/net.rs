//! The tokio side of the client: one TCP connection at a time, driven by [`Effect`]s.
//!
//! The connection is plain TCP or TLS as the [`Server`] says (`tls://HOST`): opening it
//! includes the handshake, and a refused certificate is a failed connect whose reason is
//! [`tcpchat_tls::client::explain`]'s sentence. The session backs off as for any failed
//! connect (doubling up to its maximum, 30 s in the UI) rather than stopping: a certificate
//! the server's owner renews starts working without restarting the client, and the plain
//! mode, for scripts, gives up at the first failure anyway.
//!
//! [`Link`] opens the connection when the machine says [`Effect::Connect`], writes each
//! [`Effect::Send`], closes on [`Effect::Disconnect`], and hands back what happened on the
//! socket as [`NetEvent`]s for [`feed`] to pass to the machine. Each connection is numbered,
//! so a late event from one that was already dropped is never mistaken for the current one's.
//! There is no protocol knowledge here: bytes go to [`Client::handle_bytes`] uncut.
//!
//! Both channels are bounded. Events from the socket wait for room ([`EVENT_QUEUE`]), so a
//! server that sends faster than the client draws only fills the kernel's buffers and then
//! its own. Lines to write are at most [`WRITE_QUEUE_LINES`], more than the session ever has
//! unanswered ([`crate::MAX_PENDING_REQUESTS`]); a connection whose queue is full anyway is
//! not being written at all, and is dropped as stuck.

use std::fmt;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use tcpchat_proto::ServerAddress;
use tcpchat_tls::client::{Connector, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{Client, Effect, MAX_PENDING_REQUESTS};

/// How long opening a connection (with its TLS handshake) may take before it counts as
/// failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const READ_BUFFER_BYTES: usize = 8 * 1024;

/// Socket events (each at most one 8 KiB read) waiting for the client.
pub const EVENT_QUEUE: usize = 64;

/// Lines waiting to be written: the session's bound on unanswered requests, plus the login
/// and a `LIST` written beside them.
pub const WRITE_QUEUE_LINES: usize = MAX_PENDING_REQUESTS + 2;

/// What happened on the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    Connected,
    ConnectFailed(String),
    Bytes(Vec<u8>),
    Closed(String),
}

/// The server to connect to: its address, and for `tls://` whom to trust.
#[derive(Debug, Clone)]
pub struct Server {
    address: ServerAddress,
    tls: Option<Connector>,
}

/// Why a server argument cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Address(#[from] tcpchat_proto::AddressError),
    #[error(transparent)]
    Tls(#[from] tcpchat_tls::client::ConfigError),
    #[error("--ca is for TLS servers: write the address as tls://{0}")]
    CaWithoutTls(String),
}

impl Server {
    /// The server `arg` names (`[tls://]HOST[:PORT]`, see [`ServerAddress::parse`]); for
    /// `tls://`, trusting the certificates in `ca` when given, the system's roots otherwise.
    ///
    /// # Errors
    /// [`ServerError`]: the address is invalid, the CA file cannot be used, or a CA file is
    /// given for a plain-text address (where it would silently do nothing).
    pub fn new(arg: &str, ca: Option<&Path>) -> Result<Self, ServerError> {
        let address = ServerAddress::parse(arg)?;
        let tls = match (address.is_tls(), ca) {
            (true, ca) => Some(Connector::new(ca)?),
            (false, None) => None,
            (false, Some(_)) => return Err(ServerError::CaWithoutTls(address.to_string())),
        };
        Ok(Self { address, tls })
    }

    /// A plain-text server at `host:port`, for tests.
    ///
    /// # Errors
    /// When `arg` is not `HOST[:PORT]`.
    pub fn plain(arg: &str) -> Result<Self, ServerError> {
        Self::new(arg, None)
    }

    /// The address, with its scheme.
    pub fn address(&self) -> &ServerAddress {
        &self.address
    }
}

/// `host:port`, or `tls://host:port`.
impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.address.fmt(f)
    }
}

/// At most one connection to the server, opened and closed on the machine's say-so.
#[derive(Debug)]
pub struct Link {
    server: Server,
    generation: u64,
    writer: Option<mpsc::Sender<Vec<u8>>>,
    task: Option<JoinHandle<()>>,
    events_tx: mpsc::Sender<(u64, NetEvent)>,
    events_rx: mpsc::Receiver<(u64, NetEvent)>,
    /// The current connection was dropped here (its write queue was full): reported by the
    /// next [`Link::next`].
    stuck: Option<String>,
}

impl Link {
    /// A link to `server`, not connected yet.
    pub fn new(server: Server) -> Self {
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        Self {
            server,
            generation: 0,
            writer: None,
            task: None,
            events_tx,
            events_rx,
            stuck: None,
        }
    }

    /// The server this link connects to.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Carries out the network effects and returns the rest ([`Effect::Show`],
    /// [`Effect::Exit`]) in order, for the caller.
    pub fn apply(&mut self, effects: Vec<Effect>) -> Vec<Effect> {
        let mut rest = Vec::new();
        for effect in effects {
            match effect {
                Effect::Connect => self.connect(),
                Effect::Send(line) => {
                    // A send to a connection that just died is lost with it; the machine
                    // hears of the death through `Closed` and settles the message.
                    let full = self.writer.as_ref().is_some_and(|writer| {
                        matches!(
                            writer.try_send(line),
                            Err(mpsc::error::TrySendError::Full(_))
                        )
                    });
                    if full {
                        self.disconnect();
                        self.stuck = Some(format!(
                            "{WRITE_QUEUE_LINES} lines could not be written to {}",
                            self.server
                        ));
                    }
                }
                Effect::Disconnect => self.disconnect(),
                other => rest.push(other),
            }
        }
        rest
    }

    /// The next event of the current connection. Waits forever when there is none.
    pub async fn next(&mut self) -> NetEvent {
        if let Some(why) = self.stuck.take() {
            return NetEvent::Closed(why);
        }
        loop {
            // The sender half lives in `self`, so the channel never closes.
            let Some((generation, event)) = self.events_rx.recv().await else {
                return std::future::pending().await;
            };
            if generation == self.generation {
                if matches!(event, NetEvent::ConnectFailed(_) | NetEvent::Closed(_)) {
                    self.writer = None;
                    self.task = None;
                }
                return event;
            }
        }
    }

    fn connect(&mut self) {
        self.disconnect();
        let (writer, lines) = mpsc::channel(WRITE_QUEUE_LINES);
        let task = tokio::spawn(connection(
            self.server.clone(),
            self.generation,
            lines,
            self.events_tx.clone(),
        ));
        self.writer = Some(writer);
        self.task = Some(task);
    }

    fn disconnect(&mut self) {
        self.stuck = None;
        self.generation += 1;
        self.writer = None;
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.disconnect();
    }
}

/// Passes a [`NetEvent`] to the machine.
pub fn feed(client: &mut Client, event: NetEvent, now: Instant) -> Vec<Effect> {
    match event {
        NetEvent::Connected => client.handle_connected(now),
        NetEvent::ConnectFailed(why) => client.handle_connect_failed(&why, now),
        NetEvent::Bytes(bytes) => client.handle_bytes(&bytes, now),
        NetEvent::Closed(why) => client.handle_closed(&why, now),
    }
}

/// Sleeps until `deadline`, or forever when there is none (for a `select!` arm).
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

async fn connection(
    server: Server,
    generation: u64,
    mut lines: mpsc::Receiver<Vec<u8>>,
    events: mpsc::Sender<(u64, NetEvent)>,
) {
    // Waits for room: reading stops while the client is behind. The receiver lives as long
    // as the `Link`; if it is gone nobody is listening.
    let send = |event| {
        let events = events.clone();
        async move {
            let _ = events.send((generation, event)).await;
        }
    };
    let server_name = server.to_string();
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, open(&server)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(why)) => return send(NetEvent::ConnectFailed(why)).await,
        Err(_) => {
            return send(NetEvent::ConnectFailed(format!(
                "{server_name} did not answer within {}s",
                CONNECT_TIMEOUT.as_secs()
            )))
            .await
        }
    };
    send(NetEvent::Connected).await;
    let server = server_name;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut buf = vec![0; READ_BUFFER_BYTES];
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) => return send(NetEvent::Closed("the server closed the connection".into())).await,
                Ok(n) => send(NetEvent::Bytes(buf[..n].to_vec())).await,
                Err(err) => return send(NetEvent::Closed(describe(&err, &server))).await,
            },
            line = lines.recv() => {
                let Some(line) = line else {
                    let _ = writer.shutdown().await;
                    return;
                };
                batch.clear();
                batch.extend_from_slice(&line);
                while let Ok(more) = lines.try_recv() {
                    batch.extend_from_slice(&more);
                }
                if let Err(err) = writer.write_all(&batch).await {
                    return send(NetEvent::Closed(describe(&err, &server))).await;
                }
            }
        }
    }
}

/// Opens the TCP connection and, for `tls://`, runs the handshake; a failure in words.
async fn open(server: &Server) -> Result<Stream, String> {
    let name = server.to_string();
    let tcp = TcpStream::connect(server.address.host_port().to_string())
        .await
        .map_err(|err| describe(&err, &name))?;
    // Chat lines are small and interactive; waiting to coalesce them only adds latency.
    let _ = tcp.set_nodelay(true);
    Stream::open(tcp, server.address.host(), server.tls.as_ref())
        .await
        .map_err(|err| match err {
            tcpchat_tls::client::HandshakeError::Io(err) => describe(&err, &name),
            other => other.to_string(),
        })
}

/// An I/O error in words, with a hint where there is an obvious one.
fn describe(err: &io::Error, server: &str) -> String {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => format!(
            "{server} refused the connection (is a server running there? start one with `tcpchat serve`)"
        ),
        io::ErrorKind::ConnectionReset => "the connection was reset".to_owned(),
        io::ErrorKind::ConnectionAborted => "the connection was aborted".to_owned(),
        io::ErrorKind::BrokenPipe => "the server closed the connection".to_owned(),
        io::ErrorKind::TimedOut => "the connection timed out".to_owned(),
        _ => format!("{server}: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATIENCE: Duration = Duration::from_secs(20);

    #[tokio::test]
    async fn a_connection_nobody_reads_is_dropped_not_queued_without_limit() {
        // See: #11. The server accepts and never reads: the kernel's buffers fill, then the
        // write queue; the next line finds it full and the connection is reported stuck.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local address");
        let _server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.expect("accept");
            std::future::pending::<()>().await;
            drop(socket);
        });
        let mut link = Link::new(Server::plain(&addr.to_string()).expect("an address"));
        link.apply(vec![Effect::Connect]);
        let first = tokio::time::timeout(PATIENCE, link.next()).await;
        assert_eq!(first, Ok(NetEvent::Connected));
        let mut line = vec![b'x'; 64 * 1024];
        line.push(b'\n');
        // 256 MB in all, far beyond what any kernel buffers for one socket.
        for _ in 0..4096 {
            link.apply(vec![Effect::Send(line.clone())]);
            if link.stuck.is_some() {
                break;
            }
            tokio::task::yield_now().await;
        }
        let event = tokio::time::timeout(PATIENCE, link.next()).await;
        assert!(
            matches!(&event, Ok(NetEvent::Closed(why)) if why.contains("could not be written")),
            "{event:?}"
        );
    }

    #[test]
    fn server_addresses() {
        let cases = [
            ("localhost", "localhost:5378"),
            ("localhost:6000", "localhost:6000"),
            ("chat.example.org", "chat.example.org:5378"),
            ("127.0.0.1", "127.0.0.1:5378"),
            ("127.0.0.1:1", "127.0.0.1:1"),
            ("::1", "[::1]:5378"),
            ("[::1]", "[::1]:5378"),
            ("[::1]:7", "[::1]:7"),
        ];
        // Refused here rather than passed on to fail as a connection error.
        for arg in ["localhost:port", "[::1", "", "ssl://localhost"] {
            assert!(Server::plain(arg).is_err(), "argument {arg:?}");
        }
        for (arg, want) in cases {
            let got = Server::plain(arg).map(|s| s.to_string());
            assert_eq!(got.ok().as_deref(), Some(want), "argument {arg:?}");
        }
        let tls = Server::new("tls://localhost", None).expect("system roots");
        assert_eq!(tls.to_string(), "tls://localhost:5379");
        let err = Server::new("localhost", Some(Path::new("ca.pem"))).expect_err("--ca, plain");
        assert!(err.to_string().contains("tls://localhost:5378"), "{err}");
    }
}
