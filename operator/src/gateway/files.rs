//! `/v1/files/...`: deposit, retrieve, inspect, re-replicate, delete, list, wait.

use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use deposito_api::gateway::{Ack, FileList, FileStatus, PatchFile, WaitFor};
use deposito_api::lifecycle::{format_time, parse_time, Lifecycle};
use deposito_api::names::validate_namespace;
use deposito_api::openapi::MAX_REPLICAS;
use deposito_api::{
    is_sha256_hex, FileKey, HEADER_LIFECYCLE, HEADER_PHASE, HEADER_READY_REPLICAS, HEADER_REPLICAS,
    HEADER_RETAIN_UNTIL, HEADER_SHA256,
};
use serde::Deserialize;
use tracing::instrument;

use super::deposit::{self, Put};
use super::trailer::{self, Framing};
use super::{transfer, GatewayState};
use crate::engine::{now_ms, AgingChange, CatalogError, ContentAttrs, FileRecord};
use crate::gateway::error::GatewayError;

/// Longest long poll.
const MAX_WAIT: Duration = Duration::from_secs(60);

type Ctx = State<GatewayState>;
type FilePath = Result<Path<(String, String)>, PathRejection>;

fn file_key(path: FilePath) -> Result<FileKey, GatewayError> {
    let Path((namespace, name)) = path.map_err(|e| GatewayError::BadRequest(e.body_text()))?;
    Ok(FileKey::new(&namespace, &name)?)
}

/// Parses a replication level: an integer from 1 to [`MAX_REPLICAS`] (default 1).
pub fn parse_replicas(raw: Option<&str>) -> Result<u32, GatewayError> {
    let Some(raw) = raw else { return Ok(1) };
    match raw.parse::<u32>() {
        Ok(n) => check_replicas(n),
        Err(_) => Err(GatewayError::InvalidReplicas(format!(
            "replicas must be an integer from 1 to {MAX_REPLICAS}, got '{raw}'"
        ))),
    }
}

/// A replication level from 1 to [`MAX_REPLICAS`].
fn check_replicas(n: u32) -> Result<u32, GatewayError> {
    if (1..=MAX_REPLICAS).contains(&n) {
        Ok(n)
    } else {
        Err(GatewayError::InvalidReplicas(format!(
            "replicas must be from 1 to {MAX_REPLICAS}, got {n}"
        )))
    }
}

/// The undeleted file named by `key` (the user's namespace and file name).
async fn load(gw: &GatewayState, key: &FileKey) -> Result<FileRecord, GatewayError> {
    match gw.files.lookup(&key.namespace, &key.name).await? {
        Some(entry) if !entry.deleting => Ok(entry),
        _ => Err(GatewayError::NotFound(format!("file {key}"))),
    }
}

/// Query of a deposit.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PutQuery {
    /// Replication level wanted (default 1).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 512)]
    replicas: Option<String>,
    /// Expected sha256, hex (alternative to the `x-deposito-sha256` header).
    #[param(pattern = r"^[0-9a-fA-F]{64}(?![\s\S])")]
    sha256: Option<String>,
    /// When to acknowledge: `all` (default) once the bytes, sent to the N chosen replicas as
    /// they arrive, are verified and fsync'd on each (at least one when some fail mid-way);
    /// `one` once the first copy is, the reconcile loop adding the others.
    #[param(value_type = Option<String>, pattern = r"^(one|all)(?![\s\S])")]
    ack: Option<String>,
}

