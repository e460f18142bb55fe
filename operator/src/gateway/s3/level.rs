//! Replication per object, the S3 way: the level a request asks for (user metadata
//! `replicas`, else the storage class, else the bucket's `replicas` tag, else the system
//! default), what responses say about an object (its ETag, its metadata with the level
//! and the copies ready), and the retention lock a request asks for (Object Lock's
//! retain-until date).

use std::collections::BTreeMap;

use deposito_api::openapi::MAX_REPLICAS;
use s3s::dto::{ETag, Metadata, ObjectLockRetentionMode, StorageClass, Timestamp};
use s3s::{S3Error, S3ErrorCode, S3Result};

use super::errors::err;
use crate::engine::{ContentAttrs, FileRecord};

/// The user-metadata key (`x-amz-meta-replicas`) that sets, and in responses tells, an
/// object's replication level; also the bucket tag of the bucket's default.
pub const REPLICAS_KEY: &str = "replicas";
/// The response-metadata key telling how many verified copies are ready.
pub const READY_KEY: &str = "ready-replicas";

/// Parses a replication level given as text (metadata or tag).
pub fn parse_level(raw: &str, what: &str) -> Result<u32, S3Error> {
    match raw.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_REPLICAS).contains(&n) => Ok(n),
        _ => Err(err(
            S3ErrorCode::InvalidArgument,
            format!("{what} must be an integer from 1 to {MAX_REPLICAS}, got '{raw}'"),
        )),
    }
}

/// The level a request names: `x-amz-meta-replicas`, else the storage class
/// (`REDUCED_REDUNDANCY` is 1 copy, `STANDARD` the default); `None` when it names none.
/// Other storage classes are refused: Deposito has no tiers.
pub fn requested(
    metadata: Option<&Metadata>,
    class: Option<&StorageClass>,
) -> Result<Option<u32>, S3Error> {
    if let Some(raw) = metadata.and_then(|m| m.get(REPLICAS_KEY)) {
        return parse_level(raw, "x-amz-meta-replicas").map(Some);
    }
    match class.map(StorageClass::as_str) {
        None | Some(StorageClass::STANDARD) => Ok(None),
        Some(StorageClass::REDUCED_REDUNDANCY) => Ok(Some(1)),
        Some(other) => Err(err(
            S3ErrorCode::InvalidStorageClass,
            format!("storage class {other} is not offered: use STANDARD, REDUCED_REDUNDANCY or x-amz-meta-replicas"),
        )),
    }
}

/// The bucket's default level from its `replicas` tag, if it has a valid one.
pub fn bucket_default(tags: &BTreeMap<String, String>) -> Option<u32> {
    tags.get(REPLICAS_KEY)
        .and_then(|raw| parse_level(raw, "the replicas tag").ok())
}

/// The user metadata to keep: everything but the keys Deposito answers itself (the level
/// and the copies ready, which change without a new request).
pub fn kept_metadata(metadata: Option<Metadata>) -> BTreeMap<String, String> {
    metadata
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .filter(|(k, _)| k != REPLICAS_KEY && k != READY_KEY)
        .collect()
}

/// The metadata a response gives: what the client stored, plus the level in force and the
/// verified copies ready.
pub fn response_metadata(record: &FileRecord, attrs: &ContentAttrs) -> Metadata {
    let mut out: Metadata = attrs
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.insert(REPLICAS_KEY.into(), record.replicas.to_string());
    out.insert(READY_KEY.into(), record.status.ready_replicas.to_string());
    out
}

/// The object's ETag: the MD5 (or multipart) ETag when the content came through S3, else
/// the sha256.
pub fn etag(record: &FileRecord, attrs: &ContentAttrs) -> ETag {
    ETag::Strong(
        attrs
            .md5_etag
            .clone()
            .unwrap_or_else(|| record.sha256.clone()),
    )
}

/// When the content was acknowledged.
pub fn last_modified(attrs: &ContentAttrs) -> Timestamp {
    Timestamp::from(std::time::UNIX_EPOCH + std::time::Duration::from_millis(attrs.modified_ms))
}

/// A retain-until date asked with `mode`: milliseconds since the Unix epoch. Only
/// `COMPLIANCE` is what Deposito's lock is.
pub fn retain_until_of(mode: Option<&str>, until: Option<&Timestamp>) -> S3Result<Option<u64>> {
    match (mode, until) {
        (None, None) => Ok(None),
        (Some(ObjectLockRetentionMode::COMPLIANCE), Some(until)) => {
            let t = time::OffsetDateTime::from(until.clone());
            let ms = t.unix_timestamp_nanos() / 1_000_000;
            u64::try_from(ms)
                .map(Some)
                .map_err(|_| err(S3ErrorCode::InvalidArgument, "a retain-until date before 1970"))
        }
        (Some(ObjectLockRetentionMode::GOVERNANCE), _) => Err(err(
            S3ErrorCode::InvalidArgument,
            "GOVERNANCE retention is not supported: Deposito's lock is COMPLIANCE (no key may shorten it)",
        )),
        _ => Err(err(
            S3ErrorCode::InvalidArgument,
            "object lock needs both a mode (COMPLIANCE) and a retain-until date",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> Metadata {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn level_from_metadata_then_storage_class() {
        let rr = StorageClass::from_static(StorageClass::REDUCED_REDUNDANCY);
        let standard = StorageClass::from_static(StorageClass::STANDARD);
        let glacier = StorageClass::from_static(StorageClass::GLACIER);
        assert_eq!(
            requested(Some(&meta(&[("replicas", "3")])), Some(&rr)).unwrap(),
            Some(3)
        );
        assert_eq!(requested(None, Some(&rr)).unwrap(), Some(1));
        assert_eq!(requested(None, Some(&standard)).unwrap(), None);
        assert_eq!(requested(None, None).unwrap(), None);
        for bad in ["0", "-1", "three", "513"] {
            let err = requested(Some(&meta(&[("replicas", bad)])), None).unwrap_err();
            assert_eq!(err.code(), &S3ErrorCode::InvalidArgument, "{bad}");
        }
        assert_eq!(
            requested(None, Some(&glacier)).unwrap_err().code(),
            &S3ErrorCode::InvalidStorageClass
        );
    }

    #[test]
    fn kept_metadata_drops_the_answered_keys() {
        let kept = kept_metadata(Some(meta(&[
            ("replicas", "3"),
            ("Owner", "ann"),
            ("ready-replicas", "9"),
        ])));
        assert_eq!(
            kept,
            BTreeMap::from([("owner".to_string(), "ann".to_string())])
        );
        let tags = BTreeMap::from([("replicas".to_string(), "2".to_string())]);
        assert_eq!(bucket_default(&tags), Some(2));
        assert_eq!(bucket_default(&BTreeMap::new()), None);
    }
}
