//! The server's own share of the latency: a tcpchat server's
//! `tcpchat_delivery_latency_seconds` histogram (from reading a `SEND` to writing its
//! `DELIVERY`), scraped from its `/metrics` before and after the run.
//!
//! The bench's latency runs from a message's intended send time to its receipt, so it holds
//! the bench's own lateness too (its timer, its scheduler, its reads). The difference of two
//! scrapes is the server's part of the same run, in the server's buckets: its percentiles
//! are bucket upper bounds ("at most"), coarser than the bench's HdrHistogram.
//!
//! One plain HTTP/1.1 GET over a `TcpStream` per scrape: no HTTP client crate for that.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The histogram's name in the OpenMetrics text.
const SERIES: &str = "tcpchat_delivery_latency_seconds_bucket{le=\"";
/// A scrape that takes longer is given up (the report then says so).
const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read; the server's whole scrape is a few kilobytes.
const MAX_ANSWER_BYTES: u64 = 4 << 20;

/// Where a server's metrics are: `http://HOST:PORT[/PATH]` or `HOST:PORT` (path `/metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsUrl {
    pub addr: SocketAddr,
    pub path: String,
}

impl std::str::FromStr for MetricsUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix("http://").unwrap_or(s);
        if rest.contains("://") {
            return Err(format!("{s}: only http:// metrics URLs are supported"));
        }
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/metrics"),
        };
        let addr = std::net::ToSocketAddrs::to_socket_addrs(host)
            .map_err(|e| format!("{s}: {e}"))?
            .next()
            .ok_or_else(|| format!("{s}: no address"))?;
        Ok(Self {
            addr,
            path: path.to_owned(),
        })
    }
}

/// Cumulative bucket counts of one scrape: (upper bound in µs, `None` for `+Inf`; count).
pub type Buckets = Vec<(Option<u64>, u64)>;

/// Scrapes the histogram.
///
/// # Errors
/// The endpoint cannot be reached, does not answer 200, or has no such histogram (not a
/// tcpchat server, or one from before it had one), described.
pub async fn scrape(url: &MetricsUrl) -> Result<Buckets, String> {
    let answer = tokio::time::timeout(TIMEOUT, get(url))
        .await
        .map_err(|_| format!("{}: no answer in {TIMEOUT:?}", url.addr))?
        .map_err(|e| format!("{}: {e}", url.addr))?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{}: not an HTTP answer", url.addr))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        return Err(format!("{}{}: {status}", url.addr, url.path));
    }
    let buckets = parse(body);
    if buckets.is_empty() {
        return Err(format!(
            "{}{}: no tcpchat_delivery_latency_seconds histogram",
            url.addr, url.path
        ));
    }
    Ok(buckets)
}

async fn get(url: &MetricsUrl) -> std::io::Result<String> {
    let mut s = TcpStream::connect(url.addr).await?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        url.path, url.addr
    );
    s.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    s.take(MAX_ANSWER_BYTES).read_to_end(&mut answer).await?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// The histogram's buckets in an OpenMetrics text, in bound order.
pub fn parse(text: &str) -> Buckets {
    let mut buckets: Buckets = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(SERIES)?;
            let (le, value) = rest.split_once("\"} ")?;
            let count = value.split_whitespace().next()?.parse::<f64>().ok()? as u64;
            let bound = match le {
                "+Inf" => None,
                secs => Some((secs.parse::<f64>().ok()? * 1e6).round() as u64),
            };
            Some((bound, count))
        })
        .collect();
    // `None` (+Inf) sorts last.
    buckets.sort_by_key(|(b, _)| b.unwrap_or(u64::MAX));
    buckets
}

/// The server's delivery latency over one run: the difference of two scrapes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerLatency {
    /// Deliveries written during the run.
    pub count: u64,
    /// Percentiles as bucket upper bounds, µs: at most this much. `None`: beyond the last
    /// finite bucket.
    pub p50_us: Option<u64>,
    pub p90_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub p999_us: Option<u64>,
    /// The run's cumulative buckets (bound in µs, `None` for +Inf).
    pub buckets: Buckets,
}

impl ServerLatency {
    /// `after − before`, bucket by bucket (a server restarted in between counts from zero).
    pub fn between(before: &Buckets, after: &Buckets) -> Self {
        let buckets: Buckets = after
            .iter()
            .map(|&(bound, n)| {
                let was = before
                    .iter()
                    .find(|(b, _)| *b == bound)
                    .map_or(0, |(_, n)| *n);
                (bound, n.checked_sub(was).unwrap_or(n))
            })
            .collect();
        let count = buckets.last().map_or(0, |(_, n)| *n);
        let at = |q: f64| -> Option<u64> {
            if count == 0 {
                return None;
            }
            let want = (q * count as f64).ceil() as u64;
            buckets
                .iter()
                .find(|(_, n)| *n >= want.max(1))
                .and_then(|(b, _)| *b)
        };
        Self {
            count,
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            p999_us: at(0.999),
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE tcpchat_delivery_latency_seconds histogram\n\
        tcpchat_delivery_latency_seconds_sum 0.5\n\
        tcpchat_delivery_latency_seconds_count 1000\n\
        tcpchat_delivery_latency_seconds_bucket{le=\"0.0001\"} 900\n\
        tcpchat_delivery_latency_seconds_bucket{le=\"0.00005\"} 500\n\
        tcpchat_delivery_latency_seconds_bucket{le=\"0.001\"} 999\n\
        tcpchat_delivery_latency_seconds_bucket{le=\"+Inf\"} 1000\n\
        tcpchat_users 3\n";

    #[test]
    fn parses_buckets_in_bound_order() {
        assert_eq!(
            parse(TEXT),
            vec![
                (Some(50), 500),
                (Some(100), 900),
                (Some(1000), 999),
                (None, 1000)
            ]
        );
    }

    #[test]
    fn percentiles_of_the_difference() {
        let before = vec![
            (Some(50), 100),
            (Some(100), 100),
            (Some(1000), 100),
            (None, 100),
        ];
        let l = ServerLatency::between(&before, &parse(TEXT));
        assert_eq!(l.count, 900);
        assert_eq!(l.p50_us, Some(100));
        assert_eq!(l.p90_us, Some(1000));
        assert_eq!(l.p99_us, Some(1000));
        // 899 of 900 by 1 ms: the 99.9th is the 900th, beyond the last finite bound.
        assert_eq!(l.p999_us, None);
        let empty = ServerLatency::between(&before, &before);
        assert_eq!((empty.count, empty.p50_us), (0, None));
    }

    #[test]
    fn urls() {
        let u: MetricsUrl = "http://127.0.0.1:9100/m".parse().expect("url");
        assert_eq!((u.addr.port(), u.path.as_str()), (9100, "/m"));
        let u: MetricsUrl = "127.0.0.1:9100".parse().expect("host:port");
        assert_eq!(u.path, "/metrics");
        assert!("https://127.0.0.1:1/".parse::<MetricsUrl>().is_err());
        assert!("nonsense".parse::<MetricsUrl>().is_err());
    }
}
