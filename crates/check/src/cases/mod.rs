//! The cases: one per rule of the protocol, each a small script over real connections.
//!
//! Every case makes its own connections with names unique to the run, assumes nothing about
//! who else is online, and leaves nothing open when it ends. The table in [`CASES`] is the
//! order they run in; `docs/check.md` explains each one.

mod accounts;
mod commands;
mod ext_history;
mod ext_keepalive;
mod ext_negotiation;
mod ext_presence;
mod ext_rooms;
mod limits;
mod login;
mod presence;
mod relay;
mod stream;

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

use tcpchat_proto::{Command, Reply, Request, Username};

use crate::client::{reply_line, Client, Got, Transcript};
use crate::failure::{escape, Failure};

/// Pause between logins while a full server frees the slots of closed connections.
const BUSY_RETRY_INTERVAL: Duration = Duration::from_millis(20);

/// What a case ends with when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Done {
    Passed,
    /// Passed, and found something worth reporting (a bound the protocol leaves open).
    Found(String),
    /// The case could not run; the reason says what it needs.
    Skipped(String),
    /// Neither a pass nor a failure: the probe reached its own limit before the server
    /// showed its behaviour; the reason says how far it went and how to push further.
    Inconclusive(String),
}

pub(crate) type CaseResult = Result<Done, Failure>;
type CaseFuture<'a> = Pin<Box<dyn Future<Output = CaseResult> + Send + 'a>>;

/// One named check.
pub struct Case {
    /// Short, stable, kebab-case name (`--only NAME`).
    pub name: &'static str,
    /// One line: what the case does.
    pub description: &'static str,
    /// The protocol rule it checks, as a failure report states it.
    pub rule: &'static str,
    pub(crate) run: for<'a> fn(&'a mut Ctx) -> CaseFuture<'a>,
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case").field("name", &self.name).finish()
    }
}

macro_rules! case {
    ($name:literal, $run:path, $description:literal, $rule:literal $(,)?) => {
        Case {
            name: $name,
            description: $description,
            rule: $rule,
            run: |cx| Box::pin($run(cx)),
        }
    };
}

