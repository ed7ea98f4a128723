//! WebSocket (RFC 6455) in one direction of a reassembled TCP stream: the HTTP upgrade, the
//! frames after it, and the chat lines inside its text messages.
//!
//! The chat's web listener carries the protocol as one line per text message, without its
//! `\n` (`docs/protocol.md`, "WebSocket transport"). A [`Watch`] sits in front of the line
//! splitter of each direction: a stream that starts like an HTTP request (`GET /`) or response
//! (`HTTP/`) is read as HTTP heads; after an upgrade request, or a `101 Switching Protocols`
//! answer, as frames. Every other stream is handed back untouched, for the line splitter. The
//! text of each complete text message comes out as a [`RawLine`], so the analysis decodes and
//! explains it exactly as a line read from TCP.
//!
//! Sans-I/O and bounded, whatever the bytes: a head is held up to [`MAX_HEAD_BYTES`], a
//! message up to the line limit (its start past that), a control frame's payload up to 125
//! bytes; a payload of any declared length (up to 2^63 - 1) is skipped, never allocated.
//! Malformed input becomes a [`WsNote`] on the frame, or an [`Unreadable`] when the frames
//! can no longer be followed; nothing here panics on input.

use std::borrow::Cow;

use serde::Serialize;

use crate::chat::RawLine;
use crate::model::LineStatus;

/// The longest HTTP head (request or response line and headers) held before giving up.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// A control frame's payload limit (RFC 6455 5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// How a stream starts when it is HTTP: a request for a path, or a response.
const REQUEST_START: &[u8] = b"GET /";
const RESPONSE_START: &[u8] = b"HTTP/";

/// An HTTP request head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Request {
    pub method: String,
    /// The request target (the path).
    pub target: String,
    /// True when it asks to upgrade to WebSocket (`Upgrade: websocket`, `Connection:
    /// Upgrade`).
    pub websocket: bool,
    /// Subprotocols offered (`Sec-WebSocket-Protocol`).
    pub protocols: Vec<String>,
    pub origin: Option<String>,
    pub host: Option<String>,
    /// `Sec-WebSocket-Version` (13 for RFC 6455).
    pub version: Option<String>,
}

/// An HTTP response head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// True for `101` with `Upgrade: websocket`: frames follow.
    pub websocket: bool,
    /// The subprotocol chosen (`Sec-WebSocket-Protocol`).
    pub protocol: Option<String>,
}

/// One frame's header facts and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Frame {
    pub fin: bool,
    /// The three reserved bits (RSV1..3); 0 unless an extension was agreed (none is).
    pub rsv: u8,
    pub opcode: u8,
    /// `text`, `binary`, `continuation`, `close`, `ping`, `pong` or `reserved`.
    pub kind: &'static str,
    pub masked: bool,
    /// The payload length the header declares.
    pub len: u64,
    /// Header bytes (2 to 14).
    pub header_bytes: u8,
    /// For a close frame: its status code and reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close: Option<Close>,
    /// For a ping or pong: its payload as text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_text: Option<String>,
    pub notes: Vec<WsNote>,
}

/// A close frame's payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Close {
    /// `null` when the frame carries no status code.
    pub code: Option<u16>,
    /// What the code means (RFC 6455 7.4.1), as words.
    pub meaning: &'static str,
    pub reason: String,
}

/// Something unusual or wrong about a frame or the message it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "note", rename_all = "snake_case")]
pub enum WsNote {
    /// A client frame without a mask: a server must close the connection.
    UnmaskedClientFrame,
    /// A server frame with a mask: a client must close the connection.
    MaskedServerFrame,
    /// Reserved bits set without an extension that defines them.
    ReservedBits,
    /// An opcode RFC 6455 reserves (3-7, 11-15).
    ReservedOpcode,
    /// A control frame with more than 125 payload bytes.
    LongControlFrame,
    /// A control frame without FIN: control frames cannot be fragmented.
    FragmentedControlFrame,
    /// A continuation frame with no message to continue.
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message was still unfinished.
    InterruptedMessage,
    /// A length in more bytes than needed (126 for under 126, 127 for under 65536).
    NonMinimalLength,
    /// The message is longer than the line limit (the server closes with 1009).
    MessageTooLong { limit: u64 },
    /// A binary message: the chat is carried in text messages (the server closes with 1003).
    BinaryMessage,
    /// A text message that is not UTF-8 (the server closes with 1007).
    InvalidUtf8,
    /// A text message with `\r` or `\n` in it (the server closes with 1007).
    LineBreakInMessage,
    /// A close frame whose payload is one byte, or whose code may not be sent.
    BadClosePayload,
    /// A frame after this side's close frame.
    FrameAfterClose,
    /// Payload bytes of this frame are missing from the capture.
    PayloadMissing { bytes: u64 },
    /// The stream ended inside this frame, `missing` payload bytes short.
    EndedInsideFrame { missing: u64 },
}

