//! The cases: one per thing a client must get right, each a small script of what the user
//! types and what the scripted server sends.
//!
//! Every case starts the program afresh on a fresh port, so one failure cannot spoil the
//! next case. The table in [`CASES`] is the order they run in; `docs/check-client.md`
//! explains each one.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tcpchat_proto::{Reply, Request, Username};
use tokio::net::TcpListener;

use crate::child::{Child, Exit};
use crate::peer::{Got, Peer, Transcript, SPLIT_PAUSE};
use crate::report::{shown, Failure, Outcome};
use crate::{CheckClientError, Config, CASE_TIMEOUTS};

/// How long output may trail a program's exit (still being copied from its pipes or pty).
const EXIT_GRACE: Duration = Duration::from_millis(500);

/// Names in the `long-list` case's `LIST-OK`: about 50 KB, past any fixed buffer a student
/// would pick, far inside what a line-based reader copes with.
pub(crate) const LONG_LIST_NAMES: usize = 5000;

/// What a case ends with when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Done {
    Passed,
}

type CaseResult = Result<Done, Failure>;
type CaseFuture<'a> = Pin<Box<dyn Future<Output = CaseResult> + Send + 'a>>;

/// One named check.
pub struct Case {
    /// Short, stable, kebab-case name (`--only NAME`).
    pub name: &'static str,
    /// One line: what the case does.
    pub description: &'static str,
    /// What a correct client does, as a failure report states it.
    pub rule: &'static str,
    run: for<'a> fn(&'a mut Run<'_>) -> CaseFuture<'a>,
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
            run: |r| Box::pin($run(r)),
        }
    };
}

/// Every case, in the order they run: the login first, so a client that cannot log in fails
/// early and visibly.
pub static CASES: &[Case] = &[
    case!(
        "login",
        login,
        "the name typed becomes HELLO-FROM <name>; after HELLO the client says it is in",
        "The client asks for a name (or takes it as an argument), sends `HELLO-FROM <name>` \
         as its first line, and after `HELLO <name>` tells the user they are logged in."
    ),
    case!(
        "name-in-use",
        name_in_use,
        "after IN-USE the client says the name is taken and logs in with the next one typed",
        "`IN-USE` means the name is taken: the client tells the user and lets them try \
         another name (on the same connection or a new one)."
    ),
    case!(
        "busy",
        busy,
        "BUSY (the server is full) is shown to the user, and the client does not crash",
        "`BUSY` means the server is full and closes the connection: the client tells the user, \
         and ends or tries again later, without crashing."
    ),
    case!(
        "who",
        who,
        "!who becomes LIST, and every name of the LIST-OK is shown",
        "The user's `!who` becomes exactly `LIST`, and the client shows every name of the \
         `LIST-OK` that answers it."
    ),
    case!(
        "send",
        send,
        "a message typed becomes exactly one SEND, spaces and emoji intact",
        "`@user message` becomes exactly one line, `SEND <user> <message>`, the message byte \
         for byte: every space kept, UTF-8 intact."
    ),
    case!(
        "delivery",
        delivery,
        "an incoming DELIVERY appears in the output: the sender and the text",
        "A `DELIVERY <user> <message>` is shown to the user with who sent it and the whole text."
    ),
    case!(
        "byte-by-byte",
        byte_by_byte,
        "HELLO, a DELIVERY and a LIST-OK arriving one byte per segment still work",
        "TCP is a byte stream: a line can arrive in many pieces, and only `\\n` ends it. A \
         client keeps what it read until the newline comes, instead of taking one read as \
         one line."
    ),
    case!(
        "coalesced",
        coalesced,
        "HELLO and two DELIVERYs in one segment: both messages are shown",
        "One read can bring several lines: a client splits what it read at every `\\n` and \
         handles each line, not only the first."
    ),
    case!(
        "delivery-before-send-ok",
        delivery_before_send_ok,
        "a DELIVERY between SEND and its SEND-OK is shown, and the client goes on",
        "A `DELIVERY` can arrive at any moment, also between a `SEND` and its `SEND-OK`: the \
         client shows it and still takes the `SEND-OK` as the answer."
    ),
    case!(
        "long-list",
        long_list,
        "a LIST-OK of 5000 names (about 50 KB) is read whole: its first and last names shown",
        "A line can be longer than any fixed buffer: a client keeps reading until the `\\n`, \
         so the whole `LIST-OK` is shown."
    ),
    case!(
        "unknown-user",
        unknown_user,
        "BAD-DEST-USER is shown to the user, and the client goes on",
        "`BAD-DEST-USER` answers a `SEND` to someone not online: the client tells the user and \
         keeps working."
    ),
    case!(
        "unknown-line",
        unknown_line,
        "a line the client does not know is survived, and the next DELIVERY shown",
        "A client survives a line it does not know (ignores it, or shows it) and goes on \
         reading: servers add lines over time."
    ),
    case!(
        "server-closes",
        server_closes,
        "the server closing is noticed: the client says so, ends or reconnects, never hangs",
        "When the server closes the connection (a read returns no bytes), the client tells \
         the user and ends or reconnects; it does not crash or spin on the dead socket."
    ),
    case!(
        "quit",
        quit,
        "!quit ends the program",
        "The user's `!quit` closes the connection and ends the program."
    ),
];

