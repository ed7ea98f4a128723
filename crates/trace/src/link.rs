//! From a captured frame to a TCP segment: link layer, IP, TCP header.
//!
//! Header parsing is `etherparse`'s, in its lax mode so that a frame cut short by the snap
//! length still yields its TCP header and the part of the payload that was captured; this
//! module picks the entry point for the link type and says how many payload bytes are missing.

use std::net::IpAddr;

use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TransportSlice};

/// tcpdump's link-layer header types that we read.
pub mod linktype {
    pub const NULL: i32 = 0;
    pub const ETHERNET: i32 = 1;
    pub const RAW_BSD_12: i32 = 12;
    pub const RAW_BSD_14: i32 = 14;
    pub const RAW: i32 = 101;
    pub const LOOP: i32 = 108;
    pub const LINUX_SLL: i32 = 113;
    pub const IPV4: i32 = 228;
    pub const IPV6: i32 = 229;
    pub const LINUX_SLL2: i32 = 276;
}

/// The link types we read, for messages.
pub const SUPPORTED_LINKTYPES: &str =
    "Ethernet (with VLAN tags), Linux cooked v1 and v2, BSD loopback/null, raw IPv4/IPv6";

/// Whether frames of this link type can be read.
pub fn is_supported(linktype: i32) -> bool {
    use linktype::*;
    matches!(
        linktype,
        NULL | ETHERNET
            | RAW_BSD_12
            | RAW_BSD_14
            | RAW
            | LOOP
            | LINUX_SLL
            | IPV4
            | IPV6
            | LINUX_SLL2
    )
}

/// TCP header flags, as on the wire (low byte of the flags field plus NS ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(pub u8);

impl Flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;

    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    /// Flag names in Wireshark's order and spelling, e.g. `["SYN", "ACK"]`.
    pub fn names(self) -> Vec<&'static str> {
        const ORDER: [(u8, &str); 8] = [
            (Flags::CWR, "CWR"),
            (Flags::ECE, "ECE"),
            (Flags::URG, "URG"),
            (Flags::SYN, "SYN"),
            (Flags::FIN, "FIN"),
            (Flags::RST, "RST"),
            (Flags::PSH, "PSH"),
            (Flags::ACK, "ACK"),
        ];
        ORDER
            .iter()
            .filter(|(bit, _)| self.has(*bit))
            .map(|(_, name)| *name)
            .collect()
    }
}

/// The facts of one TCP segment that the analysis needs.
#[derive(Debug, Clone)]
pub struct TcpSegment<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: Flags,
    pub window: u16,
    /// Window scale option, on SYNs that carry one.
    pub window_scale: Option<u8>,
    /// The payload bytes captured.
    pub payload: &'a [u8],
    /// Payload bytes the IP header says were sent but the capture did not keep (snap length).
    pub missing: u32,
    /// Payload bytes the IP header claims although the frame was captured whole: the packet
    /// is malformed (its total length lies), not cut. Zero for a sound packet. Set by the
    /// analyzer, which knows the frame's wire length (see [`TcpSegment::declare_malformed`]).
    pub malformed: u32,
}

impl TcpSegment<'_> {
    /// Calls the payload the header claims beyond what a frame captured whole holds
    /// malformed rather than missing: when the frame's wire length is no more than what was
    /// captured, the snap length cut nothing, so the IP total length is simply wrong (tshark:
    /// "IPv4 total length exceeds packet length").
    pub fn declare_malformed(&mut self, frame_captured_whole: bool) {
        if frame_captured_whole && self.missing > 0 {
            self.malformed = self.missing;
            self.missing = 0;
        }
    }

    /// Payload length on the wire, captured or not.
    pub fn wire_len(&self) -> u64 {
        self.payload.len() as u64 + u64::from(self.missing)
    }
}

/// Why a frame gave no TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// A link type we do not read.
    UnsupportedLink(i32),
    /// Not IP (ARP, LLDP, ...).
    NotIp,
    /// IP, but not TCP.
    NotTcp,
    /// A fragment of a fragmented IP packet (not reassembled).
    Fragment,
    /// The frame ends before the TCP header does (snap length or corruption).
    Truncated,
    /// A header that does not parse.
    Malformed,
}

