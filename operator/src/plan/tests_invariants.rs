//! Randomized invariant tests of [`super::plan_file`]: thousands of generated scenarios, each
//! checked against the rules of the design (4, 5, 7, 8, 9) rather than against exact actions.
//!
//! The generator is a tiny splitmix64 seeded by the scenario index, so a failure names its
//! seed and prints the whole input: rerun it by setting `SCENARIOS` to `seed + 1`, or by
//! calling `Scenario::generate(seed)` in a table test.

use std::collections::{BTreeMap, BTreeSet};

use deposito_api::gateway::Phase;
use deposito_api::replica::ObjectState;

use super::model::{
    Action, CopyView, DeleteReason, DesiredFile, FilePlan, Health, Move, ReplicaView,
};
use super::plan_file;

const SCENARIOS: u64 = 10_000;
const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SHA_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const SIZE: u64 = 1_000;
/// `stale_cutoff_ms` when the guard is on; copies get `stored_at_ms` in `0..10_000`, and the
/// current content an `acked_ms` in that range too (or 0, unknown).
const CUTOFF: u64 = 5_000;
const MAX_ROUNDS: u64 = 10;

/// splitmix64: deterministic, no crate, good enough to spread scenarios.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[derive(Debug, Clone)]
struct Scenario {
    seed: u64,
    desired: DesiredFile,
    replicas: Vec<ReplicaView>,
    copies: Vec<CopyView>,
}

fn copy_of(replica: &str, sha256: &str, state: ObjectState, stored_at_ms: u64) -> CopyView {
    CopyView {
        replica: replica.to_string(),
        sha256: sha256.to_string(),
        size: SIZE,
        state,
        stored_at_ms,
    }
}

impl Scenario {
    fn generate(seed: u64) -> Scenario {
        let mut rng = Rng(seed);
        let replicas: Vec<ReplicaView> = (0..1 + rng.below(7))
            .map(|i| ReplicaView {
                id: format!("r{i}"),
                zone: [None, Some("a"), Some("b"), Some("c")][rng.below(4) as usize]
                    .map(str::to_string),
                health: match rng.below(10) {
                    0..=6 => Health::Live,
                    7 | 8 => Health::Unreachable,
                    _ => Health::Lost,
                },
                draining: rng.chance(15),
                free_bytes: if rng.chance(20) {
                    rng.below(SIZE)
                } else {
                    SIZE + rng.below(1 << 40)
                },
                active_transfers: rng.below(4),
                url: format!("http://r{i}:7070"),
                full: rng.chance(10),
            })
            .collect();
        let (sha, other) = if rng.chance(50) {
            (SHA_A, SHA_B)
        } else {
            (SHA_B, SHA_A)
        };
        let mut last_holders: Vec<String> = replicas
            .iter()
            .filter(|_| rng.chance(30))
            .map(|r| r.id.clone())
            .collect();
        if rng.chance(10) {
            last_holders.push("gone".to_string());
        }
        let desired = DesiredFile {
            namespace: "default".to_string(),
            name: "inv.bin".to_string(),
            replicas: 1 + rng.below(6) as u32,
            sha256: sha.to_string(),
            size: SIZE,
            generation: 1,
            deleting: rng.chance(10),
            last_holders,
            stale_cutoff_ms: if rng.chance(80) { u64::MAX } else { CUTOFF },
            acked_ms: if rng.chance(20) { 0 } else { rng.below(10_000) },
            moving: None,
        };
        let mut copies = Vec::new();
        for replica in replicas.iter().filter(|r| r.health == Health::Live) {
            for sha256 in [sha, other] {
                let states: &[ObjectState] = match rng.below(12) {
                    0..=4 => &[],
                    5..=7 => &[ObjectState::Ready],
                    8 => &[ObjectState::Corrupt],
                    9 => &[ObjectState::Ready, ObjectState::Corrupt],
                    _ => &[ObjectState::Trashed],
                };
                for state in states {
                    copies.push(copy_of(&replica.id, sha256, *state, rng.below(10_000)));
                }
            }
        }
        let mut desired = desired;
        if rng.chance(30) && !replicas.is_empty() {
            let pick = |rng: &mut Rng| {
                replicas[rng.below(replicas.len() as u64) as usize]
                    .id
                    .clone()
            };
            desired.moving = Some(Move {
                from: pick(&mut rng),
                to: pick(&mut rng),
            });
        }
        Scenario {
            seed,
            desired,
            replicas,
            copies,
        }
    }