/// Looks a case up by name.
pub fn find(name: &str) -> Option<&'static Case> {
    CASES.iter().find(|c| c.name == name)
}

/// How the scripted server answers the login.
enum HelloHow {
    /// `HELLO <name>` in one write.
    Whole,
    /// One byte per segment.
    Bytewise,
    /// In one write with these lines after it.
    With(Vec<u8>),
}

/// One case's world: the program, the port it was told about, the conversation.
pub(crate) struct Run<'c> {
    cfg: &'c Config,
    listener: TcpListener,
    child: Child,
    transcript: Transcript,
    timeout: Duration,
}

/// Runs one case from start to end, the program killed after it.
pub(crate) async fn run_case(case: &Case, cfg: &Config) -> Result<Outcome, CheckClientError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(CheckClientError::Listen)?;
    let port = listener
        .local_addr()
        .map_err(CheckClientError::Listen)?
        .port();
    let argv: Vec<String> = cfg
        .command
        .iter()
        .map(|a| {
            a.replace("{host}", "127.0.0.1")
                .replace("{port}", &port.to_string())
                .replace("{name}", &cfg.name)
        })
        .collect();
    // Python block-buffers stdout on a pipe: without this a correct client's output would
    // only appear when it exits, and every case would look like a silent client.
    let env = [("PYTHONUNBUFFERED".to_string(), "1".to_string())];
    let child = Child::spawn(&argv, &env, cfg.terminal)?;
    let mut run = Run {
        cfg,
        listener,
        child,
        transcript: Transcript::default(),
        timeout: cfg.timeout,
    };
    let limit = cfg.timeout * CASE_TIMEOUTS;
    let result = tokio::time::timeout(limit, (case.run)(&mut run)).await;
    let result = match result {
        Ok(Ok(Done::Passed)) => match run.crash() {
            Some(crash) => Err(Failure::new(
                "the whole case",
                "the program to run without crashing",
                crash,
            )
            .hint("read the error in your program's output below; the conversation shows what it had just received")),
            None => Ok(Done::Passed),
        },
        Ok(other) => other,
        Err(_) => Err(Failure::new(
            "the whole case",
            format!("to finish within {}", crate::seconds(limit)),
            "(still going)",
        )),
    };
    let outcome = match result {
        Ok(Done::Passed) => Outcome::Pass,
        Err(failure) => {
            let failure = match run.crash() {
                Some(crash) => failure.hint_first(format!("the program crashed: {crash}")),
                None => failure,
            };
            Outcome::Fail(Box::new(
                failure.with_context(run.transcript.take(), &run.child.output().shown),
            ))
        }
    };
    run.child.kill();
    Ok(outcome)
}

