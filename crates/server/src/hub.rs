//! Presence and routing: who is logged in, and how a line reaches a name.
//!
//! Connection handling talks to presence only through [`Hub`]: log a name in (getting a lease
//! that frees it when dropped), list names, deliver a message. [`MemoryHub`] keeps everything
//! in this process. A multi-node backend (Redis) implements the same trait in its own crate;
//! nothing in the connection code knows which one it runs on.
//!
//! `LIST` never costs `SEND` anything: the map that every delivery locks is never walked.
//! Names are also kept, sorted, in a second structure behind its own lock (updated on login
//! and logout, O(log n)), and the `LIST-OK` line built from it is cached as a [`Roster`]
//! until presence changes, so a thousand users asking `LIST` at once share one snapshot.
//!
//! Presence events (the `presence` extension, [`Hub::watch`]) live beside those sorted names,
//! under the same lock: a login or logout changes the set and queues its one line (`ONLINE
//! <name>` / `OFFLINE <name>`, encoded once) on every watcher's outbox in one critical
//! section, and a new watcher's first list is taken and queued in another, so every watcher
//! sees each change exactly once, after its list. With no watcher the cost is one
//! `is_empty` check under a lock the login already holds.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tcpchat_proto::{Reply, Username};

use crate::history::History;
use crate::outbox::Outbox;
use crate::rooms::{Asker, RoomError, RoomLimits, RoomRequest, Rooms};

/// Why a login was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// Someone else has the name (`IN-USE`).
    #[error("name in use")]
    InUse,
    /// The hub cannot check uniqueness right now (a cluster backend lost its store); the
    /// client is told `BUSY` and may come back later.
    #[error("presence service unavailable")]
    Unavailable,
    /// The name is an account: only `LOGIN` with its password may use it (`IN-USE` to a
    /// classic client, `NAME-REGISTERED` to an accounts one). Decided by the server's account
    /// store, never by a hub.
    #[error("name registered")]
    Registered,
}

/// What happened to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued on the recipient's connection (`SEND-OK`).
    Delivered,
    /// No such user, or the recipient is being dropped (`BAD-DEST-USER`).
    NoSuchUser,
}

/// What happened to a direct message from a `history` sender ([`Hub::deliver_or_queue`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectResult {
    /// Queued on the recipient's connection (`SEND-OK`).
    Delivered,
    /// The recipient is an offline account: kept for their next login (`SEND-QUEUED`).
    Queued,
    /// No such user, or nothing could be kept (`BAD-DEST-USER`).
    NoSuchUser,
}

/// A delivery's outcome, now or later: what [`Hub::submit`] returns.
///
/// `Later` lets a connection go on with its next lines while a cluster backend waits for the
/// recipient's node; the connection still answers in request order (`docs/cluster.md`,
/// "Pipelined delivery"). A dropped sender counts as [`Delivery::NoSuchUser`]: nobody
/// confirmed the message.
#[derive(Debug)]
pub enum Sent {
    /// Decided at once (a local recipient, or no such user).
    Now(Delivery),
    /// Decided when the backend hears back.
    Later(tokio::sync::oneshot::Receiver<Delivery>),
}

/// Who is online, sorted by name (byte order) and encoded once as its `LIST-OK` line. Cheap
/// to clone: every `LIST` until the next login or logout can share one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roster {
    line: Arc<[u8]>,
}

impl Roster {
    /// From names in any order, duplicates allowed. The one place `LIST-OK`'s order is
    /// decided: sorted so the same people always read the same way, whatever order a hub
    /// stores them in.
    pub fn new(mut names: Vec<Username>) -> Self {
        names.sort_unstable();
        names.dedup();
        Self {
            line: Reply::ListOk(names).to_line().into(),
        }
    }

    /// The `LIST-OK` line, `\n` included.
    pub fn line(&self) -> &[u8] {
        &self.line
    }
}

