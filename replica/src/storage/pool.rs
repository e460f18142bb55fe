//! Freed inodes kept for reuse: the files of deleted small copies, emptied, that new copies
//! are written into instead of new files.
//!
//! Why: a small write's main cost is the kernel allocating an inode, and on ext4 without a
//! journal that allocation passes over every inode freed in the last minutes
//! (`recently_deleted`). After a mass deletion small deposits ran at about 0.65× of their
//! fresh rate (BENCHMARKS.md, "Performance round 2"). A copy written into a kept inode
//! allocates none.
//!
//! How: deleting a ready copy of one chunk renames its file to `free/{id}` (the removal from
//! `objects/` is made durable as before: its folder is fsync'd), waits until every read that
//! opened the file before the rename is done (the [`InodePool::reading`] gate), then
//! truncates it to zero bytes. A write takes the newest entry as its temp file, writes,
//! fsyncs and renames it into `objects/` like any temp file. At most [`POOL_MAX`] entries are
//! kept; past that, and for copies of more than one chunk, files are unlinked as before.
//!
//! What it never does: serve a reused inode's bytes for the copy it held before. Every read
//! of a one-chunk copy opens and reads it under the gate's read side, and a file is emptied
//! or rewritten only after the gate's write side has been taken once since it left
//! `objects/`, so no read that could have opened it is still running. (A read of a copy of
//! several chunks holds its file longer, and such files are never kept.)
//!
//! After a crash: `free/` is listed when the store opens; entries that are not empty (a
//! truncation that did not reach the disk) are emptied then, and anything else there is
//! removed. An entry whose rename did not reach the disk is back in `objects/` or, when the
//! folder's fsync did and the rename's target did not, an inode no folder names, which fsck
//! finds like any other unlinked file.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, RwLock, RwLockReadGuard};

use super::chunks::CHUNK;
use super::fsutil;

/// The folder of the data dir that holds the kept inodes.
pub const FREE_DIR: &str = "free";

/// The most freed inodes a store keeps: an empty file costs an inode and a folder entry, no
/// data block, and listing 65,536 entries when the store opens takes a fraction of a second.
pub const POOL_MAX: usize = 65_536;

/// The kept inodes of one store, and the gate between reads of small copies and their reuse.
#[derive(Debug)]
pub struct InodePool {
    dir: PathBuf,
    max: usize,
    entries: Mutex<Entries>,
    gate: RwLock<()>,
}

/// The ids of the files in `free/`, newest last, and the next id to give.
#[derive(Debug, Default)]
struct Entries {
    ids: Vec<u64>,
    next: u64,
}

