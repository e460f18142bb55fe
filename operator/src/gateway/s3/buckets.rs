//! Bucket operations: a bucket is a namespace. CreateBucket declares it (a namespace also
//! exists as soon as it holds a file), DeleteBucket removes it when it holds no file, and the
//! bucket's tags carry its default replication level (tag `replicas`).

use std::collections::BTreeMap;

use s3s::dto::*;
use s3s::{S3ErrorCode, S3Response, S3Result};

use super::errors::{check_bucket, err};
use super::level::{parse_level, REPLICAS_KEY};
use super::DepositoS3;
use crate::gateway::access::Grant;
use crate::gateway::store::{Bucket as Declared, BucketDeletion};

fn no_such_bucket(name: &str) -> s3s::S3Error {
    err(S3ErrorCode::NoSuchBucket, format!("no bucket '{name}'"))
}

/// A bucket name that names a namespace clients may use: not the parts namespace, unless
/// that is a bucket too.
pub(super) fn usable(s3: &DepositoS3, name: &str) -> S3Result<()> {
    check_bucket(name)?;
    if name == s3.parts_namespace && !s3.parts_namespace_is_bucket {
        return Err(err(
            S3ErrorCode::InvalidBucketName,
            format!("'{name}' holds multipart upload parts and is not a bucket"),
        ));
    }
    Ok(())
}

/// The bucket, or `NoSuchBucket`.
pub async fn existing(s3: &DepositoS3, name: &str) -> S3Result<Declared> {
    usable(s3, name)?;
    s3.buckets
        .bucket(name)
        .await?
        .ok_or_else(|| no_such_bucket(name))
}

/// ListBuckets: the buckets the key may read.
pub async fn list(s3: &DepositoS3, grant: &Grant) -> S3Result<S3Response<ListBucketsOutput>> {
    let buckets = s3
        .buckets
        .buckets()
        .await?
        .into_iter()
        .filter(|b| {
            (b.name != s3.parts_namespace || s3.parts_namespace_is_bucket)
                && grant.allows(Some(&b.name), false)
        })
        .map(|b| Bucket {
            creation_date: Some(super::level::last_modified(&crate::engine::ContentAttrs {
                modified_ms: b.created_ms,
                ..Default::default()
            })),
            name: Some(b.name),
            bucket_region: None,
        })
        .collect();
    Ok(S3Response::new(ListBucketsOutput {
        buckets: Some(buckets),
        owner: Some(Owner {
            display_name: Some("deposito".into()),
            id: Some("deposito".into()),
        }),
        continuation_token: None,
        prefix: None,
    }))
}

/// CreateBucket: `BucketAlreadyOwnedByYou` when it exists (every key of a system is the
/// same owner).
pub async fn create(s3: &DepositoS3, name: &str) -> S3Result<S3Response<CreateBucketOutput>> {
    usable(s3, name)?;
    if !s3.buckets.create_bucket(name).await? {
        return Err(err(
            S3ErrorCode::BucketAlreadyOwnedByYou,
            format!("bucket '{name}' exists"),
        ));
    }
    tracing::info!(bucket = name, "bucket created");
    Ok(S3Response::new(CreateBucketOutput {
        location: Some(format!("/{name}")),
    }))
}

/// DeleteBucket: only an empty one.
pub async fn delete(s3: &DepositoS3, name: &str) -> S3Result<S3Response<DeleteBucketOutput>> {
    usable(s3, name)?;
    match s3.buckets.delete_bucket(name).await? {
        BucketDeletion::Deleted => {
            tracing::info!(bucket = name, "bucket deleted");
            Ok(S3Response::new(DeleteBucketOutput::default()))
        }
        BucketDeletion::NotEmpty => Err(err(
            S3ErrorCode::BucketNotEmpty,
            format!("bucket '{name}' holds files (or files being deleted)"),
        )),
        BucketDeletion::Missing => Err(no_such_bucket(name)),
    }
}

/// GetBucketTagging: `NoSuchTagSet` when the bucket has none.
pub async fn tags(s3: &DepositoS3, name: &str) -> S3Result<S3Response<GetBucketTaggingOutput>> {
    let bucket = existing(s3, name).await?;
    if bucket.tags.is_empty() {
        return Err(err(S3ErrorCode::NoSuchTagSet, "the bucket has no tags"));
    }
    let tag_set = bucket
        .tags
        .into_iter()
        .map(|(key, value)| Tag {
            key: Some(key),
            value: Some(value),
        })
        .collect();
    Ok(S3Response::new(GetBucketTaggingOutput { tag_set }))
}

/// PutBucketTagging (and, with no tags, DeleteBucketTagging). A `replicas` tag must be a
/// valid level: it becomes the default of objects put without one.
pub async fn set_tags(
    s3: &DepositoS3,
    name: String,
    tag_set: Vec<Tag>,
) -> S3Result<S3Response<PutBucketTaggingOutput>> {
    usable(s3, &name)?;
    let mut tags = BTreeMap::new();
    for tag in tag_set {
        let (Some(key), Some(value)) = (tag.key, tag.value) else {
            return Err(err(
                S3ErrorCode::InvalidTag,
                "a tag needs a key and a value",
            ));
        };
        if key == REPLICAS_KEY {
            parse_level(&value, "the replicas tag")?;
        }
        tags.insert(key, value);
    }
    if !s3.buckets.set_bucket_tags(&name, tags).await? {
        return Err(no_such_bucket(&name));
    }
    Ok(S3Response::new(PutBucketTaggingOutput::default()))
}
