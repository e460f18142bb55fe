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

/// Picks the replica that receives an upload: the placement's first choice among live,
/// undraining replicas with room for `size` bytes (when known).
pub fn upload_target(
    gw: &GatewayState,
    key: &FileKey,
    size: Option<u64>,
) -> Result<ReplicaView, GatewayError> {
    let views = gw.replicas.live_targets();
    let candidates: Vec<&ReplicaView> = views
        .iter()
        .filter(|v| v.free_bytes > 0 && size.is_none_or(|s| v.free_bytes > s))
        .collect();
    let ranked = plan::placement::rank_targets(&candidates, &[], 1, &key.namespace, &key.name);
    let Some(id) = ranked.first() else {
        return Err(if views.is_empty() {
            GatewayError::NoReplica("no live replica to store the file".into())
        } else {
            GatewayError::InsufficientStorage("no live replica has room for the file".into())
        });
    };
    Ok(views
        .into_iter()
        .find(|v| &v.id == id)
        .expect("ranked id comes from the views"))
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

/// Streams the request body to `target`, which verifies and fsyncs it before answering.
///
/// The body is forwarded through a small channel by a separate task. If the replica refuses
/// the upload part way, that task drains the rest of the client's body before this returns,
/// so the client reads the error answer.
pub async fn upload(
    gw: &GatewayState,
    target: &ReplicaView,
    key: &FileKey,
    expected_sha256: Option<&str>,
    content_length: Option<u64>,
    body: Body,
) -> Result<ObjectInfo, GatewayError> {
    let counter = gw.metrics.bytes_uploaded.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
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
    let result = gw
        .client
        .put(
            &target.url,
            key,
            expected_sha256,
            content_length,
            reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
        .await;
    let client_body_failed = forwarder.await.unwrap_or(false);
    let result = result.map_err(|err| GatewayError::from_upload(err, client_body_failed));
    let info = result?;
    if let Some(expected) = expected_sha256 {
        if info.sha256 != expected {
            return Err(GatewayError::DigestMismatch(format!(
                "content has sha256 {}, expected {expected}",
                info.sha256
            )));
        }
    }
    Ok(info)
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
