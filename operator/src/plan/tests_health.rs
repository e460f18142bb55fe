//! Table tests of [`super::plan_file`] for replica health, corruption, draining and deletion.

use deposito_api::gateway::Phase;

use super::model::{DeleteReason, DesiredFile, Health};
use super::plan_file;
use super::tests::*;

#[test]
fn unreachable_holders_count_lost_holders_are_replaced() {
    let copies = vec![copy("r1", NEW), copy("r2", NEW)];
    run(vec![
        Case {
            name: "holder unreachable within grace: no pull",
            desired: held_by(3, &["r1", "r2", "r3"]),
            replicas: vec![
                replica("r1"),
                replica("r2"),
                with_health("r3", Health::Unreachable),
                replica("r4"),
            ],
            copies: copies.clone(),
            actions: vec![],
            phase: Phase::Degraded,
        },
        Case {
            name: "holder lost: replaced",
            desired: held_by(3, &["r1", "r2", "r3"]),
            replicas: vec![
                replica("r1"),
                busy("r2", 2),
                with_health("r3", Health::Lost),
                replica("r4"),
            ],
            copies: copies.clone(),
            actions: vec![pull("r4", "r1")],
            phase: Phase::Replicating,
        },
        Case {
            name: "holder gone from membership: replaced",
            desired: held_by(3, &["r1", "r2", "r3"]),
            replicas: vec![replica("r1"), busy("r2", 2), replica("r4")],
            copies: copies.clone(),
            actions: vec![pull("r4", "r1")],
            phase: Phase::Replicating,
        },
        Case {
            name: "every holder unreachable: degraded, nothing to pull from",
            desired: held_by(2, &["r1", "r2"]),
            replicas: vec![
                with_health("r1", Health::Unreachable),
                with_health("r2", Health::Unreachable),
                replica("r3"),
            ],
            copies: vec![],
            actions: vec![],
            phase: Phase::Degraded,
        },
        Case {
            name: "every holder lost: lost",
            desired: held_by(2, &["r1", "r2"]),
            replicas: vec![with_health("r1", Health::Lost), replica("r3")],
            copies: vec![copy("r1", NEW)],
            actions: vec![],
            phase: Phase::Lost,
        },
    ]);
    let plan = plan_file(
        &held_by(3, &["r1", "r2", "r3"]),
        &[
            replica("r1"),
            replica("r2"),
            with_health("r3", Health::Unreachable),
        ],
        &copies,
    );
    assert_eq!(plan.ready_replicas, 2);
    assert_eq!(plan.holders, vec!["r1".to_string(), "r2".to_string()]);
    assert_eq!(plan.conditions[1].reason, "HoldersUnreachable");
    assert_eq!(
        plan.conditions[1].message,
        "1 holder(s) unreachable within the grace period: r3"
    );

    let plan = plan_file(
        &held_by(3, &["r1", "r2", "r3"]),
        &[
            replica("r1"),
            busy("r2", 2),
            with_health("r3", Health::Lost),
            replica("r4"),
        ],
        &copies,
    );
    assert_eq!(event_reasons(&plan), vec!["ReplacedLostCopy", "Replicated"]);
}

#[test]
fn corrupt_copies_are_deleted_and_replaced() {
    run(vec![
        Case {
            name: "corrupt copy on the only spare replica: pulled over, not deleted",
            desired: file(3),
            replicas: vec![replica("r1"), replica("r2"), replica("r3")],
            copies: vec![copy("r1", NEW), copy("r2", NEW), corrupt("r3", NEW)],
            actions: vec![pull("r3", "r1")],
            phase: Phase::Replicating,
        },
        Case {
            name: "corrupt copy beside N good ones: deleted",
            desired: file(3),
            replicas: vec![replica("r1"), replica("r2"), replica("r3"), replica("r4")],
            copies: vec![
                copy("r1", NEW),
                copy("r2", NEW),
                copy("r3", NEW),
                corrupt("r4", NEW),
            ],
            actions: vec![delete("r4", NEW, DeleteReason::Corrupt)],
            phase: Phase::Trimming,
        },
        Case {
            name: "corrupt copy of old content: deleted even while pulling",
            desired: file(2),
            replicas: vec![replica("r1"), replica("r2")],
            copies: vec![copy("r1", NEW), corrupt("r2", OLD)],
            actions: vec![pull("r2", "r1"), delete("r2", OLD, DeleteReason::Corrupt)],
            phase: Phase::Replicating,
        },
        Case {
            name: "quarantined copy shadowed by a good one on the same replica: left alone",
            desired: file(1),
            replicas: vec![replica("r1")],
            copies: vec![copy("r1", NEW), corrupt("r1", NEW)],
            actions: vec![],
            phase: Phase::Ready,
        },
        Case {
            name: "only corrupt copies: lost, and nothing deleted",
            desired: file(2),
            replicas: vec![replica("r1"), replica("r2")],
            copies: vec![corrupt("r1", NEW)],
            actions: vec![],
            phase: Phase::Lost,
        },
    ]);
    let plan = plan_file(
        &file(3),
        &[replica("r1"), replica("r2"), replica("r3")],
        &[copy("r1", NEW), copy("r2", NEW), corrupt("r3", NEW)],
    );
    assert_eq!(
        event_reasons(&plan),
        vec!["RepairedCorruptCopy", "Replicated"]
    );
}

