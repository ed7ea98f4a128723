//! `tcpchat cert` as a user runs it: the files it writes, that rustls loads them and a TLS
//! client that trusts the certificate completes a handshake over a real socket, and the
//! refusals (an existing file, a bad host name).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use common::tcpchat;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use x509_parser::extensions::GeneralName;

/// A fresh, empty directory per test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tcpchat-cert-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn cert(args: &[&str]) -> Output {
    tcpchat()
        .arg("cert")
        .args(args)
        .output()
        .expect("runs tcpchat")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn load(dir: &Path) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let cert = CertificateDer::from_pem_file(dir.join("cert.pem")).expect("cert.pem is PEM");
    let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).expect("key.pem is PEM");
    (cert, key)
}

/// The certificate's subject alternative names, as text.
fn sans(cert: &CertificateDer<'_>) -> Vec<String> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert).expect("a DER certificate");
    let ext = x509
        .subject_alternative_name()
        .expect("well-formed extensions")
        .expect("has subject alternative names");
    ext.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => d.to_string(),
            GeneralName::IPAddress(b) => match b.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(*b).expect("4 bytes")).to_string(),
                16 => IpAddr::from(<[u8; 16]>::try_from(*b).expect("16 bytes")).to_string(),
                _ => format!("bad IP {b:?}"),
            },
            other => format!("unexpected {other:?}"),
        })
        .collect()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server on loopback with the written pair, a client trusting only `cert.pem` (what
/// `--ca` will do) connecting as `name`; one line each way. Returns the client's error.
fn handshake(dir: &Path, name: &str) -> Result<String, rustls::Error> {
    let (cert, key) = load(dir);
    let server_config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("rustls accepts the key for the certificate");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(cert)
        .expect("the certificate is a usable trust anchor");
    let client_config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();

    let listener = TcpListener::bind("127.0.0.1:0").expect("binds loopback");
    let addr = listener.local_addr().expect("bound address");
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().expect("accepts");
        let conn = rustls::ServerConnection::new(Arc::new(server_config)).expect("server");
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut line = String::new();
        // A failed handshake shows up here as an error; the client reports why.
        if BufReader::new(&mut tls).read_line(&mut line).is_ok() {
            let _ = tls.write_all(format!("got {line}").as_bytes());
            let _ = tls.flush();
        }
    });
    let server_name = ServerName::try_from(name.to_string()).expect("a valid name");
    let conn = rustls::ClientConnection::new(Arc::new(client_config), server_name).expect("client");
    let tcp = TcpStream::connect(addr).expect("connects");
    tcp.set_read_timeout(Some(common::PATIENCE))
        .expect("sets a timeout");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let result = tls
        .write_all(b"HELLO-FROM alice\n")
        .and_then(|()| tls.flush())
        .and_then(|()| {
            let mut reply = String::new();
            BufReader::new(&mut tls).read_line(&mut reply)?;
            Ok(reply)
        });
    let outcome = match result {
        Ok(reply) => Ok(reply),
        Err(e) => match e
            .into_inner()
            .map(|inner| inner.downcast::<rustls::Error>())
        {
            Some(Ok(tls_error)) => Err(*tls_error),
            other => panic!("expected a TLS error, got {other:?}"),
        },
    };
    drop(tls);
    server.join().expect("server thread");
    outcome
}

