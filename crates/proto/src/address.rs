//! `[tls://]HOST[:PORT]`, the way every tool names a server on its command line.
//!
//! [`ServerAddress`] reads the scheme (`tls://`, or `tcp://` / none for plain text) and
//! picks the default port by it; [`HostPort`] reads the rest.
//!
//! Text in, host and port out, nothing else: resolving the host is the caller's job (and
//! its I/O), so this stays testable without a network and the same in every tool. Accepted:
//! a name or IPv4 address with or without `:PORT`, an IPv6 address in brackets with or
//! without `:PORT` (`[::1]:5378`), and a bare IPv6 address (`::1`), which cannot carry a
//! port because its colons would be ambiguous.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Why a `HOST[:PORT]` text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid server address {text:?}: {reason} (expected [tls://]HOST, [tls://]HOST:PORT or \
     [tls://][IPv6]:PORT)"
)]
pub struct AddressError {
    text: String,
    reason: &'static str,
}

/// A server's host and port, parsed from `HOST[:PORT]`; not resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// A name, an IPv4 address or an IPv6 address without brackets.
    host: String,
    port: u16,
}

impl HostPort {
    /// Parses `HOST[:PORT]`, the port defaulting to [`crate::DEFAULT_PORT`].
    ///
    /// # Errors
    /// [`AddressError`] for an empty host, a port that is not a number from 0 to 65535, an
    /// unclosed or misplaced bracket, a non-IPv6 address in brackets, or a host with spaces.
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        Self::parse_with_default(text, crate::DEFAULT_PORT)
    }

    /// Parses `HOST[:PORT]`, the port defaulting to `default_port` (for tools that speak
    /// other protocols too, such as IRC's 6667).
    ///
    /// # Errors
    /// As [`HostPort::parse`].
    pub fn parse_with_default(text: &str, default_port: u16) -> Result<Self, AddressError> {
        let bad = |reason| AddressError {
            text: text.to_owned(),
            reason,
        };
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Self::new(addr.ip(), addr.port()));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Self::new(ip, default_port));
        }
        if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or_else(|| bad("no closing ]"))?;
            let ip: Ipv6Addr = inside
                .parse()
                .map_err(|_| bad("only an IPv6 address goes in brackets"))?;
            let port = match after {
                "" => default_port,
                _ => {
                    let port = after.strip_prefix(':').ok_or_else(|| bad("text after ]"))?;
                    parse_port(port)
                        .ok_or_else(|| bad("the port is not a number from 0 to 65535"))?
                }
            };
            return Ok(Self::new(IpAddr::V6(ip), port));
        }
        let (host, port) = match text.split_once(':') {
            Some((host, port)) => (
                host,
                parse_port(port).ok_or_else(|| {
                    bad(if port.contains(':') {
                        "an IPv6 address with a port needs brackets, e.g. [::1]:5378"
                    } else {
                        "the port is not a number from 0 to 65535"
                    })
                })?,
            ),
            None => (text, default_port),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if host.contains(|c: char| c.is_whitespace() || c == '[' || c == ']') {
            return Err(bad("a host has no spaces or brackets"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }

    fn new(ip: IpAddr, port: u16) -> Self {
        Self {
            host: ip.to_string(),
            port,
        }
    }

    /// The host as a resolver takes it: a name or an IP address, IPv6 without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, given or default.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// `host:port`, IPv6 in brackets: what `TcpStream::connect` and `to_socket_addrs` accept.
impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// How the bytes travel: as they are, or inside TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP (no scheme, or `tcp://`).
    Plain,
    /// TLS over TCP (`tls://`).
    Tls,
}

/// A server as a tool's argument names it: a [`Transport`] and a [`HostPort`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddress {
    transport: Transport,
    host_port: HostPort,
}

impl ServerAddress {
    /// Parses `[tls://|tcp://]HOST[:PORT]`: the port defaults to [`crate::DEFAULT_PORT`] for
    /// plain text and to [`crate::DEFAULT_TLS_PORT`] for `tls://`.
    ///
    /// # Errors
    /// [`AddressError`] for a scheme other than `tls://` or `tcp://`, and as
    /// [`HostPort::parse`] for the rest.
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        Self::parse_with_defaults(text, crate::DEFAULT_PORT, crate::DEFAULT_TLS_PORT)
    }

    /// As [`ServerAddress::parse`], with the caller's default ports (for tools that speak
    /// other protocols too, such as IRC's 6667 and 6697).
    ///
    /// # Errors
    /// As [`ServerAddress::parse`].
    pub fn parse_with_defaults(
        text: &str,
        plain_port: u16,
        tls_port: u16,
    ) -> Result<Self, AddressError> {
        let (transport, rest) = match text.split_once("://") {
            None => (Transport::Plain, text),
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "tls" => (Transport::Tls, rest),
                "tcp" => (Transport::Plain, rest),
                _ => {
                    return Err(AddressError {
                        text: text.to_owned(),
                        reason: "unknown scheme; tls:// for TLS, tcp:// or none for plain text",
                    })
                }
            },
        };
        let default_port = match transport {
            Transport::Plain => plain_port,
            Transport::Tls => tls_port,
        };
        let host_port =
            HostPort::parse_with_default(rest, default_port).map_err(|e| AddressError {
                text: text.to_owned(),
                reason: e.reason,
            })?;
        Ok(Self {
            transport,
            host_port,
        })
    }

    /// Plain text or TLS.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// True for `tls://`.
    pub fn is_tls(&self) -> bool {
        self.transport == Transport::Tls
    }

    /// The host and port.
    pub fn host_port(&self) -> &HostPort {
        &self.host_port
    }

    /// The host, as [`HostPort::host`]: also the name a TLS certificate must be valid for.
    pub fn host(&self) -> &str {
        self.host_port.host()
    }

    /// The port, given or default.
    pub fn port(&self) -> u16 {
        self.host_port.port()
    }
}

