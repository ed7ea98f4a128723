//! What the server counts, for `/metrics` (the Prometheus text format) and the log summary.
//!
//! [`Metrics`] is a cheap handle: off ([`Metrics::off`], the library default) it is `None` and
//! every count is one branch; on, it points at counters that are plain atomics. Every series
//! is created up front, when the handle is made, and kept in arrays indexed by small enums
//! ([`Listener`], [`Command`], [`Outcome`], [`Disconnect`]), so counting a message takes no
//! lock, builds no label and allocates nothing. prometheus-client's `Family` would look a
//! label set up in a hash map behind a lock on every count; it is used only to *own* the
//! series for encoding, never on the hot path.
//!
//! Labels have bounded cardinality by construction: each is one of the enums' names. No
//! user name, address or message text is ever a label.
//!
//! Why prometheus-client rather than `metrics` + an exporter: the counters it hands out are
//! `Arc<AtomicU64>` that we can hold directly (no global recorder, no key lookup per call),
//! it is the Prometheus project's own Rust client, and it only encodes: the tiny HTTP side
//! ([`serve`]) is ours, with a bounded request size and a timeout, so no web framework is
//! linked into the server.
//!
//! Other crates (the cluster backend) register their own series through
//! [`Metrics::on_with`], so this module never names them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::latency::{DeliveryLatency, Stamp};

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Tcp,
    Tls,
    /// WebSockets of the web listener (`serve --web-listen`), `ws://` and `wss://` alike.
    Web,
}

impl Listener {
    const ALL: [Self; 3] = [Self::Tcp, Self::Tls, Self::Web];
    fn label(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Web => "web",
        }
    }
}

/// The request a line was, as far as the server acted on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `HELLO-FROM` that reached the hub.
    Login,
    List,
    /// `SEND` that reached the hub.
    Send,
    /// A line the session answered by itself: malformed, unknown, out of order, overlong.
    Other,
}

impl Command {
    const ALL: [Self; 4] = [Self::Login, Self::List, Self::Send, Self::Other];
    fn label(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::List => "list",
            Self::Send => "send",
            Self::Other => "other",
        }
    }
}

/// How a request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// `HELLO`, `LIST-OK`, `SEND-OK`.
    Ok,
    /// `IN-USE`.
    InUse,
    /// `BUSY` (cluster store unavailable).
    Busy,
    /// `BAD-DEST-USER`.
    UnknownUser,
    /// `BAD-RQST-HDR`.
    BadHeader,
    /// `BAD-RQST-BODY`.
    BadBody,
    /// Any other reply (protocol extensions).
    Other,
}

impl Outcome {
    const ALL: [Self; 7] = [
        Self::Ok,
        Self::InUse,
        Self::Busy,
        Self::UnknownUser,
        Self::BadHeader,
        Self::BadBody,
        Self::Other,
    ];
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::InUse => "in_use",
            Self::Busy => "busy",
            Self::UnknownUser => "unknown_user",
            Self::BadHeader => "bad_header",
            Self::BadBody => "bad_body",
            Self::Other => "other",
        }
    }

    /// The outcome a reply means.
    pub fn of(reply: &tcpchat_proto::Reply<'_>) -> Self {
        use tcpchat_proto::Reply;
        match reply {
            Reply::Hello(_) | Reply::ListOk(_) | Reply::SendOk => Self::Ok,
            Reply::InUse => Self::InUse,
            Reply::Busy => Self::Busy,
            Reply::BadDestUser => Self::UnknownUser,
            Reply::BadRqstHdr => Self::BadHeader,
            Reply::BadRqstBody => Self::BadBody,
            _ => Self::Other,
        }
    }
}

/// Why a connection ended (or was refused at accept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// The client closed its side.
    ClientClosed,
    /// Reset or another socket error.
    Reset,
    /// Dropped for not reading: its outgoing queue filled.
    SlowReader,
    /// No login in time, or idle too long.
    Timeout,
    /// Answered `BUSY`: the server was full, or the cluster could not take the login.
    Busy,
    /// An abuse limit (per address, connect rate, flooding, the pre-login cap).
    Limit,
    /// The hub took the name back (cluster).
    Evicted,
    /// The server shut down.
    Shutdown,
}