/// Every case, in the order they run: basics first, so a server that cannot log anyone in
/// fails early and visibly; the heavy ones (many clients, a slow reader, capacity) last.
pub static CASES: &[Case] = &[
    case!(
        "login",
        login::login,
        "HELLO-FROM with a fresh name gets HELLO <name>, the name exactly, its case included",
        "A client logs in with `HELLO-FROM <name>`; the server accepts with `HELLO <name>`, \
         repeating the name exactly. Names are case-sensitive: `Alice` and `alice` are two \
         users."
    ),
    case!(
        "name-in-use",
        login::name_in_use,
        "a taken name gets IN-USE, and the same connection can retry with another",
        "A name already logged in gets `IN-USE`. The connection stays open and the client may \
         try another name on it."
    ),
    case!(
        "name-empty",
        login::name_empty,
        "HELLO-FROM with an empty name gets BAD-RQST-BODY",
        "Names are non-empty. An invalid name gets `BAD-RQST-BODY`, and the connection stays \
         open for another try."
    ),
    case!(
        "name-whitespace",
        login::name_whitespace,
        "a name with a space or tab gets BAD-RQST-BODY",
        "Names contain no spaces (or other whitespace): the name is everything after \
         `HELLO-FROM `, not its first word. An invalid name gets `BAD-RQST-BODY`."
    ),
    case!(
        "name-comma",
        login::name_comma,
        "a name with a comma gets BAD-RQST-BODY",
        "Names contain no commas, because `LIST-OK` separates names with commas. An invalid \
         name gets `BAD-RQST-BODY`."
    ),
    case!(
        "name-control",
        login::name_control,
        "a name with a control character gets BAD-RQST-BODY",
        "Names contain no control characters (they would let one user garble another's \
         terminal). An invalid name gets `BAD-RQST-BODY`."
    ),
    case!(
        "name-too-long",
        login::name_too_long,
        "the longest name the server accepts is found; a name as long as a whole line fails",
        "Names have a bounded length; the bound is the server's to choose (32 bytes on \
         tcpchat's own server). A server that accepts a name as long as a whole line (4096 \
         bytes) has none."
    ),
    case!(
        "name-not-utf8",
        login::name_not_utf8,
        "a name that is not valid UTF-8 gets BAD-RQST-BODY",
        "Every line is UTF-8 text, so a name with bytes that are not UTF-8 is invalid and gets \
         `BAD-RQST-BODY`."
    ),
    case!(
        "before-login",
        commands::before_login,
        "LIST, SEND, an empty line or garbage before login get BAD-RQST-HDR",
        "Before login, any line other than `HELLO-FROM` gets `BAD-RQST-HDR`, nothing of it \
         reaches anyone, and the client may still log in afterwards."
    ),
    case!(
        "case-sensitive",
        commands::case_sensitive,
        "hello-from, list and send in lower case get BAD-RQST-HDR",
        "Commands are case-sensitive: `list` is not `LIST`. An unknown command gets \
         `BAD-RQST-HDR`, before login or after."
    ),
    case!(
        "unknown-command",
        commands::unknown_command,
        "an unknown command after login gets BAD-RQST-HDR and the connection goes on",
        "After login, a line whose command is unknown gets `BAD-RQST-HDR`; the connection stays \
         usable."
    ),
    case!(
        "empty-line",
        commands::empty_line,
        "an empty line after login gets BAD-RQST-HDR",
        "After login, an empty line gets `BAD-RQST-HDR` (it is a line with no command), not \
         silence."
    ),
    case!(
        "second-hello",
        commands::second_hello,
        "HELLO-FROM after login gets BAD-RQST-HDR and changes nothing",
        "After login, a second `HELLO-FROM` gets `BAD-RQST-HDR`: a connection cannot rename \
         itself or hold two names."
    ),
    case!(
        "list",
        presence::list,
        "LIST gets LIST-OK with everyone online, comma separated, the asker included",
        "`LIST` gets `LIST-OK <name>,<name>,...`: every logged-in name exactly once, separated \
         by commas alone (no spaces), the asker included."
    ),
    case!(
        "send",
        relay::send,
        "SEND gets SEND-OK and the recipient, and no one else, gets DELIVERY <sender> <msg>",
        "`SEND <user> <msg>` gets `SEND-OK`, and `<user>` gets `DELIVERY <sender> <msg>` with \
         the sender's name. The recipient is the whole name, byte for byte: what is sent to \
         `bobby` never reaches `bob`."
    ),
    case!(
        "send-spaces",
        relay::send_spaces,
        "a message with leading, trailing and repeated spaces is relayed byte for byte",
        "The message is the rest of the line after `SEND <user> `, spaces included, and is \
         relayed byte for byte: no trimming, no collapsing of spaces."
    ),
    case!(
        "send-unicode",
        relay::send_unicode,
        "a message with accents, CJK and emoji (ZWJ sequences too) is relayed byte for byte",
        "Lines are UTF-8 and the message is relayed byte for byte, multi-byte characters \
         included."
    ),
    case!(
        "send-self",
        relay::send_self,
        "SEND to yourself gets SEND-OK and a DELIVERY to yourself",
        "Sending to yourself works like sending to anyone: `SEND-OK`, and a `DELIVERY` from \
         yourself."
    ),
    case!(
        "send-unknown-user",
        relay::send_unknown_user,
        "SEND to a name nobody uses gets BAD-DEST-USER",
        "`SEND` to a user who is not logged in gets `BAD-DEST-USER`."
    ),
    case!(
        "send-missing-user",
        relay::send_missing_user,
        "SEND with no user gets BAD-RQST-BODY",
        "`SEND` without a user is a known command with an invalid body: `BAD-RQST-BODY`."
    ),
    case!(
        "send-empty-message",
        relay::send_empty_message,
        "SEND with no message or an empty one gets BAD-RQST-BODY and delivers nothing",
        "`SEND <user>` with no message, or an empty one, gets `BAD-RQST-BODY`; nothing from a \
         rejected line reaches anyone."
    ),
    case!(
        "send-not-utf8",
        relay::send_not_utf8,
        "a message that is not valid UTF-8 gets BAD-RQST-BODY and delivers nothing",
        "A message that is not valid UTF-8 gets `BAD-RQST-BODY` and is not relayed."
    ),
    case!(
        "crlf",
        stream::crlf,
        "lines ending in \\r\\n work: the \\r is not part of the name or the message",
        "A trailing `\\r` before `\\n` is ignored (telnet and netcat send it), so it never \
         becomes part of a name, a message or a reply."
    ),
    case!(
        "pipelining",
        stream::pipelining,
        "many requests in one write get their replies, in order",
        "A client may send several lines in one write; the server answers each, in the order \
         of the requests."
    ),
    case!(
        "byte-by-byte",
        stream::byte_by_byte,
        "lines sent one byte per write are put together before they are handled",
        "TCP is a byte stream: a line may arrive in many pieces, and only `\\n` ends it. A \
         server must buffer until `\\n`, not treat each read as a line."
    ),
    case!(
        "message-order",
        stream::message_order,
        "100 messages from one sender arrive in the order sent",
        "Messages from one sender to one recipient arrive in the order they were sent, and \
         replies come in the order of the requests."
    ),
    case!(
        "overlong-line",
        stream::overlong_line,
        "a 1 MiB line gets an error or a close, and is never relayed",
        "A line longer than the server's limit is answered with an error and discarded (without \
         ever holding it whole), or the connection is closed; it is never relayed."
    ),
    case!(
        "name-freed",
        presence::name_freed,
        "a client that disconnects leaves LIST, cannot be sent to, and its name is free",
        "A disconnect frees the name at once: `LIST` stops showing it, `SEND` to it gets \
         `BAD-DEST-USER`, and a new client can log in with it."
    ),
    case!(
        "name-freed-reset",
        presence::name_freed_reset,
        "after a client's connection is reset (RST), its name is freed too",
        "An abortive disconnect (a reset, as when a client is killed) frees the name like a \
         clean one."
    ),
    case!(
        "ext-negotiation",
        ext_negotiation::ext_negotiation,
        "EXT is answered EXT-OK with a subset of what was asked, unknown names left out; a \
         second EXT, or one after login, gets BAD-RQST-HDR (skipped on a classic server)",
        "A client asks for extensions with `EXT <ext>,...` before logging in; the server \
         answers `EXT-OK` with the ones it will use, in the client's order, each once, \
         unknown names left out. `EXT` is allowed once, and only before login. A classic \
         server answers `BAD-RQST-HDR`, and the extension cases are skipped."
    ),
    case!(
        "ext-keepalive",
        ext_keepalive::ext_keepalive,
        "PING <token> gets PONG <token>, before and after login; PONG gets no reply \
         (skipped unless keepalive is offered)",
        "On a connection that negotiated `keepalive`, `PING [<token>]` is answered at once with \
         `PONG` and the token echoed exactly, before and after login; a `PONG` is an answer \
         and gets no reply."
    ),
    case!(
        "ext-presence",
        ext_presence::ext_presence,
        "the first list names everyone and yourself; a newcomer's ONLINE comes before its \
         message, OFFLINE after it leaves, classic users too (skipped unless presence is offered)",
        "After `HELLO`, a `presence` connection gets everyone online, itself included, in \
         `ONLINE` lines and then `ONLINE-DONE`; then `ONLINE <name>` for each login and \
         `OFFLINE <name>` for each departure, classic users included, in the queue messages \
         take: a user's `ONLINE` comes before its first `DELIVERY`."
    ),
    case!(
        "ext-rooms",
        ext_rooms::ext_rooms,
        "three members see each JOINED, two pipelining senders' messages arrive at every member \
         once and in one order, MEMBERS lists the owner first, PARTED reaches everyone \
         (skipped unless rooms is offered)",
        "On `rooms` connections, `JOIN` is answered by the `JOINED` line every member gets; \
         every member receives each `SAID` once and all of them in the same order, senders \
         included; `MEMBERS` lists the members in join order; `PART` is seen by every \
         member, and a former member's `SAY` is `NOT-MEMBER`."
    ),
    case!(
        "ext-history",
        ext_history::ext_history,
        "room messages carry consecutive offsets, the same for every member; HISTORY pages \
         backwards, oldest first; a former member gets NO-HISTORY (skipped unless rooms and \
         history are offered)",
        "On `rooms,history` connections every room message arrives as `SAID-AT` with its \
         offset: one more for each message, the same for every member. `HISTORY <room> 2` \
         answers `HISTORY-OK` with the room's newest offset and the two newest lines, oldest \
         first; `HISTORY <room> BEFORE <offset> 2` the ones older than that offset. A \
         connection that left the room gets `NO-HISTORY`."
    ),
    case!(
        "ext-history-offline",
        ext_history::ext_history_offline,
        "a history sender's message to an offline account is SEND-QUEUED and arrives once at \
         its login, a classic sender's is refused and never arrives; RESUME after a dropped \
         connection gets exactly what came after its position (skipped unless accounts and \
         history are offered)",
        "A `SEND` to a registered user who is offline, from a connection that negotiated \
         `history`, is kept and answered `SEND-QUEUED`; from a classic connection it is \
         `BAD-DEST-USER` and nothing is kept. At the next `LOGIN` the kept messages arrive \
         once, in order, as `DELIVERY-AT` lines with their original time, then `RESUME-OK \
         <epoch> <top>`. `RESUME <epoch> <offset>` before a later `LOGIN` gets every message \
         after that offset, what reached a connection that died included, each once."
    ),
    case!(
        "accounts-register",
        accounts::register,
        "accounts: REGISTER a fresh name, LOGIN again with the password (closing the first session), UNREGISTER",
        "With `accounts`, a logged-in user registers the name with `REGISTER <password>` \
         (`REGISTER-OK`; again: `NAME-REGISTERED`). `LOGIN <name> <password>` logs in to it, \
         closing an earlier session of the name. `UNREGISTER <password>` deletes it \
         (`UNREGISTER-OK`; again: `NO-ACCOUNT`)."
    ),
    case!(
        "accounts-wrong-password",
        accounts::wrong_password,
        "accounts: LOGIN with a wrong password gets BAD-PASSWORD, the right one HELLO",
        "`LOGIN` with a wrong password is `BAD-PASSWORD` and logs nobody in; the connection \
         stays open and may try again."
    ),
    case!(
        "accounts-registered-name",
        accounts::registered_name,
        "accounts: a registered name gets IN-USE to a classic HELLO-FROM, NAME-REGISTERED to an accounts one",
        "A registered name is only used with its password: `HELLO-FROM` it is `IN-USE` on a \
         classic connection and `NAME-REGISTERED` on an accounts connection, even while \
         nobody is logged in as it."
    ),
    case!(
        "accounts-throttle",
        accounts::throttle,
        "accounts: wrong passwords for one name are THROTTLED after a few",
        "Login attempts are throttled per name and per address: past the budget an attempt \
         gets `THROTTLED <seconds>` (at least 1) without being checked."
    ),
    case!(
        "many-clients",
        limits::many_clients,
        "64 clients online at once each send and receive, and LIST shows them all",
        "The server hosts at least 64 simultaneous clients (the original project's promise)."
    ),
    case!(
        "slow-reader",
        limits::slow_reader,
        "a client that never reads does not stall its sender or anyone else, and is dropped",
        "A slow or stuck reader never delays anyone else: its outgoing queue is bounded, the \
         sender is never made to wait, and the reader is dropped when its queue is full."
    ),
    case!(
        "busy",
        limits::busy,
        "at the client limit (--capacity) a new client gets BUSY and is closed",
        "When the server is full, a new client gets `BUSY` and the server closes the \
         connection; once a client leaves, the next one gets in."
    ),
];

