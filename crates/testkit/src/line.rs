//! A raw-line client: it sends protocol lines as a test writes them and checks what comes
//! back, printing expected and got as blocks when they differ.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::PATIENCE;

pub struct Client {
    pub reader: BufReader<OwnedReadHalf>,
    pub writer: OwnedWriteHalf,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        Self::from_stream(stream)
    }

    /// Wraps a stream the test set up itself (e.g. with a small receive buffer).
    pub fn from_stream(stream: TcpStream) -> Self {
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

    /// The next line, without `\n`; `None` on EOF or reset. Panics after [`PATIENCE`].
    pub async fn next_line(&mut self) -> Option<Vec<u8>> {
        self.next_line_within(PATIENCE)
            .await
            .unwrap_or_else(|partial| {
                panic!(
                    "no complete line within {PATIENCE:?}; partial: {:?}",
                    String::from_utf8_lossy(&partial)
                )
            })
    }

    /// Like [`Client::next_line`], but `Err(partial)` after `wait` instead of panicking.
    pub async fn next_line_within(&mut self, wait: Duration) -> Result<Option<Vec<u8>>, Vec<u8>> {
        let mut buf = Vec::new();
        match tokio::time::timeout(wait, self.reader.read_until(b'\n', &mut buf)).await {
            Err(_) => Err(buf),
            // A server that closes with unread input resets the connection: still a close.
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                Ok(None)
            }
            Ok(Err(e)) => panic!("read failed: {e}"),
            Ok(Ok(0)) => Ok(None),
            Ok(Ok(_)) => {
                assert_eq!(buf.pop(), Some(b'\n'), "line cut short by EOF: {buf:?}");
                Ok(Some(buf))
            }
        }
    }

    /// The next line as text (lossy), `None` on EOF.
    pub async fn next_text(&mut self) -> Option<String> {
        self.next_line()
            .await
            .map(|l| String::from_utf8_lossy(&l).into_owned())
    }

    /// Reads one line and checks it.
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

    /// Reads `want.len()` lines and checks they are `want` in any order (a reply to this
    /// client and a message from someone else have no order between them).
    pub async fn expect_unordered(&mut self, want: &[String]) {
        let mut got = Vec::new();
        for _ in want {
            match self.next_text().await {
                Some(line) => got.push(line),
                None => panic!("expected {want:?} in any order; got {got:?} then end of stream"),
            }
        }
        let mut want = want.to_vec();
        want.sort();
        got.sort();
        assert_eq!(got, want, "lines in any order");
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

    /// Reads until the server closes the connection and returns the lines that came first
    /// (what was queued for this user before it was cut off).
    pub async fn lines_until_closed(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(line) = self.next_text().await {
            lines.push(line);
        }
        lines
    }

    /// `LIST` and the names it returns, sorted.
    pub async fn list(&mut self) -> Vec<String> {
        self.send("LIST").await;
        let line = self.next_text().await.expect("LIST-OK, got end of stream");
        let names = line
            .strip_prefix("LIST-OK ")
            .unwrap_or_else(|| panic!("expected LIST-OK, got {line:?}"));
        let mut names: Vec<String> = names.split(',').map(str::to_owned).collect();
        names.sort();
        names
    }

    /// Polls `LIST` until it equals `want` (sorted), reporting the last answer on failure.
    pub async fn wait_list(&mut self, want: &[&str]) {
        let mut want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
        want.sort();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let got = self.list().await;
            if got == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "LIST did not become {want:?} within {PATIENCE:?}; last: {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends `SEND to body` until it is answered `SEND-OK` (cross-node routing may take a
    /// moment to heal after a fault), and returns how many tries it took.
    pub async fn send_until_ok(&mut self, to: &str, body: &str) -> usize {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut tries = 0;
        loop {
            tries += 1;
            self.send(&format!("SEND {to} {body}")).await;
            match self.next_text().await.as_deref() {
                Some("SEND-OK") => return tries,
                Some("BAD-DEST-USER") if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => panic!("SEND {to} {body}: expected SEND-OK, last got {other:?}"),
            }
        }
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
