//! The facts the analysis reports: what the text view explains and `--json` prints.
//!
//! Field names here are the JSON format (`docs/trace.md` documents it); change them only with
//! that document. Times are nanoseconds: absolute ones since the Unix epoch (`*_ns`), relative
//! ones since the connection's first packet (`rel_ns`).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Serialize;

/// Which way a segment or line travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dir {
    ClientToServer,
    ServerToClient,
}

/// One end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Client,
    Server,
}

impl Dir {
    /// The side that sent it.
    pub fn sender(self) -> Role {
        match self {
            Dir::ClientToServer => Role::Client,
            Dir::ServerToClient => Role::Server,
        }
    }
}

/// A packet's place in the capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Step {
    /// 1-based frame number, as Wireshark counts.
    pub frame: u64,
    pub time_ns: u64,
}

/// How the connection was told apart as a chat connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FoundBy {
    /// One end uses the chat port.
    Port,
    /// Its first line is a protocol message.
    FirstLine,
    /// Asked for with `--stream`.
    Requested,
    /// Its client asked to upgrade to WebSocket (`GET ... Upgrade: websocket`), on any port.
    WebsocketUpgrade,
}

/// Emitted once per chat connection, before its events.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionStart {
    /// Connection index: every TCP connection in the capture counts, in order of its first
    /// packet, from 0 (Wireshark's `tcp.stream`).
    pub stream: u64,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub first: Step,
    /// True when the capture holds the SYN; false when the connection was already open.
    pub handshake_seen: bool,
    pub found_by: FoundBy,
}

/// Something that happened on a connection.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub stream: u64,
    /// The frame this happened in (for a reassembled line: the frame that completed it).
    pub frame: u64,
    pub time_ns: u64,
    pub rel_ns: u64,
    pub dir: Dir,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// The kinds of [`Event`].
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A TCP segment.
    Segment(Segment),
    /// A protocol line, reassembled from the byte stream.
    Line(Line),
    /// Stream bytes the capture does not hold.
    Gap { bytes: u64, reason: GapReason },
    /// A TLS hello: what a capture can read of a TLS connection.
    Tls(TlsEvent),
    /// An HTTP head or a WebSocket frame (the `ws` field names which).
    #[serde(rename = "websocket")]
    WebSocket(WsEvent),
    /// In-order stream bytes, hex-encoded; only with [`crate::Options::stream_data`].
    Data {
        #[serde(serialize_with = "hex")]
        bytes: Vec<u8>,
    },
}

/// A TLS handshake message read from the stream (the `tls` field names which).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "tls", rename_all = "snake_case")]
pub enum TlsEvent {
    ClientHello(crate::tls::ClientHello),
    ServerHello(crate::tls::ServerHello),
    /// A hello that could not be read (truncated, cut by missing data, malformed).
    Unreadable(crate::tls::Unreadable),
}

/// What [`crate::ws`] read (the `ws` field names which). The chat lines inside text messages
/// are [`EventKind::Line`]s.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "ws", rename_all = "snake_case")]
pub enum WsEvent {
    /// An HTTP request: the upgrade, or a plain request (the page).
    Request(crate::ws::Request),
    /// An HTTP response: `101` to the upgrade, or a refusal, or the page.
    Response(crate::ws::Response),
    /// A WebSocket frame's header, with its close code or ping payload.
    Frame(crate::ws::Frame),
    /// The rest of this direction cannot be read as HTTP or frames.
    Unreadable(crate::ws::Unreadable),
}

/// What a WebSocket connection showed, besides its lines.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WsFacts {
    /// The upgrade request's path.
    pub path: Option<String>,
    /// Subprotocols the client offered.
    pub offered: Vec<String>,
    /// The subprotocol the server chose.
    pub protocol: Option<String>,
    /// The status of the server's answer to the upgrade (101 when it switched).
    pub status: Option<u16>,
    /// Frames each way.
    pub frames: PerDir,
    /// Close frames each side sent.
    pub client_close: Option<crate::ws::Close>,
    pub server_close: Option<crate::ws::Close>,
}

/// What a TLS connection showed in the clear; the rest of it is encrypted.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TlsFacts {
    /// The server name (SNI) from the ClientHello.
    pub server_name: Option<String>,
    /// The versions the ClientHello offered.
    pub offered_versions: Vec<String>,
    /// Application protocols the ClientHello offered (ALPN).
    pub alpn: Vec<String>,
    /// The version the ServerHello chose; `null` when no ServerHello was captured.
    pub version: Option<String>,
    /// Why a hello could not be read, if one could not.
    pub unreadable: Option<String>,
    /// Always `"encrypted"`: the chat messages inside cannot be read from a capture.
    pub content: &'static str,
}

