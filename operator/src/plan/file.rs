//! The plan function: desired state of one file plus observed copies in, actions and status
//! out. See [`plan_file`] for the rules.

use std::collections::{BTreeMap, BTreeSet};

use deposito_api::gateway::Phase;
use deposito_api::replica::ObjectState;

use super::deletion::{is_newer, plan_deletion};
use super::events::{file_events, Facts};
use super::model::{
    condition, Action, CopyView, DeleteReason, DesiredFile, FilePlan, Health, Move, Observed,
    ReplicaId, ReplicaView,
};
use super::placement::{choose_source, choose_trim, rank_targets, ZoneKey};

/// Plans one file: which restores, pulls and deletes bring it to exactly N verified copies,
/// and the status to publish. Pure and deterministic: the same inputs, in any order, give the
/// same plan (everything is sorted).
///
/// Inputs: `replicas` is the whole membership (ids are unique; for a duplicated id the first
/// listed wins); `copies` are the copies of this file (any sha256, any state) reported by
/// replicas. Copies on replicas that are not `Live`, or unknown, are ignored: they can't be
/// observed now. A holder in `last_holders` that is absent from `replicas` is treated as
/// `Lost`. A `full` replica is live like any other (its copies count and serve); it only
/// takes no new copy.
///
/// Definitions:
/// - **good**: `Ready` copies of `desired.sha256` on live replicas. A good copy on a draining
///   replica is good but *leaving*; the others are *staying*.
/// - **pending**: replicas in `last_holders` that are `Unreachable` (within the grace period)
///   and not draining. They count toward N: their copies are not replaced hastily (rule 8).
///   `Lost` holders count for nothing; their copies are replaced (event `ReplacedLostCopy`).
/// - **restorable**: live, non-draining replicas without a good copy that hold a `Trashed`
///   copy of `desired.sha256` (collected as an orphan, now claimed again).
/// - **eligible target**: a live, non-draining, non-full replica without a good copy and with
///   at least `size` bytes free. **capacity** = staying holders + eligible targets.
///
/// Rules, when not deleting:
/// - **Restores, then pulls**: `need = N - (staying + pending)`. The best `need` restorable
///   replicas by [`rank_targets`] restore their trashed copy (no byte copied; this works even
///   with no good copy left). The rest of `need` goes to the best eligible targets, each
///   pulling from a good holder chosen by [`choose_source`]; with no good copy there is
///   nothing to pull from.
/// - **Add before trim** (rule 5): when staying > N, the `staying - N` copies chosen by
///   [`choose_trim`] are deleted (`Extra`). A draining holder's copy is deleted (`Draining`)
///   only when staying >= N without it. Good copies are only ever deleted while at least
///   N >= 1 staying copies remain, so the last verified copy is never deleted.
/// - **Moves** (`desired.moving`, rebalancing): taken only when the file is otherwise at rest
///   (`need` is 0, nothing pending, restored, leaving or planned) and the move is sound
///   (`from` a staying holder, `to` an eligible target, `to` in `from`'s zone or in a zone
///   without a staying copy). While `to` has no copy: a pull to `to`. Once it has: `from` is
///   the first copy trimmed (`Moved`), under the add-before-trim rule above.
/// - **Other content** (`Ready`, other sha256) committed after `desired.stale_cutoff_ms` is
///   left alone (it may be an upload whose commit is in flight). Committed at or before it:
///   **stale** when also committed at or before `desired.acked_ms` (older content), deleted
///   only when no restore or pull is planned, at least one good copy exists and staying >=
///   min(N, capacity) (the new content is in place); **newer** otherwise (content this
///   catalog never knew: a restored older catalog), moved to the trash (`Newer`), never
///   deleted.
/// - **Corrupt** copies (any sha256) are deleted when at least one good copy exists, except
///   where the same replica also holds a `Ready` copy of the same sha256 (a delete would be
///   ambiguous) or is a pull target for it (the pull replaces it). A pull planned while a
///   corrupt copy of the current content exists emits `RepairedCorruptCopy`.
/// - **Trashed** copies are never deleted here (the replica's retention does that).
///
/// When `desired.deleting`: every observed copy that is not trashed (any sha256) is deleted
/// (`FileDeleted`), except Ready copies of other content newer than `desired.acked_ms`, which
/// go to the trash (`Newer`); the phase is `Deleting`, and `finalized` is true once none is
/// observed.
///
/// Phase, first match: `Deleting`; with no good copy and no restore, `Degraded` if a holder
/// is pending, else `Pending` if the file was never recorded held and no copy of its content
/// is observed, else `Lost`; `Degraded` when staying + planned copies < N (too few replicas,
/// replicas full, or holders unreachable); `Replicating` when restores or pulls are planned;
/// `Ready` when converged (exactly N staying good copies, no leaving, stale or corrupt copy,
/// no action); otherwise `Trimming`.
pub fn plan_file(desired: &DesiredFile, replicas: &[ReplicaView], copies: &[CopyView]) -> FilePlan {
    let shape = Shape::of(desired, replicas, copies);
    if desired.deleting {
        return plan_deletion(desired, &shape.observed, shape.holders());
    }
    let coming = shape.plan_copies();
    let deletes = shape.plan_deletes(&coming);
    shape.finish(coming, deletes)
}

