//! [`SqliteStore`]: accounts in one SQLite file, `<data-dir>/tcpchat.db`.
//!
//! Why SQLite: one file the operator can back up with `cp` (or `sqlite3 .backup`), no server
//! to run, transactions and crash safety for free, and compiled into the binary (rusqlite's
//! `bundled` feature), so nothing is installed by hand. WAL mode lets `tcpchat accounts` read
//! and write the file while a server has it open.
//!
//! The schema is versioned with `PRAGMA user_version`: [`MIGRATIONS`] is the list of steps,
//! step *n* taking a database from version *n − 1* to *n*, each in its own transaction with
//! the version bump, so a crash leaves the file at one version or the next, never between.
//! A file with a version above the known ones is refused ([`StoreError::TooNew`]) rather than
//! guessed at.
//!
//! Every call blocks (disk), so the [`AccountStore`] methods run it on tokio's blocking pool.
//! The one call on every classic login, [`AccountStore::is_registered`], answers from memory
//! for names that are not accounts: the store keeps the set of registered names, loaded at
//! open and kept in step by its own writes. Only this store creates accounts (the operator's
//! `tcpchat accounts` locks, unlocks and removes them), so a name missing from the set is
//! certainly not an account; a name in it is confirmed on disk, so one removed meanwhile by
//! `tcpchat accounts remove` is seen as free at once.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};

use crate::{unix_now, Account, AccountStore, StoreError, StoreFuture};

/// The database file's name inside the data directory.
pub const DB_FILE: &str = "tcpchat.db";

/// The schema steps, oldest first; step `i` (0-based) takes the file to version `i + 1`.
/// Never edit a released step: add one.
pub const MIGRATIONS: &[&str] = &[
    // 1: the accounts themselves.
    "CREATE TABLE accounts (
        name TEXT PRIMARY KEY NOT NULL,
        hash TEXT NOT NULL,
        locked INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // 2: when each password was last set (shown by `tcpchat accounts list`); accounts from
    // version 1 get their registration time.
    "ALTER TABLE accounts ADD COLUMN password_changed_at INTEGER NOT NULL DEFAULT 0;
     UPDATE accounts SET password_changed_at = created_at;",
    // 3: the `history` extension's streams and messages (`crate::history`). A stream is
    // `@<user>` (a user's direct messages) or `#<room>`; `top` is its newest offset ever
    // (kept when its messages are pruned), `delivered` the newest one that reached a
    // connection of the user.
    "CREATE TABLE history_streams (
        stream TEXT PRIMARY KEY NOT NULL,
        epoch TEXT NOT NULL,
        top INTEGER NOT NULL,
        delivered INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE TABLE history_messages (
        stream TEXT NOT NULL,
        offset INTEGER NOT NULL,
        time INTEGER NOT NULL,
        sender TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (stream, offset)
    ) WITHOUT ROWID;
    CREATE INDEX history_messages_by_time ON history_messages (time);",
];

