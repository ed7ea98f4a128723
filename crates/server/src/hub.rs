//! Presence and routing: who is logged in, and how a line reaches a name.
//!
//! Connection handling talks to presence only through [`Hub`]: log a name in (getting a lease
//! that frees it when dropped), list names, deliver a message. [`MemoryHub`] keeps everything
//! in this process. A multi-node backend (Redis) implements the same trait in its own crate;
//! nothing in the connection code knows which one it runs on.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tcpchat_proto::{Reply, Username};

use crate::outbox::Outbox;

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
}

/// What happened to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Queued on the recipient's connection (`SEND-OK`).
    Delivered,
    /// No such user, or the recipient is being dropped (`BAD-DEST-USER`).
    NoSuchUser,
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

    /// Everyone logged in, in no particular order.
    fn list(&self) -> impl Future<Output = Vec<Username>> + Send;

    /// Queues `DELIVERY <from> <body>` for `to`.
    fn deliver(
        &self,
        from: &Username,
        to: &Username,
        body: &str,
    ) -> impl Future<Output = Delivery> + Send;
}

/// The single-process hub: a map from name to outbox behind one short-held mutex.
#[derive(Debug, Clone, Default)]
pub struct MemoryHub {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    users: Mutex<HashMap<Username, Entry>>,
    next_id: AtomicU64,
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
}

impl MemoryHub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `DELIVERY` on a local outbox. Shared with backends that route to this process.
    pub fn deliver_to(outbox: &Outbox, from: &str, body: &str) -> Delivery {
        match outbox.push_with(|buf| Reply::encode_delivery(buf, from, body)) {
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
        Ok(MemoryLease {
            inner: Arc::clone(&self.inner),
            name: name.clone(),
            id,
        })
    }

    fn deliver_now(&self, from: &Username, to: &Username, body: &str) -> Delivery {
        // Queue while holding the map lock instead of cloning the `Arc` out: the push is one
        // short `memcpy` under the outbox's own lock, and the two atomic reference-count
        // updates it saves showed in the profile. Lock order is always users → outbox;
        // nothing takes the users lock while holding an outbox lock.
        match self.inner.users().get(to.as_str()) {
            Some(entry) => Self::deliver_to(&entry.outbox, from.as_str(), body),
            None => Delivery::NoSuchUser,
        }
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

    fn list(&self) -> impl Future<Output = Vec<Username>> + Send {
        std::future::ready(self.inner.users().keys().cloned().collect())
    }

    fn deliver(
        &self,
        from: &Username,
        to: &Username,
        body: &str,
    ) -> impl Future<Output = Delivery> + Send {
        std::future::ready(self.deliver_now(from, to, body))
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
        let mut users = self.inner.users();
        // Only remove our own entry: the id guards against freeing a name someone else
        // claimed after us (impossible today, cheap insurance for future backends).
        if users
            .get(self.name.as_str())
            .is_some_and(|e| e.id == self.id)
        {
            users.remove(self.name.as_str());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut names = hub.list().await;
        names.sort();
        assert_eq!(names, vec![name("bob")]);
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
}
