//! Object operations: PutObject is a deposit (streamed to N replicas, verified and fsync'd
//! before the answer, with the MD5 ETag computed on the way), GetObject a verified download
//! (Range and the four conditional headers), CopyObject a deposit fed by a download, or,
//! onto itself, a change of level and metadata without copying data.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use base64::Engine as _;
use deposito_api::gateway::Ack;
use deposito_api::FileKey;
use futures::TryStreamExt as _;
use md5::Digest as _;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Response, S3Result};

use super::buckets::{existing, usable};
use super::checksums::ClientChecksums;
use super::errors::{err, from_gateway, object_key};
use super::level::{
    bucket_default, etag, kept_metadata, last_modified, requested, response_metadata,
};
use super::DepositoS3;
use crate::engine::ContentAttrs;
use crate::gateway::deposit::{self, Put};
use crate::gateway::error::GatewayError;
use crate::gateway::store::ObjectEntry;
use crate::gateway::transfer;

/// The object `key` names, or `NoSuchKey` (`NoSuchBucket` when the bucket is missing too).
pub async fn load(s3: &DepositoS3, bucket: &str, key: &str) -> S3Result<(FileKey, ObjectEntry)> {
    usable(s3, bucket)?;
    let file = object_key(bucket, key)?;
    match s3.buckets.object(&file.namespace, &file.name).await? {
        Some(entry) => Ok((file, entry)),
        None => {
            existing(s3, bucket).await?;
            Err(err(S3ErrorCode::NoSuchKey, format!("no object '{key}'")))
        }
    }
}

/// The level of a new object: asked in the request, else the bucket's tag, else the default.
pub(super) async fn level_for(
    s3: &DepositoS3,
    bucket: &str,
    metadata: Option<&Metadata>,
    class: Option<&StorageClass>,
) -> S3Result<u32> {
    let asked = requested(metadata, class)?;
    let bucket = existing(s3, bucket).await?;
    Ok(asked
        .or_else(|| bucket_default(&bucket.tags))
        .unwrap_or(s3.default_replicas))
}

/// A sha256 the client gave for the body: `x-amz-checksum-sha256` (base64) or a hex
/// `x-amz-content-sha256` (the signed payload hash). The replicas check it.
fn expected_sha256(checksum: Option<&str>, headers: &http::HeaderMap) -> S3Result<Option<String>> {
    if let Some(b64) = checksum {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .filter(|raw| raw.len() == 32)
            .ok_or_else(|| {
                err(
                    S3ErrorCode::InvalidDigest,
                    "x-amz-checksum-sha256 is not a base64 sha256",
                )
            })?;
        return Ok(Some(hex::encode(raw)));
    }
    Ok(headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
        .filter(|v| deposito_api::is_sha256_hex(v)))
}

/// What a client says of a body: a sha256 the replicas check, a `Content-MD5`, and the
/// `x-amz-checksum-*` values the gateway checks as the bytes pass.
#[derive(Default)]
pub(super) struct BodyChecks {
    pub sha256: Option<String>,
    pub content_md5: Option<String>,
    pub checksums: ClientChecksums,
}

impl BodyChecks {
    /// The checks a PutObject or UploadPart announces.
    pub fn of_request(
        checksum_sha256: Option<&str>,
        content_md5: Option<String>,
        headers: &http::HeaderMap,
        trailer: Option<s3s::TrailingHeaders>,
    ) -> S3Result<Self> {
        Ok(Self {
            sha256: expected_sha256(checksum_sha256, headers)?,
            content_md5,
            checksums: ClientChecksums::of_request(headers, trailer),
        })
    }

    /// A body the gateway reads from its own verified holders: the replicas check `sha256`
    /// when the whole content is copied.
    pub fn copied(sha256: Option<String>) -> Self {
        Self {
            sha256,
            ..Self::default()
        }
    }
}