impl Disconnect {
    const ALL: [Self; 8] = [
        Self::ClientClosed,
        Self::Reset,
        Self::SlowReader,
        Self::Timeout,
        Self::Busy,
        Self::Limit,
        Self::Evicted,
        Self::Shutdown,
    ];
    fn label(self) -> &'static str {
        match self {
            Self::ClientClosed => "client_closed",
            Self::Reset => "reset",
            Self::SlowReader => "slow_reader",
            Self::Timeout => "timeout",
            Self::Busy => "busy",
            Self::Limit => "limit",
            Self::Evicted => "evicted",
            Self::Shutdown => "shutdown",
        }
    }
}

type Labels1 = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];

struct Inner {
    registry: Registry,
    accepted: [Counter; 3],
    open: [Gauge; 3],
    users: Gauge,
    requests: [[Counter; 7]; 4],
    deliveries: Counter,
    disconnects: [Counter; 8],
    bytes_in: Counter,
    bytes_out: Counter,
    outbox_high_water: Gauge<i64, AtomicI64>,
    delivery_latency: DeliveryLatency,
}

/// The server's counters; see the module docs. Clones share the counters.
#[derive(Clone, Default)]
pub struct Metrics(Option<Arc<Inner>>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Metrics(on)"
        } else {
            "Metrics(off)"
        })
    }
}

/// The figures the log summary shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Logged in now.
    pub users: i64,
    /// Connections open now, on every listener.
    pub connections: i64,
    /// Messages accepted for delivery (`SEND-OK`) since the start.
    pub deliveries: u64,
}

impl Metrics {
    /// Counts nothing: every call is a branch on `None`.
    pub fn off() -> Self {
        Self(None)
    }

    /// Counts, with only the server's own series.
    pub fn on() -> Self {
        Self::on_with(|_| {})
    }

