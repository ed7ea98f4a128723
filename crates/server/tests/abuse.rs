//! The abuse limits from outside, over real sockets: a flooder is slowed and dropped while
//! others chat, an address at its limit gets `BUSY` while another still gets in, the pre-login
//! cap displaces the oldest silent connection so a prompt user gets in, exempt networks and
//! `Limits::off` skip everything. Small limits, so each case is quick; no timing asserts
//! (durations appear only as timeouts).

mod common;

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use common::{Client, Server};
use tcpchat_server::limits::{parse_networks, CommandRate, Rate};
use tcpchat_server::{Config, Limits};
use tokio::net::TcpSocket;

/// The default configuration with every abuse limit off but those `change` sets.
fn only(change: impl FnOnce(&mut Limits)) -> Config {
    let mut limits = Limits::off();
    change(&mut limits);
    Config {
        limits,
        ..Config::default()
    }
}

fn rate(burst: u32, per_second: u32) -> Rate {
    Rate::new(burst, per_second).expect("non-zero")
}

/// A client whose socket is bound to `from` (e.g. 127.0.0.2: another address on loopback).
async fn connect_from(from: &str, to: SocketAddr) -> Client {
    let socket = TcpSocket::new_v4().expect("socket");
    let local: SocketAddr = format!("{from}:0").parse().expect("address");
    socket.bind(local).expect("bind a loopback address");
    let stream = socket.connect(to).await.expect("connect");
    Client::from_stream(stream)
}

/// Logs in as `name` and returns the first answer (`HELLO name`, or `BUSY` if refused).
async fn try_login(c: &mut Client, name: &str) -> Option<String> {
    c.send_raw(format!("HELLO-FROM {name}\n").as_bytes()).await;
    c.next_text().await
}

#[tokio::test]
async fn a_flooder_is_slowed_then_dropped_and_others_keep_chatting() {
    let server = Server::start(only(|l| {
        l.command_rate = Some(CommandRate {
            rate: rate(5, 20),
            flood_timeout: Duration::from_secs(2),
        });
    }))
    .await;
    let mut sink = server.login("sink").await;
    let mut a = server.login("a").await;
    let mut b = server.login("b").await;
    let flooder = server.login("flooder").await;

    // Far more than the burst plus the rate over the flood timeout (5 + 20 × 2).
    const FLOOD: usize = 2_000;
    let batch: String = (0..FLOOD).map(|i| format!("SEND sink f{i}\n")).collect();
    // Written from its own task: the server stops reading it, so the write may never finish.
    let (flood_reader, mut flood_writer) = (flooder.reader, flooder.writer);
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        flood_writer.write_all(batch.as_bytes()).await.ok();
        flood_writer
    });

    // Meanwhile the others chat, one message at a time, and get exactly what they would.
    for i in 0..20 {
        a.send(&format!("SEND b hello {i}")).await;
        a.expect("SEND-OK").await;
        b.expect(&format!("DELIVERY a hello {i}")).await;
        b.send(&format!("SEND a back {i}")).await;
        b.expect("SEND-OK").await;
        a.expect(&format!("DELIVERY b back {i}")).await;
    }

    // The flooder sees only the classic replies, then the close.
    let mut flooder = Client {
        reader: flood_reader,
        writer: tokio::time::timeout(common::PATIENCE, writer)
            .await
            .expect("the flooder's write ends once it is dropped")
            .expect("writer task"),
    };
    let mut oks = 0;
    while let Some(line) = flooder.next_text().await {
        assert_eq!(
            line, "SEND-OK",
            "the flooder sees nothing but classic replies"
        );
        oks += 1;
    }

    // The sink got the flooder's handled lines, in order, and nothing else; then the roster,
    // without the flooder.
    sink.send("LIST").await;
    let mut delivered = 0;
    let roster = loop {
        let line = sink.next_text().await.expect("a line before LIST-OK");
        if line.starts_with("LIST-OK") {
            break line;
        }
        assert_eq!(line, format!("DELIVERY flooder f{delivered}"));
        delivered += 1;
    };
    assert!(!roster.contains("flooder"), "the flooder is gone: {roster}");
    assert!(
        delivered > 5,
        "lines past the burst waited and were handled: {delivered}"
    );
    assert!(
        delivered < FLOOD,
        "the flooder was dropped before its flood was relayed: {delivered}"
    );
    // Its close may reset the connection under replies not yet read; never more than handled.
    assert!(
        oks <= delivered,
        "{oks} SEND-OKs for {delivered} deliveries"
    );
    a.send("SEND sink still here").await;
    a.expect("SEND-OK").await;
    sink.expect("DELIVERY a still here").await;
}