impl Run<'_> {
    fn name(&self) -> Username {
        // Checked by `run` before any case starts.
        Username::parse(&self.cfg.name).unwrap_or_else(|_| unreachable_name())
    }

    /// Types a line on the program's input, and logs it.
    fn type_line(&mut self, line: &str) {
        self.transcript
            .log(format!("typed: {}", shown(line.as_bytes())));
        self.child.type_line(line);
    }

    fn type_send(&mut self, to: &str, message: &str) {
        let line = self
            .cfg
            .conventions
            .send
            .replace("{user}", to)
            .replace("{message}", message);
        self.type_line(&line);
    }

    fn type_who(&mut self) {
        let who = self.cfg.conventions.who.clone();
        self.type_line(&who);
    }

    /// Where the program's output is now: what it shows from here on is new.
    fn mark(&self) -> usize {
        self.child.shown_len()
    }

    /// A mark taken once the program's output has gone quiet. Its output reaches us through
    /// a pipe and a copying thread, so what it printed before its last network line (a
    /// prompt before `HELLO-FROM`, a welcome before the case's next step) can arrive after
    /// that line did; counted after a plain mark, such old words would pass for a reaction
    /// to what the server does next. There is no signal for "the pipe is empty", so this
    /// waits until nothing new has come for a moment (at most a second or two).
    async fn quiet_mark(&self) -> usize {
        const QUIET: Duration = Duration::from_millis(150);
        let mut seen = self.mark();
        for _ in 0..12 {
            tokio::time::sleep(QUIET).await;
            let now = self.mark();
            if now == seen {
                break;
            }
            seen = now;
        }
        seen
    }

    /// A crash, if the program had one: killed by a signal, or an interpreter's or runtime's
    /// crash report in its output.
    fn crash(&self) -> Option<String> {
        if let Some(Exit::Signal(signal)) = self.child.exited() {
            return Some(format!("the program was killed by signal {signal}"));
        }
        let output = self.child.output();
        let text = String::from_utf8_lossy(&output.shown);
        const CRASH_MARKS: &[&str] = &[
            "Traceback (most recent call last)",
            "panicked at",
            "Exception in thread",
            "Segmentation fault",
            "Unhandled exception",
        ];
        CRASH_MARKS.iter().find_map(|mark| {
            let at = text.find(mark)?;
            let last = text[at..]
                .lines()
                .map(str::trim)
                .rfind(|l| !l.is_empty())
                .unwrap_or(mark);
            Some(if last == *mark {
                mark.to_string()
            } else {
                format!("{mark} ... {last}")
            })
        })
    }

    /// Waits for the program to connect.
    async fn accept(&mut self, step: &str) -> Result<Peer, Failure> {
        let wait = self.timeout;
        let exited = self.child.wait_exit(wait);
        tokio::select! {
            accepted = self.listener.accept() => match accepted {
                Ok((stream, _)) => {
                    self.transcript.log("client: (connects)".into());
                    Ok(Peer::new(stream, wait, self.transcript.clone()))
                }
                Err(e) => Err(Failure::new(step, "a connection", format!("accept failed: {e}"))),
            },
            exit = exited => Err(match exit {
                Some(exit) => Failure::new(step, "a connection to the server", format!("the program ended ({exit}) without connecting")),
                None => Failure::new(step, "a connection to the server", format!("no connection within {}", crate::seconds(wait)))
                    .hint("connect to the host and port given on the command line ({host} and {port} in the check-client command); a client that asks for the name first gets it typed as its first input line"),
            }),
        }
    }

    /// Types the name (unless the program takes it as an argument), accepts the connection
    /// and reads `HELLO-FROM <name>`.
    async fn hello_from(&mut self, name: &Username) -> Result<Peer, Failure> {
        if !self.cfg.name_in_args() {
            let name = name.as_str().to_owned();
            self.type_line(&name);
        }
        let mut peer = self.accept("start and connect to the server").await?;
        let want = Request::HelloFrom(name.clone()).to_line();
        peer.expect_login("log in with the name typed", &want)
            .await
            .map_err(|f| f.hint("the first line is `HELLO-FROM <name>` and a newline: the name exactly as typed, nothing else on the line"))?;
        Ok(peer)
    }

    /// Logs the program in: its `HELLO-FROM`, the server's `HELLO` sent `how`, and a sign
    /// in the output that the login worked.
    async fn login_how(&mut self, how: HelloHow) -> Result<Peer, Failure> {
        let name = self.name();
        let mut peer = self.hello_from(&name).await?;
        let mark = self.quiet_mark().await;
        let hello = Reply::Hello(name).to_line();
        match how {
            HelloHow::Whole => peer.write(&hello).await,
            HelloHow::Bytewise => peer.write_bytewise(&hello).await,
            HelloHow::With(more) => {
                let mut all = hello;
                all.extend_from_slice(&more);
                peer.write(&all).await;
            }
        }
        self.expect_some_output(mark, "show that the login worked")
            .await
            .map_err(|f| {
                f.hint("after HELLO, tell the user they are logged in (a welcome line)")
            })?;
        Ok(peer)
    }

    async fn login(&mut self) -> Result<Peer, Failure> {
        self.login_how(HelloHow::Whole).await
    }

    /// Waits until the program shows `text` after `mark` (or ends, or the time is up).
    async fn expect_shown(&mut self, mark: usize, text: &str, step: &str) -> Result<(), Failure> {
        let wanted = text.as_bytes();
        let ok = self
            .wait_output(mark, |out| {
                out.windows(wanted.len().max(1)).any(|w| w == wanted)
            })
            .await;
        ok.map_err(|got| Failure::new(step, format!("{} in the output", shown(wanted)), got))
    }

    /// Waits until the program shows anything but white space after `mark`.
    async fn expect_some_output(&mut self, mark: usize, step: &str) -> Result<(), Failure> {
        self.wait_output(mark, |out| out.iter().any(|b| !b.is_ascii_whitespace()))
            .await
            .map_err(|got| Failure::new(step, "something shown to the user", got))
    }

    /// Waits up to the timeout for the output after `mark` to satisfy `want`; on failure,
    /// what happened instead.
    async fn wait_output(
        &mut self,
        mark: usize,
        want: impl Fn(&[u8]) -> bool,
    ) -> Result<(), String> {
        let wait = self.timeout;
        let mut exit = self.child.exit_watch();
        let shown_in_time = tokio::select! {
            ok = self.child.wait_shown(mark, wait, &want) => ok,
            _ = exit.wait_for(Option::is_some) => false,
        };
        // The program may have written its last words just before it ended: the threads
        // copying its output may still hold them (on a pty especially), so give them a
        // moment before judging. Nothing is waited for once they have reached the end.
        let shown_in_time = shown_in_time || self.child.wait_shown(mark, EXIT_GRACE, &want).await;
        let output = self.child.output().shown;
        let after = output.get(mark..).unwrap_or_default();
        if shown_in_time || want(after) {
            return Ok(());
        }
        let what = if after.iter().all(u8::is_ascii_whitespace) {
            "nothing new".to_string()
        } else {
            format!("only {}", shown(after))
        };
        Err(match self.child.exited() {
            Some(exit) => format!("{what}, and the program ended ({exit})"),
            None => format!("{what} within {}", crate::seconds(wait)),
        })
    }

    /// Types `!who`, requires `LIST` (`WHO` in the old generation), answers with `names` written `bytewise` or whole.
    async fn who_answered(
        &mut self,
        peer: &mut Peer,
        names: &[Username],
        bytewise: bool,
    ) -> Result<usize, Failure> {
        self.type_who();
        let generation = self.cfg.generation;
        let request = generation.list_request().to_line();
        peer.expect("turn the typed who into a request", &request)
            .await
            .map_err(|f| {
                f.hint(format!(
                    "{} becomes the line {}",
                    shown(self.cfg.conventions.who.as_bytes()),
                    shown(&request[..request.len() - 1])
                ))
            })?;
        let mark = self.mark();
        let reply = generation.list_reply(names.to_vec()).to_line();
        if bytewise {
            peer.write_bytewise(&reply).await;
        } else {
            peer.write(&reply).await;
        }
        Ok(mark)
    }
}

