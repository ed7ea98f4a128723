//! Reading frames out of a pcap or pcapng file, streaming.
//!
//! The formats themselves are parsed by `pcap-parser`; this module only drives its streaming
//! reader (refill, grow, consume), keeps the per-interface facts pcapng spreads over several
//! blocks (link type, timestamp resolution and offset), and turns the crate's errors into ones
//! that say what went wrong and at which byte. Memory is one read buffer, grown only as far as
//! the largest record needs and never past [`MAX_RECORD_BYTES`].

use std::io::Read;

use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{PcapBlockOwned, PcapError};

/// Initial size of the read buffer.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// The largest record (pcap packet record or pcapng block) accepted. Real snap lengths stop at
/// 256 KiB; a larger length field means the file is corrupt.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// One captured frame, borrowed from the reader until the next call.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// 1-based position among the packets of the file (Wireshark's frame number).
    pub number: u64,
    /// Capture time, nanoseconds since the Unix epoch. Simple Packet Blocks carry none and get
    /// the previous frame's.
    pub time_ns: u64,
    /// The link-layer header type (tcpdump's LINKTYPE_ values).
    pub linktype: i32,
    /// The bytes captured (at most the snap length).
    pub data: &'a [u8],
    /// The frame's length on the wire; more than `data.len()` when the snap length cut it.
    pub orig_len: u32,
}

/// Why the capture could not be read (further).
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot read the capture: {0}")]
    Io(#[from] std::io::Error),
    #[error("the file is empty")]
    Empty,
    #[error(
        "not a pcap or pcapng file (it starts with {magic}); record one with `tcpdump -w FILE`"
    )]
    NotACapture { magic: String },
    #[error("the file ends in the middle of a record at byte {offset} (truncated capture)")]
    Truncated { offset: u64 },
    #[error("corrupt record at byte {offset}: {detail}")]
    Corrupt { offset: u64, detail: String },
    #[error(
        "unsupported link type {linktype} (in the file header); tcpchat trace reads {}",
        crate::link::SUPPORTED_LINKTYPES
    )]
    UnsupportedLinkType { linktype: i32 },
    #[error("packet at byte {offset} names interface {interface}, but the section describes only {described}")]
    UnknownInterface {
        offset: u64,
        interface: u32,
        described: usize,
    },
}

#[derive(Debug, Clone, Copy)]
struct Interface {
    linktype: i32,
    /// Timestamp units per second, or `None` when the interface declares an impossible one.
    units_per_sec: Option<u64>,
    offset_secs: i64,
}

/// Reads frames one at a time from a pcap or pcapng stream.
pub struct CaptureReader {
    inner: Box<dyn PcapReaderIterator + Send>,
    /// Bytes of the last returned block, consumed at the next call.
    pending_consume: usize,
    legacy: Option<Legacy>,
    interfaces: Vec<Interface>,
    frame_number: u64,
    last_time_ns: u64,
    frame_buf: Vec<u8>,
    format: Format,
}

#[derive(Debug, Clone, Copy)]
struct Legacy {
    linktype: i32,
    nanos: bool,
}

/// The container format of a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Pcap,
    Pcapng,
}

impl CaptureReader {
    /// Opens a capture, recognising pcap (either byte order, micro- or nanosecond) or pcapng.
    ///
    /// # Errors
    /// [`CaptureError::Empty`], [`CaptureError::NotACapture`], a short file as
    /// [`CaptureError::Truncated`], or the I/O error.
    pub fn new<R: Read + Send + 'static>(mut input: R) -> Result<Self, CaptureError> {
        // Read the first bytes ourselves so a short read cannot be mistaken for a short file,
        // then hand them, chained with the rest, to pcap-parser.
        let mut head = Vec::with_capacity(64);
        (&mut input).take(64).read_to_end(&mut head)?;
        if head.is_empty() {
            return Err(CaptureError::Empty);
        }
        let magic = head
            .iter()
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ");
        let (format, known, header_len) = match head.get(..4) {
            Some([0x0a, 0x0d, 0x0d, 0x0a]) => (Format::Pcapng, true, 28),
            Some([0xa1, 0xb2, 0xc3, 0xd4])
            | Some([0xd4, 0xc3, 0xb2, 0xa1])
            | Some([0xa1, 0xb2, 0x3c, 0x4d])
            | Some([0x4d, 0x3c, 0xb2, 0xa1]) => (Format::Pcap, true, 24),
            _ => (Format::Pcap, false, 0),
        };
        if known && head.len() < header_len {
            return Err(CaptureError::Truncated { offset: 0 });
        }
        let chained = std::io::Cursor::new(head).chain(input);
        let inner = match pcap_parser::create_reader(READ_BUFFER_BYTES, FullReader(chained)) {
            Ok(r) => r,
            Err(PcapError::Eof) => return Err(CaptureError::Empty),
            Err(PcapError::Incomplete(_)) | Err(PcapError::UnexpectedEof) if known => {
                return Err(CaptureError::Truncated { offset: 0 })
            }
            Err(PcapError::ReadError) => {
                return Err(CaptureError::Io(std::io::Error::other("read failed")))
            }
            Err(_) if known => {
                return Err(CaptureError::Corrupt {
                    offset: 0,
                    detail: "the file header does not parse".into(),
                })
            }
            Err(_) => return Err(CaptureError::NotACapture { magic }),
        };
        Ok(Self {
            inner,
            pending_consume: 0,
            legacy: None,
            interfaces: Vec::new(),
            frame_number: 0,
            last_time_ns: 0,
            frame_buf: Vec::new(),
            format,
        })
    }
}

