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
//!
//! The command rate ([`crate::limits::TokenBucket`]) is applied line by line as lines come
//! out of the framer. A line over the rate is *paused* ([`Paused`]): the loop stops reading
//! the socket, keeps the rest of that read where it is, and the pause's end joins the
//! session's deadline in the one timer; replies and deliveries keep flowing meanwhile. When
//! it ends the line is handled, then the rest of the read, each line through the bucket
//! again, so lines are handled in order and only later. Only a paused connection holds the
//! pause (and its timer); the idle path carries nothing new.
//!
//! A `SEND` whose outcome the hub gives later ([`Sent::Later`]: a cluster node waiting for
//! the recipient's node) does not stop the connection: its reply waits in [`Awaiting`], the
//! next lines are handled meanwhile, and replies leave in request order, each as soon as it
//! and every one before it are known. Any other reply first waits for the `SEND`s before it.
//! At most [`MAX_AWAITING`] wait at once; beyond that the connection waits for the oldest
//! before reading on, so a client cannot make the queue grow without bound.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tcpchat_proto::{Extension, FrameError, Framer, Reply};
use tokio::io::Interest;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::accounts::{AccountService, Origin};
use crate::admission::{Admission, Slot};
use crate::config::Config;
use crate::history::{direct_key, History};
use crate::hub::{Delivery, DirectResult, Hub, LoginError, Sent};
use crate::limits::{Admit, TokenBucket};
use crate::metrics::{Command, Disconnect, Listener, Metrics};
use crate::outbox::{Outbox, PushError};
use crate::session::{PingSettings, Session, Step, Timeout, Wake};
use crate::transport::Transport;

/// What every connection task shares: the hub and the settings. Owned here, where it is
/// used; the listener builds it once and hands each task an `Arc`.
pub(crate) struct Shared<H> {
    pub(crate) hub: H,
    pub(crate) config: Config,
    pub(crate) admission: Admission,
    pub(crate) metrics: Metrics,
    /// The accounts service when the server has a store; `None`: `accounts` is not offered.
    pub(crate) accounts: Option<AccountService>,
}

/// Bytes read per `read` call. Allocated only while the peer is sending.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Most `SEND` replies one connection may have waiting for the hub at once.
const MAX_AWAITING: usize = 256;

/// A `SEND` reply waiting its turn (see the module docs).
enum Awaiting {
    Done(Delivery),
    Later(tokio::sync::oneshot::Receiver<Delivery>),
}

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
    /// Kept its command bucket empty for the flood timeout.
    Flooded,
    /// Displaced by a newer connection at the pre-login cap while logging in; `BUSY` is
    /// already queued.
    Displaced,
}

/// Serves one accepted connection until it ends. `slot` is its share of the limits (its
/// place under `--max-clients` and the per-address limits), given back when this future
/// completes, whatever way it ends.
///
/// A plain function returning the future, rather than an `async fn`: everything is moved
/// into the [`Connection`] before the future exists, so the task does not also carry the
/// arguments (an `async fn` keeps them in its state beside the values built from them).
pub(crate) fn serve<H: Hub>(
    stream: Transport,
    peer: SocketAddr,
    id: u64,
    shared: Arc<Shared<H>>,
    slot: Slot,
    cancel: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    // The span is at debug level: a live span costs ~400 bytes per connection in the
    // subscriber, too much for 10,000 idle clients. Events that matter at info and warn carry
    // `peer` themselves.
    let span = tracing::debug_span!("conn", %peer, id);
    if let Some(tcp) = stream.tcp() {
        configure_socket(tcp, &shared.config);
    }
    let config = &shared.config;
    let framer = Framer::new(config.max_line_bytes);
    let grace = config.shutdown_grace;
    let now = Instant::now().into_std();
    let bucket = shared.admission.command_bucket(&slot, now);
    let mut conn = Connection {
        outbox: Arc::new(Outbox::new(config.outbox_limit_bytes)),
        session: Session::new(
            Instant::now().into_std(),
            config.handshake_timeout,
            config.idle_timeout,
            offered(&shared),
        )
        .with_max_topic(config.rooms.topic_bytes)
        .with_pings(PingSettings {
            interval: config.ping_interval,
            timeout: config.ping_timeout,
        })
        .with_generation(config.generation),
        lease: None,
        peer,
        stream,
        pending: Vec::new(),
        pending_stamp: None,
        written: 0,
        slot,
        bucket,
        paused: None,
        awaiting: VecDeque::new(),
        shared,
    };
    // Here, not in the task: the accept loop runs this, so connections enter the pre-login
    // queue in the order they were accepted.
    conn.shared
        .admission
        .enter_prelogin(&mut conn.slot, id, &conn.outbox);
    let kind = match conn.stream {
        Transport::Tls(_) => Listener::Tls,
        Transport::Web { .. } => Listener::Web,
        Transport::Plain { .. } => Listener::Tcp,
    };
    conn.shared.metrics.opened(kind);
    async move {
        let end = conn.run(framer, &cancel, grace).await;
        let name = conn.session.name().cloned();
        conn.shared
            .metrics
            .closed(kind, end.reason(), name.is_some());
        drop(conn.lease.take());
        match (name, end) {
            (Some(name), End::Evicted) => {
                info!(%peer, %name, "logged out: evicted by the hub (name taken back)");
            }
            (Some(name), End::Timeout(Timeout::Silent)) => {
                info!(%peer, %name, "logged out: no answer to a ping");
            }
            (Some(name), end) => info!(%peer, %name, ?end, "logged out"),
            (None, End::Timeout(Timeout::Handshake)) => info!(%peer, "closed: no login in time"),
            (None, End::Evicted | End::Displaced) => {
                debug!("closed: displaced by a newer connection at the pre-login cap");
            }
            (None, end) => debug!(?end, "closed"),
        }
    }
    .instrument(span)
}

