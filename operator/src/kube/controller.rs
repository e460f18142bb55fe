//! The kube-rs `Controller` over StoredFiles. Each reconcile builds the engine's record from
//! the cached StoredFile and hands it to the engine (observe, plan, act, publish), wrapped by
//! `finalizer()` so that a deleted StoredFile keeps its finalizer until every copy is gone.
//! Problems the engine cannot get past (an invalid spec, a forbidden read) are published as a
//! condition and a Warning Event. Failures back off by category, per object.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource, ResourceExt};
use tracing::{debug, warn};

use super::cached::CachedFile;
use super::catalog::{KubeCatalog, STATUS_MANAGER};
use super::crd::FINALIZER;
use super::record::problem_status;
use crate::engine::{
    Engine, EngineEvent, ErrorCategory, EventSink, FileRecord, ObservedStatus, ReconcileError,
    Source,
};
use crate::metrics::Metrics;

/// Everything a reconcile needs.
pub struct Context {
    pub engine: Arc<Engine>,
    pub client: Client,
    pub recorder: Recorder,
    pub catalog: Arc<KubeCatalog>,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per object, for the backoff.
    failures: Mutex<HashMap<ObjectRef<CachedFile>, u32>>,
}

impl Context {
    pub fn new(
        engine: Arc<Engine>,
        client: Client,
        recorder: Recorder,
        catalog: Arc<KubeCatalog>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            engine,
            client,
            recorder,
            catalog,
            metrics,
            failures: Mutex::new(HashMap::new()),
        }
    }
}

/// A reconcile's failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error("copies of the deleted StoredFile remain; trying again")]
    CopiesRemain,
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// Decides the backoff.
    pub fn category(&self) -> ErrorCategory {
        use kube::runtime::finalizer::Error as F;
        match self {
            Self::Reconcile(e) => e.category(),
            Self::CopiesRemain => ErrorCategory::Transient,
            Self::Finalizer(inner) => match inner.as_ref() {
                F::ApplyFailed(e) | F::CleanupFailed(e) => e.category(),
                F::AddFinalizer(kube::Error::Api(s)) | F::RemoveFinalizer(kube::Error::Api(s))
                    if s.code == 403 =>
                {
                    ErrorCategory::Forbidden
                }
                F::AddFinalizer(_) | F::RemoveFinalizer(_) => ErrorCategory::Conflict,
                F::UnnamedObject | F::InvalidFinalizer => ErrorCategory::Invalid,
            },
        }
    }
}

/// The record of a StoredFile being deleted, even when its spec is not usable: deletion only
/// needs the key.
fn deletion_record(sf: &CachedFile) -> FileRecord {
    let mut record = sf.record().unwrap_or_else(|_| FileRecord {
        key: deposito_api::FileKey {
            namespace: sf.namespace().unwrap_or_default(),
            name: sf.name_any(),
        },
        file_name: sf.name_any(),
        replicas: 1,
        sha256: String::new(),
        size: 0,
        generation: sf.metadata.generation.unwrap_or(0).max(0) as u64,
        deleting: true,
        source: Source::Upload,
        status: ObservedStatus::initial(None),
        aging: Default::default(),
    });
    record.deleting = true;
    record
}

