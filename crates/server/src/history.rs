//! The `history` extension's service (`docs/protocol.md`, "history"): streams numbered in
//! memory, written to disk off the hot path.
//!
//! [`History`] is what the hub and the connection call. It keeps every stream's counters
//! (epoch, newest offset, newest delivered offset, whether its user's connection is live) in
//! memory behind one short-held lock, so a message is numbered without waiting for the disk.
//! Under that lock the message is handed to the writer thread through a bounded channel
//! ([`HistorySettings::queue`]); the thread writes what it finds in batches, one
//! transaction per batch, and prunes (caps and retention) with each batch and once a minute.
//! A full channel is never waited for: the message is not stored (and gets no offset), the
//! drop is counted (`tcpchat_history_dropped_total`) and logged at most once a minute.
//!
//! Ordering: a direct message's offset is assigned and its line queued on the recipient's
//! outbox under the same lock, so a user's lines arrive in offset order. A room message is
//! numbered under its room's lock, which orders its fan-out already. Lock order, outermost
//! first: a room, the streams, the hub's users, an outbox.
//!
//! Reads (pages, catch-up) go to the database through its own connection on tokio's
//! blocking pool. A catch-up first waits for the writer to have written everything numbered
//! so far ([`History::flushed`]), so what is read is exactly what was numbered.
//!
//! A cluster keeps its streams elsewhere (Redis, `docs/cluster.md`, "History"): there
//! [`History::shared`] wraps a [`SharedHistory`] from the cluster backend, which numbers room
//! messages itself and answers pages; the connection code calls the same [`History`].

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tcpchat_accounts::history::{Bounds, HistoryDb, StoredMessage, Write};
use tcpchat_accounts::StoreError;
use tcpchat_proto::Reply;
use tracing::{info, warn};

use crate::hub::DirectResult;
use crate::outbox::Outbox;

/// The history limits (`docs/protocol.md`, "history", "Limits").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistorySettings {
    /// Messages kept per direct stream (`history-direct-cap`): Ergo's `client-length`.
    pub direct_cap: u32,
    /// Messages kept per room stream (`history-room-cap`): Ergo's `channel-length`.
    pub room_cap: u32,
    /// Messages older than this are removed; zero keeps them (`history-retention`).
    pub retention: Duration,
    /// Messages waiting for the writer thread at most (`history-queue`).
    pub queue: usize,
}

impl Default for HistorySettings {
    fn default() -> Self {
        Self {
            direct_cap: 256,
            room_cap: 2048,
            retention: Duration::from_secs(7 * 24 * 3600),
            queue: 4096,
        }
    }
}

impl HistorySettings {
    /// The retention in milliseconds; `None` keeps messages until the cap removes them.
    pub fn retention_ms(self) -> Option<u64> {
        self.bounds().retention_ms
    }

    fn bounds(self) -> Bounds {
        Bounds {
            direct_cap: u64::from(self.direct_cap),
            room_cap: u64::from(self.room_cap),
            retention_ms: (!self.retention.is_zero())
                .then(|| u64::try_from(self.retention.as_millis()).unwrap_or(u64::MAX)),
        }
    }
}

/// A message's place: its offset in its stream, and when it was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub time: u64,
}

/// A stream's counters as seen at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamView {
    pub epoch: String,
    pub top: u64,
    pub delivered: u64,
}

#[derive(Debug)]
struct StreamState {
    epoch: String,
    top: u64,
    delivered: u64,
    /// The user's connection receives live lines (a direct stream whose login has caught
    /// up). False while a login catches up: messages are then numbered and stored, and the
    /// catch-up carries them.
    live: bool,
}

enum Op {
    Write(Write),
    /// Answered once everything sent before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Decides whether a user name is an account (only accounts have a direct stream).
pub type IsRegistered = Arc<dyn Fn(&str) -> bool + Send + Sync>;

struct Inner {
    streams: Mutex<HashMap<String, StreamState>>,
    tx: SyncSender<Op>,
    /// `None` on a cluster ([`History::shared`]): nothing is stored here.
    db: Option<Arc<HistoryDb>>,
    is_registered: IsRegistered,
    dropped: Counter,
    last_drop_log: Mutex<Option<Instant>>,
    epochs: AtomicU64,
}

/// A page of a stream: its counters when read, and its messages, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub view: StreamView,
    pub messages: Vec<StoredMessage>,
}

