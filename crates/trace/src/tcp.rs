//! One TCP connection: handshake, per-direction reassembly, teardown, anomalies.
//!
//! Sans-I/O like the rest of the analysis: [`Conn::handle_segment`] takes a decoded segment and
//! its capture time and appends [`Pending`] events; nothing here reads a file or a clock.
//!
//! Each direction keeps its position in the byte stream (`next_off`, the count of stream bytes
//! delivered, tied to the sequence number `next_seq`), so sequence numbers are compared with
//! wrapping arithmetic once and everything after works on plain offsets. Segments that arrive
//! ahead of a hole wait in a bounded map; the hole is declared lost when the receiver
//! acknowledges past it (the data got through but the capture missed it), when too much waits
//! behind it, or when the connection ends.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::chat::{LineSplitter, RawLine};
use crate::link::{Flags, TcpSegment};
use crate::model::{GapReason, Note, Step};

/// Payload bytes that may wait behind a hole, per direction, before the hole is given up on.
const MAX_HELD_BYTES: usize = 4 * 1024 * 1024;

/// A segment this far ahead of the stream is not believed (corrupt or from another life of
/// the 4-tuple).
const MAX_AHEAD_BYTES: i64 = 64 * 1024 * 1024;

/// Something that happened, with the side (0 = the first packet's sender) it came from.
#[derive(Debug, Clone)]
pub enum Pending {
    Segment {
        side: usize,
        at: Step,
        flags: Flags,
        seq: u32,
        ack: Option<u32>,
        len: u64,
        window: u16,
        window_scaled: Option<u64>,
        notes: Vec<Note>,
        payload: Option<Vec<u8>>,
    },
    Line {
        side: usize,
        at: Step,
        line: RawLine,
    },
    Gap {
        side: usize,
        at: Step,
        bytes: u64,
        reason: GapReason,
    },
    /// What the TLS watcher saw at the start of the stream.
    Tls {
        side: usize,
        at: Step,
        seen: crate::tls::Seen,
    },
    /// What the WebSocket watcher saw: an HTTP head, a frame, or why it stopped reading.
    /// (The lines inside text messages come as [`Pending::Line`].)
    Ws {
        side: usize,
        at: Step,
        seen: crate::ws::Seen,
    },
    /// In-order stream bytes (only when asked for).
    Data {
        side: usize,
        at: Step,
        bytes: Vec<u8>,
    },
}

/// A WebSocket watcher's finding as a pending event: a text message's line as a line.
fn web_pending(side: usize, at: Step, seen: crate::ws::Seen) -> Pending {
    match seen {
        crate::ws::Seen::Line(line) => Pending::Line { side, at, line },
        seen => Pending::Ws { side, at, seen },
    }
}

/// Stream data that arrived ahead of a hole.
#[derive(Debug)]
struct Held {
    data: Vec<u8>,
    /// Bytes after `data` cut by the snap length.
    missing: u64,
}

/// One direction of the connection: what its sender sent.
#[derive(Debug)]
pub struct Half {
    started: bool,
    pub isn: Option<u32>,
    /// Sequence number shown as 0.
    base: u32,
    next_seq: u32,
    /// Stream offset of `next_seq`: bytes delivered or declared missing so far.
    next_off: u64,
    /// Highest stream offset any segment reached.
    max_end: u64,
    held: BTreeMap<u64, Held>,
    held_bytes: usize,
    /// Stream offset of the FIN (the byte count before it).
    pub fin_off: Option<u64>,
    pub fin: Option<Step>,
    pub fin_acked: Option<Step>,
    ended: bool,
    lines: LineSplitter,
    /// Reads an HTTP upgrade and WebSocket frames in front of the line splitter.
    web: crate::ws::Watch,
    /// Looks for a TLS hello at the start of the stream, whether or not lines are cut.
    tls: crate::tls::Watch,
    /// Whether lines are cut at all (not for connections known not to be chat).
    pub split_lines: bool,
    /// The window scale this side announced in its SYN (`Some(0)` when it announced none).
    window_scale: Option<u8>,
    /// Whether in-order stream bytes are handed out as [`Pending::Data`].
    pub emit_data: bool,
    pub bytes: u64,
    pub missing: u64,
    pub segments: u64,
}

