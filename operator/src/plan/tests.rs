//! Table tests of [`super::plan_file`]: each case asserts the exact actions and phase.
//! Shared helpers live here; replica health, corruption, draining and deletion cases are in
//! `tests_health.rs`.

use deposito_api::gateway::Phase;
use deposito_api::replica::ObjectState;

use super::model::{Action, CopyView, DeleteReason, DesiredFile, Health, ReplicaView};
use super::{plan_file, FilePlan};

pub(super) const NEW: &str = "1111111111111111111111111111111111111111111111111111111111111111";
pub(super) const OLD: &str = "0000000000000000000000000000000000000000000000000000000000000000";
pub(super) const TIB: u64 = 1 << 40;

pub(super) fn replica(id: &str) -> ReplicaView {
    ReplicaView {
        id: id.to_string(),
        zone: None,
        health: Health::Live,
        draining: false,
        free_bytes: TIB,
        active_transfers: 0,
        url: format!("http://{id}:7070"),
        full: false,
    }
}

pub(super) fn zoned(id: &str, zone: &str) -> ReplicaView {
    ReplicaView {
        zone: Some(zone.to_string()),
        ..replica(id)
    }
}

pub(super) fn with_free(id: &str, free_bytes: u64) -> ReplicaView {
    ReplicaView {
        free_bytes,
        ..replica(id)
    }
}

pub(super) fn draining(id: &str) -> ReplicaView {
    ReplicaView {
        draining: true,
        ..replica(id)
    }
}

pub(super) fn with_health(id: &str, health: Health) -> ReplicaView {
    ReplicaView {
        health,
        ..replica(id)
    }
}

pub(super) fn busy(id: &str, active_transfers: u64) -> ReplicaView {
    ReplicaView {
        active_transfers,
        ..replica(id)
    }
}

pub(super) fn copy(replica: &str, sha256: &str) -> CopyView {
    CopyView {
        replica: replica.to_string(),
        sha256: sha256.to_string(),
        size: 10,
        state: ObjectState::Ready,
        stored_at_ms: 1_000,
    }
}

pub(super) fn corrupt(replica: &str, sha256: &str) -> CopyView {
    CopyView {
        state: ObjectState::Corrupt,
        ..copy(replica, sha256)
    }
}

pub(super) fn file(replicas: u32) -> DesiredFile {
    DesiredFile {
        namespace: "default".to_string(),
        name: "report.pdf".to_string(),
        replicas,
        sha256: NEW.to_string(),
        size: 10,
        generation: 1,
        deleting: false,
        last_holders: Vec::new(),
        stale_cutoff_ms: u64::MAX,
        acked_ms: 0,
        moving: None,
    }
}

pub(super) fn held_by(replicas: u32, last_holders: &[&str]) -> DesiredFile {
    DesiredFile {
        last_holders: last_holders
            .iter()
            .map(std::string::ToString::to_string)
            .collect(),
        ..file(replicas)
    }
}

pub(super) fn pull(target: &str, source: &str) -> Action {
    Action::Pull {
        target: target.to_string(),
        source: source.to_string(),
        sha256: NEW.to_string(),
    }
}

pub(super) fn delete(replica: &str, sha256: &str, reason: DeleteReason) -> Action {
    Action::Delete {
        replica: replica.to_string(),
        sha256: sha256.to_string(),
        reason,
    }
}

pub(super) fn event_reasons(plan: &super::FilePlan) -> Vec<&str> {
    plan.events.iter().map(|e| e.reason.as_str()).collect()
}

pub(super) fn pull_targets(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Pull { target, .. } => Some(target.clone()),
            _ => None,
        })
        .collect()
}

/// One table row: inputs, then the exact expected actions and phase.
pub(super) struct Case {
    pub(super) name: &'static str,
    pub(super) desired: DesiredFile,
    pub(super) replicas: Vec<ReplicaView>,
    pub(super) copies: Vec<CopyView>,
    pub(super) actions: Vec<Action>,
    pub(super) phase: Phase,
}

