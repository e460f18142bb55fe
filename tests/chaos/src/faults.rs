//! The fault runner: plays a phase's timeline of fault steps against the cluster (kill -9,
//! SIGSTOP/SIGCONT, flipped bits and truncated copies, a full tmpfs, a read-only bind mount,
//! restarts of the operator or of everything), keeps track of what is still broken, and heals
//! it all at the end of the phase.

use crate::corrupt::{self, Corruption};
use crate::ledger::Violation;
use crate::schedule::{Action, FaultKind, Step};
use crate::workload::Workload;
use deposito_e2e::files::tmp_files;
use deposito_e2e::proc::signal;
use deposito_e2e::wait::try_wait_for;
use deposito_e2e::Cluster;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a restarted cluster may take to be healthy again.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a kill waits for a transfer to be in flight before it strikes anyway.
const IN_FLIGHT_WAIT: Duration = Duration::from_millis(1500);
/// How long a kill mid-reconcile waits for its level change to be answered.
const PATCH_WAIT: Duration = Duration::from_secs(2);
/// The file that fills a replica's disk (outside `objects/` and `tmp/`).
const FILLER: &str = "chaos-filler";

/// Read-only bind mounts still in place; undone on drop (before the cluster's own tmpfs is
/// unmounted, so it must be dropped first).
#[derive(Default)]
struct ReadOnlyMounts(BTreeMap<usize, PathBuf>);

impl Drop for ReadOnlyMounts {
    fn drop(&mut self) {
        for dir in self.0.values() {
            unmount_quietly(dir);
        }
    }
}

/// Runs fault steps and remembers what they left broken.
pub struct FaultRunner {
    workload: Arc<Workload>,
    /// Faults injected, by kind.
    pub injected: BTreeMap<FaultKind, u64>,
    /// Faults that found nothing to act on (e.g. no copy eligible for corruption), by kind.
    pub skipped: BTreeMap<FaultKind, u64>,
    /// Kills (of a replica, or of the operator mid-upload) that struck with a write in
    /// flight, and all such kills, by kind.
    pub in_flight: BTreeMap<FaultKind, (u64, u64)>,
    paused: BTreeSet<usize>,
    read_only: ReadOnlyMounts,
    filled: BTreeSet<usize>,
    background: Vec<tokio::task::JoinHandle<()>>,
    /// Catalog rollbacks injected this phase, carried out once it has healed.
    pub rollbacks_due: usize,
    /// Replicas kept full past the liveness timeout and grace period, and how the operator
    /// saw them just before they were freed: (`Full`, `Live`) counts (`Lost` is a violation).
    pub long_full_seen: (u64, u64),
}

impl FaultRunner {
    pub fn new(workload: Arc<Workload>) -> Self {
        FaultRunner {
            workload,
            injected: BTreeMap::new(),
            skipped: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            paused: BTreeSet::new(),
            read_only: ReadOnlyMounts::default(),
            filled: BTreeSet::new(),
            background: Vec::new(),
            rollbacks_due: 0,
            long_full_seen: (0, 0),
        }
    }

    /// Faults injected so far.
    pub fn total(&self) -> u64 {
        self.injected.values().sum()
    }

    /// Plays `steps`, each at its offset from now (or at once when running late: the order
    /// is what matters).
    pub async fn run(&mut self, c: &mut Cluster, steps: &[Step]) {
        let start = Instant::now();
        for step in steps {
            tokio::time::sleep_until((start + Duration::from_millis(step.at_ms)).into()).await;
            let done = self.act(c, &step.action).await;
            if let Some(kind) = step.fault {
                let tally = if done {
                    &mut self.injected
                } else {
                    &mut self.skipped
                };
                *tally.entry(kind).or_default() += 1;
            }
        }
    }

    /// Waits for the operations the runner started in the background.
    pub async fn join_background(&mut self) {
        for task in self.background.drain(..) {
            let _ = task.await;
        }
    }

