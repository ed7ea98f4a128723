//! `tcpchat connect tls://...` as the real binary, through a TLS-terminating relay (testkit's
//! [`TlsRelay`]) in front of a real `tcpchat serve`: a script logs in, sends and is delivered
//! to over TLS, and each refused certificate ends the run with its explanation.
//!
//! Every wait has a timeout that reports what did arrive; nothing is timed.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

mod common;

use common::{tcpchat, PlainClient, Server, PATIENCE};
use tcpchat_testkit::{TestCa, TlsRelay};

/// A scratch directory for the CA file, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("tcpchat-connect-tls-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `tcpchat connect --plain ARGS` with empty input; waits (under [`PATIENCE`]) for it.
fn run_to_end(args: &[&str]) -> Output {
    let mut child = tcpchat()
        .args(["connect", "--plain", "--name", "alice"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tcpchat connect");
    let deadline = std::time::Instant::now() + PATIENCE;
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("tcpchat connect {args:?} still running after {PATIENCE:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn a_script_chats_over_tls_with_a_trusted_ca() {
    let server = Server::start("127.0.0.1:0", &[]);
    let ca = TestCa::new();
    let relay = TlsRelay::start(server.addr, &ca.leaf(&["localhost", "127.0.0.1"]));
    let scratch = Scratch::new("chat");
    let ca_file = ca.write(scratch.path(), "ca.pem");
    let ca_arg = ca_file.to_str().expect("a UTF-8 temp path");
    let tls_addr = format!("tls://localhost:{}", relay.addr.port());

    let mut alice = PlainClient::start(&["--name", "alice", "--ca", ca_arg, &tls_addr]);
    alice.expect(&format!("logged in to {tls_addr} as alice"));
    // Bob on the plain port: the same server, the same protocol, whichever transport.
    let mut bob = PlainClient::start(&["--name", "bob", &server.addr.to_string()]);
    bob.expect(&format!("logged in to {} as bob", server.addr));

    alice.type_line("@bob hi over TLS");
    bob.expect("<alice> hi over TLS");
    alice.expect("delivered to bob: hi over TLS");
    bob.type_line("@alice and back");
    alice.expect("<bob> and back");
    alice.type_line("!who");
    alice.expect("online: alice, bob");
}

#[test]
fn refused_certificates_end_the_script_with_the_reason() {
    let server = Server::start("127.0.0.1:0", &[]);
    let ca = TestCa::new();
    let relay = TlsRelay::start(server.addr, &ca.leaf(&["127.0.0.1"]));
    let scratch = Scratch::new("refused");
    let ca_file = ca.write(scratch.path(), "ca.pem");
    let ca_arg = ca_file.to_str().expect("a UTF-8 temp path");
    let port = relay.addr.port();

    let cases: [(Vec<String>, &str); 2] = [
        // No --ca: the system's roots do not know this CA.
        (
            vec![format!("tls://127.0.0.1:{port}")],
            "tcpchat connect tls://HOST --ca cert.pem",
        ),
        // Trusted, but for 127.0.0.1 only.
        (
            vec![
                "--ca".into(),
                ca_arg.into(),
                format!("tls://localhost:{port}"),
            ],
            "not valid for localhost: it is for 127.0.0.1",
        ),
    ];
    for (args, words) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_to_end(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded; stderr {stderr}");
        assert!(
            stderr.contains(words),
            "{args:?}: stderr lacks {words:?}:\n{stderr}"
        );
    }
}

#[test]
fn a_ca_for_a_plain_address_is_a_usage_error() {
    let out = run_to_end(&["--ca", "ca.pem", "127.0.0.1:1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr {stderr}");
    assert!(
        stderr.contains("write the address as tls://127.0.0.1:1"),
        "{stderr}"
    );
}

#[test]
fn the_certificate_tcpchat_cert_writes_is_trusted_with_ca() {
    // The README's quick start, with the relay standing in for `serve --tls-listen`.
    let server = Server::start("127.0.0.1:0", &[]);
    let scratch = Scratch::new("cert");
    let dir = scratch.path().to_str().expect("a UTF-8 temp path");
    let made = tcpchat()
        .args(["cert", "--out", dir])
        .output()
        .expect("run tcpchat cert");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let read = |name: &str| std::fs::read_to_string(scratch.path().join(name)).expect(name);
    let leaf = tcpchat_testkit::Leaf {
        cert_pem: read("cert.pem"),
        key_pem: read("key.pem"),
    };
    let relay = TlsRelay::start(server.addr, &leaf);
    let cert = scratch.path().join("cert.pem");
    let tls_addr = format!("tls://localhost:{}", relay.addr.port());
    let mut alice = PlainClient::start(&[
        "--name",
        "alice",
        "--ca",
        cert.to_str().expect("UTF-8"),
        &tls_addr,
    ]);
    alice.expect(&format!("logged in to {tls_addr} as alice"));
}
