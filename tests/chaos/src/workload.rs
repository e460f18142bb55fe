//! Carries out the schedule's operations against the gateway (HTTP, or the `deposito` CLI for
//! some deposits) and records each outcome in the [`Ledger`]. Used by the client tasks and by
//! the fault runner for the transfers it interrupts.

use crate::content::IN_MEMORY_LIMIT;
use crate::gateway::Gateway;
use crate::ledger::{Ledger, Outcome};
use crate::schedule::{Op, OpKind, Via};
use deposito_api::sha256_hex;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Speed of the throttled uploads that kills interrupt (a few MiB take about a second).
const THROTTLED_BYTES_PER_SEC: u64 = 4 << 20;

/// Tries of an operation that fails transiently (as the CLI's deposit).
const ATTEMPTS: u32 = 5;

/// The pause after failed try `n` (1, 2, ...): 250 ms doubling, at most 4 s (the CLI's).
fn retry_delay(n: u32) -> Duration {
    Duration::from_millis(250) * (1 << n.saturating_sub(1).min(4))
}

/// Everything an operation needs; shared by every task.
pub struct Workload {
    pub gateway: Gateway,
    pub ledger: Arc<Ledger>,
    /// Where streamed contents are written before upload (outside every replica's dir).
    pub scratch: PathBuf,
    next_file: AtomicU64,
    /// Tries repeated after a transient failure.
    pub retries: AtomicU64,
    /// Level reductions not made because the name has a corrupted copy (see the ledger).
    pub guarded: AtomicU64,
    /// Client failures by reason (digits masked), for the report.
    failure_reasons: Mutex<BTreeMap<String, u64>>,
}

impl Workload {
    pub fn new(gateway: Gateway, ledger: Arc<Ledger>, scratch: PathBuf) -> Self {
        std::fs::create_dir_all(&scratch).expect("scratch dir");
        Workload {
            gateway,
            ledger,
            scratch,
            next_file: AtomicU64::new(0),
            guarded: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            failure_reasons: Mutex::new(BTreeMap::new()),
        }
    }

    /// Runs `ops` one after the other, each after its think time.
    pub fn spawn_client(self: &Arc<Self>, ops: Vec<Op>) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            for op in ops {
                tokio::time::sleep(Duration::from_millis(op.think_ms)).await;
                me.execute(&op).await;
            }
        })
    }

    /// Runs `op` in the background.
    pub fn spawn_op(self: &Arc<Self>, op: Op) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move { me.execute(&op).await })
    }

    /// Calls `attempt` until it succeeds, fails for good, or [`ATTEMPTS`] tries have failed
    /// transiently (the CLI's policy); also says whether an earlier try failed.
    async fn retrying<F, Fut>(&self, mut attempt: F) -> (Outcome, bool)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Outcome>,
    {
        let mut earlier_failed = false;
        for n in 1..=ATTEMPTS {
            let outcome = attempt().await;
            if !outcome.is_transient() || n == ATTEMPTS {
                return (outcome, earlier_failed);
            }
            earlier_failed = true;
            self.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(retry_delay(n)).await;
        }
        unreachable!("the last attempt returns")
    }

    /// Carries out one operation (never two at once on one name).
    pub async fn execute(&self, op: &Op) {
        let lock = self.ledger.lock_of(&op.name);
        let _turn = lock.lock().await;
        let name = op.name.as_str();
        match &op.kind {
            OpKind::Write {
                content,
                replicas,
                via,
            } => {
                let (sha, outcome) = if *via == Via::HttpMemory && content.size <= IN_MEMORY_LIMIT {
                    let bytes = content.bytes();
                    let sha = sha256_hex(&bytes);
                    self.ledger.will_write(name, &sha, *content);
                    let gw = &self.gateway;
                    let put = || gw.put_bytes(name, bytes.clone(), *replicas);
                    (sha, self.retrying(put).await.0)
                } else {
                    let n = self.next_file.fetch_add(1, Ordering::Relaxed);
                    let path = self.scratch.join(format!("upload-{n}"));
                    let c = *content;
                    let p = path.clone();
                    let sha = tokio::task::spawn_blocking(move || c.write_to(&p))
                        .await
                        .expect("write scratch file");
                    self.ledger.will_write(name, &sha, *content);
                    let outcome = if *via == Via::Cli {
                        let gw = self.gateway.clone();
                        let (p, nm, r) = (path.clone(), name.to_string(), *replicas);
                        tokio::task::spawn_blocking(move || gw.cli_deposit(&p, &nm, r))
                            .await
                            .expect("deposito cli")
                    } else {
                        let gw = &self.gateway;
                        let rate = (*via == Via::HttpThrottled).then_some(THROTTLED_BYTES_PER_SEC);
                        let put = || gw.put_file(name, &path, *replicas, rate);
                        self.retrying(put).await.0
                    };
                    let _ = std::fs::remove_file(&path);
                    (sha, outcome)
                };
                self.note(&outcome);
                self.ledger.wrote(name, &sha, *replicas, &outcome);
            }
            OpKind::Read => self.read(name).await,
            OpKind::SetReplicas(n) => {
                let record = self.ledger.record(name);
                if record.corrupted && *n < record.max_level() {
                    self.guarded.fetch_add(1, Ordering::Relaxed);
                    self.read(name).await;
                } else {
                    let gw = &self.gateway;
                    let (outcome, _) = self.retrying(|| gw.set_replicas(name, *n)).await;
                    self.note(&outcome);
                    self.ledger.set_level(name, *n, &outcome);
                }
            }
            OpKind::Delete => {
                let gw = &self.gateway;
                let (outcome, earlier_failed) = self.retrying(|| gw.delete(name)).await;
                if earlier_failed {
                    // A try that failed may have deleted it: a later 404 is then no news.
                    self.ledger.may_be_deleted(name);
                }
                self.note(&outcome);
                self.ledger.deleted(name, &outcome);
            }
        }
    }

    async fn read(&self, name: &str) {
        let mut served = self.gateway.read_sha256(name).await;
        for n in 1..ATTEMPTS {
            match &served {
                Err(o) if o.is_transient() => {
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(retry_delay(n)).await;
                    served = self.gateway.read_sha256(name).await;
                }
                _ => break,
            }
        }
        if let Err(outcome) = &served {
            self.note(outcome);
        }
        self.ledger.read(name, served);
    }

    /// Counts a failure's reason.
    fn note(&self, outcome: &Outcome) {
        if let Outcome::Failed { reason, .. } = outcome {
            let mut key = String::new();
            for ch in reason.chars().take(90) {
                let ch = if ch.is_ascii_digit() { '#' } else { ch };
                if !(ch == '#' && key.ends_with('#')) {
                    key.push(ch);
                }
            }
            *self
                .failure_reasons
                .lock()
                .expect("reasons")
                .entry(key)
                .or_default() += 1;
        }
    }

    /// The most frequent failure reasons, most frequent first.
    pub fn top_failure_reasons(&self, n: usize) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = self
            .failure_reasons
            .lock()
            .expect("reasons")
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        all.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        all.truncate(n);
        all
    }
}
