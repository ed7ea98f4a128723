//! What an operator sees of a running `tcpchat serve`: `/metrics` scraped over HTTP after
//! real traffic, JSON log lines, the periodic load summary, completions and the man page.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

mod common;

use common::{run_to_end, tcpchat, text, wait_for, Server, PATIENCE};

fn line_client(addr: SocketAddr) -> (BufReader<TcpStream>, TcpStream) {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    (BufReader::new(stream.try_clone().expect("clone")), stream)
}

fn ask(c: &mut (BufReader<TcpStream>, TcpStream), line: &str) -> String {
    c.1.write_all(format!("{line}\n").as_bytes())
        .expect("write");
    read_line(&mut c.0)
}

fn read_line(r: &mut BufReader<TcpStream>) -> String {
    let mut s = String::new();
    r.read_line(&mut s).expect("read a line");
    s
}

/// One HTTP exchange with the metrics endpoint: status line and body.
fn http(addr: SocketAddr, request: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to /metrics");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s.write_all(request.as_bytes()).expect("send request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    (
        head.lines().next().unwrap_or_default().to_owned(),
        body.to_owned(),
    )
}

/// Every sample of a scrape: series (name and labels) → value.
fn samples(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, body) = http(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text\r\n\r\n",
    );
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    samples(&body)
}

