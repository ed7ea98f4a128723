//! The cluster operations as sequences of single-slot steps (`scripts.rs`, `keys.rs`), the
//! same on a standalone Redis and on a Redis Cluster.
//!
//! Each step is one pipeline: on a standalone Redis one write and one round trip; on a Redis
//! Cluster each command goes to the shard of its key, all at once. A step that fails leaves
//! Redis partly written; the caller marks the node dirty and its re-sync, which rewrites
//! everything this node owns, repairs it (`docs/cluster.md`, "Redis Cluster": the failure
//! cases).

use redis::Value;
use tcpchat_proto::Username;

use super::{millis, Inner};
use crate::keys;
use crate::scripts::{eval, SCRIPTS};
use crate::store::CallError;

/// The answer to a claim.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Claim {
    Ok,
    InUse,
    /// State was lost and nodes are re-registering.
    Settling,
    /// This node's own lease lapsed; it must re-register first.
    Stale,
}

/// What a renewal found.
pub(super) struct Renewed {
    /// The lease was still there.
    pub alive: bool,
}

pub(super) fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

pub(super) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

pub(super) fn items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) | Value::Set(a) => a,
        _ => Vec::new(),
    }
}

pub(super) fn texts(v: Value) -> Vec<String> {
    items(v).iter().filter_map(text).collect()
}

fn owner_of(holder: &str) -> &str {
    holder.split(' ').next().unwrap_or("")
}

impl Inner {
    fn lease_ms(&self) -> u64 {
        millis(self.config.node_lease)
    }

    /// Runs a pipeline and returns exactly one answer per command.
    pub(super) async fn step(
        &self,
        pipe: &redis::Pipeline,
        commands: usize,
    ) -> Result<Vec<Value>, CallError> {
        let values = self.store.values(pipe).await?;
        if values.len() == commands {
            Ok(values)
        } else {
            Err(CallError::Answers(values.len(), commands))
        }
    }

    fn global(&self, pipe: &mut redis::Pipeline, register: bool) {
        eval(
            pipe,
            SCRIPTS.global,
            &[keys::epoch(), keys::settling(), keys::nodes()],
        )
        .arg(millis(self.config.settle))
        .arg(if register { self.node.as_str() } else { "" });
    }

    /// `(fresh, settling, nodes)` from a [`SCRIPTS.global`] answer.
    fn parse_global(v: Value) -> (bool, bool, Vec<String>) {
        let mut all = items(v).into_iter();
        let fresh = all.next().is_some_and(|v| int(&v) == 1);
        let settling = all.next().is_some_and(|v| int(&v) == 1);
        (fresh, settling, all.filter_map(|v| text(&v)).collect())
    }

    fn state(pipe: &mut redis::Pipeline, node: &str) {
        eval(
            pipe,
            SCRIPTS.state,
            &[keys::alive(node), keys::watching(node)],
        );
    }

    /// `(alive, watching)` of each of `nodes`.
    async fn states(&self, nodes: &[String]) -> Result<Vec<(bool, bool)>, CallError> {
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for n in nodes {
            Self::state(&mut pipe, n);
        }
        let values = self.step(&pipe, nodes.len()).await?;
        Ok(values
            .into_iter()
            .map(|v| {
                let s = items(v);
                (
                    s.first().is_some_and(|v| int(v) == 1),
                    s.get(1).is_some_and(|v| int(v) == 1),
                )
            })
            .collect())
    }

    /// The live nodes with presence watchers among `nodes`, this one left out unless
    /// `self_too`.
    async fn watchers_among(
        &self,
        nodes: Vec<String>,
        self_too: bool,
    ) -> Result<Vec<String>, CallError> {
        let nodes: Vec<String> = nodes
            .into_iter()
            .filter(|n| self_too || n != self.node.as_str())
            .collect();
        let states = self.states(&nodes).await?;
        Ok(nodes
            .into_iter()
            .zip(states)
            .filter(|(_, (alive, watching))| *alive && *watching)
            .map(|(n, _)| n)
            .collect())
    }

    async fn registered(&self) -> Result<Vec<String>, CallError> {
        let mut pipe = redis::pipe();
        pipe.cmd("SMEMBERS").arg(keys::nodes());
        let mut v = self.step(&pipe, 1).await?;
        Ok(v.pop().map(texts).unwrap_or_default())
    }

    /// Publishes each of `events` on the channel of each of `nodes`, in order. These go on
    /// the connection the router's frames take, so a node hears of a login before any
    /// message from that user, and of a departure after the last.
    async fn tell(&self, nodes: &[String], events: &[String]) -> Result<(), CallError> {
        if nodes.is_empty() || events.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for n in nodes {
            for e in events {
                self.store.publish(&mut pipe, keys::deliver(n), e.as_str());
            }
        }
        self.store.values(&pipe).await.map(drop)
    }

