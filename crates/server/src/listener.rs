//! The accept loop: admission control (the client limit, then the per-address limits of
//! [`crate::admission`]), accept-error back-off, graceful shutdown.
//!
//! One loop accepts on both listeners, the plain one and the TLS one ([`Listeners`]), so
//! they share one `--max-clients` semaphore, one set of abuse limits and one hub: a user on
//! either sees the users on both, and the server's capacity is one number.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tcpchat_proto::Reply;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::accounts::AccountService;
use crate::admission::Admission;
use crate::config::Config;
use crate::connection::{self, Shared};
use crate::entry::{Door, Entry};
use crate::hub::{Hub, MemoryHub};
use crate::metrics::{self, Disconnect, Metrics};
use crate::transport::Transport;

/// First pause after a failed `accept`; doubled on each failure in a row.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause after failed `accept`s.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Rejected connections allowed to linger at once while `BUSY` is delivered to them. Beyond
/// this, `BUSY` is written without waiting and the socket is closed at once.
const BUSY_LINGER_MAX: usize = 256;
/// How long a rejected connection may linger for `BUSY` to be read.
const BUSY_LINGER: Duration = Duration::from_secs(2);

/// Serves the classic protocol on `listener` with the in-memory hub until `shutdown`
/// completes, then stops accepting, lets connections flush for `config.shutdown_grace` and
/// returns.
///
/// The caller binds the listener (tests bind port 0) and owns the shutdown signal.
///
/// # Errors
/// An [`io::ErrorKind::InvalidInput`] error wrapping the [`ConfigError`](crate::ConfigError)
/// if `config` breaks a rule of [`Config::validate`], before anything is accepted; otherwise
/// only if the listener's address cannot be read. Accept errors are logged and retried.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    run_with_hub(listener, config, MemoryHub::new(), shutdown).await
}

/// Like [`run`], with presence and routing provided by `hub` (e.g. a cluster backend).
///
/// # Errors
/// As [`run`]: an invalid `config`, or a listener whose address cannot be read.
pub async fn run_with_hub<H: Hub>(
    listener: TcpListener,
    config: Config,
    hub: H,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    run_listeners(Listeners::plain(listener), config, hub, shutdown).await
}

/// What the server accepts on: a plain listener, a TLS one, or both. Connections from
/// both share one `max_clients` and one hub.
#[derive(Default)]
pub struct Listeners {
    /// The classic protocol in plain TCP.
    pub plain: Option<TcpListener>,
    /// The same protocol inside TLS, with the certificate each new connection is offered.
    /// A [`tcpchat_tls::server::Reloadable`] so the caller can reload it (on SIGHUP)
    /// while the server runs.
    pub tls: Option<(TcpListener, Arc<tcpchat_tls::server::Reloadable>)>,
    /// The web listener (`tcpchat-web`): started with an [`Entry`] into this server, it
    /// accepts on its own socket and admits each WebSocket through the entry, under the
    /// same limits and hub. It should stop accepting at [`Entry::shutdown`].
    pub web: Option<WebServer>,
}

/// A listener of another kind, started by [`run_observed`] (see [`Listeners::web`]).
pub type WebServer = Box<dyn FnOnce(Entry) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

impl Listeners {
    /// Only a plain listener.
    pub fn plain(listener: TcpListener) -> Self {
        Self {
            plain: Some(listener),
            tls: None,
            web: None,
        }
    }
}