/// Publishes a problem the engine could not get past, as a condition and a Warning Event.
async fn report_problem(sf: &CachedFile, ctx: &Context, reason: &str, message: &str) {
    let status = problem_status(
        sf.status(),
        sf.metadata.generation,
        reason,
        message,
        &super::record::now(),
    );
    if !sf.has_status(&status) {
        let api: Api<CachedFile> =
            Api::namespaced(ctx.client.clone(), &sf.namespace().unwrap_or_default());
        let patch = serde_json::json!({
            "apiVersion": "deposito.io/v1alpha1",
            "kind": "StoredFile",
            "status": status,
        });
        if let Err(err) = api
            .patch_status(
                &sf.name_any(),
                &PatchParams::apply(STATUS_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
        {
            warn!(file = %sf.name_any(), %err, "could not publish the problem in status");
        }
        publish_event(
            &ctx.recorder,
            sf,
            &EngineEvent::new("Failed", message.to_string()),
        )
        .await;
    }
}

async fn apply(sf: &CachedFile, ctx: &Context) -> Result<Action, Error> {
    let record = match sf.record() {
        Ok(record) => record,
        Err(err) => {
            report_problem(sf, ctx, "InvalidSpec", &err.to_string()).await;
            return Err(ReconcileError::Plan(err).into());
        }
    };
    match ctx.engine.reconcile_record(record).await {
        // The slow resync is the `resync` worker's (see `workers::Resync`).
        Ok(outcome) => Ok(outcome
            .requeue_after
            .map_or_else(Action::await_change, Action::requeue)),
        Err(err) => {
            if err.category() == ErrorCategory::Forbidden {
                report_problem(sf, ctx, "Forbidden", &err.to_string()).await;
            }
            Err(err.into())
        }
    }
}

async fn cleanup(sf: &CachedFile, ctx: &Context) -> Result<Action, Error> {
    let outcome = ctx.engine.reconcile_record(deletion_record(sf)).await?;
    if outcome.finalized {
        debug!(file = %sf.name_any(), "every copy removed; releasing the finalizer");
        Ok(Action::await_change())
    } else {
        Err(Error::CopiesRemain)
    }
}

/// The reconcile function given to the `Controller`.
pub async fn reconcile(sf: Arc<CachedFile>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = sf.namespace().unwrap_or_default();
    let api: Api<CachedFile> = Api::namespaced(ctx.client.clone(), &namespace);
    let oref = ObjectRef::from_obj(sf.as_ref());
    let result = finalizer(&api, FINALIZER, sf, |event| async {
        match event {
            Finalizer::Apply(sf) => apply(&sf, &ctx).await,
            Finalizer::Cleanup(sf) => cleanup(&sf, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if result.is_ok() {
        ctx.failures.lock().expect("failures").remove(&oref);
    }
    result
}

/// Backoff after a failed reconcile: the category's schedule, per object.
pub fn error_policy(sf: Arc<CachedFile>, error: &Error, ctx: Arc<Context>) -> Action {
    let oref = ObjectRef::from_obj(sf.as_ref());
    let failures = {
        let mut map = ctx.failures.lock().expect("failures");
        let n = map.entry(oref).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    if matches!(error, Error::Finalizer(_)) {
        ctx.metrics.reconciled(0.0, Some("finalizer"));
    }
    let delay = error.category().backoff(failures);
    warn!(file = %sf.name_any(), %error, failures, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn publish_event(recorder: &Recorder, sf: &CachedFile, event: &EngineEvent) {
    let kube_event = KubeEvent {
        type_: if event.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: event.reason.clone(),
        note: Some(event.message.chars().take(1024).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(err) = recorder.publish(&kube_event, &sf.object_ref(&())).await {
        warn!(file = %sf.name_any(), %err, "could not publish event");
    }
}

/// Kube mode's event sink: Events on the StoredFile, through a `Recorder`.
pub struct KubeEvents {
    pub recorder: Recorder,
    pub catalog: Arc<KubeCatalog>,
    pub metrics: Arc<Metrics>,
}

/// Whether `event` is worth an Event in `kubectl describe`: a new file's first copies
/// (`Stored`, `Replicated` while it has never had a holder) are what its status already says,
/// and an Event each would be one more API request per file; every later change (raised or
/// lowered N, repairs, drains, problems) is.
fn worth_an_event(record: &FileRecord, event: &EngineEvent) -> bool {
    let first_copies = record.status.holders.is_empty()
        && record.status.unreachable_holders.is_empty()
        && record.status.ready_replicas == 0;
    event.warning || !(first_copies && matches!(event.reason.as_str(), "Stored" | "Replicated"))
}

#[async_trait]
impl EventSink for KubeEvents {
    async fn emit(&self, record: &FileRecord, event: &EngineEvent) {
        self.metrics.event(&event.reason);
        if !worth_an_event(record, event) {
            return;
        }
        if let Some(sf) = self.catalog.cached(&record.key.namespace, &record.key.name) {
            publish_event(&self.recorder, &sf, event).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_files_first_copies_make_no_event_later_changes_do() {
        let mut record = FileRecord {
            key: deposito_api::FileKey::new("dep", "f").unwrap(),
            file_name: "f".into(),
            replicas: 2,
            sha256: String::new(),
            size: 0,
            generation: 1,
            deleting: false,
            source: Source::Inline,
            status: ObservedStatus::initial(None),
            aging: Default::default(),
        };
        let stored = EngineEvent::new("Stored", "copy stored");
        let replicated = EngineEvent::new("Replicated", "copy added");
        assert!(!worth_an_event(&record, &stored));
        assert!(!worth_an_event(&record, &replicated));
        assert!(worth_an_event(
            &record,
            &EngineEvent::new("Degraded", "1/2")
        ));
        record.status.holders = vec!["rep-0".into()];
        record.status.ready_replicas = 1;
        assert!(
            worth_an_event(&record, &replicated),
            "a repair or a raised N"
        );
        assert!(worth_an_event(&record, &EngineEvent::new("Trimmed", "x")));
    }
}
