//! The trash. A copy that the operator collects because no file claims it (an orphan) is not
//! deleted: it moves to `trash/{ns}/{name}/{sha256}` on the same volume (a rename, no byte
//! copied), stays listed in the inventory with state `trashed`, is never served, and is
//! deleted only once the retention period has passed. When a file claims it again (a
//! restored catalog, a re-applied StoredFile, a namespace watched again), a restore moves it
//! back after hashing it: a copy whose bytes changed in the trash is quarantined instead.
//!
//! Trash bytes are reclaimable: a write that finds too little free space empties the trash
//! oldest first until there is room, and a replica is only reported full when even an empty
//! trash would not give it room. Entries whose metadata was damaged are never emptied
//! automatically (they are reported, and kept until restored or deleted by hand).
//!
//! Deliberate deletions (a deleted file, a lower replication level, stale or corrupt copies)
//! bypass the trash: they go through [`Store::delete`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deposito_api::replica::{ObjectInfo, ObjectState};
use deposito_util::clock::{unix_now, unix_now_ms};
use tracing::instrument;

use super::{data_path, fsutil, json_path, remove_blocking, scan, CopyMeta};
use super::{ObjKey, Store, Written};
use crate::error::{is_no_space, Error, Result};

/// What the trash holds and what happened to it since the store opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrashStats {
    pub objects: u64,
    pub bytes: u64,
    /// Entries whose metadata is damaged (kept, never emptied automatically).
    pub damaged: u64,
    /// Copies moved back out of the trash.
    pub restored: u64,
    /// Copies deleted at the end of their retention.
    pub expired: u64,
    /// Copies deleted early to make room for writes.
    pub evicted: u64,
}

/// Counters of trash events (the gauges come from the index).
#[derive(Debug, Default)]
pub(super) struct TrashCounters {
    restored: AtomicU64,
    expired: AtomicU64,
    evicted: AtomicU64,
}

/// Whether the store can take writes now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// Free space is below `min_free_bytes` even counting the trash as reclaimable, or the
    /// disk refused a small write for lack of space: new copies are refused (507), while
    /// reads, deletions and the copies held go on as before.
    pub full: bool,
}

impl Store {
    /// Moves a ready copy to the trash. Trashing a copy already there answers it again; a
    /// quarantined copy is `corrupt` (delete it instead: it is worth nothing).
    #[instrument(skip(self), fields(key = %key))]
    pub async fn trash(&self, key: &ObjKey) -> Result<ObjectInfo> {
        let root = self.root.clone();
        let key = key.clone();
        self.change_on_disk(move |shared| {
            let info = shared.get(&key).ok_or(Error::NotFound)?;
            match info.state {
                ObjectState::Trashed => return Ok(info),
                ObjectState::Corrupt => return Err(Error::Corrupt),
                ObjectState::Ready => {}
            }
            let chunks = read_meta(&root, &key, ObjectState::Ready).and_then(|m| m.chunks);
            let now = unix_now_ms();
            let trashed = ObjectInfo {
                state: ObjectState::Trashed,
                stored_at: now / 1000,
                stored_at_ms: now,
                ..info
            };
            let meta = CopyMeta {
                info: trashed.clone(),
                chunks,
            };
            scan::relocate(&root, &key, ObjectState::Ready, &meta)?;
            shared.insert(trashed.clone());
            tracing::info!(key = %key, "copy moved to the trash");
            Ok(trashed)
        })
        .await
    }