impl WsNote {
    /// A short stable name (the JSON `note` value), used to count anomalies.
    pub fn name(self) -> &'static str {
        match self {
            WsNote::UnmaskedClientFrame => "unmasked_client_frame",
            WsNote::MaskedServerFrame => "masked_server_frame",
            WsNote::ReservedBits => "reserved_bits",
            WsNote::ReservedOpcode => "reserved_opcode",
            WsNote::LongControlFrame => "long_control_frame",
            WsNote::FragmentedControlFrame => "fragmented_control_frame",
            WsNote::UnexpectedContinuation => "unexpected_continuation",
            WsNote::InterruptedMessage => "interrupted_message",
            WsNote::NonMinimalLength => "non_minimal_length",
            WsNote::MessageTooLong { .. } => "message_too_long",
            WsNote::BinaryMessage => "binary_message",
            WsNote::InvalidUtf8 => "invalid_utf8",
            WsNote::LineBreakInMessage => "line_break_in_message",
            WsNote::BadClosePayload => "bad_close_payload",
            WsNote::FrameAfterClose => "frame_after_close",
            WsNote::PayloadMissing { .. } => "payload_missing",
            WsNote::EndedInsideFrame { .. } => "ended_inside_frame",
        }
    }

    /// What it means, in plain words.
    pub fn words(self) -> String {
        match self {
            WsNote::UnmaskedClientFrame => {
                "a client frame without a mask (a server must close the connection)".into()
            }
            WsNote::MaskedServerFrame => {
                "a server frame with a mask (a client must close the connection)".into()
            }
            WsNote::ReservedBits => "reserved bits set, though no extension was agreed".into(),
            WsNote::ReservedOpcode => "an opcode RFC 6455 reserves".into(),
            WsNote::LongControlFrame => {
                "a control frame longer than 125 bytes (not allowed)".into()
            }
            WsNote::FragmentedControlFrame => {
                "a control frame without FIN (control frames cannot be fragmented)".into()
            }
            WsNote::UnexpectedContinuation => {
                "a continuation frame with no message to continue".into()
            }
            WsNote::InterruptedMessage => {
                "a new message began before the fragmented one before it ended".into()
            }
            WsNote::NonMinimalLength => "its length is written in more bytes than needed".into(),
            WsNote::MessageTooLong { limit } => format!(
                "a message longer than the line limit of {limit} bytes (the server closes with 1009); only its start is shown"
            ),
            WsNote::BinaryMessage => {
                "a binary message: the chat is carried in text messages (the server closes with 1003)".into()
            }
            WsNote::InvalidUtf8 => {
                "a text message that is not UTF-8 (the server closes with 1007)".into()
            }
            WsNote::LineBreakInMessage => {
                "a text message with a line break in it: one message is one line (the server closes with 1007)".into()
            }
            WsNote::BadClosePayload => {
                "a close frame with a one-byte payload or a code that may not be sent".into()
            }
            WsNote::FrameAfterClose => "a frame after this side's close frame".into(),
            WsNote::PayloadMissing { bytes } => {
                format!("{bytes} bytes of its payload are missing from the capture")
            }
            WsNote::EndedInsideFrame { missing } => {
                format!("the stream ended inside this frame, {missing} payload bytes short")
            }
        }
    }
}

/// Why the rest of a direction cannot be read as HTTP or frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    pub reason: String,
}

/// What the watcher found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Request(Request),
    Response(Response),
    Frame(Frame),
    /// A complete (or cut) text message: one protocol line.
    Line(RawLine),
    Unreadable(Unreadable),
}

/// One direction's reading: not yet known, HTTP heads, frames, or handed back as plain bytes.
#[derive(Debug)]
pub struct Watch {
    state: State,
    /// The line limit: a message is shown up to it.
    max_message: usize,
    /// Pushes so far (each is one segment's in-order bytes), to count a message's segments.
    pushes: u32,
}

#[derive(Debug)]
enum State {
    /// The stream's first bytes, held while they could still start `GET /` or `HTTP/`.
    Sniff(Vec<u8>),
    /// Inside an HTTP head.
    Head {
        buf: Vec<u8>,
        request: bool,
    },
    /// Skipping a response's body before the next head.
    Body {
        left: u64,
    },
    Frames(Box<Frames>),
    /// Not HTTP: every byte goes to the line splitter.
    Plain,
    /// HTTP that cannot be followed any further (or frames lost): bytes are dropped.
    Stopped,
}

impl Watch {
    /// A watcher for a stream read from its start; `max_message`: the line limit.
    pub fn new(max_message: usize) -> Self {
        Self {
            state: State::Sniff(Vec::new()),
            max_message,
            pushes: 0,
        }
    }

    /// A watcher for a stream whose start was not captured: frame boundaries cannot be found,
    /// so everything is plain.
    pub fn off(max_message: usize) -> Self {
        Self {
            state: State::Plain,
            max_message,
            pushes: 0,
        }
    }

    /// Whether this direction is read as HTTP or WebSocket (not handed to the line splitter).
    pub fn is_web(&self) -> bool {
        !matches!(self.state, State::Sniff(_) | State::Plain)
    }

