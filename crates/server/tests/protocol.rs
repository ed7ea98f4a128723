//! Every row and decided edge case of the classic protocol (PRODUCT.md, docs/protocol.md),
//! over real TCP against the real server.

mod common;

use common::{wait_presence, Client, Server};
use tcpchat_server::Config;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn login_list_send_delivery() {
    let server = Server::default().await;
    let mut alice = server.login("alice").await;
    let mut bob = server.login("bob").await;
    assert_eq!(alice.list().await, ["alice", "bob"]);
    alice.send("SEND bob hello there").await;
    alice.expect("SEND-OK").await;
    bob.expect("DELIVERY alice hello there").await;
    bob.send("SEND alice hi").await;
    bob.expect("SEND-OK").await;
    alice.expect("DELIVERY bob hi").await;
    server.shutdown().await;
}

#[tokio::test]
async fn taken_name_then_retry_on_same_connection() {
    let server = Server::default().await;
    let _alice = server.login("alice").await;
    let mut other = server.connect().await;
    other.send("HELLO-FROM alice").await;
    other.expect("IN-USE").await;
    other.send("HELLO-FROM alice2").await;
    other.expect("HELLO alice2").await;
}

#[tokio::test]
async fn names_are_case_sensitive() {
    let server = Server::default().await;
    let _a = server.login("alice").await;
    let mut b = server.login("Alice").await;
    assert_eq!(b.list().await, ["Alice", "alice"]);
}

#[tokio::test]
async fn invalid_names_get_body_error_and_may_retry() {
    let server = Server::default().await;
    let mut c = server.connect().await;
    let long = "n".repeat(tcpchat_proto::MAX_NAME_BYTES + 1);
    for bad in [
        "HELLO-FROM",
        "HELLO-FROM ",
        "HELLO-FROM a b",
        "HELLO-FROM a,b",
        "HELLO-FROM a\tb",
    ] {
        c.send(bad).await;
        c.expect("BAD-RQST-BODY").await;
    }
    c.send(&format!("HELLO-FROM {long}")).await;
    c.expect("BAD-RQST-BODY").await;
    c.send_raw(b"HELLO-FROM a\x01b\n").await;
    c.expect("BAD-RQST-BODY").await;
    c.send_raw(b"HELLO-FROM \xff\xfe\n").await;
    c.expect("BAD-RQST-BODY").await;
    c.send("HELLO-FROM fine").await;
    c.expect("HELLO fine").await;
}

#[tokio::test]
async fn anything_but_hello_before_login_is_header_error() {
    let server = Server::default().await;
    let mut c = server.connect().await;
    for line in ["LIST", "SEND bob hi", "", "hello-from x", "HELLO x", "WHO"] {
        c.send(line).await;
        c.expect("BAD-RQST-HDR").await;
    }
    c.send("HELLO-FROM late").await;
    c.expect("HELLO late").await;
}

#[tokio::test]
async fn after_login_header_errors() {
    let server = Server::default().await;
    let mut c = server.login("me").await;
    for line in [
        "",
        "HELLO-FROM me",
        "HELLO-FROM other",
        "NAMES",
        "list",
        "send me x",
        "SENDX",
    ] {
        c.send(line).await;
        c.expect("BAD-RQST-HDR").await;
    }
    assert_eq!(
        c.list().await,
        ["me"],
        "a second HELLO-FROM changed nothing"
    );
}

#[tokio::test]
async fn bad_bodies_never_reach_anyone() {
    let server = Server::default().await;
    let mut a = server.login("a").await;
    let mut b = server.login("b").await;
    for line in ["SEND", "SEND ", "SEND b", "SEND b ", "LIST x"] {
        a.send(line).await;
        a.expect("BAD-RQST-BODY").await;
    }
    a.send_raw(b"SEND b caf\xc3 \xff\n").await;
    a.expect("BAD-RQST-BODY").await;
    // The first line b ever receives is the good one: nothing leaked from the rejects.
    a.send("SEND b sentinel").await;
    a.expect("SEND-OK").await;
    b.expect("DELIVERY a sentinel").await;
}

#[tokio::test]
async fn unknown_recipient() {
    let server = Server::default().await;
    let mut a = server.login("a").await;
    a.send("SEND nobody hi").await;
    a.expect("BAD-DEST-USER").await;
}

