//! The cross-node sender: one task per node that carries every `SEND` for a user on another
//! node, pipelined, batched and acknowledged (`docs/cluster.md`, "Pipelined delivery").
//!
//! - **Routes are cached.** The first message to a name looks its holder up (a `GET` of its
//!   `holder` key: `"{node} {token}"`, the token naming that one login); later ones go
//!   straight to that node. No script runs per message.
//! - **Batched.** Everything queued while the previous round was in Redis goes in the next
//!   one: one `PUBLISH` per destination node carries all its messages (a *frame*), plus the
//!   lookups, as one pipeline, one write. The results this node owes other nodes' frames go
//!   the same way from a second task ([`answer`]), so they never wait behind a round of
//!   frames (nor frames behind them).
//! - **Acknowledged.** `PUBLISH` answering 1 only says the node's subscriber got the frame. The
//!   receiving node checks each recipient is still there *with the token the route named*,
//!   queues the message, and publishes one result per message back (`1` delivered, `0` not
//!   here with that token, `x` its queue refused it). `SEND-OK` is given on `1` only.
//! - **Stale routes are corrected, in order.** A `0`, or a frame nobody received (`PUBLISH`
//!   answered 0: the node is gone), invalidates the route. Messages for that name then wait
//!   until every message still in flight to it is answered, then the name is looked up again
//!   and the failed messages go first, then the waiting ones, so one sender's messages reach
//!   the recipient in the order sent. A lookup that gives the same route again means the user
//!   has left (its node dropped it before Redis heard): `BAD-DEST-USER`.
//! - **Bounded.** A frame carries a deadline, the sender's clock plus the call timeout; a node
//!   that reads it later (it was stopped, or Redis held it) delivers none of it. The sender
//!   answers a frame unacknowledged by the deadline plus half a timeout `BAD-DEST-USER`, as a
//!   failed Redis call: the message was not delivered then and will not be later (given
//!   clocks within half a timeout of each other).
//!
//! The task owns all of this state, so nothing here takes a lock; connections reach it through
//! an unbounded channel, each bounded by its own limit of waiting replies.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::sync::Arc;

use redis::Value;
use tcpchat_proto::Username;
use tcpchat_server::Delivery;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::debug;

use super::{millis, Inner};
use crate::keys;

/// How often a message is tried on a route before it is answered `BAD-DEST-USER`.
const MAX_TRIES: u8 = 3;
/// Most messages in one frame, and most bytes (a frame is one Redis string).
const FRAME_MESSAGES: usize = 1024;
const FRAME_BYTES: usize = 256 * 1024;
/// Jobs taken per round, at most.
const ROUND_JOBS: usize = 4096;
/// Idle routes kept at most; past it, routes with nothing in flight are forgotten.
const MAX_ROUTES: usize = 100_000;

/// What the router is asked to do.
pub(super) enum Job {
    /// A `SEND` to a user who is not on this node.
    Send(Msg),
    /// Results for one of this node's frames, one byte per message.
    Acked { frame: u64, results: Vec<u8> },
}

/// One message on its way.
pub(super) struct Msg {
    to: Username,
    /// `"{from} {body}"`.
    text: Box<[u8]>,
    reply: oneshot::Sender<Delivery>,
    tries: u8,
}

impl Msg {
    pub(super) fn new(
        to: &Username,
        from: &Username,
        body: &str,
        reply: oneshot::Sender<Delivery>,
    ) -> Self {
        let mut text = Vec::with_capacity(from.as_str().len() + 1 + body.len());
        text.extend_from_slice(from.as_str().as_bytes());
        text.push(b' ');
        text.extend_from_slice(body.as_bytes());
        Self {
            to: to.clone(),
            text: text.into(),
            reply,
            tries: 0,
        }
    }

    fn answer(self, outcome: Delivery) {
        // The connection may be gone; nobody to tell then.
        let _ = self.reply.send(outcome);
    }
}