/// Everything the rules read, worked out once from the inputs.
struct Shape<'a> {
    desired: &'a DesiredFile,
    wanted: usize,
    by_id: BTreeMap<&'a str, &'a ReplicaView>,
    /// Copies on live replicas, trashed ones left out.
    observed: Vec<Observed<'a>>,
    good: BTreeSet<&'a str>,
    staying: Vec<&'a ReplicaView>,
    leaving: Vec<&'a ReplicaView>,
    pending: Vec<&'a ReplicaView>,
    lost_holders: Vec<&'a str>,
    restorable: Vec<&'a ReplicaView>,
    eligible: Vec<&'a ReplicaView>,
    /// Live, non-draining replicas without a good copy that are full.
    full: Vec<&'a str>,
    last_holders: BTreeSet<&'a str>,
}

/// The copies a plan adds.
struct Coming {
    restores: Vec<Action>,
    pulls: Vec<Action>,
    /// A sound rebalancing move, and whether its pull is planned now.
    moving: Option<(&'static str, Move)>,
}

impl Coming {
    fn count(&self) -> usize {
        self.restores.len() + self.pulls.len()
    }

    fn move_pulled(&self) -> Option<&Move> {
        self.moving
            .as_ref()
            .filter(|(step, _)| *step == "pull")
            .map(|(_, m)| m)
    }

    fn move_trimmed(&self) -> Option<&Move> {
        self.moving
            .as_ref()
            .filter(|(step, _)| *step == "trim")
            .map(|(_, m)| m)
    }
}

impl<'a> Shape<'a> {
    fn of(desired: &'a DesiredFile, replicas: &'a [ReplicaView], copies: &'a [CopyView]) -> Self {
        let mut by_id: BTreeMap<&str, &ReplicaView> = BTreeMap::new();
        for replica in replicas {
            by_id.entry(replica.id.as_str()).or_insert(replica);
        }
        let live = |id: &str| by_id.get(id).is_some_and(|r| r.health == Health::Live);
        let mut observed: Vec<Observed> = copies
            .iter()
            .filter(|copy| live(&copy.replica) && copy.state != ObjectState::Trashed)
            .map(|copy| Observed {
                replica: copy.replica.as_str(),
                sha256: copy.sha256.as_str(),
                corrupt: copy.state == ObjectState::Corrupt,
                stored_at_ms: copy.stored_at_ms,
            })
            .collect();
        observed.sort();
        observed
            .dedup_by(|a, b| (a.replica, a.sha256, a.corrupt) == (b.replica, b.sha256, b.corrupt));
        let good: BTreeSet<&str> = observed
            .iter()
            .filter(|c| !c.corrupt && c.sha256 == desired.sha256)
            .map(|c| c.replica)
            .collect();
        let (leaving, staying): (Vec<&ReplicaView>, Vec<&ReplicaView>) =
            good.iter().map(|id| by_id[id]).partition(|r| r.draining);
        let last_holders: BTreeSet<&str> =
            desired.last_holders.iter().map(String::as_str).collect();
        let pending = last_holders
            .iter()
            .filter_map(|id| by_id.get(id).copied())
            .filter(|r| r.health == Health::Unreachable && !r.draining)
            .collect();
        let lost_holders = last_holders
            .iter()
            .copied()
            .filter(|id| by_id.get(id).is_none_or(|r| r.health == Health::Lost))
            .collect();
        let takes_copies = |r: &&ReplicaView| {
            r.health == Health::Live && !r.draining && !good.contains(r.id.as_str())
        };
        let trashed_on: BTreeSet<&str> = copies
            .iter()
            .filter(|c| c.state == ObjectState::Trashed && c.sha256 == desired.sha256)
            .map(|c| c.replica.as_str())
            .collect();
        let restorable = by_id
            .values()
            .copied()
            .filter(takes_copies)
            .filter(|r| trashed_on.contains(r.id.as_str()))
            .collect();
        let eligible = by_id
            .values()
            .copied()
            .filter(takes_copies)
            .filter(|r| !r.full && r.free_bytes >= desired.size)
            .collect();
        let full = by_id
            .values()
            .copied()
            .filter(takes_copies)
            .filter(|r| r.full)
            .map(|r| r.id.as_str())
            .collect();
        Shape {
            desired,
            wanted: desired.replicas.max(1) as usize,
            by_id,
            observed,
            good,
            staying,
            leaving,
            pending,
            lost_holders,
            restorable,
            eligible,
            full,
            last_holders,
        }
    }