fn unreachable_name() -> Username {
    // Only reached if `run`'s check of the name were skipped; a fixed valid name keeps the
    // case going rather than panicking.
    Username::parse("student").unwrap_or_else(|_| unreachable!("a literal valid name"))
}

fn user(name: &str) -> Username {
    Username::parse(name).unwrap_or_else(|_| unreachable_name())
}

async fn login(r: &mut Run<'_>) -> CaseResult {
    r.login().await?;
    Ok(Done::Passed)
}

async fn name_in_use(r: &mut Run<'_>) -> CaseResult {
    let name = r.name();
    let mut peer = r.hello_from(&name).await?;
    let mark = r.mark();
    peer.write(&Reply::InUse.to_line()).await;
    r.expect_some_output(mark, "show that the name is taken")
        .await
        .map_err(|f| f.hint("after IN-USE, tell the user the name is taken and ask for another"))?;
    if r.cfg.name_in_args() {
        return Ok(Done::Passed);
    }
    let second = user(&format!("{}2", name.as_str()));
    r.type_line(second.as_str());
    let want = Request::HelloFrom(second.clone()).to_line();
    let step = "log in with the second name typed";
    // The same connection, or a new one: both are right.
    let wait = r.timeout;
    let mut peer = tokio::select! {
        got = peer.recv() => match got {
            Got::Line(line) if line.strip_suffix(b"\r").unwrap_or(&line) == &want[..want.len() - 1] => peer,
            Got::Closed(_) => r.accept(step).await?.expect_login_line(step, &want).await?,
            other => return Err(Failure::new(step, shown(&want[..want.len() - 1]), other.describe(wait))
                .hint("after IN-USE, send `HELLO-FROM <name>` again with the next name the user types")),
        },
        accepted = r.listener.accept() => match accepted {
            Ok((stream, _)) => {
                r.transcript.log("client: (connects again)".into());
                Peer::new(stream, wait, r.transcript.clone()).expect_login_line(step, &want).await?
            }
            Err(e) => return Err(Failure::new(step, "a connection", format!("accept failed: {e}"))),
        },
    };
    let mark = r.mark();
    peer.write(&Reply::Hello(second).to_line()).await;
    r.expect_some_output(mark, "show that the login with the second name worked")
        .await?;
    Ok(Done::Passed)
}

