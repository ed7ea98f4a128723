//! The `keepalive` and `presence` extensions over real sockets (`docs/protocol.md`,
//! "Extensions"), beside classic clients that must see exactly what they saw before.

mod common;

use std::time::Duration;

use common::{Client, Server};
use tcpchat_server::Config;

/// Negotiates `exts` and logs in as `name`, pipelined as the spec allows; checks the answers
/// up to `HELLO`.
async fn extended(server: &Server, exts: &str, answered: &str, name: &str) -> Client {
    let mut c = server.connect().await;
    c.send_raw(format!("EXT {exts}\nHELLO-FROM {name}\n").as_bytes())
        .await;
    c.expect(&format!("EXT-OK {answered}")).await;
    c.expect(&format!("HELLO {name}")).await;
    c
}

/// The next line, which must be the answer to a `LIST` sent now: proves nothing else was
/// queued for a classic client before it.
async fn nothing_queued_but_list(c: &mut Client, want: &str) {
    c.send("LIST").await;
    c.expect(want).await;
}

#[tokio::test]
async fn a_classic_and_an_extended_client_chat_together() {
    let server = Server::default().await;
    let mut classic = server.login("carol").await;
    let mut ext = extended(
        &server,
        "history,presence,keepalive",
        "presence,keepalive",
        "eve",
    )
    .await;
    ext.expect("ONLINE carol,eve").await;
    ext.expect("ONLINE-DONE").await;

    classic.send("SEND eve hi  there").await;
    classic.expect("SEND-OK").await;
    ext.expect("DELIVERY carol hi  there").await;
    ext.send("PING t1").await;
    ext.expect("PONG t1").await;
    ext.send("SEND carol back").await;
    ext.expect("SEND-OK").await;
    classic.expect("DELIVERY eve back").await;

    // The classic client is told of nobody: no ONLINE for eve, no OFFLINE when she leaves,
    // and its extension lines are still unknown commands.
    nothing_queued_but_list(&mut classic, "LIST-OK carol,eve").await;
    classic.send("PING x").await;
    classic.expect("BAD-RQST-HDR").await;
    ext.send("LIST").await;
    ext.expect("LIST-OK carol,eve").await;
    drop(ext);
    classic.wait_list(&["carol"]).await;
    nothing_queued_but_list(&mut classic, "LIST-OK carol").await;
    server.shutdown().await;
}

#[tokio::test]
async fn ext_is_answered_with_a_subset_once_and_only_before_login() {
    let server = Server::default().await;
    let mut c = server.connect().await;
    c.send("EXT history,keepalive,accounts").await;
    // `accounts` is not served by this build yet: left out, never an error.
    c.expect("EXT-OK keepalive").await;
    c.send("EXT presence").await;
    c.expect("BAD-RQST-HDR").await;
    c.send("PING").await;
    c.expect("PONG").await;
    c.send("ONLINE x").await;
    c.expect("BAD-RQST-HDR").await;
    c.send("HELLO-FROM kim").await;
    c.expect("HELLO kim").await;
    // No presence negotiated: no list.
    c.send("PING after").await;
    c.expect("PONG after").await;

    let mut late = server.login("lou").await;
    late.send("EXT keepalive").await;
    late.expect("BAD-RQST-HDR").await;
    server.shutdown().await;
}

