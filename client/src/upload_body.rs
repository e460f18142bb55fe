//! The body of an upload: the bytes, streamed in chunks from a file or from memory, and,
//! when the caller did not hash them beforehand, their sha256 computed as they are sent and
//! sent after them as the trailer `x-deposito-sha256` (HTTP/1.1 chunked encoding). One pass
//! over a file instead of two: the gateway checks the trailer against the digest the replicas
//! computed before it records the content (`docs/api.md`, "Deposit with a trailer").

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use deposito_api::HEADER_SHA256;
use futures::Stream;
use http_body::{Frame, SizeHint};
use reqwest::header::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, Take};
use tokio_util::io::ReaderStream;

use crate::error::Error;

/// Where the bytes of an upload come from.
#[derive(Debug, Clone, Copy)]
pub enum UploadBody<'a> {
    /// A local file, read as it is sent.
    File(&'a Path),
    /// Bytes in memory (`deposito selftest` needs no scratch file).
    Memory(&'a [u8]),
}

/// Read buffer for uploads.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// The sha256 of what a trailed body sent, known once its last byte went out.
#[derive(Debug, Clone, Default)]
pub struct SentDigest(Arc<Mutex<Option<String>>>);

impl SentDigest {
    /// The digest, or None when the body did not reach its end.
    pub fn get(&self) -> Option<String> {
        self.0.lock().expect("sent digest").clone()
    }
}

enum Source {
    File(ReaderStream<Take<tokio::fs::File>>),
    Memory(std::vec::IntoIter<Bytes>),
}

/// An upload body: `size` bytes of the source, then (when hashing) the trailer.
pub struct TrailedBody {
    source: Source,
    /// Some while hashing for the trailer; taken when the trailer is sent.
    hasher: Option<Sha256>,
    sent: SentDigest,
    on_chunk: Box<dyn Fn(u64) + Send + Sync>,
    left: u64,
}

impl TrailedBody {
    /// Opens `source` for `size` bytes. With `trailer`, the body hashes what it sends and ends
    /// with the trailer; [`SentDigest`] then gives the digest.
    pub async fn open(
        source: UploadBody<'_>,
        size: u64,
        trailer: bool,
        on_chunk: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<(Self, SentDigest), Error> {
        let source = match source {
            UploadBody::File(path) => Source::File(open_file(path, size).await?),
            UploadBody::Memory(data) => {
                let len = usize::try_from(size).unwrap_or(usize::MAX).min(data.len());
                let chunks: Vec<Bytes> = data[..len]
                    .chunks(UPLOAD_CHUNK)
                    .map(Bytes::copy_from_slice)
                    .collect();
                Source::Memory(chunks.into_iter())
            }
        };
        let sent = SentDigest::default();
        let body = TrailedBody {
            source,
            hasher: trailer.then(Sha256::new),
            sent: sent.clone(),
            on_chunk: Box::new(on_chunk),
            left: size,
        };
        Ok((body, sent))
    }

    /// The trailer frame, once every byte was sent; None when not hashing.
    fn trailer(&mut self) -> Option<Frame<Bytes>> {
        let hasher = self.hasher.take()?;
        let hex = hex::encode(hasher.finalize());
        *self.sent.0.lock().expect("sent digest") = Some(hex.clone());
        let mut map = HeaderMap::new();
        map.insert(
            HEADER_SHA256,
            HeaderValue::from_str(&hex).expect("hex is a header value"),
        );
        Some(Frame::trailers(map))
    }
}

async fn open_file(path: &Path, size: u64) -> Result<ReaderStream<Take<tokio::fs::File>>, Error> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::io(format!("cannot open {}", path.display()), &e))?;
    Ok(ReaderStream::with_capacity(file.take(size), UPLOAD_CHUNK))
}

impl http_body::Body for TrailedBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        let next = match &mut this.source {
            Source::File(stream) => match Pin::new(stream).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(next) => next,
            },
            Source::Memory(chunks) => chunks.next().map(Ok),
        };
        match next {
            Some(Ok(chunk)) => {
                if let Some(h) = &mut this.hasher {
                    h.update(&chunk);
                }
                this.left = this.left.saturating_sub(chunk.len() as u64);
                (this.on_chunk)(chunk.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            // A file that shrank while being sent: end short, and the gateway refuses the
            // deposit as incomplete (no trailer for bytes that were not all sent).
            None if this.left > 0 => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file ended {} bytes early", this.left),
            )))),
            None => Poll::Ready(this.trailer().map(Ok)),
        }
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        // Exact only without a trailer: with one, hyper must use chunked encoding.
        if self.hasher.is_none() {
            SizeHint::with_exact(self.left)
        } else {
            SizeHint::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_trailed_body_sends_its_bytes_then_their_sha256() {
        let data: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let (body, sent) =
            TrailedBody::open(UploadBody::Memory(&data), data.len() as u64, true, |_| {})
                .await
                .unwrap();
        assert_eq!(sent.get(), None);
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned().expect("a trailer");
        let expected = hex::encode(Sha256::digest(&data));
        assert_eq!(trailers.get(HEADER_SHA256).unwrap(), expected.as_str());
        assert_eq!(collected.to_bytes().as_ref(), data.as_slice());
        assert_eq!(sent.get(), Some(expected));
    }

    #[tokio::test]
    async fn a_file_shorter_than_announced_ends_with_an_error_and_no_trailer() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("short");
        std::fs::write(&f, b"abc").unwrap();
        let (body, sent) = TrailedBody::open(UploadBody::File(&f), 10, true, |_| {})
            .await
            .unwrap();
        let err = body.collect().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(sent.get(), None);
    }
}
