//! The plan function: desired state of one file plus observed copies in, actions and status
//! out. See [`plan_file`] for the rules.

use std::collections::{BTreeMap, BTreeSet};

use deposito_api::gateway::{Condition, Phase};
use deposito_api::replica::ObjectState;

use super::model::{
    Action, CopyView, DeleteReason, DesiredFile, Event, FilePlan, Health, ReplicaId, ReplicaView,
};
use super::placement::{choose_source, choose_trim, rank_targets};

/// One observed copy on a live replica, after filtering and de-duplication.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Observed<'a> {
    replica: &'a str,
    sha256: &'a str,
    corrupt: bool,
    stored_at: u64,
}

/// Plans one file: which pulls and deletes bring it to exactly N verified copies, and the
/// status to publish. Pure and deterministic: the same inputs, in any order, give the same
/// plan (everything is sorted).
///
/// Inputs: `replicas` is the whole membership (ids are unique; for a duplicated id the first
/// listed wins); `copies` are the copies of this file (any sha256, any state) reported by
/// replicas. Copies on replicas that are not `Live`, or unknown, are ignored: they can't be
/// observed now. A holder in `last_holders` that is absent from `replicas` is treated as
/// `Lost`.
///
/// Definitions:
/// - **good**: `Ready` copies of `desired.sha256` on live replicas. A good copy on a draining
///   replica is good but *leaving*; the others are *staying*.
/// - **pending**: replicas in `last_holders` that are `Unreachable` (within the grace period)
///   and not draining. They count toward N: their copies are not replaced hastily (rule 8).
///   `Lost` holders count for nothing; their copies are replaced (event `ReplacedLostCopy`).
/// - **eligible target**: a live, non-draining replica without a good copy and with at least
///   `size` bytes free. **capacity** = staying holders + eligible targets.
///
/// Rules, when not deleting:
/// - **Pulls**: `need = N - (staying + pending)`. The best `need` eligible targets by
///   [`rank_targets`] each pull from a good holder chosen by [`choose_source`]. With no good
///   copy there is nothing to pull from: no pulls.
/// - **Add before trim** (rule 5): when staying > N, the `staying - N` copies chosen by
///   [`choose_trim`] are deleted (`Extra`). A draining holder's copy is deleted (`Draining`)
///   only when staying >= N without it. Good copies are only ever deleted while at least
///   N >= 1 staying copies remain, so the last verified copy is never deleted.
/// - **Stale** copies (`Ready`, other sha256) are deleted only when no pull is planned, at
///   least one good copy exists, staying >= min(N, capacity) (the new content is in place),
///   and the copy was stored at or before `desired.stale_cutoff_unix`.
/// - **Corrupt** copies (any sha256) are deleted when at least one good copy exists, except
///   where the same replica also holds a `Ready` copy of the same sha256 (a delete would be
///   ambiguous) or is a pull target for it (the pull replaces it). A pull planned while a
///   corrupt copy of the current content exists emits `RepairedCorruptCopy`.
///
/// When `desired.deleting`: every observed copy (any sha256, any state) is deleted
/// (`FileDeleted`), the phase is `Deleting`, and `finalized` is true once none is observed.
///
/// Phase, first match: `Deleting`; with no good copy, `Degraded` if a holder is pending,
/// else `Pending` if the file was never recorded held and no copy of its content is
/// observed, else `Lost`; `Degraded` when staying + planned pulls < N (too few replicas, or
/// holders unreachable); `Replicating` when pulls are planned; `Ready` when converged
/// (exactly N staying good copies, no leaving, stale or corrupt copy, no action); otherwise
/// `Trimming`.
pub fn plan_file(desired: &DesiredFile, replicas: &[ReplicaView], copies: &[CopyView]) -> FilePlan {
    let wanted = desired.replicas.max(1) as usize;
    let (namespace, name) = (desired.namespace.as_str(), desired.name.as_str());

    let mut by_id: BTreeMap<&str, &ReplicaView> = BTreeMap::new();
    for replica in replicas {
        by_id.entry(replica.id.as_str()).or_insert(replica);
    }
    let live = |id: &str| by_id.get(id).copied().filter(|r| r.health == Health::Live);

    let mut observed: Vec<Observed> = copies
        .iter()
        .filter(|copy| live(&copy.replica).is_some())
        .map(|copy| Observed {
            replica: copy.replica.as_str(),
            sha256: copy.sha256.as_str(),
            corrupt: copy.state == ObjectState::Corrupt,
            stored_at: copy.stored_at,
        })
        .collect();
    observed.sort();
    observed.dedup_by(|a, b| (a.replica, a.sha256, a.corrupt) == (b.replica, b.sha256, b.corrupt));

    let good: BTreeSet<&str> = observed
        .iter()
        .filter(|c| !c.corrupt && c.sha256 == desired.sha256)
        .map(|c| c.replica)
        .collect();
    let holders: Vec<ReplicaId> = good.iter().map(|id| id.to_string()).collect();

    if desired.deleting {
        return plan_deletion(&observed, holders);
    }

    let staying: Vec<&ReplicaView> = good
        .iter()
        .map(|id| by_id[id])
        .filter(|r| !r.draining)
        .collect();
    let leaving: Vec<&ReplicaView> = good
        .iter()
        .map(|id| by_id[id])
        .filter(|r| r.draining)
        .collect();
    let last_holders: BTreeSet<&str> = desired.last_holders.iter().map(String::as_str).collect();
    let pending: Vec<&ReplicaView> = last_holders
        .iter()
        .filter_map(|id| by_id.get(id).copied())
        .filter(|r| r.health == Health::Unreachable && !r.draining)
        .collect();
    let lost_holders: Vec<&str> = last_holders
        .iter()
        .copied()
        .filter(|id| by_id.get(id).is_none_or(|r| r.health == Health::Lost))
        .collect();
    let corrupt_current: BTreeSet<&str> = observed
        .iter()
        .filter(|c| c.corrupt && c.sha256 == desired.sha256)
        .map(|c| c.replica)
        .collect();

    let eligible: Vec<&ReplicaView> = by_id
        .values()
        .copied()
        .filter(|r| r.health == Health::Live && !r.draining && !good.contains(r.id.as_str()))
        .filter(|r| r.free_bytes >= desired.size)
        .collect();
    let capacity = staying.len() + eligible.len();

    // Pulls.
    let need = wanted.saturating_sub(staying.len() + pending.len());
    let mut pulls: Vec<Action> = Vec::new();
    if !good.is_empty() && need > 0 {
        let counted: Vec<&ReplicaView> = staying.iter().chain(pending.iter()).copied().collect();
        let sources: Vec<&ReplicaView> = good.iter().map(|id| by_id[id]).collect();
        let mut assigned: BTreeMap<ReplicaId, u64> = BTreeMap::new();
        for target in rank_targets(&eligible, &counted, need, namespace, name) {
            if let Some(source) = choose_source(&sources, &assigned, &target, namespace, name) {
                *assigned.entry(source.clone()).or_insert(0) += 1;
                pulls.push(Action::Pull {
                    target,
                    source,
                    sha256: desired.sha256.clone(),
                });
            }
        }
    }
    let pull_targets: BTreeSet<String> = pulls
        .iter()
        .filter_map(|a| match a {
            Action::Pull { target, .. } => Some(target.clone()),
            Action::Delete { .. } => None,
        })
        .collect();

    // Deletes. Good copies go only while N staying copies remain (add before trim).
    let mut deletes: Vec<Action> = Vec::new();
    let delete = |replica: &str, sha256: &str, reason| Action::Delete {
        replica: replica.to_string(),
        sha256: sha256.to_string(),
        reason,
    };
    if staying.len() > wanted {
        for replica in choose_trim(&staying, staying.len() - wanted, namespace, name) {
            deletes.push(delete(&replica, &desired.sha256, DeleteReason::Extra));
        }
    }
    if staying.len() >= wanted {
        for replica in &leaving {
            deletes.push(delete(&replica.id, &desired.sha256, DeleteReason::Draining));
        }
    }
    let new_content_in_place =
        pulls.is_empty() && !good.is_empty() && staying.len() >= wanted.min(capacity);
    let ready_pairs: BTreeSet<(&str, &str)> = observed
        .iter()
        .filter(|c| !c.corrupt)
        .map(|c| (c.replica, c.sha256))
        .collect();
    let mut leftovers = 0usize;
    for copy in observed
        .iter()
        .filter(|c| c.sha256 != desired.sha256 || c.corrupt)
    {
        if !copy.corrupt {
            if new_content_in_place && copy.stored_at <= desired.stale_cutoff_unix {
                deletes.push(delete(copy.replica, copy.sha256, DeleteReason::Stale));
            } else {
                leftovers += 1;
            }
            continue;
        }
        let shadowed = ready_pairs.contains(&(copy.replica, copy.sha256));
        let being_replaced = copy.sha256 == desired.sha256 && pull_targets.contains(copy.replica);
        if shadowed {
            // The replica serves the Ready copy; the quarantined one is its business.
        } else if being_replaced || good.is_empty() {
            leftovers += 1;
        } else {
            deletes.push(delete(copy.replica, copy.sha256, DeleteReason::Corrupt));
        }
    }
    deletes.sort_by(|a, b| delete_key(a).cmp(&delete_key(b)));
    pulls.sort_by(|a, b| pull_key(a).cmp(&pull_key(b)));

    // Phase and status.
    let converged = pulls.is_empty()
        && deletes.is_empty()
        && leftovers == 0
        && leaving.is_empty()
        && staying.len() == wanted;
    let unreachable_ids: Vec<&str> = pending.iter().map(|r| r.id.as_str()).collect();
    let mut degraded_reasons: Vec<(&str, String)> = Vec::new();
    if staying.len() + pulls.len() < wanted || good.is_empty() {
        let available = capacity + pending.len();
        if available < wanted {
            degraded_reasons.push((
                "NotEnoughReplicas",
                format!("wants {wanted} copies, only {available} replicas available"),
            ));
        }
        if !pending.is_empty() {
            degraded_reasons.push((
                "HoldersUnreachable",
                format!(
                    "{} holder(s) unreachable within the grace period: {}",
                    pending.len(),
                    unreachable_ids.join(", ")
                ),
            ));
        }
    }
    let never_held =
        last_holders.is_empty() && !observed.iter().any(|c| c.sha256 == desired.sha256);
    let phase = if good.is_empty() {
        if !pending.is_empty() {
            Phase::Degraded
        } else if never_held {
            Phase::Pending
        } else {
            Phase::Lost
        }
    } else if !degraded_reasons.is_empty() {
        Phase::Degraded
    } else if !pulls.is_empty() {
        Phase::Replicating
    } else if converged {
        Phase::Ready
    } else {
        Phase::Trimming
    };
    if phase == Phase::Pending {
        degraded_reasons.clear();
    }
    if phase == Phase::Lost {
        degraded_reasons.insert(
            0,
            (
                "NoVerifiedCopy",
                "no verified copy of the current content is reachable".to_string(),
            ),
        );
    }
    if good.is_empty() && !pending.is_empty() {
        degraded_reasons.insert(
            0,
            (
                "NoVerifiedCopy",
                "no verified copy of the current content is observed".to_string(),
            ),
        );
    }

    let status_line = format!("{}/{} verified copies", good.len(), wanted);
    let conditions = vec![
        if converged {
            condition("Ready", true, "Converged", &status_line)
        } else {
            condition("Ready", false, phase.as_str(), &status_line)
        },
        match degraded_reasons.first() {
            Some((reason, _)) => {
                let message: Vec<&str> = degraded_reasons.iter().map(|(_, m)| m.as_str()).collect();
                condition("Degraded", true, reason, &message.join("; "))
            }
            None => condition("Degraded", false, "AsWanted", ""),
        },
    ];

    let events = file_events(
        &pulls,
        &deletes,
        &lost_holders,
        &corrupt_current,
        phase,
        &degraded_reasons,
        &desired.sha256,
    );
    let mut actions = pulls;
    actions.extend(deletes);
    FilePlan {
        actions,
        phase,
        ready_replicas: good.len() as u32,
        holders,
        conditions,
        events,
        converged,
        finalized: false,
    }
}