#[tokio::test]
async fn delayed_lines_keep_their_order_and_replies() {
    // A burst of 3, then 50 a second, and a flood timeout long enough for every line.
    let server = Server::start(only(|l| {
        l.command_rate = Some(CommandRate {
            rate: rate(3, 50),
            flood_timeout: Duration::from_secs(20),
        });
    }))
    .await;
    let mut b = server.login("b").await;
    let mut a = server.connect().await;
    let mut batch = String::from("HELLO-FROM a\n");
    for i in 0..30 {
        batch.push_str(&format!("SEND b {i}\nSEND ghost {i}\nBOGUS\n"));
    }
    a.send_raw(batch.as_bytes()).await;
    a.expect("HELLO a").await;
    for i in 0..30 {
        a.expect("SEND-OK").await;
        a.expect("BAD-DEST-USER").await;
        a.expect("BAD-RQST-HDR").await;
        b.expect(&format!("DELIVERY a {i}")).await;
    }
}

#[tokio::test]
async fn an_address_at_its_limit_gets_busy_while_another_logs_in() {
    let server = Server::start(only(|l| l.max_per_address = NonZeroU32::new(2))).await;
    let mut first = server.login("first").await;
    let _second = server.login("second").await;
    let mut third = server.connect().await;
    assert_eq!(
        try_login(&mut third, "third").await.as_deref(),
        Some("BUSY")
    );
    third.expect_closed().await;

    let mut elsewhere = connect_from("127.0.0.2", server.addr).await;
    assert_eq!(
        try_login(&mut elsewhere, "elsewhere").await.as_deref(),
        Some("HELLO elsewhere"),
        "another address is not affected"
    );

    // A slot given back is a slot free again.
    first.send("LIST").await;
    first.next_text().await.expect("LIST-OK");
    drop(first);
    let admitted = tokio::time::timeout(common::PATIENCE, async {
        loop {
            let mut again = server.connect().await;
            if try_login(&mut again, "first").await.as_deref() == Some("HELLO first") {
                return again;
            }
        }
    })
    .await;
    assert!(admitted.is_ok(), "the closed connection's slot came back");
}

#[tokio::test]
async fn a_connect_storm_from_one_address_gets_busy() {
    // A burst of 3 new connections, then one a second: ten connects in a row cannot all fit.
    let server = Server::start(only(|l| l.connect_rate = Some(rate(3, 1)))).await;
    let mut answers = Vec::new();
    let mut open = Vec::new();
    for i in 0..10 {
        let mut c = server.connect().await;
        answers.push(try_login(&mut c, &format!("u{i}")).await);
        open.push(c);
    }
    assert_eq!(answers[0].as_deref(), Some("HELLO u0"));
    assert!(
        answers.iter().any(|a| a.as_deref() == Some("BUSY")),
        "some of the storm was refused: {answers:?}"
    );
    let mut elsewhere = connect_from("127.0.0.2", server.addr).await;
    assert_eq!(
        try_login(&mut elsewhere, "elsewhere").await.as_deref(),
        Some("HELLO elsewhere")
    );
}

#[tokio::test]
async fn the_prelogin_cap_displaces_the_oldest_silent_connection() {
    let server = Server::start(only(|l| l.max_prelogin = NonZeroUsize::new(3))).await;
    // Three silent connections fill the cap. `LIST` before login is answered BAD-RQST-HDR:
    // the answer proves the server accepted each one before the next connects.
    let mut silent = Vec::new();
    for _ in 0..3 {
        let mut c = server.connect().await;
        c.send("LIST").await;
        c.expect("BAD-RQST-HDR").await;
        silent.push(c);
    }
    // A user connects and logs in promptly: it gets in, and the oldest silent one goes.
    let mut user = server.connect().await;
    assert_eq!(
        try_login(&mut user, "user").await.as_deref(),
        Some("HELLO user")
    );
    silent[0].expect("BUSY").await;
    silent[0].expect_closed().await;
    // A logged-in user no longer counts: three more silent connections displace the other
    // two silent ones and the first of themselves, never the user.
    for _ in 0..3 {
        let mut c = server.connect().await;
        c.send("LIST").await;
        c.expect("BAD-RQST-HDR").await;
        silent.push(c);
    }
    silent[1].expect("BUSY").await;
    silent[2].expect("BUSY").await;
    user.send("LIST").await;
    user.expect("LIST-OK user").await;
}