/// Presence and routing, as the connection handler needs them.
///
/// Implementations must keep one sender's messages to one recipient in order, and must make
/// a name unique among live leases.
pub trait Hub: Send + Sync + 'static {
    /// Holds a logged-in name; dropping it logs the name out, however the connection ended.
    type Lease: Send + 'static;

    /// Claims `name` for the connection whose outgoing queue is `outbox`.
    fn login(
        &self,
        name: &Username,
        outbox: &Arc<Outbox>,
    ) -> impl Future<Output = Result<Self::Lease, LoginError>> + Send;

    /// Claims `name` for `outbox` after its account's password was checked: an earlier
    /// session holding it (the same account, on a connection not noticed dead yet) is
    /// evicted ([`Outbox::evict`]: what was queued for it still goes out) and this one takes
    /// the name. The default cannot take over and answers as [`Hub::login`] does.
    fn take_over(
        &self,
        name: &Username,
        outbox: &Arc<Outbox>,
    ) -> impl Future<Output = Result<Self::Lease, LoginError>> + Send {
        self.login(name, outbox)
    }

    /// Everyone logged in. Must not stall [`Hub::deliver`] while it gathers them.
    fn list(&self) -> impl Future<Output = Roster> + Send;

    /// Queues `DELIVERY <from> <body>` for `to`.
    fn deliver(
        &self,
        from: &Username,
        to: &Username,
        body: &str,
    ) -> impl Future<Output = Delivery> + Send;

    /// Like [`Hub::deliver`], but may hand back the outcome for later, so the connection can
    /// handle its next lines meanwhile. Calls from one connection must be delivered in the
    /// order they were made. By default, [`Hub::deliver`] awaited.
    fn submit(
        &self,
        from: &Username,
        to: &Username,
        body: &str,
    ) -> impl Future<Output = Sent> + Send {
        let delivered = self.deliver(from, to, body);
        async move { Sent::Now(delivered.await) }
    }

    /// Makes the connection holding `lease` a presence watcher (`docs/protocol.md`,
    /// "presence"): queues on `outbox` the first list (everyone online, the user included:
    /// `ONLINE` lines, then `ONLINE-DONE`), then one `ONLINE` / `OFFLINE` line per login and
    /// departure anywhere, in the queue deliveries take. The list and the start of the
    /// events are one step, so no change falls between them. Called once, right after
    /// `HELLO` is queued (so the list follows it); dropping the lease ends it.
    fn watch(&self, lease: &Self::Lease, outbox: &Arc<Outbox>) -> impl Future<Output = ()> + Send;

    /// Whether this hub serves the `rooms` extension. One that does not is never offered it,
    /// so [`Hub::room`] is never called on it.
    fn serves_rooms(&self) -> bool {
        false
    }

    /// Does one request of the `rooms` extension for the connection holding `lease`
    /// (`docs/protocol.md`, "rooms"): queues its answer on `outbox`, in the room's order
    /// (the room's own line for a change, a list for `ROOMS` / `MEMBERS`). A room line goes
    /// to every member in one order and never waits for a slow one. A login's rooms are
    /// left when its lease drops.
    ///
    /// # Errors
    /// The refusal to answer with; nothing was queued or changed.
    fn room(
        &self,
        lease: &Self::Lease,
        outbox: &Arc<Outbox>,
        request: RoomRequest<'_>,
        limits: RoomLimits,
    ) -> impl Future<Output = Result<(), RoomError>> + Send {
        let _ = (lease, outbox, request, limits);
        std::future::ready(Err(RoomError::Unserved))
    }

    /// The history service, when this hub serves `history` (`docs/protocol.md`,
    /// "history"); `None` (the default) and the extension is not offered.
    fn history(&self) -> Option<&History> {
        None
    }

    /// Like [`Hub::deliver`] for a sender that negotiated `history`: an offline account
    /// gets the message kept. Only called on a hub that has [`Hub::history`].
    fn deliver_or_queue(
        &self,
        from: &Username,
        to: &Username,
        body: &str,
    ) -> impl Future<Output = DirectResult> + Send {
        let delivered = self.deliver(from, to, body);
        async move {
            match delivered.await {
                Delivery::Delivered => DirectResult::Delivered,
                Delivery::NoSuchUser => DirectResult::NoSuchUser,
            }
        }
    }

    /// Whether the login holding `lease` is a member of `room` (who may read its history).
    fn in_room(&self, lease: &Self::Lease, room: &tcpchat_proto::RoomName) -> bool {
        let _ = (lease, room);
        false
    }
}

