//! The local catalog's database: one SQLite file holding every stored file's desired state
//! and last computed status, and the replicas that have registered.
//!
//! SQLite runs in WAL mode with `synchronous=FULL`, so a committed deposit survives a crash.
//! [`Db`] has the synchronous, short calls; [`super::catalog::SqliteCatalog`] implements the
//! engine's and the gateway's seams on top of it.

use std::path::Path;
use std::sync::{Arc, Mutex};

use deposito_api::FileKey;
use rusqlite::{params, Connection, OptionalExtension};

use deposito_api::lifecycle::Lifecycle;

use crate::engine::{self, Aging, Deposit, FileRecord, ObservedStatus, Source};

/// Failure of the SQLite store.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("corrupt status column: {0}")]
    Json(#[from] serde_json::Error),
    /// The blocking task running a call failed (panicked or was cancelled).
    #[error("catalog task failed: {0}")]
    Task(String),
    /// A group commit of deposits failed (the message is the batch's error).
    #[error("deposit commit failed: {0}")]
    Commit(String),
    /// The file's aging rules refuse the change (a retention lock, a bad lifecycle).
    #[error("{0}")]
    Refused(#[from] engine::AgingError),
}

impl From<DbError> for engine::CatalogError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::Refused(refused) => refused.into(),
            err => engine::CatalogError::Unavailable(err.to_string()),
        }
    }
}

/// A registered replica as persisted (so that a restarted operator remembers who held what).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRow {
    pub id: String,
    pub url: String,
    pub zone: Option<String>,
    pub draining: bool,
}

/// Handle to the SQLite database. Cheap to clone; every call is synchronous and short.
///
/// Two connections: desired state (deposits, replication levels, deletions) is written with
/// `synchronous=FULL`, so an acknowledged deposit survives a power cut; status is written
/// through a second connection with `synchronous=NORMAL` (no fsync per commit in WAL mode):
/// status is derived from what the replicas hold and is recomputed after a crash, so it does
/// not need an fsync of its own. A third connection only reads one entry at a time (see
/// [`Db::lookup`]); in WAL mode it never waits for a writer.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    status_conn: Arc<Mutex<Connection>>,
    read_conn: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS files (
    namespace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    replicas   INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    deleting   INTEGER NOT NULL DEFAULT 0,
    status     TEXT NOT NULL,
    PRIMARY KEY (namespace, name)
);
CREATE TABLE IF NOT EXISTS replicas (
    id       TEXT PRIMARY KEY,
    url      TEXT NOT NULL,
    zone     TEXT,
    draining INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS uploads (
    id         TEXT PRIMARY KEY,
    namespace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    replicas   INTEGER NOT NULL,
    attrs      TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS buckets (
    namespace  TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    tags       TEXT NOT NULL DEFAULT '{}'
);
";

/// Columns added after the first release, with their definitions: added to an older
/// database when it is opened.
const ADDED_COLUMNS: [(&str, &str, &str); 5] = [
    ("files", "attrs", "TEXT NOT NULL DEFAULT '{}'"),
    // The lifecycle's canonical spec (deposito_api::lifecycle); NULL: none.
    ("files", "lifecycle", "TEXT"),
    // When the current content was acknowledged (ms since the epoch): a lifecycle's age 0.
    ("files", "acked_ms", "INTEGER NOT NULL DEFAULT 0"),
    // The retention lock's end (ms since the epoch); NULL: none.
    ("files", "retain_until_ms", "INTEGER"),
    // The namespace's default lifecycle, for its files without one; NULL: none.
    ("buckets", "lifecycle", "TEXT"),
];

/// Adds the [`ADDED_COLUMNS`] an older database lacks.
fn migrate(conn: &Connection) -> Result<(), DbError> {
    for (table, column, definition) in ADDED_COLUMNS {
        let present: bool = conn.query_row(
            &format!("SELECT count(*) FROM pragma_table_info('{table}') WHERE name = ?1"),
            params![column],
            |row| row.get::<_, i64>(0).map(|n| n > 0),
        )?;
        if !present {
            conn.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    Ok(())
}

pub(super) const COLUMNS: &str = "namespace, name, replicas, sha256, size, generation, deleting, \
     status, lifecycle, acked_ms, retain_until_ms";
/// How many columns [`COLUMNS`] names (a query may select more after them).
pub(super) const COLUMN_COUNT: usize = 11;

pub(super) fn row_to_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<(FileRecord, String)> {
    let status: String = row.get(7)?;
    let name: String = row.get(1)?;
    let lifecycle = match row.get::<_, Option<String>>(8)? {
        Some(spec) => Some(Lifecycle::parse(&spec).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(8, rusqlite::types::Type::Text, Box::new(e))
        })?),
        None => None,
    };
    Ok((
        FileRecord {
            key: FileKey {
                namespace: row.get(0)?,
                name: name.clone(),
            },
            file_name: name,
            source: Source::Upload,
            replicas: row.get(2)?,
            sha256: row.get(3)?,
            size: row.get::<_, i64>(4)? as u64,
            generation: row.get::<_, i64>(5)? as u64,
            deleting: row.get::<_, i64>(6)? != 0,
            status: ObservedStatus::initial(None),
            aging: Aging {
                lifecycle,
                acked_ms: row.get::<_, i64>(9)? as u64,
                retain_until_ms: row.get::<_, Option<i64>>(10)?.map(|ms| ms as u64),
            },
        },
        status,
    ))
}

/// One entry, read through `conn` (a connection or an open transaction).
pub(super) fn get_with(conn: &Connection, key: &FileKey) -> Result<Option<FileRecord>, DbError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM files WHERE namespace = ?1 AND name = ?2"
    ))?;
    let pair = stmt
        .query_row(params![key.namespace, key.name], row_to_entry)
        .optional()?;
    pair.map(decode).transpose()
}