#[tokio::test]
async fn message_relayed_byte_for_byte_and_to_self() {
    let server = Server::default().await;
    let mut a = server.login("a").await;
    let mut b = server.login("b").await;
    let bodies = [
        "  leading, inner   and trailing spaces  ",
        "emoji 👋🏽 and CJK 你好 and RTL שלום",
        "tabs\tinside\tand punctuation: ,.;!?",
        "SEND b nested protocol text",
        "\u{0}nul is valid UTF-8",
    ];
    for body in bodies {
        a.send(&format!("SEND b {body}")).await;
        a.expect("SEND-OK").await;
        b.expect(&format!("DELIVERY a {body}")).await;
    }
    a.send("SEND a note to self").await;
    // Order between the delivery and SEND-OK is the server's choice; both must come.
    let mut got = vec![a.next_line().await, a.next_line().await];
    got.sort();
    assert_eq!(
        got,
        vec![
            Some(b"DELIVERY a note to self".to_vec()),
            Some(b"SEND-OK".to_vec())
        ]
    );
}

#[tokio::test]
async fn crlf_is_tolerated() {
    let server = Server::default().await;
    let mut a = server.connect().await;
    a.send_raw(b"HELLO-FROM crlf\r\n").await;
    a.expect("HELLO crlf").await;
    let mut b = server.login("b").await;
    a.send_raw(b"SEND b hi\r\n").await;
    a.expect("SEND-OK").await;
    b.expect("DELIVERY crlf hi").await;
    a.send_raw(b"LIST\r\n").await;
    a.expect("LIST-OK b,crlf").await;
}

#[tokio::test]
async fn pipelined_requests_answered_in_order() {
    // 602 lines in one write: past the default command rate's burst. They would be answered
    // the same, only over 20 s; tests/abuse.rs covers delayed lines.
    let server = Server::start(Config {
        limits: tcpchat_server::Limits::off(),
        ..Config::default()
    })
    .await;
    let mut b = server.login("b").await;
    let mut a = server.connect().await;
    let mut batch = String::from("LIST\nHELLO-FROM a\n");
    for i in 0..200 {
        batch.push_str(&format!("SEND b {i}\nSEND ghost {i}\nBOGUS\n"));
    }
    a.send_raw(batch.as_bytes()).await;
    a.expect("BAD-RQST-HDR").await;
    a.expect("HELLO a").await;
    for i in 0..200 {
        a.expect("SEND-OK").await;
        a.expect("BAD-DEST-USER").await;
        a.expect("BAD-RQST-HDR").await;
        b.expect(&format!("DELIVERY a {i}")).await;
    }
}

#[tokio::test]
async fn byte_by_byte_input() {
    let server = Server::default().await;
    let mut b = server.login("b").await;
    let mut a = server.connect().await;
    for byte in b"HELLO-FROM slow\r\nSEND b one byte at a time\n" {
        a.send_raw(&[*byte]).await;
        a.writer.flush().await.ok();
        tokio::task::yield_now().await;
    }
    a.expect("HELLO slow").await;
    a.expect("SEND-OK").await;
    b.expect("DELIVERY slow one byte at a time").await;
}

#[tokio::test]
async fn order_per_sender_and_recipient() {
    // 1,000 lines at once from each sender: past the default command rate's burst, which
    // would (rightly) make them wait and then drop the senders; ordering is the point here.
    let server = Server::start(Config {
        limits: tcpchat_server::Limits::off(),
        ..Config::default()
    })
    .await;
    let mut a = server.login("a").await;
    let mut c = server.login("c").await;
    let mut b = server.login("b").await;
    let mut batch_a = String::new();
    let mut batch_c = String::new();
    for i in 0..1000 {
        batch_a.push_str(&format!("SEND b a{i}\n"));
        batch_c.push_str(&format!("SEND b c{i}\n"));
    }
    a.send_raw(batch_a.as_bytes()).await;
    c.send_raw(batch_c.as_bytes()).await;
    let (mut next_a, mut next_c) = (0, 0);
    for _ in 0..2000 {
        let line = String::from_utf8(b.next_line().await.expect("delivery")).expect("utf8");
        if let Some(n) = line.strip_prefix("DELIVERY a a") {
            assert_eq!(n, next_a.to_string(), "a's messages out of order");
            next_a += 1;
        } else if let Some(n) = line.strip_prefix("DELIVERY c c") {
            assert_eq!(n, next_c.to_string(), "c's messages out of order");
            next_c += 1;
        } else {
            panic!("unexpected line {line:?}");
        }
    }
    for _ in 0..1000 {
        a.expect("SEND-OK").await;
        c.expect("SEND-OK").await;
    }
}

#[tokio::test]
async fn overlong_line_rejected_discarded_and_connection_survives() {
    let config = Config {
        max_line_bytes: 100,
        ..Config::default()
    };
    let server = Server::start(config).await;
    let mut a = server.login("a").await;
    let mut b = server.login("b").await;
    // 4 MiB in one line: far past the limit; the server must neither hold nor relay it.
    let mut huge = b"SEND b ".to_vec();
    huge.resize(4 << 20, b'x');
    huge.push(b'\n');
    a.send_raw(&huge).await;
    a.expect("BAD-RQST-BODY").await;
    let mut garbage = vec![b'z'; 1000];
    garbage.push(b'\n');
    a.send_raw(&garbage).await;
    a.expect("BAD-RQST-HDR").await;
    // A line exactly at the limit still works.
    let body = "y".repeat(100 - "SEND b ".len());
    a.send(&format!("SEND b {body}")).await;
    a.expect("SEND-OK").await;
    b.expect(&format!("DELIVERY a {body}")).await;
    // Before login, an overlong HELLO-FROM is a body error.
    let mut c = server.connect().await;
    c.send(&format!("HELLO-FROM {}", "n".repeat(200))).await;
    c.expect("BAD-RQST-BODY").await;
}

