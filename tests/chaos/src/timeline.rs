//! A phase's fault timeline: places each fault in time (and picks its replica) so that the
//! faults overlap as much as the cluster can take without giving up durability: each replica
//! has one impairment at a time (dead, paused, read-only or full), one replica at least is
//! never impaired, at most half are paused, operator faults do not overlap, and a restart of
//! everything waits until no data dir is read-only or full.

use crate::schedule::{
    write_op, Action, FaultKind, Op, OpKind, Step, Via, GRACE_SECS, LIVENESS_SECS, MIB,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use sha2::{Digest, Sha256};

/// Time a restarted replica or cluster is given to come up before it is impaired again.
const STARTUP_MS: u64 = 2000;

/// The timeline of `kinds` on `k` replicas; kills' transfers and operator faults use
/// `fault_names`.
pub fn plan(rng: &mut StdRng, k: usize, kinds: &[FaultKind], fault_names: &[String]) -> Vec<Step> {
    Timeline::new(k).plan(rng, kinds, fault_names)
}

/// The replica that placement ranks first for `name` among replicas alike in zone, free
/// space and load: the highest rendezvous score, `sha256(id || 0 || namespace || '/' ||
/// name)` (documented as stable in `operator/src/plan/placement.rs`). A kill's transfer goes
/// to such a name, so that it most likely runs on the replica killed.
fn rendezvous_first(name: &str, k: usize) -> usize {
    let score = |r: usize| {
        let mut h = Sha256::new();
        h.update(format!("replica-{r}").as_bytes());
        h.update([0u8]);
        h.update(format!("default/{name}").as_bytes());
        let d = h.finalize();
        u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
    };
    (1..=k).max_by_key(|&r| score(r)).expect("replicas")
}

/// What keeps a replica busy for a while (one at a time per replica).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Impairment {
    Dead,
    Paused,
    ReadOnly,
    Full,
}

/// Places one phase's faults in time so that each replica has at most one impairment at a
/// time, one replica at least is never impaired, half at most are paused, operator
/// faults do not overlap, and a restart of everything waits for a calm moment.
struct Timeline {
    /// Per replica (index k-1): when its current impairment ends, and which it is.
    busy_until: Vec<u64>,
    busy_with: Vec<Option<Impairment>>,
    operator_free_at: u64,
    max_impaired: usize,
    now: u64,
    steps: Vec<Step>,
}

impl Timeline {
    fn new(k: usize) -> Self {
        Timeline {
            busy_until: vec![0; k],
            busy_with: vec![None; k],
            operator_free_at: 0,
            max_impaired: k - 1,
            now: 0,
            steps: Vec::new(),
        }
    }

    fn push(&mut self, at_ms: u64, fault: Option<FaultKind>, action: Action) {
        self.steps.push(Step {
            at_ms,
            fault,
            action,
        });
    }

    /// The first moment from `self.now` at which one of `candidates` is free while fewer than
    /// `max_impaired` replicas are impaired; moves `now` there and picks one at random.
    fn free_replica(&mut self, rng: &mut StdRng, candidates: &[usize]) -> usize {
        loop {
            let t = self.now;
            let impaired = self.busy_until.iter().filter(|&&u| u > t).count();
            let free: Vec<usize> = candidates
                .iter()
                .copied()
                .filter(|&k| self.busy_until[k - 1] <= t)
                .collect();
            if impaired < self.max_impaired && !free.is_empty() {
                return *free.choose(rng).expect("free replica");
            }
            self.now = self
                .busy_until
                .iter()
                .copied()
                .filter(|&u| u > t)
                .min()
                .expect("some replica frees up");
        }
    }

    /// Replicas impaired by `what` now.
    fn impaired_with(&self, what: Impairment) -> Vec<usize> {
        (1..=self.busy_until.len())
            .filter(|&r| self.busy_until[r - 1] > self.now && self.busy_with[r - 1] == Some(what))
            .collect()
    }

    /// Marks replica `k` impaired from now for `ms`.
    fn impair(&mut self, k: usize, what: Impairment, ms: u64) -> u64 {
        self.busy_until[k - 1] = self.now + ms;
        self.busy_with[k - 1] = Some(what);
        self.now + ms
    }

