//! The data path through the gateway: choosing a replica for an upload, streaming the body to
//! it, and streaming a verified copy back out. Memory stays bounded whatever the file size:
//! bytes flow through in chunks and are never collected.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use deposito_api::replica::ObjectInfo;
use deposito_api::{FileKey, HEADER_SHA256};
use futures::StreamExt;

use super::GatewayState;
use crate::engine::FileRecord;
use crate::gateway::error::GatewayError;
use crate::plan::{self, Health, ReplicaView};
use crate::replica_client::ReplicaClientError;

/// Replicas an upload tries, in order, at most this many.
const UPLOAD_ATTEMPTS: usize = 3;

/// Ranks the replicas that may receive an upload: the placement's order among live,
/// undraining replicas with room for `size` bytes (when known), replicas suspected of being
/// down last: enough for `copies` copies written at once plus spares for the first. The first
/// that accepts the connection gets the bytes.
pub fn upload_targets(
    gw: &GatewayState,
    key: &FileKey,
    size: Option<u64>,
    copies: usize,
) -> Result<Vec<ReplicaView>, GatewayError> {
    let views = gw.replicas.live_targets();
    let candidates: Vec<&ReplicaView> = views
        .iter()
        .filter(|v| v.free_bytes > 0 && size.is_none_or(|s| v.free_bytes > s))
        .collect();
    let mut ranked = plan::placement::rank_targets(
        &candidates,
        &[],
        candidates.len(),
        &key.namespace,
        &key.name,
    );
    if ranked.is_empty() {
        return Err(if views.is_empty() {
            GatewayError::NoReplica("no live replica to store the file".into())
        } else {
            GatewayError::InsufficientStorage("no live replica has room for the file".into())
        });
    }
    // Stable: suspects keep their order among themselves, after the others.
    ranked.sort_by_key(|id| gw.replicas.is_suspect(id));
    ranked.truncate(copies.saturating_sub(1) + UPLOAD_ATTEMPTS);
    Ok(ranked
        .into_iter()
        .filter_map(|id| views.iter().find(|v| v.id == id).cloned())
        .collect())
}

/// The client's body as one upload attempt reads it. Attempts share the channel the body is
/// forwarded into; `started` records whether this attempt took any of it, so that an attempt
/// whose connection failed before reading can hand the whole body to the next replica.
struct AttemptBody {
    shared: std::sync::Arc<std::sync::Mutex<tokio::sync::mpsc::Receiver<Chunk>>>,
    started: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

type Chunk = Result<bytes::Bytes, std::io::Error>;

impl futures::Stream for AttemptBody {
    type Item = Chunk;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Chunk>> {
        let polled = self.shared.lock().expect("upload body").poll_recv(cx);
        if matches!(polled, std::task::Poll::Ready(Some(_))) {
            self.started
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        polled
    }
}

/// Most of a refused upload's body that is read and discarded before answering, so that a
/// client still sending sees the error instead of a reset connection.
const DRAIN_LIMIT_BYTES: u64 = 64 << 20;
const DRAIN_LIMIT_TIME: Duration = Duration::from_secs(10);

/// Reads and discards what remains of a request body, within the drain limits.
pub async fn drain<S, E>(mut stream: S)
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + DRAIN_LIMIT_TIME;
    let mut drained = 0u64;
    while drained <= DRAIN_LIMIT_BYTES {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(chunk))) => drained += chunk.len() as u64,
            _ => return,
        }
    }
}

/// A copy an upload left verified and fsync'd.
pub type Stored = (ReplicaView, ObjectInfo);

/// Longest a secondary target may hold up the body before it is dropped from the upload.
const SECONDARY_STALL: Duration = Duration::from_secs(10);
/// Least time secondaries get to answer once the primary has answered (they get at least as
/// long as the primary took).
const SECONDARY_GRACE: Duration = Duration::from_secs(10);

