//! The login and idle deadlines hold against a peer that never lets its socket go quiet.
//!
//! A peer that sends faster than the server drains keeps the socket readable at every wait.
//! The deadline must still be checked (after every read), or such a peer holds a slot
//! forever. The peers here are plain threads writing as fast as the kernel takes bytes, so
//! the socket is readable whenever the server looks; a thread reads (and discards) the
//! replies so the server is never stopped by a full outgoing queue instead.

mod common;
mod logs;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use common::{Server, PATIENCE};
use tcpchat_server::Config;

/// A raw peer on its own threads: `login` (if any) is sent and answered first, then `chunk`
/// is written over and over until the server closes. Returns the peer's address and a
/// channel that yields once the server closed (or why the peer could not start).
fn flooding_peer(
    addr: SocketAddr,
    login: Option<&str>,
    chunk: Vec<u8>,
) -> (SocketAddr, mpsc::Receiver<Result<(), String>>) {
    let mut stream = TcpStream::connect(addr).expect("connect to server");
    let local = stream.local_addr().expect("local addr");
    let login = login.map(str::to_owned);
    let (closed_tx, closed) = mpsc::channel();
    std::thread::spawn(move || {
        if let Some(name) = login {
            let want = format!("HELLO {name}\n").into_bytes();
            let mut got = vec![0u8; want.len()];
            let answered = stream
                .write_all(format!("HELLO-FROM {name}\n").as_bytes())
                .and_then(|()| stream.read_exact(&mut got));
            if answered.is_err() || got != want {
                let _ =
                    closed_tx.send(Err(format!("login as {name} failed: {answered:?} {got:?}")));
                return;
            }
        }
        let mut reader = match stream.try_clone() {
            Ok(r) => r,
            Err(e) => {
                let _ = closed_tx.send(Err(format!("clone socket: {e}")));
                return;
            }
        };
        std::thread::spawn(move || {
            let mut sink = vec![0u8; 64 * 1024];
            // EOF or reset: either way the server closed.
            while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
            let _ = closed_tx.send(Ok(()));
        });
        while stream.write_all(&chunk).is_ok() {}
    });
    (local, closed)
}

async fn wait_closed(closed: mpsc::Receiver<Result<(), String>>, what: &str) {
    let waited = tokio::task::spawn_blocking(move || closed.recv_timeout(PATIENCE))
        .await
        .expect("waiting thread");
    match waited {
        Ok(Ok(())) => {}
        Ok(Err(why)) => panic!("{what}: {why}"),
        Err(_) => panic!("{what}: server did not close the connection within {PATIENCE:?}"),
    }
}

fn config() -> Config {
    Config {
        // Large, so that the flood's replies are never what ends the connection.
        outbox_limit_bytes: 256 * 1024 * 1024,
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_of_invalid_lines_does_not_escape_the_login_timeout() {
    let logs = logs::capture();
    let server = Server::start(Config {
        handshake_timeout: Duration::from_secs(1),
        ..config()
    })
    .await;
    let (peer, closed) = flooding_peer(server.addr, None, b"LIST\n".repeat(16 * 1024));
    wait_closed(closed, "invalid lines before login").await;
    logs.wait_for(&[&format!("peer={peer}"), "no login in time"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_line_does_not_escape_the_login_timeout() {
    let logs = logs::capture();
    let server = Server::start(Config {
        handshake_timeout: Duration::from_secs(1),
        ..config()
    })
    .await;
    let (peer, closed) = flooding_peer(server.addr, None, vec![b'x'; 256 * 1024]);
    wait_closed(closed, "a line without end before login").await;
    logs.wait_for(&[&format!("peer={peer}"), "no login in time"])
        .await;
}

/// Lines answered with an error are not activity (`docs/protocol.md`): only requests that are
/// acted on move the idle deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_of_invalid_lines_does_not_escape_the_idle_timeout() {
    let logs = logs::capture();
    let server = Server::start(Config {
        idle_timeout: Some(Duration::from_secs(1)),
        ..config()
    })
    .await;
    let (_, closed) = flooding_peer(server.addr, Some("junky"), b"WHOM\n".repeat(16 * 1024));
    wait_closed(closed, "invalid lines after login").await;
    logs.wait_for(&["name=junky", "logged out", "Timeout(Idle)"])
        .await;
}

/// Neither is a line that never ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_line_does_not_escape_the_idle_timeout() {
    let logs = logs::capture();
    let server = Server::start(Config {
        idle_timeout: Some(Duration::from_secs(1)),
        ..config()
    })
    .await;
    let (_, closed) = flooding_peer(server.addr, Some("endless"), vec![b'x'; 256 * 1024]);
    wait_closed(closed, "a line without end after login").await;
    logs.wait_for(&["name=endless", "logged out", "Timeout(Idle)"])
        .await;
}

/// A connection whose socket is always readable still lets other connections run: on a
/// single-threaded runtime, a flood that never yielded would leave nobody else answered.
#[tokio::test(flavor = "current_thread")]
async fn a_flooding_peer_does_not_keep_others_from_being_served() {
    let server = Server::start(config()).await;
    let mut ann = server.login("ann").await;
    let (_, _closed) = flooding_peer(server.addr, Some("flood"), b"WHOM\n".repeat(16 * 1024));
    // Logged in, so flooding from here on; ann is still answered while it does.
    common::wait_presence(&mut ann, "flood", true).await;
    for i in 0..20 {
        ann.send(&format!("SEND ann {i}")).await;
        ann.expect(&format!("DELIVERY ann {i}")).await;
        ann.expect("SEND-OK").await;
    }
}