/// The future of a [`SharedHistory`] read.
pub type PageFuture<'a> = Pin<Box<dyn Future<Output = Result<Page, StoreError>> + Send + 'a>>;

/// What a login's catch-up reads of its direct stream ([`History::direct_read`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectRead {
    /// The stream's counters when read (created, with a new epoch, if it did not exist).
    pub view: StreamView,
    /// The oldest offset kept, when asked for (`limit` 0).
    pub oldest: Option<u64>,
    /// Messages after the offset asked, up to `view.top`, oldest first, at most the limit.
    pub messages: Vec<StoredMessage>,
}

/// The future of a [`SharedHistory::direct_read`].
pub type DirectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<DirectRead, StoreError>> + Send + 'a>>;

/// Streams kept by a cluster backend (Redis) rather than by this process: it numbers
/// messages where it orders them (a room's in the room's script, a user's direct ones on the
/// node holding the user), and answers pages and catch-ups (`docs/cluster.md`, "History").
pub trait SharedHistory: Send + Sync + 'static {
    /// The newest `count` messages of the stream `key` with offsets below `below` (all
    /// when `None`), oldest first, with the stream's counters (created, with a new epoch,
    /// if it does not exist).
    fn page(&self, key: &str, below: Option<u64>, count: u32) -> PageFuture<'_>;

    /// Whether `user` has a direct stream here: a login of an account on this node.
    fn tracks(&self, user: &str) -> bool {
        let _ = user;
        false
    }

    /// A login of the account `user` begins on this node (see [`History::hold`]).
    fn hold(&self, user: &str) {
        let _ = user;
    }

    /// See [`History::go_live`]; `then` gets the stream's epoch and `upto` as its top.
    fn go_live(&self, user: &str, upto: u64, then: &mut dyn FnMut(&StreamView)) -> bool {
        let _ = (user, upto, then);
        true
    }

    /// `user`'s direct stream after `after`: see [`History::direct_read`].
    fn direct_read(&self, user: &str, after: u64, limit: u32) -> DirectFuture<'_>;

    /// The account `user` is gone: its stream goes too.
    fn reset(&self, user: &str) {
        let _ = user;
    }
}

/// The history service. Cheap to clone.
#[derive(Clone)]
pub struct History {
    inner: Arc<Inner>,
    /// Set on a cluster: pages come from there, and nothing is numbered here.
    shared: Option<Arc<dyn SharedHistory>>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").finish_non_exhaustive()
    }
}