impl Half {
    fn new(max_line_bytes: usize) -> Self {
        Self {
            started: false,
            isn: None,
            base: 0,
            next_seq: 0,
            next_off: 0,
            max_end: 0,
            held: BTreeMap::new(),
            held_bytes: 0,
            fin_off: None,
            fin: None,
            fin_acked: None,
            ended: false,
            lines: LineSplitter::new(max_line_bytes, false),
            web: crate::ws::Watch::new(max_line_bytes),
            tls: crate::tls::Watch::new(),
            split_lines: true,
            window_scale: None,
            emit_data: false,
            bytes: 0,
            missing: 0,
            segments: 0,
        }
    }

    fn start(&mut self, next_seq: u32, base: u32, mid_stream: bool, max_line_bytes: usize) {
        self.started = true;
        self.next_seq = next_seq;
        self.base = base;
        if mid_stream {
            self.lines = LineSplitter::new(max_line_bytes, true);
            // Frame boundaries cannot be found either.
            self.web = crate::ws::Watch::off(max_line_bytes);
            // Where the stream starts is unknown, so a TLS record header cannot be found.
            self.tls = crate::tls::Watch::off();
        }
    }

    /// The stream offset of sequence number `seq`, given that it is near `next_seq`.
    fn offset_of(&self, seq: u32) -> i64 {
        self.next_off as i64 + i64::from(seq.wrapping_sub(self.next_seq) as i32)
    }

    fn rel(&self, seq: u32) -> u32 {
        seq.wrapping_sub(self.base)
    }

    /// Delivers in-order data, then `missing` bytes the snap length cut.
    fn deliver(
        &mut self,
        data: &[u8],
        missing: u64,
        side: usize,
        at: Step,
        out: &mut Vec<Pending>,
    ) {
        if !data.is_empty() {
            if self.emit_data {
                out.push(Pending::Data {
                    side,
                    at,
                    bytes: data.to_vec(),
                });
            }
            if self.tls.active() {
                let mut seen = Vec::new();
                self.tls.push(data, &mut seen);
                out.extend(seen.into_iter().map(|seen| Pending::Tls { side, at, seen }));
            }
            if self.split_lines {
                let mut seen = Vec::new();
                let mut lines = Vec::new();
                if let Some(plain) = self.web.push(data, &mut seen) {
                    self.lines.push(&plain, &mut lines);
                }
                out.extend(seen.into_iter().map(|seen| web_pending(side, at, seen)));
                out.extend(
                    lines
                        .into_iter()
                        .map(|line| Pending::Line { side, at, line }),
                );
            }
            self.advance(data.len() as u64);
            self.bytes += data.len() as u64;
        }
        if missing > 0 {
            self.skip(missing, GapReason::Truncated, side, at, out);
        }
    }

    fn advance(&mut self, n: u64) {
        self.next_off += n;
        self.next_seq = self.next_seq.wrapping_add(n as u32);
        self.max_end = self.max_end.max(self.next_off);
    }

    /// Declares `n` stream bytes lost.
    fn skip(&mut self, n: u64, reason: GapReason, side: usize, at: Step, out: &mut Vec<Pending>) {
        if n == 0 {
            return;
        }
        if self.tls.active() {
            let mut seen = Vec::new();
            self.tls.gap(&mut seen);
            out.extend(seen.into_iter().map(|seen| Pending::Tls { side, at, seen }));
        }
        if self.split_lines {
            let mut seen = Vec::new();
            let mut lines = Vec::new();
            if let Some(plain) = self.web.gap(n, &mut seen) {
                self.lines.push(&plain, &mut lines);
            }
            out.extend(seen.into_iter().map(|seen| web_pending(side, at, seen)));
            self.lines.gap(&mut lines);
            out.extend(
                lines
                    .into_iter()
                    .map(|line| Pending::Line { side, at, line }),
            );
        }
        out.push(Pending::Gap {
            side,
            at,
            bytes: n,
            reason,
        });
        self.advance(n);
        self.missing += n;
    }

