//! `tcpchat serve` with TLS as an operator runs it: certificates from `tcpchat cert`, a TLS
//! listener beside the plain one and TLS alone, a certificate renewed under a live
//! connection with SIGHUP, a renewal that does not load, and the usage errors.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::{listening_tls_addr, tcpchat, wait_for, Server, PATIENCE};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// A fresh directory per test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tcpchat-serve-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// `tcpchat cert --out DIR` (localhost), and the certificate it wrote.
fn make_cert(dir: &Path) -> CertificateDer<'static> {
    let out = tcpchat()
        .args(["cert", "--out", dir.to_str().expect("utf-8 path")])
        .output()
        .expect("run tcpchat cert");
    assert!(out.status.success(), "tcpchat cert: {out:?}");
    CertificateDer::from_pem_file(dir.join("cert.pem")).expect("cert.pem")
}

/// A line client inside TLS (blocking rustls), trusting `roots`.
struct TlsLine {
    stream: BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
}

impl TlsLine {
    fn connect(addr: SocketAddr, roots: &[CertificateDer<'static>]) -> Self {
        let mut store = rustls::RootCertStore::empty();
        for r in roots {
            store.add(r.clone()).expect("trust a test certificate");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(store)
        .with_no_client_auth();
        let tcp = TcpStream::connect(addr).expect("connect");
        // Bounds a hang; measures nothing.
        tcp.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let name = ServerName::try_from("localhost").expect("name");
        let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .expect("TLS handshake");
        }
        Self {
            stream: BufReader::new(stream),
        }
    }

    /// The certificate the server presented.
    fn peer_cert(&self) -> CertificateDer<'static> {
        self.stream
            .get_ref()
            .conn
            .peer_certificates()
            .expect("server certificates")[0]
            .clone()
            .into_owned()
    }

    fn send(&mut self, line: &str) {
        let s = self.stream.get_mut();
        s.write_all(format!("{line}\n").as_bytes()).expect("write");
        s.flush().expect("flush");
    }

    fn expect(&mut self, want: &str) {
        let mut line = String::new();
        self.stream.read_line(&mut line).expect("read a line");
        assert_eq!(line.trim_end_matches('\n'), want);
    }

    fn send_raw(&mut self, bytes: &str) {
        let s = self.stream.get_mut();
        s.write_all(bytes.as_bytes()).expect("write");
        s.flush().expect("flush");
    }
}

/// A plain line client.
struct Plain {
    reader: BufReader<TcpStream>,
}

impl Plain {
    fn connect(addr: SocketAddr) -> Self {
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(PATIENCE)).expect("timeout");
        Self {
            reader: BufReader::new(tcp),
        }
    }
    fn send(&mut self, line: &str) {
        self.reader
            .get_mut()
            .write_all(format!("{line}\n").as_bytes())
            .expect("write");
    }
    fn expect(&mut self, want: &str) {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read a line");
        assert_eq!(line.trim_end_matches('\n'), want);
    }
}

