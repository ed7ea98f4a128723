//! Writing the analysis out: a timeline per connection for people, JSON lines for machines.
//!
//! The text view holds a connection's events until the connection ends (then prints them as
//! one block), but never more than [`MAX_BUFFERED_EVENTS`] of them: past that it prints what it
//! has and goes on. The JSON view prints each output as it comes.

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use crate::model::{
    CaptureSummary, ConnectionEnd, ConnectionStart, Dir, EndState, Event, EventKind, FoundBy,
    GapReason, Line, LineStatus, Note, Output, Role, Segment, TlsEvent, TlsFacts, WsEvent, WsFacts,
};

/// Events a text view holds per connection before printing them early.
pub const MAX_BUFFERED_EVENTS: usize = 5_000;

/// Events a text view holds across all connections; past this, every connection's events so
/// far are printed (a capture with thousands of interleaved open connections).
pub const MAX_TOTAL_BUFFERED_EVENTS: usize = 50_000;

/// Chat connection numbers listed in the summary before the rest are only counted.
const LISTED_STREAMS: usize = 20;

/// Something that prints outputs.
pub trait Render {
    /// Takes one output.
    ///
    /// # Errors
    /// Writing failed.
    fn output(&mut self, output: Output) -> io::Result<()>;
    /// Prints the capture summary at the end.
    ///
    /// # Errors
    /// Writing failed.
    fn summary(&mut self, summary: &CaptureSummary) -> io::Result<()>;
}

/// One JSON object per line: `connection_start`, `segment`, `line`, `gap`, `connection_end`,
/// and a final `summary` (see `docs/trace.md`).
pub struct JsonRender<W: Write> {
    out: W,
}

