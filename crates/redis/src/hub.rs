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
//! Rooms (`docs/cluster.md`, "Rooms"; `rooms.rs`): one script per room request changes the
//! room in Redis and publishes its line to every node with members, on the same channel, so
//! each node hands its members one room's lines in the order Redis ran the scripts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use tcpchat_proto::Username;
use tcpchat_server::{
    Delivery, Hub, LoginError, MemoryHub, Outbox, RoomError, RoomLimits, RoomRequest, Roster,
};
use tokio::sync::{Notify, RwLock};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::rooms::{user_line, LocalRooms};
use crate::scripts::{deliver_channel, Scripts};
use crate::store::{Store, RECONNECT_PAUSE};
use crate::{check_url, ClusterConfig, ClusterError, NodeId};

/// The cluster backend for [`tcpchat_server::run_with_hub`]. Cheap to clone; clones share
/// one node.
#[derive(Clone)]
pub struct RedisHub {
    inner: Arc<Inner>,
}

struct Inner {
    node: NodeId,
    config: ClusterConfig,
    store: Store,
    scripts: Scripts,
    local: Mutex<HashMap<Username, Local>>,
    /// Presence watchers on this node, by their login's token.
    watchers: Mutex<HashMap<u64, Watcher>>,
    /// This node's members of every room (see `rooms.rs`).
    rooms: LocalRooms,
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
}

