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
use crate::error::GatewayError;
use crate::plan::{self, Health, ReplicaView};
use crate::replica_client::ReplicaClientError;

/// Replicas an upload tries, in order, at most this many.
const UPLOAD_ATTEMPTS: usize = 3;

/// Ranks the replicas that may receive an upload: the placement's order among live,
/// undraining replicas with room for `size` bytes (when known), replicas suspected of being
/// down last. The first that accepts the connection gets the bytes.
pub fn upload_targets(
    gw: &GatewayState,
    key: &FileKey,
    size: Option<u64>,
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
    ranked.truncate(UPLOAD_ATTEMPTS);
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

/// Streams the request body to the first of `targets` that takes it; that replica verifies
/// and fsyncs it before answering. Returns the replica that holds the copy.
///
/// The body is forwarded through a small channel by a separate task. A replica that can't be
/// reached before any byte is read is marked suspect, and the next target gets the body
/// (writes stay available while a replica is down, rule 12). A replica that fails after
/// reading some of the body fails the upload: the client retries. If the replica refuses the
/// upload part way, the forwarding task drains the rest of the client's body before this
/// returns, so the client reads the error answer.
pub async fn upload(
    gw: &GatewayState,
    targets: &[ReplicaView],
    key: &FileKey,
    expected_sha256: Option<&str>,
    content_length: Option<u64>,
    body: Body,
) -> Result<(ReplicaView, ObjectInfo), GatewayError> {
    let counter = gw.metrics.bytes_uploaded.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(4);
    // Returns whether the client's body broke off (a client fault, not a replica one).
    let forwarder = tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(std::io::Error::other);
            if let Ok(bytes) = &chunk {
                counter.inc_by(bytes.len() as u64);
            }
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() {
                // The replica stopped reading: it refused the upload.
                drain(stream).await;
                return false;
            }
            if failed {
                return true;
            }
        }
        false
    });
    let shared = std::sync::Arc::new(std::sync::Mutex::new(rx));
    let mut outcome = Err(ReplicaClientError::Unreachable("no replica to try".into()));
    let mut holder = None;
    for target in targets {
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
    // No attempt reads anymore: the forwarder drains what the client still sends.
    drop(shared);
    let client_body_failed = forwarder.await.unwrap_or(false);
    let info = outcome.map_err(|err| GatewayError::from_upload(err, client_body_failed))?;
    if let Some(expected) = expected_sha256 {
        if info.sha256 != expected {
            return Err(GatewayError::DigestMismatch(format!(
                "content has sha256 {}, expected {expected}",
                info.sha256
            )));
        }
    }
    Ok((holder.expect("a successful attempt has a target"), info))
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
