//! What the operator's watch cache keeps of a StoredFile: [`CachedFile`], a compact record
//! instead of the typed object, so that 100,000 StoredFiles fit in the operator's memory
//! limit with room to spare.
//!
//! A StoredFile coming from the API server (a watch event, a list page, the answer to a
//! patch) is turned into a `CachedFile` as it is decoded: the metadata the operator uses
//! (name, namespace, uid, resourceVersion, generation, deletionTimestamp, finalizers), the
//! engine's reading of the spec (or why the spec cannot be acted on), and the status with
//! its strings shared between files (condition types, reasons and messages, holder names
//! and phases repeat across thousands of files). Inline content, managedFields, labels,
//! annotations and the `kubectl apply` copy are not kept; inline content is read from the
//! API server when a copy must be made.
//!
//! The status is kept with a digest of it exactly as received, so that a status to write is
//! compared with the one the object has without keeping every field in its wire form.

use std::borrow::{Borrow, Cow};
use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex, OnceLock};

use deposito_api::FileKey;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::content_attrs::described;
use super::crd::{display_size, StoredFile, StoredFileCondition, StoredFileStatus};
use super::record::{observed_of, record_of, source_revision};
use crate::engine::error::PlanError;
use crate::engine::{ContentAttrs, FileRecord, ObservedStatus, Source};

/// Strings longer than this are not shared (a long message is likely one file's own).
const SHARE_UP_TO: usize = 256;
/// Most distinct strings shared; later ones are kept per file.
const SHARE_AT_MOST: usize = 8192;

/// One copy of each value the cache keeps many times (holder names and lists, conditions,
/// phases). Bounded: values beyond [`SHARE_AT_MOST`] are kept per file.
struct Pool<T: ?Sized>(OnceLock<Mutex<HashSet<Arc<T>>>>);

impl<T: ?Sized + Eq + Hash> Pool<T> {
    const fn new() -> Self {
        Self(OnceLock::new())
    }

    /// The shared copy of `value` (`make` builds one when there is none yet).
    fn share<Q>(&self, value: &Q, make: impl FnOnce(&Q) -> Arc<T>) -> Arc<T>
    where
        Arc<T>: Borrow<Q>,
        Q: ?Sized + Eq + Hash,
    {
        let mut pool = deposito_util::lock(self.0.get_or_init(Mutex::default), "shared values");
        if let Some(existing) = pool.get(value) {
            return existing.clone();
        }
        let new = make(value);
        if pool.len() < SHARE_AT_MOST {
            pool.insert(new.clone());
        }
        new
    }
}

/// The shared copy of a short string; a long one (likely one file's own) is not shared.
fn shared(s: &str) -> Arc<str> {
    static STRINGS: Pool<str> = Pool::new();
    if s.len() > SHARE_UP_TO {
        return Arc::from(s);
    }
    STRINGS.share(s, |s| Arc::from(s))
}

/// The shared copy of a list of replica names (a handful of replicas give few lists).
fn shared_names(names: &[String]) -> Arc<[Arc<str>]> {
    static LISTS: Pool<[Arc<str>]> = Pool::new();
    let names: Vec<Arc<str>> = names.iter().map(|n| shared(n)).collect();
    if names.is_empty() {
        return Arc::from(names);
    }
    LISTS.share(&names[..], |n| Arc::from(n))
}

fn digest_bytes(hex_sha: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_sha, &mut out).ok()?;
    Some(out)
}

/// The engine's reading of a valid spec (with what the status taught about a `url`).
#[derive(Clone, Debug, PartialEq)]
struct CachedSpec {
    replicas: u32,
    source: CachedSource,
    /// The content's digest; `None` while unknown (a `url` never fetched).
    sha256: Option<[u8; 32]>,
    size: u64,
    /// [`source_revision`] of the spec: what the status records next to a learned digest.
    revision: Box<str>,
    /// The attributes of the content `sha256` ([`super::content_attrs`]), for the files that
    /// have them.
    content: Option<Box<ContentAttrs>>,
}

#[derive(Clone, Debug, PartialEq)]
enum CachedSource {
    Inline,
    /// Behind a thin pointer: the enum stays at 16 bytes (see the size test).
    #[allow(
        clippy::box_collection,
        reason = "the thin pointer is the point: a cached file stays within 640 bytes"
    )]
    Url(Box<String>),
    Upload,
}

/// What many files' conditions have in common, kept once.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ConditionText {
    type_: String,
    status: String,
    reason: String,
    message: String,
}

