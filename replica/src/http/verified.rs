//! Verified reads: a copy is read chunk by chunk (see `storage::chunks`), and each chunk is
//! checked against the digest recorded at commit before any of its bytes is sent. A chunk
//! that fails ends the response before its first byte and quarantines the copy; when it is
//! the first chunk of the read, the answer is `404 corrupt` instead of a body at all. Range
//! reads are verified the same way (the chunks they touch are read whole).
//!
//! A copy of one chunk (up to 1 MiB) is checked against its sha256; a longer one against its
//! chunk digests. The next chunk is read and verified while the current one is being sent.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::body::quarantine_after_read;
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::storage::chunks::{chunk_count, ChunkDigests, CHUNK};
use crate::storage::ObjKey;

/// How a copy's chunks are checked.
#[derive(Debug, Clone)]
pub enum Check {
    /// One chunk: the copy's sha256 (its name).
    Whole,
    /// Several: the digests recorded at commit.
    Chunks(Arc<ChunkDigests>),
}

impl Check {
    /// How to check a copy of `size` bytes: None for a copy of several chunks committed
    /// before digests were recorded (see `body::FileBody`).
    pub fn for_copy(size: u64, digests: Option<ChunkDigests>) -> Option<Self> {
        if chunk_count(size) <= 1 {
            return Some(Check::Whole);
        }
        digests.map(|d| Check::Chunks(Arc::new(d)))
    }
}

/// One read: the copy and the bytes `[start, start + len)` of it.
pub struct Read {
    pub key: ObjKey,
    pub size: u64,
    pub stored_at: u64,
    pub start: u64,
    pub len: u64,
}

impl Read {
    fn chunks(&self) -> (u64, u64) {
        let first = self.start / CHUNK;
        let last = if self.len == 0 {
            first
        } else {
            (self.start + self.len - 1) / CHUNK
        };
        (first, last)
    }

    /// The part of chunk `index` (its bytes `chunk`) that the read asked for.
    fn slice(&self, index: u64, chunk: Bytes) -> Bytes {
        let at = index * CHUNK;
        let from = self.start.max(at) - at;
        let to = (self.start + self.len).min(at + chunk.len() as u64) - at;
        chunk.slice(from as usize..to.max(from) as usize)
    }
}

/// Reads chunk `index` of a copy of `size` bytes and checks it: the bytes, or why they are
/// not the committed ones (a short file included).
fn read_chunk(
    file: &std::fs::File,
    key: &ObjKey,
    size: u64,
    check: &Check,
    index: u64,
) -> std::io::Result<std::result::Result<Bytes, String>> {
    let at = index * CHUNK;
    let len = (size - at.min(size)).min(CHUNK) as usize;
    let mut buf = vec![0u8; len];
    match file.read_exact_at(&mut buf, at) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Ok(Err(format!(
                "chunk {index}: the file is shorter than {size} bytes"
            )));
        }
        Err(e) => return Err(e),
    }
    let good = match check {
        Check::Whole => hex::encode(Sha256::digest(&buf)) == key.sha256,
        Check::Chunks(d) => d.verify(index, &buf),
    };
    if good {
        Ok(Ok(Bytes::from(buf)))
    } else {
        Ok(Err(format!("chunk {index} does not match its digest")))
    }
}

/// Opens the copy at `path` and verifies the first chunk of `read` now (a corrupt one is
/// `404 corrupt`), and returns the body that sends it and then reads, verifies and sends the
/// others. A read within one chunk is answered as one buffer.
pub async fn body(app: &AppState, path: &Path, check: Check, read: Read) -> Result<Body> {
    let (first, last) = read.chunks();
    let opened = {
        let (path, key, check, size) = (
            path.to_path_buf(),
            read.key.clone(),
            check.clone(),
            read.size,
        );
        let pool = app.store.inode_pool();
        tokio::task::spawn_blocking(move || {
            // A copy of one chunk is opened and read whole under the pool's gate: its file
            // is not emptied or reused meanwhile (see `storage::pool`).
            let _reading = pool.reading(size);
            let file = std::fs::File::open(&path).map_err(Error::missing_is_not_found)?;
            let chunk = read_chunk(&file, &key, size, &check, first)?;
            Ok::<_, Error>((file, chunk))
        })
        .await??
    };
    let (file, first_chunk) = opened;
    let file = Arc::new(file);
    let fetch = {
        let (file, key, check, size) = (file.clone(), read.key.clone(), check.clone(), read.size);
        move |index: u64| {
            let (file, key, check) = (file.clone(), key.clone(), check.clone());
            tokio::task::spawn_blocking(move || read_chunk(&file, &key, size, &check, index))
        }
    };
    let head = match first_chunk {
        Ok(bytes) => read.slice(first, bytes),
        Err(reason) => {
            quarantine_after_read(app, &read.key, read.stored_at, &reason);
            return Err(Error::Corrupt);
        }
    };
    app.metrics.bytes_sent.inc_by(head.len() as u64);
    if first == last {
        return Ok(Body::from(head));
    }
    let transfer = app.transfer();
    let app = app.clone();
    let read = Arc::new(read);
    let rest = futures::stream::iter(first + 1..=last)
        .map(move |index| {
            let f = fetch(index);
            async move { (index, f.await) }
        })
        .buffered(2)
        .map(move |(index, done)| {
            let _transfer = &transfer;
            match done {
                Ok(Ok(Ok(bytes))) => {
                    let part = read.slice(index, bytes);
                    app.metrics.bytes_sent.inc_by(part.len() as u64);
                    Ok(part)
                }
                Ok(Ok(Err(reason))) => {
                    tracing::error!(%reason, key = %read.key, "corrupt chunk found while serving; response cut before it");
                    quarantine_after_read(&app, &read.key, read.stored_at, &reason);
                    Err(std::io::Error::other(reason))
                }
                Ok(Err(e)) => Err(e),
                Err(e) => Err(std::io::Error::other(e)),
            }
        });
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(head) }).chain(rest);
    Ok(Body::from_stream(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(start: u64, len: u64) -> Read {
        Read {
            key: ObjKey::new("default", "f", &"0".repeat(64)).unwrap(),
            size: 3 * CHUNK,
            stored_at: 0,
            start,
            len,
        }
    }

    #[test]
    fn a_read_touches_exactly_the_chunks_its_bytes_are_in() {
        assert_eq!(read(0, 3 * CHUNK).chunks(), (0, 2));
        assert_eq!(read(CHUNK - 1, 2).chunks(), (0, 1));
        assert_eq!(read(CHUNK, CHUNK).chunks(), (1, 1));
        assert_eq!(read(0, 0).chunks(), (0, 0));
        let chunk = Bytes::from(vec![7u8; CHUNK as usize]);
        assert_eq!(read(CHUNK - 1, 2).slice(0, chunk.clone()).len(), 1);
        assert_eq!(read(CHUNK - 1, 2).slice(1, chunk.clone()).len(), 1);
        assert_eq!(read(10, 5).slice(0, chunk.clone()).len(), 5);
        assert_eq!(read(0, 3 * CHUNK).slice(2, chunk).len(), CHUNK as usize);
    }
}
