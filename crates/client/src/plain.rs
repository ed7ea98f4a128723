//! The plain line mode: commands in, one friendly line per event out.
//!
//! For pipes, scripts and terminals that cannot host the full-screen UI. It reads the same
//! commands as the UI (`@bob hi`, `!who`, `/quit`...) one per line, and writes what happened
//! as sentences (`<bob> hi`, `delivered to bob: hi`, `online: alice, bob`), never a protocol
//! line. `/quit` leaves at once; the end of the input waits for the login and for the answers
//! to messages still on their way (up to [`crate::QUIT_GRACE`]) so that
//! `echo '@bob hi' | tcpchat connect --plain` reports whether the message arrived. A name
//! typed at the prompt that cannot be used asks again; one given with `--name` ends the run
//! with its reason, as a script wants.
//!
//! **Passwords** never come from the input (a script's input is often a file, a terminal
//! would echo it) nor from a flag's value (visible to every user in `ps`). [`Passwords`]
//! holds what `tcpchat connect` read once at start from `--password-fd N` (first line: the
//! password; second line: a new one for `/password`) or from `TCPCHAT_PASSWORD` and
//! `TCPCHAT_NEW_PASSWORD`, and each password prompt is answered from it: the login and
//! `/unregister` with the password, `/register` with the password (the one to log in with
//! from then on), `/password` with the password then the new one. A prompt it cannot answer
//! is cancelled with a line saying what to give. With `presence`, arrivals and departures are
//! printed as they happen (`bob is online`, `bob went offline`); without it they are not
//! polled for, as before.

use std::io::{self, BufRead, Write};
use std::time::Instant;

use tcpchat_proto::Extension;
use tokio::sync::mpsc;

use crate::net::{self, Link, Server};
use crate::{AccountOp, AccountReply, Client, Config, Effect, Event, LoginError, Secret, HELP};
use crate::{HistoryNote, PasswordPrompt, Phase};

/// The passwords a plain-mode run may use, read once at start.
#[derive(Debug, Clone, Default)]
pub struct Passwords {
    /// The account's password: the login, `/register`, `/unregister`, `/password`'s old one.
    pub current: Option<Secret>,
    /// `/password`'s new one.
    pub new: Option<Secret>,
}

/// How the user gives passwords to the plain mode, for the line that says one is missing.
pub const PASSWORD_SOURCES: &str =
    "--password-fd N (first line the password, second a new one) or TCPCHAT_PASSWORD \
     (and TCPCHAT_NEW_PASSWORD)";

/// Input lines read ahead of the client; the reading thread waits when they are not taken.
pub const INPUT_QUEUE_LINES: usize = 64;

/// Why the plain mode stopped without the user asking.
#[derive(Debug, thiserror::Error)]
pub enum PlainError {
    #[error(transparent)]
    Login(#[from] LoginError),
    #[error("cannot write the output: {0}")]
    Output(io::Error),
}

/// Reads lines from standard input on a thread of its own and hands them over.
///
/// A plain thread rather than `tokio::io::stdin`, whose blocking read cannot be cancelled and
/// would keep the runtime from shutting down while the terminal waits for a line. The channel
/// closes at the end of the input; a read error ends it too. Bytes that are not UTF-8 are
/// replaced, not fatal. At most [`INPUT_QUEUE_LINES`] lines are read ahead.
pub fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(INPUT_QUEUE_LINES);
    std::thread::spawn(move || {
        let mut stdin = io::stdin().lock();
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    if tx
                        .blocking_send(text.trim_end_matches(['\n', '\r']).to_owned())
                        .is_err()
                    {
                        break;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    tracing::warn!(%err, "cannot read standard input");
                    break;
                }
            }
        }
    });
    rx
}

/// Runs a session with `server`: commands from `input` (closed = end of input),
/// events to `output`, until `/quit`, the end of the input, or a login failure.
///
/// # Errors
/// [`PlainError::Login`] when connecting or logging in is impossible (the first time: later
/// losses are retried); [`PlainError::Output`] when `output` fails, except for a broken pipe,
/// which ends the session quietly (the reader went away).
pub async fn run(
    server: &Server,
    config: Config,
    input: mpsc::Receiver<String>,
    output: &mut impl Write,
) -> Result<(), PlainError> {
    let passwords = Passwords {
        current: config.password.clone(),
        new: None,
    };
    run_with_passwords(server, config, passwords, input, output).await
}

