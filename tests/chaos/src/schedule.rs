//! The campaign's schedule, drawn up front from the seed alone: the warm-up writes, then for
//! each phase a timeline of fault steps (what, on which replica, when, for how long) and each
//! client's list of operations (name, kind, size, content seed, think time). The same seed
//! always gives the same schedule; only how the system answers varies from run to run.

use crate::content::Content;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

/// Liveness timeout of the operator (3 × its default 2 s heartbeat, at least 5 s).
pub const LIVENESS_SECS: u64 = 6;
/// The cluster's grace period before a silent holder's copies are replaced.
pub const GRACE_SECS: u64 = 2;
/// Age before a copy no catalog entry claims is collected.
pub const ORPHAN_GRACE_SECS: u64 = 3;
/// One MiB.
pub const MIB: u64 = 1 << 20;
/// The occasional large file.
pub const BIG_FILE_BYTES: u64 = 64 * MIB;

/// What the schedule is drawn from.
#[derive(Debug, Clone)]
pub struct Settings {
    pub seed: u64,
    pub faults: usize,
    /// Replica processes (K).
    pub replicas: usize,
    pub clients: usize,
    pub faults_per_phase: usize,
    pub names_per_client: usize,
}

/// How a write reaches the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `PUT` of a body held in memory.
    HttpMemory,
    /// `PUT` streamed from a scratch file.
    HttpStream,
    /// `PUT` streamed from a scratch file at a few MiB/s, so that it stays in flight a while
    /// (the transfers that kills interrupt).
    HttpThrottled,
    /// `deposito deposit --no-wait` (the client retries transient server errors).
    Cli,
}

/// One client operation on one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    /// Deposit (or overwrite) the name with `content` at `replicas` copies.
    Write {
        content: Content,
        replicas: u32,
        via: Via,
    },
    /// `GET` the whole file and check its bytes.
    Read,
    /// `PATCH` the replication level.
    SetReplicas(u32),
    /// `DELETE` the file.
    Delete,
}

/// An operation with the pause a client takes before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub name: String,
    pub kind: OpKind,
    pub think_ms: u64,
}

/// The kinds of fault, each counted on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    ReplicaKill,
    OperatorKillMidUpload,
    OperatorKillMidReconcile,
    ReplicaPause,
    BitFlip,
    Truncate,
    DiskFull,
    DiskFullLong,
    ReadOnly,
    RestartAll,
    CatalogRollback,
}

impl FaultKind {
    pub const ALL: [FaultKind; 11] = [
        FaultKind::ReplicaKill,
        FaultKind::OperatorKillMidUpload,
        FaultKind::OperatorKillMidReconcile,
        FaultKind::ReplicaPause,
        FaultKind::BitFlip,
        FaultKind::Truncate,
        FaultKind::DiskFull,
        FaultKind::DiskFullLong,
        FaultKind::ReadOnly,
        FaultKind::RestartAll,
        FaultKind::CatalogRollback,
    ];

    /// Name in the report.
    pub fn label(self) -> &'static str {
        match self {
            FaultKind::ReplicaKill => "replica_kill",
            FaultKind::OperatorKillMidUpload => "operator_kill_upload",
            FaultKind::OperatorKillMidReconcile => "operator_kill_reconcile",
            FaultKind::ReplicaPause => "replica_pause",
            FaultKind::BitFlip => "bit_flip",
            FaultKind::Truncate => "truncate",
            FaultKind::DiskFull => "disk_full",
            FaultKind::DiskFullLong => "disk_full_long",
            FaultKind::ReadOnly => "read_only",
            FaultKind::RestartAll => "restart_all",
            FaultKind::CatalogRollback => "catalog_rollback",
        }
    }

    /// Relative frequency.
    fn weight(self) -> u32 {
        match self {
            FaultKind::ReplicaKill => 26,
            FaultKind::OperatorKillMidUpload => 8,
            FaultKind::OperatorKillMidReconcile => 8,
            FaultKind::ReplicaPause => 4,
            FaultKind::BitFlip => 16,
            FaultKind::Truncate => 10,
            FaultKind::DiskFull => 8,
            FaultKind::DiskFullLong => 3,
            FaultKind::ReadOnly => 12,
            FaultKind::RestartAll => 3,
            FaultKind::CatalogRollback => 2,
        }
    }
}

