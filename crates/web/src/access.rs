//! Who may open a WebSocket, and from which address it counts: the `Origin` allowlist and
//! the `X-Forwarded-For` rule. Pure functions of the request's headers and the TCP peer, so
//! they are tested without sockets here and over real ones in `tests/`.
//!
//! Why an Origin check at all: a browser lets any page open a WebSocket to any host, and
//! sends the page's origin with it. Without the check, a page on another site could open a
//! chat session from a visitor's browser (cross-site WebSocket hijacking). Only browsers
//! send `Origin`; a request without one (tcpchat's own tools, scripts) is not a browser
//! acting for another site, and is let through.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// Which origins may open a WebSocket (`serve --web-origins`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Origins {
    /// The page's origin must be this server as the browser addressed it: the `Origin`'s
    /// host and port equal the `Host` header's.
    #[default]
    SameOrigin,
    /// Any origin (`*`).
    Any,
    /// These origins only, each `scheme://host[:port]`, compared after lower-casing and
    /// filling in the scheme's default port.
    List(Vec<String>),
}

impl Origins {
    /// Parses the setting: `*`, `same`, or a comma-separated list of origins.
    ///
    /// # Errors
    /// An entry that is not `http://host[:port]` or `https://host[:port]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s {
            "*" => return Ok(Self::Any),
            "" | "same" => return Ok(Self::SameOrigin),
            _ => {}
        }
        let mut list = Vec::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match normalise(entry) {
                Some(origin) => list.push(origin),
                None => {
                    return Err(format!(
                        "web origin {entry:?} is not scheme://host[:port] (e.g. https://chat.example.org), `same` or `*`"
                    ))
                }
            }
        }
        Ok(Self::List(list))
    }

    /// Whether a WebSocket request with these headers may upgrade. `tls`: the request came
    /// over TLS (for the default port of a `Host` without one).
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>, tls: bool) -> bool {
        let Some(origin) = origin else {
            return true; // not a browser: see the module docs
        };
        match self {
            Self::Any => true,
            Self::List(list) => normalise(origin).is_some_and(|o| list.contains(&o)),
            Self::SameOrigin => {
                let (Some(origin), Some(host)) = (normalise(origin), host) else {
                    return false;
                };
                let default = if tls { 443 } else { 80 };
                let Some(host) = with_port(&host.to_ascii_lowercase(), default) else {
                    return false;
                };
                // "scheme://host:port" -> "host:port".
                origin.split_once("://").is_some_and(|(_, hp)| hp == host)
            }
        }
    }
}

/// `scheme://host[:port]` lower-cased, with the scheme's default port filled in; `None` if
/// it is not an http(s) origin (`null`, a path, other schemes).
fn normalise(origin: &str) -> Option<String> {
    let origin = origin.trim().to_ascii_lowercase();
    let (scheme, rest) = origin.split_once("://")?;
    let default = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    Some(format!("{scheme}://{}", with_port(rest, default)?))
}

/// `host[:port]` with `default` as the port when none is given; IPv6 literals in brackets.
fn with_port(host: &str, default: u16) -> Option<String> {
    let (name, port) = match host.strip_prefix('[') {
        Some(rest) => {
            let (ip, after) = rest.split_once(']')?;
            if !after.is_empty() && !after.starts_with(':') {
                return None;
            }
            (format!("[{ip}]"), after.strip_prefix(':'))
        }
        None => match host.split_once(':') {
            Some((name, port)) => (name.to_owned(), Some(port)),
            None => (host.to_owned(), None),
        },
    };
    if name.is_empty() || name == "[]" {
        return None;
    }
    let port: u16 = match port {
        Some(p) => p.parse().ok()?,
        None => default,
    };
    Some(format!("{name}:{port}"))
}

/// The client address of a request from TCP peer `peer`: the peer itself, unless it is a
/// trusted proxy, then the nearest address in `X-Forwarded-For` (read from the right) that
/// is not a trusted proxy. A header that does not parse is not trusted: the peer counts.
pub fn client_addr(peer: SocketAddr, forwarded_for: &[&str], trusted: &[IpNet]) -> SocketAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(&canonical(ip)));
    if !is_trusted(peer.ip()) {
        return peer;
    }
    // Several headers are one list, in order.
    let hops: Vec<&str> = forwarded_for
        .iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .collect();
    let mut client = None;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            return peer;
        };
        client = Some(ip);
        if !is_trusted(ip) {
            break;
        }
    }
    // The proxy's port is no client's; port 0 says "unknown" in the logs.
    client.map_or(peer, |ip| SocketAddr::new(canonical(ip), 0))
}

