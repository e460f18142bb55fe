//! The local-mode driver: a work queue of file keys fed by the catalog's change
//! notifications, by the engine's triggers (inventory and health changes) and by a slow
//! periodic resync, drained by a bounded number of workers. (Kube mode drives the same
//! engine from a kube-rs `Controller` instead.)

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use deposito_api::replica::ObjectState;
use deposito_api::FileKey;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
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

/// Runs the queue until `cancel`.
pub async fn run(
    engine: Arc<Engine>,
    mut triggers: mpsc::UnboundedReceiver<FileKey>,
    settings: DriverSettings,
    cancel: CancellationToken,
) {
    let queue = Arc::new(WorkQueue::default());
    let mut desired = engine.catalog.changes().queue_receiver();

    // Wait (bounded) until the replicas' inventories are observed.
    let deadline = tokio::time::Instant::now() + settings.settle_timeout;
    while !engine.replicas.settled() && tokio::time::Instant::now() < deadline {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    info!(settled = engine.replicas.settled(), "reconciling");

    let feeder = {
        let (engine, queue, cancel) = (engine.clone(), queue.clone(), cancel.clone());
        tokio::spawn(async move {
            loop {
                let key = tokio::select! {
                    _ = cancel.cancelled() => return,
                    Some(key) = desired.recv() => key,
                    Some(key) = triggers.recv() => key,
                    else => return,
                };
                queue.add(key.clone(), engine.priority(&key));
                engine.metrics.queue_depth.set(queue.len() as i64);
            }
        })
    };
    let resync = {
        let (engine, queue, cancel) = (engine.clone(), queue.clone(), cancel.clone());
        tokio::spawn(async move {
            loop {
                resync_all(&engine, &queue).await;
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(settings.resync_every) => {}
                }
            }
        })
    };
    let workers: Vec<_> = (0..settings.workers.max(1))
        .map(|_| {
            let (engine, queue, cancel) = (engine.clone(), queue.clone(), cancel.clone());
            tokio::spawn(async move {
                loop {
                    let key = tokio::select! {
                        _ = cancel.cancelled() => return,
                        key = queue.next() => key,
                    };
                    let done = match engine.reconcile_key(&key).await {
                        Ok(outcome) => Done::Ok {
                            requeue_after: outcome.requeue_after,
                        },
                        Err(err) => {
                            warn!(file = %key, stage = err.stage(), %err, "reconcile failed");
                            Done::Failed(err.category())
                        }
                    };
                    queue.done(&key, done);
                    engine.metrics.queue_depth.set(queue.len() as i64);
                }
            })
        })
        .collect();
    cancel.cancelled().await;
    feeder.abort();
    resync.abort();
    for worker in workers {
        worker.abort();
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