impl CaptureReader {
    /// The container format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Byte offset of the next unread record.
    pub fn offset(&self) -> u64 {
        self.inner.consumed() as u64
    }

    /// The next frame, `Ok(None)` at the end of the file.
    ///
    /// # Errors
    /// What is wrong with the file and where; frames before it were returned normally.
    /// After an error, further calls return the same kind of error or `None`.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        if self.pending_consume > 0 {
            self.inner.consume(self.pending_consume);
            self.pending_consume = 0;
        }
        loop {
            let offset = self.inner.consumed() as u64;
            let (len, packet) = match self.inner.next() {
                Ok((len, block)) => {
                    let packet = match block {
                        PcapBlockOwned::LegacyHeader(header) => {
                            if !crate::link::is_supported(header.network.0) {
                                return Err(CaptureError::UnsupportedLinkType {
                                    linktype: header.network.0,
                                });
                            }
                            self.legacy = Some(Legacy {
                                linktype: header.network.0,
                                nanos: header.is_nanosecond_precision(),
                            });
                            None
                        }
                        PcapBlockOwned::Legacy(record) => {
                            let legacy = self.legacy.unwrap_or(Legacy {
                                linktype: 1,
                                nanos: false,
                            });
                            let frac_ns = if legacy.nanos {
                                u64::from(record.ts_usec)
                            } else {
                                u64::from(record.ts_usec).saturating_mul(1000)
                            };
                            let time_ns = u64::from(record.ts_sec)
                                .saturating_mul(NANOS_PER_SEC)
                                .saturating_add(frac_ns);
                            copy_into(&mut self.frame_buf, record.data);
                            Some((legacy.linktype, time_ns, record.origlen))
                        }
                        PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                            self.interfaces.clear();
                            None
                        }
                        PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                            self.interfaces.push(Interface {
                                linktype: idb.linktype.0,
                                units_per_sec: units_per_sec(idb.if_tsresol),
                                offset_secs: idb.if_tsoffset,
                            });
                            None
                        }
                        PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                            let Some(iface) = self.interfaces.get(epb.if_id as usize).copied()
                            else {
                                return Err(CaptureError::UnknownInterface {
                                    offset,
                                    interface: epb.if_id,
                                    described: self.interfaces.len(),
                                });
                            };
                            let ticks = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                            let time_ns = ticks_to_ns(ticks, iface);
                            let caplen = (epb.caplen as usize).min(epb.data.len());
                            copy_into(&mut self.frame_buf, &epb.data[..caplen]);
                            Some((iface.linktype, time_ns, epb.origlen))
                        }
                        PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                            let Some(iface) = self.interfaces.first().copied() else {
                                return Err(CaptureError::UnknownInterface {
                                    offset,
                                    interface: 0,
                                    described: 0,
                                });
                            };
                            let caplen = (spb.origlen as usize).min(spb.data.len());
                            copy_into(&mut self.frame_buf, &spb.data[..caplen]);
                            Some((iface.linktype, self.last_time_ns, spb.origlen))
                        }
                        PcapBlockOwned::NG(_) => None,
                    };
                    (len, packet)
                }
                Err(PcapError::Eof) => return Ok(None),
                Err(PcapError::Incomplete(_)) => {
                    self.refill(offset)?;
                    continue;
                }
                Err(PcapError::BufferTooSmall) => {
                    self.grow(offset)?;
                    continue;
                }
                Err(PcapError::UnexpectedEof) => return Err(CaptureError::Truncated { offset }),
                Err(PcapError::ReadError) => {
                    return Err(CaptureError::Io(std::io::Error::other(format!(
                        "read failed at byte {offset}"
                    ))))
                }
                Err(PcapError::HeaderNotRecognized) => {
                    return Err(CaptureError::Corrupt {
                        offset,
                        detail: "unrecognised header".into(),
                    })
                }
                Err(PcapError::NomError(_, kind)) | Err(PcapError::OwnedNomError(_, kind)) => {
                    return Err(CaptureError::Corrupt {
                        offset,
                        detail: format!("the record does not parse ({kind:?})"),
                    })
                }
            };
            if len == 0 {
                // pcap-parser never returns an empty block; if it did, looping would never end.
                return Err(CaptureError::Corrupt {
                    offset,
                    detail: "empty record".into(),
                });
            }
            self.pending_consume = len;
            if let Some((linktype, time_ns, orig_len)) = packet {
                self.frame_number += 1;
                self.last_time_ns = time_ns;
                return Ok(Some(Frame {
                    number: self.frame_number,
                    time_ns,
                    linktype,
                    data: &self.frame_buf,
                    orig_len,
                }));
            }
            self.inner.consume(len);
            self.pending_consume = 0;
        }
    }

    fn refill(&mut self, offset: u64) -> Result<(), CaptureError> {
        let before = self.inner.data().len();
        if self.inner.refill().is_err() {
            return Err(CaptureError::Io(std::io::Error::other(format!(
                "read failed at byte {offset}"
            ))));
        }
        if self.inner.data().len() == before && !self.inner.reader_exhausted() {
            // The buffer is full and still holds no whole record.
            self.grow(offset)?;
        }
        Ok(())
    }

    fn grow(&mut self, offset: u64) -> Result<(), CaptureError> {
        let size = self.inner.data().len().max(READ_BUFFER_BYTES) * 2;
        if size > MAX_RECORD_BYTES * 2 || !self.inner.grow(size) {
            return Err(CaptureError::Corrupt {
                offset,
                detail: format!("a record longer than {MAX_RECORD_BYTES} bytes"),
            });
        }
        if self.inner.refill().is_err() {
            return Err(CaptureError::Io(std::io::Error::other(format!(
                "read failed at byte {offset}"
            ))));
        }
        Ok(())
    }
}

