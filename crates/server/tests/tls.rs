//! The protocol inside TLS, over real sockets: a TLS user and a plain user chat through one
//! server; TLS 1.3 and 1.2 negotiate and 1.1 is refused; wrong-port mistakes and stalled
//! handshakes each cost one slot only until they are closed.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{Client, PATIENCE};
use rustls::pki_types::{CertificateDer, ServerName};
use tcpchat_server::{Config, Listeners};
use tcpchat_tls::server::Reloadable;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::client::TlsStream;

/// A server with a plain and a TLS listener on loopback, and the certificate a client
/// must trust. Stopped (and its files removed) when dropped.
struct Fixture {
    plain: SocketAddr,
    tls: SocketAddr,
    ca: CertificateDer<'static>,
    dir: PathBuf,
    _stop: oneshot::Sender<()>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn start(config: Config) -> Fixture {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tcpchat-server-tls-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("rcgen");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).expect("write cert");
    std::fs::write(&key, ck.signing_key.serialize_pem()).expect("write key");
    let certs = Arc::new(Reloadable::load(&cert, &key).expect("generated pair loads"));

    let plain = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let tls = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (plain_addr, tls_addr) = (
        plain.local_addr().expect("addr"),
        tls.local_addr().expect("addr"),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let listeners = Listeners {
        plain: Some(plain),
        tls: Some((tls, certs)),
        web: None,
    };
    tokio::spawn(tcpchat_server::run_listeners(
        listeners,
        config,
        tcpchat_server::MemoryHub::new(),
        async {
            let _ = stopped.await;
        },
    ));
    Fixture {
        plain: plain_addr,
        tls: tls_addr,
        ca: ck.cert.der().clone(),
        dir,
        _stop: stop,
    }
}

fn client_config(
    ca: &CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).expect("trust the test certificate");
    Arc::new(
        rustls::ClientConfig::builder_with_provider(tcpchat_tls::provider())
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A line client inside TLS.
struct TlsClient {
    reader: BufReader<ReadHalf<TlsStream<TcpStream>>>,
    writer: WriteHalf<TlsStream<TcpStream>>,
    version: Option<rustls::ProtocolVersion>,
}

impl TlsClient {
    async fn connect_with(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").expect("valid name");
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await?;
        let version = stream.get_ref().1.protocol_version();
        let (r, w) = tokio::io::split(stream);
        Ok(Self {
            reader: BufReader::new(r),
            writer: w,
            version,
        })
    }

    async fn connect(f: &Fixture) -> Self {
        let config = client_config(&f.ca, tcpchat_tls::PROTOCOL_VERSIONS);
        Self::connect_with(f.tls, config)
            .await
            .expect("TLS handshake")
    }

    async fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write");
        self.writer.flush().await.expect("flush");
    }

    async fn next_line(&mut self) -> Option<String> {
        let mut line = String::new();
        match tokio::time::timeout(PATIENCE, self.reader.read_line(&mut line)).await {
            Err(_) => panic!("no line within {PATIENCE:?}; partial: {line:?}"),
            Ok(Err(_) | Ok(0)) => None,
            Ok(Ok(_)) => Some(line.trim_end_matches('\n').to_owned()),
        }
    }

    async fn expect(&mut self, want: &str) {
        assert_eq!(self.next_line().await.as_deref(), Some(want));
    }

    async fn login(f: &Fixture, name: &str) -> Self {
        let mut c = Self::connect(f).await;
        c.send(&format!("HELLO-FROM {name}")).await;
        c.expect(&format!("HELLO {name}")).await;
        c
    }
}

/// Reads until the server closes; panics if it does not within [`PATIENCE`]. Returns what
/// arrived before the close.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
            Err(_) => panic!("not closed within {PATIENCE:?}; got {got:?}"),
            Ok(Ok(0) | Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// The first flight of a real rustls client (its ClientHello record).
fn client_hello(ca: &CertificateDer<'static>) -> Vec<u8> {
    let config = client_config(ca, tcpchat_tls::PROTOCOL_VERSIONS);
    let name = ServerName::try_from("localhost").expect("valid name");
    let mut conn = rustls::ClientConnection::new(config, name).expect("client");
    let mut out = Vec::new();
    conn.write_tls(&mut out).expect("write to a Vec");
    out
}

/// Logs in on the TLS port, retrying while the one slot is still held: the slot of a
/// closed connection is returned when its task ends, a moment after the client saw the
/// close. Panics after [`PATIENCE`].
async fn tls_login_when_free(f: &Fixture, name: &str) -> TlsClient {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let config = client_config(&f.ca, tcpchat_tls::PROTOCOL_VERSIONS);
        if let Ok(mut c) = TlsClient::connect_with(f.tls, config).await {
            c.send(&format!("HELLO-FROM {name}")).await;
            if c.next_line().await.as_deref() == Some(&format!("HELLO {name}")) {
                return c;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot was not freed within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_tls_user_and_a_plain_user_chat() {
    let f = start(Config::default()).await;
    let mut alice = TlsClient::login(&f, "alice").await;
    let mut bob = Client::connect(f.plain).await;
    bob.send("HELLO-FROM bob").await;
    bob.expect("HELLO bob").await;

    alice.send("SEND bob hello over tls").await;
    alice.expect("SEND-OK").await;
    bob.expect("DELIVERY alice hello over tls").await;
    bob.send("SEND alice hi in plain").await;
    bob.expect("SEND-OK").await;
    alice.expect("DELIVERY bob hi in plain").await;
    alice.send("LIST").await;
    alice.expect("LIST-OK alice,bob").await;
}

#[tokio::test]
async fn tls13_and_tls12_negotiate() {
    let f = start(Config::default()).await;
    for (version, want) in [
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
    ] {
        let config = client_config(&f.ca, &[version]);
        let mut c = TlsClient::connect_with(f.tls, config)
            .await
            .unwrap_or_else(|e| panic!("{want:?} handshake: {e}"));
        assert_eq!(c.version, Some(want));
        let name = format!("user{}", u16::from(want));
        c.send(&format!("HELLO-FROM {name}")).await;
        c.expect(&format!("HELLO {name}")).await;
    }
}

#[tokio::test]
async fn tls11_is_refused_with_an_alert() {
    let f = start(Config::default()).await;
    // A TLS 1.1 ClientHello (legacy version 3.2, no supported_versions extension), with the
    // one cipher suite every TLS 1.1 client has.
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[0x11; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0x00, 0x02, 0x00, 0x2f]); // TLS_RSA_WITH_AES_128_CBC_SHA
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut handshake = vec![0x01, 0x00, 0x00, body.len() as u8];
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend_from_slice(&handshake);

    let mut s = TcpStream::connect(f.tls).await.expect("connect");
    s.write_all(&record).await.expect("send ClientHello");
    let got = read_to_close(&mut s).await;
    // An alert record (21), or a bare close; never a ServerHello (a handshake record, 22).
    assert!(
        got.is_empty() || got[0] == 0x15,
        "expected an alert or a close, got {got:?}"
    );
    assert_ne!(got.first(), Some(&0x16), "the server negotiated TLS 1.1");
}

#[tokio::test]
async fn plain_text_on_the_tls_port_is_closed_and_frees_its_slot() {
    let config = Config {
        max_clients: 1,
        // Far beyond PATIENCE: a close seen here is the TLS failure, not this deadline.
        handshake_timeout: Duration::from_secs(600),
        ..Config::default()
    };
    let f = start(config).await;
    let mut s = TcpStream::connect(f.tls).await.expect("connect");
    s.write_all(b"HELLO-FROM mallory\n").await.expect("write");
    let got = read_to_close(&mut s).await;
    assert!(
        !got.windows(5).any(|w| w == b"HELLO"),
        "a plain-text reply on the TLS port: {got:?}"
    );
    tls_login_when_free(&f, "alice").await;
}

#[tokio::test]
async fn tls_on_the_plain_port_is_closed_at_once() {
    let config = Config {
        max_clients: 1,
        handshake_timeout: Duration::from_secs(600),
        ..Config::default()
    };
    let f = start(config).await;
    let mut s = TcpStream::connect(f.plain).await.expect("connect");
    s.write_all(&client_hello(&f.ca)).await.expect("write");
    let got = read_to_close(&mut s).await;
    assert!(
        got.is_empty(),
        "expected a close and nothing else, got {got:?}"
    );

    // The slot is free again: a plain user gets in (BUSY while the task is still ending).
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut c = Client::connect(f.plain).await;
        c.send("HELLO-FROM bob").await;
        match c.next_text().await.as_deref() {
            Some("HELLO bob") => break,
            Some("BUSY") if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("expected HELLO bob, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_stalled_or_truncated_handshake_costs_a_slot_until_the_handshake_timeout() {
    let config = Config {
        max_clients: 1,
        handshake_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let hello = client_hello(&start(config.clone()).await.ca);
    // Nothing at all, then half a ClientHello: both hold the one slot until the deadline.
    // A fresh server each time, so the slot is surely the stalled connection's.
    for sent in [&hello[..0], &hello[..hello.len() / 2]] {
        let f = start(config.clone()).await;
        let mut s = TcpStream::connect(f.tls).await.expect("connect");
        s.write_all(sent).await.expect("write");
        let got = read_to_close(&mut s).await;
        assert!(
            got.iter().all(|&b| b != 0x16),
            "a ServerHello to half a ClientHello? {got:?}"
        );
        tls_login_when_free(&f, "alice").await;
    }
}

/// Many TLS records in one burst, both ways: rustls decrypts more than one read takes, and
/// the connection must treat what it holds as readable (the socket alone would say no).
#[tokio::test]
async fn a_burst_of_many_records_is_answered_in_full_both_ways() {
    // 2,000 lines at once from one connection: past the default command rate, which would
    // (rightly) hold them back and drop the sender; this test is about TLS records.
    let f = start(Config {
        limits: tcpchat_server::Limits::off(),
        ..Config::default()
    })
    .await;
    let mut alice = TlsClient::login(&f, "alice").await;
    let mut bob = TlsClient::login(&f, "bob").await;
    const LINES: usize = 2_000;
    // Small enough that bob's DELIVERY lines fit his outbox (256 KiB) while he is not
    // reading yet: this test is about TLS, not about slow readers.
    let body = "x".repeat(60);
    let burst: String = (0..LINES)
        .map(|i| format!("SEND bob {i} {body}\n"))
        .collect();
    assert!(
        burst.len() > 8 * 16 * 1024,
        "larger than 8 full TLS records"
    );
    alice
        .writer
        .write_all(burst.as_bytes())
        .await
        .expect("write the burst");
    alice.writer.flush().await.expect("flush");
    for i in 0..LINES {
        bob.expect(&format!("DELIVERY alice {i} {body}")).await;
    }
    for _ in 0..LINES {
        alice.expect("SEND-OK").await;
    }
}