/// Queues one presence change on every watcher: encoded once, one push (a memcpy of a short
/// line) per watcher. A watcher whose queue is full is marked by the push and dropped by its
/// own task, as any slow reader.
fn announce<'w>(watchers: impl IntoIterator<Item = &'w Arc<Outbox>>, name: &str, online: bool) {
    let mut watchers = watchers.into_iter().peekable();
    if watchers.peek().is_none() {
        return;
    }
    let mut line = Vec::with_capacity(name.len() + 9);
    Reply::encode_presence(&mut line, name, online);
    for outbox in watchers {
        let _ = outbox.push_with(|buf| buf.extend_from_slice(&line));
    }
}

/// The single-process hub: a map from name to outbox behind one short-held mutex.
#[derive(Debug, Clone, Default)]
pub struct MemoryHub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Name → outbox: what every `SEND` locks. Only O(1) work happens under it.
    users: Mutex<HashMap<Username, Entry>>,
    next_id: AtomicU64,
    /// The same names, sorted, for `LIST`; its own lock, so copying them never holds `users`.
    names: Mutex<Names>,
    /// The last `LIST-OK` built, and the [`Names::generation`] it shows. An async lock: a
    /// `LIST` waiting for another one's rebuild waits without holding a worker thread.
    roster: tokio::sync::Mutex<(u64, Roster)>,
    /// The `rooms` extension's state; untouched while nobody joins a room.
    rooms: Rooms,
    /// The `history` extension's service, if the server keeps history.
    history: Option<History>,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            users: Mutex::default(),
            next_id: AtomicU64::new(0),
            names: Mutex::default(),
            roster: tokio::sync::Mutex::new((0, Roster::new(Vec::new()))),
            rooms: Rooms::default(),
            history: None,
        }
    }
}

/// Logged-in names with the id of the entry that holds each, so a logout only removes its
/// own login; `generation` counts changes. `watchers` are the presence connections, by the
/// id of their login: here, so a change and its event are one critical section.
#[derive(Debug, Default)]
struct Names {
    sorted: BTreeMap<Username, u64>,
    generation: u64,
    watchers: HashMap<u64, Arc<Outbox>>,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    outbox: Arc<Outbox>,
}

impl Inner {
    fn users(&self) -> MutexGuard<'_, HashMap<Username, Entry>> {
        // Nothing panics while holding this lock (map operations only); ignore poisoning.
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn names(&self) -> MutexGuard<'_, Names> {
        // Only map operations and clones happen under this lock; ignore poisoning.
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current roster: the cached one if presence has not changed since it was built.
    async fn roster(&self) -> Roster {
        let mut cached = self.roster.lock().await;
        let (generation, names) = {
            let names = self.names();
            if names.generation == cached.0 {
                return cached.1.clone();
            }
            // O(n) clones, under the names lock only: logins and logouts wait, SEND does not.
            (names.generation, names.sorted.keys().cloned().collect())
        };
        *cached = (generation, Roster::new(names));
        cached.1.clone()
    }
}