/// Looks a case up by name.
pub fn find(name: &str) -> Option<&'static Case> {
    CASES.iter().find(|c| c.name == name)
}

/// What every case gets: where the server is, how long to wait, unique names.
pub(crate) struct Ctx {
    /// Where connections go, in turn (one address, or the nodes of a cluster).
    nodes: Vec<SocketAddr>,
    /// For `tls://`: the connector, and the host name to verify for each node.
    tls: Option<(tcpchat_tls::client::Connector, Vec<String>)>,
    /// How long to wait for any one reply.
    pub(crate) timeout: Duration,
    /// The server's client limit, if the user told us.
    pub(crate) capacity: Option<usize>,
    /// How many bytes `slow-reader` pushes at a reader that reads nothing.
    pub(crate) flood_limit: usize,
    /// The protocol generation to speak (`--generation`).
    pub(crate) generation: tcpchat_proto::Generation,
    /// A short random tag for this run; every name this run uses starts with it.
    run_tag: String,
    /// Names handed out so far, across cases.
    names_used: usize,
    /// Connections opened in the current case (for their labels).
    clients_opened: usize,
    transcript: Transcript,
}

impl Ctx {
    pub(crate) fn new(addr: SocketAddr, timeout: Duration, capacity: Option<usize>) -> Self {
        Self {
            nodes: vec![addr],
            tls: None,
            timeout,
            capacity,
            flood_limit: crate::DEFAULT_FLOOD_LIMIT_BYTES,
            generation: tcpchat_proto::Generation::Current,
            run_tag: run_tag(),
            names_used: 0,
            clients_opened: 0,
            transcript: Transcript::default(),
        }
    }

