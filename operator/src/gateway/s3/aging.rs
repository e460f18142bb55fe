//! S3's ways of saying what a file's age decides, mapped onto Deposito's:
//!
//! - **Bucket lifecycle configuration** (Put/Get/DeleteBucketLifecycleConfiguration): one
//!   enabled rule for the whole bucket (no prefix, tag or size filter) with `Expiration`
//!   in `Days` becomes the namespace's default lifecycle `expire@{Days}d`, which governs
//!   the files without a lifecycle of their own. Transitions (storage classes), dates,
//!   filters and several rules are refused with `NotImplemented`: Deposito has no storage
//!   classes, and a default is per namespace.
//! - **Object Lock retention** (Put/GetObjectRetention, and PutObject's
//!   `x-amz-object-lock-mode` and `x-amz-object-lock-retain-until-date`): the
//!   retain-until date is the file's retention lock. Deposito's lock is what S3 calls
//!   `COMPLIANCE`: it can be extended, never shortened, by any key; `GOVERNANCE` (which a
//!   privileged key may bypass) is refused.

use s3s::dto::*;
use s3s::{S3ErrorCode, S3Response, S3Result};

use super::buckets::existing;
use super::errors::err;
use super::level::retain_until_of;
use super::objects::load;
use super::DepositoS3;
use crate::engine::AgingChange;
use deposito_api::lifecycle::{Lifecycle, Step};

/// The one rule id Deposito reports.
const RULE_ID: &str = "deposito-namespace-default";

fn not_implemented(what: &str) -> s3s::S3Error {
    err(
        S3ErrorCode::NotImplemented,
        format!("{what}: Deposito maps one enabled whole-bucket rule with Expiration Days onto the namespace's default lifecycle"),
    )
}

/// The namespace default a lifecycle configuration maps to (`None`: no rule enabled).
fn lifecycle_of(config: &BucketLifecycleConfiguration) -> S3Result<Option<Lifecycle>> {
    let enabled: Vec<&LifecycleRule> = config
        .rules
        .iter()
        .filter(|r| r.status.as_str() == ExpirationStatus::ENABLED)
        .collect();
    let rule = match enabled.as_slice() {
        [] => return Ok(None),
        [rule] => *rule,
        _ => return Err(not_implemented("several enabled rules")),
    };
    let filtered = rule.prefix.as_deref().is_some_and(|p| !p.is_empty())
        || rule.filter.as_ref().is_some_and(|f| {
            f.and.is_some()
                || f.tag.is_some()
                || f.object_size_greater_than.is_some()
                || f.object_size_less_than.is_some()
                || f.prefix.as_deref().is_some_and(|p| !p.is_empty())
        });
    if filtered {
        return Err(not_implemented("a rule with a filter"));
    }
    if rule.transitions.as_ref().is_some_and(|t| !t.is_empty())
        || rule.noncurrent_version_transitions.is_some()
        || rule.noncurrent_version_expiration.is_some()
        || rule.abort_incomplete_multipart_upload.is_some()
    {
        return Err(not_implemented("transitions and version or upload rules"));
    }
    let days = match rule.expiration.as_ref() {
        Some(LifecycleExpiration {
            days: Some(days),
            date: None,
            ..
        }) => *days,
        _ => return Err(not_implemented("a rule without Expiration Days")),
    };
    let lifecycle = Lifecycle {
        start: None,
        steps: Vec::<Step>::new(),
        expire_after_secs: u64::try_from(days).ok().map(|d| d * 86_400),
    };
    lifecycle.validate().map_err(|why| {
        err(
            S3ErrorCode::InvalidArgument,
            format!("Expiration Days {days}: {why}"),
        )
    })?;
    Ok(Some(lifecycle))
}

