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
        let passwords = plain::Passwords {
            current: config.password.clone(),
            new: None,
        };
        Self::with_passwords(addr, config, passwords)
    }

    fn with_passwords(addr: SocketAddr, config: Config, passwords: plain::Passwords) -> Self {
        let (input, input_rx) = mpsc::channel(plain::INPUT_QUEUE_LINES);
        let (lines, output) = mpsc::unbounded_channel();
        let server = net::Server::plain(&addr.to_string()).expect("an address");
        let task = tokio::spawn(async move {
            let mut out = LineWriter {
                partial: Vec::new(),
                lines,
            };
            plain::run_with_passwords(&server, config, passwords, input_rx, &mut out).await
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

// ---- extensions (#13) ---------------------------------------------------------------------
//
// Until the server serves the extensions, a scripted peer over a real socket speaks them:
// `ExtPeer` below, a few rules of docs/protocol.md's "Extensions" and nothing more. Each
// scenario is a function of the server's address, so the same steps can be pointed at
// `tcpchat serve` once it offers them (see `extended_scenarios_against`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tcpchat_client::{Secret, PING_AFTER};
use tcpchat_proto::{ExtensionSet, Framer, Reply, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A minimal extended server: EXT, PING/PONG, ONLINE lists and events, accounts. Names and
/// accounts are shared by its connections; nothing is bounded or throttled (it is a test peer).
struct ExtPeer {
    addr: SocketAddr,
    /// Every line it received, passwords included, for the tests to inspect.
    received: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct PeerState {
    accounts: HashMap<String, String>,
    online: HashMap<String, mpsc::UnboundedSender<Vec<u8>>>,
}

impl ExtPeer {
    async fn start(offered: ExtensionSet) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(PeerState::default()));
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(peer_connection(socket, offered, state.clone(), log.clone()));
            }
        });
        Self {
            addr,
            received,
            task,
        }
    }

    fn received(&self) -> Vec<String> {
        self.received.lock().expect("not poisoned").clone()
    }
}

