//! One connection's task: the I/O around a [`Session`].
//!
//! A single task per connection waits on four things at once: the socket becoming readable,
//! its [`Outbox`] receiving lines, the socket becoming writable (only while a batch is
//! pending) and the session's next deadline; plus the server's shutdown. Reads are handled a
//! chunk at a time and the replies they produce are written before the next wait, so a
//! request and its answer cost one wakeup. Nothing here decides protocol behaviour; that is
//! the session's job.
//!
//! Deadlines are checked after every read, not only when the timer wins the wait: a peer that
//! sends faster than the server drains keeps the socket readable at every wait, and the timer
//! would never be polled. For the same reason each read spends tokio's cooperative budget, so
//! such a peer cannot keep its worker thread from other connections.
//!
//! Memory: an idle connection holds no read buffer, no write buffer and no timer; they exist
//! only while there is something in them (see `docs/architecture.md`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tcpchat_proto::{FrameError, Framer, Reply};
use tokio::io::Interest;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::config::Config;
use crate::hub::Hub;
use crate::outbox::{Outbox, PushError};
use crate::session::{Session, Step, Timeout};
use crate::transport::Transport;

/// What every connection task shares: the hub and the settings. Owned here, where it is
/// used; the listener builds it once and hands each task an `Arc`.
pub(crate) struct Shared<H> {
    pub(crate) hub: H,
    pub(crate) config: Config,
}

/// Bytes read per `read` call. Allocated only while the peer is sending.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The peer closed its side (after everything it sent was answered).
    PeerClosed,
    /// Reset or another socket error.
    Error,
    /// Its outbox overflowed: it stopped reading.
    Overflow,
    /// Login refused with `BUSY` (cluster store unavailable).
    Busy,
    /// The hub took the name back ([`Outbox::evict`]; e.g. a cluster node found the name
    /// claimed elsewhere while it was cut off). What was queued before still goes out.
    Evicted,
    Timeout(Timeout),
    Shutdown,
}

/// Serves one accepted connection until it ends. `permit` is its slot under
/// `--max-clients`, returned when this future completes, whatever way it ends.
///
/// A plain function returning the future, rather than an `async fn`: everything is moved
/// into the [`Connection`] before the future exists, so the task does not also carry the
/// arguments (an `async fn` keeps them in its state beside the values built from them).
pub(crate) fn serve<H: Hub>(
    stream: Transport,
    peer: SocketAddr,
    id: u64,
    shared: Arc<Shared<H>>,
    permit: OwnedSemaphorePermit,
    cancel: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    // The span is at debug level: a live span costs ~400 bytes per connection in the
    // subscriber, too much for 10,000 idle clients. Events that matter at info and warn carry
    // `peer` themselves.
    let span = tracing::debug_span!("conn", %peer, id);
    configure_socket(stream.tcp(), &shared.config);
    let config = &shared.config;
    let framer = Framer::new(config.max_line_bytes);
    let grace = config.shutdown_grace;
    let mut conn = Connection {
        outbox: Arc::new(Outbox::new(config.outbox_limit_bytes)),
        session: Session::new(
            Instant::now().into_std(),
            config.handshake_timeout,
            config.idle_timeout,
        ),
        lease: None,
        shared,
        peer,
        stream,
        pending: Vec::new(),
        written: 0,
    };
    async move {
        let _permit = permit;
        let end = conn.run(framer, &cancel, grace).await;
        let name = conn.session.name().cloned();
        drop(conn.lease.take());
        match (name, end) {
            (Some(name), End::Evicted) => {
                info!(%peer, %name, "logged out: evicted by the hub (name taken back)");
            }
            (Some(name), end) => info!(%peer, %name, ?end, "logged out"),
            (None, End::Timeout(Timeout::Handshake)) => info!(%peer, "closed: no login in time"),
            (None, end) => debug!(?end, "closed"),
        }
    }
    .instrument(span)
}

