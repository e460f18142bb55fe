//! Group commit: one thread makes every change of `objects/` and `quarantine/`, in the order
//! they were asked for, and commits concurrent new copies together.
//!
//! A new copy reaches the committer with its data already written and fsync'd in `tmp/`
//! (each writer does that itself, concurrently), beside its metadata when it has more than
//! one chunk (rebuilt from the data after a crash that tore it, so it needs no fsync of its
//! own). What is left is cheap but must be serialized: create the copy's folders, rename its
//! files into place, fsync the folders. The committer takes every commit waiting in its
//! queue at once, renames them all, then fsyncs each folder the batch touched once; on ext4 the first of those fsyncs commits the journal
//! transaction that holds every rename of the batch, so the rest return at once. No copy is
//! reported (index, change feed, answer) before its folders are fsync'd: rule 1 holds for
//! each copy exactly as before, at the cost of one journal commit per batch instead of one
//! per copy.
//!
//! Quarantines and deletions go through the same queue, alone and in order, so that a disk
//! change and its index entry always happen together and in sequence, even when the request
//! that asked for them is dropped half way: a queued job runs to the end regardless.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use deposito_api::replica::{ObjectInfo, ObjectState};
use tokio::sync::oneshot;

use super::fsutil::{self, TempPath};
use super::{data_path, json_path, scan, ObjKey, Shared};
use crate::error::{Error, Result};

/// Most commits folded into one batch.
const MAX_BATCH: usize = 512;

/// A copy stored by a write, a pull or a restore: the commit's answer.
#[derive(Debug, Clone)]
pub struct Written {
    pub info: ObjectInfo,
    /// False when the exact same copy was already stored (idempotent write).
    pub created: bool,
}

/// A verified copy waiting to be moved into place: its data fsync'd in `tmp/`, its metadata
/// (when it has more than one chunk) written beside it.
pub(super) struct Staged {
    pub info: ObjectInfo,
    pub data: TempPath,
    pub meta: Option<TempPath>,
}

type Change = Box<dyn FnOnce(&Shared) + Send>;

enum Job {
    Commit(Staged, oneshot::Sender<Result<Written>>),
    Change(Change),
}

/// Handle to the committer thread; the thread ends when the handle is dropped.
#[derive(Debug)]
pub(super) struct Committer {
    queue: mpsc::Sender<Job>,
    counts: Arc<Counters>,
}

/// How many new copies were committed, in how many batches (each batch one round of folder
/// fsyncs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitCounts {
    pub batches: u64,
    pub copies: u64,
}

#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    copies: AtomicU64,
}

impl Committer {
    /// Starts the committer of the store at `root`.
    pub fn start(root: PathBuf, shared: Arc<Shared>) -> io::Result<Self> {
        let (queue, jobs) = mpsc::channel();
        let counts = Arc::new(Counters::default());
        let c = counts.clone();
        std::thread::Builder::new()
            .name("deposito-commit".into())
            .spawn(move || run(&root, &shared, &c, jobs))?;
        Ok(Self { queue, counts })
    }

    /// Copies committed so far and the batches they took.
    pub fn counts(&self) -> CommitCounts {
        CommitCounts {
            batches: self.counts.batches.load(Ordering::Relaxed),
            copies: self.counts.copies.load(Ordering::Relaxed),
        }
    }

    /// Commits a staged copy (batched with the commits waiting beside it).
    pub async fn commit(&self, staged: Staged) -> Result<Written> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Commit(staged, tx))?;
        rx.await.map_err(|_| stopped())?
    }

    /// Runs `change` alone, after every job queued before it, to the end even if the caller
    /// is dropped.
    pub async fn change<T: Send + 'static>(
        &self,
        change: impl FnOnce(&Shared) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Change(Box::new(move |shared| {
            let _ = tx.send(change(shared));
        })))?;
        rx.await.map_err(|_| stopped())?
    }

    fn send(&self, job: Job) -> Result<()> {
        self.queue.send(job).map_err(|_| stopped())
    }
}

fn stopped() -> Error {
    Error::Internal("the commit thread stopped".to_string())
}

/// The committer's loop: waits for a job, then takes everything queued behind it.
fn run(root: &Path, shared: &Shared, counts: &Counters, jobs: mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next {
            match job {
                Job::Commit(staged, reply) => {
                    batch.push((staged, reply));
                    if batch.len() >= MAX_BATCH {
                        commit_batch(root, shared, counts, std::mem::take(&mut batch));
                    }
                }
                Job::Change(change) => {
                    commit_batch(root, shared, counts, std::mem::take(&mut batch));
                    change(shared);
                }
            }
            next = jobs.try_recv().ok();
        }
        commit_batch(root, shared, counts, batch);
    }
}