impl Drop for ExtPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn peer_connection(
    socket: TcpStream,
    offered: ExtensionSet,
    state: Arc<Mutex<PeerState>>,
    log: Arc<Mutex<Vec<String>>>,
) {
    let (mut reader, mut writer) = socket.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writing = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut framer = Framer::new(4096);
    let mut buf = vec![0; 4096];
    let mut ext = ExtensionSet::NONE;
    let mut me: Option<String> = None;
    let reply = |r: Reply<'_>| r.to_line();
    'read: loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut bytes = &buf[..n];
        while let Ok(Some(line)) = framer.next_line(&mut bytes) {
            let line = line.to_vec();
            log.lock()
                .expect("not poisoned")
                .push(String::from_utf8_lossy(&line).into_owned());
            let mut out = Vec::new();
            let mut joined = None;
            match Request::parse(&line) {
                Ok(Request::Ext(names)) if me.is_none() => {
                    let (set, names) = offered.answer(&names);
                    ext = set;
                    out = reply(Reply::ExtOk(names));
                }
                Ok(Request::Ping(token)) if ext.contains(tcpchat_proto::Extension::Keepalive) => {
                    out = reply(Reply::Pong(token));
                }
                Ok(Request::Pong(_)) => {}
                Ok(Request::HelloFrom(name)) if me.is_none() => {
                    let st = state.lock().expect("not poisoned");
                    let accounts = ext.contains(tcpchat_proto::Extension::Accounts);
                    if st.accounts.contains_key(name.as_str()) {
                        out = reply(if accounts {
                            Reply::NameRegistered
                        } else {
                            Reply::InUse
                        });
                    } else if st.online.contains_key(name.as_str()) {
                        out = reply(Reply::InUse);
                    } else {
                        joined = Some(name.as_str().to_owned());
                    }
                }
                Ok(Request::Login { name, password }) if me.is_none() => {
                    let st = state.lock().expect("not poisoned");
                    match st.accounts.get(name.as_str()) {
                        None => out = reply(Reply::NoAccount),
                        Some(pw) if pw != password.expose() => out = reply(Reply::BadPassword),
                        Some(_) => joined = Some(name.as_str().to_owned()),
                    }
                }
                Ok(Request::Register(password)) if me.is_some() => {
                    let mut st = state.lock().expect("not poisoned");
                    let name = me.clone().unwrap_or_default();
                    out = match st.accounts.entry(name) {
                        std::collections::hash_map::Entry::Occupied(_) => {
                            reply(Reply::NameRegistered)
                        }
                        std::collections::hash_map::Entry::Vacant(slot) => {
                            slot.insert(password.expose().to_owned());
                            reply(Reply::RegisterOk)
                        }
                    };
                }
                Ok(Request::ChangePassword { old, new }) if me.is_some() => {
                    let mut st = state.lock().expect("not poisoned");
                    let name = me.clone().unwrap_or_default();
                    out = match st.accounts.get_mut(&name) {
                        None => reply(Reply::NoAccount),
                        Some(pw) if pw != old.expose() => reply(Reply::BadPassword),
                        Some(pw) => {
                            *pw = new.expose().to_owned();
                            reply(Reply::PasswordOk)
                        }
                    };
                }
                Ok(Request::Send { to, body }) if me.is_some() => {
                    let st = state.lock().expect("not poisoned");
                    match st.online.get(to.as_str()) {
                        Some(peer) => {
                            let from = me.clone().unwrap_or_default();
                            let mut line = Vec::new();
                            Reply::encode_delivery(&mut line, &from, body);
                            let _ = peer.send(line);
                            out = reply(Reply::SendOk);
                        }
                        None => out = reply(Reply::BadDestUser),
                    }
                }
                Ok(Request::List) if me.is_some() => {
                    let st = state.lock().expect("not poisoned");
                    let mut names: Vec<_> = st
                        .online
                        .keys()
                        .filter_map(|n| tcpchat_proto::Username::parse(n).ok())
                        .collect();
                    names.sort();
                    out = reply(Reply::ListOk(names));
                }
                _ => out = reply(Reply::BadRqstHdr),
            }
            if let Some(name) = joined {
                let mut st = state.lock().expect("not poisoned");
                if st.online.contains_key(&name) {
                    let _ = tx.send(reply(Reply::InUse));
                    continue 'read;
                }
                let mut event = Vec::new();
                Reply::encode_presence(&mut event, &name, true);
                for peer in st.online.values() {
                    let _ = peer.send(event.clone());
                }
                st.online.insert(name.clone(), tx.clone());
                let mut hello = reply(Reply::Hello(
                    tcpchat_proto::Username::parse(&name).expect("a name it accepted"),
                ));
                if ext.contains(tcpchat_proto::Extension::Presence) {
                    let mut names: Vec<&str> = st.online.keys().map(String::as_str).collect();
                    names.sort_unstable();
                    Reply::encode_online_list(&mut hello, names);
                }
                out = hello;
                me = Some(name);
            }
            let _ = tx.send(out);
        }
    }
    if let Some(name) = me {
        let mut st = state.lock().expect("not poisoned");
        st.online.remove(&name);
        let mut event = Vec::new();
        Reply::encode_presence(&mut event, &name, false);
        for peer in st.online.values() {
            let _ = peer.send(event.clone());
        }
    }
    drop(tx);
    let _ = writing.await;
}

fn extended(name: &str) -> Config {
    let mut config = Config::script(Some(Username::parse(name).expect("valid name"))).extended();
    config.backoff_first = Duration::from_millis(100);
    config.backoff_max = Duration::from_millis(400);
    config
}

fn secret(text: &str) -> Secret {
    Secret::parse(text).expect("a valid test password")
}

