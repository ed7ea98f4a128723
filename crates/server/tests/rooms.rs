//! The `rooms` extension over real sockets (`docs/protocol.md`, "rooms"): order seen
//! identically by every member under concurrent senders, join/part/kick/topic lines, limits,
//! slow members dropped, and classic clients that see nothing of it.

mod common;

use common::{Client, Server};
use tcpchat_server::{Config, RoomLimits};

async fn member(server: &Server, name: &str) -> Client {
    let mut c = server.connect().await;
    c.send_raw(format!("EXT rooms\nHELLO-FROM {name}\n").as_bytes())
        .await;
    c.expect("EXT-OK rooms").await;
    c.expect(&format!("HELLO {name}")).await;
    c
}

#[tokio::test]
async fn join_say_topic_kick_and_part_as_the_spec_says() {
    let server = Server::default().await;
    let mut ann = member(&server, "ann").await;
    let mut bob = member(&server, "bob").await;
    ann.send("JOIN #r").await;
    ann.expect("JOINED #r ann").await;
    bob.send("SAY #r hi").await;
    bob.expect("NOT-MEMBER").await;
    bob.send("JOIN #r").await;
    bob.expect("JOINED #r bob").await;
    ann.expect("JOINED #r bob").await;

    bob.send("SAY #r  two  spaces ").await;
    bob.expect("SAID #r bob  two  spaces ").await;
    ann.expect("SAID #r bob  two  spaces ").await;

    bob.send("TOPIC #r mine").await;
    bob.expect("NOT-OWNER").await;
    ann.send("TOPIC #r Rust, mostly").await;
    ann.expect("TOPIC-IS #r ann Rust, mostly").await;
    bob.expect("TOPIC-IS #r ann Rust, mostly").await;

    ann.send("ROOMS").await;
    ann.expect("ROOMS-OK #r").await;
    bob.send("MEMBERS #r").await;
    bob.expect("MEMBERS-OK #r ann,bob").await;
    bob.send("MEMBERS #none").await;
    bob.expect("MEMBERS-OK #none").await;

    ann.send("KICK #r zed").await;
    ann.expect("BAD-DEST-USER").await;
    ann.send("KICK #r bob").await;
    ann.expect("KICKED #r bob ann").await;
    bob.expect("KICKED #r bob ann").await;
    bob.send("SAY #r back?").await;
    bob.expect("NOT-MEMBER").await;

    // A newcomer gets the topic right after its own JOINED.
    bob.send("JOIN #r").await;
    bob.expect("JOINED #r bob").await;
    bob.expect("TOPIC-IS #r ann Rust, mostly").await;
    ann.expect("JOINED #r bob").await;

    // The owner leaves: bob owns the room now.
    ann.send("PART #r").await;
    ann.expect("PARTED #r ann").await;
    bob.expect("PARTED #r ann").await;
    ann.send("PART #r").await;
    ann.expect("NOT-MEMBER").await;
    bob.send("TOPIC #r").await;
    bob.expect("TOPIC-IS #r bob").await;

    // The last member's connection ends: the room is gone.
    drop(bob);
    let mut seen_empty = false;
    for _ in 0..200 {
        ann.send("ROOMS").await;
        if ann.next_text().await.as_deref() == Some("ROOMS-OK") {
            seen_empty = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(seen_empty, "the room outlived its last member");
    ann.send("SAY #r x").await;
    ann.expect("NOT-MEMBER").await;
    server.shutdown().await;
}

#[tokio::test]
async fn bad_room_lines_are_body_errors_and_limits_are_kept() {
    let server = Server::start(Config {
        rooms: RoomLimits {
            rooms_per_user: 2,
            members_per_room: 2,
            topic_bytes: 8,
        },
        ..Config::default()
    })
    .await;
    let mut a = member(&server, "a").await;
    for bad in [
        "JOIN r",
        "JOIN #",
        "JOIN",
        "SAY #r",
        "ROOMS x",
        "KICK #r",
        "TOPIC #r 123456789",
    ] {
        a.send(bad).await;
        a.expect("BAD-RQST-BODY").await;
    }
    a.send("TOPIC #r 12345678").await;
    a.expect("NOT-MEMBER").await;
    a.send("JOIN #x").await;
    a.expect("JOINED #x a").await;
    a.send("JOIN #y").await;
    a.expect("JOINED #y a").await;
    a.send("JOIN #z").await;
    a.expect("ROOM-LIMIT").await;
    // Joining again changes nothing and is answered to the joiner alone.
    a.send("JOIN #x").await;
    a.expect("JOINED #x a").await;
    let mut b = member(&server, "b").await;
    b.send("JOIN #x").await;
    b.expect("JOINED #x b").await;
    let mut c = member(&server, "c").await;
    c.send("JOIN #x").await;
    c.expect("ROOM-FULL").await;
    a.expect("JOINED #x b").await;
    a.send("ROOMS").await;
    a.expect("ROOMS-OK #x,#y").await;
    server.shutdown().await;
}

/// Four senders on their own connections, pipelining into one room of eight members: every
/// member receives every message once, and all of them in one and the same order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_sees_one_order_under_concurrent_senders() {
    const MEMBERS: usize = 8;
    const SENDERS: usize = 4;
    const EACH: usize = 200;
    let server = Server::start(Config {
        limits: tcpchat_server::Limits::off(),
        ..Config::default()
    })
    .await;
    let mut clients = Vec::new();
    for i in 0..MEMBERS {
        let mut c = member(&server, &format!("m{i}")).await;
        c.send("JOIN #big").await;
        c.expect(&format!("JOINED #big m{i}")).await;
        clients.push(c);
    }
    // Everyone's join lines, so each client's next line is a message.
    for (i, c) in clients.iter_mut().enumerate() {
        for j in i + 1..MEMBERS {
            c.expect(&format!("JOINED #big m{j}")).await;
        }
    }
    // All batches go out before anyone reads, so the server interleaves them.
    for (s, sender) in clients.iter_mut().take(SENDERS).enumerate() {
        let batch: String = (0..EACH).map(|k| format!("SAY #big s{s}-{k}\n")).collect();
        sender.send_raw(batch.as_bytes()).await;
    }
    let mut orders = Vec::new();
    for c in &mut clients {
        let mut seen = Vec::new();
        for _ in 0..SENDERS * EACH {
            let line = c.next_text().await.expect("a room line");
            assert!(line.starts_with("SAID #big "), "{line}");
            seen.push(line);
        }
        orders.push(seen);
    }
    for (i, seen) in orders.iter().enumerate() {
        assert_eq!(seen, &orders[0], "member m{i} saw another order than m0");
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), SENDERS * EACH, "each message once");
    }
    // Each sender's own messages are in the order it sent them.
    for s in 0..SENDERS {
        let mine: Vec<_> = orders[0]
            .iter()
            .filter(|l| l.starts_with(&format!("SAID #big m{s} s{s}-")))
            .cloned()
            .collect();
        let want: Vec<_> = (0..EACH)
            .map(|k| format!("SAID #big m{s} s{s}-{k}"))
            .collect();
        assert_eq!(mine, want);
    }
    server.shutdown().await;
}