    /// Carries out one action; false when there was nothing to act on.
    async fn act(&mut self, c: &mut Cluster, action: &Action) -> bool {
        match action {
            Action::KillReplica { k, transfer } => {
                self.background
                    .push(self.workload.spawn_op(transfer.clone()));
                let dirs = [c.replica(*k).dir.clone()];
                self.strike_in_flight(FaultKind::ReplicaKill, &dirs).await;
                c.kill_replica(*k);
            }
            Action::StartReplica { k } => c.start_replica(*k),
            Action::Pause { k } => match c.replica(*k).pid() {
                Some(pid) => {
                    signal(pid, libc::SIGSTOP);
                    self.paused.insert(*k);
                }
                None => return false,
            },
            Action::Resume { k } => self.resume(c, *k),
            Action::ReadOnly { k } => {
                let dir = c.replica(*k).dir.clone();
                if let Err(e) = mount_read_only(&dir).await {
                    eprintln!("chaos: read-only mount of {} failed: {e}", dir.display());
                    return false;
                }
                self.read_only.0.insert(*k, dir);
            }
            Action::ReadWrite { k } => {
                if let Some(dir) = self.read_only.0.remove(k) {
                    unmount_quietly(&dir);
                }
            }
            Action::FillDisk { k, oversized } => {
                let filled = fill_disk(&c.replica(*k).dir.join(FILLER));
                self.filled.insert(*k);
                if filled == 0 {
                    eprintln!("chaos: could not fill replica-{k}'s disk");
                }
                self.background
                    .push(self.workload.spawn_op(oversized.clone()));
            }
            Action::FreeDisk { k, check_kept } => {
                if *check_kept {
                    self.check_full_replica_kept(c, *k).await;
                }
                self.free_disk(c, *k);
            }
            Action::CatalogRollback => self.rollbacks_due += 1,
            Action::FlipBits { k, pick, bits } => {
                return self.corrupt(c, *k, *pick, Corruption::FlipBits(*bits));
            }
            Action::Truncate {
                k,
                pick,
                keep_permille,
            } => {
                return self.corrupt(c, *k, *pick, Corruption::Truncate(*keep_permille));
            }
            Action::KillOperatorMidUpload { upload } => {
                self.background.push(self.workload.spawn_op(upload.clone()));
                let dirs = c.data_dirs();
                self.strike_in_flight(FaultKind::OperatorKillMidUpload, &dirs)
                    .await;
                c.kill_operator();
            }
            Action::KillOperatorMidReconcile { patch, delay_ms } => {
                // Never wait long on a client operation: it may be stuck on a paused replica
                // that only a later step resumes.
                let mut task = self.workload.spawn_op(patch.clone());
                if tokio::time::timeout(PATCH_WAIT, &mut task).await.is_err() {
                    self.background.push(task);
                }
                tokio::time::sleep(Duration::from_millis(*delay_ms)).await;
                c.kill_operator();
            }
            Action::StartOperator => {
                c.start_operator();
                self.wait_gateway(c).await;
            }
            Action::RestartAll { down_ms } => {
                c.kill_operator();
                for k in 1..=c.replicas.len() {
                    c.kill_replica(k);
                }
                self.paused.clear();
                tokio::time::sleep(Duration::from_millis(*down_ms)).await;
                c.start_operator();
                for k in 1..=c.replicas.len() {
                    c.start_replica(k);
                }
                self.wait_all_live(c, "after restarting everything").await;
            }
        }
        true
    }

    /// Waits (briefly) until one of `dirs` has a write in flight, to strike mid-transfer.
    async fn strike_in_flight(&mut self, kind: FaultKind, dirs: &[PathBuf]) {
        let found = try_wait_for(IN_FLIGHT_WAIT, || async {
            if tmp_files(dirs).is_empty() {
                Err("nothing in flight".to_string())
            } else {
                Ok(())
            }
        })
        .await;
        let tally = self.in_flight.entry(kind).or_default();
        tally.0 += u64::from(found.is_ok());
        tally.1 += 1;
    }

    fn resume(&mut self, c: &Cluster, k: usize) {
        if self.paused.remove(&k) {
            if let Some(pid) = c.replica(k).pid() {
                signal(pid, libc::SIGCONT);
            }
        }
    }

    /// A replica full for longer than the liveness timeout plus the grace period is still
    /// counted: `Live` or `Full`, never a holder whose copies get replaced.
    async fn check_full_replica_kept(&mut self, c: &Cluster, k: usize) {
        let id = &c.replica(k).id;
        let health = match c.replica_list().await {
            Ok(list) => list
                .items
                .iter()
                .find(|r| &r.id == id)
                .map_or_else(|| "absent".to_string(), |r| r.health.clone()),
            // The operator may be restarting (its faults overlap): nothing to judge.
            Err(_) => return,
        };
        match health.as_str() {
            "Full" => self.long_full_seen.0 += 1,
            "Live" => self.long_full_seen.1 += 1,
            // Not heard from yet by an operator that restarted meanwhile: had the full disk
            // made it unready, it would be `Lost` by now.
            "Unreachable" => {}
            other => self.workload.ledger.violation(
                Violation::Invariant,
                format!("replica-{k}, full for longer than the grace period, is {other}"),
            ),
        }
    }

    fn free_disk(&mut self, c: &Cluster, k: usize) {
        if self.filled.remove(&k) {
            let _ = std::fs::remove_file(c.replica(k).dir.join(FILLER));
        }
    }

