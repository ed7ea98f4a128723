//! Rooms across nodes as single-slot steps (`docs/cluster.md`, "Rooms"), the same on a
//! standalone Redis and on a Redis Cluster.
//!
//! - **One script per request, in the room's slot** ([`SCRIPTS.room`]): it checks and changes
//!   the room's keys (`{r:ROOM}`) and publishes the room's line on the room's own channel,
//!   also in that slot, in the same step. Redis runs one script at a time on that shard and
//!   delivers a channel in publish order, so the room has one order, whichever nodes ran the
//!   scripts: there is no cross-node merge to get wrong.
//! - **Nodes listen to the rooms they have members in**: the channel is subscribed on the
//!   node's one subscription *before* a joiner's script runs (so its `JOINED` cannot be
//!   missed), and left once the node's last member of the room is gone.
//! - **Side indexes in other slots**, written after the room's script and repaired by the
//!   re-sync: `{n:NODE}:rooms` (who to part when a node dies) and `{global}:rooms` (`ROOMS`).
//!   The per-user limit needs none: a user is on one node, which knows its rooms.

use std::sync::Arc;

use redis::Value;
use tcpchat_proto::{Reply, RoomName, Username};
use tcpchat_server::history::{Page, StreamView};
use tcpchat_server::{Outbox, RoomError, RoomLimits, RoomRequest};
use tracing::debug;

use super::steps::{int, items, text, texts};
use super::{Inner, RedisLease, Subscriber};
use crate::keys;
use crate::scripts::{eval, SCRIPTS};
use crate::store::{Backend, CallError};