/// A member that never reads is dropped as any slow reader, and leaves the room (`PARTED`);
/// the others keep talking meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_never_reads_is_dropped_and_parted() {
    let server = Server::start(Config {
        max_line_bytes: 4096,
        outbox_limit_bytes: 4096,
        limits: tcpchat_server::Limits::off(),
        ..Config::default()
    })
    .await;
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(server.addr).await.expect("connect");
    let mut stuck = Client::from_stream(stream);
    stuck.send("EXT rooms\nHELLO-FROM stuck\nJOIN #r").await;
    let mut talker = member(&server, "talker").await;
    // Joined after stuck (its JOIN was sent first, but give the server a way to say so).
    talker.send("MEMBERS #r").await;
    let list = talker.next_text().await.expect("MEMBERS-OK");
    assert_eq!(list, "MEMBERS-OK #r stuck", "stuck joined first");
    talker.send("JOIN #r").await;
    talker.expect("JOINED #r talker").await;
    let body = "x".repeat(4000);
    let mut parted = false;
    for _ in 0..20_000 {
        talker.send(&format!("SAY #r {body}")).await;
        let line = talker.next_text().await.expect("a room line");
        if line == "PARTED #r stuck" {
            parted = true;
            break;
        }
        assert_eq!(line, format!("SAID #r talker {body}"));
    }
    assert!(
        parted,
        "80 MB of room lines for a member that never reads, and it stayed"
    );
    // One SAY of the loop's is still to be answered: the PARTED fell before its echo.
    talker.expect(&format!("SAID #r talker {body}")).await;
    talker.send("MEMBERS #r").await;
    talker.expect("MEMBERS-OK #r talker").await;
    server.shutdown().await;
}

