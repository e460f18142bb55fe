//! Rebalancing: when replicas join, or one holds far more bytes than the others, copies move
//! from the fullest replica to the emptiest, one copy of one file at a time, add before trim.
//!
//! The [`Rebalancer`] only chooses moves and paces them; the file's own reconcile carries each
//! one out, so that a file is never reconciled twice at once: the move is handed to the plan
//! as a hint ([`crate::plan::Move`] in `DesiredFile::moving`), which pulls to the emptier
//! replica and then trims the fuller one under the usual add-before-trim check. A move
//! therefore never lowers a file below N, and a move whose source disappears stops with the
//! file at N.
//!
//! Bound: bytes are compared per replica that takes copies (live, not draining, not full),
//! and moves go on until the fullest holds at most `ratio` times the bytes of the emptiest,
//! or fewer than `min_gap_bytes` more (a few small files are not worth moving), or until no copy could move without overshooting (every copy the fullest could give is
//! larger than half the gap: the gap is then less than twice that copy). Rebalancing yields
//! to repair: it starts no move while a file is under-replicated or a replica is not live.
//! Its pace: a global bytes-per-second budget, plus the per-replica pull limit every pull
//! shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deposito_api::replica::ObjectState;
use deposito_api::FileKey;
use deposito_util::worker::{Next, StepError, Worker};
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::catalog::Catalog;
use super::health::{Backlog, ReplicaSet};
use super::index::InventoryIndex;
use crate::metrics::Metrics;
use crate::plan::{Health, Move, ReplicaView};

/// Knobs of rebalancing.
#[derive(Debug, Clone, Copy)]
pub struct RebalanceSettings {
    pub enabled: bool,
    /// Most bytes moved per second, over all moves.
    pub bytes_per_sec: u64,
    /// Balanced when the fullest holds at most this many times the bytes of the emptiest.
    pub ratio: f64,
    /// Balanced, too, when the fullest holds fewer than this many bytes more than the emptiest.
    pub min_gap_bytes: u64,
    /// Moves under way at once.
    pub in_flight: usize,
    /// How often the replicas are compared.
    pub tick: Duration,
    /// A move that has not finished after this long is given up (the file keeps its N).
    pub move_timeout: Duration,
}

impl Default for RebalanceSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            bytes_per_sec: 32 << 20,
            ratio: 1.25,
            min_gap_bytes: 8 << 20,
            in_flight: 16,
            tick: Duration::from_millis(200),
            move_timeout: Duration::from_secs(300),
        }
    }
}

/// A move handed to a file's reconcile.
#[derive(Debug, Clone)]
struct Planned {
    mv: Move,
    sha256: String,
    size: u64,
    started: Instant,
}

/// The moves under way, read by the reconcile of each file.
#[derive(Debug, Default)]
pub struct Moves {
    inner: Mutex<HashMap<FileKey, Planned>>,
}

impl Moves {
    /// The move asked of `key`, if any.
    pub fn of(&self, key: &FileKey) -> Option<Move> {
        self.lock().get(key).map(|p| p.mv.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileKey, Planned>> {
        self.inner.lock().expect("rebalance moves lock")
    }
}

/// How a move ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Done,
    /// The source no longer holds the copy (and the target does not): nothing to move.
    SourceGone,
    TimedOut,
}

/// The rebalancing worker.
pub struct Rebalancer {
    pub settings: RebalanceSettings,
    pub moves: Arc<Moves>,
    pub replicas: Arc<ReplicaSet>,
    pub index: Arc<InventoryIndex>,
    pub catalog: Arc<dyn Catalog>,
    pub backlog: Arc<Backlog>,
    pub triggers: mpsc::UnboundedSender<FileKey>,
    pub metrics: Arc<Metrics>,
}

/// `rebalance`: each tick, ends the moves that are done and starts new ones at the pace
/// the settings allow. Started only when rebalancing is enabled, and only in the leader.
pub struct RebalanceWorker {
    rebalancer: Rebalancer,
    /// Runs ahead of the clock by the time the moves started so far should take.
    next_at: Instant,
}

#[async_trait]
impl Worker for RebalanceWorker {
    fn name(&self) -> String {
        "rebalance".into()
    }

    fn first_step_after(&self) -> Duration {
        self.rebalancer.settings.tick
    }

    async fn step(&mut self) -> Result<Next, StepError> {
        self.rebalancer.settle();
        self.rebalancer.start_moves(&mut self.next_at).await;
        Ok(Next::After(self.rebalancer.settings.tick))
    }
}

impl Rebalancer {
    /// The rebalancer as the `rebalance` worker; `None` when rebalancing is switched off.
    pub fn into_worker(self) -> Option<RebalanceWorker> {
        self.settings.enabled.then(|| RebalanceWorker {
            rebalancer: self,
            next_at: Instant::now(),
        })
    }

