//! Inputs and outputs of the pure reconcile core.
//!
//! Everything the plan needs arrives in these types: the desired state of one file (from the
//! catalog), the replicas and their health (from membership), and the copies the live
//! replicas report holding (from their inventories). Nothing here reads a clock or a socket.

use deposito_api::gateway::{Condition, Phase};
use deposito_api::replica::ObjectState;
use serde::{Deserialize, Serialize};

/// Stable identity of a storage replica (its registered id, or its pod name in kube mode).
pub type ReplicaId = String;

/// How membership currently sees a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Health {
    /// Heard from recently and ready: its inventory is observed, it can take and serve copies.
    Live,
    /// Not heard from (or not ready) for less than the grace period. Its copies, as recorded
    /// in the last status, still count toward the replication level: they are not replaced
    /// hastily (rule 8).
    Unreachable,
    /// Not heard from for longer than the grace period. Its copies count for nothing and are
    /// replaced elsewhere.
    Lost,
}

impl Health {
    /// The name used in `ReplicaStatus.health` and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Live => "Live",
            Health::Unreachable => "Unreachable",
            Health::Lost => "Lost",
        }
    }
}

/// One storage replica as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaView {
    pub id: ReplicaId,
    /// Topology zone (or node label). `None` means "no zone information": such a replica is
    /// treated as a zone of its own.
    pub zone: Option<String>,
    pub health: Health,
    /// Marked for removal: gets no new copies, and its copies move elsewhere (rule 9).
    pub draining: bool,
    /// Free space reported by the replica. A replica with less free space than the file's
    /// size is not chosen as a pull target.
    pub free_bytes: u64,
    /// Transfers in progress on the replica: its current load.
    pub active_transfers: u64,
    /// Live but out of space: it refuses new copies (never a pull target), while its copies
    /// count, serve reads and stay where they are, as on any live replica. Capacity is not
    /// liveness: only an unreachable replica starts the grace period.
    #[serde(default)]
    pub full: bool,
    /// Base URL of the replica's API (not used by the plan; carried for the executor).
    pub url: String,
}

/// One copy of a file, as reported by a replica's inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyView {
    pub replica: ReplicaId,
    pub sha256: String,
    pub size: u64,
    pub state: ObjectState,
    /// When the replica committed this copy, in milliseconds since the Unix epoch
    /// (`ObjectInfo::committed_ms`). Tells old content from newer (see
    /// [`DesiredFile::acked_ms`]) and recent copies from settled ones (see
    /// [`DesiredFile::stale_cutoff_ms`]).
    pub stored_at_ms: u64,
}

/// The desired state of one file, from the catalog (spec plus what the last status recorded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredFile {
    pub namespace: String,
    pub name: String,
    /// Wanted replication level N. Validation keeps it at least 1; the plan treats 0 as 1 so
    /// that the last verified copy is never trimmed away.
    pub replicas: u32,
    /// The current content's digest.
    pub sha256: String,
    pub size: u64,
    pub generation: u64,
    /// Deletion requested: every copy goes, then the catalog entry.
    pub deleting: bool,
    /// Holders of the current content (`sha256`) recorded in the last status. It lets the plan
    /// count copies on Unreachable replicas that it can't observe now. The catalog must clear
    /// it (or set it to the uploading replica) whenever the content (`sha256`) changes:
    /// holders of older content must not count for the new one.
    pub last_holders: Vec<ReplicaId>,
    /// Ready copies of *other* content are touched only when committed at or before this
    /// instant (milliseconds since the Unix epoch). Pass `now - grace` (e.g. the orphan
    /// grace): a younger copy may be a new upload whose catalog commit is still in flight, and
    /// deleting it would lose an acknowledged deposit. `u64::MAX` disables the guard (an
    /// engine that fences uploads, tests); `0` keeps every such copy.
    pub stale_cutoff_ms: u64,
    /// When the current content was acknowledged (milliseconds since the Unix epoch; 0 when
    /// unknown). A Ready copy of other content committed at or before it is older content,
    /// deleted as `Stale`; one committed after it is content newer than anything this catalog
    /// knows (written under a newer catalog that a restored backup replaced, or an upload
    /// whose commit failed): it goes to the replica's trash (`Newer`), never away, so that the
    /// catalog that knows it can bring it back.
    #[serde(default)]
    pub acked_ms: u64,
    /// A rebalancing move asked for this file: one copy to go from `from` to `to`, add before
    /// trim. Ignored unless the file is otherwise at rest (exactly N staying copies, nothing
    /// to repair or restore), `from` holds a staying good copy, `to` could take a new one, and
    /// the move does not crowd a zone.
    #[serde(default)]
    pub moving: Option<Move>,
}