    fn describe(&self, plan: &FilePlan) -> String {
        format!(
            "seed {}\n desired: {:?}\n replicas: {:?}\n copies: {:?}\n plan: {:?}",
            self.seed, self.desired, self.replicas, self.copies, plan
        )
    }

    fn replica(&self, id: &str) -> Option<&ReplicaView> {
        self.replicas.iter().find(|r| r.id == id)
    }

    fn is_live(&self, id: &str) -> bool {
        self.replica(id).is_some_and(|r| r.health == Health::Live)
    }

    fn is_draining(&self, id: &str) -> bool {
        self.replica(id).is_some_and(|r| r.draining)
    }

    /// Replicas with a Ready copy of `sha256`, observed on a live replica.
    fn ready_holders(&self, sha256: &str) -> BTreeSet<String> {
        self.copies
            .iter()
            .filter(|c| c.sha256 == sha256 && c.state == ObjectState::Ready)
            .filter(|c| self.is_live(&c.replica))
            .map(|c| c.replica.clone())
            .collect()
    }

    /// Live replicas with a trashed copy of `sha256`.
    fn trash_holders(&self, sha256: &str) -> BTreeSet<String> {
        self.copies
            .iter()
            .filter(|c| c.sha256 == sha256 && c.state == ObjectState::Trashed)
            .filter(|c| self.is_live(&c.replica))
            .map(|c| c.replica.clone())
            .collect()
    }

    /// Live, non-draining replicas that hold a good copy or have room for one.
    fn capacity(&self) -> usize {
        let good = self.ready_holders(&self.desired.sha256);
        self.replicas
            .iter()
            .filter(|r| r.health == Health::Live && !r.draining)
            .filter(|r| good.contains(&r.id) || (!r.full && r.free_bytes >= self.desired.size))
            .count()
    }

    fn has_unreachable_holder(&self) -> bool {
        self.desired.last_holders.iter().any(|id| {
            self.replica(id)
                .is_some_and(|r| r.health == Health::Unreachable)
        })
    }

    /// Ready copies of other content too young to be deleted as stale: they stay forever.
    fn has_young_stale(&self) -> bool {
        self.copies.iter().any(|c| {
            c.sha256 != self.desired.sha256
                && c.state == ObjectState::Ready
                && c.stored_at_ms > self.desired.stale_cutoff_ms
                && self.is_live(&c.replica)
        })
    }

    /// Whether a Ready copy of other content was committed after the current content was
    /// acknowledged (content this catalog never knew).
    fn is_newer(&self, c: &CopyView) -> bool {
        c.sha256 != self.desired.sha256
            && c.state == ObjectState::Ready
            && self.desired.acked_ms > 0
            && c.stored_at_ms > self.desired.acked_ms
    }
}

type Pull = (String, String, String);
type Delete = (String, String, DeleteReason);
type Restore = (String, String);

fn split(plan: &FilePlan) -> (Vec<Pull>, Vec<Delete>, Vec<Restore>) {
    let (mut pulls, mut deletes, mut restores) = (Vec::new(), Vec::new(), Vec::new());
    for action in &plan.actions {
        match action {
            Action::Restore { replica, sha256 } => restores.push((replica.clone(), sha256.clone())),
            Action::Pull {
                target,
                source,
                sha256,
            } => pulls.push((target.clone(), source.clone(), sha256.clone())),
            Action::Delete {
                replica,
                sha256,
                reason,
            } => deletes.push((replica.clone(), sha256.clone(), *reason)),
        }
    }
    (pulls, deletes, restores)
}