/// Whether a request from TCP peer `peer` reached the trusted proxy in front of us over TLS:
/// `X-Forwarded-Proto: https` from a trusted proxy (the nearest proxy's word: the last
/// value). From any other peer the header means nothing.
pub fn forwarded_tls(peer: SocketAddr, forwarded_proto: &[&str], trusted: &[IpNet]) -> bool {
    trusted
        .iter()
        .any(|net| net.contains(&canonical(peer.ip())))
        && forwarded_proto
            .iter()
            .flat_map(|h| h.split(','))
            .next_back()
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

/// One `X-Forwarded-For` entry: an address, bracketed IPv6 or with a port allowed.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    hop.parse::<SocketAddr>().ok().map(|a| a.ip())
}

/// IPv4-mapped IPv6 addresses (from a dual-stack socket) as the IPv4 they are.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_compares_host_and_port() {
        let o = Origins::SameOrigin;
        assert!(o.allows(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080"), false));
        assert!(o.allows(Some("HTTP://Chat.Example:80"), Some("chat.example"), false));
        assert!(o.allows(Some("https://chat.example"), Some("chat.example"), true));
        assert!(o.allows(Some("http://[::1]:8080"), Some("[::1]:8080"), false));
        assert!(!o.allows(
            Some("http://evil.example:8080"),
            Some("127.0.0.1:8080"),
            false
        ));
        assert!(!o.allows(Some("http://127.0.0.1:8081"), Some("127.0.0.1:8080"), false));
        assert!(!o.allows(Some("null"), Some("127.0.0.1:8080"), false));
        assert!(!o.allows(Some("http://127.0.0.1:8080"), None, false));
        assert!(
            o.allows(None, Some("127.0.0.1:8080"), false),
            "no Origin: not a browser"
        );
    }

    #[test]
    fn lists_and_any() {
        let o = Origins::parse("https://chat.example, http://localhost:3000").expect("valid");
        assert!(o.allows(Some("https://chat.example:443"), Some("x"), false));
        assert!(o.allows(Some("http://localhost:3000"), Some("x"), false));
        assert!(!o.allows(Some("http://localhost:3001"), Some("localhost:3001"), false));
        assert_eq!(Origins::parse("*"), Ok(Origins::Any));
        assert!(Origins::Any.allows(Some("http://anything"), None, false));
        assert!(Origins::parse("chat.example").is_err());
        assert!(Origins::parse("https://chat.example/path").is_err());
    }

    #[test]
    fn forwarded_for_only_from_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let proxy: SocketAddr = "10.1.2.3:4444".parse().expect("addr");
        let stranger: SocketAddr = "192.0.2.9:5555".parse().expect("addr");
        let client: IpAddr = "198.51.100.7".parse().expect("ip");
        assert_eq!(client_addr(stranger, &["198.51.100.7"], &trusted), stranger);
        assert_eq!(client_addr(proxy, &["198.51.100.7"], &trusted).ip(), client);
        // A spoofed left part is skipped: the nearest untrusted hop is the client.
        assert_eq!(
            client_addr(proxy, &["203.0.113.1, 198.51.100.7, 10.9.9.9"], &trusted).ip(),
            client
        );
        assert_eq!(client_addr(proxy, &["not an address"], &trusted), proxy);
        assert_eq!(client_addr(proxy, &[], &trusted), proxy);
        assert_eq!(
            client_addr(proxy, &["[2001:db8::1]:80"], &trusted)
                .ip()
                .to_string(),
            "2001:db8::1"
        );
        assert!(forwarded_tls(proxy, &["https"], &trusted));
        assert!(forwarded_tls(proxy, &["http, https"], &trusted));
        assert!(!forwarded_tls(proxy, &["http"], &trusted));
        assert!(!forwarded_tls(proxy, &[], &trusted));
        assert!(
            !forwarded_tls(stranger, &["https"], &trusted),
            "only a trusted proxy says so"
        );
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:1".parse().expect("addr");
        assert_eq!(
            client_addr(mapped, &["198.51.100.7"], &trusted).ip(),
            client
        );
    }
}
