//! One observer per replica: it lists the replica's inventory once, then follows its change
//! feed with long polls, so that the shared [`InventoryIndex`] stays current while nothing
//! is re-read. A full re-list runs on a slow schedule (and whenever the feed can't continue:
//! the replica restarted, or the observer fell behind), so that a missed change is repaired.
//!
//! Every file whose copies changed is sent to the engine as a trigger.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deposito_api::{ErrorCode, FileKey};
use deposito_util::worker::{Next, StepError, Worker};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::index::InventoryIndex;
use crate::replica_client::{ReplicaClient, ReplicaClientError};

/// Shortest time between two reads of a replica's `/v1/info`.
const INFO_EVERY: Duration = Duration::from_secs(5);

/// Timing of an observer.
#[derive(Debug, Clone, Copy)]
pub struct ObserverSettings {
    /// How long one long poll of the change feed waits for a change.
    pub poll_wait: Duration,
    /// Period of the full re-list.
    pub relist_every: Duration,
    /// Also read the replica's `/v1/info` (free space, load) after every poll: for modes
    /// whose membership does not report them.
    pub read_info: bool,
}

/// What an observer watches.
#[derive(Debug, Clone)]
pub struct Target {
    pub replica: String,
    pub url: String,
}

/// `observer-<replica>`: keeps `index` current for one replica, sending changed files to
/// the engine's triggers. One step is one listing followed by the change feed, until it is
/// time to re-list (next step at once) or the replica fails (next step after a backoff).
pub struct Observer {
    target: Target,
    client: ReplicaClient,
    index: Arc<InventoryIndex>,
    triggers: mpsc::UnboundedSender<FileKey>,
    settings: ObserverSettings,
    failures: u32,
}

impl Observer {
    pub fn new(
        target: Target,
        client: ReplicaClient,
        index: Arc<InventoryIndex>,
        triggers: mpsc::UnboundedSender<FileKey>,
        settings: ObserverSettings,
    ) -> Self {
        Self {
            target,
            client,
            index,
            triggers,
            settings,
            failures: 0,
        }
    }
}

#[async_trait]
impl Worker for Observer {
    fn name(&self) -> String {
        format!("observer-{}", self.target.replica)
    }

    /// Failures are logged here (once at warn, then at debug) rather than by the runner: a
    /// replica that is down fails every few seconds until it is back or gone.
    async fn step(&mut self) -> Result<Next, StepError> {
        let outcome = follow(
            &self.target,
            &self.client,
            &self.index,
            &self.triggers,
            self.settings,
        )
        .await;
        self.index.set_synced(&self.target.replica, false);
        Ok(match outcome {
            Ok(()) => {
                self.failures = 0;
                Next::Now
            }
            Err(err) => {
                self.failures = self.failures.saturating_add(1);
                let replica = &self.target.replica;
                if self.failures == 1 {
                    warn!(%replica, %err, "inventory observer failing; retrying");
                } else {
                    debug!(%replica, %err, "inventory observer still failing");
                }
                Next::After(Duration::from_millis(250 * (1 << self.failures.min(5))))
            }
        })
    }
}

fn send_all(triggers: &mpsc::UnboundedSender<FileKey>, keys: Vec<FileKey>) {
    for key in keys {
        let _ = triggers.send(key);
    }
}

/// One listing followed by the change feed. Returns Ok when it is time to re-list, Err when
/// the replica failed.
async fn follow(
    target: &Target,
    client: &ReplicaClient,
    index: &InventoryIndex,
    triggers: &mpsc::UnboundedSender<FileKey>,
    settings: ObserverSettings,
) -> Result<(), ReplicaClientError> {
    // A page at a time into the index; copies the listing did not show go at its end.
    index.begin_listing(&target.replica);
    let (mut objects, mut changed) = (0, 0);
    let position = client
        .inventory(&target.url, |items| {
            objects += items.len();
            let keys = index.listed(&target.replica, &items);
            changed += keys.len();
            send_all(triggers, keys);
        })
        .await?;
    let gone = index.end_listing(&target.replica);
    debug!(replica = %target.replica, objects, changed, gone = gone.len(), "inventory listed");
    send_all(triggers, gone);
    let (epoch, mut seq) = (position.epoch, position.seq);
    let relist_at = tokio::time::Instant::now() + settings.relist_every;
    let mut synced = false;
    let mut info_due = tokio::time::Instant::now();
    loop {
        // The first round does not wait: it catches up on what changed during the listing.
        let wait = if synced {
            settings.poll_wait
        } else {
            Duration::ZERO
        };
        let page = match client.changes(&target.url, &epoch, seq, wait).await {
            Ok(page) => page,
            Err(err) if err.code() == Some(ErrorCode::CursorExpired) => {
                info!(replica = %target.replica, %err, "change feed expired; listing again");
                return Ok(());
            }
            Err(err) => return Err(err),
        };
        send_all(triggers, index.apply(&target.replica, &page.changes));
        seq = page.seq;
        if !page.more && !synced {
            synced = true;
            index.set_synced(&target.replica, true);
        }
        if settings.read_info && tokio::time::Instant::now() >= info_due {
            info_due = tokio::time::Instant::now() + INFO_EVERY;
            if let Ok(info) = client.info(&target.url).await {
                index.set_info(&target.replica, info);
            }
        }
        if tokio::time::Instant::now() >= relist_at {
            return Ok(());
        }
    }
}
