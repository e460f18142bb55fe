//! The plan of a file being deleted, and the one rule it shares with [`super::file`]: a
//! Ready copy of content newer than the catalog's goes to the trash, never away.

use std::collections::{BTreeMap, BTreeSet};

use deposito_api::gateway::Phase;

use super::events::NEWER_EVENT;
use super::model::{
    condition, Action, DeleteReason, DesiredFile, Event, FilePlan, Observed, ReplicaId,
};

/// A Ready copy of other content committed after the current content was acknowledged.
pub(super) fn is_newer(desired: &DesiredFile, copy: &Observed) -> bool {
    !copy.corrupt
        && copy.sha256 != desired.sha256
        && desired.acked_ms > 0
        && copy.stored_at_ms > desired.acked_ms
}

/// The plan of a file being deleted: every observed copy goes, newer content to the trash.
pub(super) fn plan_deletion(
    desired: &DesiredFile,
    observed: &[Observed],
    holders: Vec<ReplicaId>,
) -> FilePlan {
    // A replica holding a newer Ready copy and a quarantined one of the same content: the
    // Ready copy goes to the trash first.
    let mut targets: BTreeMap<(&str, &str), DeleteReason> = BTreeMap::new();
    for copy in observed {
        let reason = targets
            .entry((copy.replica, copy.sha256))
            .or_insert(DeleteReason::FileDeleted);
        if is_newer(desired, copy) {
            *reason = DeleteReason::Newer;
        }
    }
    let actions: Vec<Action> = targets
        .iter()
        .map(|((replica, sha256), reason)| Action::Delete {
            replica: replica.to_string(),
            sha256: sha256.to_string(),
            reason: *reason,
        })
        .collect();
    let mut events = Vec::new();
    for reason in [DeleteReason::FileDeleted, DeleteReason::Newer] {
        let on: BTreeSet<&str> = (targets.iter())
            .filter(|(_, r)| **r == reason)
            .map(|((replica, _), _)| *replica)
            .collect();
        let count = targets.values().filter(|r| **r == reason).count();
        if count == 0 {
            continue;
        }
        let on = on.into_iter().collect::<Vec<_>>().join(", ");
        events.push(if reason == DeleteReason::Newer {
            Event {
                reason: NEWER_EVENT.to_string(),
                message: format!(
                    "moving {count} copies of content newer than the catalog's to the trash: {on}"
                ),
            }
        } else {
            Event {
                reason: "Deleting".to_string(),
                message: format!("deleting {count} copies from {on}"),
            }
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