impl MemoryHub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty hub that keeps history in `history` (and so serves `history`).
    pub fn with_history(history: History) -> Self {
        Self {
            inner: Arc::new(Inner {
                history: Some(history),
                ..Inner::default()
            }),
        }
    }

    /// Queues `DELIVERY` on a local outbox. Shared with backends that route to this process.
    pub fn deliver_to(outbox: &Outbox, from: &str, body: &str) -> Delivery {
        // Stamped with the sender's read, when metrics are on (`crate::latency`).
        let read_at = crate::latency::read_at();
        match outbox.push_read_at(read_at, |buf| Reply::encode_delivery(buf, from, body)) {
            Ok(()) => Delivery::Delivered,
            Err(_) => Delivery::NoSuchUser,
        }
    }

    fn login_now(&self, name: &Username, outbox: &Arc<Outbox>) -> Result<MemoryLease, LoginError> {
        let mut users = self.inner.users();
        if users.contains_key(name) {
            return Err(LoginError::InUse);
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        users.insert(
            name.clone(),
            Entry {
                id,
                outbox: Arc::clone(outbox),
            },
        );
        drop(users);
        // Before `HELLO` is sent, so no one can be told of the login and then miss it in LIST.
        let mut names = self.inner.names();
        names.sorted.insert(name.clone(), id);
        names.generation += 1;
        // Before `HELLO`, so the user's first message to a watcher comes after it.
        announce(names.watchers.values(), name.as_str(), true);
        drop(names);
        Ok(MemoryLease {
            inner: Arc::clone(&self.inner),
            name: name.clone(),
            id,
        })
    }

    /// [`Hub::take_over`]: the earlier holder's outbox is evicted and its entry replaced;
    /// its lease's drop then finds another id there and leaves the new entry alone.
    fn take_over_now(&self, name: &Username, outbox: &Arc<Outbox>) -> MemoryLease {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let earlier = self.inner.users().insert(
            name.clone(),
            Entry {
                id,
                outbox: Arc::clone(outbox),
            },
        );
        if let Some(earlier) = earlier {
            earlier.outbox.evict();
        }
        let mut names = self.inner.names();
        names.sorted.insert(name.clone(), id);
        names.generation += 1;
        drop(names);
        MemoryLease {
            inner: Arc::clone(&self.inner),
            name: name.clone(),
            id,
        }
    }

    fn deliver_now(&self, from: &Username, to: &Username, body: &str) -> Delivery {
        match self.direct_now(from, to, body, false) {
            DirectResult::Delivered => Delivery::Delivered,
            DirectResult::Queued | DirectResult::NoSuchUser => Delivery::NoSuchUser,
        }
    }

    /// A direct message; to an account when the hub keeps history, numbered and stored on
    /// the way (see [`History::direct`]), and kept while it is offline if `queue`.
    fn direct_now(&self, from: &Username, to: &Username, body: &str, queue: bool) -> DirectResult {
        if let Some(history) = self
            .inner
            .history
            .as_ref()
            .filter(|h| h.tracks(to.as_str()))
        {
            let lookup = || {
                self.inner
                    .users()
                    .get(to.as_str())
                    .map(|e| Arc::clone(&e.outbox))
            };
            return history.direct(to.as_str(), from.as_str(), body, queue, lookup);
        }
        match self.deliver_classic(from, to, body) {
            Delivery::Delivered => DirectResult::Delivered,
            Delivery::NoSuchUser => DirectResult::NoSuchUser,
        }
    }

    fn deliver_classic(&self, from: &Username, to: &Username, body: &str) -> Delivery {
        // The outbox is cloned out and pushed to after the map lock is released: the push
        // may wait on the recipient's own lock, which its task can hold for a long
        // `LIST-OK` memcpy, and the lock every SEND takes must never wait on that.
        let outbox = match self.inner.users().get(to.as_str()) {
            Some(entry) => Arc::clone(&entry.outbox),
            None => return Delivery::NoSuchUser,
        };
        Self::deliver_to(&outbox, from.as_str(), body)
    }
}

impl Hub for MemoryHub {
    type Lease = MemoryLease;

    fn login(
        &self,
        name: &Username,
        outbox: &Arc<Outbox>,
    ) -> impl Future<Output = Result<MemoryLease, LoginError>> + Send {
        std::future::ready(self.login_now(name, outbox))
    }

    fn take_over(
        &self,
        name: &Username,
        outbox: &Arc<Outbox>,
    ) -> impl Future<Output = Result<MemoryLease, LoginError>> + Send {
        std::future::ready(Ok(self.take_over_now(name, outbox)))
    }