/// The plan of a file being deleted: every observed copy goes.
fn plan_deletion(observed: &[Observed], holders: Vec<ReplicaId>) -> FilePlan {
    let targets: BTreeSet<(&str, &str)> = observed.iter().map(|c| (c.replica, c.sha256)).collect();
    let actions: Vec<Action> = targets
        .iter()
        .map(|(replica, sha256)| Action::Delete {
            replica: replica.to_string(),
            sha256: sha256.to_string(),
            reason: DeleteReason::FileDeleted,
        })
        .collect();
    let mut events = Vec::new();
    if !actions.is_empty() {
        let replicas: BTreeSet<&str> = targets.iter().map(|(r, _)| *r).collect();
        events.push(Event {
            reason: "Deleting".to_string(),
            message: format!(
                "deleting {} copies from {}",
                actions.len(),
                replicas.into_iter().collect::<Vec<_>>().join(", ")
            ),
        });
    }
    let message = format!("{} copies remain", actions.len());
    FilePlan {
        finalized: actions.is_empty(),
        actions,
        phase: Phase::Deleting,
        ready_replicas: holders.len() as u32,
        holders,
        conditions: vec![
            condition("Ready", false, "Deleting", &message),
            condition("Degraded", false, "AsWanted", ""),
        ],
        events,
        converged: false,
    }
}