/// Streams the request body to the first of `primaries` that takes it and, at the same time,
/// to every one of `secondaries` (acknowledgement `all`): each replica verifies and fsyncs its
/// copy before answering. Returns the copies stored, the primary's first; at least one.
///
/// The body is forwarded through small channels by a separate task. A primary that can't be
/// reached before any byte is read is marked suspect, and the next primary gets the body
/// (writes stay available while a replica is down, rule 12). A secondary that fails, or holds
/// up the body for [`SECONDARY_STALL`], drops out: the upload goes on, and the reconcile loop
/// adds the missing copy. The upload fails only when no copy was stored. If every replica
/// refuses part way, the forwarding task drains the rest of the client's body before this
/// returns, so the client reads the error answer.
pub async fn upload(
    gw: &GatewayState,
    primaries: &[ReplicaView],
    secondaries: &[ReplicaView],
    key: &FileKey,
    expected_sha256: Option<&str>,
    content_length: Option<u64>,
    body: Body,
) -> Result<Vec<Stored>, GatewayError> {
    let counter = gw.metrics.bytes_uploaded.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(4);
    let mut tees = Vec::new();
    let mut pending = Vec::new();
    for target in secondaries {
        let (tee, tee_rx) = tokio::sync::mpsc::channel::<Chunk>(4);
        tees.push(tee);
        let client = gw.client.clone();
        let (target, key) = (target.clone(), key.clone());
        let (expected, stream) = (
            expected_sha256.map(str::to_string),
            tokio_stream::wrappers::ReceiverStream::new(tee_rx),
        );
        pending.push(tokio::spawn(async move {
            let body = reqwest::Body::wrap_stream(stream);
            let stored = client
                .put(&target.url, &key, expected.as_deref(), content_length, body)
                .await;
            (target, stored)
        }));
    }
    let forwarder = tokio::spawn(forward(body, tx, tees, counter));
    let shared = std::sync::Arc::new(std::sync::Mutex::new(rx));
    let started_at = tokio::time::Instant::now();
    let mut outcome = Err(ReplicaClientError::Unreachable("no replica to try".into()));
    let mut holder = None;
    for target in primaries {
        let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let attempt = AttemptBody {
            shared: shared.clone(),
            started: started.clone(),
        };
        outcome = gw
            .client
            .put(
                &target.url,
                key,
                expected_sha256,
                content_length,
                reqwest::Body::wrap_stream(attempt),
            )
            .await;
        match &outcome {
            Err(ReplicaClientError::Unreachable(err))
                if !started.load(std::sync::atomic::Ordering::Relaxed) =>
            {
                tracing::warn!(replica = %target.id, %err, "replica unreachable; trying the next one");
                gw.replicas.suspect(&target.id);
            }
            _ => {
                holder = Some(target.clone());
                break;
            }
        }
    }
    // No attempt reads anymore: the forwarder feeds the secondaries, then drains what the
    // client still sends.
    drop(shared);
    let grace = SECONDARY_GRACE.max(started_at.elapsed());
    let Forwarded {
        client_body_failed,
        dropped,
    } = forwarder.await.unwrap_or(Forwarded {
        client_body_failed: false,
        dropped: (0..secondaries.len()).collect(),
    });
    let mut stored: Vec<Stored> = Vec::new();
    let primary_error = match (outcome, holder) {
        (Ok(info), Some(target)) => {
            stored.push((target, info));
            None
        }
        (Ok(_), None) => None,
        (Err(err), _) => Some(err),
    };
    let deadline = tokio::time::Instant::now() + grace;
    for (i, task) in pending.into_iter().enumerate() {
        let abort = task.abort_handle();
        match tokio::time::timeout_at(deadline, task).await {
            // A secondary that missed part of the body keeps nothing of value (without a
            // Content-Length or a digest it might even have stored the part it got).
            Ok(Ok((target, Ok(_)))) if dropped.contains(&i) => {
                tracing::warn!(replica = %target.id, file = %key, "a secondary copy missed part of the body; not counted");
            }
            Ok(Ok((target, Ok(info)))) => stored.push((target, info)),
            Ok(Ok((target, Err(err)))) => {
                tracing::warn!(replica = %target.id, %err, file = %key, "a secondary copy failed; the reconcile loop adds it");
            }
            Ok(Err(_)) => {}
            Err(_) => {
                abort.abort();
                tracing::warn!(file = %key, "a secondary copy did not answer in time; the reconcile loop adds it");
            }
        }
    }
    if stored.is_empty() {
        let err = primary_error
            .unwrap_or_else(|| ReplicaClientError::Unreachable("no replica to try".into()));
        return Err(GatewayError::from_upload(err, client_body_failed));
    }
    let sha256 = expected_sha256.unwrap_or(&stored[0].1.sha256).to_string();
    if stored[0].1.sha256 != sha256 {
        return Err(GatewayError::DigestMismatch(format!(
            "content has sha256 {}, expected {sha256}",
            stored[0].1.sha256
        )));
    }
    stored.retain(|(_, info)| info.sha256 == sha256);
    Ok(stored)
}

/// What [`forward`] saw.
struct Forwarded {
    /// The client's body broke off (a client fault, not a replica one).
    client_body_failed: bool,
    /// Secondaries (by position) that did not get the whole body.
    dropped: Vec<usize>,
}

