//! Bodies of the replica API (`/v1/objects/...`), used by the operator and by peers, and of
//! the registration API that replicas call on the operator in local mode.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Whether a stored copy can be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ObjectState {
    /// Verified against its sha256 when written and at its last scrub.
    Ready,
    /// Failed verification: quarantined, never served, to be replaced.
    Corrupt,
    /// Claimed by no file when it was collected: kept in the replica's trash (same volume,
    /// never served) until the trash retention ends, and restored when a file claims it
    /// again. Its `stored_at` is when it went to the trash.
    Trashed,
}

/// One stored copy: an object is identified by (namespace, name, sha256), so a replica can
/// hold the old and the new content of a name side by side while a replacement converges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ObjectInfo {
    pub namespace: String,
    pub name: String,
    pub sha256: String,
    pub size: u64,
    pub state: ObjectState,
    /// Unix seconds when this copy was committed (for a `trashed` copy: when it went to the
    /// trash).
    pub stored_at: u64,
    /// The same instant in milliseconds since the Unix epoch; 0 from replicas that predate it
    /// (read [`ObjectInfo::committed_ms`], which falls back to `stored_at`). The operator
    /// compares it with when the file's current content was acknowledged: a copy of other
    /// content committed later is newer than anything its catalog knows.
    #[serde(default)]
    pub stored_at_ms: u64,
}

impl ObjectInfo {
    /// When the copy was committed, in milliseconds since the Unix epoch (`stored_at_ms`, or
    /// `stored_at` in whole seconds from an older replica).
    pub fn committed_ms(&self) -> u64 {
        if self.stored_at_ms > 0 {
            self.stored_at_ms
        } else {
            self.stored_at.saturating_mul(1000)
        }
    }
}

/// `GET /v1/inventory?after=CURSOR&limit=N`: one page of a replica's objects, in a stable
/// order. `next` is the cursor for the following page, absent on the last page.
///
/// `epoch` and `seq` place the page in the replica's change feed: every change with a
/// sequence number above `seq` happened after this page was read. A reader that lists every
/// page and then follows `GET /v1/inventory/changes?epoch=E&since=S` from the first page's
/// `seq` ends with an exact copy of the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InventoryPage {
    pub items: Vec<ObjectInfo>,
    pub next: Option<String>,
    /// Identity of this run of the replica's change log (a new one at every start).
    #[serde(default)]
    pub epoch: String,
    /// The last change sequence number applied when the page was read.
    #[serde(default)]
    pub seq: u64,
}

/// One change of a replica's inventory: the copy `(namespace, name, sha256)` now is `object`,
/// or is gone when `object` is absent. Applying changes in `seq` order to a listing reproduces
/// the inventory; applying one twice is harmless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ObjectChange {
    pub seq: u64,
    pub namespace: String,
    pub name: String,
    pub sha256: String,
    /// The copy as it now is (`ready` or `corrupt`); absent when it was deleted.
    pub object: Option<ObjectInfo>,
}

/// `GET /v1/inventory/changes?epoch=E&since=S[&limit=N][&wait=SECS]`: the changes after `S`,
/// oldest first. With `wait`, the request is held until a change arrives or the wait ends (a
/// long poll). `seq` is the cursor for the next request; `more` says the page was cut at
/// `limit`. An unknown `epoch` (the replica restarted) or a cursor older than the retained
/// log answers `410 cursor_expired`: list the inventory again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChangePage {
    pub epoch: String,
    pub seq: u64,
    pub changes: Vec<ObjectChange>,
    pub more: bool,
}

/// `POST /v1/objects/{namespace}/{name}/fetch`: fetch a `url` source into a verified copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FetchRequest {
    /// An `http` or `https` URL.
    #[schema(
        pattern = r"^https?://(?!xn--)[a-z][-a-z0-9]{0,62}(?:\.(?!xn--)[a-z][-a-z0-9]{0,62})*(?::[1-9][0-9]{0,3})?(?:/[-A-Za-z0-9._~/]*)?(?![\s\S])"
    )]
    pub url: String,
    /// The expected sha256 (lowercase hex); without it, whatever the URL serves is kept and
    /// its digest returned.
    #[schema(pattern = r"^[0-9a-f]{64}(?![\s\S])")]
    pub sha256: Option<String>,
    /// The expected size in bytes, when known: a body longer than this is cut off
    /// (`502 fetch_failed`, "too large") and nothing is kept, as for the replica's own cap.
    #[schema(maximum = 9007199254740991_u64)]
    #[serde(
        default,
        deserialize_with = "crate::integers::opt_u64",
        skip_serializing_if = "Option::is_none"
    )]
    pub size: Option<u64>,
}