/// [`run`], answering password prompts from `passwords` (see the module documentation).
///
/// # Errors
/// As [`run`].
pub async fn run_with_passwords(
    server: &Server,
    config: Config,
    mut passwords: Passwords,
    mut input: mpsc::Receiver<String>,
    output: &mut impl Write,
) -> Result<(), PlainError> {
    let server_name = server.to_string();
    let (mut keeper, restored, warning) = crate::state::for_config(&config, &server_name);
    let mut client = Client::new(config);
    if let Some(restored) = restored {
        client.restore(restored);
    }
    if let Some(warning) = warning {
        writeln!(output, "{warning}").map_err(PlainError::Output)?;
    }
    let mut link = Link::new(server.clone());
    let server = server_name;
    let mut input_open = true;
    let mut effects = client.start(Instant::now());
    // The account command a `New` prompt belongs to: after `Current` it is `/password`'s.
    let mut after_current = false;
    loop {
        while !effects.is_empty() {
            let mut more = Vec::new();
            for effect in link.apply(std::mem::take(&mut effects)) {
                let written = match effect {
                    Effect::Show(Event::PasswordNeeded(prompt)) => {
                        let answer = match &prompt {
                            PasswordPrompt::Login(_) => passwords.current.clone(),
                            PasswordPrompt::Current => {
                                after_current = true;
                                passwords.current.clone()
                            }
                            PasswordPrompt::New if after_current => passwords.new.clone(),
                            PasswordPrompt::New => passwords.current.clone(),
                            // What was given for `New` is given again.
                            PasswordPrompt::Again if after_current => passwords.new.clone(),
                            PasswordPrompt::Again => passwords.current.clone(),
                        };
                        let now = Instant::now();
                        match answer {
                            Some(secret) => {
                                more.extend(client.supply_password(secret, now));
                                Ok(())
                            }
                            None => {
                                after_current = false;
                                let what = if matches!(prompt, PasswordPrompt::New) {
                                    "no new password given"
                                } else {
                                    "no password given"
                                };
                                let login = matches!(client.phase(), Phase::NeedPassword(_));
                                more.extend(client.cancel_password(now));
                                // A login failure says it all, in its own words.
                                if login {
                                    Ok(())
                                } else {
                                    writeln!(output, "{what}: use {PASSWORD_SOURCES}")
                                }
                            }
                        }
                    }
                    Effect::Show(Event::Room(event)) => {
                        writeln!(output, "{}", crate::rooms::describe(&event, client.name()))
                    }
                    Effect::Show(Event::Joined(name))
                        if client.session().has(Extension::Presence) =>
                    {
                        writeln!(output, "{name} is online")
                    }
                    Effect::Show(Event::Left(name))
                        if client.session().has(Extension::Presence) =>
                    {
                        writeln!(output, "{name} went offline")
                    }
                    Effect::Show(event) => {
                        if let Event::Account { op, reply } = &event {
                            after_current = false;
                            if *op == AccountOp::ChangePassword && *reply == AccountReply::Done {
                                passwords.current = passwords.new.take();
                            }
                        }
                        show(output, &server, &event)
                    }
                    Effect::Exit(result) => {
                        if let Some(keeper) = keeper.as_mut() {
                            if let Some(warning) = keeper.update(&client, Instant::now(), true) {
                                let _ = writeln!(output, "{warning}");
                            }
                        }
                        return result.map_err(PlainError::Login);
                    }
                    Effect::Connect | Effect::Send(_) | Effect::Disconnect => Ok(()),
                };
                match written.and_then(|()| output.flush()) {
                    Ok(()) => {}
                    Err(err) if err.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
                    Err(err) => return Err(PlainError::Output(err)),
                }
            }
            effects = more;
        }
        if let Some(keeper) = keeper.as_mut() {
            if let Some(warning) = keeper.update(&client, Instant::now(), false) {
                writeln!(output, "{warning}").map_err(PlainError::Output)?;
            }
        }
        let deadline = client.poll_timeout();
        effects = tokio::select! {
            line = input.recv(), if input_open => match line {
                Some(line) => client.handle_input(&line, Instant::now()),
                None => {
                    input_open = false;
                    client.handle_end_of_input(Instant::now())
                }
            },
            event = link.next() => net::feed(&mut client, event, Instant::now()),
            () = net::sleep_until(deadline) => client.handle_timeout(Instant::now()),
        };
    }
}

/// Writes one event as one line (the help as several).
///
/// # Errors
/// When `out` fails.
pub fn show(out: &mut impl Write, server: &str, event: &Event) -> io::Result<()> {
    match event {
        Event::NameNeeded(None) => writeln!(out, "type your name"),
        Event::NameNeeded(Some(problem)) => writeln!(out, "{problem}; type another name"),
        Event::LoggedIn { name, again: false } => {
            writeln!(out, "logged in to {server} as {name}")
        }
        Event::LoggedIn { name, again: true } => {
            writeln!(out, "reconnected to {server} as {name}")
        }
        Event::Message {
            from,
            text,
            at: Some(at),
        } if !at.live => writeln!(out, "{} <{from}> {text}", crate::history::clock(at.time)),
        Event::Message { from, text, .. } => writeln!(out, "<{from}> {text}"),
        Event::Kept { to, text, .. } => writeln!(
            out,
            "queued for {to} (offline; delivered at their next login): {text}"
        ),
        Event::History(
            note @ (HistoryNote::Expired
            | HistoryNote::Reset
            | HistoryNote::CatchUpCut { .. }
            | HistoryNote::Unavailable(_)),
        ) => writeln!(out, "{note}"),
        Event::History(_) => Ok(()),
        Event::Delivered { to, text, .. } => writeln!(out, "delivered to {to}: {text}"),
        Event::NotDelivered { to, text, why, .. } => {
            writeln!(out, "not delivered to {to} ({why}): {text}")
        }
        Event::Online(names) => {
            let names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
            writeln!(out, "online: {}", names.join(", "))
        }
        // Only seen between two `!who`s here; the answer to the second says it all.
        Event::Joined(_) | Event::Left(_) => Ok(()),
        // The final answer is what a script wants to read.
        Event::Sending { .. } => Ok(()),
        Event::Offline {
            reason, retry_in, ..
        } => writeln!(
            out,
            "{reason}; reconnecting in {}s",
            retry_in.as_secs_f32().ceil()
        ),
        Event::Opened(peer) => writeln!(out, "talking to {peer}: plain text now goes to them"),
        Event::Notice(text) => writeln!(out, "{text}"),
        Event::Help => {
            for (usage, what) in HELP {
                writeln!(out, "  {usage:<16} {what}")?;
            }
            Ok(())
        }
        Event::Account { op, reply } => writeln!(out, "{}", reply.describe(*op)),
        Event::Room(event) => writeln!(out, "{}", crate::rooms::describe(event, None)),
        // Answered by `run` from its passwords; the negotiation is not news to a script.
        Event::PasswordNeeded(_) | Event::Extensions(_) => Ok(()),
    }?;
    out.flush()
}
