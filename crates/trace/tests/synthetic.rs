//! Captures built here, one behaviour each: formats and link types, reassembly, anomalies,
//! teardown variants, bad files.

mod common;

use common::*;
use tcpchat_trace::model::{EndState, EventKind, FoundBy, GapReason, LineStatus, Note, Role};
use tcpchat_trace::{analyze, Options, TraceError};

fn run(bytes: Vec<u8>) -> (Vec<tcpchat_trace::Output>, tcpchat_trace::CaptureSummary) {
    analyze(bytes, &Options::default()).expect("capture reads")
}

const SESSION_LINES: [&str; 7] = [
    "C> HELLO-FROM alice",
    "S> HELLO alice",
    "C> LIST",
    "S> LIST-OK alice,bob",
    "C> SEND bob hi there",
    "S> SEND-OK",
    "S> DELIVERY bob hello  alice",
];

#[test]
fn every_format_and_link_type_gives_the_same_story() {
    for (client, server) in [
        ("10.0.0.1:40000", "10.0.0.2:5378"),
        ("[fd00::1]:40000", "[fd00::2]:5378"),
    ] {
        let conv = chat_session(client, server);
        for link in ALL_LINKS {
            for format in ALL_FORMATS {
                let bytes = write(&conv.packets, link, format);
                let (outputs, summary) = run(bytes);
                let what = format!("{client} {link:?} {format:?}");
                assert_eq!(line_texts(&outputs), SESSION_LINES, "{what}");
                assert_eq!(summary.chat_connections, 1, "{what}");
                let end = ends(&outputs)[0];
                assert_eq!(end.client.to_string(), client, "{what}");
                assert_eq!(end.teardown.state, EndState::Closed, "{what}");
                assert_eq!(end.teardown.first_fin, Some(Role::Client), "{what}");
                // 100 µs between packets: SYN to ACK is two steps.
                assert_eq!(end.handshake.rtt_ns, Some(200_000), "{what}");
                assert_eq!(end.handshake.syn.map(|s| s.frame), Some(1), "{what}");
                assert_eq!(end.handshake.ack.map(|s| s.frame), Some(3), "{what}");
                assert!(end.anomalies.is_empty(), "{what}: {:?}", end.anomalies);
            }
        }
    }
}

#[test]
fn lines_are_explained_and_counted() {
    let conv = chat_session("10.0.0.1:40000", "10.0.0.2:5378");
    let (outputs, summary) = run(write(&conv.packets, Link::Ethernet, Format::PcapLeMicro));
    let explained: Vec<String> = lines(&outputs)
        .iter()
        .map(|l| l.explanation.clone())
        .collect();
    assert_eq!(explained[0], "client asks to log in as alice");
    assert_eq!(explained[1], "server: welcome, you are logged in as alice");
    assert_eq!(explained[3], "server: 2 online: alice, bob");
    assert_eq!(explained[4], "client sends bob the message \"hi there\"");
    assert_eq!(
        explained[6],
        "server delivers a message from bob: \"hello  alice\""
    );
    assert_eq!(summary.messages.get("SEND"), Some(&1));
    assert_eq!(summary.messages.get("DELIVERY"), Some(&1));
    assert_eq!(
        summary.bytes.client_to_server,
        (b"HELLO-FROM alice\nLIST\nSEND bob hi there\n").len() as u64
    );
    let end = ends(&outputs)[0];
    let server_fin = end.teardown.server_fin.as_ref().expect("server FIN");
    let client_fin = end.teardown.client_fin.as_ref().expect("client FIN");
    assert!(client_fin.acked.is_some() && server_fin.acked.is_some());
    // The server's FIN,ACK also acknowledges the client's FIN.
    assert_eq!(
        client_fin.acked.map(|s| s.frame),
        Some(server_fin.fin.frame)
    );
}

#[test]
fn a_line_split_over_segments_is_shown_once() {
    let mut c = Conv::new("10.0.0.1:40000", "10.0.0.2:5378");
    c.handshake();
    c.data(true, b"HELLO-FR");
    c.data(true, b"OM ali");
    c.data(true, b"ce\nLIST\n");
    c.close_by(true);
    let (outputs, _) = run(write(&c.packets, Link::Ethernet, Format::Pcapng));
    let ls = lines(&outputs);
    assert_eq!(ls.len(), 2);
    assert_eq!(ls[0].text, "HELLO-FROM alice");
    assert_eq!(ls[0].segments, 3);
    assert_eq!(ls[1].segments, 1);
}

