//! Deposits whose sha256 follows the bytes (`Trailer: x-deposito-sha256`, chunked): a client
//! hashes a file as it sends it, one pass instead of two, and its digest arrives after the
//! last byte. The replicas compute the digest of what they stored; the gateway compares the
//! two before it records the content, so a mismatch is refused (`400 digest_mismatch`) and
//! recorded nowhere: the copies it left are claimed by no file, and are collected as orphans.
//!
//! Such a body has no `Content-Length`; `x-deposito-content-length` gives its length, which
//! [`CheckedBody`] enforces as hyper enforces a `Content-Length`.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use deposito_api::{is_sha256_hex, HEADER_CONTENT_LENGTH, HEADER_SHA256};
use http_body::{Frame, SizeHint};

use crate::gateway::error::GatewayError;

/// What a deposit's headers say about its length and trailer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Framing {
    /// The body's length: `Content-Length`, else `x-deposito-content-length`.
    pub length: Option<u64>,
    /// The length comes from `x-deposito-content-length` only (the gateway enforces it).
    pub declared_only: bool,
    /// `Trailer` names `x-deposito-sha256`.
    pub trailer_digest: bool,
}

impl Framing {
    /// Reads `Content-Length`, `x-deposito-content-length` and `Trailer`.
    pub fn of(headers: &HeaderMap) -> Result<Framing, GatewayError> {
        let content_length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let declared = headers
            .get(HEADER_CONTENT_LENGTH)
            .map(|v| {
                v.to_str()
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .ok_or_else(|| {
                        GatewayError::BadRequest(format!(
                            "{HEADER_CONTENT_LENGTH} must be a number of bytes, not '{}'",
                            String::from_utf8_lossy(v.as_bytes())
                        ))
                    })
            })
            .transpose()?;
        if let (Some(c), Some(d)) = (content_length, declared) {
            if c != d {
                return Err(GatewayError::BadRequest(format!(
                    "Content-Length {c} and {HEADER_CONTENT_LENGTH} {d} differ"
                )));
            }
        }
        let trailer_digest = headers
            .get_all(header::TRAILER)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .any(|name| name.trim().eq_ignore_ascii_case(HEADER_SHA256));
        Ok(Framing {
            length: content_length.or(declared),
            declared_only: content_length.is_none() && declared.is_some(),
            trailer_digest,
        })
    }
}

/// The trailer of a deposit's body, once the body was read to its end.
#[derive(Debug, Clone, Default)]
pub struct TrailerDigest(Arc<Mutex<Option<HeaderMap>>>);

impl TrailerDigest {
    /// Compares the trailer's digest with `actual` (what the replicas stored).
    pub fn check(&self, actual: &str) -> Result<(), GatewayError> {
        let trailers = self.0.lock().expect("trailer slot").clone();
        let Some(value) = trailers.as_ref().and_then(|t| t.get(HEADER_SHA256)) else {
            return Err(GatewayError::IncompleteBody(format!(
                "the body ended without the trailer {HEADER_SHA256} its Trailer header announced"
            )));
        };
        let given = String::from_utf8_lossy(value.as_bytes()).to_ascii_lowercase();
        if !is_sha256_hex(&given) {
            return Err(GatewayError::InvalidDigest(format!(
                "trailer {HEADER_SHA256}: '{given}' is not a hex sha256 digest"
            )));
        }
        if given != actual {
            return Err(GatewayError::DigestMismatch(format!(
                "the trailer {HEADER_SHA256} says {given}, the bytes received hash to {actual}"
            )));
        }
        Ok(())
    }
}

/// A request body that keeps its trailers and, for a length declared by
/// `x-deposito-content-length`, ends in an error when it is longer or shorter.
pub struct CheckedBody {
    inner: Body,
    /// The declared length to enforce.
    declared: Option<u64>,
    seen: u64,
    trailers: TrailerDigest,
}

/// Wraps a deposit's body as its framing asks; the trailer's slot when one is announced.
pub fn wrap(body: Body, framing: &Framing) -> (Body, Option<TrailerDigest>) {
    if !framing.trailer_digest && !framing.declared_only {
        return (body, None);
    }
    let trailers = TrailerDigest::default();
    let checked = CheckedBody {
        inner: body,
        declared: framing.length.filter(|_| framing.declared_only),
        seen: 0,
        trailers: trailers.clone(),
    };
    (
        Body::new(checked),
        framing.trailer_digest.then_some(trailers),
    )
}

fn length_error(message: String) -> axum::Error {
    axum::Error::new(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        message,
    ))
}