    /// Moves a trashed copy back into `objects/` once its bytes hash to its sha256 again
    /// (`created: false` when it is already ready). Bytes that changed in the trash are
    /// quarantined and the answer is `corrupt`.
    #[instrument(skip(self), fields(key = %key))]
    pub async fn restore(&self, key: &ObjKey) -> Result<Written> {
        match self.get(key) {
            None => return Err(Error::NotFound),
            Some(info) if info.state == ObjectState::Ready => {
                return Ok(Written {
                    info,
                    created: false,
                })
            }
            Some(info) if info.state == ObjectState::Corrupt => return Err(Error::Corrupt),
            Some(_) => {}
        }
        // Hash outside the commit thread: other commits go on meanwhile.
        let path = self.data_path(key, ObjectState::Trashed);
        let hashed = tokio::task::spawn_blocking(move || scan::hash_file(&path))
            .await?
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::NotFound,
                _ => e.into(),
            })?;
        let (actual, chunks) = hashed;
        let root = self.root.clone();
        let key = key.clone();
        let counters = self.trash_counters.clone();
        self.change_on_disk(move |shared| {
            let info = shared.get(&key).ok_or(Error::NotFound)?;
            match info.state {
                ObjectState::Ready => {
                    return Ok(Written {
                        info,
                        created: false,
                    })
                }
                ObjectState::Corrupt => return Err(Error::Corrupt),
                ObjectState::Trashed => {}
            }
            let size = std::fs::metadata(data_path(&root, &key, ObjectState::Trashed))?.len();
            if actual != key.sha256 {
                tracing::warn!(key = %key, %actual, "a trashed copy no longer matches its sha256: quarantined");
                let corrupt = ObjectInfo {
                    state: ObjectState::Corrupt,
                    size,
                    ..info
                };
                let meta = CopyMeta {
                    info: corrupt.clone(),
                    chunks: None,
                };
                scan::relocate(&root, &key, ObjectState::Trashed, &meta)?;
                shared.insert(corrupt);
                return Err(Error::Corrupt);
            }
            // Restored is as good as new: the orphan grace starts again from now.
            let now = unix_now_ms();
            let ready = ObjectInfo {
                state: ObjectState::Ready,
                size,
                stored_at: now / 1000,
                stored_at_ms: now,
                ..info
            };
            let meta = CopyMeta {
                info: ready.clone(),
                chunks,
            };
            scan::relocate(&root, &key, ObjectState::Trashed, &meta)?;
            shared.insert(ready.clone());
            counters.restored.fetch_add(1, Ordering::Relaxed);
            tracing::info!(key = %key, "copy restored from the trash");
            Ok(Written {
                info: ready,
                created: true,
            })
        })
        .await
    }

    /// Deletes the trashed copies older than `retention` (damaged entries excepted). Returns
    /// how many went. Dropped half-way, it leaves the rest for the next round, every copy it
    /// deleted already counted.
    pub async fn expire_trash(&self, retention: Duration) -> Result<u64> {
        let cutoff = unix_now().saturating_sub(retention.as_secs());
        let due: Vec<ObjKey> = {
            let index = self.lock_index();
            index
                .trash_order
                .iter()
                .take_while(|(at, _)| *at <= cutoff)
                .filter(|(_, key)| !index.damaged_trash.contains(key))
                .map(|(_, key)| key.clone())
                .collect()
        };
        let mut expired = 0;
        for key in due {
            match self.remove_trashed(&key, |c| &c.expired).await {
                Ok(_) => expired += 1,
                Err(Error::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        if expired > 0 {
            tracing::info!(copies = expired, "trash retention: copies deleted");
        }
        Ok(expired)
    }

    /// Empties the trash, oldest first, until `min_free_bytes + extra` bytes are free. Does
    /// nothing when even an empty trash would not give that much (the write fails either
    /// way, and the trash is worth keeping). Returns the bytes freed.
    pub async fn make_room(&self, extra: u64) -> Result<u64> {
        let need = self.min_free_bytes.saturating_add(extra);
        let free = self.space()?.free_bytes;
        if free >= need || free.saturating_add(self.reclaimable_bytes()) < need {
            return Ok(0);
        }
        let mut freed = 0;
        loop {
            if self.space()?.free_bytes >= need {
                return Ok(freed);
            }
            let oldest = {
                let index = self.lock_index();
                index
                    .trash_order
                    .iter()
                    .map(|(_, key)| key)
                    .find(|key| !index.damaged_trash.contains(*key))
                    .cloned()
            };
            let Some(key) = oldest else {
                return Ok(freed);
            };
            match self.remove_trashed(&key, |c| &c.evicted).await {
                Ok(info) => {
                    freed += info.size;
                    tracing::warn!(key = %key, size = info.size, "trash emptied early to make room");
                }
                Err(Error::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Fails with 507 unless `min_free_bytes + extra` bytes are free, after emptying the
    /// trash as far as needed.
    pub async fn ensure_free(&self, extra: u64) -> Result<()> {
        if self.check_free(extra).is_err() {
            self.make_room(extra).await?;
        }
        self.check_free(extra)
    }

    /// Deletes a copy only while it is in the trash, and counts it in `counter` along with
    /// the deletion on the commit thread: a caller dropped while waiting (a retention round
    /// stopped by shutdown) leaves no deleted copy uncounted.
    async fn remove_trashed(
        &self,
        key: &ObjKey,
        counter: fn(&TrashCounters) -> &AtomicU64,
    ) -> Result<ObjectInfo> {
        let root = self.root.clone();
        let key = key.clone();
        let counters = self.trash_counters.clone();
        let pool = self.pool.clone();
        self.change_on_disk(move |shared| {
            let info = remove_blocking(&root, shared, &pool, &key, Some(ObjectState::Trashed))?;
            counter(&counters).fetch_add(1, Ordering::Relaxed);
            Ok(info)
        })
        .await
    }

    /// The trash's contents and history.
    pub fn trash_stats(&self) -> TrashStats {
        let (objects, bytes, damaged) = {
            let index = self.lock_index();
            (
                index.stats.trashed,
                index.stats.trash_bytes,
                index.damaged_trash.len() as u64,
            )
        };
        TrashStats {
            objects,
            bytes,
            damaged,
            restored: self.trash_counters.restored.load(Ordering::Relaxed),
            expired: self.trash_counters.expired.load(Ordering::Relaxed),
            evicted: self.trash_counters.evicted.load(Ordering::Relaxed),
        }
    }

    /// Readiness for probes and the operator: an error when the data dir can't be used (not
    /// writable for another reason than space); otherwise whether it is full. Also retries
    /// the removal of temp files left by a fault (see `fsutil::remove_leftovers`).
    pub async fn readiness(&self) -> Result<Readiness> {
        let tmp = self.tmp_dir();
        let written = tokio::task::spawn_blocking(move || {
            fsutil::remove_leftovers();
            fsutil::write_temp(&tmp, "probe", b"ok").map(drop)
        })
        .await?;
        let no_space = match written {
            Ok(()) => false,
            Err(e) if is_no_space(&e) => true,
            Err(e) => return Err(Error::NotReady(format!("data dir not writable: {e}"))),
        };
        let space = self
            .space()
            .map_err(|e| Error::NotReady(format!("cannot read free space: {e}")))?;
        let reclaimable = self.reclaimable_bytes();
        let full = no_space || space.free_bytes.saturating_add(reclaimable) < self.min_free_bytes;
        Ok(Readiness { full })
    }

    /// Trash bytes that a shortage of space may reclaim (damaged entries are kept).
    pub fn reclaimable_bytes(&self) -> u64 {
        let index = self.lock_index();
        let damaged: u64 = index
            .damaged_trash
            .iter()
            .filter_map(|key| index.objects.get(key))
            .map(|info| info.size)
            .sum();
        index.stats.trash_bytes.saturating_sub(damaged)
    }
}

/// The metadata of a copy in `state`, when it can be read.
fn read_meta(root: &std::path::Path, key: &ObjKey, state: ObjectState) -> Option<CopyMeta> {
    let bytes = std::fs::read(json_path(&data_path(root, key, state))).ok()?;
    serde_json::from_slice(&bytes).ok()
}