/// What this server offers a connection: what is configured and served, and `accounts` only
/// with a store able to keep them.
fn offered<H: Hub>(shared: &Shared<H>) -> tcpchat_proto::ExtensionSet {
    let mut offered = crate::session::offered(shared.config.extensions, shared.hub.serves_rooms());
    if !shared
        .accounts
        .as_ref()
        .is_some_and(AccountService::offered)
    {
        offered.remove(tcpchat_proto::Extension::Accounts);
    }
    // Only a hub that keeps history serves it (one process, or a cluster's shared streams).
    if shared.hub.history().is_none() {
        offered.remove(tcpchat_proto::Extension::History);
    }
    offered
}

pub(crate) fn configure_socket(stream: &tokio::net::TcpStream, config: &Config) {
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
    /// When the oldest delivery in `pending` was read ([`crate::latency`]).
    pending_stamp: Option<crate::latency::Stamp>,
    /// Its share of the limits; see [`crate::admission`].
    slot: Slot,
    /// Its command rate; `None` when the rate is off or the peer exempt.
    bucket: Option<TokenBucket>,
    /// A line waiting for the command rate, boxed: only a flooding connection has one.
    paused: Option<Box<Paused>>,
    /// `SEND` replies not yet given, oldest first; empty unless the hub answers later.
    awaiting: VecDeque<Awaiting>,
}

/// A line the command rate made wait, and the rest of the read it came in.
struct Paused {
    line: Held,
    /// The bytes of the read buffer after it, not yet handed to the framer.
    rest: std::ops::Range<usize>,
    /// When the bucket admits the line.
    until: std::time::Instant,
}

