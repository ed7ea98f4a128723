//! A small reference server for the checker's own tests, with one planted defect at a time.
//!
//! With [`Defect::None`] it follows every decided rule, so the checker must pass it; with any
//! other defect it breaks exactly one rule, the way real student servers do, so the checker
//! must flag it. It speaks the `keepalive`, `presence`, `rooms`, `accounts` and `history`
//! extensions (the server side of `PING`, the presence lines, `JOIN` / `PART` / `MEMBERS` /
//! `SAY` without owners or limits, room and direct streams without caps; no server pings);
//! [`Defect::Classic`] is the same server without them, the classic server the extension
//! cases must skip. It is deliberately simple (one task per connection plus a writer, a mutex
//! around the name table) and independent of `tcpchat-server`, so a shared misreading of the
//! protocol would not cancel out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tcpchat_proto::{Command, Extension, NameError, Reply, Request, RequestError, Username};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

/// One way to get the protocol wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Defect {
    None,
    /// Not a defect: a classic server, which answers `EXT` (and every extension line) with
    /// `BAD-RQST-HDR`.
    Classic,
    /// Puts every name it was asked for in `EXT-OK`, unknown ones included.
    EchoesUnknownExtensions,
    /// Answers `PING <token>` with a bare `PONG`.
    PongWithoutToken,
    /// Leaves the user out of its own first presence list.
    PresenceListWithoutSelf,
    /// Does not echo a room message to its sender (as IRC does not), so the sender cannot
    /// know where its message fell among the others'.
    NoRoomEcho,
    /// Pages `HISTORY` newest first instead of oldest first.
    HistoryNewestFirst,
    /// Keeps the `\r` of a `\r\n` line end.
    KeepsCr,
    /// `LIST-OK a, b` instead of `LIST-OK a,b`.
    SpacesInList,
    /// `LIST-OK` leaves out the asker.
    ListWithoutAsker,
    /// Never answers `BUSY`: accepts everyone.
    NoBusy,
    /// Matches commands case-insensitively.
    CaseInsensitive,
    /// Forgets to free the name when a connection ends cleanly (FIN); a reset frees it.
    KeepsNameAfterEof,
    /// Forgets to free the name when a connection is reset (the read fails); a FIN frees it.
    KeepsNameAfterReset,
    /// Compares names without regard to case: `Alice` is taken once `alice` is online.
    NamesIgnoreCase,
    /// Finds the recipient by comparing only as many bytes as an online name has (C's
    /// `strncmp(name, to, strlen(name))`), so a message to `bobby` reaches `bob`.
    RecipientByPrefix,
    /// Delivers the messages that came in one read to one recipient sorted by their text, as
    /// a server batching them in a sorted map would (`message 10` before `message 2`).
    SortsBurst,
    /// Discards whatever came in the same read as the login line (a server that reads the
    /// login with one reader, then starts another).
    DropsRestAfterLogin,
    /// Drops every character outside the Basic Multilingual Plane (emoji) from messages.
    DropsNonBmp,
    /// `SEND` to yourself gets `BAD-DEST-USER`.
    RejectsSelfSend,
    /// Trims spaces around the message.
    TrimsMessage,
    /// Relays messages that are not UTF-8 (lossily).
    RelaysInvalidUtf8,
    /// Accepts names with commas.
    AcceptsCommaInName,
    /// No upper bound on name length.
    NoNameLengthLimit,
    /// Takes the first word after `HELLO-FROM` as the name, ignoring the rest.
    FirstWordIsName,
    /// Answers `LIST` before login.
    ListBeforeLogin,
    /// Ignores empty lines after login instead of answering `BAD-RQST-HDR`.
    IgnoresEmptyLine,
    /// A second `HELLO-FROM` renames the connection.
    SecondHelloRenames,
    /// Treats what each read returns as whole lines: no buffering of a partial line.
    LinePerRead,
    /// No line limit: holds and relays a line of any length.
    NoLineLimit,
    /// Waits for a slow reader's queue instead of dropping the reader.
    BlocksOnSlowReader,
    /// Never drops a reader: its queue grows without bound.
    UnboundedQueue,
    /// `SEND-OK` for a recipient nobody uses.
    SendOkToUnknownUser,
    /// Relays `SEND <user> ` with an empty message.
    RelaysEmptyMessage,
    /// `SEND` with no user gets `BAD-RQST-HDR`.
    MissingUserIsHeaderError,
    /// Closes the connection after `IN-USE`.
    ClosesOnInUse,
    /// Closes the connection after an invalid name.
    ClosesOnBadName,
    /// Accepts an empty name.
    AcceptsEmptyName,
    /// Accepts names with control characters.
    AcceptsControlInName,
    /// Accepts names that are not UTF-8 (decoding them lossily).
    AcceptsInvalidUtf8Name,
    /// Matches commands by prefix: `LISTS` is taken for `LIST`.
    PrefixCommands,
    /// Decodes messages as Latin-1 and relays them re-encoded, mangling non-ASCII text.
    Latin1Messages,
    /// Serves at most 40 clients, whatever it is told.
    ClientLimit40,
    /// Accounts: `LOGIN` while the name is online gets `IN-USE` instead of taking it over.
    NoTakeover,
    /// Accounts: `LOGIN` takes any password.
    AcceptsAnyPassword,
    /// Accounts: a registered name that nobody holds is free to a classic `HELLO-FROM`.
    RegisteredNameFreeForClassic,
    /// Accounts: a registered name is `IN-USE`, not `NAME-REGISTERED`, to an accounts client.
    InUseForAccounts,
    /// Accounts: wrong passwords are never throttled.
    NeverThrottles,
    /// History: ignores the position a `RESUME` gives and sends only what was never
    /// delivered, so what a dropped connection had queued is lost.
    ResumeIgnored,
    /// History: keeps a classic sender's message to an offline account (while answering
    /// `BAD-DEST-USER`) and delivers it at the next login.
    QueuesForClassicSender,
}

