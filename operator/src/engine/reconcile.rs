//! One file's reconcile: observe (its record, the replicas, its copies in the index), plan
//! with the pure [`plan_file`], act (pulls, verified trims, the first copy of an inline or url
//! source), publish the status. Level-based: everything starts from what the catalog and the
//! replicas report now, never from memory of earlier runs, so a restarted operator converges
//! (rule 4).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deposito_api::gateway::{Condition, Phase};
use deposito_api::replica::ObjectState;
use deposito_api::FileKey;
use deposito_util::clock::unix_now;
use tracing::{debug, instrument, warn};

use super::catalog::{Catalog, Claim};
use super::error::{ObserveError, PublishError, ReconcileError};
use super::events::{EngineEvent, EventSink};
use super::health::{Backlog, ReplicaSet};
use super::index::InventoryIndex;
use super::model::{now_ms, FileRecord, ObservedStatus};
use super::revisit::{earliest, until_lock_end, until_transition, young_stale_wait};
use super::throttle::PullThrottle;
use crate::locks::KeyLocks;
use crate::metrics::Metrics;
use crate::plan::{self, CopyView, DesiredFile, FilePlan, Health, OrphanCopy, ReplicaView};
use crate::replica_client::ReplicaClient;

/// How the engine tells a stale copy (old content, deletable) from a new upload whose catalog
/// commit is still in flight (must be kept).
#[derive(Debug, Clone)]
pub enum StaleGuard {
    /// The gateway runs in this process and holds the file's lock from before the first byte
    /// until its catalog commit; a reconcile that holds the lock knows every other copy is
    /// stale or unacknowledged (local mode).
    Fenced(KeyLocks),
    /// Copies of other content younger than this are kept (kube mode, where the gateway and
    /// the controller may be different processes): `now - age` is the cutoff.
    Age(Duration),
}

/// Knobs of the engine.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// How long a holder may be unreachable before its copies are replaced (rule 8).
    pub grace_period: Duration,
    /// Age before a copy that no catalog entry claims is deleted.
    pub orphan_grace: Duration,
    pub stale_guard: StaleGuard,
    /// Most pulls running at once into one replica (re-replication throttle).
    pub pulls_per_replica: usize,
}

/// How one reconcile ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub phase: Option<Phase>,
    /// Exactly N verified copies and nothing else to do.
    pub converged: bool,
    /// The record is gone (its deletion completed, or it was an orphan check).
    pub finalized: bool,
    /// Look again after this long even if nothing changes.
    pub requeue_after: Option<Duration>,
}

impl Outcome {
    pub(super) fn later(delay: Duration) -> Self {
        Self {
            phase: None,
            converged: false,
            finalized: false,
            requeue_after: Some(delay),
        }
    }

    /// Nothing more to do for this key.
    fn finished(self) -> Self {
        Self {
            finalized: true,
            requeue_after: None,
            ..self
        }
    }
}

/// An upload of this file is committing (local mode): look again this soon.
const FENCED_RETRY: Duration = Duration::from_millis(200);
/// New content whose first copy is not in the index yet: look again this soon.
const NOT_YET_OBSERVED_RETRY: Duration = Duration::from_secs(1);
/// How soon copies kept for want of a complete catalog view are looked at again.
const ORPHAN_RECHECK: Duration = Duration::from_secs(30);
/// Plan-and-act rounds in one reconcile before it yields its worker.
const ROUNDS_PER_RECONCILE: usize = 3;

