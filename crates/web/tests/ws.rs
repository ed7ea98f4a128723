//! The web listener over real sockets, with tokio-tungstenite as the client: WebSocket users
//! and TCP users on one server, the transport's limits and close codes, the Origin check,
//! and X-Forwarded-For from a trusted and an untrusted peer.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tcpchat_server::{Config, Listeners, MemoryHub};
use tcpchat_testkit::{Client, PATIENCE};
use tcpchat_web::{Origins, Settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

/// A server with a plain TCP listener and a web listener, both on loopback.
struct Server {
    tcp: SocketAddr,
    web: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(config: Config, settings: Settings) -> Self {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let plain = tcpchat_server::bind(any).expect("bind tcp");
        let web = tcpchat_server::bind(any).expect("bind web");
        let (tcp_addr, web_addr) = (
            plain.local_addr().expect("addr"),
            web.local_addr().expect("addr"),
        );
        let listeners = Listeners {
            plain: Some(plain),
            tls: None,
            web: Some(tcpchat_web::server(web, None, settings)),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(tcpchat_server::run_listeners(
            listeners,
            config,
            MemoryHub::new(),
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            tcp: tcp_addr,
            web: web_addr,
            stop: Some(stop),
            task,
        }
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("server stops")
            .expect("no panic")
            .expect("Ok");
    }

    /// A WebSocket to `/ws` with these extra headers; `Err` is the HTTP refusal.
    async fn ws(
        &self,
        headers: &[(&str, &str)],
    ) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
        let mut req = format!("ws://{}/ws", self.web)
            .into_client_request()
            .expect("request");
        for (name, value) in headers {
            req.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .expect("name"),
                value.parse().expect("value"),
            );
        }
        let tcp = TcpStream::connect(self.web).await.expect("connect");
        // The client's own limits are the library's defaults: the server's are under test.
        tokio_tungstenite::client_async_with_config(req, tcp, Some(WebSocketConfig::default()))
            .await
            .map(|(ws, _)| ws)
    }

    async fn tcp_login(&self, name: &str) -> Client {
        let mut c = Client::connect(self.tcp).await;
        c.send(&format!("HELLO-FROM {name}")).await;
        c.expect(&format!("HELLO {name}")).await;
        c
    }
}

/// The next text message, within the patience; panics on anything else.
async fn next_text(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a message in time")
            .expect("the WebSocket is open")
            .expect("a message");
        match msg {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// Reads until the server's close frame; its code.
async fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("the server closes in time")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

async fn send(ws: &mut Ws, line: &str) {
    ws.send(Message::text(line)).await.expect("send");
}

async fn ws_login(server: &Server, name: &str) -> Ws {
    let mut ws = server.ws(&[]).await.expect("upgrade");
    send(&mut ws, &format!("HELLO-FROM {name}")).await;
    assert_eq!(next_text(&mut ws).await, format!("HELLO {name}"));
    ws
}

#[tokio::test]
async fn a_websocket_user_and_a_tcp_user_chat_both_ways() {
    let server = Server::start(Config::default(), Settings::default()).await;
    let mut ws = ws_login(&server, "wendy").await;
    let mut tcp = server.tcp_login("tom").await;

    send(&mut ws, "LIST").await;
    let list = next_text(&mut ws).await;
    let mut names: Vec<&str> = list
        .strip_prefix("LIST-OK ")
        .expect("LIST-OK")
        .split(',')
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["tom", "wendy"]);

    send(&mut ws, "SEND tom hello  from the browser \u{1f600}").await;
    assert_eq!(next_text(&mut ws).await, "SEND-OK");
    tcp.expect("DELIVERY wendy hello  from the browser \u{1f600}")
        .await;
    tcp.send("SEND wendy and back").await;
    tcp.expect("SEND-OK").await;
    assert_eq!(next_text(&mut ws).await, "DELIVERY tom and back");

    // The TCP rules, replies and all: an unknown command.
    send(&mut ws, "NAMES").await;
    assert_eq!(next_text(&mut ws).await, "BAD-RQST-HDR");

    // Closing the WebSocket is a logout.
    ws.close(None).await.expect("close");
    tcp.wait_list(&["tom"]).await;
    server.shutdown().await;
}

#[tokio::test]
async fn extensions_negotiate_and_pings_are_lines() {
    let config = Config {
        ping_interval: Duration::from_millis(200),
        ..Config::default()
    };
    let server = Server::start(config, Settings::default()).await;
    let mut ws = server
        .ws(&[("sec-websocket-protocol", "tcpchat")])
        .await
        .expect("upgrade with the subprotocol");
    send(&mut ws, "EXT keepalive,presence").await;
    let answer = next_text(&mut ws).await;
    assert!(answer.starts_with("EXT-OK"), "{answer}");
    send(&mut ws, "HELLO-FROM pat").await;
    assert_eq!(next_text(&mut ws).await, "HELLO pat");
    let mut tcp = server.tcp_login("tim").await;
    // presence: tim's arrival is a line; then the keepalive extension's PING.
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.starts_with("PING")) {
        seen.push(next_text(&mut ws).await);
    }
    assert!(
        seen.iter().any(|l| l.contains("tim")),
        "presence of tim: {seen:?}"
    );
    let ping = seen.last().cloned().unwrap_or_default();
    send(&mut ws, &ping.replacen("PING", "PONG", 1)).await;
    tcp.send("SEND pat still there?").await;
    tcp.expect("SEND-OK").await;
    loop {
        let line = next_text(&mut ws).await;
        if line.starts_with("DELIVERY") {
            assert_eq!(line, "DELIVERY tim still there?");
            break;
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn an_overlong_message_closes_1009_and_others_carry_on() {
    let config = Config {
        max_line_bytes: 64,
        ..Config::default()
    };
    let server = Server::start(config, Settings::default()).await;
    let mut tcp = server.tcp_login("tess").await;
    let mut other = ws_login(&server, "olga").await;
    let mut ws = ws_login(&server, "ozzy").await;

    // Exactly the limit is a line; one byte more is refused.
    let body = "x".repeat(64 - "SEND tess ".len());
    send(&mut ws, &format!("SEND tess {body}")).await;
    assert_eq!(next_text(&mut ws).await, "SEND-OK");
    tcp.expect(&format!("DELIVERY ozzy {body}")).await;
    send(&mut ws, &format!("SEND tess {body}y")).await;
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Size));
    // A megabyte is refused the same way, without the server holding it.
    let mut big = ws_login(&server, "bigs").await;
    let _ = big.send(Message::text("z".repeat(1 << 20))).await;
    assert_eq!(close_code(&mut big).await, Some(CloseCode::Size));

    // Nothing of it reached anyone, and the others carry on.
    tcp.send("SEND olga fine").await;
    tcp.expect("SEND-OK").await;
    assert_eq!(next_text(&mut other).await, "DELIVERY tess fine");
    tcp.wait_list(&["olga", "tess"]).await;
    server.shutdown().await;
}

#[tokio::test]
async fn binary_and_multi_line_messages_are_refused_with_their_codes() {
    let server = Server::start(Config::default(), Settings::default()).await;
    let mut ws = ws_login(&server, "bina").await;
    ws.send(Message::binary(b"LIST".to_vec()))
        .await
        .expect("send");
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Unsupported));

    let mut ws = ws_login(&server, "lf").await;
    send(&mut ws, "LIST\nLIST").await;
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Invalid));
    let mut ws = ws_login(&server, "cr").await;
    // The reply to the line before comes first, then the close.
    send(&mut ws, "LIST").await;
    send(&mut ws, "LIST\r").await;
    assert!(next_text(&mut ws).await.starts_with("LIST-OK"));
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Invalid));
    server.shutdown().await;
}

