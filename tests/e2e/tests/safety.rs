//! Never delete what may still be wanted, and a full disk is not a dead replica (local mode,
//! real processes):
//! - an older `catalog.sqlite3` restored from a backup: the copies of the files it does not
//!   know go to the replicas' trash, not away; depositing one of them again restores its copy
//!   from the trash (the same inode: no byte copied); the newer content of a file it knows
//!   goes to the trash too, even when its own older content can be brought back, and the
//!   current catalog brings the newer content back;
//! - a replica filled to its floor stays Ready and Full, serves every read, none of its copies
//!   is re-copied after the grace period, new deposits land elsewhere, and the file that cannot
//!   reach N says why (`ReplicasFull`).
//!
//! Needs root for the tmpfs of the full replica.

// Test code: unwrap is how a test fails.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use deposito_e2e::files::{free_bytes, random_seed, same_bytes, sha256_file, write_random_file};
use deposito_e2e::{metrics, wait_for, wait_sync, Cluster, MIB};

const T: Duration = Duration::from_secs(120);

/// Where replica `dir` keeps the copy `name`/`sha` in `area` (`objects` or `trash`).
fn copy_path(dir: &Path, area: &str, name: &str, sha: &str) -> PathBuf {
    deposito_e2e::files::copy_path(dir, area, "default", name, sha)
}

/// The inode of each replica's copy in `area`, in replica order (None: absent).
fn inodes(c: &Cluster, area: &str, name: &str, sha: &str) -> Vec<Option<u64>> {
    c.data_dirs()
        .iter()
        .map(|dir| {
            std::fs::metadata(copy_path(dir, area, name, sha))
                .ok()
                .map(|m| m.ino())
        })
        .collect()
}