#[tokio::test]
async fn clean_disconnect_frees_name() {
    let server = Server::default().await;
    let mut watcher = server.login("watcher").await;
    let gone = server.login("gone").await;
    drop(gone);
    wait_presence(&mut watcher, "gone", false).await;
    watcher.send("SEND gone hi").await;
    watcher.expect("BAD-DEST-USER").await;
    let _again = server.login("gone").await;
}

#[tokio::test]
async fn abortive_disconnect_frees_name() {
    let server = Server::default().await;
    let mut watcher = server.login("watcher").await;
    let rst = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let (r, mut w) = rst.into_split();
    tokio::io::AsyncWriteExt::write_all(&mut w, b"HELLO-FROM rst\n")
        .await
        .expect("write");
    let mut probe = Client {
        reader: tokio::io::BufReader::new(r),
        writer: w,
    };
    probe.expect("HELLO rst").await;
    let stream = probe
        .reader
        .into_inner()
        .reunite(probe.writer)
        .expect("same stream");
    // SO_LINGER 0: close sends RST instead of FIN (and never blocks, which is why tokio
    // deprecates the general setter).
    #[allow(deprecated)]
    stream
        .set_linger(Some(std::time::Duration::ZERO))
        .expect("linger");
    drop(stream);
    wait_presence(&mut watcher, "rst", false).await;
    let _again = server.login("rst").await;
}

#[tokio::test]
async fn half_closed_client_still_gets_its_answers() {
    // `printf 'HELLO-FROM x\nLIST\n' | nc host port` closes its side after sending.
    let server = Server::default().await;
    let mut c = server.connect().await;
    c.send("HELLO-FROM pipe").await;
    c.send("LIST").await;
    c.writer.shutdown().await.expect("half-close");
    c.expect("HELLO pipe").await;
    c.expect("LIST-OK pipe").await;
    c.expect_closed().await;
    let mut w = server.login("w").await;
    wait_presence(&mut w, "pipe", false).await;
}

#[tokio::test]
async fn busy_at_limit_and_slot_freed() {
    let config = Config {
        max_clients: 3,
        ..Config::default()
    };
    let server = Server::start(config).await;
    let mut a = server.login("a").await;
    let b = server.login("b").await;
    let _c = server.connect().await; // not logged in, still holds a slot
    let mut full = Client::connect(server.addr).await;
    full.send("HELLO-FROM d").await;
    full.expect("BUSY").await;
    full.expect_closed().await;
    drop(b);
    wait_presence(&mut a, "b", false).await;
    // The slot comes back when the task ends, just after the name is freed: retry briefly.
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    loop {
        let mut d = Client::connect(server.addr).await;
        d.send("HELLO-FROM d").await;
        match d.next_line().await.as_deref() {
            Some(b"HELLO d") => break,
            Some(b"BUSY") if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            other => panic!("expected HELLO d, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn handshake_timeout_closes_silent_connection() {
    let config = Config {
        handshake_timeout: std::time::Duration::from_millis(200),
        ..Config::default()
    };
    let server = Server::start(config).await;
    let mut idle = server.connect().await;
    idle.expect_closed().await;
    let mut junk = server.connect().await;
    junk.send("LIST").await;
    junk.expect("BAD-RQST-HDR").await;
    junk.expect_closed().await;
    // Logging in in time is not affected.
    let _ok = server.login("quick").await;
}

#[tokio::test]
async fn idle_timeout_when_configured() {
    let config = Config {
        idle_timeout: Some(std::time::Duration::from_millis(200)),
        ..Config::default()
    };
    let server = Server::start(config).await;
    let mut a = server.login("sleepy").await;
    a.expect_closed().await;
}

#[tokio::test]
async fn shutdown_closes_connections_and_returns() {
    let server = Server::default().await;
    let mut a = server.login("a").await;
    let addr = server.addr;
    server.shutdown().await;
    a.expect_closed().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed after shutdown"
    );
}

#[tokio::test]
async fn list_is_sorted_by_bytes() {
    let server = Server::default().await;
    let _z = server.login("zed").await;
    let _a = server.login("amy").await;
    let mut b = server.login("Bob").await;
    b.send("LIST").await;
    b.expect("LIST-OK Bob,amy,zed").await;
}