impl Peer {
    /// [`Peer::expect_login`], giving the peer back.
    async fn expect_login_line(mut self, step: &str, want: &[u8]) -> Result<Peer, Failure> {
        self.expect_login(step, want).await?;
        Ok(self)
    }
}

async fn busy(r: &mut Run<'_>) -> CaseResult {
    if !r.cfg.name_in_args() {
        let name = r.cfg.name.clone();
        r.type_line(&name);
    }
    let peer = r.accept("start and connect to the server").await?;
    let mark = r.mark();
    let mut peer = peer;
    peer.write(&Reply::Busy.to_line()).await;
    peer.close().await;
    r.expect_some_output(mark, "show that the server is full")
        .await
        .map_err(|f| {
            f.hint("BUSY means the server is full: tell the user, then end (or retry later)")
        })?;
    Ok(Done::Passed)
}

async fn who(r: &mut Run<'_>) -> CaseResult {
    let mut peer = r.login().await?;
    let names = [r.name(), user("grace"), user("linus")];
    let mark = r.who_answered(&mut peer, &names, false).await?;
    for other in &names[1..] {
        r.expect_shown(mark, other.as_str(), "show everyone the LIST-OK names")
            .await
            .map_err(|f| f.hint("show every name of LIST-OK (they are separated by commas)"))?;
    }
    Ok(Done::Passed)
}

/// A message with runs of spaces, punctuation, accents and an emoji with a skin tone.
const TRICKY_MESSAGE: &str = "hi  there,   how are you? żółw 👋🏽 ok";

async fn send(r: &mut Run<'_>) -> CaseResult {
    let mut peer = r.login().await?;
    let to = user("grace");
    r.type_send(to.as_str(), TRICKY_MESSAGE);
    let want = Request::Send {
        to: to.clone(),
        body: TRICKY_MESSAGE,
    }
    .to_line();
    peer.expect("send the message typed", &want).await.map_err(|f| {
        if f.got.contains(to.as_str()) {
            f.hint("the message goes byte for byte: keep every space, do not trim or collapse, send UTF-8")
        } else {
            f.hint("`@user message` becomes `SEND <user> <message>` and a newline")
        }
    })?;
    peer.write(&Reply::SendOk.to_line()).await;
    // Exactly one line: the next thing the client sends is the LIST for the next command,
    // not a second piece of the message.
    r.who_answered(&mut peer, &[r.name()], false)
        .await
        .map_err(|f| f.hint("one typed message is one SEND line; nothing else is sent for it"))?;
    Ok(Done::Passed)
}