/// A TCP segment's header facts and what they mean.
#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    /// Flag names, Wireshark's order: `["SYN", "ACK"]`.
    pub flags: Vec<&'static str>,
    /// Relative sequence number (0 = the SYN; 1 = the first data byte).
    pub seq: u32,
    /// Relative acknowledgement number, when the ACK flag is set.
    pub ack: Option<u32>,
    /// Payload length on the wire.
    pub len: u64,
    /// Advertised window, as in the header (not scaled).
    pub window: u16,
    /// The window in bytes (scaled as the handshake agreed); `null` when the handshake was
    /// not captured and the scale is unknown.
    pub window_scaled: Option<u64>,
    /// What the segment does in the connection's life, and anything unusual about it.
    pub notes: Vec<Note>,
    /// The captured payload, hex-encoded (only with `--hex`).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "hex_opt")]
    pub payload: Option<Vec<u8>>,
}

/// Roles and anomalies of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "note", rename_all = "snake_case")]
pub enum Note {
    /// Handshake step 1: the client opens.
    Syn,
    /// Handshake step 2: the server accepts.
    SynAck,
    /// Handshake step 3: the client acknowledges; the connection is open.
    HandshakeAck { rtt_ns: u64 },
    /// A SYN sent again (the first one got no answer in time).
    SynRetransmission,
    /// The sender has no more to send. `first` when it is the first FIN of the connection.
    Fin { first: bool },
    /// Acknowledges the other side's FIN.
    AcksFin,
    /// A FIN sent again.
    FinRetransmission,
    /// The connection is aborted.
    Rst,
    /// Carries only data already seen.
    Retransmission,
    /// Carries some data already seen and some new.
    PartialRetransmission,
    /// Arrived after data that follows it in the stream.
    OutOfOrder,
    /// Starts after a hole in the stream: the previous segment was not captured (yet).
    PreviousSegmentNotCaptured,
    /// Acknowledges data the capture never saw.
    AckedUnseenSegment,
    /// The sender's receive window is full.
    ZeroWindow,
    /// A keep-alive probe (one byte or none, just before the next expected sequence number).
    KeepAlive,
    /// The capture's snap length cut the payload: `captured` of `captured + missing` bytes.
    Truncated { captured: u64, missing: u64 },
    /// A malformed packet: the IP header claims `claimed` bytes of TCP payload, the frame,
    /// captured whole, holds `present`. Its data is not used (so it is never a
    /// retransmission).
    Malformed { present: u64, claimed: u64 },
    /// Far outside any plausible window; ignored for reassembly.
    OutOfWindow,
}

impl Note {
    /// A short stable name (the JSON `note` value), used to count anomalies.
    pub fn name(self) -> &'static str {
        match self {
            Note::Syn => "syn",
            Note::SynAck => "syn_ack",
            Note::HandshakeAck { .. } => "handshake_ack",
            Note::SynRetransmission => "syn_retransmission",
            Note::Fin { .. } => "fin",
            Note::AcksFin => "acks_fin",
            Note::FinRetransmission => "fin_retransmission",
            Note::Rst => "rst",
            Note::Retransmission => "retransmission",
            Note::PartialRetransmission => "partial_retransmission",
            Note::OutOfOrder => "out_of_order",
            Note::PreviousSegmentNotCaptured => "previous_segment_not_captured",
            Note::AckedUnseenSegment => "acked_unseen_segment",
            Note::ZeroWindow => "zero_window",
            Note::KeepAlive => "keep_alive",
            Note::Truncated { .. } => "truncated",
            Note::Malformed { .. } => "malformed",
            Note::OutOfWindow => "out_of_window",
        }
    }

    /// Whether this is something going wrong rather than a normal step.
    pub fn is_anomaly(self) -> bool {
        !matches!(
            self,
            Note::Syn | Note::SynAck | Note::HandshakeAck { .. } | Note::Fin { .. } | Note::AcksFin
        )
    }
}

/// Why stream bytes are missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GapReason {
    /// The receiver acknowledged data the capture did not see.
    AckedUnseen,
    /// The snap length cut segments short.
    Truncated,
    /// Data after a hole never arrived before the connection ended or the capture stopped.
    NeverCaptured,
    /// Too much data waited behind a hole; the hole was given up on.
    TooMuchOutOfOrder,
}

