//! Engine tests: a fake catalog and a fake membership (in memory, one layer mocked each)
//! around real replicas running in-process on loopback, so that observers, change feeds,
//! pulls and deletes are the real thing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deposito_api::gateway::Phase;
use deposito_api::{sha256_hex, FileKey};
use deposito_util::worker::Workers;
use tokio_util::sync::CancellationToken;

use super::driver::DriverSettings;
use super::observer::ObserverSettings;
use super::*;
use crate::metrics::Metrics;
use crate::testing::FakeMembership;

/// An in-memory catalog that counts status writes.
#[derive(Default)]
struct FakeCatalog {
    records: Mutex<HashMap<FileKey, FileRecord>>,
    changes: Changes,
    publishes: Mutex<u64>,
    /// Why the view is incomplete, when the test says so.
    incomplete: Mutex<Option<String>>,
}

impl FakeCatalog {
    fn put(&self, record: FileRecord) {
        let key = record.key.clone();
        self.records.lock().unwrap().insert(key.clone(), record);
        self.changes.desired_changed(&key);
    }

    fn record(&self, key: &FileKey) -> Option<FileRecord> {
        self.records.lock().unwrap().get(key).cloned()
    }

    fn edit(&self, key: &FileKey, f: impl FnOnce(&mut FileRecord)) {
        let mut records = self.records.lock().unwrap();
        let record = records.get_mut(key).unwrap();
        f(record);
        record.generation += 1;
        drop(records);
        self.changes.desired_changed(key);
    }

    fn publishes(&self) -> u64 {
        *self.publishes.lock().unwrap()
    }
}

#[async_trait]
impl Catalog for FakeCatalog {
    async fn get(&self, key: &FileKey) -> Result<Option<FileRecord>, CatalogError> {
        Ok(self.record(key))
    }
    async fn keys(&self) -> Result<Vec<FileKey>, CatalogError> {
        Ok(self.records.lock().unwrap().keys().cloned().collect())
    }
    async fn publish(
        &self,
        record: &FileRecord,
        status: &ObservedStatus,
    ) -> Result<bool, CatalogError> {
        let mut records = self.records.lock().unwrap();
        let Some(stored) = records.get_mut(&record.key) else {
            return Ok(false);
        };
        if stored.generation != record.generation || stored.status == *status {
            return Ok(false);
        }
        stored.status = status.clone();
        *self.publishes.lock().unwrap() += 1;
        Ok(true)
    }
    async fn finalize(&self, record: &FileRecord) -> Result<bool, CatalogError> {
        let mut records = self.records.lock().unwrap();
        let same = records
            .get(&record.key)
            .is_some_and(|r| r.deleting && r.generation == record.generation);
        if same {
            records.remove(&record.key);
        }
        Ok(same)
    }
    async fn expire(&self, record: &FileRecord) -> Result<bool, CatalogError> {
        let mut records = self.records.lock().unwrap();
        let Some(stored) = records.get_mut(&record.key) else {
            return Ok(false);
        };
        if stored.generation != record.generation || stored.deleting {
            return Ok(false);
        }
        stored.deleting = true;
        stored.generation += 1;
        drop(records);
        self.changes.desired_changed(&record.key);
        Ok(true)
    }
    fn changes(&self) -> &Changes {
        &self.changes
    }
    async fn claim(&self, key: &FileKey) -> Claim {
        if let Err(why) = self.completeness() {
            return Claim::Unknown(why);
        }
        match self.record(key) {
            Some(_) => Claim::Claimed,
            None => Claim::Unclaimed,
        }
    }
    fn completeness(&self) -> Result<(), String> {
        self.incomplete.lock().unwrap().clone().map_or(Ok(()), Err)
    }
}

const TOKEN: &str = "engine-test-token";

/// Real replicas plus an engine around fake seams, all running.
struct Rig {
    _dirs: Vec<tempfile::TempDir>,
    replicas: Vec<deposito_replica::Running>,
    catalog: Arc<FakeCatalog>,
    membership: Arc<FakeMembership>,
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
}

impl Rig {
    async fn start(k: usize, grace: Duration) -> Rig {
        Self::start_guarded(k, grace, StaleGuard::Age(Duration::ZERO)).await
    }