impl Inner {
    fn publish_verb(&self) -> &'static str {
        match self.store.backend() {
            Backend::Single(_) => "PUBLISH",
            Backend::Cluster(_) => "SPUBLISH",
        }
    }

    /// Adds the room script to `pipe`, by its digest (`EVALSHA`: a `SAY` then sends a few
    /// dozen bytes, not the script), or whole with `full`.
    fn room_call<'p>(
        &self,
        pipe: &'p mut redis::Pipeline,
        full: bool,
        room: &str,
        op: &str,
        node: &str,
        name: &str,
    ) -> &'p mut redis::Pipeline {
        let keys = keys::room(room);
        let pipe = if full {
            eval(pipe, SCRIPTS.room, &keys)
        } else {
            pipe.cmd("EVALSHA").arg(room_digest()).arg(keys.len());
            for k in &keys {
                pipe.arg(k);
            }
            pipe
        };
        pipe.arg(self.publish_verb())
            .arg(room)
            .arg(op)
            .arg(node)
            .arg(name)
    }

    /// Runs a step of room scripts built by `build` (given `full`: see [`Inner::room_call`]):
    /// by digest, and whole once more if a shard does not have the script yet (a new or
    /// restarted Redis, a promoted replica that was never sent it: `NOSCRIPT`). A script
    /// refused so did not run; the others of a step of several (`rejoin`s) run twice, which
    /// they allow: each changes nothing the second time.
    async fn room_step(
        &self,
        commands: usize,
        build: impl Fn(&mut redis::Pipeline, bool),
    ) -> Result<Vec<Value>, CallError> {
        let mut pipe = redis::pipe();
        build(&mut pipe, false);
        match self.step(&pipe, commands).await {
            Err(CallError::Redis(e)) if e.code() == Some("NOSCRIPT") => {
                let mut pipe = redis::pipe();
                build(&mut pipe, true);
                self.step(&pipe, commands).await
            }
            other => other,
        }
    }

    /// Runs the room script once; its answer, as a list.
    async fn room_script(
        &self,
        room: &str,
        op: &str,
        name: &str,
        args: &[&str],
    ) -> Result<Vec<Value>, CallError> {
        let me = self.node.as_str();
        let mut v = self
            .room_step(1, |pipe, full| {
                let call = self.room_call(pipe, full, room, op, me, name);
                for a in args {
                    call.arg(*a);
                }
            })
            .await?;
        Ok(v.pop().map(items).unwrap_or_default())
    }

    /// The side indexes after `name` (on `node`) was added to `room` (`added`) or removed
    /// from it; `edge`: the room was created or emptied by that change.
    async fn room_index(
        &self,
        room: &str,
        node: &str,
        name: &str,
        added: bool,
        edge: bool,
    ) -> Result<(), CallError> {
        let verb = if added { "SADD" } else { "SREM" };
        let mut pipe = redis::pipe();
        pipe.cmd(verb)
            .arg(keys::node_rooms(node))
            .arg(format!("{room} {name}"));
        if edge {
            pipe.cmd(verb).arg(keys::rooms()).arg(room);
        }
        self.step(&pipe, 1 + usize::from(edge)).await?;
        if edge && !added {
            // Created again since it emptied: its joiner's `SADD` may have come before our
            // `SREM`. Read after the `SREM` (another slot: a step of its own), so one of the
            // two puts it back.
            let mut pipe = redis::pipe();
            pipe.cmd("EXISTS").arg(keys::room_key(room, "members"));
            if self.step(&pipe, 1).await?.first().map_or(0, int) == 1 {
                let mut pipe = redis::pipe();
                pipe.cmd("SADD").arg(keys::rooms()).arg(room);
                self.step(&pipe, 1).await?;
            }
        }
        Ok(())
    }

    /// `name` on `node` leaves `room` if Redis still has it there (its connection ended, its
    /// node left or was reaped): the others hear `PARTED`.
    pub(super) async fn room_drop(
        &self,
        room: &str,
        node: &str,
        name: &str,
    ) -> Result<(), CallError> {
        let v = self
            .room_step(1, |pipe, full| {
                self.room_call(pipe, full, room, "drop", node, name);
            })
            .await?
            .pop()
            .map(items)
            .unwrap_or_default();
        if v.get(1).map_or(0, int) == 1 {
            self.room_index(room, node, name, false, v.get(2).map_or(0, int) == 1)
                .await?;
        }
        Ok(())
    }

    /// Parts every room member Redis lists on `node` (reaped, or leaving cleanly).
    pub(super) async fn rooms_of_node_part(&self, node: &str) -> Result<(), CallError> {
        let mut pipe = redis::pipe();
        pipe.cmd("SMEMBERS").arg(keys::node_rooms(node));
        let entries = self
            .step(&pipe, 1)
            .await?
            .pop()
            .map(texts)
            .unwrap_or_default();
        for entry in entries {
            if let Some((room, name)) = entry.split_once(' ') {
                self.room_drop(room, node, name).await?;
            }
        }
        Ok(())
    }

    /// After the names, a re-sync writes this node's rooms back: each member whose `JOINED`
    /// it delivered is a member in Redis again (`rejoin`: the others hear `JOINED` if Redis
    /// had lost it, e.g. to a failover or a reaping while this node was cut off); members
    /// Redis has here that this node no longer has are parted; the node's index is
    /// rewritten.
    pub(super) async fn rooms_sync_steps(&self) -> Result<(), CallError> {
        let me = self.node.as_str();
        let joined = self.rooms.memberships();
        let mut pipe = redis::pipe();
        pipe.cmd("SMEMBERS").arg(keys::node_rooms(me));
        let old = self
            .step(&pipe, 1)
            .await?
            .pop()
            .map(texts)
            .unwrap_or_default();
        if !joined.is_empty() {
            let answers = self
                .room_step(joined.len(), |pipe, full| {
                    for (room, name) in &joined {
                        self.room_call(pipe, full, room.as_str(), "rejoin", me, name.as_str());
                    }
                })
                .await?;
            let created: Vec<&RoomName> = joined
                .iter()
                .zip(answers)
                .filter(|(_, a)| items(a.clone()).get(2).map_or(0, int) == 1)
                .map(|((room, _), _)| room)
                .collect();
            if !created.is_empty() {
                let mut pipe = redis::pipe();
                let add = pipe.cmd("SADD").arg(keys::rooms());
                for room in &created {
                    add.arg(room.as_str());
                }
                self.step(&pipe, 1).await?;
            }
        }
        // Joining members count as here: their own steps write them.
        let keep: std::collections::HashSet<String> = self
            .rooms
            .memberships_with_joining()
            .iter()
            .map(|(room, name)| format!("{room} {name}"))
            .collect();
        for entry in old.iter().filter(|e| !keep.contains(*e)) {
            if let Some((room, name)) = entry.split_once(' ') {
                self.room_drop(room, me, name).await?;
            }
        }
        let mut pipe = redis::pipe();
        let set = eval(&mut pipe, SCRIPTS.set_users, &[keys::node_rooms(me)]);
        for entry in &keep {
            set.arg(entry.as_str());
        }
        self.step(&pipe, 1).await.map(drop)
    }

    /// Every room with members, from the index, each checked in its own slot (the index is
    /// repaired lazily).
    async fn room_list(&self) -> Result<Vec<String>, CallError> {
        let mut pipe = redis::pipe();
        pipe.cmd("SMEMBERS").arg(keys::rooms());
        let rooms = self
            .step(&pipe, 1)
            .await?
            .pop()
            .map(texts)
            .unwrap_or_default();
        if rooms.is_empty() {
            return Ok(rooms);
        }
        let mut pipe = redis::pipe();
        for room in &rooms {
            pipe.cmd("EXISTS").arg(keys::room_key(room, "members"));
        }
        let live = self.step(&pipe, rooms.len()).await?;
        Ok(rooms
            .into_iter()
            .zip(live)
            .filter(|(_, v)| int(v) == 1)
            .map(|(r, _)| r)
            .collect())
    }

    /// Listens to `room`'s channel, if this node does not already. False if it cannot (no
    /// subscription, or Redis did not confirm in time).
    async fn listen(&self, room: &RoomName) -> bool {
        let mut listening = self.listening.lock().await;
        if listening.rooms.contains(room) {
            return true;
        }
        let Some(subscriber) = listening.subscriber.as_mut() else {
            return false;
        };
        let channel = keys::room_lines(room.as_str());
        match tokio::time::timeout(self.config.call_timeout, subscriber.subscribe(channel)).await {
            Ok(Ok(())) => {
                listening.rooms.insert(room.clone());
                true
            }
            Ok(Err(e)) => {
                debug!(error = %e, %room, "cannot listen to a room");
                false
            }
            Err(_) => {
                debug!(%room, "listening to a room timed out");
                false
            }
        }
    }

    /// Stops listening to `room` once it has no members here (checked again under the lock,
    /// so a joiner that came meanwhile keeps it).
    pub(super) fn unlisten_later(self: &Arc<Self>, room: RoomName) {
        let inner = Arc::clone(self);
        self.runtime.spawn(async move {
            let mut listening = inner.listening.lock().await;
            if inner.rooms.has_room(&room) || !listening.rooms.remove(&room) {
                return;
            }
            if let Some(subscriber) = listening.subscriber.as_mut() {
                let channel = keys::room_lines(room.as_str());
                let left = tokio::time::timeout(
                    inner.config.call_timeout,
                    subscriber.unsubscribe(channel),
                )
                .await;
                if !matches!(left, Ok(Ok(()))) {
                    // Harmless: lines of a room with no members here are ignored.
                    debug!(%room, "leaving a room's channel failed");
                }
            }
        });
    }

    /// A new subscription: listens to every room with members here again. False if that
    /// failed (the subscription is then dropped and built again).
    pub(super) async fn listen_again(&self, mut subscriber: Subscriber) -> bool {
        let mut listening = self.listening.lock().await;
        listening.rooms.clear();
        for room in self.rooms.rooms() {
            let channel = keys::room_lines(room.as_str());
            match tokio::time::timeout(self.config.call_timeout, subscriber.subscribe(channel))
                .await
            {
                Ok(Ok(())) => {
                    listening.rooms.insert(room);
                }
                _ => {
                    debug!(%room, "cannot listen to a room again; subscribing anew");
                    listening.rooms.clear();
                    return false;
                }
            }
        }
        listening.subscriber = Some(subscriber);
        true
    }

    /// One room request of a local user (`Hub::room`).
    pub(super) async fn room(
        self: &Arc<Self>,
        lease: &RedisLease,
        outbox: &Arc<Outbox>,
        request: RoomRequest<'_>,
        limits: RoomLimits,
    ) -> Result<(), RoomError> {
        let _shared = self.sync_gate.read().await;
        let me = lease.name.as_str();
        let answer = match &request {
            RoomRequest::Rooms => {
                let mut rooms = self.room_list().await.map_err(|e| self.room_failed(&e))?;
                rooms.sort_unstable();
                let _ = outbox.push_with(|buf| {
                    Reply::encode_rooms(buf, rooms.iter().map(String::as_str));
                });
                return Ok(());
            }
            RoomRequest::Join(room) => return self.room_join(room, lease, outbox, limits).await,
            RoomRequest::Members(room) => {
                let v = self.room_script(room.as_str(), "members", me, &[]).await;
                let v = v.map_err(|e| self.room_failed(&e))?;
                if v.first().and_then(text).as_deref() == Some("LIST") {
                    // Not a member: no order to keep, the list comes back here.
                    let names: Vec<Username> = v[1..]
                        .iter()
                        .filter_map(text)
                        .filter_map(|n| Username::parse_with_limit(&n, usize::MAX).ok())
                        .collect();
                    let reply = Reply::MembersOk {
                        room: room.clone(),
                        names,
                    };
                    let line = reply.to_line();
                    let _ = outbox.push_with(|buf| buf.extend_from_slice(&line));
                    return Ok(());
                }
                v
            }
            RoomRequest::Part(room) => {
                let v = self.room_script(room.as_str(), "part", me, &[]).await;
                let v = v.map_err(|e| self.room_failed(&e))?;
                if v.get(1).map_or(0, int) == 1 {
                    let edge = v.get(2).map_or(0, int) == 1;
                    if let Err(e) = self
                        .room_index(room.as_str(), self.node.as_str(), me, false, edge)
                        .await
                    {
                        self.room_failed(&e);
                    }
                }
                v
            }
            RoomRequest::Say { room, body } => {
                let v = match self.config.history {
                    Some(h) => {
                        let cap = h.room_cap.max(1).to_string();
                        let keep = h.retention_ms().unwrap_or(0).to_string();
                        let epoch = new_epoch();
                        self.room_script(room.as_str(), "say", me, &[*body, &cap, &keep, &epoch])
                            .await
                    }
                    None => self.room_script(room.as_str(), "say", me, &[*body]).await,
                };
                v.map_err(|e| self.room_failed(&e))?
            }
            RoomRequest::Topic { room, text } => {
                let args: Vec<&str> = text.iter().copied().collect();
                let v = self.room_script(room.as_str(), "topic", me, &args).await;
                v.map_err(|e| self.room_failed(&e))?
            }
            RoomRequest::Kick { room, name } => {
                let v = self
                    .room_script(room.as_str(), "kick", me, &[name.as_str()])
                    .await;
                let v = v.map_err(|e| self.room_failed(&e))?;
                if let Some(at) = v.get(1).and_then(text) {
                    if let Err(e) = self
                        .room_index(room.as_str(), &at, name.as_str(), false, false)
                        .await
                    {
                        self.room_failed(&e);
                    }
                }
                v
            }
        };
        answer_of(&answer)
    }

    async fn room_join(
        self: &Arc<Self>,
        room: &RoomName,
        lease: &RedisLease,
        outbox: &Arc<Outbox>,
        limits: RoomLimits,
    ) -> Result<(), RoomError> {
        let token = lease.token;
        let fresh = !self.rooms.is_in(room, token);
        if fresh && self.rooms.rooms_of(token) >= limits.rooms_per_user {
            return Err(RoomError::RoomLimit);
        }
        let added = self.rooms.add_pending(room, &lease.name, token, outbox);
        let result = self
            .room_join_steps(room, &lease.name, token, fresh, limits)
            .await;
        if added && result.is_err() {
            self.rooms.remove_pending(room, token);
            self.unlisten_later(room.clone());
        }
        result
    }

    async fn room_join_steps(
        &self,
        room: &RoomName,
        name: &Username,
        token: u64,
        fresh: bool,
        limits: RoomLimits,
    ) -> Result<(), RoomError> {
        if !self.listen(room).await {
            self.failed();
            return Err(RoomError::Unavailable);
        }
        let most = limits.members_per_room.to_string();
        let v = self
            .room_script(
                room.as_str(),
                "join",
                name.as_str(),
                &[&most, if fresh { "1" } else { "0" }],
            )
            .await
            .map_err(|e| self.room_failed(&e))?;
        answer_of(&v)?;
        if v.get(1).map_or(0, int) == 1 {
            let me = self.node.as_str();
            let edge = v.get(2).map_or(0, int) == 1;
            let indexed = async {
                self.room_index(room.as_str(), me, name.as_str(), true, edge)
                    .await?;
                if !self.rooms.is_in(room, token) {
                    // Its connection ended while the script ran: out again.
                    self.room_drop(room.as_str(), me, name.as_str()).await?;
                }
                Ok::<_, CallError>(())
            };
            if let Err(e) = indexed.await {
                self.room_failed(&e);
            }
        }
        Ok(())
    }

    /// A room call that failed: Redis may now be out of step (the re-sync repairs it).
    fn room_failed(&self, e: &CallError) -> RoomError {
        debug!(error = %e, "room call failed");
        self.failed();
        RoomError::Unavailable
    }
}

