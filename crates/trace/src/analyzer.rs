//! The connection table: which TCP connection a segment belongs to, which connections are chat
//! connections, and turning each connection's raw happenings into reported [`Output`]s.
//!
//! Sans-I/O: [`Analyzer::handle_frame`] takes a frame, [`Analyzer::poll_output`] hands out
//! what it produced, [`Analyzer::finish`] ends every connection at the end of the capture.
//! Memory is the open connections (plus those closed within [`LINGER_NS`] of capture time),
//! each holding at most its out-of-order data and, while it is not yet known to be a chat
//! connection, a bounded number of events.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;

use crate::capture::Frame;
use crate::chat::{decode, recognise};
use crate::link::{tcp_segment, Skip};
use crate::model::{
    CaptureSummary, ConnectionEnd, ConnectionStart, Dir, EndState, Event, EventKind, FinFact,
    FoundBy, Handshake, Line, LineStatus, Output, PerDir, Role, Segment, Step, Teardown, TlsEvent,
    TlsFacts, WsEvent, WsFacts,
};
use crate::tcp::{Conn, Pending};
use crate::tls::{Hello, Seen};

/// How long (capture time) a finished connection is kept for late packets (the last ACK, a
/// retransmitted FIN) before it is reported and forgotten.
pub const LINGER_NS: u64 = 60 * 1_000_000_000;

/// Events held for a connection not yet known to be chat; past this it is taken as not chat.
const MAX_UNDECIDED_EVENTS: usize = 256;

/// Stream bytes after which a connection without a recognisable line is taken as not chat.
const MAX_UNDECIDED_BYTES: u64 = 16 * 1024;

/// How often (in frames) finished connections are swept.
const SWEEP_EVERY_FRAMES: u64 = 4096;

