//! Many clients at once, and clients that misbehave while others chat. These check counts
//! and contents, never timings.

mod common;

use common::{wait_presence, Client, Server};
use tcpchat_server::Config;
use tokio::io::AsyncReadExt;

/// 500 clients log in at once; each sends 10 messages to its neighbour in a ring, and every
/// message arrives, in order, while all 500 are connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_clients_chatting() {
    const N: usize = 500;
    const MSGS: usize = 10;
    let server = Server::default().await;
    let addr = server.addr;
    let mut tasks = Vec::new();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(N));
    for i in 0..N {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            c.send(&format!("HELLO-FROM user{i}")).await;
            c.expect(&format!("HELLO user{i}")).await;
            // Nobody sends before everyone is in, so no SEND meets a missing recipient.
            barrier.wait().await;
            let to = (i + 1) % N;
            let mut batch = String::new();
            for m in 0..MSGS {
                batch.push_str(&format!("SEND user{to} message {m} from {i}\n"));
            }
            c.send_raw(batch.as_bytes()).await;
            let from = (i + N - 1) % N;
            let (mut oks, mut next) = (0, 0);
            while oks < MSGS || next < MSGS {
                let line = String::from_utf8(c.next_line().await.expect("line")).expect("utf8");
                if line == "SEND-OK" {
                    oks += 1;
                } else {
                    assert_eq!(
                        line,
                        format!("DELIVERY user{from} message {next} from {from}")
                    );
                    next += 1;
                }
            }
            c
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.expect("client task"));
    }
    assert_eq!(clients[0].list().await.len(), N);
    server.shutdown().await;
}

/// A client that logs in and never reads: everyone else keeps chatting, and once its queue
/// is full it is dropped and its name freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_that_never_reads_is_dropped_without_stalling_others() {
    let config = Config {
        outbox_limit_bytes: 64 * 1024,
        ..Config::default()
    };
    let server = Server::start(config).await;

    // A small receive buffer so the kernel does not absorb megabytes on its behalf.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(server.addr).await.expect("connect");
    let (r, w) = stream.into_split();
    let mut stuck = Client {
        reader: tokio::io::BufReader::new(r),
        writer: w,
    };
    stuck.send("HELLO-FROM stuck").await;
    // From here on `stuck` never reads again.

    let mut flooder = server.login("flooder").await;
    let mut a = server.login("a").await;
    let mut b = server.login("b").await;
    let body = "x".repeat(1000);
    let mut dropped = false;
    for round in 0..200 {
        // 250 KB to the stuck reader per round...
        let mut batch = String::new();
        for _ in 0..250 {
            batch.push_str(&format!("SEND stuck {body}\n"));
        }
        flooder.send_raw(batch.as_bytes()).await;
        for _ in 0..250 {
            let line = flooder.next_line().await.expect("reply");
            match line.as_slice() {
                b"SEND-OK" => {}
                b"BAD-DEST-USER" => dropped = true,
                other => panic!("unexpected {:?}", String::from_utf8_lossy(other)),
            }
        }
        // ...while a and b keep chatting, unaffected.
        a.send(&format!("SEND b round {round}")).await;
        a.expect("SEND-OK").await;
        b.expect(&format!("DELIVERY a round {round}")).await;
        if dropped {
            break;
        }
    }
    assert!(
        dropped,
        "50 MB queued for a reader that never reads, and it was never dropped"
    );
    wait_presence(&mut a, "stuck", false).await;
    let _again = server.login("stuck").await;
    // And its connection ends: the server closes it instead of holding a slot (and a task)
    // for a peer that will never read. What was in flight drains, then EOF.
    let mut sink = vec![0u8; 64 * 1024];
    let closed = tokio::time::timeout(tcpchat_testkit::PATIENCE, async {
        loop {
            match stuck.reader.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the dropped reader's connection was never closed"
    );
}