    /// Delivers held segments that now continue the stream.
    fn drain(&mut self, side: usize, at: Step, out: &mut Vec<Pending>) {
        while let Some(entry) = self.held.first_entry() {
            let off = *entry.key();
            if off > self.next_off {
                break;
            }
            let held = entry.remove();
            self.held_bytes -= held.data.len();
            let overlap = self.next_off - off;
            let captured = held.data.len() as u64;
            if overlap >= captured + held.missing {
                continue;
            }
            if overlap >= captured {
                let missing = captured + held.missing - overlap;
                self.skip(missing, GapReason::Truncated, side, at, out);
            } else {
                self.deliver(&held.data[overlap as usize..], held.missing, side, at, out);
            }
        }
    }

    /// Gives up on the hole before the first held segment.
    fn skip_hole(
        &mut self,
        reason: GapReason,
        side: usize,
        at: Step,
        out: &mut Vec<Pending>,
    ) -> bool {
        let Some((&off, _)) = self.held.first_key_value() else {
            return false;
        };
        let gap = off.saturating_sub(self.next_off);
        self.skip(gap, reason, side, at, out);
        self.drain(side, at, out);
        true
    }

    /// Ends the stream: holes are lost, an unfinished line is unterminated.
    fn end(&mut self, side: usize, at: Step, out: &mut Vec<Pending>) {
        if self.ended {
            return;
        }
        while self.skip_hole(GapReason::NeverCaptured, side, at, out) {}
        if self.tls.active() {
            let mut seen = Vec::new();
            self.tls.finish(&mut seen);
            out.extend(seen.into_iter().map(|seen| Pending::Tls { side, at, seen }));
        }
        if self.split_lines {
            let mut seen = Vec::new();
            let mut lines = Vec::new();
            if let Some(plain) = self.web.finish(&mut seen) {
                self.lines.push(&plain, &mut lines);
            }
            out.extend(seen.into_iter().map(|seen| web_pending(side, at, seen)));
            self.lines.finish(&mut lines);
            out.extend(
                lines
                    .into_iter()
                    .map(|line| Pending::Line { side, at, line }),
            );
        }
        self.ended = true;
    }

    fn fin_reached(&self) -> bool {
        matches!(self.fin_off, Some(f) if self.next_off >= f) && self.held.is_empty()
    }
}

/// A TCP connection.
#[derive(Debug)]
pub struct Conn {
    pub stream: u64,
    /// The two ends; index 0 sent the first packet seen.
    pub ends: [SocketAddr; 2],
    pub halves: [Half; 2],
    /// Which side is the client, once known.
    pub client: Option<usize>,
    pub first: Step,
    pub last: Step,
    pub syn: Option<Step>,
    pub syn_ack: Option<Step>,
    pub hs_ack: Option<Step>,
    pub first_fin: Option<usize>,
    pub reset: Option<(usize, Step)>,
    /// When the connection finished (both FINs acknowledged, or RST).
    pub done_at: Option<u64>,
    max_line_bytes: usize,
    pub keep_payloads: bool,
}

impl Conn {
    pub fn new(stream: u64, ends: [SocketAddr; 2], first: Step, max_line_bytes: usize) -> Self {
        Self {
            stream,
            ends,
            halves: [Half::new(max_line_bytes), Half::new(max_line_bytes)],
            client: None,
            first,
            last: first,
            syn: None,
            syn_ack: None,
            hs_ack: None,
            first_fin: None,
            reset: None,
            done_at: None,
            max_line_bytes,
            keep_payloads: false,
        }
    }

    /// The side a segment from `src` was sent by.
    pub fn side_of(&self, src: SocketAddr) -> usize {
        usize::from(src != self.ends[0])
    }

    /// Whether a new SYN on this 4-tuple starts a new connection rather than repeating this
    /// one's.
    pub fn is_new_syn(&self, side: usize, seg: &TcpSegment<'_>) -> bool {
        if !seg.flags.has(Flags::SYN) || seg.flags.has(Flags::ACK) {
            return false;
        }
        if self.done_at.is_some() || self.reset.is_some() {
            return true;
        }
        match self.halves[side].isn {
            Some(isn) => isn != seg.seq,
            None => self.halves[side].started,
        }
    }