impl Inner {
    /// A page of a history stream (`docs/cluster.md`, "History"): a room's or a user's
    /// (`keys::room_stream`, the first three of `keys::user_stream`), read in its slot, with the retention applied first.
    pub(super) async fn room_page(
        &self,
        stream: &[String; 3],
        below: Option<u64>,
        count: u32,
    ) -> Result<Page, CallError> {
        let keep = self
            .config
            .history
            .and_then(|h| h.retention_ms())
            .unwrap_or(0);
        let mut pipe = redis::pipe();
        eval(&mut pipe, SCRIPTS.stream_page, stream)
            // 0 tells the script "the newest"; `BEFORE 0`, like `BEFORE 1`, has nothing.
            .arg(below.map_or(0, |b| b.max(1)))
            .arg(count)
            .arg(keep)
            .arg(new_epoch());
        let v = self.step(&pipe, 1).await?;
        let mut v = v
            .into_iter()
            .next()
            .map(items)
            .unwrap_or_default()
            .into_iter();
        let epoch = v.next().as_ref().and_then(text).unwrap_or_default();
        let top = v.next().as_ref().map_or(0, int);
        let messages = v
            .filter_map(|e| super::direct::stored(&text(&e)?))
            .collect();
        Ok(Page {
            view: StreamView {
                epoch,
                top: u64::try_from(top).unwrap_or(0),
                delivered: 0,
            },
            messages,
        })
    }
}

