//! The on-disk store of copies and its in-memory index.
//!
//! Layout under the data dir (see [`layout`]): `objects/{ns}/{name}@{sha256}` (the bytes),
//! with `.json` appended for its metadata ([`ObjectInfo`] and chunk digests) when it has
//! more than one chunk; `quarantine/` for copies that failed verification and `trash/` for
//! copies no file claimed when the operator collected them (see [`trash`]), laid out alike;
//! `tmp/` for in-flight writes; and `free/`, the emptied files of deleted small copies that
//! new copies are written into (see [`pool`]). Nothing partial is ever visible under
//! `objects/`: data is written to a temp file, verified, fsync'd and renamed into place.

pub mod changes;
pub mod chunks;
mod commit;
pub mod fsutil;
pub mod layout;
pub mod pool;
mod scan;
pub mod trash;
mod write;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use deposito_api::replica::{ChangePage, ObjectInfo, ObjectState};
use deposito_api::{is_sha256_hex, FileKey};
use tracing::instrument;

use crate::error::{Error, Result};
use changes::ChangeLog;
pub use commit::{CommitCounts, Written};
pub use fsutil::Space;
pub(crate) use layout::{area_name, data_path, json_path};
pub use trash::{Readiness, TrashStats};

/// Identity of one copy: (namespace, name, sha256). Orders like the inventory.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjKey {
    pub namespace: String,
    pub name: String,
    pub sha256: String,
}

impl ObjKey {
    /// Validates all three parts.
    pub fn new(namespace: &str, name: &str, sha256: &str) -> Result<Self> {
        let key = FileKey::new(namespace, name)?;
        Self::from_file_key(key, sha256)
    }

    pub fn from_file_key(key: FileKey, sha256: &str) -> Result<Self> {
        if !is_sha256_hex(sha256) {
            return Err(Error::InvalidDigest(sha256.to_string()));
        }
        Ok(Self {
            namespace: key.namespace,
            name: key.name,
            sha256: sha256.to_string(),
        })
    }

    pub fn of(info: &ObjectInfo) -> Self {
        Self {
            namespace: info.namespace.clone(),
            name: info.name.clone(),
            sha256: info.sha256.clone(),
        }
    }

    /// The opaque inventory cursor for this key (hex, safe in a query string).
    pub fn cursor(&self) -> String {
        hex::encode(format!("{}/{}/{}", self.namespace, self.name, self.sha256))
    }

    /// Parses a cursor made by [`ObjKey::cursor`]. Any hex string is a position in the
    /// sorted inventory (what does not decode to three parts sorts where its parts say), so
    /// only a cursor that is not hex is refused.
    pub fn from_cursor(cursor: &str) -> Result<Self> {
        let raw = hex::decode(cursor)
            .map_err(|_| Error::BadRequest(format!("invalid inventory cursor '{cursor}'")))?;
        let s = String::from_utf8_lossy(&raw);
        let mut parts = s.splitn(3, '/');
        let mut part = || parts.next().unwrap_or_default().to_string();
        Ok(Self {
            namespace: part(),
            name: part(),
            sha256: part(),
        })
    }
}

impl std::fmt::Display for ObjKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}@{}",
            self.namespace,
            self.name,
            &self.sha256[..12.min(self.sha256.len())]
        )
    }
}

/// How many folders of `tmp/` the temp files of new copies are spread over. A file's inode is
/// allocated near its folder's, and its folder is locked while it is created: spread, the
/// writers contend less, and on ext4 without a journal (which skips recently deleted inodes
/// when it allocates one, scanning past each) the inodes a churn frees and reuses are spread
/// over several allocation groups instead of one.
pub const TEMP_FOLDERS: u64 = 16;

/// The `i`-th folder of `tmp/`.
fn temp_folder(root: &Path, i: u64) -> PathBuf {
    root.join("tmp").join(format!("{i:02}"))
}