/// The schema version this build writes.
pub fn schema_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// The embedded account store. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Names registered as far as this store knows: see the module docs.
    registered: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `<data_dir>/tcpchat.db`, creating `data_dir` with mode 0700
    /// if it does not exist, and brings the schema up to date.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the directory cannot be created, [`StoreError::TooNew`] for a
    /// file from a newer tcpchat, [`StoreError::Sqlite`] for anything SQLite refuses.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        create_private_dir(data_dir)?;
        Self::open_file(&data_dir.join(DB_FILE))
    }

    /// Opens the database file at `path` itself (its directory must exist).
    ///
    /// # Errors
    /// As [`SqliteStore::open`].
    pub fn open_file(path: &Path) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        // WAL: readers never block the writer, so `tcpchat accounts list` beside a busy
        // server is fine; NORMAL sync is crash safe in WAL mode (a power cut may lose the
        // last commit, never corrupt the file).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Another process (the operator's command) may hold the write lock for a moment.
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn, path)?;
        let registered = {
            let mut stmt = conn.prepare("SELECT name FROM accounts")?;
            let names = stmt.query_map([], |row| row.get::<_, String>(0))?;
            names.collect::<Result<HashSet<_>, _>>()?
        };
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                conn: Mutex::new(conn),
                registered: Mutex::new(registered),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether `name` is an account as far as this store knows, from memory only (no disk,
    /// no task): what the history service asks on every direct message. A name removed by
    /// `tcpchat accounts remove` meanwhile may still be seen as an account until it is
    /// next looked up.
    pub fn is_registered_cached(&self, name: &str) -> bool {
        self.inner.registered().contains(name)
    }

    /// The account `name`, blocking.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn get_blocking(&self, name: &str) -> Result<Option<Account>, StoreError> {
        let account = self
            .inner
            .conn()
            .query_row(
                "SELECT name, hash, locked, created_at, password_changed_at
                 FROM accounts WHERE name = ?1",
                [name],
                row_to_account,
            )
            .optional()?;
        if account.is_none() {
            self.inner.registered().remove(name);
        }
        Ok(account)
    }

    /// Registers `name` unless it is an account already, blocking. `Ok(false)` if it was.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn create_blocking(&self, name: &str, hash: &str) -> Result<bool, StoreError> {
        let now = unix_now();
        let created = self.inner.conn().execute(
            "INSERT INTO accounts (name, hash, locked, created_at, password_changed_at)
             VALUES (?1, ?2, 0, ?3, ?3) ON CONFLICT (name) DO NOTHING",
            params![name, hash, now],
        )? == 1;
        // Either way the name is an account now.
        self.inner.registered().insert(name.to_owned());
        Ok(created)
    }

    /// Replaces the password hash of `name`, blocking. `Ok(false)` if there is no such account.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn set_password_blocking(&self, name: &str, hash: &str) -> Result<bool, StoreError> {
        let changed = self.inner.conn().execute(
            "UPDATE accounts SET hash = ?2, password_changed_at = ?3 WHERE name = ?1",
            params![name, hash, unix_now()],
        )?;
        Ok(changed == 1)
    }

    /// Deletes the account `name`, blocking. `Ok(false)` if there is no such account.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn delete_blocking(&self, name: &str) -> Result<bool, StoreError> {
        let mut conn = self.inner.conn();
        let tx = conn.transaction()?;
        let deleted = tx.execute("DELETE FROM accounts WHERE name = ?1", [name])?;
        // The account's direct messages go with it: whoever registers the name next must
        // not read them (`docs/protocol.md`, "history").
        let stream = format!("@{name}");
        tx.execute("DELETE FROM history_messages WHERE stream = ?1", [&stream])?;
        tx.execute("DELETE FROM history_streams WHERE stream = ?1", [&stream])?;
        tx.commit()?;
        drop(conn);
        self.inner.registered().remove(name);
        Ok(deleted == 1)
    }

    /// Locks or unlocks the account `name`, blocking. `Ok(false)` if there is no such account.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn set_locked_blocking(&self, name: &str, locked: bool) -> Result<bool, StoreError> {
        let changed = self.inner.conn().execute(
            "UPDATE accounts SET locked = ?2 WHERE name = ?1",
            params![name, locked],
        )?;
        Ok(changed == 1)
    }

    /// Every account, sorted by name (byte order), blocking.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn list_blocking(&self) -> Result<Vec<Account>, StoreError> {
        let conn = self.inner.conn();
        let mut stmt = conn.prepare(
            "SELECT name, hash, locked, created_at, password_changed_at
             FROM accounts ORDER BY name",
        )?;
        let rows = stmt.query_map([], row_to_account)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Runs `call` on a clone of this store on tokio's blocking pool.
    fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(&SqliteStore) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'static, T> {
        let store = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || call(&store))
                .await
                .map_err(|e| StoreError::Task(e.to_string()))?
        })
    }
}

