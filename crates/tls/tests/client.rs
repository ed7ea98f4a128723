//! The clients' TLS against a real TLS listener on a loopback port (testkit's relay): a
//! trusted certificate connects and carries bytes both ways; each kind of refused certificate
//! is explained in words that say what is wrong.

use std::time::Duration;

use tcpchat_testkit::{TestCa, TlsRelay, PATIENCE};
use tcpchat_tls::client::{Connector, HandshakeError, Stream, SELF_SIGNED_HINT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream that echoes what it reads, for the relay to forward to.
async fn echo() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn handshake(
    relay: &TlsRelay,
    host: &str,
    connector: &Connector,
) -> Result<Stream, HandshakeError> {
    let tcp = TcpStream::connect(relay.addr).await.expect("tcp connect");
    tokio::time::timeout(PATIENCE, Stream::open(tcp, host, Some(connector)))
        .await
        .expect("the handshake ends")
}

fn connector_trusting(ca: &TestCa) -> (Connector, tempdir::Dir) {
    let dir = tempdir::Dir::new();
    let path = ca.write(dir.path(), "ca.pem");
    (Connector::new(Some(&path)).expect("the CA file loads"), dir)
}

/// A directory removed on drop (no crate for ten lines).
mod tempdir {
    use std::path::{Path, PathBuf};

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new() -> Self {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("tcpchat-tls-test-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&path).expect("temp dir");
            Self(path)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[tokio::test]
async fn a_trusted_certificate_connects_by_name_and_by_ip() {
    let ca = TestCa::new();
    let relay = TlsRelay::start(echo().await, &ca.leaf(&["localhost", "127.0.0.1"]));
    let (connector, _dir) = connector_trusting(&ca);
    for host in ["localhost", "127.0.0.1"] {
        let mut stream = handshake(&relay, host, &connector)
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        assert!(matches!(stream, Stream::Tls(_)));
        stream.write_all(b"HELLO-FROM a\n").await.expect("write");
        let mut got = [0u8; 13];
        tokio::time::timeout(PATIENCE, stream.read_exact(&mut got))
            .await
            .expect("echoed in time")
            .expect("read");
        assert_eq!(&got, b"HELLO-FROM a\n", "through {host}");
    }
}

#[tokio::test]
async fn a_certificate_for_another_name_says_which_names_it_has() {
    let ca = TestCa::new();
    let relay = TlsRelay::start(echo().await, &ca.leaf(&["chat.example.org", "192.0.2.7"]));
    let (connector, _dir) = connector_trusting(&ca);
    for host in ["localhost", "127.0.0.1"] {
        let err = handshake(&relay, host, &connector)
            .await
            .err()
            .unwrap_or_else(|| panic!("{host}: connected with a certificate for other names"));
        let text = err.to_string();
        assert!(err.is_certificate(), "{text}");
        assert!(
            text.contains(&format!("not valid for {host}")),
            "{host}: {text}"
        );
        assert!(
            text.contains("it is for chat.example.org, 192.0.2.7 ("),
            "{text}"
        );
    }
}

#[tokio::test]
async fn an_expired_certificate_says_when_it_expired() {
    let ca = TestCa::new();
    let now = time::OffsetDateTime::now_utc();
    let ended = now - Duration::from_secs(3 * 24 * 60 * 60);
    let leaf = ca.leaf_valid(&["localhost"], ended - Duration::from_secs(86_400), ended);
    let relay = TlsRelay::start(echo().await, &leaf);
    let (connector, _dir) = connector_trusting(&ca);
    let err = handshake(&relay, "localhost", &connector)
        .await
        .expect_err("an expired certificate is refused");
    let text = err.to_string();
    assert!(err.is_certificate(), "{text}");
    assert!(text.contains("expired on"), "{text}");
    // The date, as written in the certificate (seconds: rcgen keeps them).
    assert!(text.contains(&ended.date().to_string()), "{text}");
}

#[tokio::test]
async fn an_unknown_issuer_says_how_to_trust_a_self_signed_server() {
    let ca = TestCa::new();
    let relay = TlsRelay::start(echo().await, &ca.leaf(&["localhost"]));
    // The system's roots: they do not hold this test's CA.
    let system = Connector::new(None).expect("system roots");
    // Another CA's file: trusted instead of the system's, and not the issuer either.
    let (other, _dir) = connector_trusting(&TestCa::new());
    for connector in [system, other] {
        let err = handshake(&relay, "localhost", &connector)
            .await
            .expect_err("an unknown issuer is refused");
        let text = err.to_string();
        assert!(err.is_certificate(), "{text}");
        assert!(text.contains("unknown issuer"), "{text}");
        assert!(text.contains(SELF_SIGNED_HINT), "{text}");
    }
}

#[tokio::test]
async fn a_plain_text_server_is_told_apart_from_a_certificate_problem() {
    // A server that answers the ClientHello with a protocol line, as a plain port would.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        if let Ok((mut conn, _)) = listener.accept().await {
            let _ = conn.write_all(b"BAD-RQST-HDR\n").await;
            let mut sink = [0u8; 1024];
            let _ = conn.read(&mut sink).await;
        }
    });
    let connector = Connector::new(None).expect("system roots");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let err = tokio::time::timeout(PATIENCE, Stream::open(tcp, "localhost", Some(&connector)))
        .await
        .expect("ends")
        .expect_err("not TLS");
    assert!(!err.is_certificate(), "{err}");
    assert!(err.to_string().contains("plain-text port"), "{err}");
}

#[test]
fn ca_files_that_cannot_be_used_are_refused_with_their_path() {
    let dir = tempdir::Dir::new();
    let missing = dir.path().join("missing.pem");
    let err = Connector::new(Some(&missing)).expect_err("missing file");
    assert!(err.to_string().contains("missing.pem"), "{err}");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").expect("write");
    let err = Connector::new(Some(&empty)).expect_err("no certificate");
    assert!(err.to_string().contains("holds no certificate"), "{err}");
}