/// One thing the fault runner does. Replica indices are 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start `transfer` in the background, wait (briefly) until replica `k` has a write in
    /// flight, then kill -9 it.
    KillReplica {
        k: usize,
        transfer: Op,
    },
    StartReplica {
        k: usize,
    },
    /// SIGSTOP: the replica hangs, connections open but nothing answers.
    Pause {
        k: usize,
    },
    /// SIGCONT.
    Resume {
        k: usize,
    },
    /// Bind-mount the data dir read-only over itself.
    ReadOnly {
        k: usize,
    },
    /// Undo [`Action::ReadOnly`].
    ReadWrite {
        k: usize,
    },
    /// Fill the replica's (tmpfs) disk, then deposit `oversized`, more than is left.
    FillDisk {
        k: usize,
        oversized: Op,
    },
    /// Remove the filler. `check_kept`: the disk was full for longer than the liveness
    /// timeout plus the grace period; the operator must still count the replica (`Live` or
    /// `Full`, never a dead holder whose copies are replaced).
    FreeDisk {
        k: usize,
        check_kept: bool,
    },
    /// Flip `bits` bits of one stored copy on replica `k` (the `pick`-th eligible one).
    FlipBits {
        k: usize,
        pick: u64,
        bits: u32,
    },
    /// Cut one stored copy on replica `k` to `keep_permille` ‰ of its length.
    Truncate {
        k: usize,
        pick: u64,
        keep_permille: u64,
    },
    /// Start `upload`, wait until it is in flight, kill -9 the operator.
    KillOperatorMidUpload {
        upload: Op,
    },
    /// Send `patch` (a change of replication level), wait `delay_ms`, kill -9 the operator.
    KillOperatorMidReconcile {
        patch: Op,
        delay_ms: u64,
    },
    StartOperator,
    /// After the phase has healed and converged: stop the operator, start it on an older
    /// catalog (copies it does not know go to the trash), then on the current one again (they
    /// must come back from the trash).
    CatalogRollback,
    /// kill -9 the operator and every replica at once, wait `down_ms`, start them all.
    RestartAll {
        down_ms: u64,
    },
}

/// A step of a phase's fault timeline. `fault` is set on the step that injects a fault (the
/// one counted); undo steps have none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub at_ms: u64,
    pub fault: Option<FaultKind>,
    pub action: Action,
}

/// One phase: faults and workload run together, then everything is healed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    pub number: usize,
    pub steps: Vec<Step>,
    /// Each client's operations, in order.
    pub clients: Vec<Vec<Op>>,
}

impl Phase {
    /// Faults injected by this phase.
    pub fn fault_count(&self) -> usize {
        self.steps.iter().filter(|s| s.fault.is_some()).count()
    }
}

/// The whole campaign.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub settings: Settings,
    /// Writes of every name before the first phase (no faults).
    pub warmup: Vec<Op>,
    pub phases: Vec<Phase>,
    /// Every name the campaign uses.
    pub names: Vec<String>,
}

impl Schedule {
    /// A short fingerprint of the schedule: equal seeds and settings give equal digests.
    pub fn digest(&self) -> String {
        let text = format!("{:?}{:?}{:?}", self.settings, self.warmup, self.phases);
        hex::encode(&Sha256::digest(text.as_bytes())[..8])
    }
}

/// Name `i` of client `c`'s pool.
fn client_name(c: usize, i: usize) -> String {
    format!("c{c}-f{i:02}.bin")
}

/// Name `i` of the fault runner's pool (its own writes and level changes).
fn fault_name(i: usize) -> String {
    format!("fault-f{i:02}.bin")
}

/// Names in the fault runner's pool.
const FAULT_NAMES: usize = 12;

/// Draws the schedule of `settings`.
pub fn generate(settings: &Settings) -> Schedule {
    assert!(settings.replicas >= 3, "at least 3 replicas");
    let mut rng = StdRng::seed_from_u64(settings.seed);
    let pools: Vec<Vec<String>> = (0..settings.clients)
        .map(|c| {
            (0..settings.names_per_client)
                .map(|i| client_name(c, i))
                .collect()
        })
        .collect();
    let fault_names: Vec<String> = (0..FAULT_NAMES).map(fault_name).collect();
    let mut names: Vec<String> = pools.iter().flatten().cloned().collect();
    names.extend(fault_names.iter().cloned());

    let k = settings.replicas;
    let warmup = names
        .iter()
        .map(|name| {
            let size = if name.starts_with("fault") {
                rng.gen_range(256 * 1024..=2 * MIB)
            } else {
                rng.gen_range(0..=64 * 1024)
            };
            Op {
                name: name.clone(),
                kind: OpKind::Write {
                    content: Content {
                        seed: rng.gen(),
                        size,
                    },
                    replicas: rng.gen_range(2..=(k as u32 - 1)),
                    via: Via::HttpMemory,
                },
                think_ms: 0,
            }
        })
        .collect();

    let kinds = fault_kinds(&mut rng, settings.faults);
    let phases = kinds
        .chunks(settings.faults_per_phase.max(1))
        .enumerate()
        .map(|(i, chunk)| {
            let steps = crate::timeline::plan(&mut rng, k, chunk, &fault_names);
            let per_client = chunk.len().max(6);
            let mut clients: Vec<Vec<Op>> = pools
                .iter()
                .map(|pool| {
                    (0..per_client)
                        .map(|_| client_op(&mut rng, pool, k))
                        .collect()
                })
                .collect();
            // The occasional 64 MiB file, streamed, by the first client.
            if i % 5 == 2 {
                let at = rng.gen_range(0..per_client);
                let op = &mut clients[0][at];
                op.kind = OpKind::Write {
                    content: Content {
                        seed: rng.gen(),
                        size: BIG_FILE_BYTES,
                    },
                    replicas: 2,
                    via: Via::HttpStream,
                };
            }
            Phase {
                number: i + 1,
                steps,
                clients,
            }
        })
        .collect();
    Schedule {
        settings: settings.clone(),
        warmup,
        phases,
        names,
    }
}

