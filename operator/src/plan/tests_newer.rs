//! Table tests of content newer than the catalog's (a restored older catalog): it goes to
//! the trash, never away, while older content is removed as stale.

use deposito_api::gateway::Phase;
use deposito_api::replica::ObjectState;

use super::model::{Action, CopyView, DeleteReason, DesiredFile};
use super::plan_file;
use super::tests::{copy, delete, event_reasons, file, replica, run, Case, NEW, OLD};

/// Content committed after the catalog's current content was acknowledged: written under a
/// newer catalog that a restored backup replaced.
const LATER: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn stored(replica: &str, sha256: &str, stored_at_ms: u64) -> CopyView {
    CopyView {
        stored_at_ms,
        ..copy(replica, sha256)
    }
}

#[test]
fn content_newer_than_the_catalog_s_goes_to_the_trash_never_away() {
    let acked = |replicas: u32| DesiredFile {
        acked_ms: 5_000,
        ..file(replicas)
    };
    let replicas = vec![replica("r1"), replica("r2"), replica("r3")];
    run(vec![
        Case {
            name: "older content (committed before the ack) is stale",
            desired: acked(2),
            replicas: replicas.clone(),
            copies: vec![copy("r1", NEW), copy("r2", NEW), stored("r3", OLD, 4_000)],
            actions: vec![delete("r3", OLD, DeleteReason::Stale)],
            phase: Phase::Trimming,
        },
        Case {
            name: "newer content is trashed, with the named content in place",
            desired: acked(2),
            replicas: replicas.clone(),
            copies: vec![copy("r1", NEW), copy("r2", NEW), stored("r3", LATER, 6_000)],
            actions: vec![delete("r3", LATER, DeleteReason::Newer)],
            phase: Phase::Trimming,
        },
        Case {
            // The fault campaign's loss: the older catalog's content came back from a trash
            // and was copied on; the newer content must not be deleted as stale.
            name: "newer content is trashed while the named content is restored",
            desired: acked(2),
            replicas: replicas.clone(),
            copies: vec![
                CopyView {
                    state: ObjectState::Trashed,
                    ..copy("r1", NEW)
                },
                stored("r1", LATER, 6_000),
                stored("r2", LATER, 6_000),
            ],
            actions: vec![
                Action::Restore {
                    replica: "r1".to_string(),
                    sha256: NEW.to_string(),
                },
                delete("r1", LATER, DeleteReason::Newer),
                delete("r2", LATER, DeleteReason::Newer),
            ],
            phase: Phase::Replicating,
        },
        Case {
            name: "the ack unknown: other content is taken as older",
            desired: file(2),
            replicas: replicas.clone(),
            copies: vec![copy("r1", NEW), copy("r2", NEW), stored("r3", LATER, 6_000)],
            actions: vec![delete("r3", LATER, DeleteReason::Stale)],
            phase: Phase::Trimming,
        },
        Case {
            name: "newer and younger than the age guard: left alone",
            desired: DesiredFile {
                stale_cutoff_ms: 5_500,
                ..acked(2)
            },
            replicas: replicas.clone(),
            copies: vec![copy("r1", NEW), copy("r2", NEW), stored("r3", LATER, 6_000)],
            actions: vec![],
            phase: Phase::Trimming,
        },
        Case {
            name: "a file being deleted: its content goes, newer content to the trash",
            desired: DesiredFile {
                deleting: true,
                ..acked(2)
            },
            replicas,
            copies: vec![
                copy("r1", NEW),
                stored("r2", OLD, 4_000),
                stored("r3", LATER, 6_000),
            ],
            actions: vec![
                delete("r1", NEW, DeleteReason::FileDeleted),
                delete("r2", OLD, DeleteReason::FileDeleted),
                delete("r3", LATER, DeleteReason::Newer),
            ],
            phase: Phase::Deleting,
        },
    ]);
    let plan = plan_file(
        &acked(2),
        &[replica("r1"), replica("r2")],
        &[copy("r1", NEW), copy("r2", NEW), stored("r2", LATER, 6_000)],
    );
    assert_eq!(event_reasons(&plan), vec!["TrashedNewerCopy"]);
    assert_eq!(
        plan.events[0].message,
        format!(
            "content newer than the catalog's moved to the trash: r2 ({})",
            &LATER[..12]
        )
    );
    let deleting = DesiredFile {
        deleting: true,
        ..acked(2)
    };
    let plan = plan_file(
        &deleting,
        &[replica("r1"), replica("r2")],
        &[copy("r1", NEW), stored("r2", LATER, 6_000)],
    );
    let events: Vec<(&str, &str)> = (plan.events.iter())
        .map(|e| (e.reason.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        events,
        vec![
            ("Deleting", "deleting 1 copies from r1"),
            (
                "TrashedNewerCopy",
                "moving 1 copies of content newer than the catalog's to the trash: r2"
            ),
        ]
    );
}