#[derive(Clone, Debug, PartialEq)]
struct CachedCondition {
    text: Arc<ConditionText>,
    observed_generation: Option<i64>,
    last_transition_time: Time,
}

impl CachedCondition {
    fn of(c: &StoredFileCondition) -> Self {
        static TEXTS: Pool<ConditionText> = Pool::new();
        let text = ConditionText {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
        };
        let text = if c.message.len() > SHARE_UP_TO {
            Arc::new(text)
        } else {
            TEXTS.share(&text, |t| {
                Arc::new(ConditionText {
                    type_: t.type_.clone(),
                    status: t.status.clone(),
                    reason: t.reason.clone(),
                    message: t.message.clone(),
                })
            })
        };
        Self {
            text,
            observed_generation: c.observed_generation,
            last_transition_time: c.last_transition_time.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct CachedStatus {
    phase: Option<Arc<str>>,
    observed_generation: Option<i64>,
    /// `status.sha256` when it is a sha256 (anything else is rewritten by the next publish).
    sha256: Option<[u8; 32]>,
    size: Option<i64>,
    ready_replicas: i32,
    holders: Arc<[Arc<str>]>,
    unreachable_holders: Arc<[Arc<str>]>,
    source_revision: Option<Box<str>>,
    conditions: Box<[CachedCondition]>,
    /// The status as received, digested: see [`CachedFile::has_status`]. 64 bits: enough
    /// to tell a changed status (a collision would only delay one status write), and it
    /// keeps a cached file within one smaller allocation size.
    digest: [u8; 8],
}

/// Digest of a status in its wire form (serialization is deterministic: fields in
/// declaration order).
fn status_digest(status: &StoredFileStatus) -> [u8; 8] {
    use sha2::{Digest, Sha256};
    let wire = serde_json::to_vec(status).unwrap_or_default();
    let full = Sha256::digest(&wire);
    let mut out = [0u8; 8];
    out.copy_from_slice(&full[..8]);
    out
}

impl CachedStatus {
    fn of(status: &StoredFileStatus) -> Self {
        Self {
            phase: status.phase.as_deref().map(shared),
            observed_generation: status.observed_generation,
            sha256: status.sha256.as_deref().and_then(digest_bytes),
            size: status.size,
            ready_replicas: status.ready_replicas,
            holders: shared_names(&status.holders),
            unreachable_holders: shared_names(&status.unreachable_holders),
            source_revision: status.source_revision.as_deref().map(Box::from),
            conditions: status.conditions.iter().map(CachedCondition::of).collect(),
            digest: status_digest(status),
        }
    }

    fn to_status(&self) -> StoredFileStatus {
        let names = |v: &[Arc<str>]| v.iter().map(ToString::to_string).collect();
        StoredFileStatus {
            phase: self.phase.as_deref().map(str::to_string),
            observed_generation: self.observed_generation,
            sha256: self.sha256.map(hex::encode),
            size: self.size,
            display_size: self.size.map(|s| display_size(s.max(0) as u64)),
            ready_replicas: self.ready_replicas,
            holders: names(&self.holders),
            unreachable_holders: names(&self.unreachable_holders),
            source_revision: self.source_revision.as_deref().map(str::to_string),
            conditions: self
                .conditions
                .iter()
                .map(|c| StoredFileCondition {
                    type_: c.text.type_.clone(),
                    status: c.text.status.clone(),
                    observed_generation: c.observed_generation,
                    last_transition_time: c.last_transition_time.clone(),
                    reason: c.text.reason.clone(),
                    message: c.text.message.clone(),
                })
                .collect(),
        }
    }
}

/// A StoredFile as the operator's cache keeps it. Decoded from a StoredFile (so that
/// `Api<CachedFile>` lists, watches and patches StoredFiles), and a [`Resource`] of the same
/// kind, so the reflector, the controller and `finalizer()` work with it as they would with
/// the typed object.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedFile {
    /// Only name, namespace, uid, resourceVersion, generation, deletionTimestamp and
    /// finalizers.
    pub metadata: ObjectMeta,
    /// `spec.fileName` when set.
    file_name: Option<Box<str>>,
    /// The engine's reading of the spec, or why the engine cannot act on it.
    spec: Result<CachedSpec, Box<str>>,
    status: Option<CachedStatus>,
}

impl From<StoredFile> for CachedFile {
    fn from(sf: StoredFile) -> Self {
        let content = described(sf.metadata.annotations.as_ref(), sf.spec.sha256.as_deref());
        let spec = match record_of(&sf) {
            Ok(record) => Ok(CachedSpec {
                replicas: record.replicas,
                source: match record.source {
                    Source::Inline => CachedSource::Inline,
                    Source::Url(url) => CachedSource::Url(Box::new(url)),
                    Source::Upload => CachedSource::Upload,
                },
                sha256: digest_bytes(&record.sha256),
                // Until the status learns it, the size the gateway recorded with the content.
                size: match (&content, record.size) {
                    (Some(c), 0) => c.size,
                    (_, learned) => learned,
                },
                revision: source_revision(&sf.spec).into(),
                content: content.map(|c| Box::new(c.attrs)),
            }),
            Err(PlanError::InvalidSpec(why)) => Err(why.into()),
        };
        let m = sf.metadata;
        Self {
            metadata: ObjectMeta {
                name: m.name,
                namespace: m.namespace,
                uid: m.uid,
                resource_version: m.resource_version,
                generation: m.generation,
                deletion_timestamp: m.deletion_timestamp,
                finalizers: m.finalizers,
                ..ObjectMeta::default()
            },
            file_name: sf.spec.file_name.map(String::into_boxed_str),
            spec,
            status: sf.status.as_ref().map(CachedStatus::of),
        }
    }
}

impl<'de> Deserialize<'de> for CachedFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        StoredFile::deserialize(deserializer).map(Self::from)
    }
}