/// Accepts on `l`, or never if there is none.
async fn accept_on(l: Option<&TcpListener>) -> io::Result<(TcpStream, std::net::SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Like [`run_with_hub`], on a plain listener, a TLS listener or both.
///
/// # Errors
/// As [`run`]; also [`io::ErrorKind::InvalidInput`] if `listeners` has neither.
pub async fn run_listeners<H: Hub>(
    listeners: Listeners,
    config: Config,
    hub: H,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    run_observed(listeners, config, hub, Metrics::off(), shutdown).await
}

/// Like [`run_listeners`], counting into `metrics` (see [`crate::metrics`]).
///
/// # Errors
/// As [`run_listeners`].
pub async fn run_observed<H: Hub>(
    listeners: Listeners,
    config: Config,
    hub: H,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    // Checked here too, not only by the binary, so no caller can start a server that nobody
    // can log in to or that drops every connection at its first line.
    config
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let Listeners { plain, tls, web } = listeners;
    if plain.is_none() && tls.is_none() && web.is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no listener: give a plain, a TLS or a web one",
        ));
    }
    if let Some(listener) = &plain {
        let addr = listener.local_addr()?;
        info!(%addr, max_clients = config.max_clients, "listening");
    }
    if let Some((listener, _)) = &tls {
        // "listening tls addr=": distinct from the plain line, which tests and scripts
        // find by "listening addr=".
        let addr = listener.local_addr()?;
        info!(%addr, max_clients = config.max_clients, tls = true, "listening tls");
    }
    let grace = config.shutdown_grace;
    let slots = Arc::new(Semaphore::new(config.max_clients));
    let busy_slots = Arc::new(Semaphore::new(BUSY_LINGER_MAX));
    let admission = Admission::new(&config);
    let accounts = match &config.account_store {
        Some(store) => Some(AccountService::start(&config.accounts, store)?),
        None => None,
    };
    let shared = Arc::new(Shared {
        hub,
        config,
        admission,
        metrics,
        accounts,
    });
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let ids = Arc::new(AtomicU64::new(0));
    if let Some(web) = web {
        let entry = Entry::new(Door {
            shared: Arc::clone(&shared),
            slots: Arc::clone(&slots),
            tracker: tracker.clone(),
            cancel: cancel.clone(),
            next_id: Arc::clone(&ids),
        });
        tracker.spawn(web(entry));
    }

    tokio::pin!(shutdown);
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let (accepted, on_tls) = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept_on(plain.as_ref()) => (accepted, false),
            accepted = accept_on(tls.as_ref().map(|(l, _)| l)) => (accepted, true),
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                let next_id = ids.fetch_add(1, Ordering::Relaxed) + 1;
                let kind = if on_tls {
                    metrics::Listener::Tls
                } else {
                    metrics::Listener::Tcp
                };
                shared.metrics.accepted(kind);
                let admitted = match Arc::clone(&slots).try_acquire_owned() {
                    Ok(permit) => admit(&shared.admission, peer, permit, &shared.metrics),
                    Err(_) => {
                        debug!(%peer, "server full");
                        shared.metrics.refused(Disconnect::Busy);
                        None
                    }
                };
                match admitted {
                    Some(slot) => {
                        let transport = match (&tls, on_tls) {
                            (Some((_, certs)), true) => {
                                match Transport::tls(stream, certs.current()) {
                                    Ok(t) => t,
                                    Err(e) => {
                                        warn!(%peer, error = %e, "cannot start a TLS session");
                                        continue;
                                    }
                                }
                            }
                            _ => match shared.config.practice {
                                Some(practice) => {
                                    Transport::practice(stream, practice.seed, next_id)
                                }
                                None => Transport::plain(stream),
                            },
                        };
                        tracker.spawn(connection::serve(
                            transport,
                            peer,
                            next_id,
                            Arc::clone(&shared),
                            slot,
                            cancel.clone(),
                        ));
                    }
                    // A plain-text BUSY would be garbage inside a TLS handshake, and a
                    // handshake just to refuse costs the CPU a full server lacks: close.
                    None if on_tls => debug!(%peer, "refused; closing a TLS connection"),
                    None => {
                        debug!(%peer, "answering BUSY");
                        match Arc::clone(&busy_slots).try_acquire_owned() {
                            Ok(permit) => {
                                tracker.spawn(reject_busy(stream, permit, cancel.clone()));
                            }
                            // Too many rejections in flight: answer without lingering.
                            Err(_) => drop(stream.try_write(&Reply::Busy.to_line())),
                        }
                    }
                }
            }
            // Errors about one connection that died in the queue: just take the next one.
            Err(e) if is_per_connection(&e) => debug!(error = %e, "accept: peer gone"),
            Err(e) => {
                // Typically EMFILE/ENFILE (out of descriptors) or ENOBUFS: retrying at once
                // would spin. Back off and let connections close.
                warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed; backing off");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }

    info!(connections = tracker.len(), "shutting down");
    drop((plain, tls));
    cancel.cancel();
    tracker.close();
    // Each connection flushes within `grace`; the extra second covers the close itself.
    if tokio::time::timeout(grace + Duration::from_secs(1), tracker.wait())
        .await
        .is_err()
    {
        warn!(
            connections = tracker.len(),
            "connections still open after the shutdown grace period"
        );
    }
    info!("stopped");
    Ok(())
}

/// The per-address limits for one accepted connection that got a client slot: its
/// [`Slot`](crate::admission::Slot), or `None` to answer `BUSY`. A refused address is logged
/// at info at most once a minute; every refusal at debug.
pub(crate) fn admit(
    admission: &Admission,
    peer: std::net::SocketAddr,
    permit: OwnedSemaphorePermit,
    metrics: &Metrics,
) -> Option<crate::admission::Slot> {
    match admission.admit(peer.ip(), permit, std::time::Instant::now()) {
        Ok(slot) => Some(slot),
        Err(refused) => {
            metrics.refused(Disconnect::Limit);
            if refused.log {
                info!(%peer, "{refused}; answering BUSY (logged once a minute per address)");
            } else {
                debug!(%peer, "{refused}; answering BUSY");
            }
            None
        }
    }
}

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Tells a connection beyond `--max-clients` that the server is full, then closes it.
///
/// The client may already have sent `HELLO-FROM`; closing with unread input would make the
/// kernel send RST, which can destroy `BUSY` before the client reads it. So: write `BUSY`,
/// half-close, read and discard until the client closes (bounded by [`BUSY_LINGER`]).
async fn reject_busy(
    mut stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    cancel: CancellationToken,
) {
    let linger = async {
        stream.write_all(&Reply::Busy.to_line()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 512];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), io::Error>(())
    };
    tokio::select! {
        () = cancel.cancelled() => {}
        _ = tokio::time::timeout(BUSY_LINGER, linger) => {}
    }
}

/// Connections the kernel may hold completed but not yet accepted. Bursts of thousands of
/// simultaneous connects (a class logging in at once, a load test) must not be refused; the
/// kernel caps this at `net.core.somaxconn` (4096 by default on current Linux).
pub const LISTEN_BACKLOG: i32 = 4096;

/// Binds a listening socket the way the server wants it: `SO_REUSEADDR` (restart without
/// waiting for TIME_WAIT), a deep accept backlog, non-blocking, ready for [`run`]. IPv6
/// addresses work; `[::]` also accepts IPv4 where the system allows dual-stack sockets.
///
/// # Errors
/// The address cannot be bound (in use, not local, no permission).
pub fn bind(addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}