/// Deposits a file: streams the body to N replicas at once (`ack=all`, the default) or to one
/// (`ack=one`), and acknowledges once the copies are verified and fsync'd and the file is
/// recorded in the catalog. The answer's `holders` and `readyReplicas` name the copies that
/// are durable at that moment; the reconcile loop adds any missing ones.
#[utoipa::path(put, path = "/v1/files/{namespace}/{name}",
    params(PutQuery,
        ("x-deposito-sha256" = Option<String>, Header, pattern = r"^[0-9a-fA-F]{64}(?![\s\S])",
            description = "expected sha256, hex; the deposit fails with `digest_mismatch` otherwise. \
            With `Trailer: x-deposito-sha256` and a chunked body, it may come after the bytes \
            as a trailer instead (the client hashes as it sends): checked against the stored \
            copies' digest before the content is recorded"),
        ("x-deposito-content-length" = Option<u64>, Header,
            description = "the exact length of a body sent without `Content-Length` (chunked, \
            to carry the trailer); a longer or shorter body is `incomplete_body`"),
        ("x-deposito-lifecycle" = Option<String>, Header,
            description = "the file's lifecycle, e.g. `3,1@7d,expire@90d`: N from the start (in \
            place of `replicas`), `N@AGE` from that age, `expire@AGE` deleted then; ages in s, m, \
            h or d, increasing, counted from this deposit's acknowledgement; `none` for none"),
        ("x-deposito-retain-until" = Option<String>, Header,
            description = "a retention lock (RFC 3339 or a date): until then the file can't be \
            deleted, replaced or lowered")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, description = "stored, fsync'd and recorded; `holders` are the durable copies", body = FileStatus),
        (status = 400, description = "`invalid_name`, `invalid_replicas`, `invalid_digest`, \
            `digest_mismatch`, `incomplete_body`, `invalid_lifecycle`, or `bad_request` (an `ack` \
            other than `one` or `all`, an `x-deposito-content-length` that is not a number or \
            differs from `Content-Length`)", body = deposito_api::ErrorBody),
        (status = 403, description = "the file in place is retained (`retained`)", body = deposito_api::ErrorBody),
        (status = 502, description = "the replica failed mid-transfer (`replica_error`)", body = deposito_api::ErrorBody),
        (status = 507, description = "no replica has room (`insufficient_storage`)", body = deposito_api::ErrorBody)))]
#[instrument(skip(ctx, query, headers, body))]
pub async fn put_file(
    State(ctx): Ctx,
    path: FilePath,
    query: Result<Query<PutQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<FileStatus>), GatewayError> {
    match parse_put(path, query, &headers) {
        Ok((mut put, framing)) => {
            let (body, trailer) = trailer::wrap(body, &framing);
            put.trailer = trailer;
            deposit::store(&ctx, put, body)
                .await
                .map(|status| (StatusCode::CREATED, Json(status)))
        }
        Err(err) => {
            // Answer only after reading the body: a client still sending would otherwise
            // get a reset connection instead of this error.
            transfer::drain(body.into_data_stream()).await;
            Err(err)
        }
    }
}

/// Reads a deposit's path, query and headers.
fn parse_put(
    path: FilePath,
    query: Result<Query<PutQuery>, QueryRejection>,
    headers: &HeaderMap,
) -> Result<(Put, Framing), GatewayError> {
    let key = file_key(path)?;
    let Query(query) = query.map_err(|e| GatewayError::BadRequest(e.body_text()))?;
    let replicas = parse_replicas(query.replicas.as_deref())?;
    let expected = expected_digest(query.sha256.as_deref(), headers.get(HEADER_SHA256))?;
    let framing = Framing::of(headers)?;
    let ack = match query.ack.as_deref() {
        None => Ack::default(),
        Some(value) => Ack::parse(value).ok_or_else(|| {
            GatewayError::BadRequest(format!("ack must be `one` or `all`, not '{value}'"))
        })?,
    };
    let (lifecycle, retain_until_ms) = aging_headers(headers)?;
    // The lifecycle's own starting level replaces `replicas`.
    let replicas = lifecycle
        .as_ref()
        .map_or(replicas, |l| l.starting(replicas));
    let put = Put {
        key,
        replicas,
        expected,
        content_length: framing.length,
        ack,
        attrs: ContentAttrs::default(),
        finish: None,
        trailer: None,
        lifecycle,
        retain_until_ms,
    };
    Ok((put, framing))
}