impl http_body::Body for CheckedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_trailers() {
                    Ok(trailers) => {
                        *this.trailers.0.lock().expect("trailer slot") = Some(trailers);
                        return Poll::Ready(this.short().map(Err));
                    }
                    Err(frame) => frame,
                };
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if let Some(d) = this.declared.filter(|d| this.seen > *d) {
                        return Poll::Ready(Some(Err(length_error(format!(
                            "the body is longer than its {HEADER_CONTENT_LENGTH} of {d} bytes"
                        )))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => Poll::Ready(this.short().map(Err)),
            other => other,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.declared {
            Some(d) => SizeHint::with_exact(d.saturating_sub(self.seen)),
            None => self.inner.size_hint(),
        }
    }
}

impl CheckedBody {
    /// The error of a body that ended before its declared length.
    fn short(&self) -> Option<axum::Error> {
        let d = self.declared.filter(|d| self.seen < *d)?;
        Some(length_error(format!(
            "received {} of the {d} bytes {HEADER_CONTENT_LENGTH} announced",
            self.seen
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::s3::checksums::tests::headers;
    use http_body_util::BodyExt;

    #[test]
    fn framing_table() {
        let f = Framing::of(&headers(&[("content-length", "5")])).unwrap();
        assert_eq!(
            (f.length, f.declared_only, f.trailer_digest),
            (Some(5), false, false)
        );
        let f = Framing::of(&headers(&[
            (HEADER_CONTENT_LENGTH, "7"),
            ("trailer", "x-other, X-Deposito-SHA256"),
        ]))
        .unwrap();
        assert_eq!(
            (f.length, f.declared_only, f.trailer_digest),
            (Some(7), true, true)
        );
        for bad in [
            headers(&[(HEADER_CONTENT_LENGTH, "-1")]),
            headers(&[(HEADER_CONTENT_LENGTH, "lots")]),
            headers(&[("content-length", "5"), (HEADER_CONTENT_LENGTH, "6")]),
        ] {
            assert!(matches!(
                Framing::of(&bad),
                Err(GatewayError::BadRequest(_))
            ));
        }
    }

    fn trailed(chunks: &[&'static [u8]], trailer: Option<&str>) -> Body {
        let mut frames: Vec<Result<Frame<Bytes>, std::io::Error>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        if let Some(t) = trailer {
            frames.push(Ok(Frame::trailers(headers(&[(HEADER_SHA256, t)]))));
        }
        Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )))
    }

    fn framing(length: u64) -> Framing {
        Framing {
            length: Some(length),
            declared_only: true,
            trailer_digest: true,
        }
    }

    #[tokio::test]
    async fn the_trailer_is_kept_and_checked() {
        let sha = deposito_api::sha256_hex(b"abcdef");
        let (body, slot) = wrap(
            trailed(&[b"abc", b"def"], Some(&sha.to_uppercase())),
            &framing(6),
        );
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes.as_ref(), b"abcdef");
        let slot = slot.unwrap();
        slot.check(&sha).unwrap();
        let other = deposito_api::sha256_hex(b"x");
        assert!(matches!(
            slot.check(&other),
            Err(GatewayError::DigestMismatch(_))
        ));
    }

    #[tokio::test]
    async fn a_missing_or_malformed_trailer_is_refused() {
        let (body, slot) = wrap(trailed(&[b"abc"], None), &framing(3));
        body.collect().await.unwrap();
        let sha = deposito_api::sha256_hex(b"abc");
        assert!(matches!(
            slot.unwrap().check(&sha),
            Err(GatewayError::IncompleteBody(_))
        ));
        let (body, slot) = wrap(trailed(&[b"abc"], Some("xyz")), &framing(3));
        body.collect().await.unwrap();
        assert!(matches!(
            slot.unwrap().check(&sha),
            Err(GatewayError::InvalidDigest(_))
        ));
    }

    #[tokio::test]
    async fn a_declared_length_is_enforced_both_ways() {
        let (long, _) = wrap(trailed(&[b"abc", b"def"], None), &framing(4));
        let err = long.collect().await.unwrap_err().to_string();
        assert!(err.contains("longer than its"), "{err}");
        let (short, _) = wrap(trailed(&[b"ab"], Some("x")), &framing(4));
        let err = short.collect().await.unwrap_err().to_string();
        assert!(err.contains("received 2 of the 4 bytes"), "{err}");
        let (exact, _) = wrap(trailed(&[b"abcd"], None), &framing(4));
        assert_eq!(exact.collect().await.unwrap().to_bytes().as_ref(), b"abcd");
    }
}
