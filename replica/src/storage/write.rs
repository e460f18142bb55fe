//! The write path: stream to a temp file (new in `tmp/`, or a freed one of `free/`) while
//! hashing, verify, fsync data and metadata, then hand both to the commit thread, which
//! renames them into `objects/` (see `commit`).

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use deposito_api::replica::{ObjectInfo, ObjectState};
use deposito_api::FileKey;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWriteExt, BufWriter};
use tracing::instrument;

use super::chunks::ChunkHasher;
use super::commit::{Staged, Written};
use super::fsutil::{self, TempPath};
use super::{CopyMeta, ObjKey, Store};
use crate::error::{Error, Result};

/// Buffer between the body stream and the temp file.
const WRITE_BUFFER: usize = 1 << 20;
/// How often (in bytes written) free space is re-checked during a write.
const SPACE_CHECK_EVERY: u64 = 8 << 20;
/// Longest wait for the next piece of a body: past it the write fails and its temp file is
/// removed. A backstop below every source's own limit (an upload's minimum rate, a pull's
/// idle timeout, a fetch's idle limit), so that no temp file outlives a source that stopped
/// sending without closing, whatever the source.
const BODY_IDLE: Duration = Duration::from_secs(90);
/// How often a write whose body is in but whose copy is not yet committed says so in the log.
const SLOW_STAGE: Duration = Duration::from_secs(30);

