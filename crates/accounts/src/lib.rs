//! tcpchat accounts: names protected by a password (`docs/protocol.md`, "accounts").
//!
//! Three pieces, each usable alone:
//!
//! - [`AccountStore`]: the narrow interface the server and `tcpchat accounts` need (get,
//!   create if absent, set the password, delete, lock, unlock, list). Every method returns a
//!   future, so a store that blocks ([`SqliteStore`]) runs its calls off the async runtime and
//!   one that talks over the network (the cluster's Redis store, in `tcpchat-redis`) simply
//!   awaits.
//! - [`SqliteStore`]: the embedded store of a single server, one file `tcpchat.db` under the
//!   data directory, schema versioned with `PRAGMA user_version` ([`sqlite::MIGRATIONS`]).
//! - [`HashPool`]: argon2id hashing and verification on a bounded number of threads with a
//!   bounded queue. A full queue is refused at once ([`PoolError::Full`], `THROTTLED 1` on the
//!   wire) instead of waiting, so a login burst never queues behind itself without end, and
//!   chat never waits for hashing: it runs on the pool's own threads, not the runtime's.
//!
//! What is deliberately not here: the throttle (per address and per name) lives with the
//! server's other abuse limits (`tcpchat_server::limits`), which share its token bucket; the
//! protocol decisions (which reply when) live in the server's session and accounts modules.

mod hash;
pub mod history;
pub mod sqlite;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

pub use hash::{HashParams, HashPool, PoolError, Secret, DEFAULT_HASH_QUEUE};
pub use sqlite::{SqliteStore, DB_FILE};

/// One account as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    /// The protected name (a valid tcpchat user name).
    pub name: String,
    /// The password's argon2id hash as a PHC string (`$argon2id$v=19$m=…`): the parameters
    /// travel with the hash, so they can change later without breaking stored accounts.
    pub hash: String,
    /// Locked by the operator: `LOGIN` is answered `LOCKED`, and the name stays protected.
    pub locked: bool,
    /// When the account was registered, in seconds since the Unix epoch.
    pub created_at: i64,
    /// When its password was last set, in seconds since the Unix epoch.
    pub password_changed_at: i64,
}

impl fmt::Debug for Account {
    // The hash is not the password, but it is what an attacker would crack offline: it is
    // kept out of logs too.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("hash", &"<hidden>")
            .field("locked", &self.locked)
            .field("created_at", &self.created_at)
            .field("password_changed_at", &self.password_changed_at)
            .finish()
    }
}

/// Why a store call failed. Every one means "cannot answer now": the server answers
/// `THROTTLED` (try again later), never a wrong answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The embedded database refused the call.
    #[error("account database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The data directory or database file could not be prepared.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    /// The database was written by a newer tcpchat (its schema version is unknown here).
    #[error("account database {path} has schema version {found}; this tcpchat knows up to {known}: use a newer tcpchat")]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    /// A remote store (the cluster's Redis) did not answer or refused.
    #[error("account store unavailable: {0}")]
    Unavailable(String),
    /// The blocking task running the call was lost (the runtime is shutting down).
    #[error("account store task failed: {0}")]
    Task(String),
}

/// A store call's future. Boxed so the trait is object safe: the server holds its store as
/// `Arc<dyn AccountStore>`, whichever backend the binary chose. One allocation per call is
/// nothing beside a password hash or a disk write.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Where accounts live. Names are compared byte for byte, as tcpchat names are.
///
/// `is_registered` is on every classic login's path (`HELLO-FROM` must refuse a registered
/// name), so implementations make it cheap: the SQLite store answers from memory for names
/// that were never registered.
pub trait AccountStore: Send + Sync + 'static {
    /// The account called `name`, if there is one.
    fn get(&self, name: &str) -> StoreFuture<'_, Option<Account>>;

    /// Whether `name` is an account (locked or not).
    fn is_registered(&self, name: &str) -> StoreFuture<'_, bool>;

    /// Registers `name` with the PHC string `hash`, unless it is already an account.
    /// `Ok(false)`: it already was one, and nothing changed.
    fn create(&self, name: &str, hash: &str) -> StoreFuture<'_, bool>;

    /// Replaces the password hash of `name`. `Ok(false)`: no such account.
    fn set_password(&self, name: &str, hash: &str) -> StoreFuture<'_, bool>;

    /// Deletes the account `name`. `Ok(false)`: no such account.
    fn delete(&self, name: &str) -> StoreFuture<'_, bool>;

    /// Locks (`true`) or unlocks the account `name`. `Ok(false)`: no such account.
    fn set_locked(&self, name: &str, locked: bool) -> StoreFuture<'_, bool>;

    /// Every account, sorted by name.
    fn list(&self) -> StoreFuture<'_, Vec<Account>>;

    /// Whether new connections may be offered `accounts` now. A store that cannot promise
    /// to keep accounts (the cluster's Redis without persistence) says no; registered names
    /// stay protected through [`AccountStore::is_registered`] either way.
    fn offers_accounts(&self) -> bool {
        true
    }
}

/// Seconds since the Unix epoch, now (0 if the clock is before 1970).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