/// A line of the stream, decoded.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    /// The line without its `\n` (and without one `\r` before it), as text: invalid UTF-8 is
    /// replaced, control characters are escaped.
    pub text: String,
    /// The message type: the command word for protocol messages (`SEND`, `DELIVERY`, ...),
    /// `invalid SEND` and the like for a known command with a bad body, `not protocol`.
    pub kind: String,
    /// Whether the line is a well-formed protocol message for its direction.
    pub valid: bool,
    /// What it means, in plain words.
    pub explanation: String,
    /// How many segments carried it.
    pub segments: u32,
    /// Bytes on the wire, terminator included.
    pub bytes: u64,
    pub status: LineStatus,
}

/// Whether a line arrived whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineStatus {
    Complete,
    /// The stream ended before its `\n`.
    Unterminated,
    /// Bytes missing from the capture cut it.
    CutByGap,
    /// Follows missing bytes (or the start of the capture): its beginning may be lost.
    AfterGap,
    /// Longer than the server's line limit; only its first bytes are kept.
    Overlong,
}

/// Counts per direction.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct PerDir {
    pub client_to_server: u64,
    pub server_to_client: u64,
}

impl PerDir {
    pub fn add(&mut self, dir: Dir, n: u64) {
        match dir {
            Dir::ClientToServer => self.client_to_server += n,
            Dir::ServerToClient => self.server_to_client += n,
        }
    }

    pub fn total(&self) -> u64 {
        self.client_to_server + self.server_to_client
    }
}

/// The handshake as captured.
#[derive(Debug, Clone, Serialize)]
pub struct Handshake {
    pub syn: Option<Step>,
    pub syn_ack: Option<Step>,
    pub ack: Option<Step>,
    /// SYN to the handshake's ACK (Wireshark's `tcp.analysis.initial_rtt`).
    pub rtt_ns: Option<u64>,
}

/// A FIN and the ACK that answered it.
#[derive(Debug, Clone, Serialize)]
pub struct FinFact {
    pub fin: Step,
    pub acked: Option<Step>,
}

/// How the connection ended, or did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndState {
    /// Both sides sent FIN.
    Closed,
    /// One side sent RST.
    Reset,
    /// One side sent FIN; the other was still open when the capture stopped.
    HalfClosed,
    /// Still open when the capture stopped.
    OpenAtEnd,
}

/// The teardown as captured.
#[derive(Debug, Clone, Serialize)]
pub struct Teardown {
    pub state: EndState,
    pub first_fin: Option<Role>,
    pub client_fin: Option<FinFact>,
    pub server_fin: Option<FinFact>,
    pub reset_by: Option<Role>,
    pub reset: Option<Step>,
}

/// Emitted once per chat connection, after its events.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionEnd {
    pub stream: u64,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub first: Step,
    pub last: Step,
    pub duration_ns: u64,
    pub handshake_seen: bool,
    pub handshake: Handshake,
    pub teardown: Teardown,
    /// Protocol lines by [`Line::kind`].
    pub messages: BTreeMap<String, u64>,
    pub lines: PerDir,
    /// Stream bytes (payload, each byte once).
    pub bytes: PerDir,
    /// Stream bytes the capture lacks.
    pub missing_bytes: PerDir,
    pub segments: PerDir,
    /// Anomalies by [`Note::name`].
    pub anomalies: BTreeMap<String, u64>,
    /// Present when the client's first bytes were a TLS handshake record.
    pub tls: Option<TlsFacts>,
    /// Present when the connection was HTTP: a WebSocket upgrade (or a plain request on
    /// `--web-port`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub websocket: Option<WsFacts>,
}

/// Frames that held no TCP segment to analyse, by reason.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Skipped {
    pub not_ip: u64,
    pub not_tcp: u64,
    pub ip_fragments: u64,
    pub truncated_headers: u64,
    pub malformed: u64,
}

/// The whole capture.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CaptureSummary {
    pub frames: u64,
    pub tcp_segments: u64,
    pub skipped: Skipped,
    /// TCP connections seen, chat or not.
    pub tcp_connections: u64,
    /// Chat connections shown.
    pub chat_connections: u64,
    /// Their stream numbers.
    pub chat_streams: Vec<u64>,
    /// How many of them are TLS connections.
    pub tls_connections: u64,
    pub messages: BTreeMap<String, u64>,
    pub bytes: PerDir,
    pub anomalies: BTreeMap<String, u64>,
    pub first_ns: Option<u64>,
    pub last_ns: Option<u64>,
    /// Why reading stopped early, if it did.
    pub error: Option<String>,
}

/// What the analysis hands out, in order.
#[derive(Debug, Clone)]
pub enum Output {
    Start(ConnectionStart),
    Event(Event),
    End(Box<ConnectionEnd>),
}

fn hex_opt<S: serde::Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match bytes {
        Some(b) => hex(b, s),
        None => s.serialize_none(),
    }
}

fn hex<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    s.serialize_str(&out)
}
