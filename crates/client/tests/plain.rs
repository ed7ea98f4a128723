//! The plain mode end to end: real sockets, the real server in this process.
//!
//! Each client runs [`plain::run`] in a task, fed by a channel (its stdin) and writing into a
//! channel (its stdout), so a test types a command and waits for the line it should cause.
//! Waiting has a generous timeout and reports everything that did arrive; nothing is timed.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use tcpchat_client::net;
use tcpchat_client::plain::{self, PlainError};
use tcpchat_client::{Config, LoginError};
use tcpchat_proto::Username;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

const PATIENCE: Duration = Duration::from_secs(20);

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start_on(addr: SocketAddr) -> Self {
        let listener = tcpchat_server::bind(addr).expect("bind the test server");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let config = tcpchat_server::Config {
            shutdown_grace: Duration::from_millis(100),
            ..tcpchat_server::Config::default()
        };
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            tcpchat_server::run(listener, config, shutdown)
                .await
                .expect("server runs");
        });
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("an address")).await
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(PATIENCE, &mut self.task)
            .await
            .expect("server stops")
            .expect("server task ends cleanly");
    }
}

/// Stdout of a plain client: each complete line goes to a channel.
struct LineWriter {
    partial: Vec<u8>,
    lines: mpsc::UnboundedSender<String>,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.partial.extend_from_slice(buf);
        while let Some(i) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=i).collect();
            let text = String::from_utf8_lossy(&line[..i]).into_owned();
            let _ = self.lines.send(text);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Plain {
    input: Option<mpsc::Sender<String>>,
    output: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    task: JoinHandle<Result<(), PlainError>>,
}

impl Plain {
    fn start(addr: SocketAddr, name: &str) -> Self {
        let mut config = Config::script(Some(Username::parse(name).expect("valid name")));
        // Quick retries keep the reconnection test short; the doubling is unit-tested.
        config.backoff_first = Duration::from_millis(100);
        config.backoff_max = Duration::from_millis(400);
        Self::with_config(addr, config)
    }

    fn with_config(addr: SocketAddr, config: Config) -> Self {
        let (input, input_rx) = mpsc::channel(plain::INPUT_QUEUE_LINES);
        let (lines, output) = mpsc::unbounded_channel();
        let server = net::Server::plain(&addr.to_string()).expect("an address");
        let task = tokio::spawn(async move {
            let mut out = LineWriter {
                partial: Vec::new(),
                lines,
            };
            plain::run(&server, config, input_rx, &mut out).await
        });
        Self {
            input: Some(input),
            output,
            seen: Vec::new(),
            task,
        }
    }

    fn type_line(&self, line: &str) {
        self.input
            .as_ref()
            .expect("input still open")
            .try_send(line.to_owned())
            .expect("client still reading, with room for a line");
    }

    /// Waits for a line equal to `want`, skipping others; fails with everything seen.
    async fn expect(&mut self, want: &str) {
        self.expect_with(want, |line| line == want).await;
    }