/// Scrapes until `series` reaches `want` (counts settle once the server has handled the
/// last close), then returns the scrape; the deadline only bounds a hang.
fn scrape_until(addr: SocketAddr, series: &str, want: f64) -> HashMap<String, f64> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let s = scrape(addr);
        if s.get(series) == Some(&want) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn metrics_count_real_traffic() {
    let port = tcpchat_testkit::free_port();
    let metrics: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let server = Server::start(
        "127.0.0.1:0",
        &[
            "--metrics-listen",
            &metrics.to_string(),
            "--max-clients",
            "3",
            "--handshake-timeout",
            "300ms",
            "--limits",
            "off",
        ],
    );
    let mut alice = line_client(server.addr);
    let mut bob = line_client(server.addr);
    assert_eq!(ask(&mut alice, "HELLO-FROM alice"), "HELLO alice\n");
    assert_eq!(ask(&mut bob, "HELLO-FROM bob"), "HELLO bob\n");
    assert_eq!(ask(&mut alice, "SEND bob hi"), "SEND-OK\n");
    assert_eq!(read_line(&mut bob.0), "DELIVERY alice hi\n");
    assert_eq!(ask(&mut alice, "SEND bob again"), "SEND-OK\n");
    assert_eq!(read_line(&mut bob.0), "DELIVERY alice again\n");
    assert_eq!(ask(&mut alice, "SEND nobody hi"), "BAD-DEST-USER\n");
    assert!(ask(&mut bob, "LIST").starts_with("LIST-OK "));
    assert_eq!(ask(&mut bob, "NONSENSE"), "BAD-RQST-HDR\n");

    // The third slot: a name in use, then silence until the handshake timeout closes it.
    let mut third = line_client(server.addr);
    assert_eq!(ask(&mut third, "HELLO-FROM alice"), "IN-USE\n");
    // A fourth connection is one too many while the third is open.
    let mut fourth = line_client(server.addr);
    assert_eq!(read_line(&mut fourth.0), "BUSY\n");
    let mut rest = String::new();
    third
        .0
        .read_to_string(&mut rest)
        .expect("closed after the timeout");

    let s = scrape(metrics);
    let get = |s: &HashMap<String, f64>, series: &str| {
        *s.get(series)
            .unwrap_or_else(|| panic!("no {series} in the scrape: {s:#?}"))
    };
    assert_eq!(get(&s, "tcpchat_users"), 2.0);
    assert_eq!(get(&s, r#"tcpchat_connections_open{listener="tcp"}"#), 2.0);
    assert_eq!(
        get(&s, r#"tcpchat_connections_accepted_total{listener="tcp"}"#),
        4.0
    );
    assert_eq!(
        get(&s, r#"tcpchat_connections_accepted_total{listener="tls"}"#),
        0.0
    );
    for (series, want) in [
        (
            r#"tcpchat_requests_total{command="login",outcome="ok"}"#,
            2.0,
        ),
        (
            r#"tcpchat_requests_total{command="login",outcome="in_use"}"#,
            1.0,
        ),
        (
            r#"tcpchat_requests_total{command="send",outcome="ok"}"#,
            2.0,
        ),
        (
            r#"tcpchat_requests_total{command="send",outcome="unknown_user"}"#,
            1.0,
        ),
        (
            r#"tcpchat_requests_total{command="list",outcome="ok"}"#,
            1.0,
        ),
        (
            r#"tcpchat_requests_total{command="other",outcome="bad_header"}"#,
            1.0,
        ),
        ("tcpchat_deliveries_total", 2.0),
        (r#"tcpchat_disconnects_total{reason="busy"}"#, 1.0),
        (r#"tcpchat_disconnects_total{reason="timeout"}"#, 1.0),
        (r#"tcpchat_disconnects_total{reason="client_closed"}"#, 0.0),
    ] {
        assert_eq!(get(&s, series), want, "{series}");
    }
    assert!(get(&s, "tcpchat_received_bytes_total") > 0.0);
    assert!(get(&s, "tcpchat_sent_bytes_total") > 0.0);
    assert!(get(&s, "tcpchat_outbox_high_water_bytes") >= "DELIVERY alice again\n".len() as f64);

    // `systemctl reload` sends SIGHUP even without TLS: the server says so and serves on.
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(hup.success());
    let mut seen = Vec::new();
    wait_for(&server.log, &mut seen, "SIGHUP line", |l| {
        l.contains("SIGHUP: nothing to reload")
    });
    assert_eq!(ask(&mut alice, "SEND bob after HUP"), "SEND-OK\n");
    assert_eq!(read_line(&mut bob.0), "DELIVERY alice after HUP\n");

    // Bob leaves: his close is counted as the client's, and he is no longer a user.
    drop(bob);
    let s = scrape_until(
        metrics,
        r#"tcpchat_disconnects_total{reason="client_closed"}"#,
        1.0,
    );
    assert_eq!(
        get(&s, r#"tcpchat_disconnects_total{reason="client_closed"}"#),
        1.0,
        "{s:#?}"
    );
    // The disconnect is counted as the connection ends, the user once its name is released
    // just after: wait for both.
    let s = scrape_until(metrics, "tcpchat_users", 1.0);
    assert_eq!(get(&s, "tcpchat_users"), 1.0, "{s:#?}");
    assert!(
        s.keys().all(|k| !k.contains("alice") && !k.contains("bob")),
        "never a user name in a label: {s:#?}"
    );

    // Only GET /metrics is answered; the endpoint is not a general web server.
    assert!(http(metrics, "GET / HTTP/1.1\r\n\r\n").0.contains("404"));
    assert!(http(metrics, "POST /metrics HTTP/1.1\r\n\r\n")
        .0
        .contains("405"));
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    let mut s = TcpStream::connect(metrics).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    // The server answers after its limit and closes, so the write may fail part-way.
    let _ = s.write_all(huge.as_bytes());
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
}

/// A JSON log line parsed, with what the test needs to find it.
/// The server-side delivery histogram counts each delivery written to its recipient, and
/// nothing else: not the sender's `SEND-OK`, not a refused `SEND`.
#[test]
fn delivery_latency_counts_each_delivery_written() {
    let port = tcpchat_testkit::free_port();
    let metrics: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let server = Server::start(
        "127.0.0.1:0",
        &["--metrics-listen", &metrics.to_string(), "--limits", "off"],
    );
    let mut alice = line_client(server.addr);
    let mut bob = line_client(server.addr);
    assert_eq!(ask(&mut alice, "HELLO-FROM alice"), "HELLO alice\n");
    assert_eq!(ask(&mut bob, "HELLO-FROM bob"), "HELLO bob\n");
    let count = "tcpchat_delivery_latency_seconds_count";
    assert_eq!(
        scrape(metrics).get(count),
        Some(&0.0),
        "declared before any delivery"
    );
    // Three in one write, so one read batch carries them all.
    alice
        .1
        .write_all(b"SEND bob one\nSEND bob two\nSEND nobody x\nSEND alice self\n")
        .expect("write");
    // A message to oneself is queued before its `SEND-OK`.
    for want in [
        "SEND-OK\n",
        "SEND-OK\n",
        "BAD-DEST-USER\n",
        "DELIVERY alice self\n",
        "SEND-OK\n",
    ] {
        assert_eq!(read_line(&mut alice.0), want);
    }
    assert_eq!(read_line(&mut bob.0), "DELIVERY alice one\n");
    assert_eq!(read_line(&mut bob.0), "DELIVERY alice two\n");
    // Recorded just after the write returns, so the scrape may briefly lag the read.
    let s = scrape_until(metrics, count, 3.0);
    assert_eq!(s.get(count), Some(&3.0), "{s:#?}");
    assert_eq!(
        s.get(r#"tcpchat_delivery_latency_seconds_bucket{le="+Inf"}"#),
        Some(&3.0),
        "{s:#?}"
    );
    let sum = s.get("tcpchat_delivery_latency_seconds_sum").copied();
    assert!(sum.is_some_and(|v| v > 0.0), "{sum:?}");
    // Cumulative buckets never decrease.
    let mut buckets: Vec<(f64, f64)> = s
        .iter()
        .filter_map(|(k, v)| {
            let le = k
                .strip_prefix(r#"tcpchat_delivery_latency_seconds_bucket{le=""#)?
                .strip_suffix(r#""}"#)?;
            Some((le.parse().unwrap_or(f64::INFINITY), *v))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() > 10, "{buckets:?}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
}

fn json(line: &str) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(o)) => o,
        other => panic!("not a JSON object: {line:?} ({other:?})"),
    }
}

#[test]
fn json_logs_carry_the_text_fields_and_the_summary_comes_by_itself() {
    let text_server = Server::start("127.0.0.1:0", &[]);
    let mut c = line_client(text_server.addr);
    assert_eq!(ask(&mut c, "HELLO-FROM alice"), "HELLO alice\n");
    let mut seen = Vec::new();
    let text_login = wait_for(&text_server.log, &mut seen, "logged in", |l| {
        l.contains("logged in")
    });
    drop(text_server);

    let mut cmd = tcpchat();
    cmd.args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
        .args(["--log-summary", "100ms"]);
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let log = common::lines_of(child.stderr.take().expect("stderr"));
    let mut seen = Vec::new();
    let listening = wait_for(&log, &mut seen, "listening", |l| {
        l.contains("\"listening\"")
    });
    let listening = json(&listening);
    let addr: SocketAddr = listening["addr"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .expect("addr field");
    for key in ["timestamp", "level", "message", "max_clients"] {
        assert!(listening.contains_key(key), "{key} in {listening:?}");
    }
    let mut a = line_client(addr);
    let mut b = line_client(addr);
    assert_eq!(ask(&mut a, "HELLO-FROM alice"), "HELLO alice\n");
    assert_eq!(ask(&mut b, "HELLO-FROM bob"), "HELLO bob\n");
    let login = wait_for(&log, &mut seen, "logged in", |l| l.contains("logged in"));
    let login = json(&login);
    assert_eq!(login["message"], "logged in");
    assert_eq!(login["level"], "INFO");
    // The same fields as the text line, by name.
    for field in ["peer", "name"] {
        assert!(text_login.contains(&format!("{field}=")), "{text_login}");
        assert!(login.contains_key(field), "{field} in {login:?}");
    }
    assert_eq!(ask(&mut a, "SEND bob hi"), "SEND-OK\n");
    // A summary with both users in it arrives by itself, once per interval.
    let summary = wait_for(&log, &mut seen, "summary with 2 users", |l| {
        l.contains("\"summary\"") && json(l)["users"] == 2
    });
    let summary = json(&summary);
    for key in ["connections", "messages", "messages_per_second"] {
        assert!(summary.contains_key(key), "{key} in {summary:?}");
    }
    assert!(
        seen.iter()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "every line is JSON: {seen:#?}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn completions_and_man_page() {
    let out = run_to_end(
        {
            let mut c = tcpchat();
            c.args(["completions", "bash"]);
            c
        },
        Vec::new(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let script = text(&out.stdout);
    assert!(script.contains("complete -F") && script.contains("--metrics-listen"));
    let out = run_to_end(
        {
            let mut c = tcpchat();
            c.arg("man");
            c
        },
        Vec::new(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let page = text(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH tcpchat 1"),
        "{page:.200}"
    );
    for want in [
        "TCPCHAT SERVE",
        "cluster\\-lease",
        "metrics\\-listen",
        "TCPCHAT CONNECT",
    ] {
        assert!(page.contains(want), "{want} in the man page");
    }
    let out = run_to_end(
        {
            let mut c = tcpchat();
            c.args(["completions", "tcsh"]);
            c
        },
        Vec::new(),
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}