/// Counts over the index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub ready: u64,
    pub corrupt: u64,
    /// Bytes of ready and quarantined copies.
    pub bytes_used: u64,
    /// Copies in the trash, and their bytes (not in `bytes_used`).
    pub trashed: u64,
    pub trash_bytes: u64,
    /// Bytes of ready copies only.
    pub ready_bytes: u64,
}

/// The index of every copy, and the log of its changes, kept together under one lock so
/// that a change's sequence number always describes the index exactly.
#[derive(Debug)]
struct Indexed {
    objects: BTreeMap<ObjKey, ObjectInfo>,
    /// Counts over `objects`, kept up to date on every change (heartbeats read them often).
    stats: Stats,
    /// Trashed copies whose metadata could not be read at start: kept until someone restores
    /// or deletes them, never emptied by the retention or for space.
    damaged_trash: std::collections::BTreeSet<ObjKey>,
    /// Trashed copies, oldest first: what the retention and a shortage of space empty.
    trash_order: std::collections::BTreeSet<(u64, ObjKey)>,
    log: ChangeLog,
}

impl Indexed {
    /// Keeps `trash_order` in step with a change of `key` from `old` to `new`.
    fn order_trash(&mut self, key: &ObjKey, old: Option<&ObjectInfo>, new: Option<&ObjectInfo>) {
        if let Some(old) = old.filter(|i| i.state == ObjectState::Trashed) {
            self.trash_order.remove(&(old.stored_at, key.clone()));
        }
        if let Some(new) = new.filter(|i| i.state == ObjectState::Trashed) {
            self.trash_order.insert((new.stored_at, key.clone()));
        }
    }
}

impl Stats {
    /// Counts `info` in (`added`) or out of the totals.
    fn count(&mut self, info: &ObjectInfo, added: bool) {
        let (count, bytes) = match info.state {
            ObjectState::Ready => (&mut self.ready, &mut self.bytes_used),
            ObjectState::Corrupt => (&mut self.corrupt, &mut self.bytes_used),
            ObjectState::Trashed => (&mut self.trashed, &mut self.trash_bytes),
        };
        if added {
            *count += 1;
            *bytes += info.size;
        } else {
            *count = count.saturating_sub(1);
            *bytes = bytes.saturating_sub(info.size);
        }
        if info.state == ObjectState::Ready {
            self.ready_bytes = if added {
                self.ready_bytes + info.size
            } else {
                self.ready_bytes.saturating_sub(info.size)
            };
        }
    }
}

/// One inventory page, placed in the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<ObjectInfo>,
    pub next: Option<ObjKey>,
    pub epoch: String,
    pub seq: u64,
}

/// The store: a data dir plus an index of every copy in it.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    min_free_bytes: u64,
    shared: Arc<Shared>,
    /// The thread that makes every change of the disk and index (commits in batches,
    /// quarantines and deletions alone), in order and to the end: see [`commit`].
    committer: commit::Committer,
    trash_counters: Arc<trash::TrashCounters>,
    /// Freed inodes that new small copies are written into.
    pool: Arc<pool::InodePool>,
}

/// The index and the change-feed signal, shared with the blocking tasks that change the disk:
/// such a task updates the index itself, so a disk change and its index entry always go
/// together, even when the request that started them is dropped half way.
#[derive(Debug)]
pub(crate) struct Shared {
    index: Mutex<Indexed>,
    /// The last change's sequence number, for long polls of the change feed.
    changed: tokio::sync::watch::Sender<u64>,
}

