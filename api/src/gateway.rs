//! Bodies of the gateway API (`/v1/files/...`), served by the operator to clients.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a stored file stands, from the user's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Phase {
    /// Known, but no verified copy has been observed yet.
    Pending,
    /// Fewer verified copies than wanted; copies are being added.
    Replicating,
    /// Exactly the wanted number of verified copies, and nothing extra.
    Ready,
    /// More copies than wanted, or stale or corrupt ones; extras are being removed.
    Trimming,
    /// The wanted level can't be reached now (too few replicas, or holders unreachable).
    Degraded,
    /// No verified copy is reachable.
    Lost,
    /// Deletion was requested; copies are being removed.
    Deleting,
    /// The content could not be obtained (a `url` source that fails, or serves other bytes
    /// than its `sha256`); the `Failed` condition says why.
    Failed,
}

impl Phase {
    /// Every phase, in declaration order.
    pub const ALL: [Phase; 8] = [
        Phase::Pending,
        Phase::Replicating,
        Phase::Ready,
        Phase::Trimming,
        Phase::Degraded,
        Phase::Lost,
        Phase::Deleting,
        Phase::Failed,
    ];

    /// The name shown in status, listings and messages (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Replicating => "Replicating",
            Phase::Ready => "Ready",
            Phase::Trimming => "Trimming",
            Phase::Degraded => "Degraded",
            Phase::Lost => "Lost",
            Phase::Deleting => "Deleting",
            Phase::Failed => "Failed",
        }
    }

    /// The phase named `name` (as [`Phase::as_str`] spells it).
    pub fn parse(name: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

/// When a deposit is acknowledged (`PUT ...?ack=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ack {
    /// Once the first copy is verified and fsync'd; the reconcile loop adds the others.
    One,
    /// Once the bytes, sent to the N chosen replicas at once as they arrive, are verified and
    /// fsync'd on each (fewer when a replica fails mid-way: at least one, the reconcile loop
    /// adds the rest). The default.
    #[default]
    All,
}

impl Ack {
    /// The query value (`one`, `all`).
    pub fn as_str(self) -> &'static str {
        match self {
            Ack::One => "one",
            Ack::All => "all",
        }
    }

    /// The mode a query value names.
    pub fn parse(value: &str) -> Option<Ack> {
        [Ack::One, Ack::All]
            .into_iter()
            .find(|a| a.as_str() == value)
    }
}

/// A condition in the Kubernetes sense: a named boolean with a reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// Status of one stored file. Deterministic: no timestamps that change on every pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileStatus {
    pub namespace: String,
    pub name: String,
    /// Wanted replication level.
    pub replicas: u32,
    /// Number of verified copies of the current content on live replicas.
    pub ready_replicas: u32,
    pub phase: Phase,
    /// The current content's sha256 (lowercase hex).
    pub sha256: String,
    /// The current content's size in bytes.
    pub size: u64,
    /// Replica ids holding a verified copy of the current content, sorted.
    pub holders: Vec<String>,
    /// Bumped on every change of content or replication level.
    pub generation: u64,
    /// The generation the status was computed for.
    pub observed_generation: u64,
    pub conditions: Vec<Condition>,
    /// The file's lifecycle and what it has in force now; absent when it has none (then
    /// `replicas` is its level for good).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<LifecycleStatus>,
    /// Until this moment (RFC 3339) the file can't be deleted, replaced or lowered below the
    /// level in force; absent when it has no retention lock or the lock has passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_until: Option<String>,
}

/// A file's lifecycle (see [`crate::lifecycle`]) and where it stands. `replicas` of the
/// file's status is the level in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleStatus {
    /// The canonical spec, e.g. `3,1@7d,expire@90d`.
    pub spec: String,
    /// How many steps have taken effect (0: the starting level).
    pub step: u32,
    /// When the next step or the expiry falls due (RFC 3339); absent after the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_transition: Option<String>,
    /// When the file expires (RFC 3339), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

impl FileStatus {
    /// True when the file has exactly `replicas` verified copies and nothing extra.
    pub fn is_converged(&self) -> bool {
        self.phase == Phase::Ready
            && self.observed_generation == self.generation
            && self.ready_replicas == self.replicas
            && self.holders.len() == self.replicas as usize
    }
}

