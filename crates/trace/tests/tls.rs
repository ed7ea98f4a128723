//! TLS connections: a real capture (`tests/captures/tls.pcap`, recorded by
//! `scripts/record-tls-capture.sh`: `openssl s_client -servername chat.example` against
//! `openssl s_server` on port 5379 while dumpcap recorded loopback) read by us and by tshark,
//! and captures built from its ClientHello to split it across segments or move it to another
//! port.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use tcpchat_trace::model::{EventKind, TlsEvent};
use tcpchat_trace::{analyze, Options, Output, View};

fn tls_capture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/captures/tls.pcap")
}

fn read(opts: &Options) -> (Vec<Output>, tcpchat_trace::CaptureSummary) {
    let bytes = std::fs::read(tls_capture()).expect("capture file is committed");
    analyze(bytes, opts).expect("capture reads")
}

fn tls_events(outputs: &[Output], stream: u64) -> Vec<TlsEvent> {
    events(outputs)
        .into_iter()
        .filter(|e| e.stream == stream)
        .filter_map(|e| match &e.kind {
            EventKind::Tls(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

/// tshark's reading of each handshake message: (stream, type, SNI, supported versions).
fn tshark_hellos() -> Vec<(u64, String, String, String)> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(tls_capture())
        // Dissect port 5379 as TLS (tshark does not know it).
        .args([
            "-d",
            "tcp.port==5379,tls",
            "-Y",
            "tls.handshake.type==1 || tls.handshake.type==2",
        ])
        .args(["-T", "fields", "-E", "separator=|"])
        .args(["-e", "tcp.stream", "-e", "tls.handshake.type"])
        .args(["-e", "tls.handshake.extensions_server_name"])
        .args(["-e", "tls.handshake.extensions.supported_version"])
        .args(["-e", "tls.handshake.version"])
        .output()
        .unwrap_or_else(|e| {
            panic!("tshark is needed for this test ({e}); install it with `apt-get install tshark`")
        });
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("tshark prints UTF-8")
        .lines()
        .map(|l| {
            let c: Vec<&str> = l.split('|').collect();
            let versions = if c[3].is_empty() { c[4] } else { c[3] };
            (
                c[0].parse().expect("stream"),
                c[1].split(',').next().unwrap_or_default().to_string(),
                c[2].to_string(),
                versions.to_string(),
            )
        })
        .collect()
}

fn hex_version(name: &str) -> &'static str {
    match name {
        "TLS 1.0" => "0x0301",
        "TLS 1.1" => "0x0302",
        "TLS 1.2" => "0x0303",
        "TLS 1.3" => "0x0304",
        other => panic!("unexpected version {other}"),
    }
}

#[test]
fn a_tls_connection_is_reported_as_tls_not_as_garbage_lines() {
    let (outputs, summary) = read(&Options::default());
    assert_eq!(summary.chat_streams, [0, 1, 2]);
    assert_eq!(summary.tls_connections, 3);
    assert!(
        lines(&outputs).is_empty(),
        "no ciphertext is cut into lines: {:?}",
        line_texts(&outputs)
    );
    let e = ends(&outputs);

    // TLS 1.3: the version is in the ServerHello's supported_versions.
    let t0 = e[0].tls.as_ref().expect("stream 0 is TLS");
    assert_eq!(t0.server_name.as_deref(), Some("chat.example"));
    assert_eq!(
        t0.offered_versions,
        ["TLS 1.3", "TLS 1.2", "TLS 1.1", "TLS 1.0"]
    );
    assert_eq!(t0.version.as_deref(), Some("TLS 1.3"));
    assert_eq!(t0.content, "encrypted");
    // TLS 1.2 only: no supported_versions anywhere, the legacy fields say it.
    let t1 = e[1].tls.as_ref().expect("stream 1 is TLS");
    assert_eq!(t1.offered_versions, ["TLS 1.2"]);
    assert_eq!(t1.version.as_deref(), Some("TLS 1.2"));
    // A ClientHello cut after 60 bytes, then the client left.
    let t2 = e[2].tls.as_ref().expect("stream 2 is TLS");
    assert_eq!(t2.version, None);
    let why = t2
        .unreadable
        .as_deref()
        .expect("the cut hello is unreadable");
    assert!(
        why.starts_with("the stream ended inside the ClientHello: 51 of its"),
        "{why}"
    );
    assert_eq!(e[2].anomalies.get("unreadable_tls_hello"), Some(&1));

    for (stream, kinds) in [
        (0, ["client_hello", "server_hello"].as_slice()),
        (1, &["client_hello", "server_hello"]),
        (2, &["unreadable"]),
    ] {
        let got: Vec<&str> = tls_events(&outputs, stream)
            .iter()
            .map(|t| match t {
                TlsEvent::ClientHello(_) => "client_hello",
                TlsEvent::ServerHello(_) => "server_hello",
                TlsEvent::Unreadable(_) => "unreadable",
            })
            .collect();
        assert_eq!(got, kinds, "stream {stream}");
    }
}

#[test]
fn hellos_match_tshark() {
    let (outputs, _) = read(&Options::default());
    let mut ours = Vec::new();
    for stream in 0..3 {
        for t in tls_events(&outputs, stream) {
            match t {
                TlsEvent::ClientHello(c) => ours.push((
                    stream,
                    "1".to_string(),
                    c.server_name.unwrap_or_default(),
                    c.offered_versions
                        .iter()
                        .map(|v| hex_version(v))
                        .collect::<Vec<_>>()
                        .join(","),
                )),
                TlsEvent::ServerHello(s) => ours.push((
                    stream,
                    "2".to_string(),
                    String::new(),
                    hex_version(&s.version).to_string(),
                )),
                TlsEvent::Unreadable(_) => {}
            }
        }
    }
    assert_eq!(ours, tshark_hellos());
}

#[test]
fn text_and_json_say_the_content_is_encrypted() {
    let bytes = std::fs::read(tls_capture()).expect("capture file is committed");
    let mut text = Vec::new();
    tcpchat_trace::trace(
        std::io::Cursor::new(bytes.clone()),
        &Options::default(),
        &View::default(),
        &mut text,
    )
    .expect("trace runs");
    let text = String::from_utf8(text).expect("UTF-8");
    for want in [
        "TLS ClientHello  a TLS client asks for chat.example, offering TLS 1.3, TLS 1.2, TLS 1.1, TLS 1.0",
        "TLS ServerHello  the server chose TLS 1.3; from here on the connection is encrypted",
        "tls: TLS 1.2 for chat.example; the content is encrypted",
        "a hello that cannot be read: the stream ended inside the ClientHello",
        "3 of them TLS",
    ] {
        assert!(text.contains(want), "text lacks {want:?}:\n{text}");
    }
    assert!(!text.contains("not protocol"), "{text}");

    let mut json = Vec::new();
    let view = View {
        json: true,
        ..View::default()
    };
    tcpchat_trace::trace(
        std::io::Cursor::new(bytes),
        &Options::default(),
        &view,
        &mut json,
    )
    .expect("trace runs");
    let records: Vec<serde_json::Value> = String::from_utf8(json)
        .expect("UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let hello = records
        .iter()
        .find(|r| r["type"] == "tls" && r["tls"] == "client_hello")
        .expect("a client_hello event");
    assert_eq!(hello["server_name"], "chat.example");
    assert_eq!(hello["dir"], "client_to_server");
    assert_eq!(hello["offered_versions"][0], "TLS 1.3");
    let server = records
        .iter()
        .find(|r| r["type"] == "tls" && r["tls"] == "server_hello")
        .expect("a server_hello event");
    assert_eq!(server["version"], "TLS 1.3");
    assert_eq!(server["hello_retry"], false);
    let end = records
        .iter()
        .find(|r| r["type"] == "connection_end")
        .expect("a connection_end");
    assert_eq!(end["tls"]["version"], "TLS 1.3");
    assert_eq!(end["tls"]["content"], "encrypted");
    let summary = records.last().expect("a summary");
    assert_eq!(summary["tls_connections"], 3);
}

/// The real ClientHello of stream 0, as the client sent it.
fn real_client_hello() -> Vec<u8> {
    let (outputs, _) = read(&Options {
        stream_data: true,
        ..Options::default()
    });
    events(&outputs)
        .into_iter()
        .find_map(|e| match &e.kind {
            EventKind::Data { bytes } if e.stream == 0 => Some(bytes.clone()),
            _ => None,
        })
        .expect("stream 0 has client data")
}

#[test]
fn a_hello_split_across_segments_is_read_from_the_reassembled_stream() {
    let hello = real_client_hello();
    for cuts in [[1, 2], [3, 4], [5, 9], [60, 200]] {
        let mut conv = Conv::new("10.0.0.1:40000", "10.0.0.2:5379");
        conv.handshake();
        conv.data(true, &hello[..cuts[0]]);
        conv.data(true, &hello[cuts[0]..cuts[1]]);
        conv.data(true, &hello[cuts[1]..]);
        conv.close_by(true);
        let (outputs, summary) = analyze(
            write(&conv.packets, Link::Ethernet, Format::PcapLeMicro),
            &Options::default(),
        )
        .expect("reads");
        assert_eq!(summary.tls_connections, 1, "cut at {cuts:?}");
        let tls = ends(&outputs)[0].tls.clone().expect("TLS");
        assert_eq!(
            tls.server_name.as_deref(),
            Some("chat.example"),
            "cut at {cuts:?}"
        );
        assert!(lines(&outputs).is_empty(), "cut at {cuts:?}");
    }
}

#[test]
fn tls_elsewhere_is_not_chat_and_a_plain_line_on_the_tls_port_still_is() {
    let hello = real_client_hello();
    let mut https = Conv::new("10.0.0.1:40000", "10.0.0.2:443");
    https.handshake();
    https.data(true, &hello);
    https.close_by(true);
    let (_, summary) = analyze(
        write(&https.packets, Link::Ethernet, Format::PcapLeMicro),
        &Options::default(),
    )
    .expect("reads");
    assert_eq!((summary.tcp_connections, summary.chat_connections), (1, 0));

    let mut plain = Conv::new("10.0.0.1:40000", "10.0.0.2:5379");
    plain.handshake();
    plain.data(true, b"HELLO-FROM alice\n");
    plain.close_by(true);
    let (outputs, summary) = analyze(
        write(&plain.packets, Link::Ethernet, Format::PcapLeMicro),
        &Options::default(),
    )
    .expect("reads");
    assert_eq!(summary.tls_connections, 0);
    assert_eq!(line_texts(&outputs), ["C> HELLO-FROM alice"]);
}