    fn corrupt(&mut self, c: &Cluster, k: usize, pick: u64, how: Corruption) -> bool {
        match corrupt::corrupt_one_copy(c, &self.workload.ledger, k, pick, how) {
            Ok(_) => true,
            Err(why) => {
                eprintln!("chaos: {how:?} on replica-{k} skipped: {why}");
                false
            }
        }
    }

    /// Waits until the gateway answers; a violation if it does not come back.
    async fn wait_gateway(&self, c: &Cluster) {
        let gw = &self.workload.gateway;
        let up = try_wait_for(HEALTHY_TIMEOUT, || async {
            if gw.healthy().await {
                Ok(())
            } else {
                Err("gateway not answering".to_string())
            }
        })
        .await;
        if let Err(e) = up {
            self.workload.ledger.violation(
                Violation::Invariant,
                format!(
                    "operator not healthy {HEALTHY_TIMEOUT:?} after a restart: {e}\n{}",
                    log_tail(c, 0)
                ),
            );
        }
    }

    /// Waits until the gateway answers and lists every replica `Live`; a violation if not.
    pub async fn wait_all_live(&self, c: &Cluster, when: &str) -> bool {
        let ids: Vec<String> = c.replicas.iter().map(|r| r.id.clone()).collect();
        let live = try_wait_for(HEALTHY_TIMEOUT, || async {
            let list = c.replica_list().await?;
            let not_live: Vec<String> = ids
                .iter()
                .filter(|id| {
                    !list
                        .items
                        .iter()
                        .any(|r| &r.id == *id && r.health == "Live")
                })
                .cloned()
                .collect();
            if not_live.is_empty() {
                Ok(())
            } else {
                Err(format!("not live: {not_live:?}"))
            }
        })
        .await;
        match live {
            Ok(()) => true,
            Err(e) => {
                self.workload.ledger.violation(
                    Violation::Invariant,
                    format!("cluster not healthy {HEALTHY_TIMEOUT:?} {when}: {e}"),
                );
                false
            }
        }
    }

    /// Undoes everything still broken: resumes paused replicas, remounts read-write, frees
    /// the full disk, starts what is not running (a process that died on its own is a
    /// violation), and waits until all are live.
    pub async fn heal(&mut self, c: &mut Cluster) {
        for k in std::mem::take(&mut self.paused) {
            if let Some(pid) = c.replica(k).pid() {
                signal(pid, libc::SIGCONT);
            }
        }
        for (_, dir) in std::mem::take(&mut self.read_only.0) {
            unmount_quietly(&dir);
        }
        for k in self.filled.clone() {
            self.free_disk(c, k);
        }
        if c.operator_pid().is_some() && !c.operator_running() {
            self.workload.ledger.violation(
                Violation::Invariant,
                format!("the operator exited on its own:\n{}", log_tail(c, 0)),
            );
            c.kill_operator();
        }
        c.start_operator();
        for k in 1..=c.replicas.len() {
            if c.replica(k).pid().is_some() && !c.replica_running(k) {
                self.workload.ledger.violation(
                    Violation::Invariant,
                    format!("replica-{k} exited on its own:\n{}", log_tail(c, k)),
                );
                c.kill_replica(k);
            }
            c.start_replica(k);
        }
        self.wait_all_live(c, "after healing").await;
    }
}

/// The last lines of process `k`'s log (0: the operator), without terminal colours.
fn log_tail(c: &Cluster, k: usize) -> String {
    let raw = c.log_tail(k, 8);
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            // Skip an escape sequence: ESC [ ... letter.
            for e in chars.by_ref() {
                if e.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// `mount --bind D D` then `mount -o remount,ro,bind D` (chmod does not stop root). The
/// remount fails while a file is open for writing through the new mount: it is retried.
async fn mount_read_only(dir: &Path) -> Result<(), String> {
    run(Command::new("mount").arg("--bind").arg(dir).arg(dir))?;
    let mut last = String::new();
    for _ in 0..40 {
        match run(Command::new("mount")
            .args(["-o", "remount,ro,bind"])
            .arg(dir))
        {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    unmount_quietly(dir);
    Err(last)
}

/// Unmounts the top mount of `dir` (lazily when busy), without complaining.
fn unmount_quietly(dir: &Path) {
    let quiet = |lazy: bool| {
        let mut cmd = Command::new("umount");
        if lazy {
            cmd.arg("-l");
        }
        cmd.arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !quiet(false) {
        quiet(true);
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Writes zeros to `path` until the disk is full (at most 4 GiB); returns the bytes written.
fn fill_disk(path: &Path) -> u64 {
    let Ok(mut f) = std::fs::File::create(path) else {
        return 0;
    };
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    while written < 4 << 30 {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    written
}
