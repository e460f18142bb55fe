//! Tests of the StoredFile cache: what it keeps of each resource and how little.

use super::*;
use crate::kube::crd::{FileSource, UploadSource};
use crate::kube::record::tests::inline;
use crate::kube::record::{now, status_of};
use deposito_api::gateway::{Condition, Phase};

/// The record tests' StoredFile, with the metadata a real one carries.
fn sf(name: &str, source: FileSource, sha: Option<&str>) -> StoredFile {
    let mut sf = crate::kube::record::tests::sf(name, source, sha);
    sf.metadata.uid = Some("uid-1".into());
    sf.metadata.resource_version = Some("41".into());
    sf.metadata.finalizers = Some(vec![crate::kube::crd::FINALIZER.into()]);
    sf.metadata.labels = Some([("team".to_string(), "a".to_string())].into());
    sf.metadata.managed_fields = Some(vec![Default::default()]);
    sf
}

fn observed(holders: &[&str]) -> ObservedStatus {
    ObservedStatus {
        phase: Phase::Ready,
        ready_replicas: holders.len() as u32,
        holders: holders.iter().map(ToString::to_string).collect(),
        unreachable_holders: vec![],
        observed_generation: 3,
        conditions: vec![
            Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "Converged".into(),
                message: "2 of 2 verified copies".into(),
            },
            Condition {
                type_: "Degraded".into(),
                status: "False".into(),
                reason: "AsWanted".into(),
                message: String::new(),
            },
        ],
        lifecycle_step: 0,
    }
}

#[test]
fn the_cache_gives_the_same_record_as_the_object_without_its_content() {
    let url = FileSource {
        url: Some("https://example.com/a".into()),
        ..FileSource::default()
    };
    let upload = FileSource {
        upload: Some(UploadSource {}),
        ..FileSource::default()
    };
    let sha = "c".repeat(64);
    let cases = [
        sf("inline", inline("some content"), None),
        sf("url", url, None),
        sf("upload", upload, Some(&sha)),
    ];
    for mut full in cases {
        let record = record_of(&full).unwrap();
        let status = status_of(
            &record,
            &source_revision(&full.spec),
            &observed(&["rep-0", "rep-1"]),
            None,
            &now(),
        );
        full.status = Some(status.clone());
        let cached = CachedFile::from(full.clone());
        assert_eq!(cached.record().unwrap(), record_of(&full).unwrap());
        assert_eq!(cached.status(), Some(status.clone()));
        assert!(cached.has_status(&status));
        let mut other = status.clone();
        other.conditions[0].message = "1 of 2 verified copies".into();
        assert!(!cached.has_status(&other));
        assert_eq!(cached.file_name(), full.metadata.name.clone().unwrap());
        // Only the metadata the operator uses.
        assert_eq!(cached.metadata.labels, None);
        assert_eq!(cached.metadata.managed_fields, None);
        assert_eq!(cached.metadata.finalizers, full.metadata.finalizers);
        assert_eq!(cached.metadata.uid.as_deref(), Some("uid-1"));
        assert_eq!(cached.metadata.resource_version.as_deref(), Some("41"));
    }
}

#[test]
fn an_invalid_spec_is_kept_as_its_reason_and_a_status_digest_catches_any_difference() {
    let mut bad = sf("two", inline("a"), Some(&"d".repeat(64)));
    bad.spec.file_name = Some("f.txt".into());
    let cached = CachedFile::from(bad.clone());
    let err = cached.record().unwrap_err().to_string();
    assert_eq!(err, record_of(&bad).unwrap_err().to_string());
    assert!(err.contains("does not match the inline content"), "{err}");
    assert_eq!(cached.file_name(), "f.txt");
    assert_eq!(cached.source_revision(), None);
    assert!(
        !cached.has_status(&StoredFileStatus::default()),
        "no status at all"
    );
    // A status not in the shape this operator writes (here a displaySize of its own)
    // reads back as the operator would write it, and does not count as equal.
    let mut odd = StoredFileStatus {
        size: Some(2048),
        display_size: Some("two KiB".into()),
        ..StoredFileStatus::default()
    };
    bad.status = Some(odd.clone());
    let cached = CachedFile::from(bad);
    assert!(cached.has_status(&odd));
    odd.display_size = Some(display_size(2048));
    assert_eq!(cached.status(), Some(odd.clone()));
    assert!(!cached.has_status(&odd));
}

