//! Direct history streams across nodes (`docs/cluster.md`, "History", "Direct streams").
//!
//! A user's direct stream lives in the user's slot `{u:NAME}`, beside the holder key. Who
//! numbers a message depends on where the recipient is:
//!
//! - **Held on a node**: that node numbers it, as it arrives, in one script in the user's
//!   slot ([`SCRIPTS.direct_send`]), then queues it. Every message for this node's accounts
//!   (routed frames and local sends alike) goes through one task per node, [`run`], which
//!   numbers a round's messages in one pipeline and queues them in the order it took them:
//!   one node holds a user, so the user's offsets and queue order agree.
//! - **Not held** (a `history` sender only): the sender's node runs the same script in the
//!   "queue" mode, which stores the message only if the holder key is absent, in the same
//!   step: a login's claim, in that slot too, comes before or after it, never between.
//!
//! A login of an account first marks its stream *catching up* on its node ([`Inner::hold`]):
//! messages numbered meanwhile are stored and not queued. The catch-up reads the stream
//! from Redis, then [`Inner::go_live`] turns it live only if nothing was numbered past what
//! it read; from then on a message is queued if its offset is past the catch-up's end.

use std::sync::Arc;

use redis::Value;
use tcpchat_accounts::history::StoredMessage;
use tcpchat_proto::{Reply, Username};
use tcpchat_server::history::{DirectRead, Stamp, StreamView};
use tcpchat_server::Delivery;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use super::room_steps::new_epoch;
use super::steps::{int, items, text};
use super::Inner;
use crate::keys;
use crate::scripts::{eval, SCRIPTS};
use crate::store::CallError;

/// The node's view of one local account's direct stream.
#[derive(Debug, Default)]
pub(super) struct DirectState {
    /// A login is catching up: numbered messages are not queued.
    catching: bool,
    /// The catch-up's end: messages up to it were queued by it.
    upto: u64,
    /// The newest offset numbered here while catching up.
    seen: u64,
    /// The epoch the catch-up read.
    epoch: String,
}

/// One message routed here: `(token, to, from, body)`; `None` if malformed.
pub(super) type Routed = Option<(u64, String, String, String)>;

/// Work for the numbering task.
pub(super) enum Job {
    /// A frame from another node, answered once its messages are queued.
    Frame {
        node: String,
        id: String,
        late: bool,
        msgs: Vec<Routed>,
    },
    /// A `SEND` from a user of this node to an account of this node.
    Local {
        to: String,
        from: String,
        body: String,
        reply: oneshot::Sender<Delivery>,
    },
}

/// Most jobs per round.
const ROUND_JOBS: usize = 1024;

/// Numbers and queues the messages for this node's accounts, round by round, until the node
/// leaves.
pub(super) async fn run(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let cancel = inner.cancel.clone();
    let mut jobs = Vec::with_capacity(ROUND_JOBS);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            n = rx.recv_many(&mut jobs, ROUND_JOBS) => if n == 0 { return },
        }
        // Which messages to number, in the order taken.
        let mut pipe = redis::pipe();
        let mut numbered = 0;
        let mut plan: Vec<Vec<bool>> = Vec::with_capacity(jobs.len());
        for job in &jobs {
            let mut marks = Vec::new();
            let mut add = |to: &str, from: &str, body: &str, token: Option<u64>| {
                let mode = inner.direct_mode(to, token);
                if let Some(mode) = mode {
                    inner.direct_call(&mut pipe, mode, to, from, body);
                    numbered += 1;
                }
                marks.push(mode.is_some());
            };
            match job {
                Job::Frame { late: true, .. } => {}
                Job::Frame { msgs, .. } => {
                    for (token, to, from, body) in msgs.iter().flatten() {
                        add(to, from, body, Some(*token));
                    }
                }
                Job::Local { to, from, body, .. } => add(to, from, body, None),
            }
            plan.push(marks);
        }
        let mut stamps = if numbered == 0 {
            Vec::new()
        } else {
            match inner.step(&pipe, numbered).await {
                Ok(values) => values.into_iter().map(stamp_of).collect(),
                Err(e) => {
                    // Delivered without an offset, as one process does when it cannot store.
                    debug!(error = %e, "numbering direct messages failed; delivering them unnumbered");
                    inner.failed();
                    Vec::new()
                }
            }
        }
        .into_iter();
        for (job, marks) in jobs.drain(..).zip(plan) {
            let mut marks = marks.into_iter();
            let mut next_stamp = || {
                if marks.next().unwrap_or(false) {
                    stamps.next().flatten()
                } else {
                    None
                }
            };
            match job {
                Job::Frame {
                    node,
                    id,
                    late,
                    msgs,
                } => {
                    let mut payload = Vec::with_capacity(id.len() + 2 + msgs.len());
                    payload.push(b'#');
                    payload.extend_from_slice(id.as_bytes());
                    payload.push(b' ');
                    for msg in &msgs {
                        let result = match msg {
                            _ if late => b't',
                            Some((token, to, from, body)) => {
                                let stamp = next_stamp();
                                match inner.deliver_numbered(to, from, body, Some(*token), stamp) {
                                    Some(Delivery::Delivered) => b'1',
                                    Some(Delivery::NoSuchUser) => b'x',
                                    None => b'0',
                                }
                            }
                            None => b'x',
                        };
                        payload.push(result);
                    }
                    let _ = inner.answers.send((node, payload));
                }
                Job::Local {
                    to,
                    from,
                    body,
                    reply,
                } => {
                    let stamp = next_stamp();
                    let outcome = inner
                        .deliver_numbered(&to, &from, &body, None, stamp)
                        .unwrap_or(Delivery::NoSuchUser);
                    let _ = reply.send(outcome);
                }
            }
        }
    }
}

