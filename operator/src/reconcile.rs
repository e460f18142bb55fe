//! The reconcile loop: observe (membership, inventories, catalog), plan with the pure core,
//! act (ask targets to pull and holders to delete), publish status. Level-based: every pass
//! starts from what the replicas report, never from memory, so a restart converges.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deposito_api::gateway::Phase;
use deposito_api::replica::ObjectInfo;
use deposito_api::FileKey;
use futures::stream::{self, StreamExt};
use tracing::{info, instrument, warn};

use crate::core::{self, Action, CopyView, DesiredFile, Health, ReplicaView};
use crate::local::catalog::{Entry, ObservedStatus};
use crate::local::membership::Member;
use crate::state::Context;

/// Files reconciled at once.
const FILE_CONCURRENCY: usize = 16;

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What one pass observed of the replicas.
pub struct Observation {
    pub views: Vec<ReplicaView>,
    /// Inventories of the live replicas.
    pub inventories: BTreeMap<String, Vec<ObjectInfo>>,
}

impl Observation {
    /// The view of one replica.
    pub fn view(&self, id: &str) -> Option<&ReplicaView> {
        self.views.iter().find(|v| v.id == id)
    }
}

/// Classifies a member: live only if it spoke recently, is ready, and its inventory answered.
pub fn classify(member: &Member, inventory_ok: bool, ctx: &Context) -> Health {
    if member.heard && member.since_seen <= ctx.settings.liveness_timeout && inventory_ok {
        Health::Live
    } else if member.since_seen < ctx.settings.grace_period {
        Health::Unreachable
    } else {
        Health::Lost
    }
}

