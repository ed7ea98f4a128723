//! The clients' side of TLS: whom to trust, the handshake, and why it failed, in words.
//!
//! `tcpchat connect`, `check` and `bench` all connect through a [`Connector`] and read and
//! write a [`Stream`], plain or TLS, so none of them branches on the transport past the
//! connect. A failed verification becomes a sentence by [`explain`]: what is wrong with the
//! server's certificate and what to do about it, because rustls's own message ("invalid peer
//! certificate: UnknownIssuer") tells a user nothing they can act on.
//!
//! Trust: the system's roots (rustls-native-certs), or, when `--ca FILE` is given, the
//! certificates in that file *instead*. A user who names a CA file means "this server's
//! certificate comes from here" (a self-signed one from `tcpchat cert`, a company CA); also
//! trusting every public CA would let a certificate from any of them for the same name pass,
//! which is not what pinning one file asks for. To trust both, put the system bundle and the
//! extra certificate in one file.
//!
//! The server name checked is the host as given: a DNS name is sent as SNI and must be among
//! the certificate's names; an IP address sends no SNI (TLS forbids it) and must be one of the
//! certificate's IP addresses.
//!
//! It uses tokio-rustls: a client has a handful of connections, so the buffers it keeps per
//! connection do not matter (the server, which holds thousands, is another matter).

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::{provider, PROTOCOL_VERSIONS};

/// What `tcpchat cert` and a self-signed server need: said in every unknown-issuer message.
pub const SELF_SIGNED_HINT: &str = "to trust a self-signed server: tcpchat connect tls://HOST \
     --ca cert.pem, the file `tcpchat cert` wrote";

/// Why a client's TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the CA file {}: {source}", path.display())]
    ReadCa { path: PathBuf, source: io::Error },
    #[error("the CA file {} is not PEM certificates: {reason}", path.display())]
    BadCa { path: PathBuf, reason: String },
    #[error(
        "the CA file {} holds no certificate (expected one or more \
         -----BEGIN CERTIFICATE----- blocks, such as the cert.pem `tcpchat cert` writes)",
        path.display()
    )]
    NoCertificate { path: PathBuf },
    #[error("cannot use the certificates in {}: {reason}", path.display())]
    UnusableCa { path: PathBuf, reason: String },
    #[error("cannot set up TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Why a TLS connection could not be opened over an established TCP connection.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The host is not a name a certificate can be checked against.
    #[error("{host:?} is not a host name or IP address a certificate can name")]
    BadName { host: String },
    /// The server's certificate was refused: [`explain`]'s words. Reconnecting will not help
    /// until the certificate or the trusted roots change.
    #[error("{0}")]
    Certificate(String),
    /// The handshake failed for another TLS reason (the peer does not speak TLS, no common
    /// version...), in words.
    #[error("{0}")]
    Tls(String),
    /// The connection broke or closed during the handshake.
    #[error("{0}")]
    Io(io::Error),
}

impl HandshakeError {
    /// True when the server's certificate was refused: a problem that reconnecting does not
    /// fix by itself.
    pub fn is_certificate(&self) -> bool {
        matches!(self, Self::Certificate(_))
    }
}