/// The reflector keeps each file in an `Arc` (two counters, 16 bytes): with the file,
/// within jemalloc's 640-byte size class (the next is 768).
#[test]
fn a_cached_file_and_its_arc_counters_fit_in_640_bytes() {
    assert!(
        std::mem::size_of::<CachedFile>() + 16 <= 640,
        "{}",
        std::mem::size_of::<CachedFile>()
    );
}

#[test]
fn content_attributes_are_kept_only_for_the_content_they_name() {
    use crate::kube::content_attrs::{annotation_value, CONTENT_ANNOTATION};
    let sha = "c".repeat(64);
    let attrs = ContentAttrs {
        modified_ms: 42,
        content_type: Some("text/plain".into()),
        ..ContentAttrs::default()
    };
    let upload = FileSource {
        upload: Some(UploadSource {}),
        ..FileSource::default()
    };
    let mut with = sf("f", upload, Some(&sha));
    let value = annotation_value(&sha, 9, &attrs);
    with.metadata.annotations = Some([(CONTENT_ANNOTATION.to_string(), value)].into());
    assert_eq!(CachedFile::from(with.clone()).content_attrs(), Some(&attrs));
    // The size recorded with the content, until the status learns it.
    assert_eq!(CachedFile::from(with.clone()).record().unwrap().size, 9);
    // Content replaced without new attributes: the old ones are not carried over.
    with.spec.sha256 = Some("d".repeat(64));
    assert_eq!(CachedFile::from(with.clone()).content_attrs(), None);
    assert_eq!(CachedFile::from(with).record().unwrap().size, 0);
    assert_eq!(
        CachedFile::from(sf("g", inline("hi"), None)).content_attrs(),
        None
    );
}

#[test]
fn repeated_values_are_kept_once() {
    let a = shared("bench-deposito-replica-0");
    let b = shared(&String::from("bench-deposito-replica-0"));
    assert!(Arc::ptr_eq(&a, &b));
    let long = "x".repeat(SHARE_UP_TO + 1);
    assert!(!Arc::ptr_eq(&shared(&long), &shared(&long)));
    let holders = ["rep-0".to_string(), "rep-2".to_string()];
    assert!(Arc::ptr_eq(
        &shared_names(&holders),
        &shared_names(&holders.clone())
    ));
    assert_eq!(shared_names(&holders)[1].as_ref(), "rep-2");
    let condition = StoredFileCondition {
        type_: "Ready".into(),
        status: "True".into(),
        observed_generation: Some(1),
        last_transition_time: now(),
        reason: "Converged".into(),
        message: "2 of 2".into(),
    };
    let (a, b) = (
        CachedCondition::of(&condition),
        CachedCondition::of(&condition),
    );
    assert!(Arc::ptr_eq(&a.text, &b.text));
}

#[test]
fn a_cached_file_decodes_from_a_storedfile_and_names_its_kind() {
    let mut full = sf("f", inline("hi"), None);
    full.status = Some(StoredFileStatus::default());
    let json = serde_json::to_value(&full).unwrap();
    let cached: CachedFile = serde_json::from_value(json).unwrap();
    assert_eq!(cached, CachedFile::from(full));
    assert_eq!(CachedFile::kind(&()), "StoredFile");
    assert_eq!(CachedFile::plural(&()), "storedfiles");
    assert_eq!(CachedFile::api_version(&()), "deposito.io/v1alpha1");
    let wire = serde_json::to_value(&cached).unwrap();
    assert_eq!(wire["kind"], "StoredFile");
    assert_eq!(wire["metadata"]["name"], "f");
}