/// What a `CachedFile` still says of its StoredFile (no spec: it is not kept). Only
/// `finalizer()`'s bounds ask for this; nothing sends it.
impl Serialize for CachedFile {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            api_version: Cow<'a, str>,
            kind: Cow<'a, str>,
            metadata: &'a ObjectMeta,
            #[serde(skip_serializing_if = "Option::is_none")]
            status: Option<StoredFileStatus>,
        }
        Wire {
            api_version: StoredFile::api_version(&()),
            kind: StoredFile::kind(&()),
            metadata: &self.metadata,
            status: self.status(),
        }
        .serialize(serializer)
    }
}

impl Resource for CachedFile {
    type DynamicType = ();
    type Scope = <StoredFile as Resource>::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        StoredFile::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        StoredFile::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        StoredFile::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        StoredFile::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl CachedFile {
    /// The user's file name: `spec.fileName`, or `metadata.name`.
    pub fn file_name(&self) -> String {
        self.file_name
            .as_deref()
            .map_or_else(|| self.name_any(), str::to_string)
    }

    /// The status as the object has it (`displaySize` as this operator writes it).
    pub fn status(&self) -> Option<StoredFileStatus> {
        self.status.as_ref().map(CachedStatus::to_status)
    }

    /// Whether the object's status is exactly `status` (nothing to write).
    pub fn has_status(&self, status: &StoredFileStatus) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.digest == status_digest(status))
    }

    /// The attributes of the current content, when the StoredFile has them.
    pub fn content_attrs(&self) -> Option<&ContentAttrs> {
        self.spec.as_ref().ok()?.content.as_deref()
    }

    /// [`source_revision`] of the spec; `None` when the spec is invalid.
    pub fn source_revision(&self) -> Option<&str> {
        self.spec.as_ref().ok().map(|s| &*s.revision)
    }

    /// The engine's record. Errors are specs the engine cannot act on.
    pub fn record(&self) -> Result<FileRecord, PlanError> {
        let spec = self
            .spec
            .as_ref()
            .map_err(|why| PlanError::InvalidSpec(why.to_string()))?;
        let key = FileKey::new(&self.namespace().unwrap_or_default(), &self.name_any())
            .map_err(|e| PlanError::InvalidSpec(format!("metadata.name: {e}")))?;
        Ok(FileRecord {
            key,
            file_name: self.file_name(),
            replicas: spec.replicas,
            sha256: spec.sha256.map(hex::encode).unwrap_or_default(),
            size: spec.size,
            generation: self.metadata.generation.unwrap_or(0).max(0) as u64,
            deleting: self.metadata.deletion_timestamp.is_some(),
            source: match &spec.source {
                CachedSource::Inline => Source::Inline,
                CachedSource::Url(url) => Source::Url(url.to_string()),
                CachedSource::Upload => Source::Upload,
            },
            status: self
                .status()
                .map_or_else(|| ObservedStatus::initial(None), |s| observed_of(&s)),
            aging: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
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
}