impl Store {
    /// Streams `body` into a new copy of `key`.
    ///
    /// The bytes go to a temp file in `tmp/` while being hashed; the copy is committed only
    /// when the body is complete (`expected_len`, when known), the digest equals `expected`
    /// (when given), the data is fsync'd and renamed, and its metadata written the same way.
    /// On any error (including the future being dropped) the temp file is removed.
    #[instrument(skip(self, body), fields(key = %key))]
    pub async fn write<S>(
        &self,
        key: &FileKey,
        expected: Option<&str>,
        expected_len: Option<u64>,
        body: S,
    ) -> Result<Written>
    where
        S: Stream<Item = Result<Bytes>>,
    {
        self.ensure_free(expected_len.unwrap_or(0)).await?;
        // The temp file is created, and its guard made, on the blocking pool in one task: a
        // write dropped while the file is being created (the client went away) drops the
        // guard with the task's output, which removes the file. (With `tokio::fs` the guard
        // would be dropped first, find nothing to remove, and the file be created after.)
        // The temp file is a freed inode out of the pool when there is one (no inode to
        // allocate: see `pool`), a new file in a folder of `tmp/` otherwise.
        let folder = self.temp_folder();
        let dir = folder.clone();
        let pool = self.pool.clone();
        let (tmp, file) = tokio::task::spawn_blocking(move || {
            if let Some(slot) = pool.take() {
                let tmp = TempPath::new(slot);
                let reopened = std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(tmp.path());
                match reopened {
                    Ok(file) => return Ok((tmp, file)),
                    Err(e) => tracing::warn!(path = %tmp.path().display(), error = %e,
                        "cannot reopen a freed file; writing a new one"),
                }
            }
            let tmp = TempPath::new(dir.join(fsutil::temp_name("data")));
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(tmp.path())?;
            Ok::<_, std::io::Error>((tmp, file))
        })
        .await
        .map_err(std::io::Error::other)??;
        let file = tokio::fs::File::from_std(file);
        tracing::debug!(tmp = %tmp.path().display(), "write started");
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
        let mut hasher = Sha256::new();
        let mut chunk_hasher = ChunkHasher::default();
        let mut written: u64 = 0;
        let mut since_check: u64 = 0;
        let mut body = std::pin::pin!(body);
        loop {
            let chunk = match tokio::time::timeout(BODY_IDLE, body.next()).await {
                Ok(Some(chunk)) => chunk?,
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(tmp = %tmp.path().display(), received = written,
                        "no byte of the body for {} s: write cut off", BODY_IDLE.as_secs());
                    return Err(Error::IncompleteBody(format!(
                        "no byte received for {} s after {written} bytes",
                        BODY_IDLE.as_secs()
                    )));
                }
            };
            let len = chunk.len() as u64;
            if expected_len.is_some_and(|l| written + len > l) {
                return Err(Error::BadRequest(
                    "body is longer than its Content-Length".to_string(),
                ));
            }
            hasher.update(&chunk);
            chunk_hasher.update(&chunk);
            out.write_all(&chunk).await?;
            written += len;
            since_check += len;
            if since_check >= SPACE_CHECK_EVERY {
                since_check = 0;
                self.ensure_free(0).await?;
            }
        }
        if let Some(l) = expected_len {
            if written != l {
                return Err(Error::IncompleteBody(format!(
                    "received {written} of {l} bytes"
                )));
            }
        }
        out.flush().await?;
        let file = out.into_inner().into_std().await;
        let actual = hex::encode(hasher.finalize());
        if let Some(e) = expected {
            if e != actual {
                return Err(Error::DigestMismatch {
                    expected: e.to_string(),
                    actual,
                });
            }
        }
        let okey = ObjKey::from_file_key(key.clone(), &actual)?;
        let present = self.get(&okey).map(|i| i.state);
        if matches!(present, Some(ObjectState::Ready | ObjectState::Trashed)) {
            // The same copy is stored, or in the trash: it is kept, or brought back (its
            // bytes hashed again, then renamed into place: the same file), and the bytes
            // just received are dropped with their temp file. A body whose digest was
            // given beforehand takes this path before it is written (`put_from_trash`);
            // one hashed on the way (a trailer, S3) takes it here. A trashed copy that
            // changed is quarantined by the restore, and one purged meanwhile is gone: the
            // new bytes are committed then.
            match self.restore(&okey).await {
                Ok(kept) => {
                    tracing::debug!(created = kept.created, "copy already present");
                    return Ok(kept);
                }
                Err(Error::Corrupt | Error::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        let info = ObjectInfo {
            namespace: okey.namespace,
            name: okey.name,
            sha256: okey.sha256,
            size: written,
            state: ObjectState::Ready,
            stored_at: 0,
            stored_at_ms: 0,
        };
        // The data is made durable here, concurrently with other writers; the commit thread
        // only renames it into place and fsyncs its folder (see `commit`). The metadata (of a
        // copy of more than one chunk) is not fsync'd: a crash that tears it leaves a ready
        // copy whose data (named by its digest) the next start re-hashes and describes again
        // (`scan::load_copy`).
        let tmp_dir = folder;
        let tmp_name = tmp.path().to_path_buf();
        let chunks = chunk_hasher.finish();
        let staging = tokio::task::spawn_blocking(move || -> Result<Staged> {
            file.sync_all()?;
            // The commit time is the data's modification time: what the next start reads for
            // a copy without metadata.
            let mut info = info;
            info.stored_at_ms = fsutil::modified_ms(&file.metadata()?);
            info.stored_at = info.stored_at_ms / 1000;
            drop(file);
            // A copy of one chunk has no metadata file: its path and the file say it all
            // (see `layout`).
            let meta = match chunks {
                None => None,
                Some(chunks) => {
                    let json = CopyMeta {
                        info: info.clone(),
                        chunks: Some(chunks),
                    }
                    .to_json()?;
                    Some(fsutil::write_temp_unsynced(&tmp_dir, "meta", &json)?)
                }
            };
            Ok(Staged {
                info,
                data: tmp,
                meta,
            })
        });
        let staged = watched("fsync", &tmp_name, staging).await??;
        watched("commit", &tmp_name, self.committer.commit(staged)).await
    }
}

/// Awaits `stage` of the write whose temp file is `tmp`, with a warning every [`SLOW_STAGE`]
/// it takes (nothing else bounds a stuck disk or commit thread: the log must tell).
async fn watched<T>(stage: &str, tmp: &std::path::Path, work: impl Future<Output = T>) -> T {
    let mut work = std::pin::pin!(work);
    let mut waited = Duration::ZERO;
    loop {
        match tokio::time::timeout(SLOW_STAGE, &mut work).await {
            Ok(done) => return done,
            Err(_) => {
                waited += SLOW_STAGE;
                tracing::warn!(tmp = %tmp.display(), stage, waited_secs = waited.as_secs(),
                    "a write is slow to finish");
            }
        }
    }
}