/// Builds the client configuration: [`provider`], [`PROTOCOL_VERSIONS`], and as roots the
/// certificates in `ca` when given, the system's otherwise (see the module docs for why not
/// both).
///
/// # Errors
/// [`ConfigError`] when `ca` cannot be read, is not PEM, holds no certificate or holds one
/// rustls cannot use as a root.
pub fn config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, ConfigError> {
    let roots = match ca {
        Some(path) => ca_roots(path)?,
        None => system_roots(),
    };
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn ca_roots(path: &Path) -> Result<RootCertStore, ConfigError> {
    let pem = std::fs::read(path).map_err(|source| ConfigError::ReadCa {
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::BadCa {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(ConfigError::NoCertificate {
            path: path.to_owned(),
        });
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| ConfigError::UnusableCa {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The system's roots. Unreadable ones are skipped with a warning: one broken file in
/// /etc/ssl should not stop a client that may not need it.
fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for err in &found.errors {
        tracing::warn!(%err, "cannot load a system root certificate");
    }
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    tracing::debug!(added, ignored, "system root certificates");
    if added == 0 {
        tracing::warn!("no system root certificates found: only --ca can make a server trusted");
    }
    roots
}

/// Opens TLS connections with one configuration.
#[derive(Debug, Clone)]
pub struct Connector {
    config: Arc<ClientConfig>,
}

impl Connector {
    /// A connector trusting `ca` or the system's roots (see [`config`]).
    ///
    /// # Errors
    /// As [`config`].
    pub fn new(ca: Option<&Path>) -> Result<Self, ConfigError> {
        Ok(Self {
            config: config(ca)?,
        })
    }

    /// A connector with a configuration built elsewhere.
    pub fn from_config(config: Arc<ClientConfig>) -> Self {
        Self { config }
    }

    /// Runs the TLS handshake on `tcp`, verifying the server's certificate for `host` (a
    /// DNS name, or an IP address without brackets).
    ///
    /// # Errors
    /// [`HandshakeError`]: the certificate was refused (in [`explain`]'s words), the peer
    /// did not speak TLS, or the connection failed.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        host: &str,
    ) -> Result<TlsStream<TcpStream>, HandshakeError> {
        let name = ServerName::try_from(host.to_owned()).map_err(|_| HandshakeError::BadName {
            host: host.to_owned(),
        })?;
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .map_err(handshake_error)
    }
}

/// Sorts tokio-rustls's `io::Error` (which carries the rustls error inside) into what the
/// user can act on.
fn handshake_error(err: io::Error) -> HandshakeError {
    if let Some(tls) = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return match tls {
            rustls::Error::InvalidCertificate(_) => HandshakeError::Certificate(explain(tls)),
            _ => HandshakeError::Tls(explain(tls)),
        };
    }
    if err.kind() == io::ErrorKind::UnexpectedEof {
        return HandshakeError::Tls(
            "the server closed the connection during the TLS handshake (is this a plain-text \
             port? plain text needs no tls://)"
                .to_owned(),
        );
    }
    HandshakeError::Io(err)
}

/// A failed TLS handshake in words: what is wrong and what to try.
///
/// Certificate problems name the date (expired, not yet valid) or the names the certificate
/// is for (wrong name) when rustls reports them; an unknown issuer says how to trust a
/// self-signed server ([`SELF_SIGNED_HINT`]).
pub fn explain(err: &rustls::Error) -> String {
    match err {
        rustls::Error::InvalidCertificate(cert) => explain_certificate(cert),
        rustls::Error::InvalidMessage(_) => "the server did not answer in TLS (is this a \
             plain-text port? plain text needs no tls://)"
            .to_owned(),
        rustls::Error::AlertReceived(alert) => {
            format!("the server refused the TLS handshake (alert: {alert:?})")
        }
        rustls::Error::PeerIncompatible(why) => format!(
            "the server and this client have no TLS version or cipher suite in common \
             (tcpchat speaks TLS 1.3 and 1.2): {why:?}"
        ),
        other => format!("TLS failed: {other}"),
    }
}

fn explain_certificate(err: &CertificateError) -> String {
    match err {
        CertificateError::ExpiredContext { time, not_after } => format!(
            "the server's certificate expired on {} (it is {} here; the server's owner must \
             renew it, or this machine's clock is wrong)",
            date(not_after.as_secs()),
            date(time.as_secs())
        ),
        CertificateError::Expired => "the server's certificate has expired (the server's owner \
             must renew it, or this machine's clock is wrong)"
            .to_owned(),
        CertificateError::NotValidYetContext { time, not_before } => format!(
            "the server's certificate is not valid before {} (it is {} here; is this \
             machine's clock right?)",
            date(not_before.as_secs()),
            date(time.as_secs())
        ),
        CertificateError::NotValidYet => {
            "the server's certificate is not valid yet (is this machine's clock right?)".to_owned()
        }
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => {
            let host = expected.to_str();
            if presented.is_empty() {
                format!("the server's certificate is not valid for {host} (it names no host)")
            } else {
                format!(
                    "the server's certificate is not valid for {host}: it is for {} (connect \
                     with one of those names, or have the certificate made for {host})",
                    presented
                        .iter()
                        .map(|n| presented_name(n))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        }
        CertificateError::NotValidForName => "the server's certificate is not valid for this \
             host name (connect with a name it is for, or have it made for this one)"
            .to_owned(),
        CertificateError::UnknownIssuer => format!(
            "the server's certificate is not signed by an authority this client trusts \
             (unknown issuer, or self-signed); {SELF_SIGNED_HINT}"
        ),
        CertificateError::BadSignature => format!(
            "the server's certificate has a bad signature: it was not made by the trusted \
             certificate of the same name (a certificate made again by `tcpchat cert` needs \
             its new cert.pem in --ca), or it is damaged; {SELF_SIGNED_HINT}"
        ),
        CertificateError::Revoked => "the server's certificate has been revoked".to_owned(),
        other => format!("the server's certificate was refused: {other:?}"),
    }
}

/// A name as webpki reports it (`DnsName("chat.example.org")`, `IpAddress(192.0.2.7)`), as a
/// user would type it; other kinds of name as they come.
fn presented_name(name: &str) -> &str {
    name.strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .or_else(|| {
            name.strip_prefix("IpAddress(")
                .and_then(|n| n.strip_suffix(')'))
        })
        .unwrap_or(name)
}

/// A UNIX time as a UTC date and time, `2024-01-31 12:00:00 UTC`.
fn date(unix_seconds: u64) -> String {
    i64::try_from(unix_seconds)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .map_or_else(
            || format!("{unix_seconds} (UNIX time)"),
            |t| format!("{} {} UTC", t.date(), t.time()),
        )
}

/// A connection to a server, plain or inside TLS: what the tools read and write.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP connection underneath (for socket options such as `SO_LINGER`).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(tcp) => tcp,
            Self::Tls(tls) => tls.get_ref().0,
        }
    }

    /// Opens a stream on `tcp`: as it is when `tls` is `None`, else after a handshake that
    /// verifies the server for `host`.
    ///
    /// # Errors
    /// As [`Connector::connect`].
    pub async fn open(
        tcp: TcpStream,
        host: &str,
        tls: Option<&Connector>,
    ) -> Result<Self, HandshakeError> {
        match tls {
            None => Ok(Self::Plain(tcp)),
            Some(connector) => Ok(Self::Tls(Box::new(connector.connect(tcp, host).await?))),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_and_readable() {
        assert_eq!(date(0), "1970-01-01 0:00:00.0 UTC");
        assert_eq!(date(u64::MAX), format!("{} (UNIX time)", u64::MAX));
    }

    #[test]
    fn presented_names_read_as_typed() {
        let cases = [
            ("DnsName(\"chat.example.org\")", "chat.example.org"),
            ("IpAddress(192.0.2.7)", "192.0.2.7"),
            ("IpAddress(2001:db8::1)", "2001:db8::1"),
            ("DirectoryName", "DirectoryName"),
            ("DnsName(\"unclosed", "DnsName(\"unclosed"),
        ];
        for (given, shown) in cases {
            assert_eq!(presented_name(given), shown);
        }
    }

    #[test]
    fn every_certificate_problem_has_words_of_its_own() {
        let cases = [
            (CertificateError::Expired, "has expired"),
            (CertificateError::NotValidYet, "not valid yet"),
            (
                CertificateError::NotValidForName,
                "not valid for this host name",
            ),
            (CertificateError::UnknownIssuer, SELF_SIGNED_HINT),
            (CertificateError::BadSignature, "bad signature"),
            (CertificateError::Revoked, "revoked"),
        ];
        for (err, words) in cases {
            let text = explain(&rustls::Error::InvalidCertificate(err.clone()));
            assert!(text.contains(words), "{err:?}: {text}");
        }
    }
}