pub(super) fn run(cases: Vec<Case>) {
    for case in cases {
        let plan = plan_file(&case.desired, &case.replicas, &case.copies);
        assert_eq!(plan.actions, case.actions, "case {}: actions", case.name);
        assert_eq!(plan.phase, case.phase, "case {}: phase", case.name);
        assert_eq!(
            plan.converged,
            case.phase == Phase::Ready,
            "case {}: converged",
            case.name
        );
        assert_invariants(&case, &plan);
    }
}

/// Rules that hold for every case: the last verified copy is never deleted unless the file
/// is, and the plan does not depend on input order.
fn assert_invariants(case: &Case, plan: &FilePlan) {
    if !case.desired.deleting {
        let deleted: Vec<&str> = plan
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Delete {
                    replica, sha256, ..
                } if *sha256 == case.desired.sha256 => Some(replica.as_str()),
                _ => None,
            })
            .collect();
        let verified_left = plan
            .holders
            .iter()
            .filter(|h| !deleted.contains(&h.as_str()))
            .count();
        assert!(
            plan.holders.is_empty() || verified_left >= 1,
            "case {}: would delete the last verified copy",
            case.name
        );
    }
    let mut replicas = case.replicas.clone();
    replicas.reverse();
    let mut copies = case.copies.clone();
    copies.reverse();
    assert_eq!(
        &plan_file(&case.desired, &replicas, &copies),
        plan,
        "case {}: order-dependent",
        case.name
    );
}

#[test]
fn add_before_trim() {
    run(vec![
        Case {
            name: "N 3 -> 1 with 3 good: exactly 2 deletes, least free space first",
            desired: file(1),
            replicas: vec![
                with_free("r1", TIB),
                with_free("r2", 1 << 30),
                with_free("r3", 1 << 20),
            ],
            copies: vec![copy("r1", NEW), copy("r2", NEW), copy("r3", NEW)],
            actions: vec![
                delete("r2", NEW, DeleteReason::Extra),
                delete("r3", NEW, DeleteReason::Extra),
            ],
            phase: Phase::Trimming,
        },
        Case {
            name: "N 3 -> 1, trims done: ready",
            desired: file(1),
            replicas: vec![
                with_free("r1", TIB),
                with_free("r2", 1 << 30),
                with_free("r3", 1 << 20),
            ],
            copies: vec![copy("r1", NEW)],
            actions: vec![],
            phase: Phase::Ready,
        },
        Case {
            name: "N=3, 2 good + 1 stale: pull first, stale kept",
            desired: file(3),
            replicas: vec![replica("r1"), busy("r2", 1), replica("r3")],
            copies: vec![copy("r1", NEW), copy("r2", NEW), copy("r3", OLD)],
            actions: vec![pull("r3", "r1")],
            phase: Phase::Replicating,
        },
        Case {
            name: "N=3, 3 good + 1 stale: now the stale copy goes",
            desired: file(3),
            replicas: vec![replica("r1"), busy("r2", 1), replica("r3")],
            copies: vec![
                copy("r1", NEW),
                copy("r2", NEW),
                copy("r3", NEW),
                copy("r3", OLD),
            ],
            actions: vec![delete("r3", OLD, DeleteReason::Stale)],
            phase: Phase::Trimming,
        },
        Case {
            name: "N=3 reached and nothing else: ready",
            desired: file(3),
            replicas: vec![replica("r1"), busy("r2", 1), replica("r3")],
            copies: vec![copy("r1", NEW), copy("r2", NEW), copy("r3", NEW)],
            actions: vec![],
            phase: Phase::Ready,
        },
    ]);
}

