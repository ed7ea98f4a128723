//! The capture reader and the analysis on arbitrary files: no panic, and the parts add up —
//! each connection's reported stream bytes, lines and missing bytes equal what its events
//! carried. The first byte picks a framing so that most inputs get past the file header.

use std::collections::HashMap;
use std::io::Cursor;

use tcpchat_trace::model::{Dir, EventKind, Output};
use tcpchat_trace::{Analyzer, CaptureReader, Options, View};

const LINKTYPES: [u32; 8] = [1, 0, 101, 108, 113, 276, 228, 229];

fn framed(data: &[u8]) -> Vec<u8> {
    let (Some(&mode), Some(&link)) = (data.first(), data.get(1)) else {
        return data.to_vec();
    };
    let linktype = LINKTYPES[usize::from(link) % LINKTYPES.len()];
    let rest = &data[2..];
    let mut out = Vec::new();
    match mode % 3 {
        0 => return rest.to_vec(),
        1 => {
            let magic: u32 = if mode & 0x80 == 0 {
                0xa1b2_c3d4
            } else {
                0xa1b2_3c4d
            };
            out.extend_from_slice(&magic.to_le_bytes());
            out.extend_from_slice(&2u16.to_le_bytes());
            out.extend_from_slice(&4u16.to_le_bytes());
            out.extend_from_slice(&[0; 8]);
            out.extend_from_slice(&262_144u32.to_le_bytes());
            out.extend_from_slice(&linktype.to_le_bytes());
        }
        _ => {
            for v in [0x0a0d_0d0au32, 28, 0x1a2b_3c4d] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&1u16.to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(&[0xff; 8]);
            out.extend_from_slice(&28u32.to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
            out.extend_from_slice(&20u32.to_le_bytes());
            out.extend_from_slice(&(linktype as u16).to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(&262_144u32.to_le_bytes());
            out.extend_from_slice(&20u32.to_le_bytes());
        }
    }
    out.extend_from_slice(rest);
    out
}

#[derive(Default)]
struct Seen {
    data: [u64; 2],
    gaps: [u64; 2],
    lines: [u64; 2],
}

fn idx(dir: Dir) -> usize {
    match dir {
        Dir::ClientToServer => 0,
        Dir::ServerToClient => 1,
    }
}

/// The `trace_reader` fuzz target.
///
/// Input: the first byte picks a framing (`% 3`: raw bytes, behind a synthesized pcap header —
/// microsecond or, with the top bit set, nanosecond — or behind a pcapng section header and
/// interface), the second a link type; the rest follows. Inputs under two bytes are read raw.
///
/// # Panics
/// When reading or analyzing panics, or a connection's reported stream bytes, missing bytes
/// and line counts differ from what its events carried, or the summary counts more TCP
/// segments than frames or more chat connections than TCP connections.
pub fn trace_reader(data: &[u8]) {
    let bytes = framed(data);

    // The whole pipeline, as the command runs it, both views.
    for view in [
        View {
            json: false,
            hex: true,
            color: true,
        },
        View {
            json: true,
            hex: true,
            color: false,
        },
    ] {
        let _ = tcpchat_trace::trace(
            Cursor::new(bytes.clone()),
            &Options::default(),
            &view,
            std::io::sink(),
        );
    }

    // The analysis, checking that each connection's totals match its events.
    let Ok(mut reader) = CaptureReader::new(Cursor::new(bytes)) else {
        return;
    };
    let opts = Options {
        stream_data: true,
        max_line_bytes: 64,
        ..Options::default()
    };
    let mut analyzer = Analyzer::new(opts);
    let mut seen: HashMap<u64, Seen> = HashMap::new();
    let mut check = |analyzer: &mut Analyzer| {
        while let Some(out) = analyzer.poll_output() {
            match out {
                Output::Start(_) => {}
                Output::Event(e) => {
                    let s = seen.entry(e.stream).or_default();
                    let d = idx(e.dir);
                    match e.kind {
                        EventKind::Data { bytes } => s.data[d] += bytes.len() as u64,
                        EventKind::Gap { bytes, .. } => s.gaps[d] += bytes,
                        EventKind::Line(line) => {
                            assert!(line.segments >= 1);
                            s.lines[d] += 1;
                        }
                        EventKind::Segment(_) | EventKind::Tls(_) | EventKind::WebSocket(_) => {}
                    }
                }
                Output::End(end) => {
                    let s = seen.remove(&end.stream).unwrap_or_default();
                    assert_eq!(
                        s.data,
                        [end.bytes.client_to_server, end.bytes.server_to_client]
                    );
                    assert_eq!(
                        s.gaps,
                        [
                            end.missing_bytes.client_to_server,
                            end.missing_bytes.server_to_client
                        ]
                    );
                    assert_eq!(
                        s.lines,
                        [end.lines.client_to_server, end.lines.server_to_client]
                    );
                }
            }
        }
    };
    while let Ok(Some(frame)) = reader.next_frame() {
        if analyzer.handle_frame(&frame).is_err() {
            break;
        }
        check(&mut analyzer);
    }
    analyzer.finish();
    check(&mut analyzer);
    let summary = analyzer.summary();
    assert!(summary.tcp_segments <= summary.frames);
    assert!(summary.chat_connections <= summary.tcp_connections);
}