/// The key of a user's direct stream.
pub fn direct_key(user: &str) -> String {
    format!("@{user}")
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl History {
    /// Opens the history tables in `<data_dir>/tcpchat.db`, recovers every stream's counters
    /// and starts the writer thread (which ends when the last clone is dropped).
    ///
    /// # Errors
    /// The database could not be opened or read.
    pub fn open(
        data_dir: &Path,
        settings: HistorySettings,
        is_registered: IsRegistered,
    ) -> Result<Self, StoreError> {
        let db = Arc::new(HistoryDb::open(data_dir)?);
        let bounds = settings.bounds();
        // What expired while the server was down goes first.
        db.prune(bounds, now_ms())?;
        let streams = db
            .streams()?
            .into_iter()
            .map(|row| {
                (
                    row.stream,
                    StreamState {
                        epoch: row.epoch,
                        top: row.top,
                        delivered: row.delivered,
                        live: true,
                    },
                )
            })
            .collect();
        let (tx, rx) = mpsc::sync_channel(settings.queue.max(1));
        let writer_db = Arc::clone(&db);
        std::thread::Builder::new()
            .name("history-writer".into())
            .spawn(move || writer(&writer_db, &rx, bounds))
            .map_err(|source| StoreError::Io {
                what: "cannot start the history writer thread",
                path: data_dir.display().to_string(),
                source,
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                streams: Mutex::new(streams),
                tx,
                db: Some(db),
                is_registered,
                dropped: Counter::default(),
                last_drop_log: Mutex::new(None),
                epochs: AtomicU64::new(0),
            }),
            shared: None,
        })
    }

    /// History kept by a cluster backend: pages, catch-ups and the direct streams' holds
    /// are `store`'s; nothing is numbered or stored in this process.
    ///
    /// Its local parts are inert: the writer's channel has no thread behind it (a write to
    /// it fails, as to a stopped writer), and reads find nothing.
    pub fn shared(store: Arc<dyn SharedHistory>) -> Self {
        let (tx, _) = mpsc::sync_channel(1);
        Self {
            inner: Arc::new(Inner {
                streams: Mutex::new(HashMap::new()),
                tx,
                db: None,
                is_registered: Arc::new(|_| false),
                dropped: Counter::default(),
                last_drop_log: Mutex::new(None),
                epochs: AtomicU64::new(0),
            }),
            shared: Some(store),
        }
    }

    /// Whether the streams are a cluster's ([`History::shared`]).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// A page of `key`: the newest `count` messages below `before` (the newest of all
    /// when `None`), with the stream's counters.
    ///
    /// # Errors
    /// The store refused the read.
    pub async fn page(
        &self,
        key: &str,
        before: Option<u64>,
        count: u32,
    ) -> Result<Page, StoreError> {
        if let Some(shared) = &self.shared {
            return shared.page(key, before, count).await;
        }
        let view = self.view(key);
        self.flushed().await;
        let below = before.unwrap_or(u64::MAX).min(view.top.saturating_add(1));
        let messages = self.before(key, below, count).await?;
        Ok(Page { view, messages })
    }

    /// Registers `tcpchat_history_dropped_total`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "history_dropped",
            "Messages delivered but not stored because the history writer was behind",
            self.inner.dropped.clone(),
        );
    }

    /// Messages not stored because the writer's queue was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.get()
    }

    /// Whether `user` has a direct stream (is an account; on a cluster, an account logged
    /// in on this node).
    pub fn tracks(&self, user: &str) -> bool {
        match &self.shared {
            Some(shared) => shared.tracks(user),
            None => (self.inner.is_registered)(user),
        }
    }

    /// A login's read of `user`'s direct stream: its counters, the oldest offset kept when
    /// `limit` is 0, else up to `limit` messages after `after` (up to the top it read).
    ///
    /// # Errors
    /// A cluster's store is out of reach (in one process a failed read is logged and
    /// reads as nothing kept).
    pub async fn direct_read(
        &self,
        user: &str,
        after: u64,
        limit: u32,
    ) -> Result<DirectRead, StoreError> {
        if let Some(shared) = &self.shared {
            return shared.direct_read(user, after, limit).await;
        }
        let key = direct_key(user);
        let view = self.view(&key);
        let mut read = DirectRead {
            oldest: None,
            messages: Vec::new(),
            view,
        };
        if limit == 0 {
            self.flushed().await;
            read.oldest = self.oldest(&key).await.ok().flatten();
        } else if after < read.view.top {
            self.flushed().await;
            match self.after(&key, after, read.view.top, limit).await {
                Ok(messages) => read.messages = messages,
                Err(e) => {
                    warn!(error = %e, stream = %key, "history read failed during a catch-up");
                }
            }
        }
        Ok(read)
    }

    fn streams(&self) -> MutexGuard<'_, HashMap<String, StreamState>> {
        // Only map operations, a channel `try_send` and outbox memcpys happen under it.
        self.inner.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_epoch(&self) -> String {
        // Time in ms and a counter hashed with this process's random keys: distinct within
        // one run (the counter) and across runs (the keys), even within one millisecond.
        use std::hash::BuildHasher;
        let n = self.inner.epochs.fetch_add(1, Ordering::Relaxed);
        let salt = std::collections::hash_map::RandomState::new().hash_one(n) & 0xffff_ffff;
        format!("{:x}{salt:08x}", now_ms())
    }

    /// Numbers a message of `key` and hands it to the writer, under the streams lock held
    /// by the caller. `None` if the writer is behind (nothing numbered, nothing stored).
    fn append_locked(
        &self,
        streams: &mut HashMap<String, StreamState>,
        key: &str,
        sender: &str,
        body: &str,
        delivered_now: bool,
    ) -> Option<Stamp> {
        if !streams.contains_key(key) {
            let epoch = self.new_epoch();
            streams.insert(
                key.to_owned(),
                StreamState {
                    epoch,
                    top: 0,
                    delivered: 0,
                    live: true,
                },
            );
        }
        let state = streams.get_mut(key)?;
        let offset = state.top + 1;
        let time = now_ms();
        let delivered = if delivered_now {
            offset
        } else {
            state.delivered
        };
        let write = Write::Append {
            stream: key.to_owned(),
            epoch: state.epoch.clone(),
            offset,
            time,
            sender: sender.to_owned(),
            body: body.to_owned(),
            delivered,
        };
        match self.inner.tx.try_send(Op::Write(write)) {
            Ok(()) => {
                state.top = offset;
                state.delivered = delivered;
                Some(Stamp { offset, time })
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.count_drop(key);
                None
            }
        }
    }

    fn count_drop(&self, key: &str) {
        self.inner.dropped.inc();
        let mut last = self
            .inner
            .last_drop_log
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(60)) {
            *last = Some(now);
            warn!(
                stream = key,
                dropped_total = self.inner.dropped.get(),
                "history writer is behind (disk slower than the chat): message delivered but not stored"
            );
        }
    }

    /// A direct message to the account `to`: numbered, stored, and queued on its
    /// connection's outbox (found by `lookup`, under the streams lock, so offsets and queue
    /// order agree) when that connection is live. An offline account gets it kept only if
    /// `queue_if_offline` (a `history` sender: `SEND-QUEUED`).
    pub(crate) fn direct(
        &self,
        to: &str,
        from: &str,
        body: &str,
        queue_if_offline: bool,
        lookup: impl FnOnce() -> Option<Arc<Outbox>>,
    ) -> DirectResult {
        let key = direct_key(to);
        let mut streams = self.streams();
        let Some(outbox) = lookup() else {
            if queue_if_offline
                && self
                    .append_locked(&mut streams, &key, from, body, false)
                    .is_some()
            {
                return DirectResult::Queued;
            }
            return DirectResult::NoSuchUser;
        };
        let live = streams.get(&key).is_none_or(|s| s.live);
        match self.append_locked(&mut streams, &key, from, body, live) {
            Some(stamp) if live => push_direct(&outbox, Some(stamp), from, body),
            // Catching up: the catch-up carries it.
            Some(_) => DirectResult::Delivered,
            // Not stored: delivered live without an offset, whatever the catch-up does.
            None => push_direct(&outbox, None, from, body),
        }
    }

    /// A room message: numbered and stored; `None` if the writer is behind. Called under the
    /// room's lock, which orders the room's lines.
    pub(crate) fn room(&self, room: &str, from: &str, body: &str) -> Option<Stamp> {
        let mut streams = self.streams();
        self.append_locked(&mut streams, room, from, body, true)
    }

    /// The counters of `key`, creating the stream (with a new epoch) if it does not exist.
    pub fn view(&self, key: &str) -> StreamView {
        let mut streams = self.streams();
        let epoch = self.new_epoch();
        let state = streams.entry(key.to_owned()).or_insert(StreamState {
            epoch,
            top: 0,
            delivered: 0,
            live: true,
        });
        StreamView {
            epoch: state.epoch.clone(),
            top: state.top,
            delivered: state.delivered,
        }
    }

    /// A login of `user` begins: its direct stream stops taking live lines until its
    /// catch-up is done ([`History::go_live`]). Called before the login takes the name.
    pub fn hold(&self, user: &str) {
        if let Some(shared) = &self.shared {
            return shared.hold(user);
        }
        let epoch = self.new_epoch();
        let mut streams = self.streams();
        let state = streams.entry(direct_key(user)).or_insert(StreamState {
            epoch,
            top: 0,
            delivered: 0,
            live: true,
        });
        state.live = false;
    }

    /// The login's catch-up has sent everything up to `upto`: if nothing newer was numbered
    /// meanwhile, the stream turns live and `then` runs under the lock (it queues
    /// `RESUME-OK`, so no live line can come before it); otherwise `false`, and the caller
    /// catches up again.
    pub fn go_live(&self, user: &str, upto: u64, then: impl FnOnce(&StreamView)) -> bool {
        if let Some(shared) = &self.shared {
            let mut then = Some(then);
            return shared.go_live(user, upto, &mut |v| {
                if let Some(then) = then.take() {
                    then(v);
                }
            });
        }
        let key = direct_key(user);
        let mut streams = self.streams();
        let Some(state) = streams.get_mut(&key) else {
            return false;
        };
        if state.top != upto {
            return false;
        }
        state.live = true;
        if state.delivered < upto {
            state.delivered = upto;
            // Best effort: a lost update only means these are offered again next login.
            let _ = self.inner.tx.try_send(Op::Write(Write::Delivered {
                stream: key,
                offset: upto,
            }));
        }
        then(&StreamView {
            epoch: state.epoch.clone(),
            top: state.top,
            delivered: state.delivered,
        });
        true
    }

    /// The account `user` is gone: its stream, messages included.
    pub fn reset(&self, user: &str) {
        if let Some(shared) = &self.shared {
            return shared.reset(user);
        }
        let key = direct_key(user);
        let mut streams = self.streams();
        streams.remove(&key);
        // Under the lock, so it is written before anything of a new stream of that name.
        if let Err(TrySendError::Full(op)) = self.inner.tx.try_send(Op::Write(Write::Reset {
            stream: key.clone(),
        })) {
            // The writer is behind: wait for room off the runtime rather than lose it. A
            // message to a new account of the same name written meanwhile may go with it.
            warn!(stream = %key, "history writer is behind; the removed account's messages go later");
            let inner = Arc::clone(&self.inner);
            std::thread::spawn(move || {
                let _ = inner.tx.send(op);
            });
        }
    }

    /// Resolves once everything numbered before the call is written.
    pub async fn flushed(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        let tx = self.inner.tx.clone();
        // A blocking send: the queue may be full, and this waits for room, off the runtime.
        let sent = tokio::task::spawn_blocking(move || tx.send(Op::Flush(done)).is_ok()).await;
        if matches!(sent, Ok(true)) {
            let _ = wait.await;
        }
    }

    /// Messages of `key` in `(after, upto]`, oldest first, at most `limit`.
    ///
    /// # Errors
    /// The database refused the read.
    pub async fn after(
        &self,
        key: &str,
        after: u64,
        upto: u64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let Some(db) = self.inner.db.clone() else {
            return Ok(Vec::new());
        };
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || db.after(&key, after, upto, limit))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// The newest `count` messages of `key` below `before`, oldest first.
    ///
    /// # Errors
    /// The database refused the read.
    pub async fn before(
        &self,
        key: &str,
        before: u64,
        count: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let Some(db) = self.inner.db.clone() else {
            return Ok(Vec::new());
        };
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || db.before(&key, before, count))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// The oldest offset kept in `key`.
    ///
    /// # Errors
    /// The database refused the read.
    pub async fn oldest(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let Some(db) = self.inner.db.clone() else {
            return Ok(None);
        };
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || db.oldest(&key))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