/// Reads the client's body and sends each chunk to the primary channel and to every
/// secondary one. A secondary whose channel is closed, or full for [`SECONDARY_STALL`], is
/// dropped: its replica sees a short body, and its answer is not counted.
async fn forward(
    body: Body,
    primary: tokio::sync::mpsc::Sender<Chunk>,
    tees: Vec<tokio::sync::mpsc::Sender<Chunk>>,
    counter: prometheus_client::metrics::counter::Counter,
) -> Forwarded {
    let mut tees: Vec<(usize, tokio::sync::mpsc::Sender<Chunk>)> =
        tees.into_iter().enumerate().collect();
    let mut dropped = Vec::new();
    let mut primary = Some(primary);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(std::io::Error::other);
        if let Ok(bytes) = &chunk {
            counter.inc_by(bytes.len() as u64);
        }
        let failed = chunk.as_ref().err().map(std::string::ToString::to_string);
        let mut kept = Vec::with_capacity(tees.len());
        for (i, tee) in tees {
            let copy = match (&chunk, &failed) {
                (Ok(bytes), _) => Ok(bytes.clone()),
                (Err(_), message) => {
                    Err(std::io::Error::other(message.clone().unwrap_or_default()))
                }
            };
            if tee.send_timeout(copy, SECONDARY_STALL).await.is_ok() {
                kept.push((i, tee));
            } else {
                dropped.push(i);
            }
        }
        tees = kept;
        if let Some(tx) = &primary {
            if tx.send(chunk).await.is_err() {
                // The primary stopped reading: it refused the upload, or answered.
                primary = None;
            }
        }
        if failed.is_some() {
            return Forwarded {
                client_body_failed: true,
                dropped,
            };
        }
        if primary.is_none() && tees.is_empty() {
            drain(stream).await;
            break;
        }
    }
    Forwarded {
        client_body_failed: false,
        dropped,
    }
}

/// Headers describing the current content.
pub fn content_headers(entry: &FileRecord) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let etag = format!("\"{}\"", entry.sha256);
    headers.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex"));
    headers.insert(
        HEADER_SHA256,
        HeaderValue::from_str(&entry.sha256).expect("hex"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers
}

/// Largest read the gateway takes whole from a holder before answering.
const BUFFERED_READ: u64 = 256 * 1024;

/// Streams the current content (or the requested range) from the first holder that answers.
pub async fn download(
    gw: &GatewayState,
    entry: &FileRecord,
    range: Option<&str>,
) -> Result<Response, GatewayError> {
    let views = gw.replicas.current();
    let indexed: Vec<String> = gw
        .index
        .copies(&entry.key)
        .into_iter()
        .filter(|c| c.sha256 == entry.sha256)
        .map(|c| c.replica)
        .collect();
    // Replicas known to hold the content first (the index, then the last status), least
    // loaded first; then any other live replica, in case both are behind.
    let mut order: Vec<&ReplicaView> = views
        .replicas
        .iter()
        .filter(|v| v.health == Health::Live)
        .collect();
    order.sort_by_key(|v| {
        (
            gw.replicas.is_suspect(&v.id),
            !indexed.contains(&v.id),
            !entry.status.holders.contains(&v.id),
            v.active_transfers,
            v.id.clone(),
        )
    });
    for view in order {
        let response = match gw
            .client
            .get(&view.url, &entry.key, &entry.sha256, range)
            .await
        {
            Ok(response) => response,
            Err(err) => {
                if matches!(err, ReplicaClientError::Unreachable(_)) {
                    gw.replicas.suspect(&view.id);
                }
                tracing::debug!(replica = %view.id, %err, "holder could not serve");
                continue;
            }
        };
        let status =
            StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut headers = content_headers(entry);
        for name in [header::CONTENT_LENGTH, header::CONTENT_RANGE] {
            if let Some(value) = response.headers().get(name.as_str()) {
                if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
                    headers.insert(name, value);
                }
            }
        }
        let counter = gw.metrics.bytes_downloaded.clone();
        if response
            .content_length()
            .is_some_and(|n| n <= BUFFERED_READ)
        {
            // A small answer is read whole before anything is sent: one write to the client,
            // and a holder that fails mid-way is replaced by the next one.
            match response.bytes().await {
                Ok(bytes) => {
                    counter.inc_by(bytes.len() as u64);
                    let mut out = Response::new(Body::from(bytes));
                    *out.status_mut() = status;
                    *out.headers_mut() = headers;
                    return Ok(out);
                }
                Err(err) => {
                    tracing::debug!(replica = %view.id, %err, "holder failed while sending");
                    continue;
                }
            }
        }
        let stream = response.bytes_stream().map(move |chunk| {
            if let Ok(bytes) = &chunk {
                counter.inc_by(bytes.len() as u64);
            }
            chunk.map_err(std::io::Error::other)
        });
        let mut out = Response::new(Body::from_stream(stream));
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        return Ok(out);
    }
    Err(GatewayError::NoReplica(format!(
        "no verified copy of {} is reachable",
        entry.key
    )))
}