/// Stores `body` as the content of `file` at `replicas`, computing its MD5 (the ETag) and
/// the announced checksums on the way: a `Content-MD5` or an `x-amz-checksum-*` that differs
/// refuses the deposit (`BadDigest`) before it is recorded.
#[allow(
    clippy::too_many_arguments,
    reason = "one deposit's facts, each named at the call"
)]
pub(super) async fn deposit_with_md5<S>(
    s3: &DepositoS3,
    file: FileKey,
    replicas: u32,
    retain_until_ms: Option<u64>,
    content_length: Option<u64>,
    checks: BodyChecks,
    attrs: ContentAttrs,
    body: S,
) -> S3Result<String>
where
    S: futures::Stream<Item = Result<bytes::Bytes, s3s::StdError>> + Send + 'static,
{
    let BodyChecks {
        sha256,
        content_md5,
        checksums,
    } = checks;
    let hashers = Arc::new(Mutex::new((md5::Md5::new(), checksums)));
    let etag = Arc::new(Mutex::new(String::new()));
    let feed = hashers.clone();
    let stream = body.inspect_ok(move |chunk| {
        let mut hashers = feed.lock().expect("body hashers");
        hashers.0.update(chunk);
        hashers.1.update(chunk);
    });
    let (hashers_done, etag_out) = (hashers, etag.clone());
    let finish = Box::new(move |attrs: &mut ContentAttrs| {
        let (md5, checksums) = std::mem::take(&mut *hashers_done.lock().expect("body hashers"));
        checksums.verify()?;
        let digest = md5.finalize();
        if let Some(given) = content_md5 {
            let given = base64::engine::general_purpose::STANDARD.decode(given.trim());
            if given.as_deref().ok() != Some(digest.as_slice()) {
                return Err(GatewayError::DigestMismatch(
                    "the content does not match Content-MD5".into(),
                ));
            }
        }
        let hex = hex::encode(digest);
        *etag_out.lock().expect("etag") = hex.clone();
        attrs.md5_etag = Some(hex);
        Ok(())
    });
    let put = Put {
        key: file,
        replicas,
        expected: sha256,
        content_length,
        ack: Ack::All,
        attrs,
        finish: Some(finish),
        trailer: None,
        lifecycle: None,
        retain_until_ms,
    };
    deposit::store(&s3.gw, put, Body::from_stream(stream))
        .await
        .map_err(from_gateway)?;
    let etag = etag.lock().expect("etag").clone();
    Ok(etag)
}

/// PutObject.
pub async fn put(
    s3: &DepositoS3,
    req: s3s::S3Request<PutObjectInput>,
) -> S3Result<S3Response<PutObjectOutput>> {
    let mut input = req.input;
    let mut body = input.body.take();
    let checked = async {
        let checks = BodyChecks::of_request(
            input.checksum_sha256.as_deref(),
            input.content_md5.clone(),
            &req.headers,
            req.trailing_headers.clone(),
        )?;
        let file = object_key(&input.bucket, &input.key)?;
        let replicas = level_for(
            s3,
            &input.bucket,
            input.metadata.as_ref(),
            input.storage_class.as_ref(),
        )
        .await?;
        let retain_until_ms = super::level::retain_until_of(
            input.object_lock_mode.as_ref().map(ObjectLockMode::as_str),
            input.object_lock_retain_until_date.as_ref(),
        )?;
        Ok((checks, file, replicas, retain_until_ms))
    };
    let (checks, file, replicas, retain_until_ms) =
        drain_on_error(checked.await, &mut body).await?;
    let attrs = ContentAttrs {
        content_type: input.content_type,
        metadata: kept_metadata(input.metadata),
        ..Default::default()
    };
    let etag = deposit_with_md5(
        s3,
        file,
        replicas,
        retain_until_ms,
        input.content_length.and_then(|n| u64::try_from(n).ok()),
        checks,
        attrs,
        body_stream(body),
    )
    .await?;
    Ok(S3Response::new(PutObjectOutput {
        e_tag: Some(ETag::Strong(etag)),
        ..Default::default()
    }))
}

/// A request body as the stream a deposit reads (none: empty).
pub(super) fn body_stream(
    body: Option<StreamingBlob>,
) -> Box<dyn futures::Stream<Item = Result<bytes::Bytes, s3s::StdError>> + Send + Unpin> {
    match body {
        Some(blob) => Box::new(blob),
        None => Box::new(futures::stream::empty()),
    }
}

/// On an error found before the body is read, reads and discards the body (within the
/// gateway's drain limits) so that a client still sending gets the error, not a reset.
pub(super) async fn drain_on_error<T>(
    checked: S3Result<T>,
    body: &mut Option<StreamingBlob>,
) -> S3Result<T> {
    if checked.is_err() {
        if let Some(blob) = body.take() {
            transfer::drain(blob).await;
        }
    }
    checked
}

/// The outcome of the conditional headers of a read.
fn check_conditions(
    tag: &ETag,
    modified: &Timestamp,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let matches = |cond: &ETagCondition| match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(given) => given.value() == tag.value(),
    };
    // Second precision, as in the HTTP dates clients send.
    let secs = |t: &Timestamp| time::OffsetDateTime::from(t.clone()).unix_timestamp();
    if let Some(cond) = if_match {
        if !matches(cond) {
            return Err(err(
                S3ErrorCode::PreconditionFailed,
                "If-Match does not match the ETag",
            ));
        }
    } else if let Some(since) = if_unmodified_since {
        if secs(modified) > secs(since) {
            return Err(err(
                S3ErrorCode::PreconditionFailed,
                "modified since If-Unmodified-Since",
            ));
        }
    }
    if let Some(cond) = if_none_match {
        if matches(cond) {
            return Err(not_modified());
        }
    } else if let Some(since) = if_modified_since {
        if secs(modified) <= secs(since) {
            return Err(not_modified());
        }
    }
    Ok(())
}