    /// Takes one segment sent by `side`.
    pub fn handle_segment(
        &mut self,
        side: usize,
        seg: &TcpSegment<'_>,
        at: Step,
        out: &mut Vec<Pending>,
    ) {
        self.last = at;
        let peer = 1 - side;
        let flags = seg.flags;
        let mut notes = Vec::new();
        let mut stream_events = Vec::new();
        let max_line = self.max_line_bytes;

        // Opening.
        if flags.has(Flags::SYN) {
            let half = &mut self.halves[side];
            half.window_scale = Some(seg.window_scale.unwrap_or(0));
            match half.isn {
                Some(isn) if isn == seg.seq => notes.push(Note::SynRetransmission),
                _ if half.started => {}
                _ => {
                    half.isn = Some(seg.seq);
                    half.start(seg.seq.wrapping_add(1), seg.seq, false, max_line);
                }
            }
            if flags.has(Flags::ACK) {
                if self.client.is_none() {
                    self.client = Some(peer);
                }
                if self.syn_ack.is_none() {
                    self.syn_ack = Some(at);
                    notes.push(Note::SynAck);
                }
            } else {
                if self.client.is_none() {
                    self.client = Some(side);
                }
                if self.syn.is_none() {
                    self.syn = Some(at);
                    notes.push(Note::Syn);
                }
            }
        } else if !self.halves[side].started {
            // Joined mid-stream: call this sequence number 1, as Wireshark does.
            self.halves[side].start(seg.seq, seg.seq.wrapping_sub(1), true, max_line);
        }
        self.halves[side].segments += 1;

        // Data and FIN, in stream order.
        let wire_len = seg.wire_len();
        if seg.missing > 0 {
            notes.push(Note::Truncated {
                captured: seg.payload.len() as u64,
                missing: u64::from(seg.missing),
            });
        }
        // A malformed packet's bytes are not what the sender sent (its header lies about
        // them): shown, never fed to the stream, so never a retransmission or a FIN either.
        let malformed = seg.malformed > 0;
        if malformed {
            notes.push(Note::Malformed {
                present: seg.payload.len() as u64,
                claimed: seg.payload.len() as u64 + u64::from(seg.malformed),
            });
        }
        let half = &mut self.halves[side];
        let seq_for_data = seg.seq.wrapping_add(u32::from(flags.has(Flags::SYN)));
        let off = half.offset_of(seq_for_data);
        let is_ctl = flags.has(Flags::SYN) || flags.has(Flags::FIN) || flags.has(Flags::RST);
        let keep_alive =
            !is_ctl && wire_len <= 1 && seg.seq == half.next_seq.wrapping_sub(1) && half.started;
        if malformed {
            // Shown only, with its note: see above.
        } else if keep_alive {
            notes.push(Note::KeepAlive);
        } else if wire_len > 0 && !flags.has(Flags::RST) && !flags.has(Flags::SYN) {
            let end = off + wire_len as i64;
            let next = half.next_off as i64;
            if end <= next {
                notes.push(Note::Retransmission);
            } else if off - next > MAX_AHEAD_BYTES || off < 0 {
                notes.push(Note::OutOfWindow);
            } else if off > next {
                if off < half.max_end as i64 {
                    notes.push(Note::OutOfOrder);
                } else {
                    notes.push(Note::PreviousSegmentNotCaptured);
                }
                let off = off as u64;
                half.max_end = half.max_end.max(off + wire_len);
                let data = seg.payload.to_vec();
                half.held_bytes += data.len();
                let held = Held {
                    data,
                    missing: u64::from(seg.missing),
                };
                if let Some(old) = half.held.insert(off, held) {
                    half.held_bytes -= old.data.len();
                }
                while half.held_bytes > MAX_HELD_BYTES {
                    half.skip_hole(GapReason::TooMuchOutOfOrder, side, at, &mut stream_events);
                }
            } else {
                let trim = (next - off) as u64;
                if trim > 0 {
                    notes.push(Note::PartialRetransmission);
                } else if (half.next_off) < half.max_end {
                    notes.push(Note::OutOfOrder);
                }
                let captured = seg.payload.len() as u64;
                if trim >= captured {
                    let missing = captured + u64::from(seg.missing) - trim;
                    half.skip(missing, GapReason::Truncated, side, at, &mut stream_events);
                } else {
                    half.deliver(
                        &seg.payload[trim as usize..],
                        u64::from(seg.missing),
                        side,
                        at,
                        &mut stream_events,
                    );
                }
                half.drain(side, at, &mut stream_events);
            }
        }
        if flags.has(Flags::FIN) && !malformed {
            let fin_off = (off + wire_len as i64).max(0) as u64;
            match half.fin_off {
                Some(existing) if existing == fin_off => notes.push(Note::FinRetransmission),
                Some(_) => {}
                None => {
                    half.fin_off = Some(fin_off);
                    half.fin = Some(at);
                    let first = self.first_fin.is_none();
                    if first {
                        self.first_fin = Some(side);
                    }
                    notes.push(Note::Fin { first });
                }
            }
        }
        let half = &mut self.halves[side];
        if half.fin_reached() {
            half.end(side, at, &mut stream_events);
        }

        // What this segment acknowledges of the other direction.
        let mut ack_rel = None;
        if flags.has(Flags::ACK) {
            let peer_half = &mut self.halves[peer];
            if peer_half.started {
                ack_rel = Some(peer_half.rel(seg.ack));
                let diff = i64::from(seg.ack.wrapping_sub(peer_half.next_seq) as i32);
                let ack_off = peer_half.next_off as i64 + diff;
                if let Some(fin_off) = peer_half.fin_off {
                    if peer_half.fin_acked.is_none() && ack_off > fin_off as i64 {
                        peer_half.fin_acked = Some(at);
                        notes.push(Note::AcksFin);
                    }
                }
                let data_acked = ack_off.min(peer_half.fin_off.map_or(i64::MAX, |f| f as i64));
                if diff > 0 && data_acked > peer_half.next_off as i64 && diff < MAX_AHEAD_BYTES {
                    let covered = peer_half
                        .held
                        .first_key_value()
                        .is_some_and(|(&first, _)| first as i64 <= peer_half.next_off as i64);
                    if !covered {
                        notes.push(Note::AckedUnseenSegment);
                        // The hole up to the first held segment or the ACK, whichever is first.
                        let until = peer_half
                            .held
                            .first_key_value()
                            .map_or(data_acked, |(&first, _)| (first as i64).min(data_acked));
                        let gap = (until - peer_half.next_off as i64).max(0) as u64;
                        peer_half.skip(gap, GapReason::AckedUnseen, peer, at, &mut stream_events);
                        peer_half.drain(peer, at, &mut stream_events);
                        if peer_half.fin_reached() {
                            peer_half.end(peer, at, &mut stream_events);
                        }
                    }
                }
            } else {
                ack_rel = Some(seg.ack);
            }
            if self.hs_ack.is_none()
                && !flags.has(Flags::SYN)
                && self.client == Some(side)
                && self.syn_ack.is_some()
            {
                if let Some(isn) = self.halves[peer].isn {
                    if seg.ack == isn.wrapping_add(1) {
                        self.hs_ack = Some(at);
                        let rtt_ns = self
                            .syn
                            .map_or(0, |syn| at.time_ns.saturating_sub(syn.time_ns));
                        notes.push(Note::HandshakeAck { rtt_ns });
                    }
                }
            }
        }
        if seg.window == 0 && !is_ctl {
            notes.push(Note::ZeroWindow);
        }

        if flags.has(Flags::RST) {
            notes.push(Note::Rst);
            if self.reset.is_none() {
                self.reset = Some((side, at));
            }
        }
        if self.done_at.is_none() {
            let closed = self.halves.iter().all(|h| h.fin_acked.is_some());
            if closed || self.reset.is_some() {
                self.done_at = Some(at.time_ns);
            }
        }

        let half = &self.halves[side];
        out.push(Pending::Segment {
            side,
            at,
            flags,
            seq: half.rel(seg.seq),
            ack: ack_rel,
            len: wire_len,
            window: seg.window,
            window_scaled: self.scaled_window(side, seg),
            notes,
            payload: self.keep_payloads.then(|| seg.payload.to_vec()),
        });
        out.append(&mut stream_events);
    }