    /// Counts; `extra` registers more series in the same registry (under the `tcpchat_`
    /// prefix), e.g. the cluster backend's.
    pub fn on_with(extra: impl FnOnce(&mut Registry)) -> Self {
        let mut registry = Registry::with_prefix("tcpchat");
        let accepted = Family::<Labels1, Counter>::default();
        registry.register(
            "connections_accepted",
            "Connections accepted, by listener (refused ones included)",
            accepted.clone(),
        );
        let open = Family::<Labels1, Gauge>::default();
        registry.register(
            "connections_open",
            "Connections being served now, by listener",
            open.clone(),
        );
        let users = Gauge::default();
        registry.register("users", "Users logged in now", users.clone());
        let requests = Family::<Labels2, Counter>::default();
        registry.register(
            "requests",
            "Requests handled, by command and outcome",
            requests.clone(),
        );
        let deliveries = Counter::default();
        registry.register(
            "deliveries",
            "Messages accepted for delivery (SEND-OK), counted on the sender's node",
            deliveries.clone(),
        );
        let disconnects = Family::<Labels1, Counter>::default();
        registry.register(
            "disconnects",
            "Connections ended or refused, by reason",
            disconnects.clone(),
        );
        let bytes_in = Counter::default();
        registry.register(
            "received_bytes",
            "Protocol bytes received (after TLS decryption)",
            bytes_in.clone(),
        );
        let bytes_out = Counter::default();
        registry.register(
            "sent_bytes",
            "Protocol bytes sent (before TLS encryption)",
            bytes_out.clone(),
        );
        let outbox_high_water = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "outbox_high_water_bytes",
            "Largest batch of bytes ever waiting in one connection's outgoing queue",
            outbox_high_water.clone(),
        );
        let delivery_latency = DeliveryLatency::default();
        registry.register(
            "delivery_latency_seconds",
            "From reading a SEND to writing its DELIVERY to the recipient's socket, per local delivery (each message of a write counted at the oldest one's wait)",
            delivery_latency.clone(),
        );
        extra(&mut registry);
        let by1 = |f: &Family<Labels1, Counter>, key, v| f.get_or_create(&[(key, v)]).clone();
        let inner = Inner {
            accepted: Listener::ALL.map(|l| by1(&accepted, "listener", l.label())),
            open: Listener::ALL.map(|l| open.get_or_create(&[("listener", l.label())]).clone()),
            users,
            requests: Command::ALL.map(|c| {
                Outcome::ALL.map(|o| {
                    requests
                        .get_or_create(&[("command", c.label()), ("outcome", o.label())])
                        .clone()
                })
            }),
            deliveries,
            disconnects: Disconnect::ALL.map(|d| by1(&disconnects, "reason", d.label())),
            bytes_in,
            bytes_out,
            outbox_high_water,
            delivery_latency,
            registry,
        };
        Self(Some(Arc::new(inner)))
    }

    /// Whether this handle counts.
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// A connection was accepted on `listener` (before admission).
    #[inline]
    pub fn accepted(&self, listener: Listener) {
        if let Some(m) = &self.0 {
            m.accepted[listener as usize].inc();
        }
    }

    /// A connection on `listener` starts being served.
    #[inline]
    pub fn opened(&self, listener: Listener) {
        if let Some(m) = &self.0 {
            m.open[listener as usize].inc();
        }
    }

    /// A served connection ended, for `why`; `logged_in` if it had a name.
    #[inline]
    pub fn closed(&self, listener: Listener, why: Disconnect, logged_in: bool) {
        if let Some(m) = &self.0 {
            m.open[listener as usize].dec();
            if logged_in {
                m.users.dec();
            }
            m.disconnects[why as usize].inc();
        }
    }

    /// A connection was refused at accept (`BUSY` or a limit), never served.
    #[inline]
    pub fn refused(&self, why: Disconnect) {
        if let Some(m) = &self.0 {
            m.disconnects[why as usize].inc();
        }
    }

    /// A request was answered with `reply`.
    #[inline]
    pub fn request(&self, command: Command, reply: &tcpchat_proto::Reply<'_>) {
        if let Some(m) = &self.0 {
            let outcome = Outcome::of(reply);
            m.requests[command as usize][outcome as usize].inc();
            match (command, outcome) {
                (Command::Login, Outcome::Ok) => {
                    m.users.inc();
                }
                (Command::Send, Outcome::Ok) => {
                    m.deliveries.inc();
                }
                _ => {}
            }
        }
    }

    /// `LIST` was answered (the roster is written straight into the outbox).
    #[inline]
    pub fn listed(&self) {
        if let Some(m) = &self.0 {
            m.requests[Command::List as usize][Outcome::Ok as usize].inc();
        }
    }

    /// `n` bytes were read from a peer.
    #[inline]
    pub fn received(&self, n: usize) {
        if let Some(m) = &self.0 {
            m.bytes_in.inc_by(n as u64);
        }
    }

    /// `n` bytes were written to a peer.
    #[inline]
    pub fn sent(&self, n: usize) {
        if let Some(m) = &self.0 {
            m.bytes_out.inc_by(n as u64);
        }
    }

    /// A batch of `n` bytes was taken from an outbox. Stored only when it beats the mark:
    /// reading a shared value costs nothing while nobody writes it.
    #[inline]
    pub fn outbox_batch(&self, n: usize) {
        if let Some(m) = &self.0 {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            if n > m.outbox_high_water.get() {
                m.outbox_high_water.inner().fetch_max(n, Ordering::Relaxed);
            }
        }
    }

    /// The time to stamp a read batch with, so its deliveries are timed
    /// ([`crate::latency`]); `None` when off, and nothing is stamped.
    #[inline]
    pub fn read_stamp(&self, now: std::time::Instant) -> Option<std::time::Instant> {
        self.0.as_ref().map(|_| now)
    }

    /// The write that completes a batch carrying `stamp`'s deliveries has returned.
    #[inline]
    pub fn written(&self, stamp: Stamp) {
        if let Some(m) = &self.0 {
            m.delivery_latency
                .record(stamp.oldest.elapsed(), stamp.lines);
        }
    }

    /// Now's users, connections and delivery count; `None` when off.
    pub fn snapshot(&self) -> Option<Snapshot> {
        self.0.as_ref().map(|m| Snapshot {
            users: m.users.get(),
            connections: m.open.iter().map(Gauge::get).sum(),
            deliveries: m.deliveries.get(),
        })
    }

    /// Every series in the OpenMetrics text format (which Prometheus reads); `None` when off.
    pub fn encode(&self) -> Option<String> {
        let m = self.0.as_ref()?;
        let mut out = String::new();
        // Writing to a String cannot fail; an encoder error would be a bug in a metric.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &m.registry) {
            let _ = writeln!(out, "# encoding failed: {e}");
        }
        Some(out)
    }
}