/// Invariants 1 to 8 on one plan of one scenario.
fn check_plan(s: &Scenario, plan: &FilePlan) {
    let ctx = || s.describe(plan);
    let desired = &s.desired;
    let wanted = desired.replicas as usize;
    let (pulls, deletes, restores) = split(plan);
    let good = s.ready_holders(&desired.sha256);
    let deleted: BTreeSet<(String, String)> = deletes
        .iter()
        .map(|(r, sha, _)| (r.clone(), sha.clone()))
        .collect();
    let survives = |id: &String| !deleted.contains(&(id.clone(), desired.sha256.clone()));

    // 4. No duplicate action, no (replica, sha256) both pulled and deleted.
    assert_eq!(deleted.len(), deletes.len(), "duplicate delete\n{}", ctx());
    let pulled: BTreeSet<(String, String)> = pulls
        .iter()
        .map(|(t, _, sha)| (t.clone(), sha.clone()))
        .collect();
    assert_eq!(
        pulled.len(),
        pulls.len(),
        "duplicate pull target\n{}",
        ctx()
    );
    assert!(
        pulled.is_disjoint(&deleted),
        "pull and delete of one pair\n{}",
        ctx()
    );

    // 8. Ready iff converged; converged means nothing to do and exactly N copies.
    assert_eq!(plan.phase == Phase::Ready, plan.converged, "{}", ctx());
    if plan.converged {
        assert!(plan.actions.is_empty(), "converged with actions\n{}", ctx());
        assert_eq!(plan.ready_replicas as usize, wanted, "{}", ctx());
    }

    // 6. Deleting: every observed copy goes, nothing else.
    if desired.deleting {
        let observed: BTreeSet<(String, String)> = s
            .copies
            .iter()
            .filter(|c| s.is_live(&c.replica) && c.state != ObjectState::Trashed)
            .map(|c| (c.replica.clone(), c.sha256.clone()))
            .collect();
        assert!(pulls.is_empty(), "pull while deleting\n{}", ctx());
        assert!(restores.is_empty(), "restore while deleting\n{}", ctx());
        for (replica, sha, reason) in &deletes {
            let newer = s
                .copies
                .iter()
                .any(|c| c.replica == *replica && c.sha256 == *sha && s.is_newer(c));
            let expected = if newer {
                DeleteReason::Newer
            } else {
                DeleteReason::FileDeleted
            };
            assert_eq!(*reason, expected, "delete reason while deleting\n{}", ctx());
        }
        assert_eq!(deleted, observed, "deleting: wrong copies\n{}", ctx());
        assert_eq!(plan.finalized, observed.is_empty(), "{}", ctx());
        assert_eq!(plan.phase, Phase::Deleting, "{}", ctx());
        return;
    }
    assert!(!plan.finalized, "finalized while not deleting\n{}", ctx());

    // 1. The last verified copy is never deleted.
    if !good.is_empty() {
        assert!(
            good.iter().any(survives),
            "last verified copy deleted\n{}",
            ctx()
        );
    }

    // 2. Add before trim: a good copy goes only while N staying good copies remain.
    let staying: BTreeSet<&String> = good.iter().filter(|id| !s.is_draining(id)).collect();
    if deletes
        .iter()
        .any(|(r, sha, _)| *sha == desired.sha256 && good.contains(r))
    {
        let kept = staying.iter().filter(|id| survives(id)).count();
        assert!(kept >= wanted, "trimmed below N ({kept})\n{}", ctx());
    }

    // 3. Pull targets and sources.
    if good.is_empty() {
        assert!(pulls.is_empty(), "pull with no verified copy\n{}", ctx());
    }
    // Rule 8: holders unreachable within the grace period still count, so no over-replication.
    let pending = desired
        .last_holders
        .iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter_map(|id| s.replica(id))
        .filter(|r| r.health == Health::Unreachable && !r.draining)
        .count();
    // A sound move adds one pull beyond N, and only when the file is at N.
    let move_pull = desired.moving.as_ref().is_some_and(|m| {
        pulls.iter().any(|(t, _, _)| *t == m.to) && staying.len() == wanted && pending == 0
    });
    assert!(
        staying.len() + pending + pulls.len() + restores.len()
            <= wanted.max(staying.len() + pending) + usize::from(move_pull),
        "more copies than needed\n{}",
        ctx()
    );
    if move_pull {
        assert_eq!(pulls.len(), 1, "a move with other pulls\n{}", ctx());
        assert!(restores.is_empty(), "a move with restores\n{}", ctx());
    }
    // Restores: only of the current content, held in a live replica's trash.
    let trashed = s.trash_holders(&desired.sha256);
    for (replica, sha) in &restores {
        let r = s.replica(replica).expect("restore on a known replica");
        assert_eq!(sha, &desired.sha256, "restore of other content\n{}", ctx());
        assert!(trashed.contains(replica), "restore of nothing\n{}", ctx());
        assert!(
            r.health == Health::Live && !r.draining && !good.contains(replica),
            "bad restore target\n{}",
            ctx()
        );
    }
    for (target, source, sha) in &pulls {
        let t = s.replica(target).expect("pull target is a known replica");
        assert_eq!(sha, &desired.sha256, "pull of other content\n{}", ctx());
        assert!(
            t.health == Health::Live && !t.draining,
            "bad target\n{}",
            ctx()
        );
        assert!(t.free_bytes >= desired.size, "target too full\n{}", ctx());
        assert!(!t.full, "a full replica as target\n{}", ctx());
        assert!(!good.contains(target), "target already holds\n{}", ctx());
        assert!(
            good.contains(source),
            "source holds no good copy\n{}",
            ctx()
        );
    }

    // 5. Delete reasons match the copy, stale copies wait for the new content, and a copy of
    // content newer than the catalog's only ever goes to the trash.
    let other_ready: BTreeMap<String, u64> = s
        .copies
        .iter()
        .filter(|c| c.sha256 != desired.sha256 && c.state == ObjectState::Ready)
        .map(|c| (c.replica.clone(), c.stored_at_ms))
        .collect();
    for (replica, sha, reason) in &deletes {
        let expected: &[DeleteReason] = if *sha == desired.sha256 && good.contains(replica) {
            &[
                DeleteReason::Extra,
                DeleteReason::Draining,
                DeleteReason::Moved,
            ]
        } else if *sha != desired.sha256 && other_ready.contains_key(replica) {
            &[DeleteReason::Stale, DeleteReason::Newer]
        } else {
            &[DeleteReason::Corrupt]
        };
        assert!(expected.contains(reason), "delete reason\n{}", ctx());
        if *reason == DeleteReason::Moved {
            assert_eq!(
                desired.moving.as_ref().map(|m| &m.from),
                Some(replica),
                "moved copy not the move's source\n{}",
                ctx()
            );
        }
        if *reason == DeleteReason::Stale {
            assert!(pulls.is_empty(), "stale deleted while pulling\n{}", ctx());
            assert!(
                restores.is_empty(),
                "stale deleted while restoring\n{}",
                ctx()
            );
            assert!(
                !good.is_empty(),
                "stale deleted with no good copy\n{}",
                ctx()
            );
            assert!(
                staying.len() >= wanted.min(s.capacity()),
                "stale deleted before the new content is in place\n{}",
                ctx()
            );
            assert!(
                other_ready[replica] <= desired.stale_cutoff_ms,
                "young stale copy deleted\n{}",
                ctx()
            );
            assert!(
                desired.acked_ms == 0 || other_ready[replica] <= desired.acked_ms,
                "content newer than the catalog's deleted as stale\n{}",
                ctx()
            );
        }
        if *reason == DeleteReason::Newer {
            assert!(
                other_ready[replica] <= desired.stale_cutoff_ms,
                "young copy of other content trashed\n{}",
                ctx()
            );
            assert!(
                desired.acked_ms > 0 && other_ready[replica] > desired.acked_ms,
                "older content trashed as newer\n{}",
                ctx()
            );
        }
        if *reason == DeleteReason::Corrupt {
            assert!(
                !good.is_empty(),
                "corrupt deleted with no good copy\n{}",
                ctx()
            );
        }
    }
}