fn condition(type_: &str, status: bool, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if status { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
    }
}

fn pull_key(action: &Action) -> (&str, &str) {
    match action {
        Action::Pull { target, source, .. } => (target, source),
        Action::Delete {
            replica, sha256, ..
        } => (replica, sha256),
    }
}

fn delete_key(action: &Action) -> (&str, &str, Option<DeleteReason>) {
    match action {
        Action::Delete {
            replica,
            sha256,
            reason,
        } => (replica, sha256, Some(*reason)),
        Action::Pull { target, sha256, .. } => (target, sha256, None),
    }
}

fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

/// Events of one pass, in a fixed order.
fn file_events(
    pulls: &[Action],
    deletes: &[Action],
    lost_holders: &[&str],
    corrupt_current: &BTreeSet<&str>,
    phase: Phase,
    degraded_reasons: &[(&str, String)],
    sha256: &str,
) -> Vec<Event> {
    let mut events = Vec::new();
    let mut push = |reason: &str, message: String| {
        events.push(Event {
            reason: reason.to_string(),
            message,
        });
    };
    if !pulls.is_empty() && !lost_holders.is_empty() {
        push(
            "ReplacedLostCopy",
            format!(
                "replacing copies on lost replica(s): {}",
                lost_holders.join(", ")
            ),
        );
    }
    if !pulls.is_empty() && !corrupt_current.is_empty() {
        let ids: Vec<&str> = corrupt_current.iter().copied().collect();
        push(
            "RepairedCorruptCopy",
            format!("replacing corrupt copy on {}", ids.join(", ")),
        );
    }
    if !pulls.is_empty() {
        let steps: Vec<String> = pulls
            .iter()
            .filter_map(|a| match a {
                Action::Pull { target, source, .. } => Some(format!("to {target} from {source}")),
                Action::Delete { .. } => None,
            })
            .collect();
        push(
            "Replicated",
            format!("copying {}: {}", short(sha256), steps.join(", ")),
        );
    }
    for (reason, event_reason, what) in [
        (
            DeleteReason::Draining,
            "Drained",
            "copy moved off draining replica",
        ),
        (DeleteReason::Extra, "Trimmed", "extra copy removed"),
        (
            DeleteReason::Stale,
            "RemovedStaleCopy",
            "old content removed",
        ),
        (
            DeleteReason::Corrupt,
            "RemovedCorruptCopy",
            "corrupt copy removed",
        ),
    ] {
        let on: Vec<String> = deletes
            .iter()
            .filter_map(|a| match a {
                Action::Delete {
                    replica,
                    sha256,
                    reason: r,
                } if *r == reason => Some(format!("{replica} ({})", short(sha256))),
                _ => None,
            })
            .collect();
        if !on.is_empty() {
            push(event_reason, format!("{what}: {}", on.join(", ")));
        }
    }
    if phase == Phase::Degraded || phase == Phase::Lost {
        let message: Vec<&str> = degraded_reasons.iter().map(|(_, m)| m.as_str()).collect();
        push(phase.as_str(), message.join("; "));
    }
    events
}