/// `{'OK', offset, time}` from the send script.
fn stamp_of(v: Value) -> Option<Stamp> {
    let v = items(v);
    if v.first().and_then(text).as_deref() != Some("OK") {
        return None;
    }
    let offset = u64::try_from(int(v.get(1)?)).ok()?;
    let time = u64::try_from(int(v.get(2)?)).ok()?;
    Some(Stamp { offset, time })
}

/// `"OFFSET TIME FROM BODY"`, as the stream scripts keep a message.
pub(super) fn stored(entry: &str) -> Option<StoredMessage> {
    let (offset, rest) = entry.split_once(' ')?;
    let (time, rest) = rest.split_once(' ')?;
    let (sender, body) = rest.split_once(' ')?;
    Some(StoredMessage {
        offset: offset.parse().ok()?,
        time: time.parse().ok()?,
        sender: sender.to_owned(),
        body: body.to_owned(),
    })
}

/// What a `history` sender's message to an account not on this node came to in its slot.
pub(super) enum Queued {
    /// Numbered and kept for the account's next login (`SEND-QUEUED`).
    Stored,
    /// Someone holds the name: deliver it.
    Held,
    /// No such account: nothing kept (`BAD-DEST-USER`).
    NotAccount,
}

impl Inner {
    pub(super) fn direct(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, DirectState>> {
        // Only map operations and outbox memcpys happen under this lock.
        self.direct.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn retention_ms(&self) -> u64 {
        self.config
            .history
            .and_then(|h| h.retention_ms())
            .unwrap_or(0)
    }

    /// Adds the send script for a message to `to` in `mode` (see [`SCRIPTS.direct_send`]).
    fn direct_call(
        &self,
        pipe: &mut redis::Pipeline,
        mode: &str,
        to: &str,
        from: &str,
        body: &str,
    ) {
        let cap = self.config.history.map_or(1, |h| h.direct_cap);
        eval(pipe, SCRIPTS.direct_send, &keys::user_stream(to))
            .arg(mode)
            .arg(from)
            .arg(body)
            .arg(cap)
            .arg(self.retention_ms())
            .arg(new_epoch());
    }

    /// How a message to `to` (routed with `token`, or sent here) is numbered here: `None` if
    /// `to` is not an account logged in here (with that token), else live (`l`) or held for
    /// its login's catch-up (`h`).
    pub(super) fn direct_mode(&self, to: &str, token: Option<u64>) -> Option<&'static str> {
        let here = self
            .local()
            .get(to)
            .is_some_and(|l| l.active && l.account && token.is_none_or(|t| t == l.token));
        if !here {
            return None;
        }
        Some(match self.direct().get(to) {
            Some(s) if s.catching => "h",
            _ => "l",
        })
    }

    /// Queues a message numbered `stamp` (or, unnumbered, as [`Inner::deliver_local`] does)
    /// on the local login of `to`: only if its login's catch-up did not carry it.
    fn deliver_numbered(
        self: &Arc<Self>,
        to: &str,
        from: &str,
        body: &str,
        routed: Option<u64>,
        stamp: Option<Stamp>,
    ) -> Option<Delivery> {
        let Some(stamp) = stamp else {
            return self.deliver_local(to, from, body, routed);
        };
        let (outbox, token) = match self.local().get(to) {
            Some(l) if l.active && routed.is_none_or(|t| t == l.token) => {
                (Arc::clone(&l.outbox), l.token)
            }
            // Numbered and kept, but its login is gone: `RESUME` gets it.
            _ => return Some(Delivery::Delivered),
        };
        let mut direct = self.direct();
        match direct.get_mut(to) {
            Some(s) if s.catching => {
                s.seen = s.seen.max(stamp.offset);
                return Some(Delivery::Delivered);
            }
            Some(s) if stamp.offset <= s.upto => return Some(Delivery::Delivered),
            _ => {}
        }
        let pushed = if outbox.history() {
            outbox.push_with(|buf| {
                Reply::encode_delivery_at(buf, stamp.offset, stamp.time, from, body);
            })
        } else {
            outbox.push_with(|buf| Reply::encode_delivery(buf, from, body))
        };
        drop(direct);
        if pushed.is_ok() {
            return Some(Delivery::Delivered);
        }
        debug!(%to, "recipient's queue is full; releasing its name");
        if let Ok(name) = Username::parse(to) {
            self.forget(&name, token);
        }
        Some(Delivery::NoSuchUser)
    }

    /// See [`tcpchat_server::History::hold`].
    pub(super) fn hold(&self, user: &str) {
        self.direct().insert(
            user.to_owned(),
            DirectState {
                catching: true,
                ..DirectState::default()
            },
        );
    }

    /// See [`tcpchat_server::History::go_live`]. `u64::MAX`: live without a catch-up.
    pub(super) fn go_live(
        self: &Arc<Self>,
        user: &str,
        upto: u64,
        then: &mut dyn FnMut(&StreamView),
    ) -> bool {
        let mut direct = self.direct();
        let Some(s) = direct.get_mut(user) else {
            return true;
        };
        if upto == u64::MAX {
            s.catching = false;
            return true;
        }
        if s.seen > upto {
            return false;
        }
        s.catching = false;
        s.upto = upto;
        then(&StreamView {
            epoch: s.epoch.clone(),
            top: upto,
            delivered: upto,
        });
        drop(direct);
        if upto > 0 {
            // Best effort: a lost update only means these are offered again next login.
            let inner = Arc::clone(self);
            let user = user.to_owned();
            self.runtime.spawn(async move {
                let mut pipe = redis::pipe();
                eval(
                    &mut pipe,
                    SCRIPTS.direct_delivered,
                    &keys::user_stream(&user),
                )
                .arg(upto);
                if let Err(e) = inner.step(&pipe, 1).await {
                    debug!(error = %e, %user, "cannot move the delivered mark");
                }
            });
        }
        true
    }

    /// A login's read of its direct stream (see [`tcpchat_server::History::direct_read`]).
    pub(super) async fn direct_read(
        &self,
        user: &str,
        after: u64,
        limit: u32,
    ) -> Result<DirectRead, CallError> {
        let mut pipe = redis::pipe();
        eval(&mut pipe, SCRIPTS.direct_read, &keys::user_stream(user))
            .arg(after)
            .arg(limit)
            .arg(self.retention_ms())
            .arg(new_epoch());
        let v = self.step(&pipe, 1).await?;
        let mut v = v
            .into_iter()
            .next()
            .map(items)
            .unwrap_or_default()
            .into_iter();
        let epoch = v.next().as_ref().and_then(text).unwrap_or_default();
        let mut num = || {
            v.next()
                .as_ref()
                .map_or(0, |n| u64::try_from(int(n)).unwrap_or(0))
        };
        let (top, delivered, oldest) = (num(), num(), num());
        let messages = v.filter_map(|e| stored(&text(&e)?)).collect();
        if let Some(s) = self.direct().get_mut(user) {
            s.epoch.clone_from(&epoch);
        }
        Ok(DirectRead {
            view: StreamView {
                epoch,
                top,
                delivered,
            },
            oldest: (oldest > 0).then_some(oldest),
            messages,
        })
    }

    /// The account `user` is gone: its stream's keys go (a new account gets a new epoch).
    pub(super) fn reset_direct(self: &Arc<Self>, user: &str) {
        let inner = Arc::clone(self);
        let [top, epoch, list, _, delivered] = keys::user_stream(user);
        self.runtime.spawn(async move {
            let mut pipe = redis::pipe();
            pipe.cmd("DEL")
                .arg(&top)
                .arg(&epoch)
                .arg(&list)
                .arg(&delivered);
            if let Err(e) = inner.step(&pipe, 1).await {
                debug!(error = %e, "cannot remove a removed account's direct stream");
            }
        });
    }

    /// A `history` sender's message to `to`, not delivered on any node: kept if `to` is an
    /// account nobody holds.
    pub(super) async fn queue_direct(
        &self,
        to: &str,
        from: &str,
        body: &str,
    ) -> Result<Queued, CallError> {
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS").arg(crate::accounts::key(to));
        if self.step(&pipe, 1).await?.first().map_or(0, int) == 0 {
            return Ok(Queued::NotAccount);
        }
        let mut pipe = redis::pipe();
        self.direct_call(&mut pipe, "q", to, from, body);
        let v = self.step(&pipe, 1).await?;
        match v.into_iter().next().map(items).unwrap_or_default().first() {
            Some(first) if text(first).as_deref() == Some("OK") => Ok(Queued::Stored),
            _ => Ok(Queued::Held),
        }
    }
}