    /// Takes one segment's in-order bytes; returns the bytes that are not HTTP or WebSocket,
    /// for the line splitter.
    pub fn push<'d>(&mut self, data: &'d [u8], out: &mut Vec<Seen>) -> Option<Cow<'d, [u8]>> {
        self.pushes = self.pushes.wrapping_add(1);
        let mut data = data;
        loop {
            if data.is_empty() {
                return None;
            }
            match &mut self.state {
                State::Plain => return Some(Cow::Borrowed(data)),
                State::Stopped => return None,
                State::Sniff(held) => {
                    let take = (REQUEST_START.len() - held.len()).min(data.len());
                    held.extend_from_slice(&data[..take]);
                    let could_be = |start: &[u8]| start.starts_with(held);
                    if held.len() == REQUEST_START.len() && (held == REQUEST_START) {
                        self.state = State::Head {
                            buf: std::mem::take(held),
                            request: true,
                        };
                    } else if held.len() == RESPONSE_START.len() && held == RESPONSE_START {
                        self.state = State::Head {
                            buf: std::mem::take(held),
                            request: false,
                        };
                    } else if could_be(REQUEST_START) || could_be(RESPONSE_START) {
                        // All of `data` was taken, and it may yet be HTTP.
                        return None;
                    } else {
                        let mut plain = std::mem::take(held);
                        plain.extend_from_slice(&data[take..]);
                        self.state = State::Plain;
                        return Some(Cow::Owned(plain));
                    }
                    data = &data[take..];
                }
                State::Head { buf, request } => {
                    let request = *request;
                    let before = buf.len();
                    let room = MAX_HEAD_BYTES.saturating_sub(before);
                    let take = data.len().min(room);
                    buf.extend_from_slice(&data[..take]);
                    // Search from a little before the new bytes: the blank line may straddle.
                    let from = before.saturating_sub(3);
                    let Some(end) = head_end(&buf[from..]).map(|e| e + from) else {
                        if buf.len() >= MAX_HEAD_BYTES {
                            out.push(Seen::Unreadable(Unreadable {
                                reason: format!(
                                    "an HTTP head longer than {MAX_HEAD_BYTES} bytes; the rest of this direction is not read"
                                ),
                            }));
                            self.state = State::Stopped;
                        }
                        return None;
                    };
                    let used = end - before;
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    data = &data[used..];
                    self.state = if request {
                        let r = parse_request(&head);
                        let next = if r.websocket {
                            State::Frames(Box::new(Frames::new(true)))
                        } else {
                            match content_length(&head) {
                                Some(n) if n > 0 => State::Body { left: n },
                                _ => State::Head {
                                    buf: Vec::new(),
                                    request: true,
                                },
                            }
                        };
                        out.push(Seen::Request(r));
                        next
                    } else {
                        let r = parse_response(&head);
                        let chunked = header(&head, "transfer-encoding")
                            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
                        let next = if r.websocket {
                            State::Frames(Box::new(Frames::new(false)))
                        } else if chunked {
                            out.push(Seen::Unreadable(Unreadable {
                                reason:
                                    "a chunked HTTP body; the rest of this direction is not read"
                                        .into(),
                            }));
                            State::Stopped
                        } else {
                            match content_length(&head) {
                                Some(n) if n > 0 => State::Body { left: n },
                                _ => State::Head {
                                    buf: Vec::new(),
                                    request: false,
                                },
                            }
                        };
                        out.push(Seen::Response(r));
                        next
                    };
                }
                State::Body { left } => {
                    let take = (*left).min(data.len() as u64);
                    *left -= take;
                    data = &data[take as usize..];
                    if *left == 0 {
                        self.state = State::Head {
                            buf: Vec::new(),
                            request: false,
                        };
                    }
                }
                State::Frames(frames) => {
                    let pushes = self.pushes;
                    if let Err(why) = frames.push(data, self.max_message, pushes, out) {
                        out.push(Seen::Unreadable(Unreadable { reason: why }));
                        self.state = State::Stopped;
                    }
                    return None;
                }
            }
        }
    }

    /// `n` stream bytes are missing here; returns held bytes that turn out to be plain.
    pub fn gap(&mut self, n: u64, out: &mut Vec<Seen>) -> Option<Vec<u8>> {
        match &mut self.state {
            State::Sniff(held) => {
                let held = std::mem::take(held);
                self.state = State::Plain;
                (!held.is_empty()).then_some(held)
            }
            State::Plain | State::Stopped => None,
            State::Head { .. } => {
                out.push(Seen::Unreadable(Unreadable {
                    reason: "bytes missing from the capture inside an HTTP head; the rest of this direction is not read".into(),
                }));
                self.state = State::Stopped;
                None
            }
            State::Body { left } => {
                if n <= *left {
                    *left -= n;
                } else {
                    out.push(Seen::Unreadable(Unreadable {
                        reason: "bytes missing from the capture past an HTTP body; the rest of this direction is not read".into(),
                    }));
                    self.state = State::Stopped;
                }
                None
            }
            State::Frames(frames) => {
                if !frames.gap(n, self.max_message, out) {
                    out.push(Seen::Unreadable(Unreadable {
                        reason: "bytes missing from the capture across a frame header: frame boundaries are lost, the rest of this direction is not decoded".into(),
                    }));
                    self.state = State::Stopped;
                }
                None
            }
        }
    }

    /// The stream ended; returns held bytes that turn out to be plain.
    pub fn finish(&mut self, out: &mut Vec<Seen>) -> Option<Vec<u8>> {
        match std::mem::replace(&mut self.state, State::Stopped) {
            State::Sniff(held) => {
                self.state = State::Plain;
                (!held.is_empty()).then_some(held)
            }
            State::Plain => {
                self.state = State::Plain;
                None
            }
            State::Head { buf, .. } if !buf.is_empty() => {
                out.push(Seen::Unreadable(Unreadable {
                    reason: "the stream ended inside an HTTP head".into(),
                }));
                None
            }
            State::Frames(mut frames) => {
                frames.finish(self.max_message, out);
                None
            }
            State::Head { .. } | State::Body { .. } | State::Stopped => None,
        }
    }
}