#[test]
fn draining_holder_copy_moves_then_goes() {
    let replicas = vec![draining("r1"), with_free("r2", 1 << 30), replica("r3")];
    run(vec![
        Case {
            name: "copied off the draining replica first",
            desired: file(1),
            replicas: replicas.clone(),
            copies: vec![copy("r1", NEW)],
            actions: vec![pull("r3", "r1")],
            phase: Phase::Replicating,
        },
        Case {
            name: "then deleted from it",
            desired: file(1),
            replicas: replicas.clone(),
            copies: vec![copy("r1", NEW), copy("r3", NEW)],
            actions: vec![delete("r1", NEW, DeleteReason::Draining)],
            phase: Phase::Trimming,
        },
        Case {
            name: "N=2: the pull comes from the staying holder",
            desired: file(2),
            replicas: vec![draining("r1"), replica("r2"), replica("r3")],
            copies: vec![copy("r1", NEW), copy("r2", NEW)],
            actions: vec![pull("r3", "r2")],
            phase: Phase::Replicating,
        },
        Case {
            name: "draining replica gets no new copy",
            desired: file(2),
            replicas: vec![replica("r1"), draining("r2")],
            copies: vec![copy("r1", NEW)],
            actions: vec![],
            phase: Phase::Degraded,
        },
    ]);
}

#[test]
fn deletion_deletes_every_copy_then_finalizes() {
    let desired = DesiredFile {
        deleting: true,
        ..held_by(2, &["r1", "r2"])
    };
    let replicas = vec![
        replica("r1"),
        replica("r2"),
        replica("r3"),
        with_health("r4", Health::Unreachable),
    ];
    let plan = plan_file(
        &desired,
        &replicas,
        &[
            copy("r1", NEW),
            copy("r2", NEW),
            copy("r2", OLD),
            corrupt("r3", NEW),
            copy("r4", NEW),
        ],
    );
    assert_eq!(
        plan.actions,
        vec![
            delete("r1", NEW, DeleteReason::FileDeleted),
            delete("r2", OLD, DeleteReason::FileDeleted),
            delete("r2", NEW, DeleteReason::FileDeleted),
            delete("r3", NEW, DeleteReason::FileDeleted),
        ]
    );
    assert_eq!(plan.phase, Phase::Deleting);
    assert!(!plan.finalized);

    let plan = plan_file(&desired, &replicas, &[copy("r4", NEW)]);
    assert_eq!(plan.actions, vec![]);
    assert_eq!(plan.phase, Phase::Deleting);
    assert!(plan.finalized);
    assert!(!plan.converged);
}

#[test]
fn never_held_is_pending_and_status_is_deterministic() {
    let plan = plan_file(&file(2), &[replica("r1")], &[]);
    assert_eq!(plan.phase, Phase::Pending);
    assert_eq!(plan.actions, vec![]);
    assert_eq!(plan.conditions[1].status, "False");

    let plan = plan_file(&held_by(2, &["r1"]), &[replica("r1")], &[]);
    assert_eq!(plan.phase, Phase::Lost);
    assert_eq!(plan.conditions[1].reason, "NoVerifiedCopy");

    let plan = plan_file(
        &file(2),
        &[replica("r1"), replica("r2")],
        &[copy("r1", NEW), copy("r2", NEW)],
    );
    assert_eq!(plan.phase, Phase::Ready);
    assert!(plan.converged);
    assert_eq!(plan.ready_replicas, 2);
    let conditions: Vec<(&str, &str, &str, &str)> = plan
        .conditions
        .iter()
        .map(|c| {
            (
                c.type_.as_str(),
                c.status.as_str(),
                c.reason.as_str(),
                c.message.as_str(),
            )
        })
        .collect();
    assert_eq!(
        conditions,
        vec![
            ("Ready", "True", "Converged", "2/2 verified copies"),
            ("Degraded", "False", "AsWanted", ""),
        ]
    );
    assert!(plan.events.is_empty());
}