/// A newcomer who logs in, sends at once and leaves is `ONLINE` before its message and
/// `OFFLINE` after it, for every watcher, every time. See: #13
#[tokio::test]
async fn presence_is_ordered_with_deliveries() {
    let server = Server::default().await;
    let mut w1 = extended(&server, "presence", "presence", "w1").await;
    w1.expect("ONLINE w1").await;
    w1.expect("ONLINE-DONE").await;
    let mut w2 = extended(&server, "presence", "presence", "w2").await;
    w2.expect("ONLINE w1,w2").await;
    w2.expect("ONLINE-DONE").await;
    w1.expect("ONLINE w2").await;

    for i in 0..20 {
        let name = format!("n{i}");
        let mut n = server.connect().await;
        // Pipelined, then closed: the server handles them in order, and the departure
        // follows the messages.
        n.send_raw(format!("HELLO-FROM {name}\nSEND w1 m{i}\nSEND w2 m{i}\n").as_bytes())
            .await;
        n.expect(&format!("HELLO {name}")).await;
        n.expect("SEND-OK").await;
        n.expect("SEND-OK").await;
        drop(n);
        for w in [&mut w1, &mut w2] {
            w.expect(&format!("ONLINE {name}")).await;
            w.expect(&format!("DELIVERY {name} m{i}")).await;
            w.expect(&format!("OFFLINE {name}")).await;
        }
    }
    drop(w2);
    w1.expect("OFFLINE w2").await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_first_list_comes_in_lines_of_at_most_100_names() {
    let server = Server::default().await;
    let mut others = Vec::new();
    for i in 0..150 {
        others.push(server.login(&format!("u{i:03}")).await);
    }
    let mut w = extended(&server, "presence", "presence", "watcher").await;
    let mut names = Vec::new();
    loop {
        let line = w.next_text().await.expect("presence lines");
        if line == "ONLINE-DONE" {
            break;
        }
        let list = line
            .strip_prefix("ONLINE ")
            .unwrap_or_else(|| panic!("expected ONLINE, got {line:?}"));
        let count = list.split(',').count();
        assert!((1..=100).contains(&count), "{count} names in one line");
        names.extend(list.split(',').map(str::to_owned));
    }
    let mut want: Vec<String> = (0..150).map(|i| format!("u{i:03}")).collect();
    want.push("watcher".to_owned());
    want.sort();
    assert_eq!(
        names, want,
        "everyone, the watcher included, each once, sorted"
    );
    server.shutdown().await;
}

/// A short interval, so the tests are quick, and a timeout long enough that a client on a
/// loaded machine answers in time.
fn short_pings() -> Config {
    Config {
        ping_interval: Duration::from_millis(400),
        ping_timeout: Duration::from_secs(2),
        ..Config::default()
    }
}

/// The token of a server `PING`.
async fn expect_ping(c: &mut Client) -> String {
    let line = c.next_text().await.expect("a PING, got end of stream");
    line.strip_prefix("PING ")
        .unwrap_or_else(|| panic!("expected PING <token>, got {line:?}"))
        .to_owned()
}

#[tokio::test]
async fn a_silent_keepalive_client_is_pinged_then_closed() {
    let server = Server::start(short_pings()).await;
    let mut silent = extended(&server, "keepalive", "keepalive", "mute").await;
    let token = expect_ping(&mut silent).await;
    assert!(!token.is_empty());
    silent.expect_closed().await;
    let mut other = server.login("other").await;
    other.wait_list(&["other"]).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_keepalive_client_that_answers_stays_and_a_classic_one_is_never_pinged() {
    let server = Server::start(short_pings()).await;
    // Logged in first, so its deadlines, were it pinged, would pass before the others'.
    let mut classic = server.login("classic").await;
    let mut answering = extended(&server, "keepalive", "keepalive", "talker").await;
    let mut chatty = extended(&server, "keepalive", "keepalive", "chatty").await;
    let mut silent = extended(&server, "keepalive", "keepalive", "mute").await;
    // Each on its own task: they are pinged at the same time.
    let answering = tokio::spawn(async move {
        // Three pings answered: it outlives several ping timeouts.
        for _ in 0..3 {
            let token = expect_ping(&mut answering).await;
            answering.send(&format!("PONG {token}")).await;
        }
        answering
    });
    let chatty = tokio::spawn(async move {
        // Any line answers a ping, not only PONG.
        for _ in 0..3 {
            expect_ping(&mut chatty).await;
            chatty.send("LIST").await;
            let list = chatty.next_text().await.expect("LIST-OK");
            assert!(list.starts_with("LIST-OK "), "{list}");
        }
        chatty
    });
    let mut answering = answering.await.expect("answering client");
    let _chatty = chatty.await.expect("chatty client");
    // The silent one was pinged and closed meanwhile; the others are still here.
    expect_ping(&mut silent).await;
    silent.expect_closed().await;
    answering.send("SEND classic still here").await;
    // Pings kept coming while the silent one was waited for: answer them on the way.
    loop {
        let line = answering.next_text().await.expect("SEND-OK");
        match line.strip_prefix("PING ") {
            Some(token) => answering.send(&format!("PONG {token}")).await,
            None => {
                assert_eq!(line, "SEND-OK");
                break;
            }
        }
    }
    // Its first line, seconds after it would have been pinged: nothing came before it.
    classic.expect("DELIVERY talker still here").await;
    classic.send("LIST").await;
    let list = classic.next_text().await.expect("LIST-OK");
    assert!(list.starts_with("LIST-OK "), "{list}");
    server.shutdown().await;
}

/// A presence connection that stops reading is dropped like any slow reader (its queue is
/// bounded), and nobody else waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presence_reader_that_never_reads_is_dropped() {
    let server = Server::start(Config {
        // The smallest queue the settings allow: a line's worth.
        max_line_bytes: 64,
        outbox_limit_bytes: 64,
        // Thousands of logins from one address, as fast as they go.
        limits: tcpchat_server::Limits::off(),
        ..Config::default()
    })
    .await;
    // A small receive buffer so the kernel does not absorb megabytes on its behalf.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(server.addr).await.expect("connect");
    let mut stuck = Client::from_stream(stream);
    stuck.send("EXT presence").await;
    stuck.send("HELLO-FROM stuck").await;
    // From here on `stuck` never reads again.

    let mut other = server.login("other").await;
    let mut dropped = false;
    for round in 0..400 {
        // 50 logins and departures with long names: 4 KB of presence lines for `stuck`.
        for i in 0..50 {
            let name = format!("{:0>32}", round * 50 + i);
            let mut c = server.connect().await;
            c.send(&format!("HELLO-FROM {name}")).await;
            c.expect(&format!("HELLO {name}")).await;
        }
        // Others are served meanwhile; nothing but presence lines is queued for `stuck`.
        if !other.list().await.contains(&"stuck".to_owned()) {
            dropped = true;
            break;
        }
    }
    assert!(
        dropped,
        "1.6 MB of presence lines for a reader that never reads, and it was never dropped"
    );
    let _again = server.login("stuck").await;
    server.shutdown().await;
}
