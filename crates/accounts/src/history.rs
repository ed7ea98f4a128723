//! [`HistoryDb`]: the `history` extension's messages in the same SQLite file as the accounts
//! (`<data-dir>/tcpchat.db`, schema step 3 of [`crate::sqlite::MIGRATIONS`]).
//!
//! Only storage lives here: rows in, rows out, pruning. Offsets are assigned by the server in
//! memory (they never wait for the disk) and written here in batches by one writer thread,
//! one transaction per batch ([`HistoryDb::write`]); reads come from their own connection, so
//! a page asked for never waits behind a batch (WAL: readers do not block the writer).

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};

use crate::sqlite::{create_private_dir, migrate, DB_FILE};
use crate::StoreError;

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub time: u64,
    pub sender: String,
    pub body: String,
}

/// A stream as the database knows it, read at start to recover the in-memory counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRow {
    pub stream: String,
    pub epoch: String,
    pub top: u64,
    pub delivered: u64,
}

/// One change for [`HistoryDb::write`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// A message, numbered `offset` of `stream` in `epoch`; `delivered` is the stream's
    /// delivered offset after it.
    Append {
        stream: String,
        epoch: String,
        offset: u64,
        time: u64,
        sender: String,
        body: String,
        delivered: u64,
    },
    /// Everything up to `offset` of `stream` reached the user.
    Delivered { stream: String, offset: u64 },
    /// The stream is gone (its account was removed): rows and counters.
    Reset { stream: String },
}

/// The limits applied when pruning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Most messages kept per `@` stream.
    pub direct_cap: u64,
    /// Most messages kept per `#` stream.
    pub room_cap: u64,
    /// Messages older than this many milliseconds are removed; `None` keeps them.
    pub retention_ms: Option<u64>,
}

/// The history tables of one database file.
pub struct HistoryDb {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for HistoryDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryDb").finish_non_exhaustive()
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl HistoryDb {
    /// Opens (creating if needed) `<data_dir>/tcpchat.db` and brings the schema up to date.
    ///
    /// # Errors
    /// As [`crate::SqliteStore::open`].
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        create_private_dir(data_dir)?;
        let path = data_dir.join(DB_FILE);
        let mut conn = Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn, &path)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // Every change is transactional: a panic leaves SQLite consistent.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every stream with its counters.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn streams(&self) -> Result<Vec<StreamRow>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT stream, epoch, top, delivered FROM history_streams")?;
        let rows = stmt.query_map([], |row| {
            Ok(StreamRow {
                stream: row.get(0)?,
                epoch: row.get(1)?,
                top: to_u64(row.get(2)?),
                delivered: to_u64(row.get(3)?),
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Writes `batch` in one transaction, then prunes the streams it touched to their cap
    /// and everything to the retention, as of `now_ms`.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`]; nothing of the batch is written then.
    pub fn write(&self, batch: &[Write], bounds: Bounds, now_ms: u64) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut touched: Vec<&str> = Vec::new();
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR REPLACE INTO history_messages (stream, offset, time, sender, body)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut upsert = tx.prepare_cached(
                "INSERT INTO history_streams (stream, epoch, top, delivered) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (stream) DO UPDATE SET epoch = ?2, top = MAX(top, ?3),
                 delivered = MAX(delivered, ?4)",
            )?;
            for write in batch {
                match write {
                    Write::Append {
                        stream,
                        epoch,
                        offset,
                        time,
                        sender,
                        body,
                        delivered,
                    } => {
                        insert.execute(params![
                            stream,
                            to_i64(*offset),
                            to_i64(*time),
                            sender,
                            body
                        ])?;
                        upsert.execute(params![
                            stream,
                            epoch,
                            to_i64(*offset),
                            to_i64(*delivered)
                        ])?;
                        if !touched.contains(&stream.as_str()) {
                            touched.push(stream);
                        }
                    }
                    Write::Delivered { stream, offset } => {
                        tx.execute(
                            "UPDATE history_streams SET delivered = MAX(delivered, ?2)
                             WHERE stream = ?1",
                            params![stream, to_i64(*offset)],
                        )?;
                    }
                    Write::Reset { stream } => {
                        tx.execute("DELETE FROM history_messages WHERE stream = ?1", [stream])?;
                        tx.execute("DELETE FROM history_streams WHERE stream = ?1", [stream])?;
                        touched.retain(|s| *s != stream);
                    }
                }
            }
            let mut prune = tx.prepare_cached(
                "DELETE FROM history_messages WHERE stream = ?1 AND offset <= ?2",
            )?;
            for stream in touched {
                let top: Option<i64> = tx
                    .query_row(
                        "SELECT top FROM history_streams WHERE stream = ?1",
                        [stream],
                        |row| row.get(0),
                    )
                    .optional()?;
                let cap = if stream.starts_with('@') {
                    bounds.direct_cap
                } else {
                    bounds.room_cap
                };
                let keep_from = to_u64(top.unwrap_or(0)).saturating_sub(cap);
                if keep_from > 0 {
                    prune.execute(params![stream, to_i64(keep_from)])?;
                }
            }
        }
        prune_expired(&tx, bounds, now_ms)?;
        tx.commit()?;
        Ok(())
    }

    /// Removes what is older than the retention, as of `now_ms` (the periodic prune).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn prune(&self, bounds: Bounds, now_ms: u64) -> Result<usize, StoreError> {
        let conn = self.conn();
        prune_expired(&conn, bounds, now_ms)
    }

    /// The messages of `stream` with offsets in `(after, upto]`, oldest first, at most
    /// `limit`.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn after(
        &self,
        stream: &str,
        after: u64,
        upto: u64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT offset, time, sender, body FROM history_messages
             WHERE stream = ?1 AND offset > ?2 AND offset <= ?3 ORDER BY offset LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![stream, to_i64(after), to_i64(upto), limit],
            row_to_message,
        )?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// The newest `count` messages of `stream` with offsets below `before`, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn before(
        &self,
        stream: &str,
        before: u64,
        count: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT offset, time, sender, body FROM history_messages
             WHERE stream = ?1 AND offset < ?2 ORDER BY offset DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![stream, to_i64(before), count], row_to_message)?;
        let mut page = rows.collect::<Result<Vec<_>, _>>()?;
        page.reverse();
        Ok(page)
    }

    /// The oldest offset still kept in `stream`, if any.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn oldest(&self, stream: &str) -> Result<Option<u64>, StoreError> {
        let conn = self.conn();
        let oldest: Option<i64> = conn.query_row(
            "SELECT MIN(offset) FROM history_messages WHERE stream = ?1",
            [stream],
            |row| row.get(0),
        )?;
        Ok(oldest.map(to_u64))
    }

    /// How many messages are kept in all (for tests and the operator).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn count(&self) -> Result<u64, StoreError> {
        let conn = self.conn();
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM history_messages", [], |row| {
            row.get(0)
        })?;
        Ok(to_u64(n))
    }
}

