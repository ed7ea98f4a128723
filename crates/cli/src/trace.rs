//! `tcpchat trace`: arguments, the colour decision and exit codes; the analysis is
//! `tcpchat_trace::trace`.

use std::fs::File;
use std::io::{BufWriter, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use tcpchat_trace::{Options, TraceError, View};

use crate::UsageError;

#[derive(Debug, Args)]
#[command(
    after_help = "Record a capture with:  tcpdump -i lo -w chat.pcap port 5378\n\
                        Then read it with:       tcpchat trace chat.pcap"
)]
pub struct TraceArgs {
    /// A pcap or pcapng capture (tcpdump -w, dumpcap, Wireshark); "-" reads standard input
    #[arg(value_name = "FILE")]
    file: PathBuf,

    /// The chat server's port; connections on other ports are shown when their first line
    /// is a chat message
    #[arg(long, value_name = "PORT", default_value_t = tcpchat_proto::DEFAULT_PORT)]
    port: u16,

    /// The chat server's TLS port: its TLS connections are shown (server name, versions; the
    /// content is encrypted), as are TLS connections on --port
    #[arg(long, value_name = "PORT", default_value_t = tcpchat_trace::tls::DEFAULT_TLS_PORT)]
    tls_port: u16,

    /// The chat server's web port (serve --web-listen): every connection on it is shown,
    /// page requests included. WebSocket upgrades are recognised on any port without it; their
    /// frames are decoded and the chat lines in text messages explained (plain ws:// only)
    #[arg(long, value_name = "PORT")]
    web_port: Option<u16>,

    /// Add a hex + ASCII dump of each data segment's payload
    #[arg(long)]
    hex: bool,

    /// Print JSON lines instead of the timeline (format: docs/trace.md)
    #[arg(long)]
    json: bool,

    /// Show only connection N (numbered from 0 in order of appearance, as Wireshark's
    /// tcp.stream), chat or not
    #[arg(long, value_name = "N")]
    stream: Option<u64>,

    /// Colour the timeline
    #[arg(long, value_name = "WHEN", default_value = "auto")]
    color: ColorWhen,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ColorWhen {
    /// When standard output is a terminal and NO_COLOR is not set
    Auto,
    Always,
    Never,
}

pub fn run(args: TraceArgs) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let color = match args.color {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => stdout.is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let view = View {
        json: args.json,
        hex: args.hex,
        color,
    };
    let opts = Options {
        port: args.port,
        tls_port: args.tls_port,
        web_port: args.web_port,
        stream: args.stream,
        ..Options::default()
    };
    let out = BufWriter::new(stdout.lock());
    let name = args.file.display().to_string();
    let result = if name == "-" {
        tcpchat_trace::trace(std::io::stdin(), &opts, &view, out)
    } else {
        let file =
            File::open(&args.file).map_err(|e| UsageError(format!("cannot open {name}: {e}")))?;
        tcpchat_trace::trace(file, &opts, &view, out)
    };
    match result {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(TraceError::Output(e)) => Err(e).context("cannot write the report"),
        Err(e @ TraceError::NoSuchStream { .. }) => Err(UsageError(e.to_string()).into()),
        Err(e) => Err(e).with_context(|| format!("reading {name}")),
    }
}
