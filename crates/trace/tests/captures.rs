//! Real captures recorded with tcpdump on loopback against `tcpchat serve`
//! (`scripts/record-captures.sh`), read the way a learner would, and checked against tshark's
//! reading of the same files: the reassembled payloads, the handshake and the teardown.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ends, line_texts};
use tcpchat_trace::model::{ConnectionEnd, Dir, EndState, EventKind, Role};
use tcpchat_trace::{analyze, Options, Output};

/// Captures of the full scripted session (same conversation, different formats/links).
const SESSIONS: [&str; 4] = [
    "session.pcap",
    "session.pcapng",
    "session-nano.pcap",
    "ipv6-any.pcap",
];

fn capture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/captures")
        .join(name)
}

fn read(name: &str) -> (Vec<Output>, tcpchat_trace::CaptureSummary) {
    let bytes = std::fs::read(capture(name)).expect("capture file is committed");
    let opts = Options {
        stream_data: true,
        ..Options::default()
    };
    analyze(bytes, &opts).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn of_stream(outputs: &[Output], stream: u64) -> Vec<Output> {
    outputs
        .iter()
        .filter(|o| match o {
            Output::Start(s) => s.stream == stream,
            Output::Event(e) => e.stream == stream,
            Output::End(e) => e.stream == stream,
        })
        .cloned()
        .collect()
}

/// LIST-OK names come in no particular order; sort them for comparison.
fn normalise(line: &str) -> String {
    match line.split_once("LIST-OK ") {
        Some((head, names)) => {
            let mut names: Vec<&str> = names.split(',').collect();
            names.sort_unstable();
            format!("{head}LIST-OK {}", names.join(","))
        }
        None => line.to_string(),
    }
}

#[test]
fn a_learner_sees_every_message_in_order_and_both_endings() {
    for name in SESSIONS {
        let (outputs, summary) = read(name);
        assert_eq!(summary.chat_streams, [0, 1, 2], "{name}");
        let lines = |stream| -> Vec<String> {
            line_texts(&of_stream(&outputs, stream))
                .iter()
                .map(|l| normalise(l))
                .collect()
        };
        assert_eq!(
            lines(0),
            [
                "C> HELLO-FROM alice",
                "S> HELLO alice",
                "C> LIST",
                "S> LIST-OK alice,bob",
                "C> SEND bob hi bob, how are you?",
                "S> SEND-OK",
                "S> DELIVERY bob fine, thanks!",
            ],
            "{name}"
        );
        assert_eq!(
            lines(1),
            [
                "C> HELLO-FROM alice",
                "S> IN-USE",
                "C> HELLO-FROM bob",
                "S> HELLO bob",
                "S> DELIVERY alice hi bob, how are you?",
                "C> SEND alice fine, thanks!",
                "S> SEND-OK",
                "C> WHO",
                "S> BAD-RQST-HDR",
                "C> SEND carol hello?",
                "S> BAD-DEST-USER",
            ],
            "{name}"
        );
        assert_eq!(
            lines(2),
            ["C> HELLO-FROM car ol", "S> BAD-RQST-BODY"],
            "{name}"
        );

        let split = common::lines(&of_stream(&outputs, 1))
            .into_iter()
            .find(|l| l.text == "SEND alice fine, thanks!")
            .cloned()
            .expect("bob's reply");
        assert_eq!(split.segments, 2, "{name}: sent in two segments");

        let e = ends(&outputs);
        assert!(e.iter().all(|c| c.handshake.rtt_ns.is_some()), "{name}");
        assert_eq!(e[0].teardown.state, EndState::Closed, "{name}");
        assert_eq!(e[0].teardown.first_fin, Some(Role::Client), "{name}");
        assert_eq!(e[1].teardown.state, EndState::Closed, "{name}");
        assert_eq!(e[2].teardown.state, EndState::Reset, "{name}");
        assert_eq!(e[2].teardown.reset_by, Some(Role::Client), "{name}");
        assert!(
            e.iter().all(|c| c.missing_bytes.total() == 0),
            "{name}: nothing missing"
        );
    }
}

#[test]
fn snap_length_capture_reports_truncation_and_keeps_the_skeleton() {
    let (outputs, summary) = read("snaplen.pcap");
    assert_eq!(summary.chat_streams, [0, 1, 2]);
    // Every handshake and teardown survives: TCP headers fit, payloads do not.
    let e = ends(&outputs);
    assert!(e
        .iter()
        .all(|c| c.handshake.syn.is_some() && c.handshake.ack.is_some()));
    assert_eq!(e[0].teardown.state, EndState::Closed);
    assert_eq!(e[2].teardown.state, EndState::Reset);
    assert!(summary.anomalies.get("truncated").copied().unwrap_or(0) > 0);
    // Nothing decoded as a complete message: every captured piece is marked cut, except a
    // line short enough to fit the 4 payload bytes the snap length keeps: the recording's
    // `WHO\n`, a whole request of the previous protocol generation. See: #16
    let lines = common::lines(&outputs);
    assert!(lines.iter().all(|l| !l.valid || l.bytes <= 4), "{lines:?}");
    assert!(lines.iter().any(|l| !l.valid));
}

// ---- the same files read by tshark ----

fn tshark(file: &Path, args: &[&str]) -> String {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "tshark is needed for this test ({e}); install it with \
                 `apt-get install tshark` (scripts/test.sh does)"
            )
        });
    assert!(
        out.status.success(),
        "tshark {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("tshark prints UTF-8")
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex from tshark"))
        .collect()
}