/// A deposit's `x-deposito-lifecycle` and `x-deposito-retain-until`, checked together (an
/// expiry may not fall before the lock's end).
fn aging_headers(headers: &HeaderMap) -> Result<(Option<Lifecycle>, Option<u64>), GatewayError> {
    let text = |name: &str| -> Result<Option<String>, GatewayError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str().map(str::to_string).map_err(|_| {
                    GatewayError::InvalidLifecycle(format!("{name} is not ASCII text"))
                })
            })
            .transpose()
    };
    let lifecycle = text(HEADER_LIFECYCLE)?
        .map(|spec| parse_lifecycle(&spec))
        .transpose()?
        .flatten();
    let retain_until_ms = text(HEADER_RETAIN_UNTIL)?
        .map(|t| parse_retain_until(&t))
        .transpose()?;
    if let (Some(l), Some(until)) = (&lifecycle, retain_until_ms) {
        if l.expires_ms(now_ms())
            .is_some_and(|expires| expires < until)
        {
            return Err(GatewayError::InvalidLifecycle(format!(
                "the lifecycle '{l}' expires the file before its retention lock ends ({})",
                format_time(until)
            )));
        }
    }
    Ok((lifecycle, retain_until_ms))
}

/// A lifecycle spec; `none` is no lifecycle.
pub(super) fn parse_lifecycle(spec: &str) -> Result<Option<Lifecycle>, GatewayError> {
    if spec.trim() == "none" {
        return Ok(None);
    }
    Lifecycle::parse(spec)
        .map(Some)
        .map_err(|e| GatewayError::InvalidLifecycle(e.to_string()))
}

/// A retention lock's end: RFC 3339 or a date.
fn parse_retain_until(text: &str) -> Result<u64, GatewayError> {
    parse_time(text).map_err(|why| GatewayError::InvalidLifecycle(format!("retainUntil: {why}")))
}

/// The digest a deposit must match: `?sha256=` and/or `x-deposito-sha256`, each a hex sha256
/// when present, and the same when both are (lowercased).
fn expected_digest(
    query: Option<&str>,
    header: Option<&HeaderValue>,
) -> Result<Option<String>, GatewayError> {
    let check = |given: &str| {
        let sha = given.to_ascii_lowercase();
        if is_sha256_hex(&sha) {
            Ok(sha)
        } else {
            Err(GatewayError::InvalidDigest(format!(
                "'{given}' is not a hex sha256 digest"
            )))
        }
    };
    let from_query = query.map(check).transpose()?;
    let from_header = header
        .map(|v| check(&String::from_utf8_lossy(v.as_bytes())))
        .transpose()?;
    match (from_query, from_header) {
        (Some(q), Some(h)) if q != h => Err(GatewayError::InvalidDigest(format!(
            "?sha256={q} and x-deposito-sha256: {h} differ"
        ))),
        (q, h) => Ok(q.or(h)),
    }
}

/// Streams the current content from a verified holder. Supports `Range` and `If-None-Match`.
#[utoipa::path(get, path = "/v1/files/{namespace}/{name}",
    params(
        ("Range" = Option<String>, Header, description = "`bytes=a-b`, `bytes=a-` or `bytes=-n`; \
            a header that is not one range of bytes is ignored (the whole file is sent)"),
        ("If-None-Match" = Option<String>, Header, description = "ETags (the quoted sha256) or `*`")),
    responses((status = 200, description = "the content", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "the requested range", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 304, description = "the content has the ETag given in `If-None-Match`"),
        (status = 404, description = "no such file (`not_found`)", body = deposito_api::ErrorBody),
        (status = 416, description = "the range is outside the file (`range_not_satisfiable`)", body = deposito_api::ErrorBody),
        (status = 502, description = "no holder could send it (`replica_error`)", body = deposito_api::ErrorBody)))]
