//! The HTTP side: the page's routes and the WebSocket upgrade of `GET /ws`.
//!
//! Every answer carries the security headers of [`assets::SECURITY_HEADERS`]. The upgrade
//! is refused with a plain HTTP status before any WebSocket exists: 403 for an `Origin`
//! outside the allowlist, 400 for a request that is not a WebSocket handshake, 503 (with
//! `Retry-After`) while the server shuts down. A refusal by the server's limits (`BUSY` on
//! TCP) happens after the upgrade, as the chat's own `BUSY` line and close code 1013.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info};

use crate::{access, assets, pump, State, HEADER_TIMEOUT};

/// The WebSocket subprotocol name the server accepts when a client offers it.
pub const SUBPROTOCOL: &str = "tcpchat";

type Body = Full<Bytes>;

/// Serves HTTP/1.1 on `io` until the client closes or the connection is upgraded.
pub(crate) async fn serve<IO>(io: IO, peer: SocketAddr, state: Arc<State>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(route(req, peer, &state)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(16 * 1024)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        debug!(%peer, error = %e, "web connection ended with an error");
    }
}

fn route(req: Request<Incoming>, peer: SocketAddr, state: &State) -> Response<Body> {
    let path = req.uri().path();
    if path == "/ws" {
        return upgrade(req, peer, state);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if path == "/settings.json" {
        // What the page checks before sending: the line limit in force.
        let body = format!("{{\"max_line_bytes\":{}}}\n", state.entry.max_line_bytes());
        let mut r = Response::new(Full::new(Bytes::from(body)));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        secure(h);
        return r;
    }
    match assets::find(path) {
        Some(asset) => {
            let body = if req.method() == Method::HEAD {
                Bytes::new()
            } else {
                Bytes::from_static(asset.body)
            };
            let mut r = Response::new(Full::new(body));
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            );
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static(assets::CACHE_CONTROL),
            );
            h.insert(header::ETAG, HeaderValue::from_static(assets::etag()));
            secure(h);
            if req
                .headers()
                .get(header::IF_NONE_MATCH)
                .is_some_and(|v| v.as_bytes() == assets::etag().as_bytes())
            {
                *r.status_mut() = StatusCode::NOT_MODIFIED;
                *r.body_mut() = Full::new(Bytes::new());
            }
            r
        }
        None => plain(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// A short text answer with the security headers.
fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    secure(h);
    r
}

fn secure(h: &mut hyper::HeaderMap) {
    for (name, value) in assets::SECURITY_HEADERS {
        h.insert(*name, HeaderValue::from_static(value));
    }
}

fn header_str(req: &Request<Incoming>, name: header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Whether a comma-separated header holds `token` (case-insensitive).
fn has_token(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers().get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// `GET /ws`: checks, then 101 and the pump on the upgraded connection.
fn upgrade(mut req: Request<Incoming>, peer: SocketAddr, state: &State) -> Response<Body> {
    let forwarded: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let trusted = &state.settings.trusted_proxies;
    let client = access::client_addr(peer, &forwarded, trusted);
    let proto: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-proto")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    // TLS for passwords: ours, or the trusted proxy's in front of us.
    let tls = state.tls || access::forwarded_tls(peer, &proto, trusted);
    if req.method() != Method::GET
        || !has_token(&req, header::CONNECTION, "upgrade")
        || !has_token(&req, header::UPGRADE, "websocket")
        || header_str(&req, header::SEC_WEBSOCKET_VERSION) != Some("13")
    {
        return plain(
            StatusCode::BAD_REQUEST,
            "a WebSocket (version 13) handshake is expected here\n",
        );
    }
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return plain(StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing\n");
    };
    let origin = header_str(&req, header::ORIGIN);
    if !state
        .settings
        .origins
        .allows(origin, header_str(&req, header::HOST), tls)
    {
        // Info, not debug: an operator behind a proxy that rewrites Host needs to see why.
        info!(peer = %client, origin = origin.unwrap_or(""), "websocket refused: origin not allowed (see --web-origins)");
        return plain(
            StatusCode::FORBIDDEN,
            "this page's origin may not open a chat here (see --web-origins)\n",
        );
    }
    if state.entry.is_shutting_down() {
        let mut r = plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down\n",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return r;
    }
    let subprotocol = has_token(&req, header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let entry = state.entry.clone();
    let limit = entry.max_line_bytes();
    state.pumps.spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                debug!(peer = %client, error = %e, "websocket upgrade failed");
                return;
            }
        };
        let config = ws_config(limit);
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        let (ours, theirs) = match tokio::net::UnixStream::pair() {
            Ok(pair) => pair,
            Err(e) => {
                debug!(error = %e, "cannot make a socket pair for a websocket");
                let _ = ws
                    .close(Some(close(CloseCode::Error, "server error")))
                    .await;
                return;
            }
        };
        if let Err(refused) = entry.enter(theirs, client, tls) {
            // What TCP says in this case, then "try again later".
            debug!(peer = %client, %refused, "websocket refused: BUSY");
            let _ = futures_util::SinkExt::send(&mut ws, Message::text("BUSY")).await;
            let _ = ws.close(Some(close(CloseCode::Again, "busy"))).await;
            return;
        }
        pump::run(ws, ours, entry).await;
    });

    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if subprotocol {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    r
}

fn close(code: CloseCode, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code,
        reason: reason.into(),
    }
}

/// The library's limits set to the chat's: a message (one line, no LF) and a frame of it are
/// at most the line limit; buffers small, so an idle WebSocket holds little (lines fed
/// together are written together up to 8 KiB; the pump flushes at the end of each read).
pub(crate) fn ws_config(max_line_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_line_bytes))
        .max_frame_size(Some(max_line_bytes))
        .read_buffer_size(4 * 1024)
        .write_buffer_size(8 * 1024)
}