#[test]
fn retransmission_and_out_of_order_are_flagged_and_data_kept_once() {
    let mut c = Conv::new("10.0.0.1:40000", "10.0.0.2:5378");
    c.handshake();
    let base = c.cseq;
    c.data(true, b"HELLO-FROM alice\n");
    // The same segment again.
    c.raw(true, base, c.sseq, PSH | ACK, b"HELLO-FROM alice\n");
    // "SEND bob x\n" arrives before "LIST\n".
    let list_seq = c.cseq;
    let send_seq = list_seq + 5;
    c.raw(true, send_seq, c.sseq, PSH | ACK, b"SEND bob x\n");
    c.raw(true, list_seq, c.sseq, PSH | ACK, b"LIST\n");
    c.cseq = send_seq + 11;
    c.close_by(true);
    let (outputs, _) = run(write(&c.packets, Link::Ethernet, Format::PcapLeNano));
    assert_eq!(
        line_texts(&outputs),
        ["C> HELLO-FROM alice", "C> LIST", "C> SEND bob x"]
    );
    let notes: Vec<Note> = segments(&outputs)
        .iter()
        .flat_map(|(_, s)| s.notes.clone())
        .collect();
    assert!(notes.contains(&Note::Retransmission), "{notes:?}");
    assert!(
        notes.contains(&Note::PreviousSegmentNotCaptured),
        "{notes:?}"
    );
    assert!(notes.contains(&Note::OutOfOrder), "{notes:?}");
    let end = ends(&outputs)[0];
    assert_eq!(end.bytes.client_to_server, 17 + 5 + 11);
    assert_eq!(end.missing_bytes.client_to_server, 0);
}