fn not_modified() -> S3Error {
    let mut err = S3Error::new(S3ErrorCode::NotModified);
    err.set_status_code(http::StatusCode::NOT_MODIFIED);
    err
}

/// GetObject: the verified content (or one range of it).
pub async fn get(s3: &DepositoS3, input: GetObjectInput) -> S3Result<S3Response<GetObjectOutput>> {
    let (_, (record, attrs)) = load(s3, &input.bucket, &input.key).await?;
    let tag = etag(&record, &attrs);
    let modified = last_modified(&attrs);
    check_conditions(
        &tag,
        &modified,
        input.if_match.as_ref(),
        input.if_none_match.as_ref(),
        input.if_modified_since.as_ref(),
        input.if_unmodified_since.as_ref(),
    )?;
    let range = match &input.range {
        Some(range) => Some(range.check(record.size).map_err(|_| {
            err(
                S3ErrorCode::InvalidRange,
                format!("the range is outside the object's {} bytes", record.size),
            )
        })?),
        None => None,
    };
    let header = range
        .as_ref()
        .map(|r| format!("bytes={}-{}", r.start, r.end - 1));
    let response = transfer::download(&s3.gw, &record, header.as_deref())
        .await
        .map_err(from_gateway)?;
    if !response.status().is_success() {
        return Err(err(
            S3ErrorCode::InternalError,
            format!("no holder could send the object ({})", response.status()),
        ));
    }
    let length = range.as_ref().map_or(record.size, |r| r.end - r.start);
    // s3s wants a Sync stream; the wrapper gives exclusive access instead of sharing.
    let body = StreamingBlob::wrap(sync_wrapper::SyncStream::new(
        response.into_body().into_data_stream(),
    ));
    Ok(S3Response::new(GetObjectOutput {
        body: Some(body),
        content_length: Some(length as i64),
        content_range: range
            .as_ref()
            .map(|r| format!("bytes {}-{}/{}", r.start, r.end - 1, record.size)),
        content_type: attrs.content_type.clone(),
        accept_ranges: Some("bytes".into()),
        e_tag: Some(tag),
        last_modified: Some(modified),
        metadata: Some(response_metadata(&record, &attrs)),
        ..Default::default()
    }))
}

/// HeadObject: what GetObject would say, without the bytes.
pub async fn head(
    s3: &DepositoS3,
    input: HeadObjectInput,
) -> S3Result<S3Response<HeadObjectOutput>> {
    let (_, (record, attrs)) = load(s3, &input.bucket, &input.key).await?;
    let tag = etag(&record, &attrs);
    let modified = last_modified(&attrs);
    check_conditions(
        &tag,
        &modified,
        input.if_match.as_ref(),
        input.if_none_match.as_ref(),
        input.if_modified_since.as_ref(),
        input.if_unmodified_since.as_ref(),
    )?;
    Ok(S3Response::new(HeadObjectOutput {
        content_length: Some(record.size as i64),
        content_type: attrs.content_type.clone(),
        accept_ranges: Some("bytes".into()),
        e_tag: Some(tag),
        last_modified: Some(modified),
        metadata: Some(response_metadata(&record, &attrs)),
        ..Default::default()
    }))
}

/// DeleteObject: marks the file for deletion (every copy goes); a missing key is no error.
pub async fn delete(s3: &DepositoS3, bucket: &str, key: &str) -> S3Result<()> {
    let file = object_key(bucket, key)?;
    existing(s3, bucket).await?;
    let storage = s3.gw.files.storage_key(&file.namespace, &file.name).await?;
    if s3.gw.files.mark_deleting(&storage).await?.is_some() {
        tracing::info!(file = %file, "deletion requested (S3)");
    }
    Ok(())
}

/// DeleteObjects: each key deleted or reported with its error.
pub async fn delete_many(
    s3: &DepositoS3,
    input: DeleteObjectsInput,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    existing(s3, &input.bucket).await?;
    let quiet = input.delete.quiet.unwrap_or(false);
    let (mut deleted, mut errors) = (Vec::new(), Vec::new());
    for object in input.delete.objects {
        match delete(s3, &input.bucket, &object.key).await {
            Ok(()) if quiet => {}
            Ok(()) => deleted.push(DeletedObject {
                key: Some(object.key),
                ..Default::default()
            }),
            Err(err) => errors.push(Error {
                code: Some(err.code().as_str().to_string()),
                message: err.message().map(str::to_string),
                key: Some(object.key),
                version_id: None,
            }),
        }
    }
    Ok(S3Response::new(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: Some(errors),
        ..Default::default()
    }))
}