    /// Ends the moves that are done, whose source went, or that took too long.
    fn settle(&self) {
        let ended: Vec<(FileKey, Planned, Ended)> = {
            let moves = self.moves.lock();
            moves
                .iter()
                .filter_map(|(key, p)| self.ended(key, p).map(|e| (key.clone(), p.clone(), e)))
                .collect()
        };
        for (key, planned, ended) in ended {
            self.moves.lock().remove(&key);
            let result = match ended {
                Ended::Done => {
                    self.metrics.rebalance_bytes.inc_by(planned.size);
                    "ok"
                }
                Ended::SourceGone => "source_gone",
                Ended::TimedOut => "timed_out",
            };
            self.metrics
                .rebalance_moves
                .get_or_create(&crate::metrics::ResultLabels {
                    result: result.to_string(),
                })
                .inc();
            debug!(file = %key, from = %planned.mv.from, to = %planned.mv.to, result, "move ended");
            // Once more without the hint: trims an extra copy a stopped move left.
            if ended != Ended::Done {
                let _ = self.triggers.send(key);
            }
        }
    }

    fn ended(&self, key: &FileKey, planned: &Planned) -> Option<Ended> {
        let holds = |replica: &str| {
            self.index.copies(key).iter().any(|c| {
                c.replica == replica && c.sha256 == planned.sha256 && c.state == ObjectState::Ready
            })
        };
        let (at_source, at_target) = (holds(&planned.mv.from), holds(&planned.mv.to));
        if at_target && !at_source {
            Some(Ended::Done)
        } else if !at_source && !at_target {
            Some(Ended::SourceGone)
        } else if planned.started.elapsed() > self.settings.move_timeout {
            Some(Ended::TimedOut)
        } else {
            None
        }
    }

    /// Starts moves while replicas are uneven, within the pace.
    async fn start_moves(&self, next_at: &mut Instant) {
        let views = self.replicas.current();
        if views.error.is_some()
            || views.replicas.iter().any(|v| v.health != Health::Live)
            || self.backlog.under_replicated() > 0
        {
            return;
        }
        let holders: Vec<&ReplicaView> = views.replicas.iter().filter(|v| !v.draining).collect();
        let takers: Vec<&ReplicaView> = holders.iter().copied().filter(|v| !v.full).collect();
        // Bytes per replica, counting the moves under way as done.
        let mut used: HashMap<String, u64> = holders
            .iter()
            .map(|v| (v.id.clone(), self.index.ready_bytes(&v.id)))
            .collect();
        for planned in self.moves.lock().values() {
            if let Some(b) = used.get_mut(&planned.mv.from) {
                *b = b.saturating_sub(planned.size);
            }
            if let Some(b) = used.get_mut(&planned.mv.to) {
                *b += planned.size;
            }
        }
        let spread = |used: &HashMap<String, u64>| {
            let max = takers.iter().map(|v| used[&v.id]).max().unwrap_or(0);
            let min = takers.iter().map(|v| used[&v.id]).min().unwrap_or(0);
            max as f64 / min.max(1) as f64
        };
        self.metrics.rebalance_spread.set(spread(&used));
        // The pace: `next_at` runs ahead of the clock by the time the moves started so far
        // take at `bytes_per_sec`; moves start while it is less than one tick ahead.
        while self.moves.lock().len() < self.settings.in_flight
            && *next_at <= Instant::now() + self.settings.tick
        {
            let Some(fullest) = holders.iter().max_by_key(|v| (used[&v.id], v.id.clone())) else {
                return;
            };
            let Some(emptiest) = takers
                .iter()
                .filter(|v| v.id != fullest.id)
                .min_by_key(|v| (used[&v.id], v.id.clone()))
            else {
                return;
            };
            let (high, low) = (used[&fullest.id], used[&emptiest.id]);
            if high as f64 <= self.settings.ratio * low as f64
                || high.saturating_sub(low) < self.settings.min_gap_bytes.max(1)
            {
                return;
            }
            let Some((key, sha256, size)) =
                self.candidate(&fullest.id, &emptiest.id, high, low).await
            else {
                return;
            };
            let mv = Move {
                from: fullest.id.clone(),
                to: emptiest.id.clone(),
            };
            info!(file = %key, from = %mv.from, to = %mv.to, size, "rebalancing: moving a copy");
            self.moves.lock().insert(
                key.clone(),
                Planned {
                    mv,
                    sha256,
                    size,
                    started: Instant::now(),
                },
            );
            *used.get_mut(&fullest.id).expect("holder") -= size;
            *used.get_mut(&emptiest.id).expect("taker") += size;
            let pace =
                Duration::from_secs_f64(size as f64 / self.settings.bytes_per_sec.max(1) as f64);
            *next_at = (*next_at).max(Instant::now()) + pace;
            let _ = self.triggers.send(key);
        }
    }

    /// A copy on `from` worth moving to `to`: no larger than half the gap, of a file that is
    /// at rest (converged, current content) and not already moving.
    async fn candidate(
        &self,
        from: &str,
        to: &str,
        high: u64,
        low: u64,
    ) -> Option<(FileKey, String, u64)> {
        let half_gap = (high - low) / 2;
        for (key, sha256, size) in self.index.movable(from, to, half_gap, 256) {
            if size == 0 || self.moves.lock().contains_key(&key) || self.backlog.is_unsettled(&key)
            {
                continue;
            }
            let Ok(Some(record)) = self.catalog.get(&key).await else {
                continue;
            };
            if !record.deleting
                && record.sha256 == sha256
                && record.status.phase == deposito_api::gateway::Phase::Ready
            {
                return Some((key, sha256, size));
            }
        }
        None
    }
}
