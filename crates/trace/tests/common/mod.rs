//! Captures built in tests: a scripted TCP conversation, wrapped in any link type and written
//! as pcap (either byte order, micro- or nanoseconds) or pcapng.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};

use etherparse::{PacketBuilder, TcpHeader};
use tcpchat_trace::model::{ConnectionEnd, Event, EventKind, Line, Output, Segment};

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// One IP packet and when it was captured.
#[derive(Debug, Clone)]
pub struct Packet {
    pub time_ns: u64,
    pub ip: Vec<u8>,
    /// Bytes to keep (snap length); `None` keeps all.
    pub snap: Option<usize>,
}

/// Builds IP packets for a TCP segment.
pub fn tcp_ip(
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut h = TcpHeader::new(src.port(), dst.port(), seq, window);
    h.fin = flags & FIN != 0;
    h.syn = flags & SYN != 0;
    h.rst = flags & RST != 0;
    h.psh = flags & PSH != 0;
    h.ack = flags & ACK != 0;
    h.acknowledgment_number = if h.ack { ack } else { 0 };
    let mut out = Vec::new();
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64)
            .tcp_header(h)
            .write_to_vec(&mut out, payload)
            .expect("builds"),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64)
            .tcp_header(h)
            .write_to_vec(&mut out, payload)
            .expect("builds"),
        _ => panic!("mixed address families"),
    }
    out
}

/// A scripted TCP conversation between a client and a server.
pub struct Conv {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub cseq: u32,
    pub sseq: u32,
    pub time_ns: u64,
    pub step_ns: u64,
    pub packets: Vec<Packet>,
}

impl Conv {
    pub fn new(client: &str, server: &str) -> Self {
        Self {
            client: client.parse().expect("address"),
            server: server.parse().expect("address"),
            cseq: 1000,
            sseq: 5000,
            time_ns: 1_700_000_000_000_000_000,
            step_ns: 100_000,
            packets: Vec::new(),
        }
    }

    fn tick(&mut self) -> u64 {
        self.time_ns += self.step_ns;
        self.time_ns
    }

    /// A raw segment, sequence numbers as given.
    pub fn raw(&mut self, from_client: bool, seq: u32, ack: u32, flags: u8, payload: &[u8]) {
        let (src, dst) = if from_client {
            (self.client, self.server)
        } else {
            (self.server, self.client)
        };
        let ip = tcp_ip(src, dst, seq, ack, flags, 65000, payload);
        let time_ns = self.tick();
        self.packets.push(Packet {
            time_ns,
            ip,
            snap: None,
        });
    }

    /// A segment at the sender's current sequence number, acknowledging everything.
    pub fn send(&mut self, from_client: bool, flags: u8, payload: &[u8]) {
        let (seq, ack) = if from_client {
            (self.cseq, self.sseq)
        } else {
            (self.sseq, self.cseq)
        };
        self.raw(from_client, seq, ack, flags, payload);
        let used = payload.len() as u32 + u32::from(flags & (SYN | FIN) != 0);
        if from_client {
            self.cseq = self.cseq.wrapping_add(used);
        } else {
            self.sseq = self.sseq.wrapping_add(used);
        }
    }

    pub fn handshake(&mut self) {
        self.send(true, SYN, b"");
        self.send(false, SYN | ACK, b"");
        self.send(true, ACK, b"");
    }

    /// Data from one side, acknowledged by the other.
    pub fn data(&mut self, from_client: bool, payload: &[u8]) {
        self.send(from_client, PSH | ACK, payload);
        self.send(!from_client, ACK, b"");
    }

    /// The client closes first; the server answers with its own FIN.
    pub fn close_by(&mut self, client_first: bool) {
        self.send(client_first, FIN | ACK, b"");
        self.send(!client_first, FIN | ACK, b"");
        self.send(client_first, ACK, b"");
    }
}

/// Link-layer framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Ethernet,
    EthernetVlan,
    Sll,
    Sll2,
    Null,
    Raw,
}

impl Link {
    pub fn linktype(self) -> u32 {
        match self {
            Link::Ethernet | Link::EthernetVlan => 1,
            Link::Sll => 113,
            Link::Sll2 => 276,
            Link::Null => 0,
            Link::Raw => 101,
        }
    }

    pub fn frame(self, ip: &[u8]) -> Vec<u8> {
        let v6 = ip.first().is_some_and(|b| b >> 4 == 6);
        let ethertype: [u8; 2] = if v6 { [0x86, 0xdd] } else { [0x08, 0x00] };
        let mut out = Vec::new();
        match self {
            Link::Ethernet | Link::EthernetVlan => {
                out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                if self == Link::EthernetVlan {
                    out.extend_from_slice(&[0x81, 0x00, 0x00, 0x2a]);
                }
                out.extend_from_slice(&ethertype);
            }
            Link::Sll => {
                out.extend_from_slice(&[0, 0, 3, 4, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0]);
                out.extend_from_slice(&ethertype);
            }
            Link::Sll2 => {
                out.extend_from_slice(&ethertype);
                out.extend_from_slice(&[0, 0, 0, 0, 0, 1, 3, 4, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            }
            Link::Null => {
                let family: u32 = if v6 { 30 } else { 2 };
                out.extend_from_slice(&family.to_le_bytes());
            }
            Link::Raw => {}
        }
        out.extend_from_slice(ip);
        out
    }
}

/// Container format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    PcapLeMicro,
    PcapBeMicro,
    PcapLeNano,
    PcapBeNano,
    Pcapng,
    PcapngBe,
}

pub const ALL_FORMATS: [Format; 6] = [
    Format::PcapLeMicro,
    Format::PcapBeMicro,
    Format::PcapLeNano,
    Format::PcapBeNano,
    Format::Pcapng,
    Format::PcapngBe,
];

pub const ALL_LINKS: [Link; 6] = [
    Link::Ethernet,
    Link::EthernetVlan,
    Link::Sll,
    Link::Sll2,
    Link::Null,
    Link::Raw,
];

struct Out {
    big: bool,
    buf: Vec<u8>,
}

impl Out {
    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        });
    }
}