/// `GET /v1/files/{namespace}[?limit=N][&after=NEXT]`: one page of a namespace's files,
/// sorted by name. `next`, when present, is the `after` of the following page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileList {
    pub items: Vec<FileStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `PATCH /v1/files/{namespace}/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatchFile {
    /// New replication level, from 1 to [`crate::openapi::MAX_REPLICAS`] (the level before
    /// the first step of a lifecycle).
    #[schema(minimum = 1, maximum = 512)]
    #[serde(default, deserialize_with = "crate::integers::opt_u32")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// New lifecycle (`3,1@7d,expire@90d`); `none` removes it. The pattern is the syntax;
    /// the rules (ages increasing, N from 1 to 512, the expiry last) are checked besides.
    #[schema(
        pattern = r"^(none|([0-9]{1,3}|[0-9]{1,3}@[0-9]{1,10}[smhd]|expire@[0-9]{1,10}[smhd])(,([0-9]{1,3}@[0-9]{1,10}[smhd]|expire@[0-9]{1,10}[smhd])){0,16})(?![\s\S])"
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<String>,
    /// New retention lock, RFC 3339 or a date (`2027-01-31`, midnight UTC): it can be
    /// extended, never shortened.
    #[schema(
        pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2}))?(?![\s\S])"
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_until: Option<String>,
}

/// `GET` and `PUT /v1/namespaces/{namespace}/lifecycle`: the lifecycle of the namespace's
/// files that have none of their own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceLifecycle {
    /// The lifecycle (`1@7d,expire@90d`); absent when the namespace has none. In a `PUT`,
    /// `none` removes it.
    #[schema(
        pattern = r"^(none|([0-9]{1,3}|[0-9]{1,3}@[0-9]{1,10}[smhd]|expire@[0-9]{1,10}[smhd])(,([0-9]{1,3}@[0-9]{1,10}[smhd]|expire@[0-9]{1,10}[smhd])){0,16})(?![\s\S])"
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<String>,
}

/// What `GET /v1/files/{namespace}/{name}/status?wait=...` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WaitFor {
    /// Exactly `replicas` verified copies, nothing extra.
    Converged,
    /// The file is gone (the long poll answers 404 once it is).
    Deleted,
}

/// One storage replica as the gateway sees it (`GET /v1/replicas`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    pub id: String,
    pub url: String,
    pub zone: Option<String>,
    /// `Live`, `Full` (live, serving reads and keeping its copies, but refusing new ones),
    /// `Unreachable` (within the grace period) or `Lost`.
    pub health: String,
    pub draining: bool,
    pub free_bytes: u64,
    pub capacity_bytes: u64,
    pub objects: u64,
    /// Bytes in the replica's trash (reclaimable: emptied first when space runs short).
    #[serde(default)]
    pub trash_bytes: u64,
    /// Copies in the replica's trash.
    #[serde(default)]
    pub trash_objects: u64,
    /// Bytes of verified copies the replica holds (what rebalancing evens out).
    #[serde(default)]
    pub stored_bytes: u64,
    /// Seconds since the replica was last heard from.
    pub last_seen_secs_ago: u64,
}

/// `GET /v1/replicas`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaList {
    pub items: Vec<ReplicaStatus>,
}

/// `PATCH /v1/replicas/{id}`: mark a replica draining (no new copies; its copies move away).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PatchReplica {
    pub draining: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_replicas_takes_json_integers_only() {
        let parse = |json: &str| serde_json::from_str::<PatchFile>(json).map(|p| p.replicas);
        assert_eq!(parse(r#"{"replicas":3}"#).unwrap(), Some(3));
        assert_eq!(parse(r#"{"replicas":228.0}"#).unwrap(), Some(228));
        // Absent or null: no change of level (a lifecycle or a lock alone).
        assert_eq!(parse(r#"{"lifecycle":"3,1@7d"}"#).unwrap(), None);
        assert_eq!(parse(r#"{"replicas":null}"#).unwrap(), None);
        for bad in [
            r#"{"replicas":1.5}"#,
            r#"{"replicas":-1}"#,
            r#"{"replicas":"3"}"#,
            r#"{"replicas":4294967296}"#,
            r#"{"replicas":1e300}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn phase_names_are_what_serde_writes_and_parse_back() {
        for phase in Phase::ALL {
            let json = serde_json::to_string(&phase).unwrap();
            assert_eq!(json, format!("\"{}\"", phase.as_str()));
            assert_eq!(Phase::parse(phase.as_str()), Some(phase));
        }
        assert_eq!(Phase::parse("Unknown"), None);
    }
}