/// Where a name lives: its node and the token of that login.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    node: Arc<str>,
    token: u64,
}

impl Route {
    fn parse(v: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(v).ok()?;
        let (node, token) = text.split_once(' ')?;
        Some(Self {
            node: node.into(),
            token: token.parse().ok()?,
        })
    }
}

/// What the router knows about one recipient.
#[derive(Default)]
struct Dest {
    route: Option<Route>,
    /// The route last found wrong: a lookup answering it again means the user left.
    stale: Option<Route>,
    /// Messages published on `route` and not yet answered.
    inflight: u32,
    looking: bool,
    /// Failed on a stale route, in the order they were sent: they go first.
    retry: VecDeque<Msg>,
    /// Arrived while there was no route.
    held: VecDeque<Msg>,
}

impl Dest {
    fn idle(&self) -> bool {
        self.inflight == 0 && !self.looking && self.retry.is_empty() && self.held.is_empty()
    }
}

/// A frame published and waiting for its results.
struct Frame {
    node: Arc<str>,
    sent: Instant,
    msgs: Vec<(Msg, u64)>,
}

/// A frame being filled this round.
struct Building {
    id: u64,
    node: Arc<str>,
    payload: Vec<u8>,
    msgs: Vec<(Msg, u64)>,
}

struct Router {
    inner: Arc<Inner>,
    dests: HashMap<Username, Dest>,
    frames: HashMap<u64, Frame>,
    next_frame: u64,
    building: Vec<Building>,
    lookups: Vec<Username>,
}

/// Runs the node's router until the node leaves.
pub(super) async fn run(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let sweep_every = (inner.config.call_timeout / 4).max(std::time::Duration::from_millis(10));
    let mut sweep = tokio::time::interval(sweep_every);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let cancel = inner.cancel.clone();
    let mut router = Router {
        inner,
        dests: HashMap::new(),
        frames: HashMap::new(),
        next_frame: 1,
        building: Vec::new(),
        lookups: Vec::new(),
    };
    let mut jobs = Vec::with_capacity(ROUND_JOBS);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            n = rx.recv_many(&mut jobs, ROUND_JOBS) => if n == 0 { return },
            _ = sweep.tick() => router.sweep(),
        }
        // Whatever arrived while the last round was in Redis goes in the next one.
        loop {
            for job in jobs.drain(..) {
                router.take(job);
            }
            if router.building.is_empty() && router.lookups.is_empty() {
                break;
            }
            router.flush().await;
            while jobs.len() < ROUND_JOBS {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
    }
}

impl Router {
    fn take(&mut self, job: Job) {
        match job {
            Job::Send(msg) => self.route(msg),
            Job::Acked { frame, results } => self.acked(frame, &results),
        }
    }

    fn route(&mut self, msg: Msg) {
        let dest = self.dests.entry(msg.to.clone()).or_default();
        match &dest.route {
            Some(route) if dest.retry.is_empty() && dest.held.is_empty() => {
                let route = route.clone();
                dest.inflight += 1;
                self.frame(&route, msg);
            }
            _ => {
                let to = msg.to.clone();
                dest.held.push_back(msg);
                self.settle(&to);
            }
        }
    }

