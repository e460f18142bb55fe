//! Background work as named workers (the shape of Garage's `Worker` trait and runner): each
//! loop of a process is a [`Worker`] whose [`Worker::step`] does one round of work and says
//! when it wants the next; one [`Workers`] runner per process spawns them, paces them, keeps
//! their status, counts their steps and errors in the metrics, and stops them all on shutdown.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::unix_now;
use crate::lock;

/// When a worker wants its next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Right away: more work is waiting.
    Now,
    /// After this long: paced, or idle until the next period.
    After(Duration),
    /// Never: the worker finished (its source of work ended).
    Done,
}

/// A step that failed: logged with the worker's name, counted, and retried after
/// `retry_after`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    pub message: String,
    pub retry_after: Duration,
}

impl StepError {
    pub fn new(message: impl Into<String>, retry_after: Duration) -> Self {
        Self {
            message: message.into(),
            retry_after,
        }
    }
}

/// One background loop.
#[async_trait]
pub trait Worker: Send + 'static {
    /// The name in logs and metrics (`orphan-sweep`, `scrubber`); unique in a process.
    fn name(&self) -> String;

    /// How long to wait before the first step.
    fn first_step_after(&self) -> Duration {
        Duration::ZERO
    }

    /// One round of work. On shutdown the runner drops a step at its next await point, as
    /// the end of the process would, so a step keeps nothing half-done across an await that
    /// a restart could not finish.
    async fn step(&mut self) -> Result<Next, StepError>;

    /// Called once when the runner stops the worker (shutdown, or its own token): a worker
    /// that owns something needing a graceful end (a child process) ends it here. Whatever
    /// a dropped step left in `self` is still there.
    async fn on_stop(&mut self) {}
}

/// What a worker is doing, as [`Workers::statuses`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// In a step.
    Busy,
    /// Waiting for its next step.
    Idle,
    /// Its last step failed; waiting to retry.
    Failing,
    /// Finished, or stopped by shutdown.
    Stopped,
}

/// A worker's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStatus {
    pub state: WorkerState,
    /// Steps completed (ok or failed).
    pub steps: u64,
    /// Steps that failed.
    pub errors: u64,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// When the last step ended (Unix seconds; 0 before the first).
    pub last_step_unix: u64,
}

/// Label of the worker metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    pub worker: String,
}

/// The workers' metrics, registered under the process's prefix:
/// `worker_steps_total`, `worker_errors_total`, `worker_running` and
/// `worker_last_step_timestamp_seconds`, each by `worker`.
#[derive(Clone, Default)]
pub struct WorkerMetrics {
    steps: Family<WorkerLabels, Counter>,
    errors: Family<WorkerLabels, Counter>,
    running: Family<WorkerLabels, Gauge>,
    last_step: Family<WorkerLabels, Gauge>,
}

impl WorkerMetrics {
    /// New metrics, registered in `registry`.
    pub fn registered(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "worker_steps",
            "Steps of each background worker",
            m.steps.clone(),
        );
        registry.register(
            "worker_errors",
            "Failed steps of each background worker",
            m.errors.clone(),
        );
        registry.register(
            "worker_running",
            "1 while a background worker runs, 0 once it stopped",
            m.running.clone(),
        );
        registry.register(
            "worker_last_step_timestamp_seconds",
            "When each background worker last ended a step (Unix seconds)",
            m.last_step.clone(),
        );
        m
    }
}