/// The waiting line: a whole line, or the head of an overlong one (answered with an error).
enum Held {
    Line(Vec<u8>),
    Overlong(Vec<u8>),
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
            let resume_at = self.paused.as_ref().map(|p| p.until);
            let deadline = match (self.session.poll_timeout(), resume_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if deadline != armed {
                match (deadline, sleep.as_mut()) {
                    (Some(at), Some(timer)) => timer.as_mut().reset(at.into()),
                    (Some(at), None) => sleep = Some(Box::pin(tokio::time::sleep_until(at.into()))),
                    (None, _) => sleep = None,
                }
                armed = deadline;
            }
            // Not reading while a line waits for the command rate: see the module docs.
            let reading = self.paused.is_none();
            // Output keeps flowing while reading is paused, TLS records that the socket
            // refused included (`docs/security.md`, "Command rate").
            let writing = !self.pending.is_empty() || self.stream.wants_write();
            let interest = match (reading, writing) {
                (true, false) => Some(Interest::READABLE),
                (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
                (false, true) => Some(Interest::WRITABLE),
                (false, false) => None,
            };
            tokio::select! {
                biased;
                () = cancel.cancelled() => break End::Shutdown,
                // One readiness wait for both directions (each wait is a 150-byte future that
                // every idle connection would carry): write interest only while a batch is
                // pending; the write itself happens at the top of the loop.
                ready = self.stream.ready(interest.unwrap_or(Interest::READABLE)),
                    if interest.is_some() =>
                {
                    let ready = match ready {
                        Ok(ready) => ready,
                        Err(e) => {
                            debug!(error = %e, "readiness failed");
                            break End::Error;
                        }
                    };
                    if reading && (ready.is_readable() || ready.is_read_closed()) {
                        // Read (no await), then handle: two steps, not one async call, so
                        // the task's state holds only one level of line handling.
                        let read = match self.read_some(&mut framer, &mut read_buf) {
                            Ok(Some((n, now))) => {
                                let stamp = self.shared.metrics.read_stamp(now);
                                let handled = crate::latency::scope(
                                    stamp,
                                    self.handle_input(&mut framer, &read_buf, 0..n, now),
                                );
                                match handled.await {
                                    Ok(()) => {
                                        if n < read_buf.len() && self.paused.is_none() {
                                            // A short read almost always means the socket is
                                            // drained.
                                            read_buf = Vec::new();
                                        }
                                        Ok(Some(now))
                                    }
                                    Err(end) => Err(end),
                                }
                            }
                            Ok(None) => Ok(None),
                            Err(end) => Err(end),
                        };
                        match read {
                            Ok(Some(now)) => {
                                // After every read, whatever the timer: see the module docs.
                                if let Err(end) = self.handle_timeout(now) {
                                    break end;
                                }
                                tokio::task::consume_budget().await;
                            }
                            Ok(None) => {}
                            Err(end) => break end,
                        }
                    }
                }
                // Also while a batch is pending: a peer that stopped reading never makes the
                // socket writable again, and only this wakeup (an overflow notifies) tells the
                // task to drop it. A pending batch costs at most one more wakeup per batch:
                // only the first push into an empty queue notifies.
                () = self.outbox.ready() => {}
                outcome = oldest_outcome(&mut self.awaiting),
                    if matches!(self.awaiting.front(), Some(Awaiting::Later(_))) =>
                {
                    if let Some(front) = self.awaiting.front_mut() {
                        *front = Awaiting::Done(outcome);
                    }
                    if let Err(end) = self.answer_ready() {
                        break end;
                    }
                }
                () = async {
                    match sleep.as_mut() {
                        Some(timer) => timer.as_mut().await,
                        None => std::future::pending().await,
                    }
                }, if armed.is_some() => {
                    let now = Instant::now().into_std();
                    // The pause is over: the waiting line, then the rest of its read.
                    if let Some(paused) = self.paused.take_if(|p| p.until <= now) {
                        let Paused { line, rest, .. } = *paused;
                        // Timed from now: the pause is the command rate's, not the server's.
                        let stamp = self.shared.metrics.read_stamp(now);
                        let handled = crate::latency::scope(stamp, async {
                            match line {
                                Held::Line(line) => self.handle_line(&line, now).await?,
                                Held::Overlong(head) => self.handle_overlong(&head, now).await?,
                            }
                            self.handle_input(&mut framer, &read_buf, rest, now).await
                        });
                        if let Err(end) = handled.await {
                            break end;
                        }
                        if self.paused.is_none() {
                            // Everything read is handled: back to reading, with no buffer
                            // while idle.
                            read_buf = Vec::new();
                        }
                    }
                    if let Err(end) = self.handle_timeout(now) {
                        break end;
                    }
                    armed = None;
                }
            }
        };
        match end {
            End::PeerClosed
            | End::Busy
            | End::Evicted
            | End::Shutdown
            | End::Timeout(_)
            | End::Flooded
            | End::Displaced => {
                // Every SEND read gets its answer before the close, as without a cluster.
                let _ = tokio::time::timeout(grace, self.answer_all()).await;
                self.close_gracefully(grace).await;
            }
            // Nobody is reading: don't spend time on a last write.
            End::Error | End::Overflow => {}
        }
        end
    }

    /// One `read`: how many bytes, and the time they are handled at, or `None` if there were
    /// none. A clean EOF returns `Err(PeerClosed)`; every complete line before it was handled
    /// after the reads that brought it.
    fn read_some(
        &mut self,
        framer: &mut Framer,
        read_buf: &mut Vec<u8>,
    ) -> Result<Option<(usize, std::time::Instant)>, End> {
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
            Ok(n) => {
                self.shared.metrics.received(n);
                n
            }
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
        // One clock read per chunk, not per line: every line in it arrived together, and
        // reading the clock was a visible share of the per-message cost
        // (docs/performance.md).
        let now = Instant::now().into_std();
        Ok(Some((n, now)))
    }