/// Reads membership and every live replica's inventory.
#[instrument(skip(ctx), level = "debug")]
pub async fn observe(ctx: &Context) -> Observation {
    let members = ctx.membership.snapshot();
    let fetched: Vec<(Member, Option<Vec<ObjectInfo>>)> = stream::iter(members)
        .map(|member| async move {
            let inventory = if member.heard && member.since_seen <= ctx.settings.liveness_timeout {
                match ctx.replicas.inventory(&member.url).await {
                    Ok(items) => Some(items),
                    Err(err) => {
                        warn!(replica = %member.id, %err, "inventory failed");
                        None
                    }
                }
            } else {
                None
            };
            (member, inventory)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut views = Vec::new();
    let mut inventories = BTreeMap::new();
    for (member, inventory) in fetched {
        let health = classify(&member, inventory.is_some(), ctx);
        views.push(ReplicaView {
            id: member.id.clone(),
            zone: member.zone.clone(),
            health,
            draining: member.draining,
            // A replica that is not ready (disk full, data dir not writable) gets no copies.
            free_bytes: if member.ready { member.free_bytes } else { 0 },
            active_transfers: member.active_transfers,
            url: member.url.clone(),
        });
        if let (Health::Live, Some(items)) = (health, inventory) {
            inventories.insert(member.id, items);
        }
    }
    views.sort_by(|a, b| a.id.cmp(&b.id));
    Observation { views, inventories }
}

/// Runs passes until the process ends: after a change, after actions, or every interval.
pub async fn run(ctx: Arc<Context>) {
    loop {
        let acted = pass(&ctx).await;
        if acted {
            // Actions change what replicas hold: look again soon to publish the result.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        tokio::select! {
            _ = ctx.wake.notified() => {}
            _ = tokio::time::sleep(ctx.settings.reconcile_interval) => {}
        }
    }
}

/// One full pass. Returns true when it asked replicas to do something.
#[instrument(skip(ctx), level = "debug")]
pub async fn pass(ctx: &Context) -> bool {
    ctx.metrics.reconcile_passes.inc();
    let observation = observe(ctx).await;
    for health in [Health::Live, Health::Unreachable, Health::Lost] {
        let n = observation
            .views
            .iter()
            .filter(|v| v.health == health)
            .count();
        ctx.metrics
            .replicas
            .get_or_create(&crate::metrics::HealthLabels {
                health: health.as_str().to_string(),
            })
            .set(n as i64);
    }
    let mut entries = match ctx.catalog.run(|c| c.list(None)).await {
        Ok(entries) => entries,
        Err(err) => {
            warn!(%err, "catalog read failed");
            return false;
        }
    };
    ctx.metrics.files.set(entries.len() as i64);
    // Rule 8: files with the fewest verified copies are repaired first.
    entries.sort_by_key(|e| e.status.ready_replicas);

    let mut copies: HashMap<(String, String), Vec<CopyView>> = HashMap::new();
    for (replica, items) in &observation.inventories {
        for item in items {
            copies
                .entry((item.namespace.clone(), item.name.clone()))
                .or_default()
                .push(CopyView {
                    replica: replica.clone(),
                    sha256: item.sha256.clone(),
                    size: item.size,
                    state: item.state,
                    stored_at: item.stored_at,
                });
        }
    }
    let known: BTreeSet<(String, String)> = entries
        .iter()
        .map(|e| (e.key.namespace.clone(), e.key.name.clone()))
        .collect();

    let observation = &observation;
    let copies = &copies;
    let acted: Vec<bool> = stream::iter(entries)
        .map(|entry| async move {
            let key = entry.key.clone();
            let file_copies = copies
                .get(&(key.namespace.clone(), key.name.clone()))
                .cloned()
                .unwrap_or_default();
            reconcile_file(ctx, &key, observation, &file_copies).await
        })
        .buffer_unordered(FILE_CONCURRENCY)
        .collect()
        .await;
    let orphans_deleted = collect_orphans(ctx, observation, &known).await;
    acted.into_iter().any(|a| a) || orphans_deleted
}

fn desired_of(entry: &Entry, stale_cutoff_unix: u64) -> DesiredFile {
    let mut last_holders = entry.status.holders.clone();
    last_holders.extend(entry.status.unreachable_holders.iter().cloned());
    last_holders.sort();
    last_holders.dedup();
    DesiredFile {
        namespace: entry.key.namespace.clone(),
        name: entry.key.name.clone(),
        replicas: entry.replicas,
        sha256: entry.sha256.clone(),
        size: entry.size,
        generation: entry.generation,
        deleting: entry.deleting,
        last_holders,
        stale_cutoff_unix,
    }
}

/// Plans and acts on one file under its lock. Returns true when actions were attempted.
#[instrument(skip(ctx, observation, file_copies), fields(file = %key))]
async fn reconcile_file(
    ctx: &Context,
    key: &FileKey,
    observation: &Observation,
    file_copies: &[CopyView],
) -> bool {
    // An upload of this file is committing: look again next pass.
    let Some(_guard) = ctx.locks.try_lock(key) else {
        return false;
    };
    let lookup = key.clone();
    let entry = match ctx.catalog.run(move |c| c.get(&lookup)).await {
        Ok(Some(entry)) => entry,
        Ok(None) => return false,
        Err(err) => {
            warn!(%err, "catalog read failed");
            return false;
        }
    };
    // No stale-copy age guard is needed here: uploads hold this file's lock from before the
    // first byte reaches a replica until the catalog commit, and this pass read the entry
    // under that lock, so any copy of other content is either superseded or unacknowledged.
    let desired = desired_of(&entry, u64::MAX);
    let plan = core::plan_file(&desired, &observation.views, file_copies);
    for event in &plan.events {
        info!(reason = %event.reason, message = %event.message, "event");
        ctx.metrics
            .events
            .get_or_create(&crate::metrics::EventLabels {
                reason: event.reason.clone(),
            })
            .inc();
    }
    if plan.phase == Phase::Lost && entry.status.observed_generation != entry.generation {
        // New content committed after this pass read the inventories: its copy is not in
        // the snapshot yet. Look again next pass instead of publishing a false Lost.
        return false;
    }
    let acted = !plan.actions.is_empty();
    execute(ctx, key, observation, &plan.actions).await;

    if plan.finalized {
        let (k, generation) = (key.clone(), entry.generation);
        match ctx
            .catalog
            .run(move |c| c.finalize_delete(&k, generation))
            .await
        {
            Ok(true) => {
                info!("deleted: every copy removed");
                ctx.publish_change();
            }
            Ok(false) => {}
            Err(err) => warn!(%err, "finalize failed"),
        }
        return acted;
    }
    let unreachable_holders: Vec<String> = desired
        .last_holders
        .iter()
        .filter(|id| {
            observation
                .view(id)
                .is_some_and(|v| v.health == Health::Unreachable)
        })
        .cloned()
        .collect();
    let status = ObservedStatus {
        phase: plan.phase,
        ready_replicas: plan.ready_replicas,
        holders: plan.holders.clone(),
        unreachable_holders,
        observed_generation: entry.generation,
        conditions: plan.conditions.clone(),
    };
    let (k, generation) = (key.clone(), entry.generation);
    match ctx
        .catalog
        .run(move |c| c.write_status(&k, generation, &status))
        .await
    {
        Ok(true) => ctx.publish_change(),
        Ok(false) => {}
        Err(err) => warn!(%err, "status write failed"),
    }
    acted
}

/// Carries out a plan: pulls concurrently, then deletes. Failures are logged; the next pass
/// observes what happened and plans again.
async fn execute(ctx: &Context, key: &FileKey, observation: &Observation, actions: &[Action]) {
    let url_of = |id: &str| observation.view(id).map(|v| v.url.clone());
    let pulls: Vec<(String, String, String)> = actions
        .iter()
        .filter_map(|action| match action {
            Action::Pull {
                target,
                source,
                sha256,
            } => Some((target.clone(), source.clone(), sha256.clone())),
            Action::Delete { .. } => None,
        })
        .collect();
    let mut results = Vec::new();
    let mut in_flight = futures::stream::FuturesUnordered::new();
    for (target, source, sha256) in pulls {
        let (target_url, source_url) = (url_of(&target), url_of(&source));
        in_flight.push(async move {
            let (Some(target_url), Some(source_url)) = (target_url, source_url) else {
                return false;
            };
            match ctx
                .replicas
                .pull(&target_url, &source_url, key, &sha256)
                .await
            {
                Ok(_) => {
                    info!(%target, %source, "replicated");
                    true
                }
                Err(err) => {
                    warn!(%target, %source, %err, "pull failed");
                    false
                }
            }
        });
    }
    while let Some(ok) = in_flight.next().await {
        results.push(ok);
    }
    for ok in &results {
        ctx.metrics.action("pull", *ok);
    }
    for action in actions {
        if let Action::Delete {
            replica,
            sha256,
            reason,
        } = action
        {
            let Some(url) = url_of(replica) else { continue };
            let result = ctx.replicas.delete(&url, key, sha256).await;
            ctx.metrics.action("delete", result.is_ok());
            match result {
                Ok(()) => info!(%replica, ?reason, "trimmed copy"),
                Err(err) => warn!(%replica, ?reason, %err, "delete failed"),
            }
        }
    }
}

/// Deletes copies no catalog entry claims, once older than the orphan grace.
async fn collect_orphans(
    ctx: &Context,
    observation: &Observation,
    known: &BTreeSet<(String, String)>,
) -> bool {
    let inventories: Vec<core::ReplicaInventory> = observation
        .inventories
        .iter()
        .map(|(replica, objects)| core::ReplicaInventory {
            replica: replica.clone(),
            objects: objects.clone(),
        })
        .collect();
    let orphans = core::plan_orphans(
        known,
        &inventories,
        unix_now(),
        ctx.settings.orphan_grace.as_secs(),
    );
    let mut acted = false;
    for orphan in orphans {
        let Ok(key) = FileKey::new(&orphan.namespace, &orphan.name) else {
            continue;
        };
        let Some(_guard) = ctx.locks.try_lock(&key) else {
            continue;
        };
        let lookup = key.clone();
        if !matches!(ctx.catalog.run(move |c| c.get(&lookup)).await, Ok(None)) {
            continue;
        }
        let Some(view) = observation.view(&orphan.replica) else {
            continue;
        };
        acted = true;
        match ctx.replicas.delete(&view.url, &key, &orphan.sha256).await {
            Ok(()) => info!(replica = %orphan.replica, file = %key, "deleted orphan copy"),
            Err(err) => warn!(replica = %orphan.replica, file = %key, %err, "orphan delete failed"),
        }
    }
    acted
}
