//! A packet whose IP total length claims more bytes than the frame, captured whole, holds is
//! malformed, not cut by the snap length, and is never a retransmission; the same capture read
//! by tshark says the same. See: #16

mod common;

use std::process::Command;

use common::*;
use tcpchat_trace::model::Note;
use tcpchat_trace::{analyze, Options};

/// A login whose first data segment went out malformed (its header claims the whole line, the
/// frame holds 5 bytes of it) and then again whole; the frame number of the malformed one.
fn capture() -> (Vec<u8>, u64) {
    let mut c = Conv::new("10.0.0.1:40000", "10.0.0.2:5378");
    c.handshake();
    let line = b"HELLO-FROM alice\n";
    c.raw(true, c.cseq, c.sseq, PSH | ACK, line);
    let malformed = c.packets.len();
    let ip = &mut c.packets[malformed - 1].ip;
    // The header, with its total length and checksum, stays; 12 payload bytes go.
    ip.truncate(ip.len() - 12);
    c.data(true, line);
    c.data(false, b"HELLO alice\n");
    c.close_by(true);
    (
        write(&c.packets, Link::Ethernet, Format::PcapLeMicro),
        malformed as u64,
    )
}

fn our_notes(bytes: Vec<u8>) -> Vec<(u64, Vec<Note>)> {
    let (outputs, _) = analyze(bytes, &Options::default()).expect("capture reads");
    segments(&outputs)
        .iter()
        .map(|(e, s)| (e.frame, s.notes.clone()))
        .collect()
}

#[test]
fn a_lying_total_length_is_malformed_not_truncated_nor_a_retransmission() {
    let (bytes, frame) = capture();
    let (outputs, _) = analyze(bytes.clone(), &Options::default()).expect("capture reads");
    assert_eq!(
        line_texts(&outputs),
        ["C> HELLO-FROM alice", "S> HELLO alice"]
    );
    let notes = our_notes(bytes);
    let at_frame: Vec<Note> = notes
        .iter()
        .filter(|(f, _)| *f == frame)
        .flat_map(|(_, n)| n.clone())
        .collect();
    assert_eq!(
        at_frame,
        [Note::Malformed {
            present: 5,
            claimed: 17
        }]
    );
    let all: Vec<&Note> = notes.iter().flat_map(|(_, n)| n).collect();
    assert!(
        !all.iter().any(|n| matches!(
            n,
            Note::Retransmission | Note::PartialRetransmission | Note::Truncated { .. }
        )),
        "{all:?}"
    );
}

#[test]
fn tshark_agrees_that_the_packet_is_malformed_and_nothing_is_retransmitted() {
    let (bytes, frame) = capture();
    let dir = std::env::temp_dir().join(format!("trace-malformed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("malformed.pcap");
    std::fs::write(&file, &bytes).expect("write capture");
    let out = Command::new("tshark")
        .arg("-r")
        .arg(&file)
        .args([
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "frame.number",
            "-e",
            "_ws.expert.message",
            "-e",
            "tcp.analysis.retransmission",
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "tshark is needed for this test ({e}); install it with `apt-get install \
                 tshark` (scripts/test.sh does)"
            )
        });
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split('|').collect()).collect();
    let theirs = rows
        .iter()
        .find(|r| r[0] == frame.to_string())
        .unwrap_or_else(|| panic!("frame {frame} missing from tshark:\n{text}"));
    assert!(
        theirs[1].contains("total length exceeds packet length"),
        "tshark on frame {frame}: {theirs:?}"
    );
    assert!(
        rows.iter().all(|r| r.get(2).is_none_or(|v| v.is_empty())),
        "tshark flags a retransmission:\n{text}"
    );
    // Ours: the same frame malformed, no retransmission anywhere.
    let ours = our_notes(bytes);
    assert!(ours
        .iter()
        .any(|(f, n)| *f == frame && n.iter().any(|n| matches!(n, Note::Malformed { .. }))));
    assert!(!ours
        .iter()
        .flat_map(|(_, n)| n)
        .any(|n| matches!(n, Note::Retransmission)));
}