fn copy_into(buf: &mut Vec<u8>, data: &[u8]) {
    buf.clear();
    buf.extend_from_slice(data);
}

/// pcapng's `if_tsresol`: a power of ten, or of two when the top bit is set. The default
/// (no option) is microseconds, which pcap-parser fills in.
fn units_per_sec(tsresol: u8) -> Option<u64> {
    let exp = u32::from(tsresol & 0x7f);
    if tsresol & 0x80 == 0 {
        10u64.checked_pow(exp)
    } else {
        1u64.checked_shl(exp).filter(|_| exp < 64)
    }
}

fn ticks_to_ns(ticks: u64, iface: Interface) -> u64 {
    let units = iface.units_per_sec.unwrap_or(1_000_000).max(1);
    let ns = u128::from(ticks) * u128::from(NANOS_PER_SEC) / u128::from(units);
    let offset_ns = i128::from(iface.offset_secs) * i128::from(NANOS_PER_SEC);
    let total = (ns as i128).saturating_add(offset_ns);
    u64::try_from(total.max(0)).unwrap_or(u64::MAX)
}

/// Makes every `read` fill the buffer as far as the source allows, so pcap-parser (which
/// treats a zero-byte read as the end) sees a pipe the same way as a file.
struct FullReader<R>(R);

impl<R: Read> Read for FullReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.0.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if filled > 0 => {
                    // Report what was read; the error recurs on the next call.
                    let _ = e;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolutions() {
        assert_eq!(units_per_sec(6), Some(1_000_000));
        assert_eq!(units_per_sec(9), Some(1_000_000_000));
        assert_eq!(units_per_sec(0x80 | 10), Some(1024));
        assert_eq!(units_per_sec(20), None);
        assert_eq!(units_per_sec(0x80 | 70), None);
    }

    #[test]
    fn ticks_saturate_instead_of_overflowing() {
        let iface = Interface {
            linktype: 1,
            units_per_sec: Some(1),
            offset_secs: i64::MAX,
        };
        assert_eq!(ticks_to_ns(u64::MAX, iface), u64::MAX);
        let back = Interface {
            offset_secs: i64::MIN,
            ..iface
        };
        assert_eq!(ticks_to_ns(5, back), 0);
    }

    #[test]
    fn empty_and_foreign_files_are_refused() {
        assert!(matches!(
            CaptureReader::new(std::io::Cursor::new(Vec::new())),
            Err(CaptureError::Empty)
        ));
        assert!(matches!(
            CaptureReader::new(std::io::Cursor::new(
                b"GIF89a this is not a capture at all, no sir, not at all".to_vec()
            )),
            Err(CaptureError::NotACapture { .. })
        ));
        assert!(matches!(
            CaptureReader::new(std::io::Cursor::new(b"short text\n".to_vec())),
            Err(CaptureError::NotACapture { .. })
        ));
    }
}
