//! The queue driver of the engine: a work queue of file keys fed by the catalog's change
//! notifications, by the engine's triggers (inventory and health changes) and by a slow
//! periodic resync, drained by a bounded number of reconcile workers. A mode without a
//! controller of its own runs it (local, compose); kube mode drives the same engine from a
//! kube-rs `Controller` instead.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deposito_api::replica::ObjectState;
use deposito_api::FileKey;
use deposito_util::worker::{Next, StepError, Worker, Workers};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::queue::{Done, Priority, WorkQueue};
use super::reconcile::Engine;
use crate::plan::Health;

/// Knobs of the driver.
#[derive(Debug, Clone, Copy)]
pub struct DriverSettings {
    /// Files reconciled at once.
    pub workers: usize,
    /// Period of the slow resync that visits every file.
    pub resync_every: Duration,
    /// Longest wait at start for the replicas' inventories before reconciling anyway.
    pub settle_timeout: Duration,
}

impl Engine {
    /// Urgent when at most one live replica holds a verified copy (rule 8).
    pub fn priority(&self, key: &FileKey) -> Priority {
        let views = self.replicas.current();
        let holders: HashSet<String> = self
            .index
            .copies(key)
            .into_iter()
            .filter(|c| c.state == ObjectState::Ready)
            .filter(|c| {
                views
                    .replicas
                    .iter()
                    .any(|v| v.id == c.replica && v.health == Health::Live)
            })
            .map(|c| c.replica)
            .collect();
        if holders.len() <= 1 {
            Priority::Urgent
        } else {
            Priority::Normal
        }
    }
}

/// Starts the driver's workers in `workers` (they stop with it): once the replicas'
/// inventories are observed (or `settle_timeout` passed), `reconcile-N` workers drain the
/// queue, `queue-feeder` fills it from the catalog's changes and the engine's triggers, and
/// `resync` queues every file each `resync_every`.
pub fn start(
    engine: Arc<Engine>,
    triggers: mpsc::UnboundedReceiver<FileKey>,
    settings: DriverSettings,
    workers: &Workers,
) {
    let queue = Arc::new(WorkQueue::default());
    let desired = engine.catalog.changes().queue_receiver();
    workers.spawn(Settle {
        engine,
        queue,
        desired: Some(desired),
        triggers: Some(triggers),
        settings,
        workers: workers.clone(),
        deadline: tokio::time::Instant::now() + settings.settle_timeout,
    });
}

/// `settle`: waits (bounded) until the replicas' inventories are observed, then starts the
/// other workers and ends.
struct Settle {
    engine: Arc<Engine>,
    queue: Arc<WorkQueue>,
    desired: Option<mpsc::UnboundedReceiver<FileKey>>,
    triggers: Option<mpsc::UnboundedReceiver<FileKey>>,
    settings: DriverSettings,
    workers: Workers,
    deadline: tokio::time::Instant,
}

#[async_trait]
impl Worker for Settle {
    fn name(&self) -> String {
        "settle".into()
    }

    async fn step(&mut self) -> Result<Next, StepError> {
        if !self.engine.replicas.settled() && tokio::time::Instant::now() < self.deadline {
            return Ok(Next::After(Duration::from_millis(100)));
        }
        info!(settled = self.engine.replicas.settled(), "reconciling");
        let (Some(desired), Some(triggers)) = (self.desired.take(), self.triggers.take()) else {
            return Ok(Next::Done);
        };
        self.workers.spawn(QueueFeeder {
            engine: self.engine.clone(),
            queue: self.queue.clone(),
            desired,
            triggers,
        });
        self.workers.spawn(Resync {
            engine: self.engine.clone(),
            queue: self.queue.clone(),
            every: self.settings.resync_every,
        });
        for n in 0..self.settings.workers.max(1) {
            self.workers.spawn(Reconciler {
                n,
                engine: self.engine.clone(),
                queue: self.queue.clone(),
            });
        }
        Ok(Next::Done)
    }
}

/// `queue-feeder`: queues the keys whose desired state changed and the engine's triggers.
struct QueueFeeder {
    engine: Arc<Engine>,
    queue: Arc<WorkQueue>,
    desired: mpsc::UnboundedReceiver<FileKey>,
    triggers: mpsc::UnboundedReceiver<FileKey>,
}

#[async_trait]
impl Worker for QueueFeeder {
    fn name(&self) -> String {
        "queue-feeder".into()
    }

    async fn step(&mut self) -> Result<Next, StepError> {
        let key = tokio::select! {
            Some(key) = self.desired.recv() => key,
            Some(key) = self.triggers.recv() => key,
            else => return Ok(Next::Done),
        };
        self.queue.add(key.clone(), self.engine.priority(&key));
        self.engine.metrics.queue_depth.set(self.queue.len() as i64);
        Ok(Next::Now)
    }
}

/// `resync`: queues every file, each period.
struct Resync {
    engine: Arc<Engine>,
    queue: Arc<WorkQueue>,
    every: Duration,
}

#[async_trait]
impl Worker for Resync {
    fn name(&self) -> String {
        "resync".into()
    }

    async fn step(&mut self) -> Result<Next, StepError> {
        resync_all(&self.engine, &self.queue).await;
        Ok(Next::After(self.every))
    }
}

/// `reconcile-N`: reconciles the queue's files one at a time.
struct Reconciler {
    n: usize,
    engine: Arc<Engine>,
    queue: Arc<WorkQueue>,
}

#[async_trait]
impl Worker for Reconciler {
    fn name(&self) -> String {
        format!("reconcile-{}", self.n)
    }

    async fn step(&mut self) -> Result<Next, StepError> {
        let key = self.queue.next().await;
        let done = match self.engine.reconcile_key(&key).await {
            Ok(outcome) => Done::Ok {
                requeue_after: outcome.requeue_after,
            },
            Err(err) => {
                warn!(file = %key, stage = err.stage(), %err, "reconcile failed");
                Done::Failed(err.category())
            }
        };
        self.queue.done(&key, done);
        self.engine.metrics.queue_depth.set(self.queue.len() as i64);
        Ok(Next::Now)
    }
}

/// Queues every file the catalog knows and every file some replica holds (so that orphans
/// are found too).
async fn resync_all(engine: &Engine, queue: &WorkQueue) {
    let mut keys: HashSet<FileKey> = match engine.catalog.keys().await {
        Ok(keys) => {
            engine.metrics.files.set(keys.len() as i64);
            keys.into_iter().collect()
        }
        Err(err) => {
            warn!(%err, "resync: catalog keys unavailable");
            HashSet::new()
        }
    };
    keys.extend(engine.index.keys());
    for key in keys {
        queue.add(key, Priority::Normal);
    }
    engine.metrics.queue_depth.set(queue.len() as i64);
}