fn configure_socket(stream: &tokio::net::TcpStream, config: &Config) {
    // Replies are batched by the outbox; Nagle would only add latency on top.
    if let Err(e) = stream.set_nodelay(true) {
        debug!(error = %e, "cannot set TCP_NODELAY");
    }
    if let Some(ka) = config.keepalive {
        let sock = SockRef::from(stream);
        let params = TcpKeepalive::new()
            .with_time(ka.idle)
            .with_interval(ka.interval)
            .with_retries(ka.probes);
        if let Err(e) = sock.set_tcp_keepalive(&params) {
            debug!(error = %e, "cannot enable TCP keepalive");
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        if let Err(e) = sock.set_tcp_user_timeout(Some(ka.detection_time())) {
            debug!(error = %e, "cannot set TCP_USER_TIMEOUT");
        }
    }
}

struct Connection<H: Hub> {
    /// Plain TCP or TLS; the loop below is the same for both (see `transport`).
    stream: Transport,
    outbox: Arc<Outbox>,
    session: Session,
    lease: Option<H::Lease>,
    shared: Arc<Shared<H>>,
    peer: SocketAddr,
    /// The batch being written, taken from the outbox, and how much of it is out.
    pending: Vec<u8>,
    written: usize,
}

/// What handling input asks the loop to do next.
type Flow = Result<(), End>;

impl<H: Hub> Connection<H> {
    async fn run(
        &mut self,
        mut framer: Framer,
        cancel: &CancellationToken,
        grace: Duration,
    ) -> End {
        // Boxed and only while a deadline exists: a logged-in connection without an idle
        // timeout (the default) has none, and an inline `Sleep` would cost every idle
        // connection 112 bytes for nothing.
        let mut sleep: Option<Pin<Box<Sleep>>> = None;
        let mut armed: Option<std::time::Instant> = None;
        let mut read_buf: Vec<u8> = Vec::new();

        let end = loop {
            // Queue → socket before waiting: replies produced by the last read go out now.
            if let Err(end) = self.flush_ready() {
                break end;
            }
            let deadline = self.session.poll_timeout();
            if deadline != armed {
                match (deadline, sleep.as_mut()) {
                    (Some(at), Some(timer)) => timer.as_mut().reset(at.into()),
                    (Some(at), None) => sleep = Some(Box::pin(tokio::time::sleep_until(at.into()))),
                    (None, _) => sleep = None,
                }
                armed = deadline;
            }
            let interest = if self.pending.is_empty() {
                Interest::READABLE
            } else {
                Interest::READABLE | Interest::WRITABLE
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => break End::Shutdown,
                // One readiness wait for both directions (each wait is a 150-byte future that
                // every idle connection would carry): write interest only while a batch is
                // pending; the write itself happens at the top of the loop.
                ready = self.stream.ready(interest) => {
                    let ready = match ready {
                        Ok(ready) => ready,
                        Err(e) => {
                            debug!(error = %e, "readiness failed");
                            break End::Error;
                        }
                    };
                    if ready.is_readable() || ready.is_read_closed() {
                        match self.read_some(&mut framer, &mut read_buf).await {
                            Ok(Some(now)) => {
                                // After every read, whatever the timer: see the module docs.
                                if let Some(timeout) = self.session.handle_timeout(now) {
                                    break End::Timeout(timeout);
                                }
                                tokio::task::consume_budget().await;
                            }
                            Ok(None) => {}
                            Err(end) => break end,
                        }
                    }
                }
                () = self.outbox.ready(), if self.pending.is_empty() => {}
                () = async {
                    match sleep.as_mut() {
                        Some(timer) => timer.as_mut().await,
                        None => std::future::pending().await,
                    }
                }, if armed.is_some() => {
                    if let Some(timeout) = self.session.handle_timeout(Instant::now().into_std()) {
                        break End::Timeout(timeout);
                    }
                    armed = None;
                }
            }
        };
        match end {
            End::PeerClosed | End::Busy | End::Evicted | End::Shutdown | End::Timeout(_) => {
                self.close_gracefully(grace).await;
            }
            // Nobody is reading: don't spend time on a last write.
            End::Error | End::Overflow => {}
        }
        end
    }

    /// One `read` and everything it completes; returns the time the bytes were handled at,
    /// or `None` if there were none. A clean EOF returns `Err(PeerClosed)` only after every
    /// complete line before it was handled.
    async fn read_some(
        &mut self,
        framer: &mut Framer,
        read_buf: &mut Vec<u8>,
    ) -> Result<Option<std::time::Instant>, End> {
        if read_buf.is_empty() {
            read_buf.resize(READ_CHUNK_BYTES, 0);
        }
        let n = match self.stream.try_read(read_buf) {
            Ok(0) => {
                if framer.has_partial_line() {
                    debug!("peer closed in the middle of a line; the partial line is dropped");
                }
                return Err(End::PeerClosed);
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Idle again: give the buffer back instead of holding it while waiting.
                *read_buf = Vec::new();
                return Ok(None);
            }
            Err(e) => {
                debug!(error = %e, "read failed");
                return Err(End::Error);
            }
        };
        let mut input = &read_buf[..n];
        // One clock read per chunk, not per line: every line in it arrived together, and
        // reading the clock was a visible share of the per-message cost
        // (docs/performance.md).
        let now = Instant::now().into_std();
        loop {
            match framer.next_line(&mut input) {
                Ok(Some(line)) => self.handle_line(line, now).await?,
                Ok(None) => break,
                Err(FrameError::LineTooLong { limit, head }) => {
                    debug!(limit, "line too long; discarding it");
                    let reply = self.session.handle_overlong(&head);
                    self.reply(&reply)?;
                }
            }
        }
        if n < read_buf.len() {
            // A short read almost always means the socket is drained.
            *read_buf = Vec::new();
        }
        Ok(Some(now))
    }

    async fn handle_line(&mut self, line: &[u8], now: std::time::Instant) -> Flow {
        debug!(line = %String::from_utf8_lossy(line), "request");
        match self.session.handle_line(line, now) {
            Step::Reply(reply) => self.reply(&reply),
            Step::Login(name) => {
                let outcome = self.shared.hub.login(&name, &self.outbox).await;
                let outcome = outcome.map(|lease| self.lease = Some(lease));
                let logged_in = outcome.is_ok();
                let step = self.session.handle_login(name, outcome);
                if logged_in {
                    if let Reply::Hello(name) = &step.reply {
                        info!(peer = %self.peer, %name, "logged in");
                    }
                }
                self.reply(&step.reply)?;
                if step.close {
                    warn!(peer = %self.peer, "login refused: presence service unavailable");
                    return Err(End::Busy);
                }
                Ok(())
            }
            Step::List => {
                let roster = self.shared.hub.list().await;
                debug!(bytes = roster.line().len(), "reply LIST-OK");
                self.outbox
                    .push_with(|buf| buf.extend_from_slice(roster.line()))
                    .map_err(|why| self.refused(why))
            }
            Step::Send { to, body } => {
                // The session only yields Send after login, so there is a name.
                let Some(from) = self.session.name() else {
                    return self.reply(&Reply::BadRqstHdr);
                };
                let outcome = self.shared.hub.deliver(from, &to, body).await;
                let reply = self.session.handle_delivery(outcome);
                self.reply(&reply)
            }
        }
    }

    fn reply(&self, reply: &Reply<'_>) -> Flow {
        debug!(?reply, "reply");
        self.outbox
            .push_with(|buf| reply.encode(buf))
            .map_err(|why| self.refused(why))
    }

    /// How the connection ends when its outbox refuses lines, logged as what happened.
    fn refused(&self, why: PushError) -> End {
        let (peer, name) = (self.peer, self.session.name());
        match why {
            PushError::Full => {
                warn!(%peer, ?name, "outgoing queue full: peer is not reading; dropping it");
                End::Overflow
            }
            PushError::Evicted => {
                warn!(%peer, ?name, "evicted by the hub; closing after what was queued");
                End::Evicted
            }
            // Only this task closes its outbox, and only after the loop: not reachable while
            // the connection runs. Ending it is still the safe answer.
            PushError::Closed => {
                debug!("outbox closed while the connection ran");
                End::Error
            }
        }
    }

    /// Writes as much as the socket takes without waiting: the pending batch, then whatever
    /// the outbox has gathered since.
    fn flush_ready(&mut self) -> Flow {
        // TLS records the socket refused last time (handshake messages included) go first.
        if let Err(e) = self.stream.try_flush() {
            debug!(error = %e, "write failed");
            return Err(End::Error);
        }
        loop {
            if self.pending.is_empty() {
                let (batch, refusing) = self.outbox.take();
                if let Some(why) = refusing {
                    // Written by the final flush unless the peer stopped reading (Full).
                    self.pending = batch;
                    self.written = 0;
                    return Err(self.refused(why));
                }
                if batch.is_empty() {
                    return Ok(());
                }
                self.pending = batch;
                self.written = 0;
            }
            match self.stream.try_write(&self.pending[self.written..]) {
                Ok(n) => {
                    self.written += n;
                    if self.written == self.pending.len() {
                        // Freed, not kept for the next batch: an idle connection holds no
                        // write buffer.
                        self.pending = Vec::new();
                        self.written = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => {
                    debug!(error = %e, "write failed");
                    return Err(End::Error);
                }
            }
        }
    }

    /// The owner's final flush: frees the name, closes the outbox ([`Outbox::close`]),
    /// writes what is still queued (bounded by `grace`), then half-closes so the peer reads
    /// everything before seeing EOF.
    async fn close_gracefully(&mut self, grace: Duration) {
        drop(self.lease.take());
        let rest = self.outbox.close();
        let stream = &mut self.stream;
        let pending = &self.pending[self.written..];
        let flush = async {
            stream.write_all(pending).await?;
            stream.write_all(&rest).await?;
            stream.shutdown().await
        };
        match tokio::time::timeout(grace, flush).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => debug!(error = %e, "final flush failed"),
            Err(_) => debug!("final flush timed out"),
        }
    }
}
