//! [`RedisHub`]: the server's presence and routing, shared through Redis.
//!
//! Each node keeps its own users in a local map (name → outbox), exactly as the in-memory
//! hub does, and mirrors that map into Redis so the other nodes can see and reach them. Two
//! background tasks run per node: the subscriber, which receives messages published for this
//! node's users and queues them on their outboxes, and the keeper, which renews the node's
//! lease and re-registers every local user whenever Redis may have lost them (a failed call,
//! an expired lease, a flushed or restarted Redis).
//!
//! Invariant: the local map is the truth about this node's users; Redis is a copy that the
//! keeper repairs. A login is admitted only when Redis confirms the name, so uniqueness across
//! nodes never rests on a stale copy.
//!
//! Presence events (`docs/cluster.md`, "Presence"): a login or departure on this node is
//! queued on this node's watchers at once, as the in-memory hub does (so before the user's
//! first local message, after the last); the script that changes the name in Redis also
//! publishes the event on every other live node's channel, the one that carries messages, so
//! it is ordered with that node's deliveries there. A new watcher is registered *pending*:
//! events that arrive while its first list is fetched are held, then queued after the list.
//! Replaying them is safe because each name's events are in order and the last one is the
//! truth; a departure heard from Redis for a name that is live here is stale and dropped.
//!
//! A `SEND` to a user on another node goes through the node's router ([`router`]): cached
//! routes, one frame per destination node per round, and `SEND-OK` only when the recipient's
//! node answers that it queued the message.
//!
//! Rooms (`docs/cluster.md`, "Rooms"; `rooms.rs`, [`room_steps`]): one script per room
//! request changes the room in its own slot and publishes its line on the room's channel in
//! the same step; every node with members in the room listens to that channel on its
//! subscription, so each node hands its members one room's lines in the order Redis ran the
//! scripts, on one Redis and on a Redis Cluster alike.

mod direct;
mod room_steps;
mod router;
mod steps;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use tcpchat_accounts::StoreError;
use tcpchat_proto::{RoomName, Username};
use tcpchat_server::history::{DirectFuture, PageFuture, SharedHistory, StreamView};
use tcpchat_server::History;
use tcpchat_server::{
    Delivery, DirectResult, Hub, LoginError, MemoryHub, Outbox, RoomError, RoomLimits, RoomRequest,
    Roster, Sent,
};
use tokio::sync::{mpsc, Notify, RwLock};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::keys;
use crate::rooms::{user_line, LocalRooms};
use crate::store::{Backend, Store, RECONNECT_PAUSE};
use crate::{check_url, ClusterConfig, ClusterError, ClusterMetrics, NodeId};

/// The cluster backend for [`tcpchat_server::run_with_hub`]. Cheap to clone; clones share
/// one node.
#[derive(Clone)]
pub struct RedisHub {
    inner: Arc<Inner>,
    /// History's streams in Redis ([`ClusterConfig::history`]), seen by the server through
    /// [`History::shared`].
    history: Option<History>,
}

/// The streams in Redis as the server's history service sees them (`docs/cluster.md`,
/// "History"): pages are read in the stream's slot. Room messages are numbered by the room's
/// script, direct ones on the recipient's node (`direct.rs`), not here.
struct SharedStreams(Arc<Inner>);

impl SharedHistory for SharedStreams {
    fn page(&self, key: &str, below: Option<u64>, count: u32) -> PageFuture<'_> {
        let stream = match key.strip_prefix('@') {
            Some(user) => {
                let [top, epoch, list, ..] = keys::user_stream(user);
                [top, epoch, list]
            }
            None => keys::room_stream(key),
        };
        Box::pin(async move {
            self.0
                .room_page(&stream, below, count)
                .await
                .map_err(|e| StoreError::Task(e.to_string()))
        })
    }

    fn tracks(&self, user: &str) -> bool {
        self.0
            .local()
            .get(user)
            .is_some_and(|l| l.active && l.account)
    }

    fn hold(&self, user: &str) {
        self.0.hold(user);
    }

    fn go_live(&self, user: &str, upto: u64, then: &mut dyn FnMut(&StreamView)) -> bool {
        self.0.go_live(user, upto, then)
    }

    fn direct_read(&self, user: &str, after: u64, limit: u32) -> DirectFuture<'_> {
        let user = user.to_owned();
        Box::pin(async move {
            self.0
                .direct_read(&user, after, limit)
                .await
                .map_err(|e| StoreError::Task(e.to_string()))
        })
    }

    fn reset(&self, user: &str) {
        // Still logged in, but no longer an account: nothing more is kept for it.
        if let Some(l) = self.0.local().get_mut(user) {
            l.account = false;
        }
        self.0.reset_direct(user);
    }
}