async fn delivery(r: &mut Run<'_>) -> CaseResult {
    let mut peer = r.login().await?;
    let mark = r.mark();
    let body = "are you there? 🙂 (from grace)";
    peer.write(
        &Reply::Delivery {
            from: user("grace"),
            body,
        }
        .to_line(),
    )
    .await;
    r.expect_shown(mark, body, "show the message received")
        .await
        .map_err(|f| f.hint("show each DELIVERY: the sender and the whole text after it"))?;
    Ok(Done::Passed)
}

const BYTEWISE_HINT: &str = "your client seems to treat one recv() as one line: TCP is a byte \
    stream, so keep what you read in a buffer and take a line out only when its \\n has come";

async fn byte_by_byte(r: &mut Run<'_>) -> CaseResult {
    let mut peer = r
        .login_how(HelloHow::Bytewise)
        .await
        .map_err(|f| f.hint(BYTEWISE_HINT))?;
    let mark = r.mark();
    let body = "one byte at a time";
    peer.write_bytewise(
        &Reply::Delivery {
            from: user("grace"),
            body,
        }
        .to_line(),
    )
    .await;
    r.expect_shown(mark, body, "show a DELIVERY that came one byte per segment")
        .await
        .map_err(|f| f.hint(BYTEWISE_HINT))?;
    let names = [r.name(), user("grace")];
    let mark = r
        .who_answered(&mut peer, &names, true)
        .await
        .map_err(|f| f.hint(BYTEWISE_HINT))?;
    r.expect_shown(
        mark,
        "grace",
        "show a LIST-OK that came one byte per segment",
    )
    .await
    .map_err(|f| f.hint(BYTEWISE_HINT))?;
    Ok(Done::Passed)
}

async fn coalesced(r: &mut Run<'_>) -> CaseResult {
    let (first, second) = (
        "first of two in one segment",
        "second of two in one segment",
    );
    let mut more = Reply::Delivery {
        from: user("grace"),
        body: first,
    }
    .to_line();
    Reply::Delivery {
        from: user("linus"),
        body: second,
    }
    .encode(&mut more);
    let hint = "one recv() can bring several lines: split what you read at every \\n and \
                handle each line, keeping any partial one for the next read";
    let mark = r.mark();
    r.login_how(HelloHow::With(more))
        .await
        .map_err(|f| f.hint(hint))?;
    for body in [first, second] {
        r.expect_shown(mark, body, "show both messages that came with the HELLO")
            .await
            .map_err(|f| f.hint(hint))?;
    }
    Ok(Done::Passed)
}

async fn delivery_before_send_ok(r: &mut Run<'_>) -> CaseResult {
    let mut peer = r.login().await?;
    let to = user("grace");
    let question = "did you get my mail?";
    r.type_send(to.as_str(), question);
    peer.expect(
        "send the message typed",
        &Request::Send { to, body: question }.to_line(),
    )
    .await?;
    let mark = r.mark();
    let meanwhile = "meanwhile, hello from linus";
    peer.write(
        &Reply::Delivery {
            from: user("linus"),
            body: meanwhile,
        }
        .to_line(),
    )
    .await;
    // The DELIVERY goes out on its own before the SEND-OK, as it would from a busy server.
    tokio::time::sleep(SPLIT_PAUSE * 10).await;
    peer.write(&Reply::SendOk.to_line()).await;
    let hint = "a DELIVERY can come at any time, also while you wait for SEND-OK: read every \
                line in one place and act on its first word, instead of taking the next line \
                as the answer";
    r.expect_shown(
        mark,
        meanwhile,
        "show the DELIVERY that came before the SEND-OK",
    )
    .await
    .map_err(|f| f.hint(hint))?;
    r.who_answered(&mut peer, &[r.name()], false)
        .await
        .map_err(|f| f.hint(hint))?;
    Ok(Done::Passed)
}