/// The copies after the executor carried out `plan`: pulls commit a verified copy on the
/// target (replacing a quarantined one), deletes remove the (replica, sha256) object.
fn apply(copies: &mut Vec<CopyView>, plan: &FilePlan, round: u64) {
    for action in &plan.actions {
        match action {
            Action::Restore { replica, sha256 } => {
                copies.retain(|c| !(c.replica == *replica && c.sha256 == *sha256));
                copies.push(copy_of(replica, sha256, ObjectState::Ready, 20_000 + round));
            }
            Action::Pull { target, sha256, .. } => {
                copies.retain(|c| !(c.replica == *target && c.sha256 == *sha256));
                copies.push(copy_of(target, sha256, ObjectState::Ready, 20_000 + round));
            }
            Action::Delete {
                replica,
                sha256,
                reason: DeleteReason::Newer,
            } => {
                // Moved to the trash: still held, never served.
                for c in copies.iter_mut() {
                    if c.replica == *replica && c.sha256 == *sha256 && c.state == ObjectState::Ready
                    {
                        c.state = ObjectState::Trashed;
                    }
                }
            }
            Action::Delete {
                replica, sha256, ..
            } => copies.retain(|c| !(c.replica == *replica && c.sha256 == *sha256)),
        }
    }
}

/// Invariant 7: the same inputs in another order give the same plan.
fn check_order_independence(s: &Scenario, plan: &FilePlan) {
    let mut rng = Rng(s.seed ^ 0xD1CE);
    let mut replicas = s.replicas.clone();
    let mut copies = s.copies.clone();
    rng.shuffle(&mut replicas);
    rng.shuffle(&mut copies);
    let shuffled = plan_file(&s.desired, &replicas, &copies);
    assert_eq!(
        &shuffled,
        plan,
        "order changed the plan: replicas {replicas:?} copies {copies:?}\n{}",
        s.describe(plan)
    );
}

