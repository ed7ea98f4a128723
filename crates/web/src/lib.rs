//! The web listener (`serve --web-listen`): the browser page and the chat protocol over
//! WebSocket, for the same server as the TCP listeners.
//!
//! - `GET /` and its assets ([`assets`]): the page, embedded in the binary.
//! - `GET /ws`: upgrades to a WebSocket (RFC 6455) after the [`access`] checks (the `Origin`
//!   allowlist; the client address from `X-Forwarded-For` when the TCP peer is a trusted
//!   proxy). Each WebSocket is then admitted into the server through its
//!   [`tcpchat_server::Entry`], under the same `--max-clients`, per-address limits, session
//!   machine and hub as TCP, and [`pump`]ed: one text message per protocol line.
//!
//! hyper serves HTTP/1.1 and tokio-tungstenite speaks WebSocket on the upgraded
//! connection; no web framework, for two routes and one upgrade. Over TLS (`wss://`,
//! `https://`) when the server has a certificate, the same [`Reloadable`] one the TLS
//! listener uses, so a SIGHUP reload applies here too.

pub mod access;
pub mod assets;
mod http;
mod pump;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tcpchat_server::{Entry, WebServer};
use tcpchat_tls::server::Reloadable;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

pub use access::Origins;

/// The web listener's own settings; the rest (limits, TLS certificate) are the server's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Which page origins may open a WebSocket.
    pub origins: Origins,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<IpNet>,
}

/// HTTP connections open at once that have not (yet) become WebSockets: each holds a task
/// and a socket but no client slot, so their number has a bound of its own.
const MAX_HTTP_CONNECTIONS: usize = 1024;

/// How long a client may take to send a request's headers, and (over TLS) its handshake.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// First pause after a failed `accept`; doubled on each failure in a row, up to a second.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);

/// The web listener on `listener`, for [`tcpchat_server::Listeners::web`]. `tls`: serve
/// `https://` and `wss://` with this certificate.
pub fn server(
    listener: TcpListener,
    tls: Option<Arc<Reloadable>>,
    settings: Settings,
) -> WebServer {
    Box::new(move |entry| Box::pin(serve(listener, tls, settings, entry)))
}

/// What every HTTP connection's task shares.
struct State {
    entry: Entry,
    settings: Settings,
    tls: bool,
    /// The WebSockets' pumps, waited for at shutdown.
    pumps: TaskTracker,
}

async fn serve(
    listener: TcpListener,
    tls: Option<Arc<Reloadable>>,
    settings: Settings,
    entry: Entry,
) {
    match listener.local_addr() {
        Ok(addr) if tls.is_some() => info!(%addr, "listening web tls"),
        Ok(addr) => info!(%addr, "listening web"),
        Err(e) => warn!(error = %e, "web listener has no address"),
    }
    let state = Arc::new(State {
        entry: entry.clone(),
        settings,
        tls: tls.is_some(),
        pumps: TaskTracker::new(),
    });
    let http_slots = Arc::new(Semaphore::new(MAX_HTTP_CONNECTIONS));
    let connections = TaskTracker::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            () = entry.shutdown() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => {
                backoff = ACCEPT_BACKOFF_MIN;
                a
            }
            Err(e) => {
                warn!(error = %e, "web accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&http_slots).try_acquire_owned() else {
            debug!(%peer, "too many HTTP connections; closing");
            continue;
        };
        entry.configure(&tcp);
        let state = Arc::clone(&state);
        let certs = tls.as_ref().map(|c| c.current());
        connections.spawn(async move {
            let shutdown = state.entry.clone();
            tokio::select! {
                () = connection(tcp, peer, certs, state) => {}
                // HTTP connections (not WebSockets, which are the pumps') end at shutdown.
                () = shutdown.shutdown() => {}
            }
            drop(permit);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    state.pumps.close();
    state.pumps.wait().await;
}

/// One HTTP connection: TLS first if configured, then HTTP/1.1 with upgrades.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    certs: Option<Arc<rustls::ServerConfig>>,
    state: Arc<State>,
) {
    match certs {
        Some(config) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => http::serve(stream, peer, state).await,
                Ok(Err(e)) => debug!(%peer, error = %e, "web TLS handshake failed"),
                Err(_) => debug!(%peer, "web TLS handshake timed out"),
            }
        }
        None => http::serve(tcp, peer, state).await,
    }
}
