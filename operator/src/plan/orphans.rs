//! Orphan collection: copies that no catalog entry claims.
//!
//! A copy becomes an orphan when its file was deleted while a holder was unreachable, or
//! when an upload reached a replica but its catalog commit never happened. The grace period
//! protects uploads in flight: a copy is collected only once it is older than the grace.

use std::collections::BTreeSet;

use deposito_api::replica::ObjectInfo;

use super::model::{OrphanCopy, ReplicaId};

/// The full inventory of one live replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaInventory {
    pub replica: ReplicaId,
    /// Every object the replica reports (all pages), corrupt ones included.
    pub objects: Vec<ObjectInfo>,
}

/// Copies whose `(namespace, name)` is not in `known_files` (every catalog entry, including
/// those being deleted) and that were stored at least `orphan_grace_secs` before `now_unix`,
/// in any state. A copy stored "in the future" (clock skew) is treated as brand new. Copies
/// of known files with other content are not orphans: [`super::plan_file`] handles them as
/// stale. Sorted, without duplicates.
pub fn plan_orphans(
    known_files: &BTreeSet<(String, String)>,
    inventories: &[ReplicaInventory],
    now_unix: u64,
    orphan_grace_secs: u64,
) -> Vec<OrphanCopy> {
    let mut orphans = BTreeSet::new();
    for inventory in inventories {
        for object in &inventory.objects {
            let key = (object.namespace.clone(), object.name.clone());
            if known_files.contains(&key) {
                continue;
            }
            let age = now_unix.saturating_sub(object.stored_at);
            if age < orphan_grace_secs {
                continue;
            }
            orphans.insert(OrphanCopy {
                replica: inventory.replica.clone(),
                namespace: object.namespace.clone(),
                name: object.name.clone(),
                sha256: object.sha256.clone(),
            });
        }
    }
    orphans.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use deposito_api::replica::ObjectState;

    fn object(ns: &str, name: &str, sha: &str, stored_at: u64, state: ObjectState) -> ObjectInfo {
        ObjectInfo {
            namespace: ns.to_string(),
            name: name.to_string(),
            sha256: sha.to_string(),
            size: 3,
            state,
            stored_at,
            stored_at_ms: stored_at * 1000,
        }
    }

    fn orphan(replica: &str, ns: &str, name: &str, sha: &str) -> OrphanCopy {
        OrphanCopy {
            replica: replica.to_string(),
            namespace: ns.to_string(),
            name: name.to_string(),
            sha256: sha.to_string(),
        }
    }

    #[test]
    fn orphans_older_than_grace_are_collected_younger_kept() {
        let known = BTreeSet::from([("default".to_string(), "kept.txt".to_string())]);
        let inventories = vec![
            ReplicaInventory {
                replica: "r2".to_string(),
                objects: vec![
                    // Known file, any content: never an orphan.
                    object("default", "kept.txt", "aa", 0, ObjectState::Ready),
                    object("default", "kept.txt", "bb", 0, ObjectState::Corrupt),
                    // Unknown and old: collected, corrupt or not.
                    object("default", "gone.txt", "cc", 100, ObjectState::Ready),
                    object("other", "kept.txt", "dd", 699, ObjectState::Corrupt),
                    // Unknown but young (an upload whose catalog commit is in flight): kept.
                    object("default", "new.txt", "ee", 701, ObjectState::Ready),
                    // Stored "in the future": kept.
                    object("default", "skew.txt", "ff", 5000, ObjectState::Ready),
                ],
            },
            ReplicaInventory {
                replica: "r1".to_string(),
                objects: vec![
                    object("default", "gone.txt", "cc", 700, ObjectState::Ready),
                    object("default", "gone.txt", "cc", 700, ObjectState::Ready),
                ],
            },
        ];
        let orphans = plan_orphans(&known, &inventories, 1000, 300);
        assert_eq!(
            orphans,
            vec![
                orphan("r1", "default", "gone.txt", "cc"),
                orphan("r2", "default", "gone.txt", "cc"),
                orphan("r2", "other", "kept.txt", "dd"),
            ]
        );
        assert_eq!(
            orphans[0].to_action(),
            super::super::model::Action::Delete {
                replica: "r1".to_string(),
                sha256: "cc".to_string(),
                reason: super::super::model::DeleteReason::Orphan,
            }
        );
    }

    #[test]
    fn zero_grace_collects_everything_unclaimed() {
        let inventories = vec![ReplicaInventory {
            replica: "r1".to_string(),
            objects: vec![object("default", "x", "aa", 1000, ObjectState::Ready)],
        }];
        assert_eq!(
            plan_orphans(&BTreeSet::new(), &inventories, 1000, 0).len(),
            1
        );
        assert!(plan_orphans(&BTreeSet::new(), &inventories, 1000, 1).is_empty());
    }
}