    /// [`Rig::start`] with a chosen guard for copies of other content.
    async fn start_guarded(k: usize, grace: Duration, stale_guard: StaleGuard) -> Rig {
        let mut dirs = Vec::new();
        let mut replicas = Vec::new();
        let mut members = Vec::new();
        for i in 0..k {
            let dir = tempfile::tempdir().unwrap();
            let mut config = deposito_replica::Config::new(dir.path(), TOKEN);
            config.listen = "127.0.0.1:0".parse().unwrap();
            config.id = Some(format!("r{i}"));
            let running = deposito_replica::start(config).await.unwrap();
            members.push(Member {
                id: format!("r{i}"),
                url: running.url(),
                zone: None,
                draining: false,
                available: true,
                down_for: Duration::ZERO,
                capacity: None,
            });
            dirs.push(dir);
            replicas.push(running);
        }
        let catalog = Arc::new(FakeCatalog::default());
        let membership = Arc::new(FakeMembership::default());
        *membership.members.lock().unwrap() = members;
        let metrics = Arc::new(Metrics::default());
        let built = build(
            Seams {
                catalog: catalog.clone(),
                membership: membership.clone(),
                events: Arc::new(events::LogEvents {
                    metrics: metrics.clone(),
                }),
            },
            crate::replica_client::ReplicaClient::new(TOKEN.into()),
            metrics.clone(),
            EngineSettings {
                grace_period: grace,
                orphan_grace: Duration::from_secs(1),
                stale_guard,
                pulls_per_replica: 2,
            },
            TrackerSettings {
                tick: Duration::from_millis(50),
                grace,
                observer: ObserverSettings {
                    poll_wait: Duration::from_secs(5),
                    relist_every: Duration::from_secs(3600),
                    read_info: true,
                },
            },
            RebalanceSettings {
                enabled: false,
                ..RebalanceSettings::default()
            },
        );
        let cancel = CancellationToken::new();
        let workers = Workers::new(cancel.clone(), metrics.workers.clone());
        workers.spawn(built.tracker.into_worker(&workers));
        driver::start(
            built.engine.clone(),
            built.triggers,
            DriverSettings {
                workers: 4,
                // No resync during a test: everything must come from triggers.
                resync_every: Duration::from_secs(3600),
                settle_timeout: Duration::from_secs(5),
            },
            &workers,
        );
        Rig {
            _dirs: dirs,
            replicas,
            catalog,
            membership,
            engine: built.engine,
            metrics,
            cancel,
        }
    }

    /// Stores `data` on replica `i` and records the file at level `n`.
    async fn deposit(&self, name: &str, data: &[u8], n: u32, on: usize) -> FileKey {
        let key = FileKey::new("default", name).unwrap();
        let client = crate::replica_client::ReplicaClient::new(TOKEN.into());
        let info = client
            .put(
                &self.replicas[on].url(),
                &key,
                None,
                Some(data.len() as u64),
                reqwest::Body::from(data.to_vec()),
            )
            .await
            .unwrap();
        self.catalog.put(FileRecord {
            key: key.clone(),
            file_name: name.into(),
            replicas: n,
            sha256: info.sha256,
            size: info.size,
            generation: 1,
            deleting: false,
            source: Source::Upload,
            status: ObservedStatus::initial(Some(&format!("r{on}"))),
            aging: Default::default(),
        });
        key
    }

    /// Replicas holding a ready copy of `key` with `sha256`, by asking each replica.
    fn holders(&self, key: &FileKey, sha256: &str) -> Vec<usize> {
        let okey = deposito_replica::ObjKey::new(&key.namespace, &key.name, sha256).unwrap();
        (0..self.replicas.len())
            .filter(|i| {
                self.replicas[*i]
                    .app
                    .store
                    .get(&okey)
                    .is_some_and(|o| o.state == deposito_api::replica::ObjectState::Ready)
            })
            .collect()
    }