impl InodePool {
    /// Opens the pool of the data dir `root`: creates `free/`, keeps every regular file named
    /// by an id (emptying those that are not), and removes anything else.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        Self::open_with_max(root, POOL_MAX)
    }

    /// [`InodePool::open`] keeping at most `max` entries.
    pub fn open_with_max(root: &Path, max: usize) -> std::io::Result<Self> {
        let dir = root.join(FREE_DIR);
        fsutil::create_dir_all_durable(&dir)?;
        let mut entries = Entries::default();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let id = entry
                .file_name()
                .to_str()
                .and_then(|s| u64::from_str_radix(s, 16).ok());
            let kept = match id {
                Some(id) if entries.ids.len() < max && entry.file_type()?.is_file() => {
                    if entry.metadata()?.len() > 0 {
                        std::fs::OpenOptions::new()
                            .write(true)
                            .open(&path)?
                            .set_len(0)?;
                    }
                    entries.ids.push(id);
                    entries.next = entries.next.max(id + 1);
                    true
                }
                _ => false,
            };
            if !kept {
                fsutil::remove_stray(&entry, "free/")?;
            }
        }
        Ok(Self {
            dir,
            max,
            entries: Mutex::new(entries),
            gate: RwLock::new(()),
        })
    }

    /// How many emptied inodes are kept.
    pub fn len(&self) -> usize {
        self.lock().ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        deposito_util::lock(&self.entries, "inode pool")
    }

    fn path_of(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id:x}"))
    }

    /// To be held while a ready copy of `size` bytes is opened and read, when it is of one
    /// chunk (a file the pool may take): its file is not emptied or reused meanwhile.
    pub fn reading(&self, size: u64) -> Option<RwLockReadGuard<'_, ()>> {
        // The gate guards no data (a `()`), so a read that panicked while holding it left
        // nothing half-updated: its poisoning is ignored.
        (size <= CHUNK).then(|| self.gate.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Removes the ready copy's file `data` of `size` bytes from its folder: into the pool,
    /// emptied, when it is of one chunk and the pool has room; unlinked otherwise. The caller
    /// fsyncs the folder. A file already gone is as good as removed.
    pub fn release(&self, data: &Path, size: u64) -> std::io::Result<()> {
        let id = {
            let mut entries = self.lock();
            if size > CHUNK || entries.ids.len() >= self.max {
                drop(entries);
                return fsutil::remove_if_exists(data);
            }
            entries.next += 1;
            entries.next - 1
        };
        let slot = self.path_of(id);
        match std::fs::rename(data, &slot) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
        // Every read that opened the file before the rename holds the gate's read side
        // until it is done with it: taking the write side once waits for them all.
        drop(self.gate.write().unwrap_or_else(PoisonError::into_inner));
        let emptied = std::fs::OpenOptions::new()
            .write(true)
            .open(&slot)
            .and_then(|f| f.set_len(0));
        match emptied {
            Ok(()) => {
                self.lock().ids.push(id);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(path = %slot.display(), error = %e, "cannot empty a freed file; removing it");
                fsutil::remove_if_exists(&slot)
            }
        }
    }

    /// An emptied file to write a new copy into, out of the pool (the caller removes it if
    /// the write fails, or renames it into place), or None when the pool is empty.
    pub fn take(&self) -> Option<PathBuf> {
        self.lock().ids.pop().map(|id| self.path_of(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{ObjKey, Store};
    use bytes::Bytes;
    use deposito_api::replica::ObjectState;
    use deposito_api::{sha256_hex, FileKey};
    use std::os::unix::fs::MetadataExt;
    use std::sync::Arc;
    use std::time::Duration;

    fn inode_of(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().ino()
    }

    async fn put(store: &Store, name: &str, data: &[u8], digest: Option<&str>) -> Option<ObjKey> {
        let key = FileKey::new("default", name).unwrap();
        let body = futures::stream::iter([Ok(Bytes::copy_from_slice(data))]);
        let written = store.write(&key, digest, None, body).await.ok()?;
        Some(ObjKey::of(&written.info))
    }

    #[tokio::test]
    async fn a_deleted_small_copy_s_inode_holds_the_next_copy_and_only_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 0).await.unwrap();
        let old = put(&store, "a", b"the first copy", None).await.unwrap();
        let old_path = store.data_path(&old, ObjectState::Ready);
        store.delete(&old).await.unwrap();
        assert!(!old_path.exists());
        assert_eq!(store.inode_pool().len(), 1);

        // A write that fails (wrong digest) gives its file up: it is not left in free/.
        assert!(put(&store, "x", b"refused", Some(&"0".repeat(64)))
            .await
            .is_none());
        assert_eq!(store.inode_pool().len(), 0);
        assert_eq!(
            std::fs::read_dir(dir.path().join(FREE_DIR))
                .unwrap()
                .count(),
            0
        );

        let old = put(&store, "a", b"the first copy", None).await.unwrap();
        let ino = inode_of(&old_path);
        store.delete(&old).await.unwrap();
        let new_bytes = b"a second copy, shorter or longer than the first".repeat(3);
        let new = put(&store, "b", &new_bytes, None).await.unwrap();
        let new_path = store.data_path(&new, ObjectState::Ready);
        assert_eq!(inode_of(&new_path), ino, "a new inode");
        assert_eq!(std::fs::read(&new_path).unwrap(), new_bytes);
        assert_eq!(new.sha256, sha256_hex(&new_bytes));
        assert_eq!(store.inode_pool().len(), 0);
        let info = store.get(&new).unwrap();
        drop(store);

        // The reused file reads back as the new copy after a restart, too.
        let store = Store::open(dir.path(), 0).await.unwrap();
        assert_eq!(store.get(&new), Some(info));

        // A copy of two chunks is unlinked, never kept.
        let big = vec![7u8; (CHUNK + 1) as usize];
        let big = put(&store, "big", &big, None).await.unwrap();
        store.delete(&big).await.unwrap();
        assert_eq!(store.inode_pool().len(), 0);
    }

    fn copy_at(root: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let dir = root.join("objects").join("default");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn a_released_small_copy_is_emptied_and_its_inode_given_to_the_next_write() {
        let root = tempfile::tempdir().unwrap();
        let pool = InodePool::open(root.path()).unwrap();
        let data = copy_at(root.path(), "a@x", b"old bytes");
        let ino = inode_of(&data);
        pool.release(&data, 9).unwrap();
        assert!(!data.exists(), "the copy is still in objects/");
        assert_eq!(pool.len(), 1);
        let slot = pool.take().expect("a kept inode");
        assert_eq!(inode_of(&slot), ino);
        assert_eq!(std::fs::metadata(&slot).unwrap().len(), 0, "not emptied");
        assert!(pool.take().is_none());
    }

    #[test]
    fn large_copies_and_copies_past_the_cap_are_unlinked() {
        let root = tempfile::tempdir().unwrap();
        let pool = InodePool::open_with_max(root.path(), 1).unwrap();
        let big = copy_at(root.path(), "big@x", b"x");
        pool.release(&big, CHUNK + 1).unwrap();
        assert!(!big.exists());
        assert_eq!(pool.len(), 0, "a copy of two chunks was kept");
        for name in ["a@x", "b@x"] {
            let data = copy_at(root.path(), name, b"x");
            pool.release(&data, 1).unwrap();
            assert!(!data.exists());
        }
        assert_eq!(pool.len(), 1);
        let kept = std::fs::read_dir(root.path().join(FREE_DIR))
            .unwrap()
            .count();
        assert_eq!(kept, 1, "the file past the cap was not unlinked");
        let gone = root.path().join("objects/default/gone@x");
        pool.release(&gone, 1).unwrap();
    }

    #[test]
    fn a_read_in_progress_keeps_its_file_whole_until_it_is_done() {
        let root = tempfile::tempdir().unwrap();
        let pool = Arc::new(InodePool::open(root.path()).unwrap());
        let data = copy_at(root.path(), "a@x", b"the old bytes");
        let guard = pool.reading(13).expect("a small copy takes the gate");
        let file = std::fs::File::open(&data).unwrap();
        let releasing = {
            let (pool, data) = (pool.clone(), data.clone());
            std::thread::spawn(move || pool.release(&data, 13).unwrap())
        };
        std::thread::sleep(Duration::from_millis(200));
        assert!(!data.exists(), "the rename waits for nothing");
        assert!(
            !releasing.is_finished(),
            "emptied while a read held the gate"
        );
        assert_eq!(file.metadata().unwrap().len(), 13);
        drop(guard);
        releasing.join().unwrap();
        assert_eq!(file.metadata().unwrap().len(), 0);
        assert!(pool.reading(CHUNK + 1).is_none());
    }

    #[test]
    fn reopening_keeps_the_entries_empties_the_full_and_removes_strays() {
        let root = tempfile::tempdir().unwrap();
        let pool = InodePool::open(root.path()).unwrap();
        for name in ["a@x", "b@x"] {
            pool.release(&copy_at(root.path(), name, b"x"), 1).unwrap();
        }
        drop(pool);
        let free = root.path().join(FREE_DIR);
        // A truncation that did not reach the disk, and things that are not entries.
        std::fs::write(free.join("1"), b"not emptied").unwrap();
        std::fs::write(free.join("stray"), b"?").unwrap();
        std::fs::create_dir(free.join("9")).unwrap();
        let pool = InodePool::open(root.path()).unwrap();
        assert_eq!(pool.len(), 2);
        assert_eq!(std::fs::metadata(free.join("1")).unwrap().len(), 0);
        assert!(!free.join("stray").exists());
        assert!(!free.join("9").exists());
        let data = copy_at(root.path(), "c@x", b"x");
        pool.release(&data, 1).unwrap();
        assert!(free.join("2").exists(), "ids restart past the kept ones");
    }
}
