//! [`CutProxy`]: a TCP relay between a node and Redis whose link can be cut and healed.
//!
//! A cut is a partition, not a crash: connections stay open and nothing is refused, bytes
//! simply stop moving both ways (and a connection opened meanwhile is accepted but not
//! relayed), so the node sees calls that never answer, as it would with a pulled cable. When
//! the link heals, the bytes held in the sockets flow on, as TCP delivers them after a short
//! partition. It runs on a thread and runtime of its own so that a test blocking its own
//! runtime (waiting on a process log) never stalls the relay.

use std::net::SocketAddr;
use std::thread::JoinHandle;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Up,
    Cut,
    /// The proxy is being dropped: every relay ends, closing its sockets.
    Gone,
}

/// A relay on a loopback port to `upstream`; give its [`CutProxy::addr`] to the node.
pub struct CutProxy {
    pub addr: SocketAddr,
    link: watch::Sender<Link>,
    thread: Option<JoinHandle<()>>,
}

impl CutProxy {
    /// Listens on `127.0.0.1:0` and relays every connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("proxy address");
        let (link, watch) = watch::channel(Link::Up);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            runtime.block_on(accept(listener, upstream, watch));
        });
        Self {
            addr,
            link,
            thread: Some(thread),
        }
    }

    /// `redis://` URL of the proxy, for `--cluster`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Stops every byte both ways until [`CutProxy::heal`].
    pub fn cut(&self) {
        self.link.send_replace(Link::Cut);
    }

    /// Lets bytes flow again, those held during the cut first.
    pub fn heal(&self) {
        self.link.send_replace(Link::Up);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.link.send_replace(Link::Gone);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept(
    listener: std::net::TcpListener,
    upstream: SocketAddr,
    link: watch::Receiver<Link>,
) {
    let Ok(listener) = TcpListener::from_std(listener) else {
        return;
    };
    let mut gone = link.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((conn, _)) = accepted {
                    tokio::spawn(relay(conn, upstream, link.clone()));
                }
            }
            _ = gone.wait_for(|l| *l == Link::Gone) => return,
        }
    }
    // Returning drops the runtime's tasks, and with them every relayed socket.
}

/// Waits while the link is cut; `false` once the proxy is gone.
async fn until_up(link: &mut watch::Receiver<Link>) -> bool {
    match link.wait_for(|l| *l != Link::Cut).await {
        Ok(l) => *l == Link::Up,
        Err(_) => false,
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, mut link: watch::Receiver<Link>) {
    // Accepted during a cut: held, as a partition would hold the connection attempt.
    if !until_up(&mut link).await {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (client_r, client_w) = client.into_split();
    let (server_r, server_w) = server.into_split();
    tokio::join!(
        pump(client_r, server_w, link.clone()),
        pump(server_r, client_w, link)
    );
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut link: watch::Receiver<Link>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !until_up(&mut link).await {
            return;
        }
        tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => {
                    if to.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            },
            // Cut (or gone) while waiting for bytes: stop reading; they stay in the socket.
            _ = link.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::CutProxy;
    use crate::PATIENCE;

    /// The next 4 bytes, or `None` if they do not come within `wait`.
    async fn next4(c: &mut TcpStream, wait: Duration) -> Option<[u8; 4]> {
        let mut got = [0u8; 4];
        tokio::time::timeout(wait, c.read_exact(&mut got))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|_| got)
    }

    /// Bytes pass while up, are held (not lost, not refused) while cut, and flow on when the
    /// link heals; a connection opened during the cut is relayed once it heals.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cut_holds_bytes_and_heal_delivers_them() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let proxy = CutProxy::start(upstream.local_addr().expect("addr"));
        let echo = tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = upstream.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let (mut r, mut w) = conn.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let mut a = TcpStream::connect(proxy.addr).await.expect("connect");
        a.write_all(b"ping").await.expect("write");
        assert_eq!(next4(&mut a, PATIENCE).await, Some(*b"ping"));

        proxy.cut();
        a.write_all(b"held").await.expect("write during the cut");
        let mut b = TcpStream::connect(proxy.addr)
            .await
            .expect("accepted during the cut");
        b.write_all(b"late").await.expect("write");
        // Absence can only be sampled: a wrong proxy fails here, a right one never does.
        assert_eq!(next4(&mut a, Duration::from_millis(300)).await, None);

        proxy.heal();
        assert_eq!(next4(&mut a, PATIENCE).await, Some(*b"held"));
        assert_eq!(next4(&mut b, PATIENCE).await, Some(*b"late"));
        drop(proxy);
        echo.abort();
    }
}