/// A raw HTTP exchange: the status line of the answer to `request`.
async fn http_status(addr: SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    text.lines().next().unwrap_or_default().to_owned()
}

fn upgrade_request(addr: SocketAddr, origin: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Origin: {origin}\r\n\r\n"
    )
}

#[tokio::test]
async fn the_origin_must_be_allowed_before_the_upgrade() {
    let server = Server::start(Config::default(), Settings::default()).await;
    let addr = server.web;
    // Same origin by default: the page this server served.
    let same = http_status(addr, &upgrade_request(addr, &format!("http://{addr}"))).await;
    assert!(same.contains(" 101 "), "{same}");
    let other = http_status(addr, &upgrade_request(addr, "http://evil.example")).await;
    assert!(other.contains(" 403 "), "{other}");
    let port = http_status(
        addr,
        &upgrade_request(addr, &format!("http://127.0.0.1:{}", addr.port() + 1)),
    )
    .await;
    assert!(
        port.contains(" 403 "),
        "another port is another origin: {port}"
    );
    // Not a handshake at all.
    let plain = http_status(addr, &format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\n\r\n")).await;
    assert!(plain.contains(" 400 "), "{plain}");
    server.shutdown().await;

    let listed = Settings {
        origins: Origins::parse("https://chat.example").expect("origins"),
        ..Settings::default()
    };
    let server = Server::start(Config::default(), listed).await;
    let addr = server.web;
    let ok = http_status(addr, &upgrade_request(addr, "https://chat.example")).await;
    assert!(ok.contains(" 101 "), "{ok}");
    let same = http_status(addr, &upgrade_request(addr, &format!("http://{addr}"))).await;
    assert!(
        same.contains(" 403 "),
        "a list replaces same-origin: {same}"
    );
    server.shutdown().await;

    let any = Settings {
        origins: Origins::Any,
        ..Settings::default()
    };
    let server = Server::start(Config::default(), any).await;
    let addr = server.web;
    let ok = http_status(addr, &upgrade_request(addr, "http://evil.example")).await;
    assert!(ok.contains(" 101 "), "{ok}");
    server.shutdown().await;
}

/// One connection per address: the second from the same client address is refused with
/// `BUSY` and close 1013, whichever way the address was learned.
fn one_per_address() -> Config {
    let mut config = Config::default();
    config.limits.max_per_address = NonZeroU32::new(1);
    config
}

async fn expect_busy(ws: &mut Ws) {
    assert_eq!(next_text(ws).await, "BUSY");
    assert_eq!(close_code(ws).await, Some(CloseCode::Again));
}

#[tokio::test]
async fn forwarded_for_counts_only_from_a_trusted_proxy() {
    let trusting = Settings {
        trusted_proxies: vec!["127.0.0.0/8".parse().expect("net")],
        ..Settings::default()
    };
    let server = Server::start(one_per_address(), trusting).await;
    let a = [("x-forwarded-for", "198.51.100.7")];
    let b = [("x-forwarded-for", "198.51.100.8")];
    let mut first = server.ws(&a).await.expect("upgrade");
    send(&mut first, "HELLO-FROM first").await;
    assert_eq!(next_text(&mut first).await, "HELLO first");
    let mut again = server.ws(&a).await.expect("upgrade");
    expect_busy(&mut again).await;
    let mut other = server.ws(&b).await.expect("upgrade");
    send(&mut other, "HELLO-FROM other").await;
    assert_eq!(next_text(&mut other).await, "HELLO other");
    server.shutdown().await;

    // From a peer that is no trusted proxy the header is ignored: both are 127.0.0.1.
    let server = Server::start(one_per_address(), Settings::default()).await;
    let mut first = server.ws(&a).await.expect("upgrade");
    send(&mut first, "HELLO-FROM first").await;
    assert_eq!(next_text(&mut first).await, "HELLO first");
    let mut spoofed = server.ws(&b).await.expect("upgrade");
    expect_busy(&mut spoofed).await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_page_is_served_with_its_headers() {
    let server = Server::start(Config::default(), Settings::default()).await;
    let addr = server.web;
    for (path, ty) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/style.css", "text/css"),
    ] {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer))
            .await
            .expect("in time")
            .expect("read");
        let text = String::from_utf8_lossy(&answer).to_lowercase();
        assert!(text.starts_with("http/1.1 200"), "{path}: {text}");
        assert!(
            text.contains(&format!("content-type: {ty}")),
            "{path}: {text}"
        );
        assert!(
            text.contains("content-security-policy: default-src 'none'; script-src 'self'"),
            "{path}"
        );
        assert!(text.contains("x-content-type-options: nosniff"), "{path}");
        assert!(text.contains("cache-control: no-cache"), "{path}");
    }
    let missing = http_status(addr, &format!("GET /nope HTTP/1.1\r\nHost: {addr}\r\n\r\n")).await;
    assert!(missing.contains(" 404 "), "{missing}");
    server.shutdown().await;
}