/// Where the blank line ending a head is, counting it: `\r\n\r\n` or a bare `\n\n`.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A header's value (the first one named `name`, any case), trimmed.
fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// Whether a header's comma-separated tokens include `token` (any case).
fn has_token(head: &str, name: &str, token: &str) -> bool {
    header(head, name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

fn content_length(head: &str) -> Option<u64> {
    header(head, "content-length")?.parse().ok()
}

fn parse_request(head: &str) -> Request {
    let first = head.lines().next().unwrap_or_default();
    let mut words = first.split(' ');
    let method = words.next().unwrap_or_default().to_owned();
    let target = words.next().unwrap_or_default().to_owned();
    Request {
        method,
        target,
        websocket: has_token(head, "upgrade", "websocket")
            && has_token(head, "connection", "upgrade"),
        protocols: header(head, "sec-websocket-protocol")
            .map(|v| {
                v.split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
        origin: header(head, "origin").map(str::to_owned),
        host: header(head, "host").map(str::to_owned),
        version: header(head, "sec-websocket-version").map(str::to_owned),
    }
}

fn parse_response(head: &str) -> Response {
    let first = head.lines().next().unwrap_or_default().trim_end();
    let mut words = first.splitn(3, ' ');
    let _version = words.next();
    let status = words.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let reason = words.next().unwrap_or_default().to_owned();
    Response {
        status,
        reason,
        websocket: status == 101 && has_token(head, "upgrade", "websocket"),
        protocol: header(head, "sec-websocket-protocol").map(str::to_owned),
    }
}

/// The frame reader of one direction.
#[derive(Debug)]
struct Frames {
    from_client: bool,
    /// Header bytes of the frame being read, until it is whole.
    hdr: [u8; 14],
    hdr_len: usize,
    cur: Option<Cur>,
    msg: Option<Msg>,
    closed: bool,
}

/// The frame whose payload is being read.
#[derive(Debug)]
struct Cur {
    frame: Frame,
    mask: Option<[u8; 4]>,
    /// Payload bytes still to come.
    left: u64,
    /// Payload bytes seen (or missed) so far, for the mask's position.
    pos: u64,
    /// A control frame's payload (up to 125 bytes), unmasked.
    control: Vec<u8>,
    /// Whether the payload belongs to the message being assembled.
    data: bool,
}

/// A text or binary message being assembled from its frames.
#[derive(Debug)]
struct Msg {
    text: bool,
    /// Its first bytes, up to the line limit.
    bytes: Vec<u8>,
    total: u64,
    wire: u64,
    segments: u32,
    last_push: u32,
    cut: bool,
}

impl Frames {
    fn new(from_client: bool) -> Self {
        Self {
            from_client,
            hdr: [0; 14],
            hdr_len: 0,
            cur: None,
            msg: None,
            closed: false,
        }
    }

    fn push(
        &mut self,
        mut data: &[u8],
        max_message: usize,
        push: u32,
        out: &mut Vec<Seen>,
    ) -> Result<(), String> {
        while !data.is_empty() {
            let Some(cur) = self.cur.as_mut() else {
                let used = self.header(data)?;
                data = &data[used..];
                if let Some(cur) = &self.cur {
                    if cur.left == 0 {
                        self.end_frame(max_message, out);
                    }
                }
                continue;
            };
            let take = cur.left.min(data.len() as u64) as usize;
            let chunk = &data[..take];
            data = &data[take..];
            let unmask = |i: usize, b: u8, pos: u64, mask: Option<[u8; 4]>| match mask {
                Some(m) => b ^ m[((pos + i as u64) % 4) as usize],
                None => b,
            };
            if cur.data {
                if let Some(msg) = self.msg.as_mut() {
                    let room = (max_message + 1).saturating_sub(msg.bytes.len());
                    msg.bytes.extend(
                        chunk
                            .iter()
                            .take(room)
                            .enumerate()
                            .map(|(i, b)| unmask(i, *b, cur.pos, cur.mask)),
                    );
                    msg.total += take as u64;
                    if msg.last_push != push {
                        msg.last_push = push;
                        msg.segments += 1;
                    }
                }
            } else if cur.frame.opcode >= 8 {
                let room = (MAX_CONTROL_PAYLOAD as usize).saturating_sub(cur.control.len());
                cur.control.extend(
                    chunk
                        .iter()
                        .take(room)
                        .enumerate()
                        .map(|(i, b)| unmask(i, *b, cur.pos, cur.mask)),
                );
            }
            cur.pos += take as u64;
            cur.left -= take as u64;
            if cur.left == 0 {
                self.end_frame(max_message, out);
            }
        }
        Ok(())
    }

    /// Reads header bytes from `data`; once the header is whole, starts the frame. Returns the
    /// bytes used.
    fn header(&mut self, data: &[u8]) -> Result<usize, String> {
        let mut used = 0;
        let need = |hdr: &[u8], have: usize| -> usize {
            if have < 2 {
                return 2;
            }
            let ext = match hdr[1] & 0x7f {
                126 => 2,
                127 => 8,
                _ => 0,
            };
            let mask = if hdr[1] & 0x80 != 0 { 4 } else { 0 };
            2 + ext + mask
        };
        loop {
            let want = need(&self.hdr, self.hdr_len);
            if self.hdr_len == want {
                break;
            }
            let Some(&b) = data.get(used) else {
                return Ok(used);
            };
            self.hdr[self.hdr_len] = b;
            self.hdr_len += 1;
            used += 1;
        }
        let h = &self.hdr[..self.hdr_len];
        let fin = h[0] & 0x80 != 0;
        let rsv = (h[0] >> 4) & 0x07;
        let opcode = h[0] & 0x0f;
        let masked = h[1] & 0x80 != 0;
        let mut notes = Vec::new();
        let (len, at) = match h[1] & 0x7f {
            126 => {
                let len = u64::from(u16::from_be_bytes([h[2], h[3]]));
                if len < 126 {
                    notes.push(WsNote::NonMinimalLength);
                }
                (len, 4)
            }
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&h[2..10]);
                let len = u64::from_be_bytes(b);
                if len >> 63 != 0 {
                    return Err(format!(
                        "a frame header declares {len} payload bytes, more than 2^63 - 1 (the most significant bit must be 0): not a WebSocket frame, the rest of this direction is not decoded"
                    ));
                }
                if len < 65_536 {
                    notes.push(WsNote::NonMinimalLength);
                }
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        let mask = masked.then(|| [h[at], h[at + 1], h[at + 2], h[at + 3]]);
        let header_bytes = self.hdr_len as u8;
        self.hdr_len = 0;
        if self.from_client && !masked {
            notes.push(WsNote::UnmaskedClientFrame);
        }
        if !self.from_client && masked {
            notes.push(WsNote::MaskedServerFrame);
        }
        if rsv != 0 {
            notes.push(WsNote::ReservedBits);
        }
        if self.closed {
            notes.push(WsNote::FrameAfterClose);
        }
        let kind = match opcode {
            0 => "continuation",
            1 => "text",
            2 => "binary",
            8 => "close",
            9 => "ping",
            10 => "pong",
            _ => {
                notes.push(WsNote::ReservedOpcode);
                "reserved"
            }
        };
        let control = opcode >= 8;
        if control && len > MAX_CONTROL_PAYLOAD {
            notes.push(WsNote::LongControlFrame);
        }
        if control && !fin {
            notes.push(WsNote::FragmentedControlFrame);
        }
        let mut data = false;
        match opcode {
            1 | 2 => {
                if self.msg.is_some() {
                    notes.push(WsNote::InterruptedMessage);
                }
                self.msg = Some(Msg {
                    text: opcode == 1,
                    bytes: Vec::new(),
                    total: 0,
                    wire: 0,
                    segments: 0,
                    last_push: 0,
                    cut: false,
                });
                data = true;
            }
            0 if self.msg.is_none() => notes.push(WsNote::UnexpectedContinuation),
            0 => data = true,
            _ => {}
        }
        if let (true, Some(msg)) = (data, self.msg.as_mut()) {
            msg.wire = msg.wire.saturating_add(u64::from(header_bytes) + len);
        }
        self.cur = Some(Cur {
            frame: Frame {
                fin,
                rsv,
                opcode,
                kind,
                masked,
                len,
                header_bytes,
                close: None,
                payload_text: None,
                notes,
            },
            mask,
            left: len,
            pos: 0,
            control: Vec::new(),
            data,
        });
        Ok(used)
    }

    /// The current frame's payload is all read (or `missing` bytes short at the end).
    fn end_frame(&mut self, max_message: usize, out: &mut Vec<Seen>) {
        let Some(cur) = self.cur.take() else {
            return;
        };
        let mut frame = cur.frame;
        match frame.opcode {
            8 => {
                self.closed = true;
                frame.close = Some(close_of(&cur.control, &mut frame.notes));
            }
            9 | 10 => frame.payload_text = Some(crate::chat::printable(&cur.control)),
            _ => {}
        }
        let message = if cur.data && frame.fin {
            self.msg.take()
        } else {
            None
        };
        let line = message.and_then(|m| message_line(m, max_message, &mut frame.notes));
        out.push(Seen::Frame(frame));
        if let Some(line) = line {
            out.push(Seen::Line(line));
        }
    }

    /// `n` bytes are missing; false when that loses the frame boundaries.
    fn gap(&mut self, n: u64, max_message: usize, out: &mut Vec<Seen>) -> bool {
        let Some(cur) = self.cur.as_mut() else {
            return false;
        };
        if n > cur.left {
            return false;
        }
        cur.left -= n;
        cur.pos += n;
        cur.frame.notes.push(WsNote::PayloadMissing { bytes: n });
        if cur.data {
            if let Some(msg) = self.msg.as_mut() {
                msg.cut = true;
                msg.total += n;
            }
        }
        if cur.left == 0 {
            self.end_frame(max_message, out);
        }
        true
    }

    fn finish(&mut self, max_message: usize, out: &mut Vec<Seen>) {
        if let Some(mut cur) = self.cur.take() {
            cur.frame
                .notes
                .push(WsNote::EndedInsideFrame { missing: cur.left });
            let message = if cur.data { self.msg.take() } else { None };
            let mut frame = cur.frame;
            let line = message.and_then(|m| {
                message_line(m, max_message, &mut frame.notes).map(|mut l| {
                    if l.status == LineStatus::Complete {
                        l.status = LineStatus::Unterminated;
                    }
                    l
                })
            });
            out.push(Seen::Frame(frame));
            out.extend(line.map(Seen::Line));
        } else if self.hdr_len > 0 {
            out.push(Seen::Unreadable(Unreadable {
                reason: format!(
                    "the stream ended inside a frame header ({} of its bytes)",
                    self.hdr_len
                ),
            }));
        }
        if let Some(m) = self.msg.take() {
            // A fragmented message whose last frame never came.
            let mut notes = Vec::new();
            if let Some(mut line) = message_line(m, max_message, &mut notes) {
                if line.status == LineStatus::Complete {
                    line.status = LineStatus::Unterminated;
                }
                out.push(Seen::Line(line));
            }
        }
    }
}

/// A finished message as a line, with notes about it on its last frame; `None` for a binary
/// message (not a chat line).
fn message_line(m: Msg, max_message: usize, notes: &mut Vec<WsNote>) -> Option<RawLine> {
    if !m.text {
        notes.push(WsNote::BinaryMessage);
        return None;
    }
    let overlong = m.total > max_message as u64;
    let mut bytes = m.bytes;
    if overlong {
        notes.push(WsNote::MessageTooLong {
            limit: max_message as u64,
        });
        bytes.truncate(tcpchat_proto::OVERLONG_HEAD_BYTES.min(max_message));
    } else if !m.cut {
        if std::str::from_utf8(&bytes).is_err() {
            notes.push(WsNote::InvalidUtf8);
        }
        if bytes.iter().any(|b| *b == b'\n' || *b == b'\r') {
            notes.push(WsNote::LineBreakInMessage);
        }
    }
    let status = if overlong {
        LineStatus::Overlong
    } else if m.cut {
        LineStatus::CutByGap
    } else {
        LineStatus::Complete
    };
    Some(RawLine {
        bytes,
        wire_bytes: m.wire,
        segments: m.segments.max(1),
        status,
    })
}

/// A close frame's payload: a code and a reason, or nothing.
fn close_of(payload: &[u8], notes: &mut Vec<WsNote>) -> Close {
    match payload {
        [] => Close {
            code: None,
            meaning: "no status code",
            reason: String::new(),
        },
        [_] => {
            notes.push(WsNote::BadClosePayload);
            Close {
                code: None,
                meaning: "a one-byte payload (a code takes two)",
                reason: String::new(),
            }
        }
        [hi, lo, rest @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let meaning = close_meaning(code);
            if matches!(code, 0..=999 | 1004 | 1005 | 1006 | 1015 | 1016..=2999) {
                notes.push(WsNote::BadClosePayload);
            }
            if std::str::from_utf8(rest).is_err() {
                notes.push(WsNote::InvalidUtf8);
            }
            Close {
                code: Some(code),
                meaning,
                reason: crate::chat::printable(rest),
            }
        }
    }
}

/// What a close code means (RFC 6455 7.4.1 and the IANA registry), and what the chat's
/// server means by the codes it sends.
pub fn close_meaning(code: u16) -> &'static str {
    match code {
        1000 => "normal closure",
        1001 => "going away",
        1002 => "protocol error",
        1003 => "unsupported data; the chat server's answer to a binary message",
        1005 => "no status code (may not be sent)",
        1006 => "closed abnormally (may not be sent)",
        1007 => {
            "invalid payload; the chat server's answer to a message not UTF-8 or with a line break"
        }
        1008 => "policy violation",
        1009 => "message too big; the chat server's answer to a message over the line limit",
        1010 => "a required extension is missing",
        1011 => "internal error",
        1012 => "service restart",
        1013 => "try again later; the chat server's BUSY",
        1014 => "bad gateway",
        1015 => "TLS handshake failure (may not be sent)",
        3000..=3999 => "registered for libraries and frameworks",
        4000..=4999 => "private use",
        _ => "not a valid close code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(fin: bool, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(m | n as u8),
            n if n < 65_536 => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(k) => {
                out.extend_from_slice(&k);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => out.extend_from_slice(payload),
        }
        out
    }

    const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: tcpchat\r\n\r\n";

    /// Feeds `data` split at every byte boundary into two pushes; returns what came out.
    fn every_split(data: &[u8]) -> Vec<Vec<Seen>> {
        (0..=data.len())
            .map(|cut| {
                let mut w = Watch::new(4096);
                let mut out = Vec::new();
                assert!(w.push(&data[..cut], &mut out).is_none());
                assert!(w.push(&data[cut..], &mut out).is_none());
                assert!(w.finish(&mut out).is_none());
                out
            })
            .collect()
    }

    fn lines(seen: &[Seen]) -> Vec<String> {
        seen.iter()
            .filter_map(|s| match s {
                Seen::Line(l) => Some(String::from_utf8_lossy(&l.bytes).into_owned()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_upgrade_then_masked_lines_at_every_split() {
        let mut data = UPGRADE.to_vec();
        data.extend(frame(true, 1, Some([1, 2, 3, 4]), b"HELLO-FROM alice"));
        data.extend(frame(true, 9, Some([9, 9, 9, 9]), b"hi"));
        data.extend(frame(false, 1, Some([5, 6, 7, 8]), b"SEND bob he"));
        data.extend(frame(true, 0, Some([7, 7, 7, 7]), b"llo"));
        data.extend(frame(
            true,
            8,
            Some([0, 0, 0, 1]),
            &[0x03, 0xe8, b'b', b'y', b'e'],
        ));
        for out in every_split(&data) {
            let Seen::Request(r) = &out[0] else {
                panic!("the request first: {out:?}")
            };
            assert!(r.websocket);
            assert_eq!(r.target, "/ws");
            assert_eq!(r.protocols, ["tcpchat"]);
            assert_eq!(lines(&out), ["HELLO-FROM alice", "SEND bob hello"]);
            let frames: Vec<&Frame> = out
                .iter()
                .filter_map(|s| match s {
                    Seen::Frame(f) => Some(f),
                    _ => None,
                })
                .collect();
            assert_eq!(frames.len(), 5);
            assert!(frames.iter().all(|f| f.notes.is_empty()), "{frames:?}");
            assert_eq!(frames[1].payload_text.as_deref(), Some("hi"));
            let close = frames[4].close.as_ref().expect("a close frame");
            assert_eq!((close.code, close.reason.as_str()), (Some(1000), "bye"));
            let fragmented = out.iter().find_map(|s| match s {
                Seen::Line(l) if l.bytes.starts_with(b"SEND") => Some(l),
                _ => None,
            });
            assert_eq!(fragmented.map(|l| l.wire_bytes), Some(6 + 11 + 6 + 3));
        }
    }

    #[test]
    fn a_server_answer_then_unmasked_lines() {
        let mut data = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: tcpchat\r\n\r\n".to_vec();
        data.extend(frame(true, 1, None, b"HELLO alice"));
        data.extend(frame(true, 1, Some([1, 1, 1, 1]), b"SEND-OK"));
        for out in every_split(&data) {
            let Seen::Response(r) = &out[0] else {
                panic!("the response first")
            };
            assert!(r.websocket && r.status == 101);
            assert_eq!(r.protocol.as_deref(), Some("tcpchat"));
            assert_eq!(lines(&out), ["HELLO alice", "SEND-OK"]);
            let notes: Vec<WsNote> = out
                .iter()
                .filter_map(|s| match s {
                    Seen::Frame(f) => Some(f.notes.clone()),
                    _ => None,
                })
                .flatten()
                .collect();
            assert_eq!(notes, [WsNote::MaskedServerFrame]);
        }
    }

    #[test]
    fn a_chat_stream_is_handed_back_whole() {
        for first in [&b"G"[..], b"GE", b"H", b"W", b"GET", b"HTTP"] {
            let mut w = Watch::new(4096);
            let mut out = Vec::new();
            let mut plain = Vec::new();
            for part in [first, b"X LIST\n"] {
                if let Some(p) = w.push(part, &mut out) {
                    plain.extend_from_slice(&p);
                }
            }
            let mut whole = first.to_vec();
            whole.extend_from_slice(b"X LIST\n");
            assert_eq!(plain, whole, "{first:?}");
            assert!(out.is_empty() && !w.is_web());
        }
        let mut w = Watch::new(4096);
        let mut out = Vec::new();
        assert!(w.push(b"GE", &mut out).is_none());
        assert_eq!(
            w.finish(&mut out),
            Some(b"GE".to_vec()),
            "held bytes are not lost"
        );
    }

    #[test]
    fn bad_frames_are_notes() {
        let mut data = UPGRADE.to_vec();
        data.extend(frame(true, 1, None, b"LIST"));
        data.extend(frame(true, 0, Some([1, 2, 3, 4]), b"x"));
        data.extend(frame(true, 2, Some([1, 2, 3, 4]), b"bin"));
        data.extend(frame(false, 9, Some([1, 2, 3, 4]), &[b'p'; 126]));
        data.extend(frame(true, 1, Some([1, 2, 3, 4]), b"A\nB"));
        data.extend(frame(true, 1, Some([1, 2, 3, 4]), &[0xff, 0xfe]));
        data.extend(frame(true, 8, Some([1, 2, 3, 4]), &[0x03]));
        data.extend(frame(true, 1, Some([1, 2, 3, 4]), &[b'a'; 5000]));
        let mut w = Watch::new(4096);
        let mut out = Vec::new();
        w.push(&data, &mut out);
        w.finish(&mut out);
        let names: Vec<&str> = out
            .iter()
            .filter_map(|s| match s {
                Seen::Frame(f) => Some(f.notes.iter().map(|n| n.name())),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(
            names,
            [
                "unmasked_client_frame",
                "unexpected_continuation",
                "binary_message",
                "long_control_frame",
                "fragmented_control_frame",
                "line_break_in_message",
                "invalid_utf8",
                "bad_close_payload",
                "frame_after_close",
                "message_too_long",
            ]
        );
        let overlong = out.iter().find_map(|s| match s {
            Seen::Line(l) if l.status == LineStatus::Overlong => Some(l),
            _ => None,
        });
        assert!(overlong.is_some_and(|l| l.bytes.len() <= 4096));
    }

    #[test]
    fn absurd_lengths_stop_decoding_without_allocating() {
        let mut data = UPGRADE.to_vec();
        data.extend([0x81, 0xff]);
        data.extend(u64::MAX.to_be_bytes());
        data.extend([0u8; 64]);
        let mut w = Watch::new(4096);
        let mut out = Vec::new();
        w.push(&data, &mut out);
        w.finish(&mut out);
        assert!(
            matches!(out.last(), Some(Seen::Unreadable(u)) if u.reason.contains("2^63")),
            "{out:?}"
        );
        // The largest legal length: skipped as it streams, the end noted.
        let mut data = UPGRADE.to_vec();
        data.extend([0x81, 0xff]);
        data.extend((i64::MAX as u64).to_be_bytes());
        data.extend([1, 2, 3, 4]);
        data.extend([b'a'; 10_000]);
        let mut w = Watch::new(4096);
        let mut out = Vec::new();
        w.push(&data, &mut out);
        w.finish(&mut out);
        let Some(Seen::Frame(f)) = out.iter().find(|s| matches!(s, Seen::Frame(_))) else {
            panic!("the frame is reported at the end: {out:?}")
        };
        assert!(
            f.notes.contains(&WsNote::EndedInsideFrame {
                missing: i64::MAX as u64 - 10_000
            }),
            "{f:?}"
        );
        assert!(matches!(out.last(), Some(Seen::Line(l)) if l.status == LineStatus::Overlong));
    }

    #[test]
    fn a_gap_inside_a_payload_keeps_the_frames() {
        let mut w = Watch::new(4096);
        let mut out = Vec::new();
        w.push(UPGRADE, &mut out);
        let f = frame(true, 1, Some([1, 2, 3, 4]), b"SEND bob hello there");
        w.push(&f[..10], &mut out);
        assert!(w.gap(5, &mut out).is_none());
        w.push(&f[15..], &mut out);
        w.push(&frame(true, 1, Some([4, 3, 2, 1]), b"LIST"), &mut out);
        let statuses: Vec<LineStatus> = out
            .iter()
            .filter_map(|s| match s {
                Seen::Line(l) => Some(l.status),
                _ => None,
            })
            .collect();
        assert_eq!(statuses, [LineStatus::CutByGap, LineStatus::Complete]);
        // Across a header: lost.
        w.push(&[0x81], &mut out);
        w.gap(3, &mut out);
        assert!(matches!(out.last(), Some(Seen::Unreadable(_))));
    }

    #[test]
    fn plain_http_is_followed_past_its_body() {
        let mut w = Watch::new(4096);
        let mut out = Vec::new();
        w.push(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 403 Forbidden\r\n\r\n",
            &mut out,
        );
        let statuses: Vec<u16> = out
            .iter()
            .filter_map(|s| match s {
                Seen::Response(r) => Some(r.status),
                _ => None,
            })
            .collect();
        assert_eq!(statuses, [200, 403]);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_after_an_upgrade_are_read_within_bounds(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
            cuts in proptest::collection::vec(0usize..2048, 0..6),
            gap in proptest::option::of(1u64..100_000),
        ) {
            let mut w = Watch::new(64);
            let mut out = Vec::new();
            w.push(UPGRADE, &mut out);
            let mut at = 0;
            let mut cuts = cuts;
            cuts.sort_unstable();
            for c in cuts.into_iter().chain([bytes.len()]) {
                let c = c.min(bytes.len());
                if c > at {
                    proptest::prop_assert!(w.push(&bytes[at..c], &mut out).is_none());
                    at = c;
                }
            }
            if let Some(n) = gap {
                w.gap(n, &mut out);
            }
            w.finish(&mut out);
            for s in &out {
                if let Seen::Line(l) = s {
                    proptest::prop_assert!(l.bytes.len() <= 65);
                }
                if let Seen::Frame(f) = s {
                    proptest::prop_assert!(f.payload_text.as_ref().is_none_or(|t| t.len() <= 125 * 4));
                }
            }
        }
    }
}