    fn list(&self) -> impl Future<Output = Roster> + Send {
        self.inner.roster()
    }

    fn deliver(
        &self,
        from: &Username,
        to: &Username,
        body: &str,
    ) -> impl Future<Output = Delivery> + Send {
        std::future::ready(self.deliver_now(from, to, body))
    }

    fn watch(&self, lease: &MemoryLease, outbox: &Arc<Outbox>) -> impl Future<Output = ()> + Send {
        let mut names = self.inner.names();
        // One push for the whole list: O(n) memcpy under the names lock, as a roster
        // rebuild is; SEND does not take this lock.
        let _ = outbox.push_with(|buf| {
            Reply::encode_online_list(buf, names.sorted.keys().map(Username::as_str));
        });
        names.watchers.insert(lease.id, Arc::clone(outbox));
        std::future::ready(())
    }

    fn serves_rooms(&self) -> bool {
        true
    }

    fn history(&self) -> Option<&History> {
        self.inner.history.as_ref()
    }

    fn deliver_or_queue(
        &self,
        from: &Username,
        to: &Username,
        body: &str,
    ) -> impl Future<Output = DirectResult> + Send {
        std::future::ready(self.direct_now(from, to, body, true))
    }

    fn in_room(&self, lease: &MemoryLease, room: &tcpchat_proto::RoomName) -> bool {
        self.inner.rooms.is_member(room, lease.id)
    }

    fn room(
        &self,
        lease: &MemoryLease,
        outbox: &Arc<Outbox>,
        request: RoomRequest<'_>,
        limits: RoomLimits,
    ) -> impl Future<Output = Result<(), RoomError>> + Send {
        let asker = Asker {
            id: lease.id,
            name: &lease.name,
            outbox,
        };
        let history = self.inner.history.as_ref();
        std::future::ready(
            self.inner
                .rooms
                .handle_with(asker, request, limits, history),
        )
    }
}

/// A name held in a [`MemoryHub`]; dropping it frees the name.
#[derive(Debug)]
pub struct MemoryLease {
    inner: Arc<Inner>,
    name: Username,
    id: u64,
}