/// The runner of a process's workers.
#[derive(Clone)]
pub struct Workers {
    cancel: CancellationToken,
    metrics: WorkerMetrics,
    statuses: Arc<Mutex<BTreeMap<String, WorkerStatus>>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Workers {
    /// A runner whose workers stop when `cancel` is cancelled (or [`Workers::shutdown`]).
    pub fn new(cancel: CancellationToken, metrics: WorkerMetrics) -> Self {
        Self {
            cancel,
            metrics,
            statuses: Arc::default(),
            tasks: Arc::default(),
        }
    }

    /// A token cancelled with the runner, for [`Workers::spawn_until`].
    pub fn child_token(&self) -> CancellationToken {
        self.cancel.child_token()
    }

    /// Starts `worker`; it runs until shutdown.
    pub fn spawn(&self, worker: impl Worker) {
        self.spawn_until(worker, self.cancel.clone());
    }

    /// Starts `worker`; it runs until `stop` is cancelled (a [`Workers::child_token`], so
    /// that shutdown stops it too). A worker stopped by its own token before shutdown is
    /// forgotten by [`Workers::statuses`] (an observer of a replica that left).
    pub fn spawn_until(&self, mut worker: impl Worker, stop: CancellationToken) {
        let name = worker.name();
        let labels = WorkerLabels {
            worker: name.clone(),
        };
        let (cancel, runner, metrics, statuses) = (
            stop,
            self.cancel.clone(),
            self.metrics.clone(),
            self.statuses.clone(),
        );
        let set = {
            let (name, statuses) = (name.clone(), statuses.clone());
            move |state: WorkerState| {
                let mut all = lock(&statuses, "worker statuses");
                let status = all.entry(name.clone()).or_insert(WorkerStatus {
                    state,
                    steps: 0,
                    errors: 0,
                    last_error: None,
                    last_step_unix: 0,
                });
                status.state = state;
                status.clone()
            }
        };
        set(WorkerState::Idle);
        metrics.running.get_or_create(&labels).set(1);
        let task = tokio::spawn(async move {
            let mut wait = worker.first_step_after();
            loop {
                if !wait.is_zero() {
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(wait) => {}
                    }
                } else if cancel.is_cancelled() {
                    break;
                }
                set(WorkerState::Busy);
                let result = tokio::select! {
                    () = cancel.cancelled() => break,
                    result = worker.step() => result,
                };
                let now = unix_now();
                metrics.steps.get_or_create(&labels).inc();
                metrics
                    .last_step
                    .get_or_create(&labels)
                    .set(i64::try_from(now).unwrap_or(i64::MAX));
                let failed = result.as_ref().err().map(|e| e.message.clone());
                let state = match &result {
                    Ok(Next::Done) => WorkerState::Stopped,
                    Ok(_) => WorkerState::Idle,
                    Err(_) => WorkerState::Failing,
                };
                {
                    let mut all = lock(&statuses, "worker statuses");
                    if let Some(status) = all.get_mut(&labels.worker) {
                        status.state = state;
                        status.steps += 1;
                        status.last_step_unix = now;
                        if let Some(message) = &failed {
                            status.errors += 1;
                            status.last_error = Some(message.clone());
                        }
                    }
                }
                wait = match result {
                    Ok(Next::Now) => {
                        // Let other tasks run between steps of a busy worker.
                        tokio::task::yield_now().await;
                        Duration::ZERO
                    }
                    Ok(Next::After(after)) => after,
                    Ok(Next::Done) => break,
                    Err(err) => {
                        metrics.errors.get_or_create(&labels).inc();
                        tracing::warn!(worker = %labels.worker, error = %err.message, retry_in = ?err.retry_after, "worker step failed");
                        err.retry_after
                    }
                };
            }
            worker.on_stop().await;
            set(WorkerState::Stopped);
            metrics.running.get_or_create(&labels).set(0);
            if cancel.is_cancelled() && !runner.is_cancelled() {
                lock(&statuses, "worker statuses").remove(&labels.worker);
            }
        });
        let mut tasks = lock(&self.tasks, "worker tasks");
        // Forget the workers that ended (observers of replicas that left).
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Every worker's status, by name.
    pub fn statuses(&self) -> BTreeMap<String, WorkerStatus> {
        lock(&self.statuses, "worker statuses").clone()
    }

    /// Stops every worker and waits until they all stopped.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let tasks = std::mem::take(&mut *lock(&self.tasks, "worker tasks"));
        for task in tasks {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting {
        left: u32,
        fail_first: bool,
    }

    #[async_trait]
    impl Worker for Counting {
        fn name(&self) -> String {
            "counting".into()
        }
        async fn step(&mut self) -> Result<Next, StepError> {
            if self.fail_first {
                self.fail_first = false;
                return Err(StepError::new("first step fails", Duration::from_millis(1)));
            }
            self.left -= 1;
            Ok(if self.left == 0 {
                Next::Done
            } else {
                Next::Now
            })
        }
    }

    struct Forever;

    #[async_trait]
    impl Worker for Forever {
        fn name(&self) -> String {
            "forever".into()
        }
        async fn step(&mut self) -> Result<Next, StepError> {
            Ok(Next::After(Duration::from_secs(3600)))
        }
    }

    fn encoded(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).expect("encode");
        out
    }

    #[tokio::test]
    async fn steps_errors_and_stop_are_reported_and_shutdown_stops_idle_workers() {
        let mut registry = Registry::with_prefix("test");
        let workers = Workers::new(
            CancellationToken::new(),
            WorkerMetrics::registered(&mut registry),
        );
        workers.spawn(Counting {
            left: 3,
            fail_first: true,
        });
        workers.spawn(Forever);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while workers.statuses()["counting"].state != WorkerState::Stopped {
            assert!(
                tokio::time::Instant::now() < deadline,
                "counting never stopped"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let counting = &workers.statuses()["counting"];
        assert_eq!((counting.steps, counting.errors), (4, 1));
        assert_eq!(counting.last_error.as_deref(), Some("first step fails"));
        let text = encoded(&registry);
        assert!(
            text.contains("test_worker_steps_total{worker=\"counting\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("test_worker_errors_total{worker=\"counting\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("test_worker_running{worker=\"forever\"} 1"),
            "{text}"
        );
        tokio::time::timeout(Duration::from_secs(5), workers.shutdown())
            .await
            .expect("shutdown stops a worker waiting for its next step");
        assert_eq!(workers.statuses()["forever"].state, WorkerState::Stopped);
        assert!(encoded(&registry).contains("test_worker_running{worker=\"forever\"} 0"));
    }
}
