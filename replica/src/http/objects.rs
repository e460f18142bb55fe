//! `/v1/objects/...`: PUT, GET, HEAD, DELETE and pull of one copy.

use std::io::SeekFrom;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use deposito_api::replica::{FetchRequest, ObjectInfo, ObjectState, PullRequest};
use deposito_api::{is_sha256_hex, ErrorBody, FileKey, HEADER_SHA256};
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use tokio::io::AsyncSeekExt;
use tracing::instrument;
use utoipa::IntoParams;

use super::body::{FileBody, Verify};
use super::verified::{self, Check};
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::range::{parse_range, RangeSpec};
use crate::storage::{ObjKey, Written};

/// The path of one copy, `/v1/objects/{ns}/{name}/{sha256}`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CopyPath {
    /// namespace
    ns: String,
    /// file name
    name: String,
    /// content sha256
    sha256: String,
}

impl CopyPath {
    /// The copy's key, checking the names and the digest.
    fn key(&self) -> Result<ObjKey> {
        ObjKey::new(&self.ns, &self.name, &self.sha256)
    }
}

/// Most bytes of a refused upload read and discarded before answering.
const DRAIN_LIMIT: u64 = 64 << 20;
/// Longest time spent discarding a refused upload.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

fn written_response(w: Written) -> Response {
    let status = if w.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, Json(w.info)).into_response()
}

/// The expected digest of an upload, from `x-deposito-sha256`.
fn expected_digest(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(v) = headers.get(HEADER_SHA256) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("").to_ascii_lowercase();
    if !is_sha256_hex(&s) {
        return Err(Error::InvalidDigest(
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        ));
    }
    Ok(Some(s))
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>> {
    match headers.get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .map(Some)
            .ok_or_else(|| Error::BadRequest("invalid Content-Length".to_string())),
    }
}

/// Upload a copy.
#[utoipa::path(
    put,
    path = "/v1/objects/{ns}/{name}",
    params(
        ("ns" = String, Path, description = "namespace (DNS label)"),
        ("name" = String, Path, description = "file name"),
        ("x-deposito-sha256" = Option<String>, Header, pattern = r"^[0-9a-fA-F]{64}(?![\s\S])",
            description = "expected sha256 (hex); the upload fails with `digest_mismatch` otherwise"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "stored", body = ObjectInfo),
        (status = 200, description = "this exact copy was already stored", body = ObjectInfo),
        (status = 400, description = "invalid_name, invalid_digest, digest_mismatch or incomplete_body", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 507, description = "insufficient_storage", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[instrument(skip(app, headers, body))]
pub async fn put_object(
    State(app): State<AppState>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let key = FileKey::new(&ns, &name)?;
    let expected = expected_digest(&headers)?;
    let len = content_length(&headers)?;
    let _transfer = app.transfer();
    let metrics = &app.metrics;
    let mut data = body.into_data_stream();
    if let Some(sha) = &expected {
        let okey = ObjKey::from_file_key(key.clone(), sha)?;
        if app.store.get(&okey).map(|i| i.state) == Some(ObjectState::Trashed) {
            return put_from_trash(&app, &okey, len, &mut data).await;
        }
    }
    let stream = (&mut data)
        .map_err(|e| Error::IncompleteBody(e.to_string()))
        .inspect_ok(|b| {
            metrics.bytes_received.inc_by(b.len() as u64);
        });
    let res = app
        .store
        .write(&key, expected.as_deref(), len, stream)
        .await;
    if res.is_err() {
        drain(&mut data).await;
    }
    Ok(written_response(res?))
}

/// A deposit of a copy this replica holds in its trash: the trashed copy is restored (hashed,
/// then renamed back: nothing is written), and the body is read and hashed without being
/// stored, so that a body that is not the content it claims is refused as any other would be
/// (`digest_mismatch`, `incomplete_body`). If the trashed bytes changed (quarantined on
/// restore), the body is written as a normal upload instead.
async fn put_from_trash(
    app: &AppState,
    key: &ObjKey,
    len: Option<u64>,
    data: &mut axum::body::BodyDataStream,
) -> Result<Response> {
    let restored = match app.store.restore(key).await {
        Ok(written) => written,
        Err(Error::Corrupt) => {
            let file_key = FileKey::new(&key.namespace, &key.name)?;
            let stream = data.map_err(|e| Error::IncompleteBody(e.to_string()));
            let res = app
                .store
                .write(&file_key, Some(&key.sha256), len, stream)
                .await;
            if res.is_err() {
                drain(data).await;
            }
            return Ok(written_response(res?));
        }
        Err(e) => {
            drain(data).await;
            return Err(e);
        }
    };
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut received: u64 = 0;
    while let Some(chunk) = data.next().await {
        let chunk = chunk.map_err(|e| Error::IncompleteBody(e.to_string()))?;
        app.metrics.bytes_received.inc_by(chunk.len() as u64);
        received += chunk.len() as u64;
        if len.is_some_and(|l| received > l) {
            return Err(Error::BadRequest(
                "body is longer than its Content-Length".to_string(),
            ));
        }
        sha2::Digest::update(&mut hasher, &chunk);
    }
    if let Some(l) = len.filter(|l| *l != received) {
        return Err(Error::IncompleteBody(format!(
            "received {received} of {l} bytes"
        )));
    }
    let actual = hex::encode(sha2::Digest::finalize(hasher));
    if actual != key.sha256 {
        return Err(Error::DigestMismatch {
            expected: key.sha256.clone(),
            actual,
        });
    }
    Ok(written_response(restored))
}

/// Reads and discards what is left of a refused upload (bounded in bytes and time), so that
/// the client, still sending, reads the error instead of a connection reset.
pub(crate) async fn drain(data: &mut axum::body::BodyDataStream) {
    let mut left: u64 = DRAIN_LIMIT;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(chunk)) = data.next().await {
            left = left.saturating_sub(chunk.len() as u64);
            if left == 0 {
                break;
            }
        }
    })
    .await;
}