    /// The window in bytes, when both SYNs were captured (RFC 7323: scaling applies only
    /// when both sides offered it, and never to the SYNs themselves).
    fn scaled_window(&self, side: usize, seg: &TcpSegment<'_>) -> Option<u64> {
        if seg.flags.has(Flags::SYN) {
            return Some(u64::from(seg.window));
        }
        let mine = self.halves[side].window_scale?;
        let theirs = self.halves[1 - side].window_scale?;
        let shift = if mine > 0 && theirs > 0 {
            mine.min(14)
        } else {
            0
        };
        Some(u64::from(seg.window) << shift)
    }

    /// Ends both streams (the connection is over or the capture ended).
    pub fn finish(&mut self, out: &mut Vec<Pending>) {
        let at = self.last;
        for side in 0..2 {
            self.halves[side].end(side, at, out);
        }
    }

    /// Stops cutting lines (the connection is not a chat connection).
    pub fn stop_lines(&mut self) {
        for half in &mut self.halves {
            half.split_lines = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LineStatus;

    const C: usize = 0;
    const S: usize = 1;

    /// A connection driven by (side, seq, ack, flags, payload) tuples.
    struct Drive {
        conn: Conn,
        out: Vec<Pending>,
        frame: u64,
    }

    impl Drive {
        fn new() -> Self {
            let ends = [
                "10.0.0.1:4000".parse().expect("address"),
                "10.0.0.2:5378".parse().expect("address"),
            ];
            let first = Step {
                frame: 1,
                time_ns: 0,
            };
            Self {
                conn: Conn::new(0, ends, first, 64),
                out: Vec::new(),
                frame: 0,
            }
        }

        fn seg(&mut self, side: usize, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<Note> {
            self.frame += 1;
            let (src, dst) = (self.conn.ends[side], self.conn.ends[1 - side]);
            let seg = TcpSegment {
                src: src.ip(),
                dst: dst.ip(),
                src_port: src.port(),
                dst_port: dst.port(),
                seq,
                ack,
                flags: Flags(flags),
                window: 100,
                window_scale: None,
                payload,
                missing: 0,
                malformed: 0,
            };
            let at = Step {
                frame: self.frame,
                time_ns: self.frame * 1000,
            };
            let before = self.out.len();
            self.conn.handle_segment(side, &seg, at, &mut self.out);
            match &self.out[before] {
                Pending::Segment { notes, .. } => notes.clone(),
                other => panic!("segment first, got {other:?}"),
            }
        }

        fn handshake(&mut self) {
            self.seg(C, 100, 0, Flags::SYN, b"");
            self.seg(S, 500, 101, Flags::SYN | Flags::ACK, b"");
            self.seg(C, 101, 501, Flags::ACK, b"");
        }

        fn lines(&self) -> Vec<(usize, String, LineStatus)> {
            self.out
                .iter()
                .filter_map(|p| match p {
                    Pending::Line { side, line, .. } => Some((
                        *side,
                        String::from_utf8_lossy(&line.bytes).into_owned(),
                        line.status,
                    )),
                    _ => None,
                })
                .collect()
        }

        fn gaps(&self) -> Vec<(usize, u64, GapReason)> {
            self.out
                .iter()
                .filter_map(|p| match p {
                    Pending::Gap {
                        side,
                        bytes,
                        reason,
                        ..
                    } => Some((*side, *bytes, *reason)),
                    _ => None,
                })
                .collect()
        }
    }

    const PA: u8 = Flags::PSH | Flags::ACK;
    const A: u8 = Flags::ACK;

    #[test]
    fn handshake_notes_and_rtt() {
        let mut d = Drive::new();
        assert_eq!(d.seg(C, 100, 0, Flags::SYN, b""), [Note::Syn]);
        assert_eq!(d.seg(S, 500, 101, Flags::SYN | A, b""), [Note::SynAck]);
        assert_eq!(
            d.seg(C, 101, 501, A, b""),
            [Note::HandshakeAck { rtt_ns: 2000 }]
        );
        assert_eq!(d.conn.client, Some(C));
        assert_eq!(d.seg(C, 100, 0, Flags::SYN, b""), [Note::SynRetransmission]);
    }

    #[test]
    fn reordered_segments_wait_for_the_hole() {
        let mut d = Drive::new();
        d.handshake();
        assert_eq!(
            d.seg(C, 106, 501, PA, b"SEND b x\n"),
            [Note::PreviousSegmentNotCaptured]
        );
        assert!(d.lines().is_empty(), "nothing delivered past the hole");
        assert_eq!(d.seg(C, 101, 501, PA, b"LIST\n"), [Note::OutOfOrder]);
        assert_eq!(d.seg(C, 101, 501, PA, b"LIST\n"), [Note::Retransmission]);
        let texts: Vec<String> = d.lines().into_iter().map(|l| l.1).collect();
        assert_eq!(texts, ["LIST", "SEND b x"]);
    }

    #[test]
    fn partial_retransmission_delivers_only_the_new_part() {
        let mut d = Drive::new();
        d.handshake();
        d.seg(C, 101, 501, PA, b"LI");
        assert_eq!(
            d.seg(C, 101, 501, PA, b"LIST\n"),
            [Note::PartialRetransmission]
        );
        assert_eq!(d.lines(), [(C, "LIST".to_string(), LineStatus::Complete)]);
        assert_eq!(d.conn.halves[C].bytes, 5);
    }

    #[test]
    fn ack_past_unseen_data_declares_a_gap() {
        let mut d = Drive::new();
        d.handshake();
        d.seg(C, 101, 501, PA, b"LIST\nSE");
        // "ND b x\n" (7 bytes) never captured; the server acknowledges it.
        assert_eq!(d.seg(S, 501, 115, A, b""), [Note::AckedUnseenSegment]);
        assert_eq!(d.gaps(), [(C, 7, GapReason::AckedUnseen)]);
        d.seg(C, 115, 501, PA, b"LIST\n");
        let lines = d.lines();
        assert_eq!(lines[1], (C, "SE".to_string(), LineStatus::CutByGap));
        assert_eq!(lines[2], (C, "LIST".to_string(), LineStatus::AfterGap));
    }

    #[test]
    fn keepalive_zero_window_and_teardown() {
        let mut d = Drive::new();
        d.handshake();
        d.seg(C, 101, 501, PA, b"LIST\n");
        assert_eq!(d.seg(C, 105, 501, A, b"\0"), [Note::KeepAlive]);
        assert_eq!(d.conn.halves[C].bytes, 5, "a probe is not data");
        assert_eq!(d.seg(S, 501, 106, A, b""), Vec::<Note>::new());
        assert_eq!(
            d.seg(C, 106, 501, Flags::FIN | A, b""),
            [Note::Fin { first: true }]
        );
        assert_eq!(
            d.seg(S, 501, 107, Flags::FIN | A, b""),
            [Note::Fin { first: false }, Note::AcksFin]
        );
        assert!(d.conn.done_at.is_none());
        assert_eq!(d.seg(C, 107, 502, A, b""), [Note::AcksFin]);
        assert!(d.conn.done_at.is_some());
        assert_eq!(d.conn.first_fin, Some(C));
    }

    #[test]
    fn new_syn_after_close_is_a_new_connection() {
        let mut d = Drive::new();
        d.handshake();
        let syn = |seq| TcpSegment {
            src: d.conn.ends[C].ip(),
            dst: d.conn.ends[S].ip(),
            src_port: 4000,
            dst_port: 5378,
            seq,
            ack: 0,
            flags: Flags(Flags::SYN),
            window: 0,
            window_scale: None,
            payload: &[],
            missing: 0,
            malformed: 0,
        };
        assert!(!d.conn.is_new_syn(C, &syn(100)), "a retransmitted SYN");
        assert!(d.conn.is_new_syn(C, &syn(9000)), "another ISN");
    }
}
