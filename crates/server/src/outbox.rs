//! A connection's bounded queue of outgoing bytes.
//!
//! Anyone may append to any connection's outbox (its own replies, other users' deliveries)
//! without waiting: appending never blocks and never sleeps. The connection's task takes the
//! whole queue at once and writes it with as few syscalls as it can, so lines that pile up
//! while the peer is slow go out in one batch.
//!
//! The bound is in bytes. An outbox that is already past its limit refuses the next line and
//! marks itself overflowed; its task then drops the connection. That is the decided behaviour
//! for a reader that stops reading (`docs/protocol.md`): it costs others nothing.
//!
//! Two ways to stop an outbox, kept apart because they mean different things:
//! [`Outbox::evict`] is the hub taking the name back (the lines already queued stay, for the
//! owner to write before it closes), [`Outbox::close`] is the owner's own final flush (it
//! takes what is left). Each refuses later lines with its own [`PushError`].
//!
//! The queue is a plain `Vec<u8>` behind a `std::sync::Mutex`: each critical section is a
//! `memcpy` of one line, never held across an `.await` (see mini-redis `db.rs` on why a
//! blocking mutex is the right tool here). An idle outbox holds no buffer at all: the queue
//! is handed out whole by [`Outbox::take`] and nothing is kept for reuse.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::latency::Stamp;

/// Why a line could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The queue was past its limit; the connection is being dropped.
    #[error("outgoing queue full")]
    Full,
    /// The hub took the user's name back ([`Outbox::evict`]); the connection is ending.
    #[error("user evicted")]
    Evicted,
    /// The connection is closing: its owner is writing what is left ([`Outbox::close`]).
    #[error("connection closed")]
    Closed,
}

#[derive(Debug, Default)]
struct State {
    queue: Vec<u8>,
    /// Why lines are refused, once they are.
    refusing: Option<PushError>,
    /// When the oldest delivery queued was read, and how many are stamped
    /// ([`crate::latency`]); `None` with metrics off.
    stamp: Option<Stamp>,
}

/// The outgoing queue of one connection. Shared as `Arc<Outbox>` between the connection's
/// task and everyone who can send to it (the hub).
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    ready: Notify,
    limit_bytes: usize,
    /// The connection negotiated `history`: its direct and room messages are the lines with
    /// offsets (`DELIVERY-AT`, `SAID-AT`). Set once, before login, so every sender reads it
    /// the same way from then on.
    history: AtomicBool,
}