#[instrument(level = "debug", skip(ctx, headers))]
pub async fn get_file(
    State(ctx): Ctx,
    path: FilePath,
    headers: HeaderMap,
) -> Result<Response, GatewayError> {
    let key = file_key(path)?;
    let entry = load(&ctx, &key).await?;
    let etag = format!("\"{}\"", entry.sha256);
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    if if_none_match.is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*")) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        *response.headers_mut() = transfer::content_headers(&entry);
        return Ok(response);
    }
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    transfer::download(&ctx, &entry, range).await
}

/// The file's metadata as headers.
#[utoipa::path(head, path = "/v1/files/{namespace}/{name}",
    responses((status = 200, description = "the file's metadata as headers: Content-Length, ETag, \
            x-deposito-sha256, x-deposito-replicas, x-deposito-ready-replicas, x-deposito-phase"),
        (status = 404, description = "no such file")))]
pub async fn head_file(State(ctx): Ctx, path: FilePath) -> Result<Response, GatewayError> {
    let key = file_key(path)?;
    let entry = load(&ctx, &key).await?;
    let status = entry.to_file_status();
    let mut headers = transfer::content_headers(&entry);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(entry.size));
    headers.insert(HEADER_REPLICAS, HeaderValue::from(status.replicas));
    headers.insert(
        HEADER_READY_REPLICAS,
        HeaderValue::from(status.ready_replicas),
    );
    headers.insert(
        HEADER_PHASE,
        HeaderValue::from_static(status.phase.as_str()),
    );
    Ok((headers, Body::empty()).into_response())
}

/// Changes the replication level.
#[utoipa::path(patch, path = "/v1/files/{namespace}/{name}", request_body = PatchFile,
    responses((status = 200, description = "the new status", body = FileStatus),
        (status = 400, description = "`invalid_name`, `invalid_replicas`, `invalid_lifecycle` (a \
            lifecycle or date that breaks the rules, a retention lock shortened, an expiry before \
            the lock's end), or a body that is not a `PatchFile` naming at least one field, in JSON \
            with `Content-Type: application/json` (`bad_request`)", body = deposito_api::ErrorBody),
        (status = 403, description = "the retention lock forbids lowering the level in force \
            before its date (`retained`)", body = deposito_api::ErrorBody),
        (status = 404, description = "no such file (`not_found`)", body = deposito_api::ErrorBody)))]
#[instrument(skip(ctx, body))]
pub async fn patch_file(
    State(ctx): Ctx,
    path: FilePath,
    body: Result<Json<PatchFile>, JsonRejection>,
) -> Result<Json<FileStatus>, GatewayError> {
    let key = file_key(path)?;
    let Json(patch) = body.map_err(|e| GatewayError::BadRequest(e.body_text()))?;
    let change = AgingChange {
        replicas: patch.replicas.map(check_replicas).transpose()?,
        lifecycle: patch
            .lifecycle
            .as_deref()
            .map(parse_lifecycle)
            .transpose()?,
        retain_until_ms: patch
            .retain_until
            .as_deref()
            .map(parse_retain_until)
            .transpose()?,
    };
    if change.is_empty() {
        return Err(GatewayError::BadRequest(
            "a PatchFile names at least one of replicas, lifecycle and retainUntil".into(),
        ));
    }
    let entry = load(&ctx, &key).await?;
    let entry = ctx
        .files
        .set_aging(&entry.key, change)
        .await
        .map_err(lifecycle_error)?
        .ok_or_else(|| GatewayError::NotFound(format!("file {key}")))?;
    Ok(Json(entry.to_file_status()))
}

/// A lifecycle the catalog finds invalid is the client's `invalid_lifecycle`.
pub(super) fn lifecycle_error(err: CatalogError) -> GatewayError {
    match err {
        CatalogError::Invalid(why) => GatewayError::InvalidLifecycle(why),
        other => other.into(),
    }
}

/// Requests deletion; copies are removed by the reconcile loop, then the entry goes.
#[utoipa::path(delete, path = "/v1/files/{namespace}/{name}",
    responses((status = 202, description = "deletion accepted; the copies go, then the entry", body = FileStatus),
        (status = 403, description = "the file is retained until a later date (`retained`)", body = deposito_api::ErrorBody),
        (status = 404, description = "no such file (`not_found`)", body = deposito_api::ErrorBody)))]
