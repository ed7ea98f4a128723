//! Shared helpers for the server's integration tests: start a real server on a loopback
//! port, and a raw-line client with expectations that report what did arrive.

#![allow(dead_code)] // each test file uses a different subset

use std::net::SocketAddr;
use std::time::Duration;

use tcpchat_server::Config;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long any single expectation may wait. Generous: CI machines are shared and slow;
/// this bounds a hang, it does not measure speed.
pub const PATIENCE: Duration = Duration::from_secs(20);

pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Server {
    pub async fn start(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(tcpchat_server::run(listener, config, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn default() -> Self {
        Self::start(Config::default()).await
    }

    /// Asks the server to shut down and waits for `run` to return.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("server stops within the grace period")
                .expect("server task did not panic")
                .expect("server returned Ok");
        }
    }

    pub async fn connect(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// A client logged in as `name`.
    pub async fn login(&self, name: &str) -> Client {
        let mut c = self.connect().await;
        c.send(&format!("HELLO-FROM {name}")).await;
        c.expect(&format!("HELLO {name}")).await;
        c
    }
}

pub struct Client {
    pub reader: BufReader<OwnedReadHalf>,
    pub writer: OwnedWriteHalf,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect to server");
        let (r, w) = stream.into_split();
        Self {
            reader: BufReader::new(r),
            writer: w,
        }
    }

    /// Sends `line` followed by `\n`.
    pub async fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes()).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("write to server");
    }

    /// The next line, without `\n`; `None` on EOF. Panics after [`PATIENCE`].
    pub async fn next_line(&mut self) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        match tokio::time::timeout(PATIENCE, self.reader.read_until(b'\n', &mut buf)).await {
            Err(_) => panic!(
                "no complete line within {PATIENCE:?}; partial: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Ok(Err(e)) => panic!("read failed: {e}"),
            Ok(Ok(0)) => None,
            Ok(Ok(_)) => {
                assert_eq!(buf.pop(), Some(b'\n'), "line cut short by EOF: {buf:?}");
                Some(buf)
            }
        }
    }

    /// Reads one line and checks it, printing expected and got on failure.
    pub async fn expect(&mut self, want: &str) {
        self.expect_bytes(want.as_bytes()).await;
    }

    pub async fn expect_bytes(&mut self, want: &[u8]) {
        match self.next_line().await {
            Some(got) => assert!(
                got == want,
                "\nexpected:\n    {:?}\ngot:\n    {:?}\n",
                String::from_utf8_lossy(want),
                String::from_utf8_lossy(&got)
            ),
            None => panic!(
                "\nexpected:\n    {:?}\ngot: end of stream\n",
                String::from_utf8_lossy(want)
            ),
        }
    }

    /// Waits for the server to close the connection (EOF or reset), failing on any line.
    pub async fn expect_closed(&mut self) {
        if let Some(line) = self.next_line().await {
            panic!(
                "expected the connection to close, got {:?}",
                String::from_utf8_lossy(&line)
            );
        }
    }

    /// `LIST` and the names it returns, sorted.
    pub async fn list(&mut self) -> Vec<String> {
        self.send("LIST").await;
        let line = self.next_line().await.expect("LIST-OK, got end of stream");
        let line = String::from_utf8(line).expect("LIST-OK is UTF-8");
        let names = line
            .strip_prefix("LIST-OK ")
            .unwrap_or_else(|| panic!("expected LIST-OK, got {line:?}"));
        let mut names: Vec<String> = names.split(',').map(str::to_owned).collect();
        names.sort();
        names
    }
}

/// Polls `LIST` from `observer` until `name`'s presence equals `present`. Disconnect cleanup
/// runs on the server's side of the socket, so the observer may look a moment too early.
pub async fn wait_presence(observer: &mut Client, name: &str, present: bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let names = observer.list().await;
        if names.iter().any(|n| n == name) == present {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} still {} in LIST: {names:?}",
            if present { "absent" } else { "present" }
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