impl Drop for MemoryLease {
    fn drop(&mut self) {
        // Its rooms first: `PARTED` after everything it said there, before `OFFLINE`.
        self.inner.rooms.leave_all(self.id);
        let mut users = self.inner.users();
        // Only remove our own entry: the id guards against freeing a name someone else
        // claimed after us (impossible today, cheap insurance for future backends).
        if users
            .get(self.name.as_str())
            .is_some_and(|e| e.id == self.id)
        {
            users.remove(self.name.as_str());
        }
        drop(users);
        // The same guard here matters: between the two locks the name may have been claimed
        // again, and that login's entry must stay.
        let mut names = self.inner.names();
        names.watchers.remove(&self.id);
        if names.sorted.get(self.name.as_str()) == Some(&self.id) {
            names.sorted.remove(self.name.as_str());
            names.generation += 1;
            // After the user's last message: the lease drops once its connection has ended.
            announce(names.watchers.values(), self.name.as_str(), false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::PushError;

    fn name(s: &str) -> Username {
        Username::parse(s).expect("valid test name")
    }

    #[tokio::test]
    async fn unique_names_freed_on_drop() {
        let hub = MemoryHub::new();
        let a = Arc::new(Outbox::new(1024));
        let lease = hub.login(&name("ann"), &a).await.expect("free name");
        assert_eq!(
            hub.login(&name("ann"), &a).await.err(),
            Some(LoginError::InUse)
        );
        assert!(hub.login(&name("Ann"), &a).await.is_ok(), "case-sensitive");
        drop(lease);
        assert!(hub.login(&name("ann"), &a).await.is_ok(), "freed by drop");
    }

    #[tokio::test]
    async fn take_over_evicts_the_earlier_holder_and_keeps_the_name() {
        let hub = MemoryHub::new();
        let (old, new) = (Arc::new(Outbox::new(1024)), Arc::new(Outbox::new(1024)));
        let earlier = hub.login(&name("ann"), &old).await.expect("free name");
        assert_eq!(
            hub.deliver(&name("bob"), &name("ann"), "queued").await,
            Delivery::Delivered
        );
        let lease = hub.take_over(&name("ann"), &new).await.expect("taken over");
        // The earlier session's queued line is still there, then it is told to go.
        assert_eq!(
            old.take(),
            (b"DELIVERY bob queued\n".to_vec(), Some(PushError::Evicted))
        );
        drop(earlier);
        assert_eq!(
            hub.list().await.line(),
            b"LIST-OK ann\n",
            "its drop freed nothing"
        );
        assert_eq!(
            hub.deliver(&name("bob"), &name("ann"), "hi").await,
            Delivery::Delivered
        );
        assert_eq!(new.take().0, b"DELIVERY bob hi\n");
        drop(lease);
        assert_eq!(hub.list().await.line(), b"LIST-OK \n");
    }

    #[tokio::test]
    async fn delivers_to_outbox() {
        let hub = MemoryHub::new();
        let bob = Arc::new(Outbox::new(1024));
        let _lease = hub.login(&name("bob"), &bob).await.expect("free name");
        assert_eq!(
            hub.deliver(&name("ann"), &name("bob"), " hi ").await,
            Delivery::Delivered
        );
        assert_eq!(
            hub.deliver(&name("ann"), &name("eve"), "x").await,
            Delivery::NoSuchUser
        );
        assert_eq!(bob.take().0, b"DELIVERY ann  hi \n");
        assert_eq!(hub.list().await.line(), b"LIST-OK bob\n");
    }

    #[tokio::test]
    async fn list_follows_logins_and_logouts_sorted() {
        let hub = MemoryHub::new();
        let o = Arc::new(Outbox::new(1024));
        assert_eq!(hub.list().await.line(), b"LIST-OK \n");
        let zed = hub.login(&name("zed"), &o).await.expect("free name");
        let _amy = hub.login(&name("amy"), &o).await.expect("free name");
        let _bob = hub.login(&name("Bob"), &o).await.expect("free name");
        assert_eq!(hub.list().await.line(), b"LIST-OK Bob,amy,zed\n");
        assert_eq!(hub.list().await.line(), b"LIST-OK Bob,amy,zed\n", "cached");
        drop(zed);
        assert_eq!(hub.list().await.line(), b"LIST-OK Bob,amy\n");
        let _zed = hub.login(&name("zed"), &o).await.expect("freed");
        assert_eq!(hub.list().await.line(), b"LIST-OK Bob,amy,zed\n");
    }

    /// The structural half of "LIST never stalls SEND": with the lock that every delivery
    /// takes held, LIST still answers.
    #[test]
    fn list_does_not_take_the_lock_that_send_takes() {
        let hub = MemoryHub::new();
        let o = Arc::new(Outbox::new(1024));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let _ann = rt.block_on(hub.login(&name("ann"), &o)).expect("free name");
        let held = hub.inner.users();
        let (done, answered) = std::sync::mpsc::channel();
        let lister = hub.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            let _ = done.send(rt.block_on(lister.list()));
        });
        let roster = answered
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("LIST answered while the users lock was held");
        drop(held);
        assert_eq!(roster.line(), b"LIST-OK ann\n");
    }

    #[tokio::test]
    async fn full_recipient_is_not_delivered_to() {
        let hub = MemoryHub::new();
        let bob = Arc::new(Outbox::new(8));
        let _lease = hub.login(&name("bob"), &bob).await.expect("free name");
        assert_eq!(
            hub.deliver(&name("a"), &name("bob"), "0123456789").await,
            Delivery::Delivered
        );
        assert_eq!(
            hub.deliver(&name("a"), &name("bob"), "x").await,
            Delivery::NoSuchUser
        );
    }

    #[tokio::test]
    async fn watchers_get_the_list_then_every_change_once() {
        let hub = MemoryHub::new();
        let quiet = Arc::new(Outbox::new(1024));
        let _ann = hub.login(&name("ann"), &quiet).await.expect("free name");
        let w = Arc::new(Outbox::new(1024));
        let me = hub.login(&name("me"), &w).await.expect("free name");
        hub.watch(&me, &w).await;
        assert_eq!(w.take().0, b"ONLINE ann,me\nONLINE-DONE\n");
        let bob = hub.login(&name("bob"), &quiet).await.expect("free name");
        assert_eq!(
            hub.deliver(&name("bob"), &name("me"), "hi").await,
            Delivery::Delivered
        );
        drop(bob);
        assert_eq!(
            hub.login(&name("me"), &quiet).await.err(),
            Some(LoginError::InUse),
            "a refused login is no event"
        );
        assert_eq!(w.take().0, b"ONLINE bob\nDELIVERY bob hi\nOFFLINE bob\n");
        // Not a watcher: nothing but its own lines.
        assert_eq!(quiet.take().0, b"");
        // A watcher's own departure is not announced to itself, and it stops watching.
        let w2 = Arc::new(Outbox::new(1024));
        let other = hub.login(&name("other"), &w2).await.expect("free name");
        hub.watch(&other, &w2).await;
        assert_eq!(w.take().0, b"ONLINE other\n");
        drop(me);
        assert_eq!(
            w2.take().0,
            b"ONLINE ann,me,other\nONLINE-DONE\nOFFLINE me\n"
        );
        let _carl = hub.login(&name("carl"), &quiet).await.expect("free name");
        assert_eq!(w.take().0, b"", "the departed watcher gets nothing more");
    }

    #[tokio::test]
    async fn a_full_watcher_is_refused_not_waited_for() {
        let hub = MemoryHub::new();
        let w = Arc::new(Outbox::new(8));
        let me = hub.login(&name("me"), &w).await.expect("free name");
        hub.watch(&me, &w).await;
        let o = Arc::new(Outbox::new(1024));
        let _a = hub.login(&name("a"), &o).await.expect("free name");
        assert_eq!(
            w.take().1,
            Some(crate::outbox::PushError::Full),
            "marked for dropping, as a slow reader"
        );
    }

    /// The list and the events are one step: however logins race with a new watcher, the
    /// list followed by the events replays to exactly who is online.
    #[test]
    fn a_list_and_its_events_replay_to_the_truth_under_racing_logins() {
        let hub = MemoryHub::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let churners: Vec<_> = (0..4)
            .map(|t| {
                let hub = hub.clone();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .expect("runtime");
                    let o = Arc::new(Outbox::new(1 << 20));
                    let mut kept = Vec::new();
                    for i in 0..300 {
                        let lease = rt
                            .block_on(hub.login(&name(&format!("t{t}n{i}")), &o))
                            .expect("unique name");
                        // Every third one stays: the end state is not empty.
                        if i % 3 == 0 {
                            kept.push(lease);
                        }
                    }
                    kept
                })
            })
            .collect();
        let mut watchers = Vec::new();
        for i in 0..40 {
            let o = Arc::new(Outbox::new(1 << 24));
            let lease = rt
                .block_on(hub.login(&name(&format!("w{i}")), &o))
                .expect("unique name");
            rt.block_on(hub.watch(&lease, &o));
            watchers.push((lease, o));
            std::thread::yield_now();
        }
        let kept: Vec<_> = churners
            .into_iter()
            .flat_map(|t| t.join().expect("churner"))
            .collect();
        let truth = hub.inner.names().sorted.keys().cloned().collect::<Vec<_>>();
        for (_, o) in &watchers {
            let (bytes, refusing) = o.take();
            assert_eq!(refusing, None);
            let mut online = std::collections::BTreeSet::new();
            for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                match Reply::parse(line).expect("a presence line") {
                    Reply::Online(names) => online.extend(names),
                    Reply::Offline(n) => assert!(online.remove(&n), "OFFLINE {n} unknown"),
                    Reply::OnlineDone => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(online.into_iter().collect::<Vec<_>>(), truth);
        }
        drop(kept);
    }
}