impl Shared {
    fn lock_index(&self) -> std::sync::MutexGuard<'_, Indexed> {
        deposito_util::lock(&self.index, "store index")
    }

    fn get(&self, key: &ObjKey) -> Option<ObjectInfo> {
        self.lock_index().objects.get(key).cloned()
    }

    /// Records a change of the index in the log and wakes long polls. Call with the lock held.
    fn log_change(&self, index: &mut Indexed, key: &ObjKey, object: Option<&ObjectInfo>) {
        let seq = index.log.record(key, object);
        self.changed.send_replace(seq);
    }

    /// Records a copy (new, replaced or moved to quarantine).
    fn insert(&self, info: ObjectInfo) {
        let key = ObjKey::of(&info);
        let mut index = self.lock_index();
        self.log_change(&mut index, &key, Some(&info));
        if info.state != ObjectState::Trashed {
            index.damaged_trash.remove(&key);
        }
        index.stats.count(&info, true);
        let old = index.objects.insert(key.clone(), info.clone());
        if let Some(old) = &old {
            index.stats.count(old, false);
        }
        index.order_trash(&key, old.as_ref(), Some(&info));
    }

    /// Forgets a copy.
    fn remove(&self, key: &ObjKey) {
        let mut index = self.lock_index();
        if let Some(old) = index.objects.remove(key) {
            index.stats.count(&old, false);
            index.order_trash(key, Some(&old), None);
        }
        index.damaged_trash.remove(key);
        self.log_change(&mut index, key, None);
    }
}