/// The engine's handles. Each is narrow: the catalog and the replica set are the seams a mode
/// provides; the rest is shared machinery.
pub struct Engine {
    pub(super) catalog: Arc<dyn Catalog>,
    pub(super) replicas: Arc<ReplicaSet>,
    pub(super) index: Arc<InventoryIndex>,
    pub(super) client: ReplicaClient,
    pub(super) events: Arc<dyn EventSink>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) backlog: Arc<Backlog>,
    /// Rebalancing moves asked of files (see [`super::rebalance`]).
    pub(super) moves: Arc<super::rebalance::Moves>,
    pub(super) throttle: PullThrottle,
    pub(super) settings: EngineSettings,
    /// When "orphan collection paused" was last logged (unix seconds).
    paused_warned: std::sync::atomic::AtomicU64,
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        catalog: Arc<dyn Catalog>,
        replicas: Arc<ReplicaSet>,
        index: Arc<InventoryIndex>,
        client: ReplicaClient,
        events: Arc<dyn EventSink>,
        metrics: Arc<Metrics>,
        backlog: Arc<Backlog>,
        moves: Arc<super::rebalance::Moves>,
        settings: EngineSettings,
    ) -> Self {
        Self {
            throttle: PullThrottle::new(settings.pulls_per_replica),
            catalog,
            replicas,
            index,
            client,
            events,
            metrics,
            backlog,
            moves,
            settings,
            paused_warned: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn index(&self) -> &Arc<InventoryIndex> {
        &self.index
    }

    pub fn catalog(&self) -> &Arc<dyn Catalog> {
        &self.catalog
    }

    /// Reconciles the file `key` as its catalog has it now (or its orphaned copies, when the
    /// catalog has no such file). Counts the run in the metrics.
    #[instrument(skip(self), fields(file = %key))]
    pub async fn reconcile_key(&self, key: &FileKey) -> Result<Outcome, ReconcileError> {
        let started = Instant::now();
        let result = self.reconcile_key_inner(key).await;
        self.count(started, &result);
        result
    }

    /// Reconciles one record the caller already read (kube mode reads it from its cache).
    #[instrument(skip(self, record), fields(file = %record.key))]
    pub async fn reconcile_record(&self, record: FileRecord) -> Result<Outcome, ReconcileError> {
        let started = Instant::now();
        let result = self.reconcile(record).await;
        self.count(started, &result);
        result
    }

    /// Deletes the copies of `key` that no catalog entry claims, once older than the orphan
    /// grace. Counts the run in the metrics.
    pub async fn collect_orphans(&self, key: &FileKey) -> Result<Outcome, ReconcileError> {
        let started = Instant::now();
        let result = self.orphans(key).await;
        self.count(started, &result);
        result
    }

    fn count(&self, started: Instant, result: &Result<Outcome, ReconcileError>) {
        let failure = result
            .as_ref()
            .err()
            .map(super::error::ReconcileError::reason);
        self.metrics
            .reconciled(started.elapsed().as_secs_f64(), failure);
    }

    async fn reconcile_key_inner(&self, key: &FileKey) -> Result<Outcome, ReconcileError> {
        let _fence = match &self.settings.stale_guard {
            StaleGuard::Fenced(locks) => match locks.try_lock(key) {
                Some(guard) => Some(guard),
                None => return Ok(Outcome::later(FENCED_RETRY)),
            },
            StaleGuard::Age(_) => None,
        };
        let record = self.catalog.get(key).await.map_err(ObserveError::Catalog)?;
        match record {
            Some(record) => self.reconcile(record).await,
            None => self.orphans(key).await,
        }
    }

    /// The replicas the plan sees: membership's views, plus holders named in the last status
    /// that membership does not know (Unreachable for one grace period).
    fn views_for(&self, record: &FileRecord) -> Result<Vec<ReplicaView>, ObserveError> {
        let set = self.replicas.current();
        if let Some(err) = &set.error {
            return Err(ObserveError::Membership(err.clone()));
        }
        let mut views = set.replicas.clone();
        for id in record
            .status
            .holders
            .iter()
            .chain(&record.status.unreachable_holders)
        {
            if !views.iter().any(|v| &v.id == id) {
                if let Some(view) = self.replicas.absent_view(id) {
                    views.push(view);
                }
            }
        }
        Ok(views)
    }

    /// Copies of other content committed after this instant (ms) are too young to touch.
    fn stale_cutoff_ms(&self) -> u64 {
        match &self.settings.stale_guard {
            StaleGuard::Fenced(_) => u64::MAX,
            StaleGuard::Age(age) => now_ms().saturating_sub(age.as_millis() as u64),
        }
    }

    async fn reconcile(&self, mut record: FileRecord) -> Result<Outcome, ReconcileError> {
        // The level the file's lifecycle (its own, else its namespace's) has in force now
        // is the N to reconcile to; an expired file is deleted, as by `rm`.
        let now = now_ms();
        record.aging.lifecycle = (record.aging.lifecycle.take())
            .or_else(|| self.catalog.default_lifecycle(&record.key.namespace));
        let schedule = record.schedule_under_lock(now, record.status.lifecycle_step as usize);
        self.hold_deletion_under_lock(&mut record, now).await;
        if !record.deleting {
            match schedule.replicas {
                Some(n) => record.replicas = n,
                None => return self.expire(&record, now).await,
            }
        }
        let views = self.views_for(&record)?;
        let mut copies = self.index.copies(&record.key);
        if !record.deleting && self.needs_ingest(&record, &views, &copies) {
            if let Err(err) = self.ingest(&mut record, &views).await {
                self.publish_failure(&record, &err).await?;
                return Err(err.into());
            }
            copies = self.index.copies(&record.key);
        }
        if record.size == 0 {
            // Learn the size from a verified copy (kube uploads don't carry it in the spec).
            if let Some(copy) = copies
                .iter()
                .find(|c| c.sha256 == record.sha256 && c.state == ObjectState::Ready)
            {
                record.size = copy.size;
            }
        }
        let cutoff = self.stale_cutoff_ms();
        let mut desired = desired_of(&record, cutoff);
        desired.moving = self.moves.of(&record.key);
        let mut plan = plan::plan_file(&desired, &views, &copies);
        if plan.phase == Phase::Lost && record.status.observed_generation != record.generation {
            // New content committed after the index last heard from its holder: its copy is
            // not observed yet. Look again instead of publishing a false Lost.
            debug!("new content not observed yet");
            return Ok(Outcome::later(NOT_YET_OBSERVED_RETRY));
        }
        // Act, then plan again from the outcome (the index records it at once), so that one
        // reconcile usually ends converged and publishes one status, not one per step.
        let mut rounds = 0;
        let acted = loop {
            rounds += 1;
            self.emit_plan_events(&record, &plan).await;
            let acted = self.act(&record, &views, &plan).await;
            if acted.is_err() || plan.actions.is_empty() || rounds == ROUNDS_PER_RECONCILE {
                break acted;
            }
            copies = self.index.copies(&record.key);
            plan = plan::plan_file(&desired, &views, &copies);
        };

        if plan.finalized {
            let removed = self
                .catalog
                .finalize(&record)
                .await
                .map_err(PublishError::Catalog)?;
            if removed {
                self.metrics
                    .under_replicated
                    .set(self.backlog.forget(&record.key) as i64);
            }
            return Ok(Outcome {
                phase: Some(Phase::Deleting),
                converged: false,
                finalized: removed,
                requeue_after: None,
            });
        }
        let mut status = status_of(&record, &plan, &views);
        status.lifecycle_step = schedule.step as u32;
        if status.lifecycle_step != record.status.lifecycle_step && !record.deleting {
            self.events
                .emit(
                    &record,
                    &EngineEvent::new(
                        "LifecycleStep",
                        format!(
                            "lifecycle step {} in force: {} copies",
                            schedule.step, record.replicas
                        ),
                    ),
                )
                .await;
        }
        self.catalog
            .publish(&record, &status)
            .await
            .map_err(PublishError::Catalog)?;
        let under = plan.ready_replicas < record.replicas && !record.deleting;
        self.metrics
            .under_replicated
            .set(self.backlog.update(&record.key, plan.converged, under) as i64);
        acted?;
        // Still acting after the last round: look again at once (the index already holds the
        // outcome, so the replicas' change feeds will not trigger this file).
        let requeue_after = if plan.actions.is_empty() {
            let stale_age = match &self.settings.stale_guard {
                StaleGuard::Age(age) => Some(*age),
                StaleGuard::Fenced(_) => None,
            };
            let stale = young_stale_wait(&record, &views, &copies, stale_age);
            let lock_end = until_lock_end(&record, now);
            earliest(earliest(stale, until_transition(&schedule, now)), lock_end)
        } else {
            Some(Duration::ZERO)
        };
        Ok(Outcome {
            phase: Some(plan.phase),
            converged: plan.converged,
            finalized: false,
            requeue_after,
        })
    }

    /// Emits the plan's events: action events whenever actions are planned, problem events
    /// (Degraded, Lost) only when the phase changes, so a file that stays degraded does not
    /// repeat itself at every look.
    async fn emit_plan_events(&self, record: &FileRecord, plan: &FilePlan) {
        let phase_changed = record.status.phase != plan.phase
            || record.status.observed_generation != record.generation;
        for event in &plan.events {
            let problem = matches!(event.reason.as_str(), "Degraded" | "Lost");
            if problem && !phase_changed {
                continue;
            }
            self.events
                .emit(
                    record,
                    &EngineEvent::new(&event.reason, event.message.clone()),
                )
                .await;
        }
    }

    /// Publishes a Failed status for an ingest that failed, and emits the event.
    async fn publish_failure(
        &self,
        record: &FileRecord,
        err: &super::error::ActError,
    ) -> Result<(), PublishError> {
        let reason = match err {
            super::error::ActError::Ingest { error, .. } => match error.code() {
                Some(code) => pascal_case(code.as_str()),
                None => "Unreachable".to_string(),
            },
            super::error::ActError::NoTarget(_) => "NoReplica".to_string(),
            _ => "Failed".to_string(),
        };
        let message = err.to_string();
        let status = ObservedStatus {
            phase: Phase::Failed,
            ready_replicas: 0,
            holders: vec![],
            unreachable_holders: vec![],
            observed_generation: record.generation,
            conditions: vec![
                condition("Ready", false, "Failed", "the content could not be stored"),
                condition("Degraded", false, "AsWanted", ""),
                condition("Failed", true, &reason, &message),
            ],
            lifecycle_step: 0,
        };
        let changed = self
            .catalog
            .publish(record, &status)
            .await
            .map_err(PublishError::Catalog)?;
        if changed {
            self.events
                .emit(record, &EngineEvent::new("Failed", message))
                .await;
        }
        Ok(())
    }

    /// Collects the copies of `key` that no file claims, once older than the orphan grace:
    /// only when the catalog confirms, with a complete and current view, that nothing claims
    /// them (rule 13), and into the replicas' trash, not away. Copies already in a trash are
    /// left to the replica's retention.
    async fn orphans(&self, key: &FileKey) -> Result<Outcome, ReconcileError> {
        let set = self.replicas.current();
        if let Some(err) = &set.error {
            return Err(ObserveError::Membership(err.clone()).into());
        }
        let copies: Vec<CopyView> = self
            .index
            .copies(key)
            .into_iter()
            .filter(|c| c.state != ObjectState::Trashed)
            .collect();
        let live: Vec<&ReplicaView> = set
            .replicas
            .iter()
            .filter(|v| v.health == Health::Live)
            .collect();
        let inventories: Vec<plan::ReplicaInventory> = live
            .iter()
            .map(|v| plan::ReplicaInventory {
                replica: v.id.clone(),
                objects: copies
                    .iter()
                    .filter(|c| c.replica == v.id)
                    .map(|c| deposito_api::replica::ObjectInfo {
                        namespace: key.namespace.clone(),
                        name: key.name.clone(),
                        sha256: c.sha256.clone(),
                        size: c.size,
                        state: c.state,
                        stored_at: c.stored_at_ms / 1000,
                        stored_at_ms: c.stored_at_ms,
                    })
                    .collect(),
            })
            .collect();
        let now = unix_now();
        let grace = self.settings.orphan_grace.as_secs();
        let orphans = plan::plan_orphans(&BTreeSet::new(), &inventories, now, grace);
        if !orphans.is_empty() {
            match self.catalog.claim(key).await {
                Claim::Unclaimed => {
                    let with_state: Vec<(OrphanCopy, ObjectState)> = orphans
                        .into_iter()
                        .map(|o| {
                            let state = copies
                                .iter()
                                .find(|c| c.replica == o.replica && c.sha256 == o.sha256)
                                .map_or(ObjectState::Ready, |c| c.state);
                            (o, state)
                        })
                        .collect();
                    self.collect(key, &set.replicas, &with_state).await?;
                }
                // The cache lags behind the catalog: the file's own reconcile comes.
                Claim::Claimed => self.metrics.orphans_kept("claimed"),
                Claim::Unmanaged => {
                    self.metrics.orphans_kept("unmanaged_namespace");
                    return Ok(Outcome::later(Duration::ZERO).finished());
                }
                Claim::Unknown(why) => {
                    self.metrics.orphans_kept("incomplete_view");
                    self.warn_paused(key, &why);
                    return Ok(Outcome::later(ORPHAN_RECHECK));
                }
            }
        }
        // (Collected orphans leave nothing to look at again: the key has no record.)
        // Copies still too young to collect: look again when they are old enough.
        let youngest_wait = copies
            .iter()
            .filter(|c| live.iter().any(|v| v.id == c.replica))
            .map(|c| (c.stored_at_ms / 1000 + grace).saturating_sub(now))
            .filter(|wait| *wait > 0)
            .min();
        self.metrics
            .under_replicated
            .set(self.backlog.forget(key) as i64);
        Ok(Outcome {
            phase: None,
            converged: false,
            finalized: true,
            requeue_after: youngest_wait.map(|s| Duration::from_secs(s + 1)),
        })
    }

    /// Says, at most once a minute, that orphan collection waits for a complete view.
    fn warn_paused(&self, key: &FileKey, why: &str) {
        let now = unix_now();
        let last = self
            .paused_warned
            .load(std::sync::atomic::Ordering::Relaxed);
        if now >= last + 60
            && self
                .paused_warned
                .compare_exchange(
                    last,
                    now,
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                )
                .is_ok()
        {
            warn!(file = %key, reason = %why, "orphan collection paused: copies no file claims are kept until the catalog can be read completely");
        }
    }
}

/// The plan's input for a record.
pub fn desired_of(record: &FileRecord, stale_cutoff_ms: u64) -> DesiredFile {
    let mut last_holders = record.status.holders.clone();
    last_holders.extend(record.status.unreachable_holders.iter().cloned());
    last_holders.sort();
    last_holders.dedup();
    DesiredFile {
        namespace: record.key.namespace.clone(),
        name: record.key.name.clone(),
        replicas: record.replicas,
        sha256: record.sha256.clone(),
        size: record.size,
        generation: record.generation,
        deleting: record.deleting,
        last_holders,
        stale_cutoff_ms,
        acked_ms: record.aging.acked_ms,
        moving: None,
    }
}

/// The status to publish for a plan.
fn status_of(record: &FileRecord, plan: &FilePlan, views: &[ReplicaView]) -> ObservedStatus {
    let last_holders = desired_of(record, 0).last_holders;
    let unreachable_holders: Vec<String> = last_holders
        .into_iter()
        .filter(|id| {
            views
                .iter()
                .any(|v| &v.id == id && v.health == Health::Unreachable)
        })
        .collect();
    ObservedStatus {
        phase: plan.phase,
        ready_replicas: plan.ready_replicas,
        holders: plan.holders.clone(),
        unreachable_holders,
        observed_generation: record.generation,
        conditions: plan.conditions.clone(),
        lifecycle_step: 0,
    }
}

/// A condition in the engine's deterministic shape.
pub fn condition(type_: &str, status: bool, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
    }
}

/// `digest_mismatch` → `DigestMismatch`, for condition reasons.
fn pascal_case(snake: &str) -> String {
    snake
        .split('_')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_pascal_case() {
        assert_eq!(pascal_case("digest_mismatch"), "DigestMismatch");
        assert_eq!(pascal_case("fetch_failed"), "FetchFailed");
        assert_eq!(pascal_case("fetch_refused"), "FetchRefused");
        assert_eq!(pascal_case("x"), "X");
    }
}