    /// Presence events for every live node with watchers but this one (for reaping: this one
    /// too), the registry read after the change they announce (so a node that starts
    /// watching meanwhile sees the change in its first list or hears of it).
    async fn announce_elsewhere(&self, events: &[String], self_too: bool) -> Result<(), CallError> {
        if events.is_empty() {
            return Ok(());
        }
        let nodes = self.registered().await?;
        let to = self.watchers_among(nodes, self_too).await?;
        self.tell(&to, events).await
    }

    fn claim_call(&self, pipe: &mut redis::Pipeline, name: &str, token: u64, expected: &str) {
        eval(pipe, SCRIPTS.claim, &[keys::holder(name)])
            .arg(self.node.as_str())
            .arg(token)
            .arg(expected);
    }

    /// Claims `name` for this login (`take`: whoever holds it, for an account's `LOGIN`).
    ///
    /// Steps: the global gate (settling?) and this node's lease (stale?), together; the
    /// claim on the name's key; if another node holds it, that node's lease, and if it is
    /// dead a second claim that replaces exactly the dead holder; the name into this node's
    /// set and the registry read, together; the watchers' states; the event.
    pub(super) async fn claim_steps(
        &self,
        name: &Username,
        token: u64,
        take: bool,
    ) -> Result<Claim, CallError> {
        let me = self.node.as_str();
        let mut pipe = redis::pipe();
        self.global(&mut pipe, false);
        Self::state(&mut pipe, me);
        let mut v = self.step(&pipe, 2).await?.into_iter();
        let (fresh, settling, _) = Self::parse_global(v.next().unwrap_or(Value::Nil));
        if fresh || settling {
            return Ok(Claim::Settling);
        }
        let alive = v
            .next()
            .map(items)
            .is_some_and(|s| s.first().is_some_and(|v| int(v) == 1));
        if !alive {
            return Ok(Claim::Stale);
        }
        let mut evict = None;
        if take {
            let mut pipe = redis::pipe();
            eval(&mut pipe, SCRIPTS.take, &[keys::holder(name.as_str())])
                .arg(me)
                .arg(token);
            let old = self
                .step(&pipe, 1)
                .await?
                .pop()
                .and_then(|v| text(&v))
                .unwrap_or_default();
            if !old.is_empty() && owner_of(&old) != me {
                evict = Some(old);
            }
        } else {
            let mut expected = String::new();
            // Twice at most: the holder found, then (if its node is dead) that holder replaced.
            for round in 0..2 {
                let mut pipe = redis::pipe();
                self.claim_call(&mut pipe, name.as_str(), token, &expected);
                let answer = self
                    .step(&pipe, 1)
                    .await?
                    .pop()
                    .and_then(|v| text(&v))
                    .unwrap_or_default();
                if answer == "OK" {
                    break;
                }
                if round == 1 {
                    // Another node took it between the two steps.
                    return Ok(Claim::InUse);
                }
                let owner = owner_of(&answer).to_owned();
                let live = self.states(std::slice::from_ref(&owner)).await?;
                if live.first().is_some_and(|(alive, _)| *alive) {
                    return Ok(Claim::InUse);
                }
                expected = answer;
            }
        }
        let mut pipe = redis::pipe();
        pipe.cmd("SADD").arg(keys::users(me)).arg(name.as_str());
        pipe.cmd("SMEMBERS").arg(keys::nodes());
        let nodes = self
            .step(&pipe, 2)
            .await?
            .pop()
            .map(texts)
            .unwrap_or_default();
        if let Some(old) = evict {
            // The earlier session's node ends it (`~{name} {its token}`), if it is alive.
            let owner = owner_of(&old).to_owned();
            let token = old.rsplit(' ').next().unwrap_or("").to_owned();
            if self
                .states(std::slice::from_ref(&owner))
                .await?
                .first()
                .is_some_and(|s| s.0)
            {
                self.tell(&[owner], &[format!("~{name} {token}")]).await?;
            }
            return Ok(Claim::Ok);
        }
        let to = self.watchers_among(nodes, false).await?;
        self.tell(&to, &[format!(",+{name}")]).await?;
        Ok(Claim::Ok)
    }

    /// Frees `name` if this login still holds it; out of this node's set unless a newer local
    /// login has it; the departure to the watchers elsewhere if it was freed.
    pub(super) async fn release_steps(&self, name: &Username, token: u64) -> Result<(), CallError> {
        let me = self.node.as_str();
        let mut pipe = redis::pipe();
        eval(&mut pipe, SCRIPTS.release, &[keys::holder(name.as_str())])
            .arg(me)
            .arg(token);
        let freed = self.step(&pipe, 1).await?.first().map_or(0, int);
        if freed == 0 {
            return Ok(());
        }
        // Out of the set, and the registry read after the change (for the event), together.
        let mut pipe = redis::pipe();
        pipe.cmd("SREM").arg(keys::users(me)).arg(name.as_str());
        pipe.cmd("SMEMBERS").arg(keys::nodes());
        let nodes = self
            .step(&pipe, 2)
            .await?
            .pop()
            .map(texts)
            .unwrap_or_default();
        if freed == 1 {
            let to = self.watchers_among(nodes, false).await?;
            self.tell(&to, &[format!(",-{name}")]).await?;
        }
        Ok(())
    }

