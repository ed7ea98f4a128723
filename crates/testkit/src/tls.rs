//! TLS for tests: certificates made on the spot, and [`TlsRelay`], a TLS-terminating relay in
//! front of a plain-text server.
//!
//! The relay is how the clients' TLS (`connect tls://`, `check`, `bench`) is tested against a
//! real `tcpchat serve` without depending on the server's own TLS listener: it accepts TLS,
//! and forwards the plaintext to the server's plain port, both ways, closing each side when
//! the other does. A relayed connection differs from a direct one in one way a checker can
//! see: a reset from the server reaches the client as a TLS close or a plain close, not as a
//! reset.
//!
//! [`TestCa`] makes an authority and leaf certificates signed by it, for any names and any
//! validity period (an expired one in particular), with rcgen on *ring*, as `tcpchat cert`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A certificate authority made for one test, and the leaf certificates it signs.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The authority's certificate, PEM: what a client's `--ca` file holds.
    pub cert_pem: String,
}

/// A leaf certificate and its key, PEM.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

/// How long ago a certificate's validity starts, and how long after now it ends, unless the
/// test says otherwise.
const VALID_AROUND_NOW: Duration = Duration::from_secs(24 * 60 * 60);

impl TestCa {
    /// A new authority, `CN=tcpchat test CA N`: each with a name of its own, since two
    /// authorities of one name are one issuer that signs badly to a verifier.
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let key = KeyPair::generate().expect("generate the CA key");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            format!("tcpchat test CA {} {n}", std::process::id()),
        );
        params.distinguished_name = dn;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - VALID_AROUND_NOW;
        params.not_after = now + VALID_AROUND_NOW * 30;
        let cert = params.self_signed(&key).expect("self-sign the CA");
        Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `hosts` (DNS names or IP addresses), valid from a day ago to a day on.
    pub fn leaf(&self, hosts: &[&str]) -> Leaf {
        let now = time::OffsetDateTime::now_utc();
        self.leaf_valid(hosts, now - VALID_AROUND_NOW, now + VALID_AROUND_NOW)
    }

    /// A leaf for `hosts` valid from `not_before` to `not_after` (in the past for an
    /// expired one).
    pub fn leaf_valid(
        &self,
        hosts: &[&str],
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> Leaf {
        let key = KeyPair::generate().expect("generate a leaf key");
        let mut params = CertificateParams::default();
        params.subject_alt_names = hosts
            .iter()
            .map(|h| match h.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*h).try_into().expect("a DNS name")),
            })
            .collect();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, hosts.first().copied().unwrap_or("test"));
        params.distinguished_name = dn;
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &self.issuer).expect("sign a leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes the authority's certificate to `dir/name` and returns the path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.cert_pem).expect("write the CA file");
        path
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// A rustls server configuration presenting `leaf`, with the project's provider and versions.
pub fn server_config(leaf: &Leaf) -> Arc<rustls::ServerConfig> {
    let certs = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("the leaf is PEM");
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("the key is PEM");
    let config = rustls::ServerConfig::builder_with_provider(tcpchat_tls::provider())
        .with_protocol_versions(tcpchat_tls::PROTOCOL_VERSIONS)
        .expect("ring supports our versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("the leaf and its key match");
    Arc::new(config)
}

/// A TLS-terminating relay on a loopback port, forwarding plaintext to `upstream`.
///
/// It runs on a thread and runtime of its own, like [`crate::CutProxy`], so a test that blocks
/// its runtime (waiting on a child process) never stalls it. Dropping it ends every relay.
pub struct TlsRelay {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl TlsRelay {
    /// Listens on `127.0.0.1:0`, presents `leaf`, and relays each connection to `upstream`.
    pub fn start(upstream: SocketAddr, leaf: &Leaf) -> Self {
        Self::spawn(
            upstream,
            Some(tokio_rustls::TlsAcceptor::from(server_config(leaf))),
        )
    }

    /// The same relay without TLS: the baseline when measuring what TLS through the relay
    /// costs, so the extra hop is in both numbers.
    pub fn plain(upstream: SocketAddr) -> Self {
        Self::spawn(upstream, None)
    }

    fn spawn(upstream: SocketAddr, acceptor: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("relay address");
        let (stop, stopped) = watch::channel(false);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("relay runtime");
            runtime.block_on(accept(listener, upstream, acceptor, stopped));
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// `tls://127.0.0.1:PORT`, for a client's command line.
    pub fn url(&self) -> String {
        format!("tls://{}", self.addr)
    }
}

impl Drop for TlsRelay {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept(
    listener: std::net::TcpListener,
    upstream: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    mut stopped: watch::Receiver<bool>,
) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((conn, _)) = accepted {
                    let _ = conn.set_nodelay(true);
                    tokio::spawn(relay(conn, upstream, acceptor.clone()));
                }
            }
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}

async fn relay(
    mut client: TcpStream,
    upstream: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) {
    let Some(acceptor) = acceptor else {
        let Ok(mut server) = TcpStream::connect(upstream).await else {
            return;
        };
        let _ = server.set_nodelay(true);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        return;
    };
    // A failed handshake (a client refusing our certificate) just closes: that is what the
    // client's side is tested for.
    let Ok(mut client) = acceptor.accept(client).await else {
        return;
    };
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    // Copies both ways and passes each close on (a TLS close_notify one way, a FIN the other).
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}