/// The reason of a `fetch_failed` error whose body was over the replica's cap or the
/// request's `size`: fetching again gives the same answer until the source or cap changes.
pub const FETCH_TOO_LARGE: &str = "too large";

/// `POST /v1/objects/{namespace}/{name}/{sha256}/pull`: fetch the object from a peer and
/// verify it before committing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PullRequest {
    /// Base URL of the peer replica holding a verified copy, e.g. `http://127.0.0.3:7070`.
    #[schema(
        pattern = r"^https?://(?!xn--)[a-z][-a-z0-9]{0,62}(?:\.(?!xn--)[a-z][-a-z0-9]{0,62})*(?::[1-9][0-9]{0,3})?(?:/[-A-Za-z0-9._~/]*)?(?![\s\S])"
    )]
    pub source: String,
}

/// `GET /v1/scrub`: progress of the background scrubber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ScrubStatus {
    /// Completed full passes since start.
    pub passes: u64,
    /// Objects verified since start.
    pub objects_checked: u64,
    /// Copies found corrupt since start.
    pub corrupt_found: u64,
    /// Unix seconds when the last full pass finished, if any (kept across restarts).
    pub last_pass_finished: Option<u64>,
    /// Unix seconds when the last full pass started, if any (kept across restarts).
    pub last_pass_started: Option<u64>,
    /// Unix seconds when the pass in progress started (it resumes where it was after a
    /// restart), if one is.
    pub pass_started: Option<u64>,
    /// Unix seconds when the next pass (or the resumption of an interrupted one) is due, while
    /// none runs.
    pub next_pass_at: Option<u64>,
    /// Seconds since the least recently verified ready copy was last verified (hashed when it
    /// was written or by a scrub pass); absent when the replica holds no copy.
    pub oldest_unverified_secs: Option<u64>,
    /// Upper bound, in seconds, on the time from a copy rotting on disk to the scrubber
    /// finding it while the replica runs: the interval plus two passes (bytes held divided by
    /// the rate, or the last pass's duration when the rate is unlimited).
    pub detection_bound_secs: u64,
    /// Seconds between passes.
    pub interval_secs: u64,
    /// Hashing rate limit, in bytes per second.
    pub rate_bytes_per_sec: u64,
}

/// `POST /v1/replicas/register` on the operator (local and compose modes): registration and
/// heartbeat in one. Replicas send it at start and then periodically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegisterRequest {
    /// Stable identity of the replica (its name; kept across restarts).
    #[schema(min_length = 1, max_length = 253)]
    pub id: String,
    /// Base URL where the replica's API is reachable (`http://` or `https://`).
    #[schema(pattern = r"^https?://")]
    pub url: String,
    /// Topology zone, if any.
    pub zone: Option<String>,
    #[schema(maximum = 9007199254740991_u64)]
    #[serde(deserialize_with = "crate::integers::u64")]
    pub capacity_bytes: u64,
    /// Room for new copies: free space above the replica's `--min-free-bytes` floor (its
    /// trash not counted; see `trash_bytes`).
    #[schema(maximum = 9007199254740991_u64)]
    #[serde(deserialize_with = "crate::integers::u64")]
    pub free_bytes: u64,
    #[schema(maximum = 9007199254740991_u64)]
    #[serde(deserialize_with = "crate::integers::u64")]
    pub objects: u64,
    /// Transfers (uploads, downloads, pulls) in progress: the replica's current load.
    #[schema(maximum = 9007199254740991_u64)]
    #[serde(deserialize_with = "crate::integers::u64")]
    pub active_transfers: u64,
    /// Whether the replica's data directory is usable (writable, or refusing writes only
    /// because it is full).
    pub ready: bool,
    /// Free space is below the replica's `--min-free-bytes` (or the disk refused a write for
    /// lack of space), after counting what emptying the trash would give back: the replica
    /// refuses new copies (507) but stays ready, serves reads and keeps its copies.
    #[serde(default)]
    pub full: bool,
    /// Bytes held in the trash: reclaimable, emptied first when space runs short.
    #[schema(maximum = 9007199254740991_u64)]
    #[serde(default, deserialize_with = "crate::integers::u64")]
    pub trash_bytes: u64,
    /// Copies held in the trash.
    #[schema(maximum = 9007199254740991_u64)]
    #[serde(default, deserialize_with = "crate::integers::u64")]
    pub trash_objects: u64,
}

/// Answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegisterResponse {
    /// Seconds the replica should wait before its next heartbeat.
    pub heartbeat_secs: u64,
}