#[instrument(skip(ctx))]
pub async fn delete_file(
    State(ctx): Ctx,
    path: FilePath,
) -> Result<(StatusCode, Json<FileStatus>), GatewayError> {
    let key = file_key(path)?;
    let entry = load(&ctx, &key).await?;
    let entry = ctx
        .files
        .mark_deleting(&entry.key)
        .await?
        .ok_or_else(|| GatewayError::NotFound(format!("file {key}")))?;
    Ok((StatusCode::ACCEPTED, Json(entry.to_file_status())))
}

/// Default and largest page of a listing.
pub const DEFAULT_LIST_PAGE: usize = 1000;
pub const MAX_LIST_PAGE: usize = 10_000;

/// Query of a listing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Most files in the page (default 1000, at most 10000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
    /// The `next` of the previous page.
    after: Option<String>,
}

/// Lists a namespace's files with their status, one page at a time, sorted by name.
#[utoipa::path(get, path = "/v1/files/{namespace}", params(ListQuery),
    responses((status = 200, description = "one page, sorted by name", body = FileList),
        (status = 400, description = "`invalid_name`, or `limit` out of range (`bad_request`)", body = deposito_api::ErrorBody)))]
pub async fn list_files(
    State(ctx): Ctx,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<FileList>, GatewayError> {
    let Path(namespace) = path.map_err(|e| GatewayError::BadRequest(e.body_text()))?;
    validate_namespace(&namespace)?;
    let Query(query) = query.map_err(|e| GatewayError::BadRequest(e.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIST_PAGE);
    if limit == 0 || limit > MAX_LIST_PAGE {
        return Err(GatewayError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIST_PAGE}"
        )));
    }
    let (entries, more) = ctx
        .files
        .list(&namespace, query.after.as_deref(), limit)
        .await?;
    let next = more
        .then(|| entries.last().map(|e| e.file_name.clone()))
        .flatten();
    Ok(Json(FileList {
        items: entries
            .iter()
            .map(super::super::engine::model::FileRecord::to_file_status)
            .collect(),
        next,
    }))
}

/// Query of the status long poll.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    /// Condition to wait for; without it the status is returned at once.
    wait: Option<WaitFor>,
    /// Seconds to wait at most (default 30, at most 60).
    #[param(minimum = 0, maximum = 60)]
    timeout: Option<u64>,
}

/// The file's status; with `wait`, a long poll until the condition holds or time runs out.
#[utoipa::path(get, path = "/v1/files/{namespace}/{name}/status", params(StatusQuery),
    responses((status = 200, description = "the status (when `wait` is given: once it holds, or \
            when `timeout` runs out)", body = FileStatus),
        (status = 400, description = "`invalid_name`, or a bad `wait` or `timeout` (`bad_request`)", body = deposito_api::ErrorBody),
        (status = 404, description = "no such file, or (with `wait=deleted`) it is gone", body = deposito_api::ErrorBody)))]