impl<W: Write> JsonRender<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Record<'a> {
    ConnectionStart(&'a ConnectionStart),
    ConnectionEnd(&'a ConnectionEnd),
    Summary(&'a CaptureSummary),
}

impl<W: Write> Render for JsonRender<W> {
    fn output(&mut self, output: Output) -> io::Result<()> {
        match &output {
            Output::Start(s) => serde_json::to_writer(&mut self.out, &Record::ConnectionStart(s))?,
            Output::Event(e) => serde_json::to_writer(&mut self.out, e)?,
            Output::End(e) => serde_json::to_writer(&mut self.out, &Record::ConnectionEnd(e))?,
        }
        self.out.write_all(b"\n")
    }

    fn summary(&mut self, summary: &CaptureSummary) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, &Record::Summary(summary))?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

/// ANSI styles, or none.
#[derive(Debug, Clone, Copy)]
struct Paint {
    on: bool,
}

impl Paint {
    fn p(self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn bold(self, t: &str) -> String {
        self.p("1", t)
    }
    fn dim(self, t: &str) -> String {
        self.p("2", t)
    }
    fn red(self, t: &str) -> String {
        self.p("31", t)
    }
    fn green(self, t: &str) -> String {
        self.p("32", t)
    }
    fn yellow(self, t: &str) -> String {
        self.p("33", t)
    }
    fn blue(self, t: &str) -> String {
        self.p("34", t)
    }
    fn magenta(self, t: &str) -> String {
        self.p("35", t)
    }
    fn cyan(self, t: &str) -> String {
        self.p("36", t)
    }
}

/// A TLS event's name, its explanation, and whether it is a normal step.
fn tls_words(tls: &TlsEvent) -> (&'static str, String, bool) {
    match tls {
        TlsEvent::ClientHello(c) => {
            let mut words = match &c.server_name {
                Some(name) => format!("a TLS client asks for {name}"),
                None => "a TLS client (no server name sent)".to_string(),
            };
            words.push_str(&format!(", offering {}", c.offered_versions.join(", ")));
            if !c.alpn.is_empty() {
                words.push_str(&format!(" (ALPN {})", c.alpn.join(", ")));
            }
            words.push_str("; the rest of its side is encrypted");
            ("TLS ClientHello", words, true)
        }
        TlsEvent::ServerHello(s) if s.hello_retry => (
            "TLS HelloRetryRequest",
            format!("the server wants another ClientHello ({})", s.version),
            true,
        ),
        TlsEvent::ServerHello(s) => (
            "TLS ServerHello",
            format!(
                "the server chose {}; from here on the connection is encrypted",
                s.version
            ),
            true,
        ),
        TlsEvent::Unreadable(u) => (
            "TLS",
            format!("a hello that cannot be read: {}", u.reason),
            false,
        ),
    }
}

/// An HTTP head's or frame's name, its explanation, and whether all is well; `None` for a
/// frame not worth a line of its own (a whole text message in one frame: its line says it).
fn ws_words(ws: &WsEvent) -> Option<(String, String, bool)> {
    Some(match ws {
        WsEvent::Request(r) if r.websocket => {
            let mut words = format!("the client asks to upgrade {} to a WebSocket", r.target);
            if !r.protocols.is_empty() {
                words.push_str(&format!(
                    ", offering the subprotocol {}",
                    r.protocols.join(", ")
                ));
            }
            if let Some(origin) = &r.origin {
                words.push_str(&format!(" (a browser page from {origin})"));
            }
            (format!("HTTP {} {}", r.method, r.target), words, true)
        }
        WsEvent::Request(r) => (
            format!("HTTP {} {}", r.method, r.target),
            "an HTTP request, not a WebSocket upgrade (the page or its assets)".to_string(),
            true,
        ),
        WsEvent::Response(r) if r.websocket => {
            let mut words = "the server switches to WebSocket".to_string();
            if let Some(p) = &r.protocol {
                words.push_str(&format!(" with the subprotocol {p}"));
            }
            words.push_str("; from here on, frames, each text message one chat line");
            (format!("HTTP {} {}", r.status, r.reason), words, true)
        }
        WsEvent::Response(r) => {
            let ok = (200..400).contains(&r.status);
            let words = if ok {
                "an HTTP answer (no WebSocket)".to_string()
            } else {
                "the server refuses: no WebSocket on this connection".to_string()
            };
            (format!("HTTP {} {}", r.status, r.reason), words, ok)
        }
        WsEvent::Frame(f) => {
            let notable = !f.notes.is_empty() || f.opcode >= 8 || !f.fin || f.opcode == 0;
            if !notable {
                return None;
            }
            let mut what = format!("ws {}", f.kind);
            what.push_str(&format!(
                " [{}{}len={}]",
                if f.fin { "FIN " } else { "" },
                if f.masked { "masked " } else { "" },
                f.len
            ));
            let mut words = match (f.kind, &f.close, &f.payload_text) {
                ("close", Some(c), _) => {
                    let code = match c.code {
                        Some(code) => format!("close {code} ({})", c.meaning),
                        None => format!("close, {}", c.meaning),
                    };
                    if c.reason.is_empty() {
                        format!("{code}: this side ends the WebSocket")
                    } else {
                        format!("{code} \"{}\": this side ends the WebSocket", c.reason)
                    }
                }
                ("ping", _, Some(t)) => {
                    format!("ping \"{t}\" (the other side answers with a pong; not a chat PING)")
                }
                ("pong", _, Some(t)) => format!("pong \"{t}\", the answer to a ping"),
                ("continuation", ..) if f.fin => "the last fragment of a message".to_string(),
                ("continuation", ..) => "a middle fragment of a message".to_string(),
                _ if !f.fin => format!("the first fragment of a {} message", f.kind),
                (kind, ..) => format!("a {kind} frame"),
            };
            for n in &f.notes {
                words.push_str("; ");
                words.push_str(&n.words());
            }
            (what, words, f.notes.is_empty())
        }
        WsEvent::Unreadable(u) => ("WebSocket".to_string(), u.reason.clone(), false),
    })
}

/// The footer line of a WebSocket connection.
fn ws_summary(ws: &WsFacts) -> String {
    let mut words = match (&ws.path, ws.status) {
        (Some(path), Some(101)) => format!("upgraded on {path}"),
        (Some(path), Some(status)) => format!("upgrade on {path} refused with {status}"),
        (Some(path), None) => format!("upgrade on {path}, no answer captured"),
        (None, _) => "plain HTTP, no WebSocket".to_string(),
    };
    if let Some(p) = &ws.protocol {
        words.push_str(&format!(" (subprotocol {p})"));
    }
    if ws.frames.total() > 0 {
        words.push_str(&format!(
            "; {} client→server, {} server→client",
            plural(ws.frames.client_to_server, "frame"),
            ws.frames.server_to_client
        ));
    }
    for (who, close) in [("client", &ws.client_close), ("server", &ws.server_close)] {
        if let Some(c) = close {
            match c.code {
                Some(code) => {
                    words.push_str(&format!("; the {who} closed with {code} ({})", c.meaning))
                }
                None => words.push_str(&format!("; the {who} closed without a code")),
            }
        }
    }
    words
}

/// The footer line of a TLS connection.
fn tls_summary(tls: &TlsFacts) -> String {
    let mut words = match (&tls.version, &tls.server_name) {
        (Some(v), Some(name)) => format!("{v} for {name}"),
        (Some(v), None) => format!("{v} (no server name)"),
        (None, Some(name)) => format!("a TLS client for {name}; no ServerHello captured"),
        (None, None) => "a TLS client; no ServerHello captured".to_string(),
    };
    if let Some(why) = &tls.unreadable {
        words.push_str(&format!("; a hello could not be read ({why})"));
    }
    if tls.version.is_some() {
        words.push_str(
            "; the content is encrypted, so its chat messages cannot be shown (the capture \
             holds only ciphertext)",
        );
    } else {
        words.push_str("; anything after the hellos is encrypted, so no chat message can be shown");
    }
    words
}

/// The readable timeline.
pub struct TextRender<W: Write> {
    out: W,
    paint: Paint,
    hex: bool,
    starts: HashMap<u64, ConnectionStart>,
    buffered: HashMap<u64, Vec<Event>>,
    total_buffered: usize,
    header_printed: HashMap<u64, bool>,
}

impl<W: Write> TextRender<W> {
    /// `color`: use ANSI colours; `hex`: dump each data segment's payload.
    pub fn new(out: W, color: bool, hex: bool) -> Self {
        Self {
            out,
            paint: Paint { on: color },
            hex,
            starts: HashMap::new(),
            buffered: HashMap::new(),
            total_buffered: 0,
            header_printed: HashMap::new(),
        }
    }

    fn flush_stream(&mut self, stream: u64) -> io::Result<()> {
        let events = self.buffered.remove(&stream).unwrap_or_default();
        self.total_buffered -= events.len();
        let continued = self.header_printed.insert(stream, true).unwrap_or(false);
        if let Some(start) = self.starts.get(&stream).cloned() {
            self.header(&start, continued)?;
        }
        for e in &events {
            self.event(e)?;
        }
        Ok(())
    }

    fn header(&mut self, s: &ConnectionStart, continued: bool) -> io::Result<()> {
        let p = self.paint;
        let title = format!(
            "connection #{}{}: client {} ⇄ server {}",
            s.stream,
            if continued { " (continued)" } else { "" },
            s.client,
            s.server
        );
        writeln!(self.out, "{}", p.bold(&title))?;
        if continued {
            return Ok(());
        }
        let found = match s.found_by {
            FoundBy::Port => "found by its port",
            FoundBy::FirstLine => "found by its first line (not on the chat port)",
            FoundBy::Requested => "asked for with --stream",
            FoundBy::WebsocketUpgrade => "found by its WebSocket upgrade",
        };
        let opened = if s.handshake_seen {
            "the capture holds its opening"
        } else {
            "already open when the capture started (no handshake captured)"
        };
        writeln!(
            self.out,
            "  {}",
            p.dim(&format!(
                "first packet {} (frame {}); {found}; {opened}",
                wall_clock(s.first.time_ns),
                s.first.frame
            ))
        )?;
        Ok(())
    }

    fn event(&mut self, e: &Event) -> io::Result<()> {
        let p = self.paint;
        let time = p.dim(&format!("+{}", secs(e.rel_ns)));
        let arrow = match e.dir {
            Dir::ClientToServer => p.cyan("C → S"),
            Dir::ServerToClient => p.magenta("C ← S"),
        };
        match &e.kind {
            EventKind::Segment(seg) => {
                let show = !seg.notes.is_empty() || (self.hex && seg.len > 0);
                if !show {
                    return Ok(());
                }
                let flags = format!("[{}]", seg.flags.join(", "));
                let mut header = format!("seq={}", seg.seq);
                if let Some(ack) = seg.ack {
                    header.push_str(&format!(" ack={ack}"));
                }
                match seg.window_scaled {
                    Some(w) => header.push_str(&format!(" win={w}")),
                    None => header.push_str(&format!(" win={} (unscaled)", seg.window)),
                }
                header.push_str(&format!(" len={}", seg.len));
                let words = segment_words(seg, e.dir);
                let anomalous = seg.notes.iter().any(|n| n.is_anomaly());
                let words = if anomalous {
                    p.yellow(&words)
                } else {
                    p.green(&words)
                };
                writeln!(
                    self.out,
                    "  {time:>11} {arrow}  {:<12} {}  {}  {}",
                    p.blue(&flags),
                    p.dim(&header),
                    words,
                    p.dim(&format!("frame {}", e.frame))
                )?;
                if self.hex {
                    if let Some(payload) = &seg.payload {
                        self.hexdump(payload)?;
                    }
                }
            }
            EventKind::Line(line) => {
                let text = line_text(p, line);
                let mut words = line.explanation.clone();
                if line.segments > 1 {
                    words.push_str(&format!(" (reassembled from {} segments)", line.segments));
                }
                match line.status {
                    LineStatus::Complete => {}
                    LineStatus::Unterminated => {
                        words.push_str("; the stream ended before its newline")
                    }
                    LineStatus::CutByGap => {
                        words = "the rest of this line is missing from the capture".into()
                    }
                    LineStatus::AfterGap if !line.valid => {
                        words = "the start of this line is missing from the capture".into()
                    }
                    LineStatus::AfterGap => {}
                    LineStatus::Overlong => {}
                }
                let words = if line.valid { words } else { p.yellow(&words) };
                writeln!(self.out, "  {time:>11} {arrow}  {text}  {words}")?;
            }
            EventKind::Tls(tls) => {
                let (what, words, ok) = tls_words(tls);
                let words = if ok { words } else { p.yellow(&words) };
                writeln!(self.out, "  {time:>11} {arrow}  {}  {words}", p.bold(what))?;
            }
            EventKind::WebSocket(ws) => {
                let Some((what, words, ok)) = ws_words(ws) else {
                    return Ok(());
                };
                let words = if ok { words } else { p.yellow(&words) };
                writeln!(self.out, "  {time:>11} {arrow}  {}  {words}", p.bold(&what))?;
            }
            EventKind::Data { .. } => {}
            EventKind::Gap { bytes, reason } => {
                let why = match reason {
                    GapReason::AckedUnseen => {
                        "the receiver acknowledged data the capture never saw"
                    }
                    GapReason::Truncated => "the snap length cut the segment",
                    GapReason::NeverCaptured => "a hole in the stream that was never filled",
                    GapReason::TooMuchOutOfOrder => "too much data waited behind a hole",
                };
                writeln!(
                    self.out,
                    "  {time:>11} {arrow}  {}",
                    p.red(&format!(
                        "{} missing from the capture ({why})",
                        plural(*bytes, "byte")
                    ))
                )?;
            }
        }
        Ok(())
    }

    fn hexdump(&mut self, data: &[u8]) -> io::Result<()> {
        for (i, row) in data.chunks(16).enumerate() {
            let mut hex = String::with_capacity(50);
            for (j, b) in row.iter().enumerate() {
                if j == 8 {
                    hex.push(' ');
                }
                hex.push_str(&format!("{b:02x} "));
            }
            let ascii: String = row
                .iter()
                .map(|&b| {
                    if (0x20..0x7f).contains(&b) {
                        b as char
                    } else {
                        '.'
                    }
                })
                .collect();
            writeln!(
                self.out,
                "               {}  {hex:<49} {}",
                self.paint.dim(&format!("{:04x}", i * 16)),
                self.paint.dim(&ascii)
            )?;
        }
        Ok(())
    }

    fn footer(&mut self, end: &ConnectionEnd) -> io::Result<()> {
        let p = self.paint;
        let mut parts = Vec::new();
        parts.push(format!("lasted {} s", secs(end.duration_ns)));
        if let Some(rtt) = end.handshake.rtt_ns {
            parts.push(format!("handshake RTT {}", millis(rtt)));
        }
        parts.push(format!(
            "{} from the client, {} from the server",
            plural(end.lines.client_to_server, "line"),
            end.lines.server_to_client
        ));
        parts.push(format!(
            "{} client→server, {} server→client",
            plural(end.bytes.client_to_server, "byte"),
            plural(end.bytes.server_to_client, "byte")
        ));
        writeln!(self.out, "  {} {}", p.bold("summary:"), parts.join("; "))?;
        let t = &end.teardown;
        let ending = match t.state {
            EndState::Closed => {
                let first = match t.first_fin {
                    Some(Role::Client) => "the client",
                    _ => "the server",
                };
                let acked = t.client_fin.as_ref().is_some_and(|f| f.acked.is_some())
                    && t.server_fin.as_ref().is_some_and(|f| f.acked.is_some());
                format!(
                    "closed cleanly: {first} sent the first FIN; {}",
                    if acked {
                        "both FINs were acknowledged"
                    } else {
                        "not every FIN's ACK was captured"
                    }
                )
            }
            EndState::Reset => format!(
                "aborted: the {} sent RST",
                match t.reset_by {
                    Some(Role::Client) => "client",
                    _ => "server",
                }
            ),
            EndState::HalfClosed => format!(
                "half-closed: the {} sent FIN, the other side was still open when the capture stopped",
                match t.first_fin {
                    Some(Role::Client) => "client",
                    _ => "server",
                }
            ),
            EndState::OpenAtEnd => "still open when the capture stopped".to_string(),
        };
        writeln!(self.out, "  {} {ending}", p.bold("ending:"))?;
        if let Some(tls) = &end.tls {
            writeln!(self.out, "  {} {}", p.bold("tls:"), tls_summary(tls))?;
        }
        if let Some(ws) = &end.websocket {
            writeln!(self.out, "  {} {}", p.bold("websocket:"), ws_summary(ws))?;
        }
        if !end.messages.is_empty() {
            writeln!(
                self.out,
                "  {} {}",
                p.bold("messages:"),
                counts(&end.messages)
            )?;
        }
        let anomalies = if end.anomalies.is_empty() {
            p.green("none")
        } else {
            p.yellow(&counts(&end.anomalies))
        };
        writeln!(self.out, "  {} {anomalies}", p.bold("anomalies:"))?;
        writeln!(self.out)
    }
}

impl<W: Write> Render for TextRender<W> {
    fn output(&mut self, output: Output) -> io::Result<()> {
        match output {
            Output::Start(s) => {
                self.starts.insert(s.stream, s);
            }
            Output::Event(e) => {
                let stream = e.stream;
                let buf = self.buffered.entry(stream).or_default();
                buf.push(e);
                self.total_buffered += 1;
                if buf.len() >= MAX_BUFFERED_EVENTS {
                    self.flush_stream(stream)?;
                } else if self.total_buffered >= MAX_TOTAL_BUFFERED_EVENTS {
                    let mut streams: Vec<u64> = self.buffered.keys().copied().collect();
                    streams.sort_unstable();
                    for stream in streams {
                        self.flush_stream(stream)?;
                    }
                }
            }
            Output::End(end) => {
                if self
                    .header_printed
                    .get(&end.stream)
                    .copied()
                    .unwrap_or(false)
                    && self.buffered.get(&end.stream).is_none_or(Vec::is_empty)
                {
                    // Everything printed already.
                } else {
                    self.flush_stream(end.stream)?;
                }
                self.footer(&end)?;
                self.starts.remove(&end.stream);
                self.header_printed.remove(&end.stream);
            }
        }
        Ok(())
    }

    fn summary(&mut self, s: &CaptureSummary) -> io::Result<()> {
        let p = self.paint;
        writeln!(self.out, "{}", p.bold("capture summary"))?;
        let sk = &s.skipped;
        let other = sk.not_ip + sk.not_tcp + sk.ip_fragments + sk.truncated_headers + sk.malformed;
        let mut frames = format!("{} frames, {} TCP segments", s.frames, s.tcp_segments);
        if other > 0 {
            let mut why = Vec::new();
            for (n, what) in [
                (sk.not_ip, "not IP"),
                (sk.not_tcp, "not TCP"),
                (sk.ip_fragments, "IP fragments"),
                (sk.truncated_headers, "cut before the TCP header"),
                (sk.malformed, "malformed"),
            ] {
                if n > 0 {
                    why.push(format!("{n} {what}"));
                }
            }
            frames.push_str(&format!(" ({} other: {})", other, why.join(", ")));
        }
        if let (Some(a), Some(b)) = (s.first_ns, s.last_ns) {
            frames.push_str(&format!(", {} s", secs(b.saturating_sub(a))));
        }
        writeln!(self.out, "  {}", frames)?;
        let mut streams: Vec<String> = s
            .chat_streams
            .iter()
            .take(LISTED_STREAMS)
            .map(|n| format!("#{n}"))
            .collect();
        if s.chat_streams.len() > LISTED_STREAMS {
            streams.push(format!(
                "and {} more",
                s.chat_streams.len() - LISTED_STREAMS
            ));
        }
        writeln!(
            self.out,
            "  {}, {}{}",
            plural(s.tcp_connections, "TCP connection"),
            plural(s.chat_connections, "chat connection"),
            if streams.is_empty() {
                String::new()
            } else {
                format!(" ({})", streams.join(", "))
            }
        )?;
        if s.tls_connections > 0 {
            writeln!(
                self.out,
                "  {} of them TLS: their content is encrypted",
                s.tls_connections
            )?;
        }
        if s.chat_connections == 0 && s.error.is_none() {
            writeln!(
                self.out,
                "  {}",
                p.yellow("no chat connection found: is the server on another port? try --port")
            )?;
        }
        if !s.messages.is_empty() {
            writeln!(self.out, "  messages: {}", counts(&s.messages))?;
        }
        writeln!(
            self.out,
            "  bytes: {} client→server, {} server→client",
            s.bytes.client_to_server, s.bytes.server_to_client
        )?;
        let anomalies = if s.anomalies.is_empty() {
            p.green("none")
        } else {
            p.yellow(&counts(&s.anomalies))
        };
        writeln!(self.out, "  anomalies: {anomalies}")?;
        if let Some(err) = &s.error {
            writeln!(
                self.out,
                "  {}",
                p.red(&format!("reading stopped early: {err}"))
            )?;
        }
        self.out.flush()
    }
}

fn line_text(p: Paint, line: &Line) -> String {
    let text = if line.text.is_empty() {
        "(empty line)".to_string()
    } else {
        line.text.clone()
    };
    if line.valid {
        p.bold(&text)
    } else {
        p.red(&text)
    }
}

/// The plain-words meaning of a segment's notes.
fn segment_words(seg: &Segment, dir: Dir) -> String {
    let (me, other) = match dir.sender() {
        Role::Client => ("client", "server"),
        Role::Server => ("server", "client"),
    };
    let mut words: Vec<String> = Vec::new();
    for note in &seg.notes {
        words.push(match note {
            Note::Syn => "handshake 1/3: the client asks to open a connection".into(),
            Note::SynAck => "handshake 2/3: the server accepts".into(),
            Note::HandshakeAck { rtt_ns } => format!(
                "handshake 3/3: the connection is open (RTT {})",
                millis(*rtt_ns)
            ),
            Note::SynRetransmission => "the SYN sent again (no answer in time)".into(),
            Note::Fin { first: true } => {
                format!("the {me} is done sending and starts closing (first FIN)")
            }
            Note::Fin { first: false } => format!("the {me} is done sending too (FIN)"),
            Note::AcksFin => format!("acknowledges the {other}'s FIN"),
            Note::FinRetransmission => "the FIN sent again".into(),
            Note::Rst => format!("the {me} aborts the connection (RST)"),
            Note::Retransmission => "retransmission: data already sent".into(),
            Note::PartialRetransmission => {
                "retransmission: partly data already sent, partly new".into()
            }
            Note::OutOfOrder => "out of order: fills an earlier hole".into(),
            Note::PreviousSegmentNotCaptured => {
                "the previous segment was not captured (a hole in the stream)".into()
            }
            Note::AckedUnseenSegment => "acknowledges data the capture never saw".into(),
            Note::ZeroWindow => format!("zero window: the {me} cannot take more data now"),
            Note::KeepAlive => "keep-alive probe".into(),
            Note::Truncated { captured, missing } => format!(
                "truncated by the snap length: {captured} of {} bytes captured",
                captured + missing
            ),
            Note::OutOfWindow => "far outside the expected sequence range; ignored".into(),
            Note::Malformed { present, claimed } => format!(
                "malformed packet: its IP header claims {claimed} bytes of TCP data but the \
                 frame, captured whole, holds {present} (not a snap-length cut); its data is \
                 not used"
            ),
        });
    }
    if words.is_empty() && seg.len > 0 {
        words.push(format!("{} of data", plural(seg.len, "byte")));
    }
    words.join("; ")
}

fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn counts(map: &std::collections::BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Seconds with microseconds: `1.000250`.
pub fn secs(ns: u64) -> String {
    format!("{}.{:06}", ns / 1_000_000_000, (ns % 1_000_000_000) / 1000)
}

fn millis(ns: u64) -> String {
    format!("{}.{:03} ms", ns / 1_000_000, (ns % 1_000_000) / 1000)
}

fn wall_clock(ns: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_nanos(ns);
    humantime::format_rfc3339_micros(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_formats() {
        assert_eq!(secs(1_000_250_000), "1.000250");
        assert_eq!(millis(27_500), "0.027 ms");
    }

    #[test]
    fn hexdump_rows_are_16_bytes() {
        let mut out = Vec::new();
        let mut r = TextRender::new(&mut out, false, true);
        r.hexdump(b"HELLO-FROM alice\nLIST\n")
            .expect("writes to a Vec");
        let text = String::from_utf8(out).expect("ascii");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("48 45 4c 4c 4f 2d 46 52  4f 4d 20 61 6c 69 63 65"));
        assert!(lines[0].ends_with("HELLO-FROM alice"));
        assert!(lines[1].contains("0010"));
        assert!(lines[1].ends_with(".LIST."));
    }
}