async fn long_list(r: &mut Run<'_>) -> CaseResult {
    let mut peer = r.login().await?;
    let mut names = vec![r.name()];
    names.extend((1..LONG_LIST_NAMES).map(|i| user(&format!("user{i:05}"))));
    let bytes = r.cfg.generation.list_reply(names.clone()).to_line().len();
    let mark = r.who_answered(&mut peer, &names, false).await?;
    let hint = format!(
        "this LIST-OK is {bytes} bytes: a fixed buffer (one recv(1024)) holds only its \
         start; keep reading until the \\n"
    );
    for name in [&names[1], &names[names.len() - 1]] {
        r.expect_shown(
            mark,
            name.as_str(),
            "show the first and the last name of a long LIST-OK",
        )
        .await
        .map_err(|f| f.hint(hint.clone()))?;
    }
    Ok(Done::Passed)
}

async fn unknown_user(r: &mut Run<'_>) -> CaseResult {
    let mut peer = r.login().await?;
    let nobody = user("nobody");
    r.type_send(nobody.as_str(), "anyone there?");
    peer.expect(
        "send the message typed",
        &Request::Send {
            to: nobody,
            body: "anyone there?",
        }
        .to_line(),
    )
    .await?;
    let mark = r.mark();
    peer.write(&r.cfg.generation.bad_dest().to_line()).await;
    r.expect_some_output(mark, "show that the recipient is not online")
        .await
        .map_err(|f| f.hint("BAD-DEST-USER: tell the user the recipient is not online"))?;
    r.who_answered(&mut peer, &[r.name()], false)
        .await
        .map_err(|f| f.hint("after BAD-DEST-USER the client goes on taking commands"))?;
    Ok(Done::Passed)
}

async fn unknown_line(r: &mut Run<'_>) -> CaseResult {
    let mut peer = r.login().await?;
    let mark = r.mark();
    // Not a line of any generation of the protocol: what a newer server might send.
    peer.write(b"NEWS-FLASH the server has news today\n").await;
    let body = "still here after the news";
    peer.write(
        &Reply::Delivery {
            from: user("grace"),
            body,
        }
        .to_line(),
    )
    .await;
    r.expect_shown(
        mark,
        body,
        "show the DELIVERY after a line the client does not know",
    )
    .await
    .map_err(|f| {
        f.hint("ignore (or show) a line you do not know and go on reading; never crash on it")
    })?;
    Ok(Done::Passed)
}

async fn server_closes(r: &mut Run<'_>) -> CaseResult {
    let peer = r.login().await?;
    let mark = r.quiet_mark().await;
    peer.close().await;
    let wait = r.timeout;
    // Told the user, ended, or came back: each is a way of noticing.
    let noticed = tokio::select! {
        shown = r.child.wait_shown(mark, wait, |out| out.iter().any(|b| !b.is_ascii_whitespace())) => shown,
        exit = r.child.wait_exit(wait) => exit.is_some(),
        accepted = r.listener.accept() => accepted.is_ok(),
    };
    if noticed || r.child.exited().is_some() {
        return Ok(Done::Passed);
    }
    Err(Failure::new(
        "notice that the server closed the connection",
        "a message to the user, the program ending, or a reconnection",
        format!("nothing within {}", crate::seconds(wait)),
    )
    .hint("a recv() that returns no bytes (b'' in Python) means the server closed: tell the user and stop or reconnect; looping on it spins forever"))
}

async fn quit(r: &mut Run<'_>) -> CaseResult {
    let _peer = r.login().await?;
    let quit = r.cfg.conventions.quit.clone();
    r.type_line(&quit);
    let wait = r.timeout;
    match r.child.wait_exit(wait).await {
        Some(_) => Ok(Done::Passed),
        None => Err(Failure::new(
            format!("type {}", shown(quit.as_bytes())),
            "the program to end",
            format!("still running after {}", crate::seconds(wait)),
        )
        .hint("on the quit command, close the socket and exit (stop the reading thread too)")),
    }
}