pub(super) fn decode(pair: (FileRecord, String)) -> Result<FileRecord, DbError> {
    let (mut entry, status) = pair;
    entry.status = serde_json::from_str(&status)?;
    Ok(entry)
}

impl Db {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let open = |synchronous: &str| -> Result<Connection, DbError> {
            let conn = Connection::open(path)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", synchronous)?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            Ok(conn)
        };
        let conn = open("FULL")?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        let read = open("NORMAL")?;
        read.pragma_update(None, "query_only", true)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            status_conn: Arc::new(Mutex::new(open("NORMAL")?)),
            read_conn: Arc::new(Mutex::new(read)),
        })
    }

    /// Runs `f` on a blocking thread, so async tasks never wait on SQLite's fsyncs.
    pub async fn run<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Db) -> Result<T, DbError> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| DbError::Task(e.to_string()))?
    }

    /// The read-only connection (a WAL reader: never waits for a commit).
    pub(super) fn read(&self) -> std::sync::MutexGuard<'_, Connection> {
        deposito_util::lock(&self.read_conn, "catalog read connection")
    }

    pub(super) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        deposito_util::lock(&self.conn, "catalog connection")
    }

    /// Records new content for `key` (creating the entry, or replacing the content of an
    /// existing one, which also cancels a pending deletion). `holder` is the replica that
    /// acknowledged the bytes.
    pub fn put_content(&self, deposit: &Deposit) -> Result<FileRecord, DbError> {
        let mut entries = self.put_contents(std::slice::from_ref(deposit))?;
        Ok(entries.pop().expect("one entry per deposit"))
    }

    /// Records several deposits in one transaction (one commit, one fsync); their entries in
    /// the same order. A later deposit of the same key replaces an earlier one.
    pub fn put_contents(&self, deposits: &[Deposit]) -> Result<Vec<FileRecord>, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut entries = Vec::with_capacity(deposits.len());
        for d in deposits {
            let status = ObservedStatus::initial(Some(&d.holder));
            let status_json = serde_json::to_string(&status)?;
            tx.prepare_cached(
                "INSERT INTO files (namespace, name, replicas, sha256, size, generation, deleting,
                                    status, attrs, lifecycle, acked_ms, retain_until_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, 1, 0, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (namespace, name) DO UPDATE SET
                   replicas = excluded.replicas, sha256 = excluded.sha256, size = excluded.size,
                   generation = files.generation + 1, deleting = 0, status = excluded.status,
                   attrs = excluded.attrs, lifecycle = excluded.lifecycle,
                   acked_ms = excluded.acked_ms,
                   retain_until_ms = max(coalesce(files.retain_until_ms, 0),
                                         coalesce(excluded.retain_until_ms, 0))
                 WHERE coalesce(files.retain_until_ms, 0) <= ?9",
            )?
            .execute(params![
                d.key.namespace,
                d.key.name,
                d.replicas,
                d.sha256,
                d.size as i64,
                status_json,
                serde_json::to_string(&d.attrs)?,
                d.lifecycle.as_ref().map(ToString::to_string),
                d.attrs.modified_ms as i64,
                d.retain_until_ms.map(|ms| ms as i64),
            ])?;
            // A retention lock that holds keeps the row as it was (the gateway refused such
            // a deposit before its first byte; this guards against a lock taken meanwhile):
            // the entry read back then has other content, which the caller reports.
            let entry = get_with(&tx, &d.key)?.expect("row just written");
            entries.push(entry);
        }
        tx.commit()?;
        Ok(entries)
    }

    /// Changes the replication level (no rule checked: see [`Db::set_aging`]). `None` when
    /// there is no such (undeleted) entry.
    pub fn set_replicas(
        &self,
        key: &FileKey,
        replicas: u32,
    ) -> Result<Option<FileRecord>, DbError> {
        let changed = self.conn().execute(
            "UPDATE files SET replicas = ?3, generation = generation + 1
             WHERE namespace = ?1 AND name = ?2 AND deleting = 0 AND replicas != ?3",
            params![key.namespace, key.name, replicas],
        )?;
        let entry = self.get(key)?;
        Ok(entry.filter(|e| !e.deleting && (changed == 1 || e.replicas == replicas)))
    }

    /// Marks an entry for deletion, unless its retention lock holds at `now_ms` (refused).
    /// `None` when there is no such entry.
    pub fn mark_deleting(&self, key: &FileKey, now_ms: u64) -> Result<Option<FileRecord>, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let Some(entry) = get_with(&tx, key)? else {
            return Ok(None);
        };
        if !entry.deleting {
            entry.check_removable(now_ms)?;
            tx.execute(
                "UPDATE files SET deleting = 1, generation = generation + 1
                 WHERE namespace = ?1 AND name = ?2 AND deleting = 0",
                params![key.namespace, key.name],
            )?;
        }
        let entry = get_with(&tx, key)?;
        tx.commit()?;
        Ok(entry)
    }

    /// Removes a deleted entry once its copies are gone, unless it changed since `generation`.
    pub fn finalize_delete(&self, key: &FileKey, generation: u64) -> Result<bool, DbError> {
        let n = self.conn().execute(
            "DELETE FROM files WHERE namespace = ?1 AND name = ?2 AND deleting = 1 AND generation = ?3",
            params![key.namespace, key.name, generation as i64],
        )?;
        Ok(n == 1)
    }

    /// Stores the status computed for `generation`; ignored if the entry moved on meanwhile.
    /// Returns true when the stored status changed.
    pub fn write_status(
        &self,
        key: &FileKey,
        generation: u64,
        status: &ObservedStatus,
    ) -> Result<bool, DbError> {
        let json = serde_json::to_string(status)?;
        let conn = self.status_conn.lock().expect("catalog connection lock");
        let n = conn.execute(
            "UPDATE files SET status = ?4
             WHERE namespace = ?1 AND name = ?2 AND generation = ?3 AND status != ?4",
            params![key.namespace, key.name, generation as i64, json],
        )?;
        Ok(n == 1)
    }

    /// One entry.
    pub fn get(&self, key: &FileKey) -> Result<Option<FileRecord>, DbError> {
        get_with(&self.conn(), key)
    }

    /// One entry, read through the read-only connection: a WAL read of one row by its primary
    /// key takes microseconds and never waits for a commit's fsync, so the gateway calls it
    /// on its own thread instead of hopping to a blocking one (each read of a file starts
    /// with it).
    pub fn lookup(&self, key: &FileKey) -> Result<Option<FileRecord>, DbError> {
        let conn = self.read_conn.lock().expect("catalog connection lock");
        get_with(&conn, key)
    }

    /// A trivial query: the database answers.
    pub fn ping(&self) -> Result<(), DbError> {
        self.conn().query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    /// Every key, in no particular order (the slow resync).
    pub fn keys(&self) -> Result<Vec<FileKey>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached("SELECT namespace, name FROM files")?;
        let rows = stmt.query_map([], |row| {
            Ok(FileKey {
                namespace: row.get(0)?,
                name: row.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every entry of one namespace, or of all namespaces, sorted by key.
    pub fn list(&self, namespace: Option<&str>) -> Result<Vec<FileRecord>, DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM files WHERE ?1 IS NULL OR namespace = ?1 ORDER BY namespace, name"
        ))?;
        let rows = stmt.query_map(params![namespace], row_to_entry)?;
        rows.map(|r| decode(r?)).collect()
    }

    /// Up to `limit` entries of `namespace` named after `after`, by name, and whether more
    /// follow.
    pub fn page(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<FileRecord>, bool), DbError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM files WHERE namespace = ?1 AND name > ?2 ORDER BY name LIMIT ?3"
        ))?;
        let rows = stmt.query_map(
            params![namespace, after.unwrap_or(""), limit as i64 + 1],
            row_to_entry,
        )?;
        let mut entries: Vec<FileRecord> = rows.map(|r| decode(r?)).collect::<Result<_, _>>()?;
        let more = entries.len() > limit;
        entries.truncate(limit);
        Ok((entries, more))
    }

    /// Remembers a replica (registration) so that its copies are not forgotten across restarts.
    pub fn upsert_replica(&self, id: &str, url: &str, zone: Option<&str>) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO replicas (id, url, zone) VALUES (?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET url = excluded.url, zone = excluded.zone
             WHERE replicas.url != excluded.url OR replicas.zone IS NOT excluded.zone",
            params![id, url, zone],
        )?;
        Ok(())
    }

    /// Sets or clears a replica's draining mark. False when the replica is unknown.
    pub fn set_draining(&self, id: &str, draining: bool) -> Result<bool, DbError> {
        let n = self.conn().execute(
            "UPDATE replicas SET draining = ?2 WHERE id = ?1",
            params![id, draining as i64],
        )?;
        Ok(n == 1)
    }

    /// Every replica ever registered.
    pub fn replicas(&self) -> Result<Vec<ReplicaRow>, DbError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT id, url, zone, draining FROM replicas ORDER BY id")?;
        let rows = stmt.query_map([], |row| {
            Ok(ReplicaRow {
                id: row.get(0)?,
                url: row.get(1)?,
                zone: row.get(2)?,
                draining: row.get::<_, i64>(3)? != 0,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deposito_api::gateway::Phase;

    fn key(name: &str) -> FileKey {
        FileKey::new("default", name).unwrap()
    }

    #[test]
    fn entries_survive_reopen_and_generations_advance() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite3");
        {
            let catalog = Db::open(&path).unwrap();
            let e = catalog
                .put_content(&Deposit::of_key(&key("a"), 3, "aa", 10, "r1"))
                .unwrap();
            assert_eq!(
                (e.generation, e.replicas, e.status.holders.clone()),
                (1, 3, vec!["r1".to_string()])
            );
            let e = catalog.set_replicas(&key("a"), 5).unwrap().unwrap();
            assert_eq!(e.generation, 2);
            // Same level again: no new generation.
            assert_eq!(
                catalog
                    .set_replicas(&key("a"), 5)
                    .unwrap()
                    .unwrap()
                    .generation,
                2
            );
            assert!(catalog.set_replicas(&key("missing"), 2).unwrap().is_none());
        }
        let catalog = Db::open(&path).unwrap();
        let e = catalog.get(&key("a")).unwrap().unwrap();
        assert_eq!(
            (e.replicas, e.sha256.as_str(), e.size, e.generation),
            (5, "aa", 10, 2)
        );
    }

    #[test]
    fn status_writes_are_fenced_by_generation() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Db::open(&dir.path().join("c.db")).unwrap();
        catalog
            .put_content(&Deposit::of_key(&key("a"), 1, "aa", 1, "r1"))
            .unwrap();
        let status = ObservedStatus {
            phase: Phase::Ready,
            ready_replicas: 1,
            holders: vec!["r1".into()],
            unreachable_holders: vec![],
            observed_generation: 1,
            conditions: vec![],
            lifecycle_step: 0,
        };
        assert!(catalog.write_status(&key("a"), 1, &status).unwrap());
        assert!(
            !catalog.write_status(&key("a"), 1, &status).unwrap(),
            "unchanged"
        );
        catalog.set_replicas(&key("a"), 2).unwrap();
        assert!(
            !catalog.write_status(&key("a"), 1, &status).unwrap(),
            "stale generation"
        );
    }

    #[test]
    fn deletion_is_finalized_only_for_the_marked_generation() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Db::open(&dir.path().join("c.db")).unwrap();
        catalog
            .put_content(&Deposit::of_key(&key("a"), 1, "aa", 1, "r1"))
            .unwrap();
        let marked = catalog.mark_deleting(&key("a"), 0).unwrap().unwrap();
        assert!(marked.deleting);
        assert!(catalog.set_replicas(&key("a"), 3).unwrap().is_none());
        // A new deposit revives the entry before the deletion finishes.
        catalog
            .put_content(&Deposit::of_key(&key("a"), 1, "bb", 1, "r2"))
            .unwrap();
        assert!(!catalog
            .finalize_delete(&key("a"), marked.generation)
            .unwrap());
        let again = catalog.mark_deleting(&key("a"), 0).unwrap().unwrap();
        assert!(catalog
            .finalize_delete(&key("a"), again.generation)
            .unwrap());
        assert!(catalog.get(&key("a")).unwrap().is_none());
    }

    #[test]
    fn pages_cover_a_namespace_in_order_without_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("c.db")).unwrap();
        for name in ["c", "a", "e", "b", "d"] {
            db.put_content(&Deposit::of_key(&key(name), 1, "aa", 1, "r1"))
                .unwrap();
        }
        db.put_content(&Deposit::of_key(
            &FileKey::new("other", "z").unwrap(),
            1,
            "aa",
            1,
            "r1",
        ))
        .unwrap();
        let names = |v: &[FileRecord]| v.iter().map(|e| e.file_name.clone()).collect::<Vec<_>>();
        let (first, more) = db.page("default", None, 2).unwrap();
        assert_eq!(
            (names(&first), more),
            (vec!["a".to_string(), "b".into()], true)
        );
        let (second, more) = db.page("default", Some("b"), 2).unwrap();
        assert_eq!(
            (names(&second), more),
            (vec!["c".to_string(), "d".into()], true)
        );
        let (last, more) = db.page("default", Some("d"), 2).unwrap();
        assert_eq!((names(&last), more), (vec!["e".to_string()], false));
        let (all, more) = db.page("default", None, 10).unwrap();
        assert_eq!((all.len(), more), (5, false));
    }
}
