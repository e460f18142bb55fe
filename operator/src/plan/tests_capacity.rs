//! Table tests of [`super::plan_file`] for the trash (restores instead of copies), full
//! replicas (live, never targets) and rebalancing moves (add before trim).

use deposito_api::gateway::Phase;
use deposito_api::replica::ObjectState;

use super::model::{Action, CopyView, DeleteReason, DesiredFile, Move, ReplicaView};
use super::plan_file;
use super::tests::*;

fn trashed(replica: &str, sha256: &str) -> CopyView {
    CopyView {
        state: ObjectState::Trashed,
        ..copy(replica, sha256)
    }
}

fn restore(replica: &str) -> Action {
    Action::Restore {
        replica: replica.to_string(),
        sha256: NEW.to_string(),
    }
}

fn full(id: &str) -> ReplicaView {
    ReplicaView {
        full: true,
        free_bytes: 0,
        ..replica(id)
    }
}

fn moving(n: u32, from: &str, to: &str) -> DesiredFile {
    DesiredFile {
        moving: Some(Move {
            from: from.to_string(),
            to: to.to_string(),
        }),
        ..file(n)
    }
}

#[test]
fn trashed_copies_are_restored_not_copied() {
    let four = vec![replica("r1"), replica("r2"), replica("r3"), replica("r4")];
    run(vec![
        Case {
            name: "no good copy left, two in trashes: both restored",
            desired: held_by(2, &["r1", "r2"]),
            replicas: four.clone(),
            copies: vec![trashed("r1", NEW), trashed("r3", NEW)],
            actions: vec![restore("r1"), restore("r3")],
            phase: Phase::Replicating,
        },
        Case {
            name: "a trashed copy goes first, a pull makes up the rest",
            desired: file(3),
            replicas: four.clone(),
            copies: vec![copy("r1", NEW), trashed("r4", NEW)],
            actions: vec![restore("r4"), pull_to_one_of(&["r2", "r3"], "r1")],
            phase: Phase::Replicating,
        },
        Case {
            name: "trashed copies of other content are left to the retention",
            desired: file(1),
            replicas: four.clone(),
            copies: vec![copy("r1", NEW), trashed("r2", OLD)],
            actions: vec![],
            phase: Phase::Ready,
        },
        Case {
            name: "at N, a trashed copy stays in the trash",
            desired: file(1),
            replicas: four.clone(),
            copies: vec![copy("r1", NEW), trashed("r2", NEW)],
            actions: vec![],
            phase: Phase::Ready,
        },
        Case {
            name: "a deleted file leaves trashed copies to the retention",
            desired: DesiredFile {
                deleting: true,
                ..file(1)
            },
            replicas: four.clone(),
            copies: vec![trashed("r2", NEW)],
            actions: vec![],
            phase: Phase::Deleting,
        },
        Case {
            name: "on a draining replica, a trashed copy is not restored",
            desired: held_by(1, &["r1"]),
            replicas: vec![draining("r1"), replica("r2")],
            copies: vec![trashed("r1", NEW)],
            actions: vec![],
            phase: Phase::Lost,
        },
    ]);
}

/// A pull to whichever of `targets` placement prefers (rendezvous decides between equals).
fn pull_to_one_of(targets: &[&str], source: &str) -> Action {
    let replicas: Vec<ReplicaView> = targets.iter().map(|t| replica(t)).collect();
    let refs: Vec<&ReplicaView> = replicas.iter().collect();
    let best = super::placement::rank_targets(&refs, &[], 1, "default", "report.pdf");
    pull(&best[0], source)
}

#[test]
fn a_full_replica_keeps_and_serves_its_copies_but_takes_none() {
    let plan = plan_file(
        &file(2),
        &[full("r1"), replica("r2"), full("r3")],
        &[copy("r1", NEW), copy("r2", NEW)],
    );
    assert_eq!(plan.phase, Phase::Ready, "a full holder's copy counts");
    assert_eq!(plan.holders, vec!["r1".to_string(), "r2".to_string()]);

    let plan = plan_file(
        &file(3),
        &[full("r1"), replica("r2"), full("r3")],
        &[copy("r1", NEW), copy("r2", NEW)],
    );
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert_eq!(plan.phase, Phase::Degraded);
    let degraded = &plan.conditions[1];
    assert_eq!(degraded.reason, "ReplicasFull");
    assert_eq!(
        degraded.message,
        "wants 3 copies, only 2 replicas available; 1 replica(s) full: r3"
    );

    // A full replica with a trashed copy restores it: a rename needs no room.
    let plan = plan_file(
        &file(3),
        &[full("r1"), replica("r2"), full("r3")],
        &[copy("r1", NEW), copy("r2", NEW), trashed("r3", NEW)],
    );
    assert_eq!(plan.actions, vec![restore("r3")]);
}