/// A new stream's epoch: the time in ms and 32 random bits, in `0-9a-f` (the protocol's
/// 1 to 32 bytes of `0-9a-z`). Distinct across nodes and runs.
pub(super) fn new_epoch() -> String {
    use std::hash::BuildHasher;
    let salt = std::collections::hash_map::RandomState::new().hash_one(0u8) & 0xffff_ffff;
    format!("{:x}{salt:08x}", tcpchat_server::history::now_ms())
}

/// The room script's digest, for `EVALSHA`.
fn room_digest() -> &'static str {
    static DIGEST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DIGEST.get_or_init(|| redis::Script::new(SCRIPTS.room).get_hash().to_owned())
}

/// The room script's answer as the request's outcome.
fn answer_of(v: &[Value]) -> Result<(), RoomError> {
    match v.first().and_then(text).as_deref() {
        Some("OK") => Ok(()),
        Some("NOT-MEMBER") => Err(RoomError::NotMember),
        Some("NOT-OWNER") => Err(RoomError::NotOwner),
        Some("ROOM-FULL") => Err(RoomError::RoomFull),
        Some("NO-SUCH-MEMBER") => Err(RoomError::NoSuchMember),
        other => {
            tracing::warn!(answer = ?other, "unexpected answer from the room script");
            Err(RoomError::Unavailable)
        }
    }
}