/// A connection whose name was refused (`IN-USE`) has not logged in: it still counts against
/// the pre-login cap and is still the one displaced, so asking for a taken name is no way
/// around the cap. See: #12 (review of the pre-login cap).
#[tokio::test]
async fn a_refused_name_still_counts_against_the_prelogin_cap() {
    let server = Server::start(only(|l| l.max_prelogin = NonZeroUsize::new(2))).await;
    let mut owner = server.login("taken").await;
    let mut junk = Vec::new();
    for _ in 0..2 {
        let mut c = server.connect().await;
        assert_eq!(try_login(&mut c, "taken").await.as_deref(), Some("IN-USE"));
        junk.push(c);
    }
    // The cap (2) is full of connections that asked for a taken name: the next one in
    // displaces the oldest of them.
    let mut user = server.connect().await;
    assert_eq!(
        try_login(&mut user, "user").await.as_deref(),
        Some("HELLO user")
    );
    junk[0].expect("BUSY").await;
    junk[0].expect_closed().await;
    // The one still waiting may try another name and get in.
    assert_eq!(
        try_login(&mut junk[1], "second").await.as_deref(),
        Some("HELLO second")
    );
    owner.send("LIST").await;
    owner.expect("LIST-OK second,taken,user").await;
}

#[tokio::test]
async fn exempt_networks_skip_every_limit() {
    let server = Server::start(only(|l| {
        l.max_per_address = NonZeroU32::new(1);
        l.command_rate = Some(CommandRate {
            rate: rate(1, 1),
            flood_timeout: Duration::from_secs(1),
        });
        l.exempt = parse_networks("127.0.0.1/32").expect("network");
    }))
    .await;
    let mut sink = server.login("sink").await;
    let mut many = Vec::new();
    for i in 0..5 {
        many.push(server.login(&format!("u{i}")).await);
    }
    // Far past a burst of one and a second's flood timeout: all handled, none dropped.
    let batch: String = (0..300).map(|i| format!("SEND sink {i}\n")).collect();
    many[0].send_raw(batch.as_bytes()).await;
    for i in 0..300 {
        many[0].expect("SEND-OK").await;
        sink.expect(&format!("DELIVERY u0 {i}")).await;
    }
    // 127.0.0.2 is not exempt: its second connection is refused.
    let mut other = connect_from("127.0.0.2", server.addr).await;
    assert_eq!(
        try_login(&mut other, "o1").await.as_deref(),
        Some("HELLO o1")
    );
    let mut refused = connect_from("127.0.0.2", server.addr).await;
    assert_eq!(try_login(&mut refused, "o2").await.as_deref(), Some("BUSY"));
}

#[tokio::test]
async fn every_limit_off_lets_one_address_and_one_flooder_do_anything() {
    let server = Server::start(Config {
        max_clients: 50,
        limits: Limits::off(),
        ..Config::default()
    })
    .await;
    let mut sink = server.login("sink").await;
    let mut many = Vec::new();
    for i in 0..40 {
        many.push(server.login(&format!("u{i}")).await);
    }
    let batch: String = (0..2_000).map(|i| format!("SEND sink {i}\n")).collect();
    many[0].send_raw(batch.as_bytes()).await;
    for i in 0..2_000 {
        many[0].expect("SEND-OK").await;
        sink.expect(&format!("DELIVERY u0 {i}")).await;
    }
}

#[tokio::test]
async fn the_defaults_let_a_class_of_200_in_from_one_address() {
    let server = Server::default().await;
    let mut class = Vec::new();
    for i in 0..200 {
        class.push(server.login(&format!("student{i}")).await);
    }
    for (i, c) in class.iter_mut().enumerate() {
        let to = (i + 1) % 200;
        c.send(&format!("SEND student{to} hi")).await;
    }
    for (i, c) in class.iter_mut().enumerate() {
        let from = (i + 199) % 200;
        c.expect_unordered(&["SEND-OK".to_owned(), format!("DELIVERY student{from} hi")])
            .await;
    }
}