    /// Opens connections on each of `nodes` in turn (a cluster's nodes) instead of the one
    /// address given to [`Ctx::new`]; an empty list changes nothing.
    pub(crate) fn spread_over(&mut self, nodes: Vec<SocketAddr>) {
        if !nodes.is_empty() {
            self.nodes = nodes;
        }
    }

    /// Opens every connection inside TLS with `connector`, verifying the server as
    /// `hosts[i]` for the node `i` (the names the nodes were given by).
    pub(crate) fn use_tls(
        &mut self,
        connector: tcpchat_tls::client::Connector,
        hosts: Vec<String>,
    ) {
        if !hosts.is_empty() {
            self.tls = Some((connector, hosts));
        }
    }

    /// Starts a new case: fresh labels, empty transcript.
    pub(crate) fn begin_case(&mut self) {
        self.clients_opened = 0;
        self.transcript.take();
    }

    /// The conversation of the current case so far.
    pub(crate) fn take_transcript(&self) -> Vec<String> {
        self.transcript.take()
    }

    /// A name no one has used: the run's tag and a counter, short enough for any server.
    pub(crate) fn fresh_name(&mut self) -> Username {
        self.names_used += 1;
        let name = format!("{}{}", self.run_tag, self.names_used);
        Username::parse(&name).expect("the tag is lowercase letters and digits, the rest digits")
    }