#[test]
fn new_content_replaces_old_only_after_n_new_copies() {
    let replicas = vec![replica("r1"), replica("r2"), replica("r3")];
    let old_everywhere = vec![copy("r1", OLD), copy("r2", OLD), copy("r3", OLD)];
    let with_new = |holders: &[&str]| {
        let mut copies = old_everywhere.clone();
        copies.extend(holders.iter().map(|h| copy(h, NEW)));
        copies
    };
    let plan = plan_file(&file(3), &replicas, &with_new(&["r1"]));
    assert_eq!(plan.actions, vec![pull("r2", "r1"), pull("r3", "r1")]);
    assert_eq!(plan.phase, Phase::Replicating);

    // One pull failed: still no stale delete.
    let plan = plan_file(&file(3), &replicas, &with_new(&["r1", "r2"]));
    assert_eq!(plan.actions, vec![pull("r3", "r1")]);

    let plan = plan_file(&file(3), &replicas, &with_new(&["r1", "r2", "r3"]));
    assert_eq!(
        plan.actions,
        vec![
            delete("r1", OLD, DeleteReason::Stale),
            delete("r2", OLD, DeleteReason::Stale),
            delete("r3", OLD, DeleteReason::Stale),
        ]
    );
    assert_eq!(plan.phase, Phase::Trimming);
    assert_eq!(event_reasons(&plan), vec!["RemovedStaleCopy"]);

    // A copy of other content younger than the cutoff may be an upload in flight: kept.
    let guarded = DesiredFile {
        stale_cutoff_ms: 999,
        ..file(3)
    };
    let plan = plan_file(&guarded, &replicas, &with_new(&["r1", "r2", "r3"]));
    assert_eq!(plan.actions, vec![]);
    assert_eq!(plan.phase, Phase::Trimming);
    assert!(!plan.converged);
}

#[test]
fn never_deletes_the_last_verified_copy() {
    run(vec![
        Case {
            name: "N=1, sole holder draining, no other replica",
            desired: file(1),
            replicas: vec![draining("r1")],
            copies: vec![copy("r1", NEW)],
            actions: vec![],
            phase: Phase::Degraded,
        },
        Case {
            name: "N=1, sole holder draining, the other replica is full",
            desired: file(1),
            replicas: vec![draining("r1"), with_free("r2", 5)],
            copies: vec![copy("r1", NEW)],
            actions: vec![],
            phase: Phase::Degraded,
        },
        Case {
            name: "N=0 is treated as 1",
            desired: file(0),
            replicas: vec![replica("r1"), replica("r2")],
            copies: vec![copy("r1", NEW)],
            actions: vec![],
            phase: Phase::Ready,
        },
        Case {
            name: "single copy plus stale and corrupt copies",
            desired: file(1),
            replicas: vec![replica("r1"), replica("r2")],
            copies: vec![copy("r1", NEW), copy("r1", OLD), corrupt("r2", NEW)],
            actions: vec![
                delete("r1", OLD, DeleteReason::Stale),
                delete("r2", NEW, DeleteReason::Corrupt),
            ],
            phase: Phase::Trimming,
        },
        Case {
            name: "single copy, both replicas draining",
            desired: file(2),
            replicas: vec![draining("r1"), draining("r2")],
            copies: vec![copy("r1", NEW)],
            actions: vec![],
            phase: Phase::Degraded,
        },
    ]);
    let plan = plan_file(&file(1), &[draining("r1")], &[copy("r1", NEW)]);
    assert_eq!(plan.conditions[1].status, "True");
    assert_eq!(
        plan.conditions[1].message,
        "wants 1 copies, only 0 replicas available"
    );
}