fn serve_tls(dir: &Path, listen: &str) -> (Server, SocketAddr) {
    let mut cmd = tcpchat();
    cmd.args(["serve", "--listen", listen, "--tls-listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(dir.join("cert.pem"))
        .arg("--tls-key")
        .arg(dir.join("key.pem"));
    spawn(cmd)
}

/// Spawns a serve command and returns it with its TLS address (whether or not it also
/// listens in plain: `Server::addr` is then meaningless and unused).
fn spawn(mut cmd: Command) -> (Server, SocketAddr) {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tcpchat serve");
    let log = common::lines_of(child.stderr.take().expect("piped stderr"));
    let mut seen = Vec::new();
    let line = wait_for(&log, &mut seen, "listening tls", |l| {
        listening_tls_addr(l).is_some()
    });
    let tls = listening_tls_addr(&line).expect("checked by wait_for");
    // The plain listener logs first, when there is one.
    let addr = seen
        .iter()
        .find_map(|l| common::listening_addr(l))
        .unwrap_or(tls);
    (Server { child, addr, log }, tls)
}

fn sighup(server: &Server) {
    let status = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -HUP failed");
}

#[test]
fn sighup_renews_the_certificate_under_a_live_connection() {
    let (dir, a_dir, b_dir) = (scratch("live"), scratch("a"), scratch("b"));
    let cert_a = make_cert(&a_dir);
    let cert_b = make_cert(&b_dir);
    assert_ne!(cert_a, cert_b, "two distinct certificates");
    let install = |from: &Path| {
        for f in ["cert.pem", "key.pem"] {
            std::fs::copy(from.join(f), dir.join(f)).expect("install a pair");
        }
    };
    install(&a_dir);
    let (server, tls) = serve_tls(&dir, "127.0.0.1:0");
    let roots = [cert_a.clone(), cert_b.clone()];

    let mut alice = TlsLine::connect(tls, &roots);
    assert_eq!(alice.peer_cert(), cert_a);
    alice.send("HELLO-FROM alice");
    alice.expect("HELLO alice");
    let mut bob = Plain::connect(server.addr);
    bob.send("HELLO-FROM bob");
    bob.expect("HELLO bob");

    // The renewal: new files, SIGHUP.
    install(&b_dir);
    sighup(&server);
    let mut seen = Vec::new();
    wait_for(&server.log, &mut seen, "reloaded", |l| {
        l.contains("reloaded")
    });

    // The old connection chats on, across the plain/TLS line both ways.
    alice.send("SEND bob still here");
    alice.expect("SEND-OK");
    bob.expect("DELIVERY alice still here");
    bob.send("SEND alice welcome back");
    bob.expect("SEND-OK");
    alice.expect("DELIVERY bob welcome back");
    // A new connection sees the new certificate.
    let mut carol = TlsLine::connect(tls, &roots);
    assert_eq!(
        carol.peer_cert(),
        cert_b,
        "new connections get the renewed certificate"
    );
    carol.send("HELLO-FROM carol");
    carol.expect("HELLO carol");

    // A renewal caught half-written: the key file is garbage. Logged, B stays.
    std::fs::write(dir.join("key.pem"), "not a key\n").expect("break the key");
    sighup(&server);
    let line = wait_for(&server.log, &mut seen, "reload failed", |l| {
        l.contains("reload failed")
    });
    assert!(
        line.contains("WARN"),
        "a failed reload is a warning: {line}"
    );
    assert!(
        line.contains("no private key in"),
        "says what is wrong: {line}"
    );
    let dave = TlsLine::connect(tls, &roots);
    assert_eq!(dave.peer_cert(), cert_b, "the certificate in force stays");
    for d in [dir, a_dir, b_dir] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn tls_alone_with_listen_off() {
    let dir = scratch("alone");
    let cert = make_cert(&dir);
    let (_server, tls) = serve_tls(&dir, "off");
    let mut c = TlsLine::connect(tls, &[cert]);
    c.send("HELLO-FROM alice");
    c.expect("HELLO alice");
    c.send("LIST");
    c.expect("LIST-OK alice");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn tls_mistakes_are_usage_errors_that_say_what_to_do() {
    let dir = scratch("usage");
    make_cert(&dir);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (cert, key) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    let cases: &[(&[&str], &str)] = &[
        (&["--tls-cert", cert], "without its key"),
        (&["--tls-listen", "127.0.0.1:0"], "needs a certificate"),
        (&["--listen", "off"], "nothing to serve"),
        // The files swapped: the key file holds no certificate.
        (&["--tls-cert", key, "--tls-key", cert], "no certificate in"),
    ];
    for (args, needle) in cases {
        let out = tcpchat()
            .arg("serve")
            .args(*args)
            .output()
            .expect("run tcpchat serve");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// The address in a `listening web tls addr=...` log line.
fn listening_web_tls_addr(line: &str) -> Option<SocketAddr> {
    line.split("listening web tls addr=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
}

/// `--web-listen` with a certificate serves `https://` and `wss://` with the TLS
/// listener's certificate: the page, and the WebSocket upgrade from the page's origin.
#[test]
fn the_web_listener_serves_https_with_the_same_certificate() {
    let dir = scratch("web");
    let cert = make_cert(&dir);
    let mut cmd = tcpchat();
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-listen",
        "127.0.0.1:0",
    ])
    .args(["--web-listen", "127.0.0.1:0", "--tls-cert"])
    .arg(dir.join("cert.pem"))
    .arg("--tls-key")
    .arg(dir.join("key.pem"));
    let mut server = Server::spawn(cmd);
    let mut seen = Vec::new();
    let line = wait_for(&server.log, &mut seen, "listening web tls", |l| {
        listening_web_tls_addr(l).is_some()
    });
    let web = listening_web_tls_addr(&line).expect("checked by wait_for");

    let mut page = TlsLine::connect(web, std::slice::from_ref(&cert));
    assert_eq!(page.peer_cert(), cert, "the TLS listener's certificate");
    page.send_raw(&format!(
        "GET / HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
        web.port()
    ));
    page.expect("HTTP/1.1 200 OK\r");

    let mut ws = TlsLine::connect(web, &[cert]);
    ws.send_raw(&format!(
        "GET /ws HTTP/1.1\r\nHost: localhost:{port}\r\nOrigin: https://localhost:{port}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        port = web.port()
    ));
    ws.expect("HTTP/1.1 101 Switching Protocols\r");
    server.sigterm();
    assert_eq!(server.wait_exit().code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