    /// The run's tag, for building names by hand (an over-long one, say).
    pub(crate) fn run_tag(&self) -> &str {
        &self.run_tag
    }

    /// Opens a connection without logging in.
    pub(crate) async fn connect(&mut self) -> Result<Client, Failure> {
        self.connect_with(None).await
    }

    /// Opens a connection whose receive buffer is `recv_buffer` bytes.
    pub(crate) async fn connect_with(
        &mut self,
        recv_buffer: Option<u32>,
    ) -> Result<Client, Failure> {
        let label = label(self.clients_opened);
        let node = self.clients_opened % self.nodes.len();
        let addr = self.nodes[node];
        self.clients_opened += 1;
        let tls = self
            .tls
            .as_ref()
            .map(|(connector, hosts)| (connector, hosts[node % hosts.len()].as_str()));
        Client::connect(
            addr,
            tls,
            label,
            self.timeout,
            recv_buffer,
            self.transcript.clone(),
        )
        .await
    }

    /// Opens a connection and logs it in with a fresh name.
    pub(crate) async fn login(&mut self) -> Result<Client, Failure> {
        self.login_with(None).await
    }

    /// Opens a connection (with `recv_buffer` as its receive buffer, if given) and logs it in
    /// with a fresh name.
    ///
    /// A `BUSY` is retried, on a new connection, for up to the timeout: the server may still
    /// be closing the previous case's connections, and a slot is free only once it has. A
    /// server still full after that fails the login.
    pub(crate) async fn login_with(&mut self, recv_buffer: Option<u32>) -> Result<Client, Failure> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let mut client = self.connect_with(recv_buffer).await?;
            let name = self.fresh_name();
            let hello = Reply::Hello(name.clone());
            // A server that answers BUSY at once may have closed before this write lands;
            // what it sent is still readable, so a failed write is not the verdict.
            let _ = client
                .write(&Request::HelloFrom(name.clone()).to_line())
                .await;
            let got = client.recv().await;
            match &got {
                got if got.is(&hello) => {
                    client.set_name(name);
                    self.declare_generation(&mut client).await?;
                    return Ok(client);
                }
                got if got.is(&Reply::Busy) && Instant::now() < deadline => {
                    client.log_note(
                        "(BUSY: the server is full, earlier connections may still be closing, or \
                         its connection rate holds this address back; trying again)",
                    );
                    drop(client);
                    tokio::time::sleep(BUSY_RETRY_INTERVAL).await;
                }
                _ => {
                    let failure = client.mismatch(
                        "log in with a fresh name",
                        &crate::failure::quoted(&reply_line(&hello)),
                        &got,
                    );
                    return Err(if got.is(&Reply::Busy) {
                        failure.note(format!(
                            "the server answered BUSY for {}: its client limit is lower than \
                             this case needs, or {}",
                            crate::client::seconds(self.timeout),
                            crate::client::LIMITS_NOTE
                        ))
                    } else {
                        failure
                    });
                }
            }
        }
    }

    /// Logs `client` in with a fresh name.
    pub(crate) async fn log_in(&mut self, client: &mut Client) -> Result<(), Failure> {
        let name = self.fresh_name();
        client.send(&Request::HelloFrom(name.clone())).await?;
        client
            .expect("log in with a fresh name", &Reply::Hello(name.clone()))
            .await?;
        client.set_name(name);
        self.declare_generation(client).await
    }

    /// In the previous generation, a `WHO` right after the login, as the course's old
    /// clients send: a server that speaks both generations answers a connection in the old
    /// one from its first `WHO` on (`docs/protocol.md`, "Protocol generations"), so without
    /// it such a server would be judged in the wrong generation.
    async fn declare_generation(&mut self, client: &mut Client) -> Result<(), Failure> {
        if self.generation == tcpchat_proto::Generation::Old {
            client.send(&self.generation.list_request()).await?;
            read_list(
                self.generation,
                client,
                "declare the old generation with WHO",
            )
            .await?;
        }
        Ok(())
    }

    /// Proves that nothing reached `watcher` before now. `from` (logged in) sends `watcher` a
    /// marker; the first line the watcher gets must be that marker's `DELIVERY`. Whatever came
    /// before it is something the server relayed and should not have.
    ///
    /// Sound because messages from one sender to one recipient keep their order, and the
    /// server had answered the rejected line (or closed) before the marker was sent.
    pub(crate) async fn expect_nothing_delivered(
        &mut self,
        watcher: &mut Client,
        from: &mut Client,
        what: &str,
    ) -> Result<(), Failure> {
        self.names_used += 1;
        let marker = format!("marker {}", self.names_used);
        let to = watcher.name().clone();
        from.send(&Request::Send { to, body: &marker }).await?;
        from.expect("send a marker message", &Reply::SendOk).await?;
        let want = Reply::Delivery {
            from: from.name().clone(),
            body: &marker,
        };
        let step = format!("nothing of {what} reaches {}", watcher.label());
        watcher.expect(&step, &want).await.map_err(|f| {
            f.note(format!(
                "{} should have received only the marker message; anything before it was \
                 relayed from a line the server rejected",
                watcher.label()
            ))
        })
    }

    /// Sends `LIST` on `client` and returns the names in the `LIST-OK`, checking its format.
    pub(crate) async fn list(
        &mut self,
        client: &mut Client,
        step: &str,
    ) -> Result<Vec<Username>, Failure> {
        client.send(&self.generation.list_request()).await?;
        read_list(self.generation, client, step).await
    }
}