pub async fn file_status(
    State(ctx): Ctx,
    path: FilePath,
    query: Result<Query<StatusQuery>, QueryRejection>,
) -> Result<Json<FileStatus>, GatewayError> {
    let key = file_key(path)?;
    let Query(query) = query.map_err(|e| GatewayError::BadRequest(e.body_text()))?;
    let timeout = Duration::from_secs(query.timeout.unwrap_or(30));
    if timeout > MAX_WAIT {
        return Err(GatewayError::BadRequest(format!(
            "timeout must be at most {} seconds",
            MAX_WAIT.as_secs()
        )));
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let storage = ctx.files.storage_key(&key.namespace, &key.name).await?;
    let mut changes = ctx.catalog.changes().watch(&storage);
    loop {
        changes.mark_seen();
        let entry = ctx.files.lookup(&key.namespace, &key.name).await?;
        let Some(entry) = entry else {
            return Err(GatewayError::NotFound(format!("file {key}")));
        };
        let status = entry.to_file_status();
        let done = match query.wait {
            None => true,
            Some(WaitFor::Converged) => status.is_converged(),
            Some(WaitFor::Deleted) => false,
        };
        if done {
            return Ok(Json(status));
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep_until(deadline) => return Ok(Json(status)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The literals in this file's attributes are the shared constants, and every file
    /// route declares its path parameters with the name rules.
    #[test]
    fn openapi_declares_the_rules_of_every_parameter() {
        use deposito_api::openapi::{
            FILE_NAME_PATTERN, MAX_REPLICAS, NAMESPACE_PATTERN, SHA256_ANY_CASE_PATTERN,
        };
        use utoipa::OpenApi;
        let doc = serde_json::to_value(super::super::ApiDoc::openapi()).unwrap();
        let put = doc["paths"]["/v1/files/{namespace}/{name}"]["put"]["parameters"]
            .as_array()
            .unwrap()
            .clone();
        let param = |name: &str| put.iter().find(|p| p["name"] == name).unwrap().clone();
        assert_eq!(param("namespace")["schema"]["pattern"], NAMESPACE_PATTERN);
        assert_eq!(param("namespace")["in"], "path");
        assert_eq!(param("name")["schema"]["pattern"], FILE_NAME_PATTERN);
        assert_eq!(param("sha256")["in"], "query");
        assert_eq!(
            param("sha256")["schema"]["pattern"],
            SHA256_ANY_CASE_PATTERN
        );
        assert_eq!(
            param("x-deposito-sha256")["schema"]["pattern"],
            SHA256_ANY_CASE_PATTERN
        );
        assert_eq!(param("replicas")["schema"]["maximum"], MAX_REPLICAS);
        let patch = &doc["components"]["schemas"]["PatchFile"]["properties"]["replicas"];
        assert_eq!(patch["maximum"], MAX_REPLICAS);
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for code in ["401", "403", "503"] {
                    assert!(op["responses"][code].is_object(), "{method} {path} {code}");
                }
                if path.contains("{namespace}") {
                    assert!(op["responses"]["400"].is_object(), "{method} {path} 400");
                }
            }
        }
    }

    #[test]
    fn expected_digest_table() {
        let sha = "ab".repeat(32);
        let upper = HeaderValue::from_str(&sha.to_uppercase()).unwrap();
        let bad = HeaderValue::from_static("l!~/m");
        assert_eq!(expected_digest(None, None).unwrap(), None);
        assert_eq!(
            expected_digest(Some(&sha), None).unwrap(),
            Some(sha.clone())
        );
        assert_eq!(
            expected_digest(None, Some(&upper)).unwrap(),
            Some(sha.clone())
        );
        assert_eq!(
            expected_digest(Some(&sha), Some(&upper)).unwrap(),
            Some(sha.clone())
        );
        let other = HeaderValue::from_str(&"cd".repeat(32)).unwrap();
        for (query, header) in [
            (Some(sha.as_str()), Some(&bad)),
            (None, Some(&bad)),
            (Some("xyz"), None),
            (Some(sha.as_str()), Some(&other)),
        ] {
            assert!(
                matches!(
                    expected_digest(query, header),
                    Err(GatewayError::InvalidDigest(_))
                ),
                "{query:?} {header:?}"
            );
        }
    }

    #[test]
    fn replicas_parameter_table() {
        assert_eq!(parse_replicas(None).unwrap(), 1);
        assert_eq!(parse_replicas(Some("3")).unwrap(), 3);
        assert_eq!(parse_replicas(Some("512")).unwrap(), MAX_REPLICAS);
        for bad in ["0", "-1", "x", "", "1.5", "513", "4294967296"] {
            assert!(
                matches!(
                    parse_replicas(Some(bad)),
                    Err(GatewayError::InvalidReplicas(_))
                ),
                "{bad}"
            );
        }
    }
}