/// Registers `name` with a password from the plain mode's source, then logs in again with it
/// in a second run; a third run without the password, and a fourth with a wrong one, fail
/// with their reasons. Works against any server that offers `accounts` on loopback.
async fn register_then_log_in_again(addr: SocketAddr, name: &str) {
    let passwords = plain::Passwords {
        current: Some(secret("correct-horse-1")),
        new: None,
    };
    // Not logged in with a password: the name is not registered yet.
    let mut first = Plain::with_passwords(addr, extended(name), passwords.clone());
    first
        .expect(&format!("logged in to {addr} as {name}"))
        .await;
    first.type_line("/register");
    first
        .expect("your name is registered: from now on it can only be used with your password")
        .await;
    first.type_line("/quit");
    let (result, seen) = first.finish().await;
    assert!(result.is_ok(), "{result:?} {seen:#?}");
    assert!(
        !seen.iter().any(|l| l.contains("correct-horse")),
        "a password was printed: {seen:#?}"
    );

    // Whoever comes next without the password cannot be `name`.
    let squatter = Plain::start(addr, name);
    let (result, seen) = squatter.finish().await;
    match result {
        Err(PlainError::Login(LoginError::NameRegistered(n))) => assert_eq!(n.as_str(), name),
        // A plain (classic) run is told the name is taken, as a classic client is.
        Err(PlainError::Login(LoginError::NameTaken(n))) => assert_eq!(n.as_str(), name),
        other => panic!("a run without the password ended {other:?}; it said {seen:#?}"),
    }
    let mut config = extended(name);
    config.password = Some(secret("correct-horse-1"));
    let mut again = Plain::with_config(addr, config);
    again
        .expect(&format!("logged in to {addr} as {name}"))
        .await;
    again.type_line("/quit");
    assert!(again.finish().await.0.is_ok());

    let mut config = extended(name);
    config.password = Some(secret("wrong-horse-1"));
    let wrong = Plain::with_config(addr, config);
    let (result, seen) = wrong.finish().await;
    assert!(
        matches!(
            &result,
            Err(PlainError::Login(LoginError::Account {
                reply: tcpchat_client::AccountReply::BadPassword,
                ..
            }))
        ),
        "{result:?} {seen:#?}"
    );
}

/// Two extended plain runs see each other come and go as it happens, and chat.
async fn presence_notices(addr: SocketAddr, a: &str, b: &str) {
    let mut first = Plain::with_config(addr, extended(a));
    first.expect(&format!("logged in to {addr} as {a}")).await;
    let mut second = Plain::with_config(addr, extended(b));
    second.expect(&format!("logged in to {addr} as {b}")).await;
    first.expect(&format!("{b} is online")).await;
    second.type_line("!who");
    let line = second
        .expect_with("online list", |l| l.starts_with("online: "))
        .await;
    assert!(line.contains(a) && line.contains(b), "{line}");
    second.type_line(&format!("@{a} hello"));
    first.expect(&format!("<{b}> hello")).await;
    second.type_line("/quit");
    let _ = second.finish().await;
    first.expect(&format!("{b} went offline")).await;
}

/// The extended scenarios, against a server at `addr` that offers every extension on
/// loopback. The integrator points this at `tcpchat serve` once it does.
async fn extended_scenarios_against(addr: SocketAddr) {
    register_then_log_in_again(addr, "reggie").await;
    presence_notices(addr, "pat", "quinn").await;
}

#[tokio::test]
async fn extended_plain_runs_against_a_scripted_extended_server() {
    let peer = ExtPeer::start(ExtensionSet::all()).await;
    extended_scenarios_against(peer.addr).await;
    let received = peer.received();
    // Never a password before EXT-OK: every LOGIN follows an EXT on its connection, and the
    // run that had no password never sent one.
    assert!(
        received.iter().any(|l| l.starts_with("LOGIN reggie ")),
        "{received:#?}"
    );
    assert!(received.iter().any(|l| l == "REGISTER correct-horse-1"));
    // Presence replaced polling.
    assert!(!received.iter().any(|l| l == "LIST"), "{received:#?}");
}

#[tokio::test]
async fn an_extended_client_against_the_classic_server_works_as_before() {
    // The server in this process serves no extension yet: EXT gets BAD-RQST-HDR.
    let server = Server::start().await;
    let addr = server.addr;
    let mut alice = Plain::with_config(addr, extended("alice"));
    alice.expect(&format!("logged in to {addr} as alice")).await;
    let mut bob = Plain::start(addr, "bob");
    bob.expect(&format!("logged in to {addr} as bob")).await;
    alice.type_line("@bob hi");
    bob.expect("<alice> hi").await;
    alice.expect("delivered to bob: hi").await;
    alice.type_line("!who");
    alice.expect("online: alice, bob").await;
    // With a password for a server without accounts, it logs in without one, and says so.
    let mut config = extended("carol");
    config.password = Some(secret("correct-horse-1"));
    let mut carol = Plain::with_config(addr, config);
    carol
        .expect("this server has no accounts: logging in as carol without a password")
        .await;
    carol.expect(&format!("logged in to {addr} as carol")).await;
    alice.type_line("/register");
    alice
        .expect("registering failed: this server has no accounts (or you are not logged in yet)")
        .await;
    alice.type_line("/quit");
    let (result, seen) = alice.finish().await;
    assert!(result.is_ok(), "{result:?} {seen:#?}");
    server.stop().await;
}