struct Inner {
    node: NodeId,
    config: ClusterConfig,
    store: Store,
    local: Mutex<HashMap<Username, Local>>,
    /// Presence watchers on this node, by their login's token.
    watchers: Mutex<HashMap<u64, Watcher>>,
    /// This node's members of every room (see `rooms.rs`).
    rooms: LocalRooms,
    /// The room channels this node listens to, and the handle to change them.
    listening: tokio::sync::Mutex<Listened>,
    next_token: AtomicU64,
    /// The subscriber is listening: messages for this node's users can arrive.
    subscribed: AtomicBool,
    /// Redis may disagree with the local map; the keeper re-syncs at its next turn.
    dirty: AtomicBool,
    /// Wakes the keeper early (subscriber reconnected, a call failed).
    kick: Notify,
    /// Logins and logouts hold it shared around their Redis call; a re-sync holds it
    /// exclusively, so its snapshot of the local map and its script see the same users.
    sync_gate: RwLock<()>,
    runtime: tokio::runtime::Handle,
    cancel: CancellationToken,
    /// The cross-node sender ([`router`]).
    router: mpsc::UnboundedSender<router::Job>,
    /// Results for other nodes' frames, to publish ([`router::answer`]).
    answers: mpsc::UnboundedSender<router::Answer>,
    /// With history: the task that numbers and queues messages for this node's accounts
    /// ([`direct::run`]); every routed frame goes through it, in order.
    numbering: Option<mpsc::UnboundedSender<direct::Job>>,
    /// This node's accounts' direct streams, by name (`direct.rs`).
    direct: Mutex<HashMap<String, direct::DirectState>>,
}

struct Local {
    token: u64,
    outbox: Arc<Outbox>,
    /// Confirmed by Redis and answered `HELLO`; until then the name is only reserved here
    /// (so two local logins of one name cannot both reach Redis) and is not reachable.
    active: bool,
    /// Logged in with the account's password: the name has a direct stream.
    account: bool,
}

/// A presence connection on this node.
struct Watcher {
    outbox: Arc<Outbox>,
    /// While its first list is being fetched: the events heard meanwhile, queued after it.
    held: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHub")
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

impl RedisHub {
    /// Joins the cluster at `config.url` as `config.node_id` and starts the node's background
    /// tasks. Redis need not be reachable yet: until it is, logins are answered `BUSY`.
    ///
    /// Must be called within a tokio runtime.
    ///
    /// # Errors
    /// [`ClusterError::InvalidUrl`] if the address is not a `redis://` URL.
    pub async fn start(config: ClusterConfig) -> Result<Self, ClusterError> {
        Self::start_observed(config, ClusterMetrics::off()).await
    }