/// A rebalancing move of one copy, from a fuller replica to an emptier one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Move {
    pub from: ReplicaId,
    pub to: ReplicaId,
}

/// Why a copy is to be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DeleteReason {
    /// More verified copies than wanted (N went down).
    Extra,
    /// A verified copy of older content, no longer current.
    Stale,
    /// A verified copy of other content committed after the current content was acknowledged:
    /// newer than anything the catalog knows. It goes to the replica's trash, not away.
    Newer,
    /// A copy that failed verification: never served, replaced.
    Corrupt,
    /// A copy on a draining replica, now that enough copies exist elsewhere.
    Draining,
    /// The file is being deleted.
    FileDeleted,
    /// No catalog entry claims the copy (it goes to the replica's trash, not away).
    Orphan,
    /// A rebalancing move's copy on the fuller replica, once the emptier one holds its own.
    Moved,
}

/// One step for the executor. Pulls are replica-to-replica (rule 6): the target fetches from
/// the source and verifies the digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// `POST {target}/v1/objects/{ns}/{name}/{sha256}/pull` with `{source: url of source}`.
    Pull {
        target: ReplicaId,
        source: ReplicaId,
        sha256: String,
    },
    /// `POST {replica}/v1/objects/{ns}/{name}/{sha256}/restore`: bring back a copy the
    /// replica holds in its trash (verified there, renamed into place: no byte copied).
    Restore { replica: ReplicaId, sha256: String },
    /// `DELETE {replica}/v1/objects/{ns}/{name}/{sha256}`.
    Delete {
        replica: ReplicaId,
        sha256: String,
        reason: DeleteReason,
    },
}

/// A Kubernetes-style event for `kubectl describe` (reason such as `Replicated`, `Trimmed`,
/// `Degraded`, `RepairedCorruptCopy`, `ReplacedLostCopy`). Deterministic: no timestamps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub reason: String,
    pub message: String,
}

/// The outcome of planning one file: what to do now, and the status to publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePlan {
    /// Restores first (sorted by replica), then pulls (sorted by target), then deletes
    /// (sorted by replica, sha256).
    pub actions: Vec<Action>,
    pub phase: Phase,
    /// Verified copies of the current content observed on live replicas (draining included).
    pub ready_replicas: u32,
    /// Sorted ids of the replicas counted in `ready_replicas`. Only observed copies: holders
    /// that are unreachable within the grace period are not listed (they still count toward N
    /// in the plan, through `DesiredFile::last_holders`).
    pub holders: Vec<ReplicaId>,
    /// `Ready` then `Degraded`, each `True` or `False`; deterministic.
    pub conditions: Vec<Condition>,
    /// Events for this pass, in a fixed order.
    pub events: Vec<Event>,
    /// Nothing remains to do: exactly N verified copies on non-draining live replicas, none
    /// unreachable, nothing stale, corrupt or extra. Equivalent to `phase == Ready`.
    pub converged: bool,
    /// Deleting, and no copy of the file is observed on any live replica: the catalog entry
    /// can be removed. Copies on unreachable or lost replicas are left to orphan collection.
    pub finalized: bool,
}

/// A copy that no catalog entry claims and that is older than the orphan grace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OrphanCopy {
    pub replica: ReplicaId,
    pub namespace: String,
    pub name: String,
    pub sha256: String,
}

impl OrphanCopy {
    /// The delete action for this copy (reason `Orphan`).
    pub fn to_action(&self) -> Action {
        Action::Delete {
            replica: self.replica.clone(),
            sha256: self.sha256.clone(),
            reason: DeleteReason::Orphan,
        }
    }
}

/// One observed copy on a live replica, after filtering and de-duplication.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Observed<'a> {
    pub(super) replica: &'a str,
    pub(super) sha256: &'a str,
    pub(super) corrupt: bool,
    pub(super) stored_at_ms: u64,
}

/// A status condition.
pub(super) fn condition(type_: &str, status: bool, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
    }
}
