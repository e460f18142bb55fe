//! Multipart uploads. Each part is deposited like any file (streamed to the upload's N
//! replicas, verified and fsync'd before UploadPart answers) into the parts namespace, named
//! `{upload id}.{part number:05}`. CompleteMultipartUpload streams the listed parts, in order,
//! from their verified holders into one new deposit (memory stays bounded whatever the
//! size), records the multipart ETag (MD5 of the parts' MD5s, `-N`), then deletes the parts.

use axum::body::Body;
use deposito_api::gateway::Ack;
use deposito_api::FileKey;
use futures::{StreamExt as _, TryStreamExt as _};
use md5::Digest as _;
use rand::RngCore as _;
use s3s::dto::*;
use s3s::{S3ErrorCode, S3Response, S3Result};

use super::errors::{err, from_gateway, object_key};
use super::level::{etag, kept_metadata, last_modified};
use super::objects::{body_stream, deposit_with_md5, drain_on_error, level_for, BodyChecks};
use super::DepositoS3;
use crate::engine::{ContentAttrs, FileRecord};
use crate::gateway::deposit::{self, Put};
use crate::gateway::store::Upload;
use crate::gateway::transfer;

/// Highest part number (S3's limit).
const MAX_PART: i32 = 10_000;

/// A part number from 1 to [`MAX_PART`], else `InvalidArgument`.
fn check_part_number(part: i32) -> S3Result<()> {
    if (1..=MAX_PART).contains(&part) {
        Ok(())
    } else {
        Err(err(
            S3ErrorCode::InvalidArgument,
            format!("part numbers go from 1 to {MAX_PART}, got {part}"),
        ))
    }
}

fn part_name(upload_id: &str, part: i32) -> String {
    format!("{upload_id}.{part:05}")
}

fn no_such_upload(id: &str) -> s3s::S3Error {
    err(
        S3ErrorCode::NoSuchUpload,
        format!("no upload '{id}' for this key"),
    )
}

/// The upload `id`, which must be for `bucket`/`key`.
async fn load(s3: &DepositoS3, bucket: &str, key: &str, id: &str) -> S3Result<Upload> {
    object_key(bucket, key)?;
    match s3.uploads.upload(id).await? {
        Some(upload) if upload.bucket == bucket && upload.key == key => Ok(upload),
        _ => Err(no_such_upload(id)),
    }
}

/// The file holding one part.
fn part_key(s3: &DepositoS3, upload_id: &str, part: i32) -> FileKey {
    FileKey {
        namespace: s3.parts_namespace.clone(),
        name: part_name(upload_id, part),
    }
}

/// The parts stored for an upload, by number, with their records.
async fn stored_parts(
    s3: &DepositoS3,
    upload_id: &str,
    after: Option<i32>,
    limit: usize,
) -> S3Result<(Vec<(i32, FileRecord, ContentAttrs)>, bool)> {
    let prefix = format!("{upload_id}.");
    let after = after.map(|n| part_name(upload_id, n));
    let (entries, more) = s3
        .buckets
        .objects(&s3.parts_namespace, &prefix, after.as_deref(), limit)
        .await?;
    let parts = entries
        .into_iter()
        .filter_map(|(record, attrs)| {
            let number = record.file_name.strip_prefix(&prefix)?.parse().ok()?;
            Some((number, record, attrs))
        })
        .collect();
    Ok((parts, more))
}

/// CreateMultipartUpload: the level is decided now, like a PutObject's.
pub async fn create(
    s3: &DepositoS3,
    input: CreateMultipartUploadInput,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    object_key(&input.bucket, &input.key)?;
    let replicas = level_for(
        s3,
        &input.bucket,
        input.metadata.as_ref(),
        input.storage_class.as_ref(),
    )
    .await?;
    let mut raw = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut raw);
    let id = hex::encode(raw);
    s3.uploads
        .create_upload(Upload {
            id: id.clone(),
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            replicas,
            attrs: ContentAttrs {
                content_type: input.content_type,
                metadata: kept_metadata(input.metadata),
                ..Default::default()
            },
            created_ms: crate::engine::now_ms(),
        })
        .await?;
    tracing::info!(bucket = %input.bucket, key = %input.key, upload = %id, replicas, "multipart upload started");
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(id),
        ..Default::default()
    }))
}

/// UploadPart: the part is durable when this answers.
pub async fn upload_part(
    s3: &DepositoS3,
    req: s3s::S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let mut input = req.input;
    let mut body = input.body.take();
    let checked = async {
        let checks = BodyChecks::of_request(
            input.checksum_sha256.as_deref(),
            input.content_md5.clone(),
            &req.headers,
            req.trailing_headers.clone(),
        )?;
        let upload = load(s3, &input.bucket, &input.key, &input.upload_id).await?;
        check_part_number(input.part_number)?;
        Ok((checks, upload))
    };
    let (checks, upload) = drain_on_error(checked.await, &mut body).await?;
    let etag = deposit_with_md5(
        s3,
        part_key(s3, &upload.id, input.part_number),
        upload.replicas,
        None,
        input.content_length.and_then(|n| u64::try_from(n).ok()),
        checks,
        ContentAttrs::default(),
        body_stream(body),
    )
    .await?;
    Ok(S3Response::new(UploadPartOutput {
        e_tag: Some(ETag::Strong(etag)),
        ..Default::default()
    }))
}