impl Inner {
    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic inside rusqlite while holding the lock leaves SQLite's own state
        // consistent (every change is transactional); go on.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn registered(&self) -> MutexGuard<'_, HashSet<String>> {
        // Set operations only under this lock.
        self.registered.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl AccountStore for SqliteStore {
    fn get(&self, name: &str) -> StoreFuture<'_, Option<Account>> {
        let name = name.to_owned();
        self.blocking(move |s| s.get_blocking(&name))
    }

    fn is_registered(&self, name: &str) -> StoreFuture<'_, bool> {
        // The classic login's fast path: no task, no disk (see the module docs).
        if !self.inner.registered().contains(name) {
            return Box::pin(std::future::ready(Ok(false)));
        }
        let name = name.to_owned();
        self.blocking(move |s| s.get_blocking(&name).map(|a| a.is_some()))
    }

    fn create(&self, name: &str, hash: &str) -> StoreFuture<'_, bool> {
        let (name, hash) = (name.to_owned(), hash.to_owned());
        self.blocking(move |s| s.create_blocking(&name, &hash))
    }

    fn set_password(&self, name: &str, hash: &str) -> StoreFuture<'_, bool> {
        let (name, hash) = (name.to_owned(), hash.to_owned());
        self.blocking(move |s| s.set_password_blocking(&name, &hash))
    }

    fn delete(&self, name: &str) -> StoreFuture<'_, bool> {
        let name = name.to_owned();
        self.blocking(move |s| s.delete_blocking(&name))
    }

    fn set_locked(&self, name: &str, locked: bool) -> StoreFuture<'_, bool> {
        let name = name.to_owned();
        self.blocking(move |s| s.set_locked_blocking(&name, locked))
    }

    fn list(&self) -> StoreFuture<'_, Vec<Account>> {
        self.blocking(SqliteStore::list_blocking)
    }
}

fn row_to_account(row: &rusqlite::Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account {
        name: row.get(0)?,
        hash: row.get(1)?,
        locked: row.get(2)?,
        created_at: row.get(3)?,
        password_changed_at: row.get(4)?,
    })
}

/// Brings the schema from its `user_version` up to [`schema_version`], one step per
/// transaction.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let known = schema_version();
    if found > known {
        return Err(StoreError::TooNew {
            path: path.display().to_string(),
            found,
            known,
        });
    }
    for (version, step) in (1..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(found).unwrap_or(0))
    {
        // IMMEDIATE: take the write lock first, so two processes opening an old file at once
        // cannot both run the step (the second waits, then sees the new version and skips).
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let now: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
        if now >= version {
            continue;
        }
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!(path = %path.display(), version, "account database migrated");
    }
    Ok(())
}