/// The hard limit of [`Defect::ClientLimit40`].
const DEFECT_CLIENT_LIMIT: usize = 40;

/// Longest line the reference server takes, like the real one's default.
const MAX_LINE_BYTES: usize = 4096;
/// Lines queued for a connection before it counts as stuck.
const OUTBOX_LINES: usize = 256;

/// Wrong passwords one name may get before `THROTTLED` (the protocol's default burst; the
/// reference server never refills it).
const WRONG_PASSWORDS: u32 = 5;

struct Peer {
    /// Which connection holds the name, so a session taken over frees nothing when it ends.
    id: u64,
    tx: mpsc::Sender<Vec<u8>>,
    /// Negotiated `presence`: told of every login and departure.
    presence: bool,
    /// Negotiated `history`: direct messages arrive as `DELIVERY-AT`.
    history: bool,
    unbounded: Option<mpsc::UnboundedSender<Vec<u8>>>,
    kill: CancellationToken,
}

struct Shared {
    defect: Defect,
    users: Mutex<HashMap<String, Peer>>,
    slots: Arc<Semaphore>,
    /// The `accounts` extension: name → (password, wrong passwords so far).
    accounts: Mutex<HashMap<String, (String, u32)>>,
    next_id: std::sync::atomic::AtomicU64,
    /// Room → its members in join order, with their queues; room lines are queued under
    /// this lock, so every member sees one order.
    rooms: Mutex<HashMap<String, Vec<RoomMember>>>,
    /// The `history` extension: room → its messages (sender, body); the offset is the
    /// place in the vector plus one.
    history: Mutex<HashMap<String, Vec<(String, String)>>>,
    /// The `history` extension: account → its direct stream. Locked after `users`.
    direct: Mutex<HashMap<String, Direct>>,
    /// Epochs handed out so far (each stream gets a new one when it is created).
    epochs: std::sync::atomic::AtomicU64,
}

/// An account's direct stream: the messages sent to it (the offset is the place plus one),
/// and how far they reached a connection of the account.
struct Direct {
    epoch: String,
    /// Sender, message, time.
    messages: Vec<(String, String, u64)>,
    delivered: u64,
}

impl Direct {
    fn top(&self) -> u64 {
        self.messages.len() as u64
    }

    /// Appends a message and encodes it for a connection (`DELIVERY-AT` where `at`).
    fn push(&mut self, from: &str, body: &str, at: bool) -> Vec<u8> {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.messages.push((from.to_owned(), body.to_owned(), time));
        let mut line = Vec::new();
        self.encode(&mut line, self.top(), at);
        line
    }

    fn encode(&self, out: &mut Vec<u8>, offset: u64, at: bool) {
        let Some((from, body, time)) = usize::try_from(offset - 1)
            .ok()
            .and_then(|i| self.messages.get(i))
        else {
            return;
        };
        if at {
            Reply::encode_delivery_at(out, offset, *time, from, body);
        } else {
            Reply::encode_delivery(out, from, body);
        }
    }
}

/// A room member: its name, its queue, and whether it negotiated `history`.
type RoomMember = (String, mpsc::Sender<Vec<u8>>, bool);

/// A running reference server; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts a reference server with `defect` and room for `capacity` clients.
pub async fn start(defect: Defect, capacity: usize) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");
    let shared = Arc::new(Shared {
        defect,
        users: Mutex::new(HashMap::new()),
        accounts: Mutex::new(HashMap::new()),
        next_id: std::sync::atomic::AtomicU64::new(0),
        rooms: Mutex::new(HashMap::new()),
        history: Mutex::new(HashMap::new()),
        direct: Mutex::new(HashMap::new()),
        epochs: std::sync::atomic::AtomicU64::new(0),
        slots: Arc::new(Semaphore::new(if defect == Defect::ClientLimit40 {
            capacity.min(DEFECT_CLIENT_LIMIT)
        } else {
            capacity
        })),
    });
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = stopped.cancelled() => return,
                a = listener.accept() => a,
            };
            let Ok((stream, _)) = accepted else { continue };
            let permit = if defect == Defect::NoBusy {
                None
            } else {
                match Arc::clone(&shared.slots).try_acquire_owned() {
                    Ok(p) => Some(p),
                    Err(_) => {
                        tokio::spawn(busy(stream));
                        continue;
                    }
                }
            };
            let shared = Arc::clone(&shared);
            let stopped = stopped.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = stopped.cancelled() => {}
                    () = serve(stream, &shared) => {}
                }
                drop(permit);
            });
        }
    });
    Server { addr, stop }
}