/// tshark's `follow,tcp,raw`: the bytes each end sent, by address.
fn tshark_follow(file: &Path, stream: u64) -> BTreeMap<SocketAddr, Vec<u8>> {
    let text = tshark(file, &["-q", "-z", &format!("follow,tcp,raw,{stream}")]);
    let mut nodes = Vec::new();
    let mut data: BTreeMap<SocketAddr, Vec<u8>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(addr) = line
            .strip_prefix("Node 0: ")
            .or_else(|| line.strip_prefix("Node 1: "))
        {
            let addr: SocketAddr = addr
                .parse()
                .or_else(|_| {
                    // IPv6 is printed without brackets: ::1:5378.
                    let (ip, port) = addr.rsplit_once(':').expect("address:port");
                    format!("[{ip}]:{port}").parse()
                })
                .expect("node address");
            nodes.push(addr);
            data.insert(addr, Vec::new());
        } else if nodes.len() == 2 && !line.starts_with('=') && !line.is_empty() {
            let (node, hex) = match line.strip_prefix('\t') {
                Some(rest) => (nodes[1], rest),
                None => (nodes[0], line),
            };
            data.entry(node).or_default().extend(unhex(hex.trim()));
        }
    }
    data
}

fn our_streams(outputs: &[Output], end: &ConnectionEnd) -> BTreeMap<SocketAddr, Vec<u8>> {
    let mut data = BTreeMap::new();
    data.insert(end.client, Vec::new());
    data.insert(end.server, Vec::new());
    for o in of_stream(outputs, end.stream) {
        if let Output::Event(e) = o {
            if let EventKind::Data { bytes } = &e.kind {
                let who = match e.dir {
                    Dir::ClientToServer => end.client,
                    Dir::ServerToClient => end.server,
                };
                data.entry(who).or_insert_with(Vec::new).extend(bytes);
            }
        }
    }
    data
}

/// Per frame: stream, source address, flags and the analysis fields we compare.
struct Row {
    frame: u64,
    stream: u64,
    src_port: u16,
    syn: bool,
    ack: bool,
    fin: bool,
    rst: bool,
    initial_rtt_ns: Option<u64>,
    acks_frame: Option<u64>,
    window: u64,
}

