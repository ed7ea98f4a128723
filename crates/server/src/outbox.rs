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
//! The queue is a plain `Vec<u8>` behind a `std::sync::Mutex`: each critical section is a
//! `memcpy` of one line, never held across an `.await` (see mini-redis `db.rs` on why a
//! blocking mutex is the right tool here). An idle outbox holds no buffer at all.

use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

/// Why a line could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The queue was past its limit; the connection is being dropped.
    #[error("outgoing queue full")]
    Full,
    /// The connection is closing.
    #[error("connection closed")]
    Closed,
}

/// Buffers up to this size are handed back for reuse after a write; larger ones are freed so
/// an idle connection does not keep the memory of a past burst.
const RECYCLE_MAX_BYTES: usize = 4096;

#[derive(Debug, Default)]
struct State {
    queue: Vec<u8>,
    /// An empty buffer with capacity, from the last write, to append into next.
    spare: Vec<u8>,
    overflowed: bool,
    closed: bool,
}

/// The outgoing queue of one connection. Shared as `Arc<Outbox>` between the connection's
/// task and everyone who can send to it (the hub).
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    ready: Notify,
    limit_bytes: usize,
}

impl Outbox {
    /// An empty outbox that refuses lines once `limit_bytes` are queued.
    pub fn new(limit_bytes: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            limit_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock can only come from an allocation failure in a
        // memcpy; the state is still consistent, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one line, written by `write` (which must append exactly one `\n`-terminated
    /// line to the vector it is given).
    ///
    /// # Errors
    /// [`PushError::Full`] if the queue is past its limit (the connection is then marked for
    /// dropping), [`PushError::Closed`] if the connection is closing.
    pub fn push_with(&self, write: impl FnOnce(&mut Vec<u8>)) -> Result<(), PushError> {
        let mut state = self.lock();
        if state.closed || state.overflowed {
            return Err(if state.overflowed {
                PushError::Full
            } else {
                PushError::Closed
            });
        }
        // The limit is checked before appending, so one line larger than the limit (a long
        // LIST-OK) still fits in an otherwise empty queue.
        if state.queue.len() >= self.limit_bytes {
            state.overflowed = true;
            drop(state);
            self.ready.notify_one();
            return Err(PushError::Full);
        }
        let was_empty = state.queue.is_empty();
        if was_empty && state.queue.capacity() == 0 {
            state.queue = std::mem::take(&mut state.spare);
        }
        write(&mut state.queue);
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
    /// does: [`PushError::Full`] (the peer stopped reading) or [`PushError::Closed`] (closed,
    /// possibly by the hub evicting the user: the connection should end).
    pub fn take(&self) -> (Vec<u8>, Option<PushError>) {
        let mut state = self.lock();
        let refusing = if state.overflowed {
            Some(PushError::Full)
        } else if state.closed {
            Some(PushError::Closed)
        } else {
            None
        };
        (std::mem::take(&mut state.queue), refusing)
    }

    /// Hands a written-out buffer back so the next batch can reuse its allocation.
    pub fn recycle(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() > RECYCLE_MAX_BYTES {
            return;
        }
        buffer.clear();
        let mut state = self.lock();
        if state.spare.capacity() < buffer.capacity() {
            state.spare = buffer;
        }
    }

    /// Drops the spare buffer (called when the connection goes idle).
    pub fn release_spare(&self) {
        self.lock().spare = Vec::new();
    }

    /// Refuses every later push and wakes the connection's task, which then ends the
    /// connection (a hub uses this to evict a user); returns what was still queued, for a
    /// last flush.
    pub fn close(&self) -> Vec<u8> {
        let mut state = self.lock();
        state.closed = true;
        state.spare = Vec::new();
        let rest = std::mem::take(&mut state.queue);
        drop(state);
        self.ready.notify_one();
        rest
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
    fn recycles_small_buffers_only() {
        let o = Outbox::new(1 << 20);
        o.push_with(line("a\n")).unwrap();
        let (mut buf, _) = o.take();
        buf.reserve(100);
        let cap = buf.capacity();
        o.recycle(buf);
        o.push_with(line("b\n")).unwrap();
        let (buf, _) = o.take();
        assert_eq!(buf.capacity(), cap, "the recycled allocation was reused");
        o.recycle(Vec::with_capacity(RECYCLE_MAX_BYTES * 2));
        o.push_with(line("c\n")).unwrap();
        assert!(o.take().0.capacity() < RECYCLE_MAX_BYTES * 2);
    }

    #[tokio::test]
    async fn close_wakes_the_owner_and_is_reported() {
        let o = Outbox::new(100);
        o.close();
        tokio::time::timeout(std::time::Duration::from_secs(5), o.ready())
            .await
            .expect("close leaves a wakeup");
        assert_eq!(o.take(), (Vec::new(), Some(PushError::Closed)));
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
