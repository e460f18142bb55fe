//! The download body of a copy without chunk digests (committed by an older version, longer
//! than one chunk): streams the file and, for full reads, verifies the sha256 on the fly.
//! Copies with chunk digests are served by `verified` instead.
//!
//! The last chunk is held back until the digest is known, so a client never receives a
//! complete body for a corrupt copy: on a mismatch the stream ends with an error (the
//! response is cut) and the copy is quarantined.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use sha2::{Digest, Sha256};
use tokio::fs::File;
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

use crate::app::{AppState, TransferGuard};
use crate::storage::ObjKey;

/// Read size of downloads.
pub const READ_CHUNK: usize = 256 * 1024;

/// What a full read must hash to.
pub struct Verify {
    pub key: ObjKey,
    pub size: u64,
    pub stored_at: u64,
}

/// Moves a copy found corrupt while serving it to quarantine (in the background: the
/// response is already being cut).
pub fn quarantine_after_read(app: &AppState, key: &ObjKey, stored_at: u64, reason: &str) {
    let (app, key, reason) = (app.clone(), key.clone(), reason.to_string());
    tokio::spawn(async move {
        if let Ok(true) = app.store.quarantine(&key, Some(stored_at), &reason).await {
            app.metrics.corrupt_found.inc();
        }
    });
}

/// A file body that counts sent bytes and, with [`Verify`], checks the digest.
pub struct FileBody {
    inner: ReaderStream<tokio::io::Take<File>>,
    app: AppState,
    verify: Option<(Verify, Sha256, u64)>,
    held: Option<Bytes>,
    done: bool,
    _transfer: TransferGuard,
}

impl FileBody {
    /// Streams `len` bytes of `file` from its current position.
    pub fn new(app: AppState, file: File, len: u64, verify: Option<Verify>) -> Self {
        let transfer = app.transfer();
        Self {
            inner: ReaderStream::with_capacity(file.take(len), READ_CHUNK),
            app,
            verify: verify.map(|v| (v, Sha256::new(), 0)),
            held: None,
            done: false,
            _transfer: transfer,
        }
    }

    fn emit(&self, chunk: Bytes) -> Poll<Option<std::io::Result<Bytes>>> {
        self.app.metrics.bytes_sent.inc_by(chunk.len() as u64);
        Poll::Ready(Some(Ok(chunk)))
    }

    /// At the end of a verified read: Ok when the digest and length match.
    fn finish(&mut self) -> Result<(), String> {
        let Some((v, hasher, seen)) = self.verify.take() else {
            return Ok(());
        };
        let actual = hex::encode(hasher.finalize());
        if actual == v.key.sha256 && seen == v.size {
            return Ok(());
        }
        let reason = format!(
            "read {seen} bytes with sha256 {actual}, expected {} bytes with {}",
            v.size, v.key.sha256
        );
        quarantine_after_read(&self.app, &v.key, v.stored_at, &reason);
        Err(reason)
    }
}

impl Stream for FileBody {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    let Some((_, hasher, seen)) = this.verify.as_mut() else {
                        return this.emit(chunk);
                    };
                    hasher.update(&chunk);
                    *seen += chunk.len() as u64;
                    if let Some(prev) = this.held.replace(chunk) {
                        return this.emit(prev);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return match this.finish() {
                        Ok(()) => match this.held.take() {
                            Some(last) => this.emit(last),
                            None => Poll::Ready(None),
                        },
                        Err(reason) => {
                            tracing::error!(%reason, "corrupt copy detected while serving; response cut");
                            Poll::Ready(Some(Err(std::io::Error::other(reason))))
                        }
                    };
                }
            }
        }
    }
}
