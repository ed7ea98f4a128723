//! The tokio side of the client: one TCP connection at a time, driven by [`Effect`]s.
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

use std::io;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{Client, Effect, MAX_PENDING_REQUESTS};

/// How long opening a connection may take before it counts as failed.
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

/// At most one connection to the server, opened and closed on the machine's say-so.
#[derive(Debug)]
pub struct Link {
    server: String,
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
    /// A link to `server` (`host:port`), not connected yet.
    pub fn new(server: impl Into<String>) -> Self {
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        Self {
            server: server.into(),
            generation: 0,
            writer: None,
            task: None,
            events_tx,
            events_rx,
            stuck: None,
        }
    }

    /// The server this link connects to.
    pub fn server(&self) -> &str {
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

/// `HOST[:PORT]` as given on the command line, as `host:port` with the protocol's port
/// added when missing. IPv6 addresses may be bracketed (`[::1]:5378`) or bare (`::1`).
///
/// # Errors
/// The text is not `HOST[:PORT]` (see [`tcpchat_proto::HostPort`]).
pub fn server_address(arg: &str) -> Result<String, tcpchat_proto::AddressError> {
    tcpchat_proto::HostPort::parse(arg).map(|a| a.to_string())
}

async fn connection(
    server: String,
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
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&server)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return send(NetEvent::ConnectFailed(describe(&err, &server))).await,
        Err(_) => {
            return send(NetEvent::ConnectFailed(format!(
                "{server} did not answer within {}s",
                CONNECT_TIMEOUT.as_secs()
            )))
            .await
        }
    };
    // Chat lines are small and interactive; waiting to coalesce them only adds latency.
    let _ = stream.set_nodelay(true);
    send(NetEvent::Connected).await;
    let (mut reader, mut writer) = stream.into_split();
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
        let mut link = Link::new(addr.to_string());
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
        for arg in ["localhost:port", "[::1", ""] {
            assert!(server_address(arg).is_err(), "argument {arg:?}");
        }
        for (arg, want) in cases {
            assert_eq!(server_address(arg).as_deref(), Ok(want), "argument {arg:?}");
        }
    }
}