/// A session the server ends (here: no login in time) ends its WebSocket with 1000, while
/// the client is still there and says nothing. See: the pump waited for the client before
/// closing (found by the shutdown of these tests taking the whole grace period).
#[tokio::test]
async fn the_server_ending_a_session_closes_its_websocket() {
    let config = Config {
        handshake_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let server = Server::start(config, Settings::default()).await;
    let mut ws = server.ws(&[]).await.expect("upgrade");
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Normal));
    server.shutdown().await;
}

/// Passwords: a client a trusted proxy names by a non-loopback address is on plain text
/// (`NEEDS-TLS`) unless that proxy says it came over TLS (`X-Forwarded-Proto: https`).
#[tokio::test]
async fn a_trusted_proxy_says_whether_the_client_came_over_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = tcpchat_accounts::SqliteStore::open(dir.path()).expect("store");
    let config = Config {
        account_store: Some(tcpchat_server::StoreHandle::new(store)),
        ..Config::default()
    };
    let trusting = Settings {
        trusted_proxies: vec!["127.0.0.0/8".parse().expect("net")],
        ..Settings::default()
    };
    let server = Server::start(config, trusting).await;
    let login = |headers: Vec<(&'static str, &'static str)>| {
        let server = &server;
        async move {
            let mut ws = server.ws(&headers).await.expect("upgrade");
            send(&mut ws, "EXT accounts").await;
            assert_eq!(next_text(&mut ws).await, "EXT-OK accounts");
            send(&mut ws, "LOGIN dora correct-horse-1").await;
            next_text(&mut ws).await
        }
    };
    let plain = login(vec![("x-forwarded-for", "198.51.100.7")]).await;
    assert_eq!(plain, "NEEDS-TLS");
    let over_tls = login(vec![
        ("x-forwarded-for", "198.51.100.8"),
        ("x-forwarded-proto", "https"),
    ])
    .await;
    assert_eq!(over_tls, "NO-ACCOUNT", "the password was looked at");
    server.shutdown().await;
}

/// The client closes first: the server answers with a close frame of its own (RFC 6455
/// 5.5.1), its code echoed, before it ends the connection; not just a FIN.
#[tokio::test]
async fn a_client_close_is_answered_with_a_close_frame() {
    let server = Server::start(Config::default(), Settings::default()).await;
    let mut ws = ws_login(&server, "zoe").await;
    ws.send(Message::Close(Some(
        tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        },
    )))
    .await
    .expect("send the close frame");
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Normal));
    server.shutdown().await;
}