async fn busy(mut stream: TcpStream) {
    let _ = stream.write_all(&Reply::Busy.to_line()).await;
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 512];
    let drain = async { while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

async fn serve(stream: TcpStream, shared: &Shared) {
    // Replies go out one write each; without this, Nagle holds each second one for an ACK.
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let kill = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(OUTBOX_LINES);
    let (utx, mut urx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer_kill = kill.clone();
    let writer = tokio::spawn(async move {
        loop {
            let line = tokio::select! {
                () = writer_kill.cancelled() => return,
                l = rx.recv() => l,
                l = urx.recv() => l,
            };
            let Some(line) = line else { return };
            let done = tokio::select! {
                () = writer_kill.cancelled() => return,
                r = wr.write_all(&line) => r,
            };
            if done.is_err() {
                writer_kill.cancel();
                return;
            }
        }
    });

    let mut conn = Conn {
        shared,
        id: shared
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        accounts: None,
        name: None,
        tx: tx.clone(),
        utx: utx.clone(),
        kill: kill.clone(),
        burst: Vec::new(),
        negotiated: false,
        keepalive: false,
        presence: false,
        rooms: false,
        history: false,
        resume: None,
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut discarding = false;
    let mut chunk = vec![0u8; 4096];
    let mut ending = Ending::Killed;
    'read: loop {
        let n = tokio::select! {
            () = kill.cancelled() => break,
            r = rd.read(&mut chunk) => match r {
                Ok(0) => {
                    ending = Ending::Eof;
                    break;
                }
                Err(_) => {
                    ending = Ending::Reset;
                    break;
                }
                Ok(n) => n,
            },
        };
        if shared.defect == Defect::LinePerRead {
            let mut data = &chunk[..n];
            if data.last() == Some(&b'\n') {
                data = &data[..data.len() - 1];
            }
            for line in data.split(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line).to_vec();
                if !conn.handle(&line).await {
                    break 'read;
                }
            }
            continue;
        }
        let mut data = &chunk[..n];
        while !data.is_empty() {
            if discarding {
                match data.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        data = &data[i + 1..];
                        discarding = false;
                    }
                    None => data = &[],
                }
                continue;
            }
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    buf.extend_from_slice(&data[..i]);
                    data = &data[i + 1..];
                    let mut line = std::mem::take(&mut buf);
                    if shared.defect != Defect::KeepsCr && line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    if line.len() > MAX_LINE_BYTES && shared.defect != Defect::NoLineLimit {
                        conn.reply(&Reply::BadRqstBody);
                        continue;
                    }
                    let was_in = conn.name.is_some();
                    if !conn.handle(&line).await {
                        break 'read;
                    }
                    if shared.defect == Defect::DropsRestAfterLogin
                        && !was_in
                        && conn.name.is_some()
                    {
                        data = &[];
                    }
                }
                None => {
                    buf.extend_from_slice(data);
                    data = &[];
                    if buf.len() > MAX_LINE_BYTES && shared.defect != Defect::NoLineLimit {
                        buf.clear();
                        discarding = true;
                        conn.reply(&Reply::BadRqstBody);
                    }
                }
            }
        }
        conn.flush_burst();
    }
    if let Some(name) = conn.name.take() {
        let keep = matches!(
            (shared.defect, ending),
            (Defect::KeepsNameAfterEof, Ending::Eof) | (Defect::KeepsNameAfterReset, Ending::Reset)
        );
        let mut rooms = lock(&shared.rooms);
        for (room, members) in rooms.iter_mut() {
            if members.iter().any(|(n, ..)| *n == name) {
                let (Ok(r), Ok(n)) = (tcpchat_proto::RoomName::parse(room), Username::parse(&name))
                else {
                    continue;
                };
                let line = Reply::Parted { room: r, name: n }.to_line();
                members.retain(|(n, ..)| *n != name);
                for (_, tx, _) in members.iter() {
                    let _ = tx.try_send(line.clone());
                }
            }
        }
        rooms.retain(|_, members| !members.is_empty());
        drop(rooms);
        let mut users = lock(&shared.users);
        // A session taken over (accounts) no longer holds its name.
        if !keep && users.get(&name).is_some_and(|p| p.id == conn.id) {
            users.remove(&name);
            announce(&users, &name, false);
        }
    }
    // Let queued replies go out, then stop the writer.
    drop(conn);
    drop(tx);
    drop(utx);
    let _ = tokio::time::timeout(Duration::from_millis(200), writer).await;
    kill.cancel();
}