    /// Adds a message to this round's frame for its route's node.
    fn frame(&mut self, route: &Route, msg: Msg) {
        let open = self.building.iter().position(|b| {
            b.node == route.node
                && b.msgs.len() < FRAME_MESSAGES
                && b.payload.len() + msg.text.len() < FRAME_BYTES
        });
        let b = match open {
            Some(i) => &mut self.building[i],
            None => {
                let id = self.next_frame;
                self.next_frame += 1;
                let mut payload = Vec::with_capacity(4096);
                payload.push(b'!');
                payload.extend_from_slice(self.inner.node.as_str().as_bytes());
                let deadline = unix_millis().saturating_add(millis(self.inner.config.call_timeout));
                payload.extend_from_slice(format!(" {id} {deadline}\n").as_bytes());
                self.building.push(Building {
                    id,
                    node: Arc::clone(&route.node),
                    payload,
                    msgs: Vec::new(),
                });
                let last = self.building.len() - 1;
                &mut self.building[last]
            }
        };
        // `{token} {to} {from} {body}\n`: a body is one line, so it holds no newline.
        // Into the frame directly: no allocation per message. Writing to a Vec cannot fail.
        let _ = write!(b.payload, "{} ", route.token);
        b.payload.extend_from_slice(msg.to.as_str().as_bytes());
        b.payload.push(b' ');
        b.payload.extend_from_slice(&msg.text);
        b.payload.push(b'\n');
        b.msgs.push((msg, route.token));
    }

    /// Starts a lookup for `to` if it has messages waiting, no route, and nothing in flight.
    fn settle(&mut self, to: &Username) {
        let Some(dest) = self.dests.get_mut(to) else {
            return;
        };
        if dest.route.is_none() && dest.inflight == 0 && !dest.looking {
            if dest.retry.is_empty() && dest.held.is_empty() {
                if dest.stale.is_none() {
                    self.dests.remove(to);
                }
            } else {
                dest.looking = true;
                self.lookups.push(to.clone());
            }
        }
    }

    /// One message answered on its route.
    fn answered(&mut self, msg: Msg, node: &Arc<str>, token: u64, result: u8) {
        let to = msg.to.clone();
        let dest = self.dests.entry(to.clone()).or_default();
        dest.inflight = dest.inflight.saturating_sub(1);
        match result {
            b'1' => msg.answer(Delivery::Delivered),
            // Not there with that token: the route is stale.
            b'0' => {
                let route = Route {
                    node: Arc::clone(node),
                    token,
                };
                if dest.route.as_ref() == Some(&route) {
                    dest.route = None;
                    dest.stale = Some(route);
                }
                let mut msg = msg;
                msg.tries += 1;
                if msg.tries >= MAX_TRIES {
                    msg.answer(Delivery::NoSuchUser);
                } else {
                    dest.retry.push_back(msg);
                }
            }
            // Refused by a full queue (the recipient is being dropped), or no answer in time:
            // nobody can confirm it. A timed-out route is forgotten, to be looked up afresh.
            _ => {
                if result == b't' && dest.route.as_ref().is_some_and(|r| r.node == *node) {
                    dest.route = None;
                }
                msg.answer(Delivery::NoSuchUser);
            }
        }
        self.settle(&to);
    }

    fn acked(&mut self, frame: u64, results: &[u8]) {
        // Unknown: already answered by the timeout.
        let Some(f) = self.frames.remove(&frame) else {
            return;
        };
        for (i, (msg, token)) in f.msgs.into_iter().enumerate() {
            let result = results.get(i).copied().unwrap_or(b'x');
            self.answered(msg, &f.node, token, result);
        }
    }

