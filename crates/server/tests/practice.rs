//! Practice mode (`serve --practice SEED`): a raw client sees lines cut across its reads and
//! replies arriving together, yet the bytes, put together, are exactly what the normal server
//! sends. See: #16

mod common;

use common::{Server, PATIENCE};
use tcpchat_server::{Config, Practice};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MESSAGES: usize = 60;

/// Logs `alice` in on a raw socket, has `bob` send her [`MESSAGES`] messages (and her own
/// `LIST`), and returns every read she made, in order, once all the expected bytes are in.
async fn reads_of_alice(config: Config) -> (Vec<Vec<u8>>, Vec<u8>) {
    let server = Server::start(config).await;
    let mut alice = TcpStream::connect(server.addr).await.expect("connect");
    alice.write_all(b"HELLO-FROM alice\n").await.expect("write");
    let mut expected = b"HELLO alice\n".to_vec();
    let mut reads = Vec::new();
    let mut got = Vec::new();
    // The HELLO first, so bob's login cannot race alice's.
    read_until(&mut alice, &mut got, &mut reads, expected.len()).await;
    let mut bob = server.login("bob").await;
    for i in 0..MESSAGES {
        let body = format!("message {i} with some text to make it longer");
        bob.send(&format!("SEND alice {body}")).await;
        // Handed to alice before the SEND-OK: her LIST below comes after every message.
        bob.expect("SEND-OK").await;
        expected.extend_from_slice(format!("DELIVERY bob {body}\n").as_bytes());
    }
    alice.write_all(b"LIST\n").await.expect("write");
    expected.extend_from_slice(b"LIST-OK alice,bob\n");
    read_until(&mut alice, &mut got, &mut reads, expected.len()).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expected),
        "the byte stream is the normal server's"
    );
    server.shutdown().await;
    (reads, got)
}

async fn read_until(
    stream: &mut TcpStream,
    got: &mut Vec<u8>,
    reads: &mut Vec<Vec<u8>>,
    len: usize,
) {
    while got.len() < len {
        let mut buf = [0u8; 64 * 1024];
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no more bytes after {:?}", String::from_utf8_lossy(got)))
            .expect("read");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(got));
        got.extend_from_slice(&buf[..n]);
        reads.push(buf[..n].to_vec());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn practice_mode_cuts_lines_across_reads_and_keeps_every_byte() {
    let config = Config {
        practice: Some(Practice { seed: 42 }),
        ..Config::default()
    };
    let (reads, _) = reads_of_alice(config).await;
    let cut = reads.iter().filter(|r| r.last() != Some(&b'\n')).count();
    let several = reads
        .iter()
        .filter(|r| r.iter().filter(|&&b| b == b'\n').count() > 1)
        .count();
    assert!(
        cut > 0,
        "no read ended inside a line ({} reads)",
        reads.len()
    );
    assert!(
        several > 0,
        "no read held more than one line ({} reads)",
        reads.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_normal_server_sends_the_same_bytes() {
    // The reference for the test above: the same conversation, practice mode off, gives the
    // same byte stream (checked inside), whole lines being the usual result on loopback.
    let (_, got) = reads_of_alice(Config::default()).await;
    assert!(got.ends_with(b"LIST-OK alice,bob\n"));
}
