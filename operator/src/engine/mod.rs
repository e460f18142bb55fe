//! The mode-neutral engine: per-file reconciling of desired state against what the replicas
//! hold, shared by the local, compose and kube modes.
//!
//! A mode supplies two seams: a [`Catalog`] (desired files, status writes, change
//! notifications) and a [`Membership`] (the replicas and whether they are up). The engine
//! brings the rest:
//! - [`index`]: the shared in-memory index of what each replica holds, kept current by one
//!   [`observer`] per replica following that replica's change feed;
//! - [`health`]: replica health with the grace period, and the triggers its changes cause;
//! - [`reconcile`]: one file's observe → plan → act → publish, with errors per stage
//!   ([`error`]) whose category decides the backoff;
//! - [`queue`] and [`driver`]: the work queue of file keys that local mode runs (kube mode
//!   drives the same reconcile from a kube-rs `Controller`);
//! - [`rebalance`]: moves copies from fuller to emptier replicas, through each file's own
//!   reconcile.
//!
//! Nothing it does while idle grows with the number of files: observers hold one long poll per
//! replica, the health tick looks at one entry per replica, and only the slow resync visits
//! every file.

pub mod act;
pub mod aging;
pub mod catalog;
pub mod category;
pub mod driver;
pub mod error;
pub mod events;
mod expiry;
pub mod health;
pub mod index;
pub mod membership;
pub mod model;
pub mod observer;
pub mod queue;
pub mod rebalance;
pub mod reconcile;
mod revisit;
pub mod throttle;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use deposito_api::FileKey;
use tokio::sync::mpsc;

pub use aging::{check_change, AgingChange, AgingError, Schedule};
pub use catalog::{Catalog, CatalogError, Changes, Claim};
pub use category::ErrorCategory;
pub use error::ReconcileError;
pub use events::{EngineEvent, EventSink};
pub use health::{Backlog, ReplicaSet, Tracker, TrackerSettings};
pub use index::InventoryIndex;
pub use membership::{Capacity, Member, Membership, MembershipError};
pub use model::{now_ms, Aging, ContentAttrs, Deposit, FileRecord, ObservedStatus, Source};
pub use rebalance::{Moves, RebalanceSettings, Rebalancer};
pub use reconcile::{Engine, EngineSettings, Outcome, StaleGuard};

use crate::metrics::Metrics;
use crate::replica_client::ReplicaClient;

/// What a mode hands the engine.
pub struct Seams {
    pub catalog: Arc<dyn Catalog>,
    pub membership: Arc<dyn Membership>,
    pub events: Arc<dyn EventSink>,
}

/// A built engine, ready to run: the engine itself, the health tracker and the rebalancer to
/// spawn, and the stream of files to look at (from observers, health changes and moves).
pub struct Built {
    pub engine: Arc<Engine>,
    pub replicas: Arc<ReplicaSet>,
    pub index: Arc<InventoryIndex>,
    pub tracker: Tracker,
    pub rebalancer: Rebalancer,
    pub triggers: mpsc::UnboundedReceiver<FileKey>,
}

/// Wires the engine's parts around a mode's seams.
pub fn build(
    seams: Seams,
    client: ReplicaClient,
    metrics: Arc<Metrics>,
    settings: EngineSettings,
    tracker: TrackerSettings,
    rebalance: RebalanceSettings,
) -> Built {
    let (tx, triggers) = mpsc::unbounded_channel();
    let replicas = Arc::new(ReplicaSet::new(settings.grace_period));
    let index = Arc::new(InventoryIndex::default());
    let backlog = Arc::new(Backlog::default());
    let moves = Arc::new(Moves::default());
    let engine = Arc::new(Engine::new(
        seams.catalog.clone(),
        replicas.clone(),
        index.clone(),
        client.clone(),
        seams.events,
        metrics.clone(),
        backlog.clone(),
        moves.clone(),
        settings,
    ));
    let rebalancer = Rebalancer {
        settings: rebalance,
        moves,
        replicas: replicas.clone(),
        index: index.clone(),
        catalog: seams.catalog,
        backlog: backlog.clone(),
        triggers: tx.clone(),
        metrics: metrics.clone(),
    };
    let tracker = Tracker {
        membership: seams.membership,
        replicas: replicas.clone(),
        index: index.clone(),
        client,
        triggers: tx,
        backlog,
        metrics,
        settings: tracker,
    };
    Built {
        engine,
        replicas,
        index,
        tracker,
        rebalancer,
        triggers,
    }
}