/// UploadPartCopy: a part made of another object (or one range of it), streamed from the
/// source's verified holders into the part's deposit.
pub async fn upload_part_copy(
    s3: &DepositoS3,
    input: UploadPartCopyInput,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    let upload = load(s3, &input.bucket, &input.key, &input.upload_id).await?;
    check_part_number(input.part_number)?;
    let CopySource::Bucket { bucket, key, .. } = &input.copy_source else {
        return Err(err(
            S3ErrorCode::NotImplemented,
            "copy sources are buckets' objects only",
        ));
    };
    let (_, (record, _)) = super::objects::load(s3, bucket, key).await?;
    let range = match input.copy_source_range.as_deref() {
        Some(header) => {
            // `bytes=FIRST-LAST`, wholly inside the source (no clamping, unlike a GET).
            let range = match Range::parse(header) {
                Ok(Range::Int {
                    first,
                    last: Some(last),
                }) if first <= last && last < record.size => Some(first..last + 1),
                _ => None,
            }
            .ok_or_else(|| {
                err(
                    S3ErrorCode::InvalidRange,
                    format!(
                        "x-amz-copy-source-range '{header}' is not within the source's {} bytes",
                        record.size
                    ),
                )
            })?;
            Some(range)
        }
        None => None,
    };
    let header = range
        .as_ref()
        .map(|r| format!("bytes={}-{}", r.start, r.end - 1));
    let length = range.as_ref().map_or(record.size, |r| r.end - r.start);
    let response = transfer::download(&s3.gw, &record, header.as_deref())
        .await
        .map_err(from_gateway)?;
    let body = response
        .into_body()
        .into_data_stream()
        .map_err(|e| -> s3s::StdError { Box::new(e) });
    // A whole source is checked against its sha256 by the replicas; a range by the
    // holder's chunk verification before it is sent.
    let expected = range.is_none().then(|| record.sha256.clone());
    let etag = deposit_with_md5(
        s3,
        part_key(s3, &upload.id, input.part_number),
        upload.replicas,
        None,
        Some(length),
        BodyChecks::copied(expected),
        ContentAttrs::default(),
        body,
    )
    .await?;
    Ok(S3Response::new(UploadPartCopyOutput {
        copy_part_result: Some(CopyPartResult {
            e_tag: Some(ETag::Strong(etag)),
            last_modified: Some(Timestamp::from(std::time::SystemTime::now())),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

/// CompleteMultipartUpload.
pub async fn complete(
    s3: &DepositoS3,
    input: CompleteMultipartUploadInput,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let upload = load(s3, &input.bucket, &input.key, &input.upload_id).await?;
    let listed = input
        .multipart_upload
        .and_then(|m| m.parts)
        .unwrap_or_default();
    if listed.is_empty() {
        return Err(err(S3ErrorCode::MalformedXML, "the upload lists no part"));
    }
    let mut records = Vec::with_capacity(listed.len());
    let mut md5s = md5::Md5::new();
    let mut previous = 0;
    for part in &listed {
        let number = part.part_number.unwrap_or(0);
        if number <= previous {
            return Err(err(
                S3ErrorCode::InvalidPartOrder,
                "parts must be listed in ascending order",
            ));
        }
        previous = number;
        let key = part_key(s3, &upload.id, number);
        let Some((record, attrs)) = s3.buckets.object(&key.namespace, &key.name).await? else {
            return Err(err(
                S3ErrorCode::InvalidPart,
                format!("part {number} was not uploaded"),
            ));
        };
        let stored = etag(&record, &attrs);
        if part
            .e_tag
            .as_ref()
            .is_some_and(|given| given.value() != stored.value())
        {
            return Err(err(
                S3ErrorCode::InvalidPart,
                format!("part {number}'s ETag does not match"),
            ));
        }
        md5s.update(hex::decode(stored.value()).unwrap_or_default());
        records.push(record);
    }
    let multipart_etag = format!("{}-{}", hex::encode(md5s.finalize()), records.len());
    let file = object_key(&input.bucket, &input.key)?;
    let Some(completing) = Completing::start(s3, &upload.id) else {
        return Err(err(
            S3ErrorCode::OperationAborted,
            "this upload is being completed by another request",
        ));
    };
    // The answer's status and headers go out now; the body follows when the object is
    // stored, with spaces sent meanwhile (as S3 does), so a client's read timeout never
    // fires and its retry never assembles the object a second time.
    let this = s3.clone();
    let future = async move {
        let _completing = completing;
        let parts = records.len();
        let size = assemble(&this, &upload, records, file, multipart_etag.clone()).await?;
        remove_parts(&this, &upload.id).await?;
        this.uploads.remove_upload(&upload.id).await?;
        tracing::info!(bucket = %input.bucket, key = %input.key, upload = %upload.id, parts, size, "multipart upload completed");
        Ok(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            e_tag: Some(ETag::Strong(multipart_etag)),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            ..Default::default()
        })
    };
    Ok(S3Response::new(CompleteMultipartUploadOutput {
        future: Some(Box::pin(future)),
        ..Default::default()
    }))
}

/// An upload being completed, in [`DepositoS3::completing`] until dropped.
struct Completing {
    set: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    id: String,
}

impl Completing {
    /// `None` when another request is completing `id` already.
    fn start(s3: &DepositoS3, id: &str) -> Option<Self> {
        let fresh = s3
            .completing
            .lock()
            .expect("completing uploads")
            .insert(id.to_string());
        fresh.then(|| Completing {
            set: s3.completing.clone(),
            id: id.to_string(),
        })
    }
}

impl Drop for Completing {
    fn drop(&mut self) {
        self.set
            .lock()
            .expect("completing uploads")
            .remove(&self.id);
    }
}

/// Streams the parts' verified content, in order, into one deposit of `file` with the
/// multipart ETag; the object's size.
async fn assemble(
    s3: &DepositoS3,
    upload: &Upload,
    records: Vec<FileRecord>,
    file: FileKey,
    multipart_etag: String,
) -> S3Result<u64> {
    let size: u64 = records.iter().map(|r| r.size).sum();
    let gw = s3.gw.clone();
    let body =
        futures::stream::iter(records)
            .then(move |record| {
                let gw = gw.clone();
                async move {
                    match transfer::download(&gw, &record, None).await {
                        Ok(response) => response
                            .into_body()
                            .into_data_stream()
                            .map_err(std::io::Error::other)
                            .boxed(),
                        Err(err) => futures::stream::once(async move {
                            Err(std::io::Error::other(err.to_string()))
                        })
                        .boxed(),
                    }
                }
            })
            .flatten();
    let put = Put {
        key: file,
        replicas: upload.replicas,
        expected: None,
        content_length: Some(size),
        ack: Ack::All,
        attrs: upload.attrs.clone(),
        trailer: None,
        finish: Some(Box::new(move |attrs: &mut ContentAttrs| {
            attrs.md5_etag = Some(multipart_etag);
            Ok(())
        })),
        lifecycle: None,
        retain_until_ms: None,
    };
    deposit::store(&s3.gw, put, Body::from_stream(body))
        .await
        .map_err(from_gateway)?;
    Ok(size)
}

/// Requests the deletion of every part of an upload.
async fn remove_parts(s3: &DepositoS3, upload_id: &str) -> S3Result<()> {
    loop {
        let (parts, more) = stored_parts(s3, upload_id, None, 1000).await?;
        for (_, record, _) in &parts {
            s3.gw.files.mark_deleting(&record.key).await?;
        }
        if !more || parts.is_empty() {
            return Ok(());
        }
    }
}

/// AbortMultipartUpload: the parts are deleted, the upload forgotten.
pub async fn abort(
    s3: &DepositoS3,
    input: AbortMultipartUploadInput,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let upload = load(s3, &input.bucket, &input.key, &input.upload_id).await?;
    remove_parts(s3, &upload.id).await?;
    s3.uploads.remove_upload(&upload.id).await?;
    tracing::info!(upload = %upload.id, "multipart upload aborted");
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

/// ListParts.
pub async fn list_parts(
    s3: &DepositoS3,
    input: ListPartsInput,
) -> S3Result<S3Response<ListPartsOutput>> {
    let upload = load(s3, &input.bucket, &input.key, &input.upload_id).await?;
    let max = input.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
    let (parts, more) = stored_parts(s3, &upload.id, input.part_number_marker, max).await?;
    let next = parts.last().map(|(n, _, _)| *n);
    let parts = parts
        .into_iter()
        .map(|(number, record, attrs)| Part {
            part_number: Some(number),
            size: Some(record.size as i64),
            e_tag: Some(etag(&record, &attrs)),
            last_modified: Some(last_modified(&attrs)),
            ..Default::default()
        })
        .collect();
    Ok(S3Response::new(ListPartsOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(upload.id),
        max_parts: Some(max as i32),
        is_truncated: Some(more),
        part_number_marker: input.part_number_marker,
        next_part_number_marker: next.filter(|_| more),
        parts: Some(parts),
        ..Default::default()
    }))
}

/// ListMultipartUploads (every upload of the bucket under the prefix, in one page).
pub async fn list_uploads(
    s3: &DepositoS3,
    input: ListMultipartUploadsInput,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    super::buckets::existing(s3, &input.bucket).await?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let uploads = s3
        .uploads
        .uploads(&input.bucket, &prefix)
        .await?
        .into_iter()
        .map(|u| MultipartUpload {
            key: Some(u.key),
            upload_id: Some(u.id),
            initiated: Some(last_modified(&ContentAttrs {
                modified_ms: u.created_ms,
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(input.bucket),
        prefix: input.prefix,
        is_truncated: Some(false),
        uploads: Some(uploads),
        ..Default::default()
    }))
}
