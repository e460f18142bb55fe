//! The events of one file's plan, for `kubectl describe` and the logs: what it does
//! (Replicated, Restored, Rebalancing, Trimmed, ...) and what is wrong (Degraded, Lost), in a
//! fixed order, deterministic (no timestamps).

use std::collections::BTreeSet;

use deposito_api::gateway::Phase;

use super::model::{Action, DeleteReason, Event, Move};

/// The event of copies of content newer than the catalog's going to the trash.
pub(super) const NEWER_EVENT: &str = "TrashedNewerCopy";

/// What the events of one plan are made from.
pub(super) struct Facts<'a> {
    pub restores: &'a [Action],
    /// Pulls that add missing copies.
    pub pulls: &'a [Action],
    /// The rebalancing move whose new copy is pulled in this plan.
    pub moving: Option<&'a Move>,
    pub deletes: &'a [Action],
    pub lost_holders: &'a [&'a str],
    pub corrupt_current: &'a BTreeSet<&'a str>,
    pub phase: Phase,
    pub degraded_reasons: &'a [(&'a str, String)],
    pub sha256: &'a str,
}

fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

/// Events of one pass, in a fixed order.
pub(super) fn file_events(facts: &Facts) -> Vec<Event> {
    let Facts {
        restores,
        pulls,
        moving,
        deletes,
        lost_holders,
        corrupt_current,
        phase,
        degraded_reasons,
        sha256,
    } = *facts;
    let mut events = Vec::new();
    let mut push = |reason: &str, message: String| {
        events.push(Event {
            reason: reason.to_string(),
            message,
        });
    };
    if !restores.is_empty() {
        let on: Vec<&str> = restores
            .iter()
            .filter_map(|a| match a {
                Action::Restore { replica, .. } => Some(replica.as_str()),
                _ => None,
            })
            .collect();
        push(
            "Restored",
            format!(
                "restoring {} from the trash on {}",
                short(sha256),
                on.join(", ")
            ),
        );
    }
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
                _ => None,
            })
            .collect();
        push(
            "Replicated",
            format!("copying {}: {}", short(sha256), steps.join(", ")),
        );
    }
    if let Some(moving) = moving {
        push(
            "Rebalancing",
            format!(
                "moving a copy of {} from {} to {}",
                short(sha256),
                moving.from,
                moving.to
            ),
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
            DeleteReason::Newer,
            NEWER_EVENT,
            "content newer than the catalog's moved to the trash",
        ),
        (
            DeleteReason::Corrupt,
            "RemovedCorruptCopy",
            "corrupt copy removed",
        ),
        (
            DeleteReason::Moved,
            "Rebalanced",
            "copy moved to an emptier replica",
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