    fn holders(&self) -> Vec<ReplicaId> {
        self.good
            .iter()
            .map(std::string::ToString::to_string)
            .collect()
    }

    fn names(&self) -> (&'a str, &'a str) {
        (self.desired.namespace.as_str(), self.desired.name.as_str())
    }

    /// Restores and pulls for the missing copies, or the pull of a sound move.
    fn plan_copies(&self) -> Coming {
        let (namespace, name) = self.names();
        let sha256 = &self.desired.sha256;
        let need = self
            .wanted
            .saturating_sub(self.staying.len() + self.pending.len());
        let mut counted: Vec<&ReplicaView> = self
            .staying
            .iter()
            .chain(self.pending.iter())
            .copied()
            .collect();
        let mut restores = Vec::new();
        for replica in rank_targets(&self.restorable, &counted, need, namespace, name) {
            counted.push(self.by_id[replica.as_str()]);
            restores.push(Action::Restore {
                replica,
                sha256: sha256.clone(),
            });
        }
        let restoring: BTreeSet<&str> = restores.iter().map(target_of).collect();
        let mut pulls = Vec::new();
        let sources: Vec<&ReplicaView> = self.good.iter().map(|id| self.by_id[id]).collect();
        let mut assigned: BTreeMap<ReplicaId, u64> = BTreeMap::new();
        let mut pull = |target: String, pulls: &mut Vec<Action>| {
            if let Some(source) = choose_source(&sources, &assigned, &target, namespace, name) {
                *assigned.entry(source.clone()).or_insert(0) += 1;
                pulls.push(Action::Pull {
                    target,
                    source,
                    sha256: sha256.clone(),
                });
            }
        };
        let rest = need - restores.len();
        if rest > 0 {
            let targets: Vec<&ReplicaView> = self
                .eligible
                .iter()
                .copied()
                .filter(|r| !restoring.contains(r.id.as_str()))
                .collect();
            for target in rank_targets(&targets, &counted, rest, namespace, name) {
                pull(target, &mut pulls);
            }
        }
        let mut moving = None;
        if let Some(mv) = self.sound_move(need, &restores, &pulls) {
            if self.good.contains(mv.to.as_str()) {
                moving = Some(("trim", mv.clone()));
            } else if self.staying.len() == self.wanted {
                pull(mv.to.clone(), &mut pulls);
                moving = Some(("pull", mv.clone()));
            }
        }
        restores.sort_by(|a, b| target_of(a).cmp(target_of(b)));
        pulls.sort_by(|a, b| pull_key(a).cmp(&pull_key(b)));
        Coming {
            restores,
            pulls,
            moving,
        }
    }