/// Copies `catalog.sqlite3` and its write-ahead log (when present) from `from` to `to`,
/// removing a log at `to` that `from` does not have. The operator must not be running.
fn copy_catalog(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for file in ["catalog.sqlite3", "catalog.sqlite3-wal"] {
        let (src, dst) = (from.join(file), to.join(file));
        if src.exists() {
            std::fs::copy(&src, &dst).unwrap();
        } else {
            let _ = std::fs::remove_file(&dst);
        }
    }
    let _ = std::fs::remove_file(to.join("catalog.sqlite3-shm"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_older_catalog_sends_newer_copies_to_the_trash_and_a_new_deposit_restores_them()
{
    let mut c = Cluster::builder()
        .replicas(2)
        .orphan_grace_secs(2)
        .start()
        .await;
    let old = c.scratch("old.bin");
    write_random_file(&old, 300 * 1024, random_seed());
    c.deposit_ok(&old, 2, "old.bin");

    // The backup: taken with the operator stopped, so that the database and its log agree.
    c.kill_operator();
    let backup = c.root_path.join("backup");
    copy_catalog(&c.op_dir, &backup);
    c.start_operator();
    c.wait_healthy().await;

    let mut newer = Vec::new();
    for name in ["new1.bin", "new2.bin"] {
        let path = c.scratch(name);
        let sha = write_random_file(&path, 200 * 1024, random_seed());
        c.deposit_ok(&path, 2, name);
        newer.push((name, path, sha));
    }

    // Stop, restore the backup, start: the catalog no longer knows new1.bin and new2.bin.
    c.kill_operator();
    copy_catalog(&backup, &c.op_dir);
    c.start_operator();
    c.wait_healthy().await;
    assert!(c.status("new1.bin").await.unwrap().is_none());

    for (name, _, sha) in &newer {
        wait_sync(&format!("{name} in both trashes"), T, || {
            let trashed = inodes(&c, "trash", name, sha);
            let served = inodes(&c, "objects", name, sha);
            (trashed.iter().all(Option::is_some) && served.iter().all(Option::is_none))
                .then_some(())
                .ok_or(format!("trash {trashed:?}, objects {served:?}"))
        });
    }
    for dir in c.data_dirs() {
        let path = copy_path(&dir, "trash", "new1.bin", &newer[0].2);
        assert!(same_bytes(&newer[0].1, &path), "{} changed", path.display());
    }
    c.wait_copies(&old, 2, T);
    // The replicas report it (with their next heartbeat): 1 copy served, 2 in the trash.
    wait_for("trash reported by both replicas", T, || async {
        let list = c.replica_list().await?;
        list.items
            .iter()
            .all(|r| r.objects == 1 && r.trash_objects == 2 && r.trash_bytes == 2 * 200 * 1024)
            .then_some(())
            .ok_or(format!("{:?}", list.items))
    })
    .await;
    let out = c.client_ok(&["replicas"]);
    assert!(out.stdout.contains("TRASH"), "{out}");

    // new1.bin deposited again under its name: its copies come back out of the trash.
    let (name, path, sha) = &newer[0];
    let trashed = inodes(&c, "trash", name, sha);
    c.deposit_ok(path, 2, name);
    assert_eq!(
        inodes(&c, "objects", name, sha),
        trashed,
        "restored copies are the trashed files themselves"
    );
    assert_eq!(inodes(&c, "trash", name, sha), vec![None, None]);
    let text = c.operator_metrics().await;
    assert_eq!(
        metrics::sum(
            &text,
            "deposito_operator_actions_total",
            &[("kind", "pull")]
        ),
        0.0,
        "no copy was pulled since the restart:\n{text}"
    );
    let got = c.scratch("new1.out");
    c.client_ok(&["retrieve", name, "-o", got.to_str().unwrap()]);
    assert!(same_bytes(path, &got));
    // new2.bin stays in the trash.
    let (name, _, sha) = &newer[1];
    assert!(inodes(&c, "trash", name, sha).iter().all(Option::is_some));
}

/// The fault campaign's loss (seed 3, 2026-12-06): an older catalog that could bring its own
/// content of a file back (here from a replica that was down while the file was overwritten)
/// then deleted the newer content as stale. A copy of content committed after the catalog's
/// own was acknowledged goes to the trash instead, and the current catalog brings it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_older_catalog_trashes_the_newer_content_of_an_overwritten_file() {
    let mut c = Cluster::builder()
        .replicas(3)
        .orphan_grace_secs(2)
        .start()
        .await;
    let (name, older, newer) = ("over.bin", c.scratch("older.bin"), c.scratch("newer.bin"));
    write_random_file(&older, 100 * 1024, random_seed());
    c.deposit_ok(&older, 3, name);
    c.wait_copies(&older, 3, T);
    c.kill_operator();
    let backup = c.root_path.join("backup");
    copy_catalog(&c.op_dir, &backup);
    c.start_operator();
    c.wait_healthy().await;

    // Replica 3 down, the file overwritten at N=2: the older content stays only on replica 3.
    c.kill_replica(3);
    let newer_sha = write_random_file(&newer, 120 * 1024, random_seed());
    c.deposit_ok(&newer, 2, name);
    c.wait_copies(&older, 1, T);
    assert_eq!(c.holders_on_disk(&newer), vec![1, 2]);

    // The backup restored, replica 3 back: the older content is named and copied on again;
    // the newer content's copies go to the trash, byte-identical, not away.
    c.kill_operator();
    let current = c.root_path.join("current");
    copy_catalog(&c.op_dir, &current);
    copy_catalog(&backup, &c.op_dir);
    c.start_operator();
    c.restart_replica(3).await;
    c.wait_copies(&older, 3, T);
    wait_sync(
        "the newer content in the trash of replicas 1 and 2",
        T,
        || {
            let trashed = inodes(&c, "trash", name, &newer_sha);
            let served = inodes(&c, "objects", name, &newer_sha);
            (trashed[..2].iter().all(Option::is_some) && served.iter().all(Option::is_none))
                .then_some(())
                .ok_or(format!("trash {trashed:?}, objects {served:?}"))
        },
    );
    for dir in &c.data_dirs()[..2] {
        let path = copy_path(dir, "trash", name, &newer_sha);
        assert!(same_bytes(&newer, &path), "{} changed", path.display());
    }

    // The current catalog back: the newer content returns from the trash and reads back;
    // the older content's copies leave `objects/`.
    c.kill_operator();
    copy_catalog(&current, &c.op_dir);
    c.start_operator();
    c.wait_healthy().await;
    let status = c.wait_converged(name, T).await;
    assert_eq!(status.sha256, newer_sha, "{status:?}");
    assert_eq!(c.holders_on_disk(&newer), vec![1, 2]);
    c.wait_copies(&older, 0, T);
    let got = c.scratch("over.out");
    c.client_ok(&["retrieve", name, "-o", got.to_str().unwrap()]);
    assert!(same_bytes(&newer, &got));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_replica_stays_ready_serves_reads_and_keeps_its_copies() {
    const FLOOR: u64 = 12 * MIB;
    let c = Cluster::builder()
        .replicas(3)
        .grace_period_secs(3)
        .tmpfs_replica(3, "16m")
        .replica_arg(3, &format!("--min-free-bytes={FLOOR}"))
        .start()
        .await;
    let kept = c.scratch("kept.bin");
    let kept_sha = write_random_file(&kept, MIB, random_seed());
    c.deposit_ok(&kept, 3, "kept.bin");

    // Something else fills replica 3's disk below its floor.
    let dir = c.replica(3).dir.clone();
    let free = free_bytes(&dir);
    std::fs::write(dir.join("filler"), vec![7u8; (free - FLOOR + MIB) as usize]).unwrap();
    wait_for("replica-3 Full", T, || async {
        let list = c.replica_list().await?;
        let r3 = list.items.iter().find(|r| r.id == "replica-3").unwrap();
        (r3.health == "Full").then_some(()).ok_or(format!("{r3:?}"))
    })
    .await;
    let out = c.client_ok(&["replicas"]);
    assert!(out.stdout.contains("Full"), "{out}");
    let pulls_before = metrics::sum(
        &c.operator_metrics().await,
        "deposito_operator_actions_total",
        &[("kind", "pull")],
    );

    // Ready, and serving: /readyz 200 with full=true, the copy read straight from replica 3.
    let r3 = c.replica(3).url();
    let ready = c.http.get(format!("{r3}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["full"], true, "{body}");
    let read = c
        .http
        .get(format!("{r3}/v1/objects/default/kept.bin/{kept_sha}"))
        .bearer_auth(&c.replica_token)
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(read.bytes().await.unwrap(), std::fs::read(&kept).unwrap());

    // Past the grace period (3 s), twice over: still exactly 3 copies, nothing re-copied.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(c.holders_on_disk(&kept), vec![1, 2, 3]);
    let st = c.status("kept.bin").await.unwrap().unwrap();
    assert_eq!(st.ready_replicas, 3, "{st:?}");

    // New deposits land elsewhere; one at N=3 says why it cannot get there.
    let elsewhere = c.scratch("elsewhere.bin");
    write_random_file(&elsewhere, MIB, random_seed());
    c.deposit_ok(&elsewhere, 2, "elsewhere.bin");
    assert_eq!(c.holders_on_disk(&elsewhere), vec![1, 2]);
    let wants3 = c.scratch("wants3.bin");
    write_random_file(&wants3, MIB, random_seed());
    let r = c.put_file("wants3.bin", &wants3, 3).await;
    assert_eq!(r.status, 201, "{r:?}");
    let st = wait_for("wants3.bin says ReplicasFull", T, || async {
        let st = c
            .status("wants3.bin")
            .await?
            .ok_or_else(|| "no status".to_string())?;
        st.conditions
            .iter()
            .any(|cond| cond.reason == "ReplicasFull" && cond.message.contains("replica-3"))
            .then_some(st.clone())
            .ok_or(format!("{st:?}"))
    })
    .await;
    assert_eq!(st.ready_replicas, 2, "{st:?}");
    assert_eq!(c.holders_on_disk(&wants3), vec![1, 2]);
    let pulls_after = metrics::sum(
        &c.operator_metrics().await,
        "deposito_operator_actions_total",
        &[("kind", "pull")],
    );
    // The only pulls since replica 3 filled up are wants3.bin's (and elsewhere.bin's) second
    // copies: kept.bin was not re-copied.
    assert!(
        pulls_after - pulls_before <= 2.0,
        "pulls {pulls_before} -> {pulls_after}"
    );
    assert_eq!(sha256_file(&kept).unwrap(), kept_sha);
    let _ = std::fs::remove_file(dir.join("filler"));
}