/// Creates `dir` (and its parents) with mode 0700 if missing: the directory holds password
/// hashes. An existing directory is left as the operator made it.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| StoreError::Io {
        what: "cannot create the data directory",
        path: dir.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_version(path: &Path) -> i64 {
        let conn = Connection::open(path).expect("open");
        conn.pragma_query_value(None, "user_version", |row| row.get(0))
            .expect("user_version")
    }

    #[test]
    fn a_fresh_directory_gets_a_private_dir_and_the_latest_schema() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a/b");
        let store = SqliteStore::open(&dir).expect("open");
        assert_eq!(store.path(), dir.join(DB_FILE));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&dir).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        drop(store);
        assert_eq!(user_version(&dir.join(DB_FILE)), schema_version());
    }

    #[test]
    fn crud_and_the_registered_set() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(tmp.path()).expect("open");
        assert!(store.get_blocking("alice").expect("get").is_none());
        assert!(store.create_blocking("alice", "h1").expect("create"));
        assert!(
            !store.create_blocking("alice", "h2").expect("create"),
            "once"
        );
        let a = store.get_blocking("alice").expect("get").expect("exists");
        assert_eq!((a.hash.as_str(), a.locked), ("h1", false));
        assert!(
            store.get_blocking("Alice").expect("get").is_none(),
            "byte for byte"
        );
        assert!(store.set_password_blocking("alice", "h3").expect("set"));
        assert!(!store.set_password_blocking("bob", "h").expect("set"));
        assert!(store.set_locked_blocking("alice", true).expect("lock"));
        let a = store.get_blocking("alice").expect("get").expect("exists");
        assert_eq!((a.hash.as_str(), a.locked), ("h3", true));
        store.create_blocking("aaron", "h").expect("create");
        let names: Vec<_> = store
            .list_blocking()
            .expect("list")
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(names, ["aaron", "alice"]);
        assert!(store.delete_blocking("alice").expect("delete"));
        assert!(!store.delete_blocking("alice").expect("delete"));
        assert!(!store.inner.registered().contains("alice"));
        assert!(store.inner.registered().contains("aaron"));
    }

    #[tokio::test]
    async fn is_registered_sees_a_removal_by_another_process_at_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let server = SqliteStore::open(tmp.path()).expect("open");
        assert!(!server.is_registered("alice").await.expect("ask"));
        server.create("alice", "h").await.expect("create");
        assert!(server.is_registered("alice").await.expect("ask"));
        // The operator's command: another connection to the same file.
        let operator = SqliteStore::open(tmp.path()).expect("open again");
        assert!(operator.delete_blocking("alice").expect("delete"));
        assert!(!server.is_registered("alice").await.expect("ask"));
    }

    #[test]
    fn accounts_survive_reopening() {
        let tmp = tempfile::tempdir().expect("tempdir");
        SqliteStore::open(tmp.path())
            .expect("open")
            .create_blocking("alice", "h")
            .expect("create");
        let store = SqliteStore::open(tmp.path()).expect("reopen");
        assert!(store.inner.registered().contains("alice"), "set loaded");
        assert!(store.get_blocking("alice").expect("get").is_some());
    }

    /// Every earlier version, with an account written the way that version wrote it, is
    /// brought up to date without losing it.
    #[test]
    fn migrates_from_every_earlier_version() {
        for from in 0..schema_version() {
            let tmp = tempfile::tempdir().expect("tempdir");
            let path = tmp.path().join(DB_FILE);
            {
                let conn = Connection::open(&path).expect("open");
                for (version, step) in (1..=from).zip(MIGRATIONS) {
                    conn.execute_batch(step).expect("old step");
                    conn.pragma_update(None, "user_version", version)
                        .expect("version");
                }
                if from == 1 {
                    conn.execute(
                        "INSERT INTO accounts (name, hash, locked, created_at) VALUES ('old', 'h', 1, 1234)",
                        [],
                    )
                    .expect("old account");
                } else if from >= 2 {
                    conn.execute(
                        "INSERT INTO accounts (name, hash, locked, created_at, password_changed_at)
                         VALUES ('old', 'h', 1, 1234, 1234)",
                        [],
                    )
                    .expect("old account");
                }
            }
            let store = SqliteStore::open_file(&path).expect("migrate");
            assert_eq!(user_version(&path), schema_version(), "from {from}");
            if from >= 1 {
                let old = store.get_blocking("old").expect("get").expect("kept");
                assert!(old.locked);
                assert_eq!((old.created_at, old.password_changed_at), (1234, 1234));
            }
            assert!(store.create_blocking("new", "h").expect("create"));
        }
    }

    #[test]
    fn a_file_from_a_newer_tcpchat_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join(DB_FILE);
        Connection::open(&path)
            .expect("open")
            .pragma_update(None, "user_version", schema_version() + 1)
            .expect("version");
        match SqliteStore::open_file(&path) {
            Err(StoreError::TooNew { found, .. }) => assert_eq!(found, schema_version() + 1),
            other => panic!("expected TooNew, got {other:?}"),
        }
    }
}