#[test]
fn moves_add_before_they_trim() {
    let three = vec![replica("r1"), replica("r2"), replica("r3")];
    run(vec![
        Case {
            name: "at N: the new copy first",
            desired: moving(2, "r1", "r3"),
            replicas: three.clone(),
            copies: vec![copy("r1", NEW), copy("r2", NEW)],
            actions: vec![pull_from_one_of("r3", &["r1", "r2"])],
            phase: Phase::Replicating,
        },
        Case {
            name: "the new copy is there: the source's copy goes",
            desired: moving(2, "r1", "r3"),
            replicas: three.clone(),
            copies: vec![copy("r1", NEW), copy("r2", NEW), copy("r3", NEW)],
            actions: vec![delete("r1", NEW, DeleteReason::Moved)],
            phase: Phase::Trimming,
        },
        Case {
            name: "done: nothing more",
            desired: moving(2, "r1", "r3"),
            replicas: three.clone(),
            copies: vec![copy("r2", NEW), copy("r3", NEW)],
            actions: vec![],
            phase: Phase::Ready,
        },
        Case {
            name: "below N: repair first, the move waits",
            desired: moving(3, "r1", "r3"),
            replicas: vec![replica("r1"), replica("r2"), replica("r3"), replica("r4")],
            copies: vec![copy("r1", NEW), copy("r2", NEW)],
            actions: vec![pull_to_one_of_from(&["r3", "r4"], &["r1", "r2"])],
            phase: Phase::Replicating,
        },
        Case {
            name: "the source lost its copy: no move",
            desired: moving(1, "r1", "r3"),
            replicas: three.clone(),
            copies: vec![copy("r2", NEW)],
            actions: vec![],
            phase: Phase::Ready,
        },
        Case {
            name: "a full target: no move",
            desired: moving(1, "r1", "r3"),
            replicas: vec![replica("r1"), replica("r2"), full("r3")],
            copies: vec![copy("r1", NEW)],
            actions: vec![],
            phase: Phase::Ready,
        },
        Case {
            name: "a move that would crowd a zone: no move",
            desired: moving(2, "a1", "b2"),
            replicas: vec![zoned("a1", "a"), zoned("b1", "b"), zoned("b2", "b")],
            copies: vec![copy("a1", NEW), copy("b1", NEW)],
            actions: vec![],
            phase: Phase::Ready,
        },
        Case {
            name: "within one zone: allowed",
            desired: moving(2, "a1", "a2"),
            replicas: vec![zoned("a1", "a"), zoned("a2", "a"), zoned("b1", "b")],
            copies: vec![copy("a1", NEW), copy("b1", NEW)],
            actions: vec![pull_from_one_of("a2", &["a1", "b1"])],
            phase: Phase::Replicating,
        },
    ]);
    let plan = plan_file(
        &moving(2, "r1", "r3"),
        &[replica("r1"), replica("r2"), replica("r3")],
        &[copy("r1", NEW), copy("r2", NEW)],
    );
    assert_eq!(event_reasons(&plan), vec!["Rebalancing"]);
}

/// A pull to `target` from whichever of `sources` placement prefers.
fn pull_from_one_of(target: &str, sources: &[&str]) -> Action {
    let replicas: Vec<ReplicaView> = sources.iter().map(|s| replica(s)).collect();
    let refs: Vec<&ReplicaView> = replicas.iter().collect();
    let source = super::placement::choose_source(
        &refs,
        &Default::default(),
        target,
        "default",
        "report.pdf",
    )
    .unwrap();
    pull(target, &source)
}

/// A pull to the target placement prefers among `targets`, from the source it prefers.
fn pull_to_one_of_from(targets: &[&str], sources: &[&str]) -> Action {
    let Action::Pull { target, .. } = pull_to_one_of(targets, "-") else {
        unreachable!()
    };
    pull_from_one_of(&target, sources)
}