/// Writes the packets as a capture file.
pub fn write(packets: &[Packet], link: Link, format: Format) -> Vec<u8> {
    match format {
        Format::PcapLeMicro | Format::PcapBeMicro | Format::PcapLeNano | Format::PcapBeNano => {
            let big = matches!(format, Format::PcapBeMicro | Format::PcapBeNano);
            let nano = matches!(format, Format::PcapLeNano | Format::PcapBeNano);
            let mut o = Out {
                big,
                buf: Vec::new(),
            };
            o.u32(if nano { 0xa1b2_3c4d } else { 0xa1b2_c3d4 });
            o.u16(2);
            o.u16(4);
            o.u32(0);
            o.u32(0);
            o.u32(262_144);
            o.u32(link.linktype());
            for p in packets {
                let frame = link.frame(&p.ip);
                let keep = p.snap.map_or(frame.len(), |s| s.min(frame.len()));
                let secs = p.time_ns / 1_000_000_000;
                let frac = p.time_ns % 1_000_000_000;
                o.u32(secs as u32);
                o.u32(if nano {
                    frac as u32
                } else {
                    (frac / 1000) as u32
                });
                o.u32(keep as u32);
                o.u32(frame.len() as u32);
                o.buf.extend_from_slice(&frame[..keep]);
            }
            o.buf
        }
        Format::Pcapng | Format::PcapngBe => {
            let mut o = Out {
                big: format == Format::PcapngBe,
                buf: Vec::new(),
            };
            // Section header block.
            o.u32(0x0a0d_0d0a);
            o.u32(28);
            o.u32(0x1a2b_3c4d);
            o.u16(1);
            o.u16(0);
            o.u32(0xffff_ffff);
            o.u32(0xffff_ffff);
            o.u32(28);
            // Interface description block, nanosecond resolution.
            o.u32(1);
            o.u32(32);
            o.u16(link.linktype() as u16);
            o.u16(0);
            o.u32(262_144);
            o.u16(9); // if_tsresol
            o.u16(1);
            o.buf.extend_from_slice(&[9, 0, 0, 0]);
            o.u16(0); // opt_endofopt
            o.u16(0);
            o.u32(32);
            for p in packets {
                let frame = link.frame(&p.ip);
                let keep = p.snap.map_or(frame.len(), |s| s.min(frame.len()));
                let padded = keep.div_ceil(4) * 4;
                let total = 32 + padded as u32;
                o.u32(6);
                o.u32(total);
                o.u32(0);
                o.u32((p.time_ns >> 32) as u32);
                o.u32(p.time_ns as u32);
                o.u32(keep as u32);
                o.u32(frame.len() as u32);
                o.buf.extend_from_slice(&frame[..keep]);
                o.buf.resize(o.buf.len() + padded - keep, 0);
                o.u32(total);
            }
            o.buf
        }
    }
}

/// The events of all connections, in order.
pub fn events(outputs: &[Output]) -> Vec<&Event> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e),
            _ => None,
        })
        .collect()
}

pub fn lines(outputs: &[Output]) -> Vec<&Line> {
    events(outputs)
        .into_iter()
        .filter_map(|e| match &e.kind {
            EventKind::Line(l) => Some(l),
            _ => None,
        })
        .collect()
}

pub fn segments(outputs: &[Output]) -> Vec<(&Event, &Segment)> {
    events(outputs)
        .into_iter()
        .filter_map(|e| match &e.kind {
            EventKind::Segment(s) => Some((e, s)),
            _ => None,
        })
        .collect()
}

pub fn ends(outputs: &[Output]) -> Vec<&ConnectionEnd> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::End(e) => Some(&**e),
            _ => None,
        })
        .collect()
}

/// `(direction arrow, text)` for each line, for compact comparisons.
pub fn line_texts(outputs: &[Output]) -> Vec<String> {
    events(outputs)
        .into_iter()
        .filter_map(|e| match &e.kind {
            EventKind::Line(l) => Some(format!(
                "{} {}",
                match e.dir {
                    tcpchat_trace::model::Dir::ClientToServer => "C>",
                    tcpchat_trace::model::Dir::ServerToClient => "S>",
                },
                l.text
            )),
            _ => None,
        })
        .collect()
}

/// A typical session: login, list, send, delivery, clean close by the client.
pub fn chat_session(client: &str, server: &str) -> Conv {
    let mut c = Conv::new(client, server);
    c.handshake();
    c.data(true, b"HELLO-FROM alice\n");
    c.data(false, b"HELLO alice\n");
    c.data(true, b"LIST\n");
    c.data(false, b"LIST-OK alice,bob\n");
    c.data(true, b"SEND bob hi there\n");
    c.data(false, b"SEND-OK\n");
    c.data(false, b"DELIVERY bob hello  alice\n");
    c.close_by(true);
    c
}