/// CopyObject. Onto itself with `MetadataDirective: REPLACE`, it changes the level and the
/// metadata without moving a byte (the same engine work as `set-replicas`); onto another key
/// the source's verified content is streamed into a new deposit.
pub async fn copy(
    s3: &DepositoS3,
    input: CopyObjectInput,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let CopySource::Bucket {
        bucket: src_bucket,
        key: src_key,
        ..
    } = &input.copy_source
    else {
        return Err(err(
            S3ErrorCode::NotImplemented,
            "copy sources are buckets' objects only",
        ));
    };
    let (src_file, (record, attrs)) = load(s3, src_bucket, src_key).await?;
    let tag = etag(&record, &attrs);
    check_conditions(
        &tag,
        &last_modified(&attrs),
        input.copy_source_if_match.as_ref(),
        input.copy_source_if_none_match.as_ref(),
        input.copy_source_if_modified_since.as_ref(),
        input.copy_source_if_unmodified_since.as_ref(),
    )
    .map_err(|e| {
        if e.code() == &S3ErrorCode::NotModified {
            err(
                S3ErrorCode::PreconditionFailed,
                "the source's ETag matches x-amz-copy-source-if-none-match",
            )
        } else {
            e
        }
    })?;
    let replace = input
        .metadata_directive
        .as_ref()
        .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
    let (metadata, content_type) = if replace {
        (kept_metadata(input.metadata.clone()), input.content_type)
    } else {
        (attrs.metadata.clone(), attrs.content_type.clone())
    };
    let dest = object_key(&input.bucket, &input.key)?;
    if dest == src_file {
        if !replace && input.storage_class.is_none() {
            return Err(err(
                S3ErrorCode::InvalidRequest,
                "copying an object onto itself needs MetadataDirective REPLACE or a storage class",
            ));
        }
        return copy_in_place(
            s3,
            &input.bucket,
            dest,
            (record, attrs),
            input.metadata.as_ref(),
            input.storage_class.as_ref(),
            metadata,
            content_type,
        )
        .await;
    }
    // COPY keeps the source's level (as S3 keeps its metadata); REPLACE or a storage class
    // asks anew.
    let replicas = if replace || input.storage_class.is_some() {
        level_for(
            s3,
            &input.bucket,
            input.metadata.as_ref().filter(|_| replace),
            input.storage_class.as_ref(),
        )
        .await?
    } else {
        existing(s3, &input.bucket).await?;
        record.replicas
    };
    let response = transfer::download(&s3.gw, &record, None)
        .await
        .map_err(from_gateway)?;
    let body = response
        .into_body()
        .into_data_stream()
        .map_err(|e| -> s3s::StdError { Box::new(e) });
    let new_attrs = ContentAttrs {
        content_type,
        metadata,
        ..Default::default()
    };
    let etag = deposit_with_md5(
        s3,
        dest,
        replicas,
        None,
        Some(record.size),
        BodyChecks::copied(Some(record.sha256.clone())),
        new_attrs,
        body,
    )
    .await?;
    Ok(S3Response::new(CopyObjectOutput {
        copy_object_result: Some(CopyObjectResult {
            e_tag: Some(ETag::Strong(etag)),
            last_modified: Some(Timestamp::from(std::time::SystemTime::now())),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

/// A self-copy: the new level (from the request, else the bucket's, else the default) and
/// the new metadata, on the same content.
#[allow(clippy::too_many_arguments)]
async fn copy_in_place(
    s3: &DepositoS3,
    bucket: &str,
    file: FileKey,
    (record, mut attrs): ObjectEntry,
    asked_metadata: Option<&Metadata>,
    class: Option<&StorageClass>,
    metadata: std::collections::BTreeMap<String, String>,
    content_type: Option<String>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let replicas = level_for(s3, bucket, asked_metadata, class).await?;
    let storage = s3.gw.files.storage_key(&file.namespace, &file.name).await?;
    attrs.metadata = metadata;
    attrs.content_type = content_type;
    if !s3
        .buckets
        .set_attrs(&storage, &record.sha256, attrs.clone())
        .await?
    {
        return Err(err(
            S3ErrorCode::OperationAborted,
            "the object changed during the copy; try again",
        ));
    }
    if record.replicas != replicas {
        s3.gw
            .files
            .set_replicas(&storage, replicas)
            .await?
            .ok_or_else(|| err(S3ErrorCode::NoSuchKey, format!("no object '{}'", file.name)))?;
        tracing::info!(file = %file, from = record.replicas, to = replicas, "replication level changed (S3 self-copy)");
    }
    Ok(S3Response::new(CopyObjectOutput {
        copy_object_result: Some(CopyObjectResult {
            e_tag: Some(etag(&record, &attrs)),
            last_modified: Some(last_modified(&attrs)),
            ..Default::default()
        }),
        ..Default::default()
    }))
}