    async fn wait_holders(&self, key: &FileKey, sha256: &str, n: usize) -> Vec<usize> {
        for _ in 0..200 {
            let holders = self.holders(key, sha256);
            let status = self.catalog.record(key).map(|r| r.status);
            if holders.len() == n && status.is_some_and(|s| s.phase == Phase::Ready) {
                return holders;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{key}: wanted {n} copies and Ready, have {:?} and {:?}",
            self.holders(key, sha256),
            self.catalog.record(key).map(|r| r.status)
        );
    }

    fn reconciles(&self) -> u64 {
        let rendered = self.metrics.render();
        rendered
            .lines()
            .filter(|l| l.starts_with("deposito_operator_reconciles_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_of_n_converge_from_triggers_alone_and_idle_costs_nothing() {
    let rig = Rig::start(3, Duration::from_secs(300)).await;
    let data = b"level-based, per file".repeat(100);
    let sha = sha256_hex(&data);
    let key = rig.deposit("a.txt", &data, 2, 0).await;
    let holders = rig.wait_holders(&key, &sha, 2).await;
    assert!(holders.contains(&0), "the first copy stays: {holders:?}");

    rig.catalog.edit(&key, |r| r.replicas = 3);
    rig.wait_holders(&key, &sha, 3).await;
    rig.catalog.edit(&key, |r| r.replicas = 1);
    rig.wait_holders(&key, &sha, 1).await;
    let status = rig.catalog.record(&key).unwrap().status;
    assert_eq!((status.ready_replicas, status.holders.len()), (1, 1));

    // Converged and nothing changes: no reconcile runs and no status is written.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (reconciles, publishes) = (rig.reconciles(), rig.catalog.publishes());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rig.reconciles(),
        reconciles,
        "an idle engine reconciles nothing"
    );
    assert_eq!(rig.catalog.publishes(), publishes);
}

/// A file with `3,1@2s,expire@4s` has 3 copies, then exactly 1 from 2 s of age, then none
/// and no record after 4 s: each transition comes from the work queue's timer alone (no
/// catalog change triggers it), and between them the engine does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifecycle_lowers_the_level_then_expires_the_file_on_time_alone() {
    let rig = Rig::start(3, Duration::from_secs(300)).await;
    let data = b"aging".repeat(1000);
    let sha = sha256_hex(&data);
    let key = rig.deposit("aging.bin", &data, 1, 0).await;
    let acked = Instant::now();
    rig.catalog.edit(&key, |r| {
        r.aging.lifecycle =
            Some(deposito_api::lifecycle::Lifecycle::parse("3,1@2s,expire@4s").unwrap());
        r.aging.acked_ms = crate::engine::now_ms();
    });
    rig.wait_holders(&key, &sha, 3).await;
    assert!(
        acked.elapsed() < Duration::from_secs(2),
        "3 copies before the first step"
    );
    let reconciles = rig.reconciles();
    rig.wait_holders(&key, &sha, 1).await;
    assert!(
        acked.elapsed() >= Duration::from_secs(2),
        "lowered before its age"
    );
    assert!(
        rig.reconciles() - reconciles <= 4,
        "the engine waited for the step instead of looking again and again"
    );
    // The copies go before the status that says so is published: wait for it (bounded).
    let mut step = 0;
    for _ in 0..100 {
        step = rig.catalog.record(&key).unwrap().status.lifecycle_step;
        if step == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(step, 1, "the status shows the first step");
    for _ in 0..200 {
        if rig.catalog.record(&key).is_none() && rig.holders(&key, &sha).is_empty() {
            assert!(acked.elapsed() >= Duration::from_secs(4), "expired early");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "not expired: record {:?}, holders {:?}",
        rig.catalog.record(&key).map(|r| r.status),
        rig.holders(&key, &sha)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_holder_is_replaced_only_after_the_grace_period() {
    let grace = Duration::from_secs(2);
    let rig = Rig::start(3, grace).await;
    let data = b"survive a replica".repeat(50);
    let sha = sha256_hex(&data);
    let key = rig.deposit("b.txt", &data, 2, 0).await;
    let holders = rig.wait_holders(&key, &sha, 2).await;
    let victim = holders[1];
    rig.membership
        .set_available(&format!("r{victim}"), false, Duration::from_millis(10));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Within the grace period: the copy still counts, nothing is added.
    assert_eq!(rig.holders(&key, &sha), holders);
    let status = rig.catalog.record(&key).unwrap().status;
    assert_eq!(status.phase, Phase::Degraded, "{status:?}");
    assert_eq!(status.unreachable_holders, vec![format!("r{victim}")]);
    // Past the grace period: replaced on the third replica.
    rig.membership
        .set_available(&format!("r{victim}"), false, grace * 2);
    for _ in 0..100 {
        let now = rig.holders(&key, &sha);
        if now.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let third = 3 - holders[0] - victim;
    assert!(rig.holders(&key, &sha).contains(&third));
    // Back again: the extra copy is trimmed, N = 2 stay.
    rig.membership
        .set_available(&format!("r{victim}"), true, Duration::ZERO);
    rig.wait_holders(&key, &sha, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unobservable_replica_set_plans_nothing_and_deletes_nothing() {
    let rig = Rig::start(2, Duration::from_secs(300)).await;
    let data = b"keep me".to_vec();
    let sha = sha256_hex(&data);
    let key = rig.deposit("c.txt", &data, 2, 0).await;
    rig.wait_holders(&key, &sha, 2).await;
    *rig.membership.error.lock().unwrap() =
        Some(MembershipError::Forbidden("pods is forbidden".into()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    rig.catalog.edit(&key, |r| r.replicas = 1);
    let err = rig.engine.reconcile_key(&key).await.unwrap_err();
    assert_eq!(err.category(), ErrorCategory::Forbidden);
    assert_eq!(err.reason(), "forbidden");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rig.holders(&key, &sha).len(), 2, "nothing deleted");
    *rig.membership.error.lock().unwrap() = None;
    rig.wait_holders(&key, &sha, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_no_record_claims_are_collected_after_the_orphan_grace() {
    let rig = Rig::start(2, Duration::from_secs(300)).await;
    let data = b"nobody's".to_vec();
    let sha = sha256_hex(&data);
    let key = rig.deposit("orphan.txt", &data, 1, 1).await;
    rig.wait_holders(&key, &sha, 1).await;
    rig.catalog.records.lock().unwrap().remove(&key);
    // Only the replica's change feed tells the engine: a copy it just saw deleted and
    // written again is young, so it waits out the orphan grace (1 s) and then goes.
    let client = crate::replica_client::ReplicaClient::new(TOKEN.into());
    client
        .delete(&rig.replicas[1].url(), &key, &sha)
        .await
        .unwrap();
    client
        .put(
            &rig.replicas[1].url(),
            &key,
            None,
            None,
            reqwest::Body::from(data.clone()),
        )
        .await
        .unwrap();
    assert_eq!(rig.holders(&key, &sha), vec![1]);
    let okey = deposito_replica::ObjKey::new(&key.namespace, &key.name, &sha).unwrap();
    let state = || rig.replicas[1].app.store.get(&okey).map(|o| o.state);
    for _ in 0..100 {
        if rig.holders(&key, &sha).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        state(),
        Some(deposito_api::replica::ObjectState::Trashed),
        "collected into the trash, not deleted"
    );
    // The file comes back (a restored catalog): its copy is restored, not copied again.
    rig.catalog.put(FileRecord {
        key: key.clone(),
        file_name: "orphan.txt".into(),
        replicas: 1,
        sha256: sha.clone(),
        size: data.len() as u64,
        generation: 1,
        deleting: false,
        source: Source::Upload,
        status: ObservedStatus::initial(None),
        aging: Default::default(),
    });
    assert_eq!(rig.wait_holders(&key, &sha, 1).await, vec![1]);
    let metrics = rig.metrics.render();
    assert!(
        metrics.contains("deposito_operator_actions_total{kind=\"restore\",result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("kind=\"pull\""),
        "nothing pulled: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_complete_view_of_the_catalog_nothing_is_collected() {
    let rig = Rig::start(2, Duration::from_secs(300)).await;
    let data = b"claimed, but the catalog can't say".to_vec();
    let sha = sha256_hex(&data);
    let key = rig.deposit("unseen.txt", &data, 2, 0).await;
    rig.wait_holders(&key, &sha, 2).await;
    *rig.catalog.incomplete.lock().unwrap() = Some("StoredFiles not listed yet".into());
    rig.catalog.records.lock().unwrap().remove(&key);
    // Well past the orphan grace (1 s), with a look at the key forced.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    rig.engine.reconcile_key(&key).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rig.holders(&key, &sha).len(), 2, "every copy kept");
    let metrics = rig.metrics.render();
    assert!(
        metrics.contains("deposito_operator_orphans_kept_total{reason=\"incomplete_view\"}"),
        "{metrics}"
    );
    // Complete again: now they are orphans, and go to the trash.
    *rig.catalog.incomplete.lock().unwrap() = None;
    rig.engine.reconcile_key(&key).await.unwrap();
    assert!(rig.holders(&key, &sha).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_content_replaces_old_copies_once_in_place() {
    // The new copy is written before the catalog names it, as a gateway in another process
    // would: the age guard keeps it meanwhile (with no guard a reconcile in between may trim
    // it as stale), and collects the old copies once they are older than the guard.
    let rig = Rig::start_guarded(
        3,
        Duration::from_secs(300),
        StaleGuard::Age(Duration::from_secs(2)),
    )
    .await;
    let old = b"old content".to_vec();
    let key = rig.deposit("d.txt", &old, 2, 0).await;
    rig.wait_holders(&key, &sha256_hex(&old), 2).await;
    let new = b"new content".to_vec();
    let new_sha = sha256_hex(&new);
    let client = crate::replica_client::ReplicaClient::new(TOKEN.into());
    let info = client
        .put(
            &rig.replicas[2].url(),
            &key,
            None,
            None,
            reqwest::Body::from(new.clone()),
        )
        .await
        .unwrap();
    rig.catalog.edit(&key, |r| {
        r.sha256 = info.sha256.clone();
        r.size = info.size;
        r.status = ObservedStatus::initial(Some("r2"));
    });
    rig.wait_holders(&key, &new_sha, 2).await;
    for _ in 0..200 {
        if rig.holders(&key, &sha256_hex(&old)).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("old copies remain");
}