/// `tls://host:port` for TLS, `host:port` for plain text (as before schemes existed).
impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.transport {
            Transport::Plain => write!(f, "{}", self.host_port),
            Transport::Tls => write!(f, "tls://{}", self.host_port),
        }
    }
}

/// Digits only: `u16::from_str` would also take a leading `+`.
fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every case the client, check and bench accepted or refused before they shared this.
    #[test]
    fn host_port_table() {
        let port = crate::DEFAULT_PORT;
        let ok: &[(&str, &str, u16, &str)] = &[
            // text, host, port, displayed
            ("localhost", "localhost", port, "localhost:5378"),
            ("localhost:5379", "localhost", 5379, "localhost:5379"),
            ("localhost:6000", "localhost", 6000, "localhost:6000"),
            (
                "chat.example.org",
                "chat.example.org",
                port,
                "chat.example.org:5378",
            ),
            (
                "chat.example.org:5378",
                "chat.example.org",
                5378,
                "chat.example.org:5378",
            ),
            ("127.0.0.1", "127.0.0.1", port, "127.0.0.1:5378"),
            ("127.0.0.1:1", "127.0.0.1", 1, "127.0.0.1:1"),
            ("::1", "::1", port, "[::1]:5378"),
            ("[::1]", "::1", port, "[::1]:5378"),
            ("[::1]:7", "::1", 7, "[::1]:7"),
            ("[::1]:5379", "::1", 5379, "[::1]:5379"),
            ("fe80::1:2", "fe80::1:2", port, "[fe80::1:2]:5378"),
            (
                "[2001:db8::1]:65535",
                "2001:db8::1",
                65535,
                "[2001:db8::1]:65535",
            ),
        ];
        for (text, host, p, shown) in ok {
            let got = HostPort::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!((got.host(), got.port()), (*host, *p), "{text:?}");
            assert_eq!(got.to_string(), *shown, "{text:?} displayed");
        }
        let bad: &[(&str, &str)] = &[
            ("", "no host"),
            (":5378", "no host"),
            ("host:port", "not a number"),
            ("host:99999", "not a number"),
            ("host:", "not a number"),
            ("host:+1", "not a number"),
            ("a b:1", "no spaces"),
            ("a b", "no spaces"),
            ("[::1", "no closing ]"),
            ("[::1]x", "text after ]"),
            ("[::1]:x", "not a number"),
            ("[127.0.0.1]", "only an IPv6"),
            ("[localhost]:1", "only an IPv6"),
            ("a]b", "no spaces or brackets"),
            ("::1::2", "needs brackets"),
        ];
        for (text, reason) in bad {
            let err = HostPort::parse(text).expect_err(text).to_string();
            assert!(err.contains(reason), "{text:?}: {err:?} lacks {reason:?}");
            assert!(err.contains(&format!("{text:?}")), "{err:?} names the text");
        }
    }

    #[test]
    fn the_default_port_is_the_callers() {
        let got = HostPort::parse_with_default("irc.example.org", 6667).expect("valid");
        assert_eq!(got.to_string(), "irc.example.org:6667");
        let got = HostPort::parse_with_default("irc.example.org:7000", 6667).expect("valid");
        assert_eq!(got.port(), 7000);
        assert_eq!(
            HostPort::parse_with_default("::1", 6667)
                .expect("v6")
                .port(),
            6667
        );
    }

    #[test]
    fn schemes_pick_the_transport_and_the_default_port() {
        let ok: &[(&str, Transport, &str, u16, &str)] = &[
            (
                "localhost",
                Transport::Plain,
                "localhost",
                5378,
                "localhost:5378",
            ),
            (
                "tcp://localhost",
                Transport::Plain,
                "localhost",
                5378,
                "localhost:5378",
            ),
            (
                "tls://localhost",
                Transport::Tls,
                "localhost",
                5379,
                "tls://localhost:5379",
            ),
            (
                "TLS://localhost:7",
                Transport::Tls,
                "localhost",
                7,
                "tls://localhost:7",
            ),
            (
                "tls://127.0.0.1",
                Transport::Tls,
                "127.0.0.1",
                5379,
                "tls://127.0.0.1:5379",
            ),
            (
                "tls://[::1]",
                Transport::Tls,
                "::1",
                5379,
                "tls://[::1]:5379",
            ),
            ("tls://::1", Transport::Tls, "::1", 5379, "tls://[::1]:5379"),
            ("tcp://[::1]:9", Transport::Plain, "::1", 9, "[::1]:9"),
        ];
        for (text, transport, host, port, shown) in ok {
            let got = ServerAddress::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(
                (got.transport(), got.host(), got.port()),
                (*transport, *host, *port),
                "{text:?}"
            );
            assert_eq!(got.to_string(), *shown, "{text:?} displayed");
            // What it displays parses back to itself.
            assert_eq!(ServerAddress::parse(shown).as_ref(), Ok(&got), "{shown:?}");
        }
        let bad: &[(&str, &str)] = &[
            ("ssl://localhost", "unknown scheme"),
            ("http://localhost", "unknown scheme"),
            ("://localhost", "unknown scheme"),
            ("tls://", "no host"),
            ("tls://host:x", "not a number"),
            ("tls://tls://host", "not a number"),
        ];
        for (text, reason) in bad {
            let err = ServerAddress::parse(text).expect_err(text).to_string();
            assert!(err.contains(reason), "{text:?}: {err:?} lacks {reason:?}");
            assert!(err.contains(&format!("{text:?}")), "{err:?} names the text");
        }
        let irc = ServerAddress::parse_with_defaults("tls://irc.example.org", 6667, 6697);
        assert_eq!(irc.map(|a| a.port()), Ok(6697));
    }
}