impl Outbox {
    /// An empty outbox that refuses lines once `limit_bytes` are queued.
    pub fn new(limit_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            limit_bytes,
            history: AtomicBool::new(false),
        }
    }

    /// Marks the connection as a `history` one (see [`Outbox::history`]).
    pub fn set_history(&self) {
        self.history.store(true, Ordering::Relaxed);
    }

    /// Whether the connection negotiated `history`.
    pub fn history(&self) -> bool {
        self.history.load(Ordering::Relaxed)
    }

    /// The queue's limit in bytes.
    pub fn limit_bytes(&self) -> usize {
        self.limit_bytes
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock can only come from an allocation failure in a
        // memcpy; the state is still consistent, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one line, written by `write` (which must append whole `\n`-terminated lines
    /// to the vector it is given: one, or a few that belong together, such as a presence
    /// list).
    ///
    /// # Errors
    /// [`PushError::Full`] if the queue is past its limit (the connection is then marked for
    /// dropping), [`PushError::Evicted`] or [`PushError::Closed`] if it is ending.
    pub fn push_with(&self, write: impl FnOnce(&mut Vec<u8>)) -> Result<(), PushError> {
        self.push_read_at(None, write)
    }

    /// [`Outbox::push_with`] for a line read at `read_at` on the sender's connection (a
    /// delivery): the outbox keeps the oldest such time for [`Outbox::take_stamped`].
    ///
    /// # Errors
    /// As [`Outbox::push_with`].
    pub fn push_read_at(
        &self,
        read_at: Option<std::time::Instant>,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), PushError> {
        let mut state = self.lock();
        if let Some(why) = state.refusing {
            return Err(why);
        }
        // The limit is checked before appending, so one line larger than the limit (a long
        // LIST-OK) still fits in an otherwise empty queue.
        if state.queue.len() >= self.limit_bytes {
            state.refusing = Some(PushError::Full);
            drop(state);
            self.ready.notify_one();
            return Err(PushError::Full);
        }
        let was_empty = state.queue.is_empty();
        write(&mut state.queue);
        if let Some(at) = read_at {
            state.stamp = Some(Stamp::with(state.stamp, at));
        }
        drop(state);
        if was_empty {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Waits until something was queued (or the outbox overflowed) since the last
    /// [`Outbox::take`]. Wakeups are never lost: a push that happens before this is awaited
    /// still wakes it.
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Takes everything queued. Returns the bytes, and why the outbox refuses lines if it
    /// does: [`PushError::Full`] (the peer stopped reading), [`PushError::Evicted`] (the hub
    /// took the name back) or [`PushError::Closed`]; in each case the connection should end.
    pub fn take(&self) -> (Vec<u8>, Option<PushError>) {
        let (bytes, refusing, _) = self.take_stamped();
        (bytes, refusing)
    }

    /// [`Outbox::take`], with the stamp of the deliveries among the bytes (see
    /// [`Outbox::push_read_at`]).
    pub fn take_stamped(&self) -> (Vec<u8>, Option<PushError>, Option<Stamp>) {
        let mut state = self.lock();
        let stamp = state.stamp.take();
        (std::mem::take(&mut state.queue), state.refusing, stamp)
    }

    /// Why the outbox refuses lines, if it does, without taking anything: lets a task whose
    /// socket is not taking its last batch notice that the peer's queue overflowed.
    pub fn refusing(&self) -> Option<PushError> {
        self.lock().refusing
    }

    /// The hub takes the user's name back: every later push is refused with
    /// [`PushError::Evicted`], and the connection's task is woken so it ends the connection
    /// at once. The lines already queued stay, for the owner to write before it closes.
    /// Does nothing to an outbox that already refuses lines.
    pub fn evict(&self) {
        let mut state = self.lock();
        if state.refusing.is_some() {
            return;
        }
        state.refusing = Some(PushError::Evicted);
        drop(state);
        self.ready.notify_one();
    }

    /// The owner's final flush: refuses every later push (with [`PushError::Closed`], unless
    /// it already refused them for another reason) and returns what is still queued.
    pub fn close(&self) -> Vec<u8> {
        let mut state = self.lock();
        state.refusing.get_or_insert(PushError::Closed);
        std::mem::take(&mut state.queue)
    }

    /// Bytes queued and not yet taken.
    pub fn queued_bytes(&self) -> usize {
        self.lock().queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &'static str) -> impl FnOnce(&mut Vec<u8>) {
        move |b| b.extend_from_slice(s.as_bytes())
    }

    #[test]
    fn batches_until_taken() {
        let o = Outbox::new(100);
        o.push_with(line("a\n")).unwrap();
        o.push_with(line("b\n")).unwrap();
        assert_eq!(o.take(), (b"a\nb\n".to_vec(), None));
        assert_eq!(o.take(), (Vec::new(), None));
    }

    #[test]
    fn overflow_refuses_and_marks() {
        let o = Outbox::new(4);
        o.push_with(line("0123456789\n"))
            .expect("one big line fits an empty queue");
        assert_eq!(o.push_with(line("x\n")), Err(PushError::Full));
        assert_eq!(o.push_with(line("y\n")), Err(PushError::Full));
        let (bytes, refusing) = o.take();
        assert_eq!(refusing, Some(PushError::Full));
        assert_eq!(bytes, b"0123456789\n");
    }

    #[test]
    fn closed_refuses() {
        let o = Outbox::new(100);
        o.push_with(line("last\n")).unwrap();
        assert_eq!(o.close(), b"last\n");
        assert_eq!(o.push_with(line("x\n")), Err(PushError::Closed));
    }

    #[test]
    fn holds_no_buffer_once_taken() {
        let o = Outbox::new(1 << 20);
        o.push_with(line("a\n")).unwrap();
        let (buf, _) = o.take();
        assert_eq!(buf, b"a\n");
        assert_eq!(
            o.lock().queue.capacity(),
            0,
            "an idle outbox holds no buffer"
        );
    }

    #[tokio::test]
    async fn eviction_wakes_the_owner_and_keeps_what_was_queued() {
        let o = Outbox::new(100);
        o.push_with(line("queued\n")).unwrap();
        o.evict();
        assert_eq!(o.push_with(line("x\n")), Err(PushError::Evicted));
        tokio::time::timeout(std::time::Duration::from_secs(5), o.ready())
            .await
            .expect("evict leaves a wakeup");
        assert_eq!(o.take(), (b"queued\n".to_vec(), Some(PushError::Evicted)));
        assert_eq!(o.close(), b"");
        assert_eq!(
            o.push_with(line("y\n")),
            Err(PushError::Evicted),
            "the final flush does not hide why the connection ended"
        );
    }

    #[test]
    fn eviction_after_overflow_stays_overflow() {
        let o = Outbox::new(1);
        o.push_with(line("ab\n")).unwrap();
        assert_eq!(o.push_with(line("c\n")), Err(PushError::Full));
        o.evict();
        assert_eq!(o.take().1, Some(PushError::Full));
    }

    #[test]
    fn the_oldest_read_stamp_goes_with_the_batch() {
        let o = Outbox::new(100);
        let t0 = std::time::Instant::now();
        let t1 = t0 + std::time::Duration::from_millis(1);
        o.push_with(line("reply\n")).unwrap();
        o.push_read_at(Some(t1), line("d1\n")).unwrap();
        o.push_read_at(Some(t0), line("d2\n")).unwrap();
        let (bytes, _, stamp) = o.take_stamped();
        assert_eq!(bytes, b"reply\nd1\nd2\n");
        assert_eq!(
            stamp,
            Some(Stamp {
                oldest: t0,
                lines: 2
            })
        );
        o.push_with(line("x\n")).unwrap();
        assert_eq!(o.take_stamped().2, None, "taken with the batch");
    }

    #[tokio::test]
    async fn push_before_wait_is_not_lost() {
        let o = Outbox::new(100);
        o.push_with(line("a\n")).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), o.ready())
            .await
            .expect("the earlier push left a wakeup");
    }
}