impl Store {
    /// Opens (creating if needed) the store at `root`: empties `tmp/` and rebuilds the index
    /// from `objects/` and `quarantine/`.
    #[instrument(skip_all, fields(root = %root.as_ref().display()))]
    pub async fn open(root: impl AsRef<Path>, min_free_bytes: u64) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let r = root.clone();
        let ((index, damaged_trash), pool) = tokio::task::spawn_blocking(move || {
            Ok::<_, std::io::Error>((scan::open_dir(&r)?, pool::InodePool::open(&r)?))
        })
        .await??;
        tracing::info!(
            objects = index.len(),
            freed_inodes_kept = pool.len(),
            "store opened"
        );
        if !damaged_trash.is_empty() {
            tracing::warn!(
                copies = damaged_trash.len(),
                "trash entries with damaged metadata: kept until restored or deleted by hand"
            );
        }
        let trash_order = index
            .iter()
            .filter(|(_, i)| i.state == ObjectState::Trashed)
            .map(|(k, i)| (i.stored_at, k.clone()))
            .collect();
        let shared = Arc::new(Shared {
            index: Mutex::new(Indexed {
                trash_order,
                stats: index.values().fold(Stats::default(), |mut s, i| {
                    s.count(i, true);
                    s
                }),
                objects: index,
                damaged_trash,
                log: ChangeLog::new(changes::DEFAULT_CAPACITY),
            }),
            changed: tokio::sync::watch::channel(0).0,
        });
        let committer = commit::Committer::start(root.clone(), shared.clone())?;
        Ok(Self {
            root,
            min_free_bytes,
            shared,
            committer,
            trash_counters: Arc::default(),
            pool: Arc::new(pool),
        })
    }

    /// Runs `change`, blocking work on the disk that records its outcome in the index through
    /// the handle it is given, on the commit thread after every change asked for before it,
    /// and to the end even if the caller's future is dropped (a cancelled request never
    /// leaves the disk and the index apart).
    async fn change_on_disk<T: Send + 'static>(
        &self,
        change: impl FnOnce(&Shared) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.committer.change(change).await
    }

    /// Copies committed since the store opened, and the batches they were committed in.
    pub fn commit_counts(&self) -> CommitCounts {
        self.committer.counts()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// A folder of `tmp/` for a new copy's temp files, one of [`TEMP_FOLDERS`] at random.
    pub fn temp_folder(&self) -> PathBuf {
        temp_folder(&self.root, rand::random::<u64>() % TEMP_FOLDERS)
    }

    /// The freed inodes new small copies are written into, and the gate reads of small
    /// copies hold (see [`pool`]).
    pub fn inode_pool(&self) -> Arc<pool::InodePool> {
        self.pool.clone()
    }

    pub fn min_free_bytes(&self) -> u64 {
        self.min_free_bytes
    }

    /// Where the bytes of a copy in `state` live.
    pub fn data_path(&self, key: &ObjKey, state: ObjectState) -> PathBuf {
        data_path(&self.root, key, state)
    }

    /// The index entry of a copy.
    pub fn get(&self, key: &ObjKey) -> Option<ObjectInfo> {
        self.shared.get(key)
    }

    /// The chunk digests recorded for a ready copy of `size` bytes (None for a copy of one
    /// chunk, and for a longer copy committed before digests were recorded).
    pub async fn chunk_digests(&self, key: &ObjKey, size: u64) -> Option<chunks::ChunkDigests> {
        if chunks::chunk_count(size) <= 1 {
            return None;
        }
        let path = json_path(&self.data_path(key, ObjectState::Ready));
        let bytes = tokio::fs::read(path).await.ok()?;
        let meta: CopyMeta = serde_json::from_slice(&bytes).ok()?;
        meta.chunks.filter(|c| c.fits(size))
    }

    /// Records chunk digests for a ready copy that lacks them (committed before digests were
    /// recorded). The scrubber computes them in the pass that verified the whole copy against
    /// its sha256. Only the copy committed at `stored_at` is touched, and only when its
    /// metadata has no digests that fit; returns whether they were written.
    #[instrument(skip(self, digests), fields(key = %key))]
    pub async fn add_chunk_digests(
        &self,
        key: &ObjKey,
        stored_at: u64,
        digests: chunks::ChunkDigests,
    ) -> Result<bool> {
        let root = self.root.clone();
        let key = key.clone();
        self.change_on_disk(move |shared| {
            let Some(info) = shared.get(&key) else {
                return Ok(false);
            };
            if info.state != ObjectState::Ready
                || info.stored_at != stored_at
                || !digests.fits(info.size)
            {
                return Ok(false);
            }
            let path = json_path(&data_path(&root, &key, ObjectState::Ready));
            let Some(mut meta) = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<CopyMeta>(&b).ok())
            else {
                return Ok(false);
            };
            if meta.chunks.as_ref().is_some_and(|c| c.fits(info.size)) {
                return Ok(false);
            }
            meta.chunks = Some(digests);
            scan::write_meta(&root, &path, &meta)?;
            Ok(true)
        })
        .await
    }

    fn lock_index(&self) -> std::sync::MutexGuard<'_, Indexed> {
        self.shared.lock_index()
    }

    /// One inventory page: up to `limit` copies after `after`, the cursor of the next page,
    /// and the change-log position it was read at.
    pub fn page(&self, after: Option<&ObjKey>, limit: usize) -> Page {
        let index = self.lock_index();
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut it = index.objects.range((lower, Bound::Unbounded));
        let items: Vec<ObjectInfo> = it.by_ref().take(limit).map(|(_, v)| v.clone()).collect();
        let next = if it.next().is_some() {
            items.last().map(ObjKey::of)
        } else {
            None
        };
        Page {
            items,
            next,
            epoch: index.log.epoch().to_string(),
            seq: index.log.seq(),
        }
    }

    /// The changes after `since` in `epoch` (at most `limit`). With `wait`, waits up to that
    /// long for a first change when there is none yet. An unknown epoch or a cursor outside
    /// the retained log is `410 cursor_expired`.
    pub async fn changes(
        &self,
        epoch: &str,
        since: u64,
        limit: usize,
        wait: std::time::Duration,
    ) -> Result<ChangePage> {
        let mut changed = self.shared.changed.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            changed.borrow_and_update();
            {
                let index = self.lock_index();
                let (changes, more) = index
                    .log
                    .since(epoch, since, limit)
                    .map_err(|e| Error::CursorExpired(e.reason))?;
                if !changes.is_empty() || tokio::time::Instant::now() >= deadline {
                    let seq = changes.last().map_or(since, |c| c.seq);
                    return Ok(ChangePage {
                        epoch: epoch.to_string(),
                        seq,
                        changes,
                        more,
                    });
                }
            }
            // Either a change or the deadline ends the wait; a closed channel can't happen
            // while `self` lives, but would end it too.
            let _ = tokio::time::timeout_at(deadline, changed.changed()).await;
        }
    }

    /// Folds `f` over every ready copy in key order, under the index lock (keep `f` cheap).
    pub fn fold_ready<T>(&self, init: T, mut f: impl FnMut(T, &ObjKey, &ObjectInfo) -> T) -> T {
        let index = self.lock_index();
        index
            .objects
            .iter()
            .filter(|(_, info)| info.state == ObjectState::Ready)
            .fold(init, |acc, (key, info)| f(acc, key, info))
    }

    pub fn stats(&self) -> Stats {
        self.lock_index().stats
    }

    /// Space of the data dir's file system.
    pub fn space(&self) -> Result<Space> {
        Ok(fsutil::space(&self.root)?)
    }

    /// Fails with 507 when free space is below `min_free_bytes + extra`.
    pub fn check_free(&self, extra: u64) -> Result<()> {
        let space = self.space()?;
        let need = self.min_free_bytes.saturating_add(extra);
        if space.free_bytes < need {
            return Err(Error::InsufficientStorage(format!(
                "{} bytes free, {} needed",
                space.free_bytes, need
            )));
        }
        Ok(())
    }

    /// Moves a ready copy to `quarantine/` with state corrupt. When `stored_at` is given, only
    /// the copy committed at that time is moved (a newer commit is left alone).
    #[instrument(skip(self), fields(key = %key))]
    pub async fn quarantine(
        &self,
        key: &ObjKey,
        stored_at: Option<u64>,
        reason: &str,
    ) -> Result<bool> {
        let root = self.root.clone();
        let key = key.clone();
        let reason = reason.to_string();
        self.change_on_disk(move |shared| {
            let Some(info) = shared.get(&key) else {
                return Ok(false);
            };
            if info.state != ObjectState::Ready || stored_at.is_some_and(|t| t != info.stored_at) {
                return Ok(false);
            }
            tracing::warn!(key = %key, reason, "quarantining copy");
            shared.insert(scan::quarantine_blocking(&root, &key, info)?);
            Ok(true)
        })
        .await
    }

    /// Removes a copy, ready, quarantined or in the trash.
    #[instrument(skip(self), fields(key = %key))]
    pub async fn delete(&self, key: &ObjKey) -> Result<ObjectInfo> {
        let root = self.root.clone();
        let key = key.clone();
        let pool = self.pool.clone();
        let info = self
            .change_on_disk(move |shared| remove_blocking(&root, shared, &pool, &key, None))
            .await?;
        tracing::info!("copy deleted");
        Ok(info)
    }
}

