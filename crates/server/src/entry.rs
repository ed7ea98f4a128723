//! The way in for connections that another listener accepted: the web listener's
//! WebSockets (`tcpchat-web`).
//!
//! Such a connection must be an ordinary connection in every way that matters: one slot
//! under `--max-clients`, the per-address limits for its client's address, the same
//! session machine, hub, command rate and metrics. So it is admitted here exactly as the
//! accept loop admits a TCP connection and then served by the same connection task, over a
//! [`Transport::Web`] (one end of a Unix socket pair; the caller pumps the other end).
//!
//! [`Entry`] erases the hub's type, so the web crate depends on nothing generic, and it
//! carries the server's shutdown signal, so that listener stops accepting when the TCP
//! listeners do.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::net::{TcpStream, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::connection::{self, Shared};
use crate::hub::Hub;
use crate::metrics::{self, Disconnect};
use crate::transport::Transport;

/// Why [`Entry::enter`] refused a connection: the server would have answered `BUSY` on TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// `--max-clients` connections are open.
    #[error("the server is full")]
    Full,
    /// The client's address is over a per-address limit.
    #[error("over a per-address limit")]
    Limit,
}

/// A cloneable handle that admits connections into a running server (see the module docs).
#[derive(Clone)]
pub struct Entry {
    inner: Arc<dyn Enter>,
    cancel: CancellationToken,
}

/// What an [`Entry`] does, for any hub.
trait Enter: Send + Sync {
    fn enter(&self, stream: UnixStream, peer: SocketAddr, tls: bool) -> Result<(), Refused>;
    fn configure(&self, tcp: &TcpStream);
    fn max_line_bytes(&self) -> usize;
}

/// The accept loop's state that admission needs, shared with it.
pub(crate) struct Door<H> {
    pub(crate) shared: Arc<Shared<H>>,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) tracker: TaskTracker,
    pub(crate) cancel: CancellationToken,
    /// Connection numbers: one sequence for every listener, so they stay unique.
    pub(crate) next_id: Arc<AtomicU64>,
}

impl<H: Hub> Enter for Door<H> {
    fn enter(&self, stream: UnixStream, peer: SocketAddr, tls: bool) -> Result<(), Refused> {
        let m = &self.shared.metrics;
        m.accepted(metrics::Listener::Web);
        let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
            debug!(%peer, "server full (web)");
            m.refused(Disconnect::Busy);
            return Err(Refused::Full);
        };
        let slot = crate::listener::admit(&self.shared.admission, peer, permit, m)
            .ok_or(Refused::Limit)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        self.tracker.spawn(connection::serve(
            Transport::web(stream, tls),
            peer,
            id,
            Arc::clone(&self.shared),
            slot,
            self.cancel.clone(),
        ));
        Ok(())
    }

    fn configure(&self, tcp: &TcpStream) {
        connection::configure_socket(tcp, &self.shared.config);
    }

    fn max_line_bytes(&self) -> usize {
        self.shared.config.max_line_bytes
    }
}

impl Entry {
    pub(crate) fn new<H: Hub>(door: Door<H>) -> Self {
        let cancel = door.cancel.clone();
        Self {
            inner: Arc::new(door),
            cancel,
        }
    }

    /// Admits a connection from client address `peer` (the address the per-address limits
    /// and the logs use) and starts serving it on `stream`; `tls`: it arrived over TLS.
    ///
    /// # Errors
    /// [`Refused`] where TCP would answer `BUSY`; nothing was started.
    pub fn enter(&self, stream: UnixStream, peer: SocketAddr, tls: bool) -> Result<(), Refused> {
        self.inner.enter(stream, peer, tls)
    }

    /// Sets the server's socket options (`TCP_NODELAY`, TCP keepalive) on the TCP socket
    /// a WebSocket arrived on.
    pub fn configure(&self, tcp: &TcpStream) {
        self.inner.configure(tcp);
    }

    /// The line limit in force (`--max-line-bytes`, not counting the LF).
    pub fn max_line_bytes(&self) -> usize {
        self.inner.max_line_bytes()
    }

    /// Completes when the server shuts down: stop accepting then.
    pub async fn shutdown(&self) {
        self.cancel.cancelled().await;
    }

    /// Whether the server is shutting down.
    pub fn is_shutting_down(&self) -> bool {
        self.cancel.is_cancelled()
    }
}