/// What to look at.
#[derive(Debug, Clone)]
pub struct Options {
    /// The chat server's port.
    pub port: u16,
    /// The chat server's TLS port: its connections are shown like the chat port's.
    pub tls_port: u16,
    /// The chat server's web port (`serve --web-listen`): every connection on it is shown,
    /// page requests included. WebSocket upgrades are recognised on any port without it.
    pub web_port: Option<u16>,
    /// Show only this connection (Wireshark's `tcp.stream`), chat or not.
    pub stream: Option<u64>,
    /// Keep each segment's payload (for the hex dump).
    pub payloads: bool,
    /// Longest line the splitter holds.
    pub max_line_bytes: usize,
    /// Hand out each direction's in-order stream bytes as `data` events (for comparing the
    /// reassembly with other tools).
    pub stream_data: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            port: tcpchat_proto::DEFAULT_PORT,
            tls_port: crate::tls::DEFAULT_TLS_PORT,
            web_port: None,
            stream: None,
            payloads: false,
            max_line_bytes: tcpchat_proto::DEFAULT_MAX_LINE_BYTES,
            stream_data: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chat {
    Yes(FoundBy),
    Undecided,
    No,
}

struct Tracked {
    conn: Conn,
    chat: Chat,
    pending: Vec<Pending>,
    undecided_bytes: u64,
    started: bool,
    messages: BTreeMap<String, u64>,
    lines: PerDir,
    anomalies: BTreeMap<String, u64>,
    /// Set when the client's first bytes are a TLS record: from then on no lines are cut.
    tls: Option<TlsFacts>,
    /// Set when the connection is HTTP (a WebSocket upgrade, or a page on the web port).
    ws: Option<WsFacts>,
}

type Key = (SocketAddr, SocketAddr);

fn key(a: SocketAddr, b: SocketAddr) -> Key {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// The analysis of a whole capture.
pub struct Analyzer {
    opts: Options,
    conns: HashMap<Key, Tracked>,
    next_stream: u64,
    out: VecDeque<Output>,
    summary: CaptureSummary,
    now_ns: u64,
    scratch: Vec<Pending>,
}

impl Analyzer {
    pub fn new(opts: Options) -> Self {
        Self {
            opts,
            conns: HashMap::new(),
            next_stream: 0,
            out: VecDeque::new(),
            summary: CaptureSummary::default(),
            now_ns: 0,
            scratch: Vec::new(),
        }
    }

    /// Takes one captured frame.
    ///
    /// # Errors
    /// The frame's link type is not one we read.
    pub fn handle_frame(&mut self, frame: &Frame<'_>) -> Result<(), Skip> {
        self.summary.frames += 1;
        self.now_ns = frame.time_ns;
        self.summary.first_ns.get_or_insert(frame.time_ns);
        self.summary.last_ns = Some(frame.time_ns);
        if frame.number.is_multiple_of(SWEEP_EVERY_FRAMES) {
            self.sweep(false);
        }
        let seg = match tcp_segment(frame.linktype, frame.data) {
            Ok(mut seg) => {
                let whole = u64::from(frame.orig_len) <= frame.data.len() as u64;
                seg.declare_malformed(whole);
                seg
            }
            Err(skip) => {
                let s = &mut self.summary.skipped;
                match skip {
                    Skip::UnsupportedLink(_) => return Err(skip),
                    Skip::NotIp => s.not_ip += 1,
                    Skip::NotTcp => s.not_tcp += 1,
                    Skip::Fragment => s.ip_fragments += 1,
                    Skip::Truncated => s.truncated_headers += 1,
                    Skip::Malformed => s.malformed += 1,
                }
                return Ok(());
            }
        };
        self.summary.tcp_segments += 1;
        let src = SocketAddr::new(seg.src, seg.src_port);
        let dst = SocketAddr::new(seg.dst, seg.dst_port);
        let k = key(src, dst);
        let at = Step {
            frame: frame.number,
            time_ns: frame.time_ns,
        };

        let restart = self.conns.get(&k).is_some_and(|t| {
            let side = t.conn.side_of(src);
            t.conn.is_new_syn(side, &seg)
        });
        if restart {
            if let Some(old) = self.conns.remove(&k) {
                self.retire(old);
            }
        }
        let opts = &self.opts;
        let next_stream = &mut self.next_stream;
        let tracked = self.conns.entry(k).or_insert_with(|| {
            let stream = *next_stream;
            *next_stream += 1;
            let mut conn = Conn::new(stream, [src, dst], at, opts.max_line_bytes);
            conn.keep_payloads = opts.payloads;
            for half in &mut conn.halves {
                half.emit_data = opts.stream_data;
            }
            let chat = match opts.stream {
                Some(wanted) if wanted == stream => Chat::Yes(FoundBy::Requested),
                Some(_) => Chat::No,
                None if [Some(opts.port), Some(opts.tls_port), opts.web_port]
                    .iter()
                    .flatten()
                    .any(|p| seg.src_port == *p || seg.dst_port == *p) =>
                {
                    Chat::Yes(FoundBy::Port)
                }
                None => Chat::Undecided,
            };
            if chat == Chat::No {
                conn.stop_lines();
            }
            Tracked {
                conn,
                chat,
                pending: Vec::new(),
                undecided_bytes: 0,
                started: false,
                messages: BTreeMap::new(),
                lines: PerDir::default(),
                anomalies: BTreeMap::new(),
                tls: None,
                ws: None,
            }
        });
        let side = tracked.conn.side_of(src);
        let mut produced = std::mem::take(&mut self.scratch);
        tracked.conn.handle_segment(side, &seg, at, &mut produced);
        if tracked.conn.client.is_none() {
            if let Chat::Yes(_) = tracked.chat {
                // Known to be chat by port (or asked for), roles not yet known: the side on
                // the chat port is the server.
                let ours = |port: u16| {
                    port == self.opts.port
                        || port == self.opts.tls_port
                        || Some(port) == self.opts.web_port
                };
                let server = if ours(tracked.conn.ends[1].port()) {
                    1
                } else if ours(tracked.conn.ends[0].port()) {
                    0
                } else {
                    usize::from(tracked.conn.ends[1].port() < tracked.conn.ends[0].port())
                };
                tracked.conn.client = Some(1 - server);
            }
        }
        if tracked.tls.is_none() {
            notice_tls(tracked, &mut produced);
        }
        if tracked.chat == Chat::Undecided {
            decide(tracked, &produced);
        }
        match tracked.chat {
            Chat::No => {
                produced.clear();
                tracked.pending.clear();
            }
            Chat::Undecided => tracked.pending.append(&mut produced),
            Chat::Yes(_) => {
                let mut pending = std::mem::take(&mut tracked.pending);
                pending.append(&mut produced);
                emit(tracked, pending.drain(..), &mut self.out, &mut self.summary);
                tracked.pending = pending;
            }
        }
        self.scratch = produced;
        Ok(())
    }

    /// The next output, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Ends every connection (the capture is over); their outputs follow.
    pub fn finish(&mut self) {
        self.sweep(true);
    }

    /// The capture's summary so far.
    pub fn summary(&self) -> &CaptureSummary {
        &self.summary
    }

    /// Records why reading stopped.
    pub fn set_error(&mut self, message: String) {
        self.summary.error = Some(message);
    }

    fn sweep(&mut self, all: bool) {
        let now = self.now_ns;
        let mut done: Vec<(u64, Key)> = self
            .conns
            .iter()
            .filter(|(_, t)| {
                all || t
                    .conn
                    .done_at
                    .is_some_and(|d| d.saturating_add(LINGER_NS) < now)
            })
            .map(|(k, t)| (t.conn.stream, *k))
            .collect();
        done.sort_unstable();
        for (_, k) in done {
            if let Some(t) = self.conns.remove(&k) {
                self.retire(t);
            }
        }
    }

    fn retire(&mut self, mut t: Tracked) {
        self.summary.tcp_connections += 1;
        let mut produced = Vec::new();
        t.conn.finish(&mut produced);
        if t.tls.is_none() {
            notice_tls(&mut t, &mut produced);
        }
        if t.chat == Chat::Undecided {
            decide(&mut t, &produced);
            if t.chat == Chat::Undecided {
                t.chat = Chat::No;
            }
        }
        if let Chat::Yes(_) = t.chat {
            let mut pending = std::mem::take(&mut t.pending);
            pending.append(&mut produced);
            emit(
                &mut t,
                pending.into_iter(),
                &mut self.out,
                &mut self.summary,
            );
            let end = connection_end(&t);
            self.summary.chat_connections += 1;
            self.summary.chat_streams.push(end.stream);
            if end.tls.is_some() {
                self.summary.tls_connections += 1;
            }
            self.summary.bytes.client_to_server += end.bytes.client_to_server;
            self.summary.bytes.server_to_client += end.bytes.server_to_client;
            for (k, v) in &end.messages {
                *self.summary.messages.entry(k.clone()).or_default() += v;
            }
            for (k, v) in &end.anomalies {
                *self.summary.anomalies.entry(k.clone()).or_default() += v;
            }
            self.out.push_back(Output::End(Box::new(end)));
        }
    }
}

/// Turns a connection into a TLS connection when its client's first bytes are a TLS record.
///
/// A TLS connection is shown only when it is on one of our ports (or asked for): on any other
/// port it is someone's HTTPS, not chat. Its lines (the hello's bytes cut at stray newlines)
/// are dropped, now and from then on; the TLS watcher goes on reading the hellos.
fn notice_tls(t: &mut Tracked, produced: &mut Vec<Pending>) {
    let client = t.conn.client;
    let Some(side) = produced.iter().find_map(|p| match p {
        Pending::Tls {
            side,
            seen: Seen::TlsStart,
            ..
        } if client.is_none_or(|c| c == *side) => Some(*side),
        _ => None,
    }) else {
        return;
    };
    if t.conn.client.is_none() {
        t.conn.client = Some(side);
    }
    t.conn.stop_lines();
    if t.chat == Chat::Undecided {
        t.chat = Chat::No;
    }
    if t.chat == Chat::No {
        return;
    }
    t.tls = Some(TlsFacts {
        content: "encrypted",
        ..TlsFacts::default()
    });
    let not_line = |p: &Pending| !matches!(p, Pending::Line { .. });
    produced.retain(not_line);
    t.pending.retain(not_line);
}

/// Decides whether an undecided connection is chat from what it just produced.
fn decide(t: &mut Tracked, produced: &[Pending]) {
    for p in produced {
        match p {
            Pending::Line { side, line, .. } if line.status == LineStatus::Complete => {
                match recognise(&line.bytes) {
                    Some(from_client) => {
                        t.chat = Chat::Yes(FoundBy::FirstLine);
                        if t.conn.client.is_none() {
                            t.conn.client = Some(if from_client { *side } else { 1 - *side });
                        }
                    }
                    None => {
                        t.chat = Chat::No;
                        t.conn.stop_lines();
                    }
                }
                return;
            }
            Pending::Line { .. } => {}
            Pending::Ws {
                side,
                seen: crate::ws::Seen::Request(r),
                ..
            } => {
                // A WebSocket upgrade is chat on any port (the web listener carries the
                // protocol); any other HTTP request is someone's web traffic.
                if r.websocket {
                    t.chat = Chat::Yes(FoundBy::WebsocketUpgrade);
                    if t.conn.client.is_none() {
                        t.conn.client = Some(*side);
                    }
                } else {
                    t.chat = Chat::No;
                    t.conn.stop_lines();
                }
                return;
            }
            Pending::Ws { .. } => {}
            Pending::Segment { len, .. } => t.undecided_bytes += len,
            Pending::Gap { .. } | Pending::Data { .. } | Pending::Tls { .. } => {}
        }
    }
    if t.pending.len() + produced.len() > MAX_UNDECIDED_EVENTS
        || t.undecided_bytes > MAX_UNDECIDED_BYTES
    {
        t.chat = Chat::No;
        t.conn.stop_lines();
    }
}

fn emit(
    t: &mut Tracked,
    pending: impl Iterator<Item = Pending>,
    out: &mut VecDeque<Output>,
    summary: &mut CaptureSummary,
) {
    let _ = summary;
    let client = t.conn.client.unwrap_or(0);
    if !t.started {
        t.started = true;
        let found_by = match t.chat {
            Chat::Yes(f) => f,
            _ => FoundBy::Requested,
        };
        out.push_back(Output::Start(ConnectionStart {
            stream: t.conn.stream,
            client: t.conn.ends[client],
            server: t.conn.ends[1 - client],
            first: t.conn.first,
            handshake_seen: t.conn.syn.is_some() || t.conn.syn_ack.is_some(),
            found_by,
        }));
    }
    let dir_of = |side: usize| {
        if side == client {
            Dir::ClientToServer
        } else {
            Dir::ServerToClient
        }
    };
    let first_ns = t.conn.first.time_ns;
    for p in pending {
        let (side, at, kind) = match p {
            Pending::Segment {
                side,
                at,
                flags,
                seq,
                ack,
                len,
                window,
                window_scaled,
                notes,
                payload,
            } => {
                for n in &notes {
                    if n.is_anomaly() {
                        *t.anomalies.entry(n.name().to_string()).or_default() += 1;
                    }
                }
                (
                    side,
                    at,
                    EventKind::Segment(Segment {
                        flags: flags.names(),
                        seq,
                        ack,
                        len,
                        window,
                        window_scaled,
                        notes,
                        payload,
                    }),
                )
            }
            Pending::Line { side, at, line } => {
                let dir = dir_of(side);
                let decoded = match line.status {
                    LineStatus::Overlong => crate::chat::Decoded {
                        kind: "overlong line".into(),
                        valid: false,
                        explanation: format!(
                            "a line longer than {} bytes (a server rejects it); only its start is shown",
                            tcpchat_proto::DEFAULT_MAX_LINE_BYTES
                        ),
                    },
                    _ => decode(&line.bytes, dir == Dir::ClientToServer),
                };
                let counts_as_message = line.status == LineStatus::Complete
                    || (line.status == LineStatus::AfterGap && decoded.valid);
                let kind = if counts_as_message {
                    decoded.kind
                } else {
                    match line.status {
                        LineStatus::Unterminated => "unterminated line".into(),
                        LineStatus::CutByGap => "line cut by missing data".into(),
                        LineStatus::AfterGap => "line tail after missing data".into(),
                        _ => decoded.kind,
                    }
                };
                *t.messages.entry(kind.clone()).or_default() += 1;
                t.lines.add(dir, 1);
                (
                    side,
                    at,
                    EventKind::Line(Line {
                        text: crate::chat::printable(&line.bytes),
                        kind,
                        valid: decoded.valid && counts_as_message,
                        explanation: decoded.explanation,
                        segments: line.segments,
                        bytes: line.wire_bytes,
                        status: line.status,
                    }),
                )
            }
            Pending::Gap {
                side,
                at,
                bytes,
                reason,
            } => {
                *t.anomalies.entry("missing_data".to_string()).or_default() += 1;
                (side, at, EventKind::Gap { bytes, reason })
            }
            Pending::Data { side, at, bytes } => (side, at, EventKind::Data { bytes }),
            Pending::Tls {
                side,
                at,
                seen: Seen::Hello(hello),
            } => {
                // Hellos of a connection that is not TLS (a server's only) are not news.
                let Some(facts) = t.tls.as_mut() else {
                    continue;
                };
                let (kind, event) = match hello {
                    Hello::Client(c) => {
                        facts.server_name.clone_from(&c.server_name);
                        facts.offered_versions.clone_from(&c.offered_versions);
                        facts.alpn.clone_from(&c.alpn);
                        ("TLS ClientHello", TlsEvent::ClientHello(c))
                    }
                    Hello::Server(s) => {
                        facts.version = Some(s.version.clone());
                        let kind = if s.hello_retry {
                            "TLS HelloRetryRequest"
                        } else {
                            "TLS ServerHello"
                        };
                        (kind, TlsEvent::ServerHello(s))
                    }
                    Hello::Unreadable(u) => {
                        facts.unreadable.get_or_insert_with(|| u.reason.clone());
                        *t.anomalies
                            .entry("unreadable_tls_hello".to_string())
                            .or_default() += 1;
                        ("TLS unreadable hello", TlsEvent::Unreadable(u))
                    }
                };
                *t.messages.entry(kind.to_string()).or_default() += 1;
                (side, at, EventKind::Tls(event))
            }
            Pending::Tls { .. } => continue,
            Pending::Ws { side, at, seen } => {
                let from_client = side == client;
                let facts = t.ws.get_or_insert_with(WsFacts::default);
                let (kind, event) = match seen {
                    crate::ws::Seen::Request(r) => {
                        if r.websocket {
                            facts.path = Some(r.target.clone());
                            facts.offered.clone_from(&r.protocols);
                        }
                        let kind = if r.websocket {
                            "WebSocket upgrade request"
                        } else {
                            "HTTP request"
                        };
                        (kind.to_string(), WsEvent::Request(r))
                    }
                    crate::ws::Seen::Response(r) => {
                        if facts.status.is_none() || r.websocket {
                            facts.status = Some(r.status);
                        }
                        if r.websocket {
                            facts.protocol.clone_from(&r.protocol);
                        }
                        let kind = if r.websocket {
                            "WebSocket accept".to_string()
                        } else {
                            format!("HTTP {}", r.status)
                        };
                        (kind, WsEvent::Response(r))
                    }
                    crate::ws::Seen::Frame(f) => {
                        facts.frames.add(dir_of(side), 1);
                        if let Some(close) = &f.close {
                            let slot = if from_client {
                                &mut facts.client_close
                            } else {
                                &mut facts.server_close
                            };
                            slot.get_or_insert_with(|| close.clone());
                        }
                        for n in &f.notes {
                            *t.anomalies
                                .entry(format!("websocket_{}", n.name()))
                                .or_default() += 1;
                        }
                        (format!("WebSocket {}", f.kind), WsEvent::Frame(f))
                    }
                    crate::ws::Seen::Unreadable(u) => {
                        *t.anomalies
                            .entry("websocket_unreadable".to_string())
                            .or_default() += 1;
                        ("WebSocket unreadable".to_string(), WsEvent::Unreadable(u))
                    }
                    // Lines come as `Pending::Line` (see `tcp::web_pending`).
                    crate::ws::Seen::Line(_) => continue,
                };
                // Data frames are counted by their lines; heads and control frames here.
                let data_frame = matches!(&event, WsEvent::Frame(f) if f.opcode < 8);
                if !data_frame {
                    *t.messages.entry(kind).or_default() += 1;
                }
                (side, at, EventKind::WebSocket(event))
            }
        };
        out.push_back(Output::Event(Event {
            stream: t.conn.stream,
            frame: at.frame,
            time_ns: at.time_ns,
            rel_ns: at.time_ns.saturating_sub(first_ns),
            dir: dir_of(side),
            kind,
        }));
    }
}

fn connection_end(t: &Tracked) -> ConnectionEnd {
    let conn = &t.conn;
    let client = conn.client.unwrap_or(0);
    let server = 1 - client;
    let role = |side: usize| {
        if side == client {
            Role::Client
        } else {
            Role::Server
        }
    };
    let fin_fact = |side: usize| {
        conn.halves[side].fin.map(|fin| FinFact {
            fin,
            acked: conn.halves[side].fin_acked,
        })
    };
    let state = if conn.reset.is_some() {
        EndState::Reset
    } else if conn.halves.iter().all(|h| h.fin.is_some()) {
        EndState::Closed
    } else if conn.halves.iter().any(|h| h.fin.is_some()) {
        EndState::HalfClosed
    } else {
        EndState::OpenAtEnd
    };
    let per = |f: &dyn Fn(usize) -> u64| PerDir {
        client_to_server: f(client),
        server_to_client: f(server),
    };
    ConnectionEnd {
        stream: conn.stream,
        client: conn.ends[client],
        server: conn.ends[server],
        first: conn.first,
        last: conn.last,
        duration_ns: conn.last.time_ns.saturating_sub(conn.first.time_ns),
        handshake_seen: conn.syn.is_some() || conn.syn_ack.is_some(),
        handshake: Handshake {
            syn: conn.syn,
            syn_ack: conn.syn_ack,
            ack: conn.hs_ack,
            rtt_ns: match (conn.syn, conn.hs_ack) {
                (Some(s), Some(a)) => Some(a.time_ns.saturating_sub(s.time_ns)),
                _ => None,
            },
        },
        teardown: Teardown {
            state,
            first_fin: conn.first_fin.map(role),
            client_fin: fin_fact(client),
            server_fin: fin_fact(server),
            reset_by: conn.reset.map(|(side, _)| role(side)),
            reset: conn.reset.map(|(_, at)| at),
        },
        messages: t.messages.clone(),
        lines: t.lines,
        bytes: per(&|s| conn.halves[s].bytes),
        missing_bytes: per(&|s| conn.halves[s].missing),
        segments: per(&|s| conn.halves[s].segments),
        anomalies: t.anomalies.clone(),
        tls: t.tls.clone(),
        websocket: t.ws.clone(),
    }
}