/// Removes the copy `key` from the disk and the index; with `only`, only while it is in that
/// state (`not_found` otherwise). The file of a ready copy of one chunk goes to `pool`; every
/// other file is unlinked. Runs on the commit thread.
fn remove_blocking(
    root: &Path,
    shared: &Shared,
    pool: &pool::InodePool,
    key: &ObjKey,
    only: Option<ObjectState>,
) -> Result<ObjectInfo> {
    let info = shared
        .get(key)
        .filter(|i| only.is_none_or(|s| s == i.state))
        .ok_or(Error::NotFound)?;
    let data = data_path(root, key, info.state);
    if info.state == ObjectState::Ready {
        pool.release(&data, info.size)?;
    } else {
        fsutil::remove_if_exists(&data)?;
    }
    fsutil::remove_if_exists(&json_path(&data))?;
    let dir = data.parent().expect("data path has a parent");
    // A folder already gone (its last copy removed by hand) is as good as synced.
    match fsutil::fsync_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    layout::tidy(key, &data);
    shared.remove(key);
    Ok(info)
}

/// What a copy's metadata file holds: its [`ObjectInfo`] and, for a copy of more than one
/// chunk, its chunk digests.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct CopyMeta {
    #[serde(flatten)]
    pub info: ObjectInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<chunks::ChunkDigests>,
}

impl CopyMeta {
    pub fn to_json(&self) -> std::io::Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests;