#[tokio::test]
async fn a_registered_name_without_a_password_says_how_to_give_one() {
    let peer = ExtPeer::start(ExtensionSet::all()).await;
    let mut owner = Plain::with_passwords(
        peer.addr,
        extended("olga"),
        plain::Passwords {
            current: Some(secret("correct-horse-2")),
            new: None,
        },
    );
    owner
        .expect(&format!("logged in to {} as olga", peer.addr))
        .await;
    owner.type_line("/register");
    owner
        .expect_with("registered", |l| l.contains("registered"))
        .await;
    owner.type_line("/quit");
    let _ = owner.finish().await;
    let run = Plain::with_config(peer.addr, extended("olga"));
    let (result, _) = run.finish().await;
    let err = result.expect_err("a registered name without its password");
    let text = err.to_string();
    assert!(
        text.contains("--password-fd") && text.contains("TCPCHAT_PASSWORD"),
        "{text}"
    );
}

#[tokio::test]
async fn server_pings_are_answered_over_a_real_socket() {
    // A raw server: negotiate keepalive, log in, ping the client, expect the echo.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let client = Plain::with_config(addr, extended("pinged"));
    let (socket, _) = tokio::time::timeout(PATIENCE, listener.accept())
        .await
        .expect("the client connects")
        .expect("accept");
    let mut peer = testkit_lines(socket);
    assert_eq!(
        peer.next().await,
        "EXT keepalive,presence,accounts,rooms,history"
    );
    assert_eq!(peer.next().await, "HELLO-FROM pinged");
    peer.send("EXT-OK keepalive\nHELLO pinged\nPING t-42\n")
        .await;
    assert_eq!(peer.next().await, "PONG t-42");
    drop(peer);
    let _ = client.finish().await;
    // The client's own pings come after PING_AFTER of silence; unit-tested with a fake clock.
    let _ = PING_AFTER;
}

/// A line reader and writer over one accepted socket.
struct Lines {
    stream: TcpStream,
    framer: Framer,
    pending: Vec<String>,
}

fn testkit_lines(stream: TcpStream) -> Lines {
    Lines {
        stream,
        framer: Framer::new(4096),
        pending: Vec::new(),
    }
}

impl Lines {
    async fn next(&mut self) -> String {
        let mut buf = vec![0; 4096];
        loop {
            if !self.pending.is_empty() {
                return self.pending.remove(0);
            }
            let n = tokio::time::timeout(PATIENCE, self.stream.read(&mut buf))
                .await
                .expect("a line within the patience")
                .expect("read");
            assert!(n > 0, "the client closed the connection");
            let mut bytes = &buf[..n];
            while let Ok(Some(line)) = self.framer.next_line(&mut bytes) {
                self.pending
                    .push(String::from_utf8_lossy(line).into_owned());
            }
        }
    }

    async fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).await.expect("write");
    }
}

#[tokio::test]
async fn plain_password_change_takes_the_old_then_the_new_from_the_source() {
    let peer = ExtPeer::start(ExtensionSet::all()).await;
    let addr = peer.addr;
    let mut first = Plain::with_passwords(
        addr,
        extended("petra"),
        plain::Passwords {
            current: Some(secret("first-horse-1")),
            new: Some(secret("second-horse-2")),
        },
    );
    first.expect(&format!("logged in to {addr} as petra")).await;
    first.type_line("/register");
    first
        .expect_with("registered", |l| l.starts_with("your name is registered"))
        .await;
    first.type_line("/password");
    first.expect("your password is changed").await;
    first.type_line("/quit");
    let _ = first.finish().await;
    assert!(peer
        .received()
        .iter()
        .any(|l| l == "PASSWORD first-horse-1 second-horse-2"));
    // The new password logs in; without a new one, /password says what to give.
    let mut config = extended("petra");
    config.password = Some(secret("second-horse-2"));
    let mut again = Plain::with_config(addr, config);
    again.expect(&format!("logged in to {addr} as petra")).await;
    again.type_line("/password");
    again
        .expect_with("no new password", |l| {
            l.starts_with("no new password given: use")
        })
        .await;
    again.type_line("/quit");
    assert!(again.finish().await.0.is_ok());
}
