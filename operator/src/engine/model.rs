//! What the engine reconciles: one file's desired state and last status, as a mode's catalog
//! stores it, whatever that catalog is (a SQLite row, a StoredFile resource).

use deposito_api::gateway::{Condition, FileStatus, LifecycleStatus, Phase};
use deposito_api::lifecycle::{format_time, Lifecycle};

pub use super::aging::Aging;
use deposito_api::FileKey;
use serde::{Deserialize, Serialize};

/// The part of a record the engine writes: what it last observed and decided. Deterministic:
/// no timestamps, so publishing the same observation twice changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedStatus {
    pub phase: Phase,
    pub ready_replicas: u32,
    pub holders: Vec<String>,
    /// Holders of the current content that were unreachable (within the grace period) at the
    /// last reconcile: they still count toward the replication level.
    #[serde(default)]
    pub unreachable_holders: Vec<String>,
    pub observed_generation: u64,
    pub conditions: Vec<Condition>,
    /// The lifecycle step in force when this status was computed (0 without a lifecycle):
    /// a change is a transition, told by an Event.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lifecycle_step: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl ObservedStatus {
    /// The status of a record nobody has reconciled yet; `holder` is the replica that
    /// acknowledged the content, if any.
    pub fn initial(holder: Option<&str>) -> Self {
        Self {
            phase: Phase::Pending,
            ready_replicas: 0,
            holders: holder.map(str::to_string).into_iter().collect(),
            unreachable_holders: vec![],
            observed_generation: 0,
            conditions: vec![],
            lifecycle_step: 0,
        }
    }
}

/// New content the replicas acknowledged, as the gateway records it in a catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deposit {
    /// The storage key (in kube mode the StoredFile's name, which may differ from the file
    /// name).
    pub key: FileKey,
    /// The user's file name.
    pub file_name: String,
    pub replicas: u32,
    pub sha256: String,
    pub size: u64,
    /// The replica that acknowledged the bytes first.
    pub holder: String,
    /// When the content was acknowledged, and what an S3 client gave with it.
    pub attrs: ContentAttrs,
    /// The file's lifecycle from now on (its age restarts with this content).
    pub lifecycle: Option<Lifecycle>,
    /// The retention lock the deposit asks for.
    pub retain_until_ms: Option<u64>,
}

/// Facts about a file's current content besides its bytes: when it was acknowledged, and
/// what S3 clients send and expect back (Content-Type, user metadata, the MD5 ETag). Kept
/// with the content in the catalog, so replacing the content replaces them together.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContentAttrs {
    /// When the content was acknowledged, in milliseconds since the Unix epoch.
    #[serde(rename = "t", default)]
    pub modified_ms: u64,
    /// The S3 ETag (without quotes): the MD5 of the content, or for an object assembled
    /// from parts the MD5 of the parts' MD5s followed by `-` and the number of parts. Absent
    /// for content deposited through the native API (S3 then gets the sha256).
    #[serde(rename = "m", default, skip_serializing_if = "Option::is_none")]
    pub md5_etag: Option<String>,
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// S3 user metadata (`x-amz-meta-*`), keys lowercased.
    #[serde(
        rename = "u",
        default,
        skip_serializing_if = "std::collections::BTreeMap::is_empty"
    )]
    pub metadata: std::collections::BTreeMap<String, String>,
}

impl ContentAttrs {
    /// Attributes of content acknowledged now, with nothing else known.
    pub fn now() -> Self {
        Self {
            modified_ms: now_ms(),
            ..Self::default()
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    deposito_util::clock::unix_now_ms()
}

impl Deposit {
    /// A deposit whose file name is its key's name (local mode, tests).
    pub fn of_key(key: &FileKey, replicas: u32, sha256: &str, size: u64, holder: &str) -> Self {
        Self {
            key: key.clone(),
            file_name: key.name.clone(),
            replicas,
            sha256: sha256.to_string(),
            size,
            holder: holder.to_string(),
            attrs: ContentAttrs::now(),
            lifecycle: None,
            retain_until_ms: None,
        }
    }
}

/// Where a file's content comes from, which decides whether the engine can create the first
/// copy itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The content arrived through the gateway: only the copies hold it.
    Upload,
    /// Small content kept in the catalog itself (a StoredFile's `source.inline`): the engine
    /// reads it with [`super::Catalog::inline_content`] and writes it to a replica.
    Inline,
    /// An `http(s)` address a replica fetches (a StoredFile's `source.url`), verified
    /// against the record's `sha256` when it is known.
    Url(String),
}

impl Source {
    /// True when the engine can (re)create a copy without any replica holding one.
    pub fn can_ingest(&self) -> bool {
        !matches!(self, Source::Upload)
    }
}

/// One file as its catalog knows it: desired state plus last status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    /// The storage identity: copies live at `objects/{namespace}/{name}/{sha256}` on the
    /// replicas. In local mode `name` is the file name; in kube mode it is the StoredFile's
    /// `metadata.name`.
    pub key: FileKey,
    /// The user's file name (`spec.fileName` in kube mode).
    pub file_name: String,
    /// Wanted replication level N.
    pub replicas: u32,
    /// The current content's sha256; empty while it is not known yet (a `url` source without
    /// `spec.sha256` that was never fetched).
    pub sha256: String,
    /// The content's size; 0 while unknown.
    pub size: u64,
    /// Bumped on every change of the desired state.
    pub generation: u64,
    /// Deletion requested: every copy goes, then the record.
    pub deleting: bool,
    pub source: Source,
    pub status: ObservedStatus,
    /// What the file's age decides: its lifecycle and its retention lock.
    pub aging: Aging,
}

impl FileRecord {
    /// The user-facing status.
    pub fn to_file_status(&self) -> FileStatus {
        let now = now_ms();
        let schedule = self.schedule(now);
        FileStatus {
            namespace: self.key.namespace.clone(),
            name: self.file_name.clone(),
            replicas: schedule.replicas.unwrap_or(self.replicas),
            ready_replicas: self.status.ready_replicas,
            phase: if self.deleting {
                Phase::Deleting
            } else {
                self.status.phase
            },
            sha256: self.sha256.clone(),
            size: self.size,
            holders: self.status.holders.clone(),
            generation: self.generation,
            observed_generation: self.status.observed_generation,
            conditions: self.status.conditions.clone(),
            lifecycle: self.aging.lifecycle.as_ref().map(|l| LifecycleStatus {
                spec: l.to_string(),
                step: schedule.step as u32,
                next_transition: schedule.next_ms.map(format_time),
                expires: l.expires_ms(self.aging.acked_ms).map(format_time),
            }),
            retain_until: self.retained_at(now).map(format_time),
        }
    }
}