    /// Frames and handles `read_buf[range]`, each line through the command rate; pauses at
    /// the first line that has to wait (see [`Paused`]).
    async fn handle_input(
        &mut self,
        framer: &mut Framer,
        read_buf: &[u8],
        range: std::ops::Range<usize>,
        now: std::time::Instant,
    ) -> Flow {
        let end = range.end;
        let mut input = &read_buf[range];
        loop {
            let held = match framer.next_line(&mut input) {
                Ok(Some(line)) => match self.admit_line(now)? {
                    None => {
                        self.handle_line(line, now).await?;
                        continue;
                    }
                    Some(until) => (Held::Line(line.to_vec()), until),
                },
                Ok(None) => return Ok(()),
                Err(FrameError::LineTooLong { limit, head }) => {
                    debug!(limit, "line too long; discarding it");
                    match self.admit_line(now)? {
                        None => {
                            self.handle_overlong(&head, now).await?;
                            continue;
                        }
                        Some(until) => (Held::Overlong(head), until),
                    }
                }
            };
            let (line, until) = held;
            self.paused = Some(Box::new(Paused {
                line,
                rest: end - input.len()..end,
                until,
            }));
            return Ok(());
        }
    }

    /// The command rate's word on the next line: `None` to handle it now, or when to.
    fn admit_line(&mut self, now: std::time::Instant) -> Result<Option<std::time::Instant>, End> {
        match self.bucket.as_mut().map(|b| b.handle_request(now)) {
            None | Some(Admit::Now) => Ok(None),
            Some(Admit::After(wait)) => Ok(Some(now + wait)),
            Some(Admit::Disconnect) => {
                let (peer, name) = (self.peer, self.session.name());
                info!(%peer, ?name, "disconnected: flooding (lines kept waiting for the flood timeout)");
                Err(End::Flooded)
            }
        }
    }

    async fn handle_overlong(&mut self, head: &[u8], now: std::time::Instant) -> Flow {
        let reply = self.session.handle_overlong(head, now);
        self.shared.metrics.request(Command::Other, &reply);
        self.answer_all().await?;
        self.reply(&reply)
    }