    /// Like [`RedisHub::start`], recording Redis calls and the subscription in `metrics`.
    ///
    /// # Errors
    /// As [`RedisHub::start`]; also [`ClusterError::Timing`] or [`ClusterError::Tls`] for
    /// settings that cannot work.
    pub async fn start_observed(
        config: ClusterConfig,
        metrics: ClusterMetrics,
    ) -> Result<Self, ClusterError> {
        let shown = check_url(&config.url)?;
        config.validate()?;
        let client = config.client()?;
        let (jobs, queued) = mpsc::unbounded_channel();
        let (answers, owed) = mpsc::unbounded_channel();
        let (numbering, to_number) = match config.history {
            Some(_) => {
                let (tx, rx) = mpsc::unbounded_channel();
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let inner = Arc::new(Inner {
            node: config.node_id.clone(),
            store: Store::new(client, config.call_timeout, metrics),
            local: Mutex::new(HashMap::new()),
            watchers: Mutex::new(HashMap::new()),
            rooms: LocalRooms::default(),
            listening: tokio::sync::Mutex::new(Listened::default()),
            next_token: AtomicU64::new(1),
            subscribed: AtomicBool::new(false),
            dirty: AtomicBool::new(true),
            kick: Notify::new(),
            sync_gate: RwLock::new(()),
            runtime: tokio::runtime::Handle::current(),
            cancel: CancellationToken::new(),
            router: jobs,
            answers,
            numbering,
            direct: Mutex::new(HashMap::new()),
            config,
        });
        info!(node = %inner.node, redis = %shown, "cluster mode: joining");
        tokio::spawn(subscriber(Arc::clone(&inner)));
        tokio::spawn(keeper(Arc::clone(&inner)));
        tokio::spawn(router::run(Arc::clone(&inner), queued));
        tokio::spawn(router::answer(Arc::clone(&inner), owed));
        if let Some(rx) = to_number {
            tokio::spawn(direct::run(Arc::clone(&inner), rx));
        }
        let history = inner
            .config
            .history
            .map(|_| History::shared(Arc::new(SharedStreams(Arc::clone(&inner)))));
        Ok(Self { inner, history })
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.inner.node
    }

    /// Leaves the cluster: stops the background tasks and frees this node's names in Redis at
    /// once (instead of when its lease expires). Call after the server has stopped.
    pub async fn leave(&self) {
        let inner = &self.inner;
        inner.cancel.cancel();
        match inner.leave_steps().await {
            Ok(_) => info!(node = %inner.node, "left the cluster"),
            Err(e) => {
                warn!(error = %e, "cannot leave the cluster cleanly; this node's names are freed when its lease expires")
            }
        }
    }
}

impl Inner {
    fn local(&self) -> MutexGuard<'_, HashMap<Username, Local>> {
        // Only map operations happen under this lock; a poisoned map is still consistent.
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn watchers(&self) -> MutexGuard<'_, HashMap<u64, Watcher>> {
        // Only map operations and memcpys happen under this lock.
        self.watchers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues one presence change on this node's watchers: encoded once, one push each (or
    /// held, for a watcher still waiting for its first list). Nothing when there are none.
    fn announce(&self, name: &str, online: bool) {
        let mut watchers = self.watchers();
        if watchers.is_empty() {
            return;
        }
        let mut line = Vec::with_capacity(name.len() + 9);
        tcpchat_proto::Reply::encode_presence(&mut line, name, online);
        for w in watchers.values_mut() {
            match &mut w.held {
                Some(held) => held.extend_from_slice(&line),
                // A full queue marks the watcher for dropping, as any slow reader.
                None => drop(w.outbox.push_with(|buf| buf.extend_from_slice(&line))),
            }
        }
    }

    /// Everyone online: this node's users and every live node's, from Redis (only this
    /// node's if Redis does not answer). Unsorted, possibly with repeats.
    /// `watching`: for a new watcher's first list, which also flags this node as one that
    /// presence events must reach (see `scripts.rs`).
    async fn all_names(&self, watching: bool) -> Vec<Username> {
        let mut names = self.local_names();
        match self.list_steps(watching).await {
            Ok(all) => {
                // Local users are listed even if Redis has not caught up with them yet.
                names.extend(all.iter().filter_map(|n| Username::parse(n).ok()));
            }
            Err(e) => {
                debug!(error = %e, "cluster list failed; listing this node's users only");
                self.failed();
            }
        }
        names
    }

    /// Notes that Redis may now be out of step with the local map.
    fn failed(&self) {
        self.dirty.store(true, Ordering::Relaxed);
        self.kick.notify_one();
    }

    fn local_names(&self) -> Vec<Username> {
        self.local()
            .iter()
            .filter(|(_, l)| l.active)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Claims `name` in Redis: only if free, or with `take` whoever holds it (`steps.rs`).
    async fn claim(&self, take: bool, name: &Username, token: u64) -> Result<(), LoginError> {
        let _shared = self.sync_gate.read().await;
        let answer = match self.claim_steps(name, token, take).await {
            Ok(a) => a,
            Err(e) => {
                debug!(error = %e, %name, "claim failed");
                self.failed();
                return Err(LoginError::Unavailable);
            }
        };
        match answer {
            steps::Claim::Ok => {
                let mut now_active = false;
                if let Some(l) = self.local().get_mut(name) {
                    if l.token == token {
                        l.active = true;
                        now_active = true;
                    }
                }
                // Before `HELLO`: the user's first message to a watcher here comes after it.
                if now_active {
                    self.announce(name.as_str(), true);
                }
                Ok(())
            }
            steps::Claim::InUse => Err(LoginError::InUse),
            steps::Claim::Stale => {
                self.failed();
                Err(LoginError::Unavailable)
            }
            steps::Claim::Settling => {
                debug!(%name, "login refused while nodes re-register");
                Err(LoginError::Unavailable)
            }
        }
    }

    /// Re-registers every local user (the keeper's repair). Users whose names another live
    /// node now holds lose them: closing their outbox makes their connection end at once.
    async fn sync(&self) {
        let _exclusive = self.sync_gate.write().await;
        self.dirty.store(false, Ordering::Relaxed);
        let held: Vec<(Username, u64)> = self
            .local()
            .iter()
            .filter(|(_, l)| l.active)
            .map(|(n, l)| (n.clone(), l.token))
            .collect();
        let synced = match self.sync_steps(&held).await {
            Ok(conflicts) => self.rooms_sync_steps().await.map(|()| conflicts),
            Err(e) => Err(e),
        };
        match synced {
            Ok(conflicts) => {
                info!(users = held.len(), "registered this node's users in redis");
                for name in conflicts {
                    let removed = self.local().remove(name.as_str());
                    if let Some(l) = removed {
                        warn!(%name, "name was claimed on another node while this one was cut off from redis; dropping the local user");
                        // Refuses every later line for it, which ends its connection once
                        // what was already queued for it is written.
                        l.outbox.evict();
                    }
                }
            }
            Err(e) => {
                debug!(error = %e, "re-sync failed");
                self.dirty.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Sets the `nodes_alive` gauge from Redis; a failed call leaves it as it was.
    async fn count_nodes(&self) {
        match self.count_steps().await {
            Ok(n) => self.store.metrics().nodes_alive(n),
            Err(e) => debug!(error = %e, "counting the live nodes failed"),
        }
    }

    async fn renew(&self) {
        let watching = !self.watchers().is_empty();
        match self.renew_steps(watching).await {
            Ok(r) if r.alive && !self.dirty.load(Ordering::Relaxed) => {}
            Ok(_) => self.sync().await,
            Err(e) => {
                debug!(error = %e, "lease renewal failed");
                self.dirty.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Handles what was published on this node's channel: a presence event for its
    /// watchers (`,`), a frame of messages for its users (`!`), the results of one of its
    /// own frames (`#`), the eviction of a login whose account logged in on another
    /// node (`~`); or on a room's channel: a line for its members here (`*`), or an answer
    /// for one member (`^`, both `rooms.rs`).
    fn handle_published(self: &Arc<Self>, payload: &[u8]) {
        match payload.split_first() {
            Some((b',', rest)) => self.handle_presence(rest),
            Some((b'!', rest)) => self.handle_frame(rest),
            Some((b'#', rest)) => self.handle_results(rest),
            Some((b'~', rest)) => self.handle_eviction(rest),
            Some((b'*', rest)) => match std::str::from_utf8(rest) {
                Ok(rest) => {
                    if let Some(empty) = self.rooms.handle_room_line(rest) {
                        self.unlisten_later(empty);
                    }
                }
                Err(_) => warn!("ignoring a cluster room line that is not UTF-8"),
            },
            Some((b'^', rest)) => self.handle_user_line(rest),
            _ => warn!("ignoring a malformed cluster message"),
        }
    }

    /// `{node} {frame} {deadline}\n` then `{token} {to} {from} {body}\n` per message: each
    /// is queued only on the login that `token` names, and the sender is told, per message,
    /// `1` (queued), `0` (no such login here: its route is stale) or `x` (refused). Past its
    /// deadline nothing is delivered (`t`): the sender has answered `BAD-DEST-USER` by then.
    fn handle_frame(self: &Arc<Self>, frame: &[u8]) {
        let mut lines = frame.split(|&b| b == b'\n');
        let header = lines.next().and_then(|h| std::str::from_utf8(h).ok());
        let parts = header.and_then(|h| {
            let (node, rest) = h.split_once(' ')?;
            let (id, deadline) = rest.split_once(' ')?;
            Some((node, id, deadline.parse::<u64>().ok()?))
        });
        let Some((node, id, deadline)) = parts else {
            warn!("ignoring a malformed cluster frame");
            return;
        };
        let late = router::unix_millis() > deadline;
        if late {
            debug!(
                from = node,
                "a frame arrived past its deadline; nothing in it is delivered"
            );
        }
        if let Some(numbering) = &self.numbering {
            let msgs = lines
                .filter(|l| !l.is_empty())
                .map(|line| {
                    let i = line.iter().position(|&b| b == b' ')?;
                    let token = std::str::from_utf8(&line[..i]).ok()?.parse().ok()?;
                    let (to, from, body) = split_payload(&line[i + 1..])?;
                    Some((token, to.to_owned(), from.to_owned(), body.to_owned()))
                })
                .collect();
            let _ = numbering.send(direct::Job::Frame {
                node: node.to_owned(),
                id: id.to_owned(),
                late,
                msgs,
            });
            return;
        }
        let mut payload = Vec::with_capacity(id.len() + 2 + frame.len() / 16);
        payload.push(b'#');
        payload.extend_from_slice(id.as_bytes());
        payload.push(b' ');
        for line in lines.filter(|l| !l.is_empty()) {
            let parsed = line.iter().position(|&b| b == b' ').and_then(|i| {
                let token = std::str::from_utf8(&line[..i]).ok()?.parse().ok()?;
                Some((token, split_payload(&line[i + 1..])?))
            });
            let result = match parsed {
                _ if late => b't',
                Some((token, (to, from, body))) => {
                    match self.deliver_local(to, from, body, Some(token)) {
                        Some(Delivery::Delivered) => b'1',
                        Some(Delivery::NoSuchUser) => b'x',
                        None => b'0',
                    }
                }
                None => b'x',
            };
            payload.push(result);
        }
        let _ = self.answers.send((node.to_owned(), payload));
    }

    /// `{frame} {results}`: the answers for one of this node's frames.
    fn handle_results(&self, answer: &[u8]) {
        let Some(i) = answer.iter().position(|&b| b == b' ') else {
            warn!("ignoring malformed cluster results");
            return;
        };
        let Some(frame) = std::str::from_utf8(&answer[..i])
            .ok()
            .and_then(|f| f.parse().ok())
        else {
            warn!("ignoring malformed cluster results");
            return;
        };
        let _ = self.router.send(router::Job::Acked {
            frame,
            results: answer[i + 1..].to_vec(),
        });
    }

    /// `{node} {user} {room} {kind} {rest}`: a room's answer for one user, in the room's
    /// order; every node listening to the room hears it, the user's node queues it.
    fn handle_user_line(&self, payload: &[u8]) {
        let parsed = std::str::from_utf8(payload)
            .ok()
            .and_then(|p| p.split_once(' '))
            .and_then(|(node, rest)| Some((node, rest.split_once(' ')?)));
        let Some((node, (to, rest))) = parsed else {
            warn!("ignoring a malformed cluster room answer");
            return;
        };
        if node != self.node.as_str() {
            return;
        }
        let Some(line) = user_line(rest) else {
            warn!("ignoring a malformed cluster room answer");
            return;
        };
        let outbox = match self.local().get(to) {
            Some(l) if l.active => Arc::clone(&l.outbox),
            _ => return,
        };
        let _ = outbox.push_with(|buf| buf.extend_from_slice(&line));
    }

    /// `+{name}` or `-{name}` from another node (or a reaped dead one).
    fn handle_presence(&self, event: &[u8]) {
        let (online, name) = match event.split_first() {
            Some((b'+', name)) => (true, name),
            Some((b'-', name)) => (false, name),
            _ => {
                warn!("ignoring a malformed cluster presence event");
                return;
            }
        };
        let Some(name) = std::str::from_utf8(name)
            .ok()
            .and_then(|n| Username::parse(n).ok())
        else {
            warn!("ignoring a cluster presence event with an invalid name");
            return;
        };
        // A name live on this node is what it is here: an event from elsewhere about it is
        // older than the login that made it ours (e.g. its departure from another node,
        // heard after it logged in here), and the watchers already know.
        if self.local().get(&name).is_some_and(|l| l.active) {
            return;
        }
        self.announce(name.as_str(), online);
    }

    /// `{name} {token}`: that local login of `name` was taken over on another node: it ends
    /// after what was queued for it. A later local login (another token) stays.
    fn handle_eviction(&self, rest: &[u8]) {
        let parsed = std::str::from_utf8(rest)
            .ok()
            .and_then(|r| r.split_once(' '));
        let Some((name, token)) = parsed else {
            warn!("ignoring a malformed cluster eviction");
            return;
        };
        let mut local = self.local();
        let ours = local
            .get(name)
            .is_some_and(|l| token.parse() == Ok(l.token));
        if let Some(l) = ours.then(|| local.remove(name)).flatten() {
            drop(local);
            info!(%name, "logged in on another node with the account's password; closing this session");
            l.outbox.evict();
        }
    }

    /// Queues `DELIVERY` for a local user; `None` if there is no such (logged-in) user here.
    /// With `token` (a message routed from another node), only that login counts: anything
    /// else here, a newer login of the name included, is `None`.
    ///
    /// A recipient whose queue refuses the line is being dropped for not reading: its name
    /// is released at once, so later senders on every node get `BAD-DEST-USER` as they
    /// would from a single server, even before its connection has closed.
    fn deliver_local(
        self: &Arc<Self>,
        to: &str,
        from: &str,
        body: &str,
        routed: Option<u64>,
    ) -> Option<Delivery> {
        let (outbox, token) = match (self.local().get(to), routed) {
            (Some(l), Some(t)) if l.active && l.token == t => (Arc::clone(&l.outbox), l.token),
            (Some(l), None) if l.active => (Arc::clone(&l.outbox), l.token),
            (Some(_), None) => return Some(Delivery::NoSuchUser),
            _ => return None,
        };
        let outcome = MemoryHub::deliver_to(&outbox, from, body);
        if outcome == Delivery::NoSuchUser {
            debug!(%to, "recipient's queue is full; releasing its name");
            if let Ok(name) = Username::parse(to) {
                self.forget(&name, token);
            }
        }
        Some(outcome)
    }

    /// Removes a local user (if `token` still holds the name) and frees the name in Redis.
    fn forget(self: &Arc<Self>, name: &Username, token: u64) {
        {
            let mut local = self.local();
            // The token guards against freeing a later login of the same name.
            if local.get(name).is_some_and(|l| l.token == token) {
                local.remove(name);
            } else {
                return;
            }
        }
        // Out of this node's rooms at once; the others hear PARTED from the scripts below.
        let in_rooms = self.rooms.drop_member(token);
        for room in &in_rooms {
            self.unlisten_later(room.clone());
        }
        // At once, not after Redis: this node's watchers hear it after the user's last
        // local message (the lease drops once the connection has ended).
        self.announce(name.as_str(), false);
        if self.cancel.is_cancelled() {
            return;
        }
        let inner = Arc::clone(self);
        let name = name.clone();
        self.runtime.spawn(async move {
            let _shared = inner.sync_gate.read().await;
            for room in &in_rooms {
                if let Err(e) = inner
                    .room_drop(room.as_str(), inner.node.as_str(), name.as_str())
                    .await
                {
                    debug!(error = %e, %name, %room, "leaving a room failed");
                    inner.failed();
                }
            }
            if let Err(e) = inner.release_steps(&name, token).await {
                // The next re-sync frees it: Redis keeps only what the local map holds.
                debug!(error = %e, %name, "release failed");
                inner.failed();
            }
        });
    }
}

/// `"{to} {from} {body}"` → parts. Names never contain spaces; the body may.
fn split_payload(payload: &[u8]) -> Option<(&str, &str, &str)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (to, rest) = text.split_once(' ')?;
    let (from, body) = rest.split_once(' ')?;
    Some((to, from, body))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Renews the lease every `renew_interval` and re-syncs when needed, until cancelled. With
/// metrics on, every [`NODES_ALIVE_EVERY`] renewals it also counts the live nodes.
async fn keeper(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(inner.config.renew_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut turns: u32 = 0;
    loop {
        tokio::select! {
            () = inner.cancel.cancelled() => return,
            _ = tick.tick() => {}
            () = inner.kick.notified() => {}
        }
        inner.renew().await;
        if inner.store.metrics().is_on() && turns.is_multiple_of(NODES_ALIVE_EVERY) {
            inner.count_nodes().await;
        }
        turns = turns.wrapping_add(1);
    }
}

/// Renewals between two counts of the live nodes: the gauge is for dashboards, not worth a
/// Redis call per node per second.
const NODES_ALIVE_EVERY: u32 = 5;

/// A live subscription to this node's channel (and to the channels of the rooms it has
/// members in).
enum Listening {
    /// `SUBSCRIBE` on a connection of its own (standalone Redis).
    Single {
        messages: std::pin::Pin<Box<dyn futures_util::Stream<Item = redis::Msg> + Send>>,
        sink: redis::aio::PubSubSink,
    },
    /// `SSUBSCRIBE` on a cluster connection of its own (RESP3): each subscription sits on the
    /// master of its channel's slot; the messages come through `rx`.
    Cluster {
        conn: redis::cluster_async::ClusterConnection,
        rx: mpsc::UnboundedReceiver<redis::PushInfo>,
        /// This node's own channel: only its end ends the subscription.
        channel: String,
    },
}

/// What subscribes to and unsubscribes from room channels on the live subscription.
#[derive(Clone)]
enum Subscriber {
    Single(redis::aio::PubSubSink),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Subscriber {
    async fn subscribe(&mut self, channel: String) -> redis::RedisResult<()> {
        match self {
            Self::Single(sink) => sink.subscribe(channel).await,
            Self::Cluster(conn) => conn.ssubscribe(channel).await,
        }
    }

    async fn unsubscribe(&mut self, channel: String) -> redis::RedisResult<()> {
        match self {
            Self::Single(sink) => sink.unsubscribe(channel).await,
            Self::Cluster(conn) => conn.sunsubscribe(channel).await,
        }
    }
}

/// The room channels listened to (`Inner::listening`): while the subscription is up, every
/// room with members here (joined or joining) is in `rooms`.
#[derive(Default)]
struct Listened {
    subscriber: Option<Subscriber>,
    rooms: HashSet<RoomName>,
}

/// One message published on this node's channel.
enum Payload {
    Single(redis::Msg),
    Cluster(Vec<u8>),
}

impl Payload {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Single(m) => m.get_payload_bytes(),
            Self::Cluster(b) => b,
        }
    }
}

impl Listening {
    async fn start(inner: &Inner, channel: &str) -> redis::RedisResult<Self> {
        match inner.store.backend() {
            Backend::Single(client) => {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(channel).await?;
                let (sink, messages) = pubsub.split();
                Ok(Self::Single {
                    messages: Box::pin(messages),
                    sink,
                })
            }
            Backend::Cluster(seeds) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let mut conn = seeds.subscriber(tx)?.get_async_connection().await?;
                conn.ssubscribe(channel).await?;
                Ok(Self::Cluster {
                    conn,
                    rx,
                    channel: channel.to_owned(),
                })
            }
        }
    }

    fn subscriber(&self) -> Subscriber {
        match self {
            Self::Single { sink, .. } => Subscriber::Single(sink.clone()),
            Self::Cluster { conn, .. } => Subscriber::Cluster(conn.clone()),
        }
    }

    /// The next message; `None` once the subscription may have missed some (its connection
    /// dropped). On a Redis Cluster a dropped shard connection (a failover, a restart) ends
    /// it too, even though the client would resubscribe by itself: the node then builds a new
    /// subscription from the seed nodes, which finds the shard's new master, and re-syncs.
    ///
    /// A shard that stops serving a channel's slot (a planned failover makes its master a
    /// replica) unsubscribes its clients without dropping them: that ends the subscription
    /// too when it is this node's channel or a room's that `wanted` still holds.
    async fn next(&mut self, wanted: impl Fn(&RoomName) -> bool) -> Option<Payload> {
        match self {
            Self::Single { messages, .. } => messages.next().await.map(Payload::Single),
            Self::Cluster { rx, channel, .. } => loop {
                let push = rx.recv().await?;
                match push.kind {
                    redis::PushKind::SMessage => {
                        if let Some(redis::Value::BulkString(b)) = push.data.into_iter().nth(1) {
                            return Some(Payload::Cluster(b));
                        }
                    }
                    redis::PushKind::Disconnection => return None,
                    // A room's channel this node left (nobody here is in it any more) is not
                    // an end; one it still needs is.
                    redis::PushKind::SUnsubscribe => {
                        if let Some(redis::Value::BulkString(c)) = push.data.first() {
                            if c == channel.as_bytes()
                                || keys::room_of_lines(c)
                                    .and_then(|r| RoomName::parse_with_limit(r, usize::MAX).ok())
                                    .is_some_and(|r| wanted(&r))
                            {
                                return None;
                            }
                        }
                    }
                    _ => {}
                }
            },
        }
    }
}

/// Listens on this node's channel, reconnecting after any loss, until cancelled.
async fn subscriber(inner: Arc<Inner>) {
    let channel = keys::deliver(inner.node.as_str());
    let mut was_up = true;
    loop {
        let attempt = tokio::select! {
            () = inner.cancel.cancelled() => return,
            r = tokio::time::timeout(inner.config.call_timeout, Listening::start(&inner, &channel)) => r,
        };
        match attempt {
            Ok(Ok(mut messages)) => 'up: {
                let subscriber = messages.subscriber();
                if !inner.listen_again(subscriber).await {
                    break 'up;
                }
                info!(%channel, "listening for messages from other nodes");
                was_up = true;
                inner.subscribed.store(true, Ordering::Relaxed);
                inner.store.metrics().subscribed(true);
                // Messages may have been missed and names may have expired while down.
                inner.failed();
                loop {
                    tokio::select! {
                        () = inner.cancel.cancelled() => return,
                        msg = messages.next(|room| inner.rooms.has_room(room)) => match msg {
                            Some(msg) => inner.handle_published(msg.bytes()),
                            None => break,
                        },
                    }
                }
                inner.subscribed.store(false, Ordering::Relaxed);
                inner.store.metrics().subscribed(false);
                inner.listening.lock().await.subscriber = None;
                warn!("lost the redis subscription; reconnecting");
            }
            Ok(Err(e)) if was_up => {
                was_up = false;
                debug!(error = %e, "cannot subscribe yet");
            }
            Err(_) if was_up => {
                was_up = false;
                debug!("subscribing timed out");
            }
            _ => {}
        }
        tokio::select! {
            () = inner.cancel.cancelled() => return,
            () = tokio::time::sleep(RECONNECT_PAUSE) => {}
        }
    }
}

impl Hub for RedisHub {
    type Lease = RedisLease;

    async fn login(&self, name: &Username, outbox: &Arc<Outbox>) -> Result<RedisLease, LoginError> {
        let inner = &self.inner;
        if !inner.subscribed.load(Ordering::Relaxed) {
            // Nobody could reach this user from another node; and Redis is likely down.
            return Err(LoginError::Unavailable);
        }
        let token = inner.next_token.fetch_add(1, Ordering::Relaxed);
        {
            let mut local = inner.local();
            if local.contains_key(name) {
                return Err(LoginError::InUse);
            }
            local.insert(
                name.clone(),
                Local {
                    token,
                    outbox: Arc::clone(outbox),
                    active: false,
                    account: false,
                },
            );
        }
        // From here the lease owns the reservation: however this future ends (refused,
        // failed, cancelled mid-call), dropping it removes the local entry and the name in
        // Redis if the claim went through.
        let mut lease = RedisLease {
            inner: Arc::clone(inner),
            name: name.clone(),
            token,
            release_in_redis: true,
        };
        match inner.claim(false, name, token).await {
            Ok(()) => Ok(lease),
            Err(e) => {
                // A refused claim wrote nothing. A failed one may have: it marked Redis as
                // out of step, and the re-sync frees what the local map does not hold.
                lease.release_in_redis = false;
                Err(e)
            }
        }
    }

    /// An earlier local session of the name is evicted here; one on another node is evicted
    /// by its node when the take-over script tells it (its old lease then frees nothing: the
    /// name is held with this login's token).
    async fn take_over(
        &self,
        name: &Username,
        outbox: &Arc<Outbox>,
    ) -> Result<RedisLease, LoginError> {
        let inner = &self.inner;
        if !inner.subscribed.load(Ordering::Relaxed) {
            return Err(LoginError::Unavailable);
        }
        let token = inner.next_token.fetch_add(1, Ordering::Relaxed);
        let earlier = inner.local().insert(
            name.clone(),
            Local {
                token,
                outbox: Arc::clone(outbox),
                active: false,
                account: true,
            },
        );
        if let Some(earlier) = earlier {
            info!(%name, "logged in again with the account's password; closing the earlier session");
            earlier.outbox.evict();
        }
        let mut lease = RedisLease {
            inner: Arc::clone(inner),
            name: name.clone(),
            token,
            release_in_redis: true,
        };
        match inner.claim(true, name, token).await {
            Ok(()) => Ok(lease),
            Err(e) => {
                lease.release_in_redis = false;
                Err(e)
            }
        }
    }

    fn serves_rooms(&self) -> bool {
        true
    }

    fn history(&self) -> Option<&History> {
        self.history.as_ref()
    }

    fn in_room(&self, lease: &RedisLease, room: &tcpchat_proto::RoomName) -> bool {
        self.inner.rooms.is_in(room, lease.token)
    }

    async fn room(
        &self,
        lease: &RedisLease,
        outbox: &Arc<Outbox>,
        request: RoomRequest<'_>,
        limits: RoomLimits,
    ) -> Result<(), RoomError> {
        self.inner.room(lease, outbox, request, limits).await
    }

    async fn list(&self) -> Roster {
        // Sorted and deduplicated there (local users may also be in Redis's answer).
        Roster::new(self.inner.all_names(false).await)
    }

    async fn watch(&self, lease: &RedisLease, outbox: &Arc<Outbox>) {
        let inner = &self.inner;
        inner.watchers().insert(
            lease.token,
            Watcher {
                outbox: Arc::clone(outbox),
                held: Some(Vec::new()),
            },
        );
        let mut names = inner.all_names(true).await;
        names.sort_unstable();
        names.dedup();
        let mut watchers = inner.watchers();
        // Gone if the connection ended meanwhile (its lease dropped).
        if let Some(w) = watchers.get_mut(&lease.token) {
            let held = w.held.take().unwrap_or_default();
            let _ = w.outbox.push_with(|buf| {
                tcpchat_proto::Reply::encode_online_list(buf, names.iter().map(Username::as_str));
                buf.extend_from_slice(&held);
            });
        }
    }

    /// Delivered if the recipient is on a node; else, if it is an account nobody holds,
    /// kept in its stream (`SEND-QUEUED`), decided with the holder key in one step. A name
    /// held but not reached (its login moving between nodes) is tried again, a few times.
    async fn deliver_or_queue(&self, from: &Username, to: &Username, body: &str) -> DirectResult {
        for _ in 0..3 {
            if self.deliver(from, to, body).await == Delivery::Delivered {
                return DirectResult::Delivered;
            }
            match self
                .inner
                .queue_direct(to.as_str(), from.as_str(), body)
                .await
            {
                Ok(direct::Queued::Stored) => return DirectResult::Queued,
                Ok(direct::Queued::Held) => {}
                Ok(direct::Queued::NotAccount) => return DirectResult::NoSuchUser,
                Err(e) => {
                    debug!(error = %e, %to, "cannot keep a message for an offline account");
                    return DirectResult::NoSuchUser;
                }
            }
        }
        DirectResult::NoSuchUser
    }

    async fn deliver(&self, from: &Username, to: &Username, body: &str) -> Delivery {
        match self.submit(from, to, body).await {
            Sent::Now(outcome) => outcome,
            Sent::Later(outcome) => outcome.await.unwrap_or(Delivery::NoSuchUser),
        }
    }

    /// A local recipient is served at once, without Redis; any other message goes to the
    /// router, whose answer comes later. One connection's calls enter the router's queue in
    /// order, which keeps them in order to the end.
    fn submit(
        &self,
        from: &Username,
        to: &Username,
        body: &str,
    ) -> impl std::future::Future<Output = Sent> + Send {
        let inner = &self.inner;
        // An account of this node: numbered first, in the numbering task's order.
        if let Some(numbering) = inner
            .numbering
            .as_ref()
            .filter(|_| inner.direct_mode(to.as_str(), None).is_some())
        {
            let (reply, outcome) = tokio::sync::oneshot::channel();
            let sent = match numbering.send(direct::Job::Local {
                to: to.as_str().to_owned(),
                from: from.as_str().to_owned(),
                body: body.to_owned(),
                reply,
            }) {
                Ok(()) => Sent::Later(outcome),
                Err(_) => Sent::Now(Delivery::NoSuchUser),
            };
            return std::future::ready(sent);
        }
        let sent = match inner.deliver_local(to.as_str(), from.as_str(), body, None) {
            Some(outcome) => Sent::Now(outcome),
            None => {
                let (reply, outcome) = tokio::sync::oneshot::channel();
                match inner
                    .router
                    .send(router::Job::Send(router::Msg::new(to, from, body, reply)))
                {
                    Ok(()) => Sent::Later(outcome),
                    Err(_) => Sent::Now(Delivery::NoSuchUser),
                }
            }
        };
        std::future::ready(sent)
    }
}

/// A name held in the cluster; dropping it frees the name here at once and in Redis
/// shortly after.
pub struct RedisLease {
    inner: Arc<Inner>,
    name: Username,
    token: u64,
    release_in_redis: bool,
}

impl std::fmt::Debug for RedisLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLease")
            .field("name", &self.name)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisLease {
    fn drop(&mut self) {
        self.inner.watchers().remove(&self.token);
        if self.release_in_redis {
            self.inner.forget(&self.name, self.token);
        } else {
            let mut local = self.inner.local();
            if local.get(&self.name).is_some_and(|l| l.token == self.token) {
                local.remove(&self.name);
            }
        }
        if !self.inner.local().contains_key(&self.name) {
            self.inner.direct().remove(self.name.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads() {
        assert_eq!(
            split_payload(b"bob ann hi  there "),
            Some(("bob", "ann", "hi  there "))
        );
        assert_eq!(split_payload(b"bob ann"), None);
        assert_eq!(split_payload(b"bob \xff x"), None);
    }
}
