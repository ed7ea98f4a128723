//! A real WebSocket capture (`scripts/record-ws-capture.sh`: dumpcap on loopback while scripted
//! clients talk to `tcpchat serve --web-listen`, over WebSocket and TCP), read the way a learner
//! would, and its frames checked against tshark's WebSocket dissector reading the same file.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ends, line_texts};
use tcpchat_trace::model::{Dir, EventKind, FoundBy, LineStatus, Output, WsEvent};
use tcpchat_trace::{analyze, Options, View};

const CAPTURE: &str = "websocket.pcap";
const WEB_PORT: u16 = 5380;

fn capture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/captures")
        .join(CAPTURE)
}

fn read(opts: &Options) -> (Vec<Output>, tcpchat_trace::CaptureSummary) {
    let bytes = std::fs::read(capture()).expect("capture file is committed");
    analyze(bytes, opts).expect("the capture reads")
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

/// Every frame: (stream, from the client, FIN, opcode, masked, payload length).
fn frames(outputs: &[Output]) -> Vec<(u64, bool, bool, u8, bool, u64)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(e) => match &e.kind {
                EventKind::WebSocket(WsEvent::Frame(f)) => Some((
                    e.stream,
                    e.dir == Dir::ClientToServer,
                    f.fin,
                    f.opcode,
                    f.masked,
                    f.len,
                )),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

#[test]
fn a_learner_sees_the_chat_lines_inside_the_frames() {
    let (outputs, summary) = read(&Options::default());
    // 3 is a page request (not chat without --web-port); 4 an upgrade the server refused.
    assert_eq!(summary.chat_streams, [0, 1, 2, 4, 5]);
    let lines = |stream| line_texts(&of_stream(&outputs, stream));
    assert_eq!(
        lines(0),
        [
            "C> HELLO-FROM alice",
            "S> HELLO alice",
            "C> LIST",
            "S> LIST-OK alice,bob",
            "S> DELIVERY bob hi alice, from TCP",
            "C> SEND bob hello from the browser",
            "S> SEND-OK",
        ],
        "the browser user's connection"
    );
    assert_eq!(
        lines(1),
        [
            "C> HELLO-FROM bob",
            "S> HELLO bob",
            "C> SEND alice hi alice, from TCP",
            "S> SEND-OK",
            "S> DELIVERY alice hello from the browser",
        ],
        "the TCP user's connection, unchanged"
    );
    let starts: Vec<(u64, FoundBy)> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Start(s) => Some((s.stream, s.found_by)),
            _ => None,
        })
        .collect();
    assert_eq!(
        starts,
        [
            (0, FoundBy::WebsocketUpgrade),
            (1, FoundBy::Port),
            (2, FoundBy::WebsocketUpgrade),
            (4, FoundBy::WebsocketUpgrade),
            (5, FoundBy::WebsocketUpgrade),
        ]
    );

    let e = ends(&outputs);
    let ws = |i: usize| e[i].websocket.as_ref().expect("a WebSocket connection");
    assert!(e[1].websocket.is_none(), "TCP stays TCP");
    assert_eq!(ws(0).path.as_deref(), Some("/ws"));
    assert_eq!(ws(0).offered, ["tcpchat"]);
    assert_eq!(ws(0).protocol.as_deref(), Some("tcpchat"));
    assert_eq!(ws(0).status, Some(101));
    assert_eq!(ws(0).client_close.as_ref().and_then(|c| c.code), Some(1000));
    // The server answers a close frame with its own, the code echoed.
    assert_eq!(ws(0).server_close.as_ref().and_then(|c| c.code), Some(1000));
    assert!(e[0].anomalies.is_empty(), "{:?}", e[0].anomalies);
    // carol's over-long message: shown by its start, and the server's 1009.
    let carol = common::lines(&of_stream(&outputs, 2))
        .into_iter()
        .find(|l| l.status == LineStatus::Overlong)
        .cloned()
        .expect("the over-long message");
    assert!(carol.text.starts_with("SEND alice xxx"), "{}", carol.text);
    assert!(carol.bytes > 5000, "wire bytes of the whole frame");
    assert_eq!(ws(2).server_close.as_ref().and_then(|c| c.code), Some(1009));
    assert_eq!(e[2].anomalies.get("websocket_message_too_long"), Some(&1));
    // The refused upgrade: a 403, no frames.
    assert_eq!((ws(3).status, ws(3).frames.total()), (Some(403), 0));
    // dave's binary message: a note, no line, and the server's 1003.
    assert_eq!(ws(4).server_close.as_ref().and_then(|c| c.code), Some(1003));
    assert_eq!(e[4].anomalies.get("websocket_binary_message"), Some(&1));

    // The fragmented line, and the ping and pong between its fragments.
    let f: Vec<_> = frames(&outputs)
        .into_iter()
        .filter(|f| f.0 == 0)
        .map(|(_, c, fin, op, m, _)| (c, fin, op, m))
        .collect();
    let at = f
        .iter()
        .position(|x| *x == (true, false, 1, true))
        .expect("a first fragment from the client");
    assert_eq!(
        f[at..at + 4],
        [
            (true, false, 1, true),
            (true, true, 9, true),
            (false, true, 10, false),
            (true, true, 0, true),
        ]
    );
}

