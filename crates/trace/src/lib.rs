//! `tcpchat trace`: explains a packet capture of the chat protocol.
//!
//! A capture (pcap or pcapng, read as a stream) goes through four stages, one module each:
//! [`capture`] yields frames; [`link`] finds the TCP segment in each (via `etherparse`);
//! [`tcp`] follows each connection (handshake, reassembly of both byte streams, teardown,
//! anomalies); [`chat`] cuts each stream into protocol lines and decodes them with
//! `tcpchat_proto`, the same parser the server uses. [`analyzer`] ties the last two together
//! per connection and decides which connections are chat connections; [`render`] prints the
//! result as a timeline or as JSON lines. In front of the line cutting, [`ws`] reads a
//! WebSocket upgrade and the frames after it (the web listener's `ws://`), so the lines inside
//! text messages are explained as lines read from TCP are; [`tls`] reads TLS hellos.
//!
//! Everything from [`analyzer`] down is sans-I/O: frames in, [`model::Output`]s out, time taken
//! from the capture. This crate does not capture packets (tcpdump does) and does not judge
//! whether a server behaved correctly (`tcpchat check` does); it explains what was on the wire.

pub mod analyzer;
pub mod capture;
pub mod chat;
pub mod link;
pub mod model;
pub mod render;
pub mod tcp;
pub mod tls;
pub mod ws;

use std::io::{Read, Write};

pub use analyzer::{Analyzer, Options};
pub use capture::{CaptureError, CaptureReader};
pub use model::{CaptureSummary, Output};
use render::{JsonRender, Render, TextRender};

/// How to show the analysis.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// JSON lines instead of the timeline.
    pub json: bool,
    /// Hex + ASCII dump of each data segment's payload.
    pub hex: bool,
    /// ANSI colours (the timeline only).
    pub color: bool,
}

/// Why a trace failed. Whatever was read before the failure has been printed.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(
        "frame {frame}: unsupported link type {linktype}; tcpchat trace reads {}",
        link::SUPPORTED_LINKTYPES
    )]
    UnsupportedLink { frame: u64, linktype: i32 },
    #[error("stream {stream} is not in this capture ({count} TCP connections, numbered from 0)")]
    NoSuchStream { stream: u64, count: u64 },
    #[error("cannot write the report: {0}")]
    Output(#[source] std::io::Error),
}

/// Reads the capture in `input`, analyses it and writes the report to `out`.
///
/// Returns the capture summary.
///
/// # Errors
/// The capture could not be read to its end (the report covers what came before), the
/// requested stream does not exist, or writing failed.
pub fn trace<R: Read + Send + 'static, W: Write>(
    input: R,
    opts: &Options,
    view: &View,
    out: W,
) -> Result<CaptureSummary, TraceError> {
    let mut reader = CaptureReader::new(input)?;
    let opts = Options {
        payloads: opts.payloads || view.hex,
        ..opts.clone()
    };
    let mut render: Box<dyn Render> = if view.json {
        Box::new(JsonRender::new(out))
    } else {
        Box::new(TextRender::new(out, view.color, view.hex))
    };
    let mut analyzer = Analyzer::new(opts.clone());
    let mut failure = None;
    loop {
        let frame = match reader.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                failure = Some(TraceError::Capture(e));
                break;
            }
        };
        if let Err(link::Skip::UnsupportedLink(linktype)) = analyzer.handle_frame(&frame) {
            failure = Some(TraceError::UnsupportedLink {
                frame: frame.number,
                linktype,
            });
            break;
        }
        while let Some(output) = analyzer.poll_output() {
            render.output(output).map_err(TraceError::Output)?;
        }
    }
    analyzer.finish();
    while let Some(output) = analyzer.poll_output() {
        render.output(output).map_err(TraceError::Output)?;
    }
    if let Some(f) = &failure {
        analyzer.set_error(f.to_string());
    }
    let summary = analyzer.summary().clone();
    render.summary(&summary).map_err(TraceError::Output)?;
    if let Some(f) = failure {
        return Err(f);
    }
    if let Some(stream) = opts.stream {
        if !summary.chat_streams.contains(&stream) {
            return Err(TraceError::NoSuchStream {
                stream,
                count: summary.tcp_connections,
            });
        }
    }
    Ok(summary)
}

/// Analyses a capture held in memory and returns every output and the summary: for tests and
/// tools that want the facts rather than a report.
///
/// # Errors
/// As [`trace`]; the outputs up to the failure are lost (use [`Analyzer`] to keep them).
pub fn analyze(
    bytes: Vec<u8>,
    opts: &Options,
) -> Result<(Vec<Output>, CaptureSummary), TraceError> {
    let mut reader = CaptureReader::new(std::io::Cursor::new(bytes))?;
    let mut analyzer = Analyzer::new(opts.clone());
    let mut outputs = Vec::new();
    while let Some(frame) = reader.next_frame()? {
        if let Err(link::Skip::UnsupportedLink(linktype)) = analyzer.handle_frame(&frame) {
            return Err(TraceError::UnsupportedLink {
                frame: frame.number,
                linktype,
            });
        }
        outputs.extend(std::iter::from_fn(|| analyzer.poll_output()));
    }
    analyzer.finish();
    outputs.extend(std::iter::from_fn(|| analyzer.poll_output()));
    Ok((outputs, analyzer.summary().clone()))
}
