//! The membership seam: which storage replicas exist, where they answer, and whether they
//! are up (local: registration and heartbeats; kube: the Ready pods of the replica
//! StatefulSet). The engine turns this into health, with the grace period, in
//! [`super::health`].

use std::time::Duration;

use async_trait::async_trait;

use super::category::ErrorCategory;

/// Free space and load of a replica, when the mode learns them (local heartbeats carry them;
/// in kube mode the engine asks the replica itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capacity {
    pub free_bytes: u64,
    pub capacity_bytes: u64,
    pub objects: u64,
    pub active_transfers: u64,
    /// The replica's own readiness: its data dir is usable.
    pub ready: bool,
    /// Out of space (after counting its trash as reclaimable): it refuses new copies but is
    /// live, serves reads and keeps its copies.
    pub full: bool,
    /// Bytes in its trash: reclaimable space.
    pub trash_bytes: u64,
    pub trash_objects: u64,
}

impl Capacity {
    /// The capacity a replica describes (`GET /v1/info`, heartbeats).
    pub fn of(info: &deposito_api::replica::RegisterRequest) -> Self {
        Self {
            free_bytes: info.free_bytes,
            capacity_bytes: info.capacity_bytes,
            objects: info.objects,
            active_transfers: info.active_transfers,
            ready: info.ready,
            full: info.full,
            trash_bytes: info.trash_bytes,
            trash_objects: info.trash_objects,
        }
    }
}

/// One replica as a mode sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Stable identity (the registered id, or the pod name).
    pub id: String,
    /// Base URL of its API.
    pub url: String,
    /// Topology zone (or node) used to spread copies; `None` is a zone of its own.
    pub zone: Option<String>,
    /// Marked for removal: gets no new copies, its copies move away (rule 9).
    pub draining: bool,
    /// Reachable now, as far as the mode can tell (a recent heartbeat, a Ready pod).
    pub available: bool,
    /// How long it has not been available; zero while it is.
    pub down_for: Duration,
    pub capacity: Option<Capacity>,
}

/// Why membership can't be observed or changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// Not known yet or not reachable (the first pod list has not arrived).
    #[error("membership unavailable: {0}")]
    Unavailable(String),
    /// The operator may not read it (Kubernetes RBAC).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The operation does not exist in this mode.
    #[error("{0}")]
    Unsupported(String),
}

impl MembershipError {
    pub fn category(&self) -> ErrorCategory {
        match self {
            Self::Unavailable(_) => ErrorCategory::Transient,
            Self::Forbidden(_) => ErrorCategory::Forbidden,
            Self::Unsupported(_) => ErrorCategory::Invalid,
        }
    }
}

/// A mode's view of the replicas.
#[async_trait]
pub trait Membership: Send + Sync + 'static {
    /// Every replica the mode knows, sorted by id. An error means the replica set itself can't
    /// be observed now: the engine then plans nothing, rather than taking every replica for
    /// lost.
    fn members(&self) -> Result<Vec<Member>, MembershipError>;

    /// Marks a replica draining (or not). False when it is unknown.
    async fn set_draining(&self, id: &str, draining: bool) -> Result<bool, MembershipError>;
}