#[test]
fn the_web_port_shows_the_page_requests_too() {
    let opts = Options {
        web_port: Some(WEB_PORT),
        ..Options::default()
    };
    let (outputs, summary) = read(&opts);
    assert_eq!(summary.chat_streams, [0, 1, 2, 3, 4, 5]);
    let page = of_stream(&outputs, 3);
    let heads: Vec<String> = page
        .iter()
        .filter_map(|o| match o {
            Output::Event(e) => match &e.kind {
                EventKind::WebSocket(WsEvent::Request(r)) => {
                    Some(format!("{} {} ws={}", r.method, r.target, r.websocket))
                }
                EventKind::WebSocket(WsEvent::Response(r)) => {
                    Some(format!("{} ws={}", r.status, r.websocket))
                }
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(heads, ["GET / ws=false", "200 ws=false"]);
    assert!(common::lines(&page).is_empty(), "a page is not chat lines");
}

#[test]
fn the_timeline_explains_upgrade_frames_and_closes() {
    let file = std::fs::File::open(capture()).expect("capture file is committed");
    let mut out = Vec::new();
    tcpchat_trace::trace(file, &Options::default(), &View::default(), &mut out)
        .expect("the capture reads");
    let text = String::from_utf8(out).expect("UTF-8");
    for want in [
        "found by its WebSocket upgrade",
        "HTTP GET /ws",
        "the client asks to upgrade /ws to a WebSocket, offering the subprotocol tcpchat",
        "HTTP 101 Switching Protocols",
        "client asks to log in as alice",
        "the first fragment of a text message",
        "ws ping [FIN masked len=14]",
        "close 1000 (normal closure) \"bye\"",
        "close 1009 (message too big",
        "HTTP 403 Forbidden",
        "websocket: upgraded on /ws (subprotocol tcpchat)",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
}

// ---- the same file read by tshark ----

fn tshark(args: &[&str]) -> String {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(capture())
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

#[test]
fn every_frame_header_matches_tshark() {
    let text = tshark(&[
        "-d",
        &format!("tcp.port=={WEB_PORT},http"),
        "-Y",
        "websocket",
        "-T",
        "fields",
        "-E",
        "occurrence=f",
        "-e",
        "tcp.stream",
        "-e",
        "tcp.dstport",
        "-e",
        "websocket.fin",
        "-e",
        "websocket.opcode",
        "-e",
        "websocket.mask",
        "-e",
        "websocket.payload_length",
        "-e",
        "websocket.payload_length_ext_16",
        "-e",
        "websocket.payload_length_ext_64",
    ]);
    let flag = |s: &str| s == "1" || s.eq_ignore_ascii_case("true");
    let theirs: Vec<(u64, bool, bool, u8, bool, u64)> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let len: u64 = match f[5] {
                "126" => f[6].parse().expect("16-bit length"),
                "127" => f[7].parse().expect("64-bit length"),
                n => n.parse().expect("length"),
            };
            (
                f[0].parse().expect("stream"),
                f[1] == WEB_PORT.to_string(),
                flag(f[2]),
                f[3].parse().expect("opcode"),
                flag(f[4]),
                len,
            )
        })
        .collect();
    let (outputs, _) = read(&Options::default());
    assert!(theirs.len() > 10, "tshark found the frames: {text}");
    assert_eq!(frames(&outputs), theirs);
}

#[test]
fn every_text_message_matches_tshark() {
    let text = tshark(&[
        "-d",
        &format!("tcp.port=={WEB_PORT},http"),
        "-Y",
        "websocket.opcode == 1 or (websocket.opcode == 0 and websocket.fin == 1)",
        "-T",
        "fields",
        "-e",
        "tcp.stream",
        "-e",
        "websocket.payload.text",
    ]);
    let theirs: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let (stream, body) = l.split_once('\t')?;
            // The over-long one is shown by its start only: compared by the test above.
            (!body.is_empty() && body.len() < 4096).then(|| format!("{stream} {body}"))
        })
        .collect();
    let (outputs, _) = read(&Options::default());
    let ours: Vec<String> = common::lines(&outputs)
        .into_iter()
        .zip(outputs.iter().filter_map(|o| match o {
            Output::Event(e) if matches!(e.kind, EventKind::Line(_)) => Some(e.stream),
            _ => None,
        }))
        .filter(|(l, stream)| *stream != 1 && l.status == LineStatus::Complete)
        .map(|(l, stream)| format!("{stream} {}", l.text))
        .collect();
    assert_eq!(ours, theirs);
}

#[test]
fn a_capture_cut_anywhere_is_read_without_panicking() {
    let bytes = std::fs::read(capture()).expect("capture file is committed");
    for cut in (24..bytes.len()).step_by(61) {
        // An error for a cut inside a packet record is fine; a panic is not.
        let _ = analyze(bytes[..cut].to_vec(), &Options::default());
    }
}