    /// The move asked for, when it may go ahead now.
    fn sound_move(&self, need: usize, restores: &[Action], pulls: &[Action]) -> Option<&'a Move> {
        let mv = self.desired.moving.as_ref()?;
        let at_rest = need == 0
            && self.pending.is_empty()
            && self.leaving.is_empty()
            && restores.is_empty()
            && pulls.is_empty();
        let from = self.staying.iter().find(|r| r.id == mv.from)?;
        let to = self.by_id.get(mv.to.as_str()).copied()?;
        let to_ok = self.good.contains(mv.to.as_str()) && !to.draining && to.health == Health::Live
            || self.eligible.iter().any(|r| r.id == mv.to);
        let zone_ok = ZoneKey::of(to) == ZoneKey::of(from)
            || !self
                .staying
                .iter()
                .any(|r| r.id != mv.to && ZoneKey::of(r) == ZoneKey::of(to));
        (at_rest && to_ok && zone_ok && mv.from != mv.to).then_some(mv)
    }

    /// Trims (add before trim), stale, corrupt and draining copies.
    fn plan_deletes(&self, coming: &Coming) -> Deletes {
        let (namespace, name) = self.names();
        let sha256 = self.desired.sha256.as_str();
        let mut deletes: Vec<Action> = Vec::new();
        let delete = |replica: &str, sha256: &str, reason| Action::Delete {
            replica: replica.to_string(),
            sha256: sha256.to_string(),
            reason,
        };
        let wanted = self.wanted;
        if self.staying.len() > wanted {
            let mut extra = self.staying.len() - wanted;
            let mut candidates = self.staying.clone();
            if let Some(mv) = coming.move_trimmed() {
                deletes.push(delete(&mv.from, sha256, DeleteReason::Moved));
                candidates.retain(|r| r.id != mv.from);
                extra -= 1;
            }
            for replica in choose_trim(&candidates, extra, namespace, name) {
                deletes.push(delete(&replica, sha256, DeleteReason::Extra));
            }
        }
        if self.staying.len() >= wanted {
            for replica in &self.leaving {
                deletes.push(delete(&replica.id, sha256, DeleteReason::Draining));
            }
        }
        let capacity = self.staying.len() + self.eligible.len();
        let new_content_in_place = coming.count() == 0
            && !self.good.is_empty()
            && self.staying.len() >= wanted.min(capacity);
        let ready_pairs: BTreeSet<(&str, &str)> = self
            .observed
            .iter()
            .filter(|c| !c.corrupt)
            .map(|c| (c.replica, c.sha256))
            .collect();
        let pull_targets: BTreeSet<&str> = coming.pulls.iter().map(target_of).collect();
        let mut leftovers = 0usize;
        for copy in self
            .observed
            .iter()
            .filter(|c| c.sha256 != sha256 || c.corrupt)
        {
            if !copy.corrupt {
                let settled = copy.stored_at_ms <= self.desired.stale_cutoff_ms;
                if settled && is_newer(self.desired, copy) {
                    deletes.push(delete(copy.replica, copy.sha256, DeleteReason::Newer));
                } else if settled && new_content_in_place {
                    deletes.push(delete(copy.replica, copy.sha256, DeleteReason::Stale));
                } else {
                    leftovers += 1;
                }
                continue;
            }
            let shadowed = ready_pairs.contains(&(copy.replica, copy.sha256));
            let being_replaced = copy.sha256 == sha256 && pull_targets.contains(copy.replica);
            if shadowed {
                // The replica serves the Ready copy; the quarantined one is its business.
            } else if being_replaced || self.good.is_empty() {
                leftovers += 1;
            } else {
                deletes.push(delete(copy.replica, copy.sha256, DeleteReason::Corrupt));
            }
        }
        deletes.sort_by(|a, b| delete_key(a).cmp(&delete_key(b)));
        Deletes { deletes, leftovers }
    }