/// How a connection's read loop ended.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// The client closed cleanly (FIN): the read returned 0.
    Eof,
    /// The read failed: a reset, as when the client is killed.
    Reset,
    /// The server ended it (shutdown, a dropped slow reader, a close after a reply).
    Killed,
}

/// Queues `ONLINE <name>` / `OFFLINE <name>` for every presence peer.
fn announce(users: &HashMap<String, Peer>, name: &str, online: bool) {
    let mut line = Vec::new();
    Reply::encode_presence(&mut line, name, online);
    for peer in users.values().filter(|p| p.presence) {
        let _ = peer.tx.try_send(line.clone());
    }
}

impl Shared {
    /// A new direct stream for the account `name`, in a new epoch.
    fn new_stream(&self, name: &str) {
        let n = self
            .epochs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&self.direct).insert(
            name.to_owned(),
            Direct {
                epoch: format!("e{n}"),
                messages: Vec::new(),
                delivered: 0,
            },
        );
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Conn<'a> {
    shared: &'a Shared,
    id: u64,
    /// `None` until `EXT`; then whether `accounts` was negotiated.
    accounts: Option<bool>,
    name: Option<String>,
    tx: mpsc::Sender<Vec<u8>>,
    utx: mpsc::UnboundedSender<Vec<u8>>,
    kill: CancellationToken,
    /// [`Defect::SortsBurst`]: deliveries held until the end of the read, with the
    /// recipient's name and queue.
    burst: Vec<(String, Vec<u8>, mpsc::Sender<Vec<u8>>)>,
    /// `EXT` was answered (it is allowed once), and what it chose.
    negotiated: bool,
    keepalive: bool,
    presence: bool,
    rooms: bool,
    history: bool,
    /// The position a `RESUME` gave, for the login's catch-up.
    resume: Option<(String, u64)>,
}