/// Longest request head `/metrics` reads; a scraper sends a few hundred bytes.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// A scrape that has not sent its request and read the answer by then is dropped.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrapes served at once; more wait in the kernel's accept queue.
const MAX_SCRAPES: usize = 8;

/// The OpenMetrics content type Prometheus asks for and reads.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` on `listener` until the task is dropped: one small HTTP/1.1
/// exchange per connection (`Connection: close`), at most [`MAX_SCRAPES`] at once, each
/// bounded by [`MAX_REQUEST_BYTES`] and [`SCRAPE_TIMEOUT`]. Anything else gets 404 or 405.
pub async fn serve(listener: TcpListener, metrics: Metrics) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving metrics");
    }
    let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return; // never closed
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and the like: the chat listener backs off the same way.
                warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(SCRAPE_TIMEOUT, scrape(stream, &metrics)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, error = %e, "metrics: scrape failed"),
                Err(_) => debug!(%peer, "metrics: scrape timed out"),
            }
        });
    }
}

/// One exchange: read the request head, answer, close.
async fn scrape(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let complete = loop {
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break true;
        }
        if head.len() >= MAX_REQUEST_BYTES {
            break false;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    };
    let (status, body) = if complete {
        answer(&head, metrics)
    } else {
        ("431 Request Header Fields Too Large", String::new())
    };
    let content_type = if status.starts_with("200") {
        CONTENT_TYPE
    } else {
        "text/plain; charset=utf-8"
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Status and body for a request head.
fn answer(head: &[u8], metrics: &Metrics) -> (&'static str, String) {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_ascii_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    // A query string (some scrapers add one) does not change the answer.
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => match metrics.encode() {
            Some(body) => ("200 OK", body),
            None => ("404 Not Found", "metrics are off\n".to_owned()),
        },
        (_, "/metrics") => ("405 Method Not Allowed", "use GET\n".to_owned()),
        _ => ("404 Not Found", "try /metrics\n".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tcpchat_proto::Reply;

    #[test]
    fn off_counts_nothing_and_encodes_nothing() {
        let m = Metrics::off();
        m.request(Command::Send, &Reply::SendOk);
        assert_eq!(m.snapshot(), None);
        assert_eq!(m.encode(), None);
    }

    #[test]
    fn counts_show_in_the_text() {
        let m = Metrics::on();
        m.accepted(Listener::Tls);
        m.opened(Listener::Tls);
        m.request(Command::Login, &Reply::InUse);
        m.request(Command::Send, &Reply::SendOk);
        m.request(Command::Send, &Reply::SendOk);
        m.refused(Disconnect::Busy);
        m.outbox_batch(40);
        m.outbox_batch(10);
        let text = m.encode().expect("on");
        for line in [
            "tcpchat_connections_accepted_total{listener=\"tls\"} 1",
            "tcpchat_connections_accepted_total{listener=\"tcp\"} 0",
            "tcpchat_connections_open{listener=\"tls\"} 1",
            "tcpchat_requests_total{command=\"login\",outcome=\"in_use\"} 1",
            "tcpchat_requests_total{command=\"send\",outcome=\"ok\"} 2",
            "tcpchat_deliveries_total 2",
            "tcpchat_disconnects_total{reason=\"busy\"} 1",
            "tcpchat_outbox_high_water_bytes 40",
            "tcpchat_users 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with EOF");
    }

    #[test]
    fn http_answers() {
        let m = Metrics::on();
        assert_eq!(answer(b"GET /metrics HTTP/1.1\r\n\r\n", &m).0, "200 OK");
        assert_eq!(answer(b"GET /metrics?x=1 HTTP/1.1\r\n\r\n", &m).0, "200 OK");
        assert!(answer(b"POST /metrics HTTP/1.1\r\n\r\n", &m)
            .0
            .starts_with("405"));
        assert!(answer(b"GET / HTTP/1.1\r\n\r\n", &m).0.starts_with("404"));
        assert!(answer(b"\xff\xfe\r\n\r\n", &m).0.starts_with("404"));
    }
}