    async fn expect_with(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.output.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Ok(None) => panic!(
                    "output ended waiting for {what:?}; it said:\n{:#?}\nresult: {:?}",
                    self.seen,
                    (&mut self.task).await
                ),
                Err(_) => panic!(
                    "no {what:?} within {PATIENCE:?}; the output so far:\n{:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Closes the input and returns how the client ended.
    async fn finish(mut self) -> (Result<(), PlainError>, Vec<String>) {
        self.input = None;
        let result = tokio::time::timeout(PATIENCE, &mut self.task)
            .await
            .expect("client ends after its input does")
            .expect("client task does not panic");
        while let Ok(line) = self.output.try_recv() {
            self.seen.push(line);
        }
        (result, self.seen)
    }
}

#[tokio::test]
async fn two_plain_clients_chat() {
    let server = Server::start().await;
    let addr = server.addr;
    let mut alice = Plain::start(addr, "alice");
    alice.expect(&format!("logged in to {addr} as alice")).await;
    let mut bob = Plain::start(addr, "bob");
    bob.expect(&format!("logged in to {addr} as bob")).await;

    alice.type_line("@bob hi  bob 👋");
    bob.expect("<alice> hi  bob 👋").await;
    alice.expect("delivered to bob: hi  bob 👋").await;

    // Plain text now goes to bob, whom alice last wrote to.
    alice.type_line("and 日本語 too");
    bob.expect("<alice> and 日本語 too").await;

    bob.type_line("/msg alice hello back");
    alice.expect("<bob> hello back").await;
    bob.expect("delivered to alice: hello back").await;

    bob.type_line("!who");
    bob.expect("online: alice, bob").await;

    alice.type_line("!quit");
    let (result, seen) = alice.finish().await;
    assert!(result.is_ok(), "alice ended with {result:?}");
    assert!(
        seen.iter()
            .all(|l| !l.starts_with("SEND") && !l.starts_with("DELIVERY")),
        "a protocol line reached the user: {seen:#?}"
    );
    bob.type_line("/who");
    bob.expect("online: bob").await;
    let (result, _) = bob.finish().await;
    assert!(result.is_ok());
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_recipient_is_reported() {
    let server = Server::start().await;
    let mut alice = Plain::start(server.addr, "alice");
    alice.type_line("@nobody are you there?");
    alice
        .expect("not delivered to nobody (user offline): are you there?")
        .await;
    server.stop().await;
}

#[tokio::test]
async fn a_taken_name_fails_with_a_clear_error() {
    let server = Server::start().await;
    let mut first = Plain::start(server.addr, "carol");
    first
        .expect(&format!("logged in to {} as carol", server.addr))
        .await;
    let second = Plain::start(server.addr, "carol");
    let (result, seen) = second.finish().await;
    match result {
        Err(PlainError::Login(LoginError::NameTaken(name))) => assert_eq!(name.as_str(), "carol"),
        other => panic!("expected a taken name, got {other:?}; output {seen:#?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn no_server_fails_with_a_clear_error() {
    // Bind and drop to find a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let client = Plain::start(port, "dave");
    let (result, _) = client.finish().await;
    let err = result.expect_err("nothing to connect to");
    assert!(
        err.to_string().contains("refused the connection"),
        "unclear error: {err}"
    );
}

#[tokio::test]
async fn the_end_of_input_waits_for_the_answer() {
    // echo '@erin hi' | tcpchat connect --plain --name frank
    let server = Server::start().await;
    let mut erin = Plain::start(server.addr, "erin");
    erin.expect(&format!("logged in to {} as erin", server.addr))
        .await;
    let frank = Plain::start(server.addr, "frank");
    frank.type_line("@erin hi");
    let (result, seen) = frank.finish().await;
    assert!(result.is_ok(), "{result:?}");
    assert!(
        seen.contains(&"delivered to erin: hi".to_owned()),
        "output: {seen:#?}"
    );
    erin.expect("<frank> hi").await;
    server.stop().await;
}

#[tokio::test]
async fn the_server_going_away_and_coming_back() {
    let server = Server::start().await;
    let addr = server.addr;
    let mut alice = Plain::start(addr, "alice");
    alice.expect(&format!("logged in to {addr} as alice")).await;
    let mut bob = Plain::start(addr, "bob");
    bob.expect(&format!("logged in to {addr} as bob")).await;

    server.stop().await;
    alice
        .expect_with("connection lost", |l| l.starts_with("connection lost"))
        .await;
    // Typed while the server is away: sent once it is back.
    alice.type_line("@bob are you back?");

    let server = Server::start_on(addr).await;
    alice
        .expect(&format!("reconnected to {addr} as alice"))
        .await;
    bob.expect(&format!("reconnected to {addr} as bob")).await;
    // Either may log in first: the message may find bob offline; then send it again.
    let outcome = alice
        .expect_with("an answer", |l| l.ends_with("are you back?"))
        .await;
    if outcome.starts_with("not delivered") {
        alice.type_line("@bob are you back?");
        alice.expect("delivered to bob: are you back?").await;
    } else {
        assert_eq!(outcome, "delivered to bob: are you back?");
    }
    bob.expect("<alice> are you back?").await;
    server.stop().await;
}