    /// Extends the lease (and the watchers' flag), keeps this node in the registry, notices a
    /// Redis that lost its state, and reaps the registered nodes whose lease has expired.
    pub(super) async fn renew_steps(&self, watching: bool) -> Result<Renewed, CallError> {
        let me = self.node.as_str();
        let mut pipe = redis::pipe();
        self.global(&mut pipe, true);
        eval(
            &mut pipe,
            SCRIPTS.renew,
            &[keys::alive(me), keys::watching(me)],
        )
        .arg(self.lease_ms())
        .arg(u8::from(watching));
        let mut v = self.step(&pipe, 2).await?.into_iter();
        let (_, _, nodes) = Self::parse_global(v.next().unwrap_or(Value::Nil));
        let alive = v.next().is_some_and(|v| int(&v) == 1);
        let others: Vec<String> = nodes.into_iter().filter(|n| n != me).collect();
        let states = self.states(&others).await?;
        for (node, (alive, _)) in others.iter().zip(states) {
            if !alive {
                self.reap(node).await?;
            }
        }
        Ok(Renewed { alive })
    }

    /// Frees a dead node's names and tells every live watcher, this node's included, that
    /// they left; then forgets its set and registration if it is still dead. Any live node
    /// may reap, several at once: each name is freed (and announced) once.
    async fn reap(&self, dead: &str) -> Result<(), CallError> {
        let mut pipe = redis::pipe();
        pipe.cmd("SMEMBERS").arg(keys::users(dead));
        let names = self
            .step(&pipe, 1)
            .await?
            .pop()
            .map(texts)
            .unwrap_or_default();
        let freed = self.drop_names(dead, &names).await?;
        let events: Vec<String> = freed.iter().map(|n| format!(",-{n}")).collect();
        self.announce_elsewhere(&events, true).await?;
        // Its room members part: the others hear `PARTED` (`room_steps.rs`).
        self.rooms_of_node_part(dead).await?;
        let mut pipe = redis::pipe();
        eval(
            &mut pipe,
            SCRIPTS.bury,
            &[keys::alive(dead), keys::users(dead), keys::node_rooms(dead)],
        );
        if self.step(&pipe, 1).await?.first().map_or(0, int) == 1 {
            let mut pipe = redis::pipe();
            pipe.cmd("SREM").arg(keys::nodes()).arg(dead);
            self.step(&pipe, 1).await?;
        }
        Ok(())
    }