#[test]
fn data_the_capture_missed_is_a_gap_not_invented() {
    let mut c = Conv::new("10.0.0.1:40000", "10.0.0.2:5378");
    c.handshake();
    c.data(true, b"HELLO-FROM alice\n");
    // "LIST\nSEND bob" never captured; the server acknowledges it all the same.
    c.cseq += 13;
    c.data(true, b" hi\nLIST\n");
    c.close_by(true);
    let (outputs, _) = run(write(&c.packets, Link::Ethernet, Format::PcapLeMicro));
    let gaps: Vec<(u64, GapReason)> = events(&outputs)
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::Gap { bytes, reason } => Some((bytes, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(gaps, [(13, GapReason::AckedUnseen)]);
    let ls = lines(&outputs);
    assert_eq!(ls.len(), 3);
    assert_eq!(ls[1].status, LineStatus::AfterGap);
    assert_eq!(ls[1].text, " hi");
    assert!(!ls[1].valid);
    assert_eq!(ls[2].text, "LIST");
    assert!(ls[2].valid);
    let end = ends(&outputs)[0];
    assert_eq!(end.missing_bytes.client_to_server, 13);
}

#[test]
fn snap_length_cuts_are_reported_as_truncated() {
    let mut c = Conv::new("10.0.0.1:40000", "10.0.0.2:5378");
    c.handshake();
    c.data(true, b"HELLO-FROM alice\n");
    let before = c.packets.len();
    let long = b"SEND bob a rather long message that the snap length cuts\n";
    c.data(true, long);
    // Ethernet 14 + IPv4 20 + TCP 20 + 10 payload bytes.
    c.packets[before].snap = Some(64);
    c.data(true, b"LIST\n");
    c.close_by(true);
    let (outputs, _) = run(write(&c.packets, Link::Ethernet, Format::PcapLeMicro));
    let truncated: Vec<Note> = segments(&outputs)
        .iter()
        .flat_map(|(_, s)| s.notes.clone())
        .filter(|n| matches!(n, Note::Truncated { .. }))
        .collect();
    assert_eq!(
        truncated,
        [Note::Truncated {
            captured: 10,
            missing: long.len() as u64 - 10
        }]
    );
    let ls = lines(&outputs);
    assert_eq!(ls[1].text, "SEND bob a");
    assert_eq!(ls[1].status, LineStatus::CutByGap);
    assert_eq!(ls[2].text, "LIST");
    assert_eq!(ls[2].status, LineStatus::AfterGap);
}

#[test]
fn reset_zero_window_and_keepalive() {
    let mut c = Conv::new("10.0.0.1:40000", "10.0.0.2:5378");
    c.handshake();
    c.data(true, b"HELLO-FROM alice\n");
    let ip = tcp_ip(c.server, c.client, c.sseq, c.cseq, ACK, 0, b"");
    c.packets.push(Packet {
        time_ns: c.time_ns + 1,
        ip,
        snap: None,
    });
    c.raw(true, c.cseq - 1, c.sseq, ACK, b"\0");
    c.send(false, RST | ACK, b"");
    let (outputs, _) = run(write(&c.packets, Link::Sll2, Format::PcapLeMicro));
    let end = ends(&outputs)[0];
    assert_eq!(end.teardown.state, EndState::Reset);
    assert_eq!(end.teardown.reset_by, Some(Role::Server));
    assert_eq!(end.anomalies.get("zero_window"), Some(&1));
    assert_eq!(end.anomalies.get("keep_alive"), Some(&1));
    assert_eq!(end.anomalies.get("rst"), Some(&1));
    assert_eq!(line_texts(&outputs), ["C> HELLO-FROM alice"]);
}

#[test]
fn already_open_and_still_open_connections_are_said() {
    let mut c = Conv::new("10.0.0.1:40000", "10.0.0.2:5378");
    c.handshake();
    c.data(true, b"HELLO-FROM alice\n");
    c.data(false, b"HELLO alice\n");
    c.data(true, b"LIST\n");
    c.data(false, b"LIST-OK alice\n");
    // The capture starts after the handshake and login.
    let late: Vec<Packet> = c.packets.split_off(7);
    let (outputs, _) = run(write(&late, Link::Ethernet, Format::PcapLeMicro));
    let start = outputs
        .iter()
        .find_map(|o| match o {
            tcpchat_trace::Output::Start(s) => Some(s.clone()),
            _ => None,
        })
        .expect("a connection");
    assert!(!start.handshake_seen);
    assert_eq!(start.server.port(), 5378, "roles from the port");
    let end = ends(&outputs)[0];
    assert_eq!(end.teardown.state, EndState::OpenAtEnd);
    assert_eq!(line_texts(&outputs), ["C> LIST", "S> LIST-OK alice"]);
}

#[test]
fn unterminated_last_line_is_shown() {
    let mut c = Conv::new("10.0.0.1:40000", "10.0.0.2:5378");
    c.handshake();
    c.data(true, b"HELLO-FROM alice\nSEND bob no newline");
    c.close_by(true);
    let (outputs, _) = run(write(&c.packets, Link::Null, Format::PcapLeMicro));
    let ls = lines(&outputs);
    assert_eq!(ls[1].text, "SEND bob no newline");
    assert_eq!(ls[1].status, LineStatus::Unterminated);
    assert_eq!(ls[1].kind, "unterminated line");
}

#[test]
fn chat_on_another_port_is_found_by_its_first_line_and_others_ignored() {
    let mut chat = chat_session("10.0.0.1:40000", "10.0.0.2:7000");
    let mut web = Conv::new("10.0.0.1:40001", "10.0.0.2:80");
    web.handshake();
    web.data(true, b"GET / HTTP/1.1\r\n\r\n");
    web.close_by(true);
    chat.packets.extend(web.packets);
    chat.packets.sort_by_key(|p| p.time_ns);
    let (outputs, summary) = run(write(&chat.packets, Link::Ethernet, Format::PcapLeMicro));
    assert_eq!(summary.tcp_connections, 2);
    assert_eq!(summary.chat_connections, 1);
    let start = outputs
        .iter()
        .find_map(|o| match o {
            tcpchat_trace::Output::Start(s) => Some(s.clone()),
            _ => None,
        })
        .expect("the chat connection");
    assert_eq!(start.found_by, FoundBy::FirstLine);
    assert_eq!(line_texts(&outputs), SESSION_LINES);
}

#[test]
fn stream_option_picks_one_connection_by_wireshark_index() {
    let mut a = chat_session("10.0.0.1:40000", "10.0.0.2:5378");
    let mut b = Conv::new("10.0.0.3:40000", "10.0.0.2:5378");
    b.time_ns = a.time_ns + 1;
    b.handshake();
    b.data(true, b"HELLO-FROM bob\n");
    b.close_by(false);
    a.packets.extend(b.packets);
    let bytes = write(&a.packets, Link::Ethernet, Format::PcapLeMicro);
    let opts = Options {
        stream: Some(1),
        ..Options::default()
    };
    let (outputs, summary) = analyze(bytes.clone(), &opts).expect("reads");
    assert_eq!(summary.chat_streams, [1]);
    assert_eq!(line_texts(&outputs), ["C> HELLO-FROM bob"]);
    assert_eq!(ends(&outputs)[0].teardown.first_fin, Some(Role::Server));

    let missing = Options {
        stream: Some(7),
        ..Options::default()
    };
    let err = tcpchat_trace::trace(
        std::io::Cursor::new(bytes),
        &missing,
        &tcpchat_trace::View::default(),
        Vec::new(),
    )
    .expect_err("no stream 7");
    assert!(
        matches!(err, TraceError::NoSuchStream { stream: 7, .. }),
        "{err}"
    );
}

#[test]
fn port_reuse_starts_a_new_stream() {
    let mut c = chat_session("10.0.0.1:40000", "10.0.0.2:5378");
    c.cseq = 90_000;
    c.sseq = 190_000;
    c.handshake();
    c.data(true, b"HELLO-FROM again\n");
    c.close_by(true);
    let (outputs, summary) = run(write(&c.packets, Link::Ethernet, Format::PcapLeMicro));
    assert_eq!(summary.chat_streams, [0, 1]);
    assert_eq!(ends(&outputs).len(), 2);
}

#[test]
fn sequence_numbers_wrap() {
    let mut c = Conv::new("10.0.0.1:40000", "10.0.0.2:5378");
    c.cseq = u32::MAX - 5;
    c.handshake();
    c.data(true, b"HELLO-FROM alice\n");
    c.data(true, b"LIST\n");
    c.close_by(true);
    let (outputs, _) = run(write(&c.packets, Link::Ethernet, Format::PcapLeMicro));
    assert_eq!(line_texts(&outputs), ["C> HELLO-FROM alice", "C> LIST"]);
    assert!(ends(&outputs)[0].anomalies.is_empty());
}

#[test]
fn truncated_files_report_where_and_keep_what_came_before() {
    let conv = chat_session("10.0.0.1:40000", "10.0.0.2:5378");
    for format in ALL_FORMATS {
        let whole = write(&conv.packets, Link::Ethernet, format);
        for cut in 0..whole.len() {
            let part = whole[..cut].to_vec();
            let mut out = Vec::new();
            let result = tcpchat_trace::trace(
                std::io::Cursor::new(part),
                &Options::default(),
                &tcpchat_trace::View {
                    json: true,
                    ..Default::default()
                },
                &mut out,
            );
            let text = String::from_utf8(out).expect("utf-8");
            match result {
                Ok(_) => {}
                Err(TraceError::Capture(tcpchat_trace::CaptureError::Truncated { offset })) => {
                    assert!(
                        offset <= cut as u64,
                        "{format:?} cut {cut}: offset {offset}"
                    );
                    // A file cut inside its header has nothing to report; after it, the
                    // summary says why reading stopped.
                    if offset > 0 {
                        assert!(
                            text.contains("\"type\":\"summary\""),
                            "{format:?} cut {cut}"
                        );
                        assert!(text.contains("truncated"), "{format:?} cut {cut}: {text}");
                    }
                }
                Err(TraceError::Capture(tcpchat_trace::CaptureError::Empty)) => assert_eq!(cut, 0),
                // Fewer bytes than a magic number: nothing says it was meant to be a capture.
                Err(TraceError::Capture(tcpchat_trace::CaptureError::NotACapture { .. })) => {
                    assert!(cut < 4, "{format:?} cut {cut}")
                }
                Err(e) => panic!("{format:?} cut at {cut}: unexpected {e}"),
            }
        }
    }
}

#[test]
fn corrupt_files_never_panic() {
    let conv = chat_session("10.0.0.1:40000", "10.0.0.2:5378");
    for format in ALL_FORMATS {
        let whole = write(&conv.packets, Link::Ethernet, format);
        for i in 0..whole.len() {
            for value in [0x00, 0xff, 0x7f, 0x80] {
                let mut bad = whole.clone();
                bad[i] = value;
                let _ = tcpchat_trace::trace(
                    std::io::Cursor::new(bad),
                    &Options::default(),
                    &tcpchat_trace::View {
                        hex: true,
                        ..Default::default()
                    },
                    std::io::sink(),
                );
            }
        }
    }
}

#[test]
fn unsupported_link_type_is_named() {
    let conv = chat_session("10.0.0.1:40000", "10.0.0.2:5378");
    let mut bytes = write(&conv.packets, Link::Ethernet, Format::PcapLeMicro);
    bytes[20..24].copy_from_slice(&105u32.to_le_bytes());
    let err = analyze(bytes.clone(), &Options::default()).expect_err("802.11 is not read");
    assert!(
        err.to_string().contains("unsupported link type 105"),
        "{err}"
    );
    // Said at once, even when the file holds no packet.
    let err = analyze(bytes[..24].to_vec(), &Options::default()).expect_err("802.11");
    assert!(
        err.to_string().contains("unsupported link type 105"),
        "{err}"
    );
    // pcapng says it per interface, at the first packet on it.
    let mut ng = write(&conv.packets, Link::Ethernet, Format::Pcapng);
    ng[36..38].copy_from_slice(&105u16.to_le_bytes());
    let err = analyze(ng, &Options::default()).expect_err("802.11 in pcapng");
    assert!(
        err.to_string()
            .contains("frame 1: unsupported link type 105"),
        "{err}"
    );
    let err = analyze(
        b"hello world, I am not a capture".to_vec(),
        &Options::default(),
    )
    .expect_err("not a capture");
    assert!(
        err.to_string().contains("not a pcap or pcapng file"),
        "{err}"
    );
}

fn text(bytes: Vec<u8>, view: tcpchat_trace::View) -> String {
    let mut out = Vec::new();
    tcpchat_trace::trace(
        std::io::Cursor::new(bytes),
        &Options::default(),
        &view,
        &mut out,
    )
    .expect("reads");
    String::from_utf8(out).expect("utf-8")
}

#[test]
fn timeline_explains_handshake_messages_and_teardown() {
    let conv = chat_session("10.0.0.1:40000", "10.0.0.2:5378");
    let out = text(
        write(&conv.packets, Link::Ethernet, Format::PcapLeMicro),
        tcpchat_trace::View::default(),
    );
    for want in [
        "connection #0: client 10.0.0.1:40000 ⇄ server 10.0.0.2:5378",
        "handshake 1/3: the client asks to open a connection",
        "handshake 3/3: the connection is open (RTT 0.200 ms)",
        "C → S  HELLO-FROM alice  client asks to log in as alice",
        "C ← S  DELIVERY bob hello  alice  server delivers a message from bob",
        "the client is done sending and starts closing (first FIN)",
        "ending: closed cleanly: the client sent the first FIN; both FINs were acknowledged",
        "1 TCP connection, 1 chat connection (#0)",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(!out.contains('\x1b'), "no colour unless asked");
    let coloured = text(
        write(&conv.packets, Link::Ethernet, Format::PcapLeMicro),
        tcpchat_trace::View {
            color: true,
            ..Default::default()
        },
    );
    assert!(coloured.contains("\x1b[1m"));
}

#[test]
fn a_long_connection_is_printed_in_parts_not_held_whole() {
    let mut c = Conv::new("10.0.0.1:40000", "10.0.0.2:5378");
    c.handshake();
    for i in 0..3_000 {
        c.data(true, format!("SEND bob {i}\n").as_bytes());
    }
    c.close_by(true);
    let out = text(
        write(&c.packets, Link::Ethernet, Format::PcapLeMicro),
        tcpchat_trace::View::default(),
    );
    assert!(out.contains("connection #0 (continued)"), "{}", &out[..400]);
    assert_eq!(out.matches("client sends bob the message").count(), 3_000);
    assert!(out.contains("SEND 3000"));
}