    /// Gives every waiting `SEND` reply whose turn has come, oldest first.
    fn answer_ready(&mut self) -> Flow {
        while let Some(front) = self.awaiting.front_mut() {
            let outcome = match front {
                Awaiting::Done(outcome) => *outcome,
                Awaiting::Later(rx) => match rx.try_recv() {
                    Ok(outcome) => outcome,
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty) => return Ok(()),
                    // Nobody confirmed it.
                    Err(tokio::sync::oneshot::error::TryRecvError::Closed) => Delivery::NoSuchUser,
                },
            };
            self.awaiting.pop_front();
            let reply = self.session.handle_delivery(outcome);
            self.shared.metrics.request(Command::Send, &reply);
            self.reply(&reply)?;
        }
        Ok(())
    }

    /// Waits for every waiting `SEND` reply and gives them, in order.
    async fn answer_all(&mut self) -> Flow {
        while !self.awaiting.is_empty() {
            self.answer_oldest().await?;
        }
        Ok(())
    }

    /// Waits for the oldest waiting `SEND` reply, then gives every one whose turn has come.
    async fn answer_oldest(&mut self) -> Flow {
        let outcome = oldest_outcome(&mut self.awaiting).await;
        if let Some(front) = self.awaiting.front_mut() {
            *front = Awaiting::Done(outcome);
        }
        self.answer_ready()
    }

    /// The session's deadlines at `now`: a server `PING` to queue, or the end.
    fn handle_timeout(&mut self, now: std::time::Instant) -> Flow {
        match self.session.handle_timeout(now) {
            None => Ok(()),
            Some(Wake::Ping(token)) => self.reply(&Reply::Ping(Some(&token))),
            Some(Wake::Close(why)) => Err(End::Timeout(why)),
        }
    }

    async fn handle_line(&mut self, line: &[u8], now: std::time::Instant) -> Flow {
        debug!(line = %String::from_utf8_lossy(line), "request");
        let step = self.session.handle_line(line, now);
        // Replies go out in request order: whatever answers this line waits for the `SEND`s
        // still waiting on their answers (only another `SEND` may join them).
        if !matches!(step, Step::Send { .. } | Step::Nothing) {
            self.answer_all().await?;
        }
        match step {
            Step::Reply(reply) => {
                self.shared.metrics.request(Command::Other, &reply);
                // From `EXT-OK` on, senders give this connection the lines with offsets.
                if matches!(reply, Reply::ExtOk(_)) && self.session.has(Extension::History) {
                    self.outbox.set_history();
                }
                self.reply(&reply)
            }
            Step::Nothing => Ok(()),
            Step::Login(name) => {
                if !self.slot.may_log_in() {
                    return Err(End::Displaced);
                }
                let shared = Arc::clone(&self.shared);
                let outcome = match check_unregistered(shared.accounts.as_ref(), &name).await {
                    Ok(()) => self.shared.hub.login(&name, &self.outbox).await,
                    Err(refused) => Err(refused),
                };
                self.finish_login(name, outcome).await
            }
            Step::AccountLogin { name, password } => {
                let shared = Arc::clone(&self.shared);
                // The session yields it only where `accounts` was negotiated, so offered.
                let Some(accounts) = &shared.accounts else {
                    return self.reply(&Reply::BadRqstHdr);
                };
                if !self.slot.may_log_in() {
                    return Err(End::Displaced);
                }
                // Boxed, as every accounts call here: their futures (store, hashing pool) would
                // otherwise be part of every connection task's state, idle ones included.
                let checked = Box::pin(accounts.login(self.origin(), &name, &password)).await;
                if let Err(reply) = checked {
                    return self.reply(&reply);
                }
                // Before the name is ours: from here direct messages to it are numbered and
                // kept for the catch-up below, not queued live (`docs/protocol.md`, "Resume").
                if let Some(history) = self
                    .shared
                    .hub
                    .history()
                    .filter(|h| h.is_shared() || h.tracks(name.as_str()))
                {
                    history.hold(name.as_str());
                }
                let outcome = self.shared.hub.take_over(&name, &self.outbox).await;
                let logged_in = outcome.is_ok();
                self.finish_login(name.clone(), outcome).await?;
                let resume = self.session.take_resume();
                match shared.hub.history() {
                    Some(history) if logged_in && history.tracks(name.as_str()) => {
                        Box::pin(self.catch_up(history, &name, resume)).await
                    }
                    _ => Ok(()),
                }
            }
            Step::Register(password) => {
                let shared = Arc::clone(&self.shared);
                let Some((accounts, name)) = self.account_user(&shared) else {
                    return self.reply(&Reply::BadRqstHdr);
                };
                let reply = Box::pin(accounts.register(self.origin(), &name, &password)).await;
                self.reply(&reply)
            }
            Step::ChangePassword { old, new } => {
                let shared = Arc::clone(&self.shared);
                let Some((accounts, name)) = self.account_user(&shared) else {
                    return self.reply(&Reply::BadRqstHdr);
                };
                let reply =
                    Box::pin(accounts.change_password(self.origin(), &name, &old, &new)).await;
                self.reply(&reply)
            }
            Step::Unregister(password) => {
                let shared = Arc::clone(&self.shared);
                let Some((accounts, name)) = self.account_user(&shared) else {
                    return self.reply(&Reply::BadRqstHdr);
                };
                let reply = Box::pin(accounts.unregister(self.origin(), &name, &password)).await;
                // The account's stream goes with it (a new account gets a new epoch).
                if reply == Reply::UnregisterOk {
                    if let Some(history) = shared.hub.history() {
                        history.reset(name.as_str());
                    }
                }
                self.reply(&reply)
            }
            Step::List => {
                let roster = self.shared.hub.list().await;
                self.shared.metrics.listed();
                debug!(bytes = roster.line().len(), "reply LIST-OK");
                self.outbox
                    .push_with(|buf| buf.extend_from_slice(roster.line()))
                    .map_err(|why| self.refused(why))
            }
            Step::Who => {
                // The hub's roster is a `LIST-OK` line; the names after its word are the same
                // in `WHO-OK`.
                let roster = self.shared.hub.list().await;
                let line = roster.line();
                let current = Reply::ListOk(Vec::new()).to_line();
                let old = Reply::WhoOk(Vec::new()).to_line();
                let names = line.get(current.len() - 1..).unwrap_or_default();
                debug!(bytes = line.len(), "reply WHO-OK");
                self.outbox
                    .push_with(|buf| {
                        buf.extend_from_slice(&old[..old.len() - 1]);
                        buf.extend_from_slice(names);
                    })
                    .map_err(|why| self.refused(why))
            }
            Step::Send { to, body } => {
                // The session only yields Send after login, so there is a name.
                let Some(from) = self.session.name() else {
                    return self.reply(&Reply::BadRqstHdr);
                };
                // A `history` sender: an offline account gets the message kept.
                if self.session.has(Extension::History) && self.shared.hub.history().is_some() {
                    let from = from.clone();
                    self.answer_all().await?;
                    let reply = match self.shared.hub.deliver_or_queue(&from, &to, body).await {
                        DirectResult::Delivered => Reply::SendOk,
                        DirectResult::Queued => Reply::SendQueued,
                        DirectResult::NoSuchUser => self.session.generation().bad_dest(),
                    };
                    self.shared.metrics.request(Command::Send, &reply);
                    return self.reply(&reply);
                }
                match self.shared.hub.submit(from, &to, body).await {
                    Sent::Now(outcome) if self.awaiting.is_empty() => {
                        let reply = self.session.handle_delivery(outcome);
                        self.shared.metrics.request(Command::Send, &reply);
                        self.reply(&reply)
                    }
                    Sent::Now(outcome) => {
                        self.awaiting.push_back(Awaiting::Done(outcome));
                        Ok(())
                    }
                    Sent::Later(rx) => {
                        self.awaiting.push_back(Awaiting::Later(rx));
                        if self.awaiting.len() >= MAX_AWAITING {
                            self.answer_oldest().await?;
                        }
                        Ok(())
                    }
                }
            }
            Step::History {
                stream,
                before,
                count,
            } => {
                let shared = Arc::clone(&self.shared);
                let Some(history) = shared.hub.history() else {
                    return self.reply(&Reply::BadRqstHdr);
                };
                Box::pin(self.history_page(history, stream, before, count)).await
            }
            Step::Room(request) => {
                // The session only yields Room after login, so there is a lease.
                let Some(lease) = &self.lease else {
                    return self.reply(&Reply::BadRqstHdr);
                };
                let limits = self.shared.config.rooms;
                let outcome = self
                    .shared
                    .hub
                    .room(lease, &self.outbox, request, limits)
                    .await;
                match self.session.handle_room(outcome) {
                    Some(reply) => self.reply(&reply),
                    None => Ok(()),
                }
            }
        }
    }

    /// The hub's (or the account check's) answer to a login: take the lease, leave the
    /// pre-login queue, reply.
    async fn finish_login(
        &mut self,
        name: tcpchat_proto::Username,
        outcome: Result<H::Lease, LoginError>,
    ) -> Flow {
        // Out of the pre-login queue only once the name is ours: a refused name
        // (`IN-USE`) may be retried, and keeps counting against the cap meanwhile.
        if outcome.is_ok() && !self.slot.leave_prelogin() {
            // Displaced while the hub decided; dropping the lease frees the name.
            return Err(End::Displaced);
        }
        let outcome = outcome.map(|lease| self.lease = Some(lease));
        let logged_in = outcome.is_ok();
        let step = self.session.handle_login(name, outcome);
        self.shared.metrics.request(Command::Login, &step.reply);
        if logged_in {
            if let Reply::Hello(name) = &step.reply {
                info!(peer = %self.peer, %name, "logged in");
            }
        }
        self.reply(&step.reply)?;
        // The first list right after `HELLO`, then every change, in the queue that
        // deliveries take (`docs/protocol.md`, "presence").
        if logged_in && self.session.has(Extension::Presence) {
            if let Some(lease) = &self.lease {
                self.shared.hub.watch(lease, &self.outbox).await;
            }
        }
        if step.close {
            warn!(peer = %self.peer, "login refused: presence service unavailable");
            return Err(End::Busy);
        }
        Ok(())
    }

    /// `HISTORY`: a page of a stream the user may read, or `NO-HISTORY`.
    async fn history_page(
        &mut self,
        history: &History,
        stream: tcpchat_proto::Stream,
        before: Option<u64>,
        count: u32,
    ) -> Flow {
        let Some(name) = self.session.name().cloned() else {
            return self.reply(&Reply::BadRqstHdr);
        };
        let key = match &stream {
            tcpchat_proto::Stream::Direct if history.tracks(name.as_str()) => {
                direct_key(name.as_str())
            }
            tcpchat_proto::Stream::Room(room)
                if self.session.has(Extension::Rooms)
                    && self
                        .lease
                        .as_ref()
                        .is_some_and(|lease| self.shared.hub.in_room(lease, room)) =>
            {
                room.as_str().to_owned()
            }
            _ => return self.reply(&Reply::NoHistory),
        };
        let (view, page) = match history.page(&key, before, count).await {
            Ok(page) => (page.view, page.messages),
            // A cluster's store is out of reach: no epoch to give (one made up here would
            // tell the client its stream was reset). Try again, as for a room request.
            Err(e) if history.is_shared() => {
                debug!(error = %e, stream = %key, "history read failed");
                return self.reply(&Reply::RoomUnavailable);
            }
            Err(e) => {
                warn!(error = %e, stream = %key, "history read failed");
                (history.view(&key), Vec::new())
            }
        };
        let n = u32::try_from(page.len()).unwrap_or(u32::MAX);
        self.outbox
            .push_with(|buf| {
                Reply::encode_history_ok(buf, stream.as_str(), &view.epoch, view.top, n);
                for m in &page {
                    stored_line(buf, &stream, m);
                }
            })
            .map_err(|why| self.refused(why))?;
        self.drain().await
    }

    /// The catch-up of an account's login (`docs/protocol.md`, "Offline delivery",
    /// "Resume"): what it missed of its direct stream, in order, then (on a `history`
    /// connection) `RESUME-OK`, queued in the same step that makes the stream live, so no
    /// live line comes before it and none is missed.
    async fn catch_up(
        &mut self,
        history: &History,
        name: &tcpchat_proto::Username,
        resume: Option<(String, u64)>,
    ) -> Flow {
        let key = direct_key(name.as_str());
        let user = name.as_str();
        let extended = self.session.has(Extension::History);
        // A cluster's store out of reach: the login goes live without a catch-up (its
        // messages stay kept for the next one) and without `RESUME-OK`.
        let unreachable = |e: tcpchat_accounts::StoreError| {
            warn!(error = %e, stream = %key, "history read failed during a catch-up");
            history.go_live(user, u64::MAX, |_| {});
        };
        let mut from = match history.direct_read(user, 0, 0).await {
            Ok(read) => {
                let view = read.view;
                let mut from = view.delivered;
                if let (true, Some((epoch, offset))) = (extended, resume) {
                    if epoch == view.epoch && offset <= view.top {
                        from = offset;
                        if offset < view.top && read.oldest.is_none_or(|o| o > offset + 1) {
                            self.reply(&Reply::ResumeExpired {
                                epoch: &view.epoch,
                                top: view.top,
                            })?;
                        }
                    } else {
                        self.reply(&Reply::ResumeEpoch {
                            epoch: &view.epoch,
                            top: view.top,
                        })?;
                    }
                }
                from
            }
            Err(e) => {
                unreachable(e);
                return Ok(());
            }
        };
        let stream = tcpchat_proto::Stream::Direct;
        loop {
            let read = match history
                .direct_read(user, from, tcpchat_proto::MAX_HISTORY_PAGE)
                .await
            {
                Ok(read) => read,
                Err(e) => {
                    unreachable(e);
                    return Ok(());
                }
            };
            match read.messages.last().map(|m| m.offset) {
                // Nothing kept after `from`: the rest expired.
                None => from = from.max(read.view.top),
                Some(last) => {
                    self.outbox
                        .push_with(|buf| {
                            for m in &read.messages {
                                if extended {
                                    stored_line(buf, &stream, m);
                                } else {
                                    Reply::encode_delivery(buf, &m.sender, &m.body);
                                }
                            }
                        })
                        .map_err(|why| self.refused(why))?;
                    from = last;
                    self.drain().await?;
                    if from < read.view.top {
                        continue;
                    }
                }
            }
            let outbox = Arc::clone(&self.outbox);
            let live = history.go_live(user, from, |v| {
                if extended {
                    let _ = outbox.push_with(|buf| {
                        Reply::ResumeOk {
                            epoch: &v.epoch,
                            top: v.top,
                        }
                        .encode(buf);
                    });
                }
            });
            if live {
                return Ok(());
            }
        }
    }

    /// Writes what is queued until it is under a quarter of the outgoing limit, waiting for
    /// the socket: a catch-up or a page larger than the queue goes out in parts instead of
    /// overflowing it. The peer's own pace sets how long this takes.
    async fn drain(&mut self) -> Flow {
        let low = self.outbox.limit_bytes() / 4;
        loop {
            self.flush_ready()?;
            if self.pending.len() - self.written + self.outbox.queued_bytes() <= low {
                return Ok(());
            }
            if self.stream.ready(Interest::WRITABLE).await.is_err() {
                return Err(End::Error);
            }
        }
    }

    /// Where this connection's password requests come from.
    fn origin(&self) -> Origin {
        Origin {
            peer: self.peer.ip(),
            tls: self.stream.is_tls(),
        }
    }

    /// The account service and the logged-in name, for `REGISTER`, `PASSWORD` and
    /// `UNREGISTER`. The session yields those only after login on an accounts connection,
    /// so `None` is not reachable; it is answered as an unknown command all the same.
    fn account_user<'s>(
        &self,
        shared: &'s Shared<H>,
    ) -> Option<(&'s AccountService, tcpchat_proto::Username)> {
        Some((shared.accounts.as_ref()?, self.session.name()?.clone()))
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
            // Before login only the pre-login cap evicts (see `crate::admission`).
            PushError::Evicted if name.is_none() => End::Displaced,
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
        // The socket has not taken the last batch and the queue behind it overflowed: the
        // peer stopped reading (`docs/protocol.md`, "Slow readers").
        if !self.pending.is_empty() && self.outbox.refusing() == Some(PushError::Full) {
            return Err(self.refused(PushError::Full));
        }
        loop {
            if self.pending.is_empty() {
                let (batch, refusing, stamp) = self.outbox.take_stamped();
                if let Some(why) = refusing {
                    // Written by the final flush unless the peer stopped reading (Full).
                    self.pending = batch;
                    self.written = 0;
                    return Err(self.refused(why));
                }
                if batch.is_empty() {
                    return Ok(());
                }
                self.shared.metrics.outbox_batch(batch.len());
                self.pending = batch;
                self.pending_stamp = stamp;
                self.written = 0;
            }
            match self.stream.try_write(&self.pending[self.written..]) {
                Ok(n) => {
                    self.shared.metrics.sent(n);
                    self.written += n;
                    if self.written == self.pending.len() {
                        // Freed, not kept for the next batch: an idle connection holds no
                        // write buffer.
                        self.pending = Vec::new();
                        self.written = 0;
                        if let Some(stamp) = self.pending_stamp.take() {
                            self.shared.metrics.written(stamp);
                        }
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
        let flushed = pending.len() + rest.len();
        match tokio::time::timeout(grace, flush).await {
            Ok(Ok(())) => self.shared.metrics.sent(flushed),
            Ok(Err(e)) => debug!(error = %e, "final flush failed"),
            Err(_) => debug!("final flush timed out"),
        }
    }
}

impl End {
    /// The `reason` label of `tcpchat_disconnects_total` for this end.
    fn reason(self) -> Disconnect {
        match self {
            End::PeerClosed => Disconnect::ClientClosed,
            End::Error => Disconnect::Reset,
            End::Overflow => Disconnect::SlowReader,
            End::Busy => Disconnect::Busy,
            End::Evicted => Disconnect::Evicted,
            End::Timeout(_) => Disconnect::Timeout,
            End::Shutdown => Disconnect::Shutdown,
            End::Flooded | End::Displaced => Disconnect::Limit,
        }
    }
}

/// Appends one stored message as its line: `DELIVERY-AT` for the direct stream, `SAID-AT`
/// for a room.
fn stored_line(
    buf: &mut Vec<u8>,
    stream: &tcpchat_proto::Stream,
    m: &tcpchat_accounts::history::StoredMessage,
) {
    match stream {
        tcpchat_proto::Stream::Direct => {
            Reply::encode_delivery_at(buf, m.offset, m.time, &m.sender, &m.body);
        }
        tcpchat_proto::Stream::Room(room) => {
            Reply::encode_said_at(buf, room.as_str(), m.offset, m.time, &m.sender, &m.body);
        }
    }
}

/// `HELLO-FROM` may not take a registered name. Without a store nothing is registered;
/// with one this is a memory lookup for names that never were (see
/// `tcpchat_accounts::sqlite`), so classic logins pay nothing for accounts.
async fn check_unregistered(
    accounts: Option<&AccountService>,
    name: &tcpchat_proto::Username,
) -> Result<(), LoginError> {
    let Some(accounts) = accounts else {
        return Ok(());
    };
    match accounts.is_registered(name).await {
        Ok(false) => Ok(()),
        Ok(true) => Err(LoginError::Registered),
        Err(e) => {
            warn!(error = %e, %name, "account store unavailable; login refused with BUSY");
            Err(LoginError::Unavailable)
        }
    }
}

/// The outcome of the oldest waiting `SEND` (pending while there is none).
async fn oldest_outcome(awaiting: &mut VecDeque<Awaiting>) -> Delivery {
    match awaiting.front_mut() {
        Some(Awaiting::Done(outcome)) => *outcome,
        // A dropped sender: nobody confirmed the message.
        Some(Awaiting::Later(rx)) => rx.await.unwrap_or(Delivery::NoSuchUser),
        None => std::future::pending().await,
    }
}