/// Reads a `LIST-OK` and returns its names; anything else, or a malformed one, fails.
pub(crate) async fn read_list(
    generation: tcpchat_proto::Generation,
    client: &mut Client,
    step: &str,
) -> Result<Vec<Username>, Failure> {
    let got = client.recv().await;
    let expected = "LIST-OK <name>,<name>,... (names separated by commas alone)";
    let Got::Line(line) = &got else {
        return Err(client.mismatch(step, expected, &got));
    };
    match Reply::parse(line) {
        Ok(Reply::ListOk(names)) if generation == tcpchat_proto::Generation::Current => Ok(names),
        Ok(Reply::WhoOk(names)) if generation == tcpchat_proto::Generation::Old => Ok(names),
        Ok(_) => Err(client.mismatch(step, expected, &got)),
        Err(e) if line.starts_with(&reply_line(&generation.list_reply(Vec::new()))) => {
            let failure = client.mismatch(step, expected, &got);
            if failure.note.is_some() {
                Err(failure)
            } else {
                Err(failure.note(format!(
                    "not a valid LIST-OK: {e}; write `LIST-OK a,b,c` with no spaces"
                )))
            }
        }
        Err(_) => Err(client.mismatch(step, expected, &got)),
    }
}

/// Requires `names` to contain each of `want` exactly once.
pub(crate) fn require_listed(
    client: &Client,
    step: &str,
    names: &[Username],
    want: &[&Username],
) -> Result<(), Failure> {
    for w in want {
        let count = names.iter().filter(|n| n == w).count();
        if count != 1 {
            let got = listed(names);
            let how = if count == 0 {
                "is missing"
            } else {
                "appears more than once"
            };
            return Err(Failure::new(
                format!("{}: {step}", client.label()),
                format!("LIST-OK naming {w} exactly once"),
                got,
            )
            .note(format!("{w} {how}")));
        }
    }
    Ok(())
}