    fn plan(mut self, rng: &mut StdRng, kinds: &[FaultKind], fault_names: &[String]) -> Vec<Step> {
        let k = self.busy_until.len();
        let all: Vec<usize> = (1..=k).collect();
        for &kind in kinds {
            self.now += rng.gen_range(100..=350);
            match kind {
                FaultKind::ReplicaKill => {
                    let r = self.free_replica(rng, &all);
                    let placed_on_r: Vec<&String> = fault_names
                        .iter()
                        .filter(|n| rendezvous_first(n, k) == r)
                        .collect();
                    let name = match placed_on_r.choose(rng) {
                        Some(name) => *name,
                        None => fault_names.choose(rng).expect("name"),
                    };
                    let size = rng.gen_range(512 * 1024..=4 * MIB);
                    let transfer = write_op(rng, name, size, k, Some(Via::HttpThrottled));
                    let back = self.now + rng.gen_range(200..=1500);
                    // Busy until it has started up again: a replica may rightly refuse to
                    // start on a read-only or full data dir.
                    self.impair(r, Impairment::Dead, back - self.now + STARTUP_MS);
                    self.push(self.now, Some(kind), Action::KillReplica { k: r, transfer });
                    self.push(back, None, Action::StartReplica { k: r });
                }
                FaultKind::ReplicaPause => {
                    // At most half of the replicas hang at once.
                    let paused = loop {
                        let paused = self.impaired_with(Impairment::Paused);
                        if paused.len() < (k / 2).max(1) {
                            break paused;
                        }
                        self.now = paused
                            .iter()
                            .map(|&r| self.busy_until[r - 1])
                            .min()
                            .expect("a paused replica");
                    };
                    let others: Vec<usize> = all
                        .iter()
                        .copied()
                        .filter(|r| !paused.contains(r))
                        .collect();
                    let r = self.free_replica(rng, &others);
                    let ms = (LIVENESS_SECS + GRACE_SECS) * 1000 + rng.gen_range(500..=2000);
                    let back = self.impair(r, Impairment::Paused, ms);
                    self.push(self.now, Some(kind), Action::Pause { k: r });
                    self.push(back, None, Action::Resume { k: r });
                }
                FaultKind::ReadOnly => {
                    let r = self.free_replica(rng, &all);
                    let back = self.impair(r, Impairment::ReadOnly, rng.gen_range(500..=2000));
                    self.push(self.now, Some(kind), Action::ReadOnly { k: r });
                    self.push(back, None, Action::ReadWrite { k: r });
                }
                FaultKind::DiskFull | FaultKind::DiskFullLong => {
                    let r = self.free_replica(rng, &all);
                    let name = fault_names.choose(rng).expect("name");
                    let size = rng.gen_range(2 * MIB..=8 * MIB);
                    let oversized = write_op(rng, name, size, k, Some(Via::HttpStream));
                    let long = kind == FaultKind::DiskFullLong;
                    let ms = if long {
                        // Well past the point where a dead holder's copies are replaced.
                        (LIVENESS_SECS + GRACE_SECS) * 1000 + rng.gen_range(2000..=4000)
                    } else {
                        rng.gen_range(800..=2500)
                    };
                    let back = self.impair(r, Impairment::Full, ms);
                    self.push(self.now, Some(kind), Action::FillDisk { k: r, oversized });
                    self.push(
                        back,
                        None,
                        Action::FreeDisk {
                            k: r,
                            check_kept: long,
                        },
                    );
                }
                FaultKind::CatalogRollback => {
                    // Carried out once the phase has healed; nothing to place in time.
                    self.push(self.now, Some(kind), Action::CatalogRollback);
                }
                FaultKind::BitFlip | FaultKind::Truncate => {
                    let read_only = self.impaired_with(Impairment::ReadOnly);
                    let writable: Vec<usize> = all
                        .iter()
                        .copied()
                        .filter(|r| !read_only.contains(r))
                        .collect();
                    let r = *writable.choose(rng).expect("a writable replica");
                    let pick = rng.gen();
                    let action = if kind == FaultKind::BitFlip {
                        Action::FlipBits {
                            k: r,
                            pick,
                            bits: rng.gen_range(1..=8),
                        }
                    } else {
                        Action::Truncate {
                            k: r,
                            pick,
                            keep_permille: rng.gen_range(0..=999),
                        }
                    };
                    self.push(self.now, Some(kind), action);
                }
                FaultKind::OperatorKillMidUpload | FaultKind::OperatorKillMidReconcile => {
                    self.now = self.now.max(self.operator_free_at);
                    let name = fault_names.choose(rng).expect("name");
                    let action = if kind == FaultKind::OperatorKillMidUpload {
                        let size = rng.gen_range(512 * 1024..=4 * MIB);
                        Action::KillOperatorMidUpload {
                            upload: write_op(rng, name, size, k, Some(Via::HttpThrottled)),
                        }
                    } else {
                        Action::KillOperatorMidReconcile {
                            patch: Op {
                                name: name.clone(),
                                kind: OpKind::SetReplicas(rng.gen_range(1..=(k as u32 - 1))),
                                think_ms: 0,
                            },
                            delay_ms: rng.gen_range(20..=250),
                        }
                    };
                    let back = self.now + rng.gen_range(200..=1200);
                    self.operator_free_at = back + 500;
                    self.push(self.now, Some(kind), action);
                    self.push(back, None, Action::StartOperator);
                }
                FaultKind::RestartAll => {
                    // Dead and paused replicas are restarted as they are (their undo steps
                    // come later and find nothing to undo); read-only and full data dirs are
                    // waited out, since a replica may rightly refuse to start on one.
                    let mut unusable = self.impaired_with(Impairment::ReadOnly);
                    unusable.extend(self.impaired_with(Impairment::Full));
                    let read_only_ends = unusable
                        .iter()
                        .map(|&r| self.busy_until[r - 1])
                        .max()
                        .unwrap_or(0);
                    self.now = self.now.max(read_only_ends).max(self.operator_free_at);
                    let down_ms = rng.gen_range(200..=800);
                    self.push(self.now, Some(kind), Action::RestartAll { down_ms });
                    self.now += down_ms + STARTUP_MS;
                    self.operator_free_at = self.now;
                    for u in &mut self.busy_until {
                        *u = (*u).max(self.now);
                    }
                }
            }
        }
        // Stable: undo steps keep their place after what they undo at equal times.
        self.steps.sort_by_key(|s| s.at_ms);
        self.steps
    }
}