/// A classic client in a server full of rooms: it sees exactly what it saw before, and the
/// room lines are unknown commands to it.
#[tokio::test]
async fn a_classic_client_sees_nothing_of_rooms() {
    let server = Server::start(Config {
        limits: tcpchat_server::Limits::off(),
        ..Config::default()
    })
    .await;
    let mut classic = server.login("carol").await;
    // Twenty members in ten rooms, five each, all talking, joining and leaving.
    let mut crowd = Vec::new();
    for i in 0..20 {
        let mut c = member(&server, &format!("u{i}")).await;
        let lines: String = (0..5)
            .map(|k| {
                let r = (i + k) % 10;
                format!("JOIN #r{r}\nSAY #r{r} hello from u{i}\n")
            })
            .chain(std::iter::once(format!("PART #r{}\n", i % 10)))
            .collect();
        c.send_raw(lines.as_bytes()).await;
        crowd.push(c);
    }
    for (i, c) in crowd.iter_mut().enumerate() {
        c.send("MEMBERS #r0").await;
        // Its own lines and the others' arrive first; the answer to MEMBERS comes last.
        loop {
            let line = c.next_text().await.expect("room lines, then MEMBERS-OK");
            if line.starts_with("MEMBERS-OK #r0") {
                break;
            }
            assert!(
                ["JOINED #", "SAID #", "PARTED #"]
                    .iter()
                    .any(|p| line.starts_with(p)),
                "u{i}: {line}"
            );
        }
    }
    // Not a line of it reached the classic client: its next line answers its LIST.
    classic.send("LIST").await;
    let list = classic.next_text().await.expect("LIST-OK");
    assert!(list.starts_with("LIST-OK carol,"), "{list}");
    let mut ann = member(&server, "ann").await;
    ann.send("JOIN #r").await;
    ann.expect("JOINED #r ann").await;
    ann.send("SAY #r hello room").await;
    ann.expect("SAID #r ann hello room").await;
    ann.send("SEND carol direct").await;
    ann.expect("SEND-OK").await;
    classic.expect("DELIVERY ann direct").await;
    for line in [
        "JOIN #r",
        "SAY #r hi",
        "ROOMS",
        "MEMBERS #r",
        "PART #r",
        "JOIN",
    ] {
        classic.send(line).await;
        classic.expect("BAD-RQST-HDR").await;
    }
    // A user name may start with #: SEND takes users, never rooms.
    let mut hash = server.login("#r").await;
    classic.send("SEND #r to the user").await;
    classic.expect("SEND-OK").await;
    hash.expect("DELIVERY carol to the user").await;
    drop(ann);
    classic.send("LIST").await;
    let list = classic.next_text().await.expect("LIST-OK");
    assert!(list.starts_with("LIST-OK "), "{list}");
    server.shutdown().await;
}