impl Conn<'_> {
    /// Hands out the deliveries held back by [`Defect::SortsBurst`], sorted.
    fn flush_burst(&mut self) {
        let mut burst = std::mem::take(&mut self.burst);
        burst.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        for (_, line, tx) in burst {
            let _ = tx.try_send(line);
        }
    }

    fn reply(&self, reply: &Reply<'_>) {
        self.raw(reply.to_line());
    }

    fn raw(&self, line: Vec<u8>) {
        // Our own replies: if even these do not fit, the client is not reading.
        if self.tx.try_send(line).is_err() {
            self.kill.cancel();
        }
    }

    /// Handles one line; false to close the connection.
    async fn handle(&mut self, line: &[u8]) -> bool {
        let d = self.shared.defect;
        let mut owned;
        let mut line = line;
        if d == Defect::CaseInsensitive {
            let end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
            owned = line.to_vec();
            owned[..end].make_ascii_uppercase();
            line = &owned;
        }
        if d == Defect::FirstWordIsName && line.starts_with(b"HELLO-FROM ") {
            let end = line[11..]
                .iter()
                .position(|&b| b == b' ' || b == b'\t')
                .map_or(line.len(), |i| 11 + i);
            owned = line[..end].to_vec();
            line = &owned;
        }
        if d != Defect::Classic {
            if let Some(open) = self.extension(line) {
                return open;
            }
        }
        // Understood here: the classic commands, and the accounts commands where negotiated.
        // `EXT` and keepalive were handled just above where served; any other extension line
        // (on the classic reference server: all of them) is an unknown command.
        let negotiated = self.accounts == Some(true);
        let known = |c: Command| match c {
            Command::HelloFrom | Command::List | Command::Send => true,
            Command::Login | Command::Register | Command::Password | Command::Unregister => {
                negotiated
            }
            // Rooms lines were answered by `extension` where negotiated.
            Command::Ext
            | Command::Ping
            | Command::Pong
            | Command::Who
            | Command::Join
            | Command::Part
            | Command::Rooms
            | Command::Members
            | Command::Say
            | Command::Topic
            | Command::Kick
            | Command::History
            | Command::Resume => false,
        };
        let parsed = match Request::parse(line) {
            Ok(r) if !known(r.command()) => Err(RequestError::UnknownCommand),
            Err(e) if !e.command().is_none_or(known) => Err(RequestError::UnknownCommand),
            other => other,
        };
        let Some(me) = self.name.clone() else {
            return self.before_login(line, parsed);
        };
        match parsed {
            Ok(Request::List) => self.list(&me),
            Ok(Request::Register(pw)) => {
                let mut accounts = lock(&self.shared.accounts);
                let reply = if accounts.contains_key(&me) {
                    Reply::NameRegistered
                } else {
                    accounts.insert(me.clone(), (pw.expose().to_string(), 0));
                    self.shared.new_stream(&me);
                    Reply::RegisterOk
                };
                drop(accounts);
                self.reply(&reply);
            }
            Ok(Request::Unregister(pw)) => {
                let mut accounts = lock(&self.shared.accounts);
                let reply = match accounts.get(&me) {
                    None => Reply::NoAccount,
                    Some((right, _)) if right != pw.expose() => Reply::BadPassword,
                    Some(_) => {
                        accounts.remove(&me);
                        lock(&self.shared.direct).remove(&me);
                        Reply::UnregisterOk
                    }
                };
                drop(accounts);
                self.reply(&reply);
            }
            Ok(Request::ChangePassword { old, new }) => {
                let mut accounts = lock(&self.shared.accounts);
                let reply = match accounts.get_mut(&me) {
                    None => Reply::NoAccount,
                    Some((right, _)) if right != old.expose() => Reply::BadPassword,
                    Some(account) => {
                        account.0 = new.expose().to_string();
                        Reply::PasswordOk
                    }
                };
                drop(accounts);
                self.reply(&reply);
            }
            Ok(Request::HelloFrom(new)) if d == Defect::SecondHelloRenames => {
                let new = new.as_str().to_string();
                let mut users = lock(&self.shared.users);
                if let Some(peer) = users.remove(&me) {
                    users.insert(new.clone(), peer);
                }
                drop(users);
                self.raw(with_arg(&Reply::Hello(placeholder()), &new));
                self.name = Some(new);
            }
            Ok(Request::Send { to, body }) => {
                let body = match d {
                    Defect::TrimsMessage => body.trim().to_string(),
                    Defect::Latin1Messages => latin1(body.as_bytes()),
                    Defect::DropsNonBmp => body.chars().filter(|&c| c <= '\u{ffff}').collect(),
                    _ => body.to_string(),
                };
                self.send(&me, to.as_str(), &body).await;
            }
            Err(RequestError::NotUtf8) if d == Defect::Latin1Messages => {
                let (to, body) = split_send(line);
                self.send(&me, &String::from_utf8_lossy(to), &latin1(body))
                    .await;
            }
            Err(RequestError::UnknownCommand)
                if d == Defect::PrefixCommands && line.starts_with(b"LIST") =>
            {
                self.list(&me);
            }
            Err(RequestError::NotUtf8) if d == Defect::RelaysInvalidUtf8 => {
                let text = String::from_utf8_lossy(line).into_owned();
                let mut parts = text.splitn(3, ' ');
                let (_, to, body) = (parts.next(), parts.next(), parts.next());
                match (to, body) {
                    (Some(to), Some(body)) => self.send(&me, to, body).await,
                    _ => self.reply(&Reply::BadRqstBody),
                }
            }
            Err(RequestError::BadSend) if d == Defect::RelaysEmptyMessage => {
                let text = String::from_utf8_lossy(line).into_owned();
                match text.strip_prefix("SEND ").and_then(|r| r.strip_suffix(' ')) {
                    Some(to) => self.send(&me, to, "").await,
                    _ => self.reply(&Reply::BadRqstBody),
                }
            }
            Err(RequestError::BadSend)
                if d == Defect::MissingUserIsHeaderError
                    && (line == b"SEND" || line == b"SEND ") =>
            {
                self.reply(&Reply::BadRqstHdr);
            }
            // Extension requests were turned into unknown commands above.
            Ok(_) | Err(RequestError::UnknownCommand) => {
                if !(line.is_empty() && d == Defect::IgnoresEmptyLine) {
                    self.reply(&Reply::BadRqstHdr);
                }
            }
            Err(_) => self.reply(&Reply::BadRqstBody),
        }
        true
    }

    /// The extension lines this server speaks, where they are allowed; `None` for anything
    /// else (handled as on a classic server).
    fn extension(&mut self, line: &[u8]) -> Option<bool> {
        let d = self.shared.defect;
        match Request::parse(line) {
            Ok(Request::Ext(asked)) if self.name.is_none() && !self.negotiated => {
                self.negotiated = true;
                let mut names: Vec<&str> = Vec::new();
                for name in asked {
                    let known = Extension::ALL.iter().any(|e| e.name() == name);
                    if (known || d == Defect::EchoesUnknownExtensions) && !names.contains(&name) {
                        names.push(name);
                    }
                }
                self.keepalive = names.contains(&Extension::Keepalive.name());
                self.presence = names.contains(&Extension::Presence.name());
                self.accounts = Some(names.contains(&Extension::Accounts.name()));
                self.rooms = names.contains(&Extension::Rooms.name());
                self.history = names.contains(&Extension::History.name());
                self.reply(&Reply::ExtOk(names));
                Some(true)
            }
            Ok(Request::Ping(token)) if self.keepalive => {
                let token = if d == Defect::PongWithoutToken {
                    None
                } else {
                    token
                };
                self.reply(&Reply::Pong(token));
                Some(true)
            }
            Ok(Request::Pong(_)) if self.keepalive => Some(true),
            Ok(Request::Resume { epoch, offset })
                if self.history && self.name.is_none() && self.resume.is_none() =>
            {
                self.resume = Some((epoch.to_owned(), offset));
                Some(true)
            }
            Ok(Request::Join(room)) if self.rooms => {
                let me = self.name.clone()?;
                let mut rooms = lock(&self.shared.rooms);
                let members = rooms.entry(room.as_str().to_owned()).or_default();
                if !members.iter().any(|(n, ..)| *n == me) {
                    members.push((me.clone(), self.tx.clone(), self.history));
                }
                let line = Reply::Joined {
                    room,
                    name: Username::parse(&me).ok()?,
                }
                .to_line();
                for (_, tx, _) in members.iter() {
                    let _ = tx.try_send(line.clone());
                }
                Some(true)
            }
            Ok(Request::Part(room)) if self.rooms => {
                let me = self.name.clone()?;
                let mut rooms = lock(&self.shared.rooms);
                let members = rooms.entry(room.as_str().to_owned()).or_default();
                if !members.iter().any(|(n, ..)| *n == me) {
                    self.reply(&Reply::NotMember);
                    return Some(true);
                }
                let line = Reply::Parted {
                    room,
                    name: Username::parse(&me).ok()?,
                }
                .to_line();
                for (_, tx, _) in members.iter() {
                    let _ = tx.try_send(line.clone());
                }
                members.retain(|(n, ..)| *n != me);
                Some(true)
            }
            Ok(Request::Members(room)) if self.rooms && self.name.is_some() => {
                let rooms = lock(&self.shared.rooms);
                let names = rooms
                    .get(room.as_str())
                    .into_iter()
                    .flatten()
                    .filter_map(|(n, ..)| Username::parse(n).ok())
                    .collect();
                self.reply(&Reply::MembersOk { room, names });
                Some(true)
            }
            Ok(Request::Say { room, body }) if self.rooms => {
                let me = self.name.clone()?;
                let rooms = lock(&self.shared.rooms);
                let members = rooms.get(room.as_str()).map_or(&[][..], Vec::as_slice);
                if !members.iter().any(|(n, ..)| *n == me) {
                    self.reply(&Reply::NotMember);
                    return Some(true);
                }
                let mut line = Vec::new();
                Reply::encode_said(&mut line, room.as_str(), &me, body);
                let mut kept = lock(&self.shared.history);
                let stream = kept.entry(room.as_str().to_owned()).or_default();
                stream.push((me.clone(), body.to_owned()));
                let offset = stream.len() as u64;
                let mut extended = Vec::new();
                Reply::encode_said_at(&mut extended, room.as_str(), offset, 0, &me, body);
                for (name, tx, history) in members {
                    if d == Defect::NoRoomEcho && *name == me {
                        continue;
                    }
                    let _ = tx.try_send(if *history {
                        extended.clone()
                    } else {
                        line.clone()
                    });
                }
                Some(true)
            }
            Ok(Request::History {
                stream: tcpchat_proto::Stream::Room(room),
                before,
                count,
            }) if self.history && self.name.is_some() => {
                let me = self.name.clone()?;
                let member = lock(&self.shared.rooms)
                    .get(room.as_str())
                    .is_some_and(|m| m.iter().any(|(n, ..)| *n == me));
                if !member {
                    self.reply(&Reply::NoHistory);
                    return Some(true);
                }
                let kept = lock(&self.shared.history);
                let all = kept.get(room.as_str()).map_or(&[][..], Vec::as_slice);
                let top = all.len() as u64;
                let below = before.unwrap_or(u64::MAX).min(top + 1);
                let mut page: Vec<(u64, &(String, String))> =
                    (1..).zip(all).filter(|(o, _)| *o < below).collect();
                let skip = page.len().saturating_sub(count as usize);
                page.drain(..skip);
                if d == Defect::HistoryNewestFirst {
                    page.reverse();
                }
                let mut out = Vec::new();
                Reply::HistoryOk {
                    stream: tcpchat_proto::Stream::Room(room.clone()),
                    epoch: "e1",
                    top,
                    n: page.len() as u32,
                }
                .encode(&mut out);
                for (offset, (from, body)) in page {
                    Reply::encode_said_at(&mut out, room.as_str(), offset, 0, from, body);
                }
                let _ = self.tx.try_send(out);
                Some(true)
            }
            Ok(Request::History { .. }) if self.history && self.name.is_some() => {
                self.reply(&Reply::NoHistory);
                Some(true)
            }
            _ => None,
        }
    }

    fn before_login(&mut self, line: &[u8], parsed: Result<Request<'_>, RequestError>) -> bool {
        let d = self.shared.defect;
        match parsed {
            Ok(Request::HelloFrom(name)) => {
                let name = name.as_str().to_string();
                let registered = lock(&self.shared.accounts).contains_key(&name);
                let extended = self.accounts == Some(true);
                match (registered, extended) {
                    (true, true) if d == Defect::InUseForAccounts => {
                        self.reply(&Reply::InUse);
                        true
                    }
                    (true, true) => {
                        self.reply(&Reply::NameRegistered);
                        true
                    }
                    (true, false) if d != Defect::RegisteredNameFreeForClassic => {
                        self.reply(&Reply::InUse);
                        true
                    }
                    _ => self.login(name),
                }
            }
            Ok(Request::Login { name, password }) => {
                let name = name.as_str().to_string();
                let reply = {
                    let mut accounts = lock(&self.shared.accounts);
                    match accounts.get_mut(&name) {
                        None => Some(Reply::NoAccount),
                        Some((_, wrong))
                            if *wrong >= WRONG_PASSWORDS && d != Defect::NeverThrottles =>
                        {
                            Some(Reply::Throttled(30))
                        }
                        Some((right, wrong))
                            if right != password.expose() && d != Defect::AcceptsAnyPassword =>
                        {
                            *wrong += 1;
                            Some(Reply::BadPassword)
                        }
                        Some(_) => None,
                    }
                };
                if let Some(reply) = reply {
                    self.reply(&reply);
                    return true;
                }
                // The right password: an earlier session of the name is closed.
                let earlier = lock(&self.shared.users).remove(&name);
                if let Some(earlier) = earlier {
                    if d == Defect::NoTakeover {
                        lock(&self.shared.users).insert(name, earlier);
                        self.reply(&Reply::InUse);
                        return true;
                    }
                    earlier.kill.cancel();
                }
                self.login_with(name, true)
            }
            Err(RequestError::BadName(e))
                if matches!(
                    (d, &e),
                    (Defect::AcceptsCommaInName, NameError::Comma)
                        | (Defect::NoNameLengthLimit, NameError::TooLong { .. })
                        | (Defect::AcceptsEmptyName, NameError::Empty)
                        | (Defect::AcceptsControlInName, NameError::Control)
                        | (Defect::AcceptsInvalidUtf8Name, NameError::NotUtf8)
                ) =>
            {
                let name = line.get(b"HELLO-FROM ".len()..).unwrap_or_default();
                self.login(String::from_utf8_lossy(name).into_owned())
            }
            Err(RequestError::BadName(_)) => {
                self.reply(&Reply::BadRqstBody);
                d != Defect::ClosesOnBadName
            }
            Ok(Request::List) if d == Defect::ListBeforeLogin => {
                self.list_names(None);
                true
            }
            _ => {
                self.reply(&Reply::BadRqstHdr);
                true
            }
        }
    }

    fn login(&mut self, name: String) -> bool {
        self.login_with(name, false)
    }

    /// Logs in as `name`; `catch_up` (a `LOGIN` to an account) queues what its direct stream
    /// holds for it right after `HELLO`, under the lock a delivery takes, so no message falls
    /// between the catch-up and the live lines.
    fn login_with(&mut self, name: String, catch_up: bool) -> bool {
        let mut users = lock(&self.shared.users);
        let taken = if self.shared.defect == Defect::NamesIgnoreCase {
            users
                .keys()
                .any(|n| n.to_lowercase() == name.to_lowercase())
        } else {
            users.contains_key(&name)
        };
        if taken {
            drop(users);
            self.reply(&Reply::InUse);
            return self.shared.defect != Defect::ClosesOnInUse;
        }
        announce(&users, &name, true);
        users.insert(
            name.clone(),
            Peer {
                id: self.id,
                tx: self.tx.clone(),
                presence: self.presence,
                history: self.history,
                unbounded: (self.shared.defect == Defect::UnboundedQueue).then(|| self.utx.clone()),
                kill: self.kill.clone(),
            },
        );
        // Under the lock, so no login or departure falls between the list and the events.
        self.raw(with_arg(&Reply::Hello(placeholder()), &name));
        if self.presence {
            let mut names: Vec<&str> = users
                .keys()
                .map(String::as_str)
                .filter(|n| self.shared.defect != Defect::PresenceListWithoutSelf || *n != name)
                .collect();
            names.sort_unstable();
            let mut lines = Vec::new();
            Reply::encode_online_list(&mut lines, names);
            self.raw(lines);
        }
        if catch_up {
            self.catch_up(&name);
        }
        drop(users);
        self.name = Some(name);
        true
    }

    /// The login's catch-up of the direct stream (`docs/protocol.md`, "Resume").
    fn catch_up(&mut self, name: &str) {
        let d = self.shared.defect;
        let mut direct = lock(&self.shared.direct);
        let Some(stream) = direct.get_mut(name) else {
            return;
        };
        let top = stream.top();
        let mut out = Vec::new();
        let mut from = stream.delivered + 1;
        if self.history {
            match self.resume.take() {
                // The defect sends only what was never delivered, as without a position.
                Some((epoch, _)) if epoch == stream.epoch && d == Defect::ResumeIgnored => {}
                Some((epoch, offset)) if epoch == stream.epoch && offset <= top => {
                    from = offset + 1;
                }
                Some(_) => Reply::ResumeEpoch {
                    epoch: &stream.epoch,
                    top,
                }
                .encode(&mut out),
                None => {}
            }
        }
        for offset in from..=top {
            stream.encode(&mut out, offset, self.history);
        }
        if self.history {
            Reply::ResumeOk {
                epoch: &stream.epoch,
                top,
            }
            .encode(&mut out);
        }
        stream.delivered = top;
        drop(direct);
        if !out.is_empty() {
            self.raw(out);
        }
    }

    fn list(&self, me: &str) {
        self.list_names(Some(me));
    }

    fn list_names(&self, me: Option<&str>) {
        let mut names: Vec<String> = lock(&self.shared.users).keys().cloned().collect();
        if self.shared.defect == Defect::ListWithoutAsker {
            names.retain(|n| Some(n.as_str()) != me);
        }
        names.sort();
        let sep = if self.shared.defect == Defect::SpacesInList {
            ", "
        } else {
            ","
        };
        self.raw(with_arg(&Reply::ListOk(Vec::new()), &names.join(sep)));
    }

    async fn send(&mut self, me: &str, to: &str, body: &str) {
        let d = self.shared.defect;
        if d == Defect::RejectsSelfSend && to == me {
            self.reply(&Reply::BadDestUser);
            return;
        }
        let mut line = Vec::new();
        Reply::encode_delivery(&mut line, me, body);
        let target = {
            let users = lock(&self.shared.users);
            // An account's direct stream keeps what reaches it; an offline account's, only
            // what a `history` sender sent (the classic sender is told it did not go).
            let mut direct = lock(&self.shared.direct);
            if let Some(stream) = direct.get_mut(to) {
                match users.get(to) {
                    Some(peer) => {
                        line = stream.push(me, body, peer.history);
                        stream.delivered = stream.top();
                    }
                    None if self.history || d == Defect::QueuesForClassicSender => {
                        stream.push(me, body, false);
                        drop(direct);
                        drop(users);
                        self.reply(&if self.history {
                            Reply::SendQueued
                        } else {
                            Reply::BadDestUser
                        });
                        return;
                    }
                    None => {}
                }
            }
            drop(direct);
            let to = if d == Defect::RecipientByPrefix {
                users
                    .keys()
                    .filter(|n| to.starts_with(n.as_str()))
                    .min()
                    .map_or(to, String::as_str)
            } else {
                to
            };
            users.get(to).map(|p| {
                (
                    to.to_string(),
                    p.tx.clone(),
                    p.unbounded.clone(),
                    p.kill.clone(),
                )
            })
        };
        let Some((to, tx, unbounded, kill)) = target else {
            let reply = if d == Defect::SendOkToUnknownUser {
                Reply::SendOk
            } else {
                Reply::BadDestUser
            };
            self.reply(&reply);
            return;
        };
        let held = self.burst.iter().filter(|(name, ..)| *name == to).count();
        // Held lines still count against the recipient's queue, so a stuck reader is dropped
        // as without the defect.
        if d == Defect::SortsBurst && tx.capacity() > held {
            self.burst.push((to, line, tx));
        } else if let Some(utx) = unbounded {
            let _ = utx.send(line);
        } else if d == Defect::BlocksOnSlowReader {
            let _ = tx.send(line).await;
        } else if tx.try_send(line).is_err() {
            // Its queue is full: drop that client, never wait for it.
            kill.cancel();
            lock(&self.shared.users).remove(&to);
            self.reply(&Reply::BadDestUser);
            return;
        }
        self.reply(&Reply::SendOk);
    }
}

/// Each byte as the character with that code point, as a Latin-1 decoder would.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().copied().map(char::from).collect()
}

/// The recipient and message of a `SEND` line, as bytes.
fn split_send(line: &[u8]) -> (&[u8], &[u8]) {
    let rest = line.get(b"SEND ".len()..).unwrap_or_default();
    match rest.iter().position(|&b| b == b' ') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[]),
    }
}

/// A valid name to build a reply around; [`with_arg`] replaces it.
fn placeholder() -> Username {
    Username::parse("x").expect("literal name is valid")
}

/// `reply` (whose argument is [`placeholder`] or empty) with `arg` as its argument instead, so
/// a defective server can send names the protocol crate would refuse to build.
fn with_arg(reply: &Reply<'_>, arg: &str) -> Vec<u8> {
    let line = reply.to_line();
    let word_end = line
        .iter()
        .position(|&b| b == b' ')
        .expect("the reply has an argument");
    let mut out = line[..=word_end].to_vec();
    out.extend_from_slice(arg.as_bytes());
    out.push(b'\n');
    out
}
