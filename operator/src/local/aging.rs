//! The local catalog's changes of what a file's age decides: its level, lifecycle and
//! retention lock (checked by [`engine::check_change`] inside the write's transaction, so a
//! lock taken by one client is seen by the next), and the expiry the engine asks for.

use deposito_api::FileKey;
use rusqlite::params;

use super::db::{get_with, Db, DbError};
use crate::engine::{self, AgingChange, FileRecord};

impl Db {
    /// Applies `change` to an undeleted entry, refused when the rules of
    /// [`engine::check_change`] say so at `now_ms`. Bumps the generation when the level or
    /// the lifecycle changes (the engine's work), not for the lock alone. `None` when there
    /// is no such entry.
    pub fn set_aging(
        &self,
        key: &FileKey,
        change: &AgingChange,
        now_ms: u64,
    ) -> Result<Option<FileRecord>, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let Some(entry) = get_with(&tx, key)?.filter(|e| !e.deleting) else {
            return Ok(None);
        };
        engine::check_change(&entry, change, now_ms)?;
        let next = entry.with_change(change);
        let desired_changed =
            next.replicas != entry.replicas || next.aging.lifecycle != entry.aging.lifecycle;
        tx.execute(
            "UPDATE files SET replicas = ?3, lifecycle = ?4, retain_until_ms = ?5,
                              generation = generation + ?6
             WHERE namespace = ?1 AND name = ?2",
            params![
                key.namespace,
                key.name,
                next.replicas,
                next.aging.lifecycle.as_ref().map(ToString::to_string),
                next.aging.retain_until_ms.map(|ms| ms as i64),
                i64::from(desired_changed),
            ],
        )?;
        let entry = get_with(&tx, key)?;
        tx.commit()?;
        Ok(entry)
    }

    /// Marks an entry whose lifecycle expired for deletion, as `rm` would, unless it changed
    /// since `record` was read (new content restarts its age) or its lock still holds.
    /// Returns true when it was marked.
    pub fn expire(&self, record: &FileRecord, now_ms: u64) -> Result<bool, DbError> {
        if record.retained_at(now_ms).is_some() {
            return Ok(false);
        }
        let n = self.conn().execute(
            "UPDATE files SET deleting = 1, generation = generation + 1
             WHERE namespace = ?1 AND name = ?2 AND deleting = 0 AND generation = ?3
               AND coalesce(retain_until_ms, 0) <= ?4",
            params![
                record.key.namespace,
                record.key.name,
                record.generation as i64,
                now_ms as i64
            ],
        )?;
        Ok(n == 1)
    }
}