/// The `LIST-OK` line naming `names`, as a report shows it.
pub(crate) fn listed(names: &[Username]) -> String {
    escape(&reply_line(&Reply::ListOk(names.to_vec())))
}

/// `command` followed by a space and `rest`: the start of a request that the protocol crate
/// would refuse to build (an empty name, a `SEND` without a message), so a case can send it.
pub(crate) fn malformed(command: Command, rest: &[u8]) -> Vec<u8> {
    let mut line = command.as_str().as_bytes().to_vec();
    line.push(b' ');
    line.extend_from_slice(rest);
    line
}

/// `A`..`Z`, then `C26`, `C27`, ...
fn label(n: usize) -> String {
    match u8::try_from(n) {
        Ok(n) if n < 26 => char::from(b'A' + n).to_string(),
        _ => format!("C{n}"),
    }
}

/// Five random lowercase letters and digits, starting with a letter (`k3f9a`).
fn run_tag() -> String {
    // RandomState is seeded from the OS once per process and varies per instance: enough to
    // keep two runs against one server, or two checkers at once, from colliding.
    let mut bits = RandomState::new().hash_one(std::process::id());
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut tag = String::new();
    tag.push(char::from(LETTERS[(bits % 26) as usize]));
    bits /= 26;
    for _ in 0..4 {
        tag.push(char::from(ALNUM[(bits % 36) as usize]));
        bits /= 36;
    }
    tag.push('_');
    tag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_names_are_unique_kebab_case() {
        let mut seen = std::collections::HashSet::new();
        for case in CASES {
            assert!(seen.insert(case.name), "duplicate case {}", case.name);
            assert!(
                case.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{} is not kebab-case",
                case.name
            );
            assert!(!case.description.is_empty() && !case.rule.is_empty());
        }
    }

    /// The protocol's words, taken from the protocol crate itself.
    fn wire_words() -> Vec<String> {
        let name = Username::parse("x").expect("literal name");
        let requests = [Command::HelloFrom, Command::List, Command::Send].map(Command::as_str);
        let replies = [
            Reply::Hello(name.clone()),
            Reply::InUse,
            Reply::Busy,
            Reply::ListOk(Vec::new()),
            Reply::SendOk,
            Reply::BadDestUser,
            Reply::Delivery {
                from: name,
                body: "x",
            },
            Reply::BadRqstHdr,
            Reply::BadRqstBody,
        ]
        .map(|r| {
            let line = reply_line(&r);
            let word = line.split(|&b| b == b' ').next().unwrap_or_default();
            String::from_utf8_lossy(word).into_owned()
        });
        requests
            .iter()
            .map(|w| w.to_string())
            .chain(replies)
            .collect()
    }

    /// The checker's docs promise that no wire string is spelled here: every line it sends or
    /// expects is built by `tcpchat-proto` (malformed ones start from a proto-built line or
    /// [`Command::as_str`]). Wire bytes are byte strings, so a byte-string literal holding a
    /// protocol word, a `format!` turned into bytes, or one that starts with a protocol word and
    /// an argument (`"SEND {to} ..."`), is a line spelled by hand. Prose (steps,
    /// notes) may name the words; unit tests of the reader may spell what a server sends.
    #[test]
    fn no_wire_line_is_spelled_by_hand() {
        let sources = [
            ("cases/mod.rs", include_str!("mod.rs")),
            ("cases/commands.rs", include_str!("commands.rs")),
            ("cases/ext_keepalive.rs", include_str!("ext_keepalive.rs")),
            (
                "cases/ext_negotiation.rs",
                include_str!("ext_negotiation.rs"),
            ),
            ("cases/ext_presence.rs", include_str!("ext_presence.rs")),
            ("cases/ext_rooms.rs", include_str!("ext_rooms.rs")),
            ("cases/limits.rs", include_str!("limits.rs")),
            ("cases/login.rs", include_str!("login.rs")),
            ("cases/presence.rs", include_str!("presence.rs")),
            ("cases/relay.rs", include_str!("relay.rs")),
            ("cases/stream.rs", include_str!("stream.rs")),
            ("client.rs", include_str!("../client.rs")),
            ("lib.rs", include_str!("../lib.rs")),
        ];
        let words = wire_words();
        let has_word = |text: &str| {
            text.split(|c: char| !(c.is_ascii_uppercase() || c == '-'))
                .any(|token| words.iter().any(|w| w == token))
        };
        let mut spelled = Vec::new();
        for (file, source) in sources {
            let code = source.split("#[cfg(test)]").next().unwrap_or_default();
            for (i, line) in code.lines().enumerate() {
                let trimmed = line.trim_start();
                if trimmed.starts_with("//") {
                    continue;
                }
                let bytes_literal = line
                    .split("b\"")
                    .skip(1)
                    .any(|rest| has_word(rest.split('"').next().unwrap_or_default()));
                let formatted_bytes = line.contains("format!(")
                    && (line.contains(".as_bytes()") || line.contains(".into_bytes()"))
                    && has_word(line);
                // `format!("SEND {}...")`: a request or reply with its arguments filled in.
                let formatted_line = line
                    .split("format!(\"")
                    .skip(1)
                    .any(|rest| words.iter().any(|w| rest.starts_with(&format!("{w} {{"))));
                if bytes_literal || formatted_bytes || formatted_line {
                    spelled.push(format!("{file}:{}: {}", i + 1, line.trim()));
                }
            }
        }
        assert!(
            spelled.is_empty(),
            "build these lines with tcpchat_proto (Request/Reply encode, Command::as_str):\n{}",
            spelled.join("\n")
        );
    }

    #[test]
    fn labels() {
        assert_eq!(label(0), "A");
        assert_eq!(label(25), "Z");
        assert_eq!(label(26), "C26");
    }

    #[test]
    fn fresh_names_are_valid_and_distinct() {
        let mut cx = Ctx::new(
            "127.0.0.1:1".parse().expect("literal address"),
            Duration::from_secs(1),
            None,
        );
        let a = cx.fresh_name();
        let b = cx.fresh_name();
        assert_ne!(a, b);
        assert!(a.as_str().len() <= 16, "{a}");
    }
}