#[cfg(test)]
mod tests {
    use crate::schedule::{generate, settings, Action};

    #[test]
    fn replicas_have_one_impairment_at_a_time_and_one_stays_healthy() {
        for seed in 0..20 {
            let s = generate(&settings(seed, 400));
            for phase in &s.phases {
                // Replay the steps: count open impairments per replica, and pauses.
                let mut open = [0i32; 5];
                let mut paused = 0;
                let mut unusable = std::collections::BTreeSet::new();
                for st in &phase.steps {
                    match &st.action {
                        Action::Pause { k } => {
                            open[*k] += 1;
                            paused += 1;
                        }
                        Action::Resume { k } => {
                            open[*k] -= 1;
                            paused -= 1;
                        }
                        Action::ReadOnly { k } | Action::FillDisk { k, .. } => {
                            open[*k] += 1;
                            unusable.insert(*k);
                        }
                        Action::ReadWrite { k } | Action::FreeDisk { k, .. } => {
                            open[*k] -= 1;
                            unusable.remove(k);
                        }
                        Action::KillReplica { k, .. } => open[*k] += 1,
                        Action::StartReplica { k } => open[*k] -= 1,
                        Action::RestartAll { .. } => assert!(unusable.is_empty()),
                        _ => {}
                    }
                    assert!(open.iter().all(|&o| (0..=1).contains(&o)), "{open:?}");
                    assert!(open.iter().filter(|&&o| o > 0).count() <= 3, "{open:?}");
                    assert!(paused <= 2, "{paused} paused");
                }
                assert!(open.iter().all(|&o| o == 0), "unbalanced {open:?}");
            }
        }
    }
}