#[test]
fn default_names_cover_this_machine_and_the_advice_is_exact() {
    let dir = scratch("default");
    let out = cert(&["--out", dir.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let (c, _) = load(&dir);
    assert_eq!(sans(&c), ["localhost", "127.0.0.1", "::1"]);

    let abs = std::path::absolute(&dir).expect("absolute path");
    let cert_pem = abs.join("cert.pem").display().to_string();
    let key_pem = abs.join("key.pem").display().to_string();
    let stdout = text(&out.stdout);
    for want in [
        format!("tcpchat serve --tls-listen 0.0.0.0:5379 --tls-cert {cert_pem} --tls-key {key_pem}"),
        format!("tcpchat connect tls://localhost --ca {cert_pem}"),
        format!(
            "cp {cert_pem} /usr/local/share/ca-certificates/tcpchat-localhost.crt && update-ca-certificates"
        ),
    ] {
        assert!(stdout.contains(&want), "stdout lacks {want:?}:\n{stdout}");
    }

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |f: &str| {
            std::fs::metadata(dir.join(f))
                .expect("file written")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("key.pem"), 0o600, "the key is private");
        assert_eq!(mode("cert.pem"), 0o644, "the certificate is public");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_client_trusting_the_file_connects_by_each_name_and_only_those() {
    let dir = scratch("names");
    let out = cert(&[
        "--host",
        "chat.example.org",
        "--host",
        "127.0.0.1",
        "--out",
        dir.to_str().expect("utf-8 path"),
    ]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let (c, _) = load(&dir);
    assert_eq!(sans(&c), ["chat.example.org", "127.0.0.1"]);
    assert!(
        text(&out.stdout).contains("tcpchat connect tls://chat.example.org --ca "),
        "{}",
        text(&out.stdout)
    );

    for name in ["chat.example.org", "127.0.0.1"] {
        assert_eq!(
            handshake(&dir, name).as_deref(),
            Ok("got HELLO-FROM alice\n"),
            "as {name}"
        );
    }
    let wrong = handshake(&dir, "other.example.org");
    assert!(
        matches!(
            wrong,
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. }
            ))
        ),
        "a name not in the certificate is refused: {wrong:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn refuses_to_overwrite_without_force() {
    let dir = scratch("overwrite");
    let d = dir.to_str().expect("utf-8 path");
    assert!(cert(&["--out", d]).status.success());
    let before = std::fs::read(dir.join("cert.pem")).expect("written");

    let again = cert(&["--out", d]);
    assert_eq!(again.status.code(), Some(2), "a usage error");
    let stderr = text(&again.stderr);
    assert!(
        stderr.contains("already exists") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(dir.join("cert.pem")).expect("still there"),
        before,
        "untouched"
    );

    // Only the key is left from an earlier run: still refused, and no certificate appears.
    std::fs::remove_file(dir.join("cert.pem")).expect("removes");
    assert_eq!(cert(&["--out", d]).status.code(), Some(2));
    assert!(!dir.join("cert.pem").exists(), "nothing half written");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("key.pem"), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
    }
    let forced = cert(&["--out", d, "--force"]);
    assert!(forced.status.success(), "stderr: {}", text(&forced.stderr));
    let after = std::fs::read(dir.join("cert.pem")).expect("written");
    assert_ne!(after, before, "a new certificate");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("key.pem"))
            .expect("written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "a replaced key is private again");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_host_is_a_clear_usage_error_and_writes_nothing() {
    let dir = scratch("bad-host");
    let d = dir.to_str().expect("utf-8 path");
    for (host, why) in [
        ("chat example.org", "not a valid host name"),
        ("chat.example.org:5379", "no port"),
        ("tls://chat.example.org", "no port, scheme or path"),
        ("a.example,b.example", "one name per --host"),
        ("*.example.org", "wildcard"),
        ("", "not a valid host name"),
    ] {
        let out = cert(&["--host", "localhost", "--host", host, "--out", d]);
        assert_eq!(out.status.code(), Some(2), "--host {host:?}");
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("--host {host:?}")) && stderr.contains(why),
            "--host {host:?}: {stderr}"
        );
        assert!(!dir.exists(), "--host {host:?}: nothing written");
    }
    // Brackets around an IPv6 address, as in a URL, are accepted.
    let out = cert(&["--host", "[::1]", "--out", d]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(sans(&load(&dir).0), ["::1"]);
    assert!(
        text(&out.stdout).contains("tls://[::1] --ca"),
        "{}",
        text(&out.stdout)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