    /// Phase, conditions and events, and the plan.
    fn finish(&self, coming: Coming, deletes: Deletes) -> FilePlan {
        let wanted = self.wanted;
        let staying = self.staying.len();
        let converged = coming.count() == 0
            && deletes.deletes.is_empty()
            && deletes.leftovers == 0
            && self.leaving.is_empty()
            && staying == wanted;
        // No copy to serve from, and none coming back from a trash.
        let nothing = self.good.is_empty() && coming.restores.is_empty();
        let mut reasons: Vec<(&str, String)> = Vec::new();
        if staying + coming.count() < wanted || nothing {
            let available = staying + self.eligible.len() + self.pending.len();
            if available < wanted && !self.full.is_empty() {
                reasons.push((
                    "ReplicasFull",
                    format!(
                        "wants {wanted} copies, only {available} replicas available; {} replica(s) full: {}",
                        self.full.len(),
                        self.full.join(", ")
                    ),
                ));
            } else if available < wanted {
                reasons.push((
                    "NotEnoughReplicas",
                    format!("wants {wanted} copies, only {available} replicas available"),
                ));
            }
            if !self.pending.is_empty() {
                let ids: Vec<&str> = self.pending.iter().map(|r| r.id.as_str()).collect();
                reasons.push((
                    "HoldersUnreachable",
                    format!(
                        "{} holder(s) unreachable within the grace period: {}",
                        ids.len(),
                        ids.join(", ")
                    ),
                ));
            }
        }
        let never_held = self.last_holders.is_empty()
            && !self
                .observed
                .iter()
                .any(|c| c.sha256 == self.desired.sha256);
        let phase = if nothing {
            if !self.pending.is_empty() {
                Phase::Degraded
            } else if never_held {
                Phase::Pending
            } else {
                Phase::Lost
            }
        } else if !reasons.is_empty() {
            Phase::Degraded
        } else if coming.count() > 0 {
            Phase::Replicating
        } else if converged {
            Phase::Ready
        } else {
            Phase::Trimming
        };
        if phase == Phase::Pending {
            reasons.clear();
        }
        if nothing && phase != Phase::Pending {
            let observed = if phase == Phase::Lost {
                "reachable"
            } else {
                "observed"
            };
            reasons.insert(
                0,
                (
                    "NoVerifiedCopy",
                    format!("no verified copy of the current content is {observed}"),
                ),
            );
        }
        let status_line = format!("{}/{} verified copies", self.good.len(), wanted);
        let conditions = vec![
            if converged {
                condition("Ready", true, "Converged", &status_line)
            } else {
                condition("Ready", false, phase.as_str(), &status_line)
            },
            match reasons.first() {
                Some((reason, _)) => {
                    let message: Vec<&str> = reasons.iter().map(|(_, m)| m.as_str()).collect();
                    condition("Degraded", true, reason, &message.join("; "))
                }
                None => condition("Degraded", false, "AsWanted", ""),
            },
        ];
        let corrupt_current: BTreeSet<&str> = self
            .observed
            .iter()
            .filter(|c| c.corrupt && c.sha256 == self.desired.sha256)
            .map(|c| c.replica)
            .collect();
        let moving = coming.move_pulled();
        let repair_pulls: Vec<Action> = coming
            .pulls
            .iter()
            .filter(|a| moving.is_none_or(|m| target_of(a) != m.to))
            .cloned()
            .collect();
        let events = file_events(&Facts {
            restores: &coming.restores,
            pulls: &repair_pulls,
            moving,
            deletes: &deletes.deletes,
            lost_holders: &self.lost_holders,
            corrupt_current: &corrupt_current,
            phase,
            degraded_reasons: &reasons,
            sha256: &self.desired.sha256,
        });
        let mut actions = coming.restores;
        actions.extend(coming.pulls);
        actions.extend(deletes.deletes);
        FilePlan {
            actions,
            phase,
            ready_replicas: self.good.len() as u32,
            holders: self.holders(),
            conditions,
            events,
            converged,
            finalized: false,
        }
    }
}

/// The deletes of a plan, and the copies left for later (stale or corrupt copies kept).
struct Deletes {
    deletes: Vec<Action>,
    leftovers: usize,
}

/// The replica an action is for (a restore's or pull's target, a delete's replica).
fn target_of(action: &Action) -> &str {
    match action {
        Action::Restore { replica, .. } | Action::Delete { replica, .. } => replica,
        Action::Pull { target, .. } => target,
    }
}

fn pull_key(action: &Action) -> (&str, &str) {
    match action {
        Action::Pull { target, source, .. } => (target, source),
        Action::Restore { replica, sha256 }
        | Action::Delete {
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
        Action::Restore { replica, sha256 } => (replica, sha256, None),
    }
}