fn tshark_rows(file: &Path) -> Vec<Row> {
    let fields = [
        "frame.number",
        "tcp.stream",
        "tcp.srcport",
        "tcp.flags.syn",
        "tcp.flags.ack",
        "tcp.flags.fin",
        "tcp.flags.reset",
        "tcp.analysis.initial_rtt",
        "tcp.analysis.acks_frame",
        "tcp.window_size",
    ];
    let mut args = vec!["-T", "fields", "-E", "separator=|"];
    for f in &fields {
        args.push("-e");
        args.push(f);
    }
    tshark(file, &args)
        .lines()
        .map(|line| {
            let c: Vec<&str> = line.split('|').collect();
            let flag = |i: usize| c[i] == "1" || c[i] == "True";
            Row {
                frame: c[0].parse().expect("frame number"),
                stream: c[1].parse().expect("stream"),
                src_port: c[2].parse().expect("port"),
                syn: flag(3),
                ack: flag(4),
                fin: flag(5),
                rst: flag(6),
                initial_rtt_ns: (!c[7].is_empty()).then(|| {
                    let (s, frac) = c[7].split_once('.').expect("seconds");
                    let frac = format!("{frac:0<9}");
                    s.parse::<u64>().expect("secs") * 1_000_000_000
                        + frac[..9].parse::<u64>().expect("fraction")
                }),
                acks_frame: c[8].parse().ok(),
                window: c[9].parse().expect("window"),
            }
        })
        .collect()
}

#[test]
fn reassembly_handshake_and_teardown_match_tshark() {
    for name in SESSIONS {
        let file = capture(name);
        let (outputs, summary) = read(name);
        let rows = tshark_rows(&file);
        let tshark_streams: std::collections::BTreeSet<u64> =
            rows.iter().map(|r| r.stream).collect();
        assert_eq!(
            summary.tcp_connections,
            tshark_streams.len() as u64,
            "{name}: connection count"
        );
        for end in ends(&outputs) {
            let what = format!("{name} stream {}", end.stream);
            // Reassembled payloads, byte for byte, each direction.
            let theirs = tshark_follow(&file, end.stream);
            assert!(
                theirs.values().all(|bytes| !bytes.is_empty()),
                "{what}: tshark shows data both ways"
            );
            assert_eq!(
                our_streams(&outputs, end),
                theirs,
                "{what}: reassembled bytes"
            );
            let rows: Vec<&Row> = rows.iter().filter(|r| r.stream == end.stream).collect();
            // Handshake.
            let syn = rows.iter().find(|r| r.syn && !r.ack).map(|r| r.frame);
            let syn_ack = rows.iter().find(|r| r.syn && r.ack).map(|r| r.frame);
            assert_eq!(end.handshake.syn.map(|s| s.frame), syn, "{what}: SYN");
            assert_eq!(
                end.handshake.syn_ack.map(|s| s.frame),
                syn_ack,
                "{what}: SYN-ACK"
            );
            let rtt = rows.iter().find_map(|r| r.initial_rtt_ns);
            assert_eq!(end.handshake.rtt_ns, rtt, "{what}: initial RTT");
            // Teardown: each side's first FIN, what acknowledged it, the RST.
            let client_port = end.client.port();
            for (fact, from_client) in [
                (&end.teardown.client_fin, true),
                (&end.teardown.server_fin, false),
            ] {
                let fin = rows
                    .iter()
                    .find(|r| r.fin && (r.src_port == client_port) == from_client);
                assert_eq!(
                    fact.as_ref().map(|f| f.fin.frame),
                    fin.map(|r| r.frame),
                    "{what}: FIN"
                );
                if let (Some(fact), Some(fin)) = (fact, fin) {
                    let acked_by = rows
                        .iter()
                        .find(|r| r.acks_frame == Some(fin.frame))
                        .map(|r| r.frame);
                    assert_eq!(fact.acked.map(|s| s.frame), acked_by, "{what}: FIN's ACK");
                }
            }
            // Every segment, with its window scaled as the handshake agreed.
            let ours: Vec<(u64, Option<u64>)> = common::segments(&of_stream(&outputs, end.stream))
                .iter()
                .map(|(e, seg)| (e.frame, seg.window_scaled))
                .collect();
            let theirs: Vec<(u64, Option<u64>)> =
                rows.iter().map(|r| (r.frame, Some(r.window))).collect();
            assert_eq!(ours, theirs, "{what}: segments and their windows");
            let rst = rows.iter().find(|r| r.rst).map(|r| r.frame);
            assert_eq!(end.teardown.reset.map(|s| s.frame), rst, "{what}: RST");
            if let Some(r) = rows.iter().find(|r| r.rst) {
                let by_client = r.src_port == client_port;
                assert_eq!(
                    end.teardown.reset_by,
                    Some(if by_client {
                        Role::Client
                    } else {
                        Role::Server
                    }),
                    "{what}: who reset"
                );
            }
        }
    }
}