/// Queues a direct message on `outbox`: with its stamp on a `history` connection.
fn push_direct(outbox: &Outbox, stamp: Option<Stamp>, from: &str, body: &str) -> DirectResult {
    let pushed = match stamp {
        Some(s) if outbox.history() => {
            outbox.push_with(|buf| Reply::encode_delivery_at(buf, s.offset, s.time, from, body))
        }
        _ => outbox.push_with(|buf| Reply::encode_delivery(buf, from, body)),
    };
    match pushed {
        Ok(()) => DirectResult::Delivered,
        Err(_) => DirectResult::NoSuchUser,
    }
}

/// Most writes per transaction.
const BATCH: usize = 1024;
/// How often the retention is applied when nothing is written.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

fn writer(db: &HistoryDb, rx: &Receiver<Op>, bounds: Bounds) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut flushes = Vec::new();
    let mut last_prune = Instant::now();
    loop {
        let first = match rx.recv_timeout(PRUNE_EVERY) {
            Ok(op) => op,
            Err(RecvTimeoutError::Timeout) => {
                if let Err(e) = db.prune(bounds, now_ms()) {
                    warn!(error = %e, "history prune failed");
                }
                last_prune = Instant::now();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut next = Some(first);
        while let Some(op) = next.take() {
            match op {
                Op::Write(w) => batch.push(w),
                Op::Flush(done) => flushes.push(done),
            }
            if batch.len() < BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            if let Err(e) = db.write(&batch, bounds, now_ms()) {
                warn!(error = %e, lost = batch.len(), "history batch not written");
            }
            batch.clear();
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            if let Err(e) = db.prune(bounds, now_ms()) {
                warn!(error = %e, "history prune failed");
            }
            last_prune = Instant::now();
        }
    }
    info!("history writer stopped");
}
