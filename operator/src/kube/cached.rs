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
use crate::engine::{Aging, ContentAttrs, FileRecord, ObservedStatus, Source};

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
    /// What the file's age decides, for the files with a lifecycle, a lock or a known age 0.
    aging: Option<Box<Aging>>,
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
    conditions: Box<[CachedCondition]>,
    /// `sourceRevision` and the fields of the file's age, in one allocation, for the
    /// statuses that have any.
    extra: Option<Box<StatusExtra>>,
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
            conditions: status.conditions.iter().map(CachedCondition::of).collect(),
            extra: extra_fields(status),
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
            ..self
                .extra
                .as_deref()
                .map(StatusExtra::to_status)
                .unwrap_or_default()
        }
    }
}

/// The rarer fields of a status: `sourceRevision` (every file whose content is known), age 0
/// (`contentSince`), and the fields of a lifecycle or a lock (the files that have one).
#[derive(Clone, Debug, PartialEq)]
struct StatusExtra {
    source_revision: Option<Box<str>>,
    content_since: Option<Time>,
    /// Only the lifecycle's and the lock's fields are set.
    aging: Option<Box<StoredFileStatus>>,
}

impl StatusExtra {
    fn to_status(&self) -> StoredFileStatus {
        StoredFileStatus {
            source_revision: self.source_revision.as_deref().map(str::to_string),
            content_since: self.content_since.clone(),
            ..self.aging.as_deref().cloned().unwrap_or_default()
        }
    }
}

/// [`StatusExtra`] of a status; `None` when it has none of those fields.
fn extra_fields(status: &StoredFileStatus) -> Option<Box<StatusExtra>> {
    let aging = StoredFileStatus {
        replicas_in_force: status.replicas_in_force,
        lifecycle_step: status.lifecycle_step,
        next_transition: status.next_transition.clone(),
        expires: status.expires.clone(),
        retained_until: status.retained_until.clone(),
        ..StoredFileStatus::default()
    };
    let extra = StatusExtra {
        source_revision: status.source_revision.as_deref().map(Box::from),
        content_since: status.content_since.clone(),
        aging: (aging != StoredFileStatus::default()).then(|| Box::new(aging)),
    };
    let empty =
        extra.source_revision.is_none() && extra.content_since.is_none() && extra.aging.is_none();
    (!empty).then(|| Box::new(extra))
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
                aging: (record.aging != Aging::default()).then(|| Box::new(record.aging)),
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
            aging: spec.aging.as_deref().cloned().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
#[path = "cached_tests.rs"]
mod tests;