/// PutBucketLifecycleConfiguration.
pub async fn put_configuration(
    s3: &DepositoS3,
    bucket: &str,
    config: Option<BucketLifecycleConfiguration>,
) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
    existing(s3, bucket).await?;
    let lifecycle = match &config {
        Some(config) => lifecycle_of(config)?,
        None => None,
    };
    s3.gw
        .files
        .set_namespace_lifecycle(bucket, lifecycle)
        .await?;
    Ok(S3Response::new(
        PutBucketLifecycleConfigurationOutput::default(),
    ))
}

/// GetBucketLifecycleConfiguration: the namespace's default, as one rule with the expiry
/// in whole days (rounded up); a default with steps (set through the native API) shows
/// only its expiry. `NoSuchLifecycleConfiguration` when it has none.
pub async fn get_configuration(
    s3: &DepositoS3,
    bucket: &str,
) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
    existing(s3, bucket).await?;
    let expiry = s3
        .gw
        .files
        .namespace_lifecycle(bucket)
        .await?
        .and_then(|l| l.expire_after_secs);
    let Some(secs) = expiry else {
        return Err(err(
            S3ErrorCode::NoSuchLifecycleConfiguration,
            "the bucket has no lifecycle expiry",
        ));
    };
    let rule = LifecycleRule {
        id: Some(RULE_ID.into()),
        status: ExpirationStatus::from_static(ExpirationStatus::ENABLED),
        filter: Some(LifecycleRuleFilter {
            prefix: Some(String::new()),
            ..Default::default()
        }),
        expiration: Some(LifecycleExpiration {
            days: Some(i32::try_from(secs.div_ceil(86_400)).unwrap_or(i32::MAX)),
            ..Default::default()
        }),
        abort_incomplete_multipart_upload: None,
        noncurrent_version_expiration: None,
        noncurrent_version_transitions: None,
        prefix: None,
        transitions: None,
    };
    Ok(S3Response::new(GetBucketLifecycleConfigurationOutput {
        rules: Some(vec![rule]),
        ..Default::default()
    }))
}

/// PutObjectRetention: the object's retention lock (extended, never shortened).
pub async fn put_retention(
    s3: &DepositoS3,
    input: PutObjectRetentionInput,
) -> S3Result<S3Response<PutObjectRetentionOutput>> {
    let (file, (record, _)) = load(s3, &input.bucket, &input.key).await?;
    let retention = input.retention.unwrap_or_default();
    let until = retain_until_of(
        retention.mode.as_ref().map(ObjectLockRetentionMode::as_str),
        retention.retain_until_date.as_ref(),
    )?;
    let Some(until) = until else {
        return Err(err(
            S3ErrorCode::InvalidArgument,
            "a retention lock cannot be removed; name a later retain-until date to extend it",
        ));
    };
    let change = AgingChange {
        retain_until_ms: Some(until),
        ..AgingChange::default()
    };
    s3.gw
        .files
        .set_aging(&record.key, change)
        .await?
        .ok_or_else(|| err(S3ErrorCode::NoSuchKey, format!("no object '{}'", file.name)))?;
    Ok(S3Response::new(PutObjectRetentionOutput::default()))
}

/// GetObjectRetention: the lock, while it has one (`NoSuchObjectLockConfiguration`
/// otherwise).
pub async fn get_retention(
    s3: &DepositoS3,
    input: GetObjectRetentionInput,
) -> S3Result<S3Response<GetObjectRetentionOutput>> {
    let (_, (record, _)) = load(s3, &input.bucket, &input.key).await?;
    let Some(until) = record.aging.retain_until_ms else {
        return Err(err(
            S3ErrorCode::NoSuchObjectLockConfiguration,
            "the object has no retention lock",
        ));
    };
    let date = Timestamp::from(std::time::UNIX_EPOCH + std::time::Duration::from_millis(until));
    Ok(S3Response::new(GetObjectRetentionOutput {
        retention: Some(ObjectLockRetention {
            mode: Some(ObjectLockRetentionMode::from_static(
                ObjectLockRetentionMode::COMPLIANCE,
            )),
            retain_until_date: Some(date),
        }),
    }))
}