fn prune_expired(conn: &Connection, bounds: Bounds, now_ms: u64) -> Result<usize, StoreError> {
    let Some(retention) = bounds.retention_ms else {
        return Ok(0);
    };
    let cutoff = now_ms.saturating_sub(retention);
    let removed = conn.execute(
        "DELETE FROM history_messages WHERE time < ?1",
        [to_i64(cutoff)],
    )?;
    // A room whose every message expired is forgotten with them (its next message starts a
    // new epoch after a restart), so room names used once do not pile up. Direct streams
    // stay: their delivered offset is their user's.
    conn.execute(
        "DELETE FROM history_streams WHERE stream LIKE '#%' AND NOT EXISTS
         (SELECT 1 FROM history_messages m WHERE m.stream = history_streams.stream)",
        [],
    )?;
    Ok(removed)
}

fn row_to_message(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    Ok(StoredMessage {
        offset: to_u64(row.get(0)?),
        time: to_u64(row.get(1)?),
        sender: row.get(2)?,
        body: row.get(3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: Bounds = Bounds {
        direct_cap: 3,
        room_cap: 5,
        retention_ms: Some(1_000),
    };

    fn append(stream: &str, offset: u64, time: u64) -> Write {
        Write::Append {
            stream: stream.into(),
            epoch: "e1".into(),
            offset,
            time,
            sender: "bob".into(),
            body: format!("m{offset}"),
            delivered: 0,
        }
    }

    #[test]
    fn caps_retention_paging_and_reset() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = HistoryDb::open(tmp.path()).expect("open");
        let batch: Vec<Write> = (1..=10).map(|o| append("@alice", o, 10_000 + o)).collect();
        db.write(&batch, BOUNDS, 10_010).expect("write");
        // The cap: the newest 3 of 10.
        let kept: Vec<u64> = db
            .after("@alice", 0, 100, 50)
            .expect("read")
            .iter()
            .map(|m| m.offset)
            .collect();
        assert_eq!(kept, [8, 9, 10]);
        assert_eq!(db.oldest("@alice").expect("oldest"), Some(8));
        let page: Vec<u64> = db
            .before("@alice", 10, 2)
            .expect("page")
            .iter()
            .map(|m| m.offset)
            .collect();
        assert_eq!(page, [8, 9]);
        let rows = db.streams().expect("streams");
        assert_eq!(rows[0].top, 10, "the top outlives the pruned messages");
        // Retention: everything older than 1 s before now goes.
        db.write(&[append("#r", 1, 20_000)], BOUNDS, 20_500)
            .expect("write");
        assert_eq!(db.count().expect("count"), 1);
        assert_eq!(db.prune(BOUNDS, 30_000).expect("prune"), 1);
        assert_eq!(db.count().expect("count"), 0);
        let streams = db.streams().expect("streams");
        assert!(
            streams.iter().all(|r| r.stream != "#r"),
            "a room with nothing kept is forgotten"
        );
        assert!(
            streams.iter().any(|r| r.stream == "@alice"),
            "a direct stream is kept"
        );
        db.write(
            &[Write::Delivered {
                stream: "@alice".into(),
                offset: 9,
            }],
            BOUNDS,
            30_000,
        )
        .expect("delivered");
        assert_eq!(
            db.streams()
                .expect("streams")
                .iter()
                .find(|r| r.stream == "@alice")
                .map(|r| r.delivered),
            Some(9)
        );
        db.write(
            &[Write::Reset {
                stream: "@alice".into(),
            }],
            BOUNDS,
            30_000,
        )
        .expect("reset");
        assert!(db
            .streams()
            .expect("streams")
            .iter()
            .all(|r| r.stream != "@alice"));
    }

    #[test]
    fn survives_reopening_beside_the_account_store() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let accounts = crate::SqliteStore::open(tmp.path()).expect("accounts");
        {
            let db = HistoryDb::open(tmp.path()).expect("open");
            db.write(&[append("@alice", 1, 5)], BOUNDS, 5)
                .expect("write");
        }
        let db = HistoryDb::open(tmp.path()).expect("reopen");
        assert_eq!(db.after("@alice", 0, 1, 50).expect("read").len(), 1);
        assert!(accounts.create_blocking("alice", "h").expect("create"));
    }
}