/// Decodes the TCP segment in a frame of link type `linktype`.
///
/// # Errors
/// Why there is no TCP segment to look at.
pub fn tcp_segment(linktype: i32, data: &[u8]) -> Result<TcpSegment<'_>, Skip> {
    use linktype::*;
    let sliced = match linktype {
        ETHERNET => LaxSlicedPacket::from_ethernet(data).map_err(|_| Skip::Truncated)?,
        NULL | LOOP => {
            let ip = data.get(4..).ok_or(Skip::Truncated)?;
            from_ip(ip)?
        }
        RAW | RAW_BSD_12 | RAW_BSD_14 | IPV4 | IPV6 => from_ip(data)?,
        LINUX_SLL => {
            let proto = data.get(14..16).ok_or(Skip::Truncated)?;
            let rest = data.get(16..).ok_or(Skip::Truncated)?;
            LaxSlicedPacket::from_ether_type(
                EtherType(u16::from_be_bytes([proto[0], proto[1]])),
                rest,
            )
        }
        LINUX_SLL2 => {
            let proto = data.get(0..2).ok_or(Skip::Truncated)?;
            let rest = data.get(20..).ok_or(Skip::Truncated)?;
            LaxSlicedPacket::from_ether_type(
                EtherType(u16::from_be_bytes([proto[0], proto[1]])),
                rest,
            )
        }
        other => return Err(Skip::UnsupportedLink(other)),
    };
    let net = match &sliced.net {
        Some(LaxNetSlice::Ipv4(_)) | Some(LaxNetSlice::Ipv6(_)) => sliced.net.as_ref(),
        _ => {
            return Err(if sliced.stop_err.is_some() {
                Skip::Truncated
            } else {
                Skip::NotIp
            })
        }
    };
    let (src, dst, declared_end, payload) = match net {
        Some(LaxNetSlice::Ipv4(v4)) => {
            let header = v4.header();
            let start = header.slice().as_ptr() as usize;
            (
                IpAddr::V4(header.source_addr()),
                IpAddr::V4(header.destination_addr()),
                start + usize::from(header.total_len()),
                v4.payload(),
            )
        }
        Some(LaxNetSlice::Ipv6(v6)) => {
            let header = v6.header();
            let start = header.slice().as_ptr() as usize;
            (
                IpAddr::V6(header.source_addr()),
                IpAddr::V6(header.destination_addr()),
                start + 40 + usize::from(header.payload_length()),
                v6.payload(),
            )
        }
        _ => return Err(Skip::NotIp),
    };
    if payload.fragmented {
        return Err(Skip::Fragment);
    }
    if payload.ip_number != etherparse::IpNumber::TCP {
        return Err(Skip::NotTcp);
    }
    let tcp = match &sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => tcp,
        _ => {
            return match &sliced.stop_err {
                Some((etherparse::err::packet::SliceError::Len(_), _)) => {
                    cut_header(src, dst, payload.payload, declared_end)
                }
                _ => Err(Skip::Malformed),
            }
        }
    };
    let body = tcp.payload();
    let actual_end = body.as_ptr() as usize + body.len();
    // A declared length of zero (segmentation offload on the capturing host) or one shorter
    // than what was captured says nothing about missing bytes.
    let missing = if payload.incomplete && declared_end > actual_end {
        u32::try_from(declared_end - actual_end).unwrap_or(u32::MAX)
    } else {
        0
    };
    let window_scale = if tcp.syn() {
        tcp.options_iterator().find_map(|opt| match opt {
            Ok(etherparse::TcpOptionElement::WindowScale(shift)) => Some(shift),
            _ => None,
        })
    } else {
        None
    };
    let mut flags = 0;
    for (on, bit) in [
        (tcp.fin(), Flags::FIN),
        (tcp.syn(), Flags::SYN),
        (tcp.rst(), Flags::RST),
        (tcp.psh(), Flags::PSH),
        (tcp.ack(), Flags::ACK),
        (tcp.urg(), Flags::URG),
        (tcp.ece(), Flags::ECE),
        (tcp.cwr(), Flags::CWR),
    ] {
        if on {
            flags |= bit;
        }
    }
    Ok(TcpSegment {
        src,
        dst,
        src_port: tcp.source_port(),
        dst_port: tcp.destination_port(),
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
        flags: Flags(flags),
        window: tcp.window_size(),
        window_scale,
        payload: body,
        missing,
        malformed: 0,
    })
}

/// A TCP header whose options the snap length cut (SYNs carry 20 bytes of options, so a
/// capture with `-s 68` keeps none of them whole): the fixed 20 bytes still say everything the
/// analysis needs; the options and the payload count as missing.
fn cut_header(
    src: IpAddr,
    dst: IpAddr,
    bytes: &[u8],
    declared_end: usize,
) -> Result<TcpSegment<'_>, Skip> {
    let fixed: &[u8; 20] = bytes
        .get(..20)
        .and_then(|b| b.try_into().ok())
        .ok_or(Skip::Truncated)?;
    let u16_at = |i: usize| u16::from_be_bytes([fixed[i], fixed[i + 1]]);
    let u32_at =
        |i: usize| u32::from_be_bytes([fixed[i], fixed[i + 1], fixed[i + 2], fixed[i + 3]]);
    let header_len = usize::from(fixed[12] >> 4) * 4;
    if header_len < 20 {
        return Err(Skip::Malformed);
    }
    let payload_start = bytes.as_ptr() as usize + header_len;
    let missing = u32::try_from(declared_end.saturating_sub(payload_start)).unwrap_or(u32::MAX);
    Ok(TcpSegment {
        src,
        dst,
        src_port: u16_at(0),
        dst_port: u16_at(2),
        seq: u32_at(4),
        ack: u32_at(8),
        flags: Flags(fixed[13]),
        window: u16_at(14),
        window_scale: None,
        payload: &[],
        missing,
        malformed: 0,
    })
}

fn from_ip(data: &[u8]) -> Result<LaxSlicedPacket<'_>, Skip> {
    match data.first().map(|b| b >> 4) {
        Some(4) | Some(6) => LaxSlicedPacket::from_ip(data).map_err(|_| Skip::Truncated),
        Some(_) => Err(Skip::NotIp),
        None => Err(Skip::Truncated),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_names_follow_wireshark() {
        assert_eq!(Flags(Flags::SYN | Flags::ACK).names(), vec!["SYN", "ACK"]);
        assert_eq!(
            Flags(Flags::FIN | Flags::PSH | Flags::ACK).names(),
            vec!["FIN", "PSH", "ACK"]
        );
    }

    #[test]
    fn garbage_is_skipped_not_panicked_on() {
        for lt in [0, 1, 12, 14, 101, 108, 113, 228, 229, 276, 999] {
            for len in 0..80 {
                let data = vec![0x45u8; len];
                let _ = tcp_segment(lt, &data);
                let data = vec![0x60u8; len];
                let _ = tcp_segment(lt, &data);
            }
        }
        assert_eq!(
            tcp_segment(999, &[]).err(),
            Some(Skip::UnsupportedLink(999))
        );
    }
}