/// Looks up a servable copy.
fn ready_copy(app: &AppState, path: &CopyPath) -> Result<(ObjKey, ObjectInfo)> {
    let key = path.key()?;
    let info = app.store.get(&key).ok_or(Error::NotFound)?;
    match info.state {
        ObjectState::Ready => Ok((key, info)),
        ObjectState::Corrupt => Err(Error::Corrupt),
        ObjectState::Trashed => Err(Error::NotFound),
    }
}

fn object_headers(resp: &mut Response, info: &ObjectInfo) {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", info.sha256)) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&info.sha256) {
        h.insert(HEADER_SHA256, v);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
}

/// Download a copy (Range supported). Every chunk is verified before it is sent: a copy that
/// fails is never served (see `verified`).
#[utoipa::path(
    get,
    path = "/v1/objects/{ns}/{name}/{sha256}",
    params(
        CopyPath,
        ("Range" = Option<String>, Header, description = "bytes=a-b, bytes=a- or bytes=-n"),
    ),
    responses(
        (status = 200, description = "the bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "the requested range", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 404, description = "not_found, or corrupt: quarantined copies are never served, and a copy whose first chunk read fails verification is quarantined and answered `corrupt` (a later chunk that fails cuts the response before its first byte)", body = ErrorBody),
        (status = 416, description = "range_not_satisfiable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[instrument(level = "debug", skip(app, headers))]
pub async fn get_object(
    State(app): State<AppState>,
    Path(path): Path<CopyPath>,
    headers: HeaderMap,
) -> Result<Response> {
    let (key, info) = ready_copy(&app, &path)?;
    let path = app.store.data_path(&key, ObjectState::Ready);
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, len) = match parse_range(range, info.size) {
        RangeSpec::Full => (StatusCode::OK, 0, info.size),
        spec @ RangeSpec::Partial { start, .. } => (
            StatusCode::PARTIAL_CONTENT,
            start,
            spec.selected_len().unwrap_or(0),
        ),
        RangeSpec::Unsatisfiable => return Err(Error::RangeNotSatisfiable { size: info.size }),
    };
    let digests = app.store.chunk_digests(&key, info.size).await;
    let body = if let Some(check) = Check::for_copy(info.size, digests) {
        let read = verified::Read {
            key,
            size: info.size,
            stored_at: info.stored_at,
            start,
            len,
        };
        verified::body(&app, &path, check, read).await?
    } else {
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(Error::missing_is_not_found)?;
        // A long copy committed before chunk digests were recorded: full reads verified as
        // they stream, the last piece held back until the digest is known.
        let verify = (status == StatusCode::OK).then(|| Verify {
            key: key.clone(),
            size: info.size,
            stored_at: info.stored_at,
        });
        if start > 0 {
            file.seek(SeekFrom::Start(start)).await?;
        }
        Body::from_stream(FileBody::new(app.clone(), file, len, verify))
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    object_headers(&mut resp, &info);
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if status == StatusCode::PARTIAL_CONTENT {
        let cr = format!("bytes {}-{}/{}", start, start + len - 1, info.size);
        if let Ok(v) = HeaderValue::from_str(&cr) {
            resp.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(resp)
}

/// Headers of a copy, without the bytes.
#[utoipa::path(
    head,
    path = "/v1/objects/{ns}/{name}/{sha256}",
    params(CopyPath),
    responses(
        (status = 200, description = "present and ready"),
        (status = 404, description = "absent or corrupt"),
    ),
    security(("bearer" = []))
)]
#[instrument(level = "debug", skip(app))]
pub async fn head_object(
    State(app): State<AppState>,
    Path(path): Path<CopyPath>,
) -> Result<Response> {
    let (_, info) = ready_copy(&app, &path)?;
    let mut resp = Response::new(Body::empty());
    object_headers(&mut resp, &info);
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(info.size));
    Ok(resp)
}

/// Remove a copy (ready, quarantined or trashed): a deliberate deletion, without the trash.
#[utoipa::path(
    delete,
    path = "/v1/objects/{ns}/{name}/{sha256}",
    params(CopyPath),
    responses(
        (status = 204, description = "removed"),
        (status = 404, description = "not_found", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[instrument(skip(app))]
pub async fn delete_object(
    State(app): State<AppState>,
    Path(path): Path<CopyPath>,
) -> Result<StatusCode> {
    let key = path.key()?;
    app.store.delete(&key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Move a ready copy to the trash (what the operator does with a copy no file claims). It
/// stays on the same volume, listed in the inventory as `trashed` and never served, until
/// the trash retention ends or a restore brings it back.
#[utoipa::path(
    post,
    path = "/v1/objects/{ns}/{name}/{sha256}/trash",
    params(CopyPath),
    responses(
        (status = 200, description = "in the trash", body = ObjectInfo),
        (status = 404, description = "not_found, or corrupt (a quarantined copy is deleted, not trashed)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[instrument(skip(app))]
pub async fn trash_object(
    State(app): State<AppState>,
    Path(path): Path<CopyPath>,
) -> Result<Json<ObjectInfo>> {
    let key = path.key()?;
    Ok(Json(app.store.trash(&key).await?))
}

/// Bring a trashed copy back: its bytes are hashed again, then it is renamed into place (no
/// byte is copied).
#[utoipa::path(
    post,
    path = "/v1/objects/{ns}/{name}/{sha256}/restore",
    params(CopyPath),
    responses(
        (status = 201, description = "restored from the trash", body = ObjectInfo),
        (status = 200, description = "already a ready copy", body = ObjectInfo),
        (status = 404, description = "not_found (not in the trash), or corrupt: the trashed bytes no longer match their sha256 and are quarantined", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[instrument(skip(app))]
pub async fn restore_object(
    State(app): State<AppState>,
    Path(path): Path<CopyPath>,
) -> Result<Response> {
    let key = path.key()?;
    Ok(written_response(app.store.restore(&key).await?))
}

/// Fetch a copy from a peer replica, verify it and commit it.
#[utoipa::path(
    post,
    path = "/v1/objects/{ns}/{name}/{sha256}/pull",
    params(CopyPath),
    request_body = PullRequest,
    responses(
        (status = 201, description = "pulled and committed", body = ObjectInfo),
        (status = 200, description = "already held", body = ObjectInfo),
        (status = 400, description = "digest_mismatch or bad request", body = ErrorBody),
        (status = 502, description = "pull_failed", body = ErrorBody),
        (status = 507, description = "insufficient_storage", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[instrument(skip(app, req))]
pub async fn pull_object(
    State(app): State<AppState>,
    Path(path): Path<CopyPath>,
    req: Result<Json<PullRequest>, JsonRejection>,
) -> Result<Response> {
    let key = path.key()?;
    let Json(req) = req.map_err(|e| Error::BadRequest(e.body_text()))?;
    let w = crate::pull::pull(&app, &key, &req.source).await?;
    Ok(written_response(w))
}

/// Fetch a `url` source into a verified copy (used for StoredFiles with `source.url`).
#[utoipa::path(
    post,
    path = "/v1/objects/{ns}/{name}/fetch",
    params(
        ("ns" = String, Path, description = "namespace (DNS label)"),
        ("name" = String, Path, description = "file name"),
    ),
    request_body = FetchRequest,
    responses(
        (status = 201, description = "fetched, verified and committed", body = ObjectInfo),
        (status = 200, description = "this exact copy was already stored", body = ObjectInfo),
        (status = 400, description = "bad_request (not an http(s) url), invalid_digest or digest_mismatch", body = ErrorBody),
        (status = 401, description = "unauthorized", body = ErrorBody),
        (status = 403, description = "fetch_refused (`fetch refused: address not allowed`): the url's host is or resolves to an address that is not globally reachable (private, loopback, link-local, documentation, multicast…) and not in `--fetch-allow-cidr`/`--fetch-allow-host`", body = ErrorBody),
        (status = 502, description = "fetch_failed with a fixed short reason: `host does not resolve`, `connection refused`, `host unreachable`, `cannot connect`, `no response`, `HTTP <status>` (redirects are not followed), `timed out`, `too slow`, `too large`, `cut short`; nothing is kept", body = ErrorBody),
        (status = 507, description = "insufficient_storage", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
#[instrument(skip(app, req))]
pub async fn fetch_object(
    State(app): State<AppState>,
    Path((ns, name)): Path<(String, String)>,
    req: Result<Json<FetchRequest>, JsonRejection>,
) -> Result<Response> {
    let key = FileKey::new(&ns, &name)?;
    let Json(req) = req.map_err(|e| Error::BadRequest(e.body_text()))?;
    let w = crate::fetch::fetch(&app, &key, &req).await?;
    Ok(written_response(w))
}