struct Local {
    token: u64,
    outbox: Arc<Outbox>,
    /// Confirmed by Redis and answered `HELLO`; until then the name is only reserved here
    /// (so two local logins of one name cannot both reach Redis) and is not reachable.
    active: bool,
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
        let shown = check_url(&config.url)?;
        let client =
            redis::Client::open(config.url.as_str()).map_err(|e| ClusterError::InvalidUrl {
                url: config.url.clone(),
                reason: e.to_string(),
            })?;
        let inner = Arc::new(Inner {
            node: config.node_id.clone(),
            store: Store::new(client, config.call_timeout),
            scripts: Scripts::new(),
            local: Mutex::new(HashMap::new()),
            watchers: Mutex::new(HashMap::new()),
            rooms: LocalRooms::default(),
            next_token: AtomicU64::new(1),
            subscribed: AtomicBool::new(false),
            dirty: AtomicBool::new(true),
            kick: Notify::new(),
            sync_gate: RwLock::new(()),
            runtime: tokio::runtime::Handle::current(),
            cancel: CancellationToken::new(),
            config,
        });
        info!(node = %inner.node, redis = %shown, "cluster mode: joining");
        tokio::spawn(subscriber(Arc::clone(&inner)));
        tokio::spawn(keeper(Arc::clone(&inner)));
        Ok(Self { inner })
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
        let mut call = inner.scripts.leave.prepare_invoke();
        inner.args(&mut call);
        match inner.store.invoke::<i64>(&call).await {
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
        let mut call = self.scripts.list.prepare_invoke();
        self.args(&mut call);
        if watching {
            call.arg(1);
        }
        match self.store.invoke::<Vec<String>>(&call).await {
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

    /// The arguments every script starts with (see `scripts.rs`).
    fn args(&self, call: &mut redis::ScriptInvocation<'_>) {
        call.arg(self.node.as_str())
            .arg(millis(self.config.settle))
            .arg(millis(self.config.node_lease));
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

    async fn claim(&self, name: &Username, token: u64) -> Result<(), LoginError> {
        let _shared = self.sync_gate.read().await;
        let mut call = self.scripts.claim.prepare_invoke();
        self.args(&mut call);
        call.arg(name.as_str()).arg(token);
        let answer: String = match self.store.invoke(&call).await {
            Ok(a) => a,
            Err(e) => {
                debug!(error = %e, %name, "claim failed");
                self.failed();
                return Err(LoginError::Unavailable);
            }
        };
        match answer.as_str() {
            "OK" => {
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
            "IN-USE" => Err(LoginError::InUse),
            "STALE" => {
                self.failed();
                Err(LoginError::Unavailable)
            }
            "SETTLING" => {
                debug!(%name, "login refused while nodes re-register");
                Err(LoginError::Unavailable)
            }
            other => {
                warn!(answer = other, "unexpected answer from the claim script");
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
        let mut call = self.scripts.sync.prepare_invoke();
        self.args(&mut call);
        for (name, token) in &held {
            call.arg(name.as_str()).arg(*token);
        }
        match self.store.invoke::<Vec<String>>(&call).await {
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

    async fn renew(&self) {
        let mut call = self.scripts.renew.prepare_invoke();
        self.args(&mut call);
        call.arg(u8::from(!self.watchers().is_empty()));
        match self.store.invoke::<i64>(&call).await {
            Ok(1) if !self.dirty.load(Ordering::Relaxed) => {}
            Ok(_) => self.sync().await,
            Err(e) => {
                debug!(error = %e, "lease renewal failed");
                self.dirty.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Queues a message published for one of this node's users, or a presence event for this
    /// node's watchers.
    fn handle_published(self: &Arc<Self>, payload: &[u8]) {
        if let Some(rest) = payload.strip_prefix(b",r") {
            match std::str::from_utf8(rest) {
                Ok(rest) => self.rooms.handle_room_line(rest),
                Err(_) => warn!("ignoring a cluster room line that is not UTF-8"),
            }
            return;
        }
        if let Some(rest) = payload.strip_prefix(b",u") {
            return self.handle_user_line(rest);
        }
        if let Some(rest) = payload.strip_prefix(b",") {
            return self.handle_presence(rest);
        }
        let Some((to, from, body)) = split_payload(payload) else {
            warn!("ignoring a malformed cluster message");
            return;
        };
        if self.deliver_local(to, from, body).is_none() {
            debug!(%to, "message for a user no longer here; dropped");
        }
    }

    /// `{user} {room} {kind} {rest}`: a room's answer for one local user, in the room's order.
    fn handle_user_line(&self, payload: &[u8]) {
        let parsed = std::str::from_utf8(payload)
            .ok()
            .and_then(|p| p.split_once(' '))
            .and_then(|(to, rest)| Some((to, user_line(rest)?)));
        let Some((to, line)) = parsed else {
            warn!("ignoring a malformed cluster room answer");
            return;
        };
        let outbox = match self.local().get(to) {
            Some(l) if l.active => Arc::clone(&l.outbox),
            _ => return,
        };
        let _ = outbox.push_with(|buf| buf.extend_from_slice(&line));
    }

    /// Runs one room request's script: `OK`, a refusal, or `None` if Redis did not answer.
    async fn room_call(&self, op: &str, room: &str, name: &str, args: &[&str]) -> Option<String> {
        let mut call = self.scripts.room.prepare_invoke();
        self.args(&mut call);
        call.arg(op).arg(room).arg(name);
        for a in args {
            call.arg(*a);
        }
        match self.store.invoke::<String>(&call).await {
            Ok(answer) => Some(answer),
            Err(e) => {
                debug!(error = %e, op, "room call failed");
                None
            }
        }
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

    /// Queues `DELIVERY` for a local user; `None` if there is no such (logged-in) user here.
    ///
    /// A recipient whose queue refuses the line is being dropped for not reading: its name
    /// is released at once, so later senders on every node get `BAD-DEST-USER` as they
    /// would from a single server, even before its connection has closed.
    fn deliver_local(self: &Arc<Self>, to: &str, from: &str, body: &str) -> Option<Delivery> {
        let (outbox, token) = match self.local().get(to) {
            Some(l) if l.active => (Arc::clone(&l.outbox), l.token),
            Some(_) => return Some(Delivery::NoSuchUser),
            None => return None,
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
        // Out of this node's rooms at once; the others hear PARTED from the script below.
        let in_rooms = self.rooms.drop_member(token);
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
            if in_rooms {
                let mut call = inner.scripts.room.prepare_invoke();
                inner.args(&mut call);
                call.arg("leave").arg("").arg(name.as_str());
                if let Err(e) = inner.store.invoke::<i64>(&call).await {
                    debug!(error = %e, %name, "leaving rooms failed");
                }
            }
            let mut call = inner.scripts.release.prepare_invoke();
            inner.args(&mut call);
            call.arg(name.as_str()).arg(token);
            if let Err(e) = inner.store.invoke::<i64>(&call).await {
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

/// Renews the lease every `renew_interval` and re-syncs when needed, until cancelled.
async fn keeper(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(inner.config.renew_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = inner.cancel.cancelled() => return,
            _ = tick.tick() => {}
            () = inner.kick.notified() => {}
        }
        inner.renew().await;
    }
}

/// Listens on this node's channel, reconnecting after any loss, until cancelled.
async fn subscriber(inner: Arc<Inner>) {
    let channel = deliver_channel(inner.node.as_str());
    let mut was_up = true;
    loop {
        let connect = async {
            let mut pubsub = inner.store.client().get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let attempt = tokio::select! {
            () = inner.cancel.cancelled() => return,
            r = tokio::time::timeout(inner.config.call_timeout, connect) => r,
        };
        match attempt {
            Ok(Ok(pubsub)) => {
                info!(%channel, "listening for messages from other nodes");
                was_up = true;
                inner.subscribed.store(true, Ordering::Relaxed);
                // Messages may have been missed and names may have expired while down.
                inner.failed();
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        () = inner.cancel.cancelled() => return,
                        msg = messages.next() => match msg {
                            Some(msg) => inner.handle_published(msg.get_payload_bytes()),
                            None => break,
                        },
                    }
                }
                inner.subscribed.store(false, Ordering::Relaxed);
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
        match inner.claim(name, token).await {
            Ok(()) => Ok(lease),
            Err(e) => {
                // A refused claim wrote nothing. A failed one may have: it marked Redis as
                // out of step, and the re-sync frees what the local map does not hold.
                lease.release_in_redis = false;
                Err(e)
            }
        }
    }

    fn serves_rooms(&self) -> bool {
        true
    }

    async fn room(
        &self,
        lease: &RedisLease,
        outbox: &Arc<Outbox>,
        request: RoomRequest<'_>,
        limits: RoomLimits,
    ) -> Result<(), RoomError> {
        let inner = &self.inner;
        let me = lease.name.as_str();
        let answer = match &request {
            RoomRequest::Rooms => {
                let mut call = inner.scripts.room.prepare_invoke();
                inner.args(&mut call);
                call.arg("rooms").arg("").arg(me);
                let mut rooms: Vec<String> = match inner.store.invoke(&call).await {
                    Ok(rooms) => rooms,
                    Err(e) => {
                        debug!(error = %e, "room list failed");
                        return Err(RoomError::Unavailable);
                    }
                };
                rooms.sort_unstable();
                let _ = outbox.push_with(|buf| {
                    tcpchat_proto::Reply::encode_rooms(buf, rooms.iter().map(String::as_str));
                });
                return Ok(());
            }
            RoomRequest::Join(room) => {
                let added = inner
                    .rooms
                    .add_pending(room, &lease.name, lease.token, outbox);
                let (most, members) = (
                    limits.rooms_per_user.to_string(),
                    limits.members_per_room.to_string(),
                );
                let answer = inner
                    .room_call("join", room.as_str(), me, &[&most, &members])
                    .await;
                if added && answer.as_deref() != Some("OK") {
                    inner.rooms.remove_pending(room, lease.token);
                }
                answer
            }
            RoomRequest::Part(room) => inner.room_call("part", room.as_str(), me, &[]).await,
            RoomRequest::Members(room) => inner.room_call("members", room.as_str(), me, &[]).await,
            RoomRequest::Say { room, body } => {
                inner.room_call("say", room.as_str(), me, &[body]).await
            }
            RoomRequest::Topic { room, text } => {
                let args: Vec<&str> = text.iter().copied().collect();
                inner.room_call("topic", room.as_str(), me, &args).await
            }
            RoomRequest::Kick { room, name } => {
                inner
                    .room_call("kick", room.as_str(), me, &[name.as_str()])
                    .await
            }
        };
        match answer.as_deref() {
            Some("OK") => Ok(()),
            Some("NOT-MEMBER") => Err(RoomError::NotMember),
            Some("NOT-OWNER") => Err(RoomError::NotOwner),
            Some("ROOM-LIMIT") => Err(RoomError::RoomLimit),
            Some("ROOM-FULL") => Err(RoomError::RoomFull),
            Some("NO-SUCH-MEMBER") => Err(RoomError::NoSuchMember),
            Some(other) => {
                warn!(answer = other, "unexpected answer from the room script");
                Err(RoomError::Unavailable)
            }
            None => {
                inner.failed();
                Err(RoomError::Unavailable)
            }
        }
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

    async fn deliver(&self, from: &Username, to: &Username, body: &str) -> Delivery {
        let inner = &self.inner;
        if let Some(outcome) = inner.deliver_local(to.as_str(), from.as_str(), body) {
            return outcome;
        }
        let payload = format!("{to} {from} {body}");
        let mut call = inner.scripts.route.prepare_invoke();
        inner.args(&mut call);
        call.arg(to.as_str()).arg(payload);
        match inner.store.invoke::<i64>(&call).await {
            Ok(n) if n > 0 => Delivery::Delivered,
            Ok(_) => Delivery::NoSuchUser,
            Err(e) => {
                debug!(error = %e, %to, "cross-node send failed");
                inner.failed();
                Delivery::NoSuchUser
            }
        }
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
