//! State shared by the gateway and the reconcile loop.

use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::local::catalog::Catalog;
use crate::local::membership::Membership;
use crate::locks::KeyLocks;
use crate::metrics::Metrics;
use crate::replica_client::ReplicaClient;

/// Timing knobs of the reconcile loop.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a holder may be unreachable before its copies are replaced.
    pub grace_period: Duration,
    /// Periodic resync; changes wake the loop sooner.
    pub reconcile_interval: Duration,
    /// Age before a copy that no catalog entry claims is deleted.
    pub orphan_grace: Duration,
    /// A replica silent for longer than this is no longer live.
    pub liveness_timeout: Duration,
    /// Heartbeat period asked of replicas.
    pub heartbeat: Duration,
}

impl Settings {
    /// Settings with liveness derived from the heartbeat (three missed beats, at least 5 s).
    pub fn new(
        grace_period: Duration,
        reconcile_interval: Duration,
        orphan_grace: Duration,
        heartbeat: Duration,
    ) -> Self {
        Self {
            grace_period,
            reconcile_interval,
            orphan_grace,
            liveness_timeout: (heartbeat * 3).max(Duration::from_secs(5)),
            heartbeat,
        }
    }
}

/// Everything the gateway handlers and the reconcile loop share.
pub struct Context {
    pub catalog: Catalog,
    pub membership: Membership,
    pub replicas: ReplicaClient,
    pub locks: KeyLocks,
    /// Wakes the reconcile loop after a change.
    pub wake: Notify,
    /// Bumped whenever a stored status changes; long polls wait on it.
    pub changes: watch::Sender<u64>,
    pub settings: Settings,
    pub metrics: Metrics,
    /// Bearer token clients present to the gateway.
    pub client_token: String,
    /// Bearer token replicas present when registering (and expect from the operator).
    pub replica_token: String,
}

impl Context {
    /// Signals that stored state changed: wakes long polls.
    pub fn publish_change(&self) {
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }
}