/// `count` fault kinds: one of each kind first (shuffled), then drawn by weight.
fn fault_kinds(rng: &mut StdRng, count: usize) -> Vec<FaultKind> {
    let mut first = FaultKind::ALL.to_vec();
    first.shuffle(rng);
    let total: u32 = FaultKind::ALL.iter().map(|k| k.weight()).sum();
    let mut out: Vec<FaultKind> = first.into_iter().take(count).collect();
    while out.len() < count {
        let mut x = rng.gen_range(0..total);
        for kind in FaultKind::ALL {
            if x < kind.weight() {
                out.push(kind);
                break;
            }
            x -= kind.weight();
        }
    }
    out
}

/// A size: mostly small, sometimes a few MiB, rarely tens of MiB.
fn workload_size(rng: &mut StdRng) -> u64 {
    match rng.gen_range(0..1000) {
        0..=49 => 0,
        50..=399 => rng.gen_range(1..=4096),
        400..=699 => rng.gen_range(4097..=64 * 1024),
        700..=934 => rng.gen_range(64 * 1024 + 1..=MIB),
        935..=994 => rng.gen_range(MIB + 1..=4 * MIB),
        _ => rng.gen_range(4 * MIB + 1..=24 * MIB),
    }
}

/// A replication level for a write: 1 sometimes, every replica (K) rarely, else 2..K-1.
fn write_level(rng: &mut StdRng, k: usize) -> u32 {
    match rng.gen_range(0..100) {
        0..=19 => 1,
        20..=29 => k as u32,
        _ => rng.gen_range(2..=(k as u32 - 1)),
    }
}

/// A write of a fresh content of a `size` drawn by `size`, to `name`.
pub fn write_op(rng: &mut StdRng, name: &str, size: u64, k: usize, via: Option<Via>) -> Op {
    let via = via.unwrap_or_else(|| match rng.gen_range(0..100) {
        0..=14 => Via::Cli,
        _ if size <= crate::content::IN_MEMORY_LIMIT && rng.gen_bool(0.7) => Via::HttpMemory,
        _ => Via::HttpStream,
    });
    Op {
        name: name.to_string(),
        kind: OpKind::Write {
            content: Content {
                seed: rng.gen(),
                size,
            },
            replicas: write_level(rng, k),
            via,
        },
        think_ms: 0,
    }
}

/// One client operation on one of its names.
fn client_op(rng: &mut StdRng, pool: &[String], k: usize) -> Op {
    let name = pool.choose(rng).expect("names").clone();
    let think_ms = rng.gen_range(40..=400);
    let mut op = match rng.gen_range(0..100) {
        0..=41 => {
            let size = workload_size(rng);
            write_op(rng, &name, size, k, None)
        }
        42..=74 => Op {
            name,
            kind: OpKind::Read,
            think_ms: 0,
        },
        75..=89 => Op {
            name,
            kind: OpKind::SetReplicas(rng.gen_range(1..=k as u32)),
            think_ms: 0,
        },
        _ => Op {
            name,
            kind: OpKind::Delete,
            think_ms: 0,
        },
    };
    op.think_ms = think_ms;
    op
}

/// The default settings with `seed` and `faults` (for tests).
#[cfg(test)]
pub fn settings(seed: u64, faults: usize) -> Settings {
    Settings {
        seed,
        faults,
        replicas: 4,
        clients: 4,
        faults_per_phase: 25,
        names_per_client: 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_schedule_other_seed_other_schedule() {
        let a = generate(&settings(7, 200));
        let b = generate(&settings(7, 200));
        let c = generate(&settings(8, 200));
        assert_eq!(a.phases, b.phases);
        assert_eq!(a.warmup, b.warmup);
        assert_eq!(a.digest(), b.digest());
        assert_ne!(a.digest(), c.digest());
    }

    #[test]
    fn fault_count_and_every_kind_present() {
        let s = generate(&settings(1, 200));
        let total: usize = s.phases.iter().map(Phase::fault_count).sum();
        assert_eq!(total, 200);
        assert_eq!(s.phases.len(), 8);
        for kind in FaultKind::ALL {
            assert!(
                s.phases
                    .iter()
                    .flat_map(|p| &p.steps)
                    .any(|st| st.fault == Some(kind)),
                "{kind:?} missing"
            );
        }
    }
}