/// One placed copy, waiting for its folders' fsyncs.
struct Placed {
    info: ObjectInfo,
    data: PathBuf,
    /// Folders whose fsync makes this copy durable.
    dirs: Vec<PathBuf>,
    reply: oneshot::Sender<Result<Written>>,
}

/// Moves every staged copy into place, fsyncs each touched folder once, then reports them.
/// A second copy of a key already in the batch waits for the next round.
fn commit_batch(
    root: &Path,
    shared: &Shared,
    counts: &Counters,
    mut batch: Vec<(Staged, oneshot::Sender<Result<Written>>)>,
) {
    while !batch.is_empty() {
        let mut keys = BTreeSet::new();
        let mut later = Vec::new();
        let mut placed = Vec::new();
        for (staged, reply) in batch {
            let key = ObjKey::of(&staged.info);
            if let Some(info) = shared.get(&key).filter(|i| i.state == ObjectState::Ready) {
                // The same content is already stored: this write is idempotent.
                let _ = reply.send(Ok(Written {
                    info,
                    created: false,
                }));
            } else if !keys.insert(key) {
                later.push((staged, reply));
            } else {
                match place(root, staged) {
                    Ok((info, data, dirs)) => placed.push(Placed {
                        info,
                        data,
                        dirs,
                        reply,
                    }),
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
        }
        let failed = sync_dirs(placed.iter().flat_map(|p| p.dirs.iter()));
        if !placed.is_empty() {
            counts.batches.fetch_add(1, Ordering::Relaxed);
        }
        for p in placed {
            let done = finish(root, shared, &failed, p.info, &p.data, &p.dirs);
            if done.is_ok() {
                counts.copies.fetch_add(1, Ordering::Relaxed);
            }
            let _ = p.reply.send(done);
        }
        batch = later;
    }
}

/// Creates the copy's folders and renames its files into place. Returns the folders to fsync:
/// the copy's own and every parent that gained an entry.
fn place(root: &Path, staged: Staged) -> io::Result<(ObjectInfo, PathBuf, Vec<PathBuf>)> {
    let key = ObjKey::of(&staged.info);
    let data = data_path(root, &key, ObjectState::Ready);
    let dir = data.parent().expect("data path has a parent").to_path_buf();
    let mut dirs = Vec::new();
    create_dirs(&dir, &mut dirs)?;
    std::fs::rename(staged.data.path(), &data)?;
    staged.data.keep();
    if let Some(meta) = staged.meta {
        if let Err(e) = std::fs::rename(meta.path(), json_path(&data)) {
            let _ = std::fs::remove_file(&data);
            return Err(e);
        }
        meta.keep();
    }
    dirs.push(dir);
    Ok((staged.info, data, dirs))
}

/// Creates `dir` and its missing parents, noting in `gained` each parent that gained an
/// entry (to be fsync'd before the copy is reported).
fn create_dirs(dir: &Path, gained: &mut Vec<PathBuf>) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().expect("a data folder has a parent");
    create_dirs(parent, gained)?;
    match std::fs::create_dir(dir) {
        Ok(()) => gained.push(parent.to_path_buf()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    Ok(())
}

/// fsyncs each folder once; the error of each one that failed.
fn sync_dirs<'a>(dirs: impl Iterator<Item = &'a PathBuf>) -> BTreeMap<PathBuf, String> {
    let unique: BTreeSet<&PathBuf> = dirs.collect();
    unique
        .into_iter()
        .filter_map(|d| {
            fsutil::fsync_dir(d)
                .err()
                .map(|e| (d.clone(), e.to_string()))
        })
        .collect()
}

/// Reports a placed copy when its folders are durable; undoes it otherwise.
fn finish(
    root: &Path,
    shared: &Shared,
    failed: &BTreeMap<PathBuf, String>,
    info: ObjectInfo,
    data: &Path,
    dirs: &[PathBuf],
) -> Result<Written> {
    if let Some(e) = dirs.iter().find_map(|d| failed.get(d)) {
        let _ = std::fs::remove_file(json_path(data));
        let _ = std::fs::remove_file(data);
        return Err(io::Error::other(format!("fsync of the copy's folder failed: {e}")).into());
    }
    // A verified copy supersedes a quarantined or trashed one of the same content (one left
    // behind by a failure here is removed by the next start's scan).
    let key = ObjKey::of(&info);
    for state in [ObjectState::Corrupt, ObjectState::Trashed] {
        if let Err(e) = scan::remove_copy(&data_path(root, &key, state)) {
            tracing::warn!(key = %key, error = %e, "cannot remove the copy it replaces");
        }
    }
    shared.insert(info.clone());
    tracing::info!(key = %key, size = info.size, "copy committed");
    Ok(Written {
        info,
        created: true,
    })
}