    /// Frames unanswered for longer than their deadline and half a call timeout are answered
    /// `BAD-DEST-USER` (the recipient's node will not deliver them any more).
    fn sweep(&mut self) {
        let limit = self.inner.config.call_timeout * 3 / 2;
        let now = Instant::now();
        let late: Vec<u64> = self
            .frames
            .iter()
            .filter(|(_, f)| now.duration_since(f.sent) > limit)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(f) = self.frames.remove(&id) {
                debug!(node = %f.node, messages = f.msgs.len(), "no answer from the recipients' node in time");
                for (msg, token) in f.msgs {
                    self.answered(msg, &f.node, token, b't');
                }
            }
        }
        if self.dests.len() > MAX_ROUTES {
            self.dests.retain(|_, d| !d.idle());
        }
    }

    /// One round: the lookups and every frame, as one pipeline.
    async fn flush(&mut self) {
        let mut pipe = redis::pipe();
        let lookups = std::mem::take(&mut self.lookups);
        // A lookup is a plain `GET` of the name's holder (its own slot on a Redis Cluster).
        for name in &lookups {
            pipe.cmd("GET").arg(keys::holder(name.as_str()));
        }
        let building = std::mem::take(&mut self.building);
        let now = Instant::now();
        let mut published = Vec::with_capacity(building.len());
        for b in building {
            self.inner
                .store
                .publish(&mut pipe, keys::deliver(&b.node), b.payload);
            published.push(b.id);
            self.frames.insert(
                b.id,
                Frame {
                    node: b.node,
                    sent: now,
                    msgs: b.msgs,
                },
            );
        }
        match self.inner.store.pipeline(&pipe).await {
            Ok(values) => {
                let mut values = values.into_iter();
                for name in lookups {
                    // Held by this node (whose local lookup already failed) means not here:
                    // no route.
                    let route = match values.next() {
                        Some(Value::BulkString(v)) => Route::parse(&v),
                        _ => None,
                    }
                    .filter(|r| &*r.node != self.inner.node.as_str());
                    self.found(&name, route);
                }
                for id in published {
                    // 0: nobody subscribed, the node is gone. Its messages are retried on a
                    // fresh lookup, like a stale route's.
                    if let Some(Value::Int(0)) = values.next() {
                        if let Some(f) = self.frames.remove(&id) {
                            for (msg, token) in f.msgs {
                                self.answered(msg, &f.node, token, b'0');
                            }
                        }
                    }
                }
            }
            Err(e) => {
                debug!(error = %e, "cross-node send failed");
                self.inner.failed();
                for name in lookups {
                    self.found(&name, None);
                }
                for id in published {
                    if let Some(f) = self.frames.remove(&id) {
                        for (msg, token) in f.msgs {
                            self.answered(msg, &f.node, token, b't');
                        }
                    }
                }
            }
        }
    }

    /// A lookup's answer: send what waited, or answer it `BAD-DEST-USER`.
    fn found(&mut self, name: &Username, route: Option<Route>) {
        let Some(dest) = self.dests.get_mut(name) else {
            return;
        };
        dest.looking = false;
        let stale = dest.stale.take();
        let route = route.filter(|r| Some(r) != stale.as_ref());
        let waiting: Vec<Msg> = dest.retry.drain(..).chain(dest.held.drain(..)).collect();
        match route {
            None => {
                dest.route = None;
                for msg in waiting {
                    msg.answer(Delivery::NoSuchUser);
                }
                self.dests.remove(name);
            }
            Some(route) => {
                dest.route = Some(route.clone());
                dest.inflight += u32::try_from(waiting.len()).unwrap_or(u32::MAX);
                for msg in waiting {
                    self.frame(&route, msg);
                }
            }
        }
    }
}

/// Wall-clock milliseconds: frame deadlines are compared on another node's clock.
pub(super) fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Results owed to another node for one of its frames: `(node, "#{frame} {results}")`.
pub(super) type Answer = (String, Vec<u8>);

/// Publishes the results this node owes other nodes' frames, all that queued up meanwhile in
/// one pipeline per round, in the order the frames were read (the senders rely on it to
/// retry in order). A failed round loses them: their senders answer `BAD-DEST-USER` at the
/// frames' deadline, as for a lost frame.
pub(super) async fn answer(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Answer>) {
    let cancel = inner.cancel.clone();
    let mut answers = Vec::with_capacity(ROUND_JOBS);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            n = rx.recv_many(&mut answers, ROUND_JOBS) => if n == 0 { return },
        }
        let mut pipe = redis::pipe();
        for (node, payload) in answers.drain(..) {
            inner
                .store
                .publish(&mut pipe, keys::deliver(&node), payload);
        }
        if let Err(e) = inner.store.pipeline(&pipe).await {
            debug!(error = %e, "cannot publish results for other nodes' frames");
            inner.failed();
        }
    }
}