    /// Frees those of `names` that `owner` still holds; returns the ones freed.
    async fn drop_names(&self, owner: &str, names: &[String]) -> Result<Vec<String>, CallError> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for n in names {
            eval(&mut pipe, SCRIPTS.drop, &[keys::holder(n)]).arg(owner);
        }
        let v = self.step(&pipe, names.len()).await?;
        Ok(names
            .iter()
            .zip(v)
            .filter(|(_, v)| int(v) == 1)
            .map(|(n, _)| n.clone())
            .collect())
    }

    /// Makes Redis agree with this node: `held` is every user it holds. Registers the node
    /// and its lease; claims each name unless a live node holds it; rewrites the node's set;
    /// frees the names Redis still has for it that it no longer holds. Returns the names
    /// another live node holds (claimed elsewhere while this node was cut off).
    pub(super) async fn sync_steps(
        &self,
        held: &[(Username, u64)],
    ) -> Result<Vec<String>, CallError> {
        let me = self.node.as_str();
        let mut pipe = redis::pipe();
        self.global(&mut pipe, true);
        eval(
            &mut pipe,
            SCRIPTS.register,
            &[keys::alive(me), keys::users(me)],
        )
        .arg(self.lease_ms());
        let mut v = self.step(&pipe, 2).await?.into_iter();
        let (_, _, nodes) = Self::parse_global(v.next().unwrap_or(Value::Nil));
        let old: std::collections::HashSet<String> = v
            .next()
            .map(texts)
            .unwrap_or_default()
            .into_iter()
            .collect();

        let mut kept = Vec::with_capacity(held.len());
        let mut conflicts = Vec::new();
        if !held.is_empty() {
            let mut pipe = redis::pipe();
            for (name, token) in held {
                self.claim_call(&mut pipe, name.as_str(), *token, "");
            }
            let answers = self.step(&pipe, held.len()).await?;
            let mut taken = Vec::new();
            for ((name, token), a) in held.iter().zip(answers) {
                match text(&a) {
                    Some(a) if a == "OK" => kept.push(name.as_str().to_owned()),
                    Some(holder) => taken.push((name, *token, holder)),
                    None => kept.push(name.as_str().to_owned()),
                }
            }
            // Held elsewhere: kept only if that node is dead, by replacing exactly that holder.
            let owners: Vec<String> = taken
                .iter()
                .map(|(_, _, h)| owner_of(h).to_owned())
                .collect();
            let states = self.states(&owners).await?;
            let mut retry = Vec::new();
            for ((name, token, holder), (alive, _)) in taken.into_iter().zip(states) {
                if alive {
                    conflicts.push(name.as_str().to_owned());
                } else {
                    retry.push((name, token, holder));
                }
            }
            if !retry.is_empty() {
                let mut pipe = redis::pipe();
                for (name, token, holder) in &retry {
                    self.claim_call(&mut pipe, name.as_str(), *token, holder);
                }
                let answers = self.step(&pipe, retry.len()).await?;
                for ((name, _, _), a) in retry.into_iter().zip(answers) {
                    if text(&a).as_deref() == Some("OK") {
                        kept.push(name.as_str().to_owned());
                    } else {
                        conflicts.push(name.as_str().to_owned());
                    }
                }
            }
        }
        let mut pipe = redis::pipe();
        let set = eval(&mut pipe, SCRIPTS.set_users, &[keys::users(me)]);
        for n in &kept {
            set.arg(n.as_str());
        }
        self.step(&pipe, 1).await?;
        let keep: std::collections::HashSet<&str> = kept.iter().map(String::as_str).collect();
        let gone: Vec<String> = old
            .iter()
            .filter(|n| !keep.contains(n.as_str()))
            .cloned()
            .collect();
        let freed = self.drop_names(me, &gone).await?;
        // Back after a loss (an empty Redis, an expired lease): the others may have been told
        // it left. A repeat is harmless: clients treat presence as a set.
        let mut events: Vec<String> = kept
            .iter()
            .filter(|n| !old.contains(*n))
            .map(|n| format!(",+{n}"))
            .collect();
        events.extend(freed.iter().map(|n| format!(",-{n}")));
        if !events.is_empty() {
            let to = self.watchers_among(nodes, false).await?;
            self.tell(&to, &events).await?;
        }
        Ok(conflicts)
    }

    /// Everyone held by a live node, from each live node's set. With `watching` (a new
    /// presence watcher's first list) this node is flagged as watching first, so every
    /// change after this list is published to it.
    pub(super) async fn list_steps(&self, watching: bool) -> Result<Vec<String>, CallError> {
        let me = self.node.as_str();
        let mut pipe = redis::pipe();
        let mut commands = 1;
        if watching {
            pipe.cmd("SET")
                .arg(keys::watching(me))
                .arg(1)
                .arg("PX")
                .arg(self.lease_ms());
            commands += 1;
        }
        pipe.cmd("SMEMBERS").arg(keys::nodes());
        let nodes = self
            .step(&pipe, commands)
            .await?
            .pop()
            .map(texts)
            .unwrap_or_default();
        if nodes.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for n in &nodes {
            eval(&mut pipe, SCRIPTS.names, &[keys::alive(n), keys::users(n)]);
        }
        let v = self.step(&pipe, nodes.len()).await?;
        Ok(v.into_iter().flat_map(texts).collect())
    }

    /// How many registered nodes hold a live lease.
    pub(super) async fn count_steps(&self) -> Result<i64, CallError> {
        let nodes = self.registered().await?;
        let states = self.states(&nodes).await?;
        Ok(states
            .iter()
            .filter(|(alive, _)| *alive)
            .count()
            .try_into()
            .unwrap_or(i64::MAX))
    }

    /// Frees all this node's names, tells the watchers elsewhere, and removes the node.
    pub(super) async fn leave_steps(&self) -> Result<(), CallError> {
        let me = self.node.as_str();
        let mut pipe = redis::pipe();
        pipe.cmd("SMEMBERS").arg(keys::users(me));
        let names = self
            .step(&pipe, 1)
            .await?
            .pop()
            .map(texts)
            .unwrap_or_default();
        let freed = self.drop_names(me, &names).await?;
        let events: Vec<String> = freed.iter().map(|n| format!(",-{n}")).collect();
        self.announce_elsewhere(&events, false).await?;
        self.rooms_of_node_part(me).await?;
        let mut pipe = redis::pipe();
        pipe.cmd("DEL")
            .arg(keys::alive(me))
            .arg(keys::users(me))
            .arg(keys::watching(me))
            .arg(keys::node_rooms(me));
        pipe.cmd("SREM").arg(keys::nodes()).arg(me);
        self.step(&pipe, 2).await.map(drop)
    }
}