#[test]
fn spreads_across_zones_and_trims_the_crowded_zone() {
    let replicas = vec![
        zoned("a1", "a"),
        zoned("a2", "a"),
        zoned("b1", "b"),
        zoned("c1", "c"),
    ];
    run(vec![
        Case {
            name: "N=3 from a1: one copy in each zone",
            desired: file(3),
            replicas: replicas.clone(),
            copies: vec![copy("a1", NEW)],
            actions: vec![pull("b1", "a1"), pull("c1", "a1")],
            phase: Phase::Replicating,
        },
        Case {
            name: "N=3 from b1: one copy in each zone",
            desired: file(3),
            replicas: vec![
                ReplicaView {
                    free_bytes: 1 << 20,
                    ..zoned("a1", "a")
                },
                zoned("a2", "a"),
                zoned("b1", "b"),
                zoned("c1", "c"),
            ],
            copies: vec![copy("b1", NEW)],
            actions: vec![pull("a2", "b1"), pull("c1", "b1")],
            phase: Phase::Replicating,
        },
        Case {
            name: "N 4 -> 3: trim from zone a, the one with less free space",
            desired: file(3),
            replicas: vec![
                zoned("a1", "a"),
                ReplicaView {
                    free_bytes: 1 << 30,
                    ..zoned("a2", "a")
                },
                ReplicaView {
                    free_bytes: 1 << 10,
                    ..zoned("b1", "b")
                },
                zoned("c1", "c"),
            ],
            copies: vec![
                copy("a1", NEW),
                copy("a2", NEW),
                copy("b1", NEW),
                copy("c1", NEW),
            ],
            actions: vec![delete("a2", NEW, DeleteReason::Extra)],
            phase: Phase::Trimming,
        },
    ]);
}

#[test]
fn plan_is_deterministic_and_order_independent() {
    let replicas: Vec<ReplicaView> = (1..=8).map(|i| replica(&format!("r{i}"))).collect();
    let copies = vec![
        copy("r3", NEW),
        copy("r5", NEW),
        copy("r5", OLD),
        corrupt("r7", NEW),
    ];
    let desired = held_by(4, &["r3", "r5"]);
    let first = plan_file(&desired, &replicas, &copies);
    assert_eq!(pull_targets(&first.actions).len(), 2);
    assert_eq!(first, plan_file(&desired, &replicas, &copies));

    for rotation in 0..replicas.len() {
        let mut shuffled = replicas.clone();
        shuffled.rotate_left(rotation);
        if rotation % 2 == 1 {
            shuffled.reverse();
        }
        let mut copies_shuffled = copies.clone();
        copies_shuffled.rotate_left(rotation % copies.len());
        copies_shuffled.push(copies[0].clone()); // a duplicate report changes nothing
        assert_eq!(
            plan_file(&desired, &shuffled, &copies_shuffled),
            first,
            "rotation {rotation}"
        );
    }

    // Rendezvous: an unrelated new replica either takes a slot or changes nothing.
    let mut more = replicas.clone();
    more.push(replica("r9"));
    let targets_before = pull_targets(&first.actions);
    let targets_after = pull_targets(&plan_file(&desired, &more, &copies).actions);
    for target in &targets_after {
        assert!(
            target == "r9" || targets_before.contains(target),
            "{targets_after:?}"
        );
    }
}

#[test]
fn wanting_more_copies_than_replicas_is_degraded_not_an_error() {
    run(vec![Case {
        name: "N=5 with 3 live replicas",
        desired: file(5),
        replicas: vec![
            replica("r1"),
            replica("r2"),
            replica("r3"),
            with_health("r4", Health::Lost),
        ],
        copies: vec![copy("r1", NEW)],
        actions: vec![pull("r2", "r1"), pull("r3", "r1")],
        phase: Phase::Degraded,
    }]);
    let plan = plan_file(
        &file(5),
        &[replica("r1"), replica("r2"), replica("r3")],
        &[copy("r1", NEW)],
    );
    assert_eq!(plan.conditions[1].reason, "NotEnoughReplicas");
    assert_eq!(
        plan.conditions[1].message,
        "wants 5 copies, only 3 replicas available"
    );
    assert_eq!(plan.conditions[0].status, "False");
    assert_eq!(event_reasons(&plan), vec!["Replicated", "Degraded"]);
}