/// Invariant 9: applying plans converges: no actions within `MAX_ROUNDS`, and then exactly N verified
/// copies on non-draining replicas when the cluster allows it (then returns true).
fn check_convergence(first: &Scenario) -> bool {
    let mut s = first.clone();
    let mut plan = plan_file(&s.desired, &s.replicas, &s.copies);
    let mut round = 0;
    while !plan.actions.is_empty() {
        round += 1;
        assert!(
            round <= MAX_ROUNDS,
            "no fixpoint after {MAX_ROUNDS} rounds\n{}",
            s.describe(&plan)
        );
        apply(&mut s.copies, &plan, round);
        plan = plan_file(&s.desired, &s.replicas, &s.copies);
        check_plan(&s, &plan);
    }
    let ctx = || format!("after {round} rounds\n{}", s.describe(&plan));
    if first.desired.deleting {
        assert!(plan.finalized, "deletion not finalized\n{}", ctx());
        return false;
    }
    let enough = first.capacity() >= first.desired.replicas as usize;
    let had_copy = !first.ready_holders(&first.desired.sha256).is_empty();
    if enough && had_copy && !first.has_unreachable_holder() && !first.has_young_stale() {
        assert_eq!(plan.phase, Phase::Ready, "did not converge\n{}", ctx());
        let staying = s
            .ready_holders(&s.desired.sha256)
            .iter()
            .filter(|id| !s.is_draining(id))
            .count();
        assert_eq!(staying, s.desired.replicas as usize, "{}", ctx());
        return true;
    }
    false
}

#[test]
fn random_scenarios_keep_the_invariants() {
    let mut phases: BTreeMap<String, u64> = BTreeMap::new();
    let mut converged_checks = 0;
    for seed in 0..SCENARIOS {
        let s = Scenario::generate(seed);
        let plan = plan_file(&s.desired, &s.replicas, &s.copies);
        *phases.entry(format!("{:?}", plan.phase)).or_insert(0) += 1;
        for action in &plan.actions {
            let kind = match action {
                Action::Restore { .. } => "restore",
                Action::Delete {
                    reason: DeleteReason::Moved,
                    ..
                } => "moved",
                Action::Delete {
                    reason: DeleteReason::Newer,
                    ..
                } => "newer",
                _ => continue,
            };
            *phases.entry(kind.to_string()).or_insert(0) += 1;
        }
        check_plan(&s, &plan);
        check_order_independence(&s, &plan);
        converged_checks += u64::from(check_convergence(&s));
    }
    eprintln!("phases {phases:?}, full convergence checked in {converged_checks}");
    // The generator must reach every interesting phase, or the test proves little.
    for phase in [
        "Ready",
        "Replicating",
        "Trimming",
        "Degraded",
        "Lost",
        "Deleting",
        "restore",
        "moved",
        "newer",
    ] {
        assert!(
            phases.contains_key(phase),
            "no {phase} scenario: {phases:?}"
        );
    }
    assert!(
        converged_checks >= SCENARIOS / 10,
        "{converged_checks} full convergences"
    );
}
