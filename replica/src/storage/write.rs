//! The write path: stream to `tmp/` while hashing, verify, fsync, rename into `objects/`.

use bytes::Bytes;
use deposito_api::replica::{ObjectInfo, ObjectState};
use deposito_api::FileKey;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncWriteExt, BufWriter};
use tracing::instrument;

use super::fsutil::{self, TempPath};
use super::{data_path, json_path, now_secs, scan, ObjKey, Store};
use crate::error::{Error, Result};

/// Buffer between the body stream and the temp file.
const WRITE_BUFFER: usize = 1 << 20;
/// How often (in bytes written) free space is re-checked during a write.
const SPACE_CHECK_EVERY: u64 = 8 << 20;

/// Result of a successful write.
#[derive(Debug, Clone)]
pub struct Written {
    pub info: ObjectInfo,
    /// False when the exact same copy was already stored (idempotent write).
    pub created: bool,
}

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
        self.check_free(expected_len.unwrap_or(0))?;
        let tmp = TempPath::new(self.tmp_dir().join(fsutil::temp_name("data")));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp.path())
            .await?;
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
        let mut hasher = Sha256::new();
        let mut written: u64 = 0;
        let mut since_check: u64 = 0;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            let len = chunk.len() as u64;
            if expected_len.is_some_and(|l| written + len > l) {
                return Err(Error::BadRequest(
                    "body is longer than its Content-Length".to_string(),
                ));
            }
            hasher.update(&chunk);
            out.write_all(&chunk).await?;
            written += len;
            since_check += len;
            if since_check >= SPACE_CHECK_EVERY {
                since_check = 0;
                self.check_free(0)?;
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
        let file = out.into_inner();
        file.sync_all().await?;
        drop(file);
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
        self.commit(okey, written, tmp).await
    }

    /// Renames a verified, fsync'd temp file into place and records it (to the end, even if
    /// the request is dropped meanwhile: see `Store::change_on_disk`).
    async fn commit(&self, key: ObjKey, size: u64, tmp: TempPath) -> Result<Written> {
        let root = self.root().to_path_buf();
        let tmp_dir = self.tmp_dir();
        let written = self
            .change_on_disk(move |shared| {
                if let Some(info) = shared.get(&key) {
                    if info.state == ObjectState::Ready {
                        return Ok(Written {
                            info,
                            created: false,
                        });
                    }
                }
                let info = ObjectInfo {
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                    sha256: key.sha256.clone(),
                    size,
                    state: ObjectState::Ready,
                    stored_at: now_secs(),
                };
                let json = serde_json::to_vec_pretty(&info).map_err(std::io::Error::other)?;
                let json_tmp = fsutil::write_temp(&tmp_dir, "meta", &json)?;
                let data = data_path(&root, &key, ObjectState::Ready);
                let dir = data.parent().expect("data path has a parent");
                fsutil::create_dir_all_durable(dir)?;
                std::fs::rename(tmp.path(), &data)?;
                tmp.keep();
                if let Err(e) = std::fs::rename(json_tmp.path(), json_path(&data)) {
                    let _ = std::fs::remove_file(&data);
                    return Err(e.into());
                }
                json_tmp.keep();
                if let Err(e) = fsutil::fsync_dir(dir) {
                    let _ = std::fs::remove_file(json_path(&data));
                    let _ = std::fs::remove_file(&data);
                    return Err(e.into());
                }
                // A verified copy supersedes a quarantined one of the same content.
                scan::remove_copy(&data_path(&root, &key, ObjectState::Corrupt))?;
                shared.insert(info.clone());
                Ok(Written {
                    info,
                    created: true,
                })
            })
            .await?;
        if written.created {
            tracing::info!(size, "copy committed");
        } else {
            tracing::debug!("copy already present");
        }
        Ok(written)
    }
}
