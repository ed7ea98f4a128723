//! A capture of an extended connection (`EXT`, `PING`/`PONG`, presence lines) is decoded and
//! explained line by line, on the standard port and, found by its first line, on another.
//! See: #13

mod common;

use common::*;
use tcpchat_trace::{analyze, Options};

/// An extended session: negotiation, a ping each way, the first list, a change, a message.
fn extended_session(client: &str, server: &str) -> Conv {
    let mut c = Conv::new(client, server);
    c.handshake();
    c.data(true, b"EXT keepalive,presence,rooms\n");
    c.data(false, b"EXT-OK keepalive,presence\n");
    c.data(true, b"HELLO-FROM alice\n");
    c.data(false, b"HELLO alice\n");
    c.data(false, b"ONLINE alice,bob\n");
    c.data(false, b"ONLINE-DONE\n");
    c.data(true, b"PING t-1\n");
    c.data(false, b"PONG t-1\n");
    c.data(false, b"ONLINE carol\n");
    c.data(false, b"DELIVERY carol hi\n");
    c.data(false, b"PING 60\n");
    c.data(true, b"PONG 60\n");
    c.data(false, b"OFFLINE carol\n");
    c.close_by(true);
    c
}

const EXPLAINED: [(&str, &str); 13] = [
    (
        "C> EXT keepalive,presence,rooms",
        "client asks for the extensions keepalive, presence, rooms (a classic server answers BAD-RQST-HDR)",
    ),
    (
        "S> EXT-OK keepalive,presence",
        "server: this connection uses the extensions keepalive, presence",
    ),
    ("C> HELLO-FROM alice", "client asks to log in as alice"),
    ("S> HELLO alice", "server: welcome, you are logged in as alice"),
    ("S> ONLINE alice,bob", "server: online: alice, bob"),
    (
        "S> ONLINE-DONE",
        "server: that is everyone online; changes follow",
    ),
    (
        "C> PING t-1",
        "client asks whether the server is there (token t-1)",
    ),
    ("S> PONG t-1", "server answers the client's PING (token t-1)"),
    ("S> ONLINE carol", "server: online: carol"),
    (
        "S> DELIVERY carol hi",
        "server delivers a message from carol: \"hi\"",
    ),
    (
        "S> PING 60",
        "server asks whether the client is there (token 60)",
    ),
    ("C> PONG 60", "client answers the server's PING (token 60)"),
    ("S> OFFLINE carol", "server: carol left"),
];

#[test]
fn an_extended_session_is_decoded_and_explained() {
    for server in ["10.0.0.2:5378", "10.0.0.2:7000"] {
        let conv = extended_session("10.0.0.1:40000", server);
        let (outputs, summary) = analyze(
            write(&conv.packets, Link::Ethernet, Format::PcapLeMicro),
            &Options::default(),
        )
        .expect("capture reads");
        assert_eq!(summary.chat_connections, 1, "{server}");
        let want_texts: Vec<&str> = EXPLAINED.iter().map(|(t, _)| *t).collect();
        assert_eq!(line_texts(&outputs), want_texts, "{server}");
        let got: Vec<(String, bool)> = lines(&outputs)
            .iter()
            .map(|l| (l.explanation.clone(), l.valid))
            .collect();
        let want: Vec<(String, bool)> = EXPLAINED
            .iter()
            .map(|(_, e)| ((*e).to_owned(), true))
            .collect();
        assert_eq!(got, want, "{server}");
        for kind in [
            "EXT",
            "EXT-OK",
            "PING",
            "PONG",
            "ONLINE",
            "ONLINE-DONE",
            "OFFLINE",
        ] {
            assert!(
                summary.messages.contains_key(kind),
                "{server}: {kind} not counted: {:?}",
                summary.messages
            );
        }
    }
}
